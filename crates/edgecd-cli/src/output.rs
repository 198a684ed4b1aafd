//! Output helpers: every line of command output goes through [`outln!`] (a closed stdout ends
//! the command quietly), JSON for scripts, progress bars only on a terminal.
use std::io::{IsTerminal, Write};

/// Writes command output to stdout. When the reader has gone (`edgecd device list | head -1`)
/// the process exits quietly with status 0, as the reader has what it wanted; any other write
/// error ends it with a message and status 1. (`println!` would panic: status 101.)
///
/// Restoring the default SIGPIPE disposition instead would also cover this, but this binary
/// runs the server, the demo and the simulator too, which must get EPIPE as an error (a peer
/// that closed its socket, a hook that closed its stdin) rather than be killed by the signal.
pub fn write_out(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` for command output, through [`write_out`].
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    crate::outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A byte progress bar on stderr when it is a terminal; hidden otherwise.
pub fn byte_progress(len: u64, msg: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

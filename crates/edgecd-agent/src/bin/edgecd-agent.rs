//! `edgecd-agent`: the device daemon (all logic lives in the `edgecd_agent` library).

fn main() -> std::process::ExitCode {
    match edgecd_agent::cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgecd-agent: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

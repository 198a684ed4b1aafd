//! The `edgecd` binary: parse arguments, set up logging, run. Everything else is in the library.
fn main() -> std::process::ExitCode {
    edgecd_cli::main_from_args(std::env::args_os())
}

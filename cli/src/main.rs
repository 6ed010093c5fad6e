//! The `rparallel` binary: the command line of `rparallel_cli`, with
//! Python embedded.

fn main() -> std::process::ExitCode {
    rparallel_cli::run(std::env::args_os())
}

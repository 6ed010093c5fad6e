//! The `rparallel` binary: the command line of `rparallel_kernel`, with
//! Python embedded.

fn main() -> std::process::ExitCode {
    rparallel_kernel::cli::run(std::env::args_os())
}

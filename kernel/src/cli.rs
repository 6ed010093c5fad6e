//! The `rparallel` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use rparallel_pyexec::PythonEnv;

use crate::kernelspec::{self, Location};

#[derive(Parser)]
#[command(
    name = "rparallel",
    version,
    about = "Interactive parallel Python: a Jupyter kernel and its engines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the `rparallel` kernelspec so Jupyter can start the kernel.
    Install(InstallArgs),
    /// Run the kernel (Jupyter starts this from the kernelspec).
    Kernel(KernelArgs),
}

#[derive(Args)]
struct InstallArgs {
    /// Install for the current user (the default).
    #[arg(long, group = "where")]
    user: bool,
    /// Install into the Python environment's prefix (see --python).
    #[arg(long, group = "where")]
    sys_prefix: bool,
    /// Install under PREFIX/share/jupyter/kernels.
    #[arg(long, group = "where", value_name = "PREFIX")]
    prefix: Option<PathBuf>,
    /// The Python environment the kernel runs (its `bin/python`); defaults to
    /// the active virtualenv, else the interpreter rparallel was built with.
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
}

#[derive(Args)]
struct KernelArgs {
    /// The connection file Jupyter wrote for this kernel.
    #[arg(short = 'f', long = "file", value_name = "CONNECTION_FILE")]
    connection_file: PathBuf,
    /// The Python environment to run (its `bin/python`).
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Install(args) => install(args),
        Command::Kernel(args) => {
            init_logging();
            let env = PythonEnv::resolve(args.python.as_deref());
            crate::server::run(&args.connection_file, &env)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rparallel: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn install(args: InstallArgs) -> anyhow::Result<()> {
    let env = PythonEnv::resolve(args.python.as_deref());
    let location = if args.sys_prefix {
        Location::Prefix(env.prefix())
    } else if let Some(prefix) = args.prefix {
        Location::Prefix(prefix)
    } else {
        Location::User
    };
    let dir = kernelspec::install(&location, &env)?;
    println!("Installed kernelspec rparallel in {}", dir.display());
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RPARALLEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

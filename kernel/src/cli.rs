//! The `rparallel` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rparallel_cluster::lifecycle::{self as cluster, ClusterOptions};
use rparallel_cluster::process::default_engines;
use rparallel_controller::ControllerOptions;
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
    /// Start, stop or list clusters (a controller and its engines).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Run a controller in the foreground (`cluster start` runs this).
    Controller(ControllerArgs),
    /// Run an engine of a cluster (the controller or a launcher starts this).
    Engine(EngineArgs),
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Start a controller and N local engines; returns once all registered.
    Start(ClusterStartArgs),
    /// Stop a cluster: its controller and all its engines.
    Stop {
        /// The cluster's profile.
        #[arg(long)]
        profile: Option<String>,
    },
    /// List the clusters of every profile.
    List,
}

#[derive(Args)]
struct ClusterStartArgs {
    /// Number of engines.
    #[arg(short = 'n', long = "n", default_value_t = default_engines())]
    engines: usize,
    /// Profile (its files live in $RPARALLEL_DIR/profile_<name>, default ~/.rparallel).
    #[arg(long)]
    profile: Option<String>,
    /// Return once the engines are registered and leave the cluster running.
    #[arg(long)]
    daemonize: bool,
    /// Address to bind (engines on other hosts need a reachable one).
    #[arg(long, default_value = "127.0.0.1")]
    ip: String,
    /// The Python environment the engines run (its `bin/python`).
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Seconds to wait for the engines to register.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Seconds without a heartbeat after which an engine is declared dead.
    #[arg(long, default_value_t = 10.0)]
    heartbeat_timeout: f64,
    /// Replace an engine that dies (killed, crashed) with a new one.
    #[arg(long)]
    restart_engines: bool,
}

#[derive(Args)]
struct ControllerArgs {
    #[arg(long)]
    profile: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    ip: String,
    /// Local engines to start with the controller.
    #[arg(short = 'n', long = "n", default_value_t = 0)]
    engines: usize,
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 1.0)]
    heartbeat_period: f64,
    /// Seconds without a heartbeat after which an engine is declared dead.
    #[arg(long, default_value_t = 10.0)]
    heartbeat_timeout: f64,
    /// Replace a local engine that dies (killed, crashed) with a new one.
    #[arg(long)]
    restart_engines: bool,
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

#[derive(Args)]
struct EngineArgs {
    /// The engine connection file the controller wrote
    /// (`security/rparallel-engine.json`).
    #[arg(short = 'f', long = "file", value_name = "ENGINE_FILE")]
    engine_file: PathBuf,
    /// The Python environment to run (its `bin/python`).
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
}

/// Runs the command line `args` (the program name first).
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Install(args) => install(args),
        Command::Kernel(args) => {
            init_logging();
            let env = PythonEnv::for_this_process(args.python.as_deref());
            crate::server::run(&args.connection_file, &env)
        }
        Command::Cluster(command) => cluster(command),
        Command::Engine(args) => {
            init_logging();
            let env = PythonEnv::for_this_process(args.python.as_deref());
            rparallel_engine::run(&args.engine_file, &env)
        }
        Command::Controller(args) => {
            init_logging();
            rparallel_controller::run_controller(ControllerOptions {
                profile: args.profile,
                ip: args.ip,
                engines: args.engines,
                python: PythonEnv::resolve(args.python.as_deref()).python,
                heartbeat_period: seconds(args.heartbeat_period),
                heartbeat_timeout: seconds(args.heartbeat_timeout),
                restart_engines: args.restart_engines,
            })
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

fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.001))
}

fn cluster(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Start(args) => {
            let options = ClusterOptions {
                profile: args.profile,
                engines: args.engines,
                python: PythonEnv::resolve(args.python.as_deref()).python,
                ip: args.ip,
                daemonize: args.daemonize,
                timeout: seconds(args.timeout),
                heartbeat_timeout: seconds(args.heartbeat_timeout),
                restart_engines: args.restart_engines,
                ephemeral: false,
                output: None,
            };
            let mut cluster = cluster::start_cluster(&options)?;
            println!(
                "Cluster {} ready: {} engines (controller pid {})",
                cluster.profile.name, options.engines, cluster.controller_pid
            );
            if options.daemonize {
                return Ok(());
            }
            println!("Press Ctrl-C to stop it.");
            wait_for_stop_signal(&mut cluster);
            cluster.stop()
        }
        ClusterCommand::Stop { profile } => cluster::stop_cluster(profile.as_deref()),
        ClusterCommand::List => {
            for line in cluster::list_clusters()? {
                println!("{line}");
            }
            Ok(())
        }
    }
}

/// Blocks until SIGINT/SIGTERM arrives or the controller exits by itself.
fn wait_for_stop_signal(cluster: &mut cluster::StartedCluster) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static STOP: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::SeqCst);
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    while !STOP.load(Ordering::SeqCst) && cluster.is_running() {
        std::thread::sleep(Duration::from_millis(100));
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
        .with_writer(rparallel_pyexec::fdcapture::log_writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

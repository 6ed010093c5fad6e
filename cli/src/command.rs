//! The `rparallel` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rparallel_cluster::launch::split_words;
use rparallel_cluster::lifecycle::{self as cluster, ClusterOptions};
use rparallel_cluster::process::default_engines;
use rparallel_cluster::{HostSlots, LaunchSpec, SchedulerSpec, Scheme, TaskDb};
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
    Controller(Box<ControllerArgs>),
    /// Run an engine of a cluster (the controller or a launcher starts this).
    Engine(EngineArgs),
    /// Run N engines on this host for a controller elsewhere, reading the
    /// engine connection file from stdin (the ssh launcher runs this).
    #[command(hide = true)]
    HostEngines {
        #[arg(short = 'n', long = "n", default_value_t = 1)]
        count: usize,
        #[arg(long, value_name = "PATH")]
        python: Option<PathBuf>,
        #[arg(long)]
        launch: Option<String>,
    },
}

/// How engines are started (`cluster start` and `controller`).
#[derive(Args)]
struct LaunchArgs {
    /// How engines are started: local, ssh, mpi or slurm.
    #[arg(long = "engines", default_value = "local", value_name = "LAUNCHER")]
    launcher: String,
    /// Hosts for the engines, with optional counts: node1:2,node2:2.
    #[arg(long, value_name = "HOST[:N],...")]
    hosts: Option<String>,
    /// A file of hosts, one per line (`node1`, `node1:2`, `node1 slots=2`).
    #[arg(long, value_name = "PATH", conflicts_with = "hosts")]
    hostfile: Option<PathBuf>,
    /// How the hosts run rparallel (ssh), e.g. "/opt/venv/bin/python -m
    /// rparallel"; default: as this host does (a shared filesystem).
    #[arg(long, value_name = "COMMAND")]
    remote_rparallel: Option<String>,
    /// Extra arguments for mpiexec, as one string.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    mpi_args: Option<String>,
    /// Extra arguments for sbatch, as one string ("--partition=p --time=10").
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    slurm_args: Option<String>,
    /// A batch script to submit instead of rparallel's own; `{n}` and
    /// `{engine_command}` are filled in (`srun {engine_command}`).
    #[arg(long, value_name = "PATH")]
    slurm_template: Option<PathBuf>,
}

impl LaunchArgs {
    /// Resolves the flags into the launch they describe.
    fn spec(&self) -> anyhow::Result<LaunchSpec> {
        let hosts = match (&self.hosts, &self.hostfile) {
            (Some(hosts), _) => HostSlots::parse_list(hosts)?,
            (None, Some(file)) => HostSlots::read_hostfile(file)?,
            (None, None) => vec![],
        };
        let words = |text: &Option<String>| match text {
            Some(text) => split_words(text),
            None => Ok(vec![]),
        };
        let spec = LaunchSpec {
            kind: self.launcher.parse()?,
            hosts,
            remote_rparallel: self.remote_rparallel.clone(),
            mpi_args: words(&self.mpi_args)?,
            slurm_args: words(&self.slurm_args)?,
            slurm_template: self.slurm_template.clone(),
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// The controller's task scheduler (`cluster start` and `controller`).
#[derive(Args)]
struct SchedulerArgs {
    /// How load-balanced tasks are given to engines: leastload, lru,
    /// plainrandom, twobin, weighted or pure.
    #[arg(long, default_value = "leastload", value_parser = parse_scheme)]
    scheme: Scheme,
    /// Unfinished tasks an engine is given at most (0: no limit).
    #[arg(long, default_value_t = 1)]
    hwm: usize,
    /// Where the record of requests and results is kept: memory, sqlite
    /// (`tasks.sqlite` in the profile, too) or none.
    #[arg(long, default_value = "memory", value_parser = parse_db)]
    db: TaskDb,
}

impl SchedulerArgs {
    fn spec(&self) -> SchedulerSpec {
        SchedulerSpec {
            scheme: self.scheme,
            hwm: self.hwm,
            db: self.db,
        }
    }
}

fn parse_scheme(name: &str) -> Result<Scheme, String> {
    name.parse()
}

fn parse_db(name: &str) -> Result<TaskDb, String> {
    name.parse()
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Start a controller and N engines (local, or on other hosts through
    /// ssh, mpiexec or Slurm); returns once all registered.
    Start(Box<ClusterStartArgs>),
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
    /// Number of engines (default: the hosts' counts, else one per CPU).
    #[arg(short = 'n', long = "n")]
    n: Option<usize>,
    /// Profile (its files live in $RPARALLEL_DIR/profile_<name>, default ~/.rparallel).
    #[arg(long)]
    profile: Option<String>,
    /// Return once the engines are registered and leave the cluster running.
    #[arg(long)]
    daemonize: bool,
    /// Address to bind (default 127.0.0.1; with engines on other hosts,
    /// the address this host's name resolves to).
    #[arg(long)]
    ip: Option<String>,
    /// The address engines and clients dial, when not --ip (e.g. with
    /// --ip 0.0.0.0).
    #[arg(long)]
    location: Option<String>,
    #[command(flatten)]
    launch: LaunchArgs,
    #[command(flatten)]
    scheduler: SchedulerArgs,
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
    #[arg(long)]
    location: Option<String>,
    /// Engines to start with the controller.
    #[arg(short = 'n', long = "n", default_value_t = 0)]
    engines: usize,
    #[command(flatten)]
    launch: LaunchArgs,
    #[command(flatten)]
    scheduler: SchedulerArgs,
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
    /// `-` reads it from stdin.
    #[arg(short = 'f', long = "file", value_name = "ENGINE_FILE")]
    engine_file: PathBuf,
    /// The Python environment to run (its `bin/python`).
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// The launch that started this engine (set by launchers).
    #[arg(long)]
    launch: Option<String>,
    /// Ask for the engine id equal to the MPI or Slurm rank.
    #[arg(long)]
    rank_id: bool,
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
            let extras = rparallel_kernel::Extras {
                // The client, and the %px family registered in the
                // kernel's IPython.
                setup: rparallel_directview::install,
                // Clusters this kernel started stop with it.
                at_exit: rparallel_directview::at_exit,
            };
            rparallel_kernel::run(&args.connection_file, &env, extras)
        }
        Command::Cluster(command) => cluster(command),
        Command::Engine(args) => {
            init_logging();
            let env = PythonEnv::for_this_process(args.python.as_deref());
            let options = rparallel_engine::EngineOptions {
                file: args.engine_file,
                launch: args.launch,
                rank_id: args.rank_id,
            };
            rparallel_engine::run(&options, &env)
        }
        Command::HostEngines {
            count,
            python,
            launch,
        } => rparallel_controller::launch::agent::run(count, python, launch),
        Command::Controller(args) => {
            let args = *args;
            init_logging();
            args.launch.spec().and_then(|launch| {
                rparallel_controller::run_controller(ControllerOptions {
                    profile: args.profile,
                    ip: args.ip,
                    location: args.location,
                    launch,
                    engines: args.engines,
                    python: PythonEnv::resolve(args.python.as_deref()).python,
                    heartbeat_period: seconds(args.heartbeat_period),
                    heartbeat_timeout: seconds(args.heartbeat_timeout),
                    restart_engines: args.restart_engines,
                    scheduler: args.scheduler.spec(),
                })
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
            let args = *args;
            let launch = args.launch.spec()?;
            let engines = args
                .n
                .or_else(|| launch.engines_from_hosts())
                .unwrap_or_else(default_engines);
            let options = ClusterOptions {
                profile: args.profile,
                engines,
                python: PythonEnv::resolve(args.python.as_deref()).python,
                ip: args.ip,
                location: args.location,
                launch,
                daemonize: args.daemonize,
                timeout: seconds(args.timeout),
                heartbeat_timeout: seconds(args.heartbeat_timeout),
                restart_engines: args.restart_engines,
                scheduler: args.scheduler.spec(),
                ephemeral: false,
                output: None,
            };
            let mut cluster = cluster::start_cluster(&options)?;
            println!("{}", cluster.describe(options.engines));
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

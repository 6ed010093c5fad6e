//! The rparallel engine: a process embedding CPython through
//! `rparallel-pyexec` (the same execution core, execute path, publisher and
//! start-up as the kernel), registered with a controller, serving execute,
//! apply, push and pull requests in order while its I/O and heartbeat run
//! on tasks that need no GIL. `rparallel engine --file F` runs [`run`];
//! the protocol is `docs/cluster-protocol.md`.
//!
//! # Layout
//!
//! - [`io`]: connect, register, then the tasks below.
//! - [`scheduler`]: requests in order to the Python thread; interrupt and
//!   abort at once. [`queue`]: the waiting requests (abortable).
//! - [`heartbeat`]: beats every period; exits when the controller is silent
//!   for three.
//! - [`python`]: the Python thread's side: serving one request.
//! - [`stamp`]: how the engine addresses what it sends (engine id, the
//!   client's route, `engine_info`).
//! - [`bound`]: `rparallel.bind_kernel()`: the engine reachable as a
//!   Jupyter kernel too (the kernel's channels, `rparallel_kernel`).
//!
//! Threads: Python on the main thread (signals land there: interrupts raise
//! KeyboardInterrupt in running code); sockets and timers on one runtime,
//! driven by the Python thread while it waits for requests (one wake-up per
//! request) and by the I/O thread while Python runs code
//! (`rparallel_pyexec::driver`).

pub mod bound;
pub mod heartbeat;
pub mod io;
pub mod python;
pub mod queue;
pub mod scheduler;
pub mod stamp;

use std::path::PathBuf;
use std::sync::Arc;

use rparallel_cluster::ConnectionFile;
use rparallel_protocol::Session;
use rparallel_pyexec::{process, publish, IPythonLoad, Namespace, PythonEnv, Sink};

use crate::python::Server;

/// Messages waiting for the socket at most: a cell printing faster than
/// the controller reads blocks (backpressure).
const OUTGOING: usize = 256;

/// Where an engine comes from and how it introduces itself.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// The engine connection file; `-` reads it from stdin.
    pub file: PathBuf,
    /// The launch that started this engine (`--launch`), so the controller
    /// can fail its engines at once when that launch ends.
    pub launch: Option<String>,
    /// Ask for the engine id equal to this process's MPI (or Slurm) rank.
    pub rank_id: bool,
}

/// Runs an engine until it is shut down or its controller is gone.
pub fn run(options: &EngineOptions, env: &PythonEnv) -> anyhow::Result<()> {
    let info = if options.file.as_os_str() == "-" {
        ConnectionFile::read_stdin()?
    } else {
        ConnectionFile::read(&options.file)?
    };
    let rank = if options.rank_id {
        Some(rank_from_env()?)
    } else {
        None
    };
    die_with_controller(info.controller_pid);
    // SAFETY: no other thread exists yet.
    unsafe { env.activate() };
    let session = Session::new(info.key.as_bytes(), "engine");
    let uuid = uuid::Uuid::new_v4().to_string();

    // Python first: an engine that cannot run Python never registers.
    let (publisher, queue) = publish::channel(OUTGOING);
    let sink = Arc::new(Sink::new(publisher.clone()));
    let shell = process::start_python(env, sink.clone(), IPythonLoad::OnFirstNeed)?;
    let namespace = Namespace::new(&shell).map_err(|e| {
        anyhow::anyhow!(
            "cannot load the serialisation core (is cloudpickle installed in {}?): {e}",
            env.prefix().display()
        )
    })?;
    let (python, jobs) = rparallel_pyexec::actor::channel();
    let io = io::Io {
        info,
        session,
        uuid,
        launch: options.launch.clone(),
        rank,
        publisher,
        queue,
        python,
    };
    let (stamp, driver) =
        process::start_io("rparallel-engine-io", move |ready| io::serve(io, ready))?;
    let server = jobs.serve(
        Server {
            shell,
            namespace,
            stamp,
            sink,
        },
        &driver,
    );
    // Shut down: the cells' atexit handlers run, as at the end of a Python
    // program (mpi4py's MPI_Finalize among them, which mpiexec waits for).
    server.shell.at_exit();
    rparallel_protocol::shm::remove_leftovers();
    rparallel_pyexec::binding::remove_connection_files();
    Ok(())
}

/// The rank a process manager gave this process: Open MPI, PMIx, MPICH
/// (PMI) or Slurm's srun, which set these in each rank's own environment
/// on its own host.
fn rank_from_env() -> anyhow::Result<u32> {
    const NAMES: [&str; 4] = [
        "OMPI_COMM_WORLD_RANK",
        "PMIX_RANK",
        "PMI_RANK",
        "SLURM_PROCID",
    ];
    NAMES
        .iter()
        .find_map(|name| std::env::var(name).ok()?.parse().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--rank-id: no rank in the environment ({}); start the engine through mpiexec or srun",
                NAMES.join(", ")
            )
        })
}

/// A local engine is the controller's child: it dies with it (SIGKILL from
/// the kernel), even when busy in Python. Engines started through another
/// process (mpiexec, ssh, a batch system) rely on the heartbeat instead.
fn die_with_controller(controller_pid: Option<u32>) {
    #[cfg(target_os = "linux")]
    // SAFETY: getppid and prctl(PR_SET_PDEATHSIG) have no memory effects.
    unsafe {
        let parent = libc::getppid();
        if controller_pid.is_none_or(|pid| pid as libc::pid_t == parent) {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // The parent may have died before the call took effect.
            if libc::getppid() != parent {
                std::process::exit(1);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = controller_pid;
}

//! The rparallel engine: a process embedding CPython through
//! `rparallel-pyexec` (the same execution core as the kernel), registered
//! with a controller, serving execute, apply, push and pull requests in
//! order while its I/O and heartbeat run on a thread that needs no GIL.
//! `rparallel engine --file F` runs [`run`]; the protocol is
//! `docs/cluster-protocol.md`.
//!
//! # Layout
//!
//! - [`io`]: the I/O thread: connect, register, then the tasks below.
//! - [`scheduler`]: requests in order to the Python thread; interrupt and
//!   abort at once. [`queue`]: the waiting requests (abortable).
//! - [`outgoing`]: the one sender: bounded (backpressure), coalesces stream
//!   writes, keeps outputs ahead of their reply.
//! - [`heartbeat`]: beats every period; exits when the controller is silent
//!   for three.
//! - [`python`]: the Python thread (an actor owning the shell) and the
//!   [`python::EngineSink`] a request's output goes to.
//! - [`stamp`]: building messages (engine id, client route, parent, times).
//!
//! Threads: Python on the main thread (signals land there: interrupts raise
//! KeyboardInterrupt in running code); sockets and timers on one I/O thread.

pub mod heartbeat;
pub mod io;
pub mod outgoing;
pub mod python;
pub mod queue;
pub mod scheduler;
pub mod stamp;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rparallel_cluster::ConnectionFile;
use rparallel_protocol::Session;
use rparallel_pyexec::{initialize, PyShell, PythonEnv, Remote};

use crate::python::{EngineSink, Server};

/// Runs an engine until it is shut down or its controller is gone.
pub fn run(engine_file: &Path, env: &PythonEnv) -> anyhow::Result<()> {
    let info = ConnectionFile::read(engine_file)?;
    die_with_controller(info.controller_pid);
    // SAFETY: no other thread exists yet.
    unsafe { env.activate() };
    let session = Session::new(info.key.as_bytes(), "engine");
    let uuid = uuid::Uuid::new_v4().to_string();

    // Python first: an engine that cannot run Python never registers.
    let (outgoing, queue) = outgoing::channel();
    let sink = Arc::new(EngineSink::new(outgoing.clone()));
    if let Err(e) = rparallel_pyexec::fdcapture::capture(sink.clone()) {
        tracing::warn!("output written to fds 1 and 2 will not reach the client: {e}");
    }
    initialize(env)?;
    let shell = PyShell::new(sink.clone())
        .map_err(|e| anyhow::anyhow!("cannot load the execution core: {e}"))?;
    let remote = Remote::new(&shell).map_err(|e| {
        anyhow::anyhow!(
            "cannot load the serialisation core (is cloudpickle installed in {}?): {e}",
            env.prefix().display()
        )
    })?;
    let (python, jobs) = rparallel_pyexec::actor::channel();

    // Threads spawned while SIGINT is blocked inherit the mask, so interrupts
    // (and a terminal's Ctrl-C) always land on the Python (main) thread.
    let blocked = rparallel_pyexec::interrupt::block_sigint();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let io = io::Io {
        info,
        session,
        uuid,
        outgoing: outgoing.clone(),
        queue,
        python,
    };
    rparallel_pyexec::actor::spawn_io_thread("rparallel-engine-io", move || {
        io::serve(io, ready_tx)
    })
    .context("cannot start the I/O thread")?;
    drop(blocked);

    let stamp = ready_rx
        .recv()
        .context("the engine's I/O thread stopped during start-up")??;
    jobs.serve(Server {
        shell,
        remote,
        stamp,
        outgoing,
        sink,
    });
    rparallel_protocol::shm::remove_leftovers();
    Ok(())
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

//! Starting a kernel: Python on the main thread, sockets and channel tasks
//! on an I/O thread running a current-thread tokio runtime (the fastest
//! zeromq round trip on this kind of machine).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rparallel_protocol::{connection, ConnectionInfo, Session};
use rparallel_pyexec::{initialize, PyShell, PythonEnv};
use serde_json::Value;
use tokio::sync::{Notify, OnceCell};
use zeromq::{PubSocket, RepSocket, RouterSocket, Socket};

use crate::control::ControlChannel;
use crate::history::History;
use crate::px::{self, AutoPx};
use crate::python::{KernelSink, PythonHandle};
use crate::shell::ShellChannel;
use crate::sockets::{spawn_reader, Replier};
use crate::{heartbeat, info, iopub, stdin};

/// How long a shutdown waits for a running cell to stop before exiting anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The kernel_info content, computed once from the Python thread.
#[derive(Clone, Default)]
pub struct KernelInfo(Arc<OnceCell<Value>>);

impl KernelInfo {
    pub async fn get(&self, python: &PythonHandle) -> Value {
        self.0
            .get_or_init(|| async {
                let version = python.call(|shell| shell.python_version()).await;
                info::kernel_info(&version)
            })
            .await
            .clone()
    }
}

/// Runs a kernel until it is shut down.
pub fn run(connection_file: &Path, env: &PythonEnv) -> anyhow::Result<()> {
    let info = connection::read(connection_file)?;
    // SAFETY: no other thread exists yet.
    unsafe { env.activate() };
    let session = Session::new(info.key.as_bytes(), "kernel");
    let (python, jobs) = rparallel_pyexec::actor::channel();
    let autopx = AutoPx::default();
    let io_autopx = autopx.clone();

    // Threads spawned while SIGINT is blocked inherit the mask, so Ctrl-C
    // and `kill -INT` always land on the Python (main) thread.
    let blocked = rparallel_pyexec::interrupt::block_sigint();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let io_python = python.clone();
    rparallel_pyexec::actor::spawn_io_thread("rparallel-io", move || {
        serve(info, session, io_python, io_autopx, ready_tx)
    })
    .context("cannot start the I/O thread")?;
    drop(blocked);

    let sink = ready_rx
        .recv()
        .context("the kernel's I/O thread stopped during start-up")??;
    if let Err(e) = rparallel_pyexec::fdcapture::capture(sink.clone()) {
        tracing::warn!("output written to fds 1 and 2 will not reach the notebook: {e}");
    }
    initialize(env)?;
    let shell = PyShell::new(sink)
        .and_then(|shell| {
            pyo3::Python::attach(|py| {
                rparallel_directview::install(py)?;
                px::install(py, shell.py_shell(py), autopx)
            })?;
            Ok(shell)
        })
        .map_err(|e| anyhow::anyhow!("cannot load the execution core: {e}"))?;
    let shell = jobs.serve(shell);
    // Exiting: clusters this kernel started stop with it, and the cells'
    // atexit handlers run, as at the end of a Python program.
    rparallel_directview::stop_owned_clusters();
    shell.at_exit();
    rparallel_protocol::shm::remove_leftovers();
    Ok(())
}

type Ready = std::sync::mpsc::Sender<anyhow::Result<Arc<KernelSink>>>;

async fn serve(
    info: ConnectionInfo,
    session: Session,
    python: PythonHandle,
    autopx: AutoPx,
    ready: Ready,
) {
    let sockets = match bind(&info).await {
        Ok(sockets) => sockets,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let Sockets {
        shell,
        control,
        stdin,
        iopub,
        heartbeat,
    } = sockets;
    let iopub = iopub::spawn(iopub, session.clone());
    heartbeat::spawn(heartbeat);
    let (stdin_tx, stdin_rx) = stdin.split();
    let stdin = stdin::spawn(
        Replier::new(stdin_tx, session.clone(), "stdin"),
        spawn_reader(stdin_rx, session.clone(), "stdin"),
    );
    let sink = Arc::new(KernelSink::new(iopub.clone(), stdin.clone()));
    let kernel_info = KernelInfo::default();
    let shutdown = Arc::new(Notify::new());

    let (shell_tx, shell_rx) = shell.split();
    tokio::spawn(
        ShellChannel {
            replier: Replier::new(shell_tx, session.clone(), "shell"),
            incoming: spawn_reader(shell_rx, session.clone(), "shell"),
            iopub: iopub.clone(),
            python: python.clone(),
            sink: sink.clone(),
            info: kernel_info.clone(),
            history: History::default(),
            autopx,
        }
        .run(),
    );
    let (control_tx, control_rx) = control.split();
    tokio::spawn(
        ControlChannel {
            replier: Replier::new(control_tx, session.clone(), "control"),
            incoming: spawn_reader(control_rx, session.clone(), "control"),
            iopub: iopub.clone(),
            python: python.clone(),
            stdin,
            info: kernel_info,
            shutdown: shutdown.clone(),
        }
        .run(),
    );
    iopub.status("starting", None).await;
    let _ = ready.send(Ok(sink));

    tokio::select! {
        _ = shutdown.notified() => {}
        _ = parent_gone() => tracing::warn!("the process that started this kernel is gone; exiting"),
    }
    iopub.flush().await;
    // Give the socket writers a moment to put the last replies on the wire.
    tokio::time::sleep(Duration::from_millis(50)).await;
    python.exit();
    python.interrupt();
    tokio::time::sleep(SHUTDOWN_GRACE).await;
    tracing::warn!("a cell did not stop after shutdown; exiting anyway");
    rparallel_pyexec::actor::force_exit(0);
}

struct Sockets {
    shell: RouterSocket,
    control: RouterSocket,
    stdin: RouterSocket,
    iopub: PubSocket,
    heartbeat: RepSocket,
}

async fn bind(info: &ConnectionInfo) -> anyhow::Result<Sockets> {
    async fn bound<S: Socket>(
        mut socket: S,
        info: &ConnectionInfo,
        port: u16,
    ) -> anyhow::Result<S> {
        let endpoint = connection::endpoint(info, port);
        socket
            .bind(&endpoint)
            .await
            .with_context(|| format!("cannot bind {endpoint}"))?;
        Ok(socket)
    }
    Ok(Sockets {
        shell: bound(RouterSocket::new(), info, info.shell_port).await?,
        control: bound(RouterSocket::new(), info, info.control_port).await?,
        stdin: bound(RouterSocket::new(), info, info.stdin_port).await?,
        iopub: bound(PubSocket::new(), info, info.iopub_port).await?,
        heartbeat: bound(RepSocket::new(), info, info.hb_port).await?,
    })
}

/// Resolves when this process's parent has exited (we were re-parented).
async fn parent_gone() {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if unsafe { libc::getppid() } != parent {
            return;
        }
    }
}

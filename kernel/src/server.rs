//! Starting a kernel: Python on the main thread, the sockets and channel
//! tasks on the process's runtime (`rparallel_pyexec::process`, as in the
//! engines).
//! [`Kernel`] is the part shared with an engine bound as a kernel: the
//! channels of a connection file over a Python thread that already runs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use rparallel_protocol::reader::spawn_reader;
use rparallel_protocol::{connection, ConnectionInfo, Session};
use rparallel_pyexec::process::{self, Ready};
use rparallel_pyexec::{publish, IPythonLoad, PyShell, PythonEnv, Sink};
use tokio::sync::Notify;

use crate::control::ControlChannel;
use crate::heartbeat;
use crate::history::History;
use crate::info::KernelInfo;
use crate::iopub::{Iopub, KernelStamp};
use crate::python::{KernelState, PythonHandle};
use crate::shell::ShellChannel;
use crate::sockets::{self, Replier, Sockets};
use crate::stdin::{self, StdinHandle, StdinQueue};

/// What the kernel process adds to its Python: the `rparallel` client
/// module (set up once Python runs), and its clean-up at exit.
pub struct Extras {
    pub setup: fn(Python<'_>) -> PyResult<()>,
    pub at_exit: fn(),
}

/// A kernel's channels before they serve: the connection they bind, where
/// running code's output goes ([`Kernel::sink`]), and the queues the
/// channel tasks take over.
pub struct Kernel {
    info: ConnectionInfo,
    stamp: Arc<KernelStamp>,
    iopub: Iopub,
    iopub_queue: publish::Queue,
    stdin: StdinHandle,
    stdin_queue: StdinQueue,
    sink: Arc<Sink>,
}

/// A kernel whose channels serve: its IOPub, and what tells when a client
/// asked it to shut down.
pub struct Serving {
    pub iopub: Iopub,
    pub shutdown: Arc<Notify>,
}

impl Kernel {
    /// The channels of `info` (its key signs everything).
    pub fn new(info: ConnectionInfo) -> Kernel {
        let session = Session::new(info.key.as_bytes(), "kernel");
        let (iopub, iopub_queue) = publish::channel(crate::iopub::CAPACITY);
        let (stdin, stdin_queue) = stdin::channel();
        let sink = Arc::new(Sink::with_stdin(iopub.clone(), stdin.clone()));
        Kernel {
            info,
            stamp: Arc::new(KernelStamp { session }),
            iopub,
            iopub_queue,
            stdin,
            stdin_queue,
            sink,
        }
    }

    /// Where the output of code this kernel runs goes.
    pub fn sink(&self) -> Arc<Sink> {
        self.sink.clone()
    }

    /// Binds the five sockets and starts the channel tasks (on the current
    /// tokio runtime), serving requests with the Python thread `python`.
    pub async fn serve<S: KernelState>(self, python: PythonHandle<S>) -> anyhow::Result<Serving> {
        let Sockets {
            shell,
            control,
            stdin,
            iopub,
            heartbeat,
        } = sockets::bind(&self.info).await?;
        let session = self.stamp.session.clone();
        publish::spawn(self.iopub_queue, iopub, self.stamp.clone());
        heartbeat::spawn(heartbeat);
        let (stdin_tx, stdin_rx) = stdin.split();
        stdin::spawn(
            self.stdin_queue,
            Replier::new(stdin_tx, session.clone(), "stdin"),
            spawn_reader(stdin_rx, session.clone(), "stdin", || {}),
        );
        let kernel_info = KernelInfo::default();
        let shutdown = Arc::new(Notify::new());

        let (shell_tx, shell_rx) = shell.split();
        tokio::spawn(
            ShellChannel {
                replier: Replier::new(shell_tx, session.clone(), "shell"),
                incoming: spawn_reader(shell_rx, session.clone(), "shell", || {}),
                iopub: self.iopub.clone(),
                python: python.clone(),
                sink: self.sink.clone(),
                stamp: self.stamp,
                info: kernel_info.clone(),
                history: History::default(),
            }
            .run(),
        );
        let (control_tx, control_rx) = control.split();
        tokio::spawn(
            ControlChannel {
                replier: Replier::new(control_tx, session.clone(), "control"),
                incoming: spawn_reader(control_rx, session.clone(), "control", || {}),
                iopub: self.iopub.clone(),
                python,
                sink: self.sink,
                stdin: self.stdin,
                info: kernel_info,
                shutdown: shutdown.clone(),
            }
            .run(),
        );
        self.iopub.status("starting", None).await;
        Ok(Serving {
            iopub: self.iopub,
            shutdown,
        })
    }
}

/// Runs a kernel until it is shut down.
pub fn run(connection_file: &Path, env: &PythonEnv, extras: Extras) -> anyhow::Result<()> {
    let info = connection::read(connection_file)?;
    // SAFETY: no other thread exists yet.
    unsafe { env.activate() };
    let kernel = Kernel::new(info);
    let sink = kernel.sink();

    // Sockets first: a frontend connecting before they are bound waits out
    // ZeroMQ's reconnect interval. Requests wait for Python meanwhile.
    let (python, jobs) = rparallel_pyexec::actor::channel::<PyShell>();
    let ((), driver) =
        process::start_io("rparallel-io", move |ready| serve(kernel, python, ready))?;
    let shell = process::start_python(env, sink, IPythonLoad::AtStart)?;
    pyo3::Python::attach(extras.setup)
        .map_err(|e| anyhow::anyhow!("cannot load the rparallel module: {e}"))?;

    let shell = jobs.serve(shell, &driver);
    // Exiting: what the extras started stops, and the cells' atexit
    // handlers run, as at the end of a Python program.
    (extras.at_exit)();
    shell.at_exit();
    rparallel_protocol::shm::remove_leftovers();
    Ok(())
}

async fn serve(kernel: Kernel, python: PythonHandle<PyShell>, ready: Ready<()>) {
    let serving = match kernel.serve(python.clone()).await {
        Ok(serving) => serving,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    tokio::select! {
        _ = serving.shutdown.notified() => {}
        _ = parent_gone() => tracing::warn!("the process that started this kernel is gone; exiting"),
    }
    process::stop(&python, &serving.iopub).await
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

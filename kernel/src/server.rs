//! Starting a kernel: Python on the main thread, the sockets and channel
//! tasks on an I/O thread (`rparallel_pyexec::process`, as in the engines).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rparallel_protocol::reader::spawn_reader;
use rparallel_protocol::{connection, ConnectionInfo, Session};
use rparallel_pyexec::process::{self, Ready};
use rparallel_pyexec::{publish, IPythonLoad, PythonEnv, Sink};
use tokio::sync::Notify;

use crate::control::ControlChannel;
use crate::heartbeat;
use crate::history::History;
use crate::info::KernelInfo;
use crate::iopub::{Iopub, KernelStamp};
use crate::python::PythonHandle;
use crate::shell::ShellChannel;
use crate::sockets::{self, Replier, Sockets};
use crate::stdin::{self, StdinHandle, StdinQueue};

/// What the I/O thread needs; the Python thread keeps the other ends.
struct Io {
    info: ConnectionInfo,
    stamp: Arc<KernelStamp>,
    python: PythonHandle,
    iopub: Iopub,
    iopub_queue: publish::Queue,
    stdin: StdinHandle,
    stdin_queue: StdinQueue,
    sink: Arc<Sink>,
}

/// Runs a kernel until it is shut down.
pub fn run(connection_file: &Path, env: &PythonEnv) -> anyhow::Result<()> {
    let info = connection::read(connection_file)?;
    // SAFETY: no other thread exists yet.
    unsafe { env.activate() };
    let session = Session::new(info.key.as_bytes(), "kernel");
    let (iopub, iopub_queue) = publish::channel(crate::iopub::CAPACITY);
    let (stdin, stdin_queue) = stdin::channel();
    let sink = Arc::new(Sink::with_stdin(iopub.clone(), stdin.clone()));

    // Sockets first: a frontend connecting before they are bound waits out
    // ZeroMQ's reconnect interval. Requests wait for Python meanwhile.
    let (python, jobs) = rparallel_pyexec::actor::channel();
    let io = Io {
        info,
        stamp: Arc::new(KernelStamp { session }),
        python,
        iopub,
        iopub_queue,
        stdin,
        stdin_queue,
        sink: sink.clone(),
    };
    process::start_io("rparallel-io", move |ready| serve(io, ready))?;
    let shell = process::start_python(env, sink, IPythonLoad::AtStart)?;
    // The client, and the %px family registered in the kernel's IPython.
    pyo3::Python::attach(rparallel_directview::install)
        .map_err(|e| anyhow::anyhow!("cannot load the rparallel module: {e}"))?;

    let shell = jobs.serve(shell);
    // Exiting: clusters this kernel started stop with it, and the cells'
    // atexit handlers run, as at the end of a Python program.
    rparallel_directview::stop_owned_clusters();
    shell.at_exit();
    rparallel_protocol::shm::remove_leftovers();
    Ok(())
}

async fn serve(io: Io, ready: Ready<()>) {
    let sockets = match sockets::bind(&io.info).await {
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
    let session = io.stamp.session.clone();
    publish::spawn(io.iopub_queue, iopub, io.stamp.clone());
    heartbeat::spawn(heartbeat);
    let (stdin_tx, stdin_rx) = stdin.split();
    stdin::spawn(
        io.stdin_queue,
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
            iopub: io.iopub.clone(),
            python: io.python.clone(),
            sink: io.sink,
            stamp: io.stamp,
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
            iopub: io.iopub.clone(),
            python: io.python.clone(),
            stdin: io.stdin,
            info: kernel_info,
            shutdown: shutdown.clone(),
        }
        .run(),
    );
    io.iopub.status("starting", None).await;
    let _ = ready.send(Ok(()));

    tokio::select! {
        _ = shutdown.notified() => {}
        _ = parent_gone() => tracing::warn!("the process that started this kernel is gone; exiting"),
    }
    process::stop(&io.python, &io.iopub).await
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

//! The life of a kernel or an engine process, the same for both: Python
//! runs on the main thread (where signals land, so an interrupt reaches
//! running code), the sockets on one I/O thread running a current-thread
//! tokio runtime (the fastest zeromq round trip on this kind of machine).
//!
//! Start-up is [`start_python`] and [`start_io`], in the order the process
//! needs (an engine starts Python first, so one that cannot run Python
//! never registers; the kernel binds its sockets first, so its frontend
//! connects at once); the main thread then serves Python jobs until
//! [`stop`] ends them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::actor::PythonHandle;
use crate::init::{initialize, PythonEnv};
use crate::publish::Publisher;
use crate::shell::{IPythonLoad, PyShell};
use crate::sink::Sink;

/// How long a stopping process waits for running code before exiting anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Starts Python on this thread with everything running code writes
/// (`print`, displays, and fds 1 and 2: C code, subprocesses) going to
/// `sink`, and loads the execution core.
pub fn start_python(
    env: &PythonEnv,
    sink: Arc<Sink>,
    ipython: IPythonLoad,
) -> anyhow::Result<PyShell> {
    if let Err(e) = crate::fdcapture::capture(sink.clone()) {
        tracing::warn!("output written to fds 1 and 2 will not reach the frontend: {e}");
    }
    initialize(env)?;
    PyShell::new(sink, ipython).map_err(|e| anyhow::anyhow!("cannot load the execution core: {e}"))
}

/// How the I/O thread reports that it is ready (or why it cannot start).
pub type Ready<R> = std::sync::mpsc::Sender<anyhow::Result<R>>;

/// Starts the I/O thread `name` running `serve`, and waits until it reports
/// ready. SIGINT is blocked in that thread and the ones it starts, so Ctrl-C
/// and `kill -INT` always land on the Python (main) thread.
pub fn start_io<R, F, Fut>(name: &str, serve: F) -> anyhow::Result<R>
where
    R: Send + 'static,
    F: FnOnce(Ready<R>) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let blocked = crate::interrupt::block_sigint();
    let (ready, started) = std::sync::mpsc::channel();
    spawn_io_thread(name, move || serve(ready)).context("cannot start the I/O thread")?;
    drop(blocked);
    started
        .recv()
        .with_context(|| format!("the {name} thread stopped during start-up"))?
}

/// The end of a process, from the I/O thread: what was published goes out,
/// the Python thread is asked to stop (and running code interrupted); if it
/// has not stopped within the grace period, the process exits anyway.
pub async fn stop<S: 'static>(python: &PythonHandle<S>, publisher: &Publisher) -> ! {
    publisher.flush().await;
    // Give the socket writers a moment to put the last messages on the wire.
    tokio::time::sleep(Duration::from_millis(50)).await;
    python.exit();
    // An idle Python thread takes the exit at once; only code still
    // running after a moment is interrupted.
    tokio::time::sleep(Duration::from_millis(100)).await;
    python.interrupt();
    tokio::time::sleep(SHUTDOWN_GRACE).await;
    tracing::warn!("running code did not stop after shutdown; exiting anyway");
    force_exit(0);
}

/// Starts the process's I/O thread running `serve`. The Python thread
/// depends on it for everything, so if it panics the process exits rather
/// than leave a Python thread waiting forever (an orphan).
fn spawn_io_thread<F, Fut>(name: &str, serve: F) -> std::io::Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let thread_name = name.to_string();
    std::thread::Builder::new()
        .name(thread_name.clone())
        .spawn(move || {
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(serve());
            }));
            if ran.is_err() {
                eprintln!("rparallel: the {thread_name} thread failed; exiting");
                std::process::exit(70);
            }
        })
        .map(|_| ())
}

/// Ends the process now. `_exit` skips exit handlers: `exit()` could wait
/// on a lock a stuck Python thread holds.
pub fn force_exit(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

//! The life of a kernel or an engine process, the same for both: Python
//! runs on the main thread (where signals land, so an interrupt reaches
//! running code), the sockets on one current-thread tokio runtime (the
//! fastest zeromq round trip on this kind of machine), driven by the Python
//! thread while it waits and by an I/O thread while it runs code
//! ([`Driver`]).
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
use rparallel_driver::Driver;

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

/// How `serve` reports that it is ready (or why it cannot start).
pub type Ready<R> = std::sync::mpsc::Sender<anyhow::Result<R>>;

/// Starts the process's runtime with `serve` on it, and the I/O thread
/// `name` that drives it until the Python thread serves (and while Python
/// runs code, see [`Driver`]); waits until `serve` reports ready. SIGINT
/// is blocked in the I/O thread and the threads it starts, so Ctrl-C and
/// `kill -INT` always land on the Python (main) thread.
pub fn start_io<R, F, Fut>(name: &str, serve: F) -> anyhow::Result<(R, Driver)>
where
    R: Send + 'static,
    F: FnOnce(Ready<R>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Its blocking-pool threads may start from the Python thread.
    let driver = Driver::build(|| std::mem::forget(crate::interrupt::block_sigint()))
        .context("cannot start the tokio runtime")?;
    let (ready, started) = std::sync::mpsc::channel();
    spawn_serve(&driver, name, serve(ready));
    let blocked = crate::interrupt::block_sigint();
    let watcher = driver.clone();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || watcher.watch())
        .context("cannot start the I/O thread")?;
    drop(blocked);
    let ready = started
        .recv()
        .with_context(|| format!("the {name} thread stopped during start-up"))??;
    Ok((ready, driver))
}

/// Runs `serve` on the runtime. The Python thread depends on it for
/// everything, so if it panics the process exits rather than leave a
/// Python thread waiting forever (an orphan).
fn spawn_serve<Fut>(driver: &Driver, name: &str, serve: Fut)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let name = name.to_string();
    let served = driver.runtime().spawn(serve);
    driver.runtime().spawn(async move {
        if served.await.is_err() {
            eprintln!("rparallel: the {name} tasks failed; exiting");
            std::process::exit(70);
        }
    });
}

/// The end of a process, from a task: what was published goes out,
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

/// Ends the process now. `_exit` skips exit handlers: `exit()` could wait
/// on a lock a stuck Python thread holds.
pub fn force_exit(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

//! The Python thread as an actor, for the kernel and the engines alike: it
//! owns the interpreter's state `S` and runs jobs sent from other threads,
//! one at a time, in order. Jobs are closures over `&S`; the handle is cheap
//! to clone and can also interrupt the running job. While it waits for the
//! next job, the Python thread drives the process's runtime ([`Driver`]):
//! a job sent by a task of that runtime then needs no thread wake-up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::Python;
use tokio::sync::{mpsc, oneshot};

use crate::interrupt::Interrupter;
use rparallel_driver::Driver;

/// How often an idle Python thread wakes to release Python objects that
/// other threads dropped (pyo3 defers those until a thread attaches).
const IDLE_WAKE: Duration = Duration::from_secs(1);

type Job<S> = Box<dyn FnOnce(&S) + Send>;

enum Command<S> {
    Run(Job<S>),
    Exit,
}

/// A cheap handle to the Python thread.
pub struct PythonHandle<S> {
    tx: mpsc::UnboundedSender<Command<S>>,
    interrupter: Arc<Mutex<Option<Interrupter>>>,
}

impl<S> Clone for PythonHandle<S> {
    fn clone(&self) -> Self {
        PythonHandle {
            tx: self.tx.clone(),
            interrupter: self.interrupter.clone(),
        }
    }
}

/// The receiving end, served by the Python thread.
pub struct PythonJobs<S> {
    rx: mpsc::UnboundedReceiver<Command<S>>,
    interrupter: Arc<Mutex<Option<Interrupter>>>,
}

pub fn channel<S>() -> (PythonHandle<S>, PythonJobs<S>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let interrupter = Arc::new(Mutex::new(None));
    (
        PythonHandle {
            tx,
            interrupter: interrupter.clone(),
        },
        PythonJobs { rx, interrupter },
    )
}

impl<S: 'static> PythonHandle<S> {
    /// Queues `job`; the receiver resolves with its result (or an error if
    /// the Python thread is gone).
    pub fn submit<R, F>(&self, job: F) -> oneshot::Receiver<R>
    where
        R: Send + 'static,
        F: FnOnce(&S) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job<S> = Box::new(move |state| {
            let _ = tx.send(job(state));
        });
        let _ = self.tx.send(Command::Run(job));
        rx
    }

    /// Runs `job` on the Python thread and waits for its result. Never
    /// resolves if the Python thread is gone (the process is exiting).
    pub async fn call<R, F>(&self, job: F) -> R
    where
        R: Send + 'static,
        F: FnOnce(&S) -> R + Send + 'static,
    {
        match self.submit(job).await {
            Ok(result) => result,
            Err(_) => std::future::pending().await,
        }
    }

    /// Raises KeyboardInterrupt in the running code, if any.
    pub fn interrupt(&self) {
        if let Some(interrupter) = *self.interrupter.lock().unwrap_or_else(|e| e.into_inner()) {
            interrupter.interrupt();
        }
    }

    /// Asks the Python thread to stop after the current job.
    pub fn exit(&self) {
        let _ = self.tx.send(Command::Exit);
    }
}

impl<S> PythonJobs<S> {
    /// Serves jobs on the calling thread (the one Python was started on)
    /// until told to exit, driving the runtime of `driver` while it waits;
    /// returns the state for clean-up.
    pub fn serve(mut self, state: S, driver: &Driver) -> S {
        *self.interrupter.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Interrupter::for_current_thread());
        loop {
            let next = driver.wait_on(async {
                // One turn of the runtime first: what the last job left
                // (its reply) goes out before the next job starts.
                tokio::task::yield_now().await;
                tokio::time::timeout(IDLE_WAKE, self.rx.recv()).await
            });
            match next {
                Ok(Some(Command::Run(job))) => job(&state),
                Ok(Some(Command::Exit)) | Ok(None) => {
                    // Nothing runs any more: a late interrupt must not
                    // land in the shutdown (a SIGINT exit status tells
                    // mpiexec the rank failed).
                    *self.interrupter.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    driver.leave();
                    return state;
                }
                Err(_) => Python::attach(|_| ()),
            }
        }
    }
}

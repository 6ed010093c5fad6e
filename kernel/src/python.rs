//! The Python thread as an actor: it owns the interpreter ([`PyShell`]) and
//! runs jobs sent by the async side one at a time. [`KernelSink`] is where a
//! running cell's output goes: IOPub, tagged with the request being served.

use std::sync::{mpsc, Arc, Mutex};

use rparallel_protocol::Message;
use rparallel_pyexec::{InputError, Interrupter, OutputEvent, OutputSink, PyShell};
use serde_json::json;
use tokio::sync::oneshot;

use crate::iopub::{Iopub, Parent};
use crate::stdin::StdinHandle;

type Job = Box<dyn FnOnce(&PyShell) + Send>;

enum Command {
    Run(Job),
    Exit,
}

/// A cheap handle to the Python thread.
#[derive(Clone)]
pub struct PythonHandle {
    tx: mpsc::Sender<Command>,
    interrupter: Arc<Mutex<Option<Interrupter>>>,
}

/// The receiving end, served by the Python thread.
pub struct PythonJobs {
    rx: mpsc::Receiver<Command>,
    interrupter: Arc<Mutex<Option<Interrupter>>>,
}

pub fn channel() -> (PythonHandle, PythonJobs) {
    let (tx, rx) = mpsc::channel();
    let interrupter = Arc::new(Mutex::new(None));
    (
        PythonHandle {
            tx,
            interrupter: interrupter.clone(),
        },
        PythonJobs { rx, interrupter },
    )
}

impl PythonHandle {
    /// Runs `job` on the Python thread and waits for its result.
    pub async fn call<R, F>(&self, job: F) -> R
    where
        R: Send + 'static,
        F: FnOnce(&PyShell) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |shell| {
            let _ = tx.send(job(shell));
        });
        if self.tx.send(Command::Run(job)).is_err() {
            std::future::pending::<()>().await;
        }
        match rx.await {
            Ok(result) => result,
            // The Python thread is gone: the kernel is exiting.
            Err(_) => std::future::pending().await,
        }
    }

    /// Raises KeyboardInterrupt in the running cell, if any.
    pub fn interrupt(&self) {
        if let Some(interrupter) = *self.interrupter.lock().unwrap() {
            interrupter.interrupt();
        }
    }

    /// Asks the Python thread to stop after the current job.
    pub fn exit(&self) {
        let _ = self.tx.send(Command::Exit);
    }
}

impl PythonJobs {
    /// Serves jobs on the calling thread (the one Python was started on)
    /// until told to exit.
    pub fn serve(self, shell: PyShell) {
        *self.interrupter.lock().unwrap() = Some(Interrupter::for_current_thread());
        while let Ok(Command::Run(job)) = self.rx.recv() {
            job(&shell);
        }
        // Exiting: clusters this kernel started stop with it, and the
        // cells' atexit handlers run, as at the end of a Python program.
        rparallel_directview::stop_owned_clusters();
        shell.at_exit();
    }
}

/// Sends a running cell's output to IOPub, parented to the current request.
pub struct KernelSink {
    iopub: Iopub,
    stdin: StdinHandle,
    parent: Mutex<Parent>,
}

impl KernelSink {
    pub fn new(iopub: Iopub, stdin: StdinHandle) -> Self {
        KernelSink {
            iopub,
            stdin,
            parent: Mutex::new(None),
        }
    }

    /// The request whose cell runs now. It stays set after the cell, so
    /// output from threads the cell started lands in that cell, as in ipykernel.
    pub fn set_parent(&self, parent: Parent) {
        *self.parent.lock().unwrap() = parent;
    }

    fn parent(&self) -> Parent {
        self.parent.lock().unwrap().clone()
    }
}

impl OutputSink for KernelSink {
    fn emit(&self, event: OutputEvent) {
        let parent = self.parent();
        match event {
            OutputEvent::Stream { name, text } => self.iopub.blocking_stream(name, text, parent),
            OutputEvent::Display {
                data,
                metadata,
                transient,
                update,
            } => {
                let msg_type = if update {
                    "update_display_data"
                } else {
                    "display_data"
                };
                let content = json!({ "data": data, "metadata": metadata, "transient": transient });
                self.iopub.blocking_publish(msg_type, content, parent);
            }
            OutputEvent::ClearOutput { wait } => {
                self.iopub
                    .blocking_publish("clear_output", json!({ "wait": wait }), parent);
            }
        }
    }

    fn input(&self, prompt: &str, password: bool) -> Result<String, InputError> {
        let parent: Option<Arc<Message>> = self.parent();
        let Some(parent) = parent else {
            return Err(InputError::NotAllowed);
        };
        let allowed = parent
            .content
            .get("allow_stdin")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        if !allowed {
            return Err(InputError::NotAllowed);
        }
        self.stdin.blocking_input(prompt, password, parent)
    }
}

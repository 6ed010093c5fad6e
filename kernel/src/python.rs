//! The kernel's Python thread ([`PythonHandle`], an actor owning the
//! [`PyShell`]) and [`KernelSink`], where a running cell's output goes:
//! IOPub, tagged with the request being served.

use std::sync::{Arc, Mutex};

use rparallel_protocol::Message;
use rparallel_pyexec::{InputError, OutputEvent, OutputSink, PyShell, WireOutput};

use crate::iopub::{Iopub, Parent};
use crate::stdin::StdinHandle;

/// The kernel's handle to its Python thread.
pub type PythonHandle = rparallel_pyexec::actor::PythonHandle<PyShell>;

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
        match event.into_wire() {
            WireOutput::Stream { name, text } => self.iopub.blocking_stream(name, text, parent),
            WireOutput::Message { msg_type, content } => {
                self.iopub.blocking_publish(msg_type, content, parent)
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

//! [`Sink`]: where the output of running code goes, in the kernel and on
//! the engines: to the [`Publisher`], tagged with the request being served.
//! `input()` is answered by the process's [`Stdin`], if it has one.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::output::{InputError, OutputEvent, OutputSink, WireOutput};
use crate::publish::{Parent, Publisher};

/// Asks the frontend of a request for a line of input.
pub trait Stdin: Send + Sync + 'static {
    fn input(&self, prompt: &str, password: bool, parent: Parent) -> Result<String, InputError>;
}

/// Sends running code's output to the publisher, parented to the request
/// being served.
pub struct Sink {
    publisher: Publisher,
    stdin: Option<Box<dyn Stdin>>,
    parent: Mutex<Option<Parent>>,
    /// Another sink that takes everything meanwhile (an engine's output
    /// while it serves a request of the kernel it is bound as).
    diverted: Mutex<Option<Arc<Sink>>>,
}

impl Sink {
    /// A sink without stdin: `input()` raises StdinNotImplementedError
    /// (engines, as in ipyparallel).
    pub fn new(publisher: Publisher) -> Self {
        Sink {
            publisher,
            stdin: None,
            parent: Mutex::new(None),
            diverted: Mutex::new(None),
        }
    }

    /// A sink whose `input()` asks the request's frontend, when the request
    /// allows it (`allow_stdin`).
    pub fn with_stdin(publisher: Publisher, stdin: impl Stdin) -> Self {
        Sink {
            stdin: Some(Box::new(stdin)),
            ..Sink::new(publisher)
        }
    }

    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The request served now. It stays set afterwards, so output from
    /// threads it started lands with it, as in ipykernel.
    pub fn set_parent(&self, parent: &Parent) {
        *self.parent.lock().unwrap_or_else(|e| e.into_inner()) = Some(parent.clone());
    }

    /// Sends everything to `to` until called again with None.
    pub fn divert(&self, to: Option<Arc<Sink>>) {
        *self.diverted.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }

    fn diversion(&self) -> Option<Arc<Sink>> {
        self.diverted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn current(&self) -> Option<Parent> {
        self.parent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl OutputSink for Sink {
    fn emit(&self, event: OutputEvent) {
        if let Some(other) = self.diversion() {
            return other.emit(event);
        }
        let parent = self.current();
        match event.into_wire() {
            WireOutput::Stream { name, text } => self.publisher.blocking_stream(name, text, parent),
            WireOutput::Message {
                msg_type,
                content,
                metadata,
                buffers,
            } => self
                .publisher
                .blocking_output_with(msg_type, content, metadata, buffers, parent),
        }
    }

    fn input(&self, prompt: &str, password: bool) -> Result<String, InputError> {
        if let Some(other) = self.diversion() {
            return other.input(prompt, password);
        }
        let (Some(stdin), Some(parent)) = (&self.stdin, self.current()) else {
            return Err(InputError::NotAllowed);
        };
        let allowed = parent.content["allow_stdin"].as_bool().unwrap_or(false);
        if !allowed {
            return Err(InputError::NotAllowed);
        }
        stdin.input(prompt, password, parent)
    }

    fn parent(&self) -> Value {
        if let Some(other) = self.diversion() {
            return other.parent();
        }
        self.current().map_or(Value::Null, |p| {
            json!({
                "header": p.header,
                "parent_header": p.parent_header,
                "metadata": p.metadata,
                "msg_type": p.msg_type(),
            })
        })
    }
}

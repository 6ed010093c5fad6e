//! The engine's Python thread: an actor (`rparallel_pyexec::actor`) owning
//! the interpreter ([`PyShell`] and its [`Remote`] operations) that serves
//! one request at a time, sent by the scheduler. Outputs and the reply are sent from here, through the same
//! ordered queue, so a request's outputs always precede its reply.

use std::sync::{Arc, Mutex};

use rparallel_protocol::message::now_iso8601;
use rparallel_protocol::{shm, Message};
use rparallel_pyexec::{
    CellError, InputError, OutputEvent, OutputSink, PyShell, Remote, WireOutput,
};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::outgoing::Outgoing;
use crate::stamp::{Parent, Stamp};

/// What serving a request tells the scheduler.
#[derive(Debug, Default)]
pub struct Served {
    /// A cell failed with `stop_on_error`: abort the queued execute requests.
    pub abort_queue: bool,
}

/// The engine's handle to its Python thread.
pub type PythonHandle = rparallel_pyexec::actor::PythonHandle<Server>;

/// msg_ids of requests handed to Python that were aborted before they
/// started (shared by the scheduler and the Python thread).
pub type Aborted = Arc<Mutex<std::collections::HashSet<String>>>;

/// Serves `request` on the Python thread, unless it was aborted by the time
/// its turn comes; resolves when its reply is queued.
pub fn serve(
    python: &PythonHandle,
    request: Parent,
    aborted: Aborted,
) -> oneshot::Receiver<Served> {
    python.submit(move |server: &Server| {
        let was_aborted = aborted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&request.header.msg_id);
        if was_aborted {
            server
                .outgoing
                .blocking_send(server.stamp.aborted(&request));
            return Served::default();
        }
        server.serve(&request)
    })
}

/// The Python side of the engine.
pub struct Server {
    pub shell: PyShell,
    pub remote: Remote,
    pub stamp: Stamp,
    pub outgoing: Outgoing,
    pub sink: Arc<EngineSink>,
}

impl Server {
    fn serve(&self, request: &Parent) -> Served {
        let started = now_iso8601();
        self.sink.set_parent(request.clone());
        let mut served = Served::default();
        let (content, buffers) = match request.msg_type() {
            "execute_request" => {
                let (content, abort) = self.execute(request);
                served.abort_queue = abort;
                (content, vec![])
            }
            "apply_request" => match buffers(request).and_then(|b| self.remote.apply(b)) {
                Ok(frames) => (json!({ "status": "ok" }), frames),
                Err(e) => (self.error_content(request, e), vec![]),
            },
            "push_request" => match buffers(request).and_then(|b| self.remote.push(b)) {
                Ok(()) => (json!({ "status": "ok" }), vec![]),
                Err(e) => (self.error_content(request, e), vec![]),
            },
            "pull_request" => match self.remote.pull(&names(&request.content)) {
                Ok(frames) => (json!({ "status": "ok" }), frames),
                Err(e) => (self.error_content(request, e), vec![]),
            },
            "clear_request" => match self.remote.clear() {
                Ok(()) => (json!({ "status": "ok" }), vec![]),
                Err(e) => (self.error_content(request, e), vec![]),
            },
            other => {
                tracing::warn!("unsupported request {other}");
                let error = CellError {
                    ename: "ValueError".into(),
                    evalue: format!("the engine does not serve {other}"),
                    traceback: vec![format!("ValueError: the engine does not serve {other}")],
                };
                (self.error_content(request, error), vec![])
            }
        };
        let mut reply = self.stamp.reply(request, content, &started);
        reply.buffers = buffers;
        // A client on this host takes large results through shared memory.
        let client_host = request.metadata[shm::HOST_KEY].as_str();
        if shm::is_local(client_host) {
            if let Err(e) = shm::export(&mut reply) {
                tracing::warn!("shared memory unavailable, sending through the socket: {e}");
            }
        }
        self.outgoing.blocking_send(reply);
        served
    }

    /// Runs a cell: execute_input, outputs, execute_result or error. Returns
    /// the reply content and whether queued cells should be aborted.
    fn execute(&self, request: &Parent) -> (Value, bool) {
        let content = &request.content;
        let flag = |key: &str, default: bool| content[key].as_bool().unwrap_or(default);
        let code = request.content_str("code").to_string();
        let silent = flag("silent", false);
        let store_history = flag("store_history", !silent) && !silent;
        // Only when asked: a client sending many requests should not see
        // later ones aborted unless it said so.
        let stop_on_error = flag("stop_on_error", false);

        if !silent {
            let input = json!({ "code": code, "execution_count": self.shell.execution_count() });
            self.outgoing
                .blocking_output("execute_input", input, request.clone());
        }
        let outcome = self.shell.execute(&code, silent, store_history);
        let count = outcome.execution_count;
        match outcome.result {
            Ok(Some(bundle)) => {
                let result = json!({
                    "execution_count": count,
                    "data": bundle.data,
                    "metadata": bundle.metadata,
                });
                self.outgoing
                    .blocking_output("execute_result", result, request.clone());
                (ok_execute(count), false)
            }
            Ok(None) => (ok_execute(count), false),
            Err(error) => {
                let shown = serde_json::to_value(&error).unwrap_or_default();
                self.outgoing
                    .blocking_output("error", shown, request.clone());
                let mut reply = self.error_content(request, error);
                reply["execution_count"] = json!(count);
                (reply, stop_on_error)
            }
        }
    }

    fn error_content(&self, request: &Message, error: CellError) -> Value {
        json!({
            "status": "error",
            "ename": error.ename,
            "evalue": error.evalue,
            "traceback": error.traceback,
            "engine_info": self.stamp.engine_info(request),
        })
    }
}

fn ok_execute(count: u32) -> Value {
    json!({
        "status": "ok",
        "execution_count": count,
        "user_expressions": {},
        "payload": [],
    })
}

/// `names` of a pull request: a list of strings, or one string.
fn names(content: &Value) -> Vec<String> {
    match &content["names"] {
        Value::String(name) => vec![name.clone()],
        Value::Array(names) => names
            .iter()
            .map(|n| {
                n.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| n.to_string())
            })
            .collect(),
        _ => vec![],
    }
}

/// Where a running request's output goes: to the client that sent it.
pub struct EngineSink {
    outgoing: Outgoing,
    parent: Mutex<Option<Parent>>,
}

impl EngineSink {
    pub fn new(outgoing: Outgoing) -> Self {
        EngineSink {
            outgoing,
            parent: Mutex::new(None),
        }
    }

    /// The request served now. It stays set afterwards, so output from
    /// threads it started lands with it, as in the kernel.
    pub fn set_parent(&self, parent: Parent) {
        *self.parent.lock().unwrap() = Some(parent);
    }

    fn parent(&self) -> Option<Parent> {
        self.parent.lock().unwrap().clone()
    }
}

impl OutputSink for EngineSink {
    fn emit(&self, event: OutputEvent) {
        // Output before any request (start-up) has no one to go to.
        let Some(parent) = self.parent() else {
            return;
        };
        match event.into_wire() {
            WireOutput::Stream { name, text } => self.outgoing.blocking_stream(name, text, parent),
            WireOutput::Message { msg_type, content } => {
                self.outgoing.blocking_output(msg_type, content, parent)
            }
        }
    }

    /// Engines have no stdin: `input()` raises StdinNotImplementedError, as
    /// in ipyparallel.
    fn input(&self, _prompt: &str, _password: bool) -> Result<String, InputError> {
        Err(InputError::NotAllowed)
    }
}

/// The request's buffers, with those that came through shared memory read back.
fn buffers(request: &Parent) -> Result<Vec<bytes::Bytes>, CellError> {
    let mut buffers = request.buffers.clone();
    shm::import_buffers(&request.metadata, &mut buffers).map_err(|e| CellError {
        ename: "OSError".into(),
        evalue: format!("cannot read a buffer sent through shared memory: {e}"),
        traceback: vec![format!(
            "OSError: cannot read a buffer sent through shared memory: {e}"
        )],
    })?;
    Ok(buffers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_names_from_a_list_or_a_string() {
        assert_eq!(names(&json!({"names": ["a", "b[0]"]})), vec!["a", "b[0]"]);
        assert_eq!(names(&json!({"names": "a"})), vec!["a"]);
        assert!(names(&json!({})).is_empty());
    }

    #[test]
    fn ok_execute_reply_content() {
        let c = ok_execute(4);
        assert_eq!(c["status"], "ok");
        assert_eq!(c["execution_count"], 4);
    }
}

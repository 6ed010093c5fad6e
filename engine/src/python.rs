//! The engine's Python thread: an actor (`rparallel_pyexec::actor`) owning
//! the interpreter ([`PyShell`] and its [`Namespace`] operations) that serves
//! one request at a time, sent by the scheduler. Cells run through the
//! execution core's execute path, as in the kernel; apply, push, pull and
//! clear through [`Namespace`]. Outputs and the reply leave through the same
//! publisher, so a request's outputs always precede its reply.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use rparallel_protocol::message::now_iso8601;
use rparallel_protocol::shm;
use rparallel_pyexec::execute::{self, Defaults, ExecuteRequest};
use rparallel_pyexec::{CellError, Namespace, Parent, PyShell, Sink, Stamp as _};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::stamp::Stamp;

/// What serving a request tells the scheduler.
#[derive(Debug, Default)]
pub struct Served {
    /// A cell failed with `stop_on_error`: abort the queued execute requests.
    pub abort_queue: bool,
}

/// The engine's handle to its Python thread.
pub type PythonHandle = rparallel_pyexec::actor::PythonHandle<Server>;

/// Who has a request handed to Python first: Python, starting it, or an
/// abort, which then answers it at once from the I/O thread (a request
/// waiting behind a long one is not held until that one ends).
#[derive(Clone, Debug, Default)]
pub struct Claim(Arc<AtomicU8>);

impl Claim {
    const WAITING: u8 = 0;
    const STARTED: u8 = 1;
    const ABORTED: u8 = 2;

    fn take(&self, to: u8) -> bool {
        self.0
            .compare_exchange(Self::WAITING, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Python starts it, unless it was aborted.
    pub fn start(&self) -> bool {
        self.take(Self::STARTED)
    }

    /// Aborts it, unless it started.
    pub fn abort(&self) -> bool {
        self.take(Self::ABORTED)
    }
}

/// Serves `request` on the Python thread, unless `claim` was aborted by
/// the time its turn comes (it was answered then); resolves when done.
pub fn serve(python: &PythonHandle, request: Parent, claim: Claim) -> oneshot::Receiver<Served> {
    python.submit(move |server: &Server| {
        if !claim.start() {
            return Served::default();
        }
        server.serve(&request)
    })
}

/// The Python side of the engine.
pub struct Server {
    pub shell: PyShell,
    pub namespace: Namespace,
    pub stamp: Arc<Stamp>,
    pub sink: Arc<Sink>,
}

impl Server {
    fn serve(&self, request: &Parent) -> Served {
        if request.msg_type() == "execute_request" {
            let cell = ExecuteRequest::parse(&request.content, Defaults::ENGINE);
            let executed = execute::run(&self.shell, &self.sink, &*self.stamp, request, &cell);
            self.send(executed.reply);
            return Served {
                abort_queue: executed.abort_queue,
            };
        }
        let started = now_iso8601();
        self.sink.set_parent(request);
        let done = match request.msg_type() {
            "apply_request" => buffers(request).and_then(|b| self.namespace.apply(b)),
            "push_request" => buffers(request)
                .and_then(|b| self.namespace.push(b))
                .map(|()| vec![]),
            "pull_request" => self.namespace.pull(&names(&request.content)),
            "clear_request" => self.namespace.clear().map(|()| vec![]),
            other => {
                tracing::warn!("unsupported request {other}");
                Err(CellError::line(
                    "ValueError",
                    format!("the engine does not serve {other}"),
                ))
            }
        };
        let (content, buffers) = match done {
            Ok(frames) => (json!({ "status": "ok" }), frames),
            Err(error) => (error_content(error), vec![]),
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
        self.send(reply);
        Served::default()
    }

    fn send(&self, message: rparallel_protocol::Message) {
        self.sink.publisher().blocking_send(message);
    }
}

/// The reply content of a failed request (the stamp adds `engine_info`).
fn error_content(error: CellError) -> Value {
    json!({
        "status": "error",
        "ename": error.ename,
        "evalue": error.evalue,
        "traceback": error.traceback,
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

/// The request's buffers, with those that came through shared memory read back.
fn buffers(request: &Parent) -> Result<Vec<bytes::Bytes>, CellError> {
    let mut buffers = request.buffers.clone();
    shm::import_buffers(&request.metadata, &mut buffers).map_err(|e| {
        CellError::line(
            "OSError",
            format!("cannot read a buffer sent through shared memory: {e}"),
        )
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
    fn failures_become_error_replies() {
        let c = error_content(CellError::new("E", "v", vec!["t".into()]));
        assert_eq!(c["status"], "error");
        assert_eq!(
            (c["ename"].as_str(), c["traceback"][0].as_str()),
            (Some("E"), Some("t"))
        );
    }
}

//! What every Python object of one client shares: the connection and the
//! Python modules of the package.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pyo3::prelude::*;
use rparallel_protocol::{shm, Message};
use serde_json::Value;

use pyo3::exceptions::PyOSError;
use rparallel_cluster::{ConnectionFile, Profile};

use crate::client::os_error;
use crate::connection::Connection;
use crate::tracker::Tracker;

/// How long interrupted engines get to stop before the caller gives up.
pub const INTERRUPT_GRACE: Duration = Duration::from_millis(1500);

pub struct Core {
    pub connection: Connection,
}

impl Core {
    /// Connects to the controller of `profile` (or the one `url_file`
    /// names) and learns its engines.
    pub fn connect(
        py: Python<'_>,
        profile: &Profile,
        url_file: Option<std::path::PathBuf>,
        timeout: f64,
    ) -> PyResult<Arc<Core>> {
        let path = url_file.unwrap_or_else(|| profile.client_file());
        let file = ConnectionFile::read(&path).map_err(|e| {
            if path.exists() {
                os_error(e)
            } else {
                PyOSError::new_err(format!(
                    "no cluster is running in profile {} ({} not found); start one with `rparallel cluster start` or rparallel.Cluster",
                    profile.name,
                    path.display()
                ))
            }
        })?;
        let wait = Duration::from_secs_f64(timeout.max(0.1));
        let connection = py
            .detach(|| Connection::connect(&file, wait))
            .map_err(os_error)?;
        let core = Arc::new(Core { connection });
        let reply = core.ask_controller(py, "connection_request", serde_json::json!({}), wait)?;
        if reply.is_none() {
            return Err(error(
                py,
                "TimeoutError",
                (format!(
                    "the controller at {} did not answer within {timeout} s",
                    file.endpoint()
                ),),
            ));
        }
        Ok(core)
    }

    /// Sends a request to the controller itself and waits for its reply's
    /// content (None: no reply within `timeout`).
    pub fn ask_controller(
        &self,
        py: Python<'_>,
        msg_type: &str,
        content: Value,
        timeout: Duration,
    ) -> PyResult<Option<Value>> {
        let msg_id = self.request(None, msg_type, content, vec![]);
        let ids = std::slice::from_ref(&msg_id);
        let answered = self.wait(py, ids, Some(timeout));
        let reply = self
            .tracker()
            .lock()
            .tasks
            .get(&msg_id)
            .and_then(|t| t.reply.as_ref().map(|r| r.content.clone()));
        self.tracker().forget(ids);
        Ok(if answered? { reply } else { None })
    }

    pub fn tracker(&self) -> &Tracker {
        &self.connection.tracker
    }

    /// Live engine ids, sorted.
    pub fn ids(&self) -> Vec<u32> {
        self.tracker().lock().engines.keys().copied().collect()
    }

    /// Sends a request to `engine` (None: the controller); returns its msg_id.
    pub fn request(
        &self,
        engine: Option<u32>,
        msg_type: &str,
        content: Value,
        buffers: Vec<Bytes>,
    ) -> String {
        let mut message: Message = self.connection.session.message(msg_type, content, None);
        message.buffers = buffers;
        if let Some(engine) = engine {
            self.use_shared_memory(engine, &mut message);
        }
        let msg_id = message.header.msg_id.clone();
        self.connection.send(engine, message);
        msg_id
    }

    /// With an engine on this host, large buffers go through shared memory
    /// both ways (the engine answers so when it sees our host id).
    fn use_shared_memory(&self, engine: u32, message: &mut Message) {
        let local = {
            let state = self.tracker().lock();
            let host = state.engines.get(&engine).and_then(|e| e["host"].as_str());
            shm::is_local(host)
        };
        if !local {
            return;
        }
        if matches!(message.msg_type(), "apply_request" | "pull_request") {
            message.metadata[shm::HOST_KEY] = shm::host_id().into();
        }
        if let Err(e) = shm::export(message) {
            tracing::warn!("shared memory unavailable, sending through the socket: {e}");
        }
    }

    /// Waits for `msg_ids` in slices, checking for Ctrl-C / kernel interrupts
    /// between them. True when all finished.
    ///
    /// An interrupt while waiting (Ctrl-C, the notebook's stop button) is
    /// passed on to the engines still running these requests, so the remote
    /// code stops too; then KeyboardInterrupt is raised here.
    pub fn wait(
        &self,
        py: Python<'_>,
        msg_ids: &[String],
        timeout: Option<Duration>,
    ) -> PyResult<bool> {
        let waited = wait_interruptibly(py, timeout, |slice| {
            self.tracker().wait(msg_ids, Some(slice))
        });
        if let Err(e) = &waited {
            if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
                self.interrupt_engines_of(py, msg_ids);
            }
        }
        waited
    }

    /// Sends interrupt_request to every engine running one of `msg_ids`,
    /// and gives them a moment to stop (short enough that an interrupted
    /// cell ends within 2 s).
    pub fn interrupt_engines_of(&self, py: Python<'_>, msg_ids: &[String]) {
        let sent = self.send_interrupts(msg_ids);
        py.detach(|| self.tracker().wait(msg_ids, Some(INTERRUPT_GRACE)));
        self.tracker().forget(&sent);
    }

    /// Sends interrupt_request to every engine running one of `msg_ids`;
    /// returns the interrupt requests' ids.
    pub fn send_interrupts(&self, msg_ids: &[String]) -> Vec<String> {
        let engines: std::collections::BTreeSet<u32> = {
            let state = self.tracker().lock();
            msg_ids
                .iter()
                .filter_map(|id| state.tasks.get(id))
                .filter(|t| t.status == crate::tracker::Status::Pending)
                .filter_map(|t| t.engine)
                .collect()
        };
        engines
            .into_iter()
            .map(|engine| {
                self.request(
                    Some(engine),
                    "interrupt_request",
                    serde_json::json!({}),
                    vec![],
                )
            })
            .collect()
    }
}

/// Runs `wait(slice)` with the GIL released until it returns true or
/// `timeout` passes; Python signal handlers run between slices, so an
/// interrupt raises KeyboardInterrupt here.
pub fn wait_interruptibly(
    py: Python<'_>,
    timeout: Option<Duration>,
    wait: impl Fn(Duration) -> bool + Sync,
) -> PyResult<bool> {
    const SLICE: Duration = Duration::from_millis(50);
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let slice = match deadline {
            Some(d) => d
                .saturating_duration_since(std::time::Instant::now())
                .min(SLICE),
            None => SLICE,
        };
        if py.detach(|| wait(slice)) {
            return Ok(true);
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Ok(false);
        }
    }
}

/// `timeout` as Python passes it: None or negative means forever.
pub fn timeout_arg(timeout: Option<f64>) -> Option<Duration> {
    timeout.filter(|t| *t >= 0.0).map(Duration::from_secs_f64)
}

/// A JSON value (a MIME bundle, metadata) as the Python object it encodes.
pub fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?
        .getattr("loads")?
        .call1((value.to_string(),))
}

/// `rparallel._helpers`.
pub fn helpers(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    py.import("rparallel._helpers")
}

/// `rparallel.error`.
pub fn errors(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    py.import("rparallel.error")
}

/// A Python exception of `rparallel.error`, built with `args`.
pub fn error<'py>(py: Python<'py>, name: &str, args: impl pyo3::call::PyCallArgs<'py>) -> PyErr {
    match errors(py)
        .and_then(|m| m.getattr(name))
        .and_then(|c| c.call1(args))
    {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    }
}

//! `AsyncResult`: the handle on requests in flight, and its Rust API (the
//! Python methods are in `result_methods`). What kind of call it is for
//! ([`Call`]) is fixed when it is made; its value is built from the replies
//! by the call's [`Shape`] when asked for. The tracker's records go when
//! the handle goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple};
use pyo3::BoundObject;
use rparallel_client::{
    Call, Client, Deadline, Shape, Status, Task, Until, Waited, Waiter, INTERRUPT_GRACE,
};
use rparallel_magics::render;
use rparallel_magics::GroupBy;
use rparallel_protocol::Message;
use serde_json::json;

use crate::convert::{helpers, to_python};
use crate::display::{engine_outputs, Frontend};
use crate::errors::{error, errors, timeout_error};
use crate::relay::Relay;
use crate::waiting::PyWaiter;

/// The engine of a load-balanced task not yet given to one.
pub const UNASSIGNED: u32 = u32::MAX;

/// The handle on requests in flight: `get()` their value, `wait()`,
/// `ready()`, their output (`stdout`, `outputs`), `metadata` and timing
/// (`wall_time`, `serial_time`); a `concurrent.futures`-style future.
#[pyclass(module = "rparallel", name = "AsyncResult")]
pub struct AsyncResult {
    pub(crate) client: Arc<Client>,
    pub(crate) msg_ids: Vec<String>,
    pub(crate) engines: Vec<u32>,
    pub(crate) call: Call,
    /// One engine's bare value rather than a list of one.
    pub(crate) single: bool,
    pub(crate) submitted: Instant,
    /// Replaces the call's own label in the repr (`AsyncResult(%px)`).
    pub(crate) label: Option<String>,
    /// Iteration yields parts in order (true) or as they finish (a
    /// load-balanced map with `ordered=False`).
    pub(crate) ordered: bool,
    /// Errors take their parts' places in the value instead of being
    /// raised (a load-balanced map with `return_exceptions=True`).
    pub(crate) return_exceptions: bool,
    /// The records this result reads; shared with the results `split()`
    /// and `join()` make of it, so they stay while any of them lives.
    records: Vec<Arc<Records>>,
    /// A load-balanced task's flags (its metadata's `after`, `follow`,
    /// `label`).
    pub(crate) task_flags: Option<Arc<rparallel_client::TaskFlags>>,
    /// How many items each request carries (a map's chunks): `len()` and
    /// `progress` count items, as ipyparallel's. None: one each.
    pub(crate) chunk_sizes: Option<Vec<usize>>,
    /// `concurrent.futures`' view of it (`_condition`, `_waiters`,
    /// `_state`), made when first asked for.
    pub(crate) future_shim: PyOnceLock<Py<PyAny>>,
    /// What `split()` gave, so it gives the same objects again.
    pub(crate) split_parts: PyOnceLock<Py<PyTuple>>,
    /// Alive while a send of `track=True` still holds the caller's
    /// buffers (see `view::tracked`).
    pub(crate) sending: Option<std::sync::Weak<()>>,
}

/// The tracker's records of some requests, and their values once
/// unpickled: dropped (and the records forgotten) with the last result
/// reading them.
struct Records {
    client: Arc<Client>,
    /// The requests whose records go with these (others are borrowed: a
    /// `get_result` of requests another result here already holds).
    msg_ids: Vec<String>,
}

/// Replies already unpickled, by request msg_id: shared by every result
/// reading a request (its own, `split()` parts, `get_result`), and
/// dropped with the records that own it.
/// Keyed by client (several may share a request: `get_result`) and msg_id.
static DECODED: std::sync::LazyLock<Mutex<Decoded>> = std::sync::LazyLock::new(Mutex::default);

type Decoded = HashMap<(usize, String), Py<PyAny>>;

fn decoded() -> std::sync::MutexGuard<'static, Decoded> {
    DECODED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A client's key in [`DECODED`].
fn client_key(client: &Arc<Client>) -> usize {
    Arc::as_ptr(client) as usize
}

impl Drop for Records {
    fn drop(&mut self) {
        self.client.tracker().forget(&self.msg_ids);
        let mut decoded = decoded();
        let client = client_key(&self.client);
        for id in &self.msg_ids {
            decoded.remove(&(client, id.clone()));
        }
    }
}

/// What one finished request gave: its value, or its error (an exception
/// instance).
pub(crate) type Outcome = Result<Py<PyAny>, Py<PyAny>>;

impl AsyncResult {
    /// The result of `msg_ids`, sent to `engines` in this order at
    /// `submitted`; `label` replaces the call's own in its repr.
    pub(crate) fn new(
        client: Arc<Client>,
        msg_ids: Vec<String>,
        engines: Vec<u32>,
        call: Call,
        single: bool,
        submitted: Instant,
        label: Option<&str>,
    ) -> Self {
        let records = Arc::new(Records {
            client: client.clone(),
            msg_ids: msg_ids.clone(),
        });
        AsyncResult {
            client,
            msg_ids,
            engines,
            call,
            single,
            submitted,
            label: label.map(str::to_string),
            ordered: true,
            return_exceptions: false,
            records: vec![records],
            task_flags: None,
            chunk_sizes: None,
            future_shim: PyOnceLock::new(),
            split_parts: PyOnceLock::new(),
            sending: None,
        }
    }

    /// A result of requests some of which (`borrowed`) other results
    /// here already hold: their records stay when this one goes.
    pub(crate) fn borrowing(mut self, borrowed: &[String]) -> Self {
        if let Some(records) = self.records.first_mut().and_then(Arc::get_mut) {
            records.msg_ids.retain(|id| !borrowed.contains(id));
        }
        self
    }

    /// A result for part of this one's requests (`indices`), reading the
    /// same records.
    pub(crate) fn part(&self, indices: &[usize], single: bool) -> Self {
        AsyncResult {
            client: self.client.clone(),
            msg_ids: indices.iter().map(|&i| self.msg_ids[i].clone()).collect(),
            engines: indices.iter().map(|&i| self.engines[i]).collect(),
            call: self.call,
            single,
            submitted: self.submitted,
            label: self.label.clone(),
            ordered: self.ordered,
            return_exceptions: self.return_exceptions,
            records: self.records.clone(),
            task_flags: self.task_flags.clone(),
            chunk_sizes: self
                .chunk_sizes
                .as_ref()
                .map(|sizes| indices.iter().map(|&i| sizes[i]).collect()),
            future_shim: PyOnceLock::new(),
            split_parts: PyOnceLock::new(),
            sending: self.sending.clone(),
        }
    }

    /// One result for the requests of all `parts`, in order.
    pub(crate) fn joined(parts: &[&AsyncResult]) -> Self {
        let first = parts[0];
        let mut records: Vec<Arc<Records>> = Vec::new();
        for part in parts {
            for r in &part.records {
                if !records.iter().any(|known| Arc::ptr_eq(known, r)) {
                    records.push(r.clone());
                }
            }
        }
        AsyncResult {
            client: first.client.clone(),
            msg_ids: parts.iter().flat_map(|p| p.msg_ids.clone()).collect(),
            engines: parts.iter().flat_map(|p| p.engines.clone()).collect(),
            call: first.call,
            single: parts.len() == 1 && first.single,
            submitted: parts
                .iter()
                .map(|p| p.submitted)
                .min()
                .unwrap_or(first.submitted),
            label: first.label.clone(),
            ordered: first.ordered,
            return_exceptions: first.return_exceptions,
            records,
            task_flags: first.task_flags.clone(),
            chunk_sizes: parts.iter().any(|p| p.chunk_sizes.is_some()).then(|| {
                parts
                    .iter()
                    .flat_map(|p| {
                        p.chunk_sizes
                            .clone()
                            .unwrap_or_else(|| vec![1; p.msg_ids.len()])
                    })
                    .collect()
            }),
            future_shim: PyOnceLock::new(),
            split_parts: PyOnceLock::new(),
            sending: None,
        }
    }

    /// Items in request `i` (1 unless it is a map's chunk).
    pub(crate) fn items_in(&self, i: usize) -> usize {
        self.chunk_sizes.as_ref().map_or(1, |sizes| sizes[i])
    }

    /// The `FutureShim` behind `_condition`, `_waiters` and `_state`.
    pub(crate) fn shim<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let me = slf.borrow();
        let shim = me.future_shim.get_or_try_init(py, || {
            helpers(py)?
                .call_method1("FutureShim", (slf.clone(),))
                .map(Bound::unbind)
        })?;
        Ok(shim.bind(py).clone())
    }

    /// Whether every buffer of a tracked send was written (always, for
    /// untracked sends: they are not watched).
    pub(crate) fn sends_done(&self) -> bool {
        self.sending.as_ref().is_none_or(|w| w.strong_count() == 0)
    }

    pub fn msg_ids(&self) -> &[String] {
        &self.msg_ids
    }

    /// The engines, in the order of [`AsyncResult::msg_ids`].
    pub fn engines(&self) -> &[u32] {
        &self.engines
    }

    /// Each request's engine: a load-balanced task's once it is known
    /// (its output or reply came), else None.
    pub(crate) fn known_engines(&self) -> Vec<Option<u32>> {
        let state = self.client.tracker().lock();
        self.msg_ids
            .iter()
            .zip(&self.engines)
            .map(|(id, &engine)| match engine {
                UNASSIGNED => state.tasks.get(id).and_then(|t| t.engine),
                engine => Some(engine),
            })
            .collect()
    }

    pub(crate) fn tasks(&self) -> Vec<Option<Task>> {
        let state = self.client.tracker().lock();
        self.msg_ids
            .iter()
            .map(|id| state.tasks.get(id).cloned())
            .collect()
    }

    pub fn is_ready(&self) -> bool {
        let state = self.client.tracker().lock();
        rparallel_client::Tracker::all_done(&state, &self.msg_ids)
    }

    /// How many of its items (requests, or a map's elements) finished.
    pub fn finished(&self) -> usize {
        self.tasks()
            .into_iter()
            .enumerate()
            .filter(|(_, t)| t.as_ref().is_none_or(|t| t.status != Status::Pending))
            .map(|(i, _)| self.items_in(i))
            .sum()
    }

    /// A relay for showing this result's output live.
    pub fn relay(&self) -> Relay {
        Relay::new(&self.msg_ids, &self.engines)
    }

    /// Waits as `deadline` says, with `waiter`. Ok once every request
    /// finished, interrupted ones included ([`AsyncResult::values`] then
    /// raises their KeyboardInterrupts); TimeoutError when the deadline
    /// passed first or interrupted engines did not stop; the interrupt
    /// itself when the user interrupted and the engines did not all stop.
    pub fn wait_with(
        &self,
        py: Python<'_>,
        deadline: Deadline,
        until: Until,
        waiter: &mut PyWaiter<'_, '_>,
    ) -> PyResult<()> {
        match self.client.wait(&self.msg_ids, deadline, until, waiter) {
            Ok(Waited::Done) => Ok(()),
            Ok(Waited::Lost) => Err(self.lost_error(py)),
            Ok(Waited::TimedOut) => Err(timeout_error(py, "Result not ready.".into())),
            Ok(Waited::StillRunning(running)) => {
                let after = match deadline {
                    Deadline::Interrupt(after) => after.as_secs_f64(),
                    _ => 0.0,
                };
                let grace = INTERRUPT_GRACE.as_secs_f64();
                Err(timeout_error(
                    py,
                    format!("engine(s) {running:?} still running {after} s + {grace} s after being interrupted"),
                ))
            }
            // Interrupted, and the engines stopped in time: their errors
            // (KeyboardInterrupt on each) say what happened where.
            Err(e) if waiter.is_interrupt(&e) && self.is_ready() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The value, waiting as `deadline` says; failing as soon as an
    /// engine working on it is lost.
    /// Waits as [`AsyncResult::get_within`] does and raises what it would
    /// raise, without building the values (a blocking `execute` returns
    /// the result itself: its ExecuteReplies are made when asked for).
    pub fn finish_within(&self, py: Python<'_>, deadline: Deadline) -> PyResult<()> {
        self.wait_with(py, deadline, Until::AllDoneOrLost, &mut PyWaiter::new(py))?;
        let all_ok = self.tasks().iter().all(|task| {
            task.as_ref().is_some_and(|t| {
                matches!(t.status, Status::Done)
                    && t.reply
                        .as_ref()
                        .is_some_and(|r| r.content["status"].as_str().unwrap_or("ok") == "ok")
            })
        });
        if all_ok {
            return Ok(());
        }
        self.values(py).map(drop)
    }

    /// Whether an engine of this result was lost while others still run.
    pub fn is_lost(&self) -> bool {
        let state = self.client.tracker().lock();
        rparallel_client::Tracker::any_lost(&state, &self.msg_ids)
            && !rparallel_client::Tracker::all_done(&state, &self.msg_ids)
    }

    /// The errors of the requests whose engine was lost, as one error
    /// ([`Waited::Lost`]); the other requests may still run.
    fn lost_error(&self, py: Python<'_>) -> PyErr {
        let mut failures = Vec::new();
        for (engine, task) in self.engines.iter().zip(self.tasks()) {
            let lost = task
                .as_ref()
                .is_some_and(|t| matches!(t.status, Status::Failed(_)));
            if lost {
                match self.outcome(py, *engine, task) {
                    Ok(Err(e)) => failures.push(e),
                    Ok(Ok(_)) => {}
                    Err(e) => return e,
                }
            }
        }
        self.collected(py, failures)
    }

    /// The remote `failures` as the one error a call raises: the error
    /// itself for a single engine, else a CompositeError.
    fn collected(&self, py: Python<'_>, failures: Vec<Py<PyAny>>) -> PyErr {
        let made = PyList::new(py, failures).and_then(|list| {
            errors(py)?.call_method1("collect_exceptions", (list, self.call.method, self.single))
        });
        match made {
            Ok(e) => PyErr::from_value(e),
            Err(e) => e,
        }
    }

    /// Raises the remote error(s) if any request failed; builds no values
    /// otherwise (`%px` shows its results, it does not return them).
    pub fn raise_errors(&self, py: Python<'_>) -> PyResult<()> {
        let state = self.client.tracker().lock();
        let all_ok = self.msg_ids.iter().all(|id| {
            state.tasks.get(id).is_some_and(|t| {
                t.status == Status::Done
                    && t.reply
                        .as_ref()
                        .is_some_and(|r| r.content["status"].as_str().unwrap_or("ok") == "ok")
            })
        });
        drop(state);
        if all_ok {
            Ok(())
        } else {
            self.values(py).map(|_| ())
        }
    }

    /// All values, raising the remote error(s) if any request failed.
    pub fn values(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut values = Vec::new();
        let mut failures = Vec::new();
        for (engine, task) in self.engines.iter().zip(self.tasks()) {
            match self.outcome(py, *engine, task)? {
                Ok(v) => values.push(v),
                Err(e) if self.return_exceptions => values.push(e),
                Err(e) => failures.push(e),
            }
        }
        if !failures.is_empty() {
            return Err(self.collected(py, failures));
        }
        if self.call.shape.joins() {
            return Ok(helpers(py)?.call_method1("concat", (values,))?.unbind());
        }
        if self.single {
            return Ok(values.into_iter().next().unwrap_or_else(|| py.None()));
        }
        Ok(PyList::new(py, values)?.into_any().unbind())
    }

    /// What one request gave, once finished.
    pub(crate) fn outcome(
        &self,
        py: Python<'_>,
        engine: u32,
        task: Option<Task>,
    ) -> PyResult<Outcome> {
        let Some(task) = task else {
            return Err(PyRuntimeError::new_err(
                "this result's records were released",
            ));
        };
        // A load-balanced task's engine is learnt from its reply.
        let engine = task.engine.unwrap_or(engine);
        // Only errors carry it: not built for every value.
        let info = || -> PyResult<Bound<'_, PyDict>> {
            let info = PyDict::new(py);
            if engine == UNASSIGNED {
                info.set_item("engine_id", py.None())?;
            } else {
                info.set_item("engine_id", engine)?;
            }
            info.set_item("method", self.call.method)?;
            let uuid = task
                .reply
                .as_ref()
                .and_then(|r| r.metadata["engine_uuid"].as_str().map(str::to_string))
                .or_else(|| {
                    let state = self.client.tracker().lock();
                    state.engines.get(&engine)?["uuid"]
                        .as_str()
                        .map(str::to_string)
                });
            info.set_item("engine_uuid", uuid)?;
            Ok(info)
        };
        let reply = match &task.status {
            Status::Pending => return Err(PyRuntimeError::new_err("result not ready")),
            Status::Failed(reason) => {
                let e = error(py, "EngineError", (reason.clone(), info()?));
                return Ok(Err(e.value(py).clone().into_any().unbind()));
            }
            Status::Done => task.reply.clone().expect("done tasks have replies"),
        };
        let content = &reply.content;
        let status = content["status"].as_str().unwrap_or("ok");
        if status == "ok" {
            return self.value(py, engine, &task, reply).map(Ok);
        }
        let e = if status == "aborted" {
            error(
                py,
                "TaskAborted",
                (
                    "TaskAborted",
                    "the task was aborted",
                    Vec::<String>::new(),
                    info()?,
                ),
            )
        } else {
            let text =
                |key: &str, default: &str| content[key].as_str().unwrap_or(default).to_string();
            let traceback: Vec<String> = content["traceback"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(|l| l.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            error(
                py,
                "remote_error",
                (
                    text("ename", "Exception"),
                    text("evalue", ""),
                    traceback,
                    info()?,
                ),
            )
        };
        Ok(Err(e.value(py).clone().into_any().unbind()))
    }

    /// The value of a successful reply, as the call's shape says.
    fn value(
        &self,
        py: Python<'_>,
        engine: u32,
        task: &Task,
        reply: Arc<Message>,
    ) -> PyResult<Py<PyAny>> {
        let shape = self.call.shape;
        if shape == Shape::Executed {
            return self.execute_reply(py, engine, task);
        }
        if !shape.has_value() {
            return Ok(py.None());
        }
        let decoded = self
            .decode(py, reply)
            .map_err(|e| unpickling_note(py, e, engine, self.call.method))?;
        Ok(match decoded {
            Some(value) if shape.takes_first() => value.into_bound(py).get_item(0)?.unbind(),
            Some(value) => value,
            None => py.None(),
        })
    }

    /// A reply's value, unpickled once: the first time takes the buffers
    /// out of the tracker, so arrays that came through shared memory are
    /// used in place (no copy), and later calls return the same object.
    fn decode(&self, py: Python<'_>, reply: Arc<Message>) -> PyResult<Option<Py<PyAny>>> {
        let msg_id = reply
            .parent_header
            .as_ref()
            .map(|p| p.msg_id.clone())
            .unwrap_or_default();
        let key = (client_key(&self.client), msg_id.clone());
        if let Some(value) = decoded().get(&key) {
            return Ok(Some(value.clone_ref(py)));
        }
        if reply.buffers.is_empty() {
            return Ok(None);
        }
        drop(reply);
        // Not under the lock: unpickling runs Python, which may let
        // another thread in to decode.
        let buffers = self.client.tracker().take_buffers(&msg_id);
        if buffers.is_empty() {
            // Another thread took them first.
            return Ok(decoded().get(&key).map(|v| v.clone_ref(py)));
        }
        let value = rparallel_pyexec::serialize::deserialize_exclusive(py, buffers)?.unbind();
        decoded().insert(key, value.clone_ref(py));
        Ok(Some(value))
    }

    /// What request `i`'s task published so far
    /// (`rparallel.datapub.publish_data`), merged in order.
    pub(crate) fn data_of<'py>(
        &self,
        py: Python<'py>,
        task: Option<&Task>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let merged = PyDict::new(py);
        for m in task.iter().flat_map(|t| t.outputs.iter()) {
            if m.msg_type() == "data_message" {
                let value = rparallel_pyexec::serialize::deserialize(py, m.buffers.clone())?;
                merged.call_method1("update", (value,))?;
            }
        }
        Ok(merged)
    }

    /// Request `i`'s metadata: a `rparallel._helpers.Metadata` (keys and
    /// meanings as ipyparallel's), as far as it got.
    pub(crate) fn metadata_of<'py>(
        &self,
        py: Python<'py>,
        i: usize,
        task: Option<&Task>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let fields = PyDict::new(py);
        fields.set_item("msg_id", &self.msg_ids[i])?;
        let engine = task.and_then(|t| t.engine).or(match self.engines[i] {
            UNASSIGNED => None,
            e => Some(e),
        });
        fields.set_item("engine_id", engine)?;
        if let Some(flags) = &self.task_flags {
            let value =
                |v: &Option<serde_json::Value>| v.as_ref().map(|v| to_python(py, v)).transpose();
            fields.set_item("after", value(&flags.after)?)?;
            fields.set_item("follow", value(&flags.follow)?)?;
            fields.set_item("label", flags.label.clone())?;
        }
        let submitted = task.map_or(self.submitted, |t| t.submitted);
        fields.set_item("submitted", wall_clock(submitted))?;
        if let Some(task) = task {
            fields.set_item("received", task.finished.map(wall_clock))?;
            let stream = |name: &str| -> String {
                task.outputs
                    .iter()
                    .filter(|m| m.msg_type() == "stream" && m.content_str("name") == name)
                    .map(|m| m.content_str("text").to_string())
                    .collect()
            };
            fields.set_item("stdout", stream("stdout"))?;
            fields.set_item("stderr", stream("stderr"))?;
            let outputs = PyList::empty(py);
            for m in &task.outputs {
                match m.msg_type() {
                    "display_data" => {
                        let bundle =
                            json!({"data": m.content["data"], "metadata": m.content["metadata"]});
                        outputs.append(to_python(py, &bundle)?)?;
                    }
                    "execute_input" => fields.set_item("execute_input", m.content_str("code"))?,
                    "execute_result" => {
                        fields.set_item("execute_result", to_python(py, &m.content)?)?
                    }
                    _ => {}
                }
            }
            fields.set_item("outputs", outputs)?;
            fields.set_item("data", self.data_of(py, Some(task))?)?;
            if let Some(reply) = &task.reply {
                let md = &reply.metadata;
                for key in ["started", "completed", "engine_uuid"] {
                    if let Some(text) = md[key].as_str() {
                        fields.set_item(key, text)?;
                    }
                }
                fields.set_item("status", reply.content["status"].as_str().unwrap_or("ok"))?;
            }
            match task.status {
                Status::Pending => {}
                Status::Failed(_) => fields.set_item("status", "error")?,
                Status::Done => {}
            }
            let failed = match &task.status {
                Status::Pending => false,
                Status::Failed(_) => true,
                Status::Done => task
                    .reply
                    .as_ref()
                    .is_some_and(|r| r.content["status"].as_str().unwrap_or("ok") != "ok"),
            };
            if failed {
                let engine_id = engine.unwrap_or(UNASSIGNED);
                if let Ok(Err(e)) = self.outcome(py, engine_id, Some(task.clone())) {
                    fields.set_item("error", e)?;
                }
            }
        }
        if fields.get_item("engine_uuid")?.is_none() {
            let state = self.client.tracker().lock();
            let uuid = engine
                .and_then(|e| state.engines.get(&e))
                .and_then(|info| info["uuid"].as_str().map(str::to_string));
            drop(state);
            fields.set_item("engine_uuid", uuid)?;
        }
        helpers(py)?.call_method1("metadata", (fields,))
    }

    /// An execute request's value: `rparallel._helpers.ExecuteReply`.
    fn execute_reply(&self, py: Python<'_>, engine: u32, task: &Task) -> PyResult<Py<PyAny>> {
        let reply = task.reply.as_ref().expect("done tasks have replies");
        let count = reply.content["execution_count"].as_u64().unwrap_or(0);
        let result = task
            .outputs
            .iter()
            .find(|m| m.msg_type() == "execute_result");
        let (data, metadata) = match result {
            Some(m) => (m.content["data"].clone(), m.content["metadata"].clone()),
            None => (json!({}), json!({})),
        };
        let shown = render::result_bundle(engine, count, &data, Frontend::new(py)?.colour());
        let msg_id = reply.parent_header.as_ref().map(|p| p.msg_id.as_str());
        let index = self
            .msg_ids
            .iter()
            .position(|id| Some(id.as_str()) == msg_id);
        let request_metadata = match index {
            Some(i) => Some(self.metadata_of(py, i, Some(task))?),
            None => None,
        };
        Ok(helpers(py)?
            .getattr("ExecuteReply")?
            .call1((
                reply.parent_header.as_ref().map(|p| p.msg_id.clone()),
                engine,
                count,
                to_python(py, &data)?,
                to_python(py, &metadata)?,
                to_python(py, &shown)?,
                request_metadata,
            ))?
            .unbind())
    }

    /// Shows the engines' results (`Out[N:k]:`), in ascending engine order.
    pub fn show_results(&self, py: Python<'_>) -> PyResult<()> {
        let outputs = engine_outputs(&self.engines, &self.tasks());
        Frontend::new(py)?.show(&render::results(&outputs))
    }

    /// Shows everything the engines produced, grouped as `by` says.
    pub fn show_outputs(&self, py: Python<'_>, by: GroupBy) -> PyResult<()> {
        let outputs = engine_outputs(&self.engines, &self.tasks());
        Frontend::new(py)?.show(&render::arrange(&outputs, by))
    }

    pub(crate) fn wait_for(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let waited = self.client.wait(
            &self.msg_ids,
            Deadline::returning(timeout),
            Until::AllDone,
            &mut PyWaiter::new(py),
        )?;
        Ok(waited == Waited::Done)
    }

    /// A single-engine result's one item, or the list of them.
    pub(crate) fn per_engine<'py, T: IntoPyObject<'py>>(
        &self,
        py: Python<'py>,
        items: Vec<T>,
    ) -> PyResult<Py<PyAny>> {
        let mut items = items
            .into_iter()
            .map(|item| {
                item.into_pyobject(py)
                    .map(|o| o.into_bound().into_any().unbind())
                    .map_err(Into::into)
            })
            .collect::<PyResult<Vec<Py<PyAny>>>>()?;
        if self.single && !items.is_empty() {
            Ok(items.swap_remove(0))
        } else {
            Ok(PyList::new(py, items)?.into_any().unbind())
        }
    }

    pub(crate) fn stream(&self, name: &str) -> Vec<String> {
        self.tasks()
            .into_iter()
            .map(|task| {
                task.map(|t| {
                    t.outputs
                        .iter()
                        .filter(|m| m.msg_type() == "stream" && m.content_str("name") == name)
                        .map(|m| m.content_str("text").to_string())
                        .collect::<String>()
                })
                .unwrap_or_default()
            })
            .collect()
    }

    /// Seconds from submission to the last reply, once all arrived.
    pub(crate) fn wall(&self) -> Option<f64> {
        let last = self
            .tasks()
            .into_iter()
            .map(|t| t.and_then(|t| t.finished))
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()?;
        Some(last.duration_since(self.submitted).as_secs_f64())
    }
}

/// `instant` as an RFC 3339 UTC timestamp (what the engines stamp).
fn wall_clock(instant: Instant) -> String {
    let age = instant.elapsed();
    let when = chrono::Utc::now() - chrono::Duration::from_std(age).unwrap_or_default();
    when.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Says where a value that cannot be unpickled here came from (a class
/// the kernel lacks, a broken `__reduce__`): the error itself only names
/// what failed.
fn unpickling_note(py: Python<'_>, e: PyErr, engine: u32, method: &str) -> PyErr {
    let note = format!("while unpickling the result of {method} on engine {engine} in the client");
    let _ = e.value(py).call_method1("add_note", (note,));
    e
}

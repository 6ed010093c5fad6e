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
use pyo3::types::{PyDict, PyList};
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
    /// Replies already unpickled, by request msg_id.
    decoded: Mutex<HashMap<String, Py<PyAny>>>,
}

impl Drop for AsyncResult {
    fn drop(&mut self) {
        self.client.tracker().forget(&self.msg_ids);
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
            decoded: Mutex::default(),
        }
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

    /// How many of its requests finished.
    pub fn finished(&self) -> usize {
        self.tasks()
            .into_iter()
            .filter(|t| t.as_ref().is_none_or(|t| t.status != Status::Pending))
            .count()
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
    pub fn get_within(&self, py: Python<'_>, deadline: Deadline) -> PyResult<Py<PyAny>> {
        self.wait_with(py, deadline, Until::AllDoneOrLost, &mut PyWaiter::new(py))?;
        self.values(py)
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
        let info = PyDict::new(py);
        if engine == UNASSIGNED {
            info.set_item("engine_id", py.None())?;
        } else {
            info.set_item("engine_id", engine)?;
        }
        info.set_item("method", self.call.method)?;
        let reply = match task.status {
            Status::Pending => return Err(PyRuntimeError::new_err("result not ready")),
            Status::Failed(reason) => {
                let e = error(py, "EngineError", (reason, info));
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
                    info,
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
                    info,
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
        let mut decoded = self.decoded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(value) = decoded.get(&msg_id) {
            return Ok(Some(value.clone_ref(py)));
        }
        if reply.buffers.is_empty() {
            return Ok(None);
        }
        drop(reply);
        let buffers = self.client.tracker().take_buffers(&msg_id);
        let value = rparallel_pyexec::serialize::deserialize_exclusive(py, buffers)?.unbind();
        decoded.insert(msg_id, value.clone_ref(py));
        Ok(Some(value))
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
        Ok(helpers(py)?
            .getattr("ExecuteReply")?
            .call1((
                reply.parent_header.as_ref().map(|p| p.msg_id.clone()),
                engine,
                count,
                to_python(py, &data)?,
                to_python(py, &metadata)?,
                to_python(py, &shown)?,
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

/// Says where a value that cannot be unpickled here came from (a class
/// the kernel lacks, a broken `__reduce__`): the error itself only names
/// what failed.
fn unpickling_note(py: Python<'_>, e: PyErr, engine: u32, method: &str) -> PyErr {
    let note = format!("while unpickling the result of {method} on engine {engine} in the client");
    let _ = e.value(py).call_method1("add_note", (note,));
    e
}

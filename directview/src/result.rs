//! `AsyncResult`: the handle on requests in flight. Results are decoded
//! when asked for; the tracker's records go when the handle goes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use pyo3::BoundObject;
use serde_json::json;

use rparallel_magics::render;
use rparallel_magics::GroupBy;

use crate::core::{
    error, helpers, timeout_arg, to_python, wait_interruptibly, Core, INTERRUPT_GRACE,
};
use crate::display::{engine_outputs, Frontend};
use crate::relay::Relay;
use crate::tracker::{Status, Task, Tracker};

/// How per-engine values become the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// One value per engine (a bare value for a single-engine view).
    Each,
    /// Pulled lists: one name → its value, several → the list.
    PullOne,
    /// Per-engine parts joined into one sequence (map, gather, parallel).
    Concat,
}

#[pyclass(module = "rparallel", name = "AsyncResult")]
pub struct AsyncResult {
    pub core: Arc<Core>,
    pub msg_ids: Vec<String>,
    pub engines: Vec<u32>,
    /// "execute", "apply", "push", "pull", ...: shown in `[n:method]`.
    pub method: &'static str,
    pub single: bool,
    pub combine: Combine,
    pub submitted: Instant,
    pub label: String,
    /// Extra per-engine values decoded for pull of a single name.
    pub pull_single_name: bool,
    /// Replies already decoded, by request msg_id.
    pub decoded: std::sync::Mutex<std::collections::HashMap<String, Py<PyAny>>>,
}

impl Drop for AsyncResult {
    fn drop(&mut self) {
        self.core.tracker().forget(&self.msg_ids);
    }
}

impl AsyncResult {
    pub fn tasks(&self) -> Vec<Option<Task>> {
        let state = self.core.tracker().lock();
        self.msg_ids
            .iter()
            .map(|id| state.tasks.get(id).cloned())
            .collect()
    }

    pub fn is_ready(&self) -> bool {
        let state = self.core.tracker().lock();
        crate::tracker::Tracker::all_done(&state, &self.msg_ids)
    }

    fn engine_info(&self, py: Python<'_>, engine: u32) -> PyResult<Py<PyAny>> {
        let info = PyDict::new(py);
        info.set_item("engine_id", engine)?;
        info.set_item("method", self.method)?;
        Ok(info.into_any().unbind())
    }

    /// The value of one finished task, or its error (an exception instance).
    fn task_value(
        &self,
        py: Python<'_>,
        engine: u32,
        task: Option<Task>,
    ) -> PyResult<Result<Py<PyAny>, Py<PyAny>>> {
        let info = self.engine_info(py, engine)?;
        let Some(task) = task else {
            return Err(PyRuntimeError::new_err(
                "this result's records were released",
            ));
        };
        match task.status {
            Status::Pending => Err(PyRuntimeError::new_err("result not ready")),
            Status::Failed(reason) => {
                let e = error(py, "EngineError", (reason, info));
                Ok(Err(e.value(py).clone().into_any().unbind()))
            }
            Status::Done => {
                let reply = task.reply.clone().expect("done tasks have replies");
                let content = &reply.content;
                match content["status"].as_str().unwrap_or("ok") {
                    "ok" if self.method == "execute" => {
                        Ok(Ok(self.execute_reply(py, engine, &task)?))
                    }
                    "ok" => {
                        let value = match self.method {
                            "apply" | "map" | "pull" | "gather" => match self
                                .decode(py, reply)
                                .map_err(|e| unpickling_note(py, e, engine, self.method))?
                            {
                                Some(value) if self.pull_single_name => {
                                    value.into_bound(py).get_item(0)?
                                }
                                Some(value) => value.into_bound(py),
                                None => py.None().into_bound(py),
                            },
                            _ => py.None().into_bound(py),
                        };
                        Ok(Ok(value.unbind()))
                    }
                    status => {
                        let (ename, evalue) = if status == "aborted" {
                            (
                                "TaskAborted".to_string(),
                                "the task was aborted".to_string(),
                            )
                        } else {
                            (
                                content["ename"].as_str().unwrap_or("Exception").to_string(),
                                content["evalue"].as_str().unwrap_or("").to_string(),
                            )
                        };
                        let traceback: Vec<String> = content["traceback"]
                            .as_array()
                            .map(|t| {
                                t.iter()
                                    .filter_map(|l| l.as_str().map(String::from))
                                    .collect()
                            })
                            .unwrap_or_default();
                        let class = if status == "aborted" {
                            "TaskAborted"
                        } else {
                            "RemoteError"
                        };
                        let e = error(py, class, (ename, evalue, traceback, info));
                        Ok(Err(e.value(py).clone().into_any().unbind()))
                    }
                }
            }
        }
    }

    /// A reply's value, decoded once: the first decode takes the buffers out
    /// of the tracker, so arrays that came through shared memory are used in
    /// place (no copy), and later calls return the same object.
    fn decode(
        &self,
        py: Python<'_>,
        reply: Arc<rparallel_protocol::Message>,
    ) -> PyResult<Option<Py<PyAny>>> {
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
        let buffers = self.core.tracker().take_buffers(&msg_id);
        let value = rparallel_pyexec::remote::deserialize_exclusive(py, buffers)?.unbind();
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
        let shown = render::result_bundle(engine, count, &data);
        let object = |v: &serde_json::Value| to_python(py, v);
        Ok(helpers(py)?
            .getattr("ExecuteReply")?
            .call1((
                reply.parent_header.as_ref().map(|p| p.msg_id.clone()),
                engine,
                count,
                object(&data)?,
                object(&metadata)?,
                object(&shown)?,
            ))?
            .unbind())
    }

    /// All values, raising the remote error(s) if any task failed.
    pub fn values(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut values = Vec::new();
        let mut errors = Vec::new();
        for ((engine, task), _) in self.engines.iter().zip(self.tasks()).zip(&self.msg_ids) {
            match self.task_value(py, *engine, task)? {
                Ok(v) => values.push(v),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            let list = PyList::new(py, errors)?;
            let e = crate::core::errors(py)?
                .call_method1("collect_exceptions", (list, self.method, self.single))?;
            return Err(PyErr::from_value(e));
        }
        match self.combine {
            Combine::Concat => Ok(helpers(py)?.call_method1("concat", (values,))?.unbind()),
            _ if self.single => Ok(values.into_iter().next().unwrap_or_else(|| py.None())),
            _ => Ok(PyList::new(py, values)?.into_any().unbind()),
        }
    }

    /// How many of its requests finished.
    pub fn finished(&self) -> usize {
        self.tasks()
            .into_iter()
            .filter(|t| t.as_ref().is_none_or(|t| t.status != Status::Pending))
            .count()
    }

    /// Waits up to `timeout` (None: until done). With a `relay`, each
    /// engine's output is shown live (keep the relay across calls so
    /// nothing is shown twice); `tick` runs between slices (progress bars).
    /// True when all finished. An interrupt is passed on to the engines;
    /// what they print while stopping is shown, then KeyboardInterrupt is
    /// raised.
    pub fn wait_showing(
        &self,
        py: Python<'_>,
        mut relay: Option<&mut Relay>,
        timeout: Option<Duration>,
        mut tick: impl FnMut(&Self) -> PyResult<()>,
    ) -> PyResult<bool> {
        const SLICE: Duration = Duration::from_millis(100);
        let frontend = Frontend::new(py)?;
        let tracker = self.core.tracker();
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let slice = deadline.map_or(SLICE, |d| {
                d.saturating_duration_since(Instant::now()).min(SLICE)
            });
            let news = relay.as_deref();
            let waited = wait_interruptibly(py, Some(slice), |slice| {
                tracker.wait_until(Some(slice), |state| {
                    Tracker::all_done(state, &self.msg_ids)
                        || news.is_some_and(|r| r.has_news(state))
                })
            });
            if let Err(e) = waited {
                if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
                    self.core.interrupt_engines_of(py, &self.msg_ids);
                    if let Some(relay) = relay.as_deref_mut() {
                        relay.pump(tracker, &frontend, true)?;
                    }
                }
                return Err(e);
            }
            let done = self.is_ready();
            if let Some(relay) = relay.as_deref_mut() {
                relay.pump(tracker, &frontend, done)?;
            }
            if done {
                return Ok(true);
            }
            tick(self)?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }

    /// A relay for showing this result's output live.
    pub fn relay(&self) -> Relay {
        Relay::new(&self.msg_ids, &self.engines)
    }

    /// Engines still running its requests.
    pub fn running_engines(&self) -> Vec<u32> {
        self.engines
            .iter()
            .zip(self.tasks())
            .filter(|(_, t)| t.as_ref().is_some_and(|t| t.status == Status::Pending))
            .map(|(e, _)| *e)
            .collect()
    }

    /// Asks the engines still running its requests to stop (no waiting).
    pub fn send_interrupts(&self) {
        let sent = self.core.send_interrupts(&self.msg_ids);
        self.core.tracker().forget(&sent);
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

    /// The result, waiting at most `seconds`: engines still running then
    /// are interrupted, and their KeyboardInterrupts are raised (or
    /// TimeoutError if they do not stop either).
    pub fn get_interrupting_after(&self, py: Python<'_>, seconds: f64) -> PyResult<Py<PyAny>> {
        if !self.wait_for(py, Some(seconds))? {
            self.send_interrupts();
            let grace = INTERRUPT_GRACE.as_secs_f64();
            if !self.wait_for(py, Some(grace))? {
                let running = self.running_engines();
                return Err(error(
                    py,
                    "TimeoutError",
                    (format!("engine(s) {running:?} still running {seconds} s + {grace} s after being interrupted"),),
                ));
            }
        }
        self.get(py, None)
    }

    fn wait_for(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        self.core.wait(py, &self.msg_ids, timeout_arg(timeout))
    }

    /// A single-engine result's one item, or the list of them.
    fn per_engine<'py, T: IntoPyObject<'py>>(
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

    fn stream(&self, name: &str) -> Vec<String> {
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

    fn finished_at(&self) -> Option<Instant> {
        self.tasks()
            .into_iter()
            .map(|t| t.and_then(|t| t.finished))
            .collect::<Option<Vec<_>>>()
            .and_then(|f| f.into_iter().max())
    }
}

fn parse_time(text: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(text).ok()
}

#[pymethods]
impl AsyncResult {
    /// The result; waits up to `timeout` seconds (None/-1: as long as it
    /// takes). Raises rparallel.error.TimeoutError if not ready by then,
    /// and the remote exception(s) if the work failed.
    #[pyo3(signature = (timeout=None))]
    pub fn get(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let waited = match self.wait_for(py, timeout) {
            // Interrupted, and the engines stopped in time: their errors
            // (KeyboardInterrupt on each) say what happened where.
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) => {
                if !self.is_ready() {
                    return Err(e);
                }
                true
            }
            waited => waited?,
        };
        if !waited {
            return Err(error(py, "TimeoutError", ("Result not ready.",)));
        }
        self.values(py)
    }

    /// Waits up to `timeout` seconds; true when ready.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        self.wait_for(py, timeout)
    }

    /// Aborts this result's tasks that have not started: their `get()`
    /// raises TaskAborted. Tasks already running go on (interrupt them
    /// with the kernel's interrupt, or `%%px --timeout`).
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        let mut by_engine: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
        for (msg_id, task) in self.msg_ids.iter().zip(self.tasks()) {
            if let Some(Task {
                engine: Some(engine),
                status: Status::Pending,
                ..
            }) = task
            {
                by_engine.entry(engine).or_default().push(msg_id.clone());
            }
        }
        let sent: Vec<String> = by_engine
            .into_iter()
            .map(|(engine, msg_ids)| {
                self.core.request(
                    Some(engine),
                    "abort_request",
                    json!({ "msg_ids": msg_ids }),
                    vec![],
                )
            })
            .collect();
        let answered = self.core.wait(py, &sent, Some(INTERRUPT_GRACE));
        self.core.tracker().forget(&sent);
        answered.map(|_| ())
    }

    fn ready(&self) -> bool {
        self.is_ready()
    }

    /// Whether it finished without an error (it must be ready).
    fn successful(&self, py: Python<'_>) -> PyResult<bool> {
        if !self.is_ready() {
            return Err(PyRuntimeError::new_err("the result is not ready"));
        }
        Ok(self.values(py).is_ok())
    }

    // concurrent.futures.Future protocol
    #[pyo3(signature = (timeout=None))]
    fn result(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        self.get(py, timeout)
    }

    fn done(&self) -> bool {
        self.is_ready()
    }

    fn cancelled(&self) -> bool {
        false
    }

    fn running(&self) -> bool {
        !self.is_ready()
    }

    #[pyo3(signature = (timeout=None))]
    fn exception(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        match self.get(py, timeout) {
            Ok(_) => Ok(None),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyTimeoutError>(py) => Err(e),
            Err(e) => Ok(Some(e.value(py).clone().into_any().unbind())),
        }
    }

    /// Calls `callback(self)` once the result is ready (from a thread).
    fn add_done_callback(slf: Bound<'_, Self>, callback: Bound<'_, PyAny>) -> PyResult<()> {
        helpers(slf.py())?.call_method1("when_done", (slf.clone(), callback))?;
        Ok(())
    }

    #[getter]
    fn r(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.get(py, None)
    }

    #[getter]
    fn msg_ids(&self) -> Vec<String> {
        self.msg_ids.clone()
    }

    #[getter]
    fn engine_id(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.per_engine(py, self.engines.clone())
    }

    #[getter]
    fn stdout(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.per_engine(py, self.stream("stdout"))
    }

    #[getter]
    fn stderr(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.per_engine(py, self.stream("stderr"))
    }

    /// The displays each engine produced: lists of MIME bundles (dicts).
    #[getter]
    fn outputs(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut per_engine = Vec::new();
        for task in self.tasks() {
            let list = PyList::empty(py);
            for m in task.iter().flat_map(|t| t.outputs.iter()) {
                if matches!(m.msg_type(), "display_data" | "execute_result") {
                    let bundle =
                        json!({"data": m.content["data"], "metadata": m.content["metadata"]});
                    list.append(to_python(py, &bundle)?)?;
                }
            }
            per_engine.push(list.into_any().unbind());
        }
        self.per_engine(py, per_engine)
    }

    /// Seconds since submission (until the last task finished, if done).
    #[getter]
    fn elapsed(&self) -> f64 {
        let end = self.finished_at().unwrap_or_else(Instant::now);
        end.duration_since(self.submitted).as_secs_f64()
    }

    /// Seconds from submission to the last result (when ready).
    #[getter]
    fn wall_time(&self) -> f64 {
        self.elapsed()
    }

    /// Seconds of engine time: the sum over tasks of started → completed.
    #[getter]
    fn serial_time(&self) -> f64 {
        self.tasks()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let md = &t.reply?.metadata;
                let started = parse_time(md["started"].as_str()?)?;
                let completed = parse_time(md["completed"].as_str()?)?;
                Some((completed - started).num_microseconds()? as f64 / 1e6)
            })
            .sum()
    }

    /// How many tasks have finished.
    #[getter]
    fn progress(&self) -> usize {
        self.finished()
    }

    /// Prints a progress line until ready (or `timeout`).
    #[pyo3(signature = (interval=0.1, timeout=None))]
    fn wait_interactive(
        &self,
        py: Python<'_>,
        interval: f64,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let started = Instant::now();
        let total = self.msg_ids.len();
        let print = py.import("builtins")?.getattr("print")?;
        let deadline = timeout_arg(timeout).map(|t| started + t);
        loop {
            let ready = self.wait_for(py, Some(interval.max(0.01)))?;
            let line = format!(
                "\r{:4}/{} tasks finished after {:4.0} s",
                self.progress(),
                total,
                started.elapsed().as_secs_f64()
            );
            let kwargs = PyDict::new(py);
            kwargs.set_item("end", "")?;
            kwargs.set_item("flush", true)?;
            print.call((line,), Some(&kwargs))?;
            if ready || deadline.is_some_and(|d| Instant::now() >= d) {
                print.call1(("\ndone",))?;
                return Ok(());
            }
        }
    }

    /// Shows everything the engines produced so far: streams labelled
    /// `[stdout:N]`, displays, results `Out[N:k]:`; `groupby` is "type",
    /// "engine" or "order".
    #[pyo3(signature = (groupby="type"))]
    fn display_outputs(&self, py: Python<'_>, groupby: &str) -> PyResult<()> {
        let by = match groupby {
            "type" => GroupBy::Type,
            "engine" => GroupBy::Engine,
            "order" => GroupBy::Order,
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "groupby must be 'type', 'engine' or 'order', not {other:?}"
                )))
            }
        };
        self.show_outputs(py, by)
    }

    fn __len__(&self) -> usize {
        self.msg_ids.len()
    }

    /// Results as they arrive, in order: each engine's part is yielded as
    /// soon as that engine (and the ones before it) finished.
    fn __iter__(slf: Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let concat = slf.borrow().combine == Combine::Concat;
        Ok(helpers(slf.py())?
            .call_method1("iterate", (slf.clone(), concat))?
            .unbind())
    }

    /// The value of part `i` (engine `engine_id[i]`), waiting for it; its
    /// error is raised as the engine's RemoteError.
    fn _part(&self, py: Python<'_>, i: usize) -> PyResult<Py<PyAny>> {
        let (Some(msg_id), Some(engine)) = (self.msg_ids.get(i), self.engines.get(i)) else {
            return Err(pyo3::exceptions::PyIndexError::new_err(i));
        };
        self.core.wait(py, std::slice::from_ref(msg_id), None)?;
        let task = self.core.tracker().lock().tasks.get(msg_id).cloned();
        match self.task_value(py, *engine, task)? {
            Ok(value) => Ok(value),
            Err(error) => Err(PyErr::from_value(error.into_bound(py))),
        }
    }

    fn __repr__(&self) -> String {
        let state = if self.is_ready() {
            "finished"
        } else {
            "pending"
        };
        format!("<{}: {state}>", self.label)
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

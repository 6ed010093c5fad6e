//! `AsyncResult`'s Python methods: the `multiprocessing` / `concurrent.futures`
//! protocol, output and timing attributes, iteration.

use std::time::Instant;

use pyo3::exceptions::{PyIndexError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use rparallel_client::{Deadline, Until};
use rparallel_magics::GroupBy;
use serde_json::json;

use crate::convert::{helpers, to_python};
use crate::display::Frontend;
use crate::errors::timeout_error;
use crate::result::AsyncResult;
use crate::waiting::PyWaiter;

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
        self.get_within(py, Deadline::returning(timeout))
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
        self.client.abort(&self.msg_ids, &mut PyWaiter::new(py))
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

    #[getter(msg_ids)]
    fn py_msg_ids(&self) -> Vec<String> {
        self.msg_ids.clone()
    }

    #[getter]
    fn engine_id(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.per_engine(py, self.known_engines())
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

    /// Seconds since submission; once ready, the wall time.
    #[getter]
    fn elapsed(&self) -> f64 {
        self.wall()
            .unwrap_or_else(|| self.submitted.elapsed().as_secs_f64())
    }

    /// Seconds from submission to the last result (raises until ready).
    #[getter]
    fn wall_time(&self, py: Python<'_>) -> PyResult<f64> {
        self.wall()
            .ok_or_else(|| timeout_error(py, "Result not ready.".into()))
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
        let bar =
            Frontend::new(py)?.progress_bar(self.msg_ids.len(), "tasks", "wait_interactive")?;
        let deadline = Deadline::returning(timeout);
        loop {
            let ready = self.wait_for(py, Some(interval.max(0.01)))?;
            let out_of_time = match deadline {
                Deadline::Return(t) => started.elapsed() >= t,
                _ => false,
            };
            if ready || out_of_time {
                bar.call_method1("close", (self.progress(),))?;
                return Ok(());
            }
            bar.call_method1("update", (self.progress(),))?;
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
                return Err(PyValueError::new_err(format!(
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
        let (joins, ordered) = {
            let me = slf.borrow();
            (me.call.shape.joins(), me.ordered)
        };
        Ok(helpers(slf.py())?
            .call_method1("iterate", (slf.clone(), joins, ordered))?
            .unbind())
    }

    /// Waits until one of the parts `pending` (indices) finished; its
    /// index (first-come iteration).
    fn _first_done(&self, py: Python<'_>, pending: Vec<usize>) -> PyResult<usize> {
        let ids: Vec<String> = pending
            .iter()
            .filter_map(|&i| self.msg_ids.get(i).cloned())
            .collect();
        self.client.wait(
            &ids,
            Deadline::Never,
            Until::AnyDone,
            &mut PyWaiter::new(py),
        )?;
        let state = self.client.tracker().lock();
        Ok(pending
            .iter()
            .copied()
            .find(|&i| {
                self.msg_ids
                    .get(i)
                    .is_none_or(|id| rparallel_client::Tracker::is_done(&state, id))
            })
            .unwrap_or(pending[0]))
    }

    /// The value of part `i` (engine `engine_id[i]`), waiting for it; its
    /// error is raised as the engine's RemoteError.
    fn _part(&self, py: Python<'_>, i: usize) -> PyResult<Py<PyAny>> {
        let (Some(msg_id), Some(engine)) = (self.msg_ids.get(i), self.engines.get(i)) else {
            return Err(PyIndexError::new_err(i));
        };
        self.client.wait(
            std::slice::from_ref(msg_id),
            Deadline::Never,
            Until::AllDone,
            &mut PyWaiter::new(py),
        )?;
        let task = self.client.tracker().lock().tasks.get(msg_id).cloned();
        match self.outcome(py, *engine, task)? {
            Ok(value) => Ok(value),
            Err(error) if self.return_exceptions => Ok(error),
            Err(error) => Err(PyErr::from_value(error.into_bound(py))),
        }
    }

    fn __repr__(&self) -> String {
        let state = if self.is_ready() {
            "finished"
        } else {
            "pending"
        };
        let label = self.label.clone().unwrap_or_else(|| self.call.label());
        format!("<{label}: {state}>")
    }
}

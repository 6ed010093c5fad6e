//! `AsyncResult`'s Python methods: the `multiprocessing` / `concurrent.futures`
//! protocol, output and timing attributes, iteration.

use std::time::Instant;

use pyo3::exceptions::{PyAttributeError, PyIndexError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PySlice, PyTuple};
use rparallel_client::{Deadline, Until};
use rparallel_magics::GroupBy;
use serde_json::json;

use crate::convert::{helpers, to_python};
use crate::display::Frontend;
use crate::errors::timeout_error;
use crate::result::AsyncResult;
use crate::waiting::PyWaiter;

/// `concurrent.futures.FIRST_EXCEPTION`.
const FIRST_EXCEPTION: &str = "FIRST_EXCEPTION";

fn parse_time(text: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(text).ok()
}

#[pymethods]
impl AsyncResult {
    /// The result; waits up to `timeout` seconds (None/-1: as long as it
    /// takes). Raises rparallel.error.TimeoutError if not ready by then,
    /// and the remote exception(s) if the work failed; with
    /// `return_exceptions=True` the errors take their results' places.
    /// `return_when=FIRST_EXCEPTION` raises the first error as soon as it
    /// arrives.
    #[pyo3(signature = (timeout=None, return_exceptions=None, return_when=None))]
    pub fn get(
        slf: &Bound<'_, Self>,
        timeout: Option<f64>,
        return_exceptions: Option<bool>,
        return_when: Option<&str>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let me = slf.borrow();
        let with_exceptions = |r: &AsyncResult| -> PyResult<Py<PyAny>> {
            match return_exceptions {
                Some(flag) => {
                    let mut copy = r.part(&(0..r.msg_ids.len()).collect::<Vec<_>>(), r.single);
                    copy.return_exceptions = flag;
                    copy.values(py)
                }
                None => r.values(py),
            }
        };
        if return_when == Some(FIRST_EXCEPTION) && !me.is_ready() {
            let waited = helpers(py)?.call_method1(
                "wait_parts",
                (slf.clone(), timeout.unwrap_or(-1.0), FIRST_EXCEPTION),
            )?;
            if !me.is_ready() {
                let done = waited.get_item(0)?;
                for part in done.try_iter()? {
                    let part = part?;
                    let part = part.cast::<AsyncResult>()?.borrow();
                    if part.values(py).is_err() {
                        return with_exceptions(&part);
                    }
                }
                return Err(timeout_error(py, "Result not ready.".into()));
            }
        }
        me.wait_with(
            py,
            Deadline::returning(timeout),
            Until::AllDoneOrLost,
            &mut PyWaiter::new(py),
        )?;
        with_exceptions(&me)
    }

    /// Waits up to `timeout` seconds (None/-1: as long as it takes); true
    /// when ready. With `return_when` (`concurrent.futures`'
    /// FIRST_COMPLETED, FIRST_EXCEPTION or ALL_COMPLETED) it returns
    /// `(done, pending)`: sets of the results of `split()`.
    #[pyo3(signature = (timeout=-1.0, return_when=None))]
    fn wait(
        slf: &Bound<'_, Self>,
        timeout: Option<f64>,
        return_when: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        match return_when.filter(|w| !w.is_none()) {
            Some(when) => Ok(helpers(py)?
                .call_method1("wait_parts", (slf.clone(), timeout.unwrap_or(-1.0), when))?
                .unbind()),
            None => {
                let ready = slf.borrow().wait_for(py, timeout)?;
                Ok(ready.into_pyobject(py)?.to_owned().into_any().unbind())
            }
        }
    }

    /// One result per request (engine, or task), sharing this one's
    /// records: for `concurrent.futures`-style waiting on parts.
    fn split(slf: &Bound<'_, Self>) -> PyResult<Py<PyTuple>> {
        let py = slf.py();
        let me = slf.borrow();
        if let Some(parts) = me.split_parts.get(py) {
            return Ok(parts.clone_ref(py));
        }
        let parts: Vec<Py<PyAny>> = if me.msg_ids.len() == 1 {
            vec![slf.clone().into_any().unbind()]
        } else {
            let single = !me.call.shape.joins();
            (0..me.msg_ids.len())
                .map(|i| Ok(Bound::new(py, me.part(&[i], single))?.into_any().unbind()))
                .collect::<PyResult<_>>()?
        };
        let parts = PyTuple::new(py, parts)?.unbind();
        let _ = me.split_parts.set(py, parts.clone_ref(py));
        Ok(parts)
    }

    /// One result for the requests of several (the inverse of `split`).
    #[staticmethod]
    #[pyo3(signature = (*results))]
    fn join(results: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        let py = results.py();
        if results.is_empty() {
            return Err(PyValueError::new_err(
                "Must specify at least one AsyncResult to join",
            ));
        }
        if results.len() == 1 {
            return Ok(results.get_item(0)?.unbind());
        }
        let borrowed: Vec<PyRef<'_, AsyncResult>> = results
            .iter()
            .map(|r| {
                r.cast::<AsyncResult>()
                    .map(|r| r.borrow())
                    .map_err(Into::into)
            })
            .collect::<PyResult<_>>()?;
        let refs: Vec<&AsyncResult> = borrowed.iter().map(|r| &**r).collect();
        Ok(Bound::new(py, AsyncResult::joined(&refs))?
            .into_any()
            .unbind())
    }

    /// The results keyed by engine id; ValueError when an engine ran more
    /// than one of them.
    #[pyo3(signature = (timeout=-1.0))]
    fn get_dict(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let values = Self::get(slf, timeout, None, None)?;
        let me = slf.borrow();
        let values = if me.single {
            PyList::new(py, [values])?.into_any()
        } else {
            values.into_bound(py)
        };
        let engines = me.known_engines();
        Ok(helpers(py)?
            .call_method1("get_dict", (values, engines))?
            .unbind())
    }

    /// The results keyed by engine id: `get_dict()`.
    #[getter]
    fn result_dict(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Self::get_dict(slf, None)
    }

    /// Each request's metadata (`engine_id`, `engine_uuid`, `submitted`,
    /// `started`, `completed`, `received`, `status`, `stdout`, `stderr`,
    /// `outputs`, `error`, `execute_result`...): one for a single-engine
    /// result, else a list.
    #[getter]
    fn metadata(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let tasks = self.tasks();
        let all = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| self.metadata_of(py, i, t.as_ref()))
            .collect::<PyResult<Vec<_>>>()?;
        self.per_engine(py, all)
    }

    /// `ar[i]` / `ar[a:b]`: the value(s) (TimeoutError until ready);
    /// `ar['key']`: that metadata key of each request.
    fn __getitem__(slf: &Bound<'_, Self>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if let Ok(name) = key.extract::<String>() {
            let md = slf.borrow().metadata(py)?.into_bound(py);
            return Ok(if slf.borrow().single {
                md.get_item(&name)?.unbind()
            } else {
                let values = md
                    .try_iter()?
                    .map(|m| m?.get_item(&name))
                    .collect::<PyResult<Vec<_>>>()?;
                PyList::new(py, values)?.into_any().unbind()
            });
        }
        if !(key.is_instance_of::<pyo3::types::PyInt>() || key.is_instance_of::<PySlice>()) {
            return Err(PyTypeError::new_err(format!(
                "Invalid key type {}, must be 'int','slice', or 'str'",
                key.get_type().repr()?
            )));
        }
        if !slf.borrow().is_ready() {
            return Err(timeout_error(py, "Result not ready.".into()));
        }
        Ok(Self::get(slf, None, None, None)?
            .into_bound(py)
            .get_item(key)?
            .unbind())
    }

    /// Metadata keys read as attributes (`ar.engine_uuid`, `ar.started`).
    fn __getattr__(slf: &Bound<'_, Self>, name: &str) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let known = helpers(py)?
            .getattr("Metadata")?
            .getattr("KEYS")?
            .contains(name)?;
        if !known {
            return Err(PyAttributeError::new_err(format!(
                "'AsyncResult' object has no attribute '{name}'"
            )));
        }
        Self::__getitem__(slf, &name.into_pyobject(py)?.into_any())
    }

    /// Whether the requests have been handed to the connection: sending
    /// copies nothing the caller could still change... see `wait_for_send`.
    #[getter]
    fn sent(&self) -> bool {
        self.sends_done()
    }

    /// Waits until the requests' buffers were written to the socket (an
    /// array sent with `track=True` may then be changed in place);
    /// TimeoutError after `timeout` seconds.
    #[pyo3(signature = (timeout=-1.0))]
    fn wait_for_send(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = timeout
            .filter(|t| *t >= 0.0)
            .map(|t| Instant::now() + std::time::Duration::from_secs_f64(t));
        py.detach(|| loop {
            if self.sends_done() {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(());
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        })
        .map_err(|()| timeout_error(py, "Still waiting to be sent".into()))
    }

    /// `concurrent.futures.wait` / `as_completed` read these of a Future.
    #[getter]
    fn _condition(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Ok(Self::shim(slf)?.getattr("_condition")?.unbind())
    }

    #[getter]
    fn _waiters(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Ok(Self::shim(slf)?.getattr("_waiters")?.unbind())
    }

    #[getter]
    fn _state(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Ok(Self::shim(slf)?.call_method0("state")?.unbind())
    }

    /// `await ar`: the value, from a thread that waits for it.
    fn __await__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let awaitable = helpers(py)?.call_method1("awaitable", (slf.clone(),))?;
        Ok(awaitable.call_method0("__await__")?.unbind())
    }

    /// Waits up to `timeout` seconds until one of the requests `indices`
    /// finished (for `wait_parts`).
    fn _wait_any(&self, py: Python<'_>, indices: Vec<usize>, timeout: Option<f64>) -> PyResult<()> {
        let ids: Vec<String> = indices
            .iter()
            .filter_map(|&i| self.msg_ids.get(i).cloned())
            .collect();
        self.client.wait(
            &ids,
            Deadline::returning(timeout),
            Until::AnyDone,
            &mut PyWaiter::new(py),
        )?;
        Ok(())
    }

    /// Aborts this result's tasks that have not started: their `get()`
    /// raises TaskAborted. Tasks already running go on (interrupt them
    /// with the kernel's interrupt, or `%%px --timeout`).
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        if self.is_ready() {
            return Err(PyRuntimeError::new_err("Can't abort, I am already done!"));
        }
        self.client.abort(&self.msg_ids, &mut PyWaiter::new(py))
    }

    /// Whether every request finished.
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
    /// `concurrent.futures.Future.result`: `get(timeout)`.
    #[pyo3(signature = (timeout=None))]
    fn result(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        Self::get(slf, timeout, None, None)
    }

    /// `concurrent.futures.Future.done`: whether it is ready.
    fn done(&self) -> bool {
        self.is_ready()
    }

    /// Always False: requests are aborted (`abort()`), not cancelled.
    fn cancelled(&self) -> bool {
        false
    }

    /// Whether some request has not finished.
    fn running(&self) -> bool {
        !self.is_ready()
    }

    /// The error the work raised, or None; waits up to `timeout`.
    #[pyo3(signature = (timeout=None))]
    fn exception(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        let py = slf.py();
        match Self::get(slf, timeout, None, None) {
            Ok(_) => Ok(None),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyTimeoutError>(py) => Err(e),
            Err(e) => Ok(Some(e.value(py).clone().into_any().unbind())),
        }
    }

    /// Calls `callback(self)` once the result is ready: in the event loop
    /// running in this thread if there is one (as an asyncio future does;
    /// `context` as asyncio's), else from the thread that waited.
    #[pyo3(signature = (callback, *, context=None))]
    fn add_done_callback(
        slf: Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let helpers = helpers(slf.py())?;
        let callback = helpers.call_method1("in_loop", (callback, context))?;
        helpers.call_method1("when_done", (slf.clone(), callback))?;
        Ok(())
    }

    /// Callbacks cannot be taken back: 0, none removed.
    fn remove_done_callback(&self, _callback: &Bound<'_, PyAny>) -> usize {
        0
    }

    /// Requests cannot be cancelled (`abort()` stops queued ones): False.
    #[pyo3(signature = (*_args, **_kwargs))]
    fn cancel(
        &self,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> bool {
        false
    }

    /// The event loop running now (asyncio asks its futures).
    fn get_loop(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(py
            .import("asyncio")?
            .call_method0("get_running_loop")?
            .unbind())
    }

    /// Marks it as an asyncio future, so `asyncio.wrap_future(ar)`,
    /// `asyncio.gather(ar)` and `await ar` take it as it is.
    #[classattr]
    fn _asyncio_future_blocking() -> bool {
        false
    }

    /// The result: `get()`.
    #[getter]
    fn r(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Self::get(slf, None, None, None)
    }

    /// The msg_ids of the requests, in order.
    #[getter(msg_ids)]
    fn py_msg_ids(&self) -> Vec<String> {
        self.msg_ids.clone()
    }

    /// The engine of each request (one for a single-engine result).
    #[getter]
    fn engine_id(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.per_engine(py, self.known_engines())
    }

    /// What each request printed to stdout.
    #[getter]
    fn stdout(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.per_engine(py, self.stream("stdout"))
    }

    /// What each request printed to stderr.
    #[getter]
    fn stderr(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.per_engine(py, self.stream("stderr"))
    }

    /// The live data each task published so far
    /// (`rparallel.datapub.publish_data`), merged: a dict (or a list).
    #[getter]
    fn data(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let all = self
            .tasks()
            .iter()
            .map(|t| self.data_of(py, t.as_ref()))
            .collect::<PyResult<Vec<_>>>()?;
        self.per_engine(py, all)
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
        let bar = Frontend::new(py)?.progress_bar(self.__len__(), "tasks", "wait_interactive")?;
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

    /// How many items: requests, or a map's elements.
    fn __len__(&self) -> usize {
        (0..self.msg_ids.len()).map(|i| self.items_in(i)).sum()
    }

    /// Results as they arrive, in order: each engine's part is yielded as
    /// soon as that engine (and the ones before it) finished.
    fn __iter__(slf: Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let (joins, ordered) = {
            let me = slf.borrow();
            if me.single {
                return Err(PyTypeError::new_err(
                    "AsyncResults with a single result are not iterable.",
                ));
            }
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

//! `LoadBalancedView` (`rc.load_balanced_view()`): each call is a task the
//! controller's scheduler gives to whichever engine has room, instead of a
//! request to fixed engines. `map` splits its sequences into chunks of
//! `chunksize` items, one task each, joined back in order. The view's
//! flags (`retries`, `timeout`, `after`, `follow`, `label`, `targets`)
//! travel with each task ([`TaskFlags`]).
//!
//! The Python API is in [`crate::balanced_methods`].

use std::sync::Arc;
use std::time::Instant;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use rparallel_client::{Call, Client, Request, Targets, TaskFlags};

use crate::convert::helpers;
use crate::errors::target_error;
use crate::result::{AsyncResult, UNASSIGNED};
use crate::view::{apply_request, Sequences};

/// A view whose calls run as tasks on whichever engine is free (the
/// controller's scheduler), with retries, timeouts and dependencies
/// (`after`, `follow`); `rc.load_balanced_view()`.
#[pyclass(module = "rparallel", name = "LoadBalancedView")]
pub struct LoadBalancedView {
    pub(crate) client: Arc<Client>,
    /// The Python Client this view belongs to (its `client` attribute).
    #[pyo3(get, name = "client")]
    pub(crate) client_obj: Py<PyAny>,
    /// Engines tasks may run on (`All`: any, as they come and go).
    pub(crate) targets: Targets,
    /// Wait for results (true) or return AsyncResults (false, the default).
    #[pyo3(get, set)]
    pub(crate) block: bool,
    /// Results watch their sends (`ar.sent`, `ar.wait_for_send()`).
    #[pyo3(get, set)]
    pub(crate) track: bool,
    /// How often a failed task runs again on another engine.
    pub(crate) retries: u32,
    /// Seconds a task may wait in the scheduler before TaskTimeout.
    pub(crate) timeout: Option<f64>,
    /// Tasks run after these (msg_ids, AsyncResults, a Dependency).
    pub(crate) after: Option<Py<PyAny>>,
    /// Tasks run where these ran.
    pub(crate) follow: Option<Py<PyAny>>,
    /// A name of the user's for the tasks.
    #[pyo3(get, set)]
    pub(crate) label: Option<String>,
}

/// The flags `set_flags` and `temp_flags` take (ipyparallel's).
pub(crate) const FLAG_NAMES: [&str; 8] = [
    "targets", "block", "track", "follow", "after", "timeout", "retries", "label",
];

impl LoadBalancedView {
    pub(crate) fn new(client: Arc<Client>, client_obj: Py<PyAny>, targets: Targets) -> Self {
        LoadBalancedView {
            client,
            client_obj,
            targets,
            block: false,
            track: false,
            retries: 0,
            timeout: None,
            after: None,
            follow: None,
            label: None,
        }
    }

    pub(crate) fn client(&self) -> &Arc<Client> {
        &self.client
    }

    pub(crate) fn targets(&self) -> &Targets {
        &self.targets
    }

    /// The engines a task may name, checked now: none registered (or none
    /// of `targets`) is NoEnginesRegistered at once.
    fn task_targets(&self, py: Python<'_>, targets: &Targets) -> PyResult<Option<Vec<u32>>> {
        let live = targets
            .resolve(&self.client.ids())
            .map_err(|e| target_error(py, &self.client, e))?;
        Ok(match targets {
            Targets::All => None,
            _ => Some(live),
        })
    }

    /// The flags each task of a call carries, on `targets`.
    fn flags(&self, py: Python<'_>, targets: &Targets) -> PyResult<TaskFlags> {
        Ok(TaskFlags {
            targets: self.task_targets(py, targets)?,
            retries: self.retries,
            after: dependency(py, self.after.as_ref())?,
            follow: dependency(py, self.follow.as_ref())?,
            timeout: self.timeout,
            label: self.label.clone(),
        })
    }

    /// Sends each request as a task; the AsyncResult of them all, in order.
    fn submit<'py>(
        &self,
        py: Python<'py>,
        requests: Vec<Request>,
        call: Call,
        single: bool,
        targets: &Targets,
        label: Option<&str>,
    ) -> PyResult<Bound<'py, AsyncResult>> {
        let flags = Arc::new(self.flags(py, targets)?);
        let submitted = Instant::now();
        let (client, count) = (self.client.clone(), requests.len());
        let mut requests = requests;
        let sending = self.track.then(|| crate::view::tracked(&mut requests));
        // Sending may wait for credit (too much in flight): not with the GIL.
        let flags_kept = flags.clone();
        let msg_ids = py.detach(move || {
            requests
                .into_iter()
                .map(|r| client.send_task(r, &flags))
                .collect::<Vec<_>>()
        });
        let engines = vec![UNASSIGNED; count];
        self.client.remember(&msg_ids);
        let result = AsyncResult::new(
            self.client.clone(),
            msg_ids,
            engines,
            call,
            single,
            submitted,
            label,
        );
        let result = Bound::new(py, result)?;
        {
            let mut r = result.borrow_mut();
            r.sending = sending;
            r.task_flags = Some(flags_kept);
        }
        Ok(result)
    }

    pub(crate) fn apply_task<'py>(
        &self,
        py: Python<'py>,
        f: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, AsyncResult>> {
        let request = apply_request(py, f, args, kwargs)?;
        self.submit(py, vec![request], Call::APPLY, true, &self.targets, None)
    }

    /// `code` run on one engine of `targets` (`%px` on an activated
    /// load-balanced view).
    pub(crate) fn execute_async<'py>(
        &self,
        py: Python<'py>,
        code: &str,
        silent: bool,
        targets: &Targets,
        label: Option<&str>,
    ) -> PyResult<Bound<'py, AsyncResult>> {
        let request = Request::Execute {
            code: code.to_string(),
            silent,
        };
        self.submit(py, vec![request], Call::EXECUTE, true, targets, label)
    }

    /// `f` over `sequences` in tasks of `chunksize` items: element-wise (a
    /// map), or once per chunk (calling a parallel function). Iterating the
    /// result yields them in order, or (`ordered=False`) as they finish.
    pub(crate) fn chunked<'py>(
        &self,
        py: Python<'py>,
        f: &Bound<'py, PyAny>,
        sequences: &Bound<'py, PyTuple>,
        map: MapOptions,
    ) -> PyResult<Bound<'py, AsyncResult>> {
        if map.chunksize == 0 {
            return Err(PyValueError::new_err("chunksize must be at least 1"));
        }
        if !f.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "map needs a callable, not {}",
                f.get_type().name()?
            )));
        }
        let seqs = Sequences::new(py, sequences)?;
        let mut requests = Vec::with_capacity(seqs.len.div_ceil(map.chunksize));
        let mut sizes = Vec::with_capacity(requests.capacity());
        for lo in (0..seqs.len).step_by(map.chunksize) {
            let hi = (lo + map.chunksize).min(seqs.len);
            requests.push(seqs.request(f, lo, hi, map.elementwise)?);
            sizes.push(hi - lo);
        }
        let result = self.submit(py, requests, Call::MAP, false, &self.targets, None)?;
        {
            let mut r = result.borrow_mut();
            r.chunk_sizes = Some(sizes);
            r.ordered = map.ordered;
            r.return_exceptions = map.return_exceptions;
        }
        Ok(result)
    }

    /// msg_ids of this client's tasks not finished and not known to have
    /// started: what `abort()` with no jobs takes back.
    pub(crate) fn queued_tasks(&self) -> Vec<String> {
        let state = self.client.tracker().lock();
        state
            .tasks
            .iter()
            .filter(|(_, t)| {
                t.balanced && t.engine.is_none() && t.status == rparallel_client::Status::Pending
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Sets one flag (a name of [`FLAG_NAMES`]); KeyError for others.
    pub(crate) fn set_flag(
        &mut self,
        py: Python<'_>,
        key: &str,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        match key {
            "block" => self.block = value.is_truthy()?,
            "track" => self.track = value.is_truthy()?,
            "retries" => {
                if value.is_instance_of::<pyo3::types::PyBool>()
                    || !value.is_instance_of::<pyo3::types::PyInt>()
                {
                    return Err(PyTypeError::new_err(format!(
                        "retries must be int, not {}",
                        value.get_type().name()?
                    )));
                }
                self.retries = value.extract()?;
            }
            "targets" => self.targets = targets_of(&self.client, value)?,
            "timeout" => self.timeout = timeout_of(value)?,
            "after" => self.after = checked_dependency(py, value)?,
            "follow" => self.follow = checked_dependency(py, value)?,
            "label" => {
                self.label = if value.is_none() {
                    None
                } else {
                    Some(value.str()?.to_string())
                }
            }
            other => {
                return Err(pyo3::exceptions::PyKeyError::new_err(format!(
                    "Invalid name: '{other}' (flags: {})",
                    FLAG_NAMES.join(", ")
                )))
            }
        }
        Ok(())
    }
}

/// How a load-balanced map cuts and returns its work.
#[derive(Debug, Clone, Copy)]
pub struct MapOptions {
    pub chunksize: usize,
    pub ordered: bool,
    /// Errors take their items' places instead of being raised.
    pub return_exceptions: bool,
    /// `f` per item (a map) or per chunk (a parallel function's call).
    pub elementwise: bool,
}

/// `targets`: None (any engine) or what a DirectView takes.
pub(crate) fn targets_of(client: &Arc<Client>, targets: &Bound<'_, PyAny>) -> PyResult<Targets> {
    if targets.is_none() {
        Ok(Targets::All)
    } else {
        crate::convert::targets(client, targets)
    }
}

/// A `timeout` flag: None, or seconds ≥ 0 (0: none, as ipyparallel).
fn timeout_of(value: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    if value.is_none() {
        return Ok(None);
    }
    if value.is_instance_of::<pyo3::types::PyBool>()
        || !(value.is_instance_of::<pyo3::types::PyInt>()
            || value.is_instance_of::<pyo3::types::PyFloat>())
    {
        return Err(PyTypeError::new_err(format!(
            "Invalid type for timeout: {}",
            value.get_type().name()?
        )));
    }
    let t: f64 = value.extract()?;
    if t < 0.0 || t.is_nan() {
        return Err(PyValueError::new_err(format!("Invalid timeout: {t}")));
    }
    Ok((t > 0.0).then_some(t))
}

/// An `after`/`follow` flag, checked now (ValueError when it is not a
/// dependency) and kept as given.
fn checked_dependency(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
    if value.is_none() {
        return Ok(None);
    }
    helpers(py)?.call_method1("render_dependency", (value,))?;
    Ok(Some(value.clone().unbind()))
}

/// A dependency flag as the scheduler reads it: msg_ids, or
/// `Dependency.as_dict()`.
fn dependency(py: Python<'_>, value: Option<&Py<PyAny>>) -> PyResult<Option<serde_json::Value>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let rendered = helpers(py)?.call_method1("render_dependency", (value.bind(py),))?;
    let text: String = py
        .import("json")?
        .call_method1("dumps", (rendered,))?
        .extract()?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| PyValueError::new_err(format!("Invalid dependency: {e}")))
}

//! `LoadBalancedView` (`rc.load_balanced_view()`): each call is a task the
//! controller's scheduler gives to whichever engine has room, instead of a
//! request to fixed engines. `map` splits its sequences into chunks of
//! `chunksize` items, one task each, joined back in order.

use std::sync::Arc;
use std::time::Instant;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use rparallel_client::{Call, Client, Request, Targets};

use crate::convert::helpers;
use crate::errors::target_error;
use crate::result::{AsyncResult, UNASSIGNED};
use crate::view::{apply_request, finish, Sequences};

#[pyclass(module = "rparallel", name = "LoadBalancedView")]
pub struct LoadBalancedView {
    client: Arc<Client>,
    /// The Python Client this view belongs to (its `client` attribute).
    #[pyo3(get, name = "client")]
    client_obj: Py<PyAny>,
    /// Engines tasks may run on (`All`: any, as they come and go).
    targets: Targets,
    /// Wait for results (true) or return AsyncResults (false, the default).
    #[pyo3(get, set)]
    block: bool,
    /// How often a task runs again elsewhere when its engine dies.
    #[pyo3(get, set)]
    retries: u32,
}

impl LoadBalancedView {
    pub(crate) fn new(client: Arc<Client>, client_obj: Py<PyAny>, targets: Targets) -> Self {
        LoadBalancedView {
            client,
            client_obj,
            targets,
            block: false,
            retries: 0,
        }
    }

    /// The engines a task may name, checked now: none registered (or none
    /// of the view's targets) is NoEnginesRegistered at once.
    fn task_targets(&self, py: Python<'_>) -> PyResult<Option<Vec<u32>>> {
        let live = self
            .targets
            .resolve(&self.client.ids())
            .map_err(|e| target_error(py, &self.client, e))?;
        Ok(match self.targets {
            Targets::All => None,
            _ => Some(live),
        })
    }

    /// Sends each request as a task; the AsyncResult of them all, in order.
    fn submit<'py>(
        &self,
        py: Python<'py>,
        requests: Vec<Request>,
        call: Call,
        single: bool,
    ) -> PyResult<Bound<'py, AsyncResult>> {
        let targets = self.task_targets(py)?;
        let submitted = Instant::now();
        let (client, retries, count) = (self.client.clone(), self.retries, requests.len());
        // Sending may wait for credit (too much in flight): not with the GIL.
        let msg_ids = py.detach(move || {
            requests
                .into_iter()
                .map(|r| client.send_task(r, targets.as_deref(), retries))
                .collect::<Vec<_>>()
        });
        let engines = vec![UNASSIGNED; count];
        let result = AsyncResult::new(
            self.client.clone(),
            msg_ids,
            engines,
            call,
            single,
            submitted,
            None,
        );
        Bound::new(py, result)
    }

    fn apply_task<'py>(
        &self,
        py: Python<'py>,
        f: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, AsyncResult>> {
        let request = apply_request(py, f, args, kwargs)?;
        self.submit(py, vec![request], Call::APPLY, true)
    }

    /// `f` over `sequences`, `chunksize` items per task; iterating the
    /// result yields them in order, or (`ordered=False`) as they finish.
    fn mapped<'py>(
        &self,
        py: Python<'py>,
        f: &Bound<'py, PyAny>,
        sequences: &Bound<'py, PyTuple>,
        chunksize: usize,
        ordered: bool,
    ) -> PyResult<Bound<'py, AsyncResult>> {
        if chunksize == 0 {
            return Err(PyValueError::new_err("chunksize must be at least 1"));
        }
        if !f.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "map needs a callable, not {}",
                f.get_type().name()?
            )));
        }
        let seqs = Sequences::new(py, sequences)?;
        let mut requests = Vec::with_capacity(seqs.len.div_ceil(chunksize));
        for lo in (0..seqs.len).step_by(chunksize) {
            requests.push(seqs.request(f, lo, (lo + chunksize).min(seqs.len), true)?);
        }
        let result = self.submit(py, requests, Call::MAP, false)?;
        result.borrow_mut().ordered = ordered;
        Ok(result)
    }

    fn block_for(&self, block: Option<bool>) -> bool {
        block.unwrap_or(self.block)
    }
}

#[pymethods]
impl LoadBalancedView {
    /// `f(*args, **kwargs)` on whichever engine is free: its value
    /// (blocking) or its AsyncResult.
    #[pyo3(signature = (f, *args, **kwargs))]
    fn apply(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        finish(self.apply_task(py, f, args, kwargs)?, self.block)
    }

    #[pyo3(signature = (f, *args, **kwargs))]
    fn apply_sync(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        finish(self.apply_task(py, f, args, kwargs)?, true)
    }

    #[pyo3(signature = (f, *args, **kwargs))]
    fn apply_async(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        finish(self.apply_task(py, f, args, kwargs)?, false)
    }

    /// `f` over the sequences, load-balanced in chunks of `chunksize`
    /// items; the results in order.
    #[pyo3(signature = (f, *sequences, block=None, chunksize=1, ordered=true))]
    fn map(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        sequences: &Bound<'_, PyTuple>,
        block: Option<bool>,
        chunksize: usize,
        ordered: bool,
    ) -> PyResult<Py<PyAny>> {
        finish(
            self.mapped(py, f, sequences, chunksize, ordered)?,
            self.block_for(block),
        )
    }

    #[pyo3(signature = (f, *sequences, chunksize=1, ordered=true))]
    fn map_sync(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        sequences: &Bound<'_, PyTuple>,
        chunksize: usize,
        ordered: bool,
    ) -> PyResult<Py<PyAny>> {
        finish(self.mapped(py, f, sequences, chunksize, ordered)?, true)
    }

    #[pyo3(signature = (f, *sequences, chunksize=1, ordered=true))]
    fn map_async(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        sequences: &Bound<'_, PyTuple>,
        chunksize: usize,
        ordered: bool,
    ) -> PyResult<Py<PyAny>> {
        finish(self.mapped(py, f, sequences, chunksize, ordered)?, false)
    }

    /// `f` over the items of `iterables` (which may be endless), at most
    /// `max_outstanding` tasks ahead ('auto': twice the engines); an
    /// iterator of the results, in order or (`ordered=False`) first-come,
    /// with `cancel()`.
    #[pyo3(signature = (f, *iterables, ordered=true, max_outstanding=None, return_exceptions=false))]
    fn imap(
        slf: Bound<'_, Self>,
        f: &Bound<'_, PyAny>,
        iterables: &Bound<'_, PyTuple>,
        ordered: bool,
        max_outstanding: Option<Bound<'_, PyAny>>,
        return_exceptions: bool,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let max = match max_outstanding {
            Some(m) => m,
            None => pyo3::types::PyString::new(py, "auto").into_any(),
        };
        let iters = iterables
            .iter()
            .map(|i| i.try_iter().map(|it| it.into_any()))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(helpers(py)?
            .getattr("IMap")?
            .call1((slf, f, iters, ordered, max, return_exceptions))?
            .unbind())
    }

    /// Sets `block`, `retries` or `targets`.
    #[pyo3(signature = (**flags))]
    fn set_flags(&mut self, flags: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let Some(flags) = flags else {
            return Ok(());
        };
        for (key, value) in flags.iter() {
            match key.extract::<String>()?.as_str() {
                "block" => self.block = value.is_truthy()?,
                "retries" => self.retries = value.extract()?,
                "targets" => self.targets = targets_of(&self.client, &value)?,
                other => {
                    return Err(PyTypeError::new_err(format!(
                        "set_flags() got an unknown flag '{other}' (flags: block, retries, targets)"
                    )))
                }
            }
        }
        Ok(())
    }

    /// The engines tasks may run on: None for any.
    #[getter]
    fn targets(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &self.targets {
            Targets::All => Ok(py.None()),
            other => Ok(other
                .resolve(&self.client.ids())
                .unwrap_or_default()
                .into_pyobject(py)?
                .into_any()
                .unbind()),
        }
    }

    #[setter]
    fn set_targets(&mut self, targets: &Bound<'_, PyAny>) -> PyResult<()> {
        self.targets = targets_of(&self.client, targets)?;
        Ok(())
    }

    fn __repr__(&self) -> String {
        match &self.targets {
            Targets::All => "<LoadBalancedView None>".to_string(),
            other => format!(
                "<LoadBalancedView {:?}>",
                other.resolve(&self.client.ids()).unwrap_or_default()
            ),
        }
    }
}

/// `targets`: None (any engine) or what a DirectView takes.
pub(crate) fn targets_of(client: &Arc<Client>, targets: &Bound<'_, PyAny>) -> PyResult<Targets> {
    if targets.is_none() {
        Ok(Targets::All)
    } else {
        crate::convert::targets(client, targets)
    }
}

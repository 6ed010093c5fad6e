//! The Python API of [`LoadBalancedView`]: ipyparallel's names, signatures
//! and return shapes.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use crate::any_view::AnyView;
use crate::balanced::{targets_of, LoadBalancedView, MapOptions, FLAG_NAMES};
use crate::convert::helpers;
use crate::jobs::{job_ids, wait_jobs};
use crate::remote::RemoteDecorator;
use crate::view::finish;
use crate::waiting::PyWaiter;

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

    /// `apply`, waiting for the result (block=True).
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

    /// `apply`, returning an AsyncResult at once (block=False).
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
    /// items; the results in order (iteration: first-come with
    /// `ordered=False`); errors in place with `return_exceptions=True`.
    #[pyo3(signature = (f, *sequences, block=None, chunksize=1, ordered=true, return_exceptions=false))]
    #[allow(clippy::too_many_arguments)] // ipyparallel's signature
    fn map(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        sequences: &Bound<'_, PyTuple>,
        block: Option<bool>,
        chunksize: usize,
        ordered: bool,
        return_exceptions: bool,
    ) -> PyResult<Py<PyAny>> {
        let map = map_options(chunksize, ordered, return_exceptions);
        finish(
            self.chunked(py, f, sequences, map)?,
            block.unwrap_or(self.block),
        )
    }

    /// `map`, waiting for the results (block=True).
    #[pyo3(signature = (f, *sequences, chunksize=1, ordered=true, return_exceptions=false))]
    fn map_sync(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        sequences: &Bound<'_, PyTuple>,
        chunksize: usize,
        ordered: bool,
        return_exceptions: bool,
    ) -> PyResult<Py<PyAny>> {
        let map = map_options(chunksize, ordered, return_exceptions);
        finish(self.chunked(py, f, sequences, map)?, true)
    }

    /// `map`, returning an AsyncMapResult at once (block=False).
    #[pyo3(signature = (f, *sequences, chunksize=1, ordered=true, return_exceptions=false))]
    fn map_async(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        sequences: &Bound<'_, PyTuple>,
        chunksize: usize,
        ordered: bool,
        return_exceptions: bool,
    ) -> PyResult<Py<PyAny>> {
        let map = map_options(chunksize, ordered, return_exceptions);
        finish(self.chunked(py, f, sequences, map)?, false)
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
        let max = max_outstanding.unwrap_or_else(|| PyString::new(py, "auto").into_any());
        let iters = iterables
            .iter()
            .map(|i| i.try_iter().map(|it| it.into_any()))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(helpers(py)?
            .getattr("IMap")?
            .call1((slf, f, iters, ordered, max, return_exceptions))?
            .unbind())
    }

    /// Runs `code` on one engine (whichever is free).
    #[pyo3(signature = (code, silent=true, block=None))]
    fn execute(
        &self,
        py: Python<'_>,
        code: &str,
        silent: bool,
        block: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        let result = self.execute_async(py, code, silent, self.targets(), None)?;
        finish(result, block.unwrap_or(self.block))
    }

    /// Sets flags by keyword (`block`, `track`, `targets`, `retries`,
    /// `timeout`, `after`, `follow`, `label`); returns the view. An unknown
    /// flag is a KeyError, as in ipyparallel.
    #[pyo3(signature = (**flags))]
    fn set_flags<'py>(
        slf: Bound<'py, Self>,
        flags: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, Self>> {
        if let Some(flags) = flags {
            let py = slf.py();
            for (key, value) in flags.iter() {
                slf.borrow_mut()
                    .set_flag(py, &key.extract::<String>()?, &value)?;
            }
        }
        Ok(slf)
    }

    /// A context manager: the flags set for the `with` block only.
    #[pyo3(signature = (**flags))]
    fn temp_flags<'py>(
        slf: Bound<'py, Self>,
        flags: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let flags = flags.cloned().unwrap_or_else(|| PyDict::new(py));
        helpers(py)?.call_method1("temp_flags", (slf, flags))
    }

    /// Registers this view as the joblib backend `name`:
    /// `with joblib.parallel_backend('ipyparallel'): Parallel(n_jobs=...)`
    /// runs joblib's batches as tasks here.
    #[pyo3(signature = (name="ipyparallel", make_default=false))]
    fn register_joblib_backend(
        slf: Bound<'_, Self>,
        name: &str,
        make_default: bool,
    ) -> PyResult<()> {
        helpers(slf.py())?
            .call_method1("register_joblib_backend", (slf.clone(), name, make_default))?;
        Ok(())
    }

    /// The flags `set_flags` and `temp_flags` take.
    #[classattr]
    fn _flag_names() -> Vec<&'static str> {
        FLAG_NAMES.to_vec()
    }

    /// How many times a failed task is tried again, on other engines.
    #[getter]
    fn get_retries(&self) -> u32 {
        self.retries
    }

    /// Seconds a task may wait in the scheduler before TaskTimeout (None: no limit).
    #[getter]
    fn get_timeout(&self) -> Option<f64> {
        self.timeout
    }

    /// Tasks this one waits for (a Dependency), or None.
    #[getter]
    fn get_after(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.after.as_ref().map(|a| a.clone_ref(py))
    }

    /// Tasks whose engine this one must run on (a Dependency), or None.
    #[getter]
    fn get_follow(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.follow.as_ref().map(|f| f.clone_ref(py))
    }

    #[setter]
    fn set_retries(&mut self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set_flag(py, "retries", value)
    }

    #[setter]
    fn set_timeout(&mut self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set_flag(py, "timeout", value)
    }

    #[setter]
    fn set_after(&mut self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set_flag(py, "after", value)
    }

    #[setter]
    fn set_follow(&mut self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set_flag(py, "follow", value)
    }

    /// The engines tasks may run on: None for any.
    #[getter]
    fn get_targets(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self.targets() {
            rparallel_client::Targets::All => Ok(py.None()),
            other => Ok(other
                .resolve(&self.client().ids())
                .unwrap_or_default()
                .into_pyobject(py)?
                .into_any()
                .unbind()),
        }
    }

    #[setter]
    fn set_targets(&mut self, targets: &Bound<'_, PyAny>) -> PyResult<()> {
        self.targets = targets_of(self.client(), targets)?;
        Ok(())
    }

    /// Takes back tasks still waiting in the scheduler (`jobs`:
    /// AsyncResults or msg_ids; all of this client's when None): their
    /// results raise TaskAborted. Running tasks finish.
    #[pyo3(signature = (jobs=None, targets=None, block=None))]
    fn abort(
        &self,
        py: Python<'_>,
        jobs: Option<&Bound<'_, PyAny>>,
        targets: Option<&Bound<'_, PyAny>>,
        block: Option<bool>,
    ) -> PyResult<()> {
        let _ = (targets, block);
        let mut ids = job_ids(&self.client, jobs)?;
        if ids.is_empty() {
            ids = self.queued_tasks();
        }
        self.client().abort(&ids, &mut PyWaiter::new(py))
    }

    /// Waits for `jobs` (all outstanding when None); true when done
    /// within `timeout`.
    #[pyo3(signature = (jobs=None, timeout=None))]
    fn wait(
        &self,
        py: Python<'_>,
        jobs: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        wait_jobs(py, self.client(), jobs, timeout)
    }

    /// Decorator: calling the function runs it as a task.
    #[pyo3(signature = (block=None))]
    fn remote(slf: Bound<'_, Self>, block: Option<bool>) -> RemoteDecorator {
        RemoteDecorator::new(AnyView::Balanced(slf.unbind()), block, None)
    }

    /// Decorator: calls run `f` on chunks of `chunksize` items of the
    /// arguments (one task each; 1 by default), joined; `.map` runs it per
    /// item.
    #[pyo3(signature = (dist="b", block=None, chunksize=None, ordered=true))]
    fn parallel(
        slf: Bound<'_, Self>,
        dist: &str,
        block: Option<bool>,
        chunksize: Option<usize>,
        ordered: bool,
    ) -> PyResult<RemoteDecorator> {
        crate::view_methods::only_block_distribution(dist)?;
        let map = map_options(chunksize.unwrap_or(1), ordered, false);
        Ok(RemoteDecorator::new(
            AnyView::Balanced(slf.unbind()),
            block,
            Some(map),
        ))
    }

    /// A `concurrent.futures.Executor` running on this view.
    #[getter]
    fn executor(slf: Bound<'_, Self>) -> PyResult<Bound<'_, PyAny>> {
        helpers(slf.py())?.call_method1("ViewExecutor", (slf,))
    }

    /// Makes this view the one `%px{suffix}` runs on: each cell on one engine.
    #[pyo3(signature = (suffix=""))]
    fn activate(slf: Bound<'_, Self>, suffix: &str) -> PyResult<()> {
        helpers(slf.py())?.call_method1("activate", (slf.clone(), suffix))?;
        Ok(())
    }

    /// The number of engines tasks may go to.
    fn __len__(&self) -> usize {
        self.targets()
            .resolve(&self.client().ids())
            .map_or(0, |e| e.len())
    }

    fn __repr__(&self) -> String {
        match self.targets() {
            rparallel_client::Targets::All => "<LoadBalancedView None>".to_string(),
            other => format!(
                "<LoadBalancedView {:?}>",
                other.resolve(&self.client().ids()).unwrap_or_default()
            ),
        }
    }
}

fn map_options(chunksize: usize, ordered: bool, return_exceptions: bool) -> MapOptions {
    MapOptions {
        chunksize,
        ordered,
        return_exceptions,
        elementwise: true,
    }
}

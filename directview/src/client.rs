//! `Client`: a connection to a cluster's controller, and the views on it.

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PySlice};
use rparallel_cluster::Profile;
use serde_json::json;

use crate::core::{error, timeout_arg, wait_interruptibly, Core};
use crate::result::AsyncResult;
use crate::targets::Targets;
use crate::view::{parse_targets, target_error, DirectView};

#[pyclass(module = "rparallel", name = "Client")]
pub struct Client {
    pub core: Arc<Core>,
    #[pyo3(get)]
    profile: String,
}

pub fn os_error(e: anyhow::Error) -> PyErr {
    PyOSError::new_err(format!("{e:#}"))
}

/// msg_ids of `jobs`: None, an AsyncResult, a msg_id, or a list of those.
pub fn job_ids(jobs: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    let Some(jobs) = jobs.filter(|j| !j.is_none()) else {
        return Ok(Vec::new());
    };
    let mut ids = Vec::new();
    let mut add = |job: &Bound<'_, PyAny>| -> PyResult<()> {
        if let Ok(result) = job.cast::<AsyncResult>() {
            ids.extend(result.borrow().msg_ids.iter().cloned());
        } else if let Ok(id) = job.extract::<String>() {
            ids.push(id);
        } else {
            return Err(PyTypeError::new_err("jobs are AsyncResults or msg_ids"));
        }
        Ok(())
    };
    if jobs.is_instance_of::<PyList>() || jobs.is_instance_of::<pyo3::types::PyTuple>() {
        for job in jobs.try_iter()? {
            add(&job?)?;
        }
    } else {
        add(jobs)?;
    }
    Ok(ids)
}

/// Waits for `jobs` (all pending requests when None).
pub fn wait_jobs(
    py: Python<'_>,
    core: &Core,
    jobs: Option<&Bound<'_, PyAny>>,
    timeout: Option<f64>,
) -> PyResult<bool> {
    let ids = job_ids(jobs)?;
    let tracker = core.tracker();
    wait_interruptibly(py, timeout_arg(timeout), |slice| {
        if ids.is_empty() {
            tracker.wait_until(Some(slice), |state| {
                state
                    .tasks
                    .values()
                    .all(|t| t.status != crate::tracker::Status::Pending)
            })
        } else {
            tracker.wait(&ids, Some(slice))
        }
    })
}

impl Client {
    pub fn view(slf: &Bound<'_, Self>, targets: Targets) -> PyResult<DirectView> {
        Ok(DirectView {
            core: slf.borrow().core.clone(),
            client: slf.clone().into_any().unbind(),
            targets,
            block: false,
            track: false,
        })
    }
}

#[pymethods]
impl Client {
    /// Connects to the cluster of `profile` (or the one `url_file` names).
    #[new]
    #[pyo3(signature = (url_file=None, profile=None, timeout=10.0, **_kwargs))]
    fn new(
        py: Python<'_>,
        url_file: Option<std::path::PathBuf>,
        profile: Option<String>,
        timeout: f64,
        _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> PyResult<Self> {
        let profile = Profile::new(profile.as_deref()).map_err(os_error)?;
        let core = Core::connect(py, &profile, url_file, timeout)?;
        Ok(Client {
            core,
            profile: profile.name,
        })
    }

    /// Sorted ids of the live engines.
    #[getter]
    fn ids(&self) -> Vec<u32> {
        self.core.ids()
    }

    fn __len__(&self) -> usize {
        self.core.ids().len()
    }

    /// `rc[0]`: one engine; `rc[1:3]`, `rc[::2]`, `rc[[0, 2]]`: several.
    fn __getitem__(slf: &Bound<'_, Self>, key: &Bound<'_, PyAny>) -> PyResult<DirectView> {
        let core = slf.borrow().core.clone();
        if core.ids().is_empty() {
            return Err(target_error(
                slf.py(),
                &core,
                crate::targets::TargetError::NoEngines,
            ));
        }
        let targets = if key.is_instance_of::<PySlice>()
            || key.extract::<i64>().is_ok()
            || key.hasattr("__iter__")?
        {
            parse_targets(&core, key)?
        } else {
            return Err(PyTypeError::new_err(
                "index engines with an int, a slice or a list",
            ));
        };
        if let Targets::Many(ids) = &targets {
            targets
                .resolve(&core.ids())
                .map_err(|e| target_error(slf.py(), &core, e))?;
            let _ = ids;
        }
        Client::view(slf, targets)
    }

    /// A view on `targets` ('all' follows engines as they come and go).
    #[pyo3(signature = (targets=None))]
    fn direct_view(
        slf: &Bound<'_, Self>,
        targets: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<DirectView> {
        let targets = match targets {
            Some(t) if !t.is_none() => parse_targets(&slf.borrow().core, t)?,
            _ => Targets::All,
        };
        Client::view(slf, targets)
    }

    /// Makes a blocking view on `targets` the one `%px{suffix}` runs on.
    #[pyo3(signature = (targets=None, suffix=""))]
    fn activate(
        slf: &Bound<'_, Self>,
        targets: Option<&Bound<'_, PyAny>>,
        suffix: &str,
    ) -> PyResult<Py<PyAny>> {
        let mut view = Client::direct_view(slf, targets)?;
        view.block = true;
        let view = Bound::new(slf.py(), view)?;
        view.call_method1("activate", (suffix,))?;
        Ok(view.into_any().unbind())
    }

    /// As in ipyparallel: a new client's blocking view of all engines
    /// becomes the one `%px` runs on (until another is activated).
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(
        slf: &Bound<'_, Self>,
        _args: &Bound<'_, pyo3::types::PyTuple>,
        _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> PyResult<()> {
        Client::activate(slf, None, "")?;
        Ok(())
    }

    /// Waits until at least `n` engines are registered.
    #[pyo3(signature = (n, timeout=None, block=true))]
    fn wait_for_engines(
        &self,
        py: Python<'_>,
        n: usize,
        timeout: Option<f64>,
        block: bool,
    ) -> PyResult<()> {
        let _ = block;
        let tracker = self.core.tracker();
        let ok = wait_interruptibly(py, timeout_arg(timeout), |slice| {
            tracker.wait_until(Some(slice), |state| state.engines.len() >= n)
        })?;
        if !ok {
            return Err(error(
                py,
                "TimeoutError",
                (format!(
                    "{} of {n} engines registered before the timeout",
                    self.core.ids().len()
                ),),
            ));
        }
        Ok(())
    }

    /// Waits for `jobs` (all outstanding requests when None).
    #[pyo3(signature = (jobs=None, timeout=None))]
    fn wait(
        &self,
        py: Python<'_>,
        jobs: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        wait_jobs(py, &self.core, jobs, timeout)
    }

    /// Aborts queued work on `targets` (all engines by default).
    #[pyo3(signature = (jobs=None, targets=None, block=None))]
    fn abort(
        slf: &Bound<'_, Self>,
        jobs: Option<&Bound<'_, PyAny>>,
        targets: Option<&Bound<'_, PyAny>>,
        block: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        let view = Bound::new(slf.py(), Client::direct_view(slf, targets)?)?;
        view.call_method1("abort", (jobs, targets, block))
            .map(Bound::unbind)
    }

    /// Stops engines; with `hub=True` the controller too.
    #[pyo3(signature = (targets=None, hub=false, block=None))]
    fn shutdown(
        slf: &Bound<'_, Self>,
        targets: Option<&Bound<'_, PyAny>>,
        hub: bool,
        block: Option<bool>,
    ) -> PyResult<()> {
        let py = slf.py();
        let core = slf.borrow().core.clone();
        if hub {
            let msg_id = core.request(None, "shutdown_request", json!({ "hub": true }), vec![]);
            core.wait(
                py,
                std::slice::from_ref(&msg_id),
                Some(Duration::from_secs(5)),
            )?;
            core.tracker().forget(&[msg_id]);
            return Ok(());
        }
        if core.ids().is_empty() {
            return Ok(());
        }
        let view = Bound::new(py, Client::direct_view(slf, targets)?)?;
        view.call_method1("shutdown", (py.None(), block.unwrap_or(true)))?;
        Ok(())
    }

    /// Closes the connection.
    fn close(&self) {
        self.core.connection.close();
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __exit__(&self, _a: &Bound<'_, PyAny>, _b: &Bound<'_, PyAny>, _c: &Bound<'_, PyAny>) {
        self.close();
    }

    fn __repr__(&self) -> String {
        format!(
            "<rparallel.Client profile={} engines={:?}>",
            self.profile,
            self.core.ids()
        )
    }
}

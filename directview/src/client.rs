//! `Client`: a connection to a cluster's controller, and the views on it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PySlice, PyTuple};
use rparallel_client::{Client, Deadline, TargetError, Targets};
use rparallel_cluster::{ConnectionFile, Profile};
use serde_json::json;

use crate::balanced::{targets_of, LoadBalancedView};
use crate::errors::{os_error, target_error, timeout_error};
use crate::jobs::wait_jobs;
use crate::view::DirectView;
use crate::waiting::PyWaiter;

#[pyclass(module = "rparallel", name = "Client")]
pub struct PyClient {
    client: Arc<Client>,
    #[pyo3(get)]
    profile: String,
}

/// Connects to the controller of `profile` (or the one `url_file` names)
/// and learns its engines.
pub(crate) fn connect(
    py: Python<'_>,
    profile: &Profile,
    url_file: Option<PathBuf>,
    timeout: f64,
) -> PyResult<Arc<Client>> {
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
    let client = py
        .detach(|| Client::connect(&file, wait))
        .map_err(os_error)?;
    if !client.handshake(&mut PyWaiter::new(py), wait)? {
        return Err(timeout_error(
            py,
            format!(
                "the controller at {} did not answer within {timeout} s",
                file.endpoint()
            ),
        ));
    }
    Ok(client)
}

impl PyClient {
    fn view(slf: &Bound<'_, Self>, targets: Targets) -> DirectView {
        DirectView::new(
            slf.borrow().client.clone(),
            slf.clone().into_any().unbind(),
            targets,
        )
    }
}

#[pymethods]
impl PyClient {
    /// Connects to the cluster of `profile` (or the one `url_file` names).
    #[new]
    #[pyo3(signature = (url_file=None, profile=None, timeout=10.0, **_kwargs))]
    fn new(
        py: Python<'_>,
        url_file: Option<PathBuf>,
        profile: Option<String>,
        timeout: f64,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let profile = Profile::new(profile.as_deref()).map_err(os_error)?;
        let client = connect(py, &profile, url_file, timeout)?;
        Ok(PyClient {
            client,
            profile: profile.name,
        })
    }

    /// Sorted ids of the live engines.
    #[getter]
    fn ids(&self) -> Vec<u32> {
        self.client.ids()
    }

    fn __len__(&self) -> usize {
        self.client.ids().len()
    }

    /// `rc[0]`: one engine; `rc[1:3]`, `rc[::2]`, `rc[[0, 2]]`: several.
    fn __getitem__(slf: &Bound<'_, Self>, key: &Bound<'_, PyAny>) -> PyResult<DirectView> {
        let py = slf.py();
        let client = slf.borrow().client.clone();
        if client.ids().is_empty() {
            return Err(target_error(py, &client, TargetError::NoEngines));
        }
        let indexable = key.is_instance_of::<PySlice>()
            || key.extract::<i64>().is_ok()
            || key.hasattr("__iter__")?;
        if !indexable {
            return Err(PyTypeError::new_err(
                "index engines with an int, a slice or a list",
            ));
        }
        let targets = crate::convert::targets(&client, key)?;
        if let Targets::Many(_) = targets {
            targets
                .resolve(&client.ids())
                .map_err(|e| target_error(py, &client, e))?;
        }
        Ok(PyClient::view(slf, targets))
    }

    /// A view on `targets` ('all' follows engines as they come and go).
    #[pyo3(signature = (targets=None))]
    fn direct_view(
        slf: &Bound<'_, Self>,
        targets: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<DirectView> {
        let targets = match targets {
            Some(t) if !t.is_none() => crate::convert::targets(&slf.borrow().client, t)?,
            _ => Targets::All,
        };
        Ok(PyClient::view(slf, targets))
    }

    /// A view whose tasks go to whichever engine is free (`targets`: the
    /// engines they may run on; None: any).
    #[pyo3(signature = (targets=None))]
    fn load_balanced_view(
        slf: &Bound<'_, Self>,
        targets: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<LoadBalancedView> {
        let client = slf.borrow().client.clone();
        let targets = match targets {
            Some(t) => targets_of(&client, t)?,
            None => Targets::All,
        };
        Ok(LoadBalancedView::new(
            client,
            slf.clone().into_any().unbind(),
            targets,
        ))
    }

    /// A `concurrent.futures.Executor` on the engines: load-balanced over
    /// all of them (`targets` None), else on a DirectView of `targets`.
    #[pyo3(signature = (targets=None))]
    fn executor<'py>(
        slf: &Bound<'py, Self>,
        targets: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let view = match targets.filter(|t| !t.is_none()) {
            None => Bound::new(py, PyClient::load_balanced_view(slf, None)?)?.into_any(),
            Some(t) => Bound::new(py, PyClient::direct_view(slf, Some(t))?)?.into_any(),
        };
        view.getattr("executor")
    }

    /// Makes a blocking view on `targets` the one `%px{suffix}` runs on.
    #[pyo3(signature = (targets=None, suffix=""))]
    fn activate(
        slf: &Bound<'_, Self>,
        targets: Option<&Bound<'_, PyAny>>,
        suffix: &str,
    ) -> PyResult<Py<PyAny>> {
        let mut view = PyClient::direct_view(slf, targets)?;
        view.set_block(true);
        let view = Bound::new(slf.py(), view)?;
        view.call_method1("activate", (suffix,))?;
        Ok(view.into_any().unbind())
    }

    /// As in ipyparallel: a new client's blocking view of all engines
    /// becomes the one `%px` runs on (until another is activated).
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(
        slf: &Bound<'_, Self>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        PyClient::activate(slf, None, "")?;
        Ok(())
    }

    /// Waits until at least `n` engines are registered. With
    /// `block=False`, returns at once a `concurrent.futures.Future` that
    /// does the waiting.
    #[pyo3(signature = (n, timeout=None, block=true))]
    fn wait_for_engines(
        slf: &Bound<'_, Self>,
        n: usize,
        timeout: Option<f64>,
        block: bool,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if !block {
            let wait = slf.getattr("wait_for_engines")?;
            return Ok(crate::convert::helpers(py)?
                .call_method1("in_thread", (wait, n, timeout))?
                .unbind());
        }
        let client = slf.borrow().client.clone();
        let registered = |state: &rparallel_client::State| state.engines.len() >= n;
        let timeout = match Deadline::returning(timeout) {
            Deadline::Return(t) => Some(t),
            _ => None,
        };
        let ok = rparallel_client::wait::wait_until(
            client.tracker(),
            &mut PyWaiter::new(py),
            timeout,
            registered,
        )?;
        if !ok {
            return Err(timeout_error(
                py,
                format!(
                    "{} of {n} engines registered before the timeout",
                    client.ids().len()
                ),
            ));
        }
        Ok(py.None())
    }

    /// Waits for `jobs` (all outstanding requests when None).
    #[pyo3(signature = (jobs=None, timeout=None))]
    fn wait(
        &self,
        py: Python<'_>,
        jobs: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        wait_jobs(py, &self.client, jobs, timeout)
    }

    /// Aborts queued work on `targets` (all engines by default).
    #[pyo3(signature = (jobs=None, targets=None, block=None))]
    fn abort(
        slf: &Bound<'_, Self>,
        jobs: Option<&Bound<'_, PyAny>>,
        targets: Option<&Bound<'_, PyAny>>,
        block: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        let view = Bound::new(slf.py(), PyClient::direct_view(slf, targets)?)?;
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
        let client = slf.borrow().client.clone();
        if hub {
            client.ask_controller(
                &mut PyWaiter::new(py),
                "shutdown_request",
                json!({ "hub": true }),
                Duration::from_secs(5),
            )?;
            return Ok(());
        }
        if client.ids().is_empty() {
            return Ok(());
        }
        let view = Bound::new(py, PyClient::direct_view(slf, targets)?)?;
        view.call_method1("shutdown", (py.None(), block.unwrap_or(true)))?;
        Ok(())
    }

    /// Closes the connection.
    fn close(&self) {
        self.client.close();
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
            self.client.ids()
        )
    }
}

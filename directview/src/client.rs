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

/// A connection to a cluster's controller: views on its engines
/// (`rc[:]`, `rc[0]`, `load_balanced_view()`), waiting, and the cluster's
/// queues. `Client(profile=...)`, `Client(url_file=...)` or
/// `Client(cluster=...)` say which cluster.
#[pyclass(module = "rparallel", name = "Client", dict)]
pub struct PyClient {
    client: Arc<Client>,
    /// The profile of the cluster this client is connected to.
    #[pyo3(get)]
    profile: String,
    /// The default of `block=` for the client's own calls (`clear`,
    /// `send_signal`, `abort`).
    #[pyo3(get, set)]
    block: bool,
    /// Results by msg_id that no AsyncResult owns. A view's results own
    /// theirs (they leave with the AsyncResult), as ipyparallel's do.
    #[pyo3(get)]
    results: Py<PyDict>,
    /// Metadata by msg_id, for the results in `results`.
    #[pyo3(get)]
    metadata: Py<PyDict>,
}

/// Keywords ipyparallel's `Client` takes that mean nothing here (its
/// ZeroMQ context, ssh tunnels, Session settings): accepted and ignored,
/// so an ipyparallel script runs; anything else is a TypeError.
const IGNORED_CLIENT_OPTIONS: &[&str] = &[
    "profile_dir",
    "ipython_dir",
    "context",
    "debug",
    "sshserver",
    "sshkey",
    "password",
    "paramiko",
    "packer",
    "unpacker",
    "session",
    "username",
    "signature_scheme",
];

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
    /// `cluster_id` names a cluster as `Cluster.cluster_id` gives it (its
    /// profile).
    #[pyo3(signature = (url_file=None, profile=None, timeout=10.0, cluster_id=None, cluster=None, **kwargs))]
    fn new(
        py: Python<'_>,
        url_file: Option<PathBuf>,
        profile: Option<String>,
        timeout: f64,
        cluster_id: Option<String>,
        cluster: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let cluster_id = match cluster.filter(|c| !c.is_none()) {
            Some(c) => Some(c.getattr("cluster_id")?.extract::<String>()?),
            None => cluster_id,
        };
        for key in kwargs.iter().flat_map(|k| k.keys()) {
            let key: String = key.extract()?;
            if !IGNORED_CLIENT_OPTIONS.contains(&key.as_str()) {
                return Err(PyTypeError::new_err(format!(
                    "Client() got an unexpected keyword argument '{key}'"
                )));
            }
        }
        let profile = profile.or(cluster_id.filter(|id| !id.is_empty()));
        let profile = Profile::new(profile.as_deref()).map_err(os_error)?;
        let client = connect(py, &profile, url_file, timeout)?;
        Ok(PyClient {
            client,
            profile: profile.name,
            block: false,
            results: PyDict::new(py).unbind(),
            metadata: PyDict::new(py).unbind(),
        })
    }

    /// This client's cluster (its profile name).
    #[getter]
    fn cluster_id(&self) -> String {
        self.profile.clone()
    }

    /// msg_ids of the work submitted, oldest first (the last 65,536).
    #[getter]
    fn history(&self) -> Vec<String> {
        self.client.history()
    }

    /// msg_ids of the requests not finished yet.
    #[getter]
    fn outstanding(&self) -> std::collections::HashSet<String> {
        self.client.outstanding().into_iter().collect()
    }

    /// Each engine's queue as this client sees it: `{id: {'queue': n,
    /// 'completed': n, 'tasks': n}, 'unassigned': n}` (lists of msg_ids
    /// instead of counts with `verbose=True`); one engine's dict when
    /// `targets` is an int.
    #[pyo3(signature = (targets=None, verbose=false))]
    fn queue_status(
        &self,
        py: Python<'_>,
        targets: Option<&Bound<'_, PyAny>>,
        verbose: bool,
    ) -> PyResult<Py<PyAny>> {
        let (engines, unassigned) = self.client.queue_status(&mut PyWaiter::new(py))?;
        let wanted = match targets.filter(|t| !t.is_none()) {
            Some(t) => {
                let targets = crate::convert::targets(&self.client, t)?;
                let ids = targets
                    .resolve(&self.client.ids())
                    .map_err(|e| target_error(py, &self.client, e))?;
                Some((ids, targets.is_single()))
            }
            None => None,
        };
        let list_or_len = |ids: &Vec<String>| -> PyResult<Py<PyAny>> {
            Ok(if verbose {
                ids.clone().into_pyobject(py)?.into_any().unbind()
            } else {
                ids.len().into_pyobject(py)?.into_any().unbind()
            })
        };
        let out = PyDict::new(py);
        for (id, status) in &engines {
            if wanted.as_ref().is_some_and(|(ids, _)| !ids.contains(id)) {
                continue;
            }
            let one = PyDict::new(py);
            one.set_item("queue", list_or_len(&status.queue)?)?;
            one.set_item("completed", status.completed)?;
            one.set_item("tasks", list_or_len(&status.tasks)?)?;
            if let Some((ids, true)) = &wanted {
                if ids.first() == Some(id) {
                    return Ok(one.into_any().unbind());
                }
            }
            out.set_item(id, one)?;
        }
        out.set_item("unassigned", list_or_len(&unassigned)?)?;
        Ok(out.into_any().unbind())
    }

    /// Empties the namespace of `targets` (all engines by default).
    #[pyo3(signature = (targets=None, block=None))]
    fn clear(
        slf: &Bound<'_, Self>,
        targets: Option<&Bound<'_, PyAny>>,
        block: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        let block = block.unwrap_or(slf.borrow().block);
        let view = PyClient::direct_view(slf, targets)?;
        view.send_each(
            slf.py(),
            None,
            rparallel_client::Call::CLEAR,
            rparallel_client::Request::Clear,
            Some(block),
        )
    }

    /// Sends signal `sig` (a number or a name such as "SIGINT") to the
    /// engine processes of `targets`: SIGINT interrupts their running
    /// code; others have their usual effect (SIGTERM stops an engine). An
    /// invalid signal is a ValueError, before anything is sent.
    #[pyo3(signature = (sig, targets=None, block=None))]
    fn send_signal(
        slf: &Bound<'_, Self>,
        sig: &Bound<'_, PyAny>,
        targets: Option<&Bound<'_, PyAny>>,
        block: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let number: i32 = crate::convert::helpers(py)?
            .call_method1("signal_number", (sig,))?
            .extract()?;
        let block = block.unwrap_or(slf.borrow().block);
        let view = PyClient::direct_view(slf, targets)?;
        view.send_each(
            py,
            None,
            rparallel_client::Call::SIGNAL,
            rparallel_client::Request::Signal(number),
            Some(block),
        )
    }

    /// Prints progress while waiting for `jobs` (all outstanding work by
    /// default), every `interval` seconds, up to `timeout` (-1: no limit).
    #[pyo3(signature = (jobs=None, interval=1.0, timeout=-1.0))]
    fn wait_interactive(
        slf: &Bound<'_, Self>,
        jobs: Option<&Bound<'_, PyAny>>,
        interval: f64,
        timeout: f64,
    ) -> PyResult<()> {
        crate::convert::helpers(slf.py())?.call_method1(
            "client_wait_interactive",
            (slf.clone(), jobs, interval, timeout),
        )?;
        Ok(())
    }

    /// A view that sends one request to all its engines at once. Every
    /// DirectView here fans out so (one pass through the controller), so
    /// this is a DirectView; `is_coalescing` is accepted for ipyparallel's
    /// sake.
    #[pyo3(signature = (targets=None, is_coalescing=false, **flags))]
    fn broadcast_view(
        slf: &Bound<'_, Self>,
        targets: Option<&Bound<'_, PyAny>>,
        is_coalescing: bool,
        flags: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let _ = is_coalescing;
        let view = Bound::new(slf.py(), PyClient::direct_view(slf, targets)?)?;
        if let Some(flags) = flags.filter(|f| !f.is_empty()) {
            view.call_method("set_flags", (), Some(flags))?;
        }
        Ok(view.into_any().unbind())
    }

    /// Forgets results kept in `rc.results` / `rc.metadata`: those of
    /// `jobs` (msg_ids or AsyncResults), or all with `jobs='all'`.
    /// Outstanding work cannot be purged (RuntimeError).
    #[pyo3(signature = (jobs=None, targets=None))]
    fn purge_local_results(
        &self,
        py: Python<'_>,
        jobs: Option<&Bound<'_, PyAny>>,
        targets: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let _ = targets;
        let results = self.results.bind(py);
        let metadata = self.metadata.bind(py);
        let all = jobs.is_some_and(|j| j.extract::<String>().is_ok_and(|s| s == "all"));
        if all {
            results.clear();
            metadata.clear();
            return Ok(());
        }
        let ids = crate::jobs::job_ids(&self.client, jobs)?;
        let outstanding = self.client.outstanding();
        if let Some(busy) = ids.iter().find(|id| outstanding.contains(id)) {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                "Can't purge outstanding tasks: {busy}"
            )));
        }
        for id in ids {
            results.del_item(&id).ok();
            metadata.del_item(&id).ok();
        }
        Ok(())
    }

    /// Forgets everything: this client's results, metadata and history,
    /// and every finished request in the controller's record.
    fn purge_everything(&self, py: Python<'_>) -> PyResult<()> {
        self.results.bind(py).clear();
        self.metadata.bind(py).clear();
        self.client.forget_history();
        crate::hub_record::purge(py, &self.client, json!("all"), vec![])
    }

    /// Every msg_id in the controller's task record (all clients'), oldest
    /// first.
    fn hub_history(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        crate::hub_record::hub_history(py, &self.client)
    }

    /// Records of the controller's task record matching `query` (a dict:
    /// `{key: value}` or `{key: {"$in"|"$nin"|"$lt"|"$gt"|"$lte"|"$gte"|"$ne":
    /// value}}`), each a dict with the `keys` asked for (all by default;
    /// `msg_id` always).
    #[pyo3(signature = (query, keys=None))]
    fn db_query(
        &self,
        py: Python<'_>,
        query: &Bound<'_, PyAny>,
        keys: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        crate::hub_record::db_query(py, &self.client, query, keys)
    }

    /// The result of requests by msg_id (any client's) or index in this
    /// client's history (default: the last): an AsyncHubResult, from the
    /// controller's record (waiting for unfinished ones). With
    /// `owner=False` finished values also go to `rc.results`.
    #[pyo3(signature = (indices_or_msg_ids=None, block=None, owner=true))]
    fn get_result(
        slf: &Bound<'_, Self>,
        indices_or_msg_ids: Option<&Bound<'_, PyAny>>,
        block: Option<bool>,
        owner: bool,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let me = slf.borrow();
        let (msg_ids, single) = crate::hub_record::msg_ids_of(&me.client, indices_or_msg_ids)?;
        let result = crate::hub_record::get_result(py, &me.client, msg_ids, single)?;
        let result = Bound::new(py, result)?;
        if !owner {
            crate::convert::helpers(py)?
                .call_method1("keep_results", (slf.clone(), result.clone()))?;
        }
        // As ipyparallel: blocking waits, and still returns the result.
        if block.unwrap_or(me.block) {
            result.call_method0("wait")?;
        }
        Ok(result.into_any().unbind())
    }

    /// Runs requests (msg_ids or history indices) again, under new
    /// msg_ids: an AsyncHubResult of the new ones.
    #[pyo3(signature = (indices_or_msg_ids=None, metadata=None, block=None))]
    fn resubmit(
        slf: &Bound<'_, Self>,
        indices_or_msg_ids: Option<&Bound<'_, PyAny>>,
        metadata: Option<&Bound<'_, PyAny>>,
        block: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        let _ = metadata;
        let py = slf.py();
        let me = slf.borrow();
        let (msg_ids, _) = crate::hub_record::msg_ids_of(&me.client, indices_or_msg_ids)?;
        let result = Bound::new(py, crate::hub_record::resubmit(py, &me.client, msg_ids)?)?;
        if block.unwrap_or(me.block) {
            result.call_method0("wait")?;
        }
        Ok(result.into_any().unbind())
    }

    /// Removes finished requests from the controller's record: `jobs`
    /// (msg_ids, AsyncResults, history indices; 'all' for all) and those
    /// run by `targets`.
    #[pyo3(signature = (jobs=None, targets=None))]
    fn purge_hub_results(
        &self,
        py: Python<'_>,
        jobs: Option<&Bound<'_, PyAny>>,
        targets: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let all = jobs.is_some_and(|j| j.extract::<String>().is_ok_and(|s| s == "all"));
        let msg_ids = if all {
            json!("all")
        } else {
            json!(crate::jobs::job_ids(&self.client, jobs)?)
        };
        let engines = match targets.filter(|t| !t.is_none()) {
            Some(t) => {
                let targets = crate::convert::targets(&self.client, t)?;
                targets
                    .resolve(&self.client.ids())
                    .map_err(|e| target_error(py, &self.client, e))?
            }
            None => vec![],
        };
        crate::hub_record::purge(py, &self.client, msg_ids, engines)
    }

    /// `purge_local_results` and `purge_hub_results` of the same jobs.
    #[pyo3(signature = (jobs=None, targets=None))]
    fn purge_results(
        &self,
        py: Python<'_>,
        jobs: Option<&Bound<'_, PyAny>>,
        targets: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.purge_local_results(py, jobs, targets)?;
        self.purge_hub_results(py, jobs, targets)
    }

    /// Iterates one single-engine view per engine.
    fn __iter__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let views = slf
            .borrow()
            .client
            .ids()
            .into_iter()
            .map(|id| Bound::new(py, PyClient::view(slf, Targets::One(id))))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(pyo3::types::PyList::new(py, views)?
            .try_iter()?
            .into_any()
            .unbind())
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
        let targets = targets.filter(|t| !t.is_none());
        let view = Bound::new(py, PyClient::load_balanced_view(slf, targets)?)?;
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

    /// Makes the engines of `targets` the workers of a dask.distributed
    /// scheduler started in this process; returns a `distributed.Client`
    /// of it. `nthreads`: threads per worker (1).
    #[pyo3(signature = (targets=None, port=0, nanny=false, scheduler_args=None, nthreads=None, **kwargs))]
    fn become_dask(
        slf: &Bound<'_, Self>,
        targets: Option<&Bound<'_, PyAny>>,
        port: u16,
        nanny: bool,
        scheduler_args: Option<&Bound<'_, PyDict>>,
        nthreads: Option<usize>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let _ = (nanny, scheduler_args);
        let kwargs = kwargs.cloned().unwrap_or_else(|| PyDict::new(py));
        let targets = targets
            .map(|t| t.clone().unbind())
            .unwrap_or_else(|| py.None());
        Ok(crate::convert::helpers(py)?
            .call_method1(
                "become_dask",
                (slf.clone(), targets, port, nthreads, kwargs),
            )?
            .unbind())
    }

    /// Stops the dask workers and scheduler `become_dask` started.
    fn stop_dask(slf: &Bound<'_, Self>) -> PyResult<()> {
        crate::convert::helpers(slf.py())?.call_method1("stop_dask", (slf.clone(),))?;
        Ok(())
    }

    /// `{'pending': [...], 'completed': [...]}` of `msg_ids` (or history
    /// indices) in the controller's record; with `status_only=False` the
    /// completed ones' values too, by msg_id.
    #[pyo3(signature = (msg_ids, status_only=true))]
    fn result_status(
        slf: &Bound<'_, Self>,
        msg_ids: &Bound<'_, PyAny>,
        status_only: bool,
    ) -> PyResult<Py<PyAny>> {
        Ok(crate::convert::helpers(slf.py())?
            .call_method1("result_status", (slf.clone(), msg_ids, status_only))?
            .unbind())
    }

    /// msg_ids of a `jobs` argument (for the Python helpers).
    #[pyo3(signature = (jobs=None))]
    fn _job_ids(&self, jobs: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
        crate::jobs::job_ids(&self.client, jobs)
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

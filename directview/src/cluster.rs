//! `rparallel.Cluster`: start a controller and local engines from Python.
//! A cluster started from a kernel is stopped when the kernel exits
//! ([`stop_owned_clusters`]), and dies with it if it is killed (the
//! controller is bound to the kernel's life, the engines to the controller's).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyDict};
use rparallel_cluster::launch::split_words;
use rparallel_cluster::{start_cluster, ClusterOptions, StartedCluster};
use rparallel_cluster::{HostSlots, LaunchSpec, Profile, SchedulerSpec};

use serde_json::json;

use rparallel_client::wait::wait_until;
use rparallel_client::{Client, Deadline, Request, State, Until};

use crate::client::{connect, PyClient};
use crate::convert::helpers;
use crate::errors::{os_error, timeout_error};
use crate::waiting::PyWaiter;

/// Clusters this process started and has not stopped, by profile name.
static OWNED: Mutex<Vec<(String, StartedCluster)>> = Mutex::new(Vec::new());

/// Stops every cluster this process started (called at kernel shutdown).
pub fn stop_owned_clusters() {
    let owned = std::mem::take(&mut *OWNED.lock().unwrap_or_else(|e| e.into_inner()));
    for (_, cluster) in owned {
        let _ = cluster.stop();
    }
}

/// A controller and engines started from Python: `Cluster(n=4)`,
/// `start_and_connect_sync()` (or `with Cluster(n=4) as rc:`),
/// `stop_cluster_sync()`; engines local or through ssh, mpi or slurm.
#[pyclass(module = "rparallel", name = "Cluster")]
pub struct Cluster {
    /// How many engines the cluster starts.
    #[pyo3(get)]
    n: usize,
    /// The profile: where the cluster's files live, and its id.
    #[pyo3(get)]
    profile: String,
    options: ClusterOptions,
    /// The cluster's own connection to its controller, for starting and
    /// stopping engines (not a Client: it must not become `%px`'s view).
    control: Mutex<Option<Arc<Client>>>,
    /// Found running (`from_file`, `from_dict`, `ClusterManager`) rather
    /// than started here: stopping it stops it through its record.
    attached: bool,
}

/// The `**options` `Cluster()` takes (ipyparallel's names).
const OPTIONS: [&str; 12] = [
    "engine_timeout",
    "heartbeat_timeout",
    "restart_engines",
    "controller_ip",
    "controller_location",
    "mpi_args",
    "slurm_args",
    "slurm_template",
    "remote_rparallel",
    "scheme",
    "hwm",
    "db",
];

/// How long restarted engines get to stop and to register.
const RESTART_TIMEOUT: Duration = Duration::from_secs(60);

#[pymethods]
impl Cluster {
    #[new]
    #[pyo3(signature = (n=None, profile=None, engines="local", hosts=None, **options))]
    fn new(
        py: Python<'_>,
        n: Option<usize>,
        profile: Option<String>,
        engines: &str,
        hosts: Option<&Bound<'_, PyAny>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        if let Some(options) = options {
            for key in options.keys() {
                let key: String = key.extract()?;
                if !OPTIONS.contains(&key.as_str()) {
                    return Err(PyTypeError::new_err(format!(
                        "Cluster() got an unknown option '{key}' (options: {})",
                        OPTIONS.join(", ")
                    )));
                }
            }
        }
        let option = |key: &str| {
            options
                .and_then(|o| o.get_item(key).ok().flatten())
                .filter(|v| !v.is_none())
        };
        let text = |key: &str| -> PyResult<Option<String>> {
            option(key).map(|v| v.extract()).transpose()
        };
        let launch = LaunchSpec {
            kind: engines.parse().map_err(value_error)?,
            hosts: hosts_of(hosts)?,
            remote_rparallel: text("remote_rparallel")?,
            mpi_args: words_of(option("mpi_args"))?,
            slurm_args: words_of(option("slurm_args"))?,
            slurm_template: text("slurm_template")?.map(Into::into),
        };
        launch.validate().map_err(value_error)?;
        let n = n
            .or_else(|| launch.engines_from_hosts())
            .unwrap_or_else(rparallel_cluster::process::default_engines);
        if !launch.hosts.is_empty() {
            launch.plan(n).map_err(value_error)?;
        }
        let ephemeral = profile.is_none();
        let profile = profile.unwrap_or_else(|| {
            Profile::remove_stale_private();
            Profile::private_name(std::process::id())
        });
        let python: std::path::PathBuf = py.import("sys")?.getattr("executable")?.extract()?;
        let get = |key: &str, default: f64| -> PyResult<f64> {
            match options.and_then(|o| o.get_item(key).ok().flatten()) {
                Some(v) => v.extract(),
                None => Ok(default),
            }
        };
        let options = ClusterOptions {
            profile: Some(profile.clone()),
            engines: n,
            python,
            ip: text("controller_ip")?,
            location: text("controller_location")?,
            launch,
            daemonize: false,
            timeout: Duration::from_secs_f64(get("engine_timeout", 60.0)?),
            heartbeat_timeout: Duration::from_secs_f64(get("heartbeat_timeout", 10.0)?),
            restart_engines: match options
                .and_then(|o| o.get_item("restart_engines").ok().flatten())
            {
                Some(v) => v.is_truthy()?,
                None => false,
            },
            scheduler: SchedulerSpec {
                scheme: text("scheme")?
                    .map(|s| s.parse())
                    .transpose()
                    .map_err(PyValueError::new_err)?
                    .unwrap_or_default(),
                hwm: match option("hwm") {
                    Some(v) => v.extract()?,
                    None => 1,
                },
                db: text("db")?
                    .map(|s| s.parse())
                    .transpose()
                    .map_err(PyValueError::new_err)?
                    .unwrap_or_default(),
            },
            ephemeral,
            output: rparallel_pyexec::fdcapture::original_stderr().map(Arc::new),
        };
        Ok(Cluster {
            n,
            profile,
            options,
            control: Mutex::new(None),
            attached: false,
        })
    }

    /// The cluster running in `profile` (or the one `cluster_id` names),
    /// started elsewhere (`rparallel cluster start`, another process).
    #[classmethod]
    #[pyo3(signature = (profile=None, cluster_id=None, **_options))]
    fn from_file(
        cls: &Bound<'_, pyo3::types::PyType>,
        profile: Option<String>,
        cluster_id: Option<String>,
        _options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let py = cls.py();
        let name = profile.or(cluster_id.filter(|c| !c.is_empty()));
        let found = Profile::new(name.as_deref()).map_err(os_error)?;
        let Some(record) = found.read_record() else {
            return Err(pyo3::exceptions::PyFileNotFoundError::new_err(format!(
                "no cluster is running in profile {}",
                found.name
            )));
        };
        let kwargs = [("profile", found.name.clone())].into_py_dict(py)?;
        kwargs.set_item("n", record.engines_requested.max(record.engines_alive))?;
        let mut cluster: Cluster = cls
            .call((), Some(&kwargs))?
            .extract::<PyRef<Cluster>>()?
            .detached();
        cluster.attached = true;
        Ok(cluster)
    }

    /// A cluster from `to_dict()`'s output (attached to it if it runs).
    #[classmethod]
    fn from_dict(cls: &Bound<'_, pyo3::types::PyType>, d: &Bound<'_, PyDict>) -> PyResult<Self> {
        let py = cls.py();
        let info = d
            .get_item("cluster")?
            .ok_or_else(|| PyValueError::new_err("from_dict needs the 'cluster' of to_dict()"))?;
        let profile: String = info.get_item("profile")?.extract()?;
        let kwargs = [("profile", profile.clone())].into_py_dict(py)?;
        kwargs.set_item("n", info.get_item("n")?)?;
        kwargs.set_item("engines", info.get_item("engines")?)?;
        let mut cluster: Cluster = cls
            .call((), Some(&kwargs))?
            .extract::<PyRef<Cluster>>()?
            .detached();
        cluster.attached = Profile::new(Some(&profile))
            .ok()
            .and_then(|p| p.read_record())
            .is_some();
        Ok(cluster)
    }

    /// What identifies the cluster and how to reach it, as plain data
    /// (JSON-ready; `Cluster.from_dict` reads it back).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let cluster = PyDict::new(py);
        cluster.set_item("profile", &self.profile)?;
        cluster.set_item("cluster_id", &self.profile)?;
        cluster.set_item("n", self.n)?;
        cluster.set_item("engines", self.options.launch.kind.to_string())?;
        let controller = PyDict::new(py);
        let engines = PyDict::new(py);
        let record = Profile::new(Some(&self.profile))
            .ok()
            .and_then(|p| p.read_record());
        if let Some(record) = record.filter(|_| self.is_running()) {
            controller.set_item("pid", record.controller_pid)?;
            controller.set_item("listening", record.listening)?;
            controller.set_item("started", record.started)?;
            engines.set_item("requested", record.engines_requested)?;
            engines.set_item("alive", record.engines_alive)?;
        }
        let d = PyDict::new(py);
        d.set_item("cluster", cluster)?;
        d.set_item("controller", controller)?;
        d.set_item("engines", engines)?;
        Ok(d)
    }

    /// Profiles with a running cluster (for `ClusterManager`).
    #[staticmethod]
    fn _running_profiles() -> PyResult<Vec<String>> {
        Ok(Profile::all_with_clusters()
            .map_err(os_error)?
            .into_iter()
            .filter(|(_, record)| rparallel_cluster::process::process_alive(record.controller_pid))
            .map(|(profile, _)| profile.name)
            .collect())
    }

    /// Whether the controller runs (for `ClusterManager`).
    fn _is_running(&self) -> bool {
        self.is_running()
    }

    /// The cluster's id: its profile (`Client(cluster_id=...)` connects).
    #[getter]
    fn cluster_id(&self) -> String {
        self.profile.clone()
    }

    /// Starts the controller and the engines; returns once all registered.
    fn start_sync(&self, py: Python<'_>) -> PyResult<()> {
        self.start_with(py, self.n)
    }

    /// A Client connected to this cluster, with all engines registered.
    fn connect_client_sync(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let client = py.import("rparallel")?.getattr("Client")?.call(
            (),
            Some(&[("profile", self.profile.clone())].into_py_dict(py)?),
        )?;
        client
            .cast::<PyClient>()?
            .call_method1("wait_for_engines", (self.n, 60.0))?;
        Ok(client.unbind())
    }

    /// Starts the cluster and returns a connected Client.
    fn start_and_connect_sync(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.start_sync(py)?;
        self.connect_client_sync(py)
    }

    /// Stops every engine and starts `n` new ones; their ids once all
    /// registered (an awaitable, as ipyparallel's coroutine; the work is
    /// done when called). New engines have new ids and empty namespaces.
    fn restart_engines<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        completed(py, self.restart_engines_sync(py)?)
    }

    /// `restart_engines`, returning the new ids.
    fn restart_engines_sync(&self, py: Python<'_>) -> PyResult<Vec<u32>> {
        let client = self.control(py)?;
        let old = client.ids();
        if !old.is_empty() {
            client.ask_controller(
                &mut PyWaiter::new(py),
                "shutdown_request",
                json!({ "hub": false }),
                RESTART_TIMEOUT,
            )?;
        }
        self.replace(py, &client, &old, self.n)
    }

    /// Stops engine `engine_id` and starts one in its place; returns the
    /// new engine's id (ids are never reused).
    fn restart_engine(&self, py: Python<'_>, engine_id: u32) -> PyResult<u32> {
        let client = self.control(py)?;
        if client.ids().contains(&engine_id) {
            let msg_id = client.send(engine_id, Request::Shutdown);
            let ids = std::slice::from_ref(&msg_id);
            let waited = client.wait(
                ids,
                Deadline::Return(RESTART_TIMEOUT),
                Until::AllDone,
                &mut PyWaiter::new(py),
            );
            client.tracker().forget(ids);
            waited?;
        }
        let new = self.replace(py, &client, &[engine_id], 1)?;
        Ok(new[0])
    }

    /// Starts `n` more engines (default: the cluster's `n`); an awaitable
    /// of their ids (the work is done when called).
    #[pyo3(signature = (n=None))]
    fn start_engines<'py>(&self, py: Python<'py>, n: Option<usize>) -> PyResult<Bound<'py, PyAny>> {
        completed(py, self.start_engines_sync(py, n)?)
    }

    /// `start_engines`, returning the new engines' ids once registered.
    #[pyo3(signature = (n=None))]
    fn start_engines_sync(&self, py: Python<'_>, n: Option<usize>) -> PyResult<Vec<u32>> {
        let client = self.control(py)?;
        self.replace(py, &client, &[], n.unwrap_or(self.n))
    }

    /// Stops the engines `engine_set_id` names (a list of ids, as
    /// `start_engines` gives; all when None); an awaitable.
    #[pyo3(signature = (engine_set_id=None))]
    fn stop_engines<'py>(
        &self,
        py: Python<'py>,
        engine_set_id: Option<Vec<u32>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.stop_engines_sync(py, engine_set_id)?;
        completed(py, py.None())
    }

    /// `stop_engines`, returning once they are gone.
    #[pyo3(signature = (engine_set_id=None))]
    fn stop_engines_sync(&self, py: Python<'_>, engine_set_id: Option<Vec<u32>>) -> PyResult<()> {
        let client = self.control(py)?;
        let ids = engine_set_id.unwrap_or_else(|| client.ids());
        let sent: Vec<String> = ids
            .iter()
            .filter(|id| client.ids().contains(id))
            .map(|&id| client.send(id, Request::Shutdown))
            .collect();
        let mut waiter = PyWaiter::new(py);
        let waited = client.wait(
            &sent,
            Deadline::Return(RESTART_TIMEOUT),
            Until::AllDone,
            &mut waiter,
        );
        client.tracker().forget(&sent);
        waited?;
        let gone = wait_until(
            client.tracker(),
            &mut waiter,
            Some(RESTART_TIMEOUT),
            |state| ids.iter().all(|id| !state.engines.contains_key(id)),
        )?;
        if !gone {
            return Err(timeout_error(py, format!("engines {ids:?} did not stop")));
        }
        Ok(())
    }

    /// Sends signal `signum` (number or name) to the engine processes
    /// (`engine_set_id`: a list of ids; all when None); an awaitable.
    #[pyo3(signature = (signum, engine_set_id=None))]
    fn signal_engines<'py>(
        &self,
        py: Python<'py>,
        signum: &Bound<'py, PyAny>,
        engine_set_id: Option<Vec<u32>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.signal_engines_sync(py, signum, engine_set_id)?;
        completed(py, py.None())
    }

    /// `signal_engines`, returning once the engines received it.
    #[pyo3(signature = (signum, engine_set_id=None))]
    fn signal_engines_sync(
        &self,
        py: Python<'_>,
        signum: &Bound<'_, PyAny>,
        engine_set_id: Option<Vec<u32>>,
    ) -> PyResult<()> {
        let number: i32 = helpers(py)?
            .call_method1("signal_number", (signum,))?
            .extract()?;
        let client = self.control(py)?;
        let ids = engine_set_id.unwrap_or_else(|| client.ids());
        let sent: Vec<String> = ids
            .iter()
            .map(|&id| client.send(id, Request::Signal(number)))
            .collect();
        let waited = client.wait(
            &sent,
            Deadline::Return(Duration::from_secs(5)),
            Until::AllDone,
            &mut PyWaiter::new(py),
        );
        client.tracker().forget(&sent);
        waited.map(|_| ())
    }

    /// Starts the controller alone (engines come with `start_engines`);
    /// an awaitable.
    fn start_controller<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.start_controller_sync(py)?;
        completed(py, py.None())
    }

    /// `start_controller`, returning once the controller listens.
    fn start_controller_sync(&self, py: Python<'_>) -> PyResult<()> {
        self.start_with(py, 0)
    }

    /// Stops the controller (and with it every engine); an awaitable.
    fn stop_controller<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.stop_cluster_sync(py)?;
        completed(py, py.None())
    }

    /// `stop_controller`, returning once it stopped.
    fn stop_controller_sync(&self, py: Python<'_>) -> PyResult<()> {
        self.stop_cluster_sync(py)
    }

    /// Starts the controller and engines; an awaitable.
    fn start_cluster<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.start_sync(py)?;
        completed(py, py.None())
    }

    /// Starts the controller and engines; returns once all registered.
    fn start_cluster_sync(&self, py: Python<'_>) -> PyResult<()> {
        self.start_sync(py)
    }

    /// Stops the controller and engines; an awaitable.
    fn stop_cluster<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.stop_cluster_sync(py)?;
        completed(py, py.None())
    }

    /// A connected Client (all engines registered); an awaitable.
    fn connect_client<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.connect_client_sync(py)?;
        completed(py, client)
    }

    /// `async with Cluster(...) as rc:`.
    fn __aenter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.start_and_connect_sync(py)?;
        completed(py, client)
    }

    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _a: &Bound<'py, PyAny>,
        _b: &Bound<'py, PyAny>,
        _c: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.stop_cluster_sync(py)?;
        completed(py, py.None())
    }

    /// Stops the controller and all engines.
    fn stop_cluster_sync(&self, py: Python<'_>) -> PyResult<()> {
        let mut owned = OWNED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = owned.iter().position(|(p, _)| *p == self.profile) {
            let (_, cluster) = owned.remove(at);
            drop(owned);
            if let Some(client) = self.control_slot().take() {
                client.close();
            }
            py.detach(|| cluster.stop()).map_err(os_error)?;
        } else if self.attached && self.is_running() {
            drop(owned);
            if let Some(client) = self.control_slot().take() {
                client.close();
            }
            let profile = self.profile.clone();
            py.detach(|| rparallel_cluster::lifecycle::stop_cluster(Some(&profile)))
                .map_err(os_error)?;
        }
        Ok(())
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.start_and_connect_sync(py)
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _a: &Bound<'_, PyAny>,
        _b: &Bound<'_, PyAny>,
        _c: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.stop_cluster_sync(py)
    }

    /// The Slurm job running the engines (engines="slurm"), else None.
    #[getter]
    fn job_id(&self) -> Option<String> {
        let record = Profile::new(Some(&self.profile)).ok()?.read_record()?;
        record.launches.iter().rev().find_map(|l| l.job_id.clone())
    }

    fn __repr__(&self) -> String {
        let state = if self.is_running() {
            "running"
        } else {
            "stopped"
        };
        format!(
            "<Cluster(profile={:?}, n={}): {state}>",
            self.profile, self.n
        )
    }
}

fn value_error(e: anyhow::Error) -> PyErr {
    PyValueError::new_err(format!("{e:#}"))
}

/// `hosts=`: `{"node1": 2, "node2": 2}`, `["node1", "node2:2"]`, or
/// `"node1:2,node2:2"`.
fn hosts_of(hosts: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<HostSlots>> {
    let Some(hosts) = hosts.filter(|h| !h.is_none()) else {
        return Ok(vec![]);
    };
    if let Ok(text) = hosts.extract::<String>() {
        return HostSlots::parse_list(&text).map_err(value_error);
    }
    if let Ok(map) = hosts.cast::<PyDict>() {
        let mut slots = Vec::new();
        for (host, count) in map.iter() {
            let host: String = host.extract()?;
            let engines: usize = count.extract()?;
            if engines == 0 {
                return Err(PyValueError::new_err(format!(
                    "hosts: {host} asks for 0 engines"
                )));
            }
            slots.push(
                HostSlots::parse(&host)
                    .map_err(value_error)
                    .map(|h| HostSlots {
                        engines: Some(engines),
                        ..h
                    })?,
            );
        }
        return Ok(slots);
    }
    let mut slots = Vec::new();
    for host in hosts.try_iter()? {
        slots.push(HostSlots::parse(&host?.extract::<String>()?).map_err(value_error)?);
    }
    Ok(slots)
}

/// `mpi_args=` / `slurm_args=`: a list of arguments or one string.
fn words_of(value: Option<Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    match value {
        None => Ok(vec![]),
        Some(value) => match value.extract::<String>() {
            Ok(text) => split_words(&text).map_err(value_error),
            Err(_) => value.extract(),
        },
    }
}

impl Cluster {
    /// Starts the controller with `engines` engines (0: the controller
    /// alone); returns once they registered.
    fn start_with(&self, py: Python<'_>, engines: usize) -> PyResult<()> {
        if self.is_running() {
            return Ok(());
        }
        // A controller that died (killed) leaves its entry and files.
        let dead: Vec<_> = {
            let mut owned = OWNED.lock().unwrap_or_else(|e| e.into_inner());
            let (dead, live) = std::mem::take(&mut *owned)
                .into_iter()
                .partition(|(p, _)| *p == self.profile);
            *owned = live;
            dead
        };
        for (_, cluster) in dead {
            let _ = cluster.stop();
        }
        let mut options = self.options.clone();
        options.engines = engines;
        let started = py
            .detach(move || start_cluster(&options))
            .map_err(os_error)?;
        OWNED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((self.profile.clone(), started));
        Ok(())
    }

    fn control_slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<Client>>> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cluster's control connection, opened on first use.
    fn control(&self, py: Python<'_>) -> PyResult<Arc<Client>> {
        if !self.is_running() {
            return Err(PyRuntimeError::new_err(
                "the cluster is not running: call start_sync() first",
            ));
        }
        let live = |c: &Arc<Client>| c.controller_lost().is_none();
        if let Some(client) = self.control_slot().as_ref().filter(|c| live(c)) {
            return Ok(client.clone());
        }
        // Connect without holding the slot: connecting releases the GIL,
        // and another thread waiting on the slot with the GIL would
        // deadlock it.
        let profile = Profile::new(Some(&self.profile)).map_err(os_error)?;
        let client = connect(py, &profile, None, 10.0)?;
        let mut slot = self.control_slot();
        match slot.as_ref().filter(|c| live(c)) {
            Some(theirs) => {
                client.close();
                Ok(theirs.clone())
            }
            None => {
                *slot = Some(client.clone());
                Ok(client)
            }
        }
    }

    /// Waits until the engines `old` are gone, asks the controller for
    /// `count` new ones, and waits until they registered; their ids.
    fn replace(
        &self,
        py: Python<'_>,
        client: &Client,
        old: &[u32],
        count: usize,
    ) -> PyResult<Vec<u32>> {
        let tracker = client.tracker();
        let mut waiter = PyWaiter::new(py);
        let gone = wait_until(tracker, &mut waiter, Some(RESTART_TIMEOUT), |state| {
            old.iter().all(|id| !state.engines.contains_key(id))
        })?;
        if !gone {
            return Err(timeout_error(py, format!("engines {old:?} did not stop")));
        }
        let before = client.ids();
        let reply = client
            .ask_controller(
                &mut waiter,
                "start_engines_request",
                json!({ "n": count }),
                RESTART_TIMEOUT,
            )?
            .unwrap_or_else(
                || json!({ "status": "error", "reason": "the controller did not answer" }),
            );
        if reply["status"] != "ok" {
            return Err(PyRuntimeError::new_err(format!(
                "cannot start engines: {}",
                reply["reason"].as_str().unwrap_or("unknown")
            )));
        }
        let new = |state: &State| -> Vec<u32> {
            state
                .engines
                .keys()
                .copied()
                .filter(|id| !before.contains(id) && !old.contains(id))
                .collect()
        };
        let registered = wait_until(tracker, &mut waiter, Some(self.options.timeout), |state| {
            new(state).len() >= count
        })?;
        let ids = new(&tracker.lock());
        if !registered {
            return Err(timeout_error(
                py,
                format!(
                    "{} of {count} new engines registered before the timeout",
                    ids.len()
                ),
            ));
        }
        Ok(ids)
    }

    /// Started by this process, and its controller still runs (it may
    /// have been killed meanwhile).
    fn is_running(&self) -> bool {
        let owned = OWNED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
            .any(|(p, cluster)| *p == self.profile && cluster.is_running());
        owned || (self.attached && rparallel_cluster::lifecycle::is_running(&self.profile))
    }

    /// A copy of this (unstarted) cluster's settings, for the class
    /// methods that build one through `Cluster(...)`.
    fn detached(&self) -> Cluster {
        Cluster {
            n: self.n,
            profile: self.profile.clone(),
            options: self.options.clone(),
            control: Mutex::new(None),
            attached: false,
        }
    }
}

/// An awaitable of `value`, for ipyparallel's coroutine methods (the work
/// is already done).
fn completed<'py>(py: Python<'py>, value: impl IntoPyObject<'py>) -> PyResult<Bound<'py, PyAny>> {
    helpers(py)?.call_method1("Completed", (value,))
}

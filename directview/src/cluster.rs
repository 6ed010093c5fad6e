//! `rparallel.Cluster`: start a controller and local engines from Python.
//! A cluster started from a kernel is stopped when the kernel exits
//! ([`stop_owned_clusters`]), and dies with it if it is killed (the
//! controller is bound to the kernel's life, the engines to the controller's).

use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rparallel_controller::cluster::{start_cluster, ClusterOptions, StartedCluster};
use rparallel_controller::profile::Profile;

use crate::client::Client;

/// Clusters this process started and has not stopped, by profile name.
static OWNED: Mutex<Vec<(String, StartedCluster)>> = Mutex::new(Vec::new());

/// Stops every cluster this process started (called at kernel shutdown).
pub fn stop_owned_clusters() {
    let owned = std::mem::take(&mut *OWNED.lock().unwrap_or_else(|e| e.into_inner()));
    for (_, cluster) in owned {
        let _ = cluster.stop();
    }
}

#[pyclass(module = "rparallel", name = "Cluster")]
pub struct Cluster {
    #[pyo3(get)]
    n: usize,
    #[pyo3(get)]
    profile: String,
    options: ClusterOptions,
}

fn default_engines() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

#[pymethods]
impl Cluster {
    #[new]
    #[pyo3(signature = (n=None, profile=None, launcher="local", **options))]
    fn new(
        py: Python<'_>,
        n: Option<usize>,
        profile: Option<String>,
        launcher: &str,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        if launcher != "local" {
            return Err(PyRuntimeError::new_err(format!(
                "launcher {launcher:?} is not available yet; use 'local'"
            )));
        }
        let n = n.unwrap_or_else(default_engines);
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
            ip: "127.0.0.1".into(),
            daemonize: false,
            timeout: Duration::from_secs_f64(get("engine_timeout", 60.0)?),
            heartbeat_timeout: Duration::from_secs_f64(get("heartbeat_timeout", 10.0)?),
            ephemeral,
        };
        Ok(Cluster {
            n,
            profile,
            options,
        })
    }

    /// Starts the controller and the engines; returns once all registered.
    fn start_sync(&self, py: Python<'_>) -> PyResult<()> {
        if self.is_running() {
            return Ok(());
        }
        let options = self.options.clone();
        let started = py
            .detach(move || start_cluster(&options))
            .map_err(|e| PyOSError::new_err(format!("{e:#}")))?;
        OWNED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((self.profile.clone(), started));
        Ok(())
    }

    /// A Client connected to this cluster, with all engines registered.
    fn connect_client_sync(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let client = py.import("rparallel")?.getattr("Client")?.call(
            (),
            Some(&[("profile", self.profile.clone())].into_py_dict(py)?),
        )?;
        client
            .cast::<Client>()?
            .call_method1("wait_for_engines", (self.n, 60.0))?;
        Ok(client.unbind())
    }

    fn start_and_connect_sync(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.start_sync(py)?;
        self.connect_client_sync(py)
    }

    /// Stops the controller and all engines.
    fn stop_cluster_sync(&self, py: Python<'_>) -> PyResult<()> {
        let mut owned = OWNED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = owned.iter().position(|(p, _)| *p == self.profile) {
            let (_, cluster) = owned.remove(at);
            drop(owned);
            py.detach(|| cluster.stop())
                .map_err(|e| PyOSError::new_err(format!("{e:#}")))?;
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

impl Cluster {
    fn is_running(&self) -> bool {
        OWNED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(p, _)| *p == self.profile)
    }
}

use pyo3::types::IntoPyDict;

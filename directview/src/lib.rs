//! The Python module `rparallel`: `Client`, `DirectView`, `AsyncResult`,
//! remote functions and `Cluster`, a thin pyo3 layer over the Rust client
//! (`rparallel_client`): Python arguments are read into its types here,
//! and its results turned into Python values.
//!
//! # Layout
//!
//! - [`client`], [`view`] (the view and its one path to the engines),
//!   [`view_methods`] (its Python API), [`balanced`] (the load-balanced
//!   view: tasks for the controller's scheduler) and [`balanced_methods`],
//!   [`any_view`] (what works on either kind), [`result`] (a result and
//!   how its value is built), [`result_methods`] (its Python API),
//!   [`remote`], [`cluster`]: the Python classes.
//! - [`waiting`]: [`waiting::PyWaiter`], how Python waits on the client's
//!   one wait loop (GIL released, Ctrl-C, live output, progress).
//! - [`display`], [`relay`]: showing engine output (live while waiting,
//!   or grouped afterwards) with the labels `rparallel_magics` renders.
//! - [`hub_record`]: the controller's task record (`db_query`,
//!   `get_result`, `resubmit`, purges).
//! - [`jobs`], [`convert`], [`errors`]: `jobs` arguments, Python ↔ Rust
//!   values, the exceptions raised.
//! - [`px`]: the `%px` family as IPython magics.
//! - `python/helpers.py` (`rparallel._helpers`): the few client pieces
//!   best in Python.
//!
//! Module dependencies run one way, in the order: errors, convert,
//! display, relay, waiting, result, result_methods, jobs, view, balanced,
//! any_view, remote, view_methods, balanced_methods, client, cluster, px.

pub mod any_view;
pub mod balanced;
pub mod balanced_methods;
pub mod client;
pub mod cluster;
pub mod convert;
pub mod display;
pub mod errors;
pub mod hub_record;
pub mod jobs;
pub mod px;
pub mod relay;
pub mod remote;
pub mod result;
pub mod result_methods;
pub mod view;
pub mod view_methods;
pub mod waiting;

use pyo3::prelude::*;
use rparallel_pyexec::package::{load_module, PythonSource};

pub use cluster::stop_owned_clusters;

/// What a process that used this module leaves behind, cleared as it
/// exits: the clusters it started, and its files in `/dev/shm` (transfers
/// nobody took, its pool of shared-memory files).
pub fn at_exit() {
    stop_owned_clusters();
    rparallel_protocol::shm::remove_leftovers();
}

/// `python/helpers.py`.
const HELPERS: PythonSource = PythonSource {
    source: include_str!("../python/helpers.py"),
    file: c"rparallel/_helpers.py",
    name: c"rparallel._helpers",
};

/// Adds the client to the `rparallel` package of this interpreter (the
/// kernel's; the package itself, with its exceptions and what engines
/// run, comes with every shell: `rparallel_pyexec::package`).
pub fn install(py: Python<'_>) -> PyResult<()> {
    let module = rparallel_pyexec::package::install(py)?;
    let helpers = load_module(py, &HELPERS)?;
    module.setattr("_helpers", &helpers)?;

    module.add_class::<client::PyClient>()?;
    module.add_class::<view::DirectView>()?;
    module.add_class::<balanced::LoadBalancedView>()?;
    module.add_class::<result::AsyncResult>()?;
    module.add("AsyncMapResult", module.getattr("AsyncResult")?)?;
    module.add("AsyncHubResult", module.getattr("AsyncResult")?)?;
    module.add_class::<remote::RemoteFunction>()?;
    module.add_class::<remote::ParallelFunction>()?;
    module.add_class::<cluster::Cluster>()?;
    module.add("ExecuteReply", helpers.getattr("ExecuteReply")?)?;
    module.add("Dependency", helpers.getattr("Dependency")?)?;
    module.add("ViewExecutor", helpers.getattr("ViewExecutor")?)?;
    module.add("ClusterManager", helpers.getattr("ClusterManager")?)?;
    module.add("remote", helpers.getattr("remote")?)?;
    module.add("parallel", helpers.getattr("parallel")?)?;
    // As ipyparallel: `return_when=` takes them.
    let futures = py.import("concurrent.futures")?;
    for name in ["ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION"] {
        module.add(name, futures.getattr(name)?)?;
    }
    module.add(
        "register_joblib_backend",
        helpers.getattr("register_module_joblib_backend")?,
    )?;
    // One fan-out path serves both (see `Client.broadcast_view`).
    module.add("BroadcastView", module.getattr("DirectView")?)?;
    module.add_class::<px::Magics>()?;
    module.add(
        "load_ipython_extension",
        helpers.getattr("load_ipython_extension")?,
    )?;
    // The %px family in the IPython this runs in, if any.
    helpers.call_method0("register_magics")?;
    Ok(())
}

//! The client side of rparallel: `Client`, `DirectView`, `AsyncResult` and
//! friends in Rust, exposed to Python as the module `rparallel`.
//!
//! # Layout
//!
//! - [`connection`]: the DEALER connection to the controller, on its own
//!   I/O thread; heartbeats.
//! - [`tracker`]: live engines and the state of every request (replies,
//!   outputs, failures); waiting happens here with the GIL released.
//! - [`core`]: what a client's Python objects share; interruptible waits.
//! - [`targets`], [`partition`]: which engines, and which part each gets.
//! - [`display`], [`relay`]: showing engine output (live while waiting,
//!   or grouped afterwards) with the labels `rparallel_magics` renders.
//! - [`client`], [`view`], [`result`], [`remote`], [`cluster`]: the Python
//!   classes. [`view::DirectView::submit`] is the one path to the engines.
//! - `python/helpers.py` (`rparallel._helpers`): the few client pieces
//!   best in Python.

pub mod client;
pub mod cluster;
pub mod connection;
pub mod core;
pub mod display;
pub mod partition;
pub mod relay;
pub mod remote;
pub mod result;
pub mod targets;
pub mod tracker;
pub mod view;

use pyo3::prelude::*;

pub use cluster::stop_owned_clusters;

const HELPERS_SOURCE: &str = include_str!("../python/helpers.py");

/// Adds the client to the `rparallel` package of this interpreter (the
/// kernel's; the package itself, with its exceptions and what engines
/// run, comes with every shell: `rparallel_pyexec::package`).
pub fn install(py: Python<'_>) -> PyResult<()> {
    let module = rparallel_pyexec::package::install(py)?;
    let helpers = rparallel_pyexec::package::submodule(
        py,
        HELPERS_SOURCE,
        c"rparallel/_helpers.py",
        c"rparallel._helpers",
    )?;
    module.setattr("_helpers", &helpers)?;

    module.add_class::<client::Client>()?;
    module.add_class::<view::DirectView>()?;
    module.add_class::<result::AsyncResult>()?;
    module.add("AsyncMapResult", module.getattr("AsyncResult")?)?;
    module.add_class::<remote::RemoteFunction>()?;
    module.add_class::<remote::ParallelFunction>()?;
    module.add_class::<cluster::Cluster>()?;
    module.add("ExecuteReply", helpers.getattr("ExecuteReply")?)?;
    Ok(())
}

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
//! - `python/error.py` (`rparallel.error`) and `python/helpers.py`
//!   (`rparallel._helpers`): exceptions and the few pieces best in Python.

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

use std::ffi::CString;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyModule};

pub use cluster::stop_owned_clusters;

const ERROR_SOURCE: &str = include_str!("../python/error.py");
const HELPERS_SOURCE: &str = include_str!("../python/helpers.py");

/// Makes `import rparallel` work in this interpreter (the kernel's and the
/// engines', so functions of `rparallel._helpers` unpickle by reference).
pub fn install(py: Python<'_>) -> PyResult<()> {
    let module = PyModule::new(py, "rparallel")?;
    module.setattr("__path__", PyList::empty(py))?;
    module.setattr("__version__", env!("CARGO_PKG_VERSION"))?;
    py.import("sys")?
        .getattr("modules")?
        .set_item("rparallel", &module)?;

    let load = |source: &str, file: &std::ffi::CStr, name: &std::ffi::CStr| {
        let source = CString::new(source).expect("no NUL in module sources");
        PyModule::from_code(py, &source, file, name)
    };
    let error = load(ERROR_SOURCE, c"rparallel/error.py", c"rparallel.error")?;
    let helpers = load(
        HELPERS_SOURCE,
        c"rparallel/_helpers.py",
        c"rparallel._helpers",
    )?;
    module.setattr("error", &error)?;
    module.setattr("_helpers", &helpers)?;

    module.add_class::<client::Client>()?;
    module.add_class::<view::DirectView>()?;
    module.add_class::<result::AsyncResult>()?;
    module.add("AsyncMapResult", module.getattr("AsyncResult")?)?;
    module.add_class::<remote::RemoteFunction>()?;
    module.add_class::<remote::ParallelFunction>()?;
    module.add_class::<cluster::Cluster>()?;
    for name in [
        "RemoteError",
        "CompositeError",
        "TimeoutError",
        "EngineError",
        "UnmetDependency",
        "NoEnginesRegistered",
    ] {
        module.add(name, error.getattr(name)?)?;
    }
    for name in ["require", "interactive", "ExecuteReply"] {
        module.add(name, helpers.getattr(name)?)?;
    }
    Ok(())
}

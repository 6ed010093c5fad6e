//! The part of the Python package `rparallel` that every rparallel process
//! has, kernel and engines alike: its exceptions (`rparallel.error`) and
//! what engines run for the client (`rparallel._remote`: map chunks,
//! `@require`, `@interactive`). Functions of these modules are pickled by
//! reference, so both ends must have the same ones. The client adds its
//! classes to the same module where it runs.

use std::ffi::{CStr, CString};

use pyo3::prelude::*;
use pyo3::types::{PyList, PyModule};

const ERROR_SOURCE: &str = include_str!("../python/rparallel/error.py");
const REMOTE_SOURCE: &str = include_str!("../python/rparallel/_remote.py");

/// The exceptions `rparallel` itself exports (all are in `rparallel.error`).
const EXCEPTIONS: [&str; 6] = [
    "RemoteError",
    "CompositeError",
    "TimeoutError",
    "EngineError",
    "UnmetDependency",
    "NoEnginesRegistered",
];

/// The package's name.
pub const NAME: &str = "rparallel";

/// Makes `import rparallel` (and `rparallel.error`, `rparallel._remote`)
/// work in this interpreter. Idempotent.
pub fn install(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let modules = py.import("sys")?.getattr("modules")?;
    if let Ok(Some(existing)) = modules
        .get_item(NAME)
        .map(|m| m.cast_into::<PyModule>().ok())
    {
        return Ok(existing);
    }
    let package = PyModule::new(py, NAME)?;
    package.setattr("__path__", PyList::empty(py))?;
    package.setattr("__version__", env!("CARGO_PKG_VERSION"))?;
    modules.set_item(NAME, &package)?;

    let error = submodule(py, ERROR_SOURCE, c"rparallel/error.py", c"rparallel.error")?;
    let remote = submodule(
        py,
        REMOTE_SOURCE,
        c"rparallel/_remote.py",
        c"rparallel._remote",
    )?;
    package.setattr("error", &error)?;
    package.setattr("_remote", &remote)?;
    for name in EXCEPTIONS {
        package.setattr(name, error.getattr(name)?)?;
    }
    for name in ["require", "interactive"] {
        package.setattr(name, remote.getattr(name)?)?;
    }
    Ok(package)
}

/// Loads a module of the package from its source.
pub fn submodule<'py>(
    py: Python<'py>,
    source: &str,
    file: &CStr,
    name: &CStr,
) -> PyResult<Bound<'py, PyModule>> {
    let source = CString::new(source).expect("no NUL in module sources");
    PyModule::from_code(py, &source, file, name)
}

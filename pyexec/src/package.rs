//! The Python modules rparallel brings as source, and the part of the
//! Python package `rparallel` that every rparallel process has, kernel and
//! engines alike: its exceptions (`rparallel.error`) and what engines run
//! for the client (`rparallel._remote`: map chunks, `@require`,
//! `@interactive`). Functions of these modules are pickled by reference,
//! so both ends must have the same ones. The client adds its classes to
//! the same package where it runs.

use std::ffi::{CStr, CString};

use pyo3::prelude::*;
use pyo3::types::{PyList, PyModule};

/// A Python module compiled into rparallel.
pub struct PythonSource {
    pub source: &'static str,
    /// The file name tracebacks show. The execution core's own modules are
    /// named `<rparallel>/…`, which tracebacks leave out.
    pub file: &'static CStr,
    /// The name it gets in `sys.modules`.
    pub name: &'static CStr,
}

/// Runs `module`'s source as a module and registers it in `sys.modules`.
pub fn load_module<'py>(py: Python<'py>, module: &PythonSource) -> PyResult<Bound<'py, PyModule>> {
    let source = CString::new(module.source).expect("no NUL in module sources");
    PyModule::from_code(py, &source, module.file, module.name)
}

const ERROR: PythonSource = PythonSource {
    source: include_str!("../python/rparallel/error.py"),
    file: c"rparallel/error.py",
    name: c"rparallel.error",
};

const REMOTE: PythonSource = PythonSource {
    source: include_str!("../python/rparallel/_remote.py"),
    file: c"rparallel/_remote.py",
    name: c"rparallel._remote",
};

const DATAPUB: PythonSource = PythonSource {
    source: include_str!("../python/rparallel/datapub.py"),
    file: c"rparallel/datapub.py",
    name: c"rparallel.datapub",
};

/// The package's name.
pub const NAME: &str = "rparallel";

/// Set on the package once its parts are in.
const INSTALLED: &str = "_rparallel_installed";

/// Makes `import rparallel` (and `rparallel.error`, `rparallel._remote`)
/// work in this interpreter: fills the package being imported when it is
/// the installed Python package, else makes one in memory (the kernel
/// binary and its engines). Idempotent.
pub fn install(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let modules = py.import("sys")?.getattr("modules")?;
    let package = match modules
        .get_item(NAME)
        .map(|m| m.cast_into::<PyModule>().ok())
    {
        Ok(Some(existing)) if existing.hasattr(INSTALLED)? => return Ok(existing),
        Ok(Some(importing)) => importing,
        _ => {
            let package = PyModule::new(py, NAME)?;
            package.setattr("__path__", PyList::empty(py))?;
            modules.set_item(NAME, &package)?;
            package
        }
    };
    package.setattr("__version__", env!("CARGO_PKG_VERSION"))?;

    let error = load_module(py, &ERROR)?;
    let remote = load_module(py, &REMOTE)?;
    package.setattr("error", &error)?;
    package.setattr("_remote", &remote)?;
    package.setattr("datapub", load_module(py, &DATAPUB)?)?;
    // `from .error import *`, as ipyparallel.
    for name in error.getattr("__all__")?.try_iter()? {
        let name = name?;
        package.setattr(name.extract::<String>()?, error.getattr(name.str()?)?)?;
    }
    package.add_function(pyo3::wrap_pyfunction!(
        crate::binding::_bind_kernel,
        &package
    )?)?;
    for name in [
        "require",
        "interactive",
        "depend",
        "dependent",
        "Reference",
        "bind_kernel",
    ] {
        package.setattr(name, remote.getattr(name)?)?;
    }
    package.setattr(INSTALLED, true)?;
    Ok(package)
}

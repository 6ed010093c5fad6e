//! `rparallel.bind_kernel()`: an engine serving its namespace as a Jupyter
//! kernel too (`jupyter console --existing kernel-<pid>.json`). The
//! engine registers how it binds ([`set_binder`]); in any other process
//! the call does nothing (it is a kernel already, or has no engine).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// Binds a kernel whose connection file is written to the path given;
/// returns when its sockets listen.
pub type Binder = Box<dyn Fn(&Path) -> anyhow::Result<()> + Send + Sync>;

static BINDER: OnceLock<Binder> = OnceLock::new();

/// What `bind_kernel` does in this process (the engine's I/O side).
pub fn set_binder(binder: Binder) {
    let _ = BINDER.set(binder);
}

/// Connection files this process wrote, removed at exit.
static WRITTEN: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes the connection files of the kernels this process bound.
pub fn remove_connection_files() {
    for path in WRITTEN.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        let _ = std::fs::remove_file(path);
    }
}

/// `rparallel._bind_kernel(path)`: binds the engine's kernel with its
/// connection file at `path`; False where there is no engine to bind.
#[pyfunction]
pub fn _bind_kernel(py: Python<'_>, path: PathBuf) -> PyResult<bool> {
    let Some(binder) = BINDER.get() else {
        return Ok(false);
    };
    py.detach(|| binder(&path)).map_err(|e| {
        PyRuntimeError::new_err(format!("cannot bind the engine as a kernel: {e:#}"))
    })?;
    WRITTEN.lock().unwrap_or_else(|e| e.into_inner()).push(path);
    Ok(true)
}

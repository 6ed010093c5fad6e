//! The Python exceptions the client raises: `rparallel.error`'s classes,
//! and Python's own for bad arguments.

use pyo3::exceptions::{PyIndexError, PyOSError, PyValueError};
use pyo3::prelude::*;
use rparallel_client::{Client, TargetError};

/// A Python exception of `rparallel.error`, built with `args`.
pub fn error<'py>(py: Python<'py>, name: &str, args: impl pyo3::call::PyCallArgs<'py>) -> PyErr {
    match errors(py)
        .and_then(|m| m.getattr(name))
        .and_then(|c| c.call1(args))
    {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    }
}

/// `rparallel.error`.
pub fn errors(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    py.import("rparallel.error")
}

/// An OSError with the whole chain of causes.
pub fn os_error(e: anyhow::Error) -> PyErr {
    PyOSError::new_err(format!("{e:#}"))
}

/// `rparallel.error.TimeoutError`.
pub fn timeout_error(py: Python<'_>, text: String) -> PyErr {
    error(py, "TimeoutError", (text,))
}

/// The Python exception for targets that pick no engine. With the
/// controller gone, "no engines" says so: the client cannot recover, a new
/// one is needed.
pub fn target_error(py: Python<'_>, client: &Client, e: TargetError) -> PyErr {
    match e {
        TargetError::NoEngines => {
            let text = match client.controller_lost() {
                Some(reason) => {
                    format!("{e} ({reason}); start a cluster again and connect a new Client")
                }
                None => e.to_string(),
            };
            error(py, "NoEnginesRegistered", (text,))
        }
        TargetError::NoSuchEngine(_) => PyIndexError::new_err(e.to_string()),
        TargetError::Empty | TargetError::BadSpec(_) | TargetError::ZeroStep => {
            PyValueError::new_err(e.to_string())
        }
    }
}

//! Python values ↔ the client's Rust values: JSON, targets, timeouts.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PySlice, PyString};
use rparallel_client::{Client, Targets};
use serde_json::Value;

use crate::errors::target_error;

/// A JSON value (a MIME bundle, metadata) as the Python object it encodes.
pub fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?
        .getattr("loads")?
        .call1((value.to_string(),))
}

/// Reads a `targets` argument: 'all', an int, a slice (resolved against
/// the live ids now), or a list/tuple/range of ints.
pub fn targets(client: &Client, targets: &Bound<'_, PyAny>) -> PyResult<Targets> {
    let py = targets.py();
    if let Ok(s) = targets.cast::<PyString>() {
        if s.to_str()? == "all" {
            return Ok(Targets::All);
        }
        return Err(PyTypeError::new_err(format!("bad targets: {s}")));
    }
    if let Ok(id) = targets.extract::<i64>() {
        return Targets::engine(&client.ids(), id)
            .map(Targets::One)
            .map_err(|e| target_error(py, client, e));
    }
    if let Ok(slice) = targets.cast::<PySlice>() {
        let part = |name: &str| -> PyResult<Option<i64>> { slice.getattr(name)?.extract() };
        let (start, stop, step) = (part("start")?, part("stop")?, part("step")?);
        return Targets::slice(&client.ids(), start, stop, step)
            .map(Targets::Many)
            .map_err(|e| target_error(py, client, e));
    }
    let ids: Vec<u32> = targets
        .try_iter()
        .map_err(|_| {
            PyTypeError::new_err("targets must be 'all', an int, a list of ints or a slice")
        })?
        .map(|item| item?.extract::<u32>())
        .collect::<PyResult<_>>()?;
    Ok(Targets::Many(ids))
}

/// Targets as Python shows them: 'all', an id, or a list of ids.
pub fn targets_to_python(py: Python<'_>, targets: &Targets) -> PyResult<Py<PyAny>> {
    Ok(match targets {
        Targets::All => "all".into_pyobject(py)?.into_any().unbind(),
        Targets::One(id) => id.into_pyobject(py)?.into_any().unbind(),
        Targets::Many(ids) => PyList::new(py, ids)?.into_any().unbind(),
    })
}

/// `rparallel._helpers`: the client's pieces written in Python.
pub fn helpers(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    py.import("rparallel._helpers")
}

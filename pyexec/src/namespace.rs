//! The engine's operations on a shell's namespace: apply, push, pull and
//! clear. The Python half is `python/namespace.py` (module
//! `rparallel_namespace`); values cross as frames ([`mod@crate::serialize`]).

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyModule};

use crate::package::{load_module, PythonSource};
use crate::serialize::{exclusive_frames, frames_from_python};
use crate::shell::{CellError, PyShell};

/// `python/namespace.py`.
const NAMESPACE: PythonSource = PythonSource {
    source: include_str!("../python/namespace.py"),
    file: c"<rparallel>/namespace.py",
    name: c"rparallel_namespace",
};

/// The engine's operations on one [`PyShell`]'s namespace. Errors come back
/// as the [`CellError`] a failing cell gives (IPython-style traceback).
pub struct Namespace {
    shell: Py<PyAny>,
    module: Py<PyModule>,
}

impl Namespace {
    /// Loads the operations (and the serializer, and so cloudpickle) into
    /// the shell's interpreter. Call on the Python thread.
    pub fn new(shell: &PyShell) -> PyResult<Self> {
        Python::attach(|py| {
            crate::serialize::module(py)?;
            Ok(Namespace {
                shell: shell.py_shell(py),
                module: load_module(py, &NAMESPACE)?.unbind(),
            })
        })
    }

    /// `f(*args, **kwargs)` for `frames = serialize((f, args, kwargs))`;
    /// returns the serialised result.
    pub fn apply(&self, frames: Vec<Bytes>) -> Result<Vec<Bytes>, CellError> {
        self.call("apply", |py| {
            Ok(Some(exclusive_frames(py, frames)?.into_any()))
        })
        .and_then(|f| f.ok_or_else(|| CellError::line("RuntimeError", "apply returned no frames")))
    }

    /// Updates the namespace with the dict serialised in `frames`.
    pub fn push(&self, frames: Vec<Bytes>) -> Result<(), CellError> {
        self.call("push", |py| {
            Ok(Some(exclusive_frames(py, frames)?.into_any()))
        })
        .map(|_| ())
    }

    /// The serialised list of the values of `names` (evaluated in the
    /// namespace: a missing name is a NameError).
    pub fn pull(&self, names: &[String]) -> Result<Vec<Bytes>, CellError> {
        self.call("pull", |py| Ok(Some(PyList::new(py, names)?.into_any())))
            .and_then(|f| {
                f.ok_or_else(|| CellError::line("RuntimeError", "pull returned no frames"))
            })
    }

    /// Empties the namespace.
    pub fn clear(&self) -> Result<(), CellError> {
        self.call("clear", |_| Ok(None)).map(|_| ())
    }

    /// Calls `rparallel_namespace.<op>(shell[, arg])` and decodes its
    /// `(status, value)`.
    fn call(
        &self,
        op: &str,
        arg: impl for<'py> FnOnce(Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>>,
    ) -> Result<Option<Vec<Bytes>>, CellError> {
        let outcome = Python::attach(|py| {
            let run = || -> PyResult<Result<Option<Vec<Bytes>>, CellError>> {
                let module = self.module.bind(py);
                let arg = arg(py)?;
                let shell = self.shell.bind(py);
                let outcome = match arg {
                    Some(arg) => module.call_method1(op, (shell, arg))?,
                    None => module.call_method1(op, (shell,))?,
                };
                let (status, value): (String, Bound<'_, PyAny>) = outcome.extract()?;
                if status == "ok" {
                    if value.is_none() {
                        return Ok(Ok(None));
                    }
                    return Ok(Ok(Some(frames_from_python(&value)?)));
                }
                let (ename, evalue, traceback): (String, String, Vec<String>) = value.extract()?;
                Ok(Err(CellError::new(ename, evalue, traceback)))
            };
            run().unwrap_or_else(|e| {
                Err(CellError::internal(
                    py,
                    e,
                    "rparallel's namespace operations",
                ))
            })
        });
        // What the call wrote to fds 1/2 belongs to it, before its reply.
        crate::fdcapture::drain();
        outcome
    }
}

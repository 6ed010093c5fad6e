//! `@view.remote` and `@view.parallel`: functions whose calls run on a view.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::view::{finish, DirectView};

/// What `view.remote(...)` / `view.parallel(...)` return: applied to a
/// function, it makes a RemoteFunction or a ParallelFunction.
#[pyclass(module = "rparallel")]
pub struct RemoteDecorator {
    pub(crate) view: Py<DirectView>,
    pub(crate) block: Option<bool>,
    pub(crate) parallel: bool,
}

#[pymethods]
impl RemoteDecorator {
    fn __call__(&self, py: Python<'_>, f: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let view = self.view.clone_ref(py);
        if self.parallel {
            Ok(Py::new(
                py,
                ParallelFunction {
                    view,
                    f: f.unbind(),
                    block: self.block,
                },
            )?
            .into_any())
        } else {
            Ok(Py::new(
                py,
                RemoteFunction {
                    view,
                    f: f.unbind(),
                    block: self.block,
                },
            )?
            .into_any())
        }
    }
}

/// Calling it applies the function on the view's engines.
#[pyclass(module = "rparallel")]
pub struct RemoteFunction {
    view: Py<DirectView>,
    #[pyo3(get)]
    f: Py<PyAny>,
    block: Option<bool>,
}

#[pymethods]
impl RemoteFunction {
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let view = self.view.bind(py).borrow();
        let block = self.block.unwrap_or(view.block);
        finish(view.apply(py, self.f.bind(py), args, kwargs)?, block)
    }

    #[getter]
    fn view(&self, py: Python<'_>) -> Py<DirectView> {
        self.view.clone_ref(py)
    }

    #[getter]
    fn block(&self) -> Option<bool> {
        self.block
    }
}

/// Calling it splits the arguments into one block per engine, runs the
/// function on each block and joins the results; `.map` runs it per element.
#[pyclass(module = "rparallel")]
pub struct ParallelFunction {
    view: Py<DirectView>,
    #[pyo3(get)]
    f: Py<PyAny>,
    block: Option<bool>,
}

#[pymethods]
impl ParallelFunction {
    #[pyo3(signature = (*sequences))]
    fn __call__(&self, py: Python<'_>, sequences: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        let view = self.view.bind(py).borrow();
        let block = self.block.unwrap_or(view.block);
        finish(view.chunked(py, self.f.bind(py), sequences, false)?, block)
    }

    #[pyo3(signature = (*sequences))]
    fn map(&self, py: Python<'_>, sequences: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        let view = self.view.bind(py).borrow();
        let block = self.block.unwrap_or(view.block);
        finish(view.chunked(py, self.f.bind(py), sequences, true)?, block)
    }

    #[getter]
    fn view(&self, py: Python<'_>) -> Py<DirectView> {
        self.view.clone_ref(py)
    }
}

//! `@view.remote` and `@view.parallel`: functions whose calls run on a
//! view, direct or load-balanced.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::any_view::AnyView;
use crate::balanced::MapOptions;
use crate::view::finish;

/// What `view.remote(...)` / `view.parallel(...)` return: applied to a
/// function, it makes a RemoteFunction or a ParallelFunction.
#[pyclass(module = "rparallel")]
pub struct RemoteDecorator {
    view: AnyView,
    block: Option<bool>,
    /// Some: a parallel function, cut into parts like this.
    parallel: Option<MapOptions>,
}

impl RemoteDecorator {
    pub(crate) fn new(view: AnyView, block: Option<bool>, parallel: Option<MapOptions>) -> Self {
        RemoteDecorator {
            view,
            block,
            parallel,
        }
    }
}

#[pymethods]
impl RemoteDecorator {
    fn __call__(&self, py: Python<'_>, f: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let view = self.view.clone_ref(py);
        let f = f.unbind();
        Ok(match self.parallel {
            Some(map) => Py::new(
                py,
                ParallelFunction {
                    view,
                    f,
                    block: self.block,
                    map,
                },
            )?
            .into_any(),
            None => Py::new(
                py,
                RemoteFunction {
                    view,
                    f,
                    block: self.block,
                },
            )?
            .into_any(),
        })
    }
}

/// Calling it applies the function on the view: on each of its engines
/// (direct) or on one (load-balanced).
#[pyclass(module = "rparallel")]
pub struct RemoteFunction {
    view: AnyView,
    /// The function it runs remotely.
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
        let block = self.block.unwrap_or_else(|| self.view.block(py));
        finish(self.view.apply(py, self.f.bind(py), args, kwargs)?, block)
    }

    /// The view it runs on.
    #[getter]
    fn view(&self, py: Python<'_>) -> Py<PyAny> {
        self.view.object(py)
    }

    /// Whether a call waits for the result (None: the view's `block`).
    #[getter]
    fn block(&self) -> Option<bool> {
        self.block
    }
}

/// Calling it splits the arguments into parts (one block per engine, or
/// load-balanced chunks), runs the function on each part and joins the
/// results; `.map` runs it per element.
#[pyclass(module = "rparallel")]
pub struct ParallelFunction {
    view: AnyView,
    /// The function it runs remotely.
    #[pyo3(get)]
    f: Py<PyAny>,
    block: Option<bool>,
    map: MapOptions,
}

impl ParallelFunction {
    fn run(
        &self,
        py: Python<'_>,
        sequences: &Bound<'_, PyTuple>,
        elementwise: bool,
    ) -> PyResult<Py<PyAny>> {
        let block = self.block.unwrap_or_else(|| self.view.block(py));
        let map = MapOptions {
            elementwise,
            ..self.map
        };
        finish(
            self.view.chunked(py, self.f.bind(py), sequences, map)?,
            block,
        )
    }
}

#[pymethods]
impl ParallelFunction {
    #[pyo3(signature = (*sequences))]
    fn __call__(&self, py: Python<'_>, sequences: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        self.run(py, sequences, false)
    }

    /// Runs the function on each element (zipped across `sequences`),
    /// the elements split across the engines as a call splits them.
    #[pyo3(signature = (*sequences))]
    fn map(&self, py: Python<'_>, sequences: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        self.run(py, sequences, true)
    }

    /// The view it runs on.
    #[getter]
    fn view(&self, py: Python<'_>) -> Py<PyAny> {
        self.view.object(py)
    }
}

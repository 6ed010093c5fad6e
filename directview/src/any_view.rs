//! [`AnyView`]: a DirectView or a LoadBalancedView, for what works on
//! either (`%px` on the activated view, `@view.remote`, `@view.parallel`):
//! the one place that says how each kind runs code.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use rparallel_client::{Client, Targets};

use crate::balanced::{LoadBalancedView, MapOptions};
use crate::result::AsyncResult;
use crate::view::DirectView;

pub enum AnyView {
    Direct(Py<DirectView>),
    Balanced(Py<LoadBalancedView>),
}

impl AnyView {
    /// `view` as one of the two kinds, or a TypeError.
    pub fn from_object(view: &Bound<'_, PyAny>) -> PyResult<AnyView> {
        if let Ok(direct) = view.cast::<DirectView>() {
            return Ok(AnyView::Direct(direct.clone().unbind()));
        }
        Ok(AnyView::Balanced(
            view.cast::<LoadBalancedView>()?.clone().unbind(),
        ))
    }

    pub fn clone_ref(&self, py: Python<'_>) -> AnyView {
        match self {
            AnyView::Direct(v) => AnyView::Direct(v.clone_ref(py)),
            AnyView::Balanced(v) => AnyView::Balanced(v.clone_ref(py)),
        }
    }

    pub fn object(&self, py: Python<'_>) -> Py<PyAny> {
        match self {
            AnyView::Direct(v) => v.clone_ref(py).into_any(),
            AnyView::Balanced(v) => v.clone_ref(py).into_any(),
        }
    }

    pub fn client(&self, py: Python<'_>) -> Arc<Client> {
        match self {
            AnyView::Direct(v) => v.borrow(py).client().clone(),
            AnyView::Balanced(v) => v.borrow(py).client().clone(),
        }
    }

    pub fn targets(&self, py: Python<'_>) -> Targets {
        match self {
            AnyView::Direct(v) => v.borrow(py).targets().clone(),
            AnyView::Balanced(v) => v.borrow(py).targets().clone(),
        }
    }

    pub fn set_targets(&self, py: Python<'_>, targets: Targets) {
        match self {
            AnyView::Direct(v) => v.borrow_mut(py).set_targets(targets),
            AnyView::Balanced(v) => v.borrow_mut(py).targets = targets,
        }
    }

    pub fn block(&self, py: Python<'_>) -> bool {
        match self {
            AnyView::Direct(v) => v.borrow(py).block(),
            AnyView::Balanced(v) => v.borrow(py).block,
        }
    }

    pub fn set_block(&self, py: Python<'_>, block: bool) {
        match self {
            AnyView::Direct(v) => v.borrow_mut(py).set_block(block),
            AnyView::Balanced(v) => v.borrow_mut(py).block = block,
        }
    }

    /// Runs `code` on `targets`: every one of them (direct), or one
    /// (load-balanced).
    pub fn execute_async<'py>(
        &self,
        py: Python<'py>,
        code: &str,
        silent: bool,
        targets: &Targets,
        label: Option<&str>,
    ) -> PyResult<Bound<'py, AsyncResult>> {
        match self {
            AnyView::Direct(v) => v.borrow(py).execute_async(py, code, silent, targets, label),
            AnyView::Balanced(v) => v.borrow(py).execute_async(py, code, silent, targets, label),
        }
    }

    /// `f(*args, **kwargs)` on every engine (direct) or one (load-balanced).
    pub fn apply<'py>(
        &self,
        py: Python<'py>,
        f: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, AsyncResult>> {
        match self {
            AnyView::Direct(v) => v.borrow(py).apply(py, f, args, kwargs),
            AnyView::Balanced(v) => v.borrow(py).apply_task(py, f, args, kwargs),
        }
    }

    /// `f` over `sequences` in parts: one block per engine (direct), or
    /// chunks as `map` says (load-balanced).
    pub fn chunked<'py>(
        &self,
        py: Python<'py>,
        f: &Bound<'py, PyAny>,
        sequences: &Bound<'py, PyTuple>,
        map: MapOptions,
    ) -> PyResult<Bound<'py, AsyncResult>> {
        match self {
            AnyView::Direct(v) => v.borrow(py).chunked(py, f, sequences, map.elementwise),
            AnyView::Balanced(v) => v.borrow(py).chunked(py, f, sequences, map),
        }
    }
}

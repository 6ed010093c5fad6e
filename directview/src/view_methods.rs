//! `DirectView`'s Python methods: each reads its arguments into a typed
//! request ([`Request`]) and sends it through `DirectView::submit`.

use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use rparallel_client::partition::blocks;
use rparallel_client::{Call, Deadline, Request, Targets};

use crate::any_view::AnyView;
use crate::balanced::MapOptions;
use crate::convert::{helpers, targets_to_python};
use crate::jobs::{job_ids, wait_jobs};
use crate::remote::RemoteDecorator;
use crate::view::{finish, DirectView};

pub(crate) fn only_block_distribution(dist: &str) -> PyResult<()> {
    if dist != "b" {
        return Err(PyValueError::new_err("only dist='b' (block) is supported"));
    }
    Ok(())
}

impl DirectView {
    fn block_for(&self, block: Option<bool>) -> bool {
        block.unwrap_or(self.block)
    }

    /// Sends `request` to every engine of `targets` (None: the view's),
    /// as a `call`; waits when `block` (None: the view's) says so.
    pub(crate) fn send_each(
        &self,
        py: Python<'_>,
        targets: Option<&Bound<'_, PyAny>>,
        call: Call,
        request: Request,
        block: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        let targets = self.targets_for(targets)?;
        let result = self.broadcast(py, &targets, call, request)?;
        finish(result, self.block_for(block))
    }
}

/// The flags of a DirectView (`set_flags`, `temp_flags`).
const DIRECT_FLAGS: &[&str] = &["targets", "block", "track"];

impl DirectView {
    /// Switches serialization (`rparallel_serialize.<switch>`) here, then
    /// on the engines; their AsyncResult, as the view's `apply`.
    fn use_serializer(slf: Bound<'_, Self>, switch: &str) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let switch = py.import("rparallel_serialize")?.getattr(switch)?;
        switch.call0()?;
        let view = slf.borrow();
        let result = view.apply(py, &switch, &PyTuple::empty(py), None)?;
        finish(result, view.block)
    }
}

#[pymethods]
impl DirectView {
    /// The engines this view sends to: an id, a list of ids, or "all".
    #[getter(targets)]
    fn py_targets(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        targets_to_python(py, &self.targets)
    }

    #[setter(targets)]
    fn set_py_targets(&mut self, targets: &Bound<'_, PyAny>) -> PyResult<()> {
        self.targets = crate::convert::targets(&self.client, targets)?;
        Ok(())
    }

    /// The Client this view belongs to.
    #[getter(client)]
    fn py_client(&self, py: Python<'_>) -> Py<PyAny> {
        self.py_client.clone_ref(py)
    }

    /// Calls `f(*args, **kwargs)` on every engine of the view.
    #[pyo3(name = "apply", signature = (f, *args, **kwargs))]
    fn py_apply(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        finish(self.apply(py, f, args, kwargs)?, self.block)
    }

    /// `apply`, waiting for the result (block=True).
    #[pyo3(signature = (f, *args, **kwargs))]
    fn apply_sync(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        finish(self.apply(py, f, args, kwargs)?, true)
    }

    /// `apply`, returning an AsyncResult at once (block=False).
    #[pyo3(signature = (f, *args, **kwargs))]
    fn apply_async(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        finish(self.apply(py, f, args, kwargs)?, false)
    }

    /// Runs `code` on the engines; returns the AsyncResult (after waiting,
    /// when blocking: errors are raised). With `timeout` (seconds, blocking
    /// only), engines still running after it are interrupted, as
    /// `%%px --timeout` does.
    #[pyo3(signature = (code, silent=true, targets=None, block=None, timeout=None))]
    fn execute(
        &self,
        py: Python<'_>,
        code: &str,
        silent: bool,
        targets: Option<&Bound<'_, PyAny>>,
        block: Option<bool>,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let targets = self.targets_for(targets)?;
        let result = self.execute_async(py, code, silent, &targets, None)?;
        if self.block_for(block) {
            let deadline = match timeout.filter(|t| *t >= 0.0) {
                Some(t) => Deadline::Interrupt(std::time::Duration::from_secs_f64(t)),
                None => Deadline::Never,
            };
            result.borrow().finish_within(py, deadline)?;
        }
        Ok(result.into_any().unbind())
    }

    /// Runs a Python file's code on the engines.
    #[pyo3(signature = (filename, targets=None, block=None))]
    fn run(
        &self,
        py: Python<'_>,
        filename: &str,
        targets: Option<&Bound<'_, PyAny>>,
        block: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        let code = std::fs::read_to_string(filename)
            .map_err(|e| PyOSError::new_err(format!("{filename}: {e}")))?;
        self.execute(py, &code, false, targets, block, None)
    }

    /// `f` over the sequences, one block per engine, results in order.
    #[pyo3(signature = (f, *sequences, block=None))]
    fn map(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        sequences: &Bound<'_, PyTuple>,
        block: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        finish(self.chunked(py, f, sequences, true)?, self.block_for(block))
    }

    /// `map`, waiting for the results (block=True).
    #[pyo3(signature = (f, *sequences))]
    fn map_sync(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        sequences: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<PyAny>> {
        finish(self.chunked(py, f, sequences, true)?, true)
    }

    /// `map`, returning an AsyncMapResult at once (block=False).
    #[pyo3(signature = (f, *sequences))]
    fn map_async(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        sequences: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<PyAny>> {
        finish(self.chunked(py, f, sequences, true)?, false)
    }

    /// Decorator: calls of the function run on the engines.
    #[pyo3(signature = (block=None))]
    fn remote(slf: Bound<'_, Self>, block: Option<bool>) -> RemoteDecorator {
        RemoteDecorator::new(AnyView::Direct(slf.unbind()), block, None)
    }

    /// Decorator: calls run on chunks of the arguments, one per engine;
    /// `.map` runs element-wise.
    #[pyo3(signature = (dist="b", block=None))]
    fn parallel(
        slf: Bound<'_, Self>,
        dist: &str,
        block: Option<bool>,
    ) -> PyResult<RemoteDecorator> {
        only_block_distribution(dist)?;
        let blocks = MapOptions {
            chunksize: 1,
            ordered: true,
            return_exceptions: false,
            elementwise: false,
        };
        Ok(RemoteDecorator::new(
            AnyView::Direct(slf.unbind()),
            block,
            Some(blocks),
        ))
    }

    /// Sets names in the engines' namespaces from a dict.
    #[pyo3(signature = (ns, targets=None, block=None))]
    fn push(
        &self,
        py: Python<'_>,
        ns: &Bound<'_, PyAny>,
        targets: Option<&Bound<'_, PyAny>>,
        block: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        if !ns.is_instance_of::<PyDict>() {
            return Err(PyTypeError::new_err(format!(
                "push needs a dict of names to values, not {}",
                ns.get_type().name()?
            )));
        }
        let frames = rparallel_pyexec::serialize(ns)?;
        self.send_each(py, targets, Call::PUSH, Request::Push(frames), block)
    }

    /// Gets names (a str, or a list/tuple of them) from the engines.
    #[pyo3(signature = (names, targets=None, block=None))]
    fn pull(
        &self,
        py: Python<'_>,
        names: &Bound<'_, PyAny>,
        targets: Option<&Bound<'_, PyAny>>,
        block: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        let (list, one_name): (Vec<String>, bool) = if let Ok(name) = names.extract::<String>() {
            (vec![name], true)
        } else {
            let list = names
                .extract()
                .map_err(|_| PyTypeError::new_err("pull takes a name or a list/tuple of names"))?;
            (list, false)
        };
        self.send_each(
            py,
            targets,
            Call::pull(one_name),
            Request::Pull(list),
            block,
        )
    }

    fn __setitem__(&self, py: Python<'_>, key: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let ns = PyDict::new(py);
        ns.set_item(key, value)?;
        self.push(py, ns.as_any(), None, Some(true))?;
        Ok(())
    }

    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.pull(py, key, None, Some(true))
    }

    /// `pull(names, block=True)`.
    fn get(&self, py: Python<'_>, names: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.pull(py, names, None, Some(true))
    }

    /// `push(ns, block=True)`.
    fn update(&self, py: Python<'_>, ns: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.push(py, ns, None, Some(true))
    }

    /// Splits `seq` into one block per engine and pushes each as `key`.
    #[pyo3(signature = (key, seq, dist="b", flatten=false, targets=None, block=None))]
    #[allow(clippy::too_many_arguments)]
    fn scatter(
        &self,
        py: Python<'_>,
        key: &str,
        seq: &Bound<'_, PyAny>,
        dist: &str,
        flatten: bool,
        targets: Option<&Bound<'_, PyAny>>,
        block: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        only_block_distribution(dist)?;
        let helpers = helpers(py)?;
        let targets = self.targets_for(targets)?;
        let engines = self.engines(py, &targets)?;
        let seq = helpers.call_method1("sequence", (seq,))?;
        let mut requests = Vec::new();
        for (lo, hi) in blocks(seq.len()?, engines.len()) {
            let mut part = helpers.call_method1("partition", (&seq, lo, hi))?;
            if flatten && hi - lo == 1 {
                part = part.get_item(0)?;
            }
            let ns = PyDict::new(py);
            ns.set_item(key, part)?;
            requests.push(Request::Push(rparallel_pyexec::serialize(ns.as_any())?));
        }
        let result = self.submit(
            py,
            engines,
            crate::view::Requests::Each(requests),
            Call::SCATTER,
            false,
            None,
        )?;
        finish(result, self.block_for(block))
    }

    /// Pulls `key` from each engine and joins the parts (arrays as arrays).
    #[pyo3(signature = (key, dist="b", targets=None, block=None))]
    fn gather(
        &self,
        py: Python<'_>,
        key: &str,
        dist: &str,
        targets: Option<&Bound<'_, PyAny>>,
        block: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        only_block_distribution(dist)?;
        let request = Request::Pull(vec![key.to_string()]);
        self.send_each(py, targets, Call::GATHER, request, block)
    }

    /// Sets flags by keyword (`block`, `track`, `targets`); returns the
    /// view. An unknown flag is a KeyError, as in ipyparallel.
    #[pyo3(signature = (**flags))]
    fn set_flags<'py>(
        slf: Bound<'py, Self>,
        flags: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, Self>> {
        for (key, value) in flags.iter().flat_map(|f| f.iter()) {
            let name: String = key.extract()?;
            if !DIRECT_FLAGS.contains(&name.as_str()) {
                return Err(pyo3::exceptions::PyKeyError::new_err(format!(
                    "Invalid name: '{name}' (flags: {})",
                    DIRECT_FLAGS.join(", ")
                )));
            }
            slf.setattr(name.as_str(), value)?;
        }
        Ok(slf)
    }

    /// A context manager: the flags set for the `with` block only.
    #[pyo3(signature = (**flags))]
    fn temp_flags<'py>(
        slf: Bound<'py, Self>,
        flags: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let flags = flags.cloned().unwrap_or_else(|| PyDict::new(py));
        helpers(py)?.call_method1("temp_flags", (slf, flags))
    }

    /// The flags `set_flags` and `temp_flags` take.
    #[classattr]
    fn _flag_names() -> Vec<&'static str> {
        DIRECT_FLAGS.to_vec()
    }

    /// `sync_imports(local=True)`, as a property: `with view.importer:`.
    #[getter]
    fn importer(slf: Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        DirectView::sync_imports(slf, true, false)
    }

    /// Functions and classes travel with cloudpickle, here and on the
    /// view's engines (the default); the engines' AsyncResult.
    fn use_cloudpickle(slf: Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        DirectView::use_serializer(slf, "use_cloudpickle")
    }

    /// ipyparallel's return to its default serialization, which here is
    /// `use_cloudpickle()` (it already ships notebook functions).
    fn use_pickle(slf: Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        DirectView::use_serializer(slf, "use_pickle")
    }

    /// Functions, closures and classes travel with dill, here and on the
    /// view's engines (dill must be installed on both).
    fn use_dill(slf: Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        DirectView::use_serializer(slf, "use_dill")
    }

    /// A context manager: imports in the block also happen on the engines.
    #[pyo3(signature = (local=true, quiet=false))]
    fn sync_imports(slf: Bound<'_, Self>, local: bool, quiet: bool) -> PyResult<Py<PyAny>> {
        Ok(helpers(slf.py())?
            .call_method1("sync_imports", (slf.clone(), local, quiet))?
            .unbind())
    }

    /// Empties the engines' namespaces.
    #[pyo3(signature = (targets=None, block=None))]
    fn clear(
        &self,
        py: Python<'_>,
        targets: Option<&Bound<'_, PyAny>>,
        block: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        self.send_each(py, targets, Call::CLEAR, Request::Clear, block)
    }

    /// Makes this view the one `%px{suffix}` and its family run on.
    #[pyo3(signature = (suffix=""))]
    fn activate(slf: Bound<'_, Self>, suffix: &str) -> PyResult<()> {
        helpers(slf.py())?.call_method1("activate", (slf.clone(), suffix))?;
        Ok(())
    }

    /// A `concurrent.futures.Executor` running on this view.
    #[getter]
    fn executor(slf: Bound<'_, Self>) -> PyResult<Bound<'_, PyAny>> {
        helpers(slf.py())?.call_method1("ViewExecutor", (slf,))
    }

    /// Waits for results (AsyncResults or msg_ids); all outstanding if None.
    #[pyo3(signature = (jobs=None, timeout=None))]
    fn wait(
        &self,
        py: Python<'_>,
        jobs: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        wait_jobs(py, &self.client, jobs, timeout)
    }

    /// Aborts queued work on the view's engines (all of it, or `jobs`).
    #[pyo3(signature = (jobs=None, targets=None, block=None))]
    fn abort(
        &self,
        py: Python<'_>,
        jobs: Option<&Bound<'_, PyAny>>,
        targets: Option<&Bound<'_, PyAny>>,
        block: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        let msg_ids = job_ids(&self.client, jobs)?;
        self.send_each(py, targets, Call::ABORT, Request::Abort(msg_ids), block)
    }

    /// Stops the view's engines.
    #[pyo3(signature = (targets=None, block=None))]
    fn shutdown(
        &self,
        py: Python<'_>,
        targets: Option<&Bound<'_, PyAny>>,
        block: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        self.send_each(py, targets, Call::SHUTDOWN, Request::Shutdown, block)
    }

    fn __len__(&self) -> usize {
        self.targets
            .resolve(&self.client.ids())
            .map(|e| e.len())
            .unwrap_or(0)
    }

    fn __repr__(&self) -> String {
        match &self.targets {
            Targets::All => "<DirectView all>".into(),
            Targets::One(id) => format!("<DirectView {id}>"),
            Targets::Many(ids) => format!("<DirectView {ids:?}>"),
        }
    }
}

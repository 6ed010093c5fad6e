//! `DirectView`: work sent to a fixed set of engines. Every method goes
//! through [`DirectView::submit`], the one path from a view to the engines
//! (the `%px` magics use it too).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use pyo3::exceptions::{PyIndexError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySlice, PyString, PyTuple};
use serde_json::{json, Value};

use crate::core::{error, helpers, Core};
use crate::partition::blocks;
use crate::result::{AsyncResult, Combine};
use crate::targets::{TargetError, Targets};

#[pyclass(module = "rparallel", name = "DirectView")]
pub struct DirectView {
    pub core: Arc<Core>,
    pub client: Py<PyAny>,
    pub targets: Targets,
    /// Wait for results (true) or return AsyncResults (false, the default).
    #[pyo3(get, set)]
    pub block: bool,
    #[pyo3(get, set)]
    pub track: bool,
}

/// One request per engine: what to send (buffers are shared, not copied).
#[derive(Clone)]
pub struct Request {
    pub msg_type: &'static str,
    pub content: Value,
    pub buffers: Vec<Bytes>,
}

/// The Python exception for a bad target. With the controller gone, "no
/// engines" says so: the client cannot recover, a new one is needed.
pub fn target_error(py: Python<'_>, core: &Core, e: TargetError) -> PyErr {
    let lost = core.tracker().lock().controller_lost.clone();
    match e {
        TargetError::NoEngines => {
            let text = match lost {
                Some(reason) => {
                    format!("{e} ({reason}); start a cluster again and connect a new Client")
                }
                None => e.to_string(),
            };
            error(py, "NoEnginesRegistered", (text,))
        }
        TargetError::NoSuchEngine(_) => PyIndexError::new_err(e.to_string()),
        TargetError::Empty => pyo3::exceptions::PyValueError::new_err(e.to_string()),
    }
}

/// Reads a `targets` argument: None, 'all', an int, a list/tuple/range of
/// ints, or a slice (resolved against the live ids now).
pub fn parse_targets(core: &Core, targets: &Bound<'_, PyAny>) -> PyResult<Targets> {
    if let Ok(s) = targets.cast::<PyString>() {
        if s.to_str()? == "all" {
            return Ok(Targets::All);
        }
        return Err(PyTypeError::new_err(format!("bad targets: {s}")));
    }
    if let Ok(id) = targets.extract::<i64>() {
        let live = core.ids();
        return crate::targets::index(&live, id)
            .map(Targets::One)
            .map_err(|e| target_error(targets.py(), core, e));
    }
    if let Ok(slice) = targets.cast::<PySlice>() {
        let live = core.ids();
        let indices = slice.indices(live.len() as isize)?;
        let mut ids = Vec::new();
        let mut i = indices.start;
        while (indices.step > 0 && i < indices.stop) || (indices.step < 0 && i > indices.stop) {
            ids.push(live[i as usize]);
            i += indices.step;
        }
        return Ok(Targets::Many(ids));
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

pub fn targets_to_python(py: Python<'_>, targets: &Targets) -> PyResult<Py<PyAny>> {
    Ok(match targets {
        Targets::All => "all".into_pyobject(py)?.into_any().unbind(),
        Targets::One(id) => id.into_pyobject(py)?.into_any().unbind(),
        Targets::Many(ids) => PyList::new(py, ids)?.into_any().unbind(),
    })
}

impl DirectView {
    fn targets_for(&self, targets: Option<&Bound<'_, PyAny>>) -> PyResult<Targets> {
        match targets {
            Some(t) if !t.is_none() => parse_targets(&self.core, t),
            _ => Ok(self.targets.clone()),
        }
    }

    fn engines(&self, py: Python<'_>, targets: &Targets) -> PyResult<Vec<u32>> {
        targets
            .resolve(&self.core.ids())
            .map_err(|e| target_error(py, &self.core, e))
    }

    /// Sends one request per engine and wraps them in an AsyncResult;
    /// with `block`, waits and returns the value instead.
    #[allow(clippy::too_many_arguments)]
    pub fn submit(
        &self,
        py: Python<'_>,
        engines: Vec<u32>,
        single: bool,
        method: &'static str,
        combine: Combine,
        requests: Vec<Request>,
        block: bool,
    ) -> PyResult<Py<PyAny>> {
        let submitted = Instant::now();
        let core = self.core.clone();
        let pairs: Vec<(u32, Request)> = engines.iter().copied().zip(requests).collect();
        let msg_ids = py.detach(move || {
            pairs
                .into_iter()
                .map(|(engine, r)| core.request(Some(engine), r.msg_type, r.content, r.buffers))
                .collect::<Vec<_>>()
        });
        let label = match combine {
            Combine::Concat => format!("AsyncMapResult({method})"),
            _ => format!("AsyncResult({method})"),
        };
        let result = AsyncResult {
            core: self.core.clone(),
            msg_ids,
            engines,
            method,
            single,
            combine,
            submitted,
            label,
            pull_single_name: combine == Combine::PullOne,
            decoded: Default::default(),
        };
        let result = Bound::new(py, result)?;
        if block {
            result.borrow().get(py, None)
        } else {
            Ok(result.into_any().unbind())
        }
    }

    /// Sends the same request to every engine of `targets`.
    fn broadcast(
        &self,
        py: Python<'_>,
        targets: &Targets,
        method: &'static str,
        combine: Combine,
        request: Request,
        block: bool,
    ) -> PyResult<Py<PyAny>> {
        let engines = self.engines(py, targets)?;
        let requests = engines.iter().map(|_| request.clone()).collect();
        let single = targets.is_single() && combine != Combine::Concat;
        self.submit(py, engines, single, method, combine, requests, block)
    }

    fn block_for(&self, block: Option<bool>) -> bool {
        block.unwrap_or(self.block)
    }

    /// Applies `f` with per-engine chunks of `sequences` (map and parallel).
    fn chunked(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        sequences: &Bound<'_, PyTuple>,
        elementwise: bool,
        block: bool,
    ) -> PyResult<Py<PyAny>> {
        let helpers = helpers(py)?;
        let engines = self.engines(py, &self.targets)?;
        let seqs: Vec<Bound<'_, PyAny>> = sequences
            .iter()
            .map(|s| helpers.call_method1("sequence", (s,)))
            .collect::<PyResult<_>>()?;
        if seqs.is_empty() {
            return Err(PyTypeError::new_err("map needs at least one sequence"));
        }
        let n = seqs
            .iter()
            .map(|s| s.len())
            .collect::<PyResult<Vec<_>>>()?
            .into_iter()
            .min()
            .unwrap_or(0);
        let mut used = Vec::new();
        let mut requests = Vec::new();
        for (engine, (lo, hi)) in engines.iter().zip(blocks(n, engines.len())) {
            if lo == hi {
                continue;
            }
            let chunks: Vec<Bound<'_, PyAny>> = seqs
                .iter()
                .map(|s| helpers.call_method1("partition", (s, lo, hi)))
                .collect::<PyResult<_>>()?;
            let (func, args) = if elementwise {
                let mut args = vec![f.clone()];
                args.extend(chunks);
                (
                    py.import("rparallel._remote")?.getattr("map_chunk")?,
                    PyTuple::new(py, args)?,
                )
            } else {
                (f.clone(), PyTuple::new(py, chunks)?)
            };
            let call = PyTuple::new(
                py,
                [func.into_any(), args.into_any(), PyDict::new(py).into_any()],
            )?;
            requests.push(Request {
                msg_type: "apply_request",
                content: json!({}),
                buffers: rparallel_pyexec::serialize(call.as_any())?,
            });
            used.push(*engine);
        }
        self.submit(py, used, false, "map", Combine::Concat, requests, block)
    }
}

#[pymethods]
impl DirectView {
    #[getter]
    fn get_targets(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        targets_to_python(py, &self.targets)
    }

    #[setter]
    fn set_targets(&mut self, targets: &Bound<'_, PyAny>) -> PyResult<()> {
        self.targets = parse_targets(&self.core, targets)?;
        Ok(())
    }

    #[getter]
    fn client(&self, py: Python<'_>) -> Py<PyAny> {
        self.client.clone_ref(py)
    }

    /// Calls `f(*args, **kwargs)` on every engine of the view.
    #[pyo3(signature = (f, *args, **kwargs))]
    fn apply(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        self.apply_with(py, f, args, kwargs, self.block, None)
    }

    #[pyo3(signature = (f, *args, **kwargs))]
    fn apply_sync(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        self.apply_with(py, f, args, kwargs, true, None)
    }

    #[pyo3(signature = (f, *args, **kwargs))]
    fn apply_async(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        self.apply_with(py, f, args, kwargs, false, None)
    }

    /// Runs `code` on the engines; returns the AsyncResult (after waiting,
    /// when blocking: errors are raised).
    /// With `timeout` (seconds, blocking only), engines still running
    /// after it are interrupted, as `%%px --timeout` does.
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
        let result = self.execute_async(py, code, silent, &targets)?;
        if self.block_for(block) {
            match timeout.filter(|t| *t >= 0.0) {
                Some(seconds) => result.borrow(py).get_interrupting_after(py, seconds)?,
                None => result.borrow(py).get(py, None)?,
            };
        }
        Ok(result.into_any())
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
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("{filename}: {e}")))?;
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
        self.chunked(py, f, sequences, true, self.block_for(block))
    }

    #[pyo3(signature = (f, *sequences))]
    fn map_sync(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        sequences: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<PyAny>> {
        self.chunked(py, f, sequences, true, true)
    }

    #[pyo3(signature = (f, *sequences))]
    fn map_async(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        sequences: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<PyAny>> {
        self.chunked(py, f, sequences, true, false)
    }

    /// Decorator: calls of the function run on the engines.
    #[pyo3(signature = (block=None))]
    fn remote(
        slf: Bound<'_, Self>,
        block: Option<bool>,
    ) -> PyResult<crate::remote::RemoteDecorator> {
        Ok(crate::remote::RemoteDecorator {
            view: slf.unbind(),
            block,
            parallel: false,
        })
    }

    /// Decorator: calls run on chunks of the arguments, one per engine;
    /// `.map` runs element-wise.
    #[pyo3(signature = (dist="b", block=None))]
    fn parallel(
        slf: Bound<'_, Self>,
        dist: &str,
        block: Option<bool>,
    ) -> PyResult<crate::remote::RemoteDecorator> {
        if dist != "b" {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "only dist='b' (block) is supported",
            ));
        }
        Ok(crate::remote::RemoteDecorator {
            view: slf.unbind(),
            block,
            parallel: true,
        })
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
        let targets = self.targets_for(targets)?;
        let frames = rparallel_pyexec::serialize(ns)?;
        self.broadcast(
            py,
            &targets,
            "push",
            Combine::Each,
            Request {
                msg_type: "push_request",
                content: json!({}),
                buffers: frames,
            },
            self.block_for(block),
        )
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
        let (list, one): (Vec<String>, bool) = if let Ok(name) = names.extract::<String>() {
            (vec![name], true)
        } else {
            (
                names.extract().map_err(|_| {
                    PyTypeError::new_err("pull takes a name or a list/tuple of names")
                })?,
                false,
            )
        };
        let targets = self.targets_for(targets)?;
        let combine = if one { Combine::PullOne } else { Combine::Each };
        self.broadcast(
            py,
            &targets,
            "pull",
            combine,
            Request {
                msg_type: "pull_request",
                content: json!({ "names": list }),
                buffers: vec![],
            },
            self.block_for(block),
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
        if dist != "b" {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "only dist='b' (block) is supported",
            ));
        }
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
            requests.push(Request {
                msg_type: "push_request",
                content: json!({}),
                buffers: rparallel_pyexec::serialize(ns.as_any())?,
            });
        }
        self.submit(
            py,
            engines,
            false,
            "scatter",
            Combine::Each,
            requests,
            self.block_for(block),
        )
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
        if dist != "b" {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "only dist='b' (block) is supported",
            ));
        }
        let targets = self.targets_for(targets)?;
        let result = self.broadcast(
            py,
            &targets,
            "gather",
            Combine::Concat,
            Request {
                msg_type: "pull_request",
                content: json!({ "names": [key] }),
                buffers: vec![],
            },
            false,
        )?;
        {
            let bound = result.bind(py).cast::<AsyncResult>()?;
            bound.borrow_mut().pull_single_name = true;
        }
        if self.block_for(block) {
            return result.bind(py).call_method1("get", ()).map(Bound::unbind);
        }
        Ok(result)
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
        let targets = self.targets_for(targets)?;
        self.broadcast(
            py,
            &targets,
            "clear",
            Combine::Each,
            Request {
                msg_type: "clear_request",
                content: json!({}),
                buffers: vec![],
            },
            self.block_for(block),
        )
    }

    /// Makes this view the one `%px{suffix}` and its family run on.
    #[pyo3(signature = (suffix=""))]
    fn activate(slf: Bound<'_, Self>, suffix: &str) -> PyResult<()> {
        helpers(slf.py())?.call_method1("activate", (slf.clone(), suffix))?;
        Ok(())
    }

    /// Waits for results (AsyncResults or msg_ids); all outstanding if None.
    #[pyo3(signature = (jobs=None, timeout=None))]
    fn wait(
        &self,
        py: Python<'_>,
        jobs: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        crate::client::wait_jobs(py, &self.core, jobs, timeout)
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
        let msg_ids = crate::client::job_ids(jobs)?;
        let targets = self.targets_for(targets)?;
        self.broadcast(
            py,
            &targets,
            "abort",
            Combine::Each,
            Request {
                msg_type: "abort_request",
                content: json!({ "msg_ids": msg_ids }),
                buffers: vec![],
            },
            self.block_for(block),
        )
    }

    /// Stops the view's engines.
    #[pyo3(signature = (targets=None, block=None))]
    fn shutdown(
        &self,
        py: Python<'_>,
        targets: Option<&Bound<'_, PyAny>>,
        block: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        let targets = self.targets_for(targets)?;
        self.broadcast(
            py,
            &targets,
            "shutdown",
            Combine::Each,
            Request {
                msg_type: "shutdown_request",
                content: json!({}),
                buffers: vec![],
            },
            self.block_for(block),
        )
    }

    fn __len__(&self) -> usize {
        self.targets
            .resolve(&self.core.ids())
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

impl DirectView {
    /// Sends `code` to the engines of `targets` without waiting. `%px`
    /// sends it not silent: engines count it and return the last value.
    pub fn execute_async(
        &self,
        py: Python<'_>,
        code: &str,
        silent: bool,
        targets: &Targets,
    ) -> PyResult<Py<AsyncResult>> {
        let result = self.broadcast(
            py,
            targets,
            "execute",
            Combine::Each,
            Request {
                msg_type: "execute_request",
                content: json!({ "code": code, "silent": silent, "store_history": !silent, "stop_on_error": false }),
                buffers: vec![],
            },
            false,
        )?;
        Ok(result.into_bound(py).cast_into::<AsyncResult>()?.unbind())
    }

    pub fn apply_with(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        block: bool,
        method: Option<&'static str>,
    ) -> PyResult<Py<PyAny>> {
        if !f.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "apply needs a callable, not {}",
                f.get_type().name()?
            )));
        }
        let kwargs = match kwargs {
            Some(k) => k.clone(),
            None => PyDict::new(py),
        };
        let call = PyTuple::new(
            py,
            [
                f.clone().into_any(),
                args.clone().into_any(),
                kwargs.into_any(),
            ],
        )?;
        let request = Request {
            msg_type: "apply_request",
            content: json!({}),
            buffers: rparallel_pyexec::serialize(call.as_any())?,
        };
        self.broadcast(
            py,
            &self.targets,
            method.unwrap_or("apply"),
            Combine::Each,
            request,
            block,
        )
    }

    pub fn parallel_call(
        &self,
        py: Python<'_>,
        f: &Bound<'_, PyAny>,
        sequences: &Bound<'_, PyTuple>,
        elementwise: bool,
        block: bool,
    ) -> PyResult<Py<PyAny>> {
        self.chunked(py, f, sequences, elementwise, block)
    }
}

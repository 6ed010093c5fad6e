//! `DirectView`: work sent to a fixed set of engines. This module holds the
//! view and its Rust API; `DirectView::submit` is the one path from a
//! view to the engines (the Python methods in `view_methods`, remote
//! functions and the `%px` magics all take it).

use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::Bytes;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use rparallel_client::partition::blocks;
use rparallel_client::{Call, Client, Request, Targets};

use crate::convert::helpers;
use crate::errors::target_error;
use crate::result::AsyncResult;

/// A view on some engines (`rc[:]`, `rc[0]`, `rc[::2]`): every call goes
/// to each of them (apply, execute, map in blocks, push/pull,
/// scatter/gather); `block` says whether calls wait.
#[pyclass(module = "rparallel", name = "DirectView")]
pub struct DirectView {
    pub(crate) client: Arc<Client>,
    /// The Python Client this view belongs to (its `client` attribute).
    pub(crate) py_client: Py<PyAny>,
    pub(crate) targets: Targets,
    /// Wait for results (true) or return AsyncResults (false, the default).
    #[pyo3(get, set)]
    pub(crate) block: bool,
    /// Watch sends, so `ar.sent` / `ar.wait_for_send()` say when the
    /// arguments' buffers may be changed again.
    #[pyo3(get, set)]
    pub(crate) track: bool,
}

impl DirectView {
    pub(crate) fn new(client: Arc<Client>, py_client: Py<PyAny>, targets: Targets) -> Self {
        DirectView {
            client,
            py_client,
            targets,
            block: false,
            track: false,
        }
    }

    /// The connection this view sends through.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    pub fn set_targets(&mut self, targets: Targets) {
        self.targets = targets;
    }

    pub fn block(&self) -> bool {
        self.block
    }

    pub fn set_block(&mut self, block: bool) {
        self.block = block;
    }

    /// A `targets` argument, or the view's own targets.
    pub(crate) fn targets_for(&self, targets: Option<&Bound<'_, PyAny>>) -> PyResult<Targets> {
        match targets {
            Some(t) if !t.is_none() => crate::convert::targets(&self.client, t),
            _ => Ok(self.targets.clone()),
        }
    }

    /// The live engines `targets` picks.
    pub(crate) fn engines(&self, py: Python<'_>, targets: &Targets) -> PyResult<Vec<u32>> {
        targets
            .resolve(&self.client.ids())
            .map_err(|e| target_error(py, &self.client, e))
    }

    /// Sends the requests to `engines` and returns the AsyncResult of them
    /// all; `single`: its value is one engine's bare value.
    pub(crate) fn submit<'py>(
        &self,
        py: Python<'py>,
        engines: Vec<u32>,
        requests: Requests,
        call: Call,
        single: bool,
        label: Option<&str>,
    ) -> PyResult<Bound<'py, AsyncResult>> {
        let submitted = Instant::now();
        let client = self.client.clone();
        let mut requests = requests;
        let sending = self.track.then(|| match &mut requests {
            Requests::Same(request) => tracked(std::slice::from_mut(request)),
            Requests::Each(each) => tracked(each),
        });
        let to = engines.clone();
        // Sending may wait for credit (too much in flight): not with the GIL.
        let msg_ids = py.detach(move || match requests {
            Requests::Same(request) => client.send_each(&to, request),
            Requests::Each(each) => client.send_many(&to, each),
        });
        self.client.remember(&msg_ids);
        let result = AsyncResult::new(
            self.client.clone(),
            msg_ids,
            engines,
            call,
            single,
            submitted,
            label,
        );
        let result = Bound::new(py, result)?;
        result.borrow_mut().sending = sending;
        Ok(result)
    }

    /// Sends the same request to every engine of `targets`.
    pub(crate) fn broadcast<'py>(
        &self,
        py: Python<'py>,
        targets: &Targets,
        call: Call,
        request: Request,
    ) -> PyResult<Bound<'py, AsyncResult>> {
        let engines = self.engines(py, targets)?;
        let single = targets.is_single() && !call.shape.joins();
        self.submit(py, engines, Requests::Same(request), call, single, None)
    }

    /// Sends `code` to the engines of `targets` without waiting. `%px`
    /// sends it not silent: engines count it and return the last value.
    pub fn execute_async<'py>(
        &self,
        py: Python<'py>,
        code: &str,
        silent: bool,
        targets: &Targets,
        label: Option<&str>,
    ) -> PyResult<Bound<'py, AsyncResult>> {
        let engines = self.engines(py, targets)?;
        let request = Request::Execute {
            code: code.to_string(),
            silent,
        };
        self.submit(
            py,
            engines,
            Requests::Same(request),
            Call::EXECUTE,
            targets.is_single(),
            label,
        )
    }

    /// `f(*args, **kwargs)` on every engine of the view.
    pub(crate) fn apply<'py>(
        &self,
        py: Python<'py>,
        f: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, AsyncResult>> {
        let request = apply_request(py, f, args, kwargs)?;
        self.broadcast(py, &self.targets, Call::APPLY, request)
    }

    /// `f` over per-engine blocks of `sequences`: element-wise (map, a
    /// parallel function's `.map`), or on each whole block (calling a
    /// parallel function).
    pub(crate) fn chunked<'py>(
        &self,
        py: Python<'py>,
        f: &Bound<'py, PyAny>,
        sequences: &Bound<'py, PyTuple>,
        elementwise: bool,
    ) -> PyResult<Bound<'py, AsyncResult>> {
        let engines = self.engines(py, &self.targets)?;
        let seqs = Sequences::new(py, sequences)?;
        let mut used = Vec::new();
        let mut requests = Vec::new();
        let mut sizes = Vec::new();
        for (engine, (lo, hi)) in engines.iter().zip(blocks(seqs.len, engines.len())) {
            if lo == hi {
                continue;
            }
            requests.push(seqs.request(f, lo, hi, elementwise)?);
            used.push(*engine);
            sizes.push(hi - lo);
        }
        let result = self.submit(py, used, Requests::Each(requests), Call::MAP, false, None)?;
        result.borrow_mut().chunk_sizes = Some(sizes);
        Ok(result)
    }
}

/// A call's sequences, ready to cut into parts: each as a sequence, and
/// the length they share (the shortest one's).
pub(crate) struct Sequences<'py> {
    seqs: Vec<Bound<'py, PyAny>>,
    pub len: usize,
    helpers: Bound<'py, PyAny>,
}

impl<'py> Sequences<'py> {
    pub fn new(py: Python<'py>, sequences: &Bound<'py, PyTuple>) -> PyResult<Self> {
        let helpers = helpers(py)?;
        let seqs: Vec<Bound<'py, PyAny>> = sequences
            .iter()
            .map(|s| helpers.call_method1("sequence", (s,)))
            .collect::<PyResult<_>>()?;
        if seqs.is_empty() {
            return Err(PyTypeError::new_err("map needs at least one sequence"));
        }
        let len = seqs
            .iter()
            .map(|s| s.len())
            .collect::<PyResult<Vec<_>>>()?
            .into_iter()
            .min()
            .unwrap_or(0);
        Ok(Sequences {
            seqs,
            len,
            helpers: helpers.into_any(),
        })
    }

    /// The request running `f` on items `lo..hi`: element-wise (a map), or
    /// once on the slices (a parallel function's call).
    pub fn request(
        &self,
        f: &Bound<'py, PyAny>,
        lo: usize,
        hi: usize,
        elementwise: bool,
    ) -> PyResult<Request> {
        let py = f.py();
        // A map's function sees items, so a range can stay a range; a
        // parallel function sees the part itself, a list as ever.
        let cut = if elementwise { "map_part" } else { "partition" };
        let chunks: Vec<Bound<'py, PyAny>> = self
            .seqs
            .iter()
            .map(|s| self.helpers.call_method1(cut, (s, lo, hi)))
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
        Ok(Request::Apply(rparallel_pyexec::serialize(call.as_any())?))
    }
}

/// The request calling `f(*args, **kwargs)`: pickled here, so a function
/// that cannot be pickled fails in the caller before anything is sent.
pub(crate) fn apply_request(
    py: Python<'_>,
    f: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Request> {
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
    let call = PyTuple::new(py, [f.clone(), args.clone().into_any(), kwargs.into_any()])?;
    Ok(Request::Apply(rparallel_pyexec::serialize(call.as_any())?))
}

/// What a view sends: one request to every engine (written to shared
/// memory once), or a request for each.
pub(crate) enum Requests {
    Same(Request),
    Each(Vec<Request>),
}

/// Ties every frame of `requests` to one token, whose last strong
/// reference goes once the connection has written and dropped them all:
/// `ar.sent` of a `track=True` send.
pub(crate) fn tracked(requests: &mut [Request]) -> Weak<()> {
    /// A frame that holds the token while it lives.
    struct Tracked {
        bytes: Bytes,
        _token: Arc<()>,
    }
    impl AsRef<[u8]> for Tracked {
        fn as_ref(&self) -> &[u8] {
            &self.bytes
        }
    }
    let token = Arc::new(());
    for request in requests {
        if let Request::Apply(frames) | Request::Push(frames) = request {
            for frame in frames.iter_mut() {
                let bytes = std::mem::take(frame);
                *frame = Bytes::from_owner(Tracked {
                    bytes,
                    _token: token.clone(),
                });
            }
        }
    }
    Arc::downgrade(&token)
}

/// A result, or (`block`) its value once ready.
pub(crate) fn finish(result: Bound<'_, AsyncResult>, block: bool) -> PyResult<Py<PyAny>> {
    if block {
        AsyncResult::get(&result, None, None, None)
    } else {
        Ok(result.into_any().unbind())
    }
}

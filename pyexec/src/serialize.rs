//! Frames ↔ Python objects: cloudpickle with out-of-band buffers. The
//! Python half is `python/serialize.py` (module `rparallel_serialize`).
//!
//! Frames are [`Bytes`] on the Rust side and cross into Python without
//! copying:
//!
//! - **In**: each received frame becomes a [`Frame`], a bytes-like object
//!   whose buffer *is* the received memory, so `pickle.loads(..., buffers=)`
//!   rebuilds a numpy array over it. A read-only array costs no copy. A
//!   writable array (what the sender had) asks for a writable buffer; the
//!   frame then takes its memory over when it is the only owner, else copies
//!   it once, so the array is writable as on the sender. (Frames cut from a
//!   socket's read buffer share it, so that one copy is the usual case.) A
//!   frame cannot tell a read-only original from a writable one, so an array
//!   sent read-only arrives writable.
//! - **Out**: `bytes` and `memoryview` frames become `Bytes` that keep the
//!   Python object alive ([`Bytes::from_owner`]): no copy. Dropping such a
//!   `Bytes` needs no GIL: the reference goes to pyo3's pool and is released
//!   the next time a thread attaches, so an I/O thread can drop frames while
//!   Python is busy.
//!
//! As with ipyparallel's non-copying sends, an outgoing array's memory is the
//! array's own until the frame is written: code that mutates the array in
//! place right after returning it may race the send.

use std::ffi::{c_int, c_void};

use bytes::{Bytes, BytesMut};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyMemoryView, PyModule};

use crate::package::{load_module, PythonSource};

/// `python/serialize.py`.
const SERIALIZE: PythonSource = PythonSource {
    source: include_str!("../python/serialize.py"),
    file: c"<rparallel>/serialize.py",
    name: c"rparallel_serialize",
};

/// The loaded `rparallel_serialize` module, once per interpreter.
static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

pub(crate) fn module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    MODULE
        .get_or_try_init(py, || load_module(py, &SERIALIZE).map(Bound::unbind))
        .map(|m| m.bind(py))
}

// ---------------------------------------------------------------- frames in

/// A received frame as a Python bytes-like object (buffer protocol).
///
/// It has no `__releasebuffer__` on purpose: numpy wraps objects that have
/// one in a read-only `memoryview` before asking for a writable buffer,
/// which would make every received array read-only. Without it, a memory
/// handed out once is simply never moved or freed while the frame lives.
#[pyclass(module = "rparallel", name = "Frame")]
pub struct Frame {
    /// The received memory, shared with the socket's buffers: read-only.
    shared: Bytes,
    /// Memory this frame owns alone, made on the first writable request.
    owned: Option<BytesMut>,
    /// Whether a pointer into `shared` was ever handed out.
    exported: bool,
    /// The caller holds the only reference to `shared`: a buffer received
    /// through shared memory may then be written in place (no copy).
    exclusive: bool,
}

impl Frame {
    pub fn new(bytes: Bytes) -> Self {
        Frame {
            shared: bytes,
            owned: None,
            exported: false,
            exclusive: false,
        }
    }

    /// A writable pointer to a received shared-memory buffer we alone hold.
    fn in_place(&self) -> Option<*mut u8> {
        if self.exclusive && self.owned.is_none() {
            rparallel_protocol::shm::mapping_ptr(&self.shared)
        } else {
            None
        }
    }

    fn len(&self) -> usize {
        self.owned.as_ref().map_or(self.shared.len(), BytesMut::len)
    }

    /// Writable memory: the received memory itself when no one else holds
    /// it and it was never handed out, else a copy (once).
    fn make_writable(&mut self) -> &mut BytesMut {
        if self.owned.is_none() {
            let owned = if self.exported {
                BytesMut::from(self.shared.as_ref())
            } else {
                match std::mem::take(&mut self.shared).try_into_mut() {
                    Ok(owned) => owned,
                    Err(shared) => {
                        let copy = BytesMut::from(shared.as_ref());
                        self.shared = shared;
                        copy
                    }
                }
            };
            self.owned = Some(owned);
        }
        self.owned.as_mut().expect("just set")
    }
}

#[pymethods]
impl Frame {
    /// # Safety
    /// Called by CPython with a valid `view`.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let (ptr, len, readonly) = {
            let mut this = slf.borrow_mut();
            let writable = flags & ffi::PyBUF_WRITABLE == ffi::PyBUF_WRITABLE;
            let got = if let (true, Some(ptr)) = (writable, this.in_place()) {
                (ptr as *mut c_void, this.shared.len(), 0)
            } else if writable || this.owned.is_some() {
                let owned = this.make_writable();
                (owned.as_mut_ptr() as *mut c_void, owned.len(), 0)
            } else {
                (this.shared.as_ptr() as *mut c_void, this.shared.len(), 1)
            };
            this.exported = true;
            got
        };
        // SAFETY: neither `shared` nor `owned` is replaced or resized once a
        // pointer into it was handed out, and the view holds a reference to
        // this object (FillInfo sets `view.obj`), so `ptr` outlives the view.
        let status = unsafe {
            ffi::PyBuffer_FillInfo(view, slf.as_ptr(), ptr, len as isize, readonly, flags)
        };
        if status != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.len()
    }

    fn __repr__(&self) -> String {
        format!("<rparallel.Frame of {} bytes>", self.len())
    }
}

/// Received frames as a Python list of [`Frame`]s (no copy).
pub fn frames_to_python(py: Python<'_>, frames: Vec<Bytes>) -> PyResult<Bound<'_, PyList>> {
    frames_list(py, frames, false)
}

/// Frames the caller alone holds (an engine's request buffers): received
/// shared-memory buffers become writable arrays without a copy.
pub(crate) fn exclusive_frames(py: Python<'_>, frames: Vec<Bytes>) -> PyResult<Bound<'_, PyList>> {
    frames_list(py, frames, true)
}

fn frames_list(py: Python<'_>, frames: Vec<Bytes>, exclusive: bool) -> PyResult<Bound<'_, PyList>> {
    let objects = frames
        .into_iter()
        .map(|b| {
            let mut frame = Frame::new(b);
            frame.exclusive = exclusive;
            Py::new(py, frame)
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, objects)
}

// ---------------------------------------------------------------- frames out

/// Keeps a Python object alive for the `Bytes` that points into it.
struct PyOwned {
    _object: Py<PyAny>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the pointer is into memory kept alive and unmoved by `_object`
// (an immutable `bytes`, or a `memoryview` holding an export); `Py<PyAny>`
// may be dropped on any thread.
unsafe impl Send for PyOwned {}
unsafe impl Sync for PyOwned {}

impl AsRef<[u8]> for PyOwned {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: see the Send impl.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

fn bytes_frame(bytes: &Bound<'_, PyBytes>) -> Bytes {
    let data = bytes.as_bytes();
    Bytes::from_owner(PyOwned {
        ptr: data.as_ptr(),
        len: data.len(),
        _object: bytes.clone().into_any().unbind(),
    })
}

/// One Python bytes-like object as a frame: no copy for `bytes`, a frame we
/// received, or a C-contiguous buffer; one copy otherwise.
pub fn frame_from_python(object: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(bytes) = object.cast::<PyBytes>() {
        return Ok(bytes_frame(bytes));
    }
    if let Ok(frame) = object.cast::<Frame>() {
        let frame = frame.borrow();
        if frame.owned.is_none() {
            return Ok(frame.shared.clone());
        }
    }
    // A memoryview of its own holds the export, so the memory cannot move
    // or be freed (a bytearray cannot resize) while the frame lives.
    let view = PyMemoryView::from(object)?;
    let mut buffer = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
    // SAFETY: plain buffer-protocol calls with the GIL held; the buffer is
    // released at once, the memoryview keeps the memory.
    let simple =
        unsafe { ffi::PyObject_GetBuffer(view.as_ptr(), buffer.as_mut_ptr(), ffi::PyBUF_SIMPLE) };
    if simple != 0 {
        // Not contiguous: copy once.
        PyErr::fetch(object.py());
        let copied = view.call_method0("tobytes")?;
        return Ok(bytes_frame(copied.cast::<PyBytes>()?));
    }
    let (ptr, len) = unsafe {
        let mut buffer = buffer.assume_init();
        let got = (buffer.buf as *const u8, buffer.len as usize);
        ffi::PyBuffer_Release(&mut buffer);
        got
    };
    Ok(Bytes::from_owner(PyOwned {
        _object: view.into_any().unbind(),
        ptr,
        len,
    }))
}

/// A Python sequence of bytes-like objects as frames.
pub fn frames_from_python(frames: &Bound<'_, PyAny>) -> PyResult<Vec<Bytes>> {
    frames
        .try_iter()?
        .map(|item| frame_from_python(&item?))
        .collect()
}

/// `serialize(obj)`: frame 0 the pickle, then the out-of-band buffers.
/// Something that cannot be pickled is a TypeError naming it.
pub fn serialize(object: &Bound<'_, PyAny>) -> PyResult<Vec<Bytes>> {
    let frames = module(object.py())?.call_method1("serialize", (object,))?;
    frames_from_python(&frames)
}

/// [`deserialize`] of frames the caller alone holds: arrays received
/// through shared memory are written in place.
pub fn deserialize_exclusive(py: Python<'_>, frames: Vec<Bytes>) -> PyResult<Bound<'_, PyAny>> {
    let frames = exclusive_frames(py, frames)?;
    module(py)?.call_method1("deserialize", (frames,))
}

/// `deserialize(frames)`: arrays are rebuilt over the frames' memory.
pub fn deserialize(py: Python<'_>, frames: Vec<Bytes>) -> PyResult<Bound<'_, PyAny>> {
    let frames = frames_to_python(py, frames)?;
    module(py)?.call_method1("deserialize", (frames,))
}

//! Serialisation and the engine's namespace operations, embedded for real
//! (one interpreter per test binary, so one test, in order).

mod common;

use std::sync::Arc;

use bytes::Bytes;
use pyo3::prelude::*;
use rparallel_pyexec::{
    deserialize, serialize, IPythonLoad, InputError, Namespace, OutputEvent, OutputSink, PyShell,
};

struct Quiet;

impl OutputSink for Quiet {
    fn emit(&self, _event: OutputEvent) {}
    fn input(&self, _prompt: &str, _password: bool) -> Result<String, InputError> {
        Err(InputError::NotAllowed)
    }
}

/// Serialises the value of a Python expression evaluated in a fresh
/// `__main__`-like namespace (as a client's cell would be).
fn frames_of(expr: &str) -> Vec<Bytes> {
    Python::attach(|py| {
        let code = std::ffi::CString::new(format!(
            "ns = {{'__name__': '__main__'}}\nexec({expr:?}, ns)\nvalue = ns['value']"
        ))
        .unwrap();
        let locals = pyo3::types::PyDict::new(py);
        py.run(&code, None, Some(&locals)).unwrap();
        let value = locals.get_item("value").unwrap().unwrap();
        serialize(&value).unwrap()
    })
}

fn value_repr(frames: Vec<Bytes>) -> String {
    Python::attach(|py| deserialize(py, frames).unwrap().repr().unwrap().to_string())
}

#[test]
fn serialisation_and_namespace_operations() {
    common::start_python();
    let shell = PyShell::new(Arc::new(Quiet), IPythonLoad::OnFirstNeed).expect("core loads");
    let remote = Namespace::new(&shell).expect("serialisation core loads (cloudpickle in .venv)");

    // Plain values round-trip.
    let frames = frames_of("value = {'a': [1, 2.5, 'x'], 'b': None}");
    assert_eq!(frames.len(), 1);
    assert_eq!(value_repr(frames), "{'a': [1, 2.5, 'x'], 'b': None}");

    // A numpy array travels as its own frame: the pickle holds no data, and
    // the data frame points into the array (no copy).
    let frames = frames_of("import numpy as np\nvalue = np.arange(100000, dtype='float64')");
    assert_eq!(frames.len(), 2);
    assert!(
        frames[0].len() < 1000,
        "pickle of {} bytes",
        frames[0].len()
    );
    assert_eq!(frames[1].len(), 800000);
    assert_eq!(&frames[1][8..16], &1.0f64.to_ne_bytes());

    // Pushed, it is rebuilt over the received frame, writable as it was sent.
    let frames = frames_of("import numpy as np\nvalue = {'arr': np.arange(1000), 'a': 5}");
    remote.push(frames).unwrap();
    let out = shell.execute(
        "def owner(x):\n\
         \x20   while hasattr(x, 'base') and x.base is not None: x = x.base\n\
         \x20   return type(x.obj if isinstance(x, memoryview) else x).__name__\n\
         arr[0] = 7\n\
         (owner(arr), int(arr.sum()), a)",
        false,
        true,
    );
    assert_eq!(
        out.result.unwrap().unwrap().data["text/plain"],
        "('Frame', 499507, 5)"
    );

    // apply: an interactive function sees and sets the engine's globals;
    // helpers it needs from the sender are there while it runs only.
    let frames = frames_of(
        "def helper(x):\n    return x * 2\n\
         def f(x, y=0):\n    global written\n    written = x\n    return helper(a + x + y)\n\
         value = (f, (10,), {'y': 1})",
    );
    let result = remote.apply(frames).unwrap();
    assert_eq!(value_repr(result), "32");
    let out = shell.execute("written, 'helper' in globals()", false, true);
    assert_eq!(
        out.result.unwrap().unwrap().data["text/plain"],
        "(10, False)"
    );

    // apply returning an array: its data is a frame of its own.
    let frames = frames_of("import numpy as np\nvalue = (lambda n: np.ones(n), (4096,), {})");
    let result = remote.apply(frames).unwrap();
    assert_eq!(result.len(), 2);
    assert_eq!(result[1].len(), 4096 * 8);

    // Errors come back IPython-style, without the core's own frames.
    let frames = frames_of("def boom(x):\n    return 1 / x\nvalue = (boom, (0,), {})");
    let err = remote.apply(frames).unwrap_err();
    assert_eq!(err.ename, "ZeroDivisionError");
    assert_eq!(err.evalue, "division by zero");
    let text = common::plain(&err.traceback.join("\n"));
    assert!(text.contains("Traceback (most recent call last)"), "{text}");
    assert!(text.contains("in boom(x)"), "{text}");
    assert!(!text.contains("rparallel_serialize"), "{text}");

    // An unpicklable result names the object.
    let frames = frames_of("import threading\nvalue = (threading.Lock, (), {})");
    let err = remote.apply(frames).unwrap_err();
    assert_eq!(err.ename, "TypeError");
    assert!(
        err.evalue.contains("cannot serialize lock object"),
        "{}",
        err.evalue
    );

    // pull evaluates names; a missing one is a NameError.
    let pulled = remote.pull(&["a".into(), "arr[:3]".into()]).unwrap();
    assert_eq!(value_repr(pulled), "[5, array([7, 1, 2])]");
    let err = remote.pull(&["nope".into()]).unwrap_err();
    assert_eq!(err.ename, "NameError");
    assert!(err.evalue.contains("'nope'"), "{}", err.evalue);

    // push needs a dict.
    let err = remote.push(frames_of("value = [1]")).unwrap_err();
    assert_eq!(err.ename, "TypeError");

    // clear empties the namespace; the shell still works.
    remote.clear().unwrap();
    assert_eq!(remote.pull(&["a".into()]).unwrap_err().ename, "NameError");
    let out = shell.execute("x = 1\nx + 1", false, true);
    assert_eq!(out.result.unwrap().unwrap().data["text/plain"], "2");

    // Garbage frames are an error, not a crash.
    let err = remote
        .apply(vec![Bytes::from_static(b"not a pickle")])
        .unwrap_err();
    assert_eq!(err.ename, "UnpicklingError");
}

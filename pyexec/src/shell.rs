//! [`PyShell`]: one persistent Python namespace and the questions a kernel
//! asks about code. The Python half is the `Shell` of `python/shell.py`
//! (module `_rparallel_exec`) over IPython (`python/ipython.py`, loaded at
//! start or on first need: [`IPythonLoad`]). Answers come back as JSON and
//! are typed here.

use std::sync::Arc;

use pyo3::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hooks::Hooks;
use crate::output::OutputSink;
use crate::package::{load_module, PythonSource};

/// The execution core's Python modules, in load order (each imports the
/// ones before it).
const CORE: [PythonSource; 2] = [
    PythonSource {
        source: include_str!("../python/display.py"),
        file: c"<rparallel>/display.py",
        name: c"_rparallel_display",
    },
    PythonSource {
        source: include_str!("../python/shell.py"),
        file: c"<rparallel>/shell.py",
        name: c"_rparallel_exec",
    },
];

/// The IPython half of the core (`_rparallel_ipython`), compiled by the
/// shell when IPython loads.
const IPYTHON: &str = include_str!("../python/ipython.py");

/// When a process loads IPython (≈ 14 MiB, ≈ 0.1 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IPythonLoad {
    /// At start: the kernel, where every cell may need it.
    AtStart,
    /// On the first cell, display, error or matplotlib import that needs
    /// it: engines, most of which only run functions.
    OnFirstNeed,
}

impl CellError {
    /// An error with its traceback lines, not yet published.
    pub fn new(
        ename: impl Into<String>,
        evalue: impl Into<String>,
        traceback: Vec<String>,
    ) -> Self {
        CellError {
            ename: ename.into(),
            evalue: evalue.into(),
            traceback,
            shown: false,
        }
    }

    /// A failure of rparallel's own Python (not the user's code): `place`
    /// names the part that failed, after the error's own line.
    pub fn internal(py: Python<'_>, err: PyErr, place: &str) -> Self {
        let ename = err
            .get_type(py)
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "Exception".into());
        let evalue = err.value(py).to_string();
        let traceback = vec![format!("{ename}: {evalue} (in {place})")];
        CellError::new(ename, evalue, traceback)
    }

    /// An error whose traceback is the one line `ename: evalue`.
    pub fn line(ename: &str, evalue: impl Into<String>) -> Self {
        let evalue = evalue.into();
        CellError::new(ename, evalue.clone(), vec![format!("{ename}: {evalue}")])
    }
}

/// A rich representation: `data` maps MIME types to values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MimeBundle {
    pub data: Value,
    #[serde(default)]
    pub metadata: Value,
}

/// An exception raised by a cell, with its IPython-style traceback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellError {
    pub ename: String,
    pub evalue: String,
    pub traceback: Vec<String>,
    /// Already published as an `error` output (IPython publishes each
    /// traceback as it is shown); the reply still carries it.
    #[serde(default, rename = "error_shown", skip_serializing)]
    pub shown: bool,
}

/// What running a cell produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecuteOutcome {
    pub execution_count: u32,
    /// The last expression's value (if any; already published as the
    /// execute_result), or the error.
    pub result: Result<Option<MimeBundle>, CellError>,
    /// Jupyter payloads for the reply (e.g. `ask_exit` from `exit`).
    pub payload: Vec<Value>,
}

#[derive(Deserialize)]
struct RawOutcome {
    status: String,
    execution_count: u32,
    data: Option<Value>,
    #[serde(default)]
    metadata: Value,
    #[serde(flatten)]
    error: Option<CellError>,
    #[serde(default)]
    payload: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub matches: Vec<String>,
    pub cursor_start: usize,
    pub cursor_end: usize,
    /// IPython's completion types (`_jupyter_types_experimental`).
    #[serde(default)]
    pub metadata: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inspection {
    pub found: bool,
    pub data: Value,
}

/// `is_complete`'s verdict: `status` is complete, incomplete or invalid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsComplete {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indent: Option<String>,
}

/// One namespace. Lives on the Python thread.
pub struct PyShell {
    shell: Py<PyAny>,
}

impl PyShell {
    /// Loads the execution core and takes over `sys.stdout`, `sys.stderr`,
    /// `display`, `input` and SIGINT for this process; `import rparallel`
    /// works from then on ([`crate::package`]).
    pub fn new(sink: Arc<dyn OutputSink>, ipython: IPythonLoad) -> PyResult<Self> {
        Python::attach(|py| {
            let mut loaded = Vec::new();
            for module in &CORE {
                loaded.push(load_module(py, module)?);
            }
            let module = loaded.pop().expect("the shell module is last");
            let stdin_error = module.getattr("StdinNotImplementedError")?.unbind();
            let hooks = Py::new(py, Hooks::new(sink, stdin_error))?;
            crate::package::install(py)?;
            let shell = module.getattr("Shell")?.call1((
                hooks,
                IPYTHON,
                ipython == IPythonLoad::AtStart,
            ))?;
            Ok(PyShell {
                shell: shell.unbind(),
            })
        })
    }

    /// The count the next stored cell will get.
    pub fn execution_count(&self) -> u32 {
        Python::attach(|py| {
            self.shell
                .bind(py)
                .getattr("execution_count")
                .and_then(|c| c.extract())
                .unwrap_or(0)
        })
    }

    /// Runs a cell as a frontend sent it (IPython transforms magics, `!`
    /// and `?`). Outputs go to the sink while it runs.
    pub fn execute(&self, code: &str, silent: bool, store_history: bool) -> ExecuteOutcome {
        let count = self.execution_count();
        let raw = self.call_json::<RawOutcome>("run_cell", (code, silent, store_history));
        crate::fdcapture::drain();
        match raw {
            Ok(raw) => ExecuteOutcome {
                execution_count: raw.execution_count,
                result: if raw.status == "ok" {
                    Ok(raw.data.map(|data| MimeBundle {
                        data,
                        metadata: raw.metadata,
                    }))
                } else {
                    Err(raw
                        .error
                        .unwrap_or_else(|| CellError::line("RuntimeError", "no error details")))
                },
                payload: raw.payload,
            },
            Err(error) => ExecuteOutcome {
                execution_count: count,
                result: Err(error),
                payload: Vec::new(),
            },
        }
    }

    /// Runs the atexit handlers registered by cells (before the process exits).
    pub fn at_exit(&self) {
        let _: Result<Value, _> = self.call_json("at_exit", ());
    }

    /// Evaluates `expressions` (a JSON object of name → expression).
    pub fn user_expressions(&self, expressions: &Value) -> Value {
        self.call_json("user_expressions", (expressions.to_string(),))
            .unwrap_or_else(|_| Value::Object(Default::default()))
    }

    /// `sys.version`'s first word, e.g. "3.11.7".
    pub fn python_version(&self) -> String {
        Python::version_str()
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    pub fn complete(&self, code: &str, cursor_pos: usize) -> Completion {
        self.call_json("complete", (code, cursor_pos))
            .unwrap_or_else(|_| Completion {
                matches: vec![],
                cursor_start: cursor_pos,
                cursor_end: cursor_pos,
                metadata: Value::Object(Default::default()),
            })
    }

    pub fn inspect(&self, code: &str, cursor_pos: usize, detail_level: u8) -> Inspection {
        self.call_json("inspect", (code, cursor_pos, detail_level))
            .unwrap_or(Inspection {
                found: false,
                data: Value::Object(Default::default()),
            })
    }

    pub fn is_complete(&self, code: &str) -> IsComplete {
        self.call_json("is_complete", (code,))
            .unwrap_or(IsComplete {
                status: "unknown".into(),
                indent: None,
            })
    }

    /// A comm message from the frontend (`comm_open`, `comm_msg`,
    /// `comm_close`, `comm_info_request`): the reply's content, if it has
    /// one. Bad messages are logged and dropped by the Python side.
    pub fn comm_message(&self, message: &Value, buffers: Vec<bytes::Bytes>) -> Option<Value> {
        let buffers: Vec<std::borrow::Cow<[u8]>> = buffers
            .iter()
            .map(|b| std::borrow::Cow::Borrowed(&b[..]))
            .collect();
        match self.call_json::<Value>("comm_message", (message.to_string(), buffers)) {
            Ok(Value::Null) => None,
            Ok(reply) => Some(reply),
            Err(e) => {
                tracing::warn!("comm message failed: {}", e.evalue);
                None
            }
        }
    }

    /// Calls a method of the Python shell that returns JSON.
    fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        args: impl for<'py> pyo3::call::PyCallArgs<'py>,
    ) -> Result<T, CellError> {
        Python::attach(|py| {
            let text: String = self
                .shell
                .bind(py)
                .call_method1(method, args)
                .and_then(|r| r.extract())
                .map_err(|e| CellError::internal(py, e, "the execution core"))?;
            serde_json::from_str(&text).map_err(|e| CellError::line("RuntimeError", e.to_string()))
        })
    }
}

// Access for the engine's namespace operations (`remote`).
impl PyShell {
    /// The Python `Shell` object; its `user_ns` is the namespace cells run in.
    pub fn py_shell(&self, py: Python<'_>) -> Py<PyAny> {
        self.shell.clone_ref(py)
    }
}

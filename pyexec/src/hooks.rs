//! The Rust object that Python's output machinery calls.

use std::sync::Arc;

use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::output::{InputError, OutputEvent, OutputSink};

/// `hooks` in `python/shell.py`.
#[pyclass(frozen)]
pub struct Hooks {
    sink: Arc<dyn OutputSink>,
    stdin_error: Py<PyAny>,
}

impl Hooks {
    pub fn new(sink: Arc<dyn OutputSink>, stdin_error: Py<PyAny>) -> Self {
        Hooks { sink, stdin_error }
    }

    fn emit(&self, py: Python<'_>, event: OutputEvent) {
        let sink = self.sink.clone();
        py.detach(move || sink.emit(event));
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

#[pymethods]
impl Hooks {
    fn stream(&self, py: Python<'_>, name: String, text: &Bound<'_, PyString>) {
        // Lossy: a lone surrogate in printed text must not fail the print.
        let text = text.to_string_lossy().into_owned();
        self.emit(py, OutputEvent::Stream { name, text });
    }

    fn display(&self, py: Python<'_>, data: &str, metadata: &str, transient: &str, update: bool) {
        self.emit(
            py,
            OutputEvent::Display {
                data: json(data),
                metadata: json(metadata),
                transient: json(transient),
                update,
            },
        );
    }

    fn result(&self, py: Python<'_>, execution_count: u32, data: &str, metadata: &str) {
        self.emit(
            py,
            OutputEvent::Result {
                execution_count,
                data: json(data),
                metadata: json(metadata),
            },
        );
    }

    /// A traceback shown (`{ename, evalue, traceback}` as JSON).
    fn error(&self, py: Python<'_>, content: &str) {
        self.emit(
            py,
            OutputEvent::Error {
                content: json(content),
            },
        );
    }

    fn clear_output(&self, py: Python<'_>, wait: bool) {
        self.emit(py, OutputEvent::ClearOutput { wait });
    }

    /// A comm's message (`comm_open`, `comm_msg`, `comm_close`), or a
    /// task's live data (`data_message`).
    fn message(
        &self,
        py: Python<'_>,
        msg_type: &str,
        content: &str,
        metadata: &str,
        buffers: Vec<Vec<u8>>,
    ) -> PyResult<()> {
        let msg_type = match msg_type {
            "comm_open" => "comm_open",
            "comm_msg" => "comm_msg",
            "comm_close" => "comm_close",
            // `rparallel.datapub.publish_data`: a task's live data.
            "data_message" => "data_message",
            other => {
                return Err(PyRuntimeError::new_err(format!(
                    "not a comm or data message: {other}"
                )))
            }
        };
        let buffers = buffers.into_iter().map(bytes::Bytes::from).collect();
        self.emit(
            py,
            OutputEvent::Comm {
                msg_type,
                content: json(content),
                metadata: json(metadata),
                buffers,
            },
        );
        Ok(())
    }

    /// The request being served, as JSON (`null` if none).
    fn parent(&self) -> String {
        self.sink.parent().to_string()
    }

    fn input(&self, py: Python<'_>, prompt: String, password: bool) -> PyResult<String> {
        let sink = self.sink.clone();
        match py.detach(move || sink.input(&prompt, password)) {
            Ok(line) => Ok(line),
            Err(InputError::Interrupted) => Err(PyKeyboardInterrupt::new_err(())),
            Err(e @ InputError::NotAllowed) => Err(PyErr::from_value(
                self.stdin_error.bind(py).call1((e.to_string(),))?,
            )),
            Err(e) => Err(PyRuntimeError::new_err(e.to_string())),
        }
    }
}

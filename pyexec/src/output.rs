//! What a running cell emits, and where it goes.

use bytes::Bytes;
use serde_json::Value;

/// One piece of output produced while a cell runs.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputEvent {
    /// Text written to `sys.stdout` (`name == "stdout"`) or `sys.stderr`.
    Stream { name: String, text: String },
    /// `display(obj)`: a MIME bundle; `update` for `update_display_data`.
    Display {
        data: Value,
        metadata: Value,
        transient: Value,
        update: bool,
    },
    /// The value of a cell's last expression (`Out[execution_count]`).
    Result {
        execution_count: u32,
        data: Value,
        metadata: Value,
    },
    /// A traceback shown (`error`): IPython shows each as it happens.
    Error { content: Value },
    /// `clear_output(wait)`.
    ClearOutput { wait: bool },
    /// A comm's message to the frontend (`comm_open`, `comm_msg`,
    /// `comm_close`), with binary buffers.
    Comm {
        msg_type: &'static str,
        content: Value,
        metadata: Value,
        buffers: Vec<Bytes>,
    },
}

/// How an [`OutputEvent`] goes on the wire: stream text (which publishers
/// coalesce) or a Jupyter message ready to send.
pub enum WireOutput {
    Stream {
        name: String,
        text: String,
    },
    Message {
        msg_type: &'static str,
        content: Value,
        /// The message's metadata (Null: none) and binary buffers.
        metadata: Value,
        buffers: Vec<Bytes>,
    },
}

impl OutputEvent {
    /// The Jupyter message type and content of this output.
    pub fn into_wire(self) -> WireOutput {
        match self {
            OutputEvent::Stream { name, text } => WireOutput::Stream { name, text },
            OutputEvent::Display {
                data,
                metadata,
                transient,
                update,
            } => WireOutput::Message {
                msg_type: if update {
                    "update_display_data"
                } else {
                    "display_data"
                },
                content: serde_json::json!({ "data": data, "metadata": metadata, "transient": transient }),
                metadata: Value::Null,
                buffers: Vec::new(),
            },
            OutputEvent::Result {
                execution_count,
                data,
                metadata,
            } => WireOutput::Message {
                msg_type: "execute_result",
                content: serde_json::json!({
                    "execution_count": execution_count,
                    "data": data,
                    "metadata": metadata,
                }),
                metadata: Value::Null,
                buffers: Vec::new(),
            },
            OutputEvent::Error { content } => WireOutput::Message {
                msg_type: "error",
                content,
                metadata: Value::Null,
                buffers: Vec::new(),
            },
            OutputEvent::ClearOutput { wait } => WireOutput::Message {
                msg_type: "clear_output",
                content: serde_json::json!({ "wait": wait }),
                metadata: Value::Null,
                buffers: Vec::new(),
            },
            OutputEvent::Comm {
                msg_type,
                content,
                metadata,
                buffers,
            } => WireOutput::Message {
                msg_type,
                content,
                metadata,
                buffers,
            },
        }
    }
}

/// Why `input()` could not be answered.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("raw_input was called, but this frontend does not support input requests.")]
    NotAllowed,
    #[error("input was interrupted")]
    Interrupted,
    #[error("input failed: {0}")]
    Failed(String),
}

/// Receives a cell's output as it is produced. Called on the Python thread
/// with the GIL released, so an implementation may block (backpressure).
pub trait OutputSink: Send + Sync + 'static {
    fn emit(&self, event: OutputEvent);
    /// Asks the user for a line of input.
    fn input(&self, prompt: &str, password: bool) -> Result<String, InputError>;
    /// The request being served (header, metadata and type; no content),
    /// for libraries that ask (ipywidgets' Output widget).
    fn parent(&self) -> Value {
        Value::Null
    }
}

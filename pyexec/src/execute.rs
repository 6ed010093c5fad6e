//! The execute path, one for the kernel and the engines: an
//! `execute_request` is read, its input published, the cell run (its
//! output going to the [`Sink`] meanwhile), its result or error published,
//! and the reply built. Runs on the Python thread.

use rparallel_protocol::message::now_iso8601;
use rparallel_protocol::Message;
use serde_json::{json, Value};

use crate::publish::{Parent, Stamp};
use crate::shell::PyShell;
use crate::sink::Sink;

/// What a process assumes when an execute_request leaves a field out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// Abort the execute requests queued behind a cell that fails.
    pub stop_on_error: bool,
    /// Publish the code as `execute_input` before running it.
    pub publish_input: bool,
}

impl Defaults {
    /// The Jupyter protocol's: a kernel stops after an error, and every
    /// frontend on IOPub sees the code that runs.
    pub const KERNEL: Defaults = Defaults {
        stop_on_error: true,
        publish_input: true,
    };
    /// An engine runs what it is sent: a client sending many requests sees
    /// later ones aborted only when it said so. Its outputs go only to the
    /// client that sent the code, which has it: no `execute_input`.
    pub const ENGINE: Defaults = Defaults {
        stop_on_error: false,
        publish_input: false,
    };
}

/// What an execute_request asks for, read once from its content.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecuteRequest {
    /// The code as sent: shown as execute_input and kept in history.
    pub code: String,
    /// The cell that runs: `code`, unless the process routes it elsewhere
    /// (the kernel's `%autopx` sends it to the engines).
    pub cell: String,
    pub silent: bool,
    pub store_history: bool,
    pub stop_on_error: bool,
    pub publish_input: bool,
    /// Expressions to evaluate after a successful cell (name → code).
    pub user_expressions: Value,
}

impl ExecuteRequest {
    pub fn parse(content: &Value, defaults: Defaults) -> Self {
        let flag = |key: &str, default: bool| content[key].as_bool().unwrap_or(default);
        let silent = flag("silent", false);
        let code = content["code"].as_str().unwrap_or("").to_string();
        ExecuteRequest {
            cell: code.clone(),
            code,
            silent,
            store_history: flag("store_history", !silent) && !silent,
            stop_on_error: flag("stop_on_error", defaults.stop_on_error),
            publish_input: defaults.publish_input && !silent,
            user_expressions: content
                .get("user_expressions")
                .cloned()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({})),
        }
    }
}

/// What running a cell gave its process.
#[derive(Debug)]
pub struct Executed {
    /// The `execute_reply`, ready to send.
    pub reply: Message,
    pub execution_count: u32,
    /// The result's `text/plain`, for the kernel's history.
    pub result_text: Option<String>,
    /// The cell failed and asked to stop on error: abort the queued cells.
    pub abort_queue: bool,
}

/// Runs `request` (an execute_request, read as `execute`) on `shell`.
pub fn run(
    shell: &PyShell,
    sink: &Sink,
    stamp: &dyn Stamp,
    request: &Parent,
    execute: &ExecuteRequest,
) -> Executed {
    let started = now_iso8601();
    let publisher = sink.publisher();
    let parent = || Some(request.clone());
    sink.set_parent(request);
    if execute.publish_input {
        let input = json!({ "code": execute.code, "execution_count": shell.execution_count() });
        publisher.blocking_output("execute_input", input, parent());
    }
    let outcome = shell.execute(&execute.cell, execute.silent, execute.store_history);
    let count = outcome.execution_count;
    let mut result_text = None;
    let mut content = match &outcome.result {
        Ok(result) => {
            // Already published, by the display hook, as it was produced.
            if let Some(bundle) = result {
                result_text = bundle.data["text/plain"].as_str().map(str::to_string);
            }
            json!({ "status": "ok" })
        }
        Err(error) => {
            let mut content = serde_json::to_value(error).unwrap_or_default();
            if !error.shown {
                publisher.blocking_output("error", content.clone(), parent());
            }
            content["status"] = json!("error");
            content
        }
    };
    let failed = outcome.result.is_err();
    let asked = execute
        .user_expressions
        .as_object()
        .is_some_and(|m| !m.is_empty());
    content["execution_count"] = json!(count);
    content["user_expressions"] = if asked && !failed {
        shell.user_expressions(&execute.user_expressions)
    } else {
        json!({})
    };
    content["payload"] = json!(outcome.payload);
    Executed {
        reply: stamp.reply(request, content, &started),
        execution_count: count,
        result_text,
        abort_queue: failed && execute.stop_on_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_the_request_leaves_out() {
        let kernel = ExecuteRequest::parse(&json!({"code": "1"}), Defaults::KERNEL);
        assert_eq!(kernel.code, "1");
        assert_eq!(kernel.cell, "1");
        assert!(!kernel.silent && kernel.store_history && kernel.stop_on_error);
        assert_eq!(kernel.user_expressions, json!({}));
        let engine = ExecuteRequest::parse(&json!({"code": "1"}), Defaults::ENGINE);
        assert!(!engine.stop_on_error && !engine.publish_input);
        assert!(kernel.publish_input);
    }

    #[test]
    fn silent_cells_are_never_stored() {
        let request = ExecuteRequest::parse(
            &json!({"code": "x", "silent": true, "store_history": true}),
            Defaults::KERNEL,
        );
        assert!(request.silent && !request.store_history);
        let request = ExecuteRequest::parse(
            &json!({"store_history": false, "stop_on_error": false}),
            Defaults::KERNEL,
        );
        assert!(!request.store_history && !request.stop_on_error);
        assert_eq!(request.code, "");
    }

    #[test]
    fn user_expressions_must_be_an_object() {
        let request = ExecuteRequest::parse(
            &json!({"code": "", "user_expressions": [1]}),
            Defaults::KERNEL,
        );
        assert_eq!(request.user_expressions, json!({}));
        let request = ExecuteRequest::parse(
            &json!({"code": "", "user_expressions": {"a": "1+1"}}),
            Defaults::KERNEL,
        );
        assert_eq!(request.user_expressions, json!({"a": "1+1"}));
    }
}

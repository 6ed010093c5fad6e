//! The shell channel: requests are served one at a time, in order, each
//! wrapped in busy/idle. Execution runs on the Python thread while this
//! task waits, so the control channel stays responsive.

use std::collections::VecDeque;
use std::sync::Arc;

use rparallel_protocol::message::now_iso8601;
use rparallel_protocol::Message;
use rparallel_pyexec::input::{cell_magic_complete, parse_cell, Cell};
use rparallel_pyexec::IsComplete;
use serde_json::{json, Value};

use crate::history::History;
use crate::iopub::Iopub;
use crate::px::AutoPx;
use crate::python::{KernelSink, PythonHandle};
use crate::server::KernelInfo;
use crate::sockets::{Incoming, Replier};

pub struct ShellChannel {
    pub replier: Replier,
    pub incoming: Incoming,
    pub iopub: Iopub,
    pub python: PythonHandle,
    pub sink: Arc<KernelSink>,
    pub info: KernelInfo,
    pub history: History,
    /// Whether cells go to the engines (`%autopx`).
    pub autopx: AutoPx,
}

/// What an execute request asked for, read once from its content.
struct ExecuteRequest {
    code: String,
    silent: bool,
    store_history: bool,
    stop_on_error: bool,
    user_expressions: Value,
}

impl ExecuteRequest {
    fn from(content: &Value) -> Self {
        let flag = |key: &str, default: bool| content[key].as_bool().unwrap_or(default);
        let silent = flag("silent", false);
        ExecuteRequest {
            code: content["code"].as_str().unwrap_or("").to_string(),
            silent,
            store_history: flag("store_history", !silent) && !silent,
            stop_on_error: flag("stop_on_error", true),
            user_expressions: content
                .get("user_expressions")
                .cloned()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({})),
        }
    }
}

impl ShellChannel {
    pub async fn run(mut self) {
        let mut backlog: VecDeque<Arc<Message>> = VecDeque::new();
        loop {
            let request = match backlog.pop_front() {
                Some(request) => request,
                None => match self.incoming.recv().await {
                    Some(request) => request,
                    None => return,
                },
            };
            // Like ipykernel: execute requests already queued when a cell
            // fails with stop_on_error are aborted; anything else is served.
            for queued in self.serve(&request).await {
                if queued.msg_type() == "execute_request" {
                    self.abort(&queued).await;
                } else {
                    backlog.push_back(queued);
                }
            }
        }
    }

    /// Serves one request. A failed cell with stop_on_error returns the
    /// requests that were queued behind it when it failed.
    async fn serve(&mut self, request: &Arc<Message>) -> Vec<Arc<Message>> {
        self.iopub.status("busy", Some(request.clone())).await;
        let mut queued = Vec::new();
        match request.msg_type() {
            "execute_request" => queued = self.execute(request).await,
            "kernel_info_request" => {
                let info = self.info.get(&self.python).await;
                self.replier.reply(request, info).await;
            }
            "is_complete_request" => {
                let verdict = match parse_cell(request.content_str("code")) {
                    // A cell magic's body is not Python: it ends at a blank line.
                    Cell::CellMagic { .. } => IsComplete {
                        status: if cell_magic_complete(request.content_str("code")) {
                            "complete".into()
                        } else {
                            "incomplete".into()
                        },
                        indent: Some(String::new()),
                    },
                    python => {
                        let code = python.into_python();
                        self.python.call(move |sh| sh.is_complete(&code)).await
                    }
                };
                let content = serde_json::to_value(verdict).unwrap_or_default();
                self.replier.reply(request, content).await;
            }
            "complete_request" => {
                let code = request.content_str("code").to_string();
                let cursor = cursor_pos(&request.content, &code);
                let found = self.python.call(move |sh| sh.complete(&code, cursor)).await;
                let content = json!({
                    "status": "ok",
                    "matches": found.matches,
                    "cursor_start": found.cursor_start,
                    "cursor_end": found.cursor_end,
                    "metadata": {},
                });
                self.replier.reply(request, content).await;
            }
            "inspect_request" => {
                let code = request.content_str("code").to_string();
                let cursor = cursor_pos(&request.content, &code);
                let detail = request.content["detail_level"].as_u64().unwrap_or(0) as u8;
                let found = self
                    .python
                    .call(move |sh| sh.inspect(&code, cursor, detail))
                    .await;
                let content = json!({
                    "status": "ok",
                    "found": found.found,
                    "data": found.data,
                    "metadata": {},
                });
                self.replier.reply(request, content).await;
            }
            "history_request" => {
                let history = self.history.answer(&request.content);
                self.replier
                    .reply(request, json!({ "status": "ok", "history": history }))
                    .await;
            }
            "comm_info_request" => {
                self.replier
                    .reply(request, json!({ "status": "ok", "comms": {} }))
                    .await;
            }
            "comm_open" | "comm_msg" | "comm_close" => {}
            other => tracing::warn!("shell: unsupported message type {other}"),
        }
        self.iopub.status("idle", Some(request.clone())).await;
        queued
    }

    async fn execute(&mut self, request: &Arc<Message>) -> Vec<Arc<Message>> {
        let started = now_iso8601();
        let req = ExecuteRequest::from(&request.content);
        let (iopub, sink, parent) = (self.iopub.clone(), self.sink.clone(), request.clone());
        let code = self.autopx.cell(&req.code);
        let shown = req.code.clone();
        let (silent, store_history) = (req.silent, req.store_history);
        let expressions = req.user_expressions.clone();
        let (outcome, user_expressions) = self
            .python
            .call(move |shell| {
                sink.set_parent(Some(parent.clone()));
                if !silent {
                    let input =
                        json!({ "code": shown, "execution_count": shell.execution_count() });
                    iopub.blocking_publish("execute_input", input, Some(parent.clone()));
                }
                let outcome = shell.execute(&code, silent, store_history);
                match &outcome.result {
                    Ok(Some(bundle)) => {
                        let result = json!({
                            "execution_count": outcome.execution_count,
                            "data": bundle.data,
                            "metadata": bundle.metadata,
                        });
                        iopub.blocking_publish("execute_result", result, Some(parent.clone()));
                    }
                    Ok(None) => {}
                    Err(error) => {
                        iopub.blocking_publish(
                            "error",
                            serde_json::to_value(error).unwrap_or_default(),
                            Some(parent.clone()),
                        );
                    }
                }
                let user_expressions = match expressions.as_object() {
                    Some(map) if !map.is_empty() && outcome.result.is_ok() => {
                        shell.user_expressions(&expressions)
                    }
                    _ => json!({}),
                };
                (outcome, user_expressions)
            })
            .await;

        let count = outcome.execution_count;
        if store_history {
            let output = match &outcome.result {
                Ok(Some(bundle)) => bundle.data["text/plain"].as_str().map(str::to_string),
                _ => None,
            };
            self.history.record(count, &req.code, output);
        }
        let failed = outcome.result.is_err();
        let mut content = match &outcome.result {
            Ok(_) => json!({ "status": "ok" }),
            Err(error) => {
                let mut c = serde_json::to_value(error).unwrap_or_default();
                c["status"] = json!("error");
                c
            }
        };
        content["execution_count"] = json!(count);
        content["user_expressions"] = user_expressions;
        content["payload"] = json!(outcome.payload);
        let mut reply = self
            .replier
            .session()
            .message("execute_reply", content, Some(request));
        reply.metadata = json!({
            "started": started,
            "dependencies_met": true,
            "status": if failed { "error" } else { "ok" },
        });
        // Taken before the reply goes out: a request sent after the client
        // saw this failure is not aborted.
        let mut queued = Vec::new();
        if failed && req.stop_on_error {
            while let Ok(next) = self.incoming.try_recv() {
                queued.push(next);
            }
        }
        self.replier.send(&reply).await;
        queued
    }

    async fn abort(&mut self, request: &Arc<Message>) {
        self.iopub.status("busy", Some(request.clone())).await;
        self.replier
            .reply(request, json!({ "status": "aborted" }))
            .await;
        self.iopub.status("idle", Some(request.clone())).await;
    }
}

/// The request's cursor position (in code points), clamped to the code.
fn cursor_pos(content: &Value, code: &str) -> usize {
    let len = code.chars().count();
    content["cursor_pos"]
        .as_u64()
        .map(|c| (c as usize).min(len))
        .unwrap_or(len)
}

//! The shell channel: requests are served one at a time, in order, each
//! wrapped in busy/idle. Execution runs on the Python thread while this
//! task waits, so the control channel stays responsive.

use std::collections::VecDeque;
use std::sync::Arc;

use rparallel_protocol::reader::Incoming;
use rparallel_protocol::Message;
use rparallel_pyexec::execute::{self, Defaults, ExecuteRequest};
use rparallel_pyexec::Sink;
use serde_json::{json, Value};

use crate::history::History;
use crate::info::KernelInfo;
use crate::iopub::{Iopub, KernelStamp};
use crate::python::{KernelState, PythonHandle};
use crate::sockets::Replier;

pub struct ShellChannel<S> {
    pub replier: Replier,
    pub incoming: Incoming,
    pub iopub: Iopub,
    pub python: PythonHandle<S>,
    pub sink: Arc<Sink>,
    pub stamp: Arc<KernelStamp>,
    pub info: KernelInfo,
    pub history: History,
}

impl<S: KernelState> ShellChannel<S> {
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
                let info = self.info.get(&self.python, &self.sink).await;
                self.replier.reply(request, info).await;
            }
            "is_complete_request" => {
                let code = request.content_str("code").to_string();
                let sink = self.sink.clone();
                let verdict = self
                    .python
                    .call(move |s| s.with_shell(&sink, |sh| sh.is_complete(&code)))
                    .await;
                let content = serde_json::to_value(verdict).unwrap_or_default();
                self.replier.reply(request, content).await;
            }
            "complete_request" => {
                let code = request.content_str("code").to_string();
                let cursor = cursor_pos(&request.content, &code);
                let sink = self.sink.clone();
                let found = self
                    .python
                    .call(move |s| s.with_shell(&sink, |sh| sh.complete(&code, cursor)))
                    .await;
                let content = json!({
                    "status": "ok",
                    "matches": found.matches,
                    "cursor_start": found.cursor_start,
                    "cursor_end": found.cursor_end,
                    "metadata": found.metadata,
                });
                self.replier.reply(request, content).await;
            }
            "inspect_request" => {
                let code = request.content_str("code").to_string();
                let cursor = cursor_pos(&request.content, &code);
                let detail = request.content["detail_level"].as_u64().unwrap_or(0) as u8;
                let sink = self.sink.clone();
                let found = self
                    .python
                    .call(move |s| s.with_shell(&sink, |sh| sh.inspect(&code, cursor, detail)))
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
            "comm_info_request" | "comm_open" | "comm_msg" | "comm_close" => {
                if let Some(reply) = self.comm(request).await {
                    self.replier.reply(request, reply).await;
                }
            }
            other => tracing::warn!("shell: unsupported message type {other}"),
        }
        self.iopub.status("idle", Some(request.clone())).await;
        queued
    }

    /// Runs a cell through the execution core's execute path. A failed
    /// cell with stop_on_error returns the requests queued behind it.
    async fn execute(&mut self, request: &Arc<Message>) -> Vec<Arc<Message>> {
        let cell = Arc::new(ExecuteRequest::parse(&request.content, Defaults::KERNEL));
        let (sink, stamp, parent, run) = (
            self.sink.clone(),
            self.stamp.clone(),
            request.clone(),
            cell.clone(),
        );
        let executed = self
            .python
            .call(move |s| {
                s.with_shell(&sink, |shell| {
                    execute::run(shell, &sink, &*stamp, &parent, &run)
                })
            })
            .await;
        if cell.store_history {
            self.history
                .record(executed.execution_count, &cell.code, executed.result_text);
        }
        // Taken before the reply goes out: a request sent after the client
        // saw this failure is not aborted.
        let mut queued = Vec::new();
        if executed.abort_queue {
            while let Ok(next) = self.incoming.try_recv() {
                queued.push(next);
            }
        }
        self.replier.send(&executed.reply).await;
        queued
    }

    /// A comm message, handled by the comms of the kernel's Python with
    /// their output going to this request; the reply content
    /// (comm_info_request's).
    async fn comm(&mut self, request: &Arc<Message>) -> Option<Value> {
        let (sink, parent) = (self.sink.clone(), request.clone());
        self.python
            .call(move |s| {
                s.with_shell(&sink, |shell| {
                    sink.set_parent(&parent);
                    let message = json!({
                        "header": parent.header,
                        "parent_header": parent.parent_header,
                        "metadata": parent.metadata,
                        "content": parent.content,
                        "msg_type": parent.msg_type(),
                    });
                    shell.comm_message(&message, parent.buffers.clone())
                })
            })
            .await
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

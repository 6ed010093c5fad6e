//! The control channel: served on its own task, so interrupt and shutdown
//! work while a cell runs.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::Notify;

use rparallel_protocol::reader::Incoming;

use crate::info::KernelInfo;
use crate::iopub::Iopub;
use crate::python::{KernelState, PythonHandle};
use crate::sockets::Replier;
use crate::stdin::StdinHandle;

pub struct ControlChannel<S> {
    pub replier: Replier,
    pub incoming: Incoming,
    pub iopub: Iopub,
    pub python: PythonHandle<S>,
    pub sink: Arc<rparallel_pyexec::Sink>,
    pub stdin: StdinHandle,
    pub info: KernelInfo,
    /// Notified once a shutdown_request has been answered.
    pub shutdown: Arc<Notify>,
}

impl<S: KernelState> ControlChannel<S> {
    pub async fn run(mut self) {
        while let Some(request) = self.incoming.recv().await {
            self.iopub.status("busy", Some(request.clone())).await;
            match request.msg_type() {
                "interrupt_request" => {
                    self.python.interrupt();
                    self.stdin.cancel();
                    self.replier
                        .reply(&request, json!({ "status": "ok" }))
                        .await;
                }
                "shutdown_request" => {
                    let restart = request.content["restart"].as_bool().unwrap_or(false);
                    let content = json!({ "status": "ok", "restart": restart });
                    self.replier.reply(&request, content.clone()).await;
                    self.iopub
                        .output("shutdown_reply", content, Some(request.clone()))
                        .await;
                    self.iopub.status("idle", Some(request.clone())).await;
                    self.shutdown.notify_one();
                    return;
                }
                "kernel_info_request" => {
                    let info = self.info.get(&self.python, &self.sink).await;
                    self.replier.reply(&request, info).await;
                }
                other => tracing::warn!("control: unsupported message type {other}"),
            }
            self.iopub.status("idle", Some(request.clone())).await;
        }
    }
}

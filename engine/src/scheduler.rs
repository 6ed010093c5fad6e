//! The scheduler task on the I/O thread: requests that must run in order
//! wait in a [`Queue`] and go to the Python thread one at a time;
//! `interrupt_request` and `abort_request` are answered at once, even while
//! Python is busy.

use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::outgoing::Outgoing;
use crate::python::{PythonHandle, Served};
use crate::queue::Queue;
use crate::stamp::{Parent, Stamp};

/// Why the scheduler stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// A shutdown_request: from a client (answered, in order) or the controller.
    Shutdown,
    /// The socket reader or the Python thread is gone.
    Lost,
}

pub struct Scheduler {
    pub incoming: mpsc::Receiver<Parent>,
    pub python: PythonHandle,
    pub outgoing: Outgoing,
    pub stamp: Stamp,
    pub queue: Queue,
}

impl Scheduler {
    pub async fn run(mut self) -> Exit {
        let mut running: Option<oneshot::Receiver<Served>> = None;
        loop {
            if running.is_none() {
                if let Some(next) = self.queue.pop() {
                    if next.msg_type() == "shutdown_request" {
                        self.reply(&next, json!({ "status": "ok", "restart": false }))
                            .await;
                        return Exit::Shutdown;
                    }
                    running = Some(crate::python::serve(&self.python, next));
                    continue;
                }
            }
            tokio::select! {
                message = self.incoming.recv() => {
                    let Some(message) = message else { return Exit::Lost };
                    if let Some(exit) = self.at_once(message).await {
                        return exit;
                    }
                }
                served = async { running.as_mut().expect("guarded").await }, if running.is_some() => {
                    running = None;
                    match served {
                        Ok(served) if served.abort_queue => {
                            for request in self.queue.abort_executes() {
                                self.outgoing.send(self.stamp.aborted(&request)).await;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return Exit::Lost,
                    }
                }
            }
        }
    }

    /// Handles what cannot wait; queues the rest.
    async fn at_once(&mut self, message: Parent) -> Option<Exit> {
        match message.msg_type() {
            "interrupt_request" => {
                // Reply first: the interrupted code's error then follows it.
                self.reply(&message, json!({ "status": "ok" })).await;
                self.python.interrupt();
            }
            "abort_request" => {
                let ids: Vec<String> = message.content["msg_ids"]
                    .as_array()
                    .map(|ids| {
                        ids.iter()
                            .filter_map(|i| i.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                for request in self.queue.abort(&ids) {
                    self.outgoing.send(self.stamp.aborted(&request)).await;
                }
                self.reply(&message, json!({ "status": "ok" })).await;
            }
            // The controller's own shutdown (no client identity): at once.
            "shutdown_request" if message.identities.is_empty() => return Some(Exit::Shutdown),
            // Liveness was noted by the reader.
            "heartbeat_reply" | "registration_reply" => {}
            _ => self.queue.push(message),
        }
        None
    }

    async fn reply(&self, request: &Parent, content: serde_json::Value) {
        let now = rparallel_protocol::message::now_iso8601();
        self.outgoing
            .send(self.stamp.reply(request, content, &now))
            .await;
    }
}

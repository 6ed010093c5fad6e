//! The scheduler task: requests that must run in order
//! wait in a [`Queue`] and go to the Python thread in order, at most
//! `IN_PYTHON` at a time;
//! `interrupt_request` and `abort_request` are answered at once, even while
//! Python is busy.

use std::collections::VecDeque;
use std::sync::Arc;

use rparallel_pyexec::execute::Defaults;
use rparallel_pyexec::{Parent, Publisher};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::python::{Claim, PythonHandle, Served};
use crate::queue::Queue;
use crate::stamp::Stamp;

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
    pub publisher: Publisher,
    pub stamp: Arc<Stamp>,
    pub queue: Queue,
}

/// A request handed to the Python thread.
struct Handed {
    request: Parent,
    claim: Claim,
    served: oneshot::Receiver<Served>,
}

/// Requests handed to the Python thread at once: the one running and the
/// next, so a stream of small calls runs back to back without a round of
/// thread wake-ups between them.
const IN_PYTHON: usize = 2;

/// Whether `request` may be handed to Python while another still runs. Not
/// a shutdown (it waits for everything before it), and not a cell that a
/// failure of the one before would abort (stop_on_error).
fn may_follow(request: &Parent) -> bool {
    match request.msg_type() {
        "shutdown_request" => false,
        "execute_request" => !request.content["stop_on_error"]
            .as_bool()
            .unwrap_or(Defaults::ENGINE.stop_on_error),
        _ => true,
    }
}

impl Scheduler {
    pub async fn run(mut self) -> Exit {
        // Handed to Python, in order.
        let mut running: VecDeque<Handed> = VecDeque::new();
        loop {
            if running.len() < IN_PYTHON {
                let ready = match self.queue.peek() {
                    Some(next) => running.is_empty() || may_follow(next),
                    None => false,
                };
                if ready {
                    let next = self.queue.pop().expect("peeked");
                    if next.msg_type() == "shutdown_request" {
                        self.reply(&next, json!({ "status": "ok", "restart": false }))
                            .await;
                        return Exit::Shutdown;
                    }
                    let claim = Claim::default();
                    let served = crate::python::serve(&self.python, next.clone(), claim.clone());
                    running.push_back(Handed {
                        request: next,
                        claim,
                        served,
                    });
                    continue;
                }
            }
            tokio::select! {
                message = self.incoming.recv() => {
                    let Some(message) = message else { return Exit::Lost };
                    if let Some(exit) = self.at_once(message, &running).await {
                        return exit;
                    }
                }
                served = async { (&mut running.front_mut().expect("guarded").served).await }, if !running.is_empty() => {
                    running.pop_front();
                    match served {
                        Ok(served) if served.abort_queue => {
                            for request in self.queue.abort_executes() {
                                self.publisher.send(self.stamp.aborted(&request)).await;
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
    async fn at_once(&mut self, message: Parent, running: &VecDeque<Handed>) -> Option<Exit> {
        match message.msg_type() {
            "interrupt_request" => {
                // Reply first: the interrupted code's error then follows it.
                self.reply(&message, json!({ "status": "ok" })).await;
                self.python.interrupt();
            }
            "signal_request" => {
                self.signal(&message).await;
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
                    self.publisher.send(self.stamp.aborted(&request)).await;
                }
                // Requests handed to Python behind the first (which runs,
                // or is about to) have not started: they are answered now
                // and Python skips them.
                for handed in running.iter().skip(1) {
                    let msg_id = &handed.request.header.msg_id;
                    if (ids.is_empty() || ids.contains(msg_id)) && handed.claim.abort() {
                        self.publisher
                            .send(self.stamp.aborted(&handed.request))
                            .await;
                    }
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

    /// `signal_request`: SIGINT interrupts the running code, as Ctrl-C
    /// would (the engine stays up); any other signal is raised in this
    /// process with its usual effect. Answered first, so a signal that
    /// ends the engine still has its reply.
    async fn signal(&mut self, message: &Parent) {
        let sig = message.content["sig"]
            .as_i64()
            .and_then(|s| i32::try_from(s).ok())
            .filter(|&s| (1..=64).contains(&s));
        let Some(sig) = sig else {
            let error = json!({
                "status": "error",
                "ename": "ValueError",
                "evalue": format!("invalid signal {}", message.content["sig"]),
                "traceback": [],
            });
            self.reply(message, error).await;
            return;
        };
        self.reply(message, json!({ "status": "ok" })).await;
        if sig == libc::SIGINT {
            self.python.interrupt();
        } else {
            // Let the reply leave before a deadly signal lands.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            // SAFETY: kill(2) on our own pid.
            unsafe { libc::kill(libc::getpid(), sig) };
        }
    }

    async fn reply(&self, request: &Parent, content: serde_json::Value) {
        self.publisher
            .send(self.stamp.reply_now(request, content))
            .await;
    }
}

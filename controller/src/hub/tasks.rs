//! The hub's side of load-balanced tasks: it hands what the client sent
//! on the task route to the [`Scheduler`](crate::scheduler::Scheduler),
//! sends what it assigns to the engines, reads the replies of engines with
//! tasks, and answers the tasks the scheduler fails (impossible or invalid
//! dependencies, timeouts, aborts, dead engines) in the client's name.

use bytes::Bytes;
use rparallel_protocol::message::reply_type;
use rparallel_protocol::{Message, RawMessage};
use serde_json::{json, Value};

use super::{to_engine, Hub};
use crate::scheduler::{reply_info, Reply, Task, Why};
use zeromq::SocketSend;

/// The request on the task route that aborts waiting tasks.
const ABORT: &str = "abort_request";

/// Where engines answer the scheduler's own requests (taking back a
/// prefetched task): a routing identity no client has (theirs are uuids).
pub(super) const SCHEDULER: &[u8] = b"rparallel-scheduler";

impl Hub {
    /// A request on the task route: a task, queued and sent when an engine
    /// has room, or an abort of waiting tasks.
    pub(super) async fn submit_task(&mut self, frames: Vec<Bytes>, split: usize) {
        let task = match Task::new(frames, split) {
            Err(()) => {
                tracing::warn!("dropped a task without a readable header");
                return;
            }
            Ok(Err((task, why))) => {
                self.scheduler.fail(task, Why::Invalid(why));
                self.send_task_failures().await;
                return;
            }
            Ok(Ok(task)) if task.msg_type == ABORT => return self.abort_tasks(task).await,
            Ok(Ok(task)) => task,
        };
        let live = self.registry.ids();
        if let Some(targets) = task
            .targets
            .as_ref()
            .filter(|t| !t.iter().any(|e| live.contains(e)))
        {
            let why = format!("no engine among its targets {targets:?} is registered");
            self.scheduler.fail(task, Why::NoEngine(why));
        } else {
            self.scheduler.submit(task);
            self.dispatch().await;
        }
        self.send_task_failures().await;
    }

    /// Sends every task an engine has room for, and takes back prefetched
    /// tasks another engine is idle for.
    pub(super) async fn dispatch(&mut self) {
        let live = self.registry.ids();
        for (engine, task) in self.scheduler.assign(&live) {
            let Some(identity) = self.registry.get(engine).map(|e| e.identity.clone()) else {
                continue;
            };
            let frames = if task.resend {
                self.signed_anew(task.frames, task.split, task.sent_to.len())
            } else {
                task.frames
            };
            self.send_engine(to_engine(frames, identity)).await;
        }
        for (engine, msg_id) in self.scheduler.reclaim(&live, std::time::Instant::now()) {
            self.abort_on_engine(engine, vec![msg_id], Bytes::from_static(SCHEDULER))
                .await;
        }
    }

    /// A request going back to an engine that had it: `attempt` in its
    /// metadata and a new signature (same msg_id), so the engine's replay
    /// guard lets it through.
    fn signed_anew(&self, mut frames: Vec<Bytes>, split: usize, attempt: usize) -> Vec<Bytes> {
        let mut metadata: Value = serde_json::from_slice(&frames[split + 4]).unwrap_or(json!({}));
        if !metadata.is_object() {
            metadata = json!({});
        }
        metadata["attempt"] = attempt.into();
        frames[split + 4] = Bytes::from(metadata.to_string());
        let parts: Vec<&[u8]> = frames[split + 2..split + 6]
            .iter()
            .map(|f| f.as_ref())
            .collect();
        let signature = self.session.signer().sign(&parts);
        frames[split + 1] = Bytes::from(signature);
        frames
    }

    /// Asks `engine` to abort `msg_ids` if it has not started them; its
    /// `abort_reply` goes to `reply_to` (a client, or [`SCHEDULER`]: the
    /// hub drops it), each aborted request's reply to that request's client.
    async fn abort_on_engine(&mut self, engine: u32, msg_ids: Vec<String>, reply_to: Bytes) {
        let Some(identity) = self.registry.get(engine).map(|e| e.identity.clone()) else {
            return;
        };
        let mut message =
            self.session
                .message("abort_request", json!({ "msg_ids": msg_ids }), None);
        message.identities = vec![identity, reply_to];
        let _ = self.engine_tx.send(self.session.encode(&message)).await;
    }

    /// A message from engine `id`, which has tasks: whether to pass it on
    /// to its client. A task's reply gives the engine room for the next
    /// one (sent first, so the engine is not left idle); a task that runs
    /// again elsewhere has its reply dropped.
    pub(super) async fn task_replied(&mut self, id: u32, frames: &[Bytes], split: usize) -> bool {
        let Some(info) = reply_info(frames, split) else {
            return true;
        };
        let live = self.registry.ids();
        let reply = self.scheduler.reply(id, &info, &live);
        if reply == Reply::NotATask {
            return true;
        }
        self.dispatch().await;
        self.send_task_failures().await;
        reply == Reply::Forward
    }

    /// `abort_request` on the task route: the client's waiting tasks named
    /// in `msg_ids` (all of them when none are named) end as aborted.
    async fn abort_tasks(&mut self, request: Task) {
        let client = request.frames[0].clone();
        let content: Value = request
            .frames
            .get(request.split + 5)
            .and_then(|c| serde_json::from_slice(c).ok())
            .unwrap_or(Value::Null);
        let msg_ids: Vec<String> = content["msg_ids"]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let given = self.scheduler.abort(&client, &msg_ids);
        self.send_task_failures().await;
        // Tasks already sent may still wait in their engine's queue: the
        // engine aborts those (its answers go to the client).
        for (engine, msg_ids) in given {
            let Some(identity) = self.registry.get(engine).map(|e| e.identity.clone()) else {
                continue;
            };
            let mut message =
                self.session
                    .message("abort_request", json!({ "msg_ids": msg_ids }), None);
            message.identities = vec![identity, client.clone()];
            let _ = self.engine_tx.send(self.session.encode(&message)).await;
        }
        self.answer(request, json!({ "status": "ok" })).await;
    }

    /// Tells the clients of the tasks the scheduler failed.
    pub(super) async fn send_task_failures(&mut self) {
        for failed in self.scheduler.take_failed() {
            let task = failed.task;
            let (ename, evalue) = match failed.why {
                Why::EngineDied { engine, reason } => {
                    self.fail_unavailable(task, Some(engine), &reason).await;
                    continue;
                }
                Why::NoEngine(reason) => {
                    self.fail_unavailable(task, None, &reason).await;
                    continue;
                }
                Why::Aborted => {
                    self.answer(task, json!({ "status": "aborted" })).await;
                    continue;
                }
                Why::Impossible(why) => ("ImpossibleDependency", why),
                Why::Invalid(why) => ("InvalidDependency", why),
                Why::Timeout(why) => ("TaskTimeout", why),
            };
            let content = json!({
                "status": "error",
                "ename": ename,
                "evalue": evalue,
                "traceback": [],
            });
            self.answer(task, content).await;
        }
    }

    async fn fail_unavailable(&mut self, task: Task, engine: Option<u32>, reason: &str) {
        let client = task.frames[0].clone();
        self.unavailable(client, task.frames, task.split, engine, reason)
            .await;
    }

    /// Answers `request` in the scheduler's name, as an engine's reply
    /// would (reply type, parent, `status` in the metadata).
    async fn answer(&mut self, request: Task, content: Value) {
        let client = request.frames[0].clone();
        let raw = RawMessage::from_verified_frames(request.frames, request.split);
        let Ok(request) = Message::from_raw(raw) else {
            return;
        };
        let msg_type = reply_type(request.msg_type());
        let mut message = self.session.message(&msg_type, content, Some(&request));
        message.metadata =
            json!({ "status": message.content["status"].clone(), "engine_id": null });
        message.identities = vec![client];
        if self
            .client_tx
            .send(self.session.encode(&message))
            .await
            .is_err()
        {
            tracing::info!("a task's client is gone");
        }
    }
}

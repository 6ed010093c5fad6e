//! The routing loop. One task owns both ROUTER sockets and the engine table,
//! so there are no locks: clients' requests go to engines by id, engines'
//! output and replies go back to the client identity they carry, and the
//! controller's own messages (registration, heartbeats, connection,
//! shutdown) are answered here. Routed messages are verified and forwarded
//! frame for frame: no JSON parsing, no copies of buffers.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rparallel_protocol::{verify_frames, Message, RawMessage, Session};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use zeromq::{RouterRecvHalf, RouterSendHalf, SocketRecv, SocketSend, ZmqMessage};

use rparallel_cluster::LaunchProgress;

use crate::events::{HubEvent, LaunchNews};
use crate::launch::{Batch, Launcher};
use crate::record::{self, Recorder};
use crate::registry::{Registration, Registry};
use crate::scheduler::{Scheduler, SchedulerSpec, TASK_ROUTE};

mod tasks;

/// Called with the number of live engines and the launches' progress.
pub type OnChange = Box<dyn FnMut(usize, &[LaunchProgress]) + Send>;

/// Lines of a launch's stderr kept for the message when engines never
/// arrive: the first ones (tools name the failing host early, then explain
/// at length) and the last ones, with a marker where lines were left out.
const STDERR_HEAD: usize = 6;
const STDERR_TAIL: usize = 12;
const ELIDED: &str = "…";

/// The prefix of the routing frame a client puts before a request for an engine.
pub const ENGINE_ROUTE_PREFIX: &[u8] = b"engine:";

/// Engines one `start_engines_request` may start: a typo must not fork
/// a million processes.
const MAX_START: u64 = 1024;

/// The reason given when an engine unregisters (asked to stop).
const ENGINE_STOPPED: &str = "engine stopped";

#[derive(Debug, Clone)]
pub struct HubConfig {
    pub heartbeat_period: Duration,
    pub heartbeat_timeout: Duration,
    /// Replace a local engine whose process dies abnormally.
    pub restart_engines: bool,
    /// The task scheduler's scheme and high-water mark.
    pub scheduler: SchedulerSpec,
}

/// Why the hub stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum HubExit {
    /// A client asked for the whole cluster to stop.
    ShutdownRequested,
    /// [`HubEvent::Stop`], or the event channel closed.
    Stopped,
}

pub struct Hub {
    session: Session,
    config: HubConfig,
    registry: Registry,
    clients: HashSet<Bytes>,
    client_tx: RouterSendHalf,
    engine_tx: RouterSendHalf,
    /// Called with the number of live engines and the launches' progress
    /// whenever either changes.
    on_change: OnChange,
    /// Starts engines (None: engines come from elsewhere).
    launcher: Option<Launcher>,
    /// Every launch so far, by id (`--launch` of its engines).
    launches: BTreeMap<String, LaunchProgress>,
    /// Load-balanced tasks, waiting or running.
    scheduler: Scheduler,
    /// Set once the whole cluster is stopping: nothing is restarted then.
    stopping: bool,
    /// The task record (`--db`).
    recorder: Recorder,
    /// What the recorder sends (replies to clients, resubmitted requests).
    recorder_out: Option<mpsc::Receiver<record::Out>>,
}

impl Hub {
    pub fn new(
        session: Session,
        config: HubConfig,
        client_tx: RouterSendHalf,
        engine_tx: RouterSendHalf,
        on_change: OnChange,
    ) -> Self {
        Hub {
            session,
            scheduler: Scheduler::new(config.scheduler),
            config,
            registry: Registry::default(),
            clients: HashSet::new(),
            client_tx,
            engine_tx,
            on_change,
            launcher: None,
            launches: BTreeMap::new(),
            stopping: false,
            recorder: Recorder::none(),
            recorder_out: None,
        }
    }

    /// Keeps the task record with `recorder`, whose messages come out of
    /// `out`.
    pub fn with_recorder(mut self, recorder: Recorder, out: mpsc::Receiver<record::Out>) -> Self {
        self.recorder = recorder;
        self.recorder_out = Some(out);
        self
    }

    /// Starts engines through `launcher`: `count` now, more when clients
    /// ask, and replacements for dead ones when
    /// [`HubConfig::restart_engines`] is set.
    pub async fn with_launcher(mut self, launcher: Launcher, count: usize) -> anyhow::Result<Self> {
        self.launcher = Some(launcher);
        if let Err(e) = self.launch(count, Batch::First) {
            if let Some(launcher) = self.launcher.as_mut() {
                launcher.stop().await;
            }
            return Err(e);
        }
        Ok(self)
    }

    /// Tells whoever watches the record how things stand.
    fn changed(&mut self) {
        let launches: Vec<LaunchProgress> = self.launches.values().cloned().collect();
        (self.on_change)(self.registry.len(), &launches);
    }

    async fn stop_everything(&mut self) {
        self.stopping = true;
        self.shutdown_engines().await;
        if let Some(launcher) = self.launcher.as_mut() {
            launcher.stop().await;
        }
    }

    pub async fn run(
        mut self,
        mut client_rx: RouterRecvHalf,
        mut engine_rx: RouterRecvHalf,
        mut events: mpsc::Receiver<HubEvent>,
    ) -> HubExit {
        let mut recorder_out = self.recorder_out.take();
        let mut tick = tokio::time::interval(self.config.heartbeat_period / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.scheduler.next_deadline();
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                    self.scheduler.expire(Instant::now());
                    self.send_task_failures().await;
                }
                Some(out) = async { recorder_out.as_mut()?.recv().await }, if recorder_out.is_some() => match out {
                    record::Out::ToClient(message) => {
                        let _ = self.client_tx.send(message).await;
                    }
                    record::Out::Route(frames) => self.route_request(frames, 2).await,
                },
                received = client_rx.recv() => match received {
                    Ok(message) => {
                        if self.on_client_message(message).await {
                            self.stop_everything().await;
                            return HubExit::ShutdownRequested;
                        }
                    }
                    Err(e) => tracing::debug!("client socket: {e}"),
                },
                received = engine_rx.recv() => match received {
                    Ok(message) => self.on_engine_message(message).await,
                    Err(e) => tracing::debug!("engine socket: {e}"),
                },
                event = events.recv() => match event {
                    Some(HubEvent::ProcessExited { hostname, pid, reason, clean }) => {
                        self.process_exited(&hostname, pid, &reason, clean).await;
                    }
                    Some(HubEvent::Launch { launch, news }) => self.launch_news(&launch, news).await,
                    Some(HubEvent::ConnectionClosed(identity)) => {
                        if let Some(id) = self.registry.id_of(&identity) {
                            self.engine_died(id, "its connection closed: the process ended").await;
                            self.replace(1);
                        }
                    }
                    Some(HubEvent::Stop) | None => {
                        self.stop_everything().await;
                        return HubExit::Stopped;
                    }
                },
                _ = tick.tick() => {
                    let overdue = self.registry.overdue(Instant::now(), self.config.heartbeat_timeout);
                    for id in overdue {
                        let reason = format!("no heartbeat for {:?}", self.config.heartbeat_timeout);
                        self.engine_died(id, &reason).await;
                    }
                    // A prefetched task behind a task that turned out long
                    // goes to an idle engine.
                    self.dispatch().await;
                }
            }
        }
    }

    /// Handles one message from a client; true when the cluster must stop.
    async fn on_client_message(&mut self, message: ZmqMessage) -> bool {
        let frames = message.into_vec();
        let Some(client) = frames.first().cloned() else {
            return false;
        };
        let split = match verify_frames(&frames[1..], self.session.signer()) {
            Ok(split) => split + 1,
            Err(e) => {
                tracing::warn!("dropped a message from a client: {e}");
                return false;
            }
        };
        if split == 2 {
            self.recorder.request(&frames);
            self.route_request(frames, split).await;
            return false;
        }
        if split != 1 {
            tracing::warn!("dropped a client message with {} routing frames", split - 1);
            return false;
        }
        let raw = RawMessage::from_verified_frames(frames, split);
        let request = match Message::from_raw(raw) {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!("dropped a client message: {e}");
                return false;
            }
        };
        match request.msg_type() {
            "connection_request" => {
                self.clients.insert(client);
                let content = json!({
                    "status": "ok",
                    "engines": self.registry.snapshot(),
                    "heartbeat_period": self.config.heartbeat_period.as_secs_f64(),
                });
                self.reply_client(&request, "connection_reply", content)
                    .await;
            }
            "heartbeat" => {
                self.clients.insert(client);
                self.reply_client(&request, "heartbeat_reply", json!({}))
                    .await;
            }
            "shutdown_request" => {
                let hub = request.content["hub"].as_bool().unwrap_or(false);
                self.reply_client(&request, "shutdown_reply", json!({ "status": "ok" }))
                    .await;
                if hub {
                    return true;
                }
                self.shutdown_engines().await;
            }
            t if record::REQUESTS.contains(&t) => self.recorder.ask(request).await,
            "queue_request" => {
                let (engines, unassigned) = self.scheduler.queues();
                let tasks: serde_json::Map<String, Value> = engines
                    .into_iter()
                    .map(|(e, ids)| (e.to_string(), json!(ids)))
                    .collect();
                let content = json!({"status": "ok", "tasks": tasks, "unassigned": unassigned});
                self.reply_client(&request, "queue_reply", content).await;
            }
            "start_engines_request" => {
                let content = match engines_to_start(&request.content) {
                    Ok(n) => self.start_engines(n),
                    Err(reason) => json!({ "status": "error", "reason": reason }),
                };
                self.reply_client(&request, "start_engines_reply", content)
                    .await;
            }
            other => tracing::warn!("controller: unsupported client message {other}"),
        }
        false
    }

    /// A client's request for an engine (`engine:N`) or the scheduler
    /// (`task`), verified: `[client, route, <IDS|MSG>, …]`.
    async fn route_request(&mut self, frames: Vec<Bytes>, split: usize) {
        if frames[1] == TASK_ROUTE {
            self.submit_task(frames, split).await;
            return;
        }
        let client = frames[0].clone();
        let route = &frames[1];
        let target = engine_route(route);
        match target.and_then(|id| self.registry.get(id).map(|e| e.identity.clone())) {
            Some(identity) => self.send_engine(to_engine(frames, identity)).await,
            None => {
                let reason = match target {
                    Some(id) => format!("engine {id} is not registered (it may have died)"),
                    None => format!("bad route {:?}", String::from_utf8_lossy(route)),
                };
                self.unavailable(client, frames, split, target, &reason)
                    .await;
            }
        }
    }

    async fn on_engine_message(&mut self, message: ZmqMessage) {
        let frames = message.into_vec();
        let Some(engine) = frames.first().cloned() else {
            return;
        };
        let split = match verify_frames(&frames[1..], self.session.signer()) {
            Ok(split) => split + 1,
            Err(e) => {
                tracing::warn!("dropped a message from an engine: {e}");
                return;
            }
        };
        let id = self.registry.touch(&engine);
        let known = id.is_some();
        if split == 2 {
            let Some(id) = id else {
                tracing::warn!("dropped output from an unregistered engine");
                return;
            };
            // The engine's answer to the scheduler's own abort.
            if frames[1] == tasks::SCHEDULER {
                return;
            }
            self.recorder.from_engine(id, &frames);
            // Only an engine with tasks has its replies read: the end of a
            // task gives it room for the next.
            if self.scheduler.is_running_on(id) && !self.task_replied(id, &frames, split).await {
                return;
            }
            self.forward_to_client(frames).await;
            return;
        }
        let raw = RawMessage::from_verified_frames(frames, split);
        let request = match Message::from_raw(raw) {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!("dropped an engine message: {e}");
                return;
            }
        };
        match request.msg_type() {
            "registration_request" => {
                let registration = Registration::from_content(&request.content);
                let id = self.registry.register(engine.clone(), &registration);
                let reply = json!({
                    "status": "ok",
                    "id": id,
                    "heartbeat_period": self.config.heartbeat_period.as_secs_f64(),
                });
                self.reply_engine(&request, "registration_reply", reply)
                    .await;
                let info = self
                    .registry
                    .get(id)
                    .map(|e| e.describe())
                    .unwrap_or_default();
                tracing::info!("engine {id} registered: {info}");
                if let Some(progress) = registration.launch.and_then(|l| self.launches.get_mut(l)) {
                    progress.registered += 1;
                    *progress
                        .registered_hosts
                        .entry(registration.hostname.to_string())
                        .or_default() += 1;
                }
                self.notify_clients("engine_registered", info).await;
                self.changed();
                self.dispatch().await;
            }
            "heartbeat" if known => {
                self.reply_engine(&request, "heartbeat_reply", json!({}))
                    .await;
            }
            "heartbeat" => {
                // Declared dead earlier but still talking: tell it to go.
                self.reply_engine(&request, "shutdown_request", json!({}))
                    .await;
            }
            "unregistration" => {
                if let Some(id) = self.registry.id_of(&engine) {
                    self.engine_died(id, ENGINE_STOPPED).await;
                }
            }
            other => tracing::warn!("controller: unsupported engine message {other}"),
        }
    }

    /// An engine process ended. A registered engine that ended
    /// abnormally is replaced when restarts are on; one that died before
    /// registering is not (its replacement would most likely die the same
    /// way: a broken environment, not a one-off kill).
    async fn process_exited(&mut self, hostname: &str, pid: u32, reason: &str, clean: bool) {
        let Some(id) = self.registry.find_pid(pid, hostname) else {
            if !clean {
                tracing::warn!(
                    "engine process {pid} on {hostname} exited before registering ({reason})"
                );
            }
            return;
        };
        self.engine_died(id, reason).await;
        if !clean {
            self.replace(1);
        }
    }

    /// Starts `count` engines in place of dead ones, when restarts are on.
    fn replace(&mut self, count: usize) {
        if self.config.restart_engines && !self.stopping && count > 0 {
            let started = self.start_engines(count);
            tracing::info!("replacing {count} engines: {started}");
        }
    }

    /// News of a launch: its output is kept (the tail), its end fails its
    /// engines at once.
    async fn launch_news(&mut self, launch: &str, news: LaunchNews) {
        let Some(progress) = self.launches.get_mut(launch) else {
            return;
        };
        let waiting = progress.registered < progress.expected_total();
        match news {
            LaunchNews::Output(line) => {
                keep_line(&mut progress.stderr, line);
                if !waiting {
                    return;
                }
            }
            LaunchNews::Job(job) => {
                progress.label = format!("slurm job {job}");
                progress.job_id = Some(job);
            }
            LaunchNews::State(state) => progress.state = Some(state),
            LaunchNews::Ended(reason) => {
                let mut why = reason.clone();
                if let Some(last) = progress.stderr.last() {
                    why.push_str(&format!(": {last}"));
                }
                progress.ended = Some(reason);
                let engines = self.registry.of_launch(launch);
                let lost = engines.len();
                for id in engines {
                    self.engine_died(id, &why).await;
                }
                if lost > 0 {
                    self.replace(lost);
                }
            }
        }
        self.changed();
    }

    /// Starts `count` engines: the reply content for the client.
    fn start_engines(&mut self, count: usize) -> Value {
        if self.launcher.is_none() {
            return json!({
                "status": "error",
                "reason": "this controller starts no engines of its own",
            });
        }
        if self.stopping {
            return json!({ "status": "error", "reason": "the cluster is stopping" });
        }
        match self.launch(count, Batch::More) {
            Ok(pids) => json!({ "status": "ok", "pids": pids }),
            Err(e) => {
                json!({ "status": "error", "reason": format!("cannot start engines: {e:#}") })
            }
        }
    }

    /// Starts `count` engines through the launcher; the local ones' pids.
    fn launch(&mut self, count: usize, batch: Batch) -> anyhow::Result<Vec<u32>> {
        let Some(launcher) = self.launcher.as_mut() else {
            return Ok(vec![]);
        };
        let (pids, started) = launcher.start(count, batch)?;
        for launch in started {
            self.launches.insert(launch.id, launch.progress);
        }
        if !self.launches.is_empty() {
            self.changed();
        }
        Ok(pids)
    }

    async fn engine_died(&mut self, id: u32, reason: &str) {
        if let Some(engine) = self.registry.remove(id) {
            if reason == ENGINE_STOPPED {
                tracing::info!("engine {id} (pid {}) stopped", engine.pid);
            } else {
                tracing::warn!("engine {id} (pid {}) died: {reason}", engine.pid);
            }
            self.notify_clients("engine_died", json!({ "id": id, "reason": reason }))
                .await;
            self.changed();
            let live = self.registry.ids();
            self.scheduler.engine_lost(id, reason, &live);
            self.send_task_failures().await;
            self.dispatch().await;
        }
    }

    /// Tells every engine to exit.
    async fn shutdown_engines(&mut self) {
        let identities: Vec<Bytes> = self
            .registry
            .engines()
            .map(|e| e.identity.clone())
            .collect();
        for identity in identities {
            let mut message = self.session.message("shutdown_request", json!({}), None);
            message.identities = vec![identity];
            let _ = self.engine_tx.send(self.session.encode(&message)).await;
        }
    }

    async fn unavailable(
        &mut self,
        client: Bytes,
        frames: Vec<Bytes>,
        split: usize,
        target: Option<u32>,
        reason: &str,
    ) {
        let raw = RawMessage::from_verified_frames(frames, split);
        let Ok(request) = Message::from_raw(raw) else {
            return;
        };
        let content = json!({ "engine_id": target, "reason": reason });
        let mut message = self
            .session
            .message("engine_unavailable", content, Some(&request));
        message.identities = vec![client];
        let _ = self.client_tx.send(self.session.encode(&message)).await;
    }

    async fn reply_client(&mut self, request: &Message, msg_type: &str, content: Value) {
        let message = self.session.message(msg_type, content, Some(request));
        if self
            .client_tx
            .send(self.session.encode(&message))
            .await
            .is_err()
        {
            if let Some(client) = request.identities.first() {
                self.clients.remove(client);
            }
        }
    }

    async fn reply_engine(&mut self, request: &Message, msg_type: &str, content: Value) {
        let message = self.session.message(msg_type, content, Some(request));
        let _ = self.engine_tx.send(self.session.encode(&message)).await;
    }

    async fn notify_clients(&mut self, msg_type: &str, content: Value) {
        let clients: Vec<Bytes> = self.clients.iter().cloned().collect();
        for client in clients {
            let mut message = self.session.message(msg_type, content.clone(), None);
            message.identities = vec![client.clone()];
            if self
                .client_tx
                .send(self.session.encode(&message))
                .await
                .is_err()
            {
                self.clients.remove(&client);
            }
        }
    }

    /// An engine's output or reply, on to the client it names.
    async fn forward_to_client(&mut self, frames: Vec<Bytes>) {
        let client = frames[1].clone();
        if let Err(e) = self.client_tx.send(zmq_message(to_client(frames))).await {
            tracing::info!("client gone: {e}");
            self.clients.remove(&client);
        }
    }

    async fn send_engine(&mut self, frames: Vec<Bytes>) {
        if let Err(e) = self.engine_tx.send(zmq_message(frames)).await {
            tracing::info!("engine connection gone: {e}");
        }
    }
}

/// Adds a line to a launch's kept output: its first lines and its last.
fn keep_line(lines: &mut Vec<String>, line: String) {
    lines.push(line);
    if lines.len() > STDERR_HEAD + STDERR_TAIL + 1 {
        if lines[STDERR_HEAD] != ELIDED {
            lines.insert(STDERR_HEAD, ELIDED.to_string());
        }
        lines.remove(STDERR_HEAD + 1);
    }
}

fn zmq_message(frames: Vec<Bytes>) -> ZmqMessage {
    ZmqMessage::try_from(frames).expect("routed messages have frames")
}

/// The engine a client's routing frame names: `engine:<id>`.
fn engine_route(frame: &[u8]) -> Option<u32> {
    frame
        .strip_prefix(ENGINE_ROUTE_PREFIX)
        .and_then(|id| std::str::from_utf8(id).ok())
        .and_then(|id| id.parse::<u32>().ok())
}

/// A client's request as the engine gets it: `[client, engine:<id>,
/// <IDS|MSG>, …]` becomes `[engine identity, client, <IDS|MSG>, …]`, so the
/// ROUTER delivers it to the engine, which sends its answers back to the
/// client's identity.
fn to_engine(frames: Vec<Bytes>, engine: Bytes) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(frames.len());
    let mut frames = frames.into_iter();
    let client = frames.next().unwrap_or_default();
    out.push(engine);
    out.push(client);
    out.extend(frames.skip(1));
    out
}

/// An engine's output or reply as its client gets it: `[engine, client,
/// <IDS|MSG>, …]` becomes `[client, <IDS|MSG>, …]`.
fn to_client(frames: Vec<Bytes>) -> Vec<Bytes> {
    frames.into_iter().skip(1).collect()
}

/// How many engines a `start_engines_request` asks for (default 1), or why
/// it may not.
fn engines_to_start(content: &Value) -> Result<usize, String> {
    match content["n"].as_u64().unwrap_or(1) {
        n @ 1..=MAX_START => Ok(n as usize),
        n => Err(format!(
            "cannot start {n} engines at once (1 to {MAX_START})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rparallel_protocol::DELIMITER;

    fn frames(parts: &[&'static [u8]]) -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::from_static(p)).collect()
    }

    #[test]
    fn routes_name_engines_by_id() {
        assert_eq!(engine_route(b"engine:0"), Some(0));
        assert_eq!(engine_route(b"engine:42"), Some(42));
        for bad in [
            &b"engine:"[..],
            b"engine:-1",
            b"engine:x",
            b"node:1",
            b"",
            b"engine:\xff",
        ] {
            assert_eq!(engine_route(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn requests_go_to_the_engine_and_answers_back_to_the_client() {
        let request = frames(&[
            b"client-7",
            b"engine:3",
            DELIMITER,
            b"sig",
            b"h",
            b"p",
            b"m",
            b"c",
            b"buffer",
        ]);
        let routed = to_engine(request, Bytes::from_static(b"engine-identity"));
        assert_eq!(
            routed,
            frames(&[
                b"engine-identity",
                b"client-7",
                DELIMITER,
                b"sig",
                b"h",
                b"p",
                b"m",
                b"c",
                b"buffer"
            ])
        );
        let answer = frames(&[b"engine-identity", b"client-7", DELIMITER, b"sig", b"h"]);
        assert_eq!(
            to_client(answer),
            frames(&[b"client-7", DELIMITER, b"sig", b"h"])
        );
    }

    #[test]
    fn launch_output_keeps_its_first_and_last_lines() {
        let mut lines = Vec::new();
        for i in 0..100 {
            keep_line(&mut lines, i.to_string());
        }
        assert_eq!(lines.len(), STDERR_HEAD + 1 + STDERR_TAIL + 1);
        assert_eq!(lines[..STDERR_HEAD], ["0", "1", "2", "3", "4", "5"]);
        assert_eq!(lines[STDERR_HEAD], ELIDED);
        assert_eq!(lines.last().unwrap(), "99");
        let mut few = Vec::new();
        keep_line(&mut few, "only".into());
        assert_eq!(few, ["only"]);
    }

    #[test]
    fn starting_engines_is_bounded() {
        assert_eq!(engines_to_start(&json!({})), Ok(1));
        assert_eq!(engines_to_start(&json!({"n": 4})), Ok(4));
        assert_eq!(engines_to_start(&json!({"n": 1024})), Ok(1024));
        for n in [json!(0), json!(1025), json!(1_000_000)] {
            let err = engines_to_start(&json!({ "n": n })).unwrap_err();
            assert!(err.contains("1 to 1024"), "{err}");
        }
    }
}

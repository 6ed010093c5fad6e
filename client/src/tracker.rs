//! What a client knows: live engines and the state of every request it sent.
//! The connection's task records arrivals; Python-facing code waits with
//! the GIL released, driving the client's runtime meanwhile. A task is
//! forgotten when its AsyncResult is dropped, so memory follows what the
//! user holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rparallel_protocol::Message;

use crate::request::Route;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Pending,
    /// The reply arrived.
    Done,
    /// The engine died or could not be reached: the reason, for EngineError.
    Failed(String),
}

/// One request sent to an engine (or to the controller: `engine` None).
#[derive(Debug, Clone)]
pub struct Task {
    /// The engine running it: known when sent to one, else (a
    /// load-balanced task) from its first output or reply.
    pub engine: Option<u32>,
    /// Sent to the scheduler rather than to an engine.
    pub balanced: bool,
    pub status: Status,
    pub reply: Option<Arc<Message>>,
    /// stream, display_data, execute_result and error messages, in order.
    pub outputs: Vec<Arc<Message>>,
    pub submitted: Instant,
    pub finished: Option<Instant>,
    /// Its AsyncResult is gone but the engine still works on it: kept (with
    /// no outputs) only until the reply, so the credit it holds is honest.
    pub orphan: bool,
}

#[derive(Default)]
pub struct State {
    pub tasks: HashMap<String, Task>,
    /// Live engines: id → description from the controller.
    pub engines: BTreeMap<u32, Value>,
    /// Why the controller can no longer be reached, once it cannot.
    pub controller_lost: Option<String>,
    /// How many of this client's requests each engine finished (its
    /// `queue_status()` "completed"; kept after the records go).
    pub completed: BTreeMap<u32, u64>,
}

/// How long a wait for a lone request polls before it sleeps.
const SPIN: Duration = Duration::from_micros(300);

/// Whether all of some requests finished, for a wait that asks again at
/// every arrival: a finished request stays finished, so each check starts
/// where the last one stopped, and a wait on n requests costs O(n) checks
/// in all rather than O(n) per arrival.
pub struct AllDone<'a> {
    msg_ids: &'a [String],
    finished: AtomicUsize,
}

impl<'a> AllDone<'a> {
    pub fn new(msg_ids: &'a [String]) -> Self {
        AllDone {
            msg_ids,
            finished: AtomicUsize::new(0),
        }
    }

    pub fn check(&self, state: &State) -> bool {
        let mut i = self.finished.load(Ordering::Relaxed);
        while i < self.msg_ids.len() && Tracker::is_done(state, &self.msg_ids[i]) {
            i += 1;
        }
        self.finished.store(i, Ordering::Relaxed);
        i == self.msg_ids.len()
    }
}

#[derive(Default)]
pub struct Tracker {
    state: Mutex<State>,
    /// Wakes threads blocked outside the runtime ([`Tracker::wait_blocking`]).
    changed: Condvar,
    /// Wakes waits driving the client's runtime.
    changed_async: tokio::sync::Notify,
    /// Requests sent to engines and not finished: the client's credit.
    in_flight: AtomicUsize,
}

/// Marks a pending task finished, returning the engine credit it held.
fn finish(task: &mut Task, status: Status, in_flight: &AtomicUsize) {
    if task.status == Status::Pending && (task.engine.is_some() || task.balanced) {
        in_flight.fetch_sub(1, Ordering::SeqCst);
    }
    task.status = status;
    task.finished = Some(Instant::now());
}

/// Messages that are a request's output rather than its reply.
const OUTPUT_TYPES: [&str; 7] = [
    "stream",
    "display_data",
    "update_display_data",
    "execute_result",
    "error",
    "clear_output",
    // `rparallel.datapub.publish_data`
    "data_message",
];

impl Tracker {
    pub fn new() -> Arc<Self> {
        Arc::new(Tracker::default())
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `msg_id` was sent to `engine`.
    pub fn submit(&self, msg_id: &str, route: Route) {
        let engine = match route {
            Route::Engine(id) => Some(id),
            Route::Controller | Route::Task => None,
        };
        let balanced = route == Route::Task;
        let mut state = self.lock();
        let status = match (&state.controller_lost, engine) {
            (Some(reason), _) => Status::Failed(reason.clone()),
            (None, Some(id)) if !state.engines.contains_key(&id) => {
                Status::Failed(format!("engine {id} is not registered"))
            }
            _ => Status::Pending,
        };
        let failed = status != Status::Pending;
        if !failed && route != Route::Controller {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
        }
        state.tasks.insert(
            msg_id.to_string(),
            Task {
                engine,
                balanced,
                status,
                reply: None,
                outputs: Vec::new(),
                submitted: Instant::now(),
                finished: failed.then(Instant::now),
                orphan: false,
            },
        );
    }

    /// Finishes a request waited for here ([`Tracker::submit`] with
    /// [`Route::Task`]) with what the controller's task record had: its
    /// `reply` and `outputs`, as if they had come from its engine. One
    /// that finished meanwhile is left as it is.
    pub fn finish_from_record(
        &self,
        msg_id: &str,
        engine: Option<u32>,
        reply: Message,
        outputs: Vec<Message>,
    ) {
        let mut state = self.lock();
        let Some(task) = state.tasks.get_mut(msg_id) else {
            return;
        };
        if task.status != Status::Pending {
            return;
        }
        task.engine = task.engine.or(engine);
        task.outputs = outputs.into_iter().map(Arc::new).collect();
        task.reply = Some(Arc::new(reply));
        finish(task, Status::Done, &self.in_flight);
        drop(state);
        self.notify_changed();
    }

    /// Takes back requests [`Tracker::submit`] recorded that will never
    /// be answered (the controller refused to follow them): unfinished
    /// ones go, with the credit they held.
    pub fn withdraw(&self, msg_ids: &[String]) {
        let mut state = self.lock();
        for id in msg_ids {
            if state
                .tasks
                .get(id)
                .is_some_and(|t| t.status == Status::Pending)
            {
                if let Some(mut task) = state.tasks.remove(id) {
                    finish(
                        &mut task,
                        Status::Failed("withdrawn".into()),
                        &self.in_flight,
                    );
                }
            }
        }
        drop(state);
        self.notify_changed();
    }

    /// Puts `outputs` (sent before this client asked for them) ahead of
    /// what `msg_id` has.
    pub fn prepend_outputs(&self, msg_id: &str, outputs: Vec<Message>) {
        let mut state = self.lock();
        if let Some(task) = state.tasks.get_mut(msg_id) {
            let later = std::mem::take(&mut task.outputs);
            task.outputs = outputs.into_iter().map(Arc::new).chain(later).collect();
        }
    }

    /// Records a message from the controller or an engine.
    pub fn on_message(&self, message: Message) {
        let message = Arc::new(message);
        let mut state = self.lock();
        match message.msg_type() {
            "engine_registered" | "engine_died" => {
                let Some(id) = message.content["id"].as_u64().map(|id| id as u32) else {
                    return;
                };
                if message.msg_type() == "engine_registered" {
                    state.engines.insert(id, message.content.clone());
                } else {
                    let info = state.engines.remove(&id);
                    let mut reason = message.content["reason"]
                        .as_str()
                        .unwrap_or("unknown")
                        .to_string();
                    // An engine on another host is named with its host:
                    // that is where to look.
                    if let Some(host) = info.as_ref().and_then(|i| i["hostname"].as_str()) {
                        if host != rparallel_cluster::process::hostname() {
                            reason.push_str(&format!(" on host {host}"));
                        }
                    }
                    fail_engine_tasks(&mut state, id, &reason, &self.in_flight);
                    state.tasks.retain(|_, t| !t.orphan);
                }
            }
            "connection_reply" => {
                if let Some(engines) = message.content["engines"].as_object() {
                    for (id, info) in engines {
                        if let Ok(id) = id.parse() {
                            state.engines.insert(id, info.clone());
                        }
                    }
                }
                complete(&mut state, &message, &self.in_flight);
            }
            "engine_unavailable" => {
                let reason = message.content["reason"]
                    .as_str()
                    .unwrap_or("engine unavailable");
                if let Some(task) = parent_task(&mut state, &message) {
                    finish(task, Status::Failed(reason.to_string()), &self.in_flight);
                }
                drop_if_orphan(&mut state, &message);
            }
            t if OUTPUT_TYPES.contains(&t) => {
                if let Some(task) = parent_task(&mut state, &message) {
                    if !task.orphan {
                        task.outputs.push(message.clone());
                    }
                }
            }
            t if t.ends_with("_reply") => {
                complete(&mut state, &message, &self.in_flight);
                drop_if_orphan(&mut state, &message);
            }
            _ => {}
        }
        drop(state);
        self.notify_changed();
    }

    /// Fails everything pending: the controller is gone.
    pub fn controller_lost(&self, reason: &str) {
        let mut state = self.lock();
        state.controller_lost = Some(reason.to_string());
        state.engines.clear();
        for task in state.tasks.values_mut() {
            if task.status == Status::Pending {
                finish(task, Status::Failed(reason.to_string()), &self.in_flight);
            }
        }
        state.tasks.retain(|_, t| !t.orphan);
        drop(state);
        self.notify_changed();
    }

    /// Whether the engine of one of `msg_ids` was lost before it finished.
    pub fn any_lost(state: &State, msg_ids: &[String]) -> bool {
        msg_ids.iter().any(|id| {
            state
                .tasks
                .get(id)
                .is_some_and(|t| matches!(t.status, Status::Failed(_)))
        })
    }

    /// Whether `msg_id` has finished (or is unknown: released).
    pub fn is_done(state: &State, msg_id: &str) -> bool {
        state
            .tasks
            .get(msg_id)
            .is_none_or(|t| t.status != Status::Pending)
    }

    /// Whether one of `msg_ids` has finished.
    pub fn any_done(state: &State, msg_ids: &[String]) -> bool {
        msg_ids.iter().any(|id| Self::is_done(state, id))
    }

    /// Whether every one of `msg_ids` has finished.
    pub fn all_done(state: &State, msg_ids: &[String]) -> bool {
        msg_ids.iter().all(|id| Self::is_done(state, id))
    }

    /// Waits until all of `msg_ids` finished or `timeout` passed (None:
    /// forever). Call with the GIL released. True when all finished.
    pub fn wait(&self, msg_ids: &[String], timeout: Option<Duration>) -> bool {
        let all = AllDone::new(msg_ids);
        self.wait_until(timeout, |state| all.check(state))
    }

    /// Wakes every wait: the state changed.
    fn notify_changed(&self) {
        self.changed.notify_all();
        self.changed_async.notify_waiters();
    }

    /// Waits until `ready(state)` holds or `timeout` passes. The waiting
    /// thread drives the client's runtime meanwhile, so the reply it waits
    /// for wakes it directly (see `rparallel_driver`); a lone small call
    /// first polls for a few hundred µs, as its reply usually comes by then
    /// and a sleep and a wake-up cost more on virtual machines. While
    /// several requests run, the engines need the CPUs more than a poller
    /// does (they may share this host's), so it sleeps at once.
    pub fn wait_until(&self, timeout: Option<Duration>, ready: impl Fn(&State) -> bool) -> bool {
        if ready(&self.lock()) {
            return true;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            // Called from a task of some runtime: it may not block on another.
            return self.wait_blocking(timeout, ready);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let spin = if self.in_flight() <= 1 {
            SPIN
        } else {
            Duration::ZERO
        };
        let spin_until = Instant::now() + spin;
        crate::runtime::driver().wait_on(async {
            loop {
                let changed = self.changed_async.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if ready(&self.lock()) {
                    return true;
                }
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return false;
                }
                if now < spin_until {
                    tokio::task::yield_now().await;
                    continue;
                }
                match deadline {
                    None => changed.await,
                    Some(d) => {
                        let _ = tokio::time::timeout_at(tokio::time::Instant::from_std(d), changed)
                            .await;
                    }
                }
            }
        })
    }

    /// [`Tracker::wait_until`] without the runtime: a condvar wait.
    fn wait_blocking(&self, timeout: Option<Duration>, ready: impl Fn(&State) -> bool) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut state = self.lock();
        loop {
            if ready(&state) {
                return true;
            }
            match deadline {
                None => {
                    state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    state = self
                        .changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    /// Requests sent to engines and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Blocks (call with the GIL released) until fewer than `limit`
    /// requests are in flight.
    pub fn wait_for_credit(&self, limit: usize) {
        if self.in_flight() >= limit {
            self.wait_until(None, |_| self.in_flight() < limit);
        }
    }

    /// Drops the records of tasks nobody holds any more.
    pub fn forget(&self, msg_ids: &[String]) {
        let mut state = self.lock();
        for id in msg_ids {
            match state.tasks.get_mut(id) {
                Some(task) if task.status == Status::Pending => {
                    task.orphan = true;
                    task.outputs.clear();
                }
                Some(_) => {
                    state.tasks.remove(id);
                }
                None => {}
            }
        }
    }

    /// Takes the buffers of `msg_id`'s reply (its value is being decoded
    /// once, for good), leaving the reply without them.
    pub fn take_buffers(&self, msg_id: &str) -> Vec<bytes::Bytes> {
        let mut state = self.lock();
        let Some(reply) = state.tasks.get_mut(msg_id).and_then(|t| t.reply.as_mut()) else {
            return Vec::new();
        };
        match Arc::get_mut(reply) {
            Some(message) => std::mem::take(&mut message.buffers),
            None => {
                let mut copy = Message::clone(reply);
                let buffers = std::mem::take(&mut copy.buffers);
                *reply = Arc::new(copy);
                buffers
            }
        }
    }

    /// Wakes every waiter (e.g. to let them notice an interrupt).
    pub fn wake(&self) {
        self.notify_changed();
    }
}

fn parent_task<'s>(state: &'s mut State, message: &Message) -> Option<&'s mut Task> {
    let parent = message.parent_header.as_ref()?;
    let task = state.tasks.get_mut(&parent.msg_id)?;
    if task.balanced && task.engine.is_none() {
        // A load-balanced task's engine is known from what it sends, or
        // from the controller when that engine died.
        let id = match message.msg_type() {
            "engine_unavailable" => &message.content["engine_id"],
            _ => &message.metadata["engine_id"],
        };
        task.engine = id.as_u64().map(|id| id as u32);
    }
    Some(task)
}

/// Removes the parent task of `message` if nobody holds it and it finished.
fn drop_if_orphan(state: &mut State, message: &Message) {
    if let Some(parent) = &message.parent_header {
        if state
            .tasks
            .get(&parent.msg_id)
            .is_some_and(|t| t.orphan && t.status != Status::Pending)
        {
            state.tasks.remove(&parent.msg_id);
        }
    }
}

fn complete(state: &mut State, message: &Arc<Message>, in_flight: &AtomicUsize) {
    let mut finished_on = None;
    if let Some(task) = parent_task(state, message) {
        if task.status == Status::Pending {
            finish(task, Status::Done, in_flight);
            finished_on = task.engine;
        }
        task.reply = Some(message.clone());
    }
    // Requests that stop work are not work done.
    let control = matches!(
        message.msg_type(),
        "abort_reply" | "interrupt_reply" | "signal_reply"
    );
    if let Some(engine) = finished_on.filter(|_| !control) {
        *state.completed.entry(engine).or_default() += 1;
    }
}

fn fail_engine_tasks(state: &mut State, engine: u32, reason: &str, in_flight: &AtomicUsize) {
    for (msg_id, task) in state.tasks.iter_mut() {
        if task.engine == Some(engine) && task.status == Status::Pending {
            let reason = format!("Engine {engine} died while running task {msg_id} ({reason})");
            finish(task, Status::Failed(reason), in_flight);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rparallel_protocol::Session;
    use serde_json::json;

    fn reply_to(session: &Session, msg_type: &str, parent: &Message, content: Value) -> Message {
        session.message(msg_type, content, Some(parent))
    }

    #[test]
    fn replies_outputs_and_engine_death() {
        let session = Session::new(b"k", "t");
        let tracker = Tracker::new();
        tracker.on_message(session.message("engine_registered", json!({"id": 0}), None));
        tracker.on_message(session.message("engine_registered", json!({"id": 1}), None));
        let a = session.message("apply_request", json!({}), None);
        let b = session.message("apply_request", json!({}), None);
        tracker.submit(&a.header.msg_id, Route::Engine(0));
        tracker.submit(&b.header.msg_id, Route::Engine(1));
        let ids = vec![a.header.msg_id.clone(), b.header.msg_id.clone()];
        assert!(!tracker.wait(&ids, Some(Duration::from_millis(10))));

        tracker.on_message(reply_to(
            &session,
            "stream",
            &a,
            json!({"name": "stdout", "text": "hi"}),
        ));
        tracker.on_message(reply_to(
            &session,
            "apply_reply",
            &a,
            json!({"status": "ok"}),
        ));
        tracker.on_message(session.message(
            "engine_died",
            json!({"id": 1, "reason": "signal 9"}),
            None,
        ));
        assert!(tracker.wait(&ids, Some(Duration::from_millis(10))));
        let state = tracker.lock();
        assert_eq!(state.tasks[&ids[0]].outputs.len(), 1);
        assert_eq!(state.tasks[&ids[0]].status, Status::Done);
        let Status::Failed(reason) = &state.tasks[&ids[1]].status else {
            panic!("engine death fails its task")
        };
        assert!(
            reason.starts_with("Engine 1 died while running task"),
            "{reason}"
        );
        assert!(reason.ends_with("(signal 9)"));
        assert_eq!(state.engines.keys().copied().collect::<Vec<_>>(), vec![0]);
        drop(state);

        // Work for a dead engine fails at once; forgetting frees the records.
        tracker.submit("late", Route::Engine(1));
        assert!(tracker.wait(&["late".to_string()], Some(Duration::ZERO)));
        tracker.forget(&ids);
        assert_eq!(tracker.lock().tasks.len(), 1);
        assert_eq!(
            tracker.in_flight(),
            0,
            "finished and failed work holds no credit"
        );
    }

    #[test]
    fn losing_the_controller_fails_everything_pending() {
        let tracker = Tracker::new();
        tracker.submit("x", Route::Controller);
        tracker.controller_lost("the controller is gone");
        assert_eq!(
            tracker.lock().tasks["x"].status,
            Status::Failed("the controller is gone".into())
        );
    }
}

//! The task scheduler: load-balanced requests (routed [`TASK_ROUTE`]
//! instead of `engine:<id>`) wait here and go to an engine with room
//! (fewer than `hwm` unfinished tasks; the default 1 means a long task
//! never holds short ones back behind it), picked by the [`Scheme`]. Pure
//! bookkeeping, as ipyparallel's task scheduler: the hub moves the frames
//! and sends the failures this decides.
//!
//! - [`task`]: a request and what scheduling reads from its metadata.
//! - [`dependency`]: `after`/`follow` sets and the record of finished tasks.
//! - [`scheme`]: how an engine is picked among those with room.
//!
//! A task waits *blocked* until its `after` (and `follow`) dependencies
//! are met, then *ready* until an engine it may run on has room, then
//! *running*. It fails here when its dependencies become impossible, its
//! `timeout` passes while it waits, it is aborted, or its engine dies with
//! no retries left.

pub mod dependency;
pub mod scheme;
pub mod task;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;

use dependency::{Finished, Record};
pub use rparallel_cluster::scheduling::{SchedulerSpec, Scheme};
pub use task::Task;

/// The routing frame of a load-balanced request.
pub const TASK_ROUTE: &[u8] = b"task";

/// Why the scheduler failed a task; the hub tells its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Its engine died while running it (EngineError).
    EngineDied { engine: u32, reason: String },
    /// No engine it may run on is alive.
    NoEngine(String),
    /// Its dependencies can never be met (ImpossibleDependency).
    Impossible(String),
    /// It depends on unknown tasks (InvalidDependency).
    Invalid(String),
    /// It waited longer than its `timeout` (TaskTimeout).
    Timeout(String),
    /// Aborted while it waited.
    Aborted,
}

#[derive(Debug)]
pub struct Failed {
    pub task: Task,
    pub why: Why,
}

/// What to do with an engine's reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Not a task's reply (a direct request's).
    NotATask,
    /// The task is done: pass the reply on.
    Forward,
    /// The task runs again elsewhere (or failed here): drop the reply.
    Drop,
}

#[derive(Debug)]
pub struct Scheduler {
    scheme: Scheme,
    /// None: no limit.
    hwm: Option<usize>,
    rng: fastrand::Rng,
    /// Dependencies met; waiting for an engine with room.
    ready: VecDeque<Task>,
    /// Waiting for dependencies, by msg_id.
    blocked: HashMap<String, Task>,
    /// A msg_id → the blocked tasks waiting for it.
    graph: HashMap<String, Vec<String>>,
    /// Each engine's unfinished tasks, in the order it got them.
    running: HashMap<u32, Vec<Task>>,
    /// Live engines, the one given a task longest ago first.
    lru: Vec<u32>,
    /// Tasks submitted and not finished.
    pending: HashSet<String>,
    record: Record,
    /// When waiting tasks time out (stale entries are skipped).
    deadlines: BinaryHeap<Reverse<(Instant, String)>>,
    /// Failures for the hub to send.
    failed: Vec<Failed>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler::new(SchedulerSpec::default())
    }
}

impl Scheduler {
    /// `hwm` 0: no limit (and always none for [`Scheme::Pure`]).
    pub fn new(spec: SchedulerSpec) -> Self {
        let scheme = spec.scheme;
        let hwm = Some(spec.hwm).filter(|&h| h > 0 && scheme != Scheme::Pure);
        Scheduler {
            scheme,
            hwm,
            rng: fastrand::Rng::new(),
            ready: VecDeque::new(),
            blocked: HashMap::new(),
            graph: HashMap::new(),
            running: HashMap::new(),
            lru: Vec::new(),
            pending: HashSet::new(),
            record: Record::default(),
            deadlines: BinaryHeap::new(),
            failed: Vec::new(),
        }
    }

    /// Tasks waiting (blocked or ready).
    pub fn queued(&self) -> usize {
        self.ready.len() + self.blocked.len()
    }

    /// The failures decided since the last call, for the hub to send.
    pub fn take_failed(&mut self) -> Vec<Failed> {
        std::mem::take(&mut self.failed)
    }

    /// A new task: failed at once when it depends on unknown tasks or its
    /// dependencies can no longer be met; else queued.
    pub fn submit(&mut self, task: Task) {
        let unknown: Vec<&String> = task
            .dependencies()
            .filter(|id| {
                **id == task.msg_id
                    || (!self.pending.contains(*id) && self.record.get(id).is_none())
            })
            .collect();
        if !unknown.is_empty() {
            let why = format!("depends on unknown tasks: {unknown:?}");
            self.fail(task, Why::Invalid(why));
            return;
        }
        self.pending.insert(task.msg_id.clone());
        if let Some(why) = self.impossible(&task) {
            self.fail(task, Why::Impossible(why));
            return;
        }
        self.enqueue(task, Instant::now());
    }

    /// Why `task` can never run, judging by what has finished.
    fn impossible(&self, task: &Task) -> Option<String> {
        if task
            .after
            .as_ref()
            .is_some_and(|d| d.unreachable(&self.record))
        {
            return Some("its `after` dependencies can no longer be met".into());
        }
        if let Some(follow) = &task.follow {
            if follow.unreachable(&self.record) {
                return Some("its `follow` dependencies can no longer be met".into());
            }
            if follow.split_across_engines(&self.record) {
                return Some("the tasks it must follow ran on different engines".into());
            }
        }
        if task.refused_everywhere() {
            return Some(format!(
                "every engine among its targets {:?} refused it",
                task.targets.as_deref().unwrap_or(&[])
            ));
        }
        None
    }

    /// Whether `task` still waits for dependencies.
    fn is_blocked(&self, task: &Task) -> bool {
        task.after
            .iter()
            .chain(task.follow.iter())
            .any(|d| !d.met(&self.record))
    }

    /// Queues `task` (blocked or ready); its `timeout` counts from `now`.
    fn enqueue(&mut self, mut task: Task, now: Instant) {
        task.deadline = task.timeout.map(|t| now + t);
        if let Some(deadline) = task.deadline {
            self.deadlines
                .push(Reverse((deadline, task.msg_id.clone())));
        }
        if self.is_blocked(&task) {
            for id in task.dependencies() {
                if self.record.get(id).is_none() {
                    self.graph
                        .entry(id.clone())
                        .or_default()
                        .push(task.msg_id.clone());
                }
            }
            self.blocked.insert(task.msg_id.clone(), task);
        } else {
            self.ready.push_back(task);
        }
    }

    /// Whether `engine` has unfinished tasks (then its replies are read
    /// for the one that finishes them).
    pub fn is_running_on(&self, engine: u32) -> bool {
        self.running.get(&engine).is_some_and(|t| !t.is_empty())
    }

    fn load(&self, engine: u32) -> usize {
        self.running.get(&engine).map_or(0, Vec::len)
    }

    fn has_room(&self, engine: u32) -> bool {
        self.hwm.is_none_or(|hwm| self.load(engine) < hwm)
    }

    /// Keeps the LRU order to the live engines; new ones go first.
    fn sync_engines(&mut self, live: &[u32]) {
        self.lru.retain(|e| live.contains(e));
        for &e in live.iter().rev() {
            if !self.lru.contains(&e) {
                self.lru.insert(0, e);
            }
        }
    }

    /// Hands ready tasks to engines with room, as the scheme picks among
    /// those each may run on; `live` are the live engines. A task no
    /// engine may take yet waits, and the ones behind it can pass it.
    pub fn assign(&mut self, live: &[u32]) -> Vec<(u32, Task)> {
        self.sync_engines(live);
        let mut given = Vec::new();
        let mut waiting = VecDeque::new();
        while let Some(task) = self.ready.pop_front() {
            let candidates: Vec<u32> = self
                .lru
                .iter()
                .copied()
                .filter(|&e| self.has_room(e) && task.may_run_on(e))
                .filter(|&e| {
                    task.follow
                        .as_ref()
                        .is_none_or(|f| f.met_on(e, &self.record))
                })
                .collect();
            if candidates.is_empty() {
                match self.impossible(&task) {
                    Some(why) => self.fail(task, Why::Impossible(why)),
                    None => waiting.push_back(task),
                }
            } else {
                let loads: Vec<usize> = candidates.iter().map(|&e| self.load(e)).collect();
                let engine = candidates[scheme::choose(self.scheme, &loads, &mut self.rng)];
                self.lru.retain(|&e| e != engine);
                self.lru.push(engine);
                self.running.entry(engine).or_default().push(task.clone());
                given.push((engine, task));
            }
            if !self.lru.iter().any(|&e| self.has_room(e)) {
                break;
            }
        }
        waiting.append(&mut self.ready);
        self.ready = waiting;
        given
    }

    /// `engine` replied to `msg_id`: `ok` its status, `dependencies_met`
    /// false when the task refused to run there (UnmetDependency). A
    /// failed task with retries left runs again on another engine (one
    /// that has not failed it), when one of `live` may take it or it has
    /// a timeout to wait for a new one; otherwise its reply is its end.
    pub fn reply(&mut self, engine: u32, info: &ReplyInfo, live: &[u32]) -> Reply {
        let ReplyInfo {
            msg_id,
            ok,
            dependencies_met,
            aborted,
        } = info;
        let (ok, dependencies_met) = (*ok, *dependencies_met || *aborted);
        let Some(tasks) = self.running.get_mut(&engine) else {
            return Reply::NotATask;
        };
        let Some(at) = tasks.iter().position(|t| &t.msg_id == msg_id) else {
            return Reply::NotATask;
        };
        let mut task = tasks.remove(at);
        if !dependencies_met {
            task.refuse(engine);
            match self.impossible(&task) {
                Some(why) => self.fail(task, Why::Impossible(why)),
                None => self.enqueue(task, Instant::now()),
            }
            return Reply::Drop;
        }
        if !ok && !aborted && task.retries > 0 {
            task.refuse(engine);
            let elsewhere = live.iter().any(|&e| task.may_run_on(e));
            if elsewhere || task.timeout.is_some() {
                task.retries -= 1;
                self.enqueue(task, Instant::now());
                return Reply::Drop;
            }
        }
        self.finish(&task.msg_id, Some(engine), ok);
        Reply::Forward
    }

    /// `engine` died: its tasks with retries left go to the front of the
    /// queue, the others fail; queued tasks whose targets are all gone
    /// fail too (ids are never reused). `live`: the engines left.
    pub fn engine_lost(&mut self, engine: u32, reason: &str, live: &[u32]) {
        self.lru.retain(|&e| e != engine);
        for mut task in self
            .running
            .remove(&engine)
            .unwrap_or_default()
            .into_iter()
            .rev()
        {
            if task.retries > 0 {
                task.retries -= 1;
                self.ready.push_front(task);
            } else {
                let reason = format!(
                    "Engine {engine} died while running task {} ({reason})",
                    task.msg_id
                );
                self.fail(task, Why::EngineDied { engine, reason });
            }
        }
        let orphaned = |t: &Task| {
            t.targets
                .as_ref()
                .is_some_and(|ts| !ts.iter().any(|e| live.contains(e)))
        };
        let (stuck, keep): (Vec<Task>, Vec<Task>) = self.ready.drain(..).partition(|t| orphaned(t));
        self.ready = keep.into();
        let stuck_blocked: Vec<String> = self
            .blocked
            .values()
            .filter(|t| orphaned(t))
            .map(|t| t.msg_id.clone())
            .collect();
        let stuck = stuck.into_iter().chain(
            stuck_blocked
                .iter()
                .filter_map(|id| self.blocked.remove(id)),
        );
        for task in stuck.collect::<Vec<_>>() {
            self.fail(
                task,
                Why::NoEngine("no engine it may run on is alive".into()),
            );
        }
    }

    /// Aborts tasks of `client`: those in `msg_ids`, or all of them when
    /// it is empty. Waiting ones fail here; the ones already given to an
    /// engine are returned by engine, for the engine to abort if they
    /// have not started (it answers them as aborted).
    pub fn abort(&mut self, client: &Bytes, msg_ids: &[String]) -> Vec<(u32, Vec<String>)> {
        let chosen = |t: &Task| {
            t.frames[0] == *client && (msg_ids.is_empty() || msg_ids.contains(&t.msg_id))
        };
        let (aborted, keep): (Vec<Task>, Vec<Task>) = self.ready.drain(..).partition(|t| chosen(t));
        self.ready = keep.into();
        let blocked: Vec<String> = self
            .blocked
            .values()
            .filter(|t| chosen(t))
            .map(|t| t.msg_id.clone())
            .collect();
        let aborted: Vec<Task> = aborted
            .into_iter()
            .chain(blocked.iter().filter_map(|id| self.blocked.remove(id)))
            .collect();
        for task in aborted {
            self.fail(task, Why::Aborted);
        }
        let mut given: Vec<(u32, Vec<String>)> = self
            .running
            .iter()
            .map(|(engine, tasks)| {
                let ids = tasks
                    .iter()
                    .filter(|t| chosen(t))
                    .map(|t| t.msg_id.clone())
                    .collect();
                (*engine, ids)
            })
            .filter(|(_, ids): &(u32, Vec<String>)| !ids.is_empty())
            .collect();
        given.sort();
        given
    }

    /// The earliest moment a waiting task may time out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// Fails the waiting tasks whose timeout passed by `now`.
    pub fn expire(&mut self, now: Instant) {
        while let Some(Reverse((at, msg_id))) = self.deadlines.peek().cloned() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let waited = |t: &Task| t.msg_id == msg_id && t.deadline == Some(at);
            let task = if self.blocked.get(&msg_id).is_some_and(waited) {
                self.blocked.remove(&msg_id)
            } else {
                self.ready
                    .iter()
                    .position(waited)
                    .and_then(|i| self.ready.remove(i))
            };
            if let Some(task) = task {
                let secs = task.timeout.unwrap_or_default().as_secs_f64();
                self.fail(
                    task,
                    Why::Timeout(format!("task {msg_id} waited more than {secs} s to start")),
                );
            }
        }
    }

    /// Ends `task` with a failure of the scheduler's.
    pub fn fail(&mut self, task: Task, why: Why) {
        let engine = match why {
            Why::EngineDied { engine, .. } => Some(engine),
            _ => None,
        };
        let msg_id = task.msg_id.clone();
        self.failed.push(Failed { task, why });
        self.finish(&msg_id, engine, false);
    }

    /// Records that `msg_id` finished, and moves on the tasks waiting for
    /// it: to the ready queue when their dependencies are met, to failure
    /// when they never can be.
    fn finish(&mut self, msg_id: &str, engine: Option<u32>, success: bool) {
        let mut settled = vec![msg_id.to_string()];
        self.pending.remove(msg_id);
        self.record
            .insert(msg_id.to_string(), Finished { engine, success });
        while let Some(done) = settled.pop() {
            for waiting in self.graph.remove(&done).unwrap_or_default() {
                let Some(task) = self.blocked.get(&waiting) else {
                    continue;
                };
                if let Some(why) = self.impossible(task) {
                    let task = self.blocked.remove(&waiting).expect("blocked");
                    self.pending.remove(&task.msg_id);
                    self.record.insert(
                        task.msg_id.clone(),
                        Finished {
                            engine: None,
                            success: false,
                        },
                    );
                    settled.push(task.msg_id.clone());
                    self.failed.push(Failed {
                        task,
                        why: Why::Impossible(why),
                    });
                } else if !self.is_blocked(task) {
                    let task = self.blocked.remove(&waiting).expect("blocked");
                    self.ready.push_back(task);
                }
            }
        }
    }
}

/// What the hub reads from an engine's message when the engine has tasks:
/// which request a reply answers, its status and whether the task's
/// functional dependencies were met there (ipyparallel's metadata keys).
#[derive(Debug, PartialEq, Eq)]
pub struct ReplyInfo {
    pub msg_id: String,
    pub ok: bool,
    pub dependencies_met: bool,
    /// Aborted before it ran: final, never retried.
    pub aborted: bool,
}

/// The [`ReplyInfo`] of `[engine, client, <IDS|MSG>, sig, header, parent,
/// metadata, …]` (`split`: the delimiter's index), when it is a reply.
pub fn reply_info(frames: &[Bytes], split: usize) -> Option<ReplyInfo> {
    let header: Value = serde_json::from_slice(frames.get(split + 2)?).ok()?;
    if !header["msg_type"].as_str()?.ends_with("_reply") {
        return None;
    }
    let parent: Value = serde_json::from_slice(frames.get(split + 3)?).ok()?;
    let metadata: Value = frames
        .get(split + 4)
        .and_then(|m| serde_json::from_slice(m).ok())
        .unwrap_or(Value::Null);
    let status = metadata["status"].as_str().unwrap_or("ok");
    Some(ReplyInfo {
        msg_id: parent["msg_id"].as_str()?.to_string(),
        ok: status == "ok",
        dependencies_met: metadata["dependencies_met"].as_bool().unwrap_or(true),
        aborted: status == "aborted",
    })
}

#[cfg(test)]
mod tests;

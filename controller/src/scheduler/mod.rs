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
//! *running*. When every engine is full, each may also get tasks
//! *prefetched* (queued on the engine behind its running one, so the
//! engine goes on without waiting a round trip for the next): one, or
//! [`SHORT_PREFETCH`] while its tasks take less than [`SHORT_TASK`]. As
//! soon as another engine that may run one is idle, a prefetched task is
//! taken back (aborted on its engine, which has not started it) and goes
//! there, so a long task still never holds a short one back for long. It fails here when its dependencies become impossible, its
//! `timeout` passes while it waits, it is aborted, or its engine dies with
//! no retries left.

pub mod dependency;
pub mod scheme;
pub mod task;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
// Engine ids are small integers the controller hands out: no need for a
// DoS-resistant hash on the per-task path.
use rustc_hash::FxHashMap;

use dependency::{Finished, Record};
pub use rparallel_cluster::scheduling::{SchedulerSpec, Scheme};
pub use task::Task;

/// The routing frame of a load-balanced request.
pub const TASK_ROUTE: &[u8] = b"task";

/// Tasks shorter than this are "short": an engine running them gets
/// [`SHORT_PREFETCH`] prefetched, enough to cover the round trip to the
/// controller.
pub const SHORT_TASK: Duration = Duration::from_millis(1);

/// Prefetched tasks an engine running short tasks may hold.
pub const SHORT_PREFETCH: usize = 8;

/// A prefetched task is taken back for an idle engine only once the task
/// ahead of it has run this long: behind a short one it starts soon
/// anyway, and taking it back costs a round trip.
pub const RECLAIM_AFTER: Duration = Duration::from_millis(2);

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
    /// Each engine's unfinished tasks, in the order it got them: the
    /// first runs (an engine runs one request at a time), the others
    /// wait on the engine.
    running: FxHashMap<u32, VecDeque<Task>>,
    /// Prefetched tasks being taken back from their engines.
    reclaiming: HashSet<String>,
    /// How long each engine's tasks take, as seen between its replies
    /// while it stays busy (a moving average), and when it last replied
    /// with more tasks to run.
    pace: FxHashMap<u32, Pace>,
    /// Live engines, the one given a task longest ago first.
    lru: Vec<u32>,
    /// The live engines `lru` was last brought up to date with.
    live_seen: Vec<u32>,
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
            running: FxHashMap::default(),
            reclaiming: HashSet::new(),
            pace: FxHashMap::default(),
            lru: Vec::new(),
            live_seen: Vec::new(),
            pending: HashSet::new(),
            record: Record::default(),
            deadlines: BinaryHeap::new(),
            failed: Vec::new(),
        }
    }

    /// msg_ids of each engine's unfinished tasks, and of the tasks not
    /// given to an engine yet (`queue_status`).
    pub fn queues(&self) -> (Vec<(u32, Vec<String>)>, Vec<String>) {
        let mut engines: Vec<(u32, Vec<String>)> = self
            .running
            .iter()
            .map(|(&e, tasks)| (e, tasks.iter().map(|t| t.msg_id.clone()).collect()))
            .collect();
        engines.sort_by_key(|(e, _)| *e);
        let waiting = self
            .ready
            .iter()
            .map(|t| t.msg_id.clone())
            .chain(self.blocked.keys().cloned())
            .collect();
        (engines, waiting)
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
        self.running.get(&engine).map_or(0, VecDeque::len)
    }

    /// Whether `engine` holds fewer than `limit` tasks (None: no limit).
    fn has_room(&self, engine: u32, limit: Option<usize>) -> bool {
        limit.is_none_or(|limit| self.load(engine) < limit)
    }

    /// Keeps the LRU order to the live engines; new ones go first.
    fn sync_engines(&mut self, live: &[u32]) {
        // The same engines as last time, most often: nothing to do (this
        // runs for every reply).
        if self.live_seen == live {
            return;
        }
        self.live_seen = live.to_vec();
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
    /// Once all are full, each engine may get one more, prefetched (not a
    /// task with a `timeout`: its wait must be the scheduler's).
    pub fn assign(&mut self, live: &[u32]) -> Vec<(u32, Task)> {
        self.sync_engines(live);
        let mut given = self.assign_up_to(self.hwm, false);
        if self.hwm.is_some() && !self.ready.is_empty() {
            given.extend(self.assign_up_to(self.hwm, true));
        }
        given
    }

    /// Tasks `engine` may hold: `hwm` (None: no limit), plus its
    /// prefetch allowance when `prefetch`.
    fn limit(&self, engine: u32, hwm: Option<usize>, prefetch: bool) -> Option<usize> {
        let extra = match (prefetch, self.is_short(engine)) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => SHORT_PREFETCH,
        };
        hwm.map(|hwm| hwm + extra)
    }

    /// Whether `engine`'s recent tasks were short.
    fn is_short(&self, engine: u32) -> bool {
        self.pace.get(&engine).is_some_and(|p| p.is_short())
    }

    /// The engine `task` goes to among those with room (up to `hwm`, plus
    /// prefetched ones when `prefetch`) that it may run on, as the scheme
    /// picks; None when there is none. Least-load and LRU pick in one pass
    /// over the engines, without allocating: this runs for every task.
    fn choose_engine(&mut self, task: &Task, hwm: Option<usize>, prefetch: bool) -> Option<u32> {
        let fits = |s: &Self, e: u32| {
            s.has_room(e, s.limit(e, hwm, prefetch))
                && task.may_run_on(e)
                && task.follow.as_ref().is_none_or(|f| f.met_on(e, &s.record))
        };
        match self.scheme {
            Scheme::LeastLoad => {
                let mut best: Option<(usize, u32)> = None;
                for &e in &self.lru {
                    if fits(self, e) {
                        let load = self.load(e);
                        if best.is_none_or(|(least, _)| load < least) {
                            best = Some((load, e));
                            if load == 0 {
                                break;
                            }
                        }
                    }
                }
                best.map(|(_, e)| e)
            }
            Scheme::Lru | Scheme::Pure => self.lru.iter().copied().find(|&e| fits(self, e)),
            scheme => {
                let candidates: Vec<u32> = self
                    .lru
                    .iter()
                    .copied()
                    .filter(|&e| fits(self, e))
                    .collect();
                if candidates.is_empty() {
                    return None;
                }
                let loads: Vec<usize> = candidates.iter().map(|&e| self.load(e)).collect();
                Some(candidates[scheme::choose(scheme, &loads, &mut self.rng)])
            }
        }
    }

    /// One pass of [`Scheduler::assign`] with engines holding up to `hwm`
    /// tasks, plus prefetched ones when `prefetch`.
    fn assign_up_to(&mut self, hwm: Option<usize>, prefetch: bool) -> Vec<(u32, Task)> {
        let mut given = Vec::new();
        let mut waiting = VecDeque::new();
        while let Some(task) = self.ready.pop_front() {
            if prefetch && task.timeout.is_some() {
                waiting.push_back(task);
                continue;
            }
            let Some(engine) = self.choose_engine(&task, hwm, prefetch) else {
                let restricted =
                    task.targets.is_some() || !task.blacklist.is_empty() || task.follow.is_some();
                match self.impossible(&task) {
                    Some(why) => self.fail(task, Why::Impossible(why)),
                    None => waiting.push_back(task),
                }
                let room = |s: &Self| {
                    s.lru
                        .iter()
                        .any(|&e| s.has_room(e, s.limit(e, hwm, prefetch)))
                };
                if restricted && room(self) {
                    continue;
                }
                // No engine has room (an unrestricted task would have fit).
                break;
            };
            self.lru.retain(|&e| e != engine);
            self.lru.push(engine);
            if self.load(engine) == 0 {
                self.pace.entry(engine).or_default().current_since = Some(Instant::now());
            }
            let mut task = task;
            task.resend = task.sent_to.contains(&engine);
            task.sent_to.push(engine);
            task.sent_at = Some(Instant::now());
            self.running
                .entry(engine)
                .or_default()
                .push_back(task.clone());
            given.push((engine, task));
        }
        // Back in front, in order (O(waiting), not O(queue): this runs
        // for every reply).
        while let Some(task) = waiting.pop_back() {
            self.ready.push_front(task);
        }
        given
    }

    /// Prefetched tasks to take back: for each idle engine (nothing
    /// ready for it), one task waiting behind another on an engine where
    /// it could run, behind a task running for [`RECLAIM_AFTER`] by `now`,
    /// as (engine holding it, msg_id). The engine answers it as aborted and
    /// [`Scheduler::reply`] queues it again, first. (Called after each
    /// dispatch and on the hub's tick, so a long task is noticed.)
    pub fn reclaim(&mut self, live: &[u32], now: Instant) -> Vec<(u32, String)> {
        let mut taken = Vec::new();
        // Engines with tasks waiting behind one that has run long enough,
        // the most waiting first. Usually none: then this is all.
        let mut holders: Vec<(u32, usize)> = self
            .running
            .iter()
            .filter(|(engine, tasks)| {
                tasks.len() > 1
                    && self
                        .pace
                        .get(engine)
                        .and_then(|p| p.current_since)
                        .is_some_and(|since| now.saturating_duration_since(since) >= RECLAIM_AFTER)
            })
            .map(|(engine, tasks)| (*engine, tasks.len()))
            .collect();
        if holders.is_empty() {
            return taken;
        }
        holders.sort_by_key(|&(engine, waiting)| (std::cmp::Reverse(waiting), engine));
        // Tasks already on their way back are for idle engines too.
        let idle: Vec<u32> = live
            .iter()
            .copied()
            .filter(|&e| self.load(e) == 0)
            .skip(self.reclaiming.len())
            .collect();
        for idle in idle {
            let waiting = holders.iter().find_map(|&(engine, _)| {
                self.running[&engine]
                    .iter()
                    .skip(1)
                    .rev()
                    .find(|t| {
                        !self.reclaiming.contains(&t.msg_id)
                            && t.may_run_on(idle)
                            && t.follow
                                .as_ref()
                                .is_none_or(|f| f.met_on(idle, &self.record))
                    })
                    .map(|t| (engine, t.msg_id.clone()))
            });
            if let Some((engine, msg_id)) = waiting {
                self.reclaiming.insert(msg_id.clone());
                taken.push((engine, msg_id));
            }
        }
        taken
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
        let Some(mut task) = tasks.remove(at) else {
            return Reply::NotATask;
        };
        let busy = !tasks.is_empty();
        self.pace
            .entry(engine)
            .or_default()
            .replied(Instant::now(), task.sent_at, busy);
        if self.reclaiming.remove(msg_id) && *aborted {
            // Taken back before it started: it goes to an idle engine.
            self.ready.push_front(task);
            return Reply::Drop;
        }
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

    /// `engine` died: the task it was running runs again elsewhere when
    /// it has retries left, else fails; the ones waiting behind it on the
    /// engine never started and go back to the queue. Queued tasks whose
    /// targets are all gone fail too (ids are never reused). `live`: the
    /// engines left.
    pub fn engine_lost(&mut self, engine: u32, reason: &str, live: &[u32]) {
        self.lru.retain(|&e| e != engine);
        self.pace.remove(&engine);
        let mut tasks = self.running.remove(&engine).unwrap_or_default();
        for task in tasks.drain(1.min(tasks.len())..).rev() {
            self.reclaiming.remove(&task.msg_id);
            self.ready.push_front(task);
        }
        if let Some(mut task) = tasks.pop_front() {
            self.reclaiming.remove(&task.msg_id);
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
        self.reclaiming.remove(msg_id);
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

/// How fast an engine gets through its tasks.
#[derive(Debug, Default)]
struct Pace {
    /// Moving average of the time between replies while busy.
    task_time: Option<Duration>,
    /// The last reply, when the engine had more tasks after it.
    busy_since: Option<Instant>,
    /// Since when its current task runs (None: idle).
    current_since: Option<Instant>,
}

impl Pace {
    /// The engine answered a task sent at `sent`: it ran from then, or
    /// from its previous answer if it was busy until that (a round trip
    /// counts in: an idle engine's tiny task still reads as short).
    fn replied(&mut self, now: Instant, sent: Option<Instant>, still_busy: bool) {
        let began = match (self.busy_since, sent) {
            (Some(busy), Some(sent)) => Some(busy.max(sent)),
            (busy, sent) => busy.or(sent),
        };
        if let Some(began) = began {
            let sample = now.saturating_duration_since(began);
            self.task_time = Some(match self.task_time {
                Some(average) => (average * 7 + sample) / 8,
                None => sample,
            });
        }
        self.busy_since = still_busy.then_some(now);
        self.current_since = self.busy_since;
    }

    fn is_short(&self) -> bool {
        self.task_time.is_some_and(|t| t < SHORT_TASK)
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
    // Only the fields read are parsed (borrowed, no maps): this runs for
    // every reply of an engine with tasks.
    #[derive(serde::Deserialize)]
    struct Header<'a> {
        #[serde(borrow)]
        msg_type: std::borrow::Cow<'a, str>,
    }
    #[derive(serde::Deserialize)]
    struct Parent<'a> {
        #[serde(borrow)]
        msg_id: std::borrow::Cow<'a, str>,
    }
    #[derive(serde::Deserialize, Default)]
    struct Metadata<'a> {
        #[serde(borrow, default)]
        status: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        dependencies_met: Option<bool>,
    }
    let header: Header = serde_json::from_slice(frames.get(split + 2)?).ok()?;
    if !header.msg_type.ends_with("_reply") {
        return None;
    }
    let parent: Parent = serde_json::from_slice(frames.get(split + 3)?).ok()?;
    let metadata: Metadata = frames
        .get(split + 4)
        .and_then(|m| serde_json::from_slice(m).ok())
        .unwrap_or_default();
    let status = metadata.status.as_deref().unwrap_or("ok");
    Some(ReplyInfo {
        msg_id: parent.msg_id.into_owned(),
        ok: status == "ok",
        dependencies_met: metadata.dependencies_met.unwrap_or(true),
        aborted: status == "aborted",
    })
}

#[cfg(test)]
mod tests;

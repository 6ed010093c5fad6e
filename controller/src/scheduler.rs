//! The task scheduler: load-balanced requests (routed [`TASK_ROUTE`]
//! instead of `engine:<id>`) wait here and go to the engine with the fewest
//! unfinished tasks among those with room (fewer than `hwm`; the default 1
//! means a long task never holds short ones back behind it). A task may
//! name the engines it may run on (`targets` in its metadata) and how often
//! to run again when its engine dies (`retries`). Pure bookkeeping: the hub
//! moves the frames.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use serde_json::Value;

/// The routing frame of a load-balanced request.
pub const TASK_ROUTE: &[u8] = b"task";

/// Unfinished tasks an engine is given at most, by default.
pub const DEFAULT_HWM: usize = 1;

/// One load-balanced request.
#[derive(Debug, Clone)]
pub struct Task {
    pub msg_id: String,
    /// The request as the client sent it: `[client, route, <IDS|MSG>, …]`.
    pub frames: Vec<Bytes>,
    /// The delimiter's index in `frames`.
    pub split: usize,
    /// Engines it may run on (None: any).
    pub targets: Option<Vec<u32>>,
    /// Runs left should its engine die.
    pub retries: u32,
}

impl Task {
    /// Reads what scheduling needs from a verified request: its msg_id
    /// (header) and its `targets` and `retries` (metadata).
    pub fn new(frames: Vec<Bytes>, split: usize) -> Option<Task> {
        let header: Value = serde_json::from_slice(frames.get(split + 2)?).ok()?;
        let metadata: Value = serde_json::from_slice(frames.get(split + 4)?).ok()?;
        let msg_id = header["msg_id"].as_str()?.to_string();
        let targets = metadata["targets"].as_array().map(|ids| {
            ids.iter()
                .filter_map(|id| id.as_u64().and_then(|id| u32::try_from(id).ok()))
                .collect()
        });
        let retries = metadata["retries"]
            .as_u64()
            .unwrap_or(0)
            .min(u32::MAX as u64) as u32;
        Some(Task {
            msg_id,
            frames,
            split,
            targets,
            retries,
        })
    }

    fn may_run_on(&self, engine: u32) -> bool {
        self.targets.as_ref().is_none_or(|t| t.contains(&engine))
    }
}

/// What became of an engine's tasks when it died.
#[derive(Debug, Default)]
pub struct Lost {
    /// Queued again, to run elsewhere.
    pub retried: usize,
    /// Failed: no retries left.
    pub failed: Vec<Task>,
}

#[derive(Debug)]
pub struct Scheduler {
    hwm: usize,
    queue: VecDeque<Task>,
    /// Each engine's unfinished tasks, in the order it got them.
    running: HashMap<u32, Vec<Task>>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler::new(DEFAULT_HWM)
    }
}

impl Scheduler {
    pub fn new(hwm: usize) -> Self {
        Scheduler {
            hwm: hwm.max(1),
            queue: VecDeque::new(),
            running: HashMap::new(),
        }
    }

    pub fn submit(&mut self, task: Task) {
        self.queue.push_back(task);
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether `engine` has unfinished tasks (then its replies are read
    /// for the one that finishes them).
    pub fn is_running_on(&self, engine: u32) -> bool {
        self.running.get(&engine).is_some_and(|t| !t.is_empty())
    }

    /// Hands queued tasks to engines with room, least loaded first (ties:
    /// the lowest id); `engines` are the live ones. A task no engine may
    /// run yet waits, and the ones behind it can pass it.
    pub fn assign(&mut self, engines: &[u32]) -> Vec<(u32, Task)> {
        let mut given = Vec::new();
        let mut waiting = VecDeque::new();
        while let Some(task) = self.queue.pop_front() {
            let chosen = engines
                .iter()
                .copied()
                .filter(|&e| task.may_run_on(e))
                .map(|e| (self.load(e), e))
                .filter(|&(load, _)| load < self.hwm)
                .min();
            match chosen {
                Some((_, engine)) => {
                    self.running.entry(engine).or_default().push(task.clone());
                    given.push((engine, task));
                }
                None => waiting.push_back(task),
            }
            if engines.iter().all(|&e| self.load(e) >= self.hwm) {
                break;
            }
        }
        waiting.append(&mut self.queue);
        self.queue = waiting;
        given
    }

    fn load(&self, engine: u32) -> usize {
        self.running.get(&engine).map_or(0, Vec::len)
    }

    /// `engine` replied to `msg_id`: one less task on it. False when that
    /// was not one of its tasks (its reply to a direct request).
    pub fn finished(&mut self, engine: u32, msg_id: &str) -> bool {
        let Some(tasks) = self.running.get_mut(&engine) else {
            return false;
        };
        let Some(at) = tasks.iter().position(|t| t.msg_id == msg_id) else {
            return false;
        };
        tasks.remove(at);
        true
    }

    /// `engine` died: its tasks with retries left go to the front of the
    /// queue, the others fail.
    pub fn engine_lost(&mut self, engine: u32) -> Lost {
        let mut lost = Lost::default();
        for mut task in self
            .running
            .remove(&engine)
            .unwrap_or_default()
            .into_iter()
            .rev()
        {
            if task.retries > 0 {
                task.retries -= 1;
                lost.retried += 1;
                self.queue.push_front(task);
            } else {
                lost.failed.push(task);
            }
        }
        lost.failed.reverse();
        lost
    }

    /// Queued tasks that can never run: every engine they may run on is
    /// gone (`live` are the live ids; ids are never reused).
    pub fn take_unrunnable(&mut self, live: &[u32]) -> Vec<Task> {
        let (stuck, keep): (Vec<Task>, Vec<Task>) = self.queue.drain(..).partition(|t| {
            t.targets
                .as_ref()
                .is_some_and(|targets| !targets.iter().any(|e| live.contains(e)))
        });
        self.queue = keep.into();
        stuck
    }
}

/// The msg_id a reply from an engine answers, when it is a reply (the
/// header and parent frames of `[engine, client, <IDS|MSG>, sig, header,
/// parent, …]`; `split` is the delimiter's index).
pub fn replied_to(frames: &[Bytes], split: usize) -> Option<String> {
    let header: Value = serde_json::from_slice(frames.get(split + 2)?).ok()?;
    if !header["msg_type"].as_str()?.ends_with("_reply") {
        return None;
    }
    let parent: Value = serde_json::from_slice(frames.get(split + 3)?).ok()?;
    parent["msg_id"].as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(msg_id: &str, metadata: Value) -> Task {
        let frames = vec![
            Bytes::from_static(b"client"),
            Bytes::from_static(TASK_ROUTE),
            Bytes::from_static(b"<IDS|MSG>"),
            Bytes::from_static(b"sig"),
            Bytes::from(json!({"msg_id": msg_id, "msg_type": "apply_request"}).to_string()),
            Bytes::from_static(b"{}"),
            Bytes::from(metadata.to_string()),
            Bytes::from_static(b"{}"),
        ];
        Task::new(frames, 2).unwrap()
    }

    fn ids(given: &[(u32, Task)]) -> Vec<(u32, &str)> {
        given.iter().map(|(e, t)| (*e, t.msg_id.as_str())).collect()
    }

    #[test]
    fn tasks_go_to_free_engines_and_wait_for_room() {
        let mut s = Scheduler::default();
        for id in ["a", "b", "c"] {
            s.submit(task(id, json!({})));
        }
        let given = s.assign(&[0, 1]);
        assert_eq!(ids(&given), [(0, "a"), (1, "b")]);
        assert_eq!(s.queued(), 1);
        assert!(s.assign(&[0, 1]).is_empty(), "hwm 1: nobody has room");
        assert!(s.finished(1, "b"));
        assert!(!s.finished(1, "b"));
        assert!(!s.finished(0, "zzz"));
        assert_eq!(ids(&s.assign(&[0, 1])), [(1, "c")]);
        // A new engine takes work at once.
        s.submit(task("d", json!({})));
        assert_eq!(ids(&s.assign(&[0, 1, 2])), [(2, "d")]);
    }

    #[test]
    fn targets_restrict_and_others_pass_a_waiting_task() {
        let mut s = Scheduler::new(2);
        s.submit(task("only-3", json!({"targets": [3]})));
        s.submit(task("any", json!({})));
        assert_eq!(ids(&s.assign(&[0, 1])), [(0, "any")]);
        assert_eq!(s.queued(), 1);
        let stuck = s.take_unrunnable(&[0, 1]);
        assert_eq!(stuck.len(), 1);
        assert_eq!(s.queued(), 0);
    }

    #[test]
    fn a_dead_engines_tasks_retry_or_fail() {
        let mut s = Scheduler::new(2);
        s.submit(task("once", json!({})));
        s.submit(task("twice", json!({"retries": 1})));
        assert_eq!(ids(&s.assign(&[0])), [(0, "once"), (0, "twice")]);
        let lost = s.engine_lost(0);
        assert_eq!(lost.retried, 1);
        assert_eq!(lost.failed.len(), 1);
        assert_eq!(lost.failed[0].msg_id, "once");
        let again = s.assign(&[1]);
        assert_eq!(ids(&again), [(1, "twice")]);
        assert_eq!(again[0].1.retries, 0);
        assert!(s.engine_lost(1).failed.len() == 1);
    }

    #[test]
    fn replies_name_the_request_they_answer() {
        let frames = vec![
            Bytes::from_static(b"engine"),
            Bytes::from_static(b"client"),
            Bytes::from_static(b"<IDS|MSG>"),
            Bytes::from_static(b"sig"),
            Bytes::from(json!({"msg_type": "apply_reply"}).to_string()),
            Bytes::from(json!({"msg_id": "m1"}).to_string()),
        ];
        assert_eq!(replied_to(&frames, 2).as_deref(), Some("m1"));
        let mut output = frames.clone();
        output[4] = Bytes::from(json!({"msg_type": "stream"}).to_string());
        assert_eq!(replied_to(&output, 2), None);
        assert_eq!(replied_to(&frames[..4], 2), None);
    }
}

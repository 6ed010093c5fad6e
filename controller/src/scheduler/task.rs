//! One load-balanced request and what scheduling reads from it: its msg_id
//! (header) and, from its metadata, `targets`, `retries`, `after`,
//! `follow` and `timeout` (ipyparallel's names).

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use super::dependency::Dependency;

#[derive(Debug, Clone)]
pub struct Task {
    pub msg_id: String,
    /// `apply_request`, `execute_request`, or `abort_request` (of waiting tasks).
    pub msg_type: String,
    /// The request as the client sent it: `[client, route, <IDS|MSG>, …]`.
    pub frames: Vec<Bytes>,
    /// The delimiter's index in `frames`.
    pub split: usize,
    /// Engines it may run on (None: any).
    pub targets: Option<Vec<u32>>,
    /// Runs left after a failure (an error, or its engine died).
    pub retries: u32,
    /// Starts only once these are met.
    pub after: Option<Dependency>,
    /// Runs only where these are met.
    pub follow: Option<Dependency>,
    /// How long it may wait in the queue each time it is queued.
    pub timeout: Option<Duration>,
    /// When its current wait ends (set when queued).
    pub deadline: Option<Instant>,
    /// Engines that refused it (unmet functional dependency) or failed it
    /// while it had retries: it never goes back to them.
    pub blacklist: Vec<u32>,
    /// Engines it was sent to (taken back from, died on).
    pub sent_to: Vec<u32>,
    /// When it was last sent to an engine.
    pub sent_at: Option<Instant>,
    /// Its engine got this very request before (it was taken back): the
    /// hub signs it anew, or the engine's replay guard would drop it.
    pub resend: bool,
}

impl Task {
    /// Reads what scheduling needs from a verified request. Err: no
    /// readable header (nothing to answer), or Ok(Err(why)) when its
    /// dependencies are malformed (answered with InvalidDependency).
    #[allow(clippy::result_unit_err)]
    pub fn new(frames: Vec<Bytes>, split: usize) -> Result<Result<Task, (Task, String)>, ()> {
        #[derive(serde::Deserialize)]
        struct Header {
            msg_id: String,
            #[serde(default)]
            msg_type: String,
        }
        let header: Header = frames
            .get(split + 2)
            .and_then(|h| serde_json::from_slice(h).ok())
            .ok_or(())?;
        let metadata: Value = frames
            .get(split + 4)
            .and_then(|m| serde_json::from_slice(m).ok())
            .unwrap_or(Value::Null);
        let Header { msg_id, msg_type } = header;
        let targets = metadata["targets"].as_array().map(|ids| {
            ids.iter()
                .filter_map(|id| match id {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.parse().ok(),
                    _ => None,
                })
                .filter_map(|id| u32::try_from(id).ok())
                .collect::<Vec<u32>>()
        });
        // ipyparallel sends `targets: []` for "any engine".
        let targets = targets.filter(|t| !t.is_empty());
        let retries = metadata["retries"]
            .as_u64()
            .unwrap_or(0)
            .min(u32::MAX as u64) as u32;
        let timeout = metadata["timeout"]
            .as_f64()
            .filter(|t| *t > 0.0 && t.is_finite())
            .map(|t| Duration::from_secs_f64(t.min(1e9)));
        let mut task = Task {
            msg_id,
            msg_type,
            frames,
            split,
            targets,
            retries,
            after: None,
            follow: None,
            timeout,
            deadline: None,
            blacklist: Vec::new(),
            sent_to: Vec::new(),
            resend: false,
            sent_at: None,
        };
        let after = Dependency::from_json(&metadata["after"]);
        let follow = Dependency::from_json(&metadata["follow"]);
        match (after, follow) {
            (Ok(after), Ok(follow)) => {
                task.after = after;
                task.follow = follow;
                Ok(Ok(task))
            }
            (Err(why), _) | (_, Err(why)) => Ok(Err((task, why))),
        }
    }

    /// May run on `engine` as far as its targets and blacklist say.
    pub fn may_run_on(&self, engine: u32) -> bool {
        self.targets.as_ref().is_none_or(|t| t.contains(&engine))
            && !self.blacklist.contains(&engine)
    }

    /// The msg_ids it depends on, in either way.
    pub fn dependencies(&self) -> impl Iterator<Item = &String> {
        self.after
            .iter()
            .chain(self.follow.iter())
            .flat_map(|d| d.ids.iter())
    }

    /// The engine its request was sent to last is `engine`: it must not
    /// get it again.
    pub fn refuse(&mut self, engine: u32) {
        if !self.blacklist.contains(&engine) {
            self.blacklist.push(engine);
        }
    }

    /// Explicit targets that all refused it: it can never run.
    pub fn refused_everywhere(&self) -> bool {
        self.targets
            .as_ref()
            .is_some_and(|t| t.iter().all(|e| self.blacklist.contains(e)))
    }
}

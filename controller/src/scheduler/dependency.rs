//! Graph dependencies between tasks, as ipyparallel's `Dependency`: a set
//! of msg_ids with three switches (`all`, `success`, `failure`), judged
//! against the [`Record`] of finished tasks. `after` dependencies say when
//! a task may start; `follow` ones say where (an engine on which they are
//! met).

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

/// Finished tasks the controller remembers for dependencies: the newest
/// ones, so a long session's memory stays bounded.
pub const REMEMBERED: usize = 1 << 18;

/// How a finished task ended, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub engine: Option<u32>,
    pub success: bool,
}

/// The finished tasks, newest [`REMEMBERED`] of them.
#[derive(Debug, Default)]
pub struct Record {
    finished: HashMap<String, Finished>,
    order: VecDeque<String>,
}

impl Record {
    pub fn insert(&mut self, msg_id: String, finished: Finished) {
        if self.finished.insert(msg_id.clone(), finished).is_none() {
            self.order.push_back(msg_id);
        }
        while self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }

    pub fn get(&self, msg_id: &str) -> Option<Finished> {
        self.finished.get(msg_id).copied()
    }
}

/// A set of tasks another task depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub ids: Vec<String>,
    /// Met when all of them count (else: any one).
    pub all: bool,
    /// Successes count.
    pub success: bool,
    /// Failures count.
    pub failure: bool,
}

impl Dependency {
    /// Reads one from a task's metadata: a list of msg_ids, or
    /// `{"dependencies": [...], "all", "success", "failure"}` (ipyparallel's
    /// `Dependency.as_dict()`). None when absent or empty; Err when malformed.
    pub fn from_json(value: &Value) -> Result<Option<Dependency>, String> {
        let (ids, all, success, failure) = match value {
            Value::Null => return Ok(None),
            Value::String(id) => (vec![Value::String(id.clone())], true, true, false),
            Value::Array(ids) => (ids.clone(), true, true, false),
            Value::Object(map) => {
                let flag = |key: &str, default: bool| {
                    map.get(key).and_then(Value::as_bool).unwrap_or(default)
                };
                let ids = map
                    .get("dependencies")
                    .or_else(|| map.get("msg_ids"))
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                (
                    ids,
                    flag("all", true),
                    flag("success", true),
                    flag("failure", false),
                )
            }
            other => return Err(format!("a dependency is a list of msg_ids, not {other}")),
        };
        let ids = ids
            .iter()
            .map(|id| {
                id.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{id} is not a msg_id"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !(success || failure) {
            return Err("a dependency must count successes, failures or both".into());
        }
        if ids.is_empty() {
            return Ok(None);
        }
        Ok(Some(Dependency {
            ids,
            all,
            success,
            failure,
        }))
    }

    /// Whether a finished task counts towards this dependency.
    fn counts(&self, finished: Finished) -> bool {
        if finished.success {
            self.success
        } else {
            self.failure
        }
    }

    /// Met by the tasks finished so far.
    pub fn met(&self, record: &Record) -> bool {
        let mut counting = self
            .ids
            .iter()
            .map(|id| record.get(id).is_some_and(|f| self.counts(f)));
        if self.all {
            counting.all(|c| c)
        } else {
            counting.any(|c| c)
        }
    }

    /// Can never be met: with `all`, one of them ended in a way that does
    /// not count; otherwise all of them did.
    pub fn unreachable(&self, record: &Record) -> bool {
        let mut spoiled = self
            .ids
            .iter()
            .map(|id| record.get(id).is_some_and(|f| !self.counts(f)));
        if self.all {
            spoiled.any(|s| s)
        } else {
            spoiled.all(|s| s)
        }
    }

    /// Met on `engine`, for a location (`follow`) dependency: the tasks
    /// that count ran there.
    pub fn met_on(&self, engine: u32, record: &Record) -> bool {
        let mut here = self.ids.iter().map(|id| {
            record
                .get(id)
                .is_some_and(|f| self.counts(f) && f.engine == Some(engine))
        });
        if self.all {
            here.all(|h| h)
        } else {
            here.any(|h| h)
        }
    }

    /// A location dependency no engine can meet: with `all`, the tasks
    /// that count ran on more than one engine.
    pub fn split_across_engines(&self, record: &Record) -> bool {
        if !self.all {
            return false;
        }
        let mut engines = self
            .ids
            .iter()
            .filter_map(|id| record.get(id))
            .filter(|f| self.counts(*f))
            .map(|f| f.engine);
        match engines.next() {
            Some(first) => engines.any(|e| e != first),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(entries: &[(&str, u32, bool)]) -> Record {
        let mut r = Record::default();
        for &(id, engine, success) in entries {
            r.insert(
                id.into(),
                Finished {
                    engine: Some(engine),
                    success,
                },
            );
        }
        r
    }

    #[test]
    fn reads_lists_and_dicts() {
        assert_eq!(Dependency::from_json(&json!(null)), Ok(None));
        assert_eq!(Dependency::from_json(&json!([])), Ok(None));
        let d = Dependency::from_json(&json!(["a", "b"])).unwrap().unwrap();
        assert!(d.all && d.success && !d.failure);
        let d = Dependency::from_json(
            &json!({"dependencies": ["a"], "all": false, "success": false, "failure": true}),
        )
        .unwrap()
        .unwrap();
        assert!(!d.all && !d.success && d.failure);
        assert!(Dependency::from_json(&json!([1])).is_err());
        assert!(Dependency::from_json(&json!({"dependencies": ["a"], "success": false})).is_err());
    }

    #[test]
    fn all_success_is_spoiled_by_one_failure() {
        let d = Dependency::from_json(&json!(["a", "b"])).unwrap().unwrap();
        assert!(!d.met(&record(&[("a", 0, true)])));
        assert!(!d.unreachable(&record(&[("a", 0, true)])));
        assert!(d.met(&record(&[("a", 0, true), ("b", 1, true)])));
        assert!(d.unreachable(&record(&[("a", 0, false)])));
    }

    #[test]
    fn any_and_failure_switches() {
        let any = Dependency {
            ids: vec!["a".into(), "b".into()],
            all: false,
            success: true,
            failure: false,
        };
        assert!(any.met(&record(&[("b", 0, true)])));
        assert!(!any.unreachable(&record(&[("a", 0, false)])));
        assert!(any.unreachable(&record(&[("a", 0, false), ("b", 0, false)])));
        let cleanup = Dependency {
            ids: vec!["a".into()],
            all: true,
            success: false,
            failure: true,
        };
        assert!(cleanup.met(&record(&[("a", 0, false)])));
        assert!(cleanup.unreachable(&record(&[("a", 0, true)])));
    }

    #[test]
    fn location_dependencies() {
        let d = Dependency::from_json(&json!(["a", "b"])).unwrap().unwrap();
        let same = record(&[("a", 2, true), ("b", 2, true)]);
        assert!(d.met_on(2, &same) && !d.met_on(1, &same));
        let split = record(&[("a", 1, true), ("b", 2, true)]);
        assert!(d.split_across_engines(&split));
        assert!(!d.split_across_engines(&same));
    }

    #[test]
    fn the_record_is_bounded() {
        let mut r = Record::default();
        for i in 0..REMEMBERED + 10 {
            r.insert(
                i.to_string(),
                Finished {
                    engine: None,
                    success: true,
                },
            );
        }
        assert!(r.get("0").is_none());
        assert!(r.get(&(REMEMBERED + 9).to_string()).is_some());
        assert_eq!(r.order.len(), REMEMBERED);
    }
}

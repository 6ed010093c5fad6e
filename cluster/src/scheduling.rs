//! How the controller's task scheduler is set up: its scheme (ipyparallel's
//! names) and high-water mark, given to `rparallel cluster start`,
//! `rparallel.Cluster(scheme=, hwm=)` and passed on to the controller.

use std::fmt;
use std::str::FromStr;

/// How the scheduler picks an engine among those that may take a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    /// The fewest unfinished tasks; ties go to the least recently used.
    #[default]
    LeastLoad,
    /// The least recently used.
    Lru,
    /// Any, at random.
    PlainRandom,
    /// Two at random; the less recently used of them.
    TwoBin,
    /// Two at random, weighted by inverse load; the less loaded of them.
    Weighted,
    /// Round-robin with no high-water mark (ipyparallel's pure zmq queue).
    Pure,
}

pub const SCHEMES: &[&str] = &[
    "leastload",
    "lru",
    "plainrandom",
    "twobin",
    "weighted",
    "pure",
];

impl FromStr for Scheme {
    type Err = String;

    fn from_str(name: &str) -> Result<Scheme, String> {
        Ok(match name {
            "leastload" => Scheme::LeastLoad,
            "lru" => Scheme::Lru,
            "plainrandom" => Scheme::PlainRandom,
            "twobin" => Scheme::TwoBin,
            "weighted" => Scheme::Weighted,
            "pure" => Scheme::Pure,
            other => {
                return Err(format!(
                    "unknown scheduling scheme {other:?} (schemes: {})",
                    SCHEMES.join(", ")
                ))
            }
        })
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Scheme::LeastLoad => "leastload",
            Scheme::Lru => "lru",
            Scheme::PlainRandom => "plainrandom",
            Scheme::TwoBin => "twobin",
            Scheme::Weighted => "weighted",
            Scheme::Pure => "pure",
        };
        f.write_str(name)
    }
}

/// Where the controller keeps its record of requests and results
/// (`--db`, ipyparallel's `--db` / `TaskScheduler` database).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskDb {
    /// In memory, bounded (the last 4,096 requests, 16 MiB of buffers).
    #[default]
    Memory,
    /// In memory, and all of it in `tasks.sqlite` in the profile (a table
    /// per controller run).
    Sqlite,
    /// Nothing kept: `db_query`, `get_result` and `resubmit` refuse.
    None,
}

/// The names `--db` takes.
pub const TASK_DBS: &[&str] = &["memory", "sqlite", "none"];

impl std::str::FromStr for TaskDb {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "memory" | "dict" => Ok(TaskDb::Memory),
            "sqlite" => Ok(TaskDb::Sqlite),
            "none" | "nodb" => Ok(TaskDb::None),
            other => Err(format!(
                "unknown task database {other:?} (databases: {})",
                TASK_DBS.join(", ")
            )),
        }
    }
}

impl fmt::Display for TaskDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskDb::Memory => "memory",
            TaskDb::Sqlite => "sqlite",
            TaskDb::None => "none",
        })
    }
}

/// The settings of the controller's task handling: the scheduler, and the
/// record it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerSpec {
    pub scheme: Scheme,
    /// Unfinished tasks an engine is given at most; 0: no limit.
    pub hwm: usize,
    pub db: TaskDb,
}

impl Default for SchedulerSpec {
    fn default() -> Self {
        SchedulerSpec {
            scheme: Scheme::default(),
            hwm: 1,
            db: TaskDb::default(),
        }
    }
}

impl SchedulerSpec {
    /// The controller's command-line arguments for these settings.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--scheme".into(),
            self.scheme.to_string(),
            "--hwm".into(),
            self.hwm.to_string(),
            "--db".into(),
            self.db.to_string(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_schemes() {
        for name in SCHEMES {
            assert_eq!(name.parse::<Scheme>().unwrap().to_string(), *name);
        }
        let err = "fastest".parse::<Scheme>().unwrap_err();
        assert!(err.contains("leastload, lru"), "{err}");
        assert_eq!(
            SchedulerSpec::default().args(),
            ["--scheme", "leastload", "--hwm", "1", "--db", "memory"]
        );
    }
}

//! The engine table: which engines are registered, under which socket
//! identity, and when each was last heard from.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct EngineInfo {
    pub id: u32,
    pub identity: Bytes,
    pub uuid: String,
    pub pid: u32,
    pub hostname: String,
    /// Host name and boot id: clients on the same host use shared memory.
    pub host: String,
    /// The launch that started it (`--launch`), if a launcher did.
    pub launch: Option<String>,
    pub last_seen: Instant,
}

impl EngineInfo {
    pub fn describe(&self) -> Value {
        json!({
            "id": self.id,
            "uuid": self.uuid,
            "pid": self.pid,
            "hostname": self.hostname,
            "host": self.host,
        })
    }
}

/// What an engine says about itself when it registers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Registration<'a> {
    pub uuid: &'a str,
    pub pid: u32,
    pub hostname: &'a str,
    pub host: &'a str,
    pub launch: Option<&'a str>,
    /// The id it asks for (its MPI rank), granted when never used.
    pub rank: Option<u32>,
}

impl<'a> Registration<'a> {
    /// Reads a registration_request's content.
    pub fn from_content(content: &'a Value) -> Self {
        Registration {
            uuid: content["uuid"].as_str().unwrap_or(""),
            pid: content["pid"].as_u64().unwrap_or(0) as u32,
            hostname: content["hostname"].as_str().unwrap_or(""),
            host: content["host"].as_str().unwrap_or(""),
            launch: content["launch"].as_str(),
            rank: content["rank"].as_u64().and_then(|r| u32::try_from(r).ok()),
        }
    }
}

/// Ids are handed out 0, 1, 2… (or an engine's rank, when it asks and
/// that id is free) and never reused in a controller's life.
#[derive(Default)]
pub struct Registry {
    engines: BTreeMap<u32, EngineInfo>,
    by_identity: HashMap<Bytes, u32>,
    used: HashSet<u32>,
    next_id: u32,
}

impl Registry {
    /// Registers an engine; a second request from the same connection gets
    /// the same id.
    pub fn register(&mut self, identity: Bytes, registration: &Registration<'_>) -> u32 {
        if let Some(&id) = self.by_identity.get(&identity) {
            return id;
        }
        let id = match registration.rank {
            Some(rank) if !self.used.contains(&rank) => rank,
            _ => {
                while self.used.contains(&self.next_id) {
                    self.next_id += 1;
                }
                self.next_id
            }
        };
        self.used.insert(id);
        self.by_identity.insert(identity.clone(), id);
        self.engines.insert(
            id,
            EngineInfo {
                id,
                identity,
                uuid: registration.uuid.to_string(),
                pid: registration.pid,
                hostname: registration.hostname.to_string(),
                host: registration.host.to_string(),
                launch: registration.launch.map(str::to_string),
                last_seen: Instant::now(),
            },
        );
        id
    }

    pub fn get(&self, id: u32) -> Option<&EngineInfo> {
        self.engines.get(&id)
    }

    pub fn id_of(&self, identity: &Bytes) -> Option<u32> {
        self.by_identity.get(identity).copied()
    }

    /// Notes that the engine on this connection is alive.
    pub fn touch(&mut self, identity: &Bytes) -> Option<u32> {
        let id = self.id_of(identity)?;
        if let Some(engine) = self.engines.get_mut(&id) {
            engine.last_seen = Instant::now();
        }
        Some(id)
    }

    pub fn remove(&mut self, id: u32) -> Option<EngineInfo> {
        let engine = self.engines.remove(&id)?;
        self.by_identity.remove(&engine.identity);
        Some(engine)
    }

    /// The engine running as process `pid` on host `hostname`.
    pub fn find_pid(&self, pid: u32, hostname: &str) -> Option<u32> {
        self.engines
            .values()
            .find(|e| e.pid == pid && e.hostname == hostname)
            .map(|e| e.id)
    }

    /// The engines a launch started.
    pub fn of_launch(&self, launch: &str) -> Vec<u32> {
        self.engines
            .values()
            .filter(|e| e.launch.as_deref() == Some(launch))
            .map(|e| e.id)
            .collect()
    }

    /// Engines not heard from within `timeout`.
    pub fn overdue(&self, now: Instant, timeout: Duration) -> Vec<u32> {
        self.engines
            .values()
            .filter(|e| now.duration_since(e.last_seen) > timeout)
            .map(|e| e.id)
            .collect()
    }

    /// Live engine ids, in order.
    pub fn ids(&self) -> Vec<u32> {
        self.engines.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.engines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.engines.is_empty()
    }

    pub fn engines(&self) -> impl Iterator<Item = &EngineInfo> {
        self.engines.values()
    }

    /// `{"0": {...}, "1": {...}}` for connection replies.
    pub fn snapshot(&self) -> Value {
        Value::Object(
            self.engines
                .values()
                .map(|e| (e.id.to_string(), e.describe()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(uuid: &'static str, pid: u32) -> Registration<'static> {
        Registration {
            uuid,
            pid,
            hostname: "h",
            host: "h/boot",
            launch: Some("L0"),
            rank: None,
        }
    }

    #[test]
    fn ids_are_sequential_stable_and_not_reused() {
        let mut r = Registry::default();
        let a = r.register(Bytes::from_static(b"a"), &reg("ua", 10));
        let b = r.register(Bytes::from_static(b"b"), &reg("ub", 11));
        assert_eq!((a, b), (0, 1));
        assert_eq!(r.register(Bytes::from_static(b"a"), &reg("ua", 10)), 0);
        r.remove(0);
        assert_eq!(r.register(Bytes::from_static(b"c"), &reg("uc", 12)), 2);
        assert_eq!(r.find_pid(11, "h"), Some(1));
        assert_eq!(r.find_pid(11, "other"), None);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn ranks_become_ids_when_free() {
        let mut r = Registry::default();
        let ranked = |uuid, rank| Registration {
            rank: Some(rank),
            ..reg(uuid, 1)
        };
        assert_eq!(r.register(Bytes::from_static(b"a"), &ranked("a", 2)), 2);
        assert_eq!(r.register(Bytes::from_static(b"b"), &reg("b", 2)), 0);
        assert_eq!(r.register(Bytes::from_static(b"c"), &ranked("c", 0)), 1);
        assert_eq!(r.register(Bytes::from_static(b"d"), &reg("d", 3)), 3);
        assert_eq!(r.of_launch("L0").len(), 4);
        assert!(r.of_launch("L1").is_empty());
    }

    #[test]
    fn overdue_engines_are_found() {
        let mut r = Registry::default();
        r.register(Bytes::from_static(b"a"), &reg("ua", 10));
        let later = Instant::now() + Duration::from_secs(5);
        assert_eq!(r.overdue(later, Duration::from_secs(3)), vec![0]);
        assert!(r.overdue(Instant::now(), Duration::from_secs(3)).is_empty());
    }
}

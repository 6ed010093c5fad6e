//! What the record keeps of each request: raw frames (header, metadata,
//! content, buffers) and the few fields read at every message, bounded in
//! count and in bytes. JSON is parsed only when a client asks
//! ([`TaskRecord::to_json`]).

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use serde_json::{Map, Value};

/// Records kept at most; the oldest go first.
pub const MAX_RECORDS: usize = 4096;
/// Buffer bytes kept at most (requests' and results'); past it, the
/// oldest records lose their buffers (their results can no longer be
/// fetched, their requests no longer resubmitted).
pub const MAX_BUFFER_BYTES: usize = 16 << 20;
/// A message whose buffers are larger than this keeps none: big arrays
/// are the caller's, not the controller's, to hold.
pub const MAX_MESSAGE_BUFFERS: usize = 1 << 20;

/// The header, metadata and content frames of a message, unparsed.
#[derive(Debug, Clone, Default)]
pub struct Parts {
    pub header: Bytes,
    pub metadata: Bytes,
    pub content: Bytes,
}

/// Frames up to this size are copied when kept: a received frame is a
/// slice of the socket's read buffer, and keeping the slice would keep the
/// whole buffer.
const COPY_BELOW: usize = 64 << 10;

/// `frame` as the record keeps it (see [`COPY_BELOW`]).
pub fn kept(frame: &Bytes) -> Bytes {
    if frame.len() < COPY_BELOW {
        Bytes::copy_from_slice(frame)
    } else {
        frame.clone()
    }
}

impl Parts {
    /// The parts of `[..identities, <IDS|MSG>, sig, header, parent,
    /// metadata, content, buffers..]` (`split`: the delimiter's index).
    pub fn of(frames: &[Bytes], split: usize) -> Parts {
        let at = |i: usize| frames.get(split + i).map(kept).unwrap_or_default();
        Parts {
            header: at(2),
            metadata: at(4),
            content: at(5),
        }
    }
}

/// One request and what came of it.
#[derive(Debug, Clone, Default)]
pub struct TaskRecord {
    pub msg_id: String,
    /// Its place in submission order (SQLite sorts by it).
    pub seq: u64,
    pub msg_type: String,
    /// "mux" (sent to one engine) or "task" (load-balanced).
    pub queue: &'static str,
    /// The routing frame it came with (`engine:N` or `task`), to resubmit.
    pub route: Bytes,
    pub submitted: String,
    pub client_uuid: String,
    pub request: Parts,
    pub buffers: Vec<Bytes>,
    pub engine_id: Option<u32>,
    pub reply: Option<Parts>,
    pub result_buffers: Vec<Bytes>,
    pub received: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub execute_input: Option<String>,
    /// Contents of the `execute_result` and `error` outputs.
    pub execute_result: Option<Bytes>,
    pub error: Option<Bytes>,
    /// Contents of `display_data` outputs.
    pub outputs: Vec<Bytes>,
    pub resubmitted: Option<String>,
    /// Its buffers (or its result's) were not kept.
    pub buffers_dropped: bool,
}

impl TaskRecord {
    pub fn buffer_bytes(&self) -> usize {
        self.buffers
            .iter()
            .chain(&self.result_buffers)
            .map(Bytes::len)
            .sum()
    }

    pub fn is_done(&self) -> bool {
        self.reply.is_some()
    }

    /// The record as ipyparallel's task database has it (buffers as
    /// counts: the frames travel next to the JSON).
    pub fn to_json(&self) -> Map<String, Value> {
        let parse = |b: &Bytes| serde_json::from_slice::<Value>(b).unwrap_or(Value::Null);
        let mut r = Map::new();
        let request_header = parse(&self.request.header);
        let request_metadata = parse(&self.request.metadata);
        r.insert("msg_id".into(), self.msg_id.clone().into());
        r.insert("header".into(), request_header);
        r.insert("metadata".into(), request_metadata.clone());
        r.insert("content".into(), parse(&self.request.content));
        r.insert("buffers".into(), self.buffers.len().into());
        r.insert("submitted".into(), self.submitted.clone().into());
        r.insert("client_uuid".into(), self.client_uuid.clone().into());
        r.insert("queue".into(), self.queue.into());
        r.insert("engine_id".into(), self.engine_id.into());
        r.insert("label".into(), request_metadata["label"].clone());
        let (result_header, result_metadata, result_content) = match &self.reply {
            Some(p) => (parse(&p.header), parse(&p.metadata), parse(&p.content)),
            None => (Value::Null, Value::Null, Value::Null),
        };
        let stamp = |key: &str| result_metadata.get(key).cloned().unwrap_or(Value::Null);
        r.insert("engine_uuid".into(), stamp("engine_uuid"));
        r.insert("started".into(), stamp("started"));
        r.insert("completed".into(), stamp("completed"));
        r.insert("received".into(), self.received.clone().into());
        r.insert("resubmitted".into(), self.resubmitted.clone().into());
        r.insert("result_header".into(), result_header);
        r.insert("result_metadata".into(), result_metadata);
        r.insert("result_content".into(), result_content);
        r.insert("result_buffers".into(), self.result_buffers.len().into());
        r.insert("execute_input".into(), self.execute_input.clone().into());
        r.insert(
            "execute_result".into(),
            self.execute_result.as_ref().map_or(Value::Null, parse),
        );
        r.insert(
            "error".into(),
            self.error.as_ref().map_or(Value::Null, parse),
        );
        r.insert("stdout".into(), self.stdout.clone().into());
        r.insert("stderr".into(), self.stderr.clone().into());
        r.insert(
            "outputs".into(),
            Value::Array(self.outputs.iter().map(parse).collect()),
        );
        r
    }
}

/// The records, oldest first, bounded by [`MAX_RECORDS`] and
/// [`MAX_BUFFER_BYTES`].
#[derive(Default)]
pub struct Store {
    records: HashMap<String, TaskRecord>,
    order: VecDeque<String>,
    buffer_bytes: usize,
}

impl Store {
    pub fn insert(&mut self, mut record: TaskRecord) {
        if record.buffer_bytes() > MAX_MESSAGE_BUFFERS {
            record.buffers.clear();
            record.buffers_dropped = true;
        }
        self.buffer_bytes += record.buffer_bytes();
        self.order.push_back(record.msg_id.clone());
        if let Some(old) = self.records.insert(record.msg_id.clone(), record) {
            self.buffer_bytes -= old.buffer_bytes();
        }
        self.trim();
    }

    pub fn get(&self, msg_id: &str) -> Option<&TaskRecord> {
        self.records.get(msg_id)
    }

    /// Changes a record; keeps the byte count honest and the bounds.
    pub fn update(&mut self, msg_id: &str, change: impl FnOnce(&mut TaskRecord)) -> bool {
        let Some(record) = self.records.get_mut(msg_id) else {
            return false;
        };
        let before = record.buffer_bytes();
        change(record);
        if record.buffer_bytes() > MAX_MESSAGE_BUFFERS {
            record.result_buffers.clear();
            record.buffers_dropped = true;
        }
        self.buffer_bytes = self.buffer_bytes + record.buffer_bytes() - before;
        self.trim();
        true
    }

    pub fn remove(&mut self, msg_id: &str) -> Option<TaskRecord> {
        let record = self.records.remove(msg_id)?;
        self.buffer_bytes -= record.buffer_bytes();
        Some(record)
    }

    /// msg_ids, oldest first.
    pub fn history(&self) -> Vec<String> {
        self.order
            .iter()
            .filter(|id| self.records.contains_key(*id))
            .cloned()
            .collect()
    }

    /// Every record, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &TaskRecord> {
        self.order.iter().filter_map(|id| self.records.get(id))
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn clear(&mut self) {
        self.records.clear();
        self.order.clear();
        self.buffer_bytes = 0;
    }

    fn trim(&mut self) {
        // Purged ids linger in `order` until they reach its front.
        if self.order.len() > self.records.len() * 2 + 64 {
            self.order.retain(|id| self.records.contains_key(id));
        }
        while self.records.len() > MAX_RECORDS {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.remove(&oldest);
        }
        let mut at = 0;
        while self.buffer_bytes > MAX_BUFFER_BYTES && at < self.order.len() {
            let id = self.order[at].clone();
            if let Some(record) = self.records.get_mut(&id) {
                let freed = record.buffer_bytes();
                if freed > 0 {
                    record.buffers.clear();
                    record.result_buffers.clear();
                    record.buffers_dropped = true;
                    self.buffer_bytes -= freed;
                }
            }
            at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize, buffer: usize) -> TaskRecord {
        TaskRecord {
            msg_id: i.to_string(),
            seq: i as u64,
            buffers: vec![Bytes::from(vec![0u8; buffer])],
            ..Default::default()
        }
    }

    #[test]
    fn the_oldest_records_go_and_buffers_stay_bounded() {
        let mut store = Store::default();
        for i in 0..MAX_RECORDS + 10 {
            store.insert(record(i, 16));
        }
        assert_eq!(store.len(), MAX_RECORDS);
        assert!(store.get("0").is_none() && store.get("10").is_some());
        assert_eq!(store.history().first().map(String::as_str), Some("10"));

        let mut store = Store::default();
        store.insert(record(0, MAX_MESSAGE_BUFFERS + 1));
        assert!(store.get("0").unwrap().buffers_dropped);
        for i in 1..=100 {
            store.insert(record(i, MAX_MESSAGE_BUFFERS));
        }
        assert!(store.buffer_bytes <= MAX_BUFFER_BYTES);
        assert!(store.get("1").unwrap().buffers_dropped);
        assert!(!store.get("100").unwrap().buffers_dropped);
        store.remove("100");
        store.update("99", |r| r.result_buffers.push(Bytes::from_static(b"x")));
        assert!(store.buffer_bytes <= MAX_BUFFER_BYTES);
    }
}

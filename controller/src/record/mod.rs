//! The task record: what every client asked of the engines and what came
//! of it, as ipyparallel's hub keeps it, so a client can look back
//! (`hub_history`, `db_query`), fetch another client's results
//! (`get_result`), run requests again (`resubmit`) and forget them
//! (`purge_hub_results`).
//!
//! The recorder is an actor on a thread of its own: the hub hands it
//! clones of the frames it routes (reference counts, no copies) over a
//! bounded channel and never waits for it; a full channel drops the
//! record, never a message. It answers clients' record requests itself,
//! through the hub's sockets ([`Out`]).
//!
//! - [`store`]: the records (raw frames, bounded in count and bytes);
//! - [`query`]: `db_query`'s filters;
//! - [`sqlite`]: `--db sqlite`, the record also on disk, unbounded.

pub mod query;
pub mod sqlite;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use rparallel_protocol::{Message, Session};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use zeromq::ZmqMessage;

use sqlite::Sqlite;
use store::{Parts, Store, TaskRecord};

/// How long the recorder rests after a batch (see [`Actor::run`]): records
/// and `get_result`'s live copies lag by at most about this much.
const BATCH_PAUSE: Duration = Duration::from_millis(2);

/// How often changed records are written to SQLite.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Where the record is kept.
pub enum Keep {
    Nothing,
    Memory,
    /// In memory and in the SQLite file `path`, table for run `run`.
    Sqlite {
        path: PathBuf,
        run: String,
    },
}

/// How many routed messages may wait for the recorder: under a flood of
/// requests the record misses some rather than hold their frames (each
/// waiting message keeps its buffers alive).
const BACKLOG: usize = 2048;

/// The record requests a client may send the controller.
pub const REQUESTS: [&str; 5] = [
    "history_request",
    "db_request",
    "result_request",
    "resubmit_request",
    "purge_request",
];

/// What the hub tells the recorder.
enum Event {
    /// A client's request to an engine or the scheduler: `[client, route,
    /// <IDS|MSG>, …]`.
    Request(Vec<Bytes>),
    /// An engine's output or reply: `[engine, client, <IDS|MSG>, …]`.
    FromEngine(u32, Vec<Bytes>),
    /// A client's record request.
    Ask(Box<Message>),
}

/// What the recorder asks the hub to send.
pub enum Out {
    ToClient(ZmqMessage),
    /// A resubmitted request, signed, as if from its client: `[client,
    /// route, <IDS|MSG>, …]`.
    Route(Vec<Bytes>),
}

/// The hub's side: cheap to call on every routed message.
pub struct Recorder {
    events: Option<mpsc::Sender<Event>>,
    /// `--db none`: how record requests are refused (nothing is kept).
    refuse: Option<(Session, mpsc::Sender<Out>)>,
}

impl Recorder {
    /// A recorder keeping `store`'s records, answering with `session`;
    /// what it sends comes out of the returned receiver. `enabled: false`
    /// keeps nothing and answers record requests with an error.
    pub fn start(session: Session, keep: Keep) -> anyhow::Result<(Recorder, mpsc::Receiver<Out>)> {
        let (out_tx, out_rx) = mpsc::channel(256);
        let sqlite = match keep {
            Keep::Nothing => {
                let recorder = Recorder {
                    events: None,
                    refuse: Some((session, out_tx)),
                };
                return Ok((recorder, out_rx));
            }
            Keep::Memory => None,
            Keep::Sqlite { path, run } => Some(Sqlite::open(&path, &run)?),
        };
        let (tx, rx) = mpsc::channel(BACKLOG);
        let actor = Actor {
            session,
            store: Store::default(),
            watchers: HashMap::new(),
            out: out_tx,
            sqlite,
            seq: 0,
            dirty: HashSet::new(),
        };
        // A thread of its own: on the hub's thread the recorder would wait
        // until the hub runs out of messages (a busy cluster: never), and
        // its work would add to every request's latency.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("task-record".into())
            .spawn(move || runtime.block_on(actor.run(rx)))?;
        Ok((
            Recorder {
                events: Some(tx),
                refuse: None,
            },
            out_rx,
        ))
    }

    /// A recorder that keeps nothing and answers nothing (tests).
    pub fn none() -> Recorder {
        Recorder {
            events: None,
            refuse: None,
        }
    }

    fn tell(&self, event: impl FnOnce() -> Event) {
        if let Some(events) = &self.events {
            if events.try_send(event()).is_err() {
                tracing::debug!("task record: behind, a message went unrecorded");
            }
        }
    }

    /// Small frames are copied here: a frame received is a slice of the
    /// socket's read buffer, and a message waiting for the recorder would
    /// keep that whole buffer alive.
    fn copied(frames: &[Bytes]) -> Vec<Bytes> {
        frames.iter().map(store::kept).collect()
    }

    pub fn request(&self, frames: &[Bytes]) {
        self.tell(|| Event::Request(Self::copied(frames)));
    }

    pub fn from_engine(&self, engine: u32, frames: &[Bytes]) {
        self.tell(|| Event::FromEngine(engine, Self::copied(frames)));
    }

    /// A client's record request (one of [`REQUESTS`]).
    pub async fn ask(&self, request: Message) {
        if let Some(events) = &self.events {
            let _ = events.send(Event::Ask(Box::new(request))).await;
        } else if let Some((session, out)) = &self.refuse {
            let (content, _) = refused(
                NO_RECORD,
                "this controller keeps no task record (started with --db none)".into(),
            );
            let _ = out
                .send(Out::ToClient(reply(session, &request, content, vec![])))
                .await;
        }
    }
}

struct Actor {
    session: Session,
    store: Store,
    /// Clients waiting (`get_result`) for requests not finished, by msg_id:
    /// they get copies of the requests' output and reply.
    watchers: HashMap<String, Vec<Bytes>>,
    out: mpsc::Sender<Out>,
    /// `--db sqlite`: the records also there.
    sqlite: Option<Sqlite>,
    /// Requests recorded so far (each record's `seq`).
    seq: u64,
    /// Records changed since they were last written to SQLite.
    dirty: HashSet<String>,
}

/// The fields of a header the recorder reads (borrowed).
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    msg_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    msg_type: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    session: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    date: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct Parent<'a> {
    #[serde(borrow)]
    msg_id: std::borrow::Cow<'a, str>,
}

/// Frames are `[id, id, <IDS|MSG>, sig, header, parent, metadata,
/// content, buffers…]`: routed messages carry two identities.
const SPLIT: usize = 2;

impl Actor {
    async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { break };
                    self.handle(event).await;
                    // Everything queued meanwhile, then a pause: under load
                    // the recorder wakes once per pause, not once per
                    // message (each wake-up costs the hub a futex call and
                    // this thread a trip through the scheduler).
                    while let Ok(event) = events.try_recv() {
                        self.handle(event).await;
                    }
                    tokio::time::sleep(BATCH_PAUSE).await;
                }
                _ = flush.tick(), if self.sqlite.is_some() => self.flush(),
            }
        }
        self.flush();
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::Request(frames) => self.record_request(frames),
            Event::FromEngine(engine, frames) => self.record_from_engine(engine, frames).await,
            Event::Ask(request) => {
                self.flush();
                self.answer(*request).await
            }
        }
    }

    /// Writes the records changed since last time to SQLite.
    fn flush(&mut self) {
        let Some(sqlite) = &self.sqlite else { return };
        let rows = self
            .dirty
            .drain()
            .filter_map(|id| self.store.get(&id))
            .map(|r| sqlite::Row {
                msg_id: r.msg_id.clone(),
                seq: r.seq,
                json: r.to_json(),
                buffers: r.buffers.clone(),
                result_buffers: r.result_buffers.clone(),
            })
            .collect();
        sqlite.save(rows);
    }

    fn touched(&mut self, msg_id: &str) {
        if self.sqlite.is_some() {
            self.dirty.insert(msg_id.to_string());
        }
    }

    fn record_request(&mut self, frames: Vec<Bytes>) {
        let Some(header) = frames
            .get(SPLIT + 2)
            .and_then(|h| serde_json::from_slice::<Header>(h).ok())
        else {
            return;
        };
        // Stopping work (abort, interrupt) is not work to keep.
        if matches!(
            header.msg_type.as_ref(),
            "abort_request" | "interrupt_request" | "signal_request" | "shutdown_request"
        ) {
            return;
        }
        let route = frames[1].clone();
        let queue = if route.as_ref() == b"task" {
            "task"
        } else {
            "mux"
        };
        let engine_id = route
            .strip_prefix(b"engine:".as_slice())
            .and_then(|id| std::str::from_utf8(id).ok())
            .and_then(|id| id.parse().ok());
        self.seq += 1;
        let record = TaskRecord {
            msg_id: header.msg_id.to_string(),
            seq: self.seq,
            msg_type: header.msg_type.to_string(),
            queue,
            route,
            submitted: header.date.to_string(),
            client_uuid: header.session.to_string(),
            request: Parts::of(&frames, SPLIT),
            buffers: frames.get(SPLIT + 6..).map(kept_all).unwrap_or_default(),
            engine_id,
            ..Default::default()
        };
        let mut record = record;
        if through_shared_memory(&record.request.metadata) {
            record.buffers.clear();
            record.buffers_dropped = true;
        }
        let msg_id = record.msg_id.clone();
        self.store.insert(record);
        self.touched(&msg_id);
    }

    async fn record_from_engine(&mut self, engine: u32, frames: Vec<Bytes>) {
        let parse = || -> Option<(String, String)> {
            let header: Header = serde_json::from_slice(frames.get(SPLIT + 2)?).ok()?;
            let parent: Parent = serde_json::from_slice(frames.get(SPLIT + 3)?).ok()?;
            Some((header.msg_type.into_owned(), parent.msg_id.into_owned()))
        };
        let Some((msg_type, parent)) = parse() else {
            return;
        };
        let content = frames.get(SPLIT + 5).map(store::kept).unwrap_or_default();
        let now = rparallel_protocol::message::now_iso8601();
        let is_reply = msg_type.ends_with("_reply");
        if is_reply || msg_type == "stream" {
            self.touched(&parent);
        }
        self.store.update(&parent, |record| {
            record.engine_id = Some(engine);
            match msg_type.as_str() {
                "stream" => {
                    #[derive(Deserialize)]
                    struct Stream {
                        name: String,
                        text: String,
                    }
                    if let Ok(s) = serde_json::from_slice::<Stream>(&content) {
                        match s.name.as_str() {
                            "stderr" => record.stderr.push_str(&s.text),
                            _ => record.stdout.push_str(&s.text),
                        }
                    }
                }
                "execute_input" => {
                    #[derive(Deserialize)]
                    struct Input {
                        code: String,
                    }
                    record.execute_input = serde_json::from_slice::<Input>(&content)
                        .ok()
                        .map(|i| i.code);
                }
                "execute_result" => record.execute_result = Some(content.clone()),
                "error" => record.error = Some(content.clone()),
                "display_data" => record.outputs.push(content.clone()),
                _ if is_reply => {
                    let reply = Parts::of(&frames, SPLIT);
                    if through_shared_memory(&reply.metadata) {
                        record.buffers_dropped = true;
                    } else {
                        record.result_buffers =
                            frames.get(SPLIT + 6..).map(kept_all).unwrap_or_default();
                    }
                    record.reply = Some(reply);
                    record.received = Some(now.clone());
                }
                _ => {}
            }
        });
        // Clients that asked for this result while it ran get copies.
        let watching = match is_reply {
            true => self.watchers.remove(&parent),
            false => self.watchers.get(&parent).cloned(),
        };
        for client in watching.into_iter().flatten() {
            let mut copy = Vec::with_capacity(frames.len() - 1);
            copy.push(client);
            copy.extend(frames[SPLIT..].iter().cloned());
            if let Ok(message) = ZmqMessage::try_from(copy) {
                let _ = self.out.send(Out::ToClient(message)).await;
            }
        }
    }

    async fn answer(&mut self, request: Message) {
        let (content, buffers) = match request.msg_type() {
            "history_request" => {
                let history = match &self.sqlite {
                    Some(sqlite) => sqlite.history().await,
                    None => self.store.history(),
                };
                (json!({"status": "ok", "history": history}), vec![])
            }
            "db_request" => self.db_query(&request.content).await,
            "result_request" => self.results(&request).await,
            "resubmit_request" => self.resubmit(&request).await,
            "purge_request" => self.purge(&request.content).await,
            other => refused("ValueError", format!("unknown request {other}")),
        };
        let message = reply(&self.session, &request, content, buffers);
        let _ = self.out.send(Out::ToClient(message)).await;
    }

    /// `db_query`: the records matching, with the keys asked for (all when
    /// none); their buffers follow as frames, counted in each record.
    async fn db_query(&self, content: &Value) -> (Value, Vec<Bytes>) {
        let query = match query::Query::parse(&content["query"]) {
            Ok(q) => q,
            Err(reason) => return refused("ValueError", reason),
        };
        let keys: Option<Vec<String>> = content["keys"].as_array().map(|k| {
            k.iter()
                .filter_map(|k| k.as_str().map(String::from))
                .collect()
        });
        let found: Vec<sqlite::Found> = match &self.sqlite {
            Some(sqlite) => sqlite.query(query).await,
            None => self
                .store
                .iter()
                .map(|r| sqlite::Found {
                    json: r.to_json(),
                    buffers: r.buffers.clone(),
                    result_buffers: r.result_buffers.clone(),
                })
                .filter(|f| query.matches(&f.json))
                .collect(),
        };
        let mut records = Vec::new();
        let mut buffers = Vec::new();
        for record in found {
            let picked: Map<String, Value> = record
                .json
                .into_iter()
                .filter(|(key, _)| match &keys {
                    Some(keys) => key == "msg_id" || keys.contains(key),
                    // As ipyparallel: everything but the buffers.
                    None => key != "buffers" && key != "result_buffers",
                })
                .collect();
            if picked.contains_key("buffers") {
                buffers.extend(record.buffers);
            }
            if picked.contains_key("result_buffers") {
                buffers.extend(record.result_buffers);
            }
            records.push(Value::Object(picked));
        }
        (json!({"status": "ok", "records": records}), buffers)
    }

    /// `get_result`: finished requests' replies and outputs (buffers as
    /// frames, in order); unfinished ones are listed as pending, and the
    /// asking client gets their output and reply when they come.
    async fn results(&mut self, request: &Message) -> (Value, Vec<Bytes>) {
        let msg_ids = string_list(&request.content["msg_ids"]);
        // Records gone from memory may still be in SQLite, finished.
        let mut stored: HashMap<String, sqlite::Found> = HashMap::new();
        if let Some(sqlite) = &self.sqlite {
            let gone: Vec<String> = msg_ids
                .iter()
                .filter(|id| self.store.get(id).is_none())
                .cloned()
                .collect();
            if !gone.is_empty() {
                for (id, found) in gone.iter().zip(sqlite.get(gone.clone()).await) {
                    if let Some(found) = found.filter(|f| !f.json["result_header"].is_null()) {
                        stored.insert(id.clone(), found);
                    }
                }
            }
        }
        if let Some(unknown) = msg_ids
            .iter()
            .find(|id| self.store.get(id).is_none() && !stored.contains_key(*id))
        {
            return refused(
                "KeyError",
                format!("no task {unknown} in the record (unknown, purged, or too old)"),
            );
        }
        let client = request.identities.first().cloned().unwrap_or_default();
        // Requests whose output the client gets already (its own) are
        // not forwarded again: `follow` names the others (default: all).
        let follow = match request.content.get("follow") {
            Some(list) => string_list(list),
            None => msg_ids.clone(),
        };
        let mut pending = Vec::new();
        let mut too_large = Vec::new();
        let mut partial = Map::new();
        let mut results = Map::new();
        let mut buffers = Vec::new();
        for msg_id in &msg_ids {
            if let Some(found) = stored.remove(msg_id) {
                let mut full = found.json;
                full.remove("content");
                full.remove("metadata");
                results.insert(msg_id.clone(), Value::Object(full));
                buffers.extend(found.result_buffers);
                continue;
            }
            let record = self.store.get(msg_id).expect("checked");
            if !record.is_done() {
                pending.push(msg_id.clone());
                // What it printed and showed so far; the rest is forwarded.
                let so_far = record.to_json();
                let mut part = Map::new();
                for key in ["stdout", "stderr", "outputs", "engine_id", "header"] {
                    part.insert(key.into(), so_far[key].clone());
                }
                partial.insert(msg_id.clone(), Value::Object(part));
                if follow.contains(msg_id) {
                    let watchers = self.watchers.entry(msg_id.clone()).or_default();
                    if !watchers.contains(&client) {
                        watchers.push(client.clone());
                    }
                }
                continue;
            }
            if record.buffers_dropped && record.result_buffers.is_empty() {
                too_large.push(msg_id.clone());
                continue;
            }
            let mut full = record.to_json();
            full.remove("content");
            full.remove("metadata");
            results.insert(msg_id.clone(), Value::Object(full));
            buffers.extend(record.result_buffers.iter().cloned());
        }
        (
            json!({"status": "ok", "pending": pending, "partial": partial, "results": results, "too_large": too_large}),
            buffers,
        )
    }

    /// `resubmit`: each request again, as a new request (new msg_id) of
    /// the asking client, to the same engine or the scheduler.
    async fn resubmit(&mut self, request: &Message) -> (Value, Vec<Bytes>) {
        let msg_ids = string_list(&request.content["msg_ids"]);
        for msg_id in &msg_ids {
            return match self.store.get(msg_id) {
                None => refused(
                    "KeyError",
                    format!("no task {msg_id} in the record (unknown, purged, or too old)"),
                ),
                Some(r) if !r.is_done() => {
                    refused("RuntimeError", format!("task {msg_id} has not finished"))
                }
                Some(r) if r.buffers_dropped => refused(
                    "RuntimeError",
                    format!("the request {msg_id} was too large to keep in the record"),
                ),
                Some(_) => continue,
            };
        }
        let client = request.identities.first().cloned().unwrap_or_default();
        let mut resubmitted = Map::new();
        for msg_id in &msg_ids {
            let old = self.store.get(msg_id).expect("checked").clone();
            let mut header: Value =
                serde_json::from_slice(&old.request.header).unwrap_or(json!({}));
            let fresh = uuid::Uuid::new_v4().to_string();
            header["msg_id"] = fresh.clone().into();
            header["date"] = rparallel_protocol::message::now_iso8601().into();
            let message = Message {
                identities: vec![client.clone(), old.route.clone()],
                header: match serde_json::from_value(header) {
                    Ok(h) => h,
                    Err(_) => continue,
                },
                parent_header: None,
                metadata: serde_json::from_slice(&old.request.metadata).unwrap_or(json!({})),
                content: serde_json::from_slice(&old.request.content).unwrap_or(json!({})),
                buffers: old.buffers.clone(),
            };
            let frames = self.session.encode(&message).into_vec();
            self.record_request(frames.clone());
            self.store
                .update(msg_id, |r| r.resubmitted = Some(fresh.clone()));
            resubmitted.insert(msg_id.clone(), fresh.into());
            let _ = self.out.send(Out::Route(frames)).await;
        }
        (json!({"status": "ok", "resubmitted": resubmitted}), vec![])
    }

    /// `purge_hub_results`: forgets finished records (`msg_ids`, or those
    /// of `engine_ids`, or `"all"`).
    async fn purge(&mut self, content: &Value) -> (Value, Vec<Bytes>) {
        let answer = self.purge_memory(content);
        if let (Some(sqlite), true) = (&self.sqlite, answer.0["status"] == "ok") {
            // Finished records of the ones named, or of those engines, or all.
            // Finished records of the ones named (or all), and of those engines.
            let finished = json!({"$ne": null});
            let named = match content["msg_ids"] == "all" {
                true => json!({"result_header": finished}),
                false => json!({"result_header": finished, "msg_id": {"$in": content["msg_ids"]}}),
            };
            let mut ids = finished_ids(sqlite, &named).await;
            if content["engine_ids"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
            {
                let of_engines =
                    json!({"result_header": finished, "engine_id": {"$in": content["engine_ids"]}});
                ids.extend(finished_ids(sqlite, &of_engines).await);
            }
            sqlite.remove(ids);
        }
        answer
    }

    fn purge_memory(&mut self, content: &Value) -> (Value, Vec<Bytes>) {
        if content["msg_ids"] == "all" {
            let unfinished: Vec<TaskRecord> = self
                .store
                .iter()
                .filter(|r| !r.is_done())
                .cloned()
                .collect();
            self.store.clear();
            for record in unfinished {
                self.store.insert(record);
            }
            return (json!({"status": "ok"}), vec![]);
        }
        let mut msg_ids = string_list(&content["msg_ids"]);
        let engines: Vec<u64> = content["engine_ids"]
            .as_array()
            .map(|e| e.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        if let Some(busy) = msg_ids
            .iter()
            .find(|id| self.store.get(id).is_some_and(|r| !r.is_done()))
        {
            return refused(
                "RuntimeError",
                format!("cannot purge task {busy}: it has not finished"),
            );
        }
        // An engine's finished requests (its unfinished ones stay).
        if !engines.is_empty() {
            msg_ids.extend(
                self.store
                    .iter()
                    .filter(|r| r.is_done())
                    .filter(|r| r.engine_id.is_some_and(|e| engines.contains(&(e as u64))))
                    .map(|r| r.msg_id.clone()),
            );
        }
        for msg_id in msg_ids {
            self.store.remove(&msg_id);
        }
        (json!({"status": "ok"}), vec![])
    }
}

/// Whether a message's buffers went through `/dev/shm`: its frames only
/// name files its receiver has already consumed, so there is nothing to
/// keep.
fn through_shared_memory(metadata: &[u8]) -> bool {
    let key = rparallel_protocol::shm::KEY.as_bytes();
    metadata.windows(key.len()).any(|w| w == key)
}

fn kept_all(frames: &[Bytes]) -> Vec<Bytes> {
    frames.iter().map(store::kept).collect()
}

/// msg_ids of the SQLite records `query` matches.
async fn finished_ids(sqlite: &Sqlite, query: &Value) -> Vec<String> {
    match query::Query::parse(query) {
        Ok(q) => sqlite
            .query(q)
            .await
            .into_iter()
            .filter_map(|f| f.json["msg_id"].as_str().map(String::from))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// What the client raises when the record has none (`--db none`).
pub const NO_RECORD: &str = "NoTaskRecord";

/// A refusal: the exception class the client raises (`ename`) and why.
fn refused(ename: &str, reason: String) -> (Value, Vec<Bytes>) {
    (
        json!({"status": "error", "ename": ename, "reason": reason}),
        vec![],
    )
}

fn string_list(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The signed reply to a client's `request`.
fn reply(session: &Session, request: &Message, content: Value, buffers: Vec<Bytes>) -> ZmqMessage {
    let reply_type = rparallel_protocol::message::reply_type(request.msg_type());
    let mut message = session.message(&reply_type, content, Some(request));
    message.identities = request.identities.clone();
    message.buffers = buffers;
    session.encode(&message)
}

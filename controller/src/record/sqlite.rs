//! `--db sqlite`: the record also kept in SQLite (`tasks.sqlite` in the
//! profile), one table per controller run as ipyparallel's `SQLiteDB`, so
//! it outlives the memory bound (and the controller). A thread owns the
//! connection; the recorder hands it rows in batches and asks it queries,
//! so the controller's event loop never waits on the disk.

use std::path::Path;
use std::sync::mpsc;

use bytes::Bytes;
use rusqlite::{params, Connection};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::query::Query;

/// One record as stored: its JSON (buffers as counts) and buffers.
pub struct Row {
    pub msg_id: String,
    pub seq: u64,
    pub json: Map<String, Value>,
    pub buffers: Vec<Bytes>,
    pub result_buffers: Vec<Bytes>,
}

/// A stored record read back.
pub struct Found {
    pub json: Map<String, Value>,
    pub buffers: Vec<Bytes>,
    pub result_buffers: Vec<Bytes>,
}

enum Job {
    Save(Vec<Row>),
    Remove(Vec<String>),
    History(oneshot::Sender<Vec<String>>),
    Query(Query, oneshot::Sender<Vec<Found>>),
    Get(Vec<String>, oneshot::Sender<Vec<Option<Found>>>),
}

/// The handle of the SQLite thread.
pub struct Sqlite {
    jobs: mpsc::Sender<Job>,
}

impl Sqlite {
    /// Opens (creates) `path` with a table for this run, `table`.
    pub fn open(path: &Path, table: &str) -> anyhow::Result<Sqlite> {
        let connection = Connection::open(path)?;
        // A record, not a ledger: losing the last moments in a crash is
        // fine, waiting on fsync per task is not.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "OFF")?;
        let table = format!(
            "tasks_{}",
            table
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect::<String>()
        );
        connection.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                 msg_id TEXT PRIMARY KEY,
                 seq INTEGER NOT NULL,
                 record TEXT NOT NULL,
                 buffers BLOB NOT NULL,
                 result_buffers BLOB NOT NULL);
             CREATE INDEX IF NOT EXISTS {table}_seq ON {table} (seq);"
        ))?;
        let (jobs, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("task-record-sqlite".into())
            .spawn(move || serve(connection, &table, rx))?;
        Ok(Sqlite { jobs })
    }

    pub fn save(&self, rows: Vec<Row>) {
        if !rows.is_empty() {
            let _ = self.jobs.send(Job::Save(rows));
        }
    }

    pub fn remove(&self, msg_ids: Vec<String>) {
        let _ = self.jobs.send(Job::Remove(msg_ids));
    }

    pub async fn history(&self) -> Vec<String> {
        let (tx, rx) = oneshot::channel();
        let _ = self.jobs.send(Job::History(tx));
        rx.await.unwrap_or_default()
    }

    pub async fn query(&self, query: Query) -> Vec<Found> {
        let (tx, rx) = oneshot::channel();
        let _ = self.jobs.send(Job::Query(query, tx));
        rx.await.unwrap_or_default()
    }

    pub async fn get(&self, msg_ids: Vec<String>) -> Vec<Option<Found>> {
        let n = msg_ids.len();
        let (tx, rx) = oneshot::channel();
        let _ = self.jobs.send(Job::Get(msg_ids, tx));
        rx.await.unwrap_or_else(|_| (0..n).map(|_| None).collect())
    }
}

fn serve(connection: Connection, table: &str, jobs: mpsc::Receiver<Job>) {
    for job in jobs {
        let done = match job {
            Job::Save(rows) => save(&connection, table, rows),
            Job::Remove(ids) => (|| {
                let mut delete =
                    connection.prepare_cached(&format!("DELETE FROM {table} WHERE msg_id = ?1"))?;
                for id in ids {
                    delete.execute([id])?;
                }
                Ok(())
            })(),
            Job::History(reply) => (|| {
                let mut select = connection
                    .prepare_cached(&format!("SELECT msg_id FROM {table} ORDER BY seq"))?;
                let ids = select
                    .query_map([], |row| row.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                let _ = reply.send(ids);
                Ok(())
            })(),
            Job::Query(query, reply) => (|| {
                let mut select = connection.prepare_cached(&format!(
                    "SELECT record, buffers, result_buffers FROM {table} ORDER BY seq"
                ))?;
                let mut found = Vec::new();
                let mut rows = select.query([])?;
                while let Some(row) = rows.next()? {
                    let record = decode(row)?;
                    if query.matches(&record.json) {
                        found.push(record);
                    }
                }
                let _ = reply.send(found);
                Ok(())
            })(),
            Job::Get(ids, reply) => (|| {
                let mut select = connection.prepare_cached(&format!(
                    "SELECT record, buffers, result_buffers FROM {table} WHERE msg_id = ?1"
                ))?;
                let mut found = Vec::new();
                for id in ids {
                    let mut rows = select.query([id])?;
                    found.push(match rows.next()? {
                        Some(row) => Some(decode(row)?),
                        None => None,
                    });
                }
                let _ = reply.send(found);
                Ok(())
            })(),
        };
        if let Err(e) = done {
            tracing::warn!("task record (SQLite): {e}");
        }
    }
}

fn save(connection: &Connection, table: &str, rows: Vec<Row>) -> rusqlite::Result<()> {
    let transaction = connection.unchecked_transaction()?;
    {
        let mut upsert = transaction.prepare_cached(&format!(
            "INSERT INTO {table} (msg_id, seq, record, buffers, result_buffers)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(msg_id) DO UPDATE SET record = ?3, buffers = ?4, result_buffers = ?5"
        ))?;
        for row in rows {
            upsert.execute(params![
                row.msg_id,
                row.seq as i64,
                Value::Object(row.json).to_string(),
                pack(&row.buffers),
                pack(&row.result_buffers),
            ])?;
        }
    }
    transaction.commit()
}

fn decode(row: &rusqlite::Row<'_>) -> rusqlite::Result<Found> {
    let text: String = row.get(0)?;
    let json = match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    Ok(Found {
        json,
        buffers: unpack(&row.get::<_, Vec<u8>>(1)?),
        result_buffers: unpack(&row.get::<_, Vec<u8>>(2)?),
    })
}

/// Buffers as one blob: each one's length (8 bytes, little-endian), then
/// its bytes.
fn pack(buffers: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(buffers.iter().map(|b| b.len() + 8).sum());
    for buffer in buffers {
        out.extend_from_slice(&(buffer.len() as u64).to_le_bytes());
        out.extend_from_slice(buffer);
    }
    out
}

fn unpack(mut blob: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    while blob.len() >= 8 {
        let (len, rest) = blob.split_at(8);
        let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
        let Some(buffer) = rest.get(..len) else { break };
        out.push(Bytes::copy_from_slice(buffer));
        blob = &rest[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn buffers_round_trip_through_a_blob() {
        let buffers = vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from(vec![7u8; 300]),
        ];
        assert_eq!(unpack(&pack(&buffers)), buffers);
        assert!(unpack(&[1, 2, 3]).is_empty());
    }

    #[tokio::test]
    async fn records_are_saved_queried_and_removed() {
        let dir = std::env::temp_dir().join(format!("rp-sqlite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = Sqlite::open(&dir.join("tasks.sqlite"), "test-run").unwrap();
        let row = |id: &str, seq: u64, engine: u32| Row {
            msg_id: id.into(),
            seq,
            json: json!({"msg_id": id, "engine_id": engine})
                .as_object()
                .unwrap()
                .clone(),
            buffers: vec![Bytes::from_static(b"req")],
            result_buffers: vec![Bytes::from_static(b"res")],
        };
        db.save(vec![row("b", 2, 1), row("a", 1, 0)]);
        db.save(vec![row("a", 1, 5)]);
        assert_eq!(db.history().await, ["a", "b"]);
        let q = Query::parse(&json!({"engine_id": 5})).unwrap();
        let found = db.query(q).await;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].result_buffers, [Bytes::from_static(b"res")]);
        db.remove(vec!["a".into()]);
        let got = db.get(vec!["a".into(), "b".into()]).await;
        assert!(got[0].is_none() && got[1].is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

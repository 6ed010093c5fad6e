//! The controller's task record, from Python: `hub_history`, `db_query`,
//! `get_result` (results of any client, as an AsyncResult), `resubmit`,
//! `purge_hub_results`. The record's own side is the controller's
//! `record` module.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pyo3::exceptions::{PyKeyError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use rparallel_client::{Call, Client, Route};
use rparallel_protocol::{Header, Message};
use serde_json::{json, Value};

use crate::convert::{helpers, to_python};
use crate::errors::timeout_error;
use crate::result::{AsyncResult, UNASSIGNED};
use crate::waiting::PyWaiter;

/// How long the controller gets to answer a record request.
const ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// Asks the controller `msg_type` with `content`; the reply, or the
/// error it gives as `error_class` (a Python exception class).
fn ask(py: Python<'_>, client: &Client, msg_type: &str, content: Value) -> PyResult<Arc<Message>> {
    let reply = client
        .ask_controller_message(&mut PyWaiter::new(py), msg_type, content, ASK_TIMEOUT)?
        .ok_or_else(|| timeout_error(py, format!("the controller did not answer {msg_type}")))?;
    if reply.content["status"] != "ok" {
        let reason = reply.content["reason"]
            .as_str()
            .unwrap_or("refused")
            .to_string();
        return Err(if reason.starts_with("no task") {
            PyKeyError::new_err(reason)
        } else if reason.starts_with("unknown operator") || reason.contains("needs a list") {
            PyValueError::new_err(reason)
        } else {
            PyRuntimeError::new_err(reason)
        });
    }
    Ok(reply)
}

/// Every msg_id in the record, oldest first.
pub fn hub_history(py: Python<'_>, client: &Client) -> PyResult<Vec<String>> {
    let reply = ask(py, client, "history_request", json!({}))?;
    Ok(reply.content["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default())
}

/// `db_query(query, keys)`: records as dicts (timestamps as datetimes,
/// buffers as lists of bytes).
pub fn db_query(
    py: Python<'_>,
    client: &Client,
    query: &Bound<'_, PyAny>,
    keys: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    let helpers = helpers(py)?;
    let query = json_of(&helpers.call_method1("query_to_json", (query,))?)?;
    let keys = match keys.filter(|k| !k.is_none()) {
        Some(k) => json_of(k)?,
        None => Value::Null,
    };
    let reply = ask(
        py,
        client,
        "db_request",
        json!({"query": query, "keys": keys}),
    )?;
    let buffers = frames(py, &reply.buffers)?;
    Ok(helpers
        .call_method1(
            "hub_records",
            (to_python(py, &reply.content["records"])?, buffers),
        )?
        .unbind())
}

/// `get_result(msg_ids)`: an AsyncResult of requests from any client:
/// finished ones from the record, unfinished ones as they finish.
pub fn get_result(
    py: Python<'_>,
    client: &Arc<Client>,
    msg_ids: Vec<String>,
) -> PyResult<AsyncResult> {
    let (held, wanted): (Vec<String>, Vec<String>) = {
        let state = client.tracker().lock();
        msg_ids
            .iter()
            .cloned()
            .partition(|id| state.tasks.contains_key(id))
    };
    let mut engines = vec![UNASSIGNED; msg_ids.len()];
    let mut call = Call::APPLY;
    if !wanted.is_empty() {
        // Waited for from now: output and replies that come before the
        // record answers (copies the record forwards) are kept.
        for id in &wanted {
            client.tracker().submit(id, Route::Task);
        }
        let reply = match ask(py, client, "result_request", json!({"msg_ids": wanted})) {
            Ok(reply) => reply,
            Err(e) => {
                client.tracker().forget(&wanted);
                return Err(e);
            }
        };
        let mut buffers = reply.buffers.iter().cloned();
        let results = reply.content["results"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        // Finished ones: their buffers come in this order.
        for id in &wanted {
            let Some(record) = results.get(id) else {
                continue;
            };
            let count = record["result_buffers"].as_u64().unwrap_or(0) as usize;
            let taken: Vec<Bytes> = buffers.by_ref().take(count).collect();
            let engine = record["engine_id"].as_u64().map(|e| e as u32);
            if record["header"]["msg_type"] == "execute_request" {
                call = Call::EXECUTE;
            }
            let (reply, outputs) = rebuilt(id, record, taken);
            client
                .tracker()
                .finish_from_record(id, engine, reply, outputs);
        }
    }
    {
        let state = client.tracker().lock();
        for (slot, id) in engines.iter_mut().zip(&msg_ids) {
            if let Some(engine) = state.tasks.get(id).and_then(|t| t.engine) {
                *slot = engine;
            }
        }
    }
    let single = msg_ids.len() == 1;
    let result = AsyncResult::new(
        client.clone(),
        msg_ids,
        engines,
        call,
        single,
        Instant::now(),
        Some("AsyncHubResult"),
    );
    Ok(result.borrowing(&held))
}

/// `resubmit(msg_ids)`: each request run again under a new msg_id; the
/// AsyncResult of the new requests.
pub fn resubmit(
    py: Python<'_>,
    client: &Arc<Client>,
    msg_ids: Vec<String>,
) -> PyResult<AsyncResult> {
    // Replies that reach this client before it knows the new msg_ids are
    // dropped here, but kept by the record: get_result fetches them.
    let reply = ask(py, client, "resubmit_request", json!({"msg_ids": msg_ids}))?;
    let fresh: Vec<String> = msg_ids
        .iter()
        .filter_map(|id| reply.content["resubmitted"][id].as_str().map(String::from))
        .collect();
    let result = get_result(py, client, fresh)?;
    client.remember(result.msg_ids());
    Ok(result)
}

/// `purge_hub_results`: `msg_ids` (or every finished one, `all`) and the
/// requests of `engines` leave the record.
pub fn purge(py: Python<'_>, client: &Client, msg_ids: Value, engines: Vec<u32>) -> PyResult<()> {
    ask(
        py,
        client,
        "purge_request",
        json!({"msg_ids": msg_ids, "engine_ids": engines}),
    )?;
    Ok(())
}

/// A record's reply and outputs as the messages the engine had sent.
fn rebuilt(msg_id: &str, record: &Value, buffers: Vec<Bytes>) -> (Message, Vec<Message>) {
    let header = |value: &Value, fallback_type: &str| -> Header {
        serde_json::from_value(value.clone()).unwrap_or_else(|_| {
            serde_json::from_value(
                json!({"msg_id": uuid::Uuid::new_v4().to_string(), "msg_type": fallback_type}),
            )
            .expect("a minimal header")
        })
    };
    let parent = header(&json!({"msg_id": msg_id, "msg_type": "request"}), "request");
    let message = |msg_type: &str, content: Value| Message {
        identities: vec![],
        header: header(
            &json!({"msg_id": uuid::Uuid::new_v4().to_string(), "msg_type": msg_type}),
            msg_type,
        ),
        parent_header: Some(parent.clone()),
        metadata: json!({}),
        content,
        buffers: vec![],
    };
    let mut outputs = Vec::new();
    for name in ["stdout", "stderr"] {
        if let Some(text) = record[name].as_str().filter(|t| !t.is_empty()) {
            outputs.push(message("stream", json!({"name": name, "text": text})));
        }
    }
    for display in record["outputs"].as_array().into_iter().flatten() {
        outputs.push(message("display_data", display.clone()));
    }
    if !record["execute_result"].is_null() {
        outputs.push(message("execute_result", record["execute_result"].clone()));
    }
    let reply = Message {
        identities: vec![],
        header: header(&record["result_header"], "apply_reply"),
        parent_header: Some(parent),
        metadata: record["result_metadata"].clone(),
        content: record["result_content"].clone(),
        buffers,
    };
    (reply, outputs)
}

/// Frames as a list of `bytes`.
fn frames<'py>(py: Python<'py>, frames: &[Bytes]) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, frames.iter().map(|f| pyo3::types::PyBytes::new(py, f)))
}

/// msg_ids of `indices_or_msg_ids` (None: the last request; ints index
/// the client's history).
pub fn msg_ids_of(client: &Client, jobs: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    match jobs.filter(|j| !j.is_none()) {
        None => {
            let history = client.history();
            Ok(history.last().cloned().into_iter().collect())
        }
        Some(jobs) => crate::jobs::job_ids(client, Some(jobs)),
    }
}

/// A Python value (JSON-able) as JSON.
fn json_of(value: &Bound<'_, PyAny>) -> PyResult<Value> {
    let text: String = value
        .py()
        .import("json")?
        .call_method1("dumps", (value,))?
        .extract()?;
    serde_json::from_str(&text).map_err(|e| PyValueError::new_err(e.to_string()))
}

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

/// How the record says it keeps nothing (`--db none`).
const NO_RECORD: &str = "NoTaskRecord";

/// How long the controller gets to answer a record request.
const ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// Asks the controller `msg_type` with `content`; its reply, or the
/// refusal it gives as the exception it names.
fn ask(py: Python<'_>, client: &Client, msg_type: &str, content: Value) -> PyResult<Arc<Message>> {
    let reply = ask_unchecked(py, client, msg_type, content)?;
    match refusal(&reply) {
        Some(e) => Err(e),
        None => Ok(reply),
    }
}

/// The controller's reply to `msg_type`, refusals included.
fn ask_unchecked(
    py: Python<'_>,
    client: &Client,
    msg_type: &str,
    content: Value,
) -> PyResult<Arc<Message>> {
    client
        .ask_controller_message(&mut PyWaiter::new(py), msg_type, content, ASK_TIMEOUT)?
        .ok_or_else(|| timeout_error(py, format!("the controller did not answer {msg_type}")))
}

/// The exception a refusing reply names (None: not refused).
fn refusal(reply: &Message) -> Option<PyErr> {
    if reply.content["status"] == "ok" {
        return None;
    }
    let reason = reply.content["reason"]
        .as_str()
        .unwrap_or("refused")
        .to_string();
    Some(match reply.content["ename"].as_str() {
        Some("KeyError") => PyKeyError::new_err(reason),
        Some("ValueError") => PyValueError::new_err(reason),
        _ => PyRuntimeError::new_err(reason),
    })
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
/// finished ones from the record, unfinished ones as they finish (with
/// what they printed so far). `single`: its value is the one request's
/// bare value.
pub fn get_result(
    py: Python<'_>,
    client: &Arc<Client>,
    msg_ids: Vec<String>,
    single: bool,
) -> PyResult<AsyncResult> {
    // Requests another result here holds are read from it; the record is
    // still asked, so a purged or unknown msg_id is an error.
    let held: Vec<String> = {
        let state = client.tracker().lock();
        msg_ids
            .iter()
            .filter(|id| state.tasks.contains_key(*id))
            .cloned()
            .collect()
    };
    let wanted: Vec<String> = msg_ids
        .iter()
        .filter(|id| !held.contains(id))
        .cloned()
        .collect();
    // Waited for from now: output and replies forwarded before the record
    // answers are kept.
    for id in &wanted {
        client.tracker().submit(id, Route::Task);
    }
    let asked = json!({"msg_ids": msg_ids, "follow": wanted});
    let reply = ask_unchecked(py, client, "result_request", asked);
    // No record kept, but nothing asked that this client lacks.
    let no_record = reply
        .as_ref()
        .is_ok_and(|r| r.content["ename"] == NO_RECORD);
    if no_record && wanted.is_empty() {
        return Ok(AsyncResult::new(
            client.clone(),
            msg_ids.clone(),
            known_engines(client, &msg_ids),
            Call::APPLY,
            single,
            Instant::now(),
            Some("AsyncHubResult"),
        )
        .borrowing(&held));
    }
    let reply = match reply.and_then(|r| match refusal(&r) {
        Some(e) => Err(e),
        None => Ok(r),
    }) {
        Ok(reply) => reply,
        Err(e) => {
            client.tracker().withdraw(&wanted);
            return Err(e);
        }
    };
    let too_large: Vec<&str> = reply.content["too_large"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|id| wanted.iter().any(|w| w == id))
        .collect();
    if let Some(id) = too_large.first() {
        let message = format!("the result of {id} was too large to keep in the record");
        client.tracker().withdraw(&wanted);
        return Err(PyRuntimeError::new_err(message));
    }
    let mut call = Call::APPLY;
    let mut buffers = reply.buffers.iter().cloned();
    let results = reply.content["results"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let partial = reply.content["partial"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for id in &msg_ids {
        let Some(record) = results.get(id).or_else(|| partial.get(id)) else {
            continue;
        };
        if record["header"]["msg_type"] == "execute_request" {
            call = Call::EXECUTE;
        }
        if !wanted.contains(id) {
            continue;
        }
        let engine = record["engine_id"].as_u64().map(|e| e as u32);
        if results.contains_key(id) {
            // Finished: its buffers come in this order.
            let count = record["result_buffers"].as_u64().unwrap_or(0) as usize;
            let taken: Vec<Bytes> = buffers.by_ref().take(count).collect();
            let (reply, outputs) = rebuilt(id, record, taken);
            client
                .tracker()
                .finish_from_record(id, engine, reply, outputs);
        } else {
            let (_, outputs) = rebuilt(id, record, vec![]);
            client.tracker().prepend_outputs(id, outputs);
        }
    }
    let engines = known_engines(client, &msg_ids);
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

/// The engine of each request, as far as this client knows.
fn known_engines(client: &Client, msg_ids: &[String]) -> Vec<u32> {
    let state = client.tracker().lock();
    msg_ids
        .iter()
        .map(|id| {
            state
                .tasks
                .get(id)
                .and_then(|t| t.engine)
                .unwrap_or(UNASSIGNED)
        })
        .collect()
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
    // Always a list, as ipyparallel's.
    let result = get_result(py, client, fresh, false)?;
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
/// the client's history), and whether it named one request (not a list).
pub fn msg_ids_of(
    client: &Client,
    jobs: Option<&Bound<'_, PyAny>>,
) -> PyResult<(Vec<String>, bool)> {
    match jobs.filter(|j| !j.is_none()) {
        None => {
            let history = client.history();
            Ok((history.last().cloned().into_iter().collect(), true))
        }
        Some(jobs) => {
            let one =
                jobs.extract::<String>().is_ok() || jobs.is_instance_of::<pyo3::types::PyInt>();
            Ok((crate::jobs::job_ids(client, Some(jobs))?, one))
        }
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

//! A `jobs` argument (`rc.wait(jobs)`, `view.abort(jobs)`): AsyncResults,
//! msg_ids, indices into the client's history, `concurrent.futures`
//! Futures, or lists of them.

use pyo3::exceptions::{PyIndexError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyList, PySet, PyTuple};
use rparallel_client::{Client, Deadline, Until, Waited};

use crate::convert::helpers;
use crate::result::AsyncResult;
use crate::waiting::PyWaiter;

/// What a `jobs` argument names.
#[derive(Default)]
pub struct Jobs<'py> {
    pub msg_ids: Vec<String>,
    /// Other futures (`concurrent.futures.Future`, an executor's).
    pub futures: Vec<Bound<'py, PyAny>>,
}

/// Reads `jobs`: None, an AsyncResult, a msg_id, an index into the
/// client's history, a Future, or a list, tuple or set of those.
pub fn jobs<'py>(client: &Client, jobs: Option<&Bound<'py, PyAny>>) -> PyResult<Jobs<'py>> {
    let mut out = Jobs::default();
    let Some(jobs) = jobs.filter(|j| !j.is_none()) else {
        return Ok(out);
    };
    let mut history = None;
    let mut add = |job: Bound<'py, PyAny>| -> PyResult<()> {
        if let Ok(result) = job.cast::<AsyncResult>() {
            out.msg_ids
                .extend(result.borrow().msg_ids().iter().cloned());
        } else if let Ok(id) = job.extract::<String>() {
            out.msg_ids.push(id);
        } else if job.is_instance_of::<PyInt>() {
            let index: i64 = job.extract()?;
            let history = history.get_or_insert_with(|| client.history());
            let at = if index < 0 {
                history.len() as i64 + index
            } else {
                index
            };
            let id = usize::try_from(at)
                .ok()
                .and_then(|i| history.get(i))
                .ok_or_else(|| PyIndexError::new_err(format!("no job {index} in the history")))?;
            out.msg_ids.push(id.clone());
        } else if job.hasattr("add_done_callback")? && job.hasattr("result")? {
            out.futures.push(job);
        } else {
            return Err(PyTypeError::new_err(format!(
                "jobs are AsyncResults, msg_ids, history indices or Futures, not {}",
                job.get_type().name()?
            )));
        }
        Ok(())
    };
    let is_collection = jobs.is_instance_of::<PyList>()
        || jobs.is_instance_of::<PyTuple>()
        || jobs.is_instance_of::<PySet>();
    if is_collection {
        for job in jobs.try_iter()? {
            add(job?)?;
        }
    } else {
        add(jobs.clone())?;
    }
    Ok(out)
}

/// msg_ids of `jobs` (Futures that are not AsyncResults have none).
pub fn job_ids(client: &Client, jobs: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    self::jobs(client, jobs).map(|j| j.msg_ids)
}

/// Waits for `jobs` (every request not finished when None); true when all
/// finished within `timeout`.
pub fn wait_jobs(
    py: Python<'_>,
    client: &Client,
    jobs: Option<&Bound<'_, PyAny>>,
    timeout: Option<f64>,
) -> PyResult<bool> {
    let everything = jobs.is_none_or(|j| j.is_none());
    let jobs = self::jobs(client, jobs)?;
    let deadline = Deadline::returning(timeout);
    let started = std::time::Instant::now();
    let mut waiter = PyWaiter::new(py);
    let waited = if everything {
        client.wait_all(deadline, &mut waiter)?
    } else {
        client.wait(&jobs.msg_ids, deadline, Until::AllDone, &mut waiter)?
    };
    if waited != Waited::Done {
        return Ok(false);
    }
    if jobs.futures.is_empty() {
        return Ok(true);
    }
    let left = deadline
        .timeout()
        .map(|t| t.saturating_sub(started.elapsed()).as_secs_f64());
    let (_, pending) = helpers(py)?
        .call_method1("wait_futures", (jobs.futures, left))?
        .extract::<(Bound<'_, PyAny>, Bound<'_, PyAny>)>()?;
    Ok(pending.len()? == 0)
}

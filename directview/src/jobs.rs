//! A `jobs` argument (`rc.wait(jobs)`, `view.abort(jobs)`): AsyncResults,
//! msg_ids, or lists of them.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use rparallel_client::{Client, Deadline, Until, Waited};

use crate::result::AsyncResult;
use crate::waiting::PyWaiter;

/// msg_ids of `jobs`: None, an AsyncResult, a msg_id, or a list of those.
pub fn job_ids(jobs: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    let Some(jobs) = jobs.filter(|j| !j.is_none()) else {
        return Ok(Vec::new());
    };
    let mut ids = Vec::new();
    let mut add = |job: &Bound<'_, PyAny>| -> PyResult<()> {
        if let Ok(result) = job.cast::<AsyncResult>() {
            ids.extend(result.borrow().msg_ids().iter().cloned());
        } else if let Ok(id) = job.extract::<String>() {
            ids.push(id);
        } else {
            return Err(PyTypeError::new_err("jobs are AsyncResults or msg_ids"));
        }
        Ok(())
    };
    if jobs.is_instance_of::<PyList>() || jobs.is_instance_of::<PyTuple>() {
        for job in jobs.try_iter()? {
            add(&job?)?;
        }
    } else {
        add(jobs)?;
    }
    Ok(ids)
}

/// Waits for `jobs` (every request not finished when None); true when all
/// finished within `timeout`.
pub fn wait_jobs(
    py: Python<'_>,
    client: &Client,
    jobs: Option<&Bound<'_, PyAny>>,
    timeout: Option<f64>,
) -> PyResult<bool> {
    let ids = job_ids(jobs)?;
    let deadline = Deadline::returning(timeout);
    let mut waiter = PyWaiter::new(py);
    let waited = if ids.is_empty() {
        client.wait_all(deadline, &mut waiter)?
    } else {
        client.wait(&ids, deadline, Until::AllDone, &mut waiter)?
    };
    Ok(waited == Waited::Done)
}

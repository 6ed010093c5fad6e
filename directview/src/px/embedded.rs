//! The embedded default: the first `%px` with no client starts a local
//! cluster (one engine per CPU, at least 2) whose client's view becomes
//! active. It is reused by later cells and stops with the kernel.

use crate::display::Frontend;
use pyo3::prelude::*;

use super::Magics;

/// The cluster and client the kernel started for `%px`.
pub struct Embedded {
    _cluster: Py<PyAny>,
    _client: Py<PyAny>,
}

impl Magics {
    pub(super) fn start_embedded(&self, py: Python<'_>) -> PyResult<()> {
        let mut embedded = self.embedded.lock().unwrap_or_else(|e| e.into_inner());
        if embedded.is_some() {
            return Ok(());
        }
        let cluster = py.import("rparallel")?.getattr("Cluster")?.call0()?;
        // The new Client activates its blocking view of all engines.
        let client = cluster.call_method0("start_and_connect_sync")?;
        let n: usize = cluster.getattr("n")?.extract()?;
        Frontend::new(py)?.write(
            "stdout",
            &format!("%px: started a local cluster of {n} engines (it stops with the kernel)\n"),
        )?;
        *embedded = Some(Embedded {
            _cluster: cluster.unbind(),
            _client: client.unbind(),
        });
        Ok(())
    }
}

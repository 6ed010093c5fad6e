//! The progress bar of a blocking `%px` that runs longer than
//! `--progress-after` seconds (`rparallel._helpers.Progress`: a tqdm
//! widget in a notebook).

use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::display::Frontend;
use crate::result::AsyncResult;

/// How often the bar is updated.
const REDRAW: Duration = Duration::from_millis(200);

pub struct Progress {
    after: Option<Duration>,
    total: usize,
    started: Instant,
    drawn: Option<Instant>,
    bar: Option<Py<PyAny>>,
}

impl Progress {
    pub fn new(after: Option<f64>, total: usize) -> Self {
        Progress {
            // Negative: never (`--progress-after -1`).
            after: after.filter(|a| *a >= 0.0).map(Duration::from_secs_f64),
            total,
            started: Instant::now(),
            drawn: None,
            bar: None,
        }
    }

    /// Shows or updates the bar when it is due.
    pub fn tick(&mut self, py: Python<'_>, result: &AsyncResult) -> PyResult<()> {
        let Some(after) = self.after else {
            return Ok(());
        };
        let now = Instant::now();
        let due = match self.drawn {
            None => now.duration_since(self.started) >= after,
            Some(drawn) => now.duration_since(drawn) >= REDRAW,
        };
        if !due {
            return Ok(());
        }
        self.drawn = Some(now);
        let bar = match &self.bar {
            Some(bar) => bar.bind(py).clone(),
            None => {
                let bar = Frontend::new(py)?.progress_bar(self.total, "engines", "%px")?;
                self.bar = Some(bar.clone().unbind());
                bar
            }
        };
        bar.call_method1("update", (result.finished(),))?;
        Ok(())
    }

    /// The final state, if the bar was shown.
    pub fn finish(&mut self, py: Python<'_>, result: &AsyncResult) -> PyResult<()> {
        if let Some(bar) = self.bar.take() {
            bar.bind(py).call_method1("close", (result.finished(),))?;
        }
        Ok(())
    }
}

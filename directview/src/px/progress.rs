//! The progress bar of a blocking `%px` that runs longer than
//! `--progress-after` seconds: one display, updated in place.

use std::time::{Duration, Instant};

use crate::display::Frontend;
use crate::result::AsyncResult;
use pyo3::prelude::*;
use serde_json::json;

/// How often the bar is redrawn.
const REDRAW: Duration = Duration::from_millis(500);
const WIDTH: usize = 20;

pub struct Progress {
    after: Option<Duration>,
    total: usize,
    started: Instant,
    drawn: Option<Instant>,
    id: String,
}

impl Progress {
    pub fn new(after: Option<f64>, total: usize) -> Self {
        Progress {
            after: after.map(Duration::from_secs_f64),
            total,
            started: Instant::now(),
            drawn: None,
            id: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// Draws or redraws the bar when it is due.
    pub fn tick(&mut self, py: Python<'_>, result: &AsyncResult) -> PyResult<()> {
        let Some(after) = self.after else {
            return Ok(());
        };
        let now = Instant::now();
        let due = match self.drawn {
            None => now.duration_since(self.started) >= after,
            Some(drawn) => now.duration_since(drawn) >= REDRAW,
        };
        if due {
            let update = self.drawn.is_some();
            self.draw(py, result.finished(), update)?;
            self.drawn = Some(now);
        }
        Ok(())
    }

    /// The final state, if the bar was shown.
    pub fn finish(&mut self, py: Python<'_>, result: &AsyncResult) -> PyResult<()> {
        if self.drawn.is_some() {
            self.draw(py, result.finished(), true)?;
        }
        Ok(())
    }

    fn draw(&self, py: Python<'_>, done: usize, update: bool) -> PyResult<()> {
        let filled = (done * WIDTH).checked_div(self.total).unwrap_or(WIDTH);
        let seconds = self.started.elapsed().as_secs_f64();
        let text = format!(
            "%px: [{}{}] {done}/{} engines finished after {seconds:.1} s",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            self.total
        );
        let html = format!(
            "<progress value=\"{done}\" max=\"{}\"></progress> {done}/{} engines finished after {seconds:.1} s",
            self.total, self.total
        );
        let data = json!({ "text/plain": text, "text/html": html });
        Frontend::new(py)?.display(&data, &json!({}), Some(&self.id), update)
    }
}

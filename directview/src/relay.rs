//! Live output of running requests: each engine's streams and displays are
//! shown, labelled by engine, while the caller waits, from the thread that
//! waits (so in a kernel they land in the cell that asked). Each output
//! message is shown once: a cursor per request remembers how far it got.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use rparallel_magics::render::{self, LineBuffer};
use rparallel_protocol::Message;
use std::sync::Arc;

use rparallel_client::{State, Tracker};

use crate::display::Frontend;

/// How long an unfinished line may wait for its end before it is shown.
const LINE_PATIENCE: Duration = Duration::from_millis(300);

pub struct Relay {
    msg_ids: Vec<String>,
    engines: Vec<u32>,
    /// How many outputs of each request were shown.
    cursors: Vec<usize>,
    /// Unfinished lines, per (request, stream).
    lines: HashMap<(usize, String), LineBuffer>,
}

impl Relay {
    pub fn new(msg_ids: &[String], engines: &[u32]) -> Self {
        Relay {
            msg_ids: msg_ids.to_vec(),
            engines: engines.to_vec(),
            cursors: vec![0; msg_ids.len()],
            lines: HashMap::new(),
        }
    }

    /// Whether something arrived that was not shown yet.
    pub fn has_news(&self, state: &State) -> bool {
        self.msg_ids
            .iter()
            .zip(&self.cursors)
            .any(|(id, seen)| state.tasks.get(id).is_some_and(|t| t.outputs.len() > *seen))
    }

    /// Takes what arrived since the last call.
    fn take_news(&mut self, tracker: &Tracker) -> Vec<(usize, Vec<Arc<Message>>)> {
        let state = tracker.lock();
        let mut news = Vec::new();
        for (i, id) in self.msg_ids.iter().enumerate() {
            if let Some(task) = state.tasks.get(id) {
                // A load-balanced task's engine is known once it runs.
                if let Some(engine) = task.engine {
                    self.engines[i] = engine;
                }
                if task.outputs.len() > self.cursors[i] {
                    news.push((i, task.outputs[self.cursors[i]..].to_vec()));
                    self.cursors[i] = task.outputs.len();
                }
            }
        }
        news
    }

    /// Shows what arrived; `finished`: also the unfinished lines.
    pub fn pump(
        &mut self,
        tracker: &Tracker,
        frontend: &Frontend<'_>,
        finished: bool,
    ) -> PyResult<()> {
        let now = Instant::now();
        for (i, messages) in self.take_news(tracker) {
            let engine = self.engines[i];
            for message in messages {
                self.show(i, engine, &message, frontend, now)?;
            }
        }
        for ((i, name), buffer) in self.lines.iter_mut() {
            let rest = if finished {
                buffer.flush()
            } else {
                buffer.overdue(now, LINE_PATIENCE)
            };
            if let Some(text) = rest {
                frontend.write(name, &render::stream_text(name, self.engines[*i], &text))?;
            }
        }
        frontend.flush()
    }

    /// Shows request `i`'s unfinished lines (a display comes after them).
    fn flush_lines(&mut self, i: usize, frontend: &Frontend<'_>) -> PyResult<()> {
        for name in ["stdout", "stderr"] {
            if let Some(text) = self
                .lines
                .get_mut(&(i, name.to_string()))
                .and_then(LineBuffer::flush)
            {
                frontend.write(name, &render::stream_text(name, self.engines[i], &text))?;
            }
        }
        Ok(())
    }

    fn show(
        &mut self,
        i: usize,
        engine: u32,
        message: &Message,
        frontend: &Frontend<'_>,
        now: Instant,
    ) -> PyResult<()> {
        let c = &message.content;
        match message.msg_type() {
            "stream" => {
                let name = c["name"].as_str().unwrap_or("stdout").to_string();
                let text = c["text"].as_str().unwrap_or("");
                let buffer = self.lines.entry((i, name.clone())).or_default();
                if let Some(lines) = buffer.push(text, now) {
                    frontend.write(&name, &render::stream_text(&name, engine, &lines))?;
                }
            }
            "display_data" => {
                self.flush_lines(i, frontend)?;
                frontend.write("stdout", &render::output_header(engine))?;
                let id = c["transient"]["display_id"].as_str();
                frontend.display(&c["data"], &c["metadata"], id, false)?;
            }
            "update_display_data" => {
                let id = c["transient"]["display_id"].as_str();
                frontend.display(&c["data"], &c["metadata"], id, id.is_some())?;
            }
            "clear_output" => frontend.clear(c["wait"].as_bool().unwrap_or(false))?,
            // Results are shown once all engines finish; errors are raised.
            _ => {}
        }
        Ok(())
    }
}

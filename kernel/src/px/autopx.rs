//! `%autopx` mode: shared between the magic (which turns it on and off on
//! the Python thread) and the shell channel (which reads it to parse the
//! next cell).

use std::sync::{Arc, Mutex};

use rparallel_magics::{parse_cell, parse_cell_autopx, Cell};

/// The suffix of the view cells go to while the mode is on.
#[derive(Clone, Default)]
pub struct AutoPx(Arc<Mutex<Option<String>>>);

impl AutoPx {
    fn state(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn turn_on(&self, suffix: &str) {
        *self.state() = Some(suffix.to_string());
    }

    /// Turns the mode off; false if it was not on.
    pub fn turn_off(&self) -> bool {
        self.state().take().is_some()
    }

    /// How the next cell is read.
    pub fn parse(&self, code: &str) -> Cell {
        match &*self.state() {
            Some(suffix) => parse_cell_autopx(code, suffix),
            None => parse_cell(code),
        }
    }
}

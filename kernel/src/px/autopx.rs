//! `%autopx` mode: shared between the magic (which turns it on and off on
//! the Python thread) and the shell channel (which reads it for the next
//! cell).

use std::sync::{Arc, Mutex};

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

    /// The cell to run for `code`: while the mode is on, `code` runs on the
    /// engines as a `%%px{suffix}` cell, except blank cells and cells that
    /// start with a magic (`%autopx` turns the mode off; `%pxresult` and
    /// `%%px -t 0` keep working).
    pub fn cell(&self, code: &str) -> String {
        match &*self.state() {
            Some(suffix) => wrap(code, suffix),
            None => code.to_string(),
        }
    }
}

fn wrap(code: &str, suffix: &str) -> String {
    let start = code.trim_start();
    if start.is_empty() || start.starts_with('%') {
        return code.to_string();
    }
    format!("%%px{suffix}\n{code}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rparallel_pyexec::input::{parse_cell, Cell};

    #[test]
    fn cells_go_to_the_engines_except_magics_and_blanks() {
        assert_eq!(
            parse_cell(&wrap("a = 1\nb = 2", "2")),
            Cell::CellMagic {
                name: "px2".into(),
                args: "".into(),
                body: "a = 1\nb = 2".into()
            }
        );
        assert_eq!(wrap("  %autopx", ""), "  %autopx");
        assert_eq!(wrap("\n", ""), "\n");
        assert_eq!(wrap("%%px -t 0\nx", ""), "%%px -t 0\nx");
    }

    #[test]
    fn the_mode_turns_on_and_off() {
        let mode = AutoPx::default();
        assert_eq!(mode.cell("x"), "x");
        mode.turn_on("");
        assert_eq!(mode.cell("x"), "%%px\nx");
        assert!(mode.turn_off());
        assert!(!mode.turn_off());
    }
}

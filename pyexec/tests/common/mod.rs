//! What the execution core's tests share.

use rparallel_pyexec::{initialize, PythonEnv};

/// Starts Python in the project's environment (`.venv`, or
/// `RPARALLEL_TEST_PYTHON`), which has IPython, cloudpickle and numpy.
pub fn start_python() {
    let python = std::env::var_os("RPARALLEL_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
        });
    initialize(&PythonEnv::resolve(Some(&python))).expect("python starts");
}

/// `text` without ANSI colour codes (IPython colours tracebacks).
#[allow(dead_code)] // not every test binary uses it
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

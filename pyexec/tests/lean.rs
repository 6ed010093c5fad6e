//! The execution core before IPython loads (an engine's "lean" mode, as
//! `IPythonLoad::OnFirstNeed` starts it): plain cells run with `exec`, and
//! a cell run again reuses its compiled code under its new cell name. One
//! interpreter per test binary, so everything runs in one test, in order.

mod common;

use std::sync::{Arc, Mutex};

use rparallel_pyexec::{IPythonLoad, InputError, OutputEvent, OutputSink, PyShell};

#[derive(Default)]
struct Stdout(Mutex<String>);

impl Stdout {
    fn take(&self) -> String {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

impl OutputSink for Stdout {
    fn emit(&self, event: OutputEvent) {
        if let OutputEvent::Stream { name, text } = event {
            if name == "stdout" {
                self.0.lock().unwrap().push_str(&text);
            }
        }
    }
    fn input(&self, _prompt: &str, _password: bool) -> Result<String, InputError> {
        Err(InputError::NotAllowed)
    }
}

#[test]
fn lean_cells_run_again() {
    common::start_python();
    let sink = Arc::new(Stdout::default());
    let shell = PyShell::new(sink.clone(), IPythonLoad::OnFirstNeed).expect("core loads");

    // The same plain cell, again and again: each run counts.
    for count in 1..=3 {
        let out = shell.execute("a = 1", false, true);
        assert_eq!((out.execution_count, out.result), (count, Ok(None)));
    }
    shell.execute("import sys; print('IPython' in sys.modules)", false, true);
    assert_eq!(sink.take(), "False\n", "plain cells must not load IPython");

    // A function from the second of two identical cells fails: its
    // traceback names that cell, not the first.
    let define = "def f(x):\n    return 1/x\n";
    assert_eq!(shell.execute(define, false, true).execution_count, 5);
    assert_eq!(shell.execute(define, false, true).execution_count, 6);
    let err = shell.execute("f(0)", false, true).result.unwrap_err();
    assert_eq!(err.ename, "ZeroDivisionError");
    let text = common::plain(&err.traceback.join("\n"));
    assert!(text.contains("Cell In[6], line 2"), "{text}");
    assert!(!text.contains("Cell In[5]"), "{text}");
    assert!(text.contains("----> 2     return 1/x"), "{text}");

    // A silent run of a cell shows nothing; the same cell run for its
    // value shows it.
    assert_eq!(shell.execute("a + 41", true, false).result, Ok(None));
    let out = shell.execute("a + 41", false, true);
    assert_eq!(out.result.unwrap().unwrap().data["text/plain"], "42");
}

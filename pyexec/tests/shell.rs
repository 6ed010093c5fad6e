//! The execution core, embedded for real: one interpreter per test binary,
//! so everything runs in one test, in order.

mod common;

use std::sync::{Arc, Mutex};

use rparallel_pyexec::{IPythonLoad, InputError, OutputEvent, OutputSink, PyShell};

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<OutputEvent>>,
}

impl Recorder {
    fn take(&self) -> Vec<OutputEvent> {
        std::mem::take(&mut self.events.lock().unwrap())
    }
    fn stdout(&self) -> String {
        self.take()
            .into_iter()
            .filter_map(|e| match e {
                OutputEvent::Stream { name, text } if name == "stdout" => Some(text),
                _ => None,
            })
            .collect()
    }
}

impl OutputSink for Recorder {
    fn emit(&self, event: OutputEvent) {
        self.events.lock().unwrap().push(event);
    }
    fn input(&self, prompt: &str, _password: bool) -> Result<String, InputError> {
        if prompt == "deny" {
            Err(InputError::NotAllowed)
        } else {
            Ok(format!("answer to {prompt}"))
        }
    }
}

#[test]
fn execution_core() {
    common::start_python();
    let sink = Arc::new(Recorder::default());
    let shell = PyShell::new(sink.clone(), IPythonLoad::AtStart).expect("core loads");

    // Statements, then the last expression as a result; counts advance.
    let out = shell.execute("a = 20\na + 22", false, true);
    assert_eq!(out.execution_count, 1);
    let bundle = out.result.unwrap().unwrap();
    assert_eq!(bundle.data["text/plain"], "42");
    assert_eq!(shell.execution_count(), 2);

    // In / Out / _ and friends.
    let out = shell.execute("(In[1], Out[1], _)", false, true);
    assert_eq!(
        out.result.unwrap().unwrap().data["text/plain"],
        "('a = 20\\na + 22', 42, 42)"
    );

    // A trailing semicolon and silent runs show nothing.
    assert_eq!(shell.execute("a;", false, true).result, Ok(None));
    let silent = shell.execute("a", true, false);
    assert_eq!(silent.result, Ok(None));
    assert_eq!(shell.execution_count(), 4);

    // Output goes to the sink while the cell runs.
    shell.execute(
        "print('hello'); print('x', file=__import__('sys').stderr)",
        false,
        true,
    );
    let events = sink.take();
    assert!(events.contains(&OutputEvent::Stream {
        name: "stdout".into(),
        text: "hello".into()
    }));
    assert!(events
        .iter()
        .any(|e| matches!(e, OutputEvent::Stream { name, .. } if name == "stderr")));

    // Rich representations.
    let out = shell.execute(
        "class R:\n    def _repr_html_(self): return '<b>r</b>'\n    def _repr_markdown_(self): return '**r**'\nR()",
        false,
        true,
    );
    let data = out.result.unwrap().unwrap().data;
    assert_eq!(data["text/html"], "<b>r</b>");
    assert_eq!(data["text/markdown"], "**r**");
    assert!(data["text/plain"].as_str().unwrap().contains("__main__.R"));
    // The value went out as it was produced (IPython's display hook).
    let events = sink.take();
    assert!(
        matches!(
            &events[..],
            [OutputEvent::Result {
                execution_count: 5,
                ..
            }]
        ),
        "{events:?}"
    );

    // display() and clear_output().
    shell.execute("display(R()); clear_output(wait=True)", false, true);
    let events = sink.take();
    assert!(
        matches!(&events[0], OutputEvent::Display { data, update: false, .. } if data["text/html"] == "<b>r</b>")
    );
    assert_eq!(events[1], OutputEvent::ClearOutput { wait: true });

    // IPython-style tracebacks.
    let err = shell
        .execute("def f(x):\n    return 1/x\nf(0)", false, true)
        .result
        .unwrap_err();
    assert_eq!(err.ename, "ZeroDivisionError");
    assert_eq!(err.evalue, "division by zero");
    let text = common::plain(&err.traceback.join("\n"));
    assert!(text.contains("Traceback (most recent call last)"), "{text}");
    assert!(text.contains("Cell In[7], line 3"), "{text}");
    assert!(text.contains("----> 2     return 1/x"), "{text}");
    let err = shell.execute("x = (", false, true).result.unwrap_err();
    assert_eq!(err.ename, "SyntaxError");

    // SystemExit does not end the process.
    let err = shell
        .execute("raise SystemExit(3)", false, true)
        .result
        .unwrap_err();
    assert_eq!(err.ename, "SystemExit");

    // input() goes to the sink, or fails clearly when the frontend can't answer.
    shell.execute("print(input('q'))", false, true);
    assert_eq!(sink.stdout(), "answer to q\n");
    let err = shell
        .execute("input('deny')", false, true)
        .result
        .unwrap_err();
    assert_eq!(err.ename, "StdinNotImplementedError");
    assert!(
        !err.traceback.join("\n").contains("rparallel_exec"),
        "internal frames hidden"
    );

    // Completion, inspection, is_complete.
    let c = shell.complete("import o; zi", 12);
    assert!(c.matches.contains(&"zip".to_string()), "{c:?}");
    assert_eq!(c.cursor_start, 10);
    let i = shell.inspect("len(", 4, 0);
    assert!(i.found);
    let text = common::plain(i.data["text/plain"].as_str().unwrap());
    assert!(text.contains("Signature: len(obj, /)"), "{text}");
    for (code, status) in [
        ("1", "complete"),
        ("def f(x):\n  return x\n\n", "complete"),
        ("for i in range(3):", "incomplete"),
        ("print('''a", "incomplete"),
        ("import = 7q", "invalid"),
    ] {
        assert_eq!(shell.is_complete(code).status, status, "{code:?}");
    }
    assert_eq!(
        shell.is_complete("for i in range(3):").indent.as_deref(),
        Some("    ")
    );
}

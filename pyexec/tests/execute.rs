//! The execute path (`execute::run`) with a real embedded interpreter and
//! the real publisher: what a cell publishes, in which order, and the
//! reply it gives. One interpreter per test binary, so one test, in order.

mod common;

use std::sync::Arc;

use rparallel_protocol::{Message, Session};
use rparallel_pyexec::execute::{self, Defaults, ExecuteRequest, Executed};
use rparallel_pyexec::{publish, IPythonLoad, PyShell, Sink, Stamp};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use zeromq::{ZmqMessage, ZmqResult};

/// The socket end of the publisher: keeps what is sent.
struct Wire(mpsc::UnboundedSender<ZmqMessage>);

#[async_trait::async_trait]
impl zeromq::SocketSend for Wire {
    async fn send(&mut self, message: ZmqMessage) -> ZmqResult<()> {
        let _ = self.0.send(message);
        Ok(())
    }
}

/// Outputs carry a mark, so the test sees the stamp was used.
struct TestStamp(Session);

impl Stamp for TestStamp {
    fn session(&self) -> &Session {
        &self.0
    }

    fn output(&self, msg_type: &str, content: Value, parent: Option<&Message>) -> Option<Message> {
        let mut message = self.0.message(msg_type, content, parent);
        message.metadata = json!({ "stamped": true });
        Some(message)
    }

    fn reply(&self, request: &Message, content: Value, started: &str) -> Message {
        let mut reply = self.0.reply(request, content);
        reply.metadata["started"] = started.into();
        reply
    }
}

struct Harness {
    shell: PyShell,
    sink: Arc<Sink>,
    stamp: Arc<TestStamp>,
    runtime: tokio::runtime::Runtime,
    wire: mpsc::UnboundedReceiver<ZmqMessage>,
}

impl Harness {
    /// Runs `content` as an execute_request; returns what it published
    /// (decoded, in order) and what it gave.
    fn run(&mut self, content: Value, defaults: Defaults) -> (Vec<Message>, Executed) {
        let session = &self.stamp.0;
        let request = Arc::new(session.message("execute_request", content, None));
        let cell = ExecuteRequest::parse(&request.content, defaults);
        let executed = execute::run(&self.shell, &self.sink, &*self.stamp, &request, &cell);
        self.runtime.block_on(self.sink.publisher().flush());
        let mut published = vec![];
        while let Ok(frames) = self.wire.try_recv() {
            let message = session
                .decode(frames)
                .expect("published messages are signed");
            assert_eq!(message.metadata["stamped"], true);
            let parent = message
                .parent_header
                .as_ref()
                .expect("outputs have a parent");
            assert_eq!(parent.msg_id, request.header.msg_id);
            published.push(message);
        }
        (published, executed)
    }
}

fn types(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(Message::msg_type).collect()
}

#[test]
fn the_execute_path() {
    common::start_python();
    let session = Session::new(b"key", "test");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (publisher, queue) = publish::channel(64);
    let (tx, wire) = mpsc::unbounded_channel();
    let stamp = Arc::new(TestStamp(session));
    {
        let _inside = runtime.enter();
        publish::spawn(queue, Wire(tx), stamp.clone());
    }
    let sink = Arc::new(Sink::new(publisher));
    let shell = PyShell::new(sink.clone(), IPythonLoad::AtStart).expect("core loads");
    let mut h = Harness {
        shell,
        sink,
        stamp,
        runtime,
        wire,
    };

    // A cell: its input, its output (prints coalesced), its result, then
    // the reply with the same count.
    let (out, done) = h.run(
        json!({"code": "print('a')\nprint('b')\n6 * 7"}),
        Defaults::KERNEL,
    );
    assert_eq!(types(&out), ["execute_input", "stream", "execute_result"]);
    assert_eq!(out[0].content["code"], "print('a')\nprint('b')\n6 * 7");
    assert_eq!(out[0].content["execution_count"], 1);
    assert_eq!(out[1].content["text"], "a\nb\n");
    assert_eq!(out[2].content["data"]["text/plain"], "42");
    assert_eq!(done.reply.msg_type(), "execute_reply");
    assert_eq!(done.reply.content["status"], "ok");
    assert_eq!(done.reply.content["execution_count"], 1);
    assert_eq!(done.reply.content["payload"], json!([]));
    assert!(done.reply.metadata["started"].is_string());
    assert_eq!(
        (done.execution_count, done.result_text.as_deref()),
        (1, Some("42"))
    );
    assert!(!done.abort_queue);

    // Magics are transformed on the way in: an unknown one is a UsageError.
    let (out, done) = h.run(json!({"code": "%nosuchmagic"}), Defaults::KERNEL);
    assert_eq!(types(&out), ["execute_input", "error"]);
    assert_eq!(done.reply.content["ename"], "UsageError");

    // A failing cell: the error is published and replied; with the
    // kernel's defaults the queue behind it is aborted, with the engine's
    // it is not, unless the request asks.
    let (out, done) = h.run(json!({"code": "1 / 0"}), Defaults::KERNEL);
    assert_eq!(types(&out), ["execute_input", "error"]);
    assert_eq!(out[1].content["ename"], "ZeroDivisionError");
    assert_eq!(done.reply.content["status"], "error");
    assert_eq!(done.reply.content["ename"], "ZeroDivisionError");
    assert_eq!(done.reply.content["execution_count"], 3);
    assert!(done.abort_queue);
    let (_, done) = h.run(json!({"code": "1 / 0"}), Defaults::ENGINE);
    assert!(!done.abort_queue);
    let (_, done) = h.run(
        json!({"code": "1 / 0", "stop_on_error": true}),
        Defaults::ENGINE,
    );
    assert!(done.abort_queue);

    // Silent: nothing published but output, nothing counted.
    let (out, done) = h.run(
        json!({"code": "print('quiet')\n5", "silent": true}),
        Defaults::KERNEL,
    );
    assert_eq!(types(&out), ["stream"]);
    assert_eq!(done.execution_count, 6);
    assert_eq!(done.result_text, None);

    // user_expressions are evaluated after a successful cell only.
    let (_, done) = h.run(
        json!({"code": "x = 20", "user_expressions": {"double": "x * 2"}}),
        Defaults::KERNEL,
    );
    let double = &done.reply.content["user_expressions"]["double"];
    assert_eq!(double["status"], "ok");
    assert_eq!(double["data"]["text/plain"], "40");
    let (_, done) = h.run(
        json!({"code": "1 / 0", "user_expressions": {"double": "x * 2"}}),
        Defaults::ENGINE,
    );
    assert_eq!(done.reply.content["user_expressions"], json!({}));

    // Without a stdin, input() fails the cell as in ipyparallel's engines.
    let (_, done) = h.run(json!({"code": "input('?')"}), Defaults::ENGINE);
    assert_eq!(done.reply.content["ename"], "StdinNotImplementedError");
}

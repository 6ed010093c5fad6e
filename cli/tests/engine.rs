//! The real engine (`rparallel engine`), driven by this test playing the
//! controller: a ZeroMQ ROUTER socket, signed messages, heartbeats answered
//! by hand. Python values are made and read with the project's `.venv`
//! Python and cloudpickle, as a client would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rparallel_protocol::{Message, Session};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Mutex};
use zeromq::{Endpoint, RouterSendHalf, RouterSocket, Socket, SocketRecv, SocketSend};

/// Every wait in this file is bounded by this (or less).
const WAIT: Duration = Duration::from_secs(30);
const CLIENT: &[u8] = b"client-1";

fn venv_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
}

/// The engine process; killed when the test ends, however it ends.
struct Engine(Child);

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Engine {
    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Serialises the value a snippet assigns to `value`, in a `__main__`-like
/// namespace (as a notebook cell would), with the client's own serialiser:
/// cloudpickle, protocol 5, out-of-band buffers as extra frames.
fn frames_of(snippet: &str) -> Vec<Bytes> {
    let script = "import sys, cloudpickle\n\
                  ns = {'__name__': '__main__'}\n\
                  exec(sys.argv[1], ns)\n\
                  bufs = []\n\
                  head = cloudpickle.dumps(ns['value'], protocol=5, buffer_callback=bufs.append)\n\
                  for f in [head] + [b.raw() for b in bufs]:\n    print(bytes(f).hex())\n";
    let out = Command::new(venv_python())
        .args(["-c", script, snippet])
        .output()
        .expect("the .venv Python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| Bytes::from(unhex(l)))
        .collect()
}

/// `repr()` of the value in `frames`.
fn repr_of(frames: &[Bytes]) -> String {
    use std::io::Write;
    let script = "import sys, pickle\n\
                  frames = [bytes.fromhex(l) for l in sys.stdin.read().split()]\n\
                  print(repr(pickle.loads(frames[0], buffers=frames[1:])), end='')\n";
    let mut child = Command::new(venv_python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the .venv Python runs");
    let text: String = frames.iter().map(|f| hex(f) + "\n").collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// This test as the controller. A background task reads the socket and
/// answers heartbeats (unless told not to), so the engine stays alive while
/// the test blocks running Python helpers.
struct Controller {
    send: Arc<Mutex<RouterSendHalf>>,
    incoming: mpsc::UnboundedReceiver<Message>,
    session: Session,
    engine: Option<Bytes>,
    answer_heartbeats: Arc<AtomicBool>,
    heartbeats: Arc<AtomicUsize>,
    _dir: TempDir,
    engine_file: PathBuf,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Controller {
    async fn bind(name: &str) -> Controller {
        let mut socket = RouterSocket::new();
        let port = match socket.bind("tcp://127.0.0.1:0").await.unwrap() {
            Endpoint::Tcp(_, port) => port,
            other => panic!("bound {other:?}"),
        };
        let key = format!("key-{}", std::process::id());
        let dir = std::env::temp_dir().join(format!(
            "rp-engine-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let engine_file = dir.join("rparallel-engine.json");
        let info = json!({
            "transport": "tcp", "ip": "127.0.0.1", "port": port, "key": key,
            "signature_scheme": "hmac-sha256", "controller_pid": std::process::id(),
            "cluster_id": "test",
        });
        // Private, as a controller writes it (engines refuse others).
        rparallel_protocol::connection::write_private(&engine_file, &info).unwrap();

        let session = Session::new(key.as_bytes(), "controller");
        let (send, mut recv) = socket.split();
        let send = Arc::new(Mutex::new(send));
        let (tx, incoming) = mpsc::unbounded_channel();
        let answer_heartbeats = Arc::new(AtomicBool::new(true));
        let heartbeats = Arc::new(AtomicUsize::new(0));
        let (s, a, h, out) = (
            session.clone(),
            answer_heartbeats.clone(),
            heartbeats.clone(),
            send.clone(),
        );
        tokio::spawn(async move {
            while let Ok(frames) = recv.recv().await {
                let message = s.decode(frames).expect("a signed, valid message");
                if message.msg_type() != "heartbeat" {
                    if tx.send(message).is_err() {
                        return;
                    }
                    continue;
                }
                h.fetch_add(1, Ordering::SeqCst);
                if a.load(Ordering::SeqCst) {
                    let mut reply = s.message("heartbeat_reply", json!({}), None);
                    reply.identities = vec![message.identities[0].clone()];
                    let _ = out.lock().await.send(s.encode(&reply)).await;
                }
            }
        });
        Controller {
            send,
            incoming,
            session,
            engine: None,
            answer_heartbeats,
            heartbeats,
            _dir: TempDir(dir),
            engine_file,
        }
    }

    fn start_engine(&self) -> Engine {
        Engine(
            Command::new(env!("CARGO_BIN_EXE_rparallel"))
                .arg("engine")
                .arg("--file")
                .arg(&self.engine_file)
                .arg("--python")
                .arg(venv_python())
                .stdin(Stdio::null())
                .spawn()
                .expect("the rparallel binary starts"),
        )
    }

    fn heartbeats(&self) -> usize {
        self.heartbeats.load(Ordering::SeqCst)
    }

    async fn send(&self, message: &Message) {
        self.send
            .lock()
            .await
            .send(self.session.encode(message))
            .await
            .unwrap();
    }

    /// The next message from the engine that is not a heartbeat.
    async fn recv(&mut self) -> Message {
        tokio::time::timeout(WAIT, self.incoming.recv())
            .await
            .expect("the engine answered in time")
            .expect("the socket reader runs")
    }

    /// Answers the engine's registration; returns its request.
    async fn register(&mut self, period: f64) -> Message {
        let request = self.recv().await;
        assert_eq!(request.msg_type(), "registration_request");
        assert!(request.content["uuid"].is_string());
        assert!(request.content["pid"].as_u64().unwrap() > 0);
        self.engine = Some(request.identities[0].clone());
        let reply = self.session.message(
            "registration_reply",
            json!({"status": "ok", "id": 0, "heartbeat_period": period}),
            Some(&request),
        );
        self.send(&reply).await;
        request
    }

    /// Sends a client's request through to the engine.
    async fn request(&mut self, msg_type: &str, content: Value, buffers: Vec<Bytes>) -> Message {
        let mut message = self.session.message(msg_type, content, None);
        message.identities = vec![
            self.engine.clone().expect("registered"),
            Bytes::from_static(CLIENT),
        ];
        message.buffers = buffers;
        self.send(&message).await;
        message
    }

    /// Everything the engine sends for `request` up to its reply (inclusive).
    async fn until_reply(&mut self, request: &Message) -> Vec<Message> {
        let reply_type = format!(
            "{}_reply",
            request.msg_type().strip_suffix("_request").unwrap()
        );
        let mut got = vec![];
        loop {
            let message = self.recv().await;
            let ours = message
                .parent_header
                .as_ref()
                .is_some_and(|p| p.msg_id == request.header.msg_id);
            if !ours {
                panic!(
                    "unexpected {} while waiting for {reply_type}",
                    message.msg_type()
                );
            }
            // Routed back to the client that asked, with the engine's id.
            assert_eq!(message.identities[1].as_ref(), CLIENT);
            assert_eq!(message.metadata["engine_id"], 0);
            let done = message.msg_type() == reply_type;
            got.push(message);
            if done {
                return got;
            }
        }
    }

    async fn round_trip(
        &mut self,
        msg_type: &str,
        content: Value,
        buffers: Vec<Bytes>,
    ) -> Vec<Message> {
        let request = self.request(msg_type, content, buffers).await;
        self.until_reply(&request).await
    }
}

fn types(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.msg_type()).collect()
}

fn stdout(messages: &[Message]) -> String {
    messages
        .iter()
        .filter(|m| m.msg_type() == "stream" && m.content["name"] == "stdout")
        .map(|m| m.content_str("text").to_string())
        .collect()
}

fn execute(code: &str) -> Value {
    json!({"code": code, "silent": false, "store_history": true})
}

/// A controller with a registered engine (heartbeat period 0.5 s).
async fn registered(name: &str) -> (Controller, Engine) {
    let mut controller = Controller::bind(name).await;
    let engine = controller.start_engine();
    controller.register(0.5).await;
    (controller, engine)
}

/// Runs `code` on the engine; it must succeed.
async fn define(controller: &mut Controller, code: &str) {
    let got = controller
        .round_trip("execute_request", execute(code), vec![])
        .await;
    assert_eq!(got.last().unwrap().content["status"], "ok", "{code}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_publishes_input_output_and_result_before_its_reply() {
    let (mut controller, _engine) = registered("execute").await;
    let got = controller
        .round_trip("execute_request", execute("print('hello')\n6 * 7"), vec![])
        .await;
    // No execute_input: the client that sent the code is the only reader.
    // print's two writes usually leave as one stream message; on a busy
    // machine they may leave as two.
    let streams = got.iter().take_while(|m| m.msg_type() == "stream").count();
    assert!((1..=2).contains(&streams), "{:?}", types(&got));
    assert_eq!(stdout(&got), "hello\n");
    let got = &got[streams - 1..];
    assert_eq!(types(got), ["stream", "execute_result", "execute_reply"]);
    assert_eq!(got[1].content["data"]["text/plain"], "42");
    assert_eq!(got[1].content["execution_count"], 1);
    assert_eq!(got[2].content["status"], "ok");
    assert_eq!(got[2].content["execution_count"], 1);
    assert!(got[2].metadata["started"].is_string() && got[2].metadata["completed"].is_string());

    // An error: the error output, then the error reply.
    let got = controller
        .round_trip("execute_request", execute("a = 41\n1 / 0"), vec![])
        .await;
    assert_eq!(types(&got), ["error", "execute_reply"]);
    let reply = &got[1].content;
    assert_eq!(reply["status"], "error");
    assert_eq!(reply["ename"], "ZeroDivisionError");
    assert_eq!(reply["execution_count"], 2);
    assert!(reply["traceback"].as_array().unwrap().len() > 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_runs_a_function_in_the_engine_namespace() {
    let apply_frames = frames_of("value = (lambda x, y=0: a + x + y, (1,), {'y': 0})");
    let (mut controller, _engine) = registered("apply").await;
    define(&mut controller, "a = 41").await;
    // A cloudpickled lambda sees the engine's globals.
    let got = controller
        .round_trip("apply_request", json!({}), apply_frames)
        .await;
    assert_eq!(types(&got), ["apply_reply"]);
    assert_eq!(got[0].content["status"], "ok");
    assert_eq!(repr_of(&got[0].buffers), "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_arrays_as_their_own_frames() {
    let push_frames =
        frames_of("import numpy as np\nvalue = {'arr': np.arange(1000000, dtype='float64')}");
    assert_eq!(push_frames.len(), 2, "the array travels as its own frame");
    let (mut controller, _engine) = registered("pushpull").await;
    define(&mut controller, "a = 41").await;

    // push a numpy array, use it, pull part of it back.
    let got = controller
        .round_trip("push_request", json!({}), push_frames)
        .await;
    assert_eq!(got[0].content["status"], "ok", "{:?}", got[0].content);
    let got = controller
        .round_trip(
            "execute_request",
            execute("arr[0] = 5\nprint(float(arr.sum()), arr.flags.writeable)"),
            vec![],
        )
        .await;
    assert_eq!(stdout(&got), "499999500005.0 True\n");
    let got = controller
        .round_trip("pull_request", json!({"names": ["arr[:3]", "a"]}), vec![])
        .await;
    assert_eq!(got[0].content["status"], "ok");
    assert_eq!(repr_of(&got[0].buffers), "[array([5., 1., 2.]), 41]");
    let got = controller
        .round_trip("pull_request", json!({"names": ["arr"]}), vec![])
        .await;
    assert_eq!(got[0].buffers.len(), 2, "the pulled array is its own frame");
    assert_eq!(got[0].buffers[1].len(), 8_000_000);

    // A missing name is a NameError.
    let got = controller
        .round_trip("pull_request", json!({"names": ["nope"]}), vec![])
        .await;
    assert_eq!(got[0].content["status"], "error");
    assert_eq!(got[0].content["ename"], "NameError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_stops_running_code_while_heartbeats_go_on() {
    let (mut controller, _engine) = registered("interrupt").await;
    define(&mut controller, "a = 41").await;
    let sleeping = controller
        .request(
            "execute_request",
            execute("import time\nprint('started', flush=True)\ntime.sleep(100)"),
            vec![],
        )
        .await;
    let started = controller.recv().await;
    assert_eq!(started.msg_type(), "stream");
    let beats = controller.heartbeats();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let interrupt = controller
        .request("interrupt_request", json!({}), vec![])
        .await;
    let asked = Instant::now();
    let reply = controller.recv().await;
    assert_eq!(reply.msg_type(), "interrupt_reply");
    assert_eq!(reply.parent_header.unwrap().msg_id, interrupt.header.msg_id);
    let got = controller.until_reply(&sleeping).await;
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(types(&got), ["error", "execute_reply"]);
    assert_eq!(got[1].content["ename"], "KeyboardInterrupt");
    assert!(
        controller.heartbeats() >= beats + 2,
        "heartbeats while busy: {}",
        controller.heartbeats() - beats
    );
    // Still usable.
    let got = controller
        .round_trip("execute_request", execute("a + 1"), vec![])
        .await;
    assert_eq!(got.last().unwrap().content["status"], "ok");
    assert_eq!(got[0].content["data"]["text/plain"], "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_drops_queued_requests_by_id_or_all() {
    let (mut controller, _engine) = registered("abort").await;
    define(&mut controller, "import time").await;
    // One queued request by id.
    let busy = controller
        .request("execute_request", execute("time.sleep(1)"), vec![])
        .await;
    let kept = controller
        .request("execute_request", execute("kept = 1"), vec![])
        .await;
    let dropped = controller
        .request("execute_request", execute("dropped = 1"), vec![])
        .await;
    let abort = controller
        .request(
            "abort_request",
            json!({"msg_ids": [dropped.header.msg_id]}),
            vec![],
        )
        .await;
    let mut replies = vec![];
    while replies.len() < 4 {
        let m = controller.recv().await;
        if m.msg_type().ends_with("_reply") {
            replies.push((m.parent_header.unwrap().msg_id, m.content["status"].clone()));
        }
    }
    let status_of = |id: &str| {
        replies
            .iter()
            .find(|(p, _)| p == id)
            .map(|(_, s)| s.clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(status_of(&dropped.header.msg_id), "aborted");
    assert_eq!(status_of(&abort.header.msg_id), "ok");
    assert_eq!(status_of(&busy.header.msg_id), "ok");
    assert_eq!(status_of(&kept.header.msg_id), "ok");
    let got = controller
        .round_trip(
            "execute_request",
            execute("('kept' in globals(), 'dropped' in globals())"),
            vec![],
        )
        .await;
    assert_eq!(got[0].content["data"]["text/plain"], "(True, False)");

    // Everything queued.
    let busy = controller
        .request("execute_request", execute("time.sleep(0.5)"), vec![])
        .await;
    let queued = controller
        .request(
            "apply_request",
            json!({}),
            frames_of("value = (len, ([],), {})"),
        )
        .await;
    controller
        .request("abort_request", json!({"msg_ids": []}), vec![])
        .await;
    let mut statuses = std::collections::HashMap::new();
    while statuses.len() < 3 {
        let m = controller.recv().await;
        if m.msg_type().ends_with("_reply") {
            statuses.insert(
                m.msg_type().to_string(),
                (m.parent_header.unwrap().msg_id, m.content["status"].clone()),
            );
        }
    }
    assert_eq!(
        statuses["apply_reply"],
        (queued.header.msg_id.clone(), json!("aborted"))
    );
    assert_eq!(statuses["abort_reply"].1, "ok");
    assert_eq!(
        statuses["execute_reply"],
        (busy.header.msg_id.clone(), json!("ok"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_empties_the_namespace() {
    let (mut controller, _engine) = registered("clear").await;
    define(&mut controller, "a = 41").await;
    let got = controller
        .round_trip("clear_request", json!({}), vec![])
        .await;
    assert_eq!(got[0].content["status"], "ok");
    let got = controller
        .round_trip("pull_request", json!({"names": ["a"]}), vec![])
        .await;
    assert_eq!(got[0].content["ename"], "NameError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_replies_unregisters_and_exits() {
    let (mut controller, mut engine) = registered("shutdown").await;
    let shutdown = controller
        .request("shutdown_request", json!({}), vec![])
        .await;
    let got = controller.until_reply(&shutdown).await;
    assert_eq!(got[0].content["status"], "ok");
    let bye = controller.recv().await;
    assert_eq!(bye.msg_type(), "unregistration");
    assert_eq!(bye.content["id"], 0);
    let status = engine
        .wait_exit(Duration::from_secs(5))
        .expect("the engine exits");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_exits_when_the_controller_goes_silent() {
    let mut controller = Controller::bind("silent").await;
    let mut engine = controller.start_engine();
    controller.register(0.2).await;
    let got = controller
        .round_trip("execute_request", execute("1"), vec![])
        .await;
    assert_eq!(got.last().unwrap().content["status"], "ok");
    controller.answer_heartbeats.store(false, Ordering::SeqCst);
    let started = Instant::now();
    let status = engine
        .wait_exit(Duration::from_secs(10))
        .expect("the engine noticed the silence");
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(!status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_shutdown_is_at_once() {
    let (mut controller, mut engine) = registered("stop").await;
    controller
        .request(
            "execute_request",
            execute("import time\nprint('started', flush=True)\ntime.sleep(100)"),
            vec![],
        )
        .await;
    assert_eq!(controller.recv().await.msg_type(), "stream");
    // The controller's own shutdown: no client identity.
    let mut stop = controller
        .session
        .message("shutdown_request", json!({}), None);
    stop.identities = vec![controller.engine.clone().unwrap()];
    controller.send(&stop).await;
    let asked = Instant::now();
    loop {
        let m = controller.recv().await;
        if m.msg_type() == "unregistration" {
            break;
        }
    }
    let status = engine
        .wait_exit(Duration::from_secs(5))
        .expect("the engine exits");
    assert!(asked.elapsed() < Duration::from_secs(4));
    assert!(status.success(), "{status:?}");
}

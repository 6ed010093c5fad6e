//! The controller, for real: `rparallel controller` in its own process, with
//! this test playing a client and an engine over real zeromq sockets.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rparallel_protocol::{Message, Session};
use serde_json::{json, Value};
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

struct Controller {
    child: Child,
    _dir: tempfile::TempDir,
    security: std::path::PathBuf,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_controller(heartbeat_timeout: f64) -> Controller {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_rparallel"))
        .args(["controller", "--profile", "t", "--heartbeat-period", "0.2"])
        .args(["--heartbeat-timeout", &heartbeat_timeout.to_string()])
        .env("RPARALLEL_DIR", dir.path())
        .spawn()
        .unwrap();
    let security = dir.path().join("profile_t/security");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !security.join("rparallel-engine.json").exists() {
        assert!(
            Instant::now() < deadline,
            "controller wrote no connection files"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    Controller {
        child,
        _dir: dir,
        security,
    }
}

fn read_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

struct Peer {
    socket: DealerSocket,
    session: Session,
}

impl Peer {
    async fn connect(file: &Path, key: Option<&str>) -> Peer {
        let info = read_file(file);
        let mut socket = DealerSocket::new();
        socket
            .connect(&format!(
                "tcp://{}:{}",
                info["ip"].as_str().unwrap(),
                info["port"]
            ))
            .await
            .unwrap();
        let key = key.unwrap_or(info["key"].as_str().unwrap()).to_string();
        Peer {
            socket,
            session: Session::new(key.as_bytes(), "test"),
        }
    }

    async fn send(&mut self, route: Option<&str>, msg_type: &str, content: Value) -> Message {
        let mut message = self.session.message(msg_type, content, None);
        message.buffers = vec![Bytes::from_static(b"\x00binary buffer\xff")];
        let mut frames = self.session.encode(&message);
        if let Some(route) = route {
            frames.push_front(Bytes::from(route.to_string()));
        }
        self.socket.send(frames).await.unwrap();
        message
    }

    /// A load-balanced apply_request with this metadata.
    async fn send_task(&mut self, metadata: Value) -> Message {
        let mut message = self.session.message("apply_request", json!({}), None);
        message.metadata = metadata;
        let mut frames = self.session.encode(&message);
        frames.push_front(Bytes::from_static(b"task"));
        self.socket.send(frames).await.unwrap();
        message
    }

    /// Registers as an engine; its id.
    async fn register(&mut self, uuid: &str) -> u64 {
        let hello = json!({"uuid": uuid, "pid": 1, "hostname": "elsewhere"});
        self.send(None, "registration_request", hello).await;
        self.recv_type("registration_reply").await.content["id"]
            .as_u64()
            .unwrap()
    }

    /// The next request routed to this engine (None within `wait`), with
    /// the client identity it came from.
    async fn next_request(&mut self, wait: Duration) -> Option<(Bytes, Message)> {
        let frames = tokio::time::timeout(wait, self.socket.recv())
            .await
            .ok()?
            .unwrap()
            .into_vec();
        let message = self
            .session
            .decode(ZmqMessage::try_from(frames[1..].to_vec()).unwrap())
            .unwrap();
        Some((frames[0].clone(), message))
    }

    /// Replies to a routed request.
    async fn reply(&mut self, client: Bytes, request: &Message) {
        let mut reply = self
            .session
            .message("apply_reply", json!({"status": "ok"}), Some(request));
        reply.identities = vec![client];
        let encoded = self.session.encode(&reply).into_vec();
        self.send_frames(encoded).await;
    }

    async fn send_frames(&mut self, frames: Vec<Bytes>) {
        self.socket
            .send(ZmqMessage::try_from(frames).unwrap())
            .await
            .unwrap();
    }

    /// The next message, or None after `wait`.
    async fn recv(&mut self, wait: Duration) -> Option<Message> {
        let frames = tokio::time::timeout(wait, self.socket.recv())
            .await
            .ok()?
            .unwrap();
        Some(self.session.decode(frames).expect("a valid signed message"))
    }

    async fn recv_type(&mut self, msg_type: &str) -> Message {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = self
                .recv(left)
                .await
                .unwrap_or_else(|| panic!("no {msg_type} within 5 s"));
            if message.msg_type() == msg_type {
                return message;
            }
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn controller_registers_routes_and_detects_death() {
    let controller = start_controller(1.0);
    let client_file = controller.security.join("rparallel-client.json");
    let engine_file = controller.security.join("rparallel-engine.json");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&client_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "connection files are private");
    assert_eq!(read_file(&client_file)["ip"], "127.0.0.1");

    let mut client = Peer::connect(&client_file, None).await;
    client.send(None, "connection_request", json!({})).await;
    let reply = client.recv_type("connection_reply").await;
    assert_eq!(reply.content["engines"], json!({}));

    // Nobody is registered: a request for engine 0 is answered, not lost.
    let request = client
        .send(Some("engine:0"), "execute_request", json!({"code": "1"}))
        .await;
    let unavailable = client.recv_type("engine_unavailable").await;
    assert_eq!(
        unavailable.parent_header.unwrap().msg_id,
        request.header.msg_id
    );

    // A forged message gets nothing.
    let mut forger = Peer::connect(&client_file, Some("not-the-key")).await;
    forger.send(None, "connection_request", json!({})).await;
    assert!(forger.recv(Duration::from_millis(500)).await.is_none());

    // An engine registers; the client hears of it.
    let mut engine = Peer::connect(&engine_file, None).await;
    let hello = json!({"uuid": "u-1", "pid": 4242, "hostname": "elsewhere"});
    engine.send(None, "registration_request", hello).await;
    let registered = engine.recv_type("registration_reply").await;
    assert_eq!(registered.content["id"], 0);
    let notice = client.recv_type("engine_registered").await;
    assert_eq!(notice.content["id"], 0);

    // Client → engine: routed with the client's identity in front, buffer intact.
    let request = client
        .send(Some("engine:0"), "apply_request", json!({}))
        .await;
    let frames = tokio::time::timeout(Duration::from_secs(5), engine.socket.recv())
        .await
        .unwrap()
        .unwrap()
        .into_vec();
    let client_identity = frames[0].clone();
    let routed = engine
        .session
        .decode(ZmqMessage::try_from(frames[1..].to_vec()).unwrap())
        .unwrap();
    assert_eq!(routed.header.msg_id, request.header.msg_id);
    assert_eq!(
        routed.buffers,
        vec![Bytes::from_static(b"\x00binary buffer\xff")]
    );

    // Engine → client: the reply comes back to the client that asked.
    let mut reply = engine
        .session
        .message("apply_reply", json!({"status": "ok"}), Some(&routed));
    reply.identities = vec![client_identity];
    reply.metadata = json!({"engine_id": 0});
    let encoded = engine.session.encode(&reply).into_vec();
    engine.send_frames(encoded).await;
    let got = client.recv_type("apply_reply").await;
    assert_eq!(got.parent_header.unwrap().msg_id, request.header.msg_id);
    assert_eq!(got.metadata["engine_id"], 0);

    // The engine goes silent: declared dead after the heartbeat timeout.
    let started = Instant::now();
    let died = client.recv_type("engine_died").await;
    assert_eq!(died.content["id"], 0);
    assert!(died.content["reason"]
        .as_str()
        .unwrap()
        .contains("heartbeat"));
    assert!(started.elapsed() < Duration::from_secs(4));

    // A client can stop the whole cluster.
    client
        .send(None, "shutdown_request", json!({"hub": true}))
        .await;
    client.recv_type("shutdown_reply").await;
    let mut controller = controller;
    let deadline = Instant::now() + Duration::from_secs(5);
    while controller.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "controller did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!controller.security.join("rparallel-client.json").exists());
}

#[tokio::test(flavor = "current_thread")]
async fn controller_schedules_tasks_on_engines_with_room() {
    let controller = start_controller(1.5);
    let client_file = controller.security.join("rparallel-client.json");
    let engine_file = controller.security.join("rparallel-engine.json");
    let mut client = Peer::connect(&client_file, None).await;
    client.send(None, "connection_request", json!({})).await;
    client.recv_type("connection_reply").await;
    let mut e0 = Peer::connect(&engine_file, None).await;
    let mut e1 = Peer::connect(&engine_file, None).await;
    assert_eq!(e0.register("u0").await, 0);
    assert_eq!(e1.register("u1").await, 1);
    let short = Duration::from_millis(300);

    // Three tasks, two engines with room for one each: one task each,
    // then (all busy) the third is prefetched to one of them, behind its
    // first; nothing more comes.
    let a = client.send_task(json!({})).await;
    let b = client.send_task(json!({})).await;
    let c = client.send_task(json!({})).await;
    let (from0, first0) = e0.next_request(Duration::from_secs(5)).await.unwrap();
    let (from1, first1) = e1.next_request(Duration::from_secs(5)).await.unwrap();
    let mut firsts = [first0.header.msg_id.clone(), first1.header.msg_id.clone()];
    firsts.sort();
    let mut expected = [a.header.msg_id.clone(), b.header.msg_id.clone()];
    expected.sort();
    assert_eq!(firsts, expected, "one each, in order");
    let second0 = e0.next_request(short).await;
    let second1 = e1.next_request(short).await;
    assert!(
        second0.is_some() != second1.is_some(),
        "exactly one engine gets the third, prefetched"
    );
    let (holder, from, first, prefetched) = match second0 {
        Some((_, got)) => (&mut e0, from0, first0, got),
        None => (&mut e1, from1, first1, second1.unwrap().1),
    };
    assert_eq!(prefetched.header.msg_id, c.header.msg_id);
    assert!(
        holder.next_request(short).await.is_none(),
        "hwm 1 + one prefetched"
    );

    // The holder finishes its first: the reply reaches the client; the
    // prefetched task is now the one it runs.
    holder.reply(from.clone(), &first).await;
    let reply = client.recv_type("apply_reply").await;
    assert_eq!(reply.parent_header.unwrap().msg_id, first.header.msg_id);
    let other_task = if first.header.msg_id == a.header.msg_id {
        &b
    } else {
        &a
    };

    // Targets no live engine has: failed at once.
    let nowhere = client.send_task(json!({"targets": [7]})).await;
    let failed = client.recv_type("engine_unavailable").await;
    assert_eq!(failed.parent_header.unwrap().msg_id, nowhere.header.msg_id);

    // Nobody heartbeats here: after the timeout both engines are dead.
    // Their running tasks fail naming the engine; the waiting task that may
    // run only on engine 1 fails as one that can never run.
    let waiting = client.send_task(json!({"targets": [1]})).await;
    let mut reasons = std::collections::HashMap::new();
    for _ in 0..3 {
        let lost = client.recv_type("engine_unavailable").await;
        let reason = lost.content["reason"].as_str().unwrap().to_string();
        reasons.insert(lost.parent_header.unwrap().msg_id, reason);
    }
    assert!(reasons[&other_task.header.msg_id].contains("died while running task"));
    assert!(reasons[&c.header.msg_id].contains("died while running task"));
    assert!(reasons[&waiting.header.msg_id].contains("no engine it may run on"));
    drop(e0);
}

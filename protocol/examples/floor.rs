//! The floor under rparallel's small calls on this machine: the same path
//! (client → controller → engine → controller → client, the zeromq crate
//! over TCP on 127.0.0.1, one current-thread runtime per process, as
//! rparallel's), with no Python, no signing, no JSON and one thread per
//! process. What a call costs here, any design with a controller in the
//! middle pays too.
//!
//!     cargo run --release -p rparallel-protocol --example floor [-- --json FILE]
//!
//! Also measures the wake-up of a sleeping thread (two threads passing a
//! token back and forth), the unit the round trips are made of.

use std::time::{Duration, Instant};

use bytes::Bytes;
use zeromq::{DealerSocket, RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

const ENGINES: usize = 4;
/// A request's size: about what `apply_sync(lambda: None)` sends.
const PAYLOAD: usize = 700;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("relay") => run(relay(args[2].clone(), args[3].clone())),
        Some("echo") => run(echo(args[2].clone())),
        _ => measure(
            args.iter()
                .position(|a| a == "--json")
                .map(|i| args[i + 1].clone()),
        ),
    }
}

fn run(future: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The controller's part: clients send [target, payload]; the relay
/// forwards [client, payload] to engine `target`, and an engine's
/// [client, payload] back to that client.
async fn relay(clients: String, engines: String) {
    let mut front = RouterSocket::new();
    front.bind(&clients).await.expect("bind clients");
    let mut back = RouterSocket::new();
    back.bind(&engines).await.expect("bind engines");
    let mut ids: Vec<Bytes> = Vec::new();
    loop {
        tokio::select! {
            m = front.recv() => {
                let Ok(m) = m else { return };
                let mut frames = m.into_vecdeque();
                let client = frames.pop_front().expect("identity");
                let target = frames.pop_front().expect("target")[0] as usize;
                let Some(engine) = ids.get(target).cloned() else { continue };
                frames.push_front(client);
                frames.push_front(engine);
                let _ = back.send(ZmqMessage::try_from(frames).expect("frames")).await;
            }
            m = back.recv() => {
                let Ok(m) = m else { return };
                let mut frames = m.into_vecdeque();
                let engine = frames.pop_front().expect("identity");
                if frames.len() == 1 {
                    ids.push(engine);
                    continue;
                }
                let _ = front.send(ZmqMessage::try_from(frames).expect("frames")).await;
            }
        }
    }
}

/// The engine's part: registers, then sends every message back.
async fn echo(engines: String) {
    let mut socket = DealerSocket::new();
    socket.connect(&engines).await.expect("connect");
    socket
        .send(ZmqMessage::from("hello"))
        .await
        .expect("register");
    while let Ok(m) = socket.recv().await {
        if socket.send(m).await.is_err() {
            return;
        }
    }
}

fn request(target: usize) -> ZmqMessage {
    let frames = vec![
        Bytes::from(vec![target as u8]),
        Bytes::from(vec![b'x'; PAYLOAD]),
    ];
    ZmqMessage::try_from(frames).expect("frames")
}

struct Row {
    name: &'static str,
    value: f64,
    unit: &'static str,
}

fn measure(json: Option<String>) {
    let me = std::env::current_exe().expect("own path");
    let clients = format!("tcp://127.0.0.1:{}", free_port());
    let engines = format!("tcp://127.0.0.1:{}", free_port());
    let mut children = vec![std::process::Command::new(&me)
        .args(["relay", &clients, &engines])
        .spawn()
        .expect("relay starts")];
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..ENGINES {
        children.push(
            std::process::Command::new(&me)
                .args(["echo", &engines])
                .spawn()
                .expect("echo starts"),
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut rows = vec![Row {
        name: "thread wake-up (half a two-thread round trip)",
        value: wake_up_us(),
        unit: "us",
    }];
    run(async {
        let mut socket = DealerSocket::new();
        socket.connect(&clients).await.expect("connect");
        round_trip(&mut socket, 1, 500).await;
        let one = round_trip(&mut socket, 1, 5000).await;
        let four = round_trip(&mut socket, ENGINES, 2000).await;
        rows.push(Row {
            name: "round trip to 1 engine through the controller",
            value: one,
            unit: "us",
        });
        rows.push(Row {
            name: "round trip to 4 engines through the controller",
            value: four,
            unit: "us",
        });
        let tasks = 20_000;
        let start = Instant::now();
        let mut sent = 0;
        let mut received = 0;
        while received < tasks {
            // At most 1,000 in flight, as a client's credit would allow.
            while sent < tasks && sent - received < 1000 {
                socket.send(request(sent % ENGINES)).await.expect("send");
                sent += 1;
            }
            socket.recv().await.expect("reply");
            received += 1;
        }
        rows.push(Row {
            name: "throughput over 4 engines",
            value: tasks as f64 / start.elapsed().as_secs_f64(),
            unit: "msgs/s",
        });
    });
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    for row in &rows {
        println!("{:>12.1} {:<7} {}", row.value, row.unit, row.name);
    }
    if let Some(path) = json {
        let rows: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{{\"name\": {:?}, \"value\": {:.2}, \"unit\": {:?}}}",
                    r.name, r.value, r.unit
                )
            })
            .collect();
        std::fs::write(&path, format!("[{}]\n", rows.join(", "))).expect("write json");
    }
}

/// The median time to send one request to each of `targets` engines and
/// get all the replies.
async fn round_trip(socket: &mut DealerSocket, targets: usize, calls: usize) -> f64 {
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        for t in 0..targets {
            socket.send(request(t)).await.expect("send");
        }
        for _ in 0..targets {
            socket.recv().await.expect("reply");
        }
        times.push(start.elapsed());
    }
    times.sort();
    times[calls / 2].as_secs_f64() * 1e6
}

/// Half the median round trip of a token between two threads that sleep
/// while waiting: one wake-up of a sleeping thread.
fn wake_up_us() -> f64 {
    let (to_peer, from_main) = std::sync::mpsc::channel::<()>();
    let (to_main, from_peer) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        while from_main.recv().is_ok() {
            if to_main.send(()).is_err() {
                return;
            }
        }
    });
    let mut times: Vec<Duration> = (0..20_000)
        .map(|_| {
            let start = Instant::now();
            to_peer.send(()).expect("peer");
            from_peer.recv().expect("peer");
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e6 / 2.0
}

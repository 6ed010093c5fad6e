//! The engine's tasks: connect the DEALER to the controller's engine port,
//! register, then run the reader, the sender, the heartbeat and the
//! scheduler on the process's current-thread tokio runtime (the fastest
//! zeromq round trip on this kind of machine), which the Python thread
//! drives while it waits and the I/O thread while it runs code
//! (`rparallel_driver`). Nothing here takes the GIL.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rparallel_cluster::process::hostname;
use rparallel_cluster::ConnectionFile;
use rparallel_protocol::reader::spawn_reader;
use rparallel_protocol::{Message, Session};
use rparallel_pyexec::process::{self, Ready};
use rparallel_pyexec::{publish, Publisher};
use serde_json::json;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend};

use crate::heartbeat::{self, Liveness};
use crate::python::PythonHandle;
use crate::queue::Queue;
use crate::scheduler::{Exit, Scheduler};
use crate::stamp::Stamp;

/// How long to wait for the controller to accept and answer registration.
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(60);
/// The heartbeat period when the controller does not say.
const DEFAULT_PERIOD: f64 = 2.0;

/// What the I/O thread needs; the Python thread keeps the other ends.
pub struct Io {
    pub info: ConnectionFile,
    pub session: Session,
    pub uuid: String,
    /// The launch tag and the rank to ask for as engine id (see
    /// `EngineOptions`).
    pub launch: Option<String>,
    pub rank: Option<u32>,
    pub publisher: Publisher,
    pub queue: publish::Queue,
    pub python: PythonHandle,
}

/// Registers and serves until shutdown; exits the process when done.
pub async fn serve(io: Io, ready: Ready<Arc<Stamp>>) {
    let endpoint = io.info.endpoint();
    let registered =
        tokio::time::timeout(REGISTRATION_TIMEOUT, register(&endpoint, &io.session, &io))
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "the controller at {endpoint} did not answer registration within {}s",
                    REGISTRATION_TIMEOUT.as_secs()
                ))
            });
    let (socket, engine_id, period) = match registered {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    tracing::info!("registered with {endpoint} as engine {engine_id}");
    let stamp = Arc::new(Stamp {
        session: io.session.clone(),
        engine_id,
        uuid: io.uuid.clone(),
    });
    let (send_half, recv_half) = socket.split();
    publish::spawn(io.queue, send_half, stamp.clone());
    let liveness = Liveness::default();
    let heard = liveness.clone();
    let incoming = spawn_reader(recv_half, io.session.clone(), "engine", move || {
        heard.heard()
    });
    let scheduler = Scheduler {
        incoming,
        python: io.python.clone(),
        publisher: io.publisher.clone(),
        stamp: stamp.clone(),
        queue: Queue::default(),
    };
    crate::bound::register(tokio::runtime::Handle::current(), io.python.clone());
    let _ = ready.send(Ok(stamp.clone()));

    let beat = heartbeat::run(period, liveness, io.publisher.clone(), &stamp);
    tokio::select! {
        exit = scheduler.run() => {
            if exit == Exit::Lost {
                tracing::warn!("the engine's Python thread or socket is gone; exiting");
            }
        }
        _ = beat => {
            eprintln!(
                "rparallel engine {engine_id}: no word from the controller for {} heartbeats; exiting",
                heartbeat::MISSED_PERIODS
            );
            std::process::exit(1);
        }
    }
    io.publisher
        .send(stamp.own("unregistration", json!({ "id": engine_id })))
        .await;
    process::stop(&io.python, &io.publisher).await
}

/// Connects and registers: the socket, the engine id and the heartbeat period.
async fn register(
    endpoint: &str,
    session: &Session,
    io: &Io,
) -> anyhow::Result<(DealerSocket, u64, Duration)> {
    let mut socket = DealerSocket::new();
    socket
        .connect(endpoint)
        .await
        .with_context(|| format!("cannot connect to the controller at {endpoint}"))?;
    let request = session.message(
        "registration_request",
        json!({
            "uuid": io.uuid,
            "pid": std::process::id(),
            "hostname": hostname(),
            "host": rparallel_protocol::shm::host_id(),
            "launch": io.launch,
            "rank": io.rank,
        }),
        None,
    );
    socket
        .send(session.encode(&request))
        .await
        .with_context(|| format!("cannot register with the controller at {endpoint}"))?;
    loop {
        let frames = socket
            .recv()
            .await
            .context("lost the controller during registration")?;
        let reply = match session.decode(frames) {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!("dropped a message during registration: {e}");
                continue;
            }
        };
        if reply.msg_type() != "registration_reply" {
            tracing::warn!("ignored {} before registration", reply.msg_type());
            continue;
        }
        return registration(&reply).map(|(id, period)| (socket, id, period));
    }
}

/// The id and heartbeat period of a registration reply, or why it refused.
fn registration(reply: &Message) -> anyhow::Result<(u64, Duration)> {
    let content = &reply.content;
    if content["status"] != "ok" {
        let reason = content["reason"]
            .as_str()
            .or_else(|| content["evalue"].as_str())
            .unwrap_or("no reason given");
        anyhow::bail!("the controller refused registration: {reason}");
    }
    let id = content["id"]
        .as_u64()
        .context("registration_reply has no engine id")?;
    let period = content["heartbeat_period"]
        .as_f64()
        .filter(|p| p.is_finite() && *p > 0.0)
        .unwrap_or(DEFAULT_PERIOD);
    Ok((id, Duration::from_secs_f64(period)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(content: serde_json::Value) -> Message {
        Session::new(b"", "c").message("registration_reply", content, None)
    }

    #[test]
    fn registration_reply_gives_id_and_period() {
        let (id, period) = registration(&reply(
            json!({"status": "ok", "id": 4, "heartbeat_period": 0.5}),
        ))
        .unwrap();
        assert_eq!((id, period), (4, Duration::from_millis(500)));
        let (_, period) = registration(&reply(json!({"status": "ok", "id": 0}))).unwrap();
        assert_eq!(period, Duration::from_secs(2));
    }

    #[test]
    fn refused_or_malformed_registration_is_an_error() {
        let err = registration(&reply(json!({"status": "error", "reason": "full"}))).unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
        assert!(registration(&reply(json!({"status": "ok"}))).is_err());
    }
}

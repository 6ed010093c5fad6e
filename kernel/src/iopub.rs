//! The IOPub publisher: one task owns the PUB socket, so everything the
//! kernel broadcasts goes out in the order it was produced. Consecutive
//! stream writes are coalesced: `print` arrives as several writes, and a
//! tight loop of prints should not become one message per line.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rparallel_protocol::{Message, Session};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use zeromq::{PubSocket, SocketSend};

/// How long a stream chunk may wait for more text before it is sent.
const COALESCE_WINDOW: Duration = Duration::from_millis(5);
/// A coalesced stream message never grows past this.
const MAX_STREAM_CHUNK: usize = 1 << 20;

pub type Parent = Option<Arc<Message>>;

enum Publish {
    Stream {
        name: String,
        text: String,
        parent: Parent,
    },
    Message {
        msg_type: &'static str,
        content: Value,
        parent: Parent,
    },
    Flush(oneshot::Sender<()>),
}

/// A cheap handle to the publisher.
#[derive(Clone)]
pub struct Iopub {
    tx: mpsc::Sender<Publish>,
}

impl Iopub {
    pub async fn publish(&self, msg_type: &'static str, content: Value, parent: Parent) {
        let _ = self
            .tx
            .send(Publish::Message {
                msg_type,
                content,
                parent,
            })
            .await;
    }

    /// From a thread outside the runtime (the Python thread).
    pub fn blocking_publish(&self, msg_type: &'static str, content: Value, parent: Parent) {
        let _ = self.tx.blocking_send(Publish::Message {
            msg_type,
            content,
            parent,
        });
    }

    pub fn blocking_stream(&self, name: String, text: String, parent: Parent) {
        let _ = self
            .tx
            .blocking_send(Publish::Stream { name, text, parent });
    }

    pub async fn status(&self, state: &str, parent: Parent) {
        self.publish("status", json!({ "execution_state": state }), parent)
            .await;
    }

    /// Waits until everything published so far has been handed to the socket.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Publish::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the publisher task for `socket`.
pub fn spawn(socket: PubSocket, session: Session) -> Iopub {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(Publisher { socket, session }.run(rx));
    Iopub { tx }
}

struct PendingStream {
    name: String,
    text: String,
    parent: Parent,
    deadline: Instant,
}

struct Publisher {
    socket: PubSocket,
    session: Session,
}

fn same_parent(a: &Parent, b: &Parent) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.header.msg_id == b.header.msg_id,
        (None, None) => true,
        _ => false,
    }
}

impl Publisher {
    async fn run(mut self, mut rx: mpsc::Receiver<Publish>) {
        let mut pending: Option<PendingStream> = None;
        loop {
            let next = match &pending {
                Some(p) => match tokio::time::timeout_at(p.deadline, rx.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        self.send_stream(pending.take()).await;
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            match next {
                None => {
                    self.send_stream(pending.take()).await;
                    return;
                }
                Some(Publish::Stream { name, text, parent }) => {
                    if let Some(p) = &mut pending {
                        if p.name == name
                            && same_parent(&p.parent, &parent)
                            && p.text.len() + text.len() <= MAX_STREAM_CHUNK
                        {
                            p.text.push_str(&text);
                            continue;
                        }
                    }
                    self.send_stream(pending.take()).await;
                    pending = Some(PendingStream {
                        name,
                        text,
                        parent,
                        deadline: Instant::now() + COALESCE_WINDOW,
                    });
                }
                Some(Publish::Message {
                    msg_type,
                    content,
                    parent,
                }) => {
                    self.send_stream(pending.take()).await;
                    self.send(msg_type, content, parent.as_deref()).await;
                }
                Some(Publish::Flush(done)) => {
                    self.send_stream(pending.take()).await;
                    let _ = done.send(());
                }
            }
        }
    }

    async fn send_stream(&mut self, pending: Option<PendingStream>) {
        if let Some(p) = pending {
            let content = json!({ "name": p.name, "text": p.text });
            self.send("stream", content, p.parent.as_deref()).await;
        }
    }

    async fn send(&mut self, msg_type: &str, content: Value, parent: Option<&Message>) {
        let mut message = self.session.message(msg_type, content, parent);
        message.identities = vec![Bytes::from(format!(
            "kernel.{}.{msg_type}",
            self.session.id
        ))];
        if let Err(e) = self.socket.send(self.session.encode(&message)).await {
            tracing::warn!("iopub: could not publish {msg_type}: {e}");
        }
    }
}

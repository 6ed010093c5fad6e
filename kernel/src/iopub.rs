//! The IOPub publisher: one task owns the PUB socket, so everything the
//! kernel broadcasts goes out in the order it was produced. Stream writes
//! are coalesced (`rparallel_pyexec::coalesce`).

use std::sync::Arc;

use bytes::Bytes;
use rparallel_protocol::{Message, Session};
use rparallel_pyexec::coalesce::{Coalescer, Next, StreamChunk};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use zeromq::{PubSocket, SocketSend};

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

struct Publisher {
    socket: PubSocket,
    session: Session,
}

impl Publisher {
    async fn run(mut self, mut rx: mpsc::Receiver<Publish>) {
        let mut streams = Coalescer::default();
        loop {
            match streams.next(&mut rx).await {
                Next::Closed => {
                    self.send_stream(streams.take()).await;
                    return;
                }
                Next::Chunk(chunk) => self.send_stream(Some(chunk)).await,
                Next::Item(Publish::Stream { name, text, parent }) => {
                    let request = parent
                        .as_ref()
                        .map_or("", |p| p.header.msg_id.as_str())
                        .to_string();
                    let done = streams.push(name, text, &request, parent);
                    self.send_stream(done).await;
                }
                Next::Item(Publish::Message {
                    msg_type,
                    content,
                    parent,
                }) => {
                    self.send_stream(streams.take()).await;
                    self.send(msg_type, content, parent.as_deref()).await;
                }
                Next::Item(Publish::Flush(done)) => {
                    self.send_stream(streams.take()).await;
                    let _ = done.send(());
                }
            }
        }
    }

    async fn send_stream(&mut self, chunk: Option<StreamChunk<Parent>>) {
        if let Some(c) = chunk {
            let content = json!({ "name": c.name, "text": c.text });
            self.send("stream", content, c.parent.as_deref()).await;
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

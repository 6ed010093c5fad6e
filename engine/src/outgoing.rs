//! Everything the engine sends goes through one task that owns the DEALER's
//! send half, so a request's outputs always leave before its reply. The
//! channel is bounded: a cell printing faster than the controller reads
//! blocks in `print` (backpressure) instead of growing memory. Consecutive
//! stream writes of one request are coalesced, as the kernel's IOPub does:
//! `print` arrives as several writes.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use zeromq::{DealerSendHalf, SocketSend};

use crate::stamp::{Parent, Stamp};
use rparallel_protocol::Message;

/// How long a stream chunk may wait for more text before it is sent.
const COALESCE_WINDOW: Duration = Duration::from_millis(5);
/// A coalesced stream message never grows past this.
const MAX_STREAM_CHUNK: usize = 1 << 20;
/// Messages waiting for the socket at most.
const CAPACITY: usize = 256;

enum Send {
    Stream {
        name: String,
        text: String,
        parent: Parent,
    },
    /// An output of a request, stamped here (the Python side's sink is made
    /// before the engine has an id).
    Output {
        msg_type: &'static str,
        content: Value,
        parent: Parent,
    },
    Message(Box<Message>),
    Flush(oneshot::Sender<()>),
}

/// A cheap handle to the sender task.
#[derive(Clone)]
pub struct Outgoing {
    tx: mpsc::Sender<Send>,
}

/// The receiving end, handed to [`spawn`] once the socket exists.
pub struct OutgoingQueue {
    rx: mpsc::Receiver<Send>,
}

/// A bounded channel; messages wait in it until [`spawn`] starts sending.
pub fn channel() -> (Outgoing, OutgoingQueue) {
    let (tx, rx) = mpsc::channel(CAPACITY);
    (Outgoing { tx }, OutgoingQueue { rx })
}

impl Outgoing {
    pub async fn send(&self, message: Message) {
        let _ = self.tx.send(Send::Message(Box::new(message))).await;
    }

    /// From a thread outside the runtime (the Python thread): blocks while
    /// the queue is full.
    pub fn blocking_send(&self, message: Message) {
        let _ = self.tx.blocking_send(Send::Message(Box::new(message)));
    }

    pub fn blocking_output(&self, msg_type: &'static str, content: Value, parent: Parent) {
        let _ = self.tx.blocking_send(Send::Output {
            msg_type,
            content,
            parent,
        });
    }

    pub fn blocking_stream(&self, name: String, text: String, parent: Parent) {
        let _ = self.tx.blocking_send(Send::Stream { name, text, parent });
    }

    /// Waits until everything queued so far has been handed to the socket.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Send::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the sender task on `socket`.
pub fn spawn(queue: OutgoingQueue, socket: DealerSendHalf, stamp: Stamp) {
    tokio::spawn(Sender { socket, stamp }.run(queue.rx));
}

struct PendingStream {
    name: String,
    text: String,
    parent: Parent,
    deadline: Instant,
}

struct Sender {
    socket: DealerSendHalf,
    stamp: Stamp,
}

impl Sender {
    async fn run(mut self, mut rx: mpsc::Receiver<Send>) {
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
                Some(Send::Stream { name, text, parent }) => {
                    if let Some(p) = &mut pending {
                        if p.name == name
                            && p.parent.header.msg_id == parent.header.msg_id
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
                Some(Send::Output {
                    msg_type,
                    content,
                    parent,
                }) => {
                    self.send_stream(pending.take()).await;
                    let message = self.stamp.output(msg_type, content, &parent);
                    self.send(&message).await;
                }
                Some(Send::Message(message)) => {
                    self.send_stream(pending.take()).await;
                    self.send(&message).await;
                }
                Some(Send::Flush(done)) => {
                    self.send_stream(pending.take()).await;
                    let _ = done.send(());
                }
            }
        }
    }

    async fn send_stream(&mut self, pending: Option<PendingStream>) {
        if let Some(p) = pending {
            let content = json!({ "name": p.name, "text": p.text });
            let message = self.stamp.output("stream", content, &p.parent);
            self.send(&message).await;
        }
    }

    async fn send(&mut self, message: &Message) {
        if let Err(e) = self.socket.send(self.stamp.session.encode(message)).await {
            // No controller: the heartbeat notices and ends the engine.
            tracing::info!("could not send {}: {e}", message.msg_type());
        }
    }
}

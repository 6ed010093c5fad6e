//! Everything the engine sends goes through one task that owns the DEALER's
//! send half, so a request's outputs always leave before its reply. The
//! channel is bounded: a cell printing faster than the controller reads
//! blocks in `print` (backpressure) instead of growing memory. Stream
//! writes are coalesced (`rparallel_pyexec::coalesce`), as in the kernel.

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use zeromq::{DealerSendHalf, SocketSend};

use crate::stamp::{Parent, Stamp};
use rparallel_protocol::Message;
use rparallel_pyexec::coalesce::{Coalescer, Next, StreamChunk};

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

struct Sender {
    socket: DealerSendHalf,
    stamp: Stamp,
}

impl Sender {
    async fn run(mut self, mut rx: mpsc::Receiver<Send>) {
        let mut streams = Coalescer::default();
        loop {
            match streams.next(&mut rx).await {
                Next::Closed => {
                    self.send_stream(streams.take()).await;
                    return;
                }
                Next::Chunk(chunk) => self.send_stream(Some(chunk)).await,
                Next::Item(Send::Stream { name, text, parent }) => {
                    let request = parent.header.msg_id.clone();
                    let done = streams.push(name, text, &request, parent);
                    self.send_stream(done).await;
                }
                Next::Item(Send::Output {
                    msg_type,
                    content,
                    parent,
                }) => {
                    self.send_stream(streams.take()).await;
                    let message = self.stamp.output(msg_type, content, &parent);
                    self.send(&message).await;
                }
                Next::Item(Send::Message(message)) => {
                    self.send_stream(streams.take()).await;
                    self.send(&message).await;
                }
                Next::Item(Send::Flush(done)) => {
                    self.send_stream(streams.take()).await;
                    let _ = done.send(());
                }
            }
        }
    }

    async fn send_stream(&mut self, chunk: Option<StreamChunk<Parent>>) {
        if let Some(c) = chunk {
            let content = json!({ "name": c.name, "text": c.text });
            let message = self.stamp.output("stream", content, &c.parent);
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

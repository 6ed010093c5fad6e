//! The one publisher of a kernel's or an engine's messages: a task owns the
//! socket's send half, so everything leaves in the order it was produced
//! (a request's outputs before its reply). Stream writes are coalesced
//! ([`crate::coalesce`]). The channel is bounded: a cell printing faster
//! than the socket drains blocks in `print` (backpressure) instead of
//! growing memory.
//!
//! Where an output goes depends on the process, which says so through its
//! [`Stamp`]: the kernel publishes on IOPub under a topic, an engine sends
//! it back to the client that asked, with its engine id.

use std::sync::Arc;

use bytes::Bytes;

use rparallel_protocol::{Message, Session};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use zeromq::SocketSend;

use crate::coalesce::{Coalescer, Next, StreamChunk};

/// The request an output or reply belongs to.
pub type Parent = Arc<Message>;

/// How a process addresses what it publishes.
pub trait Stamp: Send + Sync + 'static {
    /// Signs what is sent.
    fn session(&self) -> &Session;
    /// An output (`stream`, `display_data`, `execute_result`, `status`…) of
    /// `parent`; None when it has nowhere to go.
    fn output(&self, msg_type: &str, content: Value, parent: Option<&Message>) -> Option<Message>;
    /// The reply to `request`; `started` is when serving it began.
    fn reply(&self, request: &Message, content: Value, started: &str) -> Message;
}

enum Item {
    Stream {
        name: String,
        text: String,
        parent: Option<Parent>,
    },
    Output {
        msg_type: &'static str,
        content: Value,
        /// Null, or the message's metadata (a comm's).
        metadata: Value,
        buffers: Vec<Bytes>,
        parent: Option<Parent>,
    },
    Message(Box<Message>),
    Flush(oneshot::Sender<()>),
}

/// A cheap handle to the publisher task.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Item>,
}

/// The receiving end, handed to [`spawn`] once the socket exists; until
/// then messages wait in the channel.
pub struct Queue {
    rx: mpsc::Receiver<Item>,
}

/// A publisher holding at most `capacity` messages not yet sent.
pub fn channel(capacity: usize) -> (Publisher, Queue) {
    let (tx, rx) = mpsc::channel(capacity);
    (Publisher { tx }, Queue { rx })
}

impl Publisher {
    /// An output of `parent`, stamped by the process's [`Stamp`].
    pub async fn output(&self, msg_type: &'static str, content: Value, parent: Option<Parent>) {
        let _ = self
            .tx
            .send(Item::Output {
                msg_type,
                content,
                metadata: Value::Null,
                buffers: Vec::new(),
                parent,
            })
            .await;
    }

    /// [`Publisher::output`] from a thread outside the runtime (the Python
    /// thread): blocks while the queue is full.
    pub fn blocking_output(&self, msg_type: &'static str, content: Value, parent: Option<Parent>) {
        self.blocking_output_with(msg_type, content, Value::Null, Vec::new(), parent);
    }

    /// [`Publisher::blocking_output`] of a message with metadata (unless
    /// Null) and binary buffers: a comm's.
    pub fn blocking_output_with(
        &self,
        msg_type: &'static str,
        content: Value,
        metadata: Value,
        buffers: Vec<Bytes>,
        parent: Option<Parent>,
    ) {
        let _ = self.tx.blocking_send(Item::Output {
            msg_type,
            content,
            metadata,
            buffers,
            parent,
        });
    }

    /// Text written to `name` ("stdout", "stderr"), to be coalesced.
    pub fn blocking_stream(&self, name: String, text: String, parent: Option<Parent>) {
        let _ = self.tx.blocking_send(Item::Stream { name, text, parent });
    }

    /// A message ready to go (a reply, a heartbeat).
    pub async fn send(&self, message: Message) {
        let _ = self.tx.send(Item::Message(Box::new(message))).await;
    }

    /// [`Publisher::send`] from a thread outside the runtime.
    pub fn blocking_send(&self, message: Message) {
        let _ = self.tx.blocking_send(Item::Message(Box::new(message)));
    }

    /// `status` with `execution_state`: busy, idle, starting.
    pub async fn status(&self, state: &str, parent: Option<Parent>) {
        self.output("status", json!({ "execution_state": state }), parent)
            .await;
    }

    /// Waits until everything published so far has been handed to the socket.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Item::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the publisher task on `socket`, on the current runtime.
pub fn spawn<S, T>(queue: Queue, socket: S, stamp: Arc<T>)
where
    S: SocketSend + Send + 'static,
    T: Stamp,
{
    tokio::spawn(Task { socket, stamp }.run(queue.rx));
}

struct Task<S, T> {
    socket: S,
    stamp: Arc<T>,
}

impl<S: SocketSend + Send, T: Stamp> Task<S, T> {
    async fn run(mut self, mut rx: mpsc::Receiver<Item>) {
        let mut streams = Coalescer::default();
        loop {
            match streams.next(&mut rx).await {
                Next::Closed => {
                    self.send_stream(streams.take()).await;
                    return;
                }
                Next::Chunk(chunk) => self.send_stream(Some(chunk)).await,
                Next::Item(Item::Stream { name, text, parent }) => {
                    let request = parent
                        .as_ref()
                        .map_or("", |p| p.header.msg_id.as_str())
                        .to_string();
                    let done = streams.push(name, text, &request, parent);
                    self.send_stream(done).await;
                }
                Next::Item(Item::Output {
                    msg_type,
                    content,
                    metadata,
                    buffers,
                    parent,
                }) => {
                    self.send_stream(streams.take()).await;
                    let parent = parent.as_deref();
                    if let Some(mut message) = self.stamp.output(msg_type, content, parent) {
                        if !metadata.is_null() {
                            message.metadata = metadata;
                        }
                        message.buffers = buffers;
                        self.send(&message).await;
                    }
                }
                Next::Item(Item::Message(message)) => {
                    self.send_stream(streams.take()).await;
                    self.send(&message).await;
                }
                Next::Item(Item::Flush(done)) => {
                    self.send_stream(streams.take()).await;
                    let _ = done.send(());
                }
            }
        }
    }

    async fn send_stream(&mut self, chunk: Option<StreamChunk<Option<Parent>>>) {
        if let Some(c) = chunk {
            let content = json!({ "name": c.name, "text": c.text });
            self.output("stream", content, c.parent.as_deref()).await;
        }
    }

    async fn output(&mut self, msg_type: &str, content: Value, parent: Option<&Message>) {
        if let Some(message) = self.stamp.output(msg_type, content, parent) {
            self.send(&message).await;
        }
    }

    async fn send(&mut self, message: &Message) {
        let frames = self.stamp.session().encode(message);
        if let Err(e) = self.socket.send(frames).await {
            // A peer that went away: the process notices by other means.
            tracing::info!("could not send {}: {e}", message.msg_type());
        }
    }
}

//! Socket plumbing: reader tasks that verify and decode, and a sender for
//! ROUTER replies. Anything unsigned, forged, replayed or malformed is
//! dropped and logged here; the rest of the kernel sees only good messages.

use std::sync::Arc;
use std::time::Duration;

use rparallel_protocol::{Message, Session};
use tokio::sync::mpsc;
use zeromq::{RouterSendHalf, SocketRecv, SocketSend};

/// Decoded messages from one socket, in arrival order.
pub type Incoming = mpsc::Receiver<Arc<Message>>;

/// Reads `socket` forever on its own task, so the consumer can be busy
/// without the socket's queue going unread.
pub fn spawn_reader<S>(mut socket: S, session: Session, channel: &'static str) -> Incoming
where
    S: SocketRecv + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4096);
    tokio::spawn(async move {
        loop {
            match socket.recv().await {
                Ok(frames) => match session.decode(frames) {
                    Ok(message) => {
                        if tx.send(Arc::new(message)).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::warn!("{channel}: dropped a message: {e}"),
                },
                Err(e) => {
                    tracing::debug!("{channel}: receive failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
    rx
}

/// Sends signed messages back through a ROUTER socket.
#[derive(Clone)]
pub struct Replier {
    socket: RouterSendHalf,
    session: Session,
    channel: &'static str,
}

impl Replier {
    pub fn new(socket: RouterSendHalf, session: Session, channel: &'static str) -> Self {
        Replier {
            socket,
            session,
            channel,
        }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Sends `message` to the peer named by its identities.
    pub async fn send(&mut self, message: &Message) {
        if let Err(e) = self.socket.send(self.session.encode(message)).await {
            // A peer that went away is not an error worth more than a note.
            tracing::info!(
                "{}: could not send {}: {e}",
                self.channel,
                message.msg_type()
            );
        }
    }

    /// Replies to `request` with `<kind>_reply` and `content`.
    pub async fn reply(&mut self, request: &Message, content: serde_json::Value) {
        let msg_type = reply_type(request.msg_type());
        let mut reply = self.session.message(&msg_type, content, Some(request));
        reply.metadata = serde_json::json!({ "status": reply.content["status"].clone() });
        self.send(&reply).await;
    }
}

/// `execute_request` → `execute_reply`.
pub fn reply_type(request_type: &str) -> String {
    format!(
        "{}_reply",
        request_type
            .strip_suffix("_request")
            .unwrap_or(request_type)
    )
}

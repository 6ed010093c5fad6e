//! Reading a socket: a task turns frames into verified, decoded messages in
//! arrival order. Anything unsigned, forged, replayed or malformed is
//! dropped and logged here, so the reader's consumer sees only good
//! messages, and it can be busy without the socket's queue going unread.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use zeromq::SocketRecv;

use crate::{Message, Session};

/// Decoded messages from one socket, in arrival order.
pub type Incoming = mpsc::Receiver<Arc<Message>>;

/// Messages read ahead of their consumer at most.
const READ_AHEAD: usize = 4096;

/// Reads `socket` on a task of the current runtime until the consumer
/// goes away. `heard` runs for every verified message (liveness).
pub fn spawn_reader<S>(
    mut socket: S,
    session: Session,
    name: &'static str,
    heard: impl Fn() + Send + 'static,
) -> Incoming
where
    S: SocketRecv + Send + 'static,
{
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    tokio::spawn(async move {
        loop {
            match socket.recv().await {
                Ok(frames) => match session.decode(frames) {
                    Ok(message) => {
                        heard();
                        if tx.send(Arc::new(message)).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::warn!("{name}: dropped a message: {e}"),
                },
                Err(e) => {
                    tracing::debug!("{name}: receive failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
    rx
}

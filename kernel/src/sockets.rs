//! The kernel's five sockets, and a sender for ROUTER replies. Reading is
//! `rparallel_protocol::reader`: anything unsigned, forged, replayed or
//! malformed is dropped and logged there.

use anyhow::Context;
use rparallel_protocol::{connection, ConnectionInfo, Message, Session};
use zeromq::{PubSocket, RepSocket, RouterSendHalf, RouterSocket, Socket, SocketSend};

pub struct Sockets {
    pub shell: RouterSocket,
    pub control: RouterSocket,
    pub stdin: RouterSocket,
    pub iopub: PubSocket,
    pub heartbeat: RepSocket,
}

/// Binds the sockets the connection file names.
pub async fn bind(info: &ConnectionInfo) -> anyhow::Result<Sockets> {
    async fn bound<S: Socket>(
        mut socket: S,
        info: &ConnectionInfo,
        port: u16,
    ) -> anyhow::Result<S> {
        let endpoint = connection::endpoint(info, port);
        socket
            .bind(&endpoint)
            .await
            .with_context(|| format!("cannot bind {endpoint}"))?;
        Ok(socket)
    }
    Ok(Sockets {
        shell: bound(RouterSocket::new(), info, info.shell_port).await?,
        control: bound(RouterSocket::new(), info, info.control_port).await?,
        stdin: bound(RouterSocket::new(), info, info.stdin_port).await?,
        iopub: bound(PubSocket::new(), info, info.iopub_port).await?,
        heartbeat: bound(RepSocket::new(), info, info.hb_port).await?,
    })
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
        let reply = self.session.reply(request, content);
        self.send(&reply).await;
    }
}

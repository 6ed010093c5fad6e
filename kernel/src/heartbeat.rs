//! The heartbeat channel: echo every ping, on its own task, so a kernel busy
//! in Python still answers.

use zeromq::{RepSocket, SocketRecv, SocketSend};

pub fn spawn(mut socket: RepSocket) {
    tokio::spawn(async move {
        while let Ok(ping) = socket.recv().await {
            if socket.send(ping).await.is_err() {
                break;
            }
        }
    });
}

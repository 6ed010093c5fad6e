//! The stdin channel: `input()` in a cell becomes an `input_request` to the
//! frontend that sent the cell; its `input_reply` answers it.

use std::sync::Arc;

use rparallel_protocol::reader::Incoming;
use rparallel_protocol::Message;
use rparallel_pyexec::{InputError, Parent, Stdin};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::sockets::Replier;

type Answer = oneshot::Sender<Result<String, InputError>>;

enum StdinCommand {
    Request {
        prompt: String,
        password: bool,
        parent: Arc<Message>,
        answer: Answer,
    },
    /// The kernel was interrupted: fail the pending request.
    Cancel,
}

#[derive(Clone)]
pub struct StdinHandle {
    tx: mpsc::Sender<StdinCommand>,
}

/// The requests waiting for [`spawn`].
pub struct StdinQueue {
    rx: mpsc::Receiver<StdinCommand>,
}

/// A handle usable before the socket exists; [`spawn`] serves it.
pub fn channel() -> (StdinHandle, StdinQueue) {
    let (tx, rx) = mpsc::channel(16);
    (StdinHandle { tx }, StdinQueue { rx })
}

impl Stdin for StdinHandle {
    fn input(&self, prompt: &str, password: bool, parent: Parent) -> Result<String, InputError> {
        self.blocking_input(prompt, password, parent)
    }
}

impl StdinHandle {
    /// Asks the frontend for a line; blocks the calling (non-async) thread.
    pub fn blocking_input(
        &self,
        prompt: &str,
        password: bool,
        parent: Arc<Message>,
    ) -> Result<String, InputError> {
        let (answer, rx) = oneshot::channel();
        let request = StdinCommand::Request {
            prompt: prompt.to_string(),
            password,
            parent,
            answer,
        };
        if self.tx.blocking_send(request).is_err() {
            return Err(InputError::Failed("the stdin channel is closed".into()));
        }
        rx.blocking_recv()
            .unwrap_or_else(|_| Err(InputError::Failed("no answer".into())))
    }

    pub fn cancel(&self) {
        let _ = self.tx.try_send(StdinCommand::Cancel);
    }
}

/// Serves `queue` on the stdin socket (`replier` and `incoming`).
pub fn spawn(queue: StdinQueue, mut replier: Replier, mut incoming: Incoming) {
    let mut commands = queue.rx;
    tokio::spawn(async move {
        let mut pending: Option<Answer> = None;
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => return,
                    Some(StdinCommand::Request { prompt, password, parent, answer }) => {
                        if let Some(old) = pending.replace(answer) {
                            let _ = old.send(Err(InputError::Failed("superseded".into())));
                        }
                        let request = replier.session().message(
                            "input_request",
                            json!({ "prompt": prompt, "password": password }),
                            Some(&parent),
                        );
                        replier.send(&request).await;
                    }
                    Some(StdinCommand::Cancel) => {
                        if let Some(answer) = pending.take() {
                            let _ = answer.send(Err(InputError::Interrupted));
                        }
                    }
                },
                message = incoming.recv() => {
                    let Some(message) = message else { return };
                    if message.msg_type() != "input_reply" {
                        tracing::warn!("stdin: ignoring {}", message.msg_type());
                        continue;
                    }
                    match pending.take() {
                        Some(answer) => {
                            let _ = answer.send(Ok(message.content_str("value").to_string()));
                        }
                        None => tracing::warn!("stdin: input_reply with no pending request"),
                    }
                }
            }
        }
    });
}

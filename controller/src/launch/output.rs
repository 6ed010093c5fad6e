//! What launched processes print: each line goes to the controller's own
//! stderr, prefixed with where it came from, and to the hub as launch
//! news, which keeps the last lines for the message when engines never
//! arrive.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use super::report;
use crate::events::{HubEvent, LaunchNews};

/// Forwards `reader`'s lines until it closes.
pub fn forward<R>(reader: R, label: String, launch: String, events: mpsc::Sender<HubEvent>)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            show(&label, &line);
            report(&events, &launch, LaunchNews::Output(line)).await;
        }
    });
}

/// Shows one line on the controller's stderr: `[node1] …`.
pub fn show(label: &str, line: &str) {
    eprintln!("[{label}] {line}");
}

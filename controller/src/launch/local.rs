//! The local launcher: engines as child processes of the controller. Each
//! child is bound to the controller's life (PR_SET_PDEATHSIG), and its exit
//! is reported at once with the reason, so pending work fails immediately
//! instead of waiting for a heartbeat to lapse.

use std::process::Stdio;

use rparallel_cluster::process::{describe_exit, die_with_parent, hostname};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::EngineCommand;
use crate::events::HubEvent;

fn command(engine: &EngineCommand) -> Command {
    let mut command = Command::from(engine.command());
    command.stdin(Stdio::null()).kill_on_drop(true);
    die_with_parent(command.as_std_mut());
    command
}

/// Starts `count` engines on this host; returns their pids.
pub fn start(
    engine: &EngineCommand,
    count: usize,
    events: &mpsc::Sender<HubEvent>,
) -> std::io::Result<Vec<u32>> {
    let mut pids = Vec::with_capacity(count);
    for _ in 0..count {
        let child = command(engine).spawn()?;
        pids.push(child.id().unwrap_or(0));
        watch(child, events.clone());
    }
    Ok(pids)
}

fn watch(mut child: Child, events: mpsc::Sender<HubEvent>) {
    let pid = child.id().unwrap_or(0);
    tokio::spawn(async move {
        let (reason, clean) = match child.wait().await {
            Ok(status) => (describe_exit(status), status.success()),
            Err(e) => (format!("lost track of the process: {e}"), false),
        };
        let _ = events
            .send(HubEvent::ProcessExited {
                hostname: hostname(),
                pid,
                reason,
                clean,
            })
            .await;
    });
}

//! The local launcher: engines as child processes of the controller. Each
//! child is bound to the controller's life (PR_SET_PDEATHSIG), and its exit
//! is reported at once with the reason, so pending work fails immediately
//! instead of waiting for a heartbeat to lapse.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use rparallel_cluster::process::{describe_exit, die_with_parent, Program};

use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::events::HubEvent;

/// How to start one engine.
#[derive(Debug, Clone)]
pub struct EngineCommand {
    /// How this controller runs (the engines run the same way).
    pub program: Program,
    pub engine_file: PathBuf,
    pub python: PathBuf,
}

impl EngineCommand {
    fn command(&self) -> Command {
        let mut command = Command::from(self.program.running(&self.python).command("engine"));
        command
            .arg("--file")
            .arg(&self.engine_file)
            .arg("--python")
            .arg(&self.python)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        die_with_parent(command.as_std_mut());
        command
    }
}

/// The controller's own engines: started as its children, each one's exit
/// reported to the hub. The hub keeps this handle to start more engines
/// later (`start_engines_request`, replacing engines that died).
#[derive(Debug, Clone)]
pub struct LocalEngines {
    command: EngineCommand,
    events: mpsc::Sender<HubEvent>,
}

impl LocalEngines {
    pub fn new(command: EngineCommand, events: mpsc::Sender<HubEvent>) -> Self {
        LocalEngines { command, events }
    }

    /// Starts `count` engines; returns their pids.
    pub fn start(&self, count: usize) -> std::io::Result<Vec<u32>> {
        let mut pids = Vec::with_capacity(count);
        for _ in 0..count {
            let child = self.command.command().spawn()?;
            pids.push(child.id().unwrap_or(0));
            watch(child, self.events.clone());
        }
        Ok(pids)
    }
}

fn watch(mut child: Child, events: mpsc::Sender<HubEvent>) {
    let pid = child.id().unwrap_or(0);
    tokio::spawn(async move {
        let (reason, clean) = match child.wait().await {
            Ok(status) => (describe_exit(status), status.success()),
            Err(e) => (format!("lost track of the process: {e}"), false),
        };
        let _ = events
            .send(HubEvent::ProcessExited { pid, reason, clean })
            .await;
    });
}

/// Checks a Python interpreter path before engines are started with it.
pub fn check_python(python: &Path) -> anyhow::Result<()> {
    if !python.exists() {
        anyhow::bail!("no Python interpreter at {}", python.display());
    }
    Ok(())
}

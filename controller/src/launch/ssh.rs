//! The ssh launcher: one ssh connection per host, running `rparallel
//! host-engines` there (the [`agent`](super::agent)), which starts that
//! host's engines and reports each one's exit back over the connection.
//! The engine connection file travels on ssh's stdin, so the key is never
//! on a command line or on the remote disk; stdin then stays open, and its
//! end tells the agent that this controller is gone.

use std::process::Stdio;

use rparallel_cluster::launch::split_words;
use rparallel_cluster::process::describe_exit;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use super::{output, progress, report, spawn_tool, EngineCommand, Launch};
use crate::events::{HubEvent, LaunchNews};

/// ssh options: never prompt (a missing key fails at once instead of
/// hanging), and give up on an unreachable host within the start timeout.
const SSH_OPTIONS: [&str; 5] = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-T"];

/// What every ssh launch of a cluster shares.
pub struct SshLaunch<'a> {
    pub id: String,
    pub engine: &'a EngineCommand,
    /// How the hosts run rparallel (shell words); None: as this host does.
    pub remote_rparallel: Option<&'a str>,
    /// The engine connection file, on one line.
    pub engine_json: &'a str,
    pub events: &'a mpsc::Sender<HubEvent>,
}

impl SshLaunch<'_> {
    /// The command the remote shell runs.
    fn remote_command(&self, count: usize) -> anyhow::Result<String> {
        let mut words = match self.remote_rparallel {
            Some(remote) => split_words(remote)?,
            None => {
                let mut words: Vec<String> = self
                    .engine
                    .program
                    .running(&self.engine.python)
                    .argv("host-engines")
                    .into_iter()
                    .map(|w| w.to_string_lossy().into_owned())
                    .collect();
                words.pop();
                words
            }
        };
        words.extend([
            "host-engines".into(),
            "-n".into(),
            count.to_string(),
            "--launch".into(),
            self.id.clone(),
        ]);
        if self.remote_rparallel.is_none() {
            words.extend([
                "--python".into(),
                self.engine.python.to_string_lossy().into_owned(),
            ]);
        }
        Ok(format!("exec {}", shell_words::join(words)))
    }
}

/// Starts `count` engines on `host`.
pub fn start(launch: &SshLaunch<'_>, host: &str, count: usize) -> anyhow::Result<Launch> {
    let mut command = Command::new("ssh");
    command
        .args(SSH_OPTIONS)
        .arg(host)
        .arg("--")
        .arg(launch.remote_command(count)?);
    let mut child = spawn_tool(command, Stdio::piped())?;
    let pid = child.id();
    let label = format!("ssh {host}");
    let id = launch.id.clone();
    let events = launch.events.clone();
    if let Some(stderr) = child.stderr.take() {
        output::forward(stderr, host.to_string(), id.clone(), events.clone());
    }
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(read_agent(
            stdout,
            host.to_string(),
            id.clone(),
            events.clone(),
        ));
    }
    let mut stdin = child.stdin.take();
    let json = format!("{}\n", launch.engine_json);
    let (done_tx, done) = watch::channel(false);
    let ended_label = label.clone();
    tokio::spawn(async move {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(json.as_bytes()).await;
            let _ = stdin.flush().await;
        }
        let reason = match child.wait().await {
            Ok(status) => format!("{ended_label} exited ({})", describe_exit(status)),
            Err(e) => format!("lost track of {ended_label}: {e}"),
        };
        drop(stdin);
        report(&events, &id, LaunchNews::Ended(reason)).await;
        let _ = done_tx.send(true);
    });
    Ok(Launch {
        progress: progress(&label, &[(host.to_string(), count)], count, "ssh"),
        pid,
        job: None,
        done,
    })
}

/// Reads the agent's reports: one JSON object per line.
async fn read_agent(
    stdout: tokio::process::ChildStdout,
    host: String,
    launch: String,
    events: mpsc::Sender<HubEvent>,
) {
    let mut lines = BufReader::new(stdout).lines();
    let mut hostname = host.clone();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(report) = serde_json::from_str::<serde_json::Value>(&line) else {
            output::show(&host, &line);
            super::report(&events, &launch, LaunchNews::Output(line)).await;
            continue;
        };
        if let Some(name) = report["hostname"].as_str() {
            hostname = name.to_string();
        }
        if let Some(pid) = report["exited"].as_u64() {
            let _ = events
                .send(HubEvent::ProcessExited {
                    hostname: hostname.clone(),
                    pid: pid as u32,
                    reason: report["reason"].as_str().unwrap_or("exited").to_string(),
                    clean: report["clean"].as_bool().unwrap_or(false),
                })
                .await;
        }
    }
}

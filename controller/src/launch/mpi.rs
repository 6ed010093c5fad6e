//! The MPI launcher: one `mpiexec -n N` whose ranks are the engines
//! (engine id = rank, so `mpi4py` on the engines sees the same numbering).
//! Everything an engine needs is in its arguments and the engine file on
//! the hosts' shared filesystem: Open MPI does not pass the environment to
//! ranks on other hosts. When mpiexec exits (a rank died and MPI ended the
//! job, or it was stopped), every engine of the launch fails at once.

use std::process::Stdio;

use rparallel_cluster::launch::LaunchSpec;
use rparallel_cluster::process::describe_exit;
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use super::{output, progress, report, spawn_tool, EngineCommand, Launch};
use crate::events::{HubEvent, LaunchNews};

/// Starts `count` engines, on `plan`'s hosts (empty: wherever mpiexec
/// puts them by default).
pub fn start(
    engine: &EngineCommand,
    spec: &LaunchSpec,
    plan: &[(String, usize)],
    count: usize,
    launch: &str,
    events: &mpsc::Sender<HubEvent>,
) -> anyhow::Result<Launch> {
    let mut command = Command::new("mpiexec");
    command.arg("-n").arg(count.to_string());
    if !plan.is_empty() {
        let hosts: Vec<String> = plan.iter().map(|(h, n)| format!("{h}:{n}")).collect();
        command.arg("--host").arg(hosts.join(","));
    } else if is_open_mpi() && !names_hosts(&spec.mpi_args) {
        // Open MPI allows one rank per core unless told otherwise; a
        // laptop asks for more engines than cores all the time.
        command.arg("--oversubscribe");
    }
    command.args(&spec.mpi_args);
    command.args(engine.words(launch));
    command.arg("--rank-id");
    let mut child = spawn_tool(command, Stdio::null())?;
    let pid = child.id();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        output::forward(stream, "mpiexec".into(), launch.to_string(), events.clone());
    }
    let (done_tx, done) = watch::channel(false);
    let (id, events) = (launch.to_string(), events.clone());
    tokio::spawn(async move {
        let reason = match child.wait().await {
            Ok(status) => format!("mpiexec exited ({})", describe_exit(status)),
            Err(e) => format!("lost track of mpiexec: {e}"),
        };
        report(&events, &id, LaunchNews::Ended(reason)).await;
        let _ = done_tx.send(true);
    });
    Ok(Launch {
        progress: progress("mpiexec", plan, count, "mpiexec"),
        pid,
        job: None,
        done,
    })
}

/// Whether `mpiexec` is Open MPI's (which has `--oversubscribe`).
fn is_open_mpi() -> bool {
    std::process::Command::new("mpiexec")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map(|out| {
            let text = String::from_utf8_lossy(&out.stdout);
            text.contains("Open MPI") || text.contains("OpenRTE")
        })
        .unwrap_or(false)
}

/// Whether the user's mpiexec arguments already place the ranks.
fn names_hosts(args: &[String]) -> bool {
    args.iter().any(|a| {
        matches!(
            a.as_str(),
            "--host"
                | "-host"
                | "-H"
                | "--hostfile"
                | "-hostfile"
                | "--machinefile"
                | "-machinefile"
        ) || a.starts_with("--host=")
            || a.starts_with("--hostfile=")
            || a == "--oversubscribe"
    })
}

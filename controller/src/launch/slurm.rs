//! The Slurm launcher: one `sbatch` job whose `srun` starts the engines
//! (engine id = task rank). The controller polls `squeue` for the job's
//! state: a job that Slurm ends (time limit, `scancel`, a node failure)
//! fails its engines at once. Stopping the cluster runs `scancel`. The
//! job's output file, in the profile directory on the shared filesystem,
//! is followed for the message when engines never arrive.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::bail;
use rparallel_cluster::launch::{LaunchSpec, ENGINE_COMMAND};
use rparallel_cluster::process::describe_exit;
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use super::{output, progress, report, EngineCommand, Launch};
use crate::events::{HubEvent, LaunchNews};

/// How often the job's state is read.
const POLL: Duration = Duration::from_millis(300);
/// Any Slurm command gets this long.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Submits a job starting `count` engines, on `plan`'s hosts (empty:
/// wherever Slurm puts them).
pub fn start(
    engine: &EngineCommand,
    spec: &LaunchSpec,
    plan: &[(String, usize)],
    count: usize,
    launch: &str,
    events: &mpsc::Sender<HubEvent>,
) -> anyhow::Result<Launch> {
    let script = engine.work_dir.join(format!("slurm-{launch}.sh"));
    let log = engine.work_dir.join(format!("slurm-{launch}.log"));
    let mut words = engine.words(launch);
    words.push("--rank-id".into());
    let engines = shell_words::join(words);
    let text = match &spec.slurm_template {
        Some(template) => {
            let mut text = std::fs::read_to_string(template)?;
            for placeholder in ENGINE_COMMAND {
                text = text.replace(placeholder, &engines);
            }
            text.replace("{n}", &count.to_string())
        }
        None => format!(
            "#!/bin/sh\n# rparallel engines ({launch}), submitted by the controller.\nexec srun {engines}\n"
        ),
    };
    std::fs::write(&script, text)?;
    // On sbatch's command line, these win over a template's #SBATCH lines:
    // the cluster's n and hosts are what the user asked for.
    let mut args = vec![
        "--parsable".to_string(),
        format!("--job-name=rparallel-{launch}"),
        format!("--output={}", log.display()),
        format!("--ntasks={count}"),
    ];
    args.extend(placement(plan)?);
    args.extend(spec.slurm_args.iter().cloned());
    args.push(script.display().to_string());

    let (done_tx, done) = watch::channel(false);
    let (job_tx, job) = watch::channel(None);
    let (id, events) = (launch.to_string(), events.clone());
    tokio::spawn(async move {
        match submit(&args).await {
            Ok(job_id) => {
                let _ = job_tx.send(Some(job_id.clone()));
                report(&events, &id, LaunchNews::Job(job_id.clone())).await;
                let reason = follow(&job_id, &log, &id, &events).await;
                report(&events, &id, LaunchNews::Ended(reason)).await;
            }
            Err(e) => {
                for line in format!("{e:#}").lines() {
                    report(&events, &id, LaunchNews::Output(line.to_string())).await;
                }
                report(
                    &events,
                    &id,
                    LaunchNews::Ended("sbatch refused the job".into()),
                )
                .await;
            }
        }
        let _ = done_tx.send(true);
    });
    Ok(Launch {
        progress: progress("slurm job", plan, count, "Slurm"),
        pid: None,
        job: Some(job),
        done,
    })
}

/// sbatch options placing the engines on the given hosts.
fn placement(plan: &[(String, usize)]) -> anyhow::Result<Vec<String>> {
    if plan.is_empty() {
        return Ok(vec![]);
    }
    let per_node = plan[0].1;
    if plan.iter().any(|(_, n)| *n != per_node) {
        bail!(
            "engines=\"slurm\" places the same number of engines on every host; got {}",
            plan.iter()
                .map(|(h, n)| format!("{h}:{n}"))
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    let nodes: Vec<&str> = plan.iter().map(|(h, _)| h.as_str()).collect();
    Ok(vec![
        format!("--nodes={}", nodes.len()),
        format!("--nodelist={}", nodes.join(",")),
        format!("--ntasks-per-node={per_node}"),
    ])
}

/// Runs a Slurm command: its stdout, or an error with its stderr.
async fn run(tool: &str, args: &[String]) -> anyhow::Result<String> {
    let mut command = Command::new(tool);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(COMMAND_TIMEOUT, command.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => bail!("cannot run {tool}: {e}"),
        Err(_) => bail!("{tool} did not answer within {COMMAND_TIMEOUT:?}"),
    };
    if !out.status.success() {
        bail!(
            "{tool} {} failed ({}): {}",
            shell_words::join(args),
            describe_exit(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Submits the job; its id.
async fn submit(args: &[String]) -> anyhow::Result<String> {
    let out = run("sbatch", args).await?;
    // --parsable prints `id` or `id;cluster`.
    match out.split(';').next().map(str::trim) {
        Some(id) if !id.is_empty() => Ok(id.to_string()),
        _ => bail!("sbatch printed no job id ({out:?})"),
    }
}

/// Follows the job until it ends; why it ended.
async fn follow(job: &str, log: &Path, launch: &str, events: &mpsc::Sender<HubEvent>) -> String {
    let mut shown = String::new();
    let mut tail = LogTail::new(log.to_path_buf());
    loop {
        let state = match run(
            "squeue",
            &[
                "-h".into(),
                "-j".into(),
                job.into(),
                "-o".into(),
                "%T %r".into(),
            ],
        )
        .await
        {
            Ok(state) => state,
            // A job Slurm has forgotten is an unknown id: it ended.
            Err(e) if e.to_string().contains("Invalid job id") => String::new(),
            Err(e) => {
                tracing::warn!("squeue: {e:#}");
                shown.clone()
            }
        };
        forward(&mut tail, job, launch, events).await;
        let name = state.split_whitespace().next().unwrap_or("");
        if state != shown && !name.is_empty() {
            report(events, launch, LaunchNews::State(state.clone())).await;
            shown = state.clone();
        }
        if !matches!(
            name,
            "PENDING" | "CONFIGURING" | "RUNNING" | "COMPLETING" | "SUSPENDED" | "RESIZING"
        ) {
            let ended = if name.is_empty() { "ended" } else { name };
            forward(&mut tail, job, launch, events).await;
            return format!("slurm job {job} {}", ended.to_lowercase());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Shows and reports the job's new output lines.
async fn forward(tail: &mut LogTail, job: &str, launch: &str, events: &mpsc::Sender<HubEvent>) {
    for line in tail.new_lines() {
        output::show(&format!("slurm job {job}"), &line);
        report(events, launch, LaunchNews::Output(line)).await;
    }
}

/// Cancels a job (stopping the cluster); bounded.
pub async fn cancel(job: &str) {
    if let Err(e) = run("scancel", &[job.to_string()]).await {
        tracing::warn!("{e:#}");
    }
}

/// The lines appended to the job's output file since last read.
struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl LogTail {
    fn new(path: PathBuf) -> Self {
        LogTail {
            path,
            offset: 0,
            partial: String::new(),
        }
    }

    fn new_lines(&mut self) -> Vec<String> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return vec![];
        };
        let mut text = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut text).is_err()
        {
            return vec![];
        }
        self.offset += text.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&text));
        let mut lines: Vec<String> = self.partial.split('\n').map(str::to_string).collect();
        self.partial = lines.pop().unwrap_or_default();
        lines
    }
}

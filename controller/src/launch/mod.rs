//! Launchers: how the controller starts engines, on its own host or on
//! others, through the tools clusters already trust. The controller owns
//! one [`Launcher`], resolved from the cluster's `LaunchSpec`; every start
//! (at start-up, `start_engines`, replacing a dead engine) makes one or
//! more *launches*, each reported to the hub as it goes ([`LaunchNews`]).
//!
//! - [`local`]: child processes of the controller.
//! - [`ssh`]: one ssh connection per host, running [`agent`] there.
//! - [`mpi`]: one `mpiexec`; engine id = MPI rank.
//! - [`slurm`]: one `sbatch` job whose `srun` starts the engines.
//! - [`output`]: reading what launched processes print.
//!
//! Engines started by a launch carry its id (`--launch`): when the launch
//! ends (ssh or mpiexec exits, the Slurm job ends), its engines are failed
//! at once instead of after a heartbeat timeout.

pub mod agent;
pub mod local;
pub mod mpi;
pub mod output;
pub mod slurm;
pub mod ssh;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use rparallel_cluster::launch::{LaunchProgress, LaunchSpec, LauncherKind};
use rparallel_cluster::process::{die_with_parent, Program};
use rparallel_cluster::ConnectionFile;
use tokio::sync::{mpsc, watch};

use crate::events::{HubEvent, LaunchNews};

/// How long a stopping launch gets to end by itself (its engines were
/// told to shut down), and then after SIGTERM, before SIGKILL.
const GRACE: Duration = Duration::from_millis(1500);

/// How this controller's engines run: the program, its Python, and the
/// engine connection file (on a filesystem the hosts share, for mpi and
/// slurm; sent over ssh's stdin for ssh).
#[derive(Debug, Clone)]
pub struct EngineCommand {
    /// How this controller runs (the engines run the same way).
    pub program: Program,
    pub engine_file: PathBuf,
    pub python: PathBuf,
    /// Where launchers keep their scripts and logs: the profile directory.
    pub work_dir: PathBuf,
}

impl EngineCommand {
    /// `rparallel engine --file F --python P`, as a local child.
    pub fn command(&self) -> std::process::Command {
        let mut command = self.program.running(&self.python).command("engine");
        command
            .arg("--file")
            .arg(&self.engine_file)
            .arg("--python")
            .arg(&self.python);
        command
    }

    /// The same as words, for `mpiexec` and `srun` command lines: the
    /// program, `engine`, the file and Python, the launch tag.
    pub fn words(&self, launch: &str) -> Vec<String> {
        let mut words: Vec<String> = self
            .program
            .running(&self.python)
            .argv("engine")
            .into_iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        words.extend([
            "--file".into(),
            path_text(&self.engine_file),
            "--python".into(),
            path_text(&self.python),
            "--launch".into(),
            launch.into(),
        ]);
        words
    }
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A launch still running, for [`Launcher::stop`].
struct Running {
    /// The launching process (ssh, mpiexec), signalled to stop it.
    pid: Option<u32>,
    /// The Slurm job, cancelled to stop it.
    job: Option<watch::Receiver<Option<String>>>,
    /// Becomes true when the launch has ended.
    done: watch::Receiver<bool>,
}

/// Starts engines the way the cluster was asked to.
pub struct Launcher {
    spec: LaunchSpec,
    engine: EngineCommand,
    events: mpsc::Sender<HubEvent>,
    /// The engine connection file's text, for the ssh launcher.
    engine_json: String,
    launches: u32,
    running: Vec<Running>,
}

/// Which engines a start is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// The cluster's engines: the hosts' counts apply.
    First,
    /// More later (`start_engines`, replacements): spread over the hosts.
    More,
}

/// One launch just started: its id (the engines' `--launch`) and progress.
pub struct Started {
    pub id: String,
    pub progress: LaunchProgress,
}

impl Launcher {
    pub fn new(
        spec: LaunchSpec,
        engine: EngineCommand,
        events: mpsc::Sender<HubEvent>,
    ) -> anyhow::Result<Self> {
        spec.validate()?;
        let engine_json = serde_json::to_string(&ConnectionFile::read(&engine.engine_file)?)?;
        Ok(Launcher {
            spec,
            engine,
            events,
            engine_json,
            launches: 0,
            running: Vec::new(),
        })
    }

    /// Starts `count` engines. Local engines are reported by pid; the
    /// others as launches whose engines register when they can.
    pub fn start(
        &mut self,
        count: usize,
        batch: Batch,
    ) -> anyhow::Result<(Vec<u32>, Vec<Started>)> {
        if count == 0 {
            return Ok((vec![], vec![]));
        }
        if self.spec.kind == LauncherKind::Local {
            return Ok((local::start(&self.engine, count, &self.events)?, vec![]));
        }
        let mut started = Vec::new();
        match self.spec.kind {
            LauncherKind::Local => unreachable!(),
            LauncherKind::Ssh => {
                for (host, engines) in self.plan(count, batch)? {
                    let id = self.next_id();
                    let launch = ssh::start(&self.ssh_launch(&id), &host, engines)?;
                    started.push(self.track(id, launch));
                }
            }
            LauncherKind::Mpi => {
                let id = self.next_id();
                let plan = self.plan(count, batch)?;
                let launch = mpi::start(&self.engine, &self.spec, &plan, count, &id, &self.events)?;
                started.push(self.track(id, launch));
            }
            LauncherKind::Slurm => {
                let id = self.next_id();
                let plan = self.plan(count, batch)?;
                let launch =
                    slurm::start(&self.engine, &self.spec, &plan, count, &id, &self.events)?;
                started.push(self.track(id, launch));
            }
        }
        Ok((vec![], started))
    }

    /// The hosts' shares; empty when no hosts were given (the tool
    /// places the engines).
    fn plan(&self, count: usize, batch: Batch) -> anyhow::Result<Vec<(String, usize)>> {
        if self.spec.hosts.is_empty() {
            return Ok(vec![]);
        }
        let plan = match batch {
            Batch::First => self.spec.plan(count)?,
            Batch::More => self.spec.spread(count),
        };
        if plan.is_empty() {
            bail!("no hosts to start engines on");
        }
        Ok(plan)
    }

    fn next_id(&mut self) -> String {
        self.launches += 1;
        format!("L{}", self.launches)
    }

    fn ssh_launch(&self, id: &str) -> ssh::SshLaunch<'_> {
        ssh::SshLaunch {
            id: id.to_string(),
            engine: &self.engine,
            remote_rparallel: self.spec.remote_rparallel.as_deref(),
            engine_json: &self.engine_json,
            events: &self.events,
        }
    }

    fn track(&mut self, id: String, launch: Launch) -> Started {
        self.running.retain(|r| !*r.done.borrow());
        self.running.push(Running {
            pid: launch.pid,
            job: launch.job,
            done: launch.done,
        });
        Started {
            id,
            progress: launch.progress,
        }
    }

    /// Stops every launch still running: a moment to end by itself (its
    /// engines were told to shut down), then SIGTERM or `scancel`, then
    /// SIGKILL. Bounded.
    pub async fn stop(&mut self) {
        let running = std::mem::take(&mut self.running);
        if running.is_empty() {
            return;
        }
        if !all_done(&running, GRACE).await {
            for launch in &running {
                if *launch.done.borrow() {
                    continue;
                }
                if let Some(pid) = launch.pid {
                    signal(pid, libc::SIGTERM);
                }
                if let Some(job) = launch.job.as_ref().and_then(|j| j.borrow().clone()) {
                    slurm::cancel(&job).await;
                }
            }
            if !all_done(&running, GRACE).await {
                for launch in running.iter().filter(|l| !*l.done.borrow()) {
                    if let Some(pid) = launch.pid {
                        signal(pid, libc::SIGKILL);
                    }
                }
                all_done(&running, GRACE).await;
            }
        }
    }
}

/// A launch's progress before any engine registered: `plan`'s hosts, or
/// (no hosts given) `count` engines wherever `placed_by` puts them.
pub fn progress(
    label: &str,
    plan: &[(String, usize)],
    count: usize,
    placed_by: &str,
) -> LaunchProgress {
    let expected = if plan.is_empty() {
        BTreeMap::from([(format!("(hosts chosen by {placed_by})"), count)])
    } else {
        plan.iter().cloned().collect()
    };
    LaunchProgress {
        label: label.to_string(),
        expected,
        ..Default::default()
    }
}

/// What a launcher module hands back for one launch.
pub struct Launch {
    pub progress: LaunchProgress,
    pub pid: Option<u32>,
    pub job: Option<watch::Receiver<Option<String>>>,
    pub done: watch::Receiver<bool>,
}

/// Starts `command` (a launching tool: ssh, mpiexec) as the controller's
/// child: its output read by the controller, killed with it.
pub fn spawn_tool(
    mut command: tokio::process::Command,
    stdin: std::process::Stdio,
) -> anyhow::Result<tokio::process::Child> {
    use std::process::Stdio;
    command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    die_with_parent(command.as_std_mut());
    let tool = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    command
        .spawn()
        .with_context(|| format!("cannot run {tool}"))
}

async fn all_done(running: &[Running], within: Duration) -> bool {
    let wait = async {
        for launch in running {
            let mut done = launch.done.clone();
            let _ = done.wait_for(|d| *d).await;
        }
    };
    tokio::time::timeout(within, wait).await.is_ok()
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: plain kill(2) on a child we started.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

/// Sends one piece of launch news to the hub.
pub async fn report(events: &mpsc::Sender<HubEvent>, launch: &str, news: LaunchNews) {
    let _ = events
        .send(HubEvent::Launch {
            launch: launch.to_string(),
            news,
        })
        .await;
}

/// Checks a Python interpreter path before engines are started with it.
pub fn check_python(python: &Path) -> anyhow::Result<()> {
    if !python.exists() {
        bail!("no Python interpreter at {}", python.display());
    }
    Ok(())
}

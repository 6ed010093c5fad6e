//! Starting, stopping and listing clusters (`rparallel cluster ...`, and
//! `rparallel.Cluster` in Python through the same functions). A cluster is
//! a controller process (`rparallel controller`) that starts its engines.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::launch::{controller_addresses, LaunchProgress, LaunchSpec};
use crate::process::{describe_exit, die_with_parent, process_alive, Program};
use crate::profile::{ClusterRecord, Profile};

/// Options of `rparallel cluster start` and `rparallel.Cluster`.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub profile: Option<String>,
    pub engines: usize,
    pub python: PathBuf,
    /// The address to bind (None: loopback, or for engines on other hosts
    /// this host's address; see `controller_addresses`).
    pub ip: Option<String>,
    /// The address engines and clients dial, when not `ip`.
    pub location: Option<String>,
    /// How engines are started: local processes, ssh, mpiexec, Slurm.
    pub launch: LaunchSpec,
    /// Leave the cluster running after this process exits.
    pub daemonize: bool,
    /// How long to wait for the engines to register.
    pub timeout: Duration,
    pub heartbeat_timeout: Duration,
    /// Replace a local engine that dies (killed, crashed) with a new one.
    pub restart_engines: bool,
    /// The controller's task scheduler: scheme and high-water mark.
    pub scheduler: crate::SchedulerSpec,
    /// The profile exists only for this cluster: its directory is removed
    /// when the cluster stops.
    pub ephemeral: bool,
    /// Where the controller's (and its engines') own output goes when not
    /// daemonized; None: this process's stdout and stderr. A kernel passes
    /// its original stderr, so cluster logs stay out of the cells.
    pub output: Option<std::sync::Arc<std::fs::File>>,
}

/// A cluster this process started.
pub struct StartedCluster {
    pub profile: Profile,
    pub controller_pid: u32,
    /// The controller, when it is our child (not daemonized).
    pub child: Option<Child>,
    /// The record as it stood when all engines had registered.
    pub record: Option<ClusterRecord>,
    ephemeral: bool,
}

/// Starts a controller with local engines and waits until they are all
/// registered. Not daemonized, the controller dies with this process.
pub fn start_cluster(options: &ClusterOptions) -> anyhow::Result<StartedCluster> {
    // What can be checked here fails here, in one clear message, rather
    // than in the controller's log.
    let launch = &options.launch;
    launch.validate()?;
    launch.kind.check_tool()?;
    if !launch.hosts.is_empty() {
        launch.plan(options.engines)?;
    }
    let (ip, location) =
        controller_addresses(launch, options.ip.as_deref(), options.location.as_deref())?;
    let profile = Profile::new(options.profile.as_deref())?;
    profile.create()?;
    profile.refuse_if_running(None)?;
    let mut command = Program::current()?.command("controller");
    command
        .arg("--profile")
        .arg(&profile.name)
        .arg("--ip")
        .arg(&ip);
    if let Some(location) = &location {
        command.arg("--location").arg(location);
    }
    command.args(launch.args());
    command
        .arg("-n")
        .arg(options.engines.to_string())
        .arg("--python")
        .arg(&options.python)
        .arg("--heartbeat-timeout")
        .arg(options.heartbeat_timeout.as_secs_f64().to_string())
        .stdin(Stdio::null());
    if options.restart_engines {
        command.arg("--restart-engines");
    }
    command.args(options.scheduler.args());
    let log = profile.dir.join("controller.log");
    if options.daemonize {
        // The engines' stray output lands here: the owner's eyes only.
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&log)?;
        command.stdout(out.try_clone()?).stderr(out);
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    } else {
        if let Some(out) = &options.output {
            command.stdout(out.try_clone()?).stderr(out.try_clone()?);
        }
        // A terminal's Ctrl-C goes to its whole foreground process group:
        // in a group of its own, the cluster is interrupted by the client
        // (which interrupts the engines' work), not stopped under it.
        command.process_group(0);
        die_with_parent(&mut command);
    }
    let mut child = command.spawn().context("cannot start the controller")?;
    let pid = child.id();
    let started = Instant::now();
    let mut progress = Progress::new(options.engines);
    let record = loop {
        if let Some(status) = child.try_wait()? {
            progress.finish();
            let mut message = format!(
                "the controller exited during start-up ({})",
                describe_exit(status)
            );
            if options.daemonize {
                if let Ok(text) = std::fs::read_to_string(&log) {
                    message.push_str(&format!(": {}", text.trim()));
                }
            }
            bail!(message);
        }
        let record = profile.read_record().filter(|r| r.controller_pid == pid);
        let alive = record.as_ref().map(|r| r.engines_alive).unwrap_or(0);
        let launches = record
            .as_ref()
            .map(|r| r.launches.as_slice())
            .unwrap_or(&[]);
        progress.show(alive, launches);
        // The record comes once the controller listens (with 0 engines
        // asked for, that is all there is to wait for).
        if record.is_some() && alive >= options.engines {
            progress.finish();
            break record;
        }
        let failed: Vec<&LaunchProgress> = launches
            .iter()
            .filter(|l| l.ended.is_some() && l.registered < l.expected_total())
            .collect();
        let timed_out = started.elapsed() > options.timeout;
        if !failed.is_empty() || timed_out {
            progress.finish();
            let _ = stop_controller(&profile, pid, Some(&mut child));
            let mut message = if timed_out {
                format!(
                    "timed out after {:.0?} waiting for {} engines to register ({alive} did)",
                    options.timeout, options.engines
                )
            } else {
                format!(
                    "engines could not start ({alive} of {} registered)",
                    options.engines
                )
            };
            let waiting = launches
                .iter()
                .filter(|l| l.registered < l.expected_total());
            for launch in if failed.is_empty() {
                waiting.collect()
            } else {
                failed
            } {
                message.push_str("\n  ");
                message.push_str(&launch.failure());
            }
            bail!(message);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(StartedCluster {
        profile,
        controller_pid: pid,
        child: if options.daemonize { None } else { Some(child) },
        record,
        ephemeral: options.ephemeral,
    })
}

/// The progress bar on a terminal while engines register:
/// `engines [########        ] 2/4  node1 2/2  node2 0/2`.
struct Progress {
    total: usize,
    shown: Option<String>,
    terminal: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        Progress {
            total,
            shown: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn show(&mut self, alive: usize, launches: &[LaunchProgress]) {
        if !self.terminal {
            return;
        }
        const WIDTH: usize = 24;
        let done = (alive.min(self.total) * WIDTH) / self.total.max(1);
        let mut line = format!(
            "engines [{}{}] {alive}/{}",
            "#".repeat(done),
            " ".repeat(WIDTH - done),
            self.total
        );
        for launch in launches.iter().filter(|l| l.ended.is_none()) {
            line.push_str(&format!(
                "  {} {}/{}",
                launch.label,
                launch.registered,
                launch.expected_total()
            ));
            if let Some(state) = launch
                .state
                .as_deref()
                .filter(|s| !s.starts_with("RUNNING"))
            {
                line.push_str(&format!(" ({state})"));
            }
        }
        if self.shown.as_deref() != Some(line.as_str()) {
            eprint!("\r{line}\x1b[K");
            let _ = std::io::stderr().flush();
            self.shown = Some(line);
        }
    }

    fn finish(&mut self) {
        if self.shown.take().is_some() {
            eprintln!();
        }
    }
}

impl StartedCluster {
    /// What `cluster start` prints once the engines are in: the cluster,
    /// where its controller listens, and where its engines run.
    pub fn describe(&self, engines: usize) -> String {
        let mut text = format!(
            "Cluster {} ready: {engines} engines (controller pid {})",
            self.profile.name, self.controller_pid
        );
        let Some(record) = &self.record else {
            return text;
        };
        if let Some(listening) = &record.listening {
            text.push_str(&format!("\nController listening on {listening}"));
        }
        let mut hosts: std::collections::BTreeMap<&str, usize> = Default::default();
        for launch in &record.launches {
            for (host, n) in &launch.registered_hosts {
                *hosts.entry(host).or_default() += n;
            }
        }
        if !hosts.is_empty() {
            let list: Vec<String> = hosts.iter().map(|(h, n)| format!("{h}: {n}")).collect();
            text.push_str(&format!("\nEngines on {}", list.join(", ")));
        }
        for job in record.launches.iter().filter_map(|l| l.job_id.as_deref()) {
            text.push_str(&format!("\nSlurm job {job}"));
        }
        text
    }

    /// Whether the controller is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => process_alive(self.controller_pid),
        }
    }

    /// Stops the controller and its engines, and waits for them.
    pub fn stop(mut self) -> anyhow::Result<()> {
        stop_controller(&self.profile, self.controller_pid, self.child.as_mut())?;
        if self.ephemeral {
            let _ = std::fs::remove_dir_all(&self.profile.dir);
        }
        Ok(())
    }
}

/// Whether a cluster's controller runs in `profile` (its record exists and
/// names a live process).
pub fn is_running(profile: &str) -> bool {
    Profile::new(Some(profile))
        .ok()
        .and_then(|p| p.read_record())
        .is_some_and(|record| process_alive(record.controller_pid))
}

/// `rparallel cluster stop`.
pub fn stop_cluster(profile: Option<&str>) -> anyhow::Result<()> {
    let profile = Profile::new(profile)?;
    let Some(record) = profile.read_record() else {
        bail!("no cluster is running in profile {}", profile.name);
    };
    stop_controller(&profile, record.controller_pid, None)
}

fn stop_controller(profile: &Profile, pid: u32, child: Option<&mut Child>) -> anyhow::Result<()> {
    let gone = |child: &mut Option<&mut Child>| match child {
        Some(c) => c.try_wait().ok().flatten().is_some(),
        None => !process_alive(pid),
    };
    let mut child = child;
    if !gone(&mut child) {
        // SAFETY: plain kill(2).
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone(&mut child) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !gone(&mut child) {
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            if let Some(c) = child.as_mut() {
                let _ = c.wait();
            }
        }
    }
    profile.remove_files();
    Ok(())
}

/// `rparallel cluster list`: one line per profile with a cluster record.
pub fn list_clusters() -> anyhow::Result<Vec<String>> {
    let mut lines = vec![format!(
        "{:<16} {:>10} {:>8}  {}",
        "PROFILE", "PID", "ENGINES", "STATE"
    )];
    for (profile, record) in Profile::all_with_clusters()? {
        let state = if process_alive(record.controller_pid) {
            "running"
        } else {
            "stale (controller gone)"
        };
        lines.push(format!(
            "{:<16} {:>10} {:>8}  {}",
            profile.name,
            record.controller_pid,
            format!("{}/{}", record.engines_alive, record.engines_requested),
            state
        ));
    }
    Ok(lines)
}

//! `rparallel host-engines`: the remote half of the ssh launcher. Run by
//! ssh on an engine host, it reads the engine connection file from stdin,
//! starts that host's engines (handing each the file on its own stdin),
//! and reports on stdout, one JSON object per line, its host name and
//! each engine's exit, so the controller fails an engine's work the moment
//! it dies. When its stdin ends (the ssh connection, hence the controller,
//! is gone) it stops its engines; when they have all exited, so does it.

use std::io::{BufRead, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context};
use rparallel_cluster::process::{describe_exit, die_with_parent, hostname, Program};
use rparallel_cluster::ConnectionFile;
use serde_json::json;

/// How long engines get to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

enum Event {
    Exited {
        pid: u32,
        reason: String,
        clean: bool,
    },
    /// stdin ended: the controller's side of the connection is gone.
    Orphaned,
}

/// Starts `count` engines on this host and stays with them.
pub fn run(count: usize, python: Option<PathBuf>, launch: Option<String>) -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the engine connection file from stdin")?;
    if line.trim().is_empty() {
        bail!("host-engines expects the engine connection file on stdin");
    }
    // Checked here, so a bad file is one error, not one per engine.
    ConnectionFile::parse(line.as_bytes(), Path::new("<stdin>"))?;
    let mut program = Program::current()?;
    if let Some(python) = &python {
        program = program.running(python);
    }
    say(&json!({ "hostname": hostname() }));

    let (events, news) = mpsc::channel();
    let mut live: Vec<u32> = Vec::with_capacity(count);
    for _ in 0..count {
        let mut command = program.command("engine");
        command.args(["--file", "-"]);
        if let Some(python) = &python {
            command.arg("--python").arg(python);
        }
        if let Some(launch) = &launch {
            command.arg("--launch").arg(launch);
        }
        // stdout carries this agent's reports: the engines' own output
        // goes to stderr, which ssh brings back too.
        let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::from(stderr))
            .stderr(Stdio::inherit());
        die_with_parent(&mut command);
        let mut child = command.spawn().context("cannot start an engine")?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(line.as_bytes());
        }
        let pid = child.id();
        live.push(pid);
        say(&json!({ "started": pid }));
        watch(child, events.clone());
    }
    let orphaned = events.clone();
    std::thread::spawn(move || {
        // Nothing more is sent on stdin; it ends when ssh does.
        let mut sink = Vec::new();
        let _ = std::io::stdin().lock().read_until(b'\0', &mut sink);
        let _ = orphaned.send(Event::Orphaned);
    });
    drop(events);

    let mut stopping = false;
    while !live.is_empty() {
        let event = if stopping {
            match news.recv_timeout(STOP_GRACE) {
                Ok(event) => event,
                Err(_) => {
                    live.iter().for_each(|&pid| signal(pid, libc::SIGKILL));
                    return Ok(());
                }
            }
        } else {
            match news.recv() {
                Ok(event) => event,
                Err(_) => return Ok(()),
            }
        };
        match event {
            Event::Exited { pid, reason, clean } => {
                live.retain(|&p| p != pid);
                let sent = say(&json!({ "exited": pid, "reason": reason, "clean": clean }));
                if !sent && !stopping {
                    stopping = stop(&live);
                }
            }
            Event::Orphaned if !stopping => stopping = stop(&live),
            Event::Orphaned => {}
        }
    }
    Ok(())
}

fn stop(live: &[u32]) -> bool {
    live.iter().for_each(|&pid| signal(pid, libc::SIGTERM));
    true
}

fn watch(mut child: Child, events: mpsc::Sender<Event>) {
    let pid = child.id();
    std::thread::spawn(move || {
        let (reason, clean) = match child.wait() {
            Ok(status) => (describe_exit(status), status.success()),
            Err(e) => (format!("lost track of the process: {e}"), false),
        };
        let _ = events.send(Event::Exited { pid, reason, clean });
    });
}

/// Writes one report line; false when nobody reads them any more.
fn say(report: &serde_json::Value) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{report}").and_then(|_| out.flush()).is_ok()
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

//! Process facts and bindings shared by whoever starts rparallel processes
//! (the client starting a controller, the controller starting engines).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// Whether a process with this pid exists and has not exited (a zombie
/// waiting for whoever adopted it to reap it has).
pub fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    if unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which may hold spaces.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next()),
            Some("Z" | "X")
        ),
        Err(_) => true,
    }
}

/// "signal 9", "exit code 1".
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (_, Some(signal)) => format!("signal {signal}"),
        (Some(code), None) => format!("exit code {code}"),
        (None, None) => "unknown exit".into(),
    }
}

/// Makes the child receive SIGKILL when the thread that spawned it dies.
/// Spawn from a thread that lives as long as the process.
pub fn die_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child
    // between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// How this installation runs its own subcommands (`controller`,
/// `engine`, `kernel`): the `rparallel` binary, which embeds Python, or the
/// Python package's `python -m rparallel` (a pip install), which runs them
/// inside that interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// The native binary; `--python` picks the environment it embeds.
    Binary(PathBuf),
    /// `python -m rparallel` with this interpreter.
    Module(PathBuf),
}

/// Set by the Python package when it hosts the command line.
static HOSTED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

impl Program {
    /// This process's way: `python -m rparallel` once the Python package
    /// said it hosts the command line ([`Program::host`]), else this binary.
    pub fn current() -> std::io::Result<Program> {
        if let Some(python) = HOSTED.get() {
            return Ok(Program::Module(python.clone()));
        }
        let exe = std::env::current_exe()?;
        // Rebuilt or reinstalled while running: Linux names the old file
        // `… (deleted)`; the new one at the same path is the binary to run.
        Ok(Program::Binary(
            match exe.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
                Some(path) => PathBuf::from(path),
                None => exe,
            },
        ))
    }

    /// Marks this process as the Python package's, running `python`: the
    /// processes it starts are `python -m rparallel …`. Once; later calls
    /// do nothing.
    pub fn host(python: PathBuf) {
        let _ = HOSTED.set(python);
    }

    /// Whether this process runs inside the Python package.
    pub fn is_hosted() -> bool {
        HOSTED.get().is_some()
    }

    /// The same program for a process that runs the Python environment of
    /// `python` (an engine, a kernel): the binary embeds it (its caller
    /// passes `--python`), the package runs that interpreter.
    pub fn running(&self, python: &Path) -> Program {
        match self {
            Program::Binary(_) => self.clone(),
            Program::Module(_) => Program::Module(python.to_path_buf()),
        }
    }

    /// The start of a command line running `subcommand`.
    pub fn argv(&self, subcommand: &str) -> Vec<std::ffi::OsString> {
        match self {
            Program::Binary(binary) => vec![binary.into(), subcommand.into()],
            Program::Module(python) => {
                vec![
                    python.into(),
                    "-m".into(),
                    "rparallel".into(),
                    subcommand.into(),
                ]
            }
        }
    }

    /// A command running `subcommand` (its options still to add).
    pub fn command(&self, subcommand: &str) -> Command {
        let argv = self.argv(subcommand);
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        command
    }
}

/// This host's name, as engines report it and clients show it.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer and its length are valid; gethostname NUL-terminates
    // when the name fits.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    if ok && end > 0 {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".into()
    }
}

/// How many engines a cluster gets when nobody says: one per CPU, at
/// least 2.
pub fn default_engines() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_described() {
        assert_eq!(describe_exit(ExitStatus::from_raw(9)), "signal 9");
        assert_eq!(describe_exit(ExitStatus::from_raw(1 << 8)), "exit code 1");
    }

    #[test]
    fn this_process_is_alive_and_named() {
        assert!(process_alive(std::process::id()));
        assert!(!hostname().is_empty());
        assert!(default_engines() >= 2);
    }
}

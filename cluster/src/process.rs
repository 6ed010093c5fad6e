//! Process facts and bindings shared by whoever starts rparallel processes
//! (the client starting a controller, the controller starting engines).

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;

/// Whether a process with this pid exists.
pub fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
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

/// The `rparallel` binary that runs controllers and engines: this one.
pub fn own_binary() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // Rebuilt or reinstalled while running: Linux names the old file
    // `… (deleted)`; the new one at the same path is the binary to run.
    match exe.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
        Some(path) => Ok(PathBuf::from(path)),
        None => Ok(exe),
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

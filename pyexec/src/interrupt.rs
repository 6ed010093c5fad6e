//! Interrupting Python from another thread.
//!
//! A pending `PyErr_SetInterrupt` is only noticed when Python next checks,
//! which `time.sleep` never does; a real SIGINT delivered to the Python
//! thread wakes the sleep (EINTR) and runs Python's handler, which raises
//! KeyboardInterrupt only while user code runs (see `python/shell.py`).
//! The processes the running code started get SIGINT too, as a terminal's
//! Ctrl-C reaches its whole foreground job: `os.system` ignores SIGINT
//! while it waits, so only its child can end it.

/// A handle that sends SIGINT to the thread running Python.
#[derive(Clone, Copy, Debug)]
pub struct Interrupter {
    thread: libc::pthread_t,
}

// SAFETY: pthread_t is a plain thread id; pthread_kill may be called from any thread.
unsafe impl Send for Interrupter {}
unsafe impl Sync for Interrupter {}

impl Interrupter {
    /// A handle for the calling thread; call it on the Python thread.
    pub fn for_current_thread() -> Self {
        // SAFETY: pthread_self has no preconditions.
        Interrupter {
            thread: unsafe { libc::pthread_self() },
        }
    }

    /// Raises KeyboardInterrupt in the running cell, if one runs, and
    /// interrupts the processes it started.
    pub fn interrupt(&self) {
        for pid in started_processes() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        // SAFETY: the thread lives as long as the process (it is the Python thread).
        unsafe {
            libc::pthread_kill(self.thread, libc::SIGINT);
        }
    }
}

/// Blocks SIGINT in the calling thread and the threads it spawns afterwards,
/// so an external SIGINT (Ctrl-C, `kill -INT`) reaches the Python thread,
/// where it interrupts `time.sleep` at once. Returns the guard that unblocks
/// it again for the calling thread.
pub fn block_sigint() -> SigintBlocked {
    set_sigint_mask(libc::SIG_BLOCK);
    SigintBlocked
}

/// Unblocks SIGINT in the current thread when dropped.
pub struct SigintBlocked;

impl Drop for SigintBlocked {
    fn drop(&mut self) {
        set_sigint_mask(libc::SIG_UNBLOCK);
    }
}

fn set_sigint_mask(how: libc::c_int) {
    // SAFETY: plain sigset manipulation on a zeroed set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// The descendants of this process in its process group (the job a
/// terminal's Ctrl-C reaches; what a cell detached with a session of its
/// own is left alone), except rparallel's own processes (a cluster a
/// kernel started, which `%px` interrupts its own way: this binary, or
/// `python -m rparallel`) and theirs; from `/proc`.
fn started_processes() -> Vec<libc::pid_t> {
    let own = std::fs::read_link("/proc/self/exe").ok();
    // SAFETY: getpgid has no memory-safety preconditions.
    let group = unsafe { libc::getpgid(0) };
    let mut children: std::collections::HashMap<libc::pid_t, Vec<libc::pid_t>> = Default::default();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(parent) = parent_of(pid) {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut todo = vec![std::process::id() as libc::pid_t];
    while let Some(pid) = todo.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            let exe = std::fs::read_link(format!("/proc/{child}/exe")).ok();
            let ours = (exe.is_some() && exe == own) || runs_the_package(child);
            // SAFETY: as above.
            if ours || unsafe { libc::getpgid(child) } != group {
                continue;
            }
            found.push(child);
            todo.push(child);
        }
    }
    found
}

/// Whether `pid` is `python -m rparallel …` (a pip install's controller
/// or engine).
fn runs_the_package(pid: libc::pid_t) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.len() > 2 && args[1] == b"-m" && args[2] == b"rparallel"
}

/// The parent of `pid` (`/proc/PID/stat`: the field after the command,
/// which is in parentheses and may hold anything).
fn parent_of(pid: libc::pid_t) -> Option<libc::pid_t> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_found_and_detached_ones_are_not() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep starts");
        let mut detached = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("sleep starts");
        let found = started_processes();
        assert!(found.contains(&(child.id() as libc::pid_t)), "{found:?}");
        assert!(
            !found.contains(&(detached.id() as libc::pid_t)),
            "{found:?}"
        );
        let _ = detached.kill();
        let _ = detached.wait();
        assert_eq!(
            parent_of(child.id() as libc::pid_t),
            Some(std::process::id() as i32)
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

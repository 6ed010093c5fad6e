//! Interrupting Python from another thread.
//!
//! A pending `PyErr_SetInterrupt` is only noticed when Python next checks,
//! which `time.sleep` never does; a real SIGINT delivered to the Python
//! thread wakes the sleep (EINTR) and runs Python's handler, which raises
//! KeyboardInterrupt only while user code runs (see `python/shell.py`).

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

    /// Raises KeyboardInterrupt in the running cell, if one runs.
    pub fn interrupt(&self) {
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

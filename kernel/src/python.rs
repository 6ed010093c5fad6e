//! The kernel's Python thread: an actor (`rparallel_pyexec::actor`) that
//! owns the shell; the channel tasks send it jobs. Its state is the
//! kernel's own [`PyShell`], or an engine's server holding one (an engine
//! bound as a kernel).

use std::sync::Arc;

use rparallel_pyexec::{PyShell, Sink};

/// The handle to the Python thread of a kernel whose state is `S`.
pub type PythonHandle<S> = rparallel_pyexec::actor::PythonHandle<S>;

/// What the kernel's channels need of the Python thread's state.
pub trait KernelState: 'static {
    /// Runs `job` with the shell, its output going to `sink` (the kernel's
    /// own: an engine bound as a kernel diverts its output there).
    fn with_shell<R>(&self, sink: &Arc<Sink>, job: impl FnOnce(&PyShell) -> R) -> R;
}

impl KernelState for PyShell {
    fn with_shell<R>(&self, _sink: &Arc<Sink>, job: impl FnOnce(&PyShell) -> R) -> R {
        job(self)
    }
}

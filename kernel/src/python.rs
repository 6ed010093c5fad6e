//! The kernel's Python thread: an actor (`rparallel_pyexec::actor`) that
//! owns the shell; the channel tasks send it jobs.

use rparallel_pyexec::PyShell;

/// The kernel's handle to its Python thread.
pub type PythonHandle = rparallel_pyexec::actor::PythonHandle<PyShell>;

//! The rparallel Jupyter kernel: the five channels over the execution
//! core (`rparallel_pyexec`), for the kernel process ([`run`], started by
//! `rparallel kernel`, see `rparallel_cli`) and for an engine bound as a
//! kernel ([`Kernel::serve`]).
//!
//! # Layout
//!
//! - [`server`]: starts a kernel ([`run`]: Python, then the sockets and
//!   channel tasks on the process's runtime, through `rparallel_pyexec::process`);
//!   [`Kernel`]: the channels of a connection file over a Python thread
//!   that runs already (the kernel's, or an engine's).
//! - [`sockets`]: binding the five sockets; ROUTER replies.
//! - [`iopub`]: how the kernel addresses what the execution core's
//!   publisher sends on IOPub.
//! - [`shell`]: the shell channel: busy/idle, dispatch, replies,
//!   stop_on_error; cells run through the execution core's execute path.
//! - [`control`]: the control channel: interrupt, shutdown, served while
//!   shell is busy.
//! - [`stdin`]: `input()` requests to the frontend.
//! - [`heartbeat`]: echoes pings.
//! - [`python`]: the handle to the Python thread (an actor owning the
//!   shell, or an engine's state holding one: [`KernelState`]).
//! - [`history`]: the session's input history.
//! - [`info`]: `kernel_info_reply` content, computed once.

mod control;
mod heartbeat;
mod history;
mod info;
mod iopub;
mod python;
mod server;
mod shell;
mod sockets;
mod stdin;

pub use python::{KernelState, PythonHandle};
pub use server::{run, Extras, Kernel, Serving};

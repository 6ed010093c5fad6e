//! `rparallel`: the kernel and its command line, as a library: the
//! `rparallel` binary (`main.rs`) and the Python package's
//! `python -m rparallel` (`pypackage/`) both run [`cli::run`].
//!
//! # Layout
//!
//! - [`cli`]: the command line (`install`, `kernel`, `cluster`,
//!   `controller`, `engine`).
//! - [`kernelspec`]: writing the `rparallel` kernelspec.
//! - [`server`]: starts a kernel (Python, then the sockets and channel
//!   tasks on the I/O thread) through `rparallel_pyexec::process`.
//! - [`sockets`]: binding the five sockets; ROUTER replies.
//! - [`iopub`]: how the kernel addresses what the execution core's
//!   publisher sends on IOPub.
//! - [`shell`]: the shell channel: busy/idle, dispatch, replies,
//!   stop_on_error; cells run through the execution core's execute path.
//! - [`control`]: the control channel: interrupt, shutdown, served while
//!   shell is busy.
//! - [`stdin`]: `input()` requests to the frontend.
//! - [`heartbeat`]: echoes pings.
//! - [`python`]: the handle to the Python thread (an actor owning the shell).
//! - [`history`]: the session's input history.
//! - [`info`]: `kernel_info_reply` content, computed once.

pub mod cli;
mod control;
mod heartbeat;
mod history;
mod info;
mod iopub;
mod kernelspec;
mod python;
mod server;
mod shell;
mod sockets;
mod stdin;

//! `rparallel`: the kernel and its command line.
//!
//! # Layout
//!
//! - [`cli`]: the command line (`install`, `kernel`).
//! - [`kernelspec`]: writing the `rparallel` kernelspec.
//! - [`server`]: starts a kernel: binds the five sockets and wires the tasks.
//! - [`sockets`]: socket reader tasks that verify and decode, dropping and
//!   logging anything unsigned or malformed.
//! - [`iopub`]: the IOPub publisher; coalesces small stream writes.
//! - [`shell`]: the shell channel: busy/idle, dispatch, replies, stop_on_error.
//! - [`control`]: the control channel: interrupt, shutdown, served while
//!   shell is busy.
//! - [`stdin`]: `input()` requests to the frontend.
//! - [`heartbeat`]: echoes pings.
//! - [`python`]: the Python thread (an actor that owns the interpreter) and
//!   the [`python::KernelSink`] its output goes to.
//! - [`px`]: the `%px` family (`%px`, `%%px`, `%autopx`, `%pxresult`,
//!   `%pxconfig`), run through the DirectView layer.
//! - [`history`]: the session's input history.
//! - [`info`]: `kernel_info_reply` content.

mod cli;
mod control;
mod heartbeat;
mod history;
mod info;
mod iopub;
mod kernelspec;
mod px;
mod python;
mod server;
mod shell;
mod sockets;
mod stdin;

fn main() -> std::process::ExitCode {
    cli::main()
}

//! The client of a cluster in Rust, with no Python in it: the connection to
//! the controller, what the client knows of engines and requests, which
//! engines a call goes to, and waiting. The Python module `rparallel`
//! (`rparallel-directview`) is a thin layer over this.
//!
//! # Layout
//!
//! - [`client`]: [`Client`]: connect, send typed requests, ask the
//!   controller, wait, interrupt, abort.
//! - `connection`: the DEALER connection, a task of the process's client
//!   runtime (driven by the waiting thread, see `rparallel_driver`);
//!   heartbeats and the controller process's watch.
//! - `runtime`: the process's client runtime, driven by whichever thread
//!   waits on it.
//! - [`tracker`]: live engines and the state of every request (replies,
//!   outputs, failures); condvar waits.
//! - [`wait`]: the one wait loop, and the policy on Ctrl-C and timeouts
//!   ([`wait::Deadline`]).
//! - [`request`]: the requests engines serve, typed.
//! - [`shape`]: what kind of call a result is for and how its replies
//!   combine.
//! - [`task_flags`]: [`TaskFlags`]: a load-balanced task's targets,
//!   retries, dependencies, timeout and label.
//! - [`targets`]: [`Targets`]: which engines, in every spelling.
//! - [`partition`]: which part of a sequence each engine gets.

pub mod client;
mod connection;
pub mod partition;
pub mod request;
mod runtime;
pub mod shape;
pub mod targets;
pub mod task_flags;
pub mod tracker;
pub mod wait;

pub use client::{Client, QueueStatus, HISTORY_LIMIT};
pub use request::{Request, Route};
pub use shape::{Call, Shape};
pub use targets::{TargetError, Targets};
pub use task_flags::TaskFlags;
pub use tracker::{State, Status, Task, Tracker};
pub use wait::{Deadline, Until, Waited, Waiter, INTERRUPT_GRACE};

//! The controller: one per cluster. Engines register with it and clients
//! talk to engines through it. It never runs Python.
//!
//! # Layout
//!
//! - [`server`]: `rparallel controller`: binds the ports, writes the
//!   profile's files (`rparallel_cluster`), starts local engines, runs the hub.
//! - [`registry`]: the engine table: ids, identities, liveness.
//! - [`hub`]: the routing loop: verifies every message, routes client
//!   requests to engines and engine output back to the client that asked,
//!   answers registration and heartbeats, announces engines coming and going.
//! - [`scheduler`]: load-balanced tasks: queued, given to the least
//!   loaded engine with room, rerun or failed when their engine dies.
//! - [`launch`]: starts engines (local processes, ssh, mpiexec, Slurm)
//!   and reports their exits and progress; [`launch::agent`] is the
//!   remote half of the ssh launcher (`rparallel host-engines`).
//! - [`record`]: the task record (`--db`): every request and its result,
//!   for `hub_history`, `db_query`, `get_result`, `resubmit`.
//! - [`events`]: what the launchers and signals tell the hub.
//!
//! The wire protocol is described in `docs/cluster-protocol.md`.

pub mod events;
pub mod hub;
pub mod launch;
pub mod record;
pub mod registry;
pub mod scheduler;
pub mod server;

pub use server::{run_controller, ControllerOptions};

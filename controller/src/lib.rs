//! The controller: one per cluster. Engines register with it and clients
//! talk to engines through it. It never runs Python.
//!
//! # Layout
//!
//! - [`profile`]: the profile directory, its connection files (mode 0600)
//!   and the cluster record used by `cluster list` / `stop`.
//! - [`registry`]: the engine table: ids, identities, liveness.
//! - [`hub`]: the routing loop: verifies every message, routes client
//!   requests to engines and engine output back to the client that asked,
//!   answers registration and heartbeats, announces engines coming and going.
//! - [`launcher`]: starts local engine processes and reports their exits.
//! - [`cluster`]: `rparallel cluster start|stop|list` and `rparallel controller`.
//!
//! The wire protocol is described in `docs/cluster-protocol.md`.

pub mod cluster;
pub mod hub;
pub mod launcher;
pub mod profile;
pub mod registry;

pub use cluster::{ClusterOptions, ControllerOptions};
pub use profile::Profile;

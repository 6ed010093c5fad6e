//! What a cluster is on disk and how one is started, stopped and listed.
//! Used by the controller (which writes the files), the engines (which
//! read theirs) and the client (which finds, starts and stops clusters).
//!
//! # Layout
//!
//! - [`launch`]: how engines are started ([`LaunchSpec`]: local, ssh, mpi,
//!   slurm; hosts) and how each launch is going ([`LaunchProgress`]).
//! - [`connection`]: [`ConnectionFile`], how to reach a controller (its
//!   address and key), written for clients and for engines, mode 0600.
//! - [`profile`]: profile directories (`$RPARALLEL_DIR/profile_<name>`),
//!   where the connection files and the [`ClusterRecord`] live.
//! - [`lifecycle`]: starting a controller with local engines, stopping it,
//!   listing clusters (`rparallel cluster start|stop|list`,
//!   `rparallel.Cluster`).
//! - [`scheduling`]: the controller's task scheduler settings
//!   ([`SchedulerSpec`]: scheme, high-water mark, task record).
//! - [`process`]: process facts and bindings the others need (alive?,
//!   exit reasons, dying with the parent, the host's name).

pub mod connection;
pub mod launch;
pub mod lifecycle;
pub mod process;
pub mod profile;
pub mod scheduling;

pub use connection::ConnectionFile;
pub use launch::{HostSlots, LaunchProgress, LaunchSpec, LauncherKind};
pub use lifecycle::{start_cluster, ClusterOptions, StartedCluster};
pub use profile::{ClusterRecord, Profile};
pub use scheduling::{SchedulerSpec, Scheme, TaskDb};

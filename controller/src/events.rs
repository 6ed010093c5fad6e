//! [`HubEvent`]: what the world outside the sockets tells the hub (an
//! engine process ended, a launch wrote to stderr or ended, the controller
//! was told to stop). Launchers and the signal handler send these; the hub
//! reads them.

/// What the outside world tells the hub.
#[derive(Debug)]
pub enum HubEvent {
    /// An engine process on `hostname` exited (reason such as "signal 9";
    /// `clean`: exit code 0, as after a shutdown request).
    ProcessExited {
        hostname: String,
        pid: u32,
        reason: String,
        clean: bool,
    },
    /// An engine's connection closed (its process ended, wherever it ran):
    /// the socket identity.
    ConnectionClosed(bytes::Bytes),
    /// News of one launch (an ssh connection, an mpiexec, a Slurm job).
    Launch { launch: String, news: LaunchNews },
    /// Stop: shut the engines down and return.
    Stop,
}

/// What a launch reports.
#[derive(Debug)]
pub enum LaunchNews {
    /// A line its processes wrote to stderr.
    Output(String),
    /// The Slurm job id, once `sbatch` gave it.
    Job(String),
    /// The Slurm job's state when it changes (PENDING, RUNNING).
    State(String),
    /// It ended: its engines are gone (or never came).
    Ended(String),
}

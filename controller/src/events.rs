//! [`HubEvent`]: what the world outside the sockets tells the hub (a local
//! engine process ended, the controller was told to stop). The launcher
//! and the signal handler send these; the hub reads them.

/// What the outside world tells the hub.
#[derive(Debug)]
pub enum HubEvent {
    /// A local engine process exited (pid, reason such as "signal 9";
    /// `clean`: exit code 0, as after a shutdown request).
    ProcessExited {
        pid: u32,
        reason: String,
        clean: bool,
    },
    /// Stop: shut the engines down and return.
    Stop,
}

//! The client's connection to the controller: one DEALER socket served by
//! a task of the process's client runtime ([`driver`]), so arrivals are
//! recorded even while Python is busy. A thread waiting for a reply drives
//! that runtime itself (its reply wakes it, not an I/O thread), and a
//! request leaves from the thread that sends it when nobody else drives;
//! the `rparallel-client` thread drives while nobody waits. Heartbeats
//! detect a controller that is gone.

use std::sync::Arc;
use std::time::Duration;

use rparallel_cluster::ConnectionFile;
use rparallel_protocol::{shm, Message, Session};
use tokio::sync::mpsc;
use tokio::time::Instant;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend};

use crate::request::Route;
use crate::runtime::driver;
use crate::tracker::Tracker;

/// Requests in flight are bounded by this queue; a full queue makes the
/// sender wait (backpressure instead of unbounded memory).
const OUTGOING_QUEUE: usize = 8192;
/// Requests in flight to engines (sent, not answered) at most: past this a
/// sender waits for replies. The zeromq crate has no high-water mark, so
/// without this credit a fast producer could grow the controller's and the
/// engines' queues without bound.
const MAX_IN_FLIGHT: usize = 10_000;
/// Missed heartbeat replies before the controller is declared gone.
const HEARTBEAT_MISSES: u32 = 3;

enum Outgoing {
    Send { route: Route, message: Box<Message> },
    Close,
}

/// A cheap, cloneable handle to the connection's task.
#[derive(Clone)]
pub(crate) struct Connection {
    tx: mpsc::Sender<Outgoing>,
    pub(crate) session: Session,
    pub(crate) tracker: Arc<Tracker>,
}

impl Connection {
    /// Connects to the controller described by `file`; blocks until
    /// connected or `timeout`.
    pub fn connect(file: &ConnectionFile, timeout: Duration) -> anyhow::Result<Connection> {
        let session = Session::new(file.key.as_bytes(), "client");
        let tracker = Tracker::new();
        let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
        let endpoint = file.endpoint();
        let driver = driver();
        let socket = driver.wait_on(async {
            let mut socket = DealerSocket::new();
            match tokio::time::timeout(timeout, socket.connect(&endpoint)).await {
                Ok(Ok(())) => Ok(socket),
                Ok(Err(e)) => Err(anyhow::anyhow!(
                    "cannot connect to the controller at {endpoint}: {e}"
                )),
                Err(_) => Err(anyhow::anyhow!(
                    "no controller answered at {endpoint} within {timeout:?}"
                )),
            }
        })?;
        let watched = file.controller_pid.and_then(ControllerProcess::find);
        let served =
            driver
                .runtime()
                .spawn(serve(socket, session.clone(), tracker.clone(), rx, watched));
        let on_panic = tracker.clone();
        driver.runtime().spawn(async move {
            if served.await.is_err() {
                // Fail every wait instead of leaving it hanging.
                on_panic.controller_lost("the client's connection task failed");
            }
        });
        Ok(Connection {
            tx,
            session,
            tracker,
        })
    }

    /// Sends each message to its route (an engine, the scheduler, the
    /// controller) and records it. Blocks while the outgoing queue is full.
    /// Work for an engine waits for credit; `urgent` requests (interrupts,
    /// aborts) and the controller's own never do.
    ///
    /// Requests to an idle cluster leave at once from this thread (the
    /// caller usually waits for their replies next); while others are in
    /// flight, the I/O thread sends them, in batches, and the caller goes on.
    pub fn send(&self, messages: Vec<(Route, Message)>, urgent: bool) {
        let idle = self.tracker.in_flight() == 0;
        for (route, message) in messages {
            if route != Route::Controller && !urgent {
                self.tracker.wait_for_credit(MAX_IN_FLIGHT);
            }
            self.tracker.submit(&message.header.msg_id, route);
            let _ = self.tx.blocking_send(Outgoing::Send {
                route,
                message: Box::new(message),
            });
        }
        // A task of some runtime may not block on another: it hands over too.
        if idle && tokio::runtime::Handle::try_current().is_err() {
            driver().turn();
        } else {
            driver().hand_over();
        }
    }

    pub fn close(&self) {
        let _ = self.tx.try_send(Outgoing::Close);
    }
}

/// The controller's process, when it runs on this host: its exit is seen
/// at once instead of after missed heartbeats.
struct ControllerProcess {
    pid: u32,
    cmdline: Vec<u8>,
}

impl ControllerProcess {
    /// Only a process that is an rparallel controller counts: through an
    /// ssh tunnel the pid in the file belongs to another host.
    fn find(pid: u32) -> Option<Self> {
        let cmdline = Self::cmdline_of(pid)?;
        let is_controller = cmdline.split(|b| *b == 0).any(|arg| arg == b"controller");
        is_controller.then_some(ControllerProcess { pid, cmdline })
    }

    fn cmdline_of(pid: u32) -> Option<Vec<u8>> {
        std::fs::read(format!("/proc/{pid}/cmdline")).ok()
    }

    /// Gone, or its pid now belongs to another process.
    fn exited(&self) -> bool {
        Self::cmdline_of(self.pid).is_none_or(|c| c != self.cmdline)
    }
}

/// How often a local controller's process is checked.
const PROCESS_CHECK: Duration = Duration::from_millis(200);

async fn serve(
    mut socket: DealerSocket,
    session: Session,
    tracker: Arc<Tracker>,
    mut outgoing: mpsc::Receiver<Outgoing>,
    controller: Option<ControllerProcess>,
) {
    let period = Duration::from_secs(1);
    let mut heartbeat = tokio::time::interval(period);
    let mut process_check = tokio::time::interval(PROCESS_CHECK);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            out = outgoing.recv() => match out {
                Some(Outgoing::Send { route, message }) => {
                    let mut frames = session.encode(&message);
                    if let Some(frame) = route.frame() {
                        frames.push_front(frame);
                    }
                    if let Err(e) = socket.send(frames).await {
                        tracker.controller_lost(&format!("cannot reach the controller: {e}"));
                    }
                }
                Some(Outgoing::Close) | None => return,
            },
            received = socket.recv() => match received {
                Ok(frames) => match session.decode(frames) {
                    Ok(mut message) => {
                        last_heard = Instant::now();
                        if let Err(e) = shm::import(&mut message) {
                            shm_failed(&mut message, e);
                        }
                        if message.msg_type() != "heartbeat_reply" {
                            tracker.on_message(message);
                        }
                    }
                    Err(e) => tracing::warn!("client: dropped a message: {e}"),
                },
                Err(e) => {
                    tracker.controller_lost(&format!("the connection to the controller failed: {e}"));
                    return;
                }
            },
            _ = process_check.tick(), if controller.is_some() => {
                if controller.as_ref().is_some_and(ControllerProcess::exited) {
                    let pid = controller.as_ref().map_or(0, |c| c.pid);
                    tracker.controller_lost(&format!("the controller (pid {pid}) exited"));
                    return;
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > period * HEARTBEAT_MISSES {
                    tracker.controller_lost("the controller is gone (no heartbeat reply)");
                    return;
                }
                let ping = session.message("heartbeat", serde_json::json!({}), None);
                let _ = socket.send(session.encode(&ping)).await;
            }
        }
    }
}

/// A reply whose buffers could not be read back from shared memory becomes
/// an error reply saying so (rather than a confusing unpickling error).
fn shm_failed(message: &mut Message, e: std::io::Error) {
    tracing::warn!("client: {e}");
    let evalue = format!("cannot read a result sent through shared memory: {e}");
    message.content = serde_json::json!({
        "status": "error",
        "ename": "OSError",
        "evalue": evalue,
        "traceback": [format!("OSError: {evalue}")],
    });
    message.buffers.clear();
}

//! [`Client`]: a connection to a cluster's controller, and everything a
//! client does with it that needs no Python: sending typed requests,
//! asking the controller, waiting, interrupting, aborting.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rparallel_cluster::ConnectionFile;
use rparallel_protocol::{shm, Message};
use serde_json::Value;

use crate::connection::Connection;
use crate::request::{Request, Route};
use crate::task_flags::TaskFlags;
use crate::tracker::{AllDone, State, Status, Tracker};
use crate::wait::{wait_until, Deadline, Until, Waited, Waiter, INTERRUPT_GRACE, SLICE};

/// One connection to a controller, shared by a client's Python objects.
pub struct Client {
    connection: Connection,
    /// The msg_ids of the work submitted, oldest first (`rc.history`);
    /// the last [`HISTORY_LIMIT`] of them, so a long session's memory
    /// stays flat.
    history: Mutex<VecDeque<String>>,
}

/// How many msg_ids [`Client::history`] keeps.
pub const HISTORY_LIMIT: usize = 1 << 16;

/// Each engine's queues, and the tasks given to none yet.
pub type Queues = (BTreeMap<u32, QueueStatus>, Vec<String>);

/// One engine's queues as this client sees them (`rc.queue_status()`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueueStatus {
    /// Requests sent to it directly, not finished.
    pub queue: Vec<String>,
    /// Load-balanced tasks it was given, not finished.
    pub tasks: Vec<String>,
    /// How many requests it finished.
    pub completed: u64,
}

impl Client {
    /// Connects to the controller `file` names (blocking, up to `timeout`).
    /// Ask it for its engines next ([`Client::handshake`]).
    pub fn connect(file: &ConnectionFile, timeout: Duration) -> anyhow::Result<Arc<Client>> {
        let connection = Connection::connect(file, timeout)?;
        Ok(Arc::new(Client {
            connection,
            history: Mutex::default(),
        }))
    }

    /// Learns the controller's engines (`connection_request`); false when
    /// it did not answer within `timeout`.
    pub fn handshake<W: Waiter>(
        &self,
        waiter: &mut W,
        timeout: Duration,
    ) -> Result<bool, W::Error> {
        let reply = self.ask_controller(
            waiter,
            "connection_request",
            Value::Object(Default::default()),
            timeout,
        )?;
        Ok(reply.is_some())
    }

    pub fn tracker(&self) -> &Tracker {
        &self.connection.tracker
    }

    /// Live engine ids, sorted.
    pub fn ids(&self) -> Vec<u32> {
        self.tracker().lock().engines.keys().copied().collect()
    }

    /// Why the controller can no longer be reached, once it cannot.
    pub fn controller_lost(&self) -> Option<String> {
        self.tracker().lock().controller_lost.clone()
    }

    /// Sends `request` to `engine`; returns its msg_id. Blocks while too
    /// many requests are in flight (urgent ones never wait).
    pub fn send(&self, engine: u32, request: Request) -> String {
        self.send_each(&[engine], request).remove(0)
    }

    /// Sends `request` to each of `engines` (a message each); returns
    /// their msg_ids in order. Large buffers go to the engines on this host
    /// through shared memory written once for them all.
    pub fn send_each(&self, engines: &[u32], request: Request) -> Vec<String> {
        let urgent = request.is_urgent();
        let returns_value = request.returns_value();
        let (msg_type, content, buffers) = request.into_parts();
        let mut messages: Vec<Message> = engines
            .iter()
            .map(|_| {
                let mut message = self
                    .connection
                    .session
                    .message(msg_type, content.clone(), None);
                message.buffers = buffers.clone();
                message
            })
            .collect();
        self.use_shared_memory(engines, returns_value, &mut messages);
        let msg_ids = messages.iter().map(|m| m.header.msg_id.clone()).collect();
        let routed = engines.iter().map(|&e| Route::Engine(e)).zip(messages);
        self.connection.send(routed.collect(), urgent);
        msg_ids
    }

    /// Sends one request to each engine, `requests[i]` to `engines[i]`;
    /// returns their msg_ids in order.
    pub fn send_many(&self, engines: &[u32], requests: Vec<Request>) -> Vec<String> {
        let urgent = requests.iter().any(Request::is_urgent);
        let mut messages = Vec::with_capacity(engines.len());
        for (&engine, request) in engines.iter().zip(requests) {
            let returns_value = request.returns_value();
            let mut message = self.message(request);
            self.use_shared_memory(&[engine], returns_value, std::slice::from_mut(&mut message));
            messages.push((Route::Engine(engine), message));
        }
        let msg_ids = messages
            .iter()
            .map(|(_, m)| m.header.msg_id.clone())
            .collect();
        self.connection.send(messages, urgent);
        msg_ids
    }

    /// The message of `request`, with its buffers (signed when sent).
    fn message(&self, request: Request) -> Message {
        let (msg_type, content, buffers) = request.into_parts();
        let mut message = self.connection.session.message(msg_type, content, None);
        message.buffers = buffers;
        message
    }

    /// Sends `request` to the controller's scheduler, which gives it to
    /// an engine with room as its `flags` allow; returns its msg_id.
    /// Blocks while too many requests are in flight.
    pub fn send_task(&self, request: Request, flags: &TaskFlags) -> String {
        let urgent = request.is_urgent();
        let mut message = self.message(request);
        flags.write(&mut message.metadata);
        let msg_id = message.header.msg_id.clone();
        self.connection.send(vec![(Route::Task, message)], urgent);
        msg_id
    }

    /// Sends a request to the controller itself; returns its msg_id.
    fn send_controller(&self, msg_type: &str, content: Value) -> String {
        let message = self.connection.session.message(msg_type, content, None);
        let msg_id = message.header.msg_id.clone();
        self.connection
            .send(vec![(Route::Controller, message)], true);
        msg_id
    }

    /// Sends a request to the controller and waits for its reply's content
    /// (None: no reply within `timeout`).
    pub fn ask_controller<W: Waiter>(
        &self,
        waiter: &mut W,
        msg_type: &str,
        content: Value,
        timeout: Duration,
    ) -> Result<Option<Value>, W::Error> {
        let reply = self.ask_controller_message(waiter, msg_type, content, timeout)?;
        Ok(reply.map(|r| r.content.clone()))
    }

    /// [`Client::ask_controller`], with the whole reply (its buffers too).
    pub fn ask_controller_message<W: Waiter>(
        &self,
        waiter: &mut W,
        msg_type: &str,
        content: Value,
        timeout: Duration,
    ) -> Result<Option<Arc<Message>>, W::Error> {
        let msg_id = self.send_controller(msg_type, content);
        let ids = std::slice::from_ref(&msg_id);
        let waited = self.wait(ids, Deadline::Return(timeout), Until::AllDone, waiter);
        let reply = self
            .tracker()
            .lock()
            .tasks
            .get(&msg_id)
            .and_then(|t| t.reply.clone());
        self.tracker().forget(ids);
        Ok(if waited? == Waited::Done { reply } else { None })
    }

    /// With engines on this host, large buffers go through shared memory
    /// both ways (an engine answers so when it sees our host id).
    fn use_shared_memory(&self, engines: &[u32], returns_value: bool, messages: &mut [Message]) {
        let local: Vec<bool> = {
            let state = self.tracker().lock();
            engines
                .iter()
                .map(|engine| {
                    let host = state.engines.get(engine).and_then(|e| e["host"].as_str());
                    shm::is_local(host)
                })
                .collect()
        };
        let mut here: Vec<&mut Message> = messages
            .iter_mut()
            .zip(local)
            .filter_map(|(message, local)| local.then_some(message))
            .collect();
        if here.is_empty() {
            return;
        }
        if returns_value {
            for message in here.iter_mut() {
                message.metadata[shm::HOST_KEY] = shm::host_id().into();
            }
        }
        if let Err(e) = shm::export_many(&mut here) {
            tracing::warn!("shared memory unavailable, sending through the socket: {e}");
        }
    }

    /// Waits for `msg_ids` until `deadline`, or as `until` says. An
    /// interrupt of the wait (Ctrl-C, the notebook's stop button) and
    /// [`Deadline::Interrupt`] pass an interrupt on to the engines still
    /// running them.
    pub fn wait<W: Waiter>(
        &self,
        msg_ids: &[String],
        deadline: Deadline,
        until: Until,
        waiter: &mut W,
    ) -> Result<Waited, W::Error> {
        let tracker = self.tracker();
        let all = AllDone::new(msg_ids);
        let all_done = |state: &State| all.check(state);
        let over = |state: &State| match until {
            Until::AllDone => all_done(state),
            Until::AllDoneOrLost => all_done(state) || Tracker::any_lost(state, msg_ids),
            Until::AnyDone => Tracker::any_done(state, msg_ids),
        };
        match wait_until(tracker, waiter, deadline.timeout(), over) {
            Ok(true) if until == Until::AnyDone || all_done(&tracker.lock()) => Ok(Waited::Done),
            Ok(true) => Ok(Waited::Lost),
            Ok(false) => match deadline {
                Deadline::Interrupt(after) => {
                    let running = self.running_engines(msg_ids);
                    waiter.interrupting(&running, after)?;
                    self.stop_engines(msg_ids, waiter)?;
                    let running = self.running_engines(msg_ids);
                    Ok(if running.is_empty() {
                        Waited::Done
                    } else {
                        Waited::StillRunning(running)
                    })
                }
                _ => Ok(Waited::TimedOut),
            },
            // Ctrl-C while waiting: the remote code stops too. What the
            // engines show while stopping is shown, then the interrupt goes
            // on up.
            Err(e) if waiter.is_interrupt(&e) => {
                self.stop_engines(msg_ids, waiter)?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Interrupts the engines running `msg_ids` and gives them
    /// [`INTERRUPT_GRACE`] to stop (short enough that an interrupted cell
    /// ends within 2 s), showing what arrives meanwhile.
    fn stop_engines<W: Waiter>(&self, msg_ids: &[String], waiter: &mut W) -> Result<(), W::Error> {
        let sent = match waiter.interrupt_signal() {
            Some(signal) => self
                .running_engines(msg_ids)
                .into_iter()
                .map(|engine| self.send(engine, Request::Signal(signal)))
                .collect(),
            None => self.send_interrupts(msg_ids),
        };
        let deadline = Instant::now() + INTERRUPT_GRACE;
        let tracker = self.tracker();
        let all = AllDone::new(msg_ids);
        let all_done = |state: &State| all.check(state);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            waiter.block(tracker, left.min(SLICE), &all_done);
            let done = all_done(&tracker.lock());
            if done || left.is_zero() {
                tracker.forget(&sent);
                return waiter.show(tracker, true);
            }
            waiter.show(tracker, false)?;
        }
    }

    /// [`Client::wait`] for every request not finished now.
    pub fn wait_all<W: Waiter>(
        &self,
        deadline: Deadline,
        waiter: &mut W,
    ) -> Result<Waited, W::Error> {
        let pending = self.pending();
        self.wait(&pending, deadline, Until::AllDone, waiter)
    }

    /// The msg_ids of every request not finished.
    fn pending(&self) -> Vec<String> {
        let state = self.tracker().lock();
        state
            .tasks
            .iter()
            .filter(|(_, t)| t.status == Status::Pending)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Engines still running one of `msg_ids`.
    pub fn running_engines(&self, msg_ids: &[String]) -> Vec<u32> {
        let state = self.tracker().lock();
        let engines: BTreeSet<u32> = msg_ids
            .iter()
            .filter_map(|id| state.tasks.get(id))
            .filter(|t| t.status == Status::Pending)
            .filter_map(|t| t.engine)
            .collect();
        engines.into_iter().collect()
    }

    /// Sends interrupt_request to every engine running one of `msg_ids`;
    /// returns the interrupt requests' ids.
    pub fn send_interrupts(&self, msg_ids: &[String]) -> Vec<String> {
        self.running_engines(msg_ids)
            .into_iter()
            .map(|engine| self.send(engine, Request::Interrupt))
            .collect()
    }

    /// Aborts the requests among `msg_ids` that have not started (their
    /// results fail with TaskAborted); waits briefly for the engines to
    /// confirm.
    pub fn abort<W: Waiter>(&self, msg_ids: &[String], waiter: &mut W) -> Result<(), W::Error> {
        let mut by_engine: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
        let mut queued = Vec::new();
        {
            let state = self.tracker().lock();
            for msg_id in msg_ids {
                match state.tasks.get(msg_id) {
                    Some(task) if task.status == Status::Pending => match task.engine {
                        Some(engine) => by_engine.entry(engine).or_default().push(msg_id.clone()),
                        // Still in the scheduler's queue (or just given
                        // to an engine: then it runs).
                        None if task.balanced => queued.push(msg_id.clone()),
                        None => {}
                    },
                    _ => {}
                }
            }
        }
        let mut sent: Vec<String> = by_engine
            .into_iter()
            .map(|(engine, ids)| self.send(engine, Request::Abort(ids)))
            .collect();
        if !queued.is_empty() {
            sent.push(self.send_task(Request::Abort(queued), &TaskFlags::default()));
        }
        let waited = self.wait(
            &sent,
            Deadline::Return(INTERRUPT_GRACE),
            Until::AllDone,
            waiter,
        );
        self.tracker().forget(&sent);
        waited.map(|_| ())
    }

    /// Adds submitted work to [`Client::history`].
    pub fn remember(&self, msg_ids: &[String]) {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.extend(msg_ids.iter().cloned());
        let excess = history.len().saturating_sub(HISTORY_LIMIT);
        history.drain(..excess);
    }

    /// The msg_ids of the work submitted, oldest first.
    pub fn history(&self) -> Vec<String> {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.iter().cloned().collect()
    }

    /// Empties [`Client::history`].
    pub fn forget_history(&self) {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// msg_ids of the requests to engines not finished yet.
    pub fn outstanding(&self) -> Vec<String> {
        let state = self.tracker().lock();
        state
            .tasks
            .iter()
            .filter(|(_, t)| t.status == Status::Pending && (t.engine.is_some() || t.balanced))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Each live engine's queues, and the load-balanced tasks not given
    /// to an engine yet ("unassigned"). Direct requests are this client's;
    /// load-balanced tasks are every client's, as the controller's
    /// scheduler has them (`queue_request`), when it answers.
    pub fn queue_status<W: Waiter>(&self, waiter: &mut W) -> Result<Queues, W::Error> {
        let scheduler = self.ask_controller(
            waiter,
            "queue_request",
            Value::Object(Default::default()),
            Duration::from_secs(10),
        )?;
        let (mut engines, mut unassigned) = self.own_queues();
        if let Some(scheduler) = scheduler.filter(|s| s["status"] == "ok") {
            let ids = |v: &Value| -> Vec<String> {
                v.as_array()
                    .map(|l| {
                        l.iter()
                            .filter_map(|i| i.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for status in engines.values_mut() {
                status.tasks.clear();
            }
            for (engine, tasks) in scheduler["tasks"].as_object().into_iter().flatten() {
                if let Some(status) = engine.parse().ok().and_then(|e: u32| engines.get_mut(&e)) {
                    status.tasks = ids(tasks);
                }
            }
            unassigned = ids(&scheduler["unassigned"]);
        }
        Ok((engines, unassigned))
    }

    /// [`Client::queue_status`] from what this client knows alone.
    fn own_queues(&self) -> Queues {
        let state = self.tracker().lock();
        let mut engines: BTreeMap<u32, QueueStatus> = state
            .engines
            .keys()
            .map(|&id| {
                let completed = state.completed.get(&id).copied().unwrap_or(0);
                (
                    id,
                    QueueStatus {
                        completed,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let mut unassigned = Vec::new();
        for (msg_id, task) in &state.tasks {
            if task.status != Status::Pending {
                continue;
            }
            match (task.engine.and_then(|e| engines.get_mut(&e)), task.balanced) {
                (Some(status), true) => status.tasks.push(msg_id.clone()),
                (Some(status), false) => status.queue.push(msg_id.clone()),
                (None, true) => unassigned.push(msg_id.clone()),
                (None, false) => {}
            }
        }
        (engines, unassigned)
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.connection.close();
    }
}

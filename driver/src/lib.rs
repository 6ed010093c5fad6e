//! Who drives a process's tokio runtime: a thread that waits on it (the
//! Python thread of an engine or kernel between requests, a client call
//! waiting for its reply), or an I/O thread while nobody waits.
//!
//! A message that arrives for a waiting thread then wakes exactly that
//! thread: it sleeps in the runtime's `epoll`, reads and decodes the
//! message itself, and what it sends next leaves from the same thread.
//! With a separate I/O thread each message cost two wake-ups instead (the
//! I/O thread, then the waiter), each a halted vCPU on a virtual machine
//! (≈ 20 µs here).
//!
//! While nobody waits the runtime must still turn: heartbeats prove
//! liveness, interrupts and aborts arrive, output streams out, queues
//! drain. So the I/O thread watches ([`Driver::watch`]): once nobody has
//! waited for [`GRACE`], it takes the runtime over until somebody waits
//! again. Short gaps between waits never wake it; it checks every [`GRACE`]
//! while waits come and go, and sleeps until needed after [`IDLE_CHECKS`]
//! checks in which somebody waited the whole time (an idle engine makes no
//! wake-ups of its own).
//!
//! tokio's current-thread runtime allows this: whichever thread calls
//! `block_on` while no other does drives it; another caller meanwhile polls
//! only its own future, and takes the runtime over when the first returns.

use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// How long nobody waits before the I/O thread takes the runtime over (so
/// heartbeats, interrupts and output are late by at most twice this).
pub const GRACE: Duration = Duration::from_millis(10);
/// Checks (one per [`GRACE`]) in which somebody waited throughout before
/// the I/O thread sleeps until nobody waits: one second.
pub const IDLE_CHECKS: u32 = 100;

/// A process's runtime and who drives it. Cheap to clone.
#[derive(Clone)]
pub struct Driver {
    runtime: &'static Runtime,
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the I/O thread from its sleep.
    wake: Condvar,
    /// Ends the I/O thread's turn at driving.
    release: Notify,
}

struct State {
    /// Threads waiting in the runtime now.
    waiting: usize,
    /// Counts the ends of waits, so the I/O thread can tell one long gap
    /// from many short ones.
    waits: u64,
    /// Take the runtime over without waiting for [`GRACE`].
    at_once: bool,
    watcher: Watcher,
}

#[derive(Debug, PartialEq, Eq)]
enum Watcher {
    Watching,
    Asleep,
    Driving,
}

impl Driver {
    /// A driver for `runtime`. Until a thread first waits on it, the I/O
    /// thread drives: start that thread with [`Driver::watch`].
    pub fn new(runtime: Runtime) -> Self {
        Driver {
            // Lives as long as the process: a runtime may not be dropped
            // while a thread may be inside `block_on`.
            runtime: Box::leak(Box::new(runtime)),
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    waiting: 0,
                    waits: 0,
                    at_once: true,
                    watcher: Watcher::Watching,
                }),
                wake: Condvar::new(),
                release: Notify::new(),
            }),
        }
    }

    /// A current-thread runtime with I/O and timers, whose blocking-pool
    /// threads (which a waiting thread may start) run `on_thread_start`.
    pub fn build(on_thread_start: impl Fn() + Send + Sync + 'static) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_start(on_thread_start)
            .build()?;
        Ok(Driver::new(runtime))
    }

    pub fn runtime(&self) -> &'static Runtime {
        self.runtime
    }

    /// Waits until `future` is ready, driving the runtime meanwhile (or,
    /// while another thread drives it, letting that thread wake this one).
    /// Not from inside a runtime.
    pub fn wait_on<F: Future>(&self, future: F) -> F::Output {
        let mut state = self.shared.lock();
        state.at_once = false;
        if state.watcher == Watcher::Driving {
            // Hand the runtime to this thread.
            self.shared.release.notify_one();
        }
        let _waiting = Waiting::start(&self.shared, state);
        self.runtime.block_on(future)
    }

    /// Runs what is ready on the runtime (a message just queued goes out
    /// from this thread), unless another thread drives it: that one is
    /// woken by what was queued. Not from inside a runtime.
    pub fn turn(&self) {
        let state = self.shared.lock();
        if state.watcher == Watcher::Driving {
            return;
        }
        let _waiting = Waiting::start(&self.shared, state);
        self.runtime.block_on(tokio::task::yield_now());
    }

    /// The I/O thread drives at once, unless a thread waits on the runtime
    /// (a stream of messages then leaves in batches from the I/O thread
    /// while the sender goes on).
    pub fn hand_over(&self) {
        let mut state = self.shared.lock();
        if state.waiting == 0 && state.watcher != Watcher::Driving {
            state.at_once = true;
            self.shared.wake.notify_one();
        }
    }

    /// Nobody will wait any more (the process is ending): the I/O thread
    /// drives from now on, at once.
    pub fn leave(&self) {
        let mut state = self.shared.lock();
        state.at_once = true;
        self.shared.wake.notify_one();
    }

    /// The I/O thread's loop: drives the runtime whenever nobody has waited
    /// on it for [`GRACE`], until somebody does.
    pub fn watch(&self) -> ! {
        let shared = &self.shared;
        let mut idle_checks = 0;
        let mut state = shared.lock();
        loop {
            let drive = if state.at_once {
                true
            } else if state.waiting == 0 {
                let waits = state.waits;
                state = shared.wait(state, Some(GRACE));
                state.waiting == 0 && state.waits == waits
            } else if idle_checks < IDLE_CHECKS {
                idle_checks += 1;
                state = shared.wait(state, Some(GRACE));
                false
            } else {
                state.watcher = Watcher::Asleep;
                state = shared.wait(state, None);
                state.watcher = Watcher::Watching;
                idle_checks = 0;
                false
            };
            if drive {
                state.watcher = Watcher::Driving;
                drop(state);
                self.runtime.block_on(shared.release.notified());
                state = shared.lock();
                state.watcher = Watcher::Watching;
                idle_checks = 0;
            }
        }
    }
}

/// A thread waiting in the runtime, until dropped (however the wait ends).
struct Waiting<'a>(&'a Shared);

impl<'a> Waiting<'a> {
    fn start(shared: &'a Shared, mut state: MutexGuard<'_, State>) -> Self {
        state.waiting += 1;
        Waiting(shared)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.waiting -= 1;
        state.waits += 1;
        if state.waiting == 0 && state.watcher == Watcher::Asleep {
            // It slept through a long wait; it watches again.
            self.0.wake.notify_one();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(
        &self,
        state: MutexGuard<'a, State>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, State> {
        match timeout {
            Some(timeout) => {
                self.wake
                    .wait_timeout(state, timeout)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => self.wake.wait(state).unwrap_or_else(|e| e.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    fn started() -> Driver {
        let driver = Driver::build(|| {}).unwrap();
        let watcher = driver.clone();
        std::thread::spawn(move || watcher.watch());
        driver
    }

    /// A task that counts milliseconds.
    fn ticking(driver: &Driver) -> Arc<AtomicU32> {
        let ticks = Arc::new(AtomicU32::new(0));
        let counted = ticks.clone();
        driver.runtime().spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        ticks
    }

    /// The runtime keeps turning while nobody waits on it (the I/O thread
    /// takes over), and a waiting thread gets it back promptly.
    #[test]
    fn the_watcher_drives_while_nobody_waits() {
        let driver = started();
        let ticks = ticking(&driver);
        driver.wait_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
        let before = ticks.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(200));
        let during = ticks.load(Ordering::Relaxed) - before;
        assert!(during > 50, "the runtime stalled: {during} ticks in 200 ms");
        let start = Instant::now();
        driver.wait_on(async { tokio::time::sleep(Duration::from_millis(1)).await });
        assert!(start.elapsed() < Duration::from_millis(500));
    }

    /// After a wait long enough for the watcher to fall asleep, the runtime
    /// still turns as soon as nobody waits.
    #[test]
    fn the_watcher_wakes_after_a_long_wait() {
        let driver = started();
        let ticks = ticking(&driver);
        let long = GRACE * (IDLE_CHECKS + 20);
        driver.wait_on(async { tokio::time::sleep(long).await });
        assert_eq!(driver.shared.lock().watcher, Watcher::Asleep);
        let before = ticks.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(200));
        let during = ticks.load(Ordering::Relaxed) - before;
        assert!(during > 50, "the runtime stalled: {during} ticks in 200 ms");
    }

    /// Waits in quick succession keep the runtime on the waiting thread:
    /// the watcher never takes it.
    #[test]
    fn quick_waits_stay_on_the_waiting_thread() {
        let driver = started();
        driver.wait_on(async { tokio::time::sleep(Duration::from_millis(30)).await });
        let here = std::thread::current().id();
        for _ in 0..200 {
            let on = driver.wait_on(async {
                let on = tokio::spawn(async { std::thread::current().id() });
                on.await.unwrap()
            });
            assert_eq!(on, here);
        }
        assert_ne!(driver.shared.lock().watcher, Watcher::Driving);
    }

    /// Two threads may wait at once; both are woken.
    #[test]
    fn two_waiters() {
        let driver = started();
        let other = driver.clone();
        let joined = std::thread::spawn(move || {
            other.wait_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
        });
        driver.wait_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
        joined.join().unwrap();
        assert_eq!(driver.shared.lock().waiting, 0);
    }
}

//! The one wait loop. Every wait of the client goes through [`wait_until`]:
//! in short slices, so a [`Waiter`] (the Python layer) can release the GIL
//! while blocked, notice Ctrl-C between slices, and show output as it
//! arrives. What a wait for requests does when it is interrupted or runs
//! out of time ([`Deadline`], [`Waited`]) is `Client::wait`'s policy.

use std::time::{Duration, Instant};

use crate::tracker::{State, Tracker};

/// The longest a waiter blocks before its checks run.
pub(crate) const SLICE: Duration = Duration::from_millis(50);

/// How long interrupted engines get to stop before the caller gives up.
pub const INTERRUPT_GRACE: Duration = Duration::from_millis(1500);

/// What the caller of a wait does around it.
pub trait Waiter {
    /// What stops a wait: an interrupt or another failure.
    type Error;

    /// Blocks up to `slice` until `ready` holds (or something to show
    /// arrived), with the caller's locks (the GIL) released.
    fn block(
        &mut self,
        tracker: &Tracker,
        slice: Duration,
        ready: &(dyn Fn(&State) -> bool + Sync),
    ) -> bool;

    /// Between slices: Err when the user interrupted the wait (Ctrl-C).
    fn check(&mut self) -> Result<(), Self::Error>;

    /// Whether `error` is an interrupt, to be passed on to the engines.
    fn is_interrupt(&self, error: &Self::Error) -> bool;

    /// Shows what arrived in `tracker` since the last call (live output,
    /// progress); `done`: nothing more will come.
    fn show(&mut self, _tracker: &Tracker, _done: bool) -> Result<(), Self::Error> {
        Ok(())
    }

    /// The wait's time ran out and `running` engines are being interrupted.
    fn interrupting(&mut self, _running: &[u32], _after: Duration) -> Result<(), Self::Error> {
        Ok(())
    }

    /// The signal that stops the engines when the wait is interrupted
    /// (None: an interrupt, as Ctrl-C in a local cell).
    fn interrupt_signal(&self) -> Option<i32> {
        None
    }
}

/// Waits until `ready(state)` holds or `timeout` passes (None: forever).
/// True when it holds.
pub fn wait_until<W: Waiter>(
    tracker: &Tracker,
    waiter: &mut W,
    timeout: Option<Duration>,
    ready: impl Fn(&State) -> bool + Sync,
) -> Result<bool, W::Error> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let slice = deadline.map_or(SLICE, |d| {
            d.saturating_duration_since(Instant::now()).min(SLICE)
        });
        waiter.block(tracker, slice, &ready);
        let done = ready(&tracker.lock());
        if !done {
            waiter.check()?;
        }
        waiter.show(tracker, done)?;
        if done {
            return Ok(true);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
    }
}

/// When a wait for requests runs out of time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Deadline {
    /// Wait as long as it takes.
    Never,
    /// Stop waiting after this long; the requests run on.
    Return(Duration),
    /// After this long, interrupt the engines still running the requests
    /// (`%%px --timeout`, `execute(timeout=)`).
    Interrupt(Duration),
}

impl Deadline {
    /// `timeout` as Python passes it: None or negative means never.
    pub fn returning(timeout: Option<f64>) -> Deadline {
        match timeout.filter(|t| *t >= 0.0) {
            Some(t) => Deadline::Return(Duration::from_secs_f64(t)),
            None => Deadline::Never,
        }
    }

    pub fn timeout(self) -> Option<Duration> {
        match self {
            Deadline::Never => None,
            Deadline::Return(t) | Deadline::Interrupt(t) => Some(t),
        }
    }
}

/// When a wait for requests is over, besides its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Every request finished (`ar.wait()`, `%pxresult`).
    AllDone,
    /// Every request finished, or an engine running one of them was lost
    /// (died, unreachable): a blocking call fails at once instead of
    /// waiting for the others, which go on running.
    AllDoneOrLost,
    /// Any one request finished (results taken first-come).
    AnyDone,
}

/// How a wait for requests ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    /// All finished (interrupted ones with their KeyboardInterrupt).
    Done,
    /// An engine running one of them was lost first ([`Until::AllDoneOrLost`]);
    /// the others may still run.
    Lost,
    /// [`Deadline::Return`] passed first.
    TimedOut,
    /// [`Deadline::Interrupt`] passed, and these engines did not stop
    /// within [`INTERRUPT_GRACE`] of being interrupted.
    StillRunning(Vec<u32>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A waiter that blocks for real and counts its checks; `interrupt_at`
    /// makes the nth check an interrupt.
    struct Counting {
        checks: Cell<u32>,
        shown: Vec<bool>,
        interrupt_at: Option<u32>,
    }

    impl Counting {
        fn new(interrupt_at: Option<u32>) -> Self {
            Counting {
                checks: Cell::new(0),
                shown: vec![],
                interrupt_at,
            }
        }
    }

    impl Waiter for Counting {
        type Error = &'static str;

        fn block(
            &mut self,
            tracker: &Tracker,
            slice: Duration,
            ready: &(dyn Fn(&State) -> bool + Sync),
        ) -> bool {
            tracker.wait_until(Some(slice), ready)
        }

        fn check(&mut self) -> Result<(), &'static str> {
            self.checks.set(self.checks.get() + 1);
            if Some(self.checks.get()) == self.interrupt_at {
                return Err("interrupted");
            }
            Ok(())
        }

        fn is_interrupt(&self, error: &&'static str) -> bool {
            *error == "interrupted"
        }

        fn show(&mut self, _tracker: &Tracker, done: bool) -> Result<(), &'static str> {
            self.shown.push(done);
            Ok(())
        }
    }

    #[test]
    fn a_ready_state_returns_at_once_without_checks() {
        let tracker = Tracker::default();
        let mut waiter = Counting::new(None);
        assert_eq!(wait_until(&tracker, &mut waiter, None, |_| true), Ok(true));
        assert_eq!(waiter.checks.get(), 0);
        assert_eq!(waiter.shown, vec![true]);
    }

    #[test]
    fn the_deadline_ends_a_wait_and_checks_run_between_slices() {
        let tracker = Tracker::default();
        let mut waiter = Counting::new(None);
        let started = Instant::now();
        let waited = wait_until(
            &tracker,
            &mut waiter,
            Some(Duration::from_millis(120)),
            |_| false,
        );
        assert_eq!(waited, Ok(false));
        assert!(started.elapsed() >= Duration::from_millis(120));
        assert!(waiter.checks.get() >= 2, "a check per slice");
        assert!(waiter.shown.iter().all(|done| !done));
    }

    #[test]
    fn an_interrupt_stops_the_wait() {
        let tracker = Tracker::default();
        let mut waiter = Counting::new(Some(2));
        assert_eq!(
            wait_until(&tracker, &mut waiter, None, |_| false),
            Err("interrupted")
        );
        assert_eq!(waiter.checks.get(), 2);
    }

    #[test]
    fn python_timeouts() {
        assert_eq!(Deadline::returning(None), Deadline::Never);
        assert_eq!(Deadline::returning(Some(-1.0)), Deadline::Never);
        assert_eq!(
            Deadline::returning(Some(0.5)),
            Deadline::Return(Duration::from_millis(500))
        );
        assert_eq!(
            Deadline::Interrupt(Duration::from_secs(1)).timeout(),
            Some(Duration::from_secs(1))
        );
    }
}

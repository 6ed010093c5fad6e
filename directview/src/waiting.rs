//! [`PyWaiter`]: how Python code waits on the client (the one wait loop,
//! `rparallel_client::wait`): with the GIL released while blocked, Ctrl-C
//! noticed between slices, and optionally engine output shown live and a
//! progress bar redrawn while it waits.

use std::time::Duration;

use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use rparallel_client::{State, Tracker, Waiter};

use crate::display::Frontend;
use crate::relay::Relay;

pub struct PyWaiter<'py, 'a> {
    py: Python<'py>,
    relay: Option<&'a mut Relay>,
    tick: Option<&'a mut dyn FnMut() -> PyResult<()>>,
    /// Who says so on stderr when a deadline interrupts engines (`%px`).
    announce: Option<&'static str>,
    frontend: Option<Frontend<'py>>,
    /// What stops the engines on Ctrl-C (`%%px --signal-on-interrupt`).
    signal: Option<i32>,
}

impl<'py, 'a> PyWaiter<'py, 'a> {
    pub fn new(py: Python<'py>) -> Self {
        PyWaiter {
            py,
            relay: None,
            tick: None,
            announce: None,
            frontend: None,
            signal: None,
        }
    }

    /// Ctrl-C sends the engines `signal` (None: an interrupt).
    pub fn signalling(mut self, signal: Option<i32>) -> Self {
        self.signal = signal;
        self
    }

    /// Shows each engine's output as it arrives (keep the relay across
    /// waits, so nothing is shown twice).
    pub fn showing(mut self, relay: Option<&'a mut Relay>) -> Self {
        self.relay = relay;
        self
    }

    /// Runs `tick` between slices (a progress bar).
    pub fn ticking(mut self, tick: &'a mut dyn FnMut() -> PyResult<()>) -> Self {
        self.tick = Some(tick);
        self
    }

    /// Says on stderr which engines a deadline interrupts, as `who`.
    pub fn announcing(mut self, who: &'static str) -> Self {
        self.announce = Some(who);
        self
    }

    fn frontend(&mut self) -> PyResult<&Frontend<'py>> {
        if self.frontend.is_none() {
            self.frontend = Some(Frontend::new(self.py)?);
        }
        Ok(self.frontend.as_ref().expect("just set"))
    }
}

impl Waiter for PyWaiter<'_, '_> {
    type Error = PyErr;

    fn interrupt_signal(&self) -> Option<i32> {
        self.signal
    }

    fn block(
        &mut self,
        tracker: &Tracker,
        slice: Duration,
        ready: &(dyn Fn(&State) -> bool + Sync),
    ) -> bool {
        let relay = self.relay.as_deref();
        self.py.detach(|| {
            tracker.wait_until(Some(slice), |state| {
                ready(state) || relay.is_some_and(|r| r.has_news(state))
            })
        })
    }

    fn check(&mut self) -> PyResult<()> {
        self.py.check_signals()
    }

    fn is_interrupt(&self, error: &PyErr) -> bool {
        error.is_instance_of::<PyKeyboardInterrupt>(self.py)
    }

    fn show(&mut self, tracker: &Tracker, done: bool) -> PyResult<()> {
        if self.relay.is_some() {
            self.frontend()?;
            let frontend = self.frontend.as_ref().expect("made above");
            if let Some(relay) = self.relay.as_deref_mut() {
                relay.pump(tracker, frontend, done)?;
            }
        }
        if !done {
            if let Some(tick) = self.tick.as_mut() {
                tick()?;
            }
        }
        Ok(())
    }

    fn interrupting(&mut self, running: &[u32], after: Duration) -> PyResult<()> {
        let Some(who) = self.announce else {
            return Ok(());
        };
        let seconds = after.as_secs_f64();
        let text =
            format!("{who}: interrupting engine(s) {running:?}: still running after {seconds} s\n");
        self.frontend()?.write("stderr", &text)
    }
}

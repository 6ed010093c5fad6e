//! Liveness both ways: the engine sends `heartbeat` every period, and exits
//! when the controller has said nothing for three periods (it is gone; a
//! DEALER never reconnects to a restarted ROUTER). Runs on the runtime,
//! which never needs the GIL, so an engine busy in Python still beats.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use rparallel_pyexec::Publisher;

use crate::stamp::Stamp;

/// Periods of silence after which the controller counts as gone.
pub const MISSED_PERIODS: u32 = 3;

/// When the controller was last heard from (any verified message counts).
#[derive(Clone)]
pub struct Liveness {
    last: Arc<Mutex<Instant>>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            last: Arc::new(Mutex::new(Instant::now())),
        }
    }
}

impl Liveness {
    pub fn heard(&self) {
        *self.last.lock().unwrap() = Instant::now();
    }

    pub fn silent_for(&self) -> Duration {
        self.last.lock().unwrap().elapsed()
    }
}

/// Whether a controller silent for `silent` is gone.
pub fn is_gone(silent: Duration, period: Duration) -> bool {
    silent > period * MISSED_PERIODS
}

/// Beats every `period`; returns when the controller is gone.
pub async fn run(period: Duration, liveness: Liveness, publisher: Publisher, stamp: &Stamp) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if is_gone(liveness.silent_for(), period) {
            return;
        }
        // Bounded: a full outgoing queue must not stop the liveness check.
        let beat = publisher.send(stamp.own("heartbeat", json!({})));
        let _ = tokio::time::timeout(period, beat).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gone_after_three_silent_periods() {
        let p = Duration::from_secs(1);
        assert!(!is_gone(Duration::from_millis(2900), p));
        assert!(!is_gone(Duration::from_secs(3), p));
        assert!(is_gone(Duration::from_millis(3100), p));
    }

    #[test]
    fn hearing_resets_the_silence() {
        let l = Liveness::default();
        std::thread::sleep(Duration::from_millis(20));
        assert!(l.silent_for() >= Duration::from_millis(20));
        l.heard();
        assert!(l.silent_for() < Duration::from_millis(20));
    }
}

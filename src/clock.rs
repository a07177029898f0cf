//! The service's clock: the time every money movement is decided at (the posting frame's
//! `now`, ledger timestamps, hold expiry, spend-limit windows, the runway's 7 days).
//!
//! The default is the system clock. Tests can stop it at a chosen instant ([`Clock::set`])
//! to put a movement exactly at a window boundary (23:59:59 and 00:00:00 UTC), then hand
//! time back to the system ([`Clock::resume`]).
//!
//! Invariant: cheap enough for the hot path (one atomic load), and shared by every clone,
//! so the frame, the charger and the services of one application all see the same time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};

/// No fixed time: the system clock.
const SYSTEM: i64 = i64::MIN;

#[derive(Clone, Debug)]
pub struct Clock(Arc<AtomicI64>);

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

impl Clock {
    pub fn system() -> Clock {
        Clock(Arc::new(AtomicI64::new(SYSTEM)))
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self.0.load(Ordering::Acquire) {
            SYSTEM => Utc::now(),
            micros => DateTime::from_timestamp_micros(micros).unwrap_or_else(Utc::now),
        }
    }

    /// Stops the clock at `at` (microsecond precision, as Postgres stores it).
    pub fn set(&self, at: DateTime<Utc>) {
        self.0.store(at.timestamp_micros(), Ordering::Release);
    }

    /// Back to the system clock.
    pub fn resume(&self) {
        self.0.store(SYSTEM, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_clock_stands_still_and_resumes() {
        let c = Clock::system();
        let at = DateTime::parse_from_rfc3339("2031-03-02T23:59:59.5Z").unwrap().with_timezone(&Utc);
        let shared = c.clone();
        c.set(at);
        assert_eq!(shared.now(), at);
        c.resume();
        assert!((shared.now() - Utc::now()).num_seconds().abs() < 5);
    }
}

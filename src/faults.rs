//! Fault injection for the crash and failure tests. Never set outside tests.
//!
//! - `stop_after_charge`: a top-up attempt stops right after the provider answered and
//!   records nothing, exactly as a process killed at that point would;
//! - `fail_after_commit`: the posting frame's after-commit step fails, as work after a
//!   commit may (a lost connection, a full channel): the movement must still be answered
//!   as committed.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Faults {
    pub stop_after_charge: AtomicBool,
    pub fail_after_commit: AtomicBool,
}

impl Faults {
    pub fn stopped_after_charge(&self) -> bool {
        self.stop_after_charge.load(Ordering::SeqCst)
    }
    pub fn failing_after_commit(&self) -> bool {
        self.fail_after_commit.load(Ordering::SeqCst)
    }
}

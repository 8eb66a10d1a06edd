//! Warnings a condition would repeat at every occurrence (a refused connection, a dropped
//! event), let through to the log at most once per period; the rest go to debug and to the
//! condition's counter.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Lets a warning through at most once per period.
#[derive(Debug)]
pub struct WarnGate {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl WarnGate {
    /// A gate that opens at most once per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(None),
        }
    }

    /// Whether a warning may be logged at `now` (and, if so, that one was).
    pub fn due(&self, now: Instant) -> bool {
        // A poisoned lock only means another thread panicked while logging: keep going.
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match *last {
            Some(at) if now < at + self.every => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_warned_of_at_most_once_per_period() {
        let gate = WarnGate::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(gate.due(t0), "the first failure is warned of");
        assert!(!gate.due(t0 + Duration::from_secs(1)));
        assert!(!gate.due(t0 + Duration::from_secs(59)));
        assert!(
            gate.due(t0 + Duration::from_secs(60)),
            "a minute later again"
        );
        assert!(!gate.due(t0 + Duration::from_secs(61)));
    }
}

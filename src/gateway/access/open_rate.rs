//! The per-person open rate: at most `opensPerMinute` opens per person (`sub`) in a burst,
//! refilled at that many per minute (a token bucket, kept as the generic cell rate
//! algorithm's one instant per person, so the arithmetic is exact), so a burst of clicks works
//! but a script cannot make the gateway call STS, SSM and the apiserver thousands of times a
//! minute. Pure: the clock is an argument. Each replica keeps its own (the Service's
//! client-IP affinity sends one person to one replica).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// People tracked before those whose bucket is full again are dropped.
const PRUNE_ABOVE: usize = 1024;

/// The open rate of every person on this replica.
#[derive(Debug)]
pub struct OpenRate {
    per_minute: u32,
    /// Per person: when their bucket would be full again (the theoretical arrival time).
    full_at: HashMap<String, Instant>,
}

impl OpenRate {
    /// A rate of `per_minute` opens per person (0 refuses every open).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            full_at: HashMap::new(),
        }
    }

    /// Takes one open for `sub` at `now`, or says how long until one is free. A refused try
    /// costs nothing.
    pub fn take(&mut self, sub: &str, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Err(Duration::from_secs(60));
        }
        let interval = Duration::from_secs(60) / self.per_minute;
        let tolerance = interval * (self.per_minute - 1);
        if self.full_at.len() > PRUNE_ABOVE {
            self.full_at.retain(|_, full| *full > now);
        }
        let full = self.full_at.get(sub).copied().unwrap_or(now).max(now);
        let used = full.saturating_duration_since(now);
        if used > tolerance {
            return Err(used - tolerance);
        }
        self.full_at.insert(sub.to_string(), full + interval);
        Ok(())
    }

    /// People tracked (bounded by pruning).
    pub fn tracked(&self) -> usize {
        self.full_at.len()
    }
}

/// Whole seconds to wait, at least one, for an answer's `retry_after`.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_up_to_the_rate_passes_then_one_more_waits() {
        let mut rate = OpenRate::new(6);
        let t0 = Instant::now();
        for _ in 0..6 {
            assert_eq!(rate.take("alice", t0), Ok(()));
        }
        let wait = rate.take("alice", t0).unwrap_err();
        assert_eq!(retry_after_seconds(wait), 10, "one open per 10 s refills");
        assert_eq!(
            rate.take("bob", t0),
            Ok(()),
            "other people are not affected"
        );
        assert!(rate.take("alice", t0 + Duration::from_secs(5)).is_err());
        assert_eq!(rate.take("alice", t0 + Duration::from_secs(10)), Ok(()));
    }

    #[test]
    fn a_thousand_rapid_tries_pass_only_the_rate() {
        let mut rate = OpenRate::new(20);
        let t0 = Instant::now();
        let passed = (0..1000u64)
            .filter(|i| rate.take("mallory", t0 + Duration::from_millis(*i)).is_ok())
            .count();
        assert_eq!(passed, 20, "one second of tries refills a third of an open");
    }

    #[test]
    fn refused_tries_do_not_push_the_wait_further() {
        let mut rate = OpenRate::new(1);
        let t0 = Instant::now();
        assert!(rate.take("alice", t0).is_ok());
        for s in 0..59 {
            assert!(rate.take("alice", t0 + Duration::from_secs(s)).is_err());
        }
        assert!(rate.take("alice", t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn zero_refuses_everything() {
        let mut rate = OpenRate::new(0);
        assert_eq!(
            rate.take("alice", Instant::now()),
            Err(Duration::from_secs(60))
        );
    }

    #[test]
    fn idle_peoples_buckets_are_dropped() {
        let mut rate = OpenRate::new(10);
        let t0 = Instant::now();
        for i in 0..=PRUNE_ABOVE {
            rate.take(&format!("user-{i}"), t0).unwrap();
        }
        assert_eq!(rate.tracked(), PRUNE_ABOVE + 1);
        rate.take("late", t0 + Duration::from_secs(61)).unwrap();
        assert_eq!(rate.tracked(), 1, "only the newcomer is left");
    }

    #[test]
    fn waits_round_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }
}

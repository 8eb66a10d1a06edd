//! Giving freed memory back: after the set of live shells changed (a burst of opens, a wave
//! of closes), glibc's malloc keeps what the opens' TLS handshakes, JSON bodies and queues
//! freed between the shells' long-lived allocations, about three quarters of a gateway's
//! resident memory per idle shell (docs/benchmarks.md, "Memory per idle shell"). Once the
//! set has been still for a moment, the gateway asks the allocator to release those pages.
//! When to trim is decided by [`TrimClock`], a pure rule; the call itself is
//! `nodeshell_heap_trim::release_free_heap` on a blocking thread (a no-op off glibc).

use std::time::{Duration, Instant};

/// How long the number of live shells must stay unchanged before a trim: a burst of opens
/// is over.
pub const QUIET: Duration = Duration::from_secs(1);
/// Longest a change waits for quiet: under steady churn a trim still comes this often.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Least time between two trims: each one locks every arena while it walks it.
pub const MIN_GAP: Duration = Duration::from_secs(5);
/// How often the live count is looked at.
pub const TICK: Duration = Duration::from_millis(500);

/// When to trim, from the number of live shells seen over time. Pure.
#[derive(Debug, Default)]
pub struct TrimClock {
    /// The live count last seen.
    seen: Option<usize>,
    /// The first change not yet followed by a trim.
    dirty_since: Option<Instant>,
    /// The last change.
    changed_at: Option<Instant>,
    /// The last trim.
    trimmed_at: Option<Instant>,
}

// === impl TrimClock ===

impl TrimClock {
    /// Records `live` (the shells running now) seen at `now`; true when a trim is due now.
    /// The first look only records the count.
    pub fn tick(&mut self, live: usize, now: Instant) -> bool {
        match self.seen.replace(live) {
            None => return false,
            Some(before) if before != live => {
                self.changed_at = Some(now);
                self.dirty_since.get_or_insert(now);
            }
            Some(_) => {}
        }
        let (Some(dirty_since), Some(changed_at)) = (self.dirty_since, self.changed_at) else {
            return false;
        };
        let settled = now.duration_since(changed_at) >= QUIET;
        let waited_long = now.duration_since(dirty_since) >= MAX_WAIT;
        let gap_kept = self
            .trimmed_at
            .is_none_or(|at| now.duration_since(at) >= MIN_GAP);
        if (settled || waited_long) && gap_kept {
            self.dirty_since = None;
            self.trimmed_at = Some(now);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn a_burst_is_trimmed_once_after_it_settles() {
        let t = Instant::now();
        let mut clock = TrimClock::default();
        assert!(!clock.tick(0, t), "the first look only records");
        // Opens arrive every 500 ms: no trim while they do.
        for (i, ms) in [500, 1000, 1500, 2000].into_iter().enumerate() {
            assert!(!clock.tick(i + 1, at(t, ms)));
        }
        assert!(!clock.tick(4, at(t, 2500)), "500 ms of quiet is not enough");
        assert!(clock.tick(4, at(t, 3000)), "1 s after the last open");
        assert!(!clock.tick(4, at(t, 3500)), "once");
        assert!(!clock.tick(4, at(t, 60_000)), "nothing changed since");
    }

    #[test]
    fn an_idle_gateway_never_trims() {
        let t = Instant::now();
        let mut clock = TrimClock::default();
        for ms in (0..120_000).step_by(500) {
            assert!(!clock.tick(7, at(t, ms)));
        }
    }

    #[test]
    fn steady_churn_still_trims_every_max_wait_and_never_closer_than_min_gap() {
        let t = Instant::now();
        let mut clock = TrimClock::default();
        let mut trims = Vec::new();
        // The count changes at every look for two minutes.
        for (i, ms) in (0..120_000u64).step_by(500).enumerate() {
            if clock.tick(i % 2, at(t, ms)) {
                trims.push(ms);
            }
        }
        assert_eq!(trims, vec![30_500, 61_000, 91_500]);
        // And after a close wave right after a trim, the next one waits for the gap.
        let mut clock = TrimClock::default();
        clock.tick(5, t);
        clock.tick(4, at(t, 500));
        assert!(clock.tick(4, at(t, 1500)));
        clock.tick(3, at(t, 2000));
        assert!(
            !clock.tick(3, at(t, 3000)),
            "quiet, but within MIN_GAP of the last trim"
        );
        assert!(clock.tick(3, at(t, 6500)), "MIN_GAP after the last trim");
    }
}

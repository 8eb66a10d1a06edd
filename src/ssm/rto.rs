//! Adaptive retransmission timeout: Jacobson's estimator as the official peers use it, plus
//! Karn's rule, exponential backoff of a repeatedly lost head, and clamps.

use std::time::Duration;

/// Tuning of the [`RtoEstimator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtoConfig {
    /// Smoothed round-trip time before any sample (official peers: 100 ms).
    pub initial_rtt: Duration,
    /// Timeout before any sample (official peers: 200 ms).
    pub initial_rto: Duration,
    /// Lower clamp; below this a loopback peer would see needless resends.
    pub min_rto: Duration,
    /// Upper clamp, also for backoff (official peers cap at 1 s without backoff).
    pub max_rto: Duration,
    /// Clock granularity term `G` in `RTO = SRTT + max(G, 4·RTTVAR)`.
    pub granularity: Duration,
}

impl Default for RtoConfig {
    fn default() -> Self {
        Self {
            initial_rtt: Duration::from_millis(100),
            initial_rto: Duration::from_millis(200),
            min_rto: Duration::from_millis(50),
            max_rto: Duration::from_secs(2),
            granularity: Duration::from_millis(10),
        }
    }
}

/// Round-trip estimator that yields the current retransmission timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtoEstimator {
    config: RtoConfig,
    srtt: Duration,
    rttvar: Duration,
    rto: Duration,
    backoff: u32,
}

impl RtoEstimator {
    /// A fresh estimator (no samples yet).
    pub fn new(config: RtoConfig) -> Self {
        let rto = config.initial_rto.clamp(config.min_rto, config.max_rto);
        Self {
            config,
            srtt: config.initial_rtt,
            rttvar: Duration::ZERO,
            rto,
            backoff: 0,
        }
    }

    /// Folds one round-trip sample in and clears any backoff.
    pub fn observe(&mut self, sample: Duration) {
        let delta = self.srtt.abs_diff(sample);
        self.rttvar = self.rttvar * 3 / 4 + delta / 4;
        self.srtt = self.srtt * 7 / 8 + sample / 8;
        let spread = self.config.granularity.max(self.rttvar * 4);
        self.rto = (self.srtt + spread).clamp(self.config.min_rto, self.config.max_rto);
        self.backoff = 0;
    }

    /// Records that the head timed out: the next wait doubles (up to the clamp).
    pub fn back_off(&mut self) {
        self.backoff = self.backoff.saturating_add(1).min(16);
    }

    /// The timeout to wait before resending the head now.
    pub fn timeout(&self) -> Duration {
        let factor = 1u32 << self.backoff.min(16);
        self.rto
            .checked_mul(factor)
            .unwrap_or(self.config.max_rto)
            .min(self.config.max_rto)
    }

    /// The smoothed round-trip time.
    pub fn smoothed_rtt(&self) -> Duration {
        self.srtt
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn starts_at_the_initial_timeout() {
        assert_eq!(RtoEstimator::new(RtoConfig::default()).timeout(), ms(200));
    }

    #[test]
    fn follows_jacobson_arithmetic() {
        let mut rto = RtoEstimator::new(RtoConfig::default());
        rto.observe(ms(300));
        // RTTVAR = 0·3/4 + 200/4 = 50; SRTT = 87.5 + 37.5 = 125; RTO = 125 + 200 = 325
        assert_eq!(rto.smoothed_rtt(), ms(125));
        assert_eq!(rto.timeout(), ms(325));
    }

    #[test]
    fn converges_down_on_a_fast_link_but_not_below_the_floor() {
        let mut rto = RtoEstimator::new(RtoConfig::default());
        for _ in 0..200 {
            rto.observe(ms(1));
        }
        assert_eq!(rto.timeout(), ms(50));
    }

    #[test]
    fn grows_on_a_slow_link_up_to_the_ceiling() {
        let mut rto = RtoEstimator::new(RtoConfig::default());
        for _ in 0..50 {
            rto.observe(ms(800));
        }
        assert!(rto.timeout() > ms(800));
        for _ in 0..50 {
            rto.observe(ms(10_000));
        }
        assert_eq!(rto.timeout(), ms(2000));
    }

    #[test]
    fn backoff_doubles_until_the_ceiling_and_a_sample_resets_it() {
        let mut rto = RtoEstimator::new(RtoConfig::default());
        rto.back_off();
        assert_eq!(rto.timeout(), ms(400));
        rto.back_off();
        assert_eq!(rto.timeout(), ms(800));
        for _ in 0..40 {
            rto.back_off();
        }
        assert_eq!(rto.timeout(), ms(2000));
        rto.observe(ms(100));
        assert!(rto.timeout() < ms(400));
    }
}

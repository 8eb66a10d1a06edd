//! Session Manager's own limits on a session, enforced by the service, not the agent: the
//! account's idle session timeout and maximum session duration ("Session Manager preferences",
//! the `idleSessionTimeout` and `maxSessionDuration` inputs of the account's session
//! document). Pure.
//!
//! What counts as activity for the idle timeout is not in any available source; the simulator
//! counts input from the client (keystrokes and resizes), not output.

use std::time::{Duration, Instant};

use crate::ssm::service_close::ServiceClose;

/// AWS's default `idleSessionTimeout`: 20 minutes.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(20 * 60);

/// The limits the service applies to one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceLimits {
    /// Close after this long without input from the client.
    pub idle: Duration,
    /// Close this long after the session started, whatever happens (none by default).
    pub max: Option<Duration>,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        Self {
            idle: DEFAULT_IDLE,
            max: None,
        }
    }
}

impl ServiceLimits {
    /// The close the service makes at `now`, if one is due: the maximum duration first (it is
    /// the harder limit), then the idle timeout.
    pub fn due(&self, now: Instant, started: Instant, last_input: Instant) -> Option<ServiceClose> {
        if self
            .max
            .is_some_and(|max| now.saturating_duration_since(started) >= max)
        {
            return Some(ServiceClose::MaxDuration);
        }
        (now.saturating_duration_since(last_input) >= self.idle)
            .then_some(ServiceClose::IdleTimeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_restarts_the_idle_clock_and_the_maximum_wins_when_both_are_due() {
        let t0 = Instant::now();
        let limits = ServiceLimits {
            idle: Duration::from_secs(60),
            max: Some(Duration::from_secs(600)),
        };
        assert_eq!(limits.due(t0 + Duration::from_secs(59), t0, t0), None);
        assert_eq!(
            limits.due(t0 + Duration::from_secs(60), t0, t0),
            Some(ServiceClose::IdleTimeout)
        );
        let typed = t0 + Duration::from_secs(50);
        assert_eq!(limits.due(t0 + Duration::from_secs(100), t0, typed), None);
        assert_eq!(
            limits.due(t0 + Duration::from_secs(600), t0, t0),
            Some(ServiceClose::MaxDuration)
        );
        assert_eq!(
            ServiceLimits::default().due(t0 + Duration::from_secs(19 * 60), t0, t0),
            None,
            "20 minutes by default, no maximum"
        );
    }
}

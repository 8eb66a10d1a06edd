//! The idle and max-duration clocks of a live session. Pure: every method takes the current
//! time, so the cuts are tested without sleeping.

use std::time::{Duration, Instant};

use crate::api::{IdleActivity, PolicyLimits};

/// What the idle clock asks the session to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleEvent {
    /// Send `idle_warn {secondsRemaining}`: the cut comes this many seconds from now.
    Warn {
        /// Whole seconds until the cut.
        seconds_remaining: u64,
    },
    /// No activity for `idleSeconds`: end the session with reason IdleTimeout.
    Cut,
}

/// Counts idle time from the last activity. What counts as activity is the policy's
/// `limits.idleActivity`: keystrokes only, or keystrokes and output.
#[derive(Clone, Debug)]
pub struct IdleClock {
    idle: Duration,
    warning: Duration,
    activity: IdleActivity,
    last_activity: Instant,
    warned: bool,
}

impl IdleClock {
    /// A clock whose idle period starts at `now`. A warning period not shorter than the idle
    /// period (the CRD refuses it) is treated as "warn right away".
    pub fn new(idle: Duration, warning: Duration, activity: IdleActivity, now: Instant) -> Self {
        Self {
            idle,
            warning: warning.min(idle),
            activity,
            last_activity: now,
            warned: false,
        }
    }

    /// A clock with the policy's limits.
    pub fn from_limits(limits: &PolicyLimits, now: Instant) -> Self {
        Self::new(
            Duration::from_secs(u64::try_from(limits.idle_seconds).unwrap_or(0)),
            Duration::from_secs(u64::try_from(limits.idle_warning_seconds).unwrap_or(0)),
            limits.idle_activity,
            now,
        )
    }

    /// The person typed (or pasted, or resized): always activity.
    pub fn input(&mut self, now: Instant) {
        self.touch(now);
    }

    /// The node printed something: activity only under `InputAndOutput`.
    pub fn output(&mut self, now: Instant) {
        if self.activity == IdleActivity::InputAndOutput {
            self.touch(now);
        }
    }

    fn touch(&mut self, now: Instant) {
        if now > self.last_activity {
            self.last_activity = now;
        }
        self.warned = false;
    }

    /// When the last counted activity happened.
    pub fn last_activity(&self) -> Instant {
        self.last_activity
    }

    /// When the idle cut happens if nothing else happens.
    pub fn cut_at(&self) -> Instant {
        self.last_activity + self.idle
    }

    /// The next instant [`IdleClock::poll`] has something to say: the warning (if not sent
    /// yet and enabled) or the cut.
    pub fn next_deadline(&self) -> Instant {
        if !self.warned && !self.warning.is_zero() {
            self.cut_at() - self.warning
        } else {
            self.cut_at()
        }
    }

    /// What to do at `now`: nothing, warn (once per idle period), or cut.
    pub fn poll(&mut self, now: Instant) -> Option<IdleEvent> {
        let cut = self.cut_at();
        if now >= cut {
            return Some(IdleEvent::Cut);
        }
        if !self.warned && !self.warning.is_zero() && now >= cut - self.warning {
            self.warned = true;
            return Some(IdleEvent::Warn {
                seconds_remaining: seconds_until(cut, now),
            });
        }
        None
    }

    /// The warning as it stands at `now`, for a browser that has not been told yet (its
    /// queue was full, or it attached during the warning period): the whole seconds left
    /// before the cut, once the warning was given and until activity or the cut ends it.
    pub fn warning_at(&self, now: Instant) -> Option<u64> {
        let cut = self.cut_at();
        (self.warned && now < cut).then(|| seconds_until(cut, now))
    }
}

/// Whole seconds from `now` to `cut`, rounded up: "30 seconds" at the warning instant, never
/// "29.999 → 29".
fn seconds_until(cut: Instant, now: Instant) -> u64 {
    let remaining = cut.saturating_duration_since(now);
    remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0)
}

/// The instant a session that started at `started` must end under `maxDurationSeconds`.
pub fn max_duration_deadline(limits: &PolicyLimits, started: Instant) -> Instant {
    started + Duration::from_secs(u64::try_from(limits.max_duration_seconds).unwrap_or(0))
}

/// How long before credentials that cannot be renewed expire a session ends, so that its
/// TerminateSession (and the final writes) are still signed with valid credentials.
pub const CREDENTIALS_END_MARGIN: Duration = Duration::from_secs(60);

/// Which limit ends a session at its [`SessionDeadline`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadlineCause {
    /// The policy's `maxDurationSeconds`.
    MaxDuration,
    /// Credentials nothing renews are about to expire.
    CredentialsEnd,
}

/// When a session ends at the latest, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionDeadline {
    /// The instant.
    pub at: Instant,
    /// The limit that sets it.
    pub cause: DeadlineCause,
}

/// When a session ends at the latest: at `maxDurationSeconds`, or [`CREDENTIALS_END_MARGIN`]
/// before `credentials_end` (the expiry of AWS credentials nothing renews, e.g. a bearer
/// caller's) if that comes first. A session whose credentials had expired could not
/// terminate itself on AWS, and the shell would outlive the cut on the host until Session
/// Manager's own idle timeout.
pub fn session_deadline(
    limits: &PolicyLimits,
    started: Instant,
    credentials_end: Option<Instant>,
) -> SessionDeadline {
    let max = SessionDeadline {
        at: max_duration_deadline(limits, started),
        cause: DeadlineCause::MaxDuration,
    };
    let Some(end) = credentials_end else {
        return max;
    };
    let cut = end
        .checked_sub(CREDENTIALS_END_MARGIN)
        .unwrap_or(end)
        .max(started);
    if cut < max.at {
        SessionDeadline {
            at: cut,
            cause: DeadlineCause::CredentialsEnd,
        }
    } else {
        max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn warns_exactly_warning_seconds_before_the_cut_then_cuts() {
        let t0 = Instant::now();
        let mut clock = IdleClock::new(secs(600), secs(30), IdleActivity::InputAndOutput, t0);
        assert_eq!(clock.next_deadline(), t0 + secs(570));
        assert_eq!(clock.poll(t0 + secs(569)), None);
        assert_eq!(
            clock.poll(t0 + secs(570)),
            Some(IdleEvent::Warn {
                seconds_remaining: 30
            })
        );
        // Warned once per idle period.
        assert_eq!(clock.poll(t0 + secs(580)), None);
        assert_eq!(clock.next_deadline(), t0 + secs(600));
        assert_eq!(clock.poll(t0 + secs(600)), Some(IdleEvent::Cut));
    }

    #[test]
    fn input_resets_the_clock_and_the_warning() {
        let t0 = Instant::now();
        let mut clock = IdleClock::new(secs(60), secs(10), IdleActivity::InputOnly, t0);
        assert!(matches!(
            clock.poll(t0 + secs(55)),
            Some(IdleEvent::Warn {
                seconds_remaining: 5
            })
        ));
        clock.input(t0 + secs(56));
        assert_eq!(clock.poll(t0 + secs(100)), None);
        assert_eq!(clock.next_deadline(), t0 + secs(106));
        assert!(matches!(
            clock.poll(t0 + secs(106)),
            Some(IdleEvent::Warn { .. })
        ));
        assert_eq!(clock.poll(t0 + secs(116)), Some(IdleEvent::Cut));
    }

    #[test]
    fn the_warning_stands_from_when_it_was_given_until_activity_or_the_cut() {
        let t0 = Instant::now();
        let mut clock = IdleClock::new(secs(60), secs(15), IdleActivity::InputOnly, t0);
        // Not given yet, even inside the warning period: poll gives it first.
        assert_eq!(clock.warning_at(t0 + secs(50)), None);
        assert!(matches!(
            clock.poll(t0 + secs(45)),
            Some(IdleEvent::Warn { .. })
        ));
        // Told later, it counts what is left then, rounded up.
        assert_eq!(clock.warning_at(t0 + secs(45)), Some(15));
        assert_eq!(
            clock.warning_at(t0 + secs(52) + Duration::from_millis(300)),
            Some(8)
        );
        // Output is no activity here; a keystroke ends the warning.
        clock.output(t0 + secs(53));
        assert_eq!(clock.warning_at(t0 + secs(53)), Some(7));
        clock.input(t0 + secs(54));
        assert_eq!(clock.warning_at(t0 + secs(54)), None);
        // Warned again in the next idle period; nothing stands once the cut has come.
        assert!(matches!(
            clock.poll(t0 + secs(99)),
            Some(IdleEvent::Warn { .. })
        ));
        assert_eq!(clock.warning_at(t0 + secs(113)), Some(1));
        assert_eq!(clock.warning_at(t0 + secs(114)), None);
    }

    #[test]
    fn output_counts_only_under_input_and_output() {
        let t0 = Instant::now();
        let mut only_input = IdleClock::new(secs(60), secs(0), IdleActivity::InputOnly, t0);
        let mut both = IdleClock::new(secs(60), secs(0), IdleActivity::InputAndOutput, t0);
        for clock in [&mut only_input, &mut both] {
            clock.output(t0 + secs(50));
        }
        assert_eq!(only_input.poll(t0 + secs(60)), Some(IdleEvent::Cut));
        assert_eq!(both.poll(t0 + secs(60)), None);
        assert_eq!(both.poll(t0 + secs(110)), Some(IdleEvent::Cut));
    }

    #[test]
    fn zero_warning_never_warns() {
        let t0 = Instant::now();
        let mut clock = IdleClock::new(secs(60), secs(0), IdleActivity::InputOnly, t0);
        assert_eq!(clock.next_deadline(), t0 + secs(60));
        assert_eq!(clock.poll(t0 + secs(59)), None);
        assert_eq!(clock.poll(t0 + secs(60)), Some(IdleEvent::Cut));
    }

    #[test]
    fn late_poll_past_the_cut_cuts_without_warning_first() {
        let t0 = Instant::now();
        let mut clock = IdleClock::new(secs(60), secs(10), IdleActivity::InputOnly, t0);
        assert_eq!(clock.poll(t0 + secs(61)), Some(IdleEvent::Cut));
    }

    #[test]
    fn activity_in_the_past_does_not_move_the_clock_back() {
        let t0 = Instant::now();
        let mut clock = IdleClock::new(secs(60), secs(0), IdleActivity::InputOnly, t0 + secs(5));
        clock.input(t0);
        assert_eq!(clock.last_activity(), t0 + secs(5));
    }

    #[test]
    fn max_duration_is_counted_from_the_start() {
        let t0 = Instant::now();
        let limits = PolicyLimits {
            max_duration_seconds: 3600,
            ..serde_json::from_str("{}").expect("defaults")
        };
        assert_eq!(max_duration_deadline(&limits, t0), t0 + secs(3600));
        let clock = IdleClock::from_limits(&limits, t0);
        assert_eq!(clock.cut_at(), t0 + secs(600));
    }

    #[test]
    fn a_session_ends_before_credentials_nothing_renews_expire() {
        let t0 = Instant::now();
        let limits = PolicyLimits {
            max_duration_seconds: 3600,
            ..serde_json::from_str("{}").expect("defaults")
        };
        let max = |at| SessionDeadline {
            at,
            cause: DeadlineCause::MaxDuration,
        };
        let credentials = |at| SessionDeadline {
            at,
            cause: DeadlineCause::CredentialsEnd,
        };
        // Renewable (or no end known): the policy's maximum.
        assert_eq!(session_deadline(&limits, t0, None), max(t0 + secs(3600)));
        // sessionDurationSeconds == maxDurationSeconds (the defaults): the credentials were
        // minted a little before the start, so they end before the maximum; the session ends
        // a minute before them, while TerminateSession can still be signed.
        assert_eq!(
            session_deadline(&limits, t0, Some(t0 + secs(3590))),
            credentials(t0 + secs(3530))
        );
        // Credentials that outlive the maximum by more than the margin change nothing.
        assert_eq!(
            session_deadline(&limits, t0, Some(t0 + secs(7200))),
            max(t0 + secs(3600))
        );
        assert_eq!(
            session_deadline(&limits, t0, Some(t0 + secs(3650))),
            credentials(t0 + secs(3590))
        );
        // A tie is the policy's maximum.
        assert_eq!(
            session_deadline(&limits, t0, Some(t0 + secs(3660))),
            max(t0 + secs(3600))
        );
        // Never before the start.
        assert_eq!(
            session_deadline(&limits, t0, Some(t0 + secs(30))),
            credentials(t0)
        );
    }
}

//! Expiry and retention: what the controller does to a session that is not waiting for
//! admission, and when to look at it again. Pure: the clock is an argument.

use crate::api::{NodeShellPolicy, NodeShellSession, PolicyRetention, SessionPhase, SessionReason};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::time::Duration;

/// Condition type the controller sets when it moves a session to Closing; its
/// lastTransitionTime starts the closing grace.
pub const CONDITION_CLOSING: &str = "Closing";

/// The controller's clocks (all flags, so tests run them short).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// An Admitted session never attached within this is closed (AttachTimeout).
    pub attach: Duration,
    /// A gateway whose heartbeat for a session is older than this is presumed gone (GatewayLost).
    pub heartbeat: Duration,
    /// The controller's idle and max-duration cuts come this long after the gateway's own,
    /// so the gateway (which warns the person and cuts precisely) normally acts first.
    pub backstop_grace: Duration,
    /// A Closing session no gateway finishes within this is marked Closed.
    pub closing_grace: Duration,
    /// Retention of ended sessions whose policy no longer exists.
    pub default_retention: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            attach: Duration::from_secs(120),
            heartbeat: Duration::from_secs(60),
            backstop_grace: Duration::from_secs(30),
            closing_grace: Duration::from_secs(60),
            default_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What to do with a session now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing (yet).
    Nothing,
    /// Move to Closing with this reason; the owning gateway ends the SSM session.
    StartClosing {
        /// Why.
        reason: SessionReason,
        /// What happened, for people.
        message: String,
    },
    /// Move to Closed with this reason (no gateway is left to do it).
    Close {
        /// Why (a Closing session keeps the reason it was closing for).
        reason: String,
        /// What happened, for people.
        message: String,
    },
    /// Retention is over: delete the session and what it owns.
    Delete,
}

/// An action and when to look at the session again if nothing else changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextAction {
    /// What to do now.
    pub action: Action,
    /// When the next deadline of this session falls, from now.
    pub requeue_after: Option<Duration>,
}

/// Decides what to do with a session at `now`.
///
/// * Pending: nothing (admission decides), unless `spec.terminate` is set: Closed.
/// * Admitted: terminate → Closed (Closing when a gateway holds it); stale gateway heartbeat →
///   Closed GatewayLost; not attached `attach` after admission → AttachTimeout.
/// * Active: terminate → Closing AdminTerminated; stale heartbeat → Closed GatewayLost; no
///   activity for `idleSeconds` + grace → Closing IdleTimeout; running `maxDurationSeconds`
///   + grace → Closing MaxDuration.
/// * Closing: not finished within `closing_grace` (or its gateway went silent) → Closed.
/// * Closed: deleted [`retention_of`] after `endedAt`; Rejected likewise, with its own
///   shorter retention.
pub fn next_action(
    session: &NodeShellSession,
    policy: Option<&NodeShellPolicy>,
    now: Timestamp,
    t: &Timeouts,
) -> NextAction {
    let mut clock = Clock { now, soonest: None };
    let status = session.status.clone().unwrap_or_default();
    let terminate = session.spec.terminate;
    let gateway_held = status.gateway.is_some();
    let limits = policy.map(|p| p.spec.limits.clone()).unwrap_or_default();
    let created = session.metadata.creation_timestamp.as_ref();
    let admitted = status.admitted_at.as_ref().or(created);
    let started = status.started_at.as_ref().or(admitted);
    let heartbeat = status
        .gateway
        .as_ref()
        .and_then(|g| g.heartbeat_at.as_ref());

    let action = match session.phase() {
        SessionPhase::Pending if terminate => close(
            SessionReason::AdminTerminated.as_str(),
            "termination was requested before the session was admitted",
        ),
        SessionPhase::Pending => Action::Nothing,
        SessionPhase::Admitted => {
            if terminate {
                closing_or_closed(
                    gateway_held,
                    SessionReason::AdminTerminated,
                    "termination was requested".into(),
                )
            } else if heartbeat.is_some_and(|hb| clock.passed(hb, t.heartbeat)) {
                gateway_lost(
                    &status
                        .gateway
                        .as_ref()
                        .map(|g| g.pod.clone())
                        .unwrap_or_default(),
                    t.heartbeat,
                )
            } else if admitted.is_some_and(|a| clock.passed(a, t.attach)) {
                closing_or_closed(
                    gateway_held,
                    SessionReason::AttachTimeout,
                    format!(
                        "no browser attached within {}s of admission: open the shell again",
                        t.attach.as_secs()
                    ),
                )
            } else {
                Action::Nothing
            }
        }
        SessionPhase::Active => {
            let last_activity = status.last_activity_at.as_ref().or(started);
            let heartbeat_base = heartbeat.or(started);
            let idle = secs(limits.idle_seconds) + t.backstop_grace;
            let max = secs(limits.max_duration_seconds) + t.backstop_grace;
            if terminate {
                Action::StartClosing {
                    reason: SessionReason::AdminTerminated,
                    message: "termination was requested".into(),
                }
            } else if heartbeat_base.is_some_and(|hb| clock.passed(hb, t.heartbeat)) {
                gateway_lost(
                    &status
                        .gateway
                        .as_ref()
                        .map(|g| g.pod.clone())
                        .unwrap_or_default(),
                    t.heartbeat,
                )
            } else if last_activity.is_some_and(|a| clock.passed(a, idle)) {
                Action::StartClosing {
                    reason: SessionReason::IdleTimeout,
                    message: format!(
                        "no activity for {}s (policy limits.idleSeconds)",
                        limits.idle_seconds
                    ),
                }
            } else if started.is_some_and(|s| clock.passed(s, max)) {
                Action::StartClosing {
                    reason: SessionReason::MaxDuration,
                    message: format!(
                        "open for {}s (policy limits.maxDurationSeconds)",
                        limits.max_duration_seconds
                    ),
                }
            } else {
                Action::Nothing
            }
        }
        SessionPhase::Closing => {
            let since = closing_since(session);
            let reason = status
                .reason
                .clone()
                .unwrap_or_else(|| SessionReason::GatewayLost.to_string());
            let silent = heartbeat.is_some_and(|hb| clock.passed(hb, t.heartbeat));
            if silent
                || since
                    .as_ref()
                    .is_some_and(|s| clock.passed(s, t.closing_grace))
            {
                Action::Close {
                    reason,
                    message: format!(
                        "no gateway finished closing the session within {}s; the controller marked it Closed \
                         (check the SSM session in the AWS console if it may still run)",
                        t.closing_grace.as_secs()
                    ),
                }
            } else {
                Action::Nothing
            }
        }
        phase @ (SessionPhase::Closed | SessionPhase::Rejected) => {
            let keep = retention_of(phase, policy, t);
            let ended = status.ended_at.clone().or_else(|| latest_known(session));
            if ended.as_ref().is_none_or(|e| clock.passed(e, keep)) {
                Action::Delete
            } else {
                Action::Nothing
            }
        }
    };
    let requeue_after = match action {
        Action::Nothing => clock.soonest,
        // The write itself triggers the next look.
        _ => None,
    };
    NextAction {
        action,
        requeue_after,
    }
}

/// How long an ended session is kept: a Closed one `retention.closedSessionSeconds`, a
/// Rejected one `retention.rejectedSessionSeconds` (one hour by default, so refused opens do
/// not pile up). Without its policy: the controller's `--default-retention`, and for a
/// Rejected one at most the one-hour default.
pub fn retention_of(
    phase: SessionPhase,
    policy: Option<&NodeShellPolicy>,
    t: &Timeouts,
) -> Duration {
    let seconds = |s: i64| Duration::from_secs(u64::try_from(s).unwrap_or(0));
    let rejected = phase == SessionPhase::Rejected;
    match policy {
        Some(p) if rejected => seconds(p.spec.retention.rejected_session_seconds),
        Some(p) => seconds(p.spec.retention.closed_session_seconds),
        None if rejected => t
            .default_retention
            .min(seconds(PolicyRetention::default().rejected_session_seconds)),
        None => t.default_retention,
    }
}

/// When a Closing session started closing: the controller's Closing condition, else the latest
/// time the status mentions.
pub fn closing_since(session: &NodeShellSession) -> Option<Time> {
    let status = session.status.as_ref()?;
    status
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_CLOSING && c.status == "True")
        .map(|c| c.last_transition_time.clone())
        .or_else(|| latest_known(session))
}

/// The latest timestamp a session's status or metadata mentions.
fn latest_known(session: &NodeShellSession) -> Option<Time> {
    let mut times: Vec<&Time> = Vec::new();
    if let Some(s) = &session.status {
        times.extend(s.admitted_at.iter());
        times.extend(s.started_at.iter());
        times.extend(s.last_activity_at.iter());
        times.extend(s.ended_at.iter());
        times.extend(s.conditions.iter().map(|c| &c.last_transition_time));
        times.extend(s.gateway.as_ref().and_then(|g| g.heartbeat_at.as_ref()));
    }
    times.extend(session.metadata.creation_timestamp.iter());
    times.into_iter().max_by_key(|t| t.0).cloned()
}

fn secs(seconds: i32) -> Duration {
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

fn close(reason: &str, message: &str) -> Action {
    Action::Close {
        reason: reason.to_string(),
        message: message.to_string(),
    }
}

fn closing_or_closed(gateway_held: bool, reason: SessionReason, message: String) -> Action {
    // A gateway that claimed the session gets to clean up; without one nobody would.
    if gateway_held {
        Action::StartClosing { reason, message }
    } else {
        Action::Close {
            reason: reason.to_string(),
            message,
        }
    }
}

fn gateway_lost(pod: &str, timeout: Duration) -> Action {
    Action::Close {
        reason: SessionReason::GatewayLost.to_string(),
        message: format!(
            "gateway {pod:?} sent no heartbeat for {}s; the session is presumed gone: open the shell again",
            timeout.as_secs()
        ),
    }
}

/// `now` plus the soonest deadline seen that has not passed yet.
struct Clock {
    now: Timestamp,
    soonest: Option<Duration>,
}

impl Clock {
    /// True when `since + after` is at or before now; otherwise remembers the deadline.
    fn passed(&mut self, since: &Time, after: Duration) -> bool {
        let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
        let deadline_ms = since.0.as_millisecond().saturating_add(after_ms);
        let left_ms = deadline_ms.saturating_sub(self.now.as_millisecond());
        if left_ms <= 0 {
            return true;
        }
        let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(u64::MAX));
        self.soonest = Some(self.soonest.map_or(left, |s| s.min(left)));
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{NodeShellSessionStatus, SessionGateway};
    use crate::testing::{policy, session};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    const T0: i64 = 1_800_000_000;

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(T0 + s).expect("ts"))
    }

    fn now(s: i64) -> Timestamp {
        at(s).0
    }

    fn timeouts() -> Timeouts {
        Timeouts {
            attach: Duration::from_secs(60),
            heartbeat: Duration::from_secs(30),
            backstop_grace: Duration::from_secs(10),
            closing_grace: Duration::from_secs(20),
            default_retention: Duration::from_secs(1000),
        }
    }

    fn with_status(
        phase: SessionPhase,
        f: impl FnOnce(&mut NodeShellSessionStatus),
    ) -> NodeShellSession {
        let mut s = session("s", "alice", "p", T0, Some(phase));
        let mut status = NodeShellSessionStatus {
            phase: Some(phase),
            admitted_at: Some(at(0)),
            ..NodeShellSessionStatus::default()
        };
        f(&mut status);
        s.status = Some(status);
        s
    }

    fn reason(a: &Action) -> String {
        match a {
            Action::StartClosing { reason, .. } => format!("Closing/{reason}"),
            Action::Close { reason, .. } => format!("Closed/{reason}"),
            Action::Delete => "Delete".into(),
            Action::Nothing => "Nothing".into(),
        }
    }

    #[test]
    fn attach_timeout() {
        let s = with_status(SessionPhase::Admitted, |_| {});
        let n = next_action(&s, None, now(59), &timeouts());
        assert_eq!(n.action, Action::Nothing);
        assert_eq!(n.requeue_after, Some(Duration::from_secs(1)));
        assert_eq!(
            reason(&next_action(&s, None, now(60), &timeouts()).action),
            "Closed/AttachTimeout"
        );
        let held = with_status(SessionPhase::Admitted, |st| {
            st.gateway = Some(SessionGateway {
                pod: "gw-0".into(),
                heartbeat_at: Some(at(55)),
            })
        });
        assert_eq!(
            reason(&next_action(&held, None, now(61), &timeouts()).action),
            "Closing/AttachTimeout"
        );
    }

    #[test]
    fn gateway_lost_when_heartbeat_is_stale() {
        let s = with_status(SessionPhase::Active, |st| {
            st.started_at = Some(at(0));
            st.last_activity_at = Some(at(100));
            st.gateway = Some(SessionGateway {
                pod: "gw-0".into(),
                heartbeat_at: Some(at(100)),
            });
        });
        let p = policy("p", 2, 10);
        assert_eq!(
            next_action(&s, Some(&p), now(129), &timeouts()).action,
            Action::Nothing
        );
        assert_eq!(
            reason(&next_action(&s, Some(&p), now(130), &timeouts()).action),
            "Closed/GatewayLost"
        );
    }

    #[test]
    fn idle_and_max_duration_backstops() {
        let mut p = policy("p", 2, 10);
        p.spec.limits.idle_seconds = 600;
        p.spec.limits.max_duration_seconds = 3600;
        let t = Timeouts {
            heartbeat: Duration::from_secs(100_000),
            ..timeouts()
        };
        let idle = with_status(SessionPhase::Active, |st| {
            st.started_at = Some(at(0));
            st.last_activity_at = Some(at(100));
        });
        let n = next_action(&idle, Some(&p), now(709), &t);
        assert_eq!(n.action, Action::Nothing);
        assert_eq!(n.requeue_after, Some(Duration::from_secs(1)));
        assert_eq!(
            reason(&next_action(&idle, Some(&p), now(710), &t).action),
            "Closing/IdleTimeout"
        );
        let busy = with_status(SessionPhase::Active, |st| {
            st.started_at = Some(at(0));
            st.last_activity_at = Some(at(3600));
        });
        assert_eq!(
            next_action(&busy, Some(&p), now(3609), &t).action,
            Action::Nothing
        );
        assert_eq!(
            reason(&next_action(&busy, Some(&p), now(3610), &t).action),
            "Closing/MaxDuration"
        );
    }

    #[test]
    fn terminate_is_honoured_in_every_live_phase() {
        for (phase, gateway, want) in [
            (SessionPhase::Pending, false, "Closed/AdminTerminated"),
            (SessionPhase::Admitted, false, "Closed/AdminTerminated"),
            (SessionPhase::Admitted, true, "Closing/AdminTerminated"),
            (SessionPhase::Active, true, "Closing/AdminTerminated"),
        ] {
            let mut s = with_status(phase, |st| {
                if gateway {
                    st.gateway = Some(SessionGateway {
                        pod: "gw".into(),
                        heartbeat_at: Some(at(1)),
                    });
                }
            });
            s.spec.terminate = true;
            assert_eq!(
                reason(&next_action(&s, None, now(2), &timeouts()).action),
                want,
                "{phase}"
            );
        }
    }

    #[test]
    fn closing_is_finished_by_the_controller_after_a_grace() {
        let s = with_status(SessionPhase::Closing, |st| {
            st.reason = Some("IdleTimeout".into());
            st.conditions = vec![Condition {
                type_: CONDITION_CLOSING.into(),
                status: "True".into(),
                reason: "IdleTimeout".into(),
                message: String::new(),
                last_transition_time: at(100),
                observed_generation: None,
            }];
        });
        let n = next_action(&s, None, now(110), &timeouts());
        assert_eq!(n.action, Action::Nothing);
        assert_eq!(n.requeue_after, Some(Duration::from_secs(10)));
        assert_eq!(
            reason(&next_action(&s, None, now(120), &timeouts()).action),
            "Closed/IdleTimeout"
        );
    }

    #[test]
    fn retention_deletes_after_the_policy_window() {
        let mut p = policy("p", 2, 10);
        p.spec.retention.closed_session_seconds = 300;
        let s = with_status(SessionPhase::Closed, |st| st.ended_at = Some(at(50)));
        let n = next_action(&s, Some(&p), now(349), &timeouts());
        assert_eq!(n.action, Action::Nothing);
        assert_eq!(n.requeue_after, Some(Duration::from_secs(1)));
        assert_eq!(
            next_action(&s, Some(&p), now(350), &timeouts()).action,
            Action::Delete
        );
        // Without its policy, the controller's default retention applies.
        assert_eq!(
            next_action(&s, None, now(349), &timeouts()).action,
            Action::Nothing
        );
        assert_eq!(
            next_action(&s, None, now(1050), &timeouts()).action,
            Action::Delete
        );
    }

    #[test]
    fn rejected_sessions_have_their_own_short_retention() {
        let mut p = policy("p", 2, 10);
        p.spec.retention.closed_session_seconds = 7 * 24 * 3600;
        assert_eq!(
            p.spec.retention.rejected_session_seconds, 3600,
            "one hour by default"
        );
        let r = with_status(SessionPhase::Rejected, |st| st.ended_at = Some(at(0)));
        let c = with_status(SessionPhase::Closed, |st| st.ended_at = Some(at(0)));
        let n = next_action(&r, Some(&p), now(3599), &timeouts());
        assert_eq!(n.action, Action::Nothing);
        assert_eq!(n.requeue_after, Some(Duration::from_secs(1)));
        assert_eq!(
            next_action(&r, Some(&p), now(3600), &timeouts()).action,
            Action::Delete
        );
        assert_eq!(
            next_action(&c, Some(&p), now(3600), &timeouts()).action,
            Action::Nothing,
            "a Closed session keeps its week"
        );
        p.spec.retention.rejected_session_seconds = 60;
        assert_eq!(
            next_action(&r, Some(&p), now(60), &timeouts()).action,
            Action::Delete
        );
        // Without its policy: the controller's default, at most the one-hour default.
        let short = timeouts();
        assert_eq!(
            retention_of(SessionPhase::Rejected, None, &short),
            Duration::from_secs(1000)
        );
        let long = Timeouts::default();
        assert_eq!(
            retention_of(SessionPhase::Rejected, None, &long),
            Duration::from_secs(3600)
        );
        assert_eq!(
            retention_of(SessionPhase::Closed, None, &long),
            Duration::from_secs(7 * 24 * 3600)
        );
    }

    #[test]
    fn pending_is_left_to_admission() {
        let s = session("s", "alice", "p", T0, None);
        assert_eq!(
            next_action(&s, None, now(10_000), &timeouts()),
            NextAction {
                action: Action::Nothing,
                requeue_after: None
            }
        );
    }
}

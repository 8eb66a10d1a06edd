//! Expiry and retention: what the controller does to a session that is not waiting for
//! admission, and when to look at it again. Pure: the clock and the owning gateway's Lease
//! are arguments.

use crate::api::{
    ACTIVITY_STATUS_LAG, NodeShellPolicy, NodeShellSession, NodeShellSessionStatus,
    PolicyRetention, SessionGateway, SessionPhase, SessionReason,
};
use k8s_openapi::api::coordination::v1::Lease;
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
    /// A session whose gateway pod has no Lease is presumed gone (GatewayLost) this long after
    /// its start (or after the deprecated per-session `heartbeatAt` of an older gateway): the
    /// grace for a Lease the cache has not seen yet. A gateway with a Lease is judged by the
    /// Lease's own duration.
    pub heartbeat: Duration,
    /// The controller's idle and max-duration cuts come this long after the gateway's own,
    /// so the gateway (which warns the person and cuts precisely) normally acts first.
    pub backstop_grace: Duration,
    /// How far `status.lastActivityAt` may lag the real last activity (the gateway writes it
    /// at most once a minute): the idle backstop waits this much longer as well.
    pub activity_lag: Duration,
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
            activity_lag: ACTIVITY_STATUS_LAG,
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

/// Decides what to do with a session at `now`. `lease` is the coordination Lease of the
/// gateway pod named in `status.gateway.pod` (None when there is none), see [`gateway_lost`].
///
/// * Pending: nothing (admission decides), unless `spec.terminate` is set: Closed.
/// * Admitted: terminate → Closed (Closing when a gateway holds it); gateway lost →
///   Closed GatewayLost; not attached `attach` after admission → AttachTimeout.
/// * Active: terminate → Closing AdminTerminated; gateway lost → Closed GatewayLost; no
///   activity for `idleSeconds` + grace + activity lag → Closing IdleTimeout; running
///   `maxDurationSeconds` + grace → Closing MaxDuration.
/// * Closing: not finished within `closing_grace` (or its gateway is lost) → Closed.
/// * Closed: deleted [`retention_of`] after `endedAt`; Rejected likewise, with its own
///   shorter retention.
pub fn next_action(
    session: &NodeShellSession,
    policy: Option<&NodeShellPolicy>,
    lease: Option<&Lease>,
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
            } else if let Some(lost) = gateway_lost(&status, admitted, lease, &mut clock, t) {
                lost
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
            let idle = secs(limits.idle_seconds) + t.backstop_grace + t.activity_lag;
            let max = secs(limits.max_duration_seconds) + t.backstop_grace;
            if terminate {
                Action::StartClosing {
                    reason: SessionReason::AdminTerminated,
                    message: "termination was requested".into(),
                }
            } else if let Some(lost) = gateway_lost(&status, started, lease, &mut clock, t) {
                lost
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
            let silent = gateway_lost(&status, since.as_ref(), lease, &mut clock, t).is_some();
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

/// GatewayLost, when the gateway holding the session is gone: its pod's Lease is not held by
/// the pod or was not renewed within its own `leaseDurationSeconds`; or, for a pod without a
/// Lease, `t.heartbeat` passed since the deprecated `heartbeatAt` of an older gateway, else
/// since `since` (the session's start: the grace for a Lease the cache has not seen yet).
/// None while the gateway is alive, or when no gateway holds the session.
fn gateway_lost(
    status: &NodeShellSessionStatus,
    since: Option<&Time>,
    lease: Option<&Lease>,
    clock: &mut Clock,
    t: &Timeouts,
) -> Option<Action> {
    let gateway = status.gateway.as_ref()?;
    let message = match lease.and_then(|l| l.spec.as_ref()) {
        Some(spec) => {
            let held = spec.holder_identity.as_deref() == Some(gateway.pod.as_str());
            let duration = spec
                .lease_duration_seconds
                .map(|d| Duration::from_secs(u64::try_from(d).unwrap_or(0)));
            let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref());
            let expired = match (held, renewed, duration) {
                (true, Some(renewed), Some(duration)) => clock.passed(&Time(renewed.0), duration),
                _ => true,
            };
            if !expired {
                return None;
            }
            format!(
                "gateway {:?} did not renew its Lease {} within {}s",
                gateway.pod,
                gateway.lease_name(),
                duration.unwrap_or_default().as_secs()
            )
        }
        None => {
            let base = gateway.heartbeat_at.as_ref().or(since)?;
            if !clock.passed(base, t.heartbeat) {
                return None;
            }
            no_lease_message(gateway, t.heartbeat)
        }
    };
    Some(Action::Close {
        reason: SessionReason::GatewayLost.to_string(),
        message: format!("{message}; the session is presumed gone: open the shell again"),
    })
}

fn no_lease_message(gateway: &SessionGateway, timeout: Duration) -> String {
    format!(
        "gateway {:?} has had no Lease {} for {}s",
        gateway.pod,
        gateway.lease_name(),
        timeout.as_secs()
    )
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
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime};

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
            activity_lag: Duration::from_secs(20),
            closing_grace: Duration::from_secs(20),
            default_retention: Duration::from_secs(1000),
        }
    }

    /// The Lease of gateway pod `holder` (None: released), renewed at `renewed` for `seconds`.
    fn lease(holder: Option<&str>, renewed: i64, seconds: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: Some(MicroTime(at(renewed).0)),
                lease_duration_seconds: Some(seconds),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    /// Active since 0, held by gateway pod gw-0, which writes no per-session heartbeat.
    fn held_by_gw0(phase: SessionPhase) -> NodeShellSession {
        with_status(phase, |st| {
            st.started_at = Some(at(0));
            st.last_activity_at = Some(at(0));
            st.gateway = Some(SessionGateway {
                pod: "gw-0".into(),
                heartbeat_at: None,
            });
        })
    }

    fn message(a: &Action) -> String {
        match a {
            Action::StartClosing { message, .. } | Action::Close { message, .. } => message.clone(),
            _ => String::new(),
        }
    }

    #[test]
    fn a_gateway_is_alive_while_its_lease_is_renewed_and_lost_when_it_is_not() {
        let s = held_by_gw0(SessionPhase::Active);
        let p = policy("p", 2, 10);
        // Renewed at 100 for 30 s: alive until 130, long after the no-Lease grace (30 s from
        // the start) would have run out.
        let renewed = lease(Some("gw-0"), 100, 30);
        let n = next_action(&s, Some(&p), Some(&renewed), now(129), &timeouts());
        assert_eq!(n.action, Action::Nothing);
        assert_eq!(
            n.requeue_after,
            Some(Duration::from_secs(1)),
            "looks again when it expires"
        );
        let lost = next_action(&s, Some(&p), Some(&renewed), now(130), &timeouts()).action;
        assert_eq!(reason(&lost), "Closed/GatewayLost");
        assert!(
            message(&lost).contains("nodeshell-gateway-gw-0") && message(&lost).contains("30s"),
            "{lost:?}"
        );
        // The session's own fields do not keep it alive: only the Lease does.
        let admitted = held_by_gw0(SessionPhase::Admitted);
        assert_eq!(
            reason(&next_action(&admitted, Some(&p), Some(&renewed), now(130), &timeouts()).action),
            "Closed/GatewayLost"
        );
    }

    #[test]
    fn a_released_or_foreign_lease_means_the_gateway_is_gone() {
        let s = held_by_gw0(SessionPhase::Active);
        let p = policy("p", 2, 10);
        for other in [lease(None, 100, 30), lease(Some("gw-1"), 100, 30)] {
            assert_eq!(
                reason(&next_action(&s, Some(&p), Some(&other), now(101), &timeouts()).action),
                "Closed/GatewayLost"
            );
        }
    }

    #[test]
    fn without_a_lease_the_session_is_lost_after_the_grace_from_its_start() {
        let s = held_by_gw0(SessionPhase::Active);
        let p = policy("p", 2, 10);
        let n = next_action(&s, Some(&p), None, now(29), &timeouts());
        assert_eq!(n.action, Action::Nothing);
        assert_eq!(n.requeue_after, Some(Duration::from_secs(1)));
        let lost = next_action(&s, Some(&p), None, now(30), &timeouts()).action;
        assert_eq!(reason(&lost), "Closed/GatewayLost");
        assert!(
            message(&lost).contains("no Lease nodeshell-gateway-gw-0"),
            "{lost:?}"
        );
    }

    #[test]
    fn a_closing_session_whose_gateway_lease_expired_is_closed_at_once() {
        let s = with_status(SessionPhase::Closing, |st| {
            st.reason = Some("IdleTimeout".into());
            st.gateway = Some(SessionGateway {
                pod: "gw-0".into(),
                heartbeat_at: None,
            });
            st.conditions = vec![Condition {
                type_: CONDITION_CLOSING.into(),
                status: "True".into(),
                reason: "IdleTimeout".into(),
                message: String::new(),
                last_transition_time: at(100),
                observed_generation: None,
            }];
        });
        let alive = lease(Some("gw-0"), 100, 30);
        assert_eq!(
            next_action(&s, None, Some(&alive), now(105), &timeouts()).action,
            Action::Nothing
        );
        let expired = lease(Some("gw-0"), 70, 30);
        assert_eq!(
            reason(&next_action(&s, None, Some(&expired), now(105), &timeouts()).action),
            "Closed/IdleTimeout"
        );
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
        let n = next_action(&s, None, None, now(59), &timeouts());
        assert_eq!(n.action, Action::Nothing);
        assert_eq!(n.requeue_after, Some(Duration::from_secs(1)));
        assert_eq!(
            reason(&next_action(&s, None, None, now(60), &timeouts()).action),
            "Closed/AttachTimeout"
        );
        let held = with_status(SessionPhase::Admitted, |st| {
            st.gateway = Some(SessionGateway {
                pod: "gw-0".into(),
                heartbeat_at: Some(at(55)),
            })
        });
        assert_eq!(
            reason(&next_action(&held, None, None, now(61), &timeouts()).action),
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
            next_action(&s, Some(&p), None, now(129), &timeouts()).action,
            Action::Nothing
        );
        assert_eq!(
            reason(&next_action(&s, Some(&p), None, now(130), &timeouts()).action),
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
        // idleSeconds + grace + the lag of lastActivityAt (written at most once a minute).
        let n = next_action(&idle, Some(&p), None, now(729), &t);
        assert_eq!(n.action, Action::Nothing);
        assert_eq!(n.requeue_after, Some(Duration::from_secs(1)));
        assert_eq!(
            reason(&next_action(&idle, Some(&p), None, now(730), &t).action),
            "Closing/IdleTimeout"
        );
        let busy = with_status(SessionPhase::Active, |st| {
            st.started_at = Some(at(0));
            st.last_activity_at = Some(at(3600));
        });
        assert_eq!(
            next_action(&busy, Some(&p), None, now(3609), &t).action,
            Action::Nothing
        );
        assert_eq!(
            reason(&next_action(&busy, Some(&p), None, now(3610), &t).action),
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
                reason(&next_action(&s, None, None, now(2), &timeouts()).action),
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
        let n = next_action(&s, None, None, now(110), &timeouts());
        assert_eq!(n.action, Action::Nothing);
        assert_eq!(n.requeue_after, Some(Duration::from_secs(10)));
        assert_eq!(
            reason(&next_action(&s, None, None, now(120), &timeouts()).action),
            "Closed/IdleTimeout"
        );
    }

    #[test]
    fn retention_deletes_after_the_policy_window() {
        let mut p = policy("p", 2, 10);
        p.spec.retention.closed_session_seconds = 300;
        let s = with_status(SessionPhase::Closed, |st| st.ended_at = Some(at(50)));
        let n = next_action(&s, Some(&p), None, now(349), &timeouts());
        assert_eq!(n.action, Action::Nothing);
        assert_eq!(n.requeue_after, Some(Duration::from_secs(1)));
        assert_eq!(
            next_action(&s, Some(&p), None, now(350), &timeouts()).action,
            Action::Delete
        );
        // Without its policy, the controller's default retention applies.
        assert_eq!(
            next_action(&s, None, None, now(349), &timeouts()).action,
            Action::Nothing
        );
        assert_eq!(
            next_action(&s, None, None, now(1050), &timeouts()).action,
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
        let n = next_action(&r, Some(&p), None, now(3599), &timeouts());
        assert_eq!(n.action, Action::Nothing);
        assert_eq!(n.requeue_after, Some(Duration::from_secs(1)));
        assert_eq!(
            next_action(&r, Some(&p), None, now(3600), &timeouts()).action,
            Action::Delete
        );
        assert_eq!(
            next_action(&c, Some(&p), None, now(3600), &timeouts()).action,
            Action::Nothing,
            "a Closed session keeps its week"
        );
        p.spec.retention.rejected_session_seconds = 60;
        assert_eq!(
            next_action(&r, Some(&p), None, now(60), &timeouts()).action,
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
            next_action(&s, None, None, now(10_000), &timeouts()),
            NextAction {
                action: Action::Nothing,
                requeue_after: None
            }
        );
    }
}

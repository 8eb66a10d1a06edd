//! The status the controller writes for each decision. Pure. Writes are server-side applies
//! under one field manager, so every apply carries all the fields the controller owns on the
//! object (an omitted field would be removed).

use super::admission::AdmissionDecision;
use super::expiry::{Action, CONDITION_CLOSING};
use crate::api::{NodeShellSession, NodeShellSessionStatus, SessionPhase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition type recording the admission decision and which replica made it.
pub const CONDITION_ADMITTED: &str = "Admitted";

/// The controller-owned part of a session's current status, carried into the next apply.
fn carried(session: &NodeShellSession) -> NodeShellSessionStatus {
    let current = session.status.clone().unwrap_or_default();
    NodeShellSessionStatus {
        admitted_at: current.admitted_at,
        conditions: current
            .conditions
            .into_iter()
            .filter(|c| c.type_ == CONDITION_ADMITTED || c.type_ == CONDITION_CLOSING)
            .collect(),
        ..NodeShellSessionStatus::default()
    }
}

fn set_condition(conditions: &mut Vec<Condition>, condition: Condition) {
    conditions.retain(|c| c.type_ != condition.type_);
    conditions.push(condition);
}

fn condition(type_: &str, status: bool, reason: &str, message: &str, now: Timestamp) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(now),
        observed_generation: None,
    }
}

/// The status written for an admission decision. `decided_by` names the replica and the
/// decision's sequence number, so a reader can tell which leader admitted what.
pub fn admission_status(
    decision: &AdmissionDecision,
    decided_by: &str,
    now: Timestamp,
) -> NodeShellSessionStatus {
    match decision {
        AdmissionDecision::Admit => {
            let message = format!("admitted by {decided_by}");
            NodeShellSessionStatus {
                phase: Some(SessionPhase::Admitted),
                message: Some(message.clone()),
                admitted_at: Some(Time(now)),
                conditions: vec![condition(
                    CONDITION_ADMITTED,
                    true,
                    "Admitted",
                    &message,
                    now,
                )],
                ..NodeShellSessionStatus::default()
            }
        }
        AdmissionDecision::Reject { reason, message } => NodeShellSessionStatus {
            phase: Some(SessionPhase::Rejected),
            reason: Some(reason.to_string()),
            message: Some(message.clone()),
            ended_at: Some(Time(now)),
            conditions: vec![condition(
                CONDITION_ADMITTED,
                false,
                reason.as_str(),
                &format!("rejected by {decided_by}: {message}"),
                now,
            )],
            ..NodeShellSessionStatus::default()
        },
    }
}

/// The status written for an expiry action; None for actions that write no status.
pub fn action_status(
    session: &NodeShellSession,
    action: &Action,
    now: Timestamp,
) -> Option<NodeShellSessionStatus> {
    let mut status = carried(session);
    match action {
        Action::Nothing | Action::Delete => return None,
        Action::StartClosing { reason, message } => {
            status.phase = Some(SessionPhase::Closing);
            status.reason = Some(reason.to_string());
            status.message = Some(message.clone());
            set_condition(
                &mut status.conditions,
                condition(CONDITION_CLOSING, true, reason.as_str(), message, now),
            );
        }
        Action::Close { reason, message } => {
            status.phase = Some(SessionPhase::Closed);
            status.reason = Some(reason.clone());
            status.message = Some(message.clone());
            status.ended_at = Some(Time(now));
            let started = session.status.as_ref().and_then(|s| s.started_at.as_ref());
            status.duration_seconds = started.map(|s| (now.as_second() - s.0.as_second()).max(0));
        }
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SessionReason;
    use crate::testing::session;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).expect("ts")
    }

    #[test]
    fn admit_and_reject_statuses() {
        let s = admission_status(&AdmissionDecision::Admit, "replica a (decision 1)", now());
        assert_eq!(s.phase, Some(SessionPhase::Admitted));
        assert_eq!(s.admitted_at, Some(Time(now())));
        assert!(s.conditions[0].message.contains("replica a"));
        let r = admission_status(
            &AdmissionDecision::Reject {
                reason: SessionReason::CapTotal,
                message: "full".into(),
            },
            "replica a (decision 2)",
            now(),
        );
        assert_eq!(r.phase, Some(SessionPhase::Rejected));
        assert_eq!(r.reason.as_deref(), Some("CapTotal"));
        assert_eq!(r.ended_at, Some(Time(now())));
        assert_eq!(r.conditions[0].status, "False");
    }

    #[test]
    fn expiry_keeps_what_the_controller_wrote_before() {
        let mut s = session("s", "alice", "p", 1, Some(SessionPhase::Active));
        let admitted = admission_status(&AdmissionDecision::Admit, "replica a", now());
        let mut current = admitted.clone();
        current.phase = Some(SessionPhase::Active);
        current.started_at = Some(Time(now()));
        s.status = Some(current);
        let later = Timestamp::from_second(1_800_000_090).expect("ts");
        let closing = action_status(
            &s,
            &Action::StartClosing {
                reason: SessionReason::IdleTimeout,
                message: "idle".into(),
            },
            later,
        )
        .expect("status");
        assert_eq!(closing.admitted_at, admitted.admitted_at);
        assert_eq!(closing.phase, Some(SessionPhase::Closing));
        let types: Vec<&str> = closing
            .conditions
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(types, ["Admitted", "Closing"]);
        let closed = action_status(
            &s,
            &Action::Close {
                reason: "GatewayLost".into(),
                message: "gone".into(),
            },
            later,
        )
        .expect("status");
        assert_eq!(closed.duration_seconds, Some(90));
        assert_eq!(closed.ended_at, Some(Time(later)));
        assert!(action_status(&s, &Action::Delete, later).is_none());
    }
}

//! Who may see, end, reattach or attach a session, and in which phases. Pure.

use kube::ResourceExt;
use serde_json::Value;

use crate::api::{NodeShellSession, SessionPhase};
use crate::gateway::access::tiers::TierMap;
use crate::gateway::error::{ApiError, ErrorCode};
use crate::gateway::handover::Caller;

/// Whether the caller owns the session or holds an admin tier.
pub fn may_manage(tiers: &TierMap, caller: &Caller, session: &NodeShellSession) -> bool {
    session.spec.user.sub == caller.sub || tiers.is_admin(caller.tier.as_deref())
}

/// The refusal of a caller who may not manage session `name`.
pub fn not_yours(tiers: &TierMap, caller: &Caller, name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        format!(
            "session {name} belongs to someone else; only its owner or an admin tier may do this"
        ),
    )
    .with(
        "tier",
        caller.tier.clone().map_or(Value::Null, Value::String),
    )
    .with("allowed_tiers", tiers.admin.clone())
}

/// The sessions a caller may list (their own, or all for an admin), newest first.
pub fn visible(
    admin: bool,
    caller: &Caller,
    sessions: Vec<NodeShellSession>,
) -> Vec<NodeShellSession> {
    let mut visible: Vec<NodeShellSession> = sessions
        .into_iter()
        .filter(|s| admin || s.spec.user.sub == caller.sub)
        .collect();
    visible.sort_by(|a, b| {
        b.metadata
            .creation_timestamp
            .cmp(&a.metadata.creation_timestamp)
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    visible
}

/// Whether ending the session needs `spec.terminate` written (it is neither over nor
/// already asked to end).
pub fn needs_terminate(session: &NodeShellSession) -> bool {
    !session.phase().is_terminal() && !session.spec.terminate
}

/// Why the caller may not get a reattach ticket for the session: only its owner may, and
/// only while it is admitted or active and not asked to end.
pub fn ticket_refusal(caller: &Caller, session: &NodeShellSession) -> Option<ApiError> {
    let name = session.name_any();
    if session.spec.user.sub != caller.sub {
        return Some(
            ApiError::new(
                ErrorCode::Forbidden,
                format!("session {name} belongs to someone else; only its owner may attach"),
            )
            .with(
                "tier",
                caller.tier.clone().map_or(Value::Null, Value::String),
            )
            .with("allowed_tiers", Vec::<String>::new()),
        );
    }
    if !is_attachable(session.phase()) || session.spec.terminate {
        return Some(not_attachable(&name, session.phase()));
    }
    None
}

/// Why a ticket issued to `ticket_sub` may not attach the session.
pub fn attach_refusal(ticket_sub: &str, session: &NodeShellSession) -> Option<ApiError> {
    if session.spec.user.sub != ticket_sub {
        return Some(ApiError::new(
            ErrorCode::Auth,
            "the ticket was issued to someone else",
        ));
    }
    let phase = session.phase();
    (!is_attachable(phase)).then(|| not_attachable(&session.name_any(), phase))
}

fn is_attachable(phase: SessionPhase) -> bool {
    matches!(phase, SessionPhase::Admitted | SessionPhase::Active)
}

fn not_attachable(name: &str, phase: SessionPhase) -> ApiError {
    ApiError::new(
        ErrorCode::BadRequest,
        format!("session {name} is {phase} and cannot be attached; open a new shell"),
    )
}

/// Whether an attach is a reattach: the session runs on this replica, or already ran on a
/// socket. The live side then expects the browser's resume frame.
pub fn is_reattach(running_here: bool, phase: SessionPhase) -> bool {
    running_here || phase == SessionPhase::Active
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::api::{NodeShellSessionSpec, NodeShellSessionStatus, SessionUser};
    use std::collections::BTreeMap;

    fn caller(sub: &str, tier: Option<&str>) -> Caller {
        Caller {
            sub: sub.into(),
            email: None,
            name: sub.into(),
            groups: vec![],
            tier: tier.map(str::to_string),
        }
    }

    fn session(name: &str, sub: &str, phase: SessionPhase) -> NodeShellSession {
        let mut s = NodeShellSession::new(
            name,
            NodeShellSessionSpec {
                user: SessionUser {
                    sub: sub.into(),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        s.status = Some(NodeShellSessionStatus {
            phase: Some(phase),
            ..Default::default()
        });
        s
    }

    fn tiers() -> TierMap {
        TierMap::new(
            vec!["admin".into(), "engineer".into()],
            BTreeMap::new(),
            vec!["admin".into()],
        )
        .unwrap()
    }

    #[test]
    fn owners_and_admins_manage_sessions() {
        let s = session("s", "alice", SessionPhase::Active);
        assert!(may_manage(&tiers(), &caller("alice", None), &s));
        assert!(may_manage(&tiers(), &caller("bob", Some("admin")), &s));
        assert!(!may_manage(&tiers(), &caller("bob", Some("engineer")), &s));
        let e = not_yours(&tiers(), &caller("bob", Some("engineer")), "s");
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert_eq!(e.extra["allowed_tiers"], serde_json::json!(["admin"]));
    }

    #[test]
    fn only_the_owner_gets_tickets_for_a_live_session() {
        let alice = caller("alice", Some("admin"));
        let active = session("s", "alice", SessionPhase::Active);
        assert!(ticket_refusal(&alice, &active).is_none());
        let bobs = session("s", "bob", SessionPhase::Active);
        assert_eq!(
            ticket_refusal(&alice, &bobs).unwrap().code,
            ErrorCode::Forbidden
        );
        let closed = session("s", "alice", SessionPhase::Closed);
        assert_eq!(
            ticket_refusal(&alice, &closed).unwrap().code,
            ErrorCode::BadRequest
        );
        let mut ending = active.clone();
        ending.spec.terminate = true;
        assert_eq!(
            ticket_refusal(&alice, &ending).unwrap().code,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn attach_needs_the_owners_ticket_and_a_live_phase() {
        let admitted = session("s", "alice", SessionPhase::Admitted);
        assert!(attach_refusal("alice", &admitted).is_none());
        assert_eq!(
            attach_refusal("bob", &admitted).unwrap().code,
            ErrorCode::Auth
        );
        let pending = session("s", "alice", SessionPhase::Pending);
        assert_eq!(
            attach_refusal("alice", &pending).unwrap().code,
            ErrorCode::BadRequest
        );
        assert!(is_reattach(false, SessionPhase::Active));
        assert!(is_reattach(true, SessionPhase::Admitted));
        assert!(!is_reattach(false, SessionPhase::Admitted));
    }

    #[test]
    fn lists_show_own_sessions_or_all_to_admins() {
        let all = vec![
            session("a", "alice", SessionPhase::Active),
            session("b", "bob", SessionPhase::Closed),
        ];
        let mine = visible(false, &caller("alice", None), all.clone());
        assert_eq!(mine.len(), 1);
        assert_eq!(visible(true, &caller("carol", None), all.clone()).len(), 2);
        assert!(needs_terminate(&all[0]) && !needs_terminate(&all[1]));
    }
}

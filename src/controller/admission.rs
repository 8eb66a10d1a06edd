//! Admission: which Pending sessions become Admitted and which are Rejected, in creation
//! order, under each policy's caps. Pure: the engine feeds it the policy's ledger (see
//! `ledger.rs`) and the waiting sessions, and records each admission before the next.

use crate::api::{
    CapCount, CapVerdict, NodeShellPolicy, NodeShellSession, SessionPhase, SessionReason,
    holds_cap_slot, parse_provider_id, region_of_zone, selects_node, validate_policy,
};
use kube::ResourceExt;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

/// What to do with one Pending session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdmissionDecision {
    /// Count it against the caps and let the gateway attach.
    Admit,
    /// Refuse it for good.
    Reject {
        /// CapPerUser, CapTotal or PolicyDenied.
        reason: SessionReason,
        /// What happened and what to do about it.
        message: String,
    },
}

/// The session's node as the pass read it, for the spec check.
#[derive(Clone, Copy, Debug)]
pub enum NodeView<'a> {
    /// No node of that name exists (any more).
    Missing,
    /// The node's labels and `spec.providerID` now.
    Found {
        /// `metadata.labels`.
        labels: &'a BTreeMap<String, String>,
        /// `spec.providerID`, when set.
        provider_id: Option<&'a str>,
    },
}

/// Whether a Pending session's spec is what its policy and its node say now: the node
/// exists and is the EC2 instance the spec names, in the spec's region; the policy selects
/// the node and names the spec's role and document. The gateway writes the spec from the
/// same facts, so a mismatch means the facts changed since, or someone else wrote the
/// session (the ValidatingAdmissionPolicy should stop that; this check does not rely on it).
pub fn spec_conformance(
    session: &NodeShellSession,
    policy: &NodeShellPolicy,
    node: NodeView<'_>,
) -> Result<(), AdmissionDecision> {
    let spec = &session.spec;
    let node_name = &spec.node_name;
    let not_eligible = |why: String| AdmissionDecision::Reject {
        reason: SessionReason::NodeNotEligible,
        message: format!("{why}; open the shell again from the node's current state"),
    };
    let NodeView::Found {
        labels,
        provider_id,
    } = node
    else {
        return Err(not_eligible(format!("node {node_name:?} does not exist")));
    };
    let Some(instance) = provider_id.and_then(parse_provider_id) else {
        return Err(not_eligible(format!(
            "node {node_name:?} is not backed by an EC2 instance (providerID {})",
            provider_id.unwrap_or("unset")
        )));
    };
    if instance.instance_id != spec.instance_id {
        return Err(not_eligible(format!(
            "spec.instanceId {} is not the instance behind node {node_name:?} ({})",
            spec.instance_id, instance.instance_id
        )));
    }
    let zone_region = instance.zone.as_deref().and_then(region_of_zone);
    if let Some(region) = &zone_region
        && *region != spec.region
    {
        return Err(not_eligible(format!(
            "spec.region {} is not the region of node {node_name:?} ({region})",
            spec.region
        )));
    }
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    let denied = |why: String| AdmissionDecision::Reject {
        reason: SessionReason::PolicyDenied,
        message: format!("{why}; open the shell again to use the policy as it is now"),
    };
    if !selects_node(policy, labels) {
        return Err(denied(format!(
            "NodeShellPolicy {name:?} does not select node {node_name:?}"
        )));
    }
    let aws = &policy.spec.aws;
    if aws.role_arn.as_deref() != Some(spec.role_arn.as_str()) {
        return Err(denied(format!(
            "spec.roleArn {} is not the role of NodeShellPolicy {name:?} ({})",
            spec.role_arn,
            aws.role_arn.as_deref().unwrap_or("none")
        )));
    }
    if aws.document_name != spec.document_name {
        return Err(denied(format!(
            "spec.documentName {} is not the document of NodeShellPolicy {name:?} ({})",
            spec.document_name, aws.document_name
        )));
    }
    if let Some(region) = aws.region.as_deref()
        && region != spec.region
    {
        return Err(denied(format!(
            "spec.region {} is not the region of NodeShellPolicy {name:?} ({region})",
            spec.region
        )));
    }
    Ok(())
}

/// Creation order: `metadata.creationTimestamp`, then name (timestamps have one-second
/// resolution, so the name breaks the many ties of simultaneous clicks the same way on every
/// replica).
pub fn admission_order(a: &NodeShellSession, b: &NodeShellSession) -> Ordering {
    let ts = |s: &NodeShellSession| s.metadata.creation_timestamp.as_ref().map(|t| t.0);
    ts(a)
        .cmp(&ts(b))
        .then_with(|| a.name_any().cmp(&b.name_any()))
}

/// True for sessions waiting for admission: Pending, not being deleted, and not asked to
/// terminate (those are closed by expiry instead).
pub fn awaits_admission(session: &NodeShellSession) -> bool {
    session.phase() == SessionPhase::Pending
        && session.metadata.deletion_timestamp.is_none()
        && !session.spec.terminate
}

/// The sessions waiting for admission, in the order they are decided.
pub fn pending_in_order<'a, I>(sessions: I) -> Vec<&'a NodeShellSession>
where
    I: IntoIterator<Item = &'a NodeShellSession>,
{
    let mut pending: Vec<&NodeShellSession> = sessions
        .into_iter()
        .filter(|s| awaits_admission(s))
        .collect();
    pending.sort_by(|a, b| admission_order(a, b));
    pending
}

/// The live-session ledger of every policy, and the admission rule applied to it.
///
/// Built from one consistent view of all sessions; [`SessionAdmission::decide`] counts an
/// admitted session at once, so a sequence of decisions never exceeds a cap.
#[derive(Debug, Clone, Default)]
pub struct SessionAdmission<'a> {
    policies: BTreeMap<String, &'a NodeShellPolicy>,
    live_total: HashMap<String, i64>,
    live_per_user: HashMap<(String, String), i64>,
}

// === impl SessionAdmission ===

impl<'a> SessionAdmission<'a> {
    /// Counts the live sessions (Admitted, Active, Closing) of `sessions` per policy and per
    /// policy and user (`spec.user.sub`).
    pub fn new<'s, P, S>(policies: P, sessions: S) -> Self
    where
        P: IntoIterator<Item = &'a NodeShellPolicy>,
        S: IntoIterator<Item = &'s NodeShellSession>,
    {
        let mut ledger = Self {
            policies: policies.into_iter().map(|p| (p.name_any(), p)).collect(),
            ..Self::default()
        };
        for session in sessions {
            if holds_cap_slot(session) {
                ledger.record_live(session);
            }
        }
        ledger
    }

    /// Sets the policies sessions are decided against (replacing any given to `new`), for a
    /// ledger whose sessions were counted before the policies were read.
    pub fn set_policies<P>(&mut self, policies: P)
    where
        P: IntoIterator<Item = &'a NodeShellPolicy>,
    {
        self.policies = policies.into_iter().map(|p| (p.name_any(), p)).collect();
    }

    /// Counts one live session.
    pub fn record_live(&mut self, session: &NodeShellSession) {
        self.record_slot(&session.spec.policy_name, &session.spec.user.sub);
    }

    /// Counts one slot held under `policy` by the person `sub` (from the policy's ledger).
    pub fn record_slot(&mut self, policy: &str, sub: &str) {
        *self.live_total.entry(policy.to_string()).or_default() += 1;
        *self
            .live_per_user
            .entry((policy.to_string(), sub.to_string()))
            .or_default() += 1;
    }

    /// Live sessions per policy.
    pub fn live_totals(&self) -> &HashMap<String, i64> {
        &self.live_total
    }

    /// Live sessions under a policy.
    pub fn live_total(&self, policy: &str) -> i64 {
        self.live_total.get(policy).copied().unwrap_or_default()
    }

    /// Live sessions of one user (`sub`) under a policy.
    pub fn live_for_user(&self, policy: &str, sub: &str) -> i64 {
        self.live_per_user
            .get(&(policy.to_string(), sub.to_string()))
            .copied()
            .unwrap_or_default()
    }

    /// Live sessions under a policy: one user's (`sub`) and everyone's.
    pub fn cap_count(&self, policy: &str, sub: &str) -> CapCount {
        CapCount {
            per_user: self.live_for_user(policy, sub),
            total: self.live_total(policy),
        }
    }

    /// Decides one Pending session and, when admitted, counts it.
    ///
    /// Rejections, in the order checked: the policy is missing, being deleted, disabled,
    /// invalid or does not allow the tier (PolicyDenied); the user holds the per-user cap
    /// (CapPerUser, checked first because closing one of their own sessions is the remedy);
    /// the policy holds the total cap (CapTotal). Before the caps, [`spec_conformance`]
    /// checks the spec against the policy and `node` (NodeNotEligible or PolicyDenied).
    pub fn decide(&mut self, session: &NodeShellSession, node: NodeView<'_>) -> AdmissionDecision {
        let name = &session.spec.policy_name;
        let Some(policy) = self.policies.get(name).copied() else {
            return deny(format!(
                "NodeShellPolicy {name:?} does not exist: ask a platform admin to restore it, then open the shell again"
            ));
        };
        if policy.metadata.deletion_timestamp.is_some() {
            return deny(format!(
                "NodeShellPolicy {name:?} is being deleted: open the shell again to use the current policy"
            ));
        }
        if !policy.spec.enabled {
            return deny(format!(
                "NodeShellPolicy {name:?} is disabled (spec.enabled=false): node shells are switched off for these nodes"
            ));
        }
        let problems = validate_policy(&policy.spec);
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return deny(format!(
                "NodeShellPolicy {name:?} is not usable: {}; ask a platform admin to fix it",
                list.join("; ")
            ));
        }
        let tier = &session.spec.user.tier;
        if !policy.spec.tiers.iter().any(|t| t == tier) {
            return deny(format!(
                "tier {tier:?} may not open shells under NodeShellPolicy {name:?} (allowed: {})",
                policy.spec.tiers.join(", ")
            ));
        }
        if let Err(refusal) = spec_conformance(session, policy, node) {
            return refusal;
        }
        let limits = &policy.spec.limits;
        match self.cap_count(name, &session.spec.user.sub).verdict(limits) {
            CapVerdict::Within => {}
            CapVerdict::PerUser { held, limit } => {
                return AdmissionDecision::Reject {
                    reason: SessionReason::CapPerUser,
                    message: format!(
                        "you already have {held} open node shell(s) under policy {name:?}, the most one person may hold \
                         ({limit} per person): close one (exit the shell or delete its session) and try again"
                    ),
                };
            }
            CapVerdict::Total { held, limit } => {
                return AdmissionDecision::Reject {
                    reason: SessionReason::CapTotal,
                    message: format!(
                        "policy {name:?} already has {held} open node shell(s), its limit in total ({limit}): try again when \
                         one closes, or ask a platform admin to raise limits.maxSessionsTotal"
                    ),
                };
            }
        }
        self.record_live(session);
        AdmissionDecision::Admit
    }
}

fn deny(message: String) -> AdmissionDecision {
    AdmissionDecision::Reject {
        reason: SessionReason::PolicyDenied,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node_view, policy, session};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    /// Runs the whole admission of a snapshot the way the reconciler does: decide, record, next.
    fn admit_all(
        policies: &[NodeShellPolicy],
        sessions: &[NodeShellSession],
    ) -> Vec<(String, AdmissionDecision)> {
        let mut ledger = SessionAdmission::new(policies, sessions);
        pending_in_order(sessions)
            .into_iter()
            .map(|s| (s.name_any(), ledger.decide(s, node_view())))
            .collect()
    }

    fn reason_of(d: &AdmissionDecision) -> Option<SessionReason> {
        match d {
            AdmissionDecision::Admit => None,
            AdmissionDecision::Reject { reason, .. } => Some(*reason),
        }
    }

    #[test]
    fn creation_order_is_timestamp_then_name() {
        let sessions = vec![
            session("c", "u", "p", 10, None),
            session("b", "u", "p", 11, None),
            session("a", "u", "p", 11, None),
            session("z", "u", "p", 9, None),
        ];
        let order: Vec<String> = pending_in_order(&sessions)
            .iter()
            .map(|s| s.name_any())
            .collect();
        assert_eq!(order, ["z", "c", "a", "b"]);
    }

    #[test]
    fn per_user_cap_then_total_cap() {
        let policies = vec![policy("p", 2, 3)];
        let sessions = vec![
            session("s1", "alice", "p", 1, None),
            session("s2", "alice", "p", 2, None),
            session("s3", "alice", "p", 3, None),
            session("s4", "bob", "p", 4, None),
            session("s5", "carol", "p", 5, None),
        ];
        let decisions = admit_all(&policies, &sessions);
        let reasons: Vec<Option<SessionReason>> =
            decisions.iter().map(|(_, d)| reason_of(d)).collect();
        assert_eq!(
            reasons,
            [
                None,
                None,
                Some(SessionReason::CapPerUser),
                None,
                Some(SessionReason::CapTotal)
            ]
        );
    }

    #[test]
    fn live_sessions_count_and_ended_ones_do_not() {
        let policies = vec![policy("p", 2, 10)];
        let sessions = vec![
            session("old1", "alice", "p", 1, Some(SessionPhase::Active)),
            session("old2", "alice", "p", 1, Some(SessionPhase::Closing)),
            session("old3", "alice", "p", 1, Some(SessionPhase::Closed)),
            session("old4", "alice", "p", 1, Some(SessionPhase::Rejected)),
            session("new", "alice", "p", 2, None),
        ];
        let decisions = admit_all(&policies, &sessions);
        assert_eq!(decisions.len(), 1);
        assert_eq!(reason_of(&decisions[0].1), Some(SessionReason::CapPerUser));
        let sessions = vec![
            session("old3", "alice", "p", 1, Some(SessionPhase::Closed)),
            session("new", "alice", "p", 2, None),
        ];
        assert_eq!(
            admit_all(&policies, &sessions)[0].1,
            AdmissionDecision::Admit
        );
    }

    #[test]
    fn caps_are_per_policy() {
        let policies = vec![policy("a", 1, 1), policy("b", 1, 1)];
        let sessions = vec![
            session("s1", "alice", "a", 1, None),
            session("s2", "alice", "b", 2, None),
        ];
        assert!(
            admit_all(&policies, &sessions)
                .iter()
                .all(|(_, d)| *d == AdmissionDecision::Admit)
        );
    }

    #[test]
    fn policy_denied_when_missing_disabled_invalid_or_wrong_tier() {
        let mut disabled = policy("off", 2, 10);
        disabled.spec.enabled = false;
        let mut invalid = policy("bad", 2, 10);
        invalid.spec.aws.region = None;
        let mut other_tier = policy("ops", 2, 10);
        other_tier.spec.tiers = vec!["ops".into()];
        let policies = vec![disabled, invalid, other_tier];
        let sessions = vec![
            session("s1", "u", "missing", 1, None),
            session("s2", "u", "off", 2, None),
            session("s3", "u", "bad", 3, None),
            session("s4", "u", "ops", 4, None),
        ];
        for (name, d) in admit_all(&policies, &sessions) {
            let AdmissionDecision::Reject { reason, message } = d else {
                panic!("{name} admitted");
            };
            assert_eq!(reason, SessionReason::PolicyDenied, "{name}");
            assert!(!message.is_empty());
        }
    }

    #[test]
    fn contention_never_exceeds_caps() {
        // 100 sessions of 10 users, caps 2 per user and 10 in total, as in the e2e test.
        let policies = vec![policy("p", 2, 10)];
        let sessions: Vec<NodeShellSession> = (0..100)
            .map(|i| {
                session(
                    &format!("s{i:03}"),
                    &format!("user{}", i % 10),
                    "p",
                    i / 7,
                    None,
                )
            })
            .collect();
        let decisions = admit_all(&policies, &sessions);
        let admitted: Vec<&String> = decisions
            .iter()
            .filter(|(_, d)| *d == AdmissionDecision::Admit)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(admitted.len(), 10);
        // In creation order, the first ten go to ten different users' first sessions.
        let expected: Vec<String> = (0..10).map(|i| format!("s{i:03}")).collect();
        assert_eq!(admitted, expected.iter().collect::<Vec<_>>());
        assert!(
            decisions
                .iter()
                .skip(10)
                .all(|(_, d)| reason_of(d) == Some(SessionReason::CapTotal))
        );
    }

    proptest::proptest! {
        /// Whatever the mix of existing sessions, a run of decisions never takes a policy or a
        /// user over a cap it admitted into.
        #[test]
        fn decisions_never_exceed_caps(
            caps in proptest::collection::vec((1i32..4, 1i32..8), 2),
            existing in proptest::collection::vec((0usize..2, 0usize..4, 0usize..6), 0..20),
            pending in proptest::collection::vec((0usize..2, 0usize..4), 0..40),
        ) {
            let phases = [
                SessionPhase::Admitted, SessionPhase::Active, SessionPhase::Closing,
                SessionPhase::Closed, SessionPhase::Rejected, SessionPhase::Active,
            ];
            let policies: Vec<NodeShellPolicy> = caps
                .iter()
                .enumerate()
                .map(|(i, (per_user, total))| policy(&format!("p{i}"), *per_user, *total))
                .collect();
            let mut sessions = Vec::new();
            for (i, (p, u, ph)) in existing.iter().enumerate() {
                sessions.push(session(&format!("e{i:03}"), &format!("u{u}"), &format!("p{p}"), 0, Some(phases[*ph])));
            }
            for (i, (p, u)) in pending.iter().enumerate() {
                sessions.push(session(&format!("n{i:03}"), &format!("u{u}"), &format!("p{p}"), i as i64, None));
            }
            let mut ledger = SessionAdmission::new(&policies, &sessions);
            let mut counts = SessionAdmission::new(&policies, &sessions);
            for s in pending_in_order(&sessions) {
                let name = s.spec.policy_name.as_str();
                let limits = &policies.iter().find(|p| p.name_any() == name).expect("policy").spec.limits;
                let before_user = counts.live_for_user(name, &s.spec.user.sub);
                let before_total = counts.live_total(name);
                if ledger.decide(s, node_view()) == AdmissionDecision::Admit {
                    proptest::prop_assert!(before_user < i64::from(limits.max_sessions_per_user));
                    proptest::prop_assert!(before_total < i64::from(limits.max_sessions_total));
                    counts.record_live(s);
                } else {
                    proptest::prop_assert!(
                        before_user >= i64::from(limits.max_sessions_per_user)
                            || before_total >= i64::from(limits.max_sessions_total)
                    );
                }
            }
        }
    }

    #[test]
    fn terminating_and_deleted_sessions_are_not_admitted() {
        let mut t = session("t", "u", "p", 1, None);
        t.spec.terminate = true;
        let mut d = session("d", "u", "p", 1, None);
        d.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let sessions = [t, d];
        assert!(pending_in_order(&sessions).is_empty());
    }

    #[test]
    fn a_session_whose_spec_no_longer_fits_its_policy_or_node_is_refused() {
        let p = policy("p", 5, 5);
        let good = session("s", "alice", "p", 0, None);
        assert_eq!(spec_conformance(&good, &p, node_view()), Ok(()));
        let refusal = |s: &NodeShellSession, node: NodeView<'_>| match spec_conformance(s, &p, node)
        {
            Err(AdmissionDecision::Reject { reason, message }) => (reason, message),
            other => panic!("expected a refusal, got {other:?}"),
        };
        // The node is gone, not EC2, or another instance / region than the spec says.
        let (reason, message) = refusal(&good, NodeView::Missing);
        assert_eq!(reason, SessionReason::NodeNotEligible);
        assert!(message.contains("\"node-1\" does not exist"), "{message}");
        let labels = BTreeMap::new();
        let on = |provider_id| NodeView::Found {
            labels: &labels,
            provider_id,
        };
        for provider in [
            None,
            Some("kind://docker/kind/n1"),
            Some("aws:///eu-west-1a/i-0fffffffffffffff0"),
            Some("aws:///us-east-1a/i-0123456789abcdef0"),
        ] {
            assert_eq!(
                refusal(&good, on(provider)).0,
                SessionReason::NodeNotEligible,
                "{provider:?}"
            );
        }
        // The spec names another role, document or region than the policy.
        let mut other_role = good.clone();
        other_role.spec.role_arn = "arn:aws:iam::123456789012:role/admin".into();
        let mut other_document = good.clone();
        other_document.spec.document_name = "AWS-StartPortForwardingSession".into();
        for s in [&other_role, &other_document] {
            let (reason, message) = refusal(s, node_view());
            assert_eq!(reason, SessionReason::PolicyDenied);
            assert!(message.contains("NodeShellPolicy \"p\""), "{message}");
        }
        let mut other_region = good.clone();
        other_region.spec.region = "us-east-1".into();
        // The node's zone says eu-west-1 first.
        assert_eq!(
            refusal(&other_region, node_view()).0,
            SessionReason::NodeNotEligible
        );
        // Without a zone, the policy's region decides.
        assert_eq!(
            refusal(&other_region, on(Some("aws:///i-0123456789abcdef0"))).0,
            SessionReason::PolicyDenied
        );
        // A policy that no longer selects the node.
        let mut narrow = p.clone();
        narrow.spec.node_selector = Some(
            serde_json::from_value(serde_json::json!({"matchLabels": {"pool": "gpu"}}))
                .expect("a selector"),
        );
        assert!(matches!(
            spec_conformance(&good, &narrow, node_view()),
            Err(AdmissionDecision::Reject {
                reason: SessionReason::PolicyDenied,
                ..
            })
        ));
    }

    #[test]
    fn the_spec_check_runs_before_the_caps_are_counted() {
        let policies = [policy("p", 1, 1)];
        let sessions = [
            session("a", "alice", "p", 0, None),
            session("b", "bob", "p", 1, None),
        ];
        let mut ledger = SessionAdmission::new(&policies, &sessions);
        let refused = ledger.decide(&sessions[0], NodeView::Missing);
        assert!(matches!(
            refused,
            AdmissionDecision::Reject {
                reason: SessionReason::NodeNotEligible,
                ..
            }
        ));
        // The refused session took no slot: the next one is admitted under a cap of one.
        assert_eq!(
            ledger.decide(&sessions[1], node_view()),
            AdmissionDecision::Admit
        );
    }
}

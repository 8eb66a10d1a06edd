//! The status the controller keeps on each NodeShellPolicy: whether it is usable (Ready,
//! with what to fix) and how many live sessions it governs. Pure.

use crate::api::{NodeShellPolicy, NodeShellPolicyStatus, validate_policy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition type on policies.
pub const CONDITION_READY: &str = "Ready";

/// The status a policy should have, given its live session count. The Ready condition keeps
/// its lastTransitionTime while its status does not change.
pub fn desired_policy_status(
    policy: &NodeShellPolicy,
    active_sessions: i64,
    now: Timestamp,
) -> NodeShellPolicyStatus {
    let problems = validate_policy(&policy.spec);
    let (status, reason, message) = match problems.first() {
        None => ("True", "Valid", "the policy is valid".to_string()),
        Some(first) => {
            let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
            ("False", first.reason(), all.join("; "))
        }
    };
    let generation = policy.metadata.generation;
    let previous = policy
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_READY));
    let last_transition_time = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    NodeShellPolicyStatus {
        observed_generation: generation,
        conditions: vec![Condition {
            type_: CONDITION_READY.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time,
            observed_generation: generation,
        }],
        active_sessions: Some(i32::try_from(active_sessions).unwrap_or(i32::MAX)),
    }
}

/// True when the stored status differs from the desired one (so a write is needed).
pub fn policy_status_changed(policy: &NodeShellPolicy, desired: &NodeShellPolicyStatus) -> bool {
    policy.status.as_ref() != Some(desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::policy;

    #[test]
    fn ready_follows_validation_and_keeps_its_transition_time() {
        let mut p = policy("p", 2, 10);
        p.metadata.generation = Some(3);
        let t1 = Timestamp::from_second(1_800_000_000).expect("ts");
        let t2 = Timestamp::from_second(1_800_000_100).expect("ts");
        let s1 = desired_policy_status(&p, 4, t1);
        assert_eq!(s1.observed_generation, Some(3));
        assert_eq!(s1.active_sessions, Some(4));
        assert_eq!(s1.conditions[0].status, "True");
        p.status = Some(s1.clone());
        assert!(!policy_status_changed(
            &p,
            &desired_policy_status(&p, 4, t2)
        ));
        assert!(policy_status_changed(&p, &desired_policy_status(&p, 5, t2)));

        p.spec.aws.role_arn = None;
        let s2 = desired_policy_status(&p, 4, t2);
        assert_eq!(s2.conditions[0].status, "False");
        assert_eq!(s2.conditions[0].reason, "MissingRoleArn");
        assert!(s2.conditions[0].message.contains("aws.roleArn"));
        assert_eq!(s2.conditions[0].last_transition_time, Time(t2));
    }
}

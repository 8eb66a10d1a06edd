//! The status the controller keeps on each NodeShellPolicy: whether it is usable (Ready,
//! with what to fix), whether its limits fit Session Manager's defaults (a warning), and how
//! many live sessions it governs. Pure.

use crate::api::{NodeShellPolicy, NodeShellPolicyStatus, PolicyLimits, validate_policy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition type on policies.
pub const CONDITION_READY: &str = "Ready";

/// Condition type on policies: False (a warning; the policy stays Ready) when the policy's
/// limits are longer than what Session Manager allows by default, so AWS ends sessions first.
pub const CONDITION_SSM_LIMITS: &str = "WithinSessionManagerLimits";

/// Reason of [`CONDITION_SSM_LIMITS`] when the limits fit.
pub const REASON_WITHIN_SSM_LIMITS: &str = "WithinSsmDefaults";

/// Session Manager's idle session timeout in a new account (`idleSessionTimeout`, minutes;
/// AWS allows 1–60, default 20).
pub const SSM_DEFAULT_IDLE_MINUTES: i64 = 20;
/// The longest idle session timeout an account can set (minutes).
pub const SSM_MAX_IDLE_MINUTES: i64 = 60;
/// The longest maximum session duration an account can set (`maxSessionDuration`, minutes;
/// AWS allows 1–1440 and sets none by default).
pub const SSM_MAX_SESSION_MINUTES: i64 = 1440;

/// Session Manager's session limits as the controller assumes them: the account's idle
/// timeout and maximum session duration (none by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SsmSessionLimits {
    /// Idle session timeout, minutes.
    pub idle_minutes: i64,
    /// Maximum session duration, minutes; `None` when the account sets none.
    pub max_minutes: Option<i64>,
}

impl Default for SsmSessionLimits {
    /// What a new AWS account has: 20 minutes idle, no maximum duration.
    fn default() -> Self {
        Self {
            idle_minutes: SSM_DEFAULT_IDLE_MINUTES,
            max_minutes: None,
        }
    }
}

/// Where a policy's limits exceed Session Manager's: `(reason, what happens and what to
/// change)`, idle first. Empty when they fit. A maximum duration is only checked against an
/// account maximum (`ssm.max_minutes`) and against the 1440 minutes no account can exceed.
pub fn ssm_limit_warnings(
    limits: &PolicyLimits,
    ssm: SsmSessionLimits,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let idle = i64::from(limits.idle_seconds);
    if idle > ssm.idle_minutes * 60 {
        let needed = (idle + 59) / 60;
        let fix = if needed <= SSM_MAX_IDLE_MINUTES {
            format!(
                "raise idleSessionTimeout in the account's Session Manager preferences to at least {needed} minutes, or lower limits.idleSeconds to {} or less",
                ssm.idle_minutes * 60
            )
        } else {
            format!(
                "lower limits.idleSeconds to {} or less (Session Manager's idleSessionTimeout can be raised to at most {SSM_MAX_IDLE_MINUTES} minutes)",
                ssm.idle_minutes * 60
            )
        };
        out.push((
            "SsmIdleTimeout",
            format!(
                "limits.idleSeconds is {idle}s but Session Manager ends sessions idle for {} minutes (its default idle session timeout), so idle sessions end with SsmIdleTimeout before the policy's IdleTimeout: {fix}",
                ssm.idle_minutes
            ),
        ));
    }
    let max = i64::from(limits.max_duration_seconds);
    let cap = ssm
        .max_minutes
        .map_or(SSM_MAX_SESSION_MINUTES, |m| m.min(SSM_MAX_SESSION_MINUTES));
    if max > cap * 60 {
        let needed = (max + 59) / 60;
        let fix = if needed <= SSM_MAX_SESSION_MINUTES {
            format!(
                "raise maxSessionDuration in the account's Session Manager preferences to at least {needed} minutes, or lower limits.maxDurationSeconds to {} or less",
                cap * 60
            )
        } else {
            format!(
                "lower limits.maxDurationSeconds to {} or less (Session Manager's maxSessionDuration can be at most {SSM_MAX_SESSION_MINUTES} minutes)",
                cap * 60
            )
        };
        out.push((
            "SsmMaxDuration",
            format!(
                "limits.maxDurationSeconds is {max}s but Session Manager ends sessions after {cap} minutes, so long sessions end with SsmMaxDuration before the policy's MaxDuration: {fix}"
            ),
        ));
    }
    out
}

/// The status a policy should have, given its live session count. Each condition keeps its
/// lastTransitionTime while its status does not change.
pub fn desired_policy_status(
    policy: &NodeShellPolicy,
    active_sessions: i64,
    now: Timestamp,
) -> NodeShellPolicyStatus {
    let problems = validate_policy(&policy.spec);
    let ready = match problems.first() {
        None => ("True", "Valid", "the policy is valid".to_string()),
        Some(first) => {
            let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
            ("False", first.reason(), all.join("; "))
        }
    };
    let warnings = ssm_limit_warnings(&policy.spec.limits, SsmSessionLimits::default());
    let ssm = match warnings.first() {
        None => (
            "True",
            REASON_WITHIN_SSM_LIMITS,
            "the policy's idle and maximum durations fit Session Manager's default preferences"
                .to_string(),
        ),
        Some((reason, _)) => {
            let all: Vec<&str> = warnings.iter().map(|(_, m)| m.as_str()).collect();
            ("False", *reason, all.join("; "))
        }
    };
    let generation = policy.metadata.generation;
    let condition = |type_: &str, (status, reason, message): (&str, &str, String)| {
        let previous = policy
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
        let last_transition_time = match previous {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => Time(now),
        };
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time,
            observed_generation: generation,
        }
    };
    NodeShellPolicyStatus {
        observed_generation: generation,
        conditions: vec![
            condition(CONDITION_READY, ready),
            condition(CONDITION_SSM_LIMITS, ssm),
        ],
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

    fn ssm_condition(s: &NodeShellPolicyStatus) -> &Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == CONDITION_SSM_LIMITS)
            .expect("SSM limits condition")
    }

    #[test]
    fn default_limits_fit_session_manager_defaults() {
        let p = policy("p", 2, 10);
        let t = Timestamp::from_second(1_800_000_000).expect("ts");
        let s = desired_policy_status(&p, 0, t);
        let c = ssm_condition(&s);
        assert_eq!(c.status, "True");
        assert_eq!(c.reason, REASON_WITHIN_SSM_LIMITS);
        // Exactly 20 minutes is not longer than Session Manager's idle timeout.
        let mut limits = p.spec.limits.clone();
        limits.idle_seconds = 1200;
        assert!(ssm_limit_warnings(&limits, SsmSessionLimits::default()).is_empty());
    }

    #[test]
    fn idle_longer_than_session_manager_warns_but_stays_ready() {
        let mut p = policy("p", 2, 10);
        p.spec.limits.idle_seconds = 1800;
        let t1 = Timestamp::from_second(1_800_000_000).expect("ts");
        let t2 = Timestamp::from_second(1_800_000_100).expect("ts");
        let s = desired_policy_status(&p, 0, t1);
        assert_eq!(s.conditions[0].type_, CONDITION_READY);
        assert_eq!(s.conditions[0].status, "True", "a warning, not a refusal");
        let c = ssm_condition(&s);
        assert_eq!(c.status, "False");
        assert_eq!(c.reason, "SsmIdleTimeout");
        assert!(
            c.message.contains("limits.idleSeconds is 1800s"),
            "{}",
            c.message
        );
        assert!(c.message.contains("20 minutes"), "{}", c.message);
        assert!(c.message.contains("idleSessionTimeout"), "{}", c.message);
        assert!(c.message.contains("at least 30 minutes"), "{}", c.message);
        assert!(c.message.contains("1200 or less"), "{}", c.message);
        // The warning keeps its transition time; fixing the policy flips it back.
        p.status = Some(s.clone());
        assert_eq!(
            ssm_condition(&desired_policy_status(&p, 0, t2)).last_transition_time,
            Time(t1)
        );
        p.spec.limits.idle_seconds = 600;
        let fixed = desired_policy_status(&p, 0, t2);
        assert_eq!(ssm_condition(&fixed).status, "True");
        assert_eq!(ssm_condition(&fixed).last_transition_time, Time(t2));
    }

    #[test]
    fn idle_beyond_what_session_manager_can_be_set_to_says_lower_the_policy() {
        let mut limits = policy("p", 2, 10).spec.limits;
        limits.idle_seconds = 7200;
        let w = ssm_limit_warnings(&limits, SsmSessionLimits::default());
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].0, "SsmIdleTimeout");
        assert!(
            w[0].1.contains("lower limits.idleSeconds to 1200"),
            "{}",
            w[0].1
        );
        assert!(w[0].1.contains("at most 60 minutes"), "{}", w[0].1);
        assert!(!w[0].1.contains("at least"), "{}", w[0].1);
    }

    #[test]
    fn max_duration_is_checked_against_the_account_maximum() {
        let mut limits = policy("p", 2, 10).spec.limits;
        limits.max_duration_seconds = 43_200;
        // A new account sets no maximum: 12 hours fits.
        assert!(ssm_limit_warnings(&limits, SsmSessionLimits::default()).is_empty());
        // An account that caps sessions at 8 hours ends them first.
        let capped = SsmSessionLimits {
            max_minutes: Some(480),
            ..SsmSessionLimits::default()
        };
        let w = ssm_limit_warnings(&limits, capped);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].0, "SsmMaxDuration");
        assert!(w[0].1.contains("after 480 minutes"), "{}", w[0].1);
        assert!(w[0].1.contains("maxSessionDuration"), "{}", w[0].1);
        assert!(w[0].1.contains("at least 720 minutes"), "{}", w[0].1);
        // Longer than any account may allow (1440 minutes): only lowering the policy helps.
        limits.max_duration_seconds = 90_000;
        let w = ssm_limit_warnings(&limits, SsmSessionLimits::default());
        assert_eq!(w[0].0, "SsmMaxDuration");
        assert!(
            w[0].1.contains("lower limits.maxDurationSeconds to 86400"),
            "{}",
            w[0].1
        );
        // Both: idle first, both in the condition message, Ready unaffected.
        let mut p = policy("p", 2, 10);
        p.spec.limits.idle_seconds = 3600;
        p.spec.limits.max_duration_seconds = 90_000;
        p.spec.aws.session_duration_seconds = 90_000;
        let s = desired_policy_status(&p, 0, Timestamp::from_second(1_800_000_000).expect("ts"));
        let c = ssm_condition(&s);
        assert_eq!(c.reason, "SsmIdleTimeout");
        assert!(c.message.contains("SsmMaxDuration"), "{}", c.message);
    }
}

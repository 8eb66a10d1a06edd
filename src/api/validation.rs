//! What the apiserver's OpenAPI and CEL rules cannot check about a policy: required settings
//! left empty (the CRD accepts them so a Helm install with blank values still applies), and
//! the same cross-field rules again for objects stored before a rule existed.

use super::policy::NodeShellPolicySpec;
use kube::core::Selector;

/// One thing wrong with a policy, with a message that says what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyProblem {
    /// `aws.roleArn` is not set.
    #[error(
        "aws.roleArn is empty: set the IAM role the OIDC id_token is exchanged for (arn:aws:iam::<account>:role/<name>)"
    )]
    MissingRoleArn,
    /// `aws.roleArn` is not an IAM role ARN.
    #[error(
        "aws.roleArn {0:?} is not an IAM role ARN: expected arn:aws:iam::<12-digit account>:role/<name>"
    )]
    BadRoleArn(String),
    /// `aws.oidcAudience` is not set.
    #[error(
        "aws.oidcAudience is empty: set the OIDC client id that the role's trust policy expects as aud"
    )]
    MissingAudience,
    /// `aws.region` is not set.
    #[error("aws.region is empty: set the AWS region of the nodes (for example eu-west-1)")]
    MissingRegion,
    /// `aws.region` does not look like an AWS region.
    #[error("aws.region {0:?} is not an AWS region name such as eu-west-1")]
    BadRegion(String),
    /// `tiers` is empty, so nobody could open a shell.
    #[error("tiers is empty: list the tiers allowed to open shells (for example [admin])")]
    NoTiers,
    /// `aws.sessionDurationSeconds` outside 900..=43200.
    #[error("aws.sessionDurationSeconds {0} is outside 900..43200 (the STS limits)")]
    SessionDurationOutOfRange(i32),
    /// The credentials would expire before the longest allowed session ends.
    #[error(
        "aws.sessionDurationSeconds {session} is shorter than limits.maxDurationSeconds {max}: raise the former or lower the latter"
    )]
    CredentialsShorterThanSession {
        /// `aws.sessionDurationSeconds`.
        session: i32,
        /// `limits.maxDurationSeconds`.
        max: i32,
    },
    /// The idle warning would come at or before the start of the idle period.
    #[error("limits.idleWarningSeconds {warning} must be smaller than limits.idleSeconds {idle}")]
    IdleWarningTooLate {
        /// `limits.idleWarningSeconds`.
        warning: i32,
        /// `limits.idleSeconds`.
        idle: i32,
    },
    /// A cap below one.
    #[error("limits.{field} is {value}: caps must be at least 1")]
    CapTooSmall {
        /// Which cap.
        field: &'static str,
        /// Its value.
        value: i32,
    },
    /// The node selector cannot be evaluated.
    #[error("nodeSelector is invalid: {0}")]
    BadNodeSelector(String),
    /// `aws.documentName` is empty.
    #[error(
        "aws.documentName is empty: use SSM-SessionManagerRunShell or your own Session document"
    )]
    MissingDocument,
}

// === impl PolicyProblem ===

impl PolicyProblem {
    /// CamelCase reason for the Ready condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingRoleArn => "MissingRoleArn",
            Self::BadRoleArn(_) => "InvalidRoleArn",
            Self::MissingAudience => "MissingAudience",
            Self::MissingRegion => "MissingRegion",
            Self::BadRegion(_) => "InvalidRegion",
            Self::NoTiers => "NoTiers",
            Self::SessionDurationOutOfRange(_) => "InvalidSessionDuration",
            Self::CredentialsShorterThanSession { .. } => "CredentialsShorterThanSession",
            Self::IdleWarningTooLate { .. } => "InvalidIdleWarning",
            Self::CapTooSmall { .. } => "InvalidCap",
            Self::BadNodeSelector(_) => "InvalidNodeSelector",
            Self::MissingDocument => "MissingDocument",
        }
    }
}

/// Everything wrong with a policy, in a stable order; empty when the policy is usable.
pub fn validate_policy(spec: &NodeShellPolicySpec) -> Vec<PolicyProblem> {
    let mut problems = Vec::new();
    match spec.aws.role_arn.as_deref().map(str::trim) {
        None | Some("") => problems.push(PolicyProblem::MissingRoleArn),
        Some(arn) if !is_role_arn(arn) => problems.push(PolicyProblem::BadRoleArn(arn.to_string())),
        Some(_) => {}
    }
    if spec
        .aws
        .oidc_audience
        .as_deref()
        .map(str::trim)
        .unwrap_or_default()
        .is_empty()
    {
        problems.push(PolicyProblem::MissingAudience);
    }
    match spec.aws.region.as_deref().map(str::trim) {
        None | Some("") => problems.push(PolicyProblem::MissingRegion),
        Some(region) if !is_region(region) => {
            problems.push(PolicyProblem::BadRegion(region.to_string()))
        }
        Some(_) => {}
    }
    if spec.tiers.iter().all(|t| t.trim().is_empty()) {
        problems.push(PolicyProblem::NoTiers);
    }
    let session = spec.aws.session_duration_seconds;
    if !(900..=43200).contains(&session) {
        problems.push(PolicyProblem::SessionDurationOutOfRange(session));
    }
    let limits = &spec.limits;
    if session < limits.max_duration_seconds {
        problems.push(PolicyProblem::CredentialsShorterThanSession {
            session,
            max: limits.max_duration_seconds,
        });
    }
    if limits.idle_warning_seconds >= limits.idle_seconds {
        problems.push(PolicyProblem::IdleWarningTooLate {
            warning: limits.idle_warning_seconds,
            idle: limits.idle_seconds,
        });
    }
    for (field, value) in [
        ("maxSessionsPerUser", limits.max_sessions_per_user),
        ("maxSessionsTotal", limits.max_sessions_total),
    ] {
        if value < 1 {
            problems.push(PolicyProblem::CapTooSmall { field, value });
        }
    }
    if let Some(selector) = &spec.node_selector
        && let Err(e) = Selector::try_from(selector.clone())
    {
        problems.push(PolicyProblem::BadNodeSelector(e.to_string()));
    }
    if spec.aws.document_name.trim().is_empty() {
        problems.push(PolicyProblem::MissingDocument);
    }
    problems
}

/// True for `arn:aws[-cn|-us-gov]:iam::<12 digits>:role/<something>`, the same shape the CRD's
/// pattern enforces.
pub fn is_role_arn(arn: &str) -> bool {
    let Some(rest) = ["arn:aws:", "arn:aws-cn:", "arn:aws-us-gov:"]
        .iter()
        .find_map(|p| arn.strip_prefix(p))
    else {
        return false;
    };
    let Some(rest) = rest.strip_prefix("iam::") else {
        return false;
    };
    let (account, rest) = rest.split_at_checked(12).unwrap_or(("", ""));
    account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && rest
            .strip_prefix(":role/")
            .is_some_and(|name| !name.is_empty())
}

/// True for names shaped like AWS regions: `us-east-1`, `us-gov-west-1`, `ap-southeast-2`.
pub fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let Some((last, head)) = parts.split_last() else {
        return false;
    };
    parts.len() >= 3
        && !last.is_empty()
        && last.bytes().all(|b| b.is_ascii_digit())
        && head
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && head.first().is_some_and(|p| p.len() == 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::policy::PolicyLimits;
    use crate::testing::policy_spec;

    #[test]
    fn a_complete_policy_is_valid() {
        assert_eq!(validate_policy(&policy_spec()), vec![]);
    }

    #[test]
    fn the_default_policy_names_every_missing_setting() {
        let problems = validate_policy(&NodeShellPolicySpec::default());
        assert_eq!(
            problems,
            vec![
                PolicyProblem::MissingRoleArn,
                PolicyProblem::MissingAudience,
                PolicyProblem::MissingRegion,
                PolicyProblem::NoTiers
            ]
        );
    }

    #[test]
    fn cross_field_rules_are_checked() {
        let mut spec = policy_spec();
        spec.aws.session_duration_seconds = 900;
        spec.limits = PolicyLimits {
            max_duration_seconds: 3600,
            idle_seconds: 60,
            idle_warning_seconds: 60,
            max_sessions_per_user: 0,
            ..PolicyLimits::default()
        };
        let problems = validate_policy(&spec);
        assert!(
            problems.contains(&PolicyProblem::CredentialsShorterThanSession {
                session: 900,
                max: 3600
            })
        );
        assert!(problems.contains(&PolicyProblem::IdleWarningTooLate {
            warning: 60,
            idle: 60
        }));
        assert!(problems.contains(&PolicyProblem::CapTooSmall {
            field: "maxSessionsPerUser",
            value: 0
        }));
        assert!(
            problems
                .iter()
                .all(|p| !p.to_string().is_empty() && !p.reason().is_empty())
        );
    }

    #[test]
    fn role_arns() {
        assert!(is_role_arn("arn:aws:iam::123456789012:role/a"));
        assert!(is_role_arn("arn:aws-us-gov:iam::123456789012:role/path/a"));
        assert!(is_role_arn("arn:aws-cn:iam::123456789012:role/a"));
        assert!(!is_role_arn("arn:aws:iam::12345678901:role/a"));
        assert!(!is_role_arn("arn:aws:iam::123456789012:user/a"));
        assert!(!is_role_arn("arn:aws:iam::123456789012:role/"));
        assert!(!is_role_arn("arn:aws-eu:iam::123456789012:role/a"));
        assert!(!is_role_arn(""));
    }

    #[test]
    fn regions() {
        for ok in [
            "us-east-1",
            "us-gov-west-1",
            "ap-southeast-2",
            "eu-central-1",
        ] {
            assert!(is_region(ok), "{ok}");
        }
        for bad in ["", "us-east", "useast1", "US-EAST-1", "u-east-1", "us--1"] {
            assert!(!is_region(bad), "{bad}");
        }
    }
}

//! AWS and Kubernetes failures in the API's words: the one mapping from what STS, SSM, the
//! apiserver or the controller answered to an [`ErrorCode`] and a message that says what to
//! do. Used by the open path (preflight, `POST …/shell`) and by the live side at attach, so
//! the same refusal gets the same code on both. Pure.

use kube::ResourceExt;

use crate::api::{NodeShellPolicy, NodeShellSession};
use crate::aws::{AgentPing, AssumeRoleError, SsmCallError};
use crate::gateway::access::eligibility::{Ineligible, ShellTarget};
use crate::gateway::error::{ApiError, ErrorCode, RETRY_AFTER};
use crate::gateway::handover::TranscriptLoadError;

/// KMS refused `kms:GenerateDataKey` on the session's key (Session Manager preferences
/// require KMS encryption): what happened and the permission statement the role needs.
pub fn kms_denied(key_id: &str, aws_message: &str) -> ApiError {
    let resource = if key_id.starts_with("arn:aws:kms:") && key_id.contains(":key/") {
        key_id.to_string()
    } else {
        // An alias or bare id: the statement must name the key's ARN, which KMS shows.
        "arn:aws:kms:<region>:<account>:key/<key id>".to_string()
    };
    ApiError::new(
        ErrorCode::KmsDenied,
        format!(
            "this instance's Session Manager sessions are encrypted with KMS key {key_id}, and the role may not use it ({aws_message}); add to the role's permission policy {{\"Effect\": \"Allow\", \"Action\": \"kms:GenerateDataKey\", \"Resource\": \"{resource}\"}} and allow the role in the key policy"
        ),
    )
}

/// A node-side refusal (tier, policy, EC2, role, region, audience, caps) in the API's words.
pub fn ineligible(reason: &Ineligible) -> ApiError {
    let message = reason.message();
    match reason {
        Ineligible::Tier {
            tier,
            allowed_tiers,
            ..
        } => ApiError::new(ErrorCode::Forbidden, message)
            .with(
                "tier",
                tier.as_deref()
                    .map_or(serde_json::Value::Null, serde_json::Value::from),
            )
            .with("allowed_tiers", allowed_tiers.clone()),
        Ineligible::Disabled { .. } => ApiError::new(ErrorCode::NodeShellDisabled, message),
        Ineligible::NotEc2 { .. } => ApiError::new(ErrorCode::NodeNotEc2, message),
        Ineligible::NoRole { .. } => ApiError::new(ErrorCode::NoRole, message),
        Ineligible::NoRegion { .. } => ApiError::new(ErrorCode::NoRegion, message),
        Ineligible::Audience { expected, .. } => {
            ApiError::new(ErrorCode::AudMismatch, message).with("expected_aud", expected.clone())
        }
        Ineligible::CapPerUser { limit, .. } => {
            ApiError::new(ErrorCode::CapUser, message).with("limit", *limit)
        }
        Ineligible::CapTotal { limit, .. } => {
            ApiError::new(ErrorCode::CapTotal, message).with("limit", *limit)
        }
    }
}

/// What the API says about a failed Kubernetes API call: 404 stays 404 (`what` not found),
/// everything else fails closed.
pub fn kube_error(e: &kube::Error, what: &str) -> ApiError {
    match e {
        kube::Error::Api(s) if s.code == 404 => {
            ApiError::new(ErrorCode::NotFound, format!("{what} not found"))
        }
        other => {
            tracing::warn!(error = %other, what, "Kubernetes API call failed");
            ApiError::new(
                ErrorCode::Internal,
                "cannot reach the Kubernetes API; no session was opened or changed; try again shortly",
            )
        }
    }
}

/// A Kubernetes API call that did not answer in time.
pub fn kube_timeout(what: &str) -> ApiError {
    tracing::warn!(what, "Kubernetes API call timed out");
    ApiError::new(
        ErrorCode::Internal,
        "cannot reach the Kubernetes API (no answer within 10 s); no session was opened or changed; try again shortly",
    )
}

/// A cluster-wide list (every node, every session) that found no free place within `waited`
/// (`at_once` run already on this gateway): the caller asks again shortly.
pub fn lists_busy(what: &str, at_once: usize, waited: std::time::Duration) -> ApiError {
    tracing::warn!(
        what,
        at_once,
        "a cluster-wide list waited too long for its turn"
    );
    ApiError::new(
        ErrorCode::RateLimited,
        format!(
            "this gateway is already reading {at_once} lists of every {what} and none finished within {} s; try again in a few seconds",
            waited.as_secs()
        ),
    )
    .with(RETRY_AFTER, LISTS_RETRY_AFTER_SECONDS)
}

/// When a refused cluster-wide list may be asked for again.
const LISTS_RETRY_AFTER_SECONDS: u64 = 2;

/// Creating the session object failed: a refusal of its content is the caller's
/// `E_BAD_REQUEST`, anything else a failed call.
pub fn create_error(e: &kube::Error) -> ApiError {
    match e {
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => ApiError::new(
            ErrorCode::BadRequest,
            format!("the apiserver refused the session: {}", s.message),
        ),
        other => kube_error(other, "session"),
    }
}

/// How an STS refusal reads to the person, wherever it happens (open or attach).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssumeRoleRefusal {
    /// The code of the answer or `error` frame.
    pub code: ErrorCode,
    /// Whether trying again later can work.
    pub retryable: bool,
    /// What to do about it.
    pub hint: &'static str,
}

/// Whether an `InvalidIdentityToken` message is about the token's audience (STS says
/// "Incorrect token audience").
fn is_audience(message: &str) -> bool {
    message.to_ascii_lowercase().contains("audience")
}

/// The one mapping of an AssumeRoleWithWebIdentity failure to a code.
pub fn assume_role(e: &AssumeRoleError) -> AssumeRoleRefusal {
    let (code, retryable, hint) = match e {
        AssumeRoleError::AccessDenied(_) => (
            ErrorCode::TrustDenied,
            false,
            "ask a platform admin to check the role's trust policy (its conditions on sub and aud)",
        ),
        AssumeRoleError::InvalidIdentityToken(m) if is_audience(m) => (
            ErrorCode::AudMismatch,
            false,
            "the account's IAM OIDC provider must list the policy's aws.oidcAudience as a client id",
        ),
        AssumeRoleError::InvalidIdentityToken(_) => (
            ErrorCode::TrustDenied,
            false,
            "the account's IAM OIDC provider must trust this issuer",
        ),
        AssumeRoleError::ExpiredToken(_) => (
            ErrorCode::ReauthRequired,
            false,
            "your sign-in expired before AWS saw it; sign in again",
        ),
        AssumeRoleError::Validation(_) => (
            ErrorCode::StartFailed,
            false,
            "check the policy's role ARN and session duration",
        ),
        AssumeRoleError::IdpCommunication(_)
        | AssumeRoleError::Other { .. }
        | AssumeRoleError::Transport(_) => (ErrorCode::StartFailed, true, "try again shortly"),
    };
    AssumeRoleRefusal {
        code,
        retryable,
        hint,
    }
}

/// An AssumeRoleWithWebIdentity failure at open, naming the role (and the expected audience
/// in `expected_aud` when AWS refused the token's audience).
pub fn assume_role_error(e: &AssumeRoleError, target: &ShellTarget) -> ApiError {
    let refusal = assume_role(e);
    let role = &target.role_arn;
    let error = ApiError::new(
        refusal.code,
        format!("cannot assume {role}: {e}; {}", refusal.hint),
    );
    if refusal.code == ErrorCode::AudMismatch {
        let expected = target.policy.spec.aws.oidc_audience.clone();
        return error.with("expected_aud", expected.unwrap_or_default());
    }
    error
}

/// How an `ssm:StartSession` refusal reads to the person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartSessionRefusal {
    /// The code of the `error` frame.
    pub code: ErrorCode,
    /// Whether trying again later can work.
    pub retryable: bool,
    /// What happened and what to do.
    pub message: String,
}

/// The one mapping of a StartSession failure to a code.
pub fn start_session(e: &SsmCallError) -> StartSessionRefusal {
    match e {
        SsmCallError::TargetNotConnected(_) => StartSessionRefusal {
            code: ErrorCode::AgentOffline,
            retryable: true,
            message: format!(
                "{e}; check that the SSM agent runs on the instance and reaches Systems Manager"
            ),
        },
        SsmCallError::AccessDenied(aws_message) => StartSessionRefusal {
            code: ErrorCode::StartFailed,
            retryable: false,
            message: start_session_denied(aws_message),
        },
        other => StartSessionRefusal {
            code: ErrorCode::StartFailed,
            retryable: other.is_transient(),
            message: format!("ssm:StartSession failed: {other}"),
        },
    }
}

/// IAM refused `ssm:StartSession`: the statement to add, on the resource IAM named (the
/// instance, or the document, which needs a statement of its own with no tag condition).
fn start_session_denied(aws_message: &str) -> String {
    let resource = aws_message
        .split_once(" on resource: ")
        .map(|(_, rest)| rest.split_once(' ').map_or(rest, |(arn, _)| arn));
    let statement = |resource: &str| {
        format!(
            "{{\"Effect\": \"Allow\", \"Action\": \"ssm:StartSession\", \"Resource\": \"{resource}\"}}"
        )
    };
    let advice = match resource {
        Some(document) if document.contains(":document/") => format!(
            "add to the role's permission policy a statement of its own, with no condition (documents carry no instance tags), {}",
            statement(document)
        ),
        Some(instance) => format!(
            "add to the role's permission policy {} (or widen the instance statement's condition to match this node)",
            statement(instance)
        ),
        None => "the role needs ssm:StartSession on both the instance and the Session Manager document (two statements, see setup.md)".to_string(),
    };
    format!("the assumed role may not start a Session Manager session ({aws_message}); {advice}")
}

/// DescribeInstanceInformation failed with the caller's credentials.
pub fn describe_error(e: &SsmCallError, target: &ShellTarget) -> ApiError {
    ApiError::new(
        ErrorCode::StartFailed,
        format!(
            "SSM refused DescribeInstanceInformation for {} with your credentials: {e}",
            target.instance_id
        ),
    )
}

/// The agent's PingStatus as a refusal, unless it is online.
pub fn ping_error(ping: &AgentPing, target: &ShellTarget) -> Option<ApiError> {
    let status = match ping {
        AgentPing::Online => return None,
        AgentPing::ConnectionLost => "ConnectionLost".to_string(),
        AgentPing::Inactive => "Inactive".to_string(),
        AgentPing::NotManaged => "not managed by SSM".to_string(),
        AgentPing::Other(s) => s.clone(),
    };
    Some(ApiError::new(
        ErrorCode::AgentOffline,
        format!(
            "the SSM agent on {} ({}) is not online (PingStatus {status}); check that amazon-ssm-agent runs and reaches SSM, then try again",
            target.node_name, target.instance_id
        ),
    ))
}

/// The API error for a session the controller did not admit.
pub fn decision_error(session: &NodeShellSession, policy: &NodeShellPolicy) -> ApiError {
    let status = session.status.clone().unwrap_or_default();
    let reason = status.reason.unwrap_or_default();
    let message = status
        .message
        .unwrap_or_else(|| format!("the session ended as {}", session.phase()));
    let limits = &policy.spec.limits;
    match reason.as_str() {
        "CapPerUser" => {
            ApiError::new(ErrorCode::CapUser, message).with("limit", limits.max_sessions_per_user)
        }
        "CapTotal" => {
            ApiError::new(ErrorCode::CapTotal, message).with("limit", limits.max_sessions_total)
        }
        "PolicyDenied" | "NodeNotEligible" => ApiError::new(ErrorCode::NodeShellDisabled, message),
        _ => ApiError::new(
            ErrorCode::Internal,
            format!(
                "session {} was not admitted ({reason}): {message}",
                session.name_any()
            ),
        ),
    }
}

/// A transcript that cannot be read, for session `name`.
pub fn transcript_error(e: TranscriptLoadError, name: &str) -> ApiError {
    match e {
        TranscriptLoadError::Missing(m) => ApiError::new(ErrorCode::NotFound, m),
        TranscriptLoadError::Storage(m) => ApiError::new(
            ErrorCode::Internal,
            format!("cannot read the transcript of {name}: {m}"),
        ),
    }
}

/// A stored ledger that cannot be read, in the API's words: none is `E_NOT_FOUND` (the
/// session ran on another document), a storage failure `E_INTERNAL`.
pub fn ledger_error(e: TranscriptLoadError, name: &str) -> ApiError {
    match e {
        TranscriptLoadError::Missing(m) => ApiError::new(ErrorCode::NotFound, m),
        TranscriptLoadError::Storage(m) => ApiError::new(
            ErrorCode::Internal,
            format!("cannot read the ledger of {name}: {m}"),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::api::{NodeShellPolicySpec, SessionReason};
    use crate::gateway::live::reasons::{assume_role_failure, start_session_failure};

    fn target() -> ShellTarget {
        let mut spec = NodeShellPolicySpec::default();
        spec.aws.oidc_audience = Some("nodeshell".into());
        ShellTarget {
            node_name: "n1".into(),
            instance_id: "i-0123456789abcdef0".into(),
            region: "eu-west-1".into(),
            policy: NodeShellPolicy::new("p", spec),
            role_arn: "arn:aws:iam::123456789012:role/r".into(),
        }
    }

    /// Each STS refusal, with the code it must carry wherever it is met.
    fn sts_refusals() -> Vec<(AssumeRoleError, ErrorCode)> {
        vec![
            (
                AssumeRoleError::AccessDenied("not authorized".into()),
                ErrorCode::TrustDenied,
            ),
            (
                AssumeRoleError::InvalidIdentityToken("Incorrect token audience".into()),
                ErrorCode::AudMismatch,
            ),
            (
                AssumeRoleError::InvalidIdentityToken("No OpenIDConnect provider found".into()),
                ErrorCode::TrustDenied,
            ),
            (
                AssumeRoleError::ExpiredToken("expired".into()),
                ErrorCode::ReauthRequired,
            ),
            (
                AssumeRoleError::Validation("duration".into()),
                ErrorCode::StartFailed,
            ),
            (
                AssumeRoleError::IdpCommunication("down".into()),
                ErrorCode::StartFailed,
            ),
            (
                AssumeRoleError::Transport("eof".into()),
                ErrorCode::StartFailed,
            ),
        ]
    }

    #[test]
    fn an_sts_refusal_has_one_code_on_open_and_on_attach() {
        for (e, code) in sts_refusals() {
            assert_eq!(assume_role(&e).code, code, "{e:?}");
            assert_eq!(assume_role_error(&e, &target()).code, code, "open: {e:?}");
            let attach = assume_role_failure(&e);
            assert_eq!(attach.code, code, "attach: {e:?}");
            assert_eq!(attach.reason, SessionReason::AssumeRoleDenied);
        }
    }

    #[test]
    fn an_audience_refusal_at_attach_is_aud_mismatch_not_trust_denied() {
        let e = AssumeRoleError::InvalidIdentityToken("Incorrect token audience".into());
        let attach = assume_role_failure(&e);
        assert_eq!(attach.code, ErrorCode::AudMismatch);
        assert!(!attach.retryable);
        assert!(
            attach.message.contains("oidcAudience"),
            "{}",
            attach.message
        );
        let open = assume_role_error(&e, &target());
        assert_eq!(open.extra["expected_aud"], "nodeshell");
    }

    #[test]
    fn only_transient_sts_failures_are_retryable() {
        for (e, _) in sts_refusals() {
            let transient = matches!(
                e,
                AssumeRoleError::IdpCommunication(_)
                    | AssumeRoleError::Transport(_)
                    | AssumeRoleError::Other { .. }
            );
            assert_eq!(assume_role(&e).retryable, transient, "{e:?}");
        }
    }

    #[test]
    fn start_session_refusals_name_an_offline_agent() {
        let offline = start_session_failure(&SsmCallError::TargetNotConnected("i-1".into()));
        assert_eq!(offline.code, ErrorCode::AgentOffline);
        assert_eq!(offline.reason, SessionReason::AgentOffline);
        assert!(offline.retryable);
    }

    #[test]
    fn a_start_session_denied_on_the_document_names_the_statement_to_add() {
        let document = "arn:aws:ssm:eu-west-1:123456789012:document/SSM-SessionManagerRunShell";
        let aws = format!(
            "User: arn:aws:sts::123456789012:assumed-role/r/ns-alice is not authorized to perform: ssm:StartSession on resource: {document} because no identity-based policy allows the ssm:StartSession action"
        );
        let refusal = start_session(&SsmCallError::AccessDenied(aws.clone()));
        assert_eq!(refusal.code, ErrorCode::StartFailed);
        assert!(!refusal.retryable);
        assert!(refusal.message.contains(&aws), "{}", refusal.message);
        assert!(
            refusal.message.contains(&format!(
                "{{\"Effect\": \"Allow\", \"Action\": \"ssm:StartSession\", \"Resource\": \"{document}\"}}"
            )),
            "{}",
            refusal.message
        );
        assert!(
            refusal.message.contains("no condition"),
            "{}",
            refusal.message
        );

        let instance = "arn:aws:ec2:eu-west-1:123456789012:instance/i-1";
        let on_instance =
            start_session(&SsmCallError::AccessDenied(aws.replace(document, instance)));
        assert!(
            on_instance
                .message
                .contains(&format!("\"Resource\": \"{instance}\"}}")),
            "{}",
            on_instance.message
        );
        let bare = start_session(&SsmCallError::AccessDenied("denied".into()));
        assert!(
            bare.message
                .contains("both the instance and the Session Manager document")
        );
    }

    #[test]
    fn kubernetes_failures_keep_404_and_fail_closed_otherwise() {
        let status = |code: u16| {
            kube::Error::Api(
                kube::core::Status::failure("boom", "Reason")
                    .with_code(code)
                    .boxed(),
            )
        };
        assert_eq!(kube_error(&status(404), "node").code, ErrorCode::NotFound);
        let down = kube_error(&status(500), "node");
        assert_eq!(down.code, ErrorCode::Internal);
        assert!(!down.message.contains("boom"), "{}", down.message);
        assert_eq!(create_error(&status(422)).code, ErrorCode::BadRequest);
        assert_eq!(create_error(&status(503)).code, ErrorCode::Internal);
    }
}

//! Why a live session ends or fails to start, as the reason written to `status.reason`, the
//! `closed`/`error` frame sent to the browser and the audit outcome. Pure.

use crate::api::SessionReason;
use crate::aws::{AssumeRoleError, SsmCallError};
use crate::gateway::error::ErrorCode;
use crate::gateway::refusals;
use crate::gateway::transcript::StorageFailure;
use crate::ssm::service_close::ServiceClose;
use crate::ssm::{ChannelError, CloseCause, CloseReason, HandshakeError, ResumeError};

/// Why a running session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The remote shell exited (or the service closed the channel by itself).
    UserExit,
    /// The person closed the terminal (`{"type":"close"}`).
    UserClosed,
    /// The browser went away and did not reattach within the grace window.
    ClientDisconnected,
    /// No activity for the policy's `idleSeconds`.
    IdleTimeout,
    /// Open for the policy's `maxDurationSeconds`.
    MaxDuration,
    /// `spec.terminate` was set, or the session was deleted through the API.
    AdminTerminated,
    /// This gateway is shutting down.
    GatewayShutdown,
    /// `transcript.required` and a transcript flush failed, for this reason.
    TranscriptFailed(StorageFailure),
    /// The data channel failed and could not be resumed.
    ChannelLost,
    /// Session Manager closed the session by itself (its idle timeout, its maximum session
    /// duration, or TerminateSession from outside), with the service's own text.
    Ssm(ServiceClose, String),
    /// The controller moved the session to Closing with this reason.
    Controller(String),
    /// The person's identity no longer holds (the identity re-check said why).
    IdentityRevoked(String),
    /// The session is KMS-encrypted and KMS refused the person's role the data key
    /// (`E_KMS_DENIED`, with the statement to add).
    KmsDenied(String),
    /// The data channel had to reconnect after the session's AWS credentials expired, and
    /// they could not be renewed (why).
    CredentialsExpired(String),
    /// The session's AWS credentials, which nothing renews (a bearer caller's), were about
    /// to expire: it ended while its TerminateSession could still be signed.
    CredentialsEnding,
}

impl EndReason {
    /// The string written to `status.reason` and sent in the `closed` frame.
    pub fn as_str(&self) -> &str {
        match self {
            Self::UserExit => SessionReason::UserExit.as_str(),
            Self::UserClosed => SessionReason::UserClosed.as_str(),
            Self::ClientDisconnected => SessionReason::ClientDisconnected.as_str(),
            Self::IdleTimeout => SessionReason::IdleTimeout.as_str(),
            Self::MaxDuration => SessionReason::MaxDuration.as_str(),
            Self::AdminTerminated => SessionReason::AdminTerminated.as_str(),
            Self::GatewayShutdown => SessionReason::GatewayShutdown.as_str(),
            Self::TranscriptFailed(_) => SessionReason::TranscriptFailed.as_str(),
            Self::ChannelLost => SessionReason::ChannelLost.as_str(),
            Self::Ssm(ServiceClose::IdleTimeout, _) => SessionReason::SsmIdleTimeout.as_str(),
            Self::Ssm(ServiceClose::MaxDuration, _) => SessionReason::SsmMaxDuration.as_str(),
            Self::Ssm(ServiceClose::Terminated, _) => SessionReason::SsmTerminated.as_str(),
            Self::Controller(reason) => reason,
            Self::IdentityRevoked(_) => SessionReason::IdentityRevoked.as_str(),
            Self::KmsDenied(_) => SessionReason::StartFailed.as_str(),
            Self::CredentialsExpired(_) | Self::CredentialsEnding => {
                SessionReason::CredentialsExpired.as_str()
            }
        }
    }

    /// A sentence for `status.message`.
    pub fn message(&self) -> String {
        match self {
            Self::UserExit => "the shell exited".into(),
            Self::UserClosed => "the person closed the terminal".into(),
            Self::ClientDisconnected => {
                "the browser disconnected and did not reattach within the grace window".into()
            }
            Self::IdleTimeout => "closed after the policy's idle time without activity".into(),
            Self::MaxDuration => "closed at the policy's maximum session duration".into(),
            Self::AdminTerminated => "termination was requested".into(),
            Self::GatewayShutdown => "the gateway shut down; open a new session".into(),
            Self::TranscriptFailed(failure) => format!(
                "the transcript could not be stored and the policy requires one: {}; the session was closed. {}",
                failure.cause(),
                failure.remedy()
            ),
            Self::ChannelLost => {
                "the SSM data channel failed and could not be reconnected; open a new session"
                    .into()
            }
            Self::Ssm(close, text) => {
                let what = match close {
                    ServiceClose::IdleTimeout => {
                        "Session Manager's idle timeout (the account's idleSessionTimeout preference) closed the session"
                    }
                    ServiceClose::MaxDuration => {
                        "Session Manager's maximum session duration (the account's maxSessionDuration preference) closed the session"
                    }
                    ServiceClose::Terminated => {
                        "the SSM session was terminated outside nodeshell (ssm:TerminateSession)"
                    }
                };
                format!("{what}: {text}")
            }
            Self::Controller(reason) => format!("the controller closed the session ({reason})"),
            Self::IdentityRevoked(why) => {
                format!("the person's identity was checked again and no longer holds: {why}")
            }
            Self::KmsDenied(message) => message.clone(),
            Self::CredentialsExpired(why) => format!(
                "the connection to the node had to be renewed after the session's AWS credentials expired, and they could not be renewed ({why}); sign in to the console again and reopen the shell"
            ),
            Self::CredentialsEnding => "closed a minute before the session's AWS credentials expire: nothing renews the credentials of a shell opened with a bearer token, and a session must end while it can still be closed on AWS; sign in to the console again and reopen the shell".into(),
        }
    }

    /// The `error` frame the browser gets before `closed`, for an end that has an `E_…` code.
    pub fn error(&self) -> Option<(ErrorCode, &str)> {
        match self {
            Self::KmsDenied(message) => Some((ErrorCode::KmsDenied, message)),
            _ => None,
        }
    }

    /// The audit row's `outcome`: `success` for an orderly end, `error` when something failed.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::TranscriptFailed(_)
            | Self::ChannelLost
            | Self::KmsDenied(_)
            | Self::CredentialsExpired(_) => "error",
            _ => "success",
        }
    }
}

/// The reason for a channel that ended by itself (not because we closed it): the shell's exit
/// has an empty `channel_closed` text; a text means the service closed it and says why.
pub fn end_from_channel(reason: &CloseReason) -> EndReason {
    match &reason.cause {
        CloseCause::ChannelClosed => match ServiceClose::from_output(&reason.message) {
            Some(close) => EndReason::Ssm(close, reason.message.trim().to_string()),
            None => EndReason::UserExit,
        },
        CloseCause::ClosedByClient => EndReason::UserExit,
        CloseCause::Failed(ChannelError::Handshake(HandshakeError::KmsDenied {
            key_id,
            message,
        })) => EndReason::KmsDenied(refusals::kms_denied(key_id, message).message),
        CloseCause::Failed(ChannelError::Resume(ResumeError::CredentialsExpired(why))) => {
            EndReason::CredentialsExpired(why.clone())
        }
        CloseCause::SessionTimedOut | CloseCause::Failed(_) => EndReason::ChannelLost,
    }
}

/// Why a session could not start: the error frame, the reason written to status, and the
/// audit outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartFailure {
    /// The `error` frame's code.
    pub code: ErrorCode,
    /// `status.reason` of the session, which is closed.
    pub reason: SessionReason,
    /// What happened and what to do.
    pub message: String,
    /// Whether trying again later can work.
    pub retryable: bool,
}

/// AssumeRoleWithWebIdentity failed: coded as on the open path ([`refusals::assume_role`]).
pub fn assume_role_failure(e: &AssumeRoleError) -> StartFailure {
    let refusal = refusals::assume_role(e);
    StartFailure {
        code: refusal.code,
        reason: SessionReason::AssumeRoleDenied,
        message: format!("{e}; {}", refusal.hint),
        retryable: refusal.retryable,
    }
}

/// StartSession failed ([`refusals::start_session`]).
pub fn start_session_failure(e: &SsmCallError) -> StartFailure {
    let refusal = refusals::start_session(e);
    StartFailure {
        reason: if refusal.code == ErrorCode::AgentOffline {
            SessionReason::AgentOffline
        } else {
            SessionReason::StartFailed
        },
        code: refusal.code,
        message: refusal.message,
        retryable: refusal.retryable,
    }
}

/// The data channel could not be opened.
pub fn channel_failure(e: &ChannelError) -> StartFailure {
    StartFailure {
        code: ErrorCode::StartFailed,
        reason: SessionReason::StartFailed,
        message: e.to_string(),
        retryable: matches!(e, ChannelError::Connect { .. }),
    }
}

/// The first transcript write failed and the policy requires a transcript. Retryable only
/// when the store was unavailable: a refusal (403, missing namespace) fails the same way
/// on every attempt until the platform team changes something.
pub fn transcript_start_failure(failure: &StorageFailure) -> StartFailure {
    StartFailure {
        code: ErrorCode::Internal,
        reason: SessionReason::StartFailed,
        message: format!(
            "transcripts for this policy are required, but {}; no session was opened. {}",
            failure.cause(),
            failure.remedy()
        ),
        retryable: failure.retryable(),
    }
}

/// What the close message adds when the final transcript flush failed: "no transcript was
/// stored" when no chunk ever was (nothing exists to read), otherwise that its end is
/// missing. The remedy is named only for refusals, which need the platform team.
pub fn transcript_loss_note(ever_stored: bool, failure: &StorageFailure) -> String {
    let what = if ever_stored {
        "the end of the transcript could not be stored"
    } else {
        "no transcript was stored"
    };
    let mut note = format!("; {what}: {}", failure.cause());
    if !failure.retryable() {
        note.push_str(". ");
        note.push_str(&failure.remedy());
    }
    note
}

/// Whether the final flush tries again after `failure`: only when the store was
/// unavailable; a refusal would fail identically and only delay the close.
pub fn retry_final_flush(failure: &StorageFailure) -> bool {
    failure.retryable()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ends_map_to_reasons() {
        let closed = |cause| CloseReason {
            exit_code: Some(0),
            cause,
            message: String::new(),
        };
        assert_eq!(
            end_from_channel(&closed(CloseCause::ChannelClosed)),
            EndReason::UserExit
        );
        assert_eq!(
            end_from_channel(&closed(CloseCause::SessionTimedOut)),
            EndReason::ChannelLost
        );
        assert_eq!(
            end_from_channel(&closed(CloseCause::Failed(ChannelError::Closed))),
            EndReason::ChannelLost
        );
    }

    #[test]
    fn credentials_that_expired_and_cannot_be_renewed_say_so_and_what_to_do() {
        let why = "they were minted from a bearer token".to_string();
        let reason = CloseReason {
            exit_code: None,
            cause: CloseCause::Failed(ChannelError::Resume(ResumeError::CredentialsExpired(
                why.clone(),
            ))),
            message: String::new(),
        };
        let end = end_from_channel(&reason);
        assert_eq!(end, EndReason::CredentialsExpired(why.clone()));
        assert_eq!(end.as_str(), "CredentialsExpired");
        assert!(end.message().contains(&why), "{}", end.message());
        assert!(end.message().contains("sign in"), "{}", end.message());
        assert_eq!(end.outcome(), "error");
        // A refusal that is not about credentials stays ChannelLost.
        let refused = CloseReason {
            cause: CloseCause::Failed(ChannelError::Resume(ResumeError::Refused("x".into()))),
            ..reason
        };
        assert_eq!(end_from_channel(&refused), EndReason::ChannelLost);
    }

    #[test]
    fn a_session_cut_before_its_credentials_expire_says_why_and_what_to_do() {
        let end = EndReason::CredentialsEnding;
        assert_eq!(end.as_str(), "CredentialsExpired");
        let message = end.message();
        assert!(message.contains("bearer token"), "{message}");
        assert!(
            message.contains("sign in to the console again and reopen the shell"),
            "{message}"
        );
        // An orderly end: the session was closed on AWS before its credentials lapsed.
        assert_eq!(end.outcome(), "success");
        assert_eq!(end.error(), None);
    }

    #[test]
    fn service_closes_are_named_with_aws_text_never_user_exit() {
        use crate::ssm::service_close::{IDLE_TIMEOUT_TEXT, MAX_DURATION_TEXT, TERMINATED_TEXT};
        let closed = |text: &str| CloseReason {
            exit_code: None,
            cause: CloseCause::ChannelClosed,
            message: text.to_string(),
        };
        for (text, reason) in [
            (IDLE_TIMEOUT_TEXT, "SsmIdleTimeout"),
            (MAX_DURATION_TEXT, "SsmMaxDuration"),
            (TERMINATED_TEXT, "SsmTerminated"),
        ] {
            let end = end_from_channel(&closed(text));
            assert_eq!(end.as_str(), reason);
            assert!(end.message().ends_with(text), "{}", end.message());
            assert_eq!(end.outcome(), "success");
        }
        assert_eq!(end_from_channel(&closed("")), EndReason::UserExit);
    }

    #[test]
    fn a_kms_denial_ends_with_e_kms_denied_naming_the_statement() {
        let reason = CloseReason {
            exit_code: None,
            cause: CloseCause::Failed(ChannelError::Handshake(HandshakeError::KmsDenied {
                key_id: "arn:aws:kms:eu-west-1:111111111111:key/k-1".into(),
                message: "User: r is not authorized to perform: kms:GenerateDataKey".into(),
            })),
            message: String::new(),
        };
        let end = end_from_channel(&reason);
        assert_eq!(end.as_str(), "StartFailed");
        assert_eq!(end.outcome(), "error");
        let (code, message) = end.error().expect("an error frame");
        assert_eq!(code.as_str(), "E_KMS_DENIED");
        assert!(
            message.contains(r#""Action": "kms:GenerateDataKey", "Resource": "arn:aws:kms:eu-west-1:111111111111:key/k-1""#),
            "{message}"
        );
        assert!(message.contains("User: r is not authorized"), "{message}");
        assert_eq!(end.message(), message);
        // Other handshake failures stay a lost channel without an error frame.
        let other = CloseReason {
            cause: CloseCause::Failed(ChannelError::Handshake(HandshakeError::UnexpectedChallenge)),
            ..reason
        };
        assert_eq!(end_from_channel(&other), EndReason::ChannelLost);
        assert_eq!(EndReason::ChannelLost.error(), None);
    }

    #[test]
    fn end_reasons_name_status_reasons() {
        assert_eq!(EndReason::IdleTimeout.as_str(), "IdleTimeout");
        assert_eq!(EndReason::UserClosed.as_str(), "UserClosed");
        assert_eq!(
            EndReason::Controller("MaxDuration".into()).as_str(),
            "MaxDuration"
        );
        assert_eq!(
            EndReason::TranscriptFailed(StorageFailure::Unavailable).outcome(),
            "error"
        );
        assert_eq!(EndReason::GatewayShutdown.outcome(), "success");
    }

    #[test]
    fn start_errors_map_to_codes_and_reasons() {
        let denied = assume_role_failure(&AssumeRoleError::AccessDenied("no".into()));
        assert_eq!(denied.code, ErrorCode::TrustDenied);
        assert_eq!(denied.reason, SessionReason::AssumeRoleDenied);
        assert!(!denied.retryable);
        let offline = start_session_failure(&SsmCallError::TargetNotConnected("x".into()));
        assert_eq!(offline.code, ErrorCode::AgentOffline);
        assert_eq!(offline.reason, SessionReason::AgentOffline);
        let other = start_session_failure(&SsmCallError::InvalidDocument("x".into()));
        assert_eq!(other.code, ErrorCode::StartFailed);
        assert_eq!(other.reason, SessionReason::StartFailed);
    }

    fn forbidden() -> StorageFailure {
        StorageFailure::Forbidden {
            namespace: "default".into(),
        }
    }

    #[test]
    fn a_refused_required_transcript_says_what_to_do_and_is_not_retryable() {
        let t = transcript_start_failure(&forbidden());
        assert_eq!(t.code, ErrorCode::Internal);
        assert_eq!(t.reason, SessionReason::StartFailed);
        assert!(!t.retryable);
        assert_eq!(
            t.message,
            "transcripts for this policy are required, but the gateway may not write Secrets in \
             namespace default; no session was opened. Ask your platform team to grant the \
             gateway's service account create/patch on secrets there (see docs/gateway.md, RBAC)."
        );
        let missing = transcript_start_failure(&StorageFailure::NamespaceMissing {
            namespace: "gone".into(),
        });
        assert!(!missing.retryable);
        assert!(
            missing.message.contains("namespace gone does not exist"),
            "{}",
            missing.message
        );
    }

    #[test]
    fn an_unavailable_store_at_the_start_is_retryable() {
        let t = transcript_start_failure(&StorageFailure::Unavailable);
        assert!(t.retryable);
        assert_eq!(
            t.message,
            "transcripts for this policy are required, but the transcript store (Kubernetes \
             API) is unavailable; no session was opened. Try again in a moment."
        );
    }

    #[test]
    fn a_transcript_failed_close_names_the_cause() {
        let end = EndReason::TranscriptFailed(forbidden());
        assert_eq!(end.as_str(), "TranscriptFailed");
        let message = end.message();
        assert!(
            message.starts_with("the transcript could not be stored and the policy requires one: the gateway may not write Secrets in namespace default; the session was closed."),
            "{message}"
        );
        assert!(message.contains("create/patch on secrets"), "{message}");
    }

    #[test]
    fn the_close_note_tells_a_missing_transcript_from_a_missing_end() {
        assert_eq!(
            transcript_loss_note(false, &forbidden()),
            "; no transcript was stored: the gateway may not write Secrets in namespace \
             default. Ask your platform team to grant the gateway's service account \
             create/patch on secrets there (see docs/gateway.md, RBAC)."
        );
        assert_eq!(
            transcript_loss_note(true, &StorageFailure::Unavailable),
            "; the end of the transcript could not be stored: the transcript store (Kubernetes \
             API) is unavailable"
        );
    }

    #[test]
    fn only_an_unavailable_store_is_retried_at_the_end() {
        assert!(retry_final_flush(&StorageFailure::Unavailable));
        assert!(!retry_final_flush(&forbidden()));
        assert!(!retry_final_flush(&StorageFailure::Rejected {
            http_status: Some(422)
        }));
    }
}

/// What a fresh read of the session asks of the gateway running it: end because
/// `spec.terminate` is set, because the controller moved it to Closing (its reason), or
/// because it was closed behind our back (e.g. GatewayLost after missed heartbeats).
pub fn takeover(session: &crate::api::NodeShellSession) -> Option<EndReason> {
    use crate::api::SessionPhase;
    let reason = session.status.as_ref().and_then(|s| s.reason.clone());
    match session.phase() {
        SessionPhase::Closing | SessionPhase::Closed | SessionPhase::Rejected => {
            Some(reason.map_or(EndReason::AdminTerminated, EndReason::Controller))
        }
        _ if session.spec.terminate => Some(EndReason::AdminTerminated),
        _ => None,
    }
}

#[cfg(test)]
mod takeover_tests {
    use super::*;
    use crate::api::{
        NodeShellSession, NodeShellSessionSpec, NodeShellSessionStatus, SessionPhase,
    };

    fn session(phase: SessionPhase, reason: Option<&str>, terminate: bool) -> NodeShellSession {
        let mut s = NodeShellSession::new(
            "s",
            NodeShellSessionSpec {
                terminate,
                ..NodeShellSessionSpec::default()
            },
        );
        s.status = Some(NodeShellSessionStatus {
            phase: Some(phase),
            reason: reason.map(str::to_string),
            ..NodeShellSessionStatus::default()
        });
        s
    }

    #[test]
    fn terminate_and_controller_phases_end_the_session() {
        assert_eq!(takeover(&session(SessionPhase::Active, None, false)), None);
        assert_eq!(
            takeover(&session(SessionPhase::Active, None, true)),
            Some(EndReason::AdminTerminated)
        );
        assert_eq!(
            takeover(&session(SessionPhase::Closing, Some("IdleTimeout"), false)),
            Some(EndReason::Controller("IdleTimeout".into()))
        );
        assert_eq!(
            takeover(&session(SessionPhase::Closed, Some("GatewayLost"), false)),
            Some(EndReason::Controller("GatewayLost".into()))
        );
        assert_eq!(
            takeover(&session(
                SessionPhase::Closing,
                Some("AdminTerminated"),
                true
            ))
            .map(|r| r.as_str().to_string()),
            Some("AdminTerminated".into())
        );
    }
}

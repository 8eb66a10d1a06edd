//! Where the control side meets the live side: what a route hands over when a browser
//! attaches (who the caller is, the admitted session, its governing policy, the id_token to
//! exchange for AWS credentials; held in memory only, never serialised), and what a route
//! asks of whatever runs attached shells and stores transcripts ([`LiveShells`],
//! [`TranscriptSource`]). Routes depend on these traits only, so they are tested without a
//! live side.

use std::fmt;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use futures::future::BoxFuture;

use chrono::{DateTime, Utc};

use crate::api::{NodeShellPolicy, NodeShellSession};
use crate::aws::{TemporaryCredentials, WebIdentityRequest};
use crate::gateway::audit::ClientInfo;
use crate::gateway::error::ErrorCode;

/// A person, as verified from their OIDC id_token and mapped to a tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`: the stable identity that ends up in the role session name.
    pub sub: String,
    /// The token's `email`, when present.
    pub email: Option<String>,
    /// A display name (`name`, else `preferred_username`, else the email, else `sub`).
    pub name: String,
    /// Groups from the configured groups claim.
    pub groups: Vec<String>,
    /// The tier the groups map to (`groupTiers`), if any.
    pub tier: Option<String>,
}

/// The caller's OIDC id_token, kept only to call `sts:AssumeRoleWithWebIdentity`.
/// Its `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct IdToken(String);

impl IdToken {
    /// Wraps a raw compact JWT.
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The raw token, for the STS call only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdToken(<redacted>)")
    }
}

/// Fresh id_tokens for a live session's person, from the console sign-in the shell was
/// opened from (the gateway refreshes it at the issuer). The live side exchanges them for new
/// AWS credentials before the old ones expire.
pub trait IdTokenRefresh: Send + Sync + 'static {
    /// A freshly refreshed id_token, or why there is none (the sign-in ended, the identity
    /// provider refused or could not be reached).
    fn fresh_id_token(&self) -> BoxFuture<'static, Result<IdToken, String>>;
}

/// A shareable [`IdTokenRefresh`]; its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct TokenRefresh(pub Arc<dyn IdTokenRefresh>);

impl fmt::Debug for TokenRefresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenRefresh")
    }
}

/// Everything the live side needs to run one admitted session for one browser.
#[derive(Clone, Debug)]
pub struct AttachGrant {
    /// Who attaches (the session's owner).
    pub caller: Caller,
    /// The caller's id_token, exchanged for AWS credentials at attach.
    pub id_token: IdToken,
    /// Where fresh id_tokens come from when the session's AWS credentials near their expiry:
    /// the console sign-in the shell was opened from; `None` for a bearer caller, whose
    /// token the gateway cannot refresh.
    pub refresh: Option<TokenRefresh>,
    /// The session as last read (phase Admitted on first attach).
    pub session: NodeShellSession,
    /// The policy that governs it (`spec.policyName`).
    pub policy: NodeShellPolicy,
    /// Initial terminal size asked for at open.
    pub cols: u16,
    /// Initial terminal rows asked for at open.
    pub rows: u16,
    /// Where the terminal's WebSocket came from, for the audit rows.
    pub client: ClientInfo,
    /// The AWS credentials the open minted for this session, when this replica opened it
    /// and the first attach comes within the ticket's lifetime: the start uses them instead
    /// of a second AssumeRoleWithWebIdentity if they [serve](MintedCredentials::serves).
    pub minted: Option<MintedCredentials>,
}

/// Least lifetime left for credentials minted at open to serve the session's start (the
/// shortest `sessionDurationSeconds` is 900 s; these are at most a ticket's lifetime old).
pub const MINTED_MIN_LEFT_SECONDS: i64 = 600;

/// The person's AWS credentials as the open's own AssumeRoleWithWebIdentity returned them,
/// with what was asked for (role, role session name, duration), handed to the first start of
/// the same session on the same replica. In memory only; `Debug` shows no part of the
/// credentials, not even the access key id (the leak checks look for every value STS issued).
#[derive(Clone)]
pub struct MintedCredentials {
    /// What STS issued.
    pub credentials: TemporaryCredentials,
    /// The role assumed.
    pub role_arn: String,
    /// The role session name CloudTrail shows (the person's).
    pub role_session_name: String,
    /// The duration asked for.
    pub duration_seconds: Option<i32>,
    /// When the id_token they were minted with expires (its `exp`): past it, STS would
    /// refuse that token, so the credentials no longer stand in for a call with it.
    pub token_expires_at: DateTime<Utc>,
}

impl fmt::Debug for MintedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedCredentials")
            .field("role_arn", &self.role_arn)
            .field("role_session_name", &self.role_session_name)
            .field("duration_seconds", &self.duration_seconds)
            .finish_non_exhaustive()
    }
}

impl MintedCredentials {
    /// Pure: whether these credentials stand in for an AssumeRoleWithWebIdentity of
    /// `request` at `now`: the same role, role session name and duration, the id_token they
    /// were minted with not expired (STS would refuse it: the person signs in again), and at
    /// least [`MINTED_MIN_LEFT_SECONDS`] before they expire (otherwise STS is asked again).
    pub fn serves(&self, request: &WebIdentityRequest, now: DateTime<Utc>) -> bool {
        now < self.token_expires_at
            && self.role_arn == request.role_arn
            && self.role_session_name == request.role_session_name
            && self.duration_seconds == request.duration_seconds
            && self.credentials.expiration - now
                >= chrono::Duration::seconds(MINTED_MIN_LEFT_SECONDS)
    }
}

/// Runs attached shells.
pub trait LiveShells: Send + Sync + 'static {
    /// Takes over an upgraded socket for an admitted session. `resume` is true when the
    /// session already ran on a socket (reattach): the browser's first text frame is then
    /// `{"type":"resume","resumeToken":…,"offset":N}`. The grant comes boxed: the socket's
    /// upgrade task keeps what its callback captured for the browser's whole stay, and the
    /// grant inline (the session and policy objects) was 2 KB of it.
    fn attach(
        &self,
        grant: Box<AttachGrant>,
        socket: WebSocket,
        resume: bool,
    ) -> BoxFuture<'static, ()>;

    /// Whether this replica runs the session (an attach to it is then a reattach).
    fn is_running(&self, _session_name: &str) -> bool {
        false
    }

    /// How many sessions this replica runs now.
    fn running(&self) -> usize {
        0
    }

    /// The resume token of a session this replica runs (what a reattach's `resume` frame
    /// must carry), for a reload of the console that attached it.
    fn resume_token(&self, _session_name: &str) -> Option<String> {
        None
    }

    /// Asks the live session (if this replica runs it) to end with reason AdminTerminated.
    fn request_terminate(&self, session_name: &str);

    /// Ends the live session (if this replica runs it) with reason IdentityRevoked: the
    /// person's identity was checked again and no longer holds (`why`).
    fn revoke_identity(&self, _session_name: &str, _why: String) {}

    /// Ends every live session (reason GatewayShutdown), writing close rows and transcripts.
    fn shutdown(&self) -> BoxFuture<'static, ()>;
}

/// Why a stored transcript could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscriptLoadError {
    /// The session has no stored transcript (recording off, or not flushed yet).
    #[error("{0}")]
    Missing(String),
    /// Reading the storage failed.
    #[error("cannot read the transcript: {0}")]
    Storage(String),
}

/// Reads stored transcripts.
pub trait TranscriptSource: Send + Sync + 'static {
    /// The stored recording of `session` (gzip members of the asciicast text, in order).
    fn load(
        &self,
        session: &NodeShellSession,
    ) -> BoxFuture<'static, Result<Vec<u8>, TranscriptLoadError>>;

    /// The stored command ledger of `session` (`Missing` when it has none).
    fn load_ledger(
        &self,
        session: &NodeShellSession,
    ) -> BoxFuture<'static, Result<crate::gateway::ledger::LedgerDocument, TranscriptLoadError>>
    {
        let name = kube::ResourceExt::name_any(session);
        Box::pin(async move {
            Err(TranscriptLoadError::Missing(format!(
                "no ledger store is configured, so the ledger of {name} cannot be read"
            )))
        })
    }

    /// Writes the `ssm_transcript_read` audit row: `reader`, from the request `client`, read
    /// `what` (`transcript` or `ledger`) of `session`.
    fn record_read(
        &self,
        _reader: &Caller,
        _client: &ClientInfo,
        _session: &NodeShellSession,
        _what: &str,
    ) {
    }

    /// Checks the stored transcript of `session` against its chain head
    /// ([`crate::gateway::transcript::chain`]).
    fn verify(
        &self,
        session: &NodeShellSession,
    ) -> BoxFuture<
        'static,
        Result<crate::gateway::transcript::chain::ChainReport, TranscriptLoadError>,
    > {
        let name = kube::ResourceExt::name_any(session);
        Box::pin(async move {
            Err(TranscriptLoadError::Missing(format!(
                "no transcript store is configured, so the transcript of {name} cannot be verified"
            )))
        })
    }

    /// Searches the ledgers (and recorded output) of `sessions`, which the caller may read,
    /// newest first; bounded ([`crate::gateway::ledger::search`]). The read rows name the
    /// request's `client`.
    fn search(
        &self,
        _reader: &Caller,
        _client: &ClientInfo,
        _sessions: Vec<NodeShellSession>,
        _query: crate::gateway::ledger::search::SearchQuery,
    ) -> BoxFuture<'static, crate::gateway::ledger::search::SearchAnswer> {
        Box::pin(async { crate::gateway::ledger::search::SearchAnswer::default() })
    }
}

/// Stand-in used where no live side runs (route tests, a build without it): every attach is
/// answered with an `error` frame and closed, and nothing is stored.
#[derive(Debug, Default, Clone)]
pub struct NoLiveShells;

impl LiveShells for NoLiveShells {
    fn attach(
        &self,
        _grant: Box<AttachGrant>,
        mut socket: WebSocket,
        _resume: bool,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let frame = serde_json::json!({
                "type": "error",
                "code": ErrorCode::StartFailed.as_str(),
                "message": "this gateway runs no live sessions",
                "retryable": false,
            });
            let _ = socket.send(Message::Text(frame.to_string().into())).await;
            let _ = socket.send(Message::Close(None)).await;
        })
    }

    fn request_terminate(&self, _session_name: &str) {}

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

impl TranscriptSource for NoLiveShells {
    fn load(
        &self,
        session: &NodeShellSession,
    ) -> BoxFuture<'static, Result<Vec<u8>, TranscriptLoadError>> {
        let name = kube::ResourceExt::name_any(session);
        Box::pin(async move {
            Err(TranscriptLoadError::Missing(format!(
                "no transcript store is configured, so the transcript of {name} cannot be read"
            )))
        })
    }
}

/// The live side and transcript source a gateway runs with.
#[derive(Clone)]
pub struct LiveSide {
    /// Attached shells.
    pub shells: Arc<dyn LiveShells>,
    /// Stored transcripts.
    pub transcripts: Arc<dyn TranscriptSource>,
}

impl std::fmt::Debug for LiveSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSide").finish_non_exhaustive()
    }
}

impl LiveSide {
    /// No live side: attaches are refused, transcripts are missing.
    pub fn none() -> Self {
        Self {
            shells: Arc::new(NoLiveShells),
            transcripts: Arc::new(NoLiveShells),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minted(expires_in: chrono::Duration, now: DateTime<Utc>) -> MintedCredentials {
        MintedCredentials {
            credentials: TemporaryCredentials::new(
                "ASIAEXAMPLE".into(),
                "s3cr3t-value".into(),
                "t0ken-value".into(),
                now + expires_in,
                "arn:aws:sts::111122223333:assumed-role/shell/nodeshell-alice".into(),
                "AROAEXAMPLE:nodeshell-alice".into(),
            ),
            role_arn: "arn:aws:iam::111122223333:role/shell".into(),
            role_session_name: "nodeshell-alice".into(),
            duration_seconds: Some(900),
            token_expires_at: now + chrono::Duration::seconds(60),
        }
    }

    fn request() -> WebIdentityRequest {
        WebIdentityRequest {
            role_arn: "arn:aws:iam::111122223333:role/shell".into(),
            role_session_name: "nodeshell-alice".into(),
            web_identity_token: "token".into(),
            duration_seconds: Some(900),
        }
    }

    #[test]
    fn minted_credentials_serve_only_the_same_request_while_fresh() {
        let now = Utc::now();
        let fresh = minted(chrono::Duration::seconds(890), now);
        assert!(fresh.serves(&request(), now));
        let other_role = WebIdentityRequest {
            role_arn: "arn:aws:iam::111122223333:role/other".into(),
            ..request()
        };
        assert!(!fresh.serves(&other_role, now), "another role");
        let other_name = WebIdentityRequest {
            role_session_name: "nodeshell-bob".into(),
            ..request()
        };
        assert!(!fresh.serves(&other_name, now), "another person's name");
        let longer = WebIdentityRequest {
            duration_seconds: Some(3600),
            ..request()
        };
        assert!(!fresh.serves(&longer, now), "the policy's duration changed");
        let expiring = minted(chrono::Duration::seconds(MINTED_MIN_LEFT_SECONDS - 1), now);
        assert!(!expiring.serves(&request(), now), "too close to expiry");
        assert!(
            !fresh.serves(&request(), now + chrono::Duration::seconds(60)),
            "the id_token they came from expired: STS would refuse it"
        );
        let debug = format!("{fresh:?}");
        assert!(
            !debug.contains("s3cr3t-value")
                && !debug.contains("t0ken-value")
                && !debug.contains("ASIAEXAMPLE"),
            "{debug}"
        );
    }
}

//! The STS, SSM and KMS calls the gateway makes with each person's own credentials: thin
//! wrappers over the AWS SDK with a pinned behaviour version, an optional endpoint override
//! (the simulator), typed errors, and credentials that never print. The SDK clients are made
//! per call from one [`AwsClients`] per gateway, so every call shares one HTTP client.

mod clients;
mod credentials;
mod error;
mod kms;
mod renewal;

use std::collections::HashMap;

use aws_sdk_ssm::types::{InstanceInformationStringFilter, PingStatus as SdkPingStatus};
use aws_sdk_sts::error::ProvideErrorMetadata;
use chrono::{DateTime, Utc};

pub use clients::AwsClients;
pub use credentials::TemporaryCredentials;
pub use error::{AssumeRoleError, SsmCallError};
pub use kms::KmsDataKeys;
pub use renewal::{
    CredentialRenewal, CredentialsUnavailable, RenewableCredentials, renew_margin, renewal_due,
};

use crate::ssm::resume::{ResumeError, SessionResumer};

/// The behaviour version every client pins (SDK defaults change only when we move it).
fn behavior_version() -> aws_config::BehaviorVersion {
    aws_config::BehaviorVersion::v2026_01_12()
}

/// Where the calls go: a region and, for the simulator or a VPC endpoint, explicit URLs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AwsEndpoints {
    /// Region of the calls and of the SigV4 scope.
    pub region: String,
    /// STS endpoint override (`None` = the regional AWS endpoint).
    pub sts_url: Option<String>,
    /// SSM endpoint override (`None` = the regional AWS endpoint).
    pub ssm_url: Option<String>,
    /// KMS endpoint override (`None` = the regional AWS endpoint).
    pub kms_url: Option<String>,
    /// S3 endpoint override for the transcript sink (`None` = the regional AWS endpoint; set,
    /// path-style addressing).
    pub s3_url: Option<String>,
}

impl AwsEndpoints {
    /// Real AWS in `region`.
    pub fn aws(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            sts_url: None,
            ssm_url: None,
            kms_url: None,
            s3_url: None,
        }
    }
}

/// One AssumeRoleWithWebIdentity request.
#[derive(Clone, PartialEq, Eq)]
pub struct WebIdentityRequest {
    /// The role to assume.
    pub role_arn: String,
    /// `<prefix>-<sanitised sub>`, 2–64 chars of `[\w+=,.@-]`.
    pub role_session_name: String,
    /// The person's OIDC id_token.
    pub web_identity_token: String,
    /// 900–43200 seconds; `None` = STS default (3600).
    pub duration_seconds: Option<i32>,
}

impl std::fmt::Debug for WebIdentityRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebIdentityRequest")
            .field("role_arn", &self.role_arn)
            .field("role_session_name", &self.role_session_name)
            .field("web_identity_token", &"** redacted **")
            .field("duration_seconds", &self.duration_seconds)
            .finish()
    }
}

pub(crate) fn describe<E: std::error::Error>(e: &E) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn to_utc(t: &aws_sdk_sts::primitives::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos()).unwrap_or_default()
}

/// `sts:AssumeRoleWithWebIdentity` on a client of its own (one-off callers: tests, benches);
/// the gateway calls [`AwsClients::assume_role_with_web_identity`] on its shared one.
pub async fn assume_role_with_web_identity(
    endpoints: &AwsEndpoints,
    request: &WebIdentityRequest,
) -> Result<TemporaryCredentials, AssumeRoleError> {
    AwsClients::new()
        .assume_role_with_web_identity(endpoints, request)
        .await
}

/// `sts:AssumeRoleWithWebIdentity`, sent unsigned (the token is the proof).
async fn assume_role(
    client: aws_sdk_sts::Client,
    request: &WebIdentityRequest,
) -> Result<TemporaryCredentials, AssumeRoleError> {
    let out = client
        .assume_role_with_web_identity()
        .role_arn(&request.role_arn)
        .role_session_name(&request.role_session_name)
        .web_identity_token(&request.web_identity_token)
        .set_duration_seconds(request.duration_seconds)
        .send()
        .await
        .map_err(|e| AssumeRoleError::from_code(e.code(), e.message(), describe(&e)))?;
    let missing = |what: &str| AssumeRoleError::Transport(format!("STS response has no {what}"));
    let creds = out.credentials().ok_or_else(|| missing("Credentials"))?;
    let user = out
        .assumed_role_user()
        .ok_or_else(|| missing("AssumedRoleUser"))?;
    Ok(TemporaryCredentials::new(
        creds.access_key_id().to_string(),
        creds.secret_access_key().to_string(),
        creds.session_token().to_string(),
        to_utc(creds.expiration()),
        user.arn().to_string(),
        user.assumed_role_id().to_string(),
    ))
}

/// What StartSession and ResumeSession return. `Debug` redacts the token.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionStream {
    /// `<role session name>-<suffix>`.
    pub session_id: String,
    /// Opens the data channel; short-lived.
    pub token_value: String,
    /// `wss://ssmmessages…/v1/data-channel/<id>?role=publish_subscribe…`, used verbatim.
    pub stream_url: String,
}

impl std::fmt::Debug for SessionStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStream")
            .field("session_id", &self.session_id)
            .field("token_value", &"** redacted **")
            .field("stream_url", &self.stream_url)
            .finish()
    }
}

/// Agent connectivity from DescribeInstanceInformation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentPing {
    /// Connected.
    Online,
    /// Stopped pinging.
    ConnectionLost,
    /// Stopped or deregistered.
    Inactive,
    /// Not a managed instance (absent from the answer).
    NotManaged,
    /// A value this build does not know.
    Other(String),
}

/// SSM calls signed with one person's temporary credentials (and the KMS data keys of an
/// encrypted session, with the same credentials).
///
/// It keeps what a call needs (the gateway's shared HTTP client and configuration, the
/// endpoints, the credentials) and makes the SDK client for each call: an SDK client holds
/// its whole runtime configuration (about 15 KB for SSM and as much for KMS), and a live
/// session keeps its `SsmSessions` for its whole life but calls only at its ends
/// (TerminateSession, ResumeSession after a recycle, a KMS key at the handshake).
#[derive(Debug, Clone)]
pub struct SsmSessions {
    calls: std::sync::Arc<clients::SignedCalls>,
    /// The session's renewable credentials, when the clients sign with them.
    renewable: Option<RenewableCredentials>,
}

fn ssm_error<E, R>(e: &aws_sdk_ssm::error::SdkError<E, R>) -> SsmCallError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    SsmCallError::from_code(e.code(), e.message(), describe(e))
}

impl SsmSessions {
    /// A client for `credentials` (SigV4, service `ssm`) with an HTTP client of its own
    /// (one-off callers: tests, benches); the gateway uses [`SsmSessions::on`].
    pub fn new(endpoints: &AwsEndpoints, credentials: &TemporaryCredentials) -> Self {
        Self::on(&AwsClients::new(), endpoints, credentials)
    }

    /// A client for `credentials` (SigV4, service `ssm`) on the gateway's shared HTTP client.
    pub fn on(
        clients: &AwsClients,
        endpoints: &AwsEndpoints,
        credentials: &TemporaryCredentials,
    ) -> Self {
        Self {
            calls: clients::SignedCalls::new(
                clients,
                endpoints,
                clients::Signer::fixed(credentials),
            ),
            renewable: None,
        }
    }

    /// Clients that sign every call with a session's `credentials`, renewed when due (the
    /// gateway's live sessions: ResumeSession after a recycle, TerminateSession, KMS).
    pub fn renewing(
        clients: &AwsClients,
        endpoints: &AwsEndpoints,
        credentials: &RenewableCredentials,
    ) -> Self {
        Self {
            calls: clients::SignedCalls::new(
                clients,
                endpoints,
                clients::Signer::renewing(credentials),
            ),
            renewable: Some(credentials.clone()),
        }
    }

    /// The SDK client for one call.
    fn client(&self) -> aws_sdk_ssm::Client {
        self.calls.ssm()
    }

    /// The renewable credentials these clients sign with, if any.
    pub fn credentials(&self) -> Option<&RenewableCredentials> {
        self.renewable.as_ref()
    }

    /// What a data channel to `target_id` needs to answer a KMS handshake with these
    /// credentials.
    pub fn kms_options(&self, target_id: &str) -> crate::ssm::handshake::KmsOptions {
        crate::ssm::handshake::KmsOptions {
            target_id: target_id.to_string(),
            source: std::sync::Arc::new(KmsDataKeys::on_call(self.calls.clone())),
        }
    }

    /// `ssm:StartSession` on `target` with an optional document, reason and parameters.
    pub async fn start_session(
        &self,
        target: &str,
        document_name: Option<&str>,
        reason: Option<&str>,
        parameters: HashMap<String, Vec<String>>,
    ) -> Result<SessionStream, SsmCallError> {
        let out = self
            .client()
            .start_session()
            .target(target)
            .set_document_name(document_name.map(str::to_string))
            .set_reason(reason.map(str::to_string))
            .set_parameters((!parameters.is_empty()).then_some(parameters))
            .send()
            .await
            .map_err(|e| ssm_error(&e))?;
        Ok(SessionStream {
            session_id: out.session_id().unwrap_or_default().to_string(),
            token_value: out.token_value().unwrap_or_default().to_string(),
            stream_url: out.stream_url().unwrap_or_default().to_string(),
        })
    }

    /// `ssm:ResumeSession`: a new token for the same stream. An empty token means the
    /// service considers the session timed out.
    pub async fn resume_session(&self, session_id: &str) -> Result<SessionStream, SsmCallError> {
        let out = self
            .client()
            .resume_session()
            .session_id(session_id)
            .send()
            .await
            .map_err(|e| ssm_error(&e))?;
        Ok(SessionStream {
            session_id: out.session_id().unwrap_or(session_id).to_string(),
            token_value: out.token_value().unwrap_or_default().to_string(),
            stream_url: out.stream_url().unwrap_or_default().to_string(),
        })
    }

    /// `ssm:TerminateSession`.
    pub async fn terminate_session(&self, session_id: &str) -> Result<(), SsmCallError> {
        self.client()
            .terminate_session()
            .session_id(session_id)
            .send()
            .await
            .map_err(|e| ssm_error(&e))?;
        Ok(())
    }

    /// The agent's `PingStatus` for one instance (DescribeInstanceInformation with an
    /// `InstanceIds` filter).
    pub async fn describe_instance_ping_status(
        &self,
        instance_id: &str,
    ) -> Result<AgentPing, SsmCallError> {
        let filter = InstanceInformationStringFilter::builder()
            .key("InstanceIds")
            .values(instance_id)
            .build()
            .map_err(|e| SsmCallError::Transport(e.to_string()))?;
        let out = self
            .client()
            .describe_instance_information()
            .filters(filter)
            .send()
            .await
            .map_err(|e| ssm_error(&e))?;
        let info = out
            .instance_information_list()
            .iter()
            .find(|i| i.instance_id() == Some(instance_id));
        Ok(match info.and_then(|i| i.ping_status()) {
            None => AgentPing::NotManaged,
            Some(SdkPingStatus::Online) => AgentPing::Online,
            Some(SdkPingStatus::ConnectionLost) => AgentPing::ConnectionLost,
            Some(SdkPingStatus::Inactive) => AgentPing::Inactive,
            Some(other) => AgentPing::Other(other.as_str().to_string()),
        })
    }
}

impl SessionResumer for SsmSessions {
    async fn resume(&self, session_id: &str) -> Result<Option<String>, ResumeError> {
        // Credentials that are gone and cannot be renewed end the session with that reason,
        // rather than as a refusal from AWS.
        if let Some(renewable) = &self.renewable
            && let Err(e) = renewable.fresh().await
        {
            return Err(ResumeError::CredentialsExpired(e.to_string()));
        }
        match self.resume_session(session_id).await {
            Ok(stream) if stream.token_value.is_empty() => Ok(None),
            Ok(stream) => Ok(Some(stream.token_value)),
            Err(e @ SsmCallError::ExpiredCredentials(_)) => {
                Err(ResumeError::CredentialsExpired(e.to_string()))
            }
            Err(e) if e.is_transient() => Err(ResumeError::Transient(e.to_string())),
            Err(e) => Err(ResumeError::Refused(e.to_string())),
        }
    }
}

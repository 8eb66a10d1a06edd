//! API errors: every failure a caller can meet has a stable code, an HTTP status and a
//! message that says what to do (design §5).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

/// The stable error codes of the gateway API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The id_token is missing, malformed, forged, expired or from the wrong issuer/audience.
    Auth,
    /// The id_token expired during a long-lived operation; sign in again.
    ReauthRequired,
    /// The caller's tier may not open shells (+`tier`, `allowed_tiers`).
    Forbidden,
    /// Node shells are disabled (no enabled policy governs the node).
    NodeShellDisabled,
    /// The node is not backed by an EC2 instance (no `aws:///` providerID).
    NodeNotEc2,
    /// No such node or session.
    NotFound,
    /// The governing policy has no AWS region.
    NoRegion,
    /// The governing policy has no role ARN.
    NoRole,
    /// The role's trust policy expects another audience (+`expected_aud`).
    AudMismatch,
    /// The role's trust policy refused the caller.
    TrustDenied,
    /// The SSM agent on the instance is not online.
    AgentOffline,
    /// The caller already has the maximum number of live sessions (+`limit`).
    CapUser,
    /// The cluster already has the maximum number of live sessions (+`limit`).
    CapTotal,
    /// Too many requests of one kind in a short time: the caller's opens per minute, or the
    /// replica's outstanding attach tickets (+`retry_after`, whole seconds; also the
    /// `Retry-After` header).
    RateLimited,
    /// `ssm:StartSession` or the data channel failed.
    StartFailed,
    /// A write with the console's cookie came from another origin or without the CSRF header.
    Csrf,
    /// The session is KMS-encrypted and the role may not call `kms:GenerateDataKey` on the
    /// key; the message names the statement to add.
    KmsDenied,
    /// The request is malformed.
    BadRequest,
    /// A request body or a WebSocket message is larger than the gateway accepts (+`limit`).
    PayloadTooLarge,
    /// The request body did not arrive within the body read timeout.
    RequestTimeout,
    /// Something failed on our side (the apiserver is unreachable, storage failed…).
    Internal,
}

impl ErrorCode {
    /// The code as it appears in JSON (`E_…`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "E_AUTH",
            Self::ReauthRequired => "E_REAUTH_REQUIRED",
            Self::Forbidden => "E_FORBIDDEN",
            Self::NodeShellDisabled => "E_NODE_SHELL_DISABLED",
            Self::NodeNotEc2 => "E_NODE_NOT_EC2",
            Self::NotFound => "E_NOT_FOUND",
            Self::NoRegion => "E_NODE_SHELL_NO_REGION",
            Self::NoRole => "E_NODE_SHELL_NO_ROLE",
            Self::AudMismatch => "E_NODE_SHELL_AUD_MISMATCH",
            Self::TrustDenied => "E_NODE_SHELL_TRUST_DENIED",
            Self::AgentOffline => "E_AGENT_OFFLINE",
            Self::CapUser => "E_CAP_USER",
            Self::CapTotal => "E_CAP_TOTAL",
            Self::RateLimited => "E_RATE_LIMITED",
            Self::StartFailed => "E_NODE_SHELL_START_FAILED",
            Self::Csrf => "E_CSRF",
            Self::KmsDenied => "E_KMS_DENIED",
            Self::BadRequest => "E_BAD_REQUEST",
            Self::PayloadTooLarge => "E_PAYLOAD_TOO_LARGE",
            Self::RequestTimeout => "E_REQUEST_TIMEOUT",
            Self::Internal => "E_INTERNAL",
        }
    }

    /// The HTTP status the code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Auth | Self::ReauthRequired => StatusCode::UNAUTHORIZED,
            Self::Forbidden
            | Self::NodeShellDisabled
            | Self::NoRole
            | Self::AudMismatch
            | Self::TrustDenied
            | Self::Csrf
            | Self::KmsDenied => StatusCode::FORBIDDEN,
            Self::NodeNotEc2 | Self::NotFound => StatusCode::NOT_FOUND,
            Self::NoRegion | Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::AgentOffline => StatusCode::CONFLICT,
            Self::CapUser | Self::CapTotal | Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::StartFailed => StatusCode::BAD_GATEWAY,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 21] = [
        Self::Auth,
        Self::ReauthRequired,
        Self::Forbidden,
        Self::NodeShellDisabled,
        Self::NodeNotEc2,
        Self::NotFound,
        Self::NoRegion,
        Self::NoRole,
        Self::AudMismatch,
        Self::TrustDenied,
        Self::AgentOffline,
        Self::CapUser,
        Self::CapTotal,
        Self::RateLimited,
        Self::StartFailed,
        Self::Csrf,
        Self::KmsDenied,
        Self::BadRequest,
        Self::PayloadTooLarge,
        Self::RequestTimeout,
        Self::Internal,
    ];
}

/// An API error: `{code, message, ...extra}` with the code's HTTP status.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// What happened and what to do about it.
    pub message: String,
    /// Extra fields merged into the JSON body (`tier`, `allowed_tiers`, `limit`, `expected_aud`).
    pub extra: Map<String, Value>,
}

impl ApiError {
    /// An error with no extra fields.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// Adds an extra JSON field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("code".into(), self.code.as_str().into());
        body.insert("message".into(), self.message.clone().into());
        for (k, v) in &self.extra {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

/// Extra field (and `Retry-After` header) of an `E_RATE_LIMITED` answer: whole seconds.
pub const RETRY_AFTER: &str = "retry_after";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.code.status(), axum::Json(self.body())).into_response();
        if let Some(seconds) = self.extra.get(RETRY_AFTER).and_then(Value::as_u64) {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_carries_code_message_and_extras() {
        let err =
            ApiError::new(ErrorCode::CapUser, "close one of your sessions first").with("limit", 2);
        assert_eq!(err.code.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            err.body(),
            serde_json::json!({"code": "E_CAP_USER", "message": "close one of your sessions first", "limit": 2})
        );
    }

    #[test]
    fn a_rate_limit_answer_says_when_to_come_back() {
        let response = ApiError::new(ErrorCode::RateLimited, "slow down")
            .with(RETRY_AFTER, 7)
            .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers().get(axum::http::header::RETRY_AFTER),
            Some(&axum::http::HeaderValue::from(7u64))
        );
    }

    #[test]
    fn every_code_is_distinct_and_prefixed() {
        let names: std::collections::BTreeSet<_> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        assert!(names.iter().all(|n| n.starts_with("E_")));
    }
}

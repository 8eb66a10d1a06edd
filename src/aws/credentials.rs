//! Temporary credentials minted for one person, kept only in memory, never printed.

use chrono::{DateTime, Utc};

/// Credentials from `sts:AssumeRoleWithWebIdentity`. `Debug` redacts the secret parts.
#[derive(Clone, PartialEq, Eq)]
pub struct TemporaryCredentials {
    /// `ASIA…` access key id (not secret; it appears in CloudTrail).
    pub access_key_id: String,
    secret_access_key: String,
    session_token: String,
    /// When the credentials stop working.
    pub expiration: DateTime<Utc>,
    /// `arn:aws:sts::<acct>:assumed-role/<role>/<session name>`.
    pub assumed_role_arn: String,
    /// `AROA…:<session name>`.
    pub assumed_role_id: String,
}

impl TemporaryCredentials {
    /// Assembles credentials (e.g. from an STS response).
    pub fn new(
        access_key_id: String,
        secret_access_key: String,
        session_token: String,
        expiration: DateTime<Utc>,
        assumed_role_arn: String,
        assumed_role_id: String,
    ) -> Self {
        Self {
            access_key_id,
            secret_access_key,
            session_token,
            expiration,
            assumed_role_arn,
            assumed_role_id,
        }
    }

    /// The secret access key (handle with care: never log it).
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The session token (handle with care: never log it).
    pub fn session_token(&self) -> &str {
        &self.session_token
    }

    /// The role session name: the last segment of the assumed-role ARN.
    pub fn role_session_name(&self) -> &str {
        self.assumed_role_arn.rsplit('/').next().unwrap_or_default()
    }

    /// Whether the credentials expire within `margin` of `now`.
    pub fn expires_within(&self, now: DateTime<Utc>, margin: chrono::Duration) -> bool {
        self.expiration <= now + margin
    }

    /// The SDK's credential type.
    pub(crate) fn to_sdk(&self) -> aws_credential_types::Credentials {
        aws_credential_types::Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.clone(),
            Some(self.session_token.clone()),
            Some(self.expiration.into()),
            "nodeshell-web-identity",
        )
    }
}

impl std::fmt::Debug for TemporaryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemporaryCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field("session_token", &"** redacted **")
            .field("expiration", &self.expiration)
            .field("assumed_role_arn", &self.assumed_role_arn)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let c = TemporaryCredentials::new(
            "ASIAEXAMPLE".into(),
            "very-secret".into(),
            "session-token-value".into(),
            Utc::now(),
            "arn:aws:sts::123456789012:assumed-role/r/ns-alice".into(),
            "AROAX:ns-alice".into(),
        );
        let text = format!("{c:?}");
        assert!(text.contains("ASIAEXAMPLE"));
        assert!(!text.contains("very-secret"));
        assert!(!text.contains("session-token-value"));
        assert_eq!(c.role_session_name(), "ns-alice");
    }
}

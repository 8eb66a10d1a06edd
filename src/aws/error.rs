//! Typed errors of the STS and SSM calls, mapped from AWS error codes.

/// Why AssumeRoleWithWebIdentity failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssumeRoleError {
    /// The role's trust policy does not admit this token (`AccessDenied`): check the role's
    /// `aud`/`sub` conditions and that the role trusts this issuer.
    #[error("AssumeRoleWithWebIdentity denied by the role's trust policy: {0}")]
    AccessDenied(String),
    /// The token is not accepted (`InvalidIdentityToken`): unknown issuer, bad signature,
    /// audience not registered with the OIDC provider.
    #[error("the identity token was rejected by STS: {0}")]
    InvalidIdentityToken(String),
    /// The token has expired (`ExpiredTokenException`): sign in again.
    #[error("the identity token has expired: {0}")]
    ExpiredToken(String),
    /// A parameter is invalid (`ValidationError`): session name or duration.
    #[error("AssumeRoleWithWebIdentity parameters are invalid: {0}")]
    Validation(String),
    /// The issuer could not be reached by STS (`IDPCommunicationError`), retryable.
    #[error("STS could not reach the identity provider: {0}")]
    IdpCommunication(String),
    /// Any other AWS error code.
    #[error("AssumeRoleWithWebIdentity failed with {code}: {message}")]
    Other {
        /// AWS error code.
        code: String,
        /// AWS message.
        message: String,
    },
    /// No answer from STS (network, timeout, unparsable response).
    #[error("STS could not be reached: {0}")]
    Transport(String),
}

impl AssumeRoleError {
    /// Maps an AWS error code and message.
    pub fn from_code(code: Option<&str>, message: Option<&str>, fallback: String) -> Self {
        let message = message.map_or_else(|| fallback.clone(), str::to_string);
        match code {
            Some("AccessDenied") => Self::AccessDenied(message),
            Some("InvalidIdentityToken") => Self::InvalidIdentityToken(message),
            Some("ExpiredTokenException") => Self::ExpiredToken(message),
            Some("ValidationError") => Self::Validation(message),
            Some("IDPCommunicationError") => Self::IdpCommunication(message),
            Some(code) => Self::Other {
                code: code.to_string(),
                message,
            },
            None => Self::Transport(fallback),
        }
    }
}

/// Why an SSM call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsmCallError {
    /// The instance's agent is not connected (`TargetNotConnected`).
    #[error("the instance's SSM agent is not connected: {0}")]
    TargetNotConnected(String),
    /// The instance id is not valid or not managed (`InvalidInstanceId`).
    #[error("the instance id is not valid for SSM: {0}")]
    InvalidInstanceId(String),
    /// The document does not exist (`InvalidDocument`).
    #[error("the session document does not exist: {0}")]
    InvalidDocument(String),
    /// The session does not exist or has ended (`DoesNotExistException`).
    #[error("the SSM session does not exist or has ended: {0}")]
    DoesNotExist(String),
    /// The role lacks permission (`AccessDeniedException`).
    #[error("the assumed role may not make this SSM call: {0}")]
    AccessDenied(String),
    /// The temporary credentials expired (`ExpiredTokenException`): assume the role again.
    #[error("the temporary credentials have expired: {0}")]
    ExpiredCredentials(String),
    /// The signature was refused (`InvalidSignatureException`, `IncompleteSignatureException`).
    #[error("SSM refused the request signature: {0}")]
    InvalidSignature(String),
    /// The access key or session token is unknown (`UnrecognizedClientException`).
    #[error("SSM does not recognise these credentials: {0}")]
    UnrecognizedClient(String),
    /// Throttled (`ThrottlingException`), retry later.
    #[error("SSM throttled the call: {0}")]
    Throttled(String),
    /// Any other AWS error code.
    #[error("SSM call failed with {code}: {message}")]
    Other {
        /// AWS error code.
        code: String,
        /// AWS message.
        message: String,
    },
    /// No answer from SSM.
    #[error("SSM could not be reached: {0}")]
    Transport(String),
}

impl SsmCallError {
    /// Maps an AWS error code and message.
    pub fn from_code(code: Option<&str>, message: Option<&str>, fallback: String) -> Self {
        let message = message.map_or_else(|| fallback.clone(), str::to_string);
        match code {
            Some("TargetNotConnected") => Self::TargetNotConnected(message),
            Some("InvalidInstanceId") => Self::InvalidInstanceId(message),
            Some("InvalidDocument") => Self::InvalidDocument(message),
            Some("DoesNotExistException") => Self::DoesNotExist(message),
            Some("AccessDeniedException") => Self::AccessDenied(message),
            Some("ExpiredTokenException") => Self::ExpiredCredentials(message),
            Some("InvalidSignatureException" | "IncompleteSignatureException") => {
                Self::InvalidSignature(message)
            }
            Some("UnrecognizedClientException" | "MissingAuthenticationTokenException") => {
                Self::UnrecognizedClient(message)
            }
            Some("ThrottlingException") => Self::Throttled(message),
            Some(code) => Self::Other {
                code: code.to_string(),
                message,
            },
            None => Self::Transport(fallback),
        }
    }

    /// Whether retrying the same call later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Throttled(_) | Self::Transport(_))
            || matches!(self, Self::Other { code, .. } if code == "InternalServerError")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_variants() {
        assert!(matches!(
            AssumeRoleError::from_code(Some("AccessDenied"), Some("no"), String::new()),
            AssumeRoleError::AccessDenied(m) if m == "no"
        ));
        assert!(matches!(
            AssumeRoleError::from_code(None, None, "io".into()),
            AssumeRoleError::Transport(m) if m == "io"
        ));
        assert!(matches!(
            SsmCallError::from_code(Some("TargetNotConnected"), None, "x".into()),
            SsmCallError::TargetNotConnected(_)
        ));
        assert!(
            SsmCallError::from_code(Some("ThrottlingException"), None, String::new())
                .is_transient()
        );
        assert!(
            !SsmCallError::from_code(Some("AccessDeniedException"), None, String::new())
                .is_transient()
        );
    }
}

//! A live session's AWS credentials across their expiry: the first ones come from the
//! attach's id_token; the next ones are minted from a fresh id_token of the person's console
//! sign-in (its refresh, the same the identity re-check makes) through
//! AssumeRoleWithWebIdentity, with the same role, role session name and duration. Every SSM
//! and KMS call of the session (ResumeSession after the service's hourly recycle,
//! TerminateSession at the end) signs with whatever is current. A bearer caller has no
//! refresh: their credentials serve until they expire, and a reconnect after that ends the
//! session as `CredentialsExpired`.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::aws::{
    AwsClients, AwsEndpoints, CredentialRenewal, RenewableCredentials, SsmSessions,
    TemporaryCredentials, WebIdentityRequest,
};
use crate::gateway::handover::TokenRefresh;

/// Mints a session's next credentials from a refreshed id_token.
struct WebIdentityRenewal {
    aws: AwsClients,
    endpoints: AwsEndpoints,
    /// The first request, its token replaced by each fresh one.
    request: WebIdentityRequest,
    refresh: TokenRefresh,
}

impl CredentialRenewal for WebIdentityRenewal {
    fn renew(&self) -> BoxFuture<'static, Result<TemporaryCredentials, String>> {
        let aws = self.aws.clone();
        let endpoints = self.endpoints.clone();
        let mut request = self.request.clone();
        let refresh = self.refresh.clone();
        Box::pin(async move {
            let token = refresh
                .0
                .fresh_id_token()
                .await
                .map_err(|why| format!("the console sign-in could not be refreshed: {why}"))?;
            request.web_identity_token = token.expose().to_string();
            let credentials = aws
                .assume_role_with_web_identity(&endpoints, &request)
                .await
                .map_err(|e| format!("STS refused new credentials: {e}"))?;
            // No part of the credentials is logged, not even the access key id: the leak
            // checks look for every value STS issued.
            tracing::info!(
                role_session_name = request.role_session_name,
                expiration = %credentials.expiration,
                "re-minted a live session's AWS credentials from a refreshed id_token"
            );
            Ok(credentials)
        })
    }
}

/// The SSM and KMS clients of a session whose first credentials are `first` (minted with
/// `request`); with `refresh` they are re-minted before they expire.
pub(super) fn session_clients(
    aws: &AwsClients,
    endpoints: &AwsEndpoints,
    first: TemporaryCredentials,
    request: &WebIdentityRequest,
    refresh: Option<TokenRefresh>,
) -> SsmSessions {
    let renewal = refresh.map(|refresh| {
        Arc::new(WebIdentityRenewal {
            aws: aws.clone(),
            endpoints: endpoints.clone(),
            request: request.clone(),
            refresh,
        }) as Arc<dyn CredentialRenewal>
    });
    let credentials = RenewableCredentials::new(first, renewal);
    // Ahead of their expiry, not only when a call needs them: the next id_token comes from a
    // sign-in that is checked while it is still fresh.
    if credentials.is_renewable() {
        tokio::spawn(credentials.keep_fresh());
    }
    SsmSessions::renewing(aws, endpoints, &credentials)
}

//! Fresh id_tokens for the live shells of a console session: the session's tokens refreshed
//! at the issuer (the same refresh the identity re-check makes), so the live side can mint
//! new AWS credentials before the old ones expire. A refusal ends the console session, as
//! the re-check does.

use futures::future::BoxFuture;

use super::Access;
use super::sign_in::IdentityVerdict;
use crate::gateway::handover::{IdToken, IdTokenRefresh, TokenRefresh};

/// The id_tokens of console session `key`.
struct ConsoleTokens {
    access: Access,
    key: String,
}

/// What a live shell opened from console session `key` renews its credentials with.
pub fn console_tokens(access: &Access, key: String) -> TokenRefresh {
    TokenRefresh(std::sync::Arc::new(ConsoleTokens {
        access: access.clone(),
        key,
    }))
}

impl IdTokenRefresh for ConsoleTokens {
    fn fresh_id_token(&self) -> BoxFuture<'static, Result<IdToken, String>> {
        let access = self.access.clone();
        let key = self.key.clone();
        Box::pin(async move {
            let Some(console) = &access.console else {
                return Err("this gateway has no console sign-in".to_string());
            };
            // Tokens another call refreshed a moment ago are used as they are.
            match access.refresh_console_session(console, &key, true).await {
                IdentityVerdict::Valid(_) => console
                    .sessions
                    .peek(&key)
                    .map(|session| session.tokens.id_token)
                    .ok_or_else(|| "the console session ended".to_string()),
                IdentityVerdict::Revoked(why) | IdentityVerdict::Unknown(why) => Err(why),
            }
        })
    }
}

//! Who is calling: the `Authorization: Bearer <id_token>` header verified against the OIDC
//! issuer's published keys ([`keys`]), checked by [`token`], and turned into a [`Caller`]
//! with a tier.

pub mod issuer;
pub mod keys;
pub mod token;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::gateway::access::tiers::TierMap;
use crate::gateway::config::OidcSettings;
use crate::gateway::error::{ApiError, ErrorCode};
use crate::gateway::handover::{Caller, IdToken};

pub use keys::{KeyCache, KeySet, KeysError};
pub use token::{TokenError, TokenRules, VerifiedClaims};

/// A verified request: the person, their token, and what the token says about itself.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The person.
    pub caller: Caller,
    /// Their raw id_token (for STS only).
    pub id_token: IdToken,
    /// The token's audiences.
    pub audiences: Vec<String>,
    /// The token's `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// How the request proved it: a bearer header, or the console's cookie.
    pub via: Credential,
}

/// How a request was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <id_token>` (dashboards, server to server).
    Bearer,
    /// The console's session cookie; the key of its console session.
    Cookie(String),
    /// `Authorization: Nodeshell-Session <handle>` of `kubectl nodeshell`: the key of its
    /// console session, in a header no browser sends on its own.
    Handle(String),
}

/// Builds the [`Caller`] from verified claims, named by `sub` (see [`caller_from_claims_as`]).
pub fn caller_from_claims(
    claims: &serde_json::Map<String, Value>,
    groups_claim: &str,
    tiers: &TierMap,
) -> Caller {
    caller_from_claims_as(claims, groups_claim, "sub", tiers)
}

/// Builds the [`Caller`] from verified claims. `email` is kept only when `email_verified` is
/// true (anyone can type an address at some issuers). The name auditors see (`spec.user.name`,
/// the user label, Events) is the `identity_claim` (a string; an unverified `email` does not
/// count), else the `sub`; control characters are stripped from it.
pub fn caller_from_claims_as(
    claims: &serde_json::Map<String, Value>,
    groups_claim: &str,
    identity_claim: &str,
    tiers: &TierMap,
) -> Caller {
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let sub = text("sub").unwrap_or_default();
    // Some issuers send the flag as the string "true".
    let email_verified = matches!(claims.get("email_verified"), Some(Value::Bool(true)))
        || claims.get("email_verified").and_then(Value::as_str) == Some("true");
    let email = text("email").filter(|_| email_verified);
    let named = if identity_claim == "email" {
        email.clone()
    } else {
        text(identity_claim)
    };
    let name = crate::api::printable(&named.unwrap_or_else(|| sub.clone()));
    let groups: Vec<String> = match claims.get(groups_claim) {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        // Some issuers send a single group as a string.
        Some(Value::String(g)) => vec![g.clone()],
        _ => Vec::new(),
    };
    let tier = tiers.tier_for(&groups);
    Caller {
        sub,
        email,
        name,
        groups,
        tier,
    }
}

/// Extracts the token from an `Authorization` header value.
pub fn bearer(header: Option<&str>) -> Result<&str, TokenError> {
    let value = header.ok_or(TokenError::Missing)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(TokenError::Missing);
    }
    Ok(token.trim())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Verifies bearer tokens with the issuer's cached keys.
#[derive(Clone, Debug)]
pub struct Authenticator {
    rules: TokenRules,
    groups_claim: String,
    identity_claim: String,
    tiers: Arc<TierMap>,
    keys: KeyCache,
}

// === impl Authenticator ===

impl Authenticator {
    /// An authenticator over a key cache.
    pub fn new(oidc: &OidcSettings, tiers: TierMap, keys: KeyCache) -> Self {
        Self {
            rules: TokenRules {
                issuer: oidc.issuer_url.clone(),
                audience: oidc.client_id.clone(),
                leeway_seconds: oidc.leeway.as_secs(),
            },
            groups_claim: oidc.groups_claim.clone(),
            identity_claim: oidc.identity_claim.clone(),
            tiers: Arc::new(tiers),
            keys,
        }
    }

    /// The key cache (for refresh and readiness).
    pub fn keys(&self) -> &KeyCache {
        &self.keys
    }

    /// The tier map.
    pub fn tiers(&self) -> &TierMap {
        &self.tiers
    }

    /// The client id tokens must carry.
    pub fn client_id(&self) -> &str {
        &self.rules.audience
    }

    /// Verifies an `Authorization` header value.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Authenticated, ApiError> {
        let raw = bearer(header).map_err(|e| e.to_api())?;
        self.verify(raw).await.map(|(auth, _)| auth)
    }

    /// Verifies a raw id_token; also returns its claims (the sign-in checks the nonce).
    pub async fn verify(
        &self,
        raw: &str,
    ) -> Result<(Authenticated, serde_json::Map<String, Value>), ApiError> {
        let keys = match self.keys.current() {
            Some(keys) => keys,
            // Not loaded yet (start-up, issuer down): try now, at most once per floor.
            None => self
                .keys
                .refetch_for_unknown_kid()
                .await
                .ok_or_else(|| self.keys_unavailable())?,
        };
        let now = unix_now();
        let verified = match token::verify(raw, &keys, &self.rules, now) {
            Err(TokenError::UnknownKey { .. }) => {
                // The issuer may have rotated since our last refresh: look again (floored).
                let keys = self
                    .keys
                    .refetch_for_unknown_kid()
                    .await
                    .ok_or_else(|| self.keys_unavailable())?;
                token::verify(raw, &keys, &self.rules, now)
            }
            other => other,
        }
        .map_err(|e| e.to_api())?;
        let auth = Authenticated {
            caller: caller_from_claims_as(
                &verified.claims,
                &self.groups_claim,
                &self.identity_claim,
                &self.tiers,
            ),
            id_token: IdToken::new(raw),
            audiences: verified.audiences,
            expires_at: verified.expires_at,
            via: Credential::Bearer,
        };
        Ok((auth, verified.claims))
    }

    fn keys_unavailable(&self) -> ApiError {
        let why = self
            .keys
            .last_error()
            .unwrap_or_else(|| "not fetched yet".into());
        ApiError::new(
            ErrorCode::Internal,
            format!(
                "cannot verify id_tokens: the issuer's keys are not loaded ({why}); try again shortly"
            ),
        )
    }

    /// Seconds until the token expires (0 when past).
    pub fn seconds_left(auth: &Authenticated) -> u64 {
        auth.expires_at.saturating_sub(unix_now())
    }

    /// Refreshes the keys forever: every `every` once loaded, every `retry` until then.
    pub async fn refresh_loop(self, every: Duration, retry: Duration) {
        let mut wait = if self.keys.is_loaded() {
            every
        } else {
            Duration::ZERO
        };
        loop {
            tokio::time::sleep(wait).await;
            wait = match self.keys.refresh().await {
                Ok(set) => {
                    tracing::debug!(keys = set.len(), "refreshed the issuer's keys");
                    every
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot refresh the issuer's keys");
                    retry
                }
            };
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::sim::jwt::{BadToken, KeyRing};
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Mutex, RwLock};

    fn tiers() -> TierMap {
        TierMap {
            order: vec!["admin".into(), "engineer".into()],
            groups: BTreeMap::from([
                ("sre".into(), "engineer".into()),
                ("root".into(), "admin".into()),
            ]),
            admin: vec!["admin".into()],
        }
    }

    fn oidc(issuer: &str) -> OidcSettings {
        OidcSettings {
            issuer_url: issuer.into(),
            client_id: "nodeshell".into(),
            groups_claim: "groups".into(),
            leeway: Duration::from_secs(30),
            jwks_refresh: Duration::from_secs(300),
            jwks_min_refetch: Duration::from_secs(10),
            identity_claim: "sub".into(),
            issuer_ca: None,
        }
    }

    fn claims_now(sub: &str) -> Value {
        let now = unix_now();
        serde_json::json!({
            "iss": "https://issuer.test", "sub": sub, "aud": "nodeshell",
            "iat": now, "nbf": now, "exp": now + 600, "name": "Alice",
            "email": "alice@example.com", "email_verified": true, "groups": ["sre", "other"],
        })
    }

    #[test]
    fn caller_from_claims_maps_names_groups_and_tier() {
        let c = claims_now("auth0|alice");
        let caller = caller_from_claims(c.as_object().unwrap(), "groups", &tiers());
        assert_eq!(caller.sub, "auth0|alice");
        // Auditors see the sub by default: it never changes and is what IAM sees.
        assert_eq!(caller.name, "auth0|alice");
        assert_eq!(caller.email.as_deref(), Some("alice@example.com"));
        assert_eq!(caller.tier.as_deref(), Some("engineer"));
        let named = caller_from_claims_as(c.as_object().unwrap(), "groups", "name", &tiers());
        assert_eq!(named.name, "Alice");
        let by_mail = caller_from_claims_as(c.as_object().unwrap(), "groups", "email", &tiers());
        assert_eq!(by_mail.name, "alice@example.com");
        let mut c = claims_now("bob");
        c["roles"] = serde_json::json!("root");
        let caller = caller_from_claims(c.as_object().unwrap(), "roles", &tiers());
        assert_eq!(caller.groups, vec!["root".to_string()]);
        assert_eq!(caller.tier.as_deref(), Some("admin"));
        // A claim that is absent or not a string falls back to the sub.
        let caller = caller_from_claims_as(c.as_object().unwrap(), "roles", "upn", &tiers());
        assert_eq!(caller.name, "bob");
    }

    #[test]
    fn an_unverified_email_is_never_shown() {
        for flag in [
            serde_json::json!(false),
            serde_json::json!("false"),
            serde_json::Value::Null,
        ] {
            let mut c = claims_now("mallory");
            c["email"] = serde_json::json!("ceo@example.com");
            c["email_verified"] = flag.clone();
            let caller = caller_from_claims_as(c.as_object().unwrap(), "groups", "email", &tiers());
            assert_eq!(caller.email, None, "{flag}");
            assert_eq!(caller.name, "mallory", "{flag}");
        }
        let mut c = claims_now("carol");
        c["email_verified"] = serde_json::json!("true");
        let caller = caller_from_claims_as(c.as_object().unwrap(), "groups", "email", &tiers());
        assert_eq!(caller.name, "alice@example.com");
    }

    #[test]
    fn control_characters_never_reach_the_name() {
        let mut c = claims_now("eve");
        c["name"] = serde_json::json!("Eve\u{1b}[1A\rroot\u{202e}");
        let caller = caller_from_claims_as(c.as_object().unwrap(), "groups", "name", &tiers());
        assert_eq!(caller.name, "Eve[1A root");
    }

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(Some("bearer  abc ")).unwrap(), "abc");
        assert_eq!(bearer(None).unwrap_err(), TokenError::Missing);
        assert_eq!(bearer(Some("Basic abc")).unwrap_err(), TokenError::Missing);
        assert_eq!(bearer(Some("Bearer ")).unwrap_err(), TokenError::Missing);
    }

    /// A rotating issuer behind a counting fetcher: a token signed by a key published after
    /// our last fetch verifies after one refetch.
    #[tokio::test]
    async fn unknown_kid_triggers_a_refetch_then_verifies() {
        let ring = Arc::new(RwLock::new(KeyRing::generate().unwrap()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (r, f) = (ring.clone(), fetches.clone());
        let fetch: keys::KeyFetcher = Arc::new(move || {
            f.fetch_add(1, Ordering::SeqCst);
            let jwks = r.read().unwrap().jwks();
            Box::pin(async move { KeySet::from_jwks(&jwks) })
        });
        let cache = KeyCache::new(fetch, Duration::ZERO);
        let auth = Authenticator::new(&oidc("https://issuer.test"), tiers(), cache);
        // Keys not loaded yet: the first request loads them.
        let before = auth.authenticate(Some("Bearer x.y.z")).await.unwrap_err();
        assert_eq!(before.code, ErrorCode::Auth, "{}", before.message);
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        ring.write()
            .unwrap()
            .rotate(Duration::from_secs(60))
            .unwrap();
        let token = ring
            .read()
            .unwrap()
            .sign_claims(&claims_now("alice"))
            .unwrap();
        let ok = auth
            .authenticate(Some(&format!("Bearer {token}")))
            .await
            .unwrap();
        assert_eq!(ok.caller.sub, "alice");
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "one refetch for the new kid"
        );
        assert!(
            !format!("{ok:?}").contains(&token),
            "Debug never shows the token"
        );
        // A kid nobody publishes stays refused after the refetch.
        let stray = ring
            .read()
            .unwrap()
            .mint_bad(BadToken::UnknownKid, claims_now("alice"))
            .unwrap();
        let err = auth
            .authenticate(Some(&format!("Bearer {stray}")))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Auth);
        assert!(err.message.contains("sim-key-stray"), "{}", err.message);
    }

    #[tokio::test]
    async fn fetch_failures_are_reported() {
        let log = Arc::new(Mutex::new(0));
        let l = log.clone();
        let fetch: keys::KeyFetcher = Arc::new(move || {
            *l.lock().unwrap() += 1;
            Box::pin(async { Err(KeysError::Fetch("connection refused".into())) })
        });
        let auth = Authenticator::new(
            &oidc("https://issuer.test"),
            tiers(),
            KeyCache::new(fetch, Duration::from_secs(10)),
        );
        assert!(auth.keys().refresh().await.is_err());
        let err = auth.authenticate(Some("Bearer a.b.c")).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Internal);
        assert!(err.message.contains("connection refused"));
    }
}

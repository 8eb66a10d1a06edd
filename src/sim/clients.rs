//! The issuer's OAuth clients at its token endpoint: who is calling (RFC 6749 §2.3.1
//! `client_secret_basic` and `client_secret_post`), whether that client must prove a secret
//! (confidential) or may not (public, PKCE only), and the refresh tokens issued to
//! confidential clients (RFC 6749 §6). Pure logic; `oidc.rs` wires it to HTTP.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::config::ClientRegistration;
use super::login::OAuthError;

/// How long a refresh token may be used after it was issued.
pub(crate) const REFRESH_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The client credentials a token request presented.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Presented {
    /// The client id (from the `Authorization: Basic` header or the `client_id` parameter).
    pub client_id: Option<String>,
    /// The secret, if one was sent.
    pub secret: Option<String>,
    /// Whether the credentials came in the `Authorization` header.
    pub via_basic: bool,
}

/// A refusal of the token endpoint; `basic` asks for `WWW-Authenticate: Basic` (§5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientRefusal {
    /// The OAuth error.
    pub error: OAuthError,
    /// The client tried the `Authorization` header.
    pub basic: bool,
}

/// A client the token endpoint has identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KnownClient {
    /// Its id.
    pub client_id: String,
    /// Whether it proved a secret (only these get refresh tokens).
    pub confidential: bool,
}

fn invalid_client(description: impl Into<String>, basic: bool) -> ClientRefusal {
    ClientRefusal {
        error: OAuthError {
            error: "invalid_client",
            description: description.into(),
        },
        basic,
    }
}

fn form_decode(text: &str) -> String {
    form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Reads the client credentials of a token request: the `Authorization` header value and the
/// form parameters. Using both methods at once is refused (RFC 6749 §2.3).
pub(crate) fn presented(
    authorization: Option<&str>,
    params: &HashMap<String, String>,
) -> Result<Presented, ClientRefusal> {
    let form_secret = params.get("client_secret").cloned();
    let form_id = params.get("client_id").cloned();
    let Some(header) = authorization else {
        return Ok(Presented {
            client_id: form_id,
            secret: form_secret,
            via_basic: false,
        });
    };
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))
        .ok_or_else(|| {
            invalid_client(
                "the Authorization header is not HTTP Basic; send client_secret_basic",
                true,
            )
        })?;
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| invalid_client("the Basic credentials are not base64 of id:secret", true))?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or_else(|| invalid_client("the Basic credentials have no ':'", true))?;
    // RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
    let (id, secret) = (form_decode(id), form_decode(secret));
    if form_secret.is_some() {
        return Err(ClientRefusal {
            error: OAuthError {
                error: "invalid_request",
                description:
                    "the client authenticated twice (Basic and client_secret); use one method"
                        .to_string(),
            },
            basic: true,
        });
    }
    if form_id.as_deref().is_some_and(|f| f != id) {
        return Err(invalid_client(
            "client_id differs from the Basic credentials' id",
            true,
        ));
    }
    Ok(Presented {
        client_id: Some(id),
        secret: Some(secret),
        via_basic: true,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Identifies the client: a registered confidential client must prove its secret; a public
/// client (one of `public_ids`, not registered with a secret) must send none.
pub(crate) fn identify(
    presented: &Presented,
    registered: &[ClientRegistration],
    public_ids: &[String],
) -> Result<KnownClient, ClientRefusal> {
    let basic = presented.via_basic;
    let id = presented.client_id.as_deref().ok_or_else(|| {
        invalid_client(
            "no client authentication: send client_secret_basic, client_secret_post or (public clients) client_id",
            basic,
        )
    })?;
    let confidential = registered
        .iter()
        .find(|c| c.client_id == id && c.client_secret.as_deref().is_some_and(|s| !s.is_empty()));
    if let Some(client) = confidential {
        let expected = client.client_secret.as_deref().unwrap_or_default();
        return match presented.secret.as_deref() {
            Some(secret) if constant_time_eq(secret.as_bytes(), expected.as_bytes()) => {
                Ok(KnownClient {
                    client_id: id.to_string(),
                    confidential: true,
                })
            }
            Some(_) => Err(invalid_client(
                format!("wrong client secret for {id:?}"),
                basic,
            )),
            None => Err(invalid_client(
                format!(
                    "client {id:?} is confidential: authenticate with client_secret_basic or client_secret_post"
                ),
                basic,
            )),
        };
    }
    if !public_ids.iter().any(|p| p == id) {
        return Err(invalid_client(
            format!("client {id:?} is not registered with this issuer"),
            basic,
        ));
    }
    if presented.secret.is_some() {
        return Err(invalid_client(
            format!("client {id:?} is public and has no secret; send only client_id"),
            basic,
        ));
    }
    Ok(KnownClient {
        client_id: id.to_string(),
        confidential: false,
    })
}

/// What a refresh token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RefreshGrant {
    /// The user.
    pub sub: String,
    /// The client it was issued to.
    pub client_id: String,
    issued_at: Instant,
}

/// Refresh tokens issued and not yet expired.
#[derive(Debug, Default)]
pub(crate) struct RefreshBook {
    tokens: HashMap<String, RefreshGrant>,
}

impl RefreshBook {
    /// Issues a refresh token for `sub` to `client_id`.
    pub fn issue(&mut self, sub: &str, client_id: &str, now: Instant) -> String {
        self.tokens
            .retain(|_, g| now.saturating_duration_since(g.issued_at) < REFRESH_LIFETIME);
        let token = super::ids::random_alnum(48);
        self.tokens.insert(
            token.clone(),
            RefreshGrant {
                sub: sub.to_string(),
                client_id: client_id.to_string(),
                issued_at: now,
            },
        );
        token
    }

    /// The grant of `token` when `client_id` may use it.
    pub fn redeem(
        &self,
        token: Option<&str>,
        client_id: &str,
        now: Instant,
    ) -> Result<RefreshGrant, OAuthError> {
        let invalid = |description: &str| OAuthError {
            error: "invalid_grant",
            description: description.to_string(),
        };
        let token = token.ok_or_else(|| OAuthError {
            error: "invalid_request",
            description: "the refresh_token grant needs refresh_token".to_string(),
        })?;
        let grant = self
            .tokens
            .get(token)
            .ok_or_else(|| invalid("unknown refresh token; sign in again"))?;
        if now.saturating_duration_since(grant.issued_at) >= REFRESH_LIFETIME {
            return Err(invalid("the refresh token expired; sign in again"));
        }
        if grant.client_id != client_id {
            return Err(invalid("the refresh token was issued to another client"));
        }
        Ok(grant.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;

    fn registered() -> Vec<ClientRegistration> {
        vec![ClientRegistration {
            client_id: "gw".to_string(),
            client_secret: Some("s3cr=t".to_string()),
        }]
    }

    fn public() -> Vec<String> {
        vec!["gw".to_string(), "spa".to_string()]
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn basic(id: &str, secret: &str) -> String {
        let id: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
        let secret: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
    }

    #[test]
    fn a_confidential_client_proves_its_secret_by_basic_or_post() {
        let by_basic = presented(Some(&basic("gw", "s3cr=t")), &params(&[])).unwrap();
        let client = identify(&by_basic, &registered(), &public()).unwrap();
        assert!(client.confidential);
        let by_post = presented(
            None,
            &params(&[("client_id", "gw"), ("client_secret", "s3cr=t")]),
        )
        .unwrap();
        assert!(
            identify(&by_post, &registered(), &public())
                .unwrap()
                .confidential
        );
    }

    #[test]
    fn a_wrong_or_missing_secret_is_invalid_client() {
        let wrong = presented(Some(&basic("gw", "guess")), &params(&[])).unwrap();
        let refusal = identify(&wrong, &registered(), &public()).unwrap_err();
        assert_eq!(refusal.error.error, "invalid_client");
        assert!(refusal.basic, "Basic callers get WWW-Authenticate");
        let missing = presented(None, &params(&[("client_id", "gw")])).unwrap();
        let refusal = identify(&missing, &registered(), &public()).unwrap_err();
        assert_eq!(refusal.error.error, "invalid_client");
        assert!(!refusal.basic);
        assert!(refusal.error.description.contains("confidential"));
        let unknown = presented(None, &params(&[("client_id", "other")])).unwrap();
        assert_eq!(
            identify(&unknown, &registered(), &public())
                .unwrap_err()
                .error
                .error,
            "invalid_client"
        );
    }

    #[test]
    fn a_public_client_sends_only_its_id_and_two_methods_at_once_are_refused() {
        let spa = presented(None, &params(&[("client_id", "spa")])).unwrap();
        assert!(
            !identify(&spa, &registered(), &public())
                .unwrap()
                .confidential
        );
        let twice = presented(
            Some(&basic("gw", "s3cr=t")),
            &params(&[("client_secret", "s3cr=t")]),
        )
        .unwrap_err();
        assert_eq!(twice.error.error, "invalid_request");
        let not_basic = presented(Some("Bearer x"), &params(&[])).unwrap_err();
        assert_eq!(not_basic.error.error, "invalid_client");
    }

    #[test]
    fn refresh_tokens_belong_to_one_client_and_expire() {
        let mut book = RefreshBook::default();
        let now = Instant::now();
        let token = book.issue("alice", "gw", now);
        assert_eq!(book.redeem(Some(&token), "gw", now).unwrap().sub, "alice");
        assert_eq!(
            book.redeem(Some(&token), "spa", now).unwrap_err().error,
            "invalid_grant"
        );
        assert_eq!(
            book.redeem(Some("nope"), "gw", now).unwrap_err().error,
            "invalid_grant"
        );
        let later = now + REFRESH_LIFETIME;
        assert!(book.redeem(Some(&token), "gw", later).is_err());
    }
}

//! The gateway as a confidential OIDC client at the issuer: its endpoints (from discovery),
//! the authorization-code exchange and the refresh-token grant, authenticated with the
//! client secret (`client_secret_basic`, RFC 6749 §2.3.1). Tokens travel only between the
//! gateway and the issuer; no redirect is followed.

use std::sync::Arc;

use crate::gateway::config::oidc::IssuerCa;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use tokio::sync::RwLock;

use crate::gateway::config::ClientSecret;

/// The issuer's endpoints this client uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Where the browser is sent to sign in.
    pub authorization: String,
    /// Where codes and refresh tokens are exchanged.
    pub token: String,
}

/// What the token endpoint answered.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenAnswer {
    /// The id_token.
    pub id_token: String,
    /// A refresh token, if given.
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for TokenAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenAnswer(<redacted>)")
    }
}

/// Why the issuer gave no tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerRefusal {
    /// The issuer answered and refused (`invalid_grant`: a used code, a disabled user…).
    #[error("the issuer refused: {error}: {description}")]
    Refused {
        /// The OAuth error.
        error: String,
        /// Its description.
        description: String,
    },
    /// The issuer could not be reached or answered nonsense.
    #[error("the issuer is unavailable: {0}")]
    Unavailable(String),
}

/// The gateway's confidential client at the issuer. Cheap to clone.
#[derive(Clone)]
pub struct IssuerClient {
    http: reqwest::Client,
    issuer: String,
    client_id: String,
    secret: ClientSecret,
    endpoints: Arc<RwLock<Option<Endpoints>>>,
}

impl std::fmt::Debug for IssuerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerClient")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn form_encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

// === impl IssuerClient ===

impl IssuerClient {
    /// A client of `issuer` as `client_id` with `secret`, trusting `ca` (`oidc.caFile`)
    /// besides the system's roots.
    pub fn new(
        issuer: &str,
        client_id: &str,
        secret: ClientSecret,
        ca: Option<&IssuerCa>,
    ) -> Result<Self, reqwest::Error> {
        let http = super::keys::trusting(reqwest::Client::builder(), ca)
            .user_agent(concat!("nodeshell-gateway/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            issuer: issuer.trim_end_matches('/').to_string(),
            client_id: client_id.to_string(),
            secret,
            endpoints: Arc::default(),
        })
    }

    /// Our client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The issuer's endpoints, from its discovery document (fetched once, again after a
    /// failure).
    pub async fn endpoints(&self) -> Result<Endpoints, IssuerRefusal> {
        if let Some(found) = self.endpoints.read().await.clone() {
            return Ok(found);
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| IssuerRefusal::Unavailable(format!("GET {url}: {e}")))?;
        if !response.status().is_success() {
            return Err(IssuerRefusal::Unavailable(format!(
                "GET {url}: HTTP {}",
                response.status()
            )));
        }
        let doc: Value = response
            .json()
            .await
            .map_err(|e| IssuerRefusal::Unavailable(format!("GET {url}: {e}")))?;
        let field = |name: &str| {
            doc.get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| IssuerRefusal::Unavailable(format!("{url} has no {name}")))
        };
        let found = Endpoints {
            authorization: field("authorization_endpoint")?,
            token: field("token_endpoint")?,
        };
        *self.endpoints.write().await = Some(found.clone());
        Ok(found)
    }

    /// Exchanges an authorization code (with its PKCE verifier) for tokens.
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_url: &str,
    ) -> Result<TokenAnswer, IssuerRefusal> {
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", redirect_url),
        ])
        .await
    }

    /// Refreshes a person's tokens (RFC 6749 §6).
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenAnswer, IssuerRefusal> {
        self.token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<TokenAnswer, IssuerRefusal> {
        let endpoint = self.endpoints().await?.token;
        let basic = STANDARD.encode(format!(
            "{}:{}",
            form_encode(&self.client_id),
            form_encode(self.secret.expose())
        ));
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let response = self
            .http
            .post(&endpoint)
            .header(reqwest::header::AUTHORIZATION, format!("Basic {basic}"))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| IssuerRefusal::Unavailable(format!("POST {endpoint}: {e}")))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_client_error() {
            let text = |k: &str| {
                answer
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            return Err(IssuerRefusal::Refused {
                error: text("error"),
                description: text("error_description"),
            });
        }
        if !status.is_success() {
            return Err(IssuerRefusal::Unavailable(format!(
                "POST {endpoint}: HTTP {status}"
            )));
        }
        let id_token = answer
            .get("id_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                IssuerRefusal::Unavailable(format!(
                    "POST {endpoint} answered no id_token; is the openid scope allowed for this client?"
                ))
            })?;
        Ok(TokenAnswer {
            id_token: id_token.to_string(),
            refresh_token: answer
                .get("refresh_token")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

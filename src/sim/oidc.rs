//! The OIDC issuer's HTTP side: discovery, JWKS, a token endpoint for the configured test
//! users, and test-only routes for bad tokens and key rotation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::json;

use super::jwt::{BadToken, JwtError, user_claims};
use super::state::{Shared, read, write};

/// Routes of the issuer.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/keys", get(jwks))
        .route("/token", post(token_form).get(token_query))
        .route("/test/rotate-keys", post(rotate))
        .with_state(shared)
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let iss = &shared.urls.issuer;
    Json(json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}/keys"),
        "token_endpoint": format!("{iss}/token"),
        "authorization_endpoint": format!("{iss}/authorize"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile", "groups"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "email", "name", "groups"],
        "grant_types_supported": ["password"],
    }))
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    Json(read(&shared.keys).jwks())
}

/// Why the token endpoint refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    /// No configured user has that `sub` (or username/email).
    #[error("unknown test user {0:?}")]
    UnknownUser(String),
    /// `bad` named no known kind.
    #[error("unknown bad-token kind {0:?}")]
    UnknownKind(String),
    /// Signing failed.
    #[error(transparent)]
    Jwt(#[from] JwtError),
}

/// Mints a token for a configured user: `audience` defaults to the issuer's client id.
pub(crate) fn mint(
    shared: &Shared,
    user: &str,
    audience: Option<&str>,
    ttl: Option<u64>,
    bad: Option<BadToken>,
) -> Result<String, TokenError> {
    let person = shared
        .config
        .users
        .iter()
        .find(|u| u.sub == user || u.email == user)
        .ok_or_else(|| TokenError::UnknownUser(user.to_string()))?;
    let aud = audience.unwrap_or(&shared.config.issuer.client_id);
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    let ttl = ttl.unwrap_or(shared.config.issuer.token_ttl_seconds);
    let claims = user_claims(person, &shared.urls.issuer, aud, now, ttl);
    let keys = read(&shared.keys);
    Ok(match bad {
        None => keys.sign_claims(&claims)?,
        Some(kind) => keys.mint_bad(kind, claims)?,
    })
}

fn token_response(shared: &Shared, params: &HashMap<String, String>) -> Response {
    let user = params
        .get("sub")
        .or_else(|| params.get("username"))
        .cloned()
        .unwrap_or_default();
    let aud = params
        .get("aud")
        .or_else(|| params.get("client_id"))
        .map(String::as_str);
    let ttl = params.get("ttl").and_then(|t| t.parse().ok());
    let bad = match params.get("bad") {
        None => None,
        Some(kind) => match serde_json::from_value::<BadToken>(json!(kind)) {
            Ok(k) => Some(k),
            Err(_) => return oauth_error(&TokenError::UnknownKind(kind.clone())),
        },
    };
    match mint(shared, &user, aud, ttl, bad) {
        Ok(token) => Json(json!({
            "id_token": token,
            "token_type": "Bearer",
            "expires_in": ttl.unwrap_or(shared.config.issuer.token_ttl_seconds),
        }))
        .into_response(),
        Err(e) => oauth_error(&e),
    }
}

fn oauth_error(e: &TokenError) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "invalid_grant", "error_description": e.to_string()})),
    )
        .into_response()
}

async fn token_form(
    State(shared): State<Arc<Shared>>,
    Form(params): Form<HashMap<String, String>>,
) -> Response {
    token_response(&shared, &params)
}

async fn token_query(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    token_response(&shared, &params)
}

async fn rotate(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let overlap = params
        .get("overlap_seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    match write(&shared.keys).rotate(Duration::from_secs(overlap)) {
        Ok(kid) => Json(json!({"kid": kid})).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

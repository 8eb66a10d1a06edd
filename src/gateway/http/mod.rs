//! The HTTP and WebSocket routes of design §5, the gateway's only axum code. Handlers read
//! the request, ask [`Access`] (or the live side) and write the answer; they hold no rule
//! and never log a token or a ticket.

mod attach;
#[cfg(test)]
mod cli_login_tests;
mod client_info;
pub mod console;
mod health;
mod limits;
mod login;
#[cfg(test)]
mod login_tests;
mod nodes;
mod sessions;
mod shells;
#[cfg(test)]
mod tests;
pub mod views;

use std::time::Instant;

use axum::Router;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::{get, post};

use crate::gateway::access::Access;
use crate::gateway::access::auth::Authenticated;
use crate::gateway::access::login::{CSRF_HEADER, cookie_value, session_cookie_name};
use crate::gateway::error::{ApiError, ErrorCode};
use crate::gateway::handover::LiveSide;
use crate::gateway::metrics::GatewayMetrics;

/// Every route the API listener serves (method, path), as docs/api.md and /openapi.json
/// list them. `/metrics`, `/healthz` and `/readyz` are on the admin listener ([`admin_router`]).
pub const ROUTES: [(&str, &str); 19] = [
    ("GET", "/api/v1/nodes"),
    ("GET", "/api/v1/nodes/{node}/shell/preflight"),
    ("POST", "/api/v1/nodes/{node}/shell"),
    ("GET", "/api/v1/sessions"),
    ("GET", "/api/v1/sessions/search"),
    ("GET", "/api/v1/sessions/{name}"),
    ("DELETE", "/api/v1/sessions/{name}"),
    ("POST", "/api/v1/sessions/{name}/ticket"),
    ("GET", "/api/v1/sessions/{name}/attach"),
    ("GET", "/api/v1/sessions/{name}/transcript"),
    ("GET", "/api/v1/sessions/{name}/transcript/verify"),
    ("GET", "/api/v1/sessions/{name}/ledger"),
    ("GET", "/openapi.json"),
    ("GET", "/api/v1/whoami"),
    ("GET", "/auth/login"),
    ("GET", "/auth/callback"),
    ("POST", "/auth/logout"),
    ("GET", "/auth/cli/login"),
    ("POST", "/auth/cli/token"),
];

/// The OpenAPI 3 document of the API.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Everything a handler needs: the control side, the live side, metrics.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The control side.
    pub access: Access,
    /// The live side.
    pub live: LiveSide,
    /// Metrics.
    pub metrics: GatewayMetrics,
}

pub use health::admin_router;

/// The router of every API route and the console, with state; request bodies are bounded
/// ([`limits`]).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/whoami", get(sessions::whoami))
        .route("/api/v1/nodes", get(nodes::list_nodes))
        .route(
            "/api/v1/nodes/{node}/shell/preflight",
            get(nodes::preflight),
        )
        .route("/api/v1/nodes/{node}/shell", post(shells::open_shell))
        .route("/api/v1/sessions", get(sessions::list_sessions))
        .route("/api/v1/sessions/search", get(sessions::search))
        .route(
            "/api/v1/sessions/{name}",
            get(sessions::get_session).delete(sessions::delete_session),
        )
        .route("/api/v1/sessions/{name}/ticket", post(shells::new_ticket))
        .route("/api/v1/sessions/{name}/attach", get(attach::attach))
        .route(
            "/api/v1/sessions/{name}/transcript",
            get(sessions::transcript),
        )
        .route("/api/v1/sessions/{name}/ledger", get(sessions::ledger))
        .route(
            "/api/v1/sessions/{name}/transcript/verify",
            get(sessions::verify_transcript),
        )
        .route("/auth/login", get(login::login))
        .route("/auth/callback", get(login::callback))
        .route("/auth/logout", post(login::logout))
        .route("/auth/cli/login", get(login::cli_login))
        .route("/auth/cli/token", post(login::cli_token))
        .route("/openapi.json", get(health::openapi))
        .merge(console::router())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::bounded_body,
        ))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// Logs method, path (never the query: it may hold a ticket), status and latency.
async fn log_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "no such route; see /openapi.json for the API",
    )
}

/// The caller of a request, from its `Authorization` header, else its console cookie.
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Authenticated, ApiError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state
        .access
        .authenticate_request(header, session_key(state, headers))
        .await
}

/// The caller of a state-changing request: [`authenticate`], then the CSRF check when it
/// came with the console's cookie.
async fn authenticate_write(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Authenticated, ApiError> {
    let auth = authenticate(state, headers).await?;
    state
        .access
        .check_write(&auth, origin(headers), csrf_marker(headers))?;
    Ok(auth)
}

/// The console session key in the request's cookie, when the console's sign-in is on.
fn session_key<'a>(state: &AppState, headers: &'a HeaderMap) -> Option<&'a str> {
    let secure = state.access.secure_cookies()?;
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    cookie_value(cookies, session_cookie_name(secure))
}

/// The request's `Origin`.
fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// The request's CSRF header.
fn csrf_marker(headers: &HeaderMap) -> Option<&str> {
    headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok())
}

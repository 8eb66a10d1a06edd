//! `GET /auth/login`, `GET /auth/callback` and `POST /auth/logout`: the console's sign-in
//! through the gateway. The rules are in `access::sign_in` and `access::login`; these only
//! read the request and write redirects and cookies.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, csrf_marker, origin, session_key};
use crate::gateway::access::cli_login::cli_target;
use crate::gateway::access::login::{
    AFTER_SIGN_IN, binding_cookie_name, clear_binding_cookie, clear_session_cookie, cookie_value,
};
use crate::gateway::access::sign_in::{CallbackParams, SignedIn};
use crate::gateway::error::{ApiError, ErrorCode};

fn redirect(location: &str, cookies: &[String]) -> Result<Response, ApiError> {
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    let location = HeaderValue::from_str(location).map_err(|_| {
        ApiError::new(
            ErrorCode::Internal,
            "the sign-in redirect is not a valid header value",
        )
    })?;
    headers.insert(header::LOCATION, location);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

/// Starts a sign-in: 302 to the issuer with code, PKCE, state and nonce.
pub(super) async fn login(State(state): State<AppState>) -> Result<Response, ApiError> {
    let start = state.access.begin_login().await?;
    redirect(&start.location, &[start.binding_cookie])
}

/// Finishes a sign-in: sets the session cookie and goes to the console.
pub(super) async fn callback(
    State(state): State<AppState>,
    Query(params): Query<CallbackParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let secure = state.access.secure_cookies().unwrap_or(false);
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let binding = cookie_value(cookies, binding_cookie_name(secure));
    match state.access.finish_login(params, binding).await? {
        SignedIn::Cookie(cookie) => {
            redirect(AFTER_SIGN_IN, &[cookie, clear_binding_cookie(secure)])
        }
        SignedIn::Cli(location) => redirect(&location, &[clear_binding_cookie(secure)]),
    }
}

/// The query of `/auth/cli/login` (RFC 8252 loopback redirect, RFC 7636 PKCE).
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct CliLoginQuery {
    redirect_uri: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    state: Option<String>,
}

/// Starts a command-line sign-in: 302 to the issuer, handed back to the CLI's loopback
/// listener at the end.
pub(super) async fn cli_login(
    State(state): State<AppState>,
    Query(query): Query<CliLoginQuery>,
) -> Result<Response, ApiError> {
    let target = cli_target(
        query.redirect_uri.as_deref(),
        query.code_challenge.as_deref(),
        query.code_challenge_method.as_deref(),
        query.state.as_deref(),
    )?;
    let start = state.access.begin_login_for(Some(target)).await?;
    redirect(&start.location, &[start.binding_cookie])
}

/// The body of `POST /auth/cli/token`.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct CliTokenRequest {
    code: Option<String>,
    code_verifier: Option<String>,
}

/// The CLI's code exchange: the session handle, never a token.
pub(super) async fn cli_token(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: CliTokenRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("the body must be JSON {{code, code_verifier}} ({e})"),
        )
    })?;
    let session = state
        .access
        .exchange_cli_code(request.code.as_deref(), request.code_verifier.as_deref())?;
    let mut response = axum::Json(session).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Signs out: ends the console session and removes the cookie.
pub(super) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = session_key(&state, &headers);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state
        .access
        .logout(key, authorization, origin(&headers), csrf_marker(&headers))?;
    let secure = state.access.secure_cookies().unwrap_or(false);
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&clear_session_cookie(secure)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

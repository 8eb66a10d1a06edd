//! `GET /auth/login`, `GET /auth/callback` and `POST /auth/logout`: the console's sign-in
//! through the gateway. The rules are in `access::sign_in` and `access::login`; these only
//! read the request and write redirects and cookies.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, csrf_marker, origin, session_key};
use crate::gateway::access::login::{
    AFTER_SIGN_IN, binding_cookie_name, clear_binding_cookie, clear_session_cookie, cookie_value,
};
use crate::gateway::access::sign_in::CallbackParams;
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
    let cookie = state.access.finish_login(params, binding).await?;
    redirect(AFTER_SIGN_IN, &[cookie, clear_binding_cookie(secure)])
}

/// Signs out: ends the console session and removes the cookie.
pub(super) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = session_key(&state, &headers);
    state
        .access
        .logout(key, origin(&headers), csrf_marker(&headers))?;
    let secure = state.access.secure_cookies().unwrap_or(false);
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&clear_session_cookie(secure)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

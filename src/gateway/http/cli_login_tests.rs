//! Route tests of `kubectl nodeshell login` through the gateway, against the simulator's
//! issuer: the loopback redirect only, the one-time code bound to the CLI's PKCE verifier,
//! the handle in a header that is not ambient, and clear codes for a bad or ended handle.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::login_tests::{Reply, SECRET, at_issuer, send, sign_in, sim, state};
use crate::gateway::access::login::pkce_challenge;
use crate::gateway::http::{self, AppState};

const VERIFIER: &str = "a-cli-verifier-of-at-least-forty-three-characters-0123";
const LOOPBACK: &str = "http://127.0.0.1:53682/callback";

async fn post_json(state: &AppState, uri: &str, body: Value, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = http::router(state.clone())
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn cli_login_uri(redirect: &str) -> String {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("redirect_uri", redirect)
        .append_pair("code_challenge", &pkce_challenge(VERIFIER))
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "cli-state")
        .finish();
    format!("/auth/cli/login?{query}")
}

/// A CLI sign-in up to the redirect back to the loopback listener; returns the code, after
/// checking that the browser was given no session cookie.
async fn cli_code(state: &AppState) -> String {
    let r = send(state, "GET", &cli_login_uri(LOOPBACK), &[]).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    let binding = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("nodeshell-login="))
        .unwrap();
    let binding = binding.split(';').next().unwrap().to_string();
    let callback = at_issuer(&r.location()).await;
    let back = send(state, "GET", &callback, &[("cookie", binding.as_str())]).await;
    assert_eq!(back.status, StatusCode::FOUND, "{}", back.body);
    assert!(
        !back
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("nodeshell-session=")),
        "the browser of a CLI sign-in holds no ambient credential: {:?}",
        back.set_cookies()
    );
    let location = url::Url::parse(&back.location()).unwrap();
    assert_eq!(
        format!(
            "{}://{}{}",
            location.scheme(),
            location.authority(),
            location.path()
        ),
        LOOPBACK
    );
    let q: HashMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "cli-state");
    q["code"].clone()
}

#[tokio::test]
async fn the_cli_gets_a_handle_for_its_verifier_once_and_never_a_token() {
    let sim = sim().await;
    let state = state(&sim, SECRET);
    let code = cli_code(&state).await;

    // Another verifier is refused, and uses the code up.
    let wrong = post_json(
        &state,
        "/auth/cli/token",
        json!({"code": code, "code_verifier": "not-the-verifier-not-the-verifier-not-the-v"}),
        &[],
    )
    .await;
    assert_eq!(
        (wrong.status, wrong.code()),
        (StatusCode::UNAUTHORIZED, "E_AUTH")
    );
    let after = post_json(
        &state,
        "/auth/cli/token",
        json!({"code": code, "code_verifier": VERIFIER}),
        &[],
    )
    .await;
    assert_eq!(
        (after.status, after.code()),
        (StatusCode::UNAUTHORIZED, "E_AUTH")
    );

    let code = cli_code(&state).await;
    let r = post_json(
        &state,
        "/auth/cli/token",
        json!({"code": code, "code_verifier": VERIFIER}),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let text = r.body.to_string();
    assert!(!text.contains("eyJ"), "no JWT reaches the CLI: {text}");
    assert!(!text.to_lowercase().contains("secretaccesskey"), "{text}");
    let handle = r.body["session"].as_str().unwrap().to_string();
    assert_eq!(r.body["idleSeconds"], 3600);

    // A replay of the used code is refused.
    let replay = post_json(
        &state,
        "/auth/cli/token",
        json!({"code": code, "code_verifier": VERIFIER}),
        &[],
    )
    .await;
    assert_eq!(replay.code(), "E_AUTH", "{}", replay.body);

    // The handle authenticates reads, and writes without Origin or CSRF header (not ambient).
    let auth = format!("Nodeshell-Session {handle}");
    let who = send(
        &state,
        "GET",
        "/api/v1/whoami",
        &[("authorization", auth.as_str())],
    )
    .await;
    assert_eq!(who.status, StatusCode::OK, "{}", who.body);
    assert_eq!(who.body["sub"], "alice");
    let write = post_json(
        &state,
        "/api/v1/nodes/n1/shell",
        json!({}),
        &[("authorization", auth.as_str())],
    )
    .await;
    assert_ne!(write.code(), "E_CSRF", "{}", write.body);
    assert_ne!(write.status, StatusCode::UNAUTHORIZED, "{}", write.body);

    // Logout with the header ends it; the handle then gets a clear code.
    let out = send(
        &state,
        "POST",
        "/auth/logout",
        &[("authorization", auth.as_str())],
    )
    .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.body);
    let gone = send(
        &state,
        "GET",
        "/api/v1/whoami",
        &[("authorization", auth.as_str())],
    )
    .await;
    assert_eq!(
        (gone.status, gone.code()),
        (StatusCode::UNAUTHORIZED, "E_REAUTH_REQUIRED"),
        "{}",
        gone.body
    );
    assert!(
        gone.body["message"]
            .as_str()
            .unwrap()
            .contains("kubectl nodeshell login"),
        "{}",
        gone.body
    );
}

#[tokio::test]
async fn only_a_loopback_redirect_with_a_port_may_receive_a_sign_in() {
    let sim = sim().await;
    let state = state(&sim, SECRET);
    for redirect in [
        "https://evil.example/callback",
        "http://127.0.0.1/callback",
        "http://evil.example:53682/callback",
        "http://127.0.0.1.evil.example:53682/callback",
    ] {
        let r = send(&state, "GET", &cli_login_uri(redirect), &[]).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "E_BAD_REQUEST"),
            "{redirect}: {}",
            r.body
        );
    }
    for redirect in ["http://[::1]:9/cb", "http://localhost:9/cb"] {
        let r = send(&state, "GET", &cli_login_uri(redirect), &[]).await;
        assert_eq!(r.status, StatusCode::FOUND, "{redirect}: {}", r.body);
    }
}

#[tokio::test]
async fn a_forged_handle_or_a_cookie_in_its_place_gets_no_access() {
    let sim = sim().await;
    let state = state(&sim, SECRET);
    let bad = send(
        &state,
        "GET",
        "/api/v1/whoami",
        &[("authorization", "Nodeshell-Session not-a-handle")],
    )
    .await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::UNAUTHORIZED, "E_REAUTH_REQUIRED"),
        "{}",
        bad.body
    );
    // A cross-site page can make the browser send its cookie, never this header; and the
    // cookie path still needs the CSRF proof on writes even with a valid session behind it.
    let cookie = sign_in(&state).await;
    let forged = post_json(
        &state,
        "/api/v1/nodes/n1/shell",
        json!({}),
        &[
            ("cookie", cookie.as_str()),
            ("origin", "https://evil.example"),
        ],
    )
    .await;
    assert_eq!(forged.code(), "E_CSRF", "{}", forged.body);
    // No CORS preflight is answered for the header: a browser never sends it cross-site.
    let preflight = send(
        &state,
        "OPTIONS",
        "/api/v1/whoami",
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "authorization"),
        ],
    )
    .await;
    assert!(
        !preflight
            .headers
            .contains_key("access-control-allow-origin")
            && !preflight
                .headers
                .contains_key("access-control-allow-headers"),
        "{:?}",
        preflight.headers
    );
}

//! Route tests of the console's sign-in through the gateway, against the simulator's real
//! issuer (a confidential client with a secret, the code flow, refresh tokens) and a
//! Kubernetes client pointing at a closed port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

use crate::gateway::config::{GatewayArgs, GatewayConfig, parse_file};
use crate::gateway::handover::LiveSide;
use crate::gateway::http::{self, AppState};
use crate::gateway::metrics::GatewayMetrics;
use crate::sim::{ClientRegistration, SimConfig, SimHandle, Simulator, TestUser};

const CLIENT: &str = "nodeshell";
pub(super) const SECRET: &str = "gateway-client-secret";
const PUBLIC_URL: &str = "http://127.0.0.1:18443";
const ORIGIN: &str = "http://127.0.0.1:18443";

pub(super) async fn sim() -> SimHandle {
    sim_with_ttl(3600).await
}

/// The simulator's issuer signing id_tokens that live `ttl` seconds.
async fn sim_with_ttl(ttl: u64) -> SimHandle {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut config = SimConfig::for_tests();
    config.issuer.token_ttl_seconds = ttl;
    config.issuer.client_id = CLIENT.into();
    config.issuer.auto_login = Some("alice".into());
    config.issuer.clients = vec![ClientRegistration {
        client_id: CLIENT.into(),
        client_secret: Some(SECRET.into()),
    }];
    config.users = vec![TestUser {
        sub: "alice".into(),
        email: "alice@example.com".into(),
        name: "Alice".into(),
        groups: vec!["sre".into()],
    }];
    let sim = Simulator::start(config).await.unwrap();
    if let Some(pem) = sim.issuer_ca_pem() {
        TRUSTED_CAS.lock().unwrap().push(pem.to_string());
    }
    sim
}

/// The CAs of the https issuers these tests started: the test browser trusts them all.
static TRUSTED_CAS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

pub(super) fn state(sim: &SimHandle, secret: &str) -> AppState {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, secret).unwrap();
    // The issuer's private CA, trusted through `oidc.caFile` (an empty value when it is http).
    let ca_file = sim
        .write_issuer_ca(dir.path())
        .unwrap()
        .map(|p| format!(", caFile: '{}'", p.display()))
        .unwrap_or_default();
    let file = parse_file(&format!(
        "oidc: {{issuerUrl: '{}', clientId: {CLIENT}, clientSecretFile: '{}', redirectUrl: '{PUBLIC_URL}/auth/callback'{ca_file}}}\n\
         tierOrder: [admin, engineer]\n\
         groupTiers: {{root: admin, sre: engineer}}\n\
         adminTiers: [admin]\n\
         allowedOrigins: ['https://dashboard.example']\n",
        sim.urls().issuer,
        secret_file.display()
    ))
    .unwrap();
    let config = GatewayConfig::resolve(&GatewayArgs::default(), file).unwrap();
    let kube =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap();
    crate::gateway::server::app_state(config, kube, LiveSide::none(), GatewayMetrics::default())
        .unwrap()
}

/// One answer of the router: status, headers, body.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: axum::http::HeaderMap,
    pub(super) body: Value,
}

impl Reply {
    pub(super) fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    pub(super) fn location(&self) -> String {
        self.headers[header::LOCATION].to_str().unwrap().to_string()
    }

    pub(super) fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    /// `name=value` of the cookie set under `name`.
    fn cookie(&self, name: &str) -> String {
        self.set_cookies()
            .iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(|c| c.split(';').next().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {name} cookie in {:?}", self.set_cookies()))
    }
}

pub(super) async fn send(
    state: &AppState,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = http::router(state.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

/// The issuer's answer to an authorization URL: the `/auth/callback?…` path and query.
pub(super) async fn at_issuer(authorize: &str) -> String {
    let cas: Vec<reqwest::Certificate> = TRUSTED_CAS
        .lock()
        .unwrap()
        .iter()
        .map(|pem| reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .collect();
    let http = cas
        .into_iter()
        .fold(reqwest::Client::builder(), |b, ca| {
            b.add_root_certificate(ca)
        })
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = http.get(authorize).send().await.unwrap();
    assert_eq!(response.status(), 302, "{:?}", response.text().await);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let back = url::Url::parse(&location).unwrap();
    assert_eq!(back.path(), "/auth/callback", "{location}");
    format!("{}?{}", back.path(), back.query().unwrap_or_default())
}

/// `/auth/login`: the issuer's URL and the binding cookie (`name=value`).
async fn begin(state: &AppState) -> (String, String) {
    let r = send(state, "GET", "/auth/login", &[]).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    (r.location(), r.cookie("nodeshell-login"))
}

/// A whole sign-in; returns the session cookie (`name=value`).
pub(super) async fn sign_in(state: &AppState) -> String {
    let (authorize, binding) = begin(state).await;
    let callback = at_issuer(&authorize).await;
    let r = send(state, "GET", &callback, &[("cookie", binding.as_str())]).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    assert_eq!(r.location(), "/?signed-in=1");
    r.cookie("nodeshell-session")
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_cookie_that_authenticates_the_api() {
    let sim = sim().await;
    let state = state(&sim, SECRET);
    let (authorize, binding) = begin(&state).await;
    let q: HashMap<String, String> = url::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert!(authorize.starts_with(&sim.urls().issuer), "{authorize}");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], format!("{PUBLIC_URL}/auth/callback"));
    assert!(q["state"].len() >= 32 && q["nonce"].len() >= 32);
    assert!(
        !q.contains_key("client_secret"),
        "the secret never goes to the browser"
    );
    let callback = at_issuer(&authorize).await;
    let r = send(&state, "GET", &callback, &[("cookie", binding.as_str())]).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    let set = r.set_cookies();
    let session = set
        .iter()
        .find(|c| c.starts_with("nodeshell-session="))
        .unwrap();
    assert!(session.contains("; HttpOnly"), "{session}");
    assert!(session.contains("; SameSite=Strict"), "{session}");
    assert!(session.contains("; Path=/"), "{session}");
    assert!(
        !session.contains("Secure"),
        "plain http public URL: {session}"
    );
    let value = session
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1;
    assert!(
        !value.starts_with("eyJ") && !value.contains('.'),
        "no JWT in the cookie"
    );
    assert!(
        set.iter()
            .any(|c| c.starts_with("nodeshell-login=;") && c.contains("Max-Age=0")),
        "the binding cookie is removed: {set:?}"
    );
    let cookie = r.cookie("nodeshell-session");
    let who = send(
        &state,
        "GET",
        "/api/v1/whoami",
        &[("cookie", cookie.as_str())],
    )
    .await;
    assert_eq!(who.status, StatusCode::OK, "{}", who.body);
    assert_eq!(who.body["sub"], "alice");
    assert_eq!(who.body["tier"], "engineer");
    assert!(!who.body.to_string().contains("eyJ"), "no token in whoami");
    // Without the cookie: the usual E_AUTH.
    let anon = send(&state, "GET", "/api/v1/whoami", &[]).await;
    assert_eq!(anon.code(), "E_AUTH");
}

#[tokio::test]
async fn state_binding_code_and_nonce_are_checked() {
    let sim = sim().await;
    let state = state(&sim, SECRET);
    // No state, an unknown state.
    let (authorize, binding) = begin(&state).await;
    let callback = at_issuer(&authorize).await;
    let code = url::Url::parse(&format!("http://x{callback}"))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let r = send(
        &state,
        "GET",
        &format!("/auth/callback?code={code}"),
        &[("cookie", binding.as_str())],
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "E_AUTH"),
        "{}",
        r.body
    );
    let r = send(
        &state,
        "GET",
        &format!("/auth/callback?code={code}&state=forged"),
        &[("cookie", binding.as_str())],
    )
    .await;
    assert_eq!(r.code(), "E_AUTH");
    assert!(
        r.body["message"].as_str().unwrap().contains("state"),
        "{}",
        r.body
    );
    // The right state from another browser (no or another binding cookie) is refused and spent.
    let r = send(
        &state,
        "GET",
        &callback,
        &[("cookie", "nodeshell-login=other")],
    )
    .await;
    assert_eq!(r.code(), "E_AUTH");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("another browser"),
        "{}",
        r.body
    );
    let r = send(&state, "GET", &callback, &[("cookie", binding.as_str())]).await;
    assert_eq!(r.code(), "E_AUTH", "a state is single use: {}", r.body);
    // A replayed code under a fresh sign-in's state: the issuer refuses it.
    let (authorize, binding) = begin(&state).await;
    let callback = at_issuer(&authorize).await;
    let ok = send(&state, "GET", &callback, &[("cookie", binding.as_str())]).await;
    assert_eq!(ok.status, StatusCode::FOUND, "{}", ok.body);
    let used_code = url::Url::parse(&format!("http://x{callback}"))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let (authorize, binding) = begin(&state).await;
    let fresh_state = url::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let r = send(
        &state,
        "GET",
        &format!("/auth/callback?code={used_code}&state={fresh_state}"),
        &[("cookie", binding.as_str())],
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "E_AUTH"),
        "{}",
        r.body
    );
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("refused the code"),
        "{}",
        r.body
    );
    // A code issued for another nonce (an injected authorization response).
    let (authorize, binding) = begin(&state).await;
    let mut url = url::Url::parse(&authorize).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "nonce" {
                (k, "attacker".to_string())
            } else {
                (k, v)
            }
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let callback = at_issuer(url.as_str()).await;
    let r = send(&state, "GET", &callback, &[("cookie", binding.as_str())]).await;
    assert_eq!(r.code(), "E_AUTH", "{}", r.body);
    assert!(
        r.body["message"].as_str().unwrap().contains("nonce"),
        "{}",
        r.body
    );
    // The issuer's own refusal.
    let (authorize, binding) = begin(&state).await;
    let st = url::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let r = send(
        &state,
        "GET",
        &format!("/auth/callback?error=access_denied&error_description=no&state={st}"),
        &[("cookie", binding.as_str())],
    )
    .await;
    assert_eq!(r.code(), "E_AUTH");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("access_denied")
    );
    // A wrong client secret: the exchange is refused.
    let wrong = self::state(&sim, "not-the-secret");
    let (authorize, binding) = begin(&wrong).await;
    let callback = at_issuer(&authorize).await;
    let r = send(&wrong, "GET", &callback, &[("cookie", binding.as_str())]).await;
    assert_eq!(r.code(), "E_AUTH", "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("invalid_client"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn cookie_writes_need_the_origin_and_the_csrf_header_and_logout_ends_the_session() {
    let sim = sim().await;
    let state = state(&sim, SECRET);
    let cookie = sign_in(&state).await;
    let open = "/api/v1/nodes/n1/shell";
    for (headers, why) in [
        (vec![("cookie", cookie.as_str())], "no Origin, no header"),
        (
            vec![("cookie", cookie.as_str()), ("x-nodeshell-csrf", "1")],
            "no Origin",
        ),
        (
            vec![
                ("cookie", cookie.as_str()),
                ("x-nodeshell-csrf", "1"),
                ("origin", "https://evil.example"),
            ],
            "another origin",
        ),
        (
            vec![("cookie", cookie.as_str()), ("origin", ORIGIN)],
            "no header",
        ),
    ] {
        for (method, path) in [
            ("POST", open),
            ("DELETE", "/api/v1/sessions/s1"),
            ("POST", "/api/v1/sessions/s1/ticket"),
        ] {
            let r = send(&state, method, path, &headers).await;
            assert_eq!(
                (r.status, r.code()),
                (StatusCode::FORBIDDEN, "E_CSRF"),
                "{why}: {method} {path}: {}",
                r.body
            );
        }
    }
    // The console's own page, and an allowed dashboard origin, pass the CSRF check (and then
    // fail closed at the unreachable apiserver).
    for origin in [ORIGIN, "https://dashboard.example"] {
        let r = send(
            &state,
            "POST",
            open,
            &[
                ("cookie", cookie.as_str()),
                ("origin", origin),
                ("x-nodeshell-csrf", "1"),
            ],
        )
        .await;
        assert_eq!(r.code(), "E_INTERNAL", "{origin}: {}", r.body);
    }
    // Reads need no CSRF header.
    let r = send(
        &state,
        "GET",
        "/api/v1/whoami",
        &[("cookie", cookie.as_str())],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // Logout is a write too.
    let r = send(
        &state,
        "POST",
        "/auth/logout",
        &[
            ("cookie", cookie.as_str()),
            ("origin", "https://evil.example"),
            ("x-nodeshell-csrf", "1"),
        ],
    )
    .await;
    assert_eq!(r.code(), "E_CSRF");
    let r = send(
        &state,
        "POST",
        "/auth/logout",
        &[
            ("cookie", cookie.as_str()),
            ("origin", ORIGIN),
            ("x-nodeshell-csrf", "1"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert!(
        r.set_cookies()
            .iter()
            .any(|c| c.starts_with("nodeshell-session=;") && c.contains("Max-Age=0"))
    );
    let r = send(
        &state,
        "GET",
        "/api/v1/whoami",
        &[("cookie", cookie.as_str())],
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "E_REAUTH_REQUIRED"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn a_disabled_person_loses_the_session_at_the_next_refresh() {
    let sim = sim().await;
    let state = state(&sim, SECRET);
    let cookie = sign_in(&state).await;
    let key = cookie.split_once('=').unwrap().1.to_string();
    let console = state.access.console.as_ref().unwrap();
    let before = console.sessions.peek(&key).unwrap().tokens.id_token;
    match state.access.recheck_identity(&key).await {
        crate::gateway::access::sign_in::IdentityVerdict::Valid(caller) => {
            assert_eq!(caller.sub, "alice");
        }
        other => panic!("{other:?}"),
    }
    assert_ne!(
        console.sessions.peek(&key).unwrap().tokens.id_token,
        before,
        "fresh token"
    );
    sim.set_user_disabled("alice", true);
    let verdict = state.access.recheck_identity(&key).await;
    assert!(
        matches!(verdict, crate::gateway::access::sign_in::IdentityVerdict::Revoked(ref why) if why.contains("disabled")),
        "{verdict:?}"
    );
    let r = send(
        &state,
        "GET",
        "/api/v1/whoami",
        &[("cookie", cookie.as_str())],
    )
    .await;
    assert_eq!(r.code(), "E_REAUTH_REQUIRED");
}

#[tokio::test]
async fn without_a_client_secret_there_is_no_console_sign_in() {
    let file =
        parse_file("oidc: {issuerUrl: 'https://issuer.test', clientId: nodeshell}\n").unwrap();
    let config = GatewayConfig::resolve(&GatewayArgs::default(), file).unwrap();
    let kube =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap();
    let state = crate::gateway::server::app_state(
        config,
        kube,
        LiveSide::none(),
        GatewayMetrics::default(),
    )
    .unwrap();
    let r = send(&state, "GET", "/auth/login", &[]).await;
    assert_eq!(r.code(), "E_INTERNAL");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("clientSecretFile"),
        "{}",
        r.body
    );
    // A cookie means nothing then.
    let r = send(
        &state,
        "GET",
        "/api/v1/whoami",
        &[("cookie", "nodeshell-session=x")],
    )
    .await;
    assert_eq!(r.code(), "E_AUTH");
}

#[tokio::test]
async fn a_refresh_moments_after_another_reuses_its_tokens_instead_of_asking_again() {
    use crate::gateway::access::sign_in::IdentityVerdict;
    let sim = sim().await;
    let state = state(&sim, SECRET);
    let cookie = sign_in(&state).await;
    let key = cookie.split_once('=').unwrap().1.to_string();
    let console = state.access.console.as_ref().unwrap();
    let first = state
        .access
        .refresh_console_session(console, &key, true)
        .await;
    assert!(matches!(first, IdentityVerdict::Valid(_)), "{first:?}");
    // The issuer would refuse now; a concurrent API call's refresh does not ask it again
    // (issuers that rotate refresh tokens revoke a sign-in whose token is used twice)...
    sim.set_user_disabled("alice", true);
    let again = state
        .access
        .refresh_console_session(console, &key, true)
        .await;
    assert!(matches!(again, IdentityVerdict::Valid(_)), "{again:?}");
    // ...while the identity re-check always does.
    let check = state.access.recheck_identity(&key).await;
    assert!(matches!(check, IdentityVerdict::Revoked(_)), "{check:?}");
}

#[tokio::test]
async fn an_id_token_about_to_expire_is_renewed_on_the_next_call_and_a_refusal_ends_the_session() {
    // Tokens of 30 s are always within the renewal margin: every call renews.
    let sim = sim_with_ttl(30).await;
    let state = state(&sim, SECRET);
    let cookie = sign_in(&state).await;
    let key = cookie.split_once('=').unwrap().1.to_string();
    let console = state.access.console.as_ref().unwrap();
    let signed_in = console.sessions.peek(&key).unwrap();
    assert!(
        !signed_in.refreshed_within(std::time::Duration::from_secs(5), std::time::Instant::now())
    );
    let who = send(
        &state,
        "GET",
        "/api/v1/whoami",
        &[("cookie", cookie.as_str())],
    )
    .await;
    assert_eq!(who.status, StatusCode::OK, "{}", who.body);
    assert!(
        console
            .sessions
            .peek(&key)
            .unwrap()
            .refreshed_within(std::time::Duration::from_secs(5), std::time::Instant::now()),
        "the call renewed the tokens"
    );
    // Another sign-in, then the person is disabled before its first call: the renewal is
    // refused, the call says to sign in again, and the console session is gone.
    let cookie = sign_in(&state).await;
    sim.set_user_disabled("alice", true);
    let r = send(
        &state,
        "GET",
        "/api/v1/whoami",
        &[("cookie", cookie.as_str())],
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "E_REAUTH_REQUIRED"),
        "{}",
        r.body
    );
    assert!(
        r.body["message"].as_str().unwrap().contains("disabled"),
        "{}",
        r.body
    );
    let key = cookie.split_once('=').unwrap().1;
    assert!(console.sessions.peek(key).is_none());
}

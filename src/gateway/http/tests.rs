//! Route-level tests: the router driven with `tower::ServiceExt::oneshot`, with issuer keys
//! generated in the test and a Kubernetes client pointing at a closed port (so every route
//! that needs the apiserver must fail closed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::api::NodeShellPolicy;
use crate::gateway::access::auth::keys::KeyFetcher;
use crate::gateway::access::auth::{KeyCache, KeySet};
use crate::gateway::access::tickets::TicketGrant;
use crate::gateway::config::{GatewayArgs, GatewayConfig, parse_file};
use crate::gateway::error::ErrorCode;
use crate::gateway::handover::LiveSide;
use crate::gateway::handover::{Caller, IdToken};
use crate::gateway::http::{self, AppState, OPENAPI, ROUTES};
use crate::gateway::metrics::GatewayMetrics;
use crate::sim::jwt::{BadToken, KeyRing};

const ISS: &str = "https://issuer.test";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str, groups: &[&str]) -> Value {
    json!({
        "iss": ISS, "sub": sub, "aud": "nodeshell", "iat": now(), "nbf": now(),
        "exp": now() + 600, "name": sub, "groups": groups,
    })
}

struct Fixture {
    state: AppState,
    ring: KeyRing,
}

async fn fixture() -> Fixture {
    let ring = KeyRing::generate().unwrap();
    let jwks = ring.jwks();
    let fetch: KeyFetcher = Arc::new(move || {
        let jwks = jwks.clone();
        Box::pin(async move { KeySet::from_jwks(&jwks) })
    });
    let file = parse_file(
        "oidc: {issuerUrl: 'https://issuer.test', clientId: nodeshell}\n\
         tierOrder: [admin, engineer]\n\
         groupTiers: {root: admin, sre: engineer}\n\
         adminTiers: [admin]\n\
         allowedOrigins: ['https://console.example']\n\
         allowMissingOrigin: false\n\
         http: {bodyReadTimeoutSeconds: 1, maxBodyBytes: 2048}\n",
    )
    .unwrap();
    let config = GatewayConfig::resolve(&GatewayArgs::default(), file).unwrap();
    // Port 1 on loopback refuses connections: the apiserver is "down".
    let kube =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap();
    let mut state = crate::gateway::server::app_state(
        config,
        kube,
        LiveSide::none(),
        GatewayMetrics::default(),
    )
    .unwrap();
    let cache = KeyCache::new(fetch, Duration::from_secs(10));
    cache.refresh().await.unwrap();
    state.access.auth = crate::gateway::access::auth::Authenticator::new(
        &state.access.config.oidc,
        state.access.config.tiers.clone(),
        cache,
    );
    Fixture { state, ring }
}

async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = http::router(state.clone())
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

#[test]
fn openapi_parses_and_lists_every_route() {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    for (method, path) in ROUTES {
        let op = &doc["paths"][path][method.to_ascii_lowercase()];
        assert!(op.is_object(), "/openapi.json lacks {method} {path}");
    }
    let codes: Vec<&str> = doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for code in ErrorCode::ALL {
        assert!(codes.contains(&code.as_str()), "{code:?} missing");
    }
}

#[test]
fn api_doc_names_every_route_and_code() {
    let doc = include_str!("../../../docs/api.md");
    for (method, path) in ROUTES {
        assert!(
            doc.contains(&format!("{method} {path}")),
            "docs/api.md lacks {method} {path}"
        );
    }
    for code in ErrorCode::ALL {
        assert!(
            doc.contains(code.as_str()),
            "docs/api.md lacks {}",
            code.as_str()
        );
    }
}

/// GET `uri` on the admin router.
async fn admin_get(state: &AppState, uri: &str) -> (StatusCode, String) {
    let response = http::admin_router(state.clone())
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn openapi_on_the_api_health_and_metrics_on_the_admin_listener_only() {
    let f = fixture().await;
    let (status, body) = call(&f.state, "GET", "/openapi.json", None, "", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["paths"].is_object());
    for path in ["/healthz", "/readyz", "/metrics", "/nope"] {
        let (status, body) = call(&f.state, "GET", path, None, "", &[]).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("E_NOT_FOUND")),
            "{path} on the API listener"
        );
    }
    assert_eq!(admin_get(&f.state, "/healthz").await.0, StatusCode::OK);
    let (status, body) = admin_get(&f.state, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "Kubernetes API unreachable", "a fixed phrase only");
    let (status, body) = admin_get(&f.state, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("nodeshell_gateway_open_latency_seconds"));
    assert!(body.contains("nodeshell_gateway_http_connections"));
}

#[tokio::test]
async fn readyz_names_failing_checks_without_their_causes() {
    let mut f = fixture().await;
    let fetch: KeyFetcher =
        Arc::new(|| Box::pin(async { KeySet::from_jwks(&json!({"keys": "not-a-list"})) }));
    let cause = KeySet::from_jwks(&json!({"keys": "not-a-list"}))
        .err()
        .unwrap()
        .to_string();
    let cache = KeyCache::new(fetch, Duration::from_secs(10));
    assert!(cache.refresh().await.is_err());
    f.state.access.auth = crate::gateway::access::auth::Authenticator::new(
        &f.state.access.config.oidc,
        f.state.access.config.tiers.clone(),
        cache,
    );
    let (status, body) = admin_get(&f.state, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "issuer keys not loaded; Kubernetes API unreachable");
    assert!(!body.contains(&cause), "{body:?} carries {cause:?}");
}

/// A request to `uri` whose body is `body`, with `headers`, through the API router, answered
/// within 5 s (a handler waiting for a body that never comes fails the test).
async fn send_body(
    state: &AppState,
    uri: &str,
    token: Option<&str>,
    body: Body,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = Request::post(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        http::router(state.clone()).oneshot(req.body(body).unwrap()),
    )
    .await
    .expect("answered without waiting for the body")
    .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A body that never sends a byte.
fn never() -> Body {
    Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>())
}

#[tokio::test]
async fn bodies_are_authenticated_first_then_bounded_in_size_and_time() {
    let f = fixture().await;
    let token = f.ring.sign_claims(&claims("alice", &["sre"])).unwrap();
    let path = "/api/v1/nodes/n1/shell";
    // No token: refused before a byte of the (never sent) body is awaited.
    let (status, body) =
        send_body(&f.state, path, None, never(), &[("content-length", "100")]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("E_AUTH"))
    );
    // Declared over the limit: refused unread, even with a token.
    let (status, body) = send_body(
        &f.state,
        path,
        Some(&token),
        never(),
        &[("content-length", "2049")],
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("E_PAYLOAD_TOO_LARGE"))
    );
    assert_eq!(body["limit"], 2048);
    assert!(body["message"].as_str().unwrap().contains("2048 bytes"));
    // Chunked, so no length is declared: cut when it passes the limit.
    let chunks = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1000])));
    let (status, body) = send_body(
        &f.state,
        path,
        Some(&token),
        Body::from_stream(chunks),
        &[("transfer-encoding", "chunked")],
    )
    .await;
    assert_eq!(body["code"], "E_PAYLOAD_TOO_LARGE", "{status}");
    // Announced but never sent: cut after the body read timeout (1 s here).
    let (status, body) = send_body(
        &f.state,
        path,
        Some(&token),
        never(),
        &[("content-length", "100")],
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::REQUEST_TIMEOUT, Some("E_REQUEST_TIMEOUT"))
    );
    // Within the limits the open goes on (and fails closed: no apiserver).
    let good = r#"{"reason":"disk"}"#;
    let (status, body) = send_body(
        &f.state,
        path,
        Some(&token),
        Body::from(good),
        &[("content-length", &good.len().to_string())],
    )
    .await;
    assert_eq!(body["code"], "E_INTERNAL", "{status}");
}

#[tokio::test]
async fn every_api_route_wants_a_valid_token() {
    let f = fixture().await;
    let forged = f
        .ring
        .mint_bad(BadToken::ForgedSignature, claims("alice", &["sre"]))
        .unwrap();
    let none = f
        .ring
        .mint_bad(BadToken::AlgNone, claims("alice", &["sre"]))
        .unwrap();
    for (method, path) in [
        ("GET", "/api/v1/nodes"),
        ("GET", "/api/v1/nodes/n1/shell/preflight"),
        ("POST", "/api/v1/nodes/n1/shell"),
        ("GET", "/api/v1/sessions"),
        ("GET", "/api/v1/sessions/s1"),
        ("DELETE", "/api/v1/sessions/s1"),
        ("POST", "/api/v1/sessions/s1/ticket"),
        ("GET", "/api/v1/sessions/s1/transcript"),
        ("GET", "/api/v1/whoami"),
    ] {
        for token in [
            None,
            Some(forged.as_str()),
            Some(none.as_str()),
            Some("garbage"),
        ] {
            let (status, body) = call(&f.state, method, path, token, "", &[]).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            assert_eq!(body["code"], "E_AUTH", "{method} {path}");
            assert!(body["message"].as_str().unwrap().len() > 10);
        }
    }
}

#[tokio::test]
async fn whoami_maps_groups_to_a_tier() {
    let f = fixture().await;
    let token = f
        .ring
        .sign_claims(&claims("auth0|root", &["root", "sre"]))
        .unwrap();
    let (status, body) = call(&f.state, "GET", "/api/v1/whoami", Some(&token), "", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["tier"], "admin");
    assert_eq!(body["admin"], true);
    assert_eq!(
        body["shells"],
        json!([]),
        "a bearer client is never offered a console session's shells to resume"
    );
}

#[tokio::test]
async fn open_checks_the_body_then_fails_closed_without_the_apiserver() {
    let f = fixture().await;
    let token = f.ring.sign_claims(&claims("alice", &["sre"])).unwrap();
    let path = "/api/v1/nodes/n1/shell";
    for bad in [
        r#"{"cols":"wide"}"#,
        r#"{"cols":0}"#,
        r#"{"rows":100000}"#,
        "[",
        r#"{"x":1}"#,
    ] {
        let (status, body) = call(&f.state, "POST", path, Some(&token), bad, &[]).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("E_BAD_REQUEST")),
            "{bad}"
        );
    }
    for good in ["", r#"{"reason":"disk","cols":120,"rows":40}"#] {
        let (status, body) = call(&f.state, "POST", path, Some(&token), good, &[]).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert_eq!(body["code"], "E_INTERNAL");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("no session was opened")
        );
    }
    let metrics = f.state.metrics.registry.encode();
    assert!(
        metrics.contains("nodeshell_gateway_opens_total{outcome=\"E_BAD_REQUEST\"} 5"),
        "{metrics}"
    );
}

fn grant(session: &str) -> TicketGrant {
    TicketGrant {
        caller: Caller {
            sub: "alice".into(),
            email: None,
            name: "alice".into(),
            groups: vec![],
            tier: Some("engineer".into()),
        },
        id_token: IdToken::new("t"),
        session: session.into(),
        policy: "p".into(),
        cols: 80,
        rows: 24,
        reattach: false,
    }
}

#[tokio::test]
async fn attach_checks_origin_then_ticket() {
    let f = fixture().await;
    let ok_origin = [("origin", "https://console.example")];
    let ticket = f
        .state
        .access
        .tickets
        .issue(grant("s1"), Instant::now())
        .unwrap();
    let uri = format!("/api/v1/sessions/s1/attach?ticket={ticket}");
    // A foreign origin is refused before the ticket is touched.
    let (status, body) = call(
        &f.state,
        "GET",
        &uri,
        None,
        "",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("E_FORBIDDEN"))
    );
    let (status, _) = call(&f.state, "GET", &uri, None, "", &[]).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "no Origin, and allowMissingOrigin is false"
    );
    assert_eq!(f.state.access.tickets.len(), 1);
    // No ticket, an unknown ticket, a ticket for another session (which burns it).
    for uri in [
        "/api/v1/sessions/s1/attach".to_string(),
        "/api/v1/sessions/s1/attach?ticket=forged".to_string(),
        format!("/api/v1/sessions/s2/attach?ticket={ticket}"),
        uri.clone(),
    ] {
        let (status, body) = call(&f.state, "GET", &uri, None, "", &ok_origin).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("E_AUTH")),
            "{uri}: {body}"
        );
    }
    assert!(f.state.access.tickets.is_empty());
    // A good ticket on a plain GET is not a WebSocket request.
    let ticket = f
        .state
        .access
        .tickets
        .issue(grant("s1"), Instant::now())
        .unwrap();
    let (status, body) = call(
        &f.state,
        "GET",
        &format!("/api/v1/sessions/s1/attach?ticket={ticket}"),
        None,
        "",
        &ok_origin,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("E_BAD_REQUEST"))
    );
}

#[tokio::test]
async fn session_routes_fail_closed_without_the_apiserver() {
    let f = fixture().await;
    let token = f.ring.sign_claims(&claims("alice", &["sre"])).unwrap();
    for (method, path) in [
        ("GET", "/api/v1/nodes"),
        ("GET", "/api/v1/sessions"),
        ("GET", "/api/v1/sessions/s1"),
        ("DELETE", "/api/v1/sessions/s1"),
        ("POST", "/api/v1/sessions/s1/ticket"),
    ] {
        let (status, body) = call(&f.state, method, path, Some(&token), "", &[]).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, Some("E_INTERNAL")),
            "{method} {path}"
        );
    }
}

#[test]
fn the_session_object_carries_spec_and_labels() {
    use crate::gateway::access::eligibility::ShellTarget;
    let mut policy = NodeShellPolicy::new("default", Default::default());
    policy.spec.aws.document_name = "SSM-SessionManagerRunShell".into();
    let target = ShellTarget {
        node_name: "ip-10-0-1-2.ec2.internal".into(),
        instance_id: "i-0123456789abcdef0".into(),
        region: "eu-west-1".into(),
        policy,
        role_arn: "arn:aws:iam::123456789012:role/r".into(),
    };
    let caller = Caller {
        sub: "auth0|alice".into(),
        email: Some("alice@example.com".into()),
        name: "Alice".into(),
        groups: vec!["sre".into()],
        tier: Some("engineer".into()),
    };
    let s = crate::gateway::access::open::session_object(
        &caller,
        &target,
        "nodeshell-auth0-alice".into(),
        Some("  ".into()),
    );
    assert_eq!(
        s.metadata.generate_name.as_deref(),
        Some("ip-10-0-1-2.ec2.internal-")
    );
    assert_eq!(s.spec.user.tier, "engineer");
    assert_eq!(s.spec.policy_name, "default");
    assert_eq!(s.spec.reason, None, "a blank reason is no reason");
    let labels = s.metadata.labels.unwrap();
    assert_eq!(labels[crate::api::LABEL_USER], "Alice");
    let s = crate::gateway::access::open::session_object(
        &caller,
        &target,
        "nodeshell-auth0-alice".into(),
        Some("disk full\r\n\u{1b}[2J\u{1b}]0;hidden\u{7}".into()),
    );
    assert_eq!(
        s.spec.reason.as_deref(),
        Some("disk full [2J]0;hidden"),
        "no control character reaches kubectl describe"
    );
}

#[test]
fn rejections_map_to_cap_and_policy_codes() {
    use crate::api::{NodeShellSession, NodeShellSessionStatus, SessionPhase};
    let mut policy = NodeShellPolicy::new("p", Default::default());
    policy.spec.limits.max_sessions_per_user = 1;
    let rejected = |reason: &str| {
        let mut s = NodeShellSession::new("s", Default::default());
        s.status = Some(NodeShellSessionStatus {
            phase: Some(SessionPhase::Rejected),
            reason: Some(reason.into()),
            message: Some("close one and try again".into()),
            ..Default::default()
        });
        crate::gateway::refusals::decision_error(&s, &policy)
    };
    let e = rejected("CapPerUser");
    assert_eq!(
        (e.code, e.extra["limit"].clone()),
        (ErrorCode::CapUser, json!(1))
    );
    assert_eq!(rejected("CapTotal").extra["limit"], 10);
    assert_eq!(rejected("PolicyDenied").code, ErrorCode::NodeShellDisabled);
    assert_eq!(rejected("Something").code, ErrorCode::Internal);
}

#[test]
fn aws_refusals_map_to_their_codes() {
    use crate::aws::{AgentPing, AssumeRoleError};
    use crate::gateway::access::eligibility::ShellTarget;
    let mut policy = NodeShellPolicy::new("p", Default::default());
    policy.spec.aws.oidc_audience = Some("nodeshell".into());
    let target = ShellTarget {
        node_name: "n1".into(),
        instance_id: "i-0123456789abcdef0".into(),
        region: "eu-west-1".into(),
        policy,
        role_arn: "arn:aws:iam::123456789012:role/r".into(),
    };
    let code = |e: AssumeRoleError| crate::gateway::refusals::assume_role_error(&e, &target).code;
    assert_eq!(
        code(AssumeRoleError::AccessDenied("no".into())),
        ErrorCode::TrustDenied
    );
    let aud = crate::gateway::refusals::assume_role_error(
        &AssumeRoleError::InvalidIdentityToken("Incorrect token audience".into()),
        &target,
    );
    assert_eq!(
        (aud.code, aud.extra["expected_aud"].clone()),
        (ErrorCode::AudMismatch, json!("nodeshell"))
    );
    assert_eq!(
        code(AssumeRoleError::InvalidIdentityToken(
            "No OpenIDConnect provider".into()
        )),
        ErrorCode::TrustDenied
    );
    assert_eq!(
        code(AssumeRoleError::ExpiredToken("x".into())),
        ErrorCode::ReauthRequired
    );
    assert_eq!(
        code(AssumeRoleError::Transport("down".into())),
        ErrorCode::StartFailed
    );
    assert!(crate::gateway::refusals::ping_error(&AgentPing::Online, &target).is_none());
    let offline =
        crate::gateway::refusals::ping_error(&AgentPing::ConnectionLost, &target).unwrap();
    assert_eq!(offline.code, ErrorCode::AgentOffline);
    assert!(
        offline.message.contains("ConnectionLost"),
        "{}",
        offline.message
    );
}

/// The issuer keys' HTTP fetcher against a tiny issuer on loopback (served by axum, hence
/// here): discovery → jwks_uri, and a discovery document naming another issuer is refused.
#[tokio::test]
async fn http_fetcher_follows_discovery_and_checks_the_issuer() {
    use axum::routing::get;
    use jsonwebtoken::Algorithm;

    use crate::gateway::access::auth::keys;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let ring = crate::sim::jwt::KeyRing::generate().unwrap();
    let jwks = ring.jwks();
    let issuer = base.clone();
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let issuer = issuer.clone();
                async move {
                    axum::Json(json!({"issuer": issuer, "jwks_uri": format!("{issuer}/keys")}))
                }
            }),
        )
        .route(
            "/keys",
            get(move || async move { axum::Json(jwks.clone()) }),
        )
        .route(
            "/other/.well-known/openid-configuration",
            get(|| async { axum::Json(json!({"issuer": "https://elsewhere", "jwks_uri": "x"})) }),
        );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let set = (keys::http_fetcher(http.clone(), base.clone()))()
        .await
        .unwrap();
    assert_eq!(set.len(), 1);
    assert!(
        set.find(Some(&ring.active_kid()), Algorithm::RS256)
            .is_some()
    );
    let err = (keys::http_fetcher(http.clone(), format!("{base}/other")))()
        .await
        .unwrap_err();
    assert!(matches!(err, keys::KeysError::Malformed(_)), "{err}");
    let err = (keys::http_fetcher(http, format!("{base}/missing")))()
        .await
        .unwrap_err();
    assert!(matches!(err, keys::KeysError::Fetch(_)), "{err}");
    server.abort();
}

#[tokio::test]
async fn names_from_urls_are_checked_before_the_apiserver() {
    // The apiserver is down in this fixture: a 400 proves the name never reached it.
    let f = fixture().await;
    let token = f.ring.sign_claims(&claims("alice", &["sre"])).unwrap();
    let long = "a".repeat(254);
    for (method, path, kind) in [
        (
            "GET",
            "/api/v1/nodes/Node_1/shell/preflight".to_string(),
            "node",
        ),
        ("POST", "/api/v1/nodes/n..1/shell".to_string(), "node"),
        ("POST", format!("/api/v1/nodes/{long}/shell"), "node"),
        ("GET", "/api/v1/sessions/Shell-1".to_string(), "session"),
        ("DELETE", "/api/v1/sessions/-s1".to_string(), "session"),
        (
            "POST",
            "/api/v1/sessions/s%2F1/ticket".to_string(),
            "session",
        ),
        (
            "GET",
            "/api/v1/sessions/s%201/transcript".to_string(),
            "session",
        ),
    ] {
        let (status, body) = call(&f.state, method, &path, Some(&token), "", &[]).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("E_BAD_REQUEST")),
            "{method} {path}: {body}"
        );
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("{kind} names are DNS-1123 subdomains")),
            "{message}"
        );
    }
}

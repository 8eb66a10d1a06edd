//! The OIDC issuer's HTTP side: discovery, JWKS, the browser login (`/authorize` with PKCE,
//! then `/token` with the code), direct minting for the configured test users, and
//! test-only routes for bad tokens and key rotation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::json;
use tower_http::cors::{Any, CorsLayer};

use super::clients::{self, ClientRefusal, KnownClient};
use super::config::TestUser;
use super::jwt::{BadToken, JwtError, user_claims};
use super::login::{
    AuthorizeRefusal, AuthorizeRequest, CodeExchange, OAuthError, check_authorize, html_escape,
    redirect_location,
};
use super::state::{Shared, lock, read, write};

/// Routes of the issuer.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    // Discovery and JWKS are public documents any page may read; `/token` answers other
    // origins only with the `crossOriginToken` knob, since no page script should hold a token.
    let public_documents = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/keys", get(jwks))
        .layer(cors());
    let mut token = Router::new().route("/token", post(token_form).get(token_query));
    if shared.config.issuer.cross_origin_token {
        token = token.layer(cors());
    }
    Router::new()
        .merge(public_documents)
        .merge(token)
        .route("/authorize", get(authorize))
        .route("/test/rotate-keys", post(rotate))
        .with_state(shared)
}

/// Lets any origin read the response; tower-http's layer answers preflights itself.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600))
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let iss = &shared.urls.issuer;
    Json(json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}/keys"),
        "token_endpoint": format!("{iss}/token"),
        "authorization_endpoint": format!("{iss}/authorize"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile", "groups"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "email", "name", "groups"],
        "grant_types_supported": if shared.config.issuer.test_password_grant {
            json!(["authorization_code", "refresh_token", "password"])
        } else {
            json!(["authorization_code", "refresh_token"])
        },
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
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
    let person =
        find_user(shared, user).ok_or_else(|| TokenError::UnknownUser(user.to_string()))?;
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

fn token_response(
    shared: &Shared,
    authorization: Option<&str>,
    params: &HashMap<String, String>,
) -> Response {
    match params.get("grant_type").map(String::as_str) {
        Some("authorization_code") => return exchange_code(shared, authorization, params),
        Some("refresh_token") => return refresh(shared, authorization, params),
        None | Some("password") if shared.config.issuer.test_password_grant => {}
        None => {
            return oauth_refusal(&OAuthError {
                error: "invalid_request",
                description: "grant_type is required; use authorization_code (with PKCE) or refresh_token (the test password grant is off: issuer.testPasswordGrant)".to_string(),
            });
        }
        Some(other) => {
            return oauth_refusal(&OAuthError {
                error: "unsupported_grant_type",
                description: format!(
                    "grant_type {other:?} is not supported; use authorization_code (with PKCE) or refresh_token{}",
                    if other == "password" {
                        " (the test password grant is off: issuer.testPasswordGrant)"
                    } else {
                        ""
                    }
                ),
            });
        }
    }
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

/// JSON error of the token endpoint.
fn oauth_refusal(error: &OAuthError) -> Response {
    let status = if error.error == "invalid_client" {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, no_store(), Json(error.to_json())).into_response()
}

fn no_store() -> [(header::HeaderName, &'static str); 2] {
    [
        (header::CACHE_CONTROL, "no-store"),
        (header::PRAGMA, "no-cache"),
    ]
}

/// A client authentication failure: 401 with `WWW-Authenticate: Basic` when the client tried
/// the `Authorization` header (RFC 6749 §5.2).
fn client_refusal(refusal: &ClientRefusal) -> Response {
    let mut response = oauth_refusal(&refusal.error);
    if refusal.basic && refusal.error.error == "invalid_client" {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"token\""),
        );
    }
    response
}

/// The calling client, identified from the request's credentials.
fn calling_client(
    shared: &Shared,
    authorization: Option<&str>,
    params: &HashMap<String, String>,
) -> Result<KnownClient, ClientRefusal> {
    let presented = clients::presented(authorization, params)?;
    clients::identify(
        &presented,
        &shared.config.issuer.clients,
        &shared.accepted_audiences(),
    )
}

fn disabled(shared: &Shared, sub: &str) -> Option<Response> {
    lock(&shared.disabled_users).contains(sub).then(|| {
        oauth_refusal(&OAuthError {
            error: "invalid_grant",
            description: format!("user {sub:?} is disabled at the identity provider"),
        })
    })
}

/// Signs a fresh id_token for `sub` with `client_id` as audience; with a refresh token when
/// given one.
fn token_answer(
    shared: &Shared,
    sub: &str,
    client_id: &str,
    nonce: Option<&str>,
    refresh_token: Option<String>,
) -> Response {
    let Some(person) = find_user(shared, sub) else {
        return oauth_refusal(&OAuthError {
            error: "invalid_grant",
            description: format!("user {sub:?} is no longer configured"),
        });
    };
    let ttl = shared.config.issuer.token_ttl_seconds;
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    let mut claims = user_claims(person, &shared.urls.issuer, client_id, now, ttl);
    if let Some(nonce) = nonce {
        claims["nonce"] = json!(nonce);
    }
    match read(&shared.keys).sign_claims(&claims) {
        Ok(token) => {
            let mut body = json!({"id_token": token, "token_type": "Bearer", "expires_in": ttl});
            if let Some(refresh) = refresh_token {
                body["refresh_token"] = json!(refresh);
            }
            (no_store(), Json(body)).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The authorization-code grant: identifies the client (a confidential one proves its
/// secret), spends the code, then mints an id_token for its user with the client as audience
/// and the login's nonce; confidential clients also get a refresh token.
fn exchange_code(
    shared: &Shared,
    authorization: Option<&str>,
    params: &HashMap<String, String>,
) -> Response {
    let client = match calling_client(shared, authorization, params) {
        Ok(client) => client,
        Err(refusal) => return client_refusal(&refusal),
    };
    let mut exchange = CodeExchange::from_params(params);
    exchange.client_id = Some(&client.client_id);
    let redeemed = lock(&shared.codes).redeem(&exchange, Instant::now());
    let issued = match redeemed {
        Ok(issued) => issued,
        Err(error) => return oauth_refusal(&error),
    };
    if let Some(refused) = disabled(shared, &issued.sub) {
        return refused;
    }
    let refresh = client.confidential.then(|| {
        lock(&shared.refresh_tokens).issue(&issued.sub, &client.client_id, Instant::now())
    });
    token_answer(
        shared,
        &issued.sub,
        &client.client_id,
        issued.request.nonce.as_deref(),
        refresh,
    )
}

/// The refresh-token grant (RFC 6749 §6), for confidential clients only: a fresh id_token
/// while the user is still enabled.
fn refresh(
    shared: &Shared,
    authorization: Option<&str>,
    params: &HashMap<String, String>,
) -> Response {
    let client = match calling_client(shared, authorization, params) {
        Ok(client) => client,
        Err(refusal) => return client_refusal(&refusal),
    };
    if !client.confidential {
        return oauth_refusal(&OAuthError {
            error: "unauthorized_client",
            description: "public clients get no refresh tokens; sign in again".to_string(),
        });
    }
    let token = params.get("refresh_token").map(String::as_str);
    let grant = match lock(&shared.refresh_tokens).redeem(token, &client.client_id, Instant::now())
    {
        Ok(grant) => grant,
        Err(error) => return oauth_refusal(&error),
    };
    if let Some(refused) = disabled(shared, &grant.sub) {
        return refused;
    }
    token_answer(
        shared,
        &grant.sub,
        &client.client_id,
        None,
        token.map(str::to_string),
    )
}

fn find_user<'a>(shared: &'a Shared, user: &str) -> Option<&'a TestUser> {
    shared
        .config
        .users
        .iter()
        .find(|u| u.sub == user || u.email == user)
}

/// `/authorize`: checks the request, then signs in `sim_user` (the picker's choice) or the
/// configured `autoLogin` user and redirects with a code; with neither, shows the picker.
async fn authorize(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let issuer = &shared.config.issuer;
    let request =
        match check_authorize(&params, &shared.accepted_audiences(), &issuer.redirect_uris) {
            Ok(request) => request,
            Err(AuthorizeRefusal::Here(error)) => {
                return (StatusCode::BAD_REQUEST, Json(error.to_json())).into_response();
            }
            Err(AuthorizeRefusal::Redirect {
                redirect_uri,
                state,
                error,
            }) => {
                let mut pairs = vec![
                    ("error", error.error),
                    ("error_description", error.description.as_str()),
                ];
                if let Some(state) = &state {
                    pairs.push(("state", state));
                }
                return found(&redirect_location(&redirect_uri, &pairs));
            }
        };
    let chosen = params.get("sim_user").or(issuer.auto_login.as_ref());
    match chosen.and_then(|sub| find_user(&shared, sub)) {
        Some(person) => {
            let code = lock(&shared.codes).issue(&person.sub, request.clone(), Instant::now());
            let mut pairs = vec![("code", code.as_str())];
            if let Some(state) = &request.state {
                pairs.push(("state", state));
            }
            found(&redirect_location(&request.redirect_uri, &pairs))
        }
        None => picker(
            &shared.config.users,
            &params,
            chosen.map(String::as_str),
            &request,
        ),
    }
}

/// A 302 to `location` (what OAuth clients expect from `/authorize`).
fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::FOUND, [(header::LOCATION, value)]).into_response(),
        Err(_) => (
            StatusCode::BAD_REQUEST,
            "redirect_uri is not a valid header value",
        )
            .into_response(),
    }
}

/// The "who are you" page: one button per configured user, resubmitting the request.
fn picker(
    users: &[TestUser],
    params: &HashMap<String, String>,
    unknown: Option<&str>,
    request: &AuthorizeRequest,
) -> Response {
    let mut hidden = String::new();
    let mut names: Vec<&String> = params.keys().filter(|k| *k != "sim_user").collect();
    names.sort();
    for name in names {
        let value = params.get(name).map(String::as_str).unwrap_or_default();
        hidden.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
            html_escape(name),
            html_escape(value)
        ));
    }
    let mut buttons = String::new();
    for user in users {
        let groups = user.groups.join(", ");
        buttons.push_str(&format!(
            "<button type=\"submit\" name=\"sim_user\" value=\"{sub}\" data-user=\"{sub}\">{name} <small>{sub} · {groups}</small></button>\n",
            sub = html_escape(&user.sub),
            name = html_escape(&user.name),
            groups = html_escape(&groups),
        ));
    }
    let warning = unknown
        .map(|u| {
            format!(
                "<p role=\"alert\">No configured user {:?}; pick one below.</p>",
                html_escape(u)
            )
        })
        .unwrap_or_default();
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in (nodeshell simulator)</title>\n\
         <style>body{{font-family:sans-serif;max-width:28rem;margin:4rem auto}}button{{display:block;width:100%;margin:.5rem 0;padding:.6rem;text-align:left}}</style></head>\n\
         <body><h1>Sign in</h1><p>The simulator's issuer signs you in as a configured test user for <code>{client}</code>.</p>\n{warning}\
         <form method=\"get\" action=\"/authorize\">\n{hidden}{buttons}</form></body></html>\n",
        client = html_escape(&request.client_id),
    );
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(page),
    )
        .into_response()
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

async fn token_form(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(params): Form<HashMap<String, String>>,
) -> Response {
    token_response(&shared, authorization(&headers), &params)
}

async fn token_query(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    token_response(&shared, authorization(&headers), &params)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::atomic::AtomicU64;
    use std::sync::{Arc, Mutex, RwLock};

    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use serde_json::Value;
    use tokio_util::sync::CancellationToken;
    use tower::ServiceExt;

    use super::super::config::{SimConfig, TestUser};
    use super::super::jwt::KeyRing;
    use super::super::login::{CodeBook, s256_challenge};
    use super::super::state::{Shared, SimUrls, lock};

    const ISSUER: &str = "http://127.0.0.1:1";
    const CALLBACK: &str = "http://127.0.0.1:8080/callback";
    const VERIFIER: &str = "a-verifier-of-at-least-forty-three-characters-long";
    const GATEWAY: &str = "nodeshell-gateway";
    const SECRET: &str = "gateway-secret";

    fn shared(auto_login: Option<&str>) -> Arc<Shared> {
        shared_with(auto_login, |_| {})
    }

    fn shared_with(auto_login: Option<&str>, knobs: impl FnOnce(&mut SimConfig)) -> Arc<Shared> {
        let mut config = SimConfig::for_tests();
        config.issuer.client_id = "nodeshell-dev".to_string();
        config.issuer.auto_login = auto_login.map(str::to_string);
        config
            .issuer
            .clients
            .push(super::super::config::ClientRegistration {
                client_id: GATEWAY.to_string(),
                client_secret: Some(SECRET.to_string()),
            });
        config.users.push(TestUser {
            sub: "demo".to_string(),
            email: "demo@example.com".to_string(),
            name: "Demo <User>".to_string(),
            groups: vec!["platform-admins".to_string()],
        });
        knobs(&mut config);
        Arc::new(Shared {
            config,
            urls: SimUrls {
                issuer: ISSUER.to_string(),
                sts: String::new(),
                ssm: String::new(),
                messages: String::new(),
                kms: String::new(),
            },
            keys: RwLock::new(KeyRing::generate().unwrap()),
            credentials: Mutex::new(HashMap::new()),
            instances: Mutex::new(BTreeMap::new()),
            sessions: Mutex::new(HashMap::new()),
            calls: Mutex::new(Vec::new()),
            ordinal: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
            codes: Mutex::new(CodeBook::default()),
            refresh_tokens: Mutex::new(super::super::clients::RefreshBook::default()),
            disabled_users: Mutex::new(std::collections::HashSet::new()),
            idp_unreachable: std::sync::atomic::AtomicBool::new(false),
            trust_policies: Mutex::new(HashMap::new()),
            kms: super::super::kms::KmsKeys::generate(&super::super::config::SimConfig::default())
                .unwrap(),
            preferences: Mutex::new(Default::default()),
        })
    }

    fn authorize_uri(extra: &[(&str, &str)]) -> String {
        let challenge = s256_challenge(VERIFIER);
        let mut pairs = vec![
            ("response_type", "code"),
            ("client_id", "nodeshell-dev"),
            ("redirect_uri", CALLBACK),
            ("scope", "openid profile email groups"),
            ("state", "st-1"),
            ("nonce", "nonce-1"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        pairs.extend_from_slice(extra);
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        format!("/authorize?{query}")
    }

    async fn send(shared: &Arc<Shared>, request: Request<Body>) -> (StatusCode, HeaderMapText) {
        let response = super::router(shared.clone())
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            HeaderMapText {
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            },
        )
    }

    struct HeaderMapText {
        headers: HashMap<String, String>,
        body: String,
    }

    impl HeaderMapText {
        fn json(&self) -> Value {
            serde_json::from_str(&self.body).unwrap()
        }
        fn location_params(&self) -> HashMap<String, String> {
            let location = url::Url::parse(&self.headers["location"]).unwrap();
            location.query_pairs().into_owned().collect()
        }
    }

    fn get(uri: &str) -> Request<Body> {
        Request::get(uri).body(Body::empty()).unwrap()
    }

    fn token_request(pairs: &[(&str, &str)]) -> Request<Body> {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        Request::post("/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ORIGIN, "http://127.0.0.1:8080")
            .body(Body::from(body))
            .unwrap()
    }

    fn exchange<'a>(code: &'a str, verifier: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", CALLBACK),
            ("client_id", "nodeshell-dev"),
            ("code_verifier", verifier),
        ]
    }

    async fn login_code(shared: &Arc<Shared>) -> String {
        let (status, answer) = send(shared, get(&authorize_uri(&[]))).await;
        assert_eq!(status, StatusCode::FOUND, "{}", answer.body);
        let params = answer.location_params();
        assert_eq!(params["state"], "st-1");
        params["code"].clone()
    }

    fn claims(id_token: &str) -> Value {
        let payload = id_token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn auto_login_redirects_and_the_code_buys_an_id_token_with_the_nonce() {
        let shared = shared(Some("demo"));
        let code = login_code(&shared).await;
        let (status, answer) = send(&shared, token_request(&exchange(&code, VERIFIER))).await;
        assert_eq!(status, StatusCode::OK, "{}", answer.body);
        // No page script of another origin may read the tokens (crossOriginToken is off).
        assert!(!answer.headers.contains_key("access-control-allow-origin"));
        assert_eq!(answer.headers["cache-control"], "no-store");
        assert!(
            answer.json().get("refresh_token").is_none(),
            "a public client gets no refresh token"
        );
        let body = answer.json();
        assert_eq!(body["token_type"], "Bearer");
        let claims = claims(body["id_token"].as_str().unwrap());
        assert_eq!(claims["sub"], "demo");
        assert_eq!(claims["aud"], "nodeshell-dev");
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["nonce"], "nonce-1");
        assert_eq!(claims["groups"][0], "platform-admins");
    }

    #[tokio::test]
    async fn a_code_is_single_use() {
        let shared = shared(Some("demo"));
        let code = login_code(&shared).await;
        let (first, _) = send(&shared, token_request(&exchange(&code, VERIFIER))).await;
        assert_eq!(first, StatusCode::OK);
        let (second, answer) = send(&shared, token_request(&exchange(&code, VERIFIER))).await;
        assert_eq!(second, StatusCode::BAD_REQUEST);
        assert_eq!(answer.json()["error"], "invalid_grant");
        assert!(
            answer.json()["error_description"]
                .as_str()
                .unwrap()
                .contains("already redeemed"),
            "{}",
            answer.body
        );
    }

    #[tokio::test]
    async fn a_wrong_verifier_or_redirect_uri_is_refused() {
        let shared = shared(Some("demo"));
        let code = login_code(&shared).await;
        let wrong = "b".repeat(50);
        let (status, answer) = send(&shared, token_request(&exchange(&code, &wrong))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.json()["error"], "invalid_grant");
        assert!(answer.body.contains("code_verifier"), "{}", answer.body);

        let code = login_code(&shared).await;
        let mut moved = exchange(&code, VERIFIER);
        moved[2] = ("redirect_uri", "http://127.0.0.1:8080/other");
        let (status, answer) = send(&shared, token_request(&moved)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(answer.body.contains("redirect_uri"), "{}", answer.body);

        let (status, answer) = send(
            &shared,
            token_request(&[("grant_type", "client_credentials")]),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.json()["error"], "unsupported_grant_type");
    }

    #[tokio::test]
    async fn authorize_refuses_foreign_redirects_here_and_bad_pkce_by_redirect() {
        let shared = shared(Some("demo"));
        let (status, answer) = send(
            &shared,
            get(&authorize_uri(&[]).replace("127.0.0.1%3A8080", "evil.example")),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.json()["error"], "invalid_request");
        assert!(!answer.headers.contains_key("location"));

        let uri = authorize_uri(&[]).replace("S256", "plain");
        let (status, answer) = send(&shared, get(&uri)).await;
        assert_eq!(status, StatusCode::FOUND);
        let params = answer.location_params();
        assert_eq!(params["error"], "invalid_request");
        assert_eq!(params["state"], "st-1");
        assert!(!params.contains_key("code"));
    }

    #[tokio::test]
    async fn without_auto_login_a_picker_page_lists_the_users() {
        let shared = shared(None);
        let (status, answer) = send(&shared, get(&authorize_uri(&[]))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(answer.headers["content-type"].starts_with("text/html"));
        assert!(answer.body.contains("value=\"alice\""), "{}", answer.body);
        assert!(answer.body.contains("Demo &lt;User&gt;"), "{}", answer.body);
        assert!(answer.body.contains("name=\"nonce\" value=\"nonce-1\""));
        // Choosing a user resubmits the same request with sim_user.
        let (status, answer) = send(&shared, get(&authorize_uri(&[("sim_user", "alice")]))).await;
        assert_eq!(status, StatusCode::FOUND);
        let code = answer.location_params()["code"].clone();
        let (_, answer) = send(&shared, token_request(&exchange(&code, VERIFIER))).await;
        assert_eq!(
            claims(answer.json()["id_token"].as_str().unwrap())["sub"],
            "alice"
        );
    }

    async fn confidential_code(shared: &Arc<Shared>) -> String {
        let uri = authorize_uri(&[]).replace("nodeshell-dev", GATEWAY);
        let (status, answer) = send(shared, get(&uri)).await;
        assert_eq!(status, StatusCode::FOUND, "{}", answer.body);
        answer.location_params()["code"].clone()
    }

    fn confidential_exchange(code: &str) -> Vec<(&str, &str)> {
        let mut pairs = exchange(code, VERIFIER);
        pairs[3] = ("client_id", GATEWAY);
        pairs
    }

    fn with_basic(mut request: Request<Body>, secret: &str) -> Request<Body> {
        let value = format!("Basic {}", STANDARD.encode(format!("{GATEWAY}:{secret}")));
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, value.parse().unwrap());
        request
    }

    #[tokio::test]
    async fn a_confidential_client_needs_its_secret_at_the_token_endpoint() {
        let shared = shared(Some("demo"));
        // No secret: invalid_client, 401, and the code is not spent by the refusal.
        let code = confidential_code(&shared).await;
        let (status, answer) = send(&shared, token_request(&confidential_exchange(&code))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", answer.body);
        assert_eq!(answer.json()["error"], "invalid_client");
        // A wrong secret by Basic: invalid_client with a Basic challenge (RFC 6749 §5.2).
        let request = with_basic(token_request(&confidential_exchange(&code)), "guess");
        let (status, answer) = send(&shared, request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", answer.body);
        assert_eq!(answer.json()["error"], "invalid_client");
        assert!(answer.headers["www-authenticate"].starts_with("Basic"));
        // The right secret by Basic: an id_token for the gateway and a refresh token.
        let request = with_basic(token_request(&confidential_exchange(&code)), SECRET);
        let (status, answer) = send(&shared, request).await;
        assert_eq!(status, StatusCode::OK, "{}", answer.body);
        let body = answer.json();
        assert_eq!(claims(body["id_token"].as_str().unwrap())["aud"], GATEWAY);
        assert!(
            body["refresh_token"]
                .as_str()
                .is_some_and(|t| t.len() >= 32)
        );
        // client_secret_post works too.
        let code = confidential_code(&shared).await;
        let mut pairs = confidential_exchange(&code);
        pairs.push(("client_secret", SECRET));
        let (status, answer) = send(&shared, token_request(&pairs)).await;
        assert_eq!(status, StatusCode::OK, "{}", answer.body);
    }

    #[tokio::test]
    async fn refresh_gives_a_fresh_id_token_until_the_user_is_disabled() {
        let shared = shared(Some("demo"));
        let code = confidential_code(&shared).await;
        let request = with_basic(token_request(&confidential_exchange(&code)), SECRET);
        let (_, answer) = send(&shared, request).await;
        let refresh = answer.json()["refresh_token"].as_str().unwrap().to_string();
        let grant = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ];
        let (status, answer) = send(&shared, with_basic(token_request(&grant), SECRET)).await;
        assert_eq!(status, StatusCode::OK, "{}", answer.body);
        assert_eq!(
            claims(answer.json()["id_token"].as_str().unwrap())["sub"],
            "demo"
        );
        // Without the secret the refresh token is worth nothing.
        let mut public = grant.to_vec();
        public.push(("client_id", GATEWAY));
        let (status, _) = send(&shared, token_request(&public)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        lock(&shared.disabled_users).insert("demo".to_string());
        let (status, answer) = send(&shared, with_basic(token_request(&grant), SECRET)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.json()["error"], "invalid_grant");
        assert!(answer.body.contains("disabled"), "{}", answer.body);
    }

    #[tokio::test]
    async fn discovery_advertises_the_code_flow_and_answers_preflights() {
        let shared = shared(None);
        let (status, answer) = send(&shared, get("/.well-known/openid-configuration")).await;
        assert_eq!(status, StatusCode::OK);
        let doc = answer.json();
        assert_eq!(doc["authorization_endpoint"], format!("{ISSUER}/authorize"));
        assert_eq!(doc["token_endpoint"], format!("{ISSUER}/token"));
        assert_eq!(doc["code_challenge_methods_supported"][0], "S256");
        assert!(
            doc["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&Value::from("authorization_code"))
        );
        assert_eq!(answer.headers["access-control-allow-origin"], "*");
        let preflight = Request::builder()
            .method("OPTIONS")
            .uri("/keys")
            .header(header::ORIGIN, "http://127.0.0.1:8080")
            .header("access-control-request-method", "GET")
            .body(Body::empty())
            .unwrap();
        let (status, answer) = send(&shared, preflight).await;
        assert!(status.is_success(), "{status}");
        assert_eq!(answer.headers["access-control-allow-origin"], "*");
        assert!(answer.headers["access-control-allow-methods"].contains("GET"));
        assert_eq!(answer.headers["access-control-max-age"], "600");
        let (_, keys) = send(&shared, get("/keys")).await;
        assert_eq!(keys.headers["access-control-allow-origin"], "*");
    }

    #[tokio::test]
    async fn the_password_grant_is_a_knob_off_by_default() {
        let direct = [("sub", "alice"), ("aud", "anything")];
        let shared = shared(None);
        let (status, answer) = send(&shared, token_request(&direct)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{}", answer.body);
        assert_eq!(answer.json()["error"], "invalid_request");
        assert!(answer.body.contains("testPasswordGrant"), "{}", answer.body);
        let password = [("grant_type", "password"), ("username", "alice")];
        let (status, answer) = send(&shared, token_request(&password)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.json()["error"], "unsupported_grant_type");
        let (_, doc) = send(&shared, get("/.well-known/openid-configuration")).await;
        assert!(
            !doc.json()["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&Value::from("password"))
        );

        let shared = shared_with(None, |c| c.issuer.test_password_grant = true);
        let (status, answer) = send(&shared, token_request(&direct)).await;
        assert_eq!(status, StatusCode::OK, "{}", answer.body);
        assert_eq!(
            claims(answer.json()["id_token"].as_str().unwrap())["aud"],
            "anything"
        );
        let (status, _) = send(&shared, token_request(&password)).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_cross_origin_token_endpoint_is_a_knob_off_by_default() {
        let preflight = || {
            Request::builder()
                .method("OPTIONS")
                .uri("/token")
                .header(header::ORIGIN, "http://127.0.0.1:8080")
                .header("access-control-request-method", "POST")
                .body(Body::empty())
                .unwrap()
        };
        let (status, answer) = send(&shared(None), preflight()).await;
        assert!(!status.is_success(), "{status}");
        assert!(!answer.headers.contains_key("access-control-allow-origin"));
        let open = shared_with(Some("demo"), |c| c.issuer.cross_origin_token = true);
        let (status, answer) = send(&open, preflight()).await;
        assert!(status.is_success(), "{status}");
        assert_eq!(answer.headers["access-control-allow-origin"], "*");
        let code = login_code(&open).await;
        let (_, answer) = send(&open, token_request(&exchange(&code, VERIFIER))).await;
        assert_eq!(answer.headers["access-control-allow-origin"], "*");
    }
}

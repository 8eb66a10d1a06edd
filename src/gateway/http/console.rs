//! The web console: the single-page app built from `web/` (embedded at build time by
//! `build.rs`), served on the API's listener with strict security headers, and
//! `/console/config.json`, which tells it where to sign in and out (through the gateway).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::AppState;
use crate::gateway::config::GatewayConfig;
use crate::gateway::error::{ApiError, ErrorCode};

include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

use crate::gateway::access::login::{LOGIN_PATH, LOGOUT_PATH};

/// Paths answered with the console's `index.html`: the app and deep links (the app routes
/// with `#/…`, so these only matter for bookmarks).
pub const PAGES: [&str; 4] = ["/", "/index.html", "/nodes", "/sessions"];

/// One embedded file of `web/dist/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleAsset {
    /// Path under `web/dist/`, `/`-separated (`index.html`, `assets/console.js`).
    pub path: &'static str,
    /// `Content-Type` served.
    pub content_type: &'static str,
    /// The file's bytes.
    pub bytes: &'static [u8],
}

/// The embedded file at `path`, if any.
pub fn asset(path: &str) -> Option<ConsoleAsset> {
    CONSOLE_ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|&(path, content_type, bytes)| ConsoleAsset {
            path,
            content_type,
            bytes,
        })
}

/// Whether this binary holds the built console (false: only the "run `make web`" page).
pub fn is_built() -> bool {
    CONSOLE_BUILT
}

/// What the console may read about signing in: the gateway's own routes (the console never
/// talks to the issuer and never holds a token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleConfig {
    /// Where a sign-in starts; `None` when the gateway has no client secret configured.
    pub sign_in: Option<&'static str>,
    /// Where the console signs out (POST).
    pub sign_out: &'static str,
    /// The header every cookie-authenticated write carries.
    pub csrf_header: &'static str,
}

impl ConsoleConfig {
    /// The console settings of a gateway configuration.
    pub fn of(config: &GatewayConfig) -> Self {
        Self {
            sign_in: config.login.as_ref().map(|_| LOGIN_PATH),
            sign_out: LOGOUT_PATH,
            csrf_header: "X-Nodeshell-Csrf",
        }
    }
}

/// `scheme://host[:port]` of `url`, or `None` when it is not an absolute http(s) URL.
pub fn origin_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return None;
    }
    let origin = parsed.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// The Content-Security-Policy of console responses: everything from this origin only (the
/// sign-in is a navigation through the gateway; no page script talks to the issuer).
// xterm.js writes its own <style> elements at run time, so inline styles stay allowed;
// scripts never are. 'wasm-unsafe-eval' lets the recording player (asciinema-player)
// compile its bundled WebAssembly terminal; it allows no JavaScript eval.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The routes of the console, merged into the API's router.
pub fn router() -> Router<AppState> {
    let mut router = Router::new();
    for page in PAGES {
        router = router.route(page, get(index));
    }
    router
        .route("/assets/{*file}", get(asset_file))
        .route("/console/config.json", get(config_json))
}

async fn index() -> Response {
    match asset("index.html") {
        Some(page) => secured(page.content_type, page.bytes, "no-cache"),
        None => not_found(),
    }
}

async fn asset_file(Path(file): Path<String>) -> Response {
    match asset(&format!("assets/{file}")) {
        Some(found) => secured(found.content_type, found.bytes, "no-cache"),
        None => not_found(),
    }
}

async fn config_json(State(state): State<AppState>) -> Response {
    let body = serde_json::to_vec(&ConsoleConfig::of(&state.access.config)).unwrap_or_default();
    secured("application/json", body, "no-store")
}

fn not_found() -> Response {
    let mut response = ApiError::new(
        ErrorCode::NotFound,
        "no such console file; reload the console (the gateway may have been upgraded)",
    )
    .into_response();
    add_security_headers(&mut response);
    response
}

fn secured(
    content_type: &'static str,
    body: impl Into<axum::body::Body>,
    cache: &'static str,
) -> Response {
    let mut response = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
        ],
        body.into(),
    )
        .into_response();
    add_security_headers(&mut response);
    response
}

fn add_security_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use crate::gateway::config::{GatewayArgs, parse_file};
    use crate::gateway::handover::LiveSide;
    use crate::gateway::metrics::GatewayMetrics;

    fn app() -> Router {
        let file = parse_file(
            "oidc: {issuerUrl: 'https://login.example.test:8443/realms/ops', clientId: console-test}\n",
        )
        .unwrap();
        let config = GatewayConfig::resolve(&GatewayArgs::default(), file).unwrap();
        // Nothing here talks to the apiserver; port 1 refuses connections anyway.
        let kube = kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap()))
            .unwrap();
        let state = crate::gateway::server::app_state(
            config,
            kube,
            LiveSide::none(),
            GatewayMetrics::default(),
        )
        .unwrap();
        crate::gateway::http::router(state)
    }

    async fn get(app: &Router, path: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let response = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap();
        (status, headers, body.to_vec())
    }

    fn assert_secured(headers: &axum::http::HeaderMap, path: &str) {
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(
            csp.contains("script-src 'self' 'wasm-unsafe-eval';"),
            "{path}: scripts from this origin only, WebAssembly for the player, no eval: {csp}"
        );
        assert!(!csp.contains("'unsafe-eval'"), "{path}: {csp}");
        assert!(
            !csp.contains("script-src 'self' 'unsafe-inline'"),
            "{path}: {csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(
            csp.contains("connect-src 'self';"),
            "{path}: no page script talks to the issuer: {csp}"
        );
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "{path}");
    }

    #[tokio::test]
    async fn pages_serve_index_html_with_the_security_headers() {
        let app = app();
        let index = asset("index.html").expect("index.html is always embedded");
        for path in PAGES {
            let (status, headers, body) = get(&app, path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
            assert_eq!(body, index.bytes, "{path} serves index.html");
            assert_secured(&headers, path);
        }
        let text = String::from_utf8_lossy(index.bytes);
        if is_built() {
            assert!(text.contains("/assets/console.js"), "{text}");
        } else {
            assert!(text.contains("make web"), "{text}");
        }
    }

    #[tokio::test]
    async fn config_json_names_the_gateways_sign_in_routes_and_no_issuer() {
        let (status, headers, body) = get(&app(), "/console/config.json").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_secured(&headers, "/console/config.json");
        let config: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            config,
            serde_json::json!({
                "signIn": null,
                "signOut": "/auth/logout",
                "csrfHeader": "X-Nodeshell-Csrf",
            }),
            "no client secret configured here: no sign-in"
        );
        assert!(!String::from_utf8_lossy(&body).contains("login.example.test"));
    }

    #[tokio::test]
    async fn assets_are_served_and_unknown_files_are_json_404s() {
        let app = app();
        if let Some(script) = asset("assets/console.js") {
            let (status, headers, body) = get(&app, "/assets/console.js").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers[header::CONTENT_TYPE], script.content_type);
            assert_eq!(body, script.bytes);
            assert_secured(&headers, "/assets/console.js");
        }
        let (status, headers, body) = get(&app, "/assets/nope.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_secured(&headers, "/assets/nope.js");
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(error["code"], "E_NOT_FOUND");
        // API routes keep their JSON errors.
        let (status, _, body) = get(&app, "/api/v1/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(error["code"], "E_NOT_FOUND");
    }

    #[test]
    fn origin_is_scheme_host_and_port() {
        assert_eq!(
            origin_of("https://login.example.com/realms/ops").as_deref(),
            Some("https://login.example.com")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:41234").as_deref(),
            Some("http://127.0.0.1:41234")
        );
        assert_eq!(origin_of("not a url"), None);
        assert_eq!(origin_of("file:///etc/passwd"), None);
    }
}

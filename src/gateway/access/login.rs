//! The rules of the console's sign-in through the gateway (backend-for-frontend): sign-ins in
//! progress (state, nonce, PKCE verifier and the browser binding, kept here, single use,
//! short-lived, bounded), the authorization request, the cookies, and the CSRF check of
//! cookie-authenticated writes. No I/O: the clock is a parameter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::gateway::error::{ApiError, ErrorCode, RETRY_AFTER};

/// The header a cookie-authenticated write must carry (a page script can set it; a form or
/// link on another site cannot).
pub const CSRF_HEADER: &str = "x-nodeshell-csrf";
/// Scopes asked of the issuer at sign-in (`offline_access` is not asked: issuers that need
/// it for refresh tokens are configured to give them to this confidential client).
pub const SCOPES: &str = "openid profile email groups";
/// Path of the route that starts a sign-in.
pub const LOGIN_PATH: &str = "/auth/login";
/// Path of the route that ends a console session.
pub const LOGOUT_PATH: &str = "/auth/logout";
/// Where the callback sends the browser: the console, with a marker that tells it the
/// sign-in just happened (so a cookie the browser refused is explained, not looped on).
pub const AFTER_SIGN_IN: &str = "/?signed-in=1";
/// Path of the route the issuer sends the browser back to.
pub const CALLBACK_PATH: &str = "/auth/callback";

/// A random URL-safe string from `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}

/// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The name of the console session cookie: `__Host-` prefixed under https (RFC 6265bis: then
/// only settable with Secure, Path=/ and no Domain).
pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-nodeshell-session"
    } else {
        "nodeshell-session"
    }
}

/// The name of the cookie that binds a sign-in to the browser that started it.
pub fn binding_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Secure-nodeshell-login"
    } else {
        "nodeshell-login"
    }
}

/// `Set-Cookie` of the console session: HttpOnly (no script reads it), SameSite=Strict (no
/// other site's page sends it), Path=/, Secure under https.
pub fn session_cookie(value: &str, secure: bool) -> String {
    set_cookie(
        session_cookie_name(secure),
        value,
        "Strict",
        "/",
        None,
        secure,
    )
}

/// `Set-Cookie` that removes the console session cookie.
pub fn clear_session_cookie(secure: bool) -> String {
    set_cookie(
        session_cookie_name(secure),
        "",
        "Strict",
        "/",
        Some(0),
        secure,
    )
}

/// `Set-Cookie` of the sign-in binding: Lax, since the issuer's redirect back is a top-level
/// navigation from another site; only sent to the callback; gone after `ttl`.
pub fn binding_cookie(value: &str, secure: bool, ttl: Duration) -> String {
    let name = binding_cookie_name(secure);
    set_cookie(
        name,
        value,
        "Lax",
        CALLBACK_PATH,
        Some(ttl.as_secs()),
        secure,
    )
}

/// `Set-Cookie` that removes the sign-in binding.
pub fn clear_binding_cookie(secure: bool) -> String {
    set_cookie(
        binding_cookie_name(secure),
        "",
        "Lax",
        CALLBACK_PATH,
        Some(0),
        secure,
    )
}

/// One `Set-Cookie` value: always HttpOnly; `Max-Age` when given; Secure under https.
fn set_cookie(
    name: &str,
    value: &str,
    same_site: &str,
    path: &str,
    max_age: Option<u64>,
    secure: bool,
) -> String {
    let mut cookie = format!("{name}={value}; HttpOnly; SameSite={same_site}; Path={path}");
    if let Some(seconds) = max_age {
        cookie.push_str(&format!("; Max-Age={seconds}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// The value of cookie `name` in `Cookie` header values.
pub fn cookie_value<'a>(headers: impl IntoIterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    headers
        .into_iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// What the authorization request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeRequest<'a> {
    /// The issuer's authorization endpoint.
    pub endpoint: &'a str,
    /// Our client id.
    pub client_id: &'a str,
    /// Our redirect URL.
    pub redirect_url: &'a str,
    /// Space-separated scopes.
    pub scopes: &'a str,
    /// The sign-in's state.
    pub state: &'a str,
    /// The sign-in's nonce.
    pub nonce: &'a str,
    /// The PKCE S256 challenge.
    pub challenge: &'a str,
}

/// The authorization request URL: code flow, PKCE S256, state and nonce (OIDC Core 3.1.2.1).
pub fn authorize_url(request: &AuthorizeRequest<'_>) -> Result<String, ApiError> {
    let mut url = url::Url::parse(request.endpoint).map_err(|e| {
        ApiError::new(
            ErrorCode::Internal,
            format!(
                "the issuer's authorization endpoint {:?} is not a URL ({e}); check the issuer's discovery document",
                request.endpoint
            ),
        )
    })?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", request.client_id)
        .append_pair("redirect_uri", request.redirect_url)
        .append_pair("scope", request.scopes)
        .append_pair("state", request.state)
        .append_pair("nonce", request.nonce)
        .append_pair("code_challenge", request.challenge)
        .append_pair("code_challenge_method", "S256");
    Ok(url.into())
}

/// Why a cookie-authenticated write is refused, if it is: its `Origin` must be one of
/// `allowed` and it must carry [`CSRF_HEADER`] (a cross-site form cannot set a header, and a
/// cross-site script that could would fail CORS).
pub fn csrf_refusal(
    origin: Option<&str>,
    marker: Option<&str>,
    allowed: &[String],
) -> Option<ApiError> {
    let origin_ok = origin.is_some_and(|o| {
        let o = o.trim_end_matches('/');
        allowed.iter().any(|a| a == o)
    });
    if !origin_ok {
        return Some(
            ApiError::new(
                ErrorCode::Csrf,
                format!(
                    "a write with the console's cookie must come from the console's own page (Origin {}); reload the console from the gateway's address, or add that origin to allowedOrigins",
                    origin.unwrap_or("(none)")
                ),
            )
            .with("origin", origin.unwrap_or_default()),
        );
    }
    if marker.is_none_or(|m| m.trim().is_empty()) {
        return Some(ApiError::new(
            ErrorCode::Csrf,
            format!(
                "a write with the console's cookie needs the header {CSRF_HEADER}: 1 (the console sends it; a script of your own must too, or use Authorization: Bearer)"
            ),
        ));
    }
    None
}

/// A sign-in started at `/auth/login`, waiting for the issuer's redirect back.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingLogin {
    /// The nonce the id_token must carry.
    pub nonce: String,
    /// The PKCE verifier the token request proves.
    pub verifier: String,
    /// The value of the binding cookie of the browser that started it.
    pub binding: String,
    /// Set when `kubectl nodeshell login` started it: where the sign-in is handed over.
    pub cli: Option<super::cli_login::CliTarget>,
    started: Instant,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin").finish_non_exhaustive()
    }
}

/// What `/auth/login` sends the browser away with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginStart {
    /// The state parameter.
    pub state: String,
    /// The nonce parameter.
    pub nonce: String,
    /// The PKCE challenge.
    pub challenge: String,
    /// The binding cookie's value.
    pub binding: String,
}

/// Sign-ins in progress on this replica: single use, `ttl`-lived, at most `max`.
#[derive(Clone, Debug)]
pub struct LoginBook {
    pending: Arc<Mutex<HashMap<String, PendingLogin>>>,
    ttl: Duration,
    max: usize,
}

// === impl LoginBook ===

impl LoginBook {
    /// An empty book.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            pending: Arc::default(),
            ttl,
            max,
        }
    }

    /// How long a sign-in may take.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PendingLogin>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a sign-in; refused when `max` are already in progress.
    pub fn begin(&self, now: Instant) -> Result<LoginStart, ApiError> {
        self.begin_for(now, None)
    }

    /// Starts a sign-in, for the command line when `cli` is set.
    pub fn begin_for(
        &self,
        now: Instant,
        cli: Option<super::cli_login::CliTarget>,
    ) -> Result<LoginStart, ApiError> {
        let mut pending = self.lock();
        let ttl = self.ttl;
        pending.retain(|_, p| now.duration_since(p.started) < ttl);
        if pending.len() >= self.max {
            // Room comes back when the oldest one expires.
            let oldest = pending
                .values()
                .map(|p| now.duration_since(p.started))
                .max()
                .unwrap_or_default();
            let wait = ttl.saturating_sub(oldest).as_secs().max(1);
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "{} sign-ins are already in progress on this gateway; try again in {wait} s",
                    self.max
                ),
            )
            .with(RETRY_AFTER, wait));
        }
        let login = PendingLogin {
            nonce: random_token(24),
            verifier: random_token(48),
            binding: random_token(24),
            cli,
            started: now,
        };
        let state = random_token(24);
        let start = LoginStart {
            state: state.clone(),
            nonce: login.nonce.clone(),
            challenge: pkce_challenge(&login.verifier),
            binding: login.binding.clone(),
        };
        pending.insert(state, login);
        Ok(start)
    }

    /// Takes the sign-in of `state` (single use) if it is known, young enough and was started
    /// by the browser presenting `binding`.
    pub fn finish(
        &self,
        state: Option<&str>,
        binding: Option<&str>,
        now: Instant,
    ) -> Result<PendingLogin, ApiError> {
        let refused = |why: &str| {
            ApiError::new(
                ErrorCode::Auth,
                format!("sign-in refused: {why}; open the console again to sign in"),
            )
        };
        let state = state
            .filter(|s| !s.is_empty())
            .ok_or_else(|| refused("the issuer's answer has no state"))?;
        let login = self
            .lock()
            .remove(state)
            .ok_or_else(|| refused("unknown or already used state"))?;
        if now.duration_since(login.started) >= self.ttl {
            return Err(refused("the sign-in took too long"));
        }
        if binding != Some(login.binding.as_str()) {
            return Err(refused("the sign-in was started in another browser"));
        }
        Ok(login)
    }

    /// Sign-ins in progress.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_under_https() {
        let c = session_cookie("abc", true);
        assert_eq!(
            c,
            "__Host-nodeshell-session=abc; HttpOnly; SameSite=Strict; Path=/; Secure"
        );
        let c = session_cookie("abc", false);
        assert!(c.starts_with("nodeshell-session=abc;") && !c.contains("Secure"));
        assert!(clear_session_cookie(true).contains("Max-Age=0"));
        let b = binding_cookie("xyz", true, Duration::from_secs(600));
        assert!(b.contains("SameSite=Lax") && b.contains("Path=/auth/callback"));
        assert!(b.contains("HttpOnly") && b.contains("Secure") && b.contains("Max-Age=600"));
        assert_eq!(
            cookie_value(["a=1; nodeshell-session=s1", "x=2"], "nodeshell-session"),
            Some("s1")
        );
        assert_eq!(
            cookie_value(["nodeshell-session="], "nodeshell-session"),
            None
        );
        assert_eq!(cookie_value(["other=1"], "nodeshell-session"), None);
    }

    #[test]
    fn authorize_url_carries_code_pkce_state_and_nonce() {
        let url = authorize_url(&AuthorizeRequest {
            endpoint: "https://idp.example/authorize?tenant=1",
            client_id: "nodeshell",
            redirect_url: "https://ns.example/auth/callback",
            scopes: "openid profile",
            state: "st",
            nonce: "no",
            challenge: "ch",
        })
        .unwrap();
        let parsed = url::Url::parse(&url).unwrap();
        let q: HashMap<_, _> = parsed.query_pairs().into_owned().collect();
        assert_eq!(q["tenant"], "1");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["redirect_uri"], "https://ns.example/auth/callback");
        assert_eq!((q["state"].as_str(), q["nonce"].as_str()), ("st", "no"));
        assert!(
            authorize_url(&AuthorizeRequest {
                endpoint: "not a url",
                ..AuthorizeRequest {
                    endpoint: "",
                    client_id: "",
                    redirect_url: "",
                    scopes: "",
                    state: "",
                    nonce: "",
                    challenge: ""
                }
            })
            .is_err()
        );
    }

    #[test]
    fn csrf_needs_an_allowed_origin_and_the_header() {
        let allowed = vec!["https://console.example".to_string()];
        assert!(csrf_refusal(Some("https://console.example"), Some("1"), &allowed).is_none());
        let e = csrf_refusal(Some("https://evil.example"), Some("1"), &allowed).unwrap();
        assert_eq!(e.code, ErrorCode::Csrf);
        assert!(e.message.contains("evil.example"), "{}", e.message);
        let e = csrf_refusal(None, Some("1"), &allowed).unwrap();
        assert_eq!(e.code, ErrorCode::Csrf);
        let e = csrf_refusal(Some("https://console.example"), None, &allowed).unwrap();
        assert!(e.message.contains(CSRF_HEADER), "{}", e.message);
        assert!(csrf_refusal(Some("https://console.example"), Some(" "), &allowed).is_some());
    }

    #[test]
    fn a_sign_in_is_single_use_bound_short_lived_and_bounded() {
        let book = LoginBook::new(Duration::from_secs(600), 2);
        let t0 = Instant::now();
        let a = book.begin(t0).unwrap();
        assert_eq!(a.challenge, pkce_challenge(&book.lock()[&a.state].verifier));
        // Another browser (another binding) cannot finish it, and the try spends it.
        assert!(book.finish(Some(&a.state), Some("other"), t0).is_err());
        assert!(book.finish(Some(&a.state), Some(&a.binding), t0).is_err());
        let b = book.begin(t0).unwrap();
        let got = book.finish(Some(&b.state), Some(&b.binding), t0).unwrap();
        assert_eq!(got.nonce, b.nonce);
        let replay = book
            .finish(Some(&b.state), Some(&b.binding), t0)
            .unwrap_err();
        assert!(
            replay.message.contains("already used"),
            "{}",
            replay.message
        );
        assert!(book.finish(None, Some(&b.binding), t0).is_err());
        // Too old.
        let c = book.begin(t0).unwrap();
        let late = t0 + Duration::from_secs(600);
        assert!(book.finish(Some(&c.state), Some(&c.binding), late).is_err());
        // Bounded: two in progress, the third is refused until they expire.
        let _ = book.begin(t0).unwrap();
        let _ = book.begin(t0).unwrap();
        assert_eq!(book.len(), 2);
        // The third is told to come back when the oldest expires (429, not a server fault).
        let full = book.begin(t0 + Duration::from_secs(100)).unwrap_err();
        assert_eq!(full.code, ErrorCode::RateLimited);
        assert_eq!(full.extra.get(RETRY_AFTER), Some(&serde_json::json!(500)));
        assert!(
            full.message.contains("try again in 500 s"),
            "{}",
            full.message
        );
        assert!(book.begin(late).is_ok(), "expired ones make room");
        assert_eq!(book.len(), 1);
    }
}

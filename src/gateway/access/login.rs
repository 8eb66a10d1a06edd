//! The rules of the console's sign-in through the gateway (backend-for-frontend): sign-ins in
//! progress (state, nonce, PKCE verifier and the browser binding, sealed into the state and
//! the binding cookie with this replica's key: single use, short-lived, nothing stored per
//! start), the authorization request, the cookies, and the CSRF check of
//! cookie-authenticated writes. No I/O: the clock is a parameter.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::gateway::error::{ApiError, ErrorCode};

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
    /// Set when `kubectl nodeshell login` started it: where the sign-in is handed over.
    pub cli: Option<super::cli_login::CliTarget>,
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

/// Sign-ins in progress on this replica, kept in nothing but what the browser carries: the
/// `state` sent to the issuer holds a random seed, the start time and, for the command line,
/// its target, sealed with this replica's key (HMAC-SHA256); nonce, PKCE verifier and the
/// browser binding are derived from it with the same key. So starting a sign-in stores
/// nothing and no flood of starts can keep anyone else from signing in. What is kept is the
/// states already finished (single use), at most `max`, the oldest forgotten first (their
/// codes are spent at the issuer anyway).
#[derive(Clone)]
pub struct LoginBook {
    key: Arc<[u8; 64]>,
    origin: Instant,
    ttl: Duration,
    max: usize,
    used: Arc<Mutex<UsedStates>>,
}

impl std::fmt::Debug for LoginBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginBook")
            .field("ttl", &self.ttl)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

/// Finished sign-ins' states, oldest first.
#[derive(Debug, Default)]
struct UsedStates {
    order: std::collections::VecDeque<(String, Instant)>,
    set: std::collections::HashSet<String>,
}

/// What a sealed state carries.
#[derive(serde::Serialize, serde::Deserialize)]
struct Sealed {
    /// Random, so that no two sign-ins share their derived secrets.
    seed: String,
    /// Milliseconds from the book's creation to the start.
    at: u64,
    /// The command line's target, when it started the sign-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cli: Option<super::cli_login::CliTarget>,
}

type HmacSha256 = hmac::Hmac<Sha256>;

// === impl LoginBook ===

impl LoginBook {
    /// A book with a fresh random key: states it seals are valid only on this replica and
    /// for `ttl`; it remembers at most `max` finished states.
    pub fn new(ttl: Duration, max: usize) -> Self {
        // One SHA-256 block: HMAC uses a key of this size as it is.
        let mut key = [0u8; 64];
        rand::fill(&mut key[..]);
        Self {
            key: Arc::new(key),
            origin: Instant::now(),
            ttl,
            max,
            used: Arc::default(),
        }
    }

    /// How long a sign-in may take.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn mac(&self, purpose: &str, payload: &[u8]) -> HmacSha256 {
        use hmac::Mac;
        use hmac::digest::KeyInit;
        let mut mac = <HmacSha256 as KeyInit>::new(&(*self.key).into());
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac
    }

    fn derive(&self, purpose: &str, payload: &[u8]) -> String {
        use hmac::Mac;
        URL_SAFE_NO_PAD.encode(self.mac(purpose, payload).finalize().into_bytes())
    }

    /// Starts a sign-in.
    pub fn begin(&self, now: Instant) -> Result<LoginStart, ApiError> {
        self.begin_for(now, None)
    }

    /// Starts a sign-in, for the command line when `cli` is set. Stores nothing.
    pub fn begin_for(
        &self,
        now: Instant,
        cli: Option<super::cli_login::CliTarget>,
    ) -> Result<LoginStart, ApiError> {
        use hmac::Mac;
        let sealed = Sealed {
            seed: random_token(16),
            at: u64::try_from(now.saturating_duration_since(self.origin).as_millis())
                .unwrap_or(u64::MAX),
            cli,
        };
        let payload = serde_json::to_vec(&sealed).map_err(|e| {
            ApiError::new(ErrorCode::Internal, format!("cannot start a sign-in: {e}"))
        })?;
        let tag = self.mac("state", &payload).finalize().into_bytes();
        Ok(LoginStart {
            state: format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(&payload),
                URL_SAFE_NO_PAD.encode(tag)
            ),
            nonce: self.derive("nonce", &payload),
            challenge: pkce_challenge(&self.derive("verifier", &payload)),
            binding: self.derive("binding", &payload),
        })
    }

    /// Takes the sign-in of `state` (single use) if this replica sealed it, it is young
    /// enough and it was started by the browser presenting `binding`.
    pub fn finish(
        &self,
        state: Option<&str>,
        binding: Option<&str>,
        now: Instant,
    ) -> Result<PendingLogin, ApiError> {
        use hmac::Mac;
        let refused = |why: &str| {
            ApiError::new(
                ErrorCode::Auth,
                format!("sign-in refused: {why}; open the console again to sign in"),
            )
        };
        let state = state
            .filter(|s| !s.is_empty())
            .ok_or_else(|| refused("the issuer's answer has no state"))?;
        let unknown = || refused("unknown or already used state");
        let (payload, tag) = state.split_once('.').ok_or_else(unknown)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| unknown())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| unknown())?;
        self.mac("state", &payload)
            .verify_slice(&tag)
            .map_err(|_| unknown())?;
        let sealed: Sealed = serde_json::from_slice(&payload).map_err(|_| unknown())?;
        let started = self
            .origin
            .checked_add(Duration::from_millis(sealed.at))
            .ok_or_else(unknown)?;
        if now.saturating_duration_since(started) >= self.ttl {
            return Err(refused("the sign-in took too long"));
        }
        // Spent by any try, the right browser's or not.
        if !self.mark_used(state, now) {
            return Err(unknown());
        }
        let binding = binding
            .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
            .unwrap_or_default();
        if self
            .mac("binding", &payload)
            .verify_slice(&binding)
            .is_err()
        {
            return Err(refused("the sign-in was started in another browser"));
        }
        Ok(PendingLogin {
            nonce: self.derive("nonce", &payload),
            verifier: self.derive("verifier", &payload),
            cli: sealed.cli,
        })
    }

    /// Records `state` as used; false if it already was. Forgets states older than the
    /// lifetime (they are refused as too old anyway), then the oldest beyond `max`.
    fn mark_used(&self, state: &str, now: Instant) -> bool {
        let mut used = self.used();
        if used.set.contains(state) {
            return false;
        }
        while used.order.front().is_some_and(|(_, at)| {
            now.saturating_duration_since(*at) >= self.ttl || used.order.len() >= self.max
        }) {
            if let Some((old, _)) = used.order.pop_front() {
                used.set.remove(&old);
            }
        }
        used.order.push_back((state.to_string(), now));
        used.set.insert(state.to_string());
        true
    }

    /// Finished sign-ins remembered (to refuse their states again).
    pub fn len(&self) -> usize {
        self.used().order.len()
    }

    fn used(&self) -> std::sync::MutexGuard<'_, UsedStates> {
        self.used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether none is remembered.
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
        let q: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
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
    fn a_sign_in_is_single_use_bound_short_lived_and_stores_nothing_until_it_ends() {
        let book = LoginBook::new(Duration::from_secs(600), 2);
        let t0 = Instant::now();
        // Another browser (another binding) cannot finish it, and the try spends it.
        let spent = book.begin(t0).unwrap();
        assert!(book.finish(Some(&spent.state), Some("other"), t0).is_err());
        assert!(
            book.finish(Some(&spent.state), Some(&spent.binding), t0)
                .is_err()
        );
        let b = book.begin(t0).unwrap();
        assert!(book.finish(Some(&b.state), None, t0).is_err());
        // The right browser finishes it, once.
        let a = book.begin(t0).unwrap();
        let got = book.finish(Some(&a.state), Some(&a.binding), t0).unwrap();
        assert_eq!(a.challenge, pkce_challenge(&got.verifier));
        assert_eq!(got.nonce, a.nonce);
        assert!(got.cli.is_none());
        let replay = book
            .finish(Some(&a.state), Some(&a.binding), t0)
            .unwrap_err();
        assert!(
            replay.message.contains("already used"),
            "{}",
            replay.message
        );
        assert!(book.finish(None, Some(&a.binding), t0).is_err());
        // Too old.
        let c = book.begin(t0).unwrap();
        let late = t0 + Duration::from_secs(600);
        assert!(book.finish(Some(&c.state), Some(&c.binding), late).is_err());
        // Starts store nothing: a flood of them keeps nobody from signing in.
        let before = book.len();
        let starts: Vec<_> = (0..10_000).map(|_| book.begin(t0).unwrap()).collect();
        assert_eq!(book.len(), before, "a start adds nothing to the book");
        let last = starts.last().unwrap();
        assert!(
            book.finish(Some(&last.state), Some(&last.binding), t0)
                .is_ok()
        );
        // Every sign-in has its own secrets.
        assert_ne!(starts[0].nonce, starts[1].nonce);
        assert_ne!(starts[0].challenge, starts[1].challenge);
        assert_ne!(starts[0].binding, starts[1].binding);
        // Finished states are remembered up to the bound (2 here), the oldest forgotten.
        let d = &starts[2];
        assert!(book.finish(Some(&d.state), Some(&d.binding), t0).is_ok());
        assert_eq!(book.len(), 2);
    }

    #[test]
    fn a_state_is_sealed_by_this_replica_and_cannot_be_altered() {
        let book = LoginBook::new(Duration::from_secs(600), 10);
        let other = LoginBook::new(Duration::from_secs(600), 10);
        let t0 = Instant::now();
        let a = book.begin(t0).unwrap();
        // Another replica (another key) knows nothing of it.
        assert!(other.finish(Some(&a.state), Some(&a.binding), t0).is_err());
        // Changing the sealed part (e.g. the start time, to outlive the lifetime) breaks the seal.
        let (payload, tag) = a.state.split_once('.').unwrap();
        let mut sealed: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        sealed["at"] = serde_json::json!(u64::MAX / 2);
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&sealed).unwrap())
        );
        let e = book
            .finish(Some(&forged), Some(&a.binding), t0)
            .unwrap_err();
        assert!(e.message.contains("unknown"), "{}", e.message);
        for junk in ["", ".", "abc", "abc.def", "!!.!!"] {
            assert!(
                book.finish(Some(junk), Some(&a.binding), t0).is_err(),
                "{junk}"
            );
        }
        // A command-line target travels through the seal unchanged.
        let target = crate::gateway::access::cli_login::CliTarget {
            redirect_uri: "http://127.0.0.1:9/cb".into(),
            challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
            state: "cli-state".into(),
        };
        let b = book.begin_for(t0, Some(target.clone())).unwrap();
        let got = book.finish(Some(&b.state), Some(&b.binding), t0).unwrap();
        assert!(got.cli == Some(target));
    }
}

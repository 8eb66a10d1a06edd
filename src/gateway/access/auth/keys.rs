//! The issuer's signing keys: parsing a JWKS into verification keys, and a cache that
//! refreshes periodically and refetches (at most once per floor) when a token names a key id
//! it does not know, which is how key rotation reaches us between refreshes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::gateway::config::oidc::{IssuerCa, secure_or_loopback};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// The key families the gateway verifies with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA (RS256, RS384, RS512).
    Rsa,
    /// EC on P-256 (ES256).
    EcP256,
    /// EC on P-384 (ES384).
    EcP384,
}

// === impl KeyKind ===

impl KeyKind {
    /// Whether a token signed with `alg` can be verified with a key of this kind.
    pub fn fits(self, alg: Algorithm) -> bool {
        matches!(
            (self, alg),
            (
                Self::Rsa,
                Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512
            ) | (Self::EcP256, Algorithm::ES256)
                | (Self::EcP384, Algorithm::ES384)
        )
    }
}

/// One published verification key.
#[derive(Clone)]
pub struct PublicKey {
    /// Key family from `kty`/`crv`.
    pub kind: KeyKind,
    /// The JWK's `alg`, when it names one: the key may then only verify that algorithm.
    pub alg: Option<Algorithm>,
    /// The key itself.
    pub key: DecodingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The keys of one JWKS, by `kid` (keys without a `kid` are kept apart).
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    by_kid: HashMap<String, PublicKey>,
    without_kid: Vec<PublicKey>,
}

// === impl KeySet ===

impl KeySet {
    /// Parses a JWKS document. Keys we cannot use (encryption keys, other key types or
    /// curves, malformed components) are skipped, not fatal: issuers publish mixed sets.
    pub fn from_jwks(doc: &Value) -> Result<Self, KeysError> {
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| KeysError::Malformed("the JWKS has no `keys` array".into()))?;
        let mut set = KeySet::default();
        for jwk in keys {
            let Some(key) = parse_jwk(jwk) else { continue };
            match jwk.get("kid").and_then(Value::as_str) {
                Some(kid) => {
                    set.by_kid.insert(kid.to_string(), key);
                }
                None => set.without_kid.push(key),
            }
        }
        Ok(set)
    }

    /// The key named `kid`, or with no `kid` in the token the single key that fits `alg`.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&PublicKey> {
        match kid {
            Some(kid) => self.by_kid.get(kid),
            None => {
                let mut fitting = self
                    .by_kid
                    .values()
                    .chain(self.without_kid.iter())
                    .filter(|k| k.kind.fits(alg));
                let first = fitting.next();
                // Ambiguous without a kid: refuse rather than try keys one by one.
                if fitting.next().is_some() {
                    None
                } else {
                    first
                }
            }
        }
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.by_kid.len() + self.without_kid.len()
    }

    /// True when no usable key was published.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One JWK, read with jsonwebtoken's JWK types: a signing key (no `use`, or `sig`) of RSA
/// or EC P-256/P-384, whose `alg` (when named) fits its type; anything else is `None`.
fn parse_jwk(raw: &Value) -> Option<PublicKey> {
    let jwk: Jwk = serde_json::from_value(raw.clone()).ok()?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    let alg = match &jwk.common.key_algorithm {
        None => None,
        Some(named) => Some(named.to_string().parse::<Algorithm>().ok()?),
    };
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => KeyKind::EcP256,
            EllipticCurve::P384 => KeyKind::EcP384,
            _ => return None,
        },
        _ => return None,
    };
    // A key whose declared alg does not fit its type is a publishing mistake: never use it.
    if alg.is_some_and(|a| !kind.fits(a)) {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(PublicKey { kind, alg, key })
}

/// Why keys could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// The discovery document or JWKS could not be fetched.
    #[error("cannot fetch the issuer's keys: {0}")]
    Fetch(String),
    /// A document was not what OIDC discovery or JWKS says.
    #[error("the issuer's documents are malformed: {0}")]
    Malformed(String),
}

/// Fetches a fresh key set (discovery, then `jwks_uri`).
pub type KeyFetcher = Arc<dyn Fn() -> BoxFuture<'static, Result<KeySet, KeysError>> + Send + Sync>;

/// Whether a refetch may happen now, given the last one and the floor.
pub fn may_refetch(last: Option<Instant>, now: Instant, floor: Duration) -> bool {
    last.is_none_or(|at| now.saturating_duration_since(at) >= floor)
}

#[derive(Default)]
struct CacheState {
    keys: Option<Arc<KeySet>>,
    last_fetch: Option<Instant>,
    last_error: Option<String>,
}

/// The issuer's keys in memory, refreshed by [`KeyCache::refresh`].
#[derive(Clone)]
pub struct KeyCache {
    fetch: KeyFetcher,
    floor: Duration,
    state: Arc<RwLock<CacheState>>,
    // Serialises fetches so a burst of unknown-kid tokens costs one request.
    fetching: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("floor", &self.floor)
            .field("loaded", &self.is_loaded())
            .finish_non_exhaustive()
    }
}

// === impl KeyCache ===

impl KeyCache {
    /// A cache that fetches with `fetch` and refetches on unknown kids at most once per `floor`.
    pub fn new(fetch: KeyFetcher, floor: Duration) -> Self {
        Self {
            fetch,
            floor,
            state: Arc::new(RwLock::new(CacheState::default())),
            fetching: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The current keys, if loaded.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.state.read().ok().and_then(|s| s.keys.clone())
    }

    /// Whether keys were loaded at least once.
    pub fn is_loaded(&self) -> bool {
        self.current().is_some()
    }

    /// The last fetch error, if the last fetch failed.
    pub fn last_error(&self) -> Option<String> {
        self.state.read().ok().and_then(|s| s.last_error.clone())
    }

    /// Fetches now, regardless of the floor (periodic refresh, start-up).
    pub async fn refresh(&self) -> Result<Arc<KeySet>, KeysError> {
        let _guard = self.fetching.lock().await;
        self.fetch_locked().await
    }

    async fn fetch_locked(&self) -> Result<Arc<KeySet>, KeysError> {
        let result = (self.fetch)().await;
        let mut state = self
            .state
            .write()
            .map_err(|_| KeysError::Fetch("key cache lock poisoned".into()))?;
        state.last_fetch = Some(Instant::now());
        match result {
            Ok(set) => {
                let set = Arc::new(set);
                state.keys = Some(set.clone());
                state.last_error = None;
                Ok(set)
            }
            Err(e) => {
                state.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Called when a token names a key we lack: refetches unless one happened within the
    /// floor (then returns the keys as they are). Waiting callers share one fetch.
    pub async fn refetch_for_unknown_kid(&self) -> Option<Arc<KeySet>> {
        let _guard = self.fetching.lock().await;
        let last = self.state.read().ok().and_then(|s| s.last_fetch);
        if may_refetch(last, Instant::now(), self.floor) {
            let _ = self.fetch_locked().await;
        }
        self.current()
    }
}

/// Most redirects followed for one discovery or JWKS fetch.
const MAX_REDIRECTS: usize = 5;

/// The HTTP client for discovery and JWKS. It follows a redirect only to the same origin
/// (scheme, host and port) as the URL first asked for, at most [`MAX_REDIRECTS`] times: a
/// redirect elsewhere could hand the gateway keys nobody at the issuer published.
/// `ca` adds the certificates of `oidc.caFile` to the trusted roots.
pub fn issuer_http_client(ca: Option<&IssuerCa>) -> reqwest::Result<reqwest::Client> {
    trusting(reqwest::Client::builder(), ca)
        .user_agent(concat!("nodeshell-gateway/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let first = attempt.previous().first().map(reqwest::Url::origin);
            if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else if first.as_ref() == Some(&attempt.url().origin()) {
                attempt.follow()
            } else {
                let to = attempt.url().to_string();
                attempt.error(format!("refused a redirect to another origin ({to})"))
            }
        }))
        .build()
}

/// `builder` with the certificates of `oidc.caFile`, if any, among its trusted roots.
pub fn trusting(builder: reqwest::ClientBuilder, ca: Option<&IssuerCa>) -> reqwest::ClientBuilder {
    ca.map(IssuerCa::certificates)
        .unwrap_or_default()
        .into_iter()
        .fold(builder, reqwest::ClientBuilder::add_root_certificate)
}

/// A fetcher that reads `<issuer>/.well-known/openid-configuration`, checks its `issuer`,
/// then loads `jwks_uri` (https, or http on loopback). Give it [`issuer_http_client`].
pub fn http_fetcher(http: reqwest::Client, issuer: String) -> KeyFetcher {
    Arc::new(move || {
        let http = http.clone();
        let issuer = issuer.clone();
        Box::pin(async move {
            let url = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            let discovery: Value = get_json(&http, &url).await?;
            if discovery.get("issuer").and_then(Value::as_str) != Some(issuer.as_str()) {
                return Err(KeysError::Malformed(format!(
                    "{url} names issuer {}, not {issuer}",
                    discovery.get("issuer").unwrap_or(&Value::Null)
                )));
            }
            let jwks_uri = discovery
                .get("jwks_uri")
                .and_then(Value::as_str)
                .ok_or_else(|| KeysError::Malformed(format!("{url} has no jwks_uri")))?;
            let secure = reqwest::Url::parse(jwks_uri).is_ok_and(|u| secure_or_loopback(&u));
            if !secure {
                return Err(KeysError::Malformed(format!(
                    "{url} names jwks_uri {jwks_uri:?}, which is not an https URL (http is accepted only on loopback)"
                )));
            }
            let jwks = get_json(&http, jwks_uri).await?;
            KeySet::from_jwks(&jwks)
        })
    })
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, KeysError> {
    let response = http
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| {
            let chain = error_chain(&e);
            // rustls names an untrusted chain `UnknownIssuer`.
            let hint = if chain.contains("UnknownIssuer") {
                "; the issuer's certificate is signed by a CA the gateway does not trust: give that CA's PEM certificate in oidc.caFile (--oidc-ca-file)"
            } else {
                ""
            };
            KeysError::Fetch(format!("GET {url}: {chain}{hint}"))
        })?;
    if !response.status().is_success() {
        return Err(KeysError::Fetch(format!(
            "GET {url}: HTTP {}",
            response.status()
        )));
    }
    response
        .json()
        .await
        .map_err(|e| KeysError::Malformed(format!("GET {url}: {e}")))
}

/// An error and its sources in one line (reqwest keeps the redirect refusal in a source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn mismatched_and_foreign_keys_are_skipped() {
        let doc = json!({"keys": [
            {"kty": "RSA", "kid": "ok", "alg": "RS256", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "claims-es", "alg": "ES256", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "abc"},
        ]});
        let set = KeySet::from_jwks(&doc).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.find(Some("ok"), Algorithm::RS256).is_some());
        assert!(set.find(Some("claims-es"), Algorithm::ES256).is_none());
        assert!(set.find(Some("hmac"), Algorithm::HS256).is_none());
        assert!(KeySet::from_jwks(&json!({})).is_err());
    }

    /// EC signing keys by curve (RFC 7517's example key), read with jsonwebtoken's JWK types.
    #[test]
    fn ec_keys_by_curve_and_use() {
        let (x, y) = (
            "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        );
        let doc = json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "p256", "use": "sig", "alg": "ES256", "x": x, "y": y},
            {"kty": "EC", "crv": "P-384", "kid": "p384", "x": x, "y": y},
            {"kty": "EC", "crv": "P-521", "kid": "p521", "x": x, "y": y},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc", "x": x, "y": y},
            {"kty": "EC", "crv": "P-256", "kid": "rs-claim", "alg": "RS256", "x": x, "y": y},
        ]});
        let set = KeySet::from_jwks(&doc).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(
            set.find(Some("p256"), Algorithm::ES256).unwrap().kind,
            KeyKind::EcP256
        );
        assert_eq!(
            set.find(Some("p384"), Algorithm::ES384).unwrap().kind,
            KeyKind::EcP384
        );
        assert!(set.find(Some("p521"), Algorithm::ES256).is_none());
        assert!(set.find(Some("enc"), Algorithm::ES256).is_none());
        assert!(set.find(Some("rs-claim"), Algorithm::RS256).is_none());
    }

    #[test]
    fn refetch_floor() {
        let now = Instant::now();
        let floor = Duration::from_secs(10);
        assert!(may_refetch(None, now, floor));
        assert!(!may_refetch(Some(now), now + Duration::from_secs(3), floor));
        assert!(may_refetch(Some(now), now + Duration::from_secs(10), floor));
    }

    #[tokio::test]
    async fn unknown_kid_refetches_at_most_once_per_floor() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let fetch: KeyFetcher = Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(KeySet::default()) })
        });
        let cache = KeyCache::new(fetch, Duration::from_secs(3600));
        cache.refresh().await.unwrap();
        for _ in 0..5 {
            cache.refetch_for_unknown_kid().await;
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "floor holds refetches back"
        );
        let cache = KeyCache::new(cache.fetch.clone(), Duration::ZERO);
        cache.refetch_for_unknown_kid().await;
        cache.refetch_for_unknown_kid().await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    /// A loopback HTTP server: `answer(base, path)` gives each raw response; counts requests.
    async fn canned_server(
        answer: impl Fn(&str, &str) -> String + Send + 'static,
    ) -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let (counter, me) = (hits.clone(), base.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = vec![0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let _ = socket.write_all(answer(&me, &path).as_bytes()).await;
            }
        });
        (base, hits, task)
    }

    fn redirect(to: &str) -> String {
        format!(
            "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
    }

    fn json_answer(body: &Value) -> String {
        let body = body.to_string();
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn not_found() -> String {
        "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string()
    }

    #[tokio::test]
    async fn an_issuer_with_a_private_ca_is_reached_only_when_oidc_ca_file_trusts_it() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut config = crate::sim::SimConfig::for_tests();
        config.issuer.https = true;
        let sim = crate::sim::Simulator::start(config).await.unwrap();
        let issuer = sim.urls().issuer.clone();
        assert!(issuer.starts_with("https://127.0.0.1:"), "{issuer}");
        let ca = IssuerCa::from_pem(sim.issuer_ca_pem().unwrap().as_bytes().to_vec()).unwrap();
        assert_eq!(ca.len(), 1);
        let trusted = http_fetcher(issuer_http_client(Some(&ca)).unwrap(), issuer.clone());
        let keys = trusted().await.expect("the keys, through the private CA");
        assert!(!keys.is_empty());
        let untrusted = http_fetcher(issuer_http_client(None).unwrap(), issuer.clone());
        let error = untrusted().await.unwrap_err().to_string();
        assert!(
            error.contains("give that CA's PEM certificate in oidc.caFile"),
            "says what to do: {error}"
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn discovery_follows_redirects_only_within_the_issuers_origin() {
        let jwks = crate::sim::jwt::KeyRing::generate().unwrap().jwks();
        let fetch = |issuer: &str| {
            let fetcher = http_fetcher(issuer_http_client(None).unwrap(), issuer.to_string());
            async move { fetcher().await }
        };
        // Another origin, ready to serve keys for anyone sent its way.
        let keys = jwks.clone();
        let (elsewhere, elsewhere_hits, t1) = canned_server(move |_, path| match path {
            "/keys" => json_answer(&keys),
            _ => not_found(),
        })
        .await;
        // The issuer moved its discovery within its origin, and its JWKS to the other origin.
        let target = elsewhere.clone();
        let (issuer, _, t2) = canned_server(move |me, path| match path {
            "/.well-known/openid-configuration" => redirect("/v2/.well-known/openid-configuration"),
            "/v2/.well-known/openid-configuration" => {
                json_answer(&json!({"issuer": me, "jwks_uri": format!("{me}/keys")}))
            }
            "/keys" => redirect(&format!("{target}/keys")),
            _ => not_found(),
        })
        .await;
        let err = fetch(&issuer).await.unwrap_err();
        assert!(
            matches!(&err, KeysError::Fetch(m) if m.contains("another origin")),
            "{err}"
        );
        assert_eq!(
            elsewhere_hits.load(Ordering::SeqCst),
            0,
            "the other origin was never asked"
        );
        // The same issuer with its keys in its own origin loads after the same-origin hop.
        let keys = jwks.clone();
        let (good, _, t3) = canned_server(move |me, path| match path {
            "/.well-known/openid-configuration" => redirect("/v2/.well-known/openid-configuration"),
            "/v2/.well-known/openid-configuration" => {
                json_answer(&json!({"issuer": me, "jwks_uri": format!("{me}/keys")}))
            }
            "/keys" => json_answer(&keys),
            _ => not_found(),
        })
        .await;
        assert_eq!(fetch(&good).await.unwrap().len(), 1);
        // A redirect loop within the origin stops after the limit.
        let (looping, hits, t4) = canned_server(|_, _| redirect("/again")).await;
        assert!(fetch(&looping).await.is_err());
        assert_eq!(hits.load(Ordering::SeqCst), MAX_REDIRECTS + 1);
        // A discovery document naming a plain-http JWKS off loopback is refused.
        let (plain, _, t5) = canned_server(|me, path| match path {
            "/.well-known/openid-configuration" => {
                json_answer(&json!({"issuer": me, "jwks_uri": "http://keys.example.com/keys"}))
            }
            _ => not_found(),
        })
        .await;
        let err = fetch(&plain).await.unwrap_err();
        assert!(
            matches!(&err, KeysError::Malformed(m) if m.contains("not an https URL")),
            "{err}"
        );
        for t in [t1, t2, t3, t4, t5] {
            t.abort();
        }
    }
}

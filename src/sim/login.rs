//! The issuer's browser login (OIDC Authorization Code with PKCE S256, public clients): the
//! checks of an authorization request, the single-use codes it issues, and their redemption.
//! Pure logic; `oidc.rs` wires it to HTTP.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// How long an authorization code may be redeemed after it was issued.
pub(crate) const CODE_LIFETIME: Duration = Duration::from_secs(60);

/// An OAuth 2.0 error as the token endpoint and the redirect carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OAuthError {
    /// RFC 6749 error code (`invalid_request`, `invalid_grant`, …).
    pub error: &'static str,
    /// What is wrong and what to do, for the developer reading it.
    pub description: String,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            error,
            description: description.into(),
        }
    }

    fn missing(param: &str) -> Self {
        Self::new(
            "invalid_request",
            format!("the request has no {param}; send it as RFC 6749/7636 require"),
        )
    }

    /// `{"error", "error_description"}`.
    pub fn to_json(&self) -> Value {
        json!({"error": self.error, "error_description": self.description})
    }
}

/// Why `/authorize` refused, and whether the refusal may travel back to the redirect URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthorizeRefusal {
    /// The client or redirect URI is not trusted: answer here, never redirect (RFC 6749 §4.1.2.1).
    Here(OAuthError),
    /// Anything else: redirect with `error`, `error_description` and `state`.
    Redirect {
        /// Where to send the error.
        redirect_uri: String,
        /// The client's state, echoed.
        state: Option<String>,
        /// The error.
        error: OAuthError,
    },
}

/// A checked authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthorizeRequest {
    /// The public client asking.
    pub client_id: String,
    /// Where the code goes.
    pub redirect_uri: String,
    /// Echoed back untouched.
    pub state: Option<String>,
    /// Copied into the id_token.
    pub nonce: Option<String>,
    /// BASE64URL(SHA-256(verifier)).
    pub code_challenge: String,
}

/// Checks the query of `/authorize` against the clients the issuer knows and the redirect URIs
/// it allows (an empty list allows any loopback `http` URI, since dev ports are chosen at run
/// time).
pub(crate) fn check_authorize(
    params: &HashMap<String, String>,
    known_clients: &[String],
    allowed_redirects: &[String],
) -> Result<AuthorizeRequest, AuthorizeRefusal> {
    let here = AuthorizeRefusal::Here;
    let client_id = params
        .get("client_id")
        .ok_or_else(|| here(OAuthError::missing("client_id")))?;
    if !known_clients.iter().any(|c| c == client_id) {
        return Err(here(OAuthError::new(
            "unauthorized_client",
            format!(
                "client_id {client_id:?} is not registered with this issuer; use one of {known_clients:?} (issuer.clientId or issuer.extraAudiences in the simulator config)"
            ),
        )));
    }
    let redirect_uri = params
        .get("redirect_uri")
        .ok_or_else(|| here(OAuthError::missing("redirect_uri")))?;
    if !redirect_allowed(redirect_uri, allowed_redirects) {
        let allowed = if allowed_redirects.is_empty() {
            "a loopback http URI (http://127.0.0.1:<port>/… or http://localhost:<port>/…)"
                .to_string()
        } else {
            format!("one of {allowed_redirects:?} (issuer.redirectUris)")
        };
        return Err(here(OAuthError::new(
            "invalid_request",
            format!("redirect_uri {redirect_uri:?} is not allowed; use {allowed}"),
        )));
    }
    let state = params.get("state").cloned();
    let redirect = |error: OAuthError| AuthorizeRefusal::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: state.clone(),
        error,
    };
    match params.get("response_type").map(String::as_str) {
        Some("code") => {}
        Some(other) => {
            return Err(redirect(OAuthError::new(
                "unsupported_response_type",
                format!("response_type {other:?} is not supported; use response_type=code"),
            )));
        }
        None => return Err(redirect(OAuthError::missing("response_type"))),
    }
    let code_challenge = params
        .get("code_challenge")
        .ok_or_else(|| redirect(OAuthError::missing("code_challenge (PKCE is required)")))?;
    if params.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return Err(redirect(OAuthError::new(
            "invalid_request",
            "code_challenge_method must be S256 (plain is refused)",
        )));
    }
    if URL_SAFE_NO_PAD.decode(code_challenge).map(|d| d.len()) != Ok(32) {
        return Err(redirect(OAuthError::new(
            "invalid_request",
            "code_challenge must be the unpadded base64url SHA-256 of the verifier (43 characters)",
        )));
    }
    Ok(AuthorizeRequest {
        client_id: client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        state,
        nonce: params.get("nonce").cloned(),
        code_challenge: code_challenge.clone(),
    })
}

fn redirect_allowed(uri: &str, allowed: &[String]) -> bool {
    if !allowed.is_empty() {
        return allowed.iter().any(|a| a == uri);
    }
    let Ok(url) = url::Url::parse(uri) else {
        return false;
    };
    url.scheme() == "http"
        && url.fragment().is_none()
        && matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
}

/// `redirect_uri` with `params` appended to its query.
pub(crate) fn redirect_location(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(params);
            url.to_string()
        }
        Err(_) => redirect_uri.to_string(),
    }
}

/// BASE64URL(SHA-256(verifier)), the S256 challenge of a PKCE verifier.
pub(crate) fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Checks a PKCE verifier against the challenge the code was issued for (RFC 7636 §4.6).
pub(crate) fn verify_pkce(verifier: &str, challenge: &str) -> Result<(), OAuthError> {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return Err(OAuthError::new(
            "invalid_request",
            "code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~]",
        ));
    }
    if s256_challenge(verifier) != challenge {
        return Err(OAuthError::new(
            "invalid_grant",
            "code_verifier does not match the code_challenge sent to /authorize; send the verifier this login started with",
        ));
    }
    Ok(())
}

/// What a code stands for until it is redeemed.
#[derive(Debug, Clone)]
pub(crate) struct IssuedCode {
    /// The user who signed in.
    pub sub: String,
    /// The request that obtained it.
    pub request: AuthorizeRequest,
    issued_at: Instant,
    redeemed: bool,
}

/// The token request of the authorization-code grant.
#[derive(Debug, Clone, Default)]
pub(crate) struct CodeExchange<'a> {
    /// `code`.
    pub code: Option<&'a str>,
    /// `redirect_uri`, which must equal the one sent to `/authorize`.
    pub redirect_uri: Option<&'a str>,
    /// `client_id`, which must equal the one sent to `/authorize`.
    pub client_id: Option<&'a str>,
    /// `code_verifier`.
    pub code_verifier: Option<&'a str>,
}

impl<'a> CodeExchange<'a> {
    /// The exchange described by form parameters.
    pub fn from_params(params: &'a HashMap<String, String>) -> Self {
        let get = |k: &str| params.get(k).map(String::as_str);
        Self {
            code: get("code"),
            redirect_uri: get("redirect_uri"),
            client_id: get("client_id"),
            code_verifier: get("code_verifier"),
        }
    }
}

/// Authorization codes issued and not yet forgotten.
#[derive(Debug, Default)]
pub(crate) struct CodeBook {
    codes: HashMap<String, IssuedCode>,
}

impl CodeBook {
    /// Issues a fresh code for `sub` signing in through `request`.
    pub fn issue(&mut self, sub: &str, request: AuthorizeRequest, now: Instant) -> String {
        // Redeemed and expired codes are kept one extra lifetime so reuse gets a precise answer.
        self.codes
            .retain(|_, c| now.saturating_duration_since(c.issued_at) < 2 * CODE_LIFETIME);
        let code = super::ids::random_alnum(32);
        self.codes.insert(
            code.clone(),
            IssuedCode {
                sub: sub.to_string(),
                request,
                issued_at: now,
                redeemed: false,
            },
        );
        code
    }

    /// Redeems a code once: checks its age, redirect URI, client and PKCE verifier.
    pub fn redeem(
        &mut self,
        exchange: &CodeExchange<'_>,
        now: Instant,
    ) -> Result<IssuedCode, OAuthError> {
        let code = exchange.code.ok_or_else(|| OAuthError::missing("code"))?;
        let redirect_uri = exchange
            .redirect_uri
            .ok_or_else(|| OAuthError::missing("redirect_uri"))?;
        let client_id = exchange
            .client_id
            .ok_or_else(|| OAuthError::missing("client_id"))?;
        let verifier = exchange
            .code_verifier
            .ok_or_else(|| OAuthError::missing("code_verifier (PKCE is required)"))?;
        let issued = self.codes.get_mut(code).ok_or_else(|| {
            OAuthError::new(
                "invalid_grant",
                "unknown authorization code; start the login again at /authorize",
            )
        })?;
        if issued.redeemed {
            return Err(OAuthError::new(
                "invalid_grant",
                "this authorization code was already redeemed (codes are single use); start the login again",
            ));
        }
        // Any attempt spends the code, so a failed guess cannot be retried.
        issued.redeemed = true;
        if now.saturating_duration_since(issued.issued_at) > CODE_LIFETIME {
            return Err(OAuthError::new(
                "invalid_grant",
                format!(
                    "the authorization code expired (codes live {} s); start the login again",
                    CODE_LIFETIME.as_secs()
                ),
            ));
        }
        if issued.request.redirect_uri != redirect_uri {
            return Err(OAuthError::new(
                "invalid_grant",
                format!(
                    "redirect_uri {redirect_uri:?} differs from {:?} sent to /authorize; send the same URI",
                    issued.request.redirect_uri
                ),
            ));
        }
        if issued.request.client_id != client_id {
            return Err(OAuthError::new(
                "invalid_grant",
                format!(
                    "client_id {client_id:?} differs from {:?} the code was issued to",
                    issued.request.client_id
                ),
            ));
        }
        verify_pkce(verifier, &issued.request.code_challenge)?;
        Ok(issued.clone())
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn valid() -> HashMap<String, String> {
        params(&[
            ("response_type", "code"),
            ("client_id", "nodeshell-dev"),
            ("redirect_uri", "http://127.0.0.1:8080/callback"),
            ("state", "s1"),
            ("nonce", "n1"),
            ("code_challenge", &s256_challenge(VERIFIER)),
            ("code_challenge_method", "S256"),
        ])
    }

    fn check(p: &HashMap<String, String>) -> Result<AuthorizeRequest, AuthorizeRefusal> {
        check_authorize(p, &["nodeshell-dev".to_string()], &[])
    }

    #[test]
    fn rfc7636_example_challenge() {
        // The worked example of RFC 7636 appendix B.
        assert_eq!(
            s256_challenge(VERIFIER),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn a_valid_request_is_accepted() {
        let request = check(&valid()).unwrap();
        assert_eq!(request.nonce.as_deref(), Some("n1"));
        assert_eq!(request.state.as_deref(), Some("s1"));
    }

    #[test]
    fn unknown_client_and_foreign_redirect_are_answered_here() {
        let mut p = valid();
        p.insert("client_id".into(), "other".into());
        assert!(
            matches!(check(&p), Err(AuthorizeRefusal::Here(e)) if e.error == "unauthorized_client")
        );
        for bad in [
            "https://evil.example/callback",
            "http://127.0.0.1.evil.example/cb",
            "javascript:alert(1)",
        ] {
            let mut p = valid();
            p.insert("redirect_uri".into(), bad.into());
            let Err(AuthorizeRefusal::Here(e)) = check(&p) else {
                panic!("{bad} accepted")
            };
            assert!(e.description.contains("not allowed"), "{e:?}");
        }
        let listed = check_authorize(
            &valid(),
            &["nodeshell-dev".to_string()],
            &["http://127.0.0.1:9999/callback".to_string()],
        );
        assert!(matches!(listed, Err(AuthorizeRefusal::Here(_))));
    }

    #[test]
    fn missing_pkce_or_plain_method_is_redirected_with_state() {
        let mut p = valid();
        p.remove("code_challenge");
        let Err(AuthorizeRefusal::Redirect { state, error, .. }) = check(&p) else {
            panic!("accepted without a challenge")
        };
        assert_eq!(state.as_deref(), Some("s1"));
        assert!(error.description.contains("PKCE"), "{error:?}");
        let mut p = valid();
        p.insert("code_challenge_method".into(), "plain".into());
        assert!(
            matches!(check(&p), Err(AuthorizeRefusal::Redirect { error, .. }) if error.description.contains("S256"))
        );
        let mut p = valid();
        p.insert("response_type".into(), "token".into());
        assert!(
            matches!(check(&p), Err(AuthorizeRefusal::Redirect { error, .. }) if error.error == "unsupported_response_type")
        );
    }

    fn exchange<'a>(code: &'a str, verifier: &'a str) -> CodeExchange<'a> {
        CodeExchange {
            code: Some(code),
            redirect_uri: Some("http://127.0.0.1:8080/callback"),
            client_id: Some("nodeshell-dev"),
            code_verifier: Some(verifier),
        }
    }

    #[test]
    fn a_code_redeems_once() {
        let mut book = CodeBook::default();
        let now = Instant::now();
        let code = book.issue("demo", check(&valid()).unwrap(), now);
        let issued = book.redeem(&exchange(&code, VERIFIER), now).unwrap();
        assert_eq!(issued.sub, "demo");
        let again = book.redeem(&exchange(&code, VERIFIER), now).unwrap_err();
        assert_eq!(again.error, "invalid_grant");
        assert!(again.description.contains("already redeemed"), "{again:?}");
        let unknown = book.redeem(&exchange("nope", VERIFIER), now).unwrap_err();
        assert!(unknown.description.contains("unknown"), "{unknown:?}");
    }

    #[test]
    fn an_old_code_is_expired() {
        let mut book = CodeBook::default();
        let then = Instant::now();
        let code = book.issue("demo", check(&valid()).unwrap(), then);
        let later = then + CODE_LIFETIME + Duration::from_secs(1);
        let err = book.redeem(&exchange(&code, VERIFIER), later).unwrap_err();
        assert_eq!(err.error, "invalid_grant");
        assert!(err.description.contains("expired"), "{err:?}");
    }

    #[test]
    fn a_wrong_verifier_spends_the_code() {
        let mut book = CodeBook::default();
        let now = Instant::now();
        let code = book.issue("demo", check(&valid()).unwrap(), now);
        let other = "x".repeat(43);
        let err = book.redeem(&exchange(&code, &other), now).unwrap_err();
        assert_eq!(err.error, "invalid_grant");
        assert!(err.description.contains("code_verifier"), "{err:?}");
        assert!(book.redeem(&exchange(&code, VERIFIER), now).is_err());
        assert_eq!(
            verify_pkce("short", "x").unwrap_err().error,
            "invalid_request"
        );
    }

    #[test]
    fn redirect_uri_and_client_must_match() {
        let mut book = CodeBook::default();
        let now = Instant::now();
        let code = book.issue("demo", check(&valid()).unwrap(), now);
        let mut moved = exchange(&code, VERIFIER);
        moved.redirect_uri = Some("http://127.0.0.1:8080/elsewhere");
        let err = book.redeem(&moved, now).unwrap_err();
        assert!(err.description.contains("differs"), "{err:?}");
        let code = book.issue("demo", check(&valid()).unwrap(), now);
        let mut other = exchange(&code, VERIFIER);
        other.client_id = Some("someone");
        assert!(
            book.redeem(&other, now)
                .unwrap_err()
                .description
                .contains("client_id")
        );
        let mut missing = exchange(&code, VERIFIER);
        missing.code_verifier = None;
        assert_eq!(
            book.redeem(&missing, now).unwrap_err().error,
            "invalid_request"
        );
    }

    #[test]
    fn location_keeps_the_existing_query() {
        assert_eq!(
            redirect_location(
                "http://127.0.0.1:1/cb?x=1",
                &[("code", "a b"), ("state", "s")]
            ),
            "http://127.0.0.1:1/cb?x=1&code=a+b&state=s"
        );
        assert_eq!(
            html_escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}

//! The rules of `kubectl nodeshell login` (RFC 8252, native apps): the loopback redirect the
//! CLI may name, and the one-time codes that hand a finished sign-in to the CLI that proves
//! its PKCE verifier. The CLI never sees an id_token, a refresh token or an AWS credential:
//! it gets the key of a console session (a "session handle"), which it sends in
//! `Authorization: Nodeshell-Session <handle>`, a header no browser sends on its own.
//! No I/O: the clock is a parameter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::login::{pkce_challenge, random_token};
use crate::gateway::error::{ApiError, ErrorCode, RETRY_AFTER};

/// Path of the route that starts a CLI sign-in.
pub const CLI_LOGIN_PATH: &str = "/auth/cli/login";
/// Path of the route where the CLI exchanges its code and verifier for a session handle.
pub const CLI_TOKEN_PATH: &str = "/auth/cli/token";
/// The `Authorization` scheme of a session handle.
pub const HANDLE_SCHEME: &str = "Nodeshell-Session";
/// How long a handoff code may wait for the CLI's exchange.
pub const HANDOFF_TTL: Duration = Duration::from_secs(60);
/// Handoff codes kept at once; more are refused.
pub const MAX_HANDOFFS: usize = 1000;
/// Handoff codes of one person kept at once (as many as the console sessions a person may
/// hold, which they point to); a person's next code drops their oldest, so no one person
/// can fill the book.
pub const MAX_HANDOFFS_PER_USER: usize = 5;

/// Where a CLI sign-in ends: the CLI's loopback listener, its PKCE challenge and its state
/// (carried through the issuer inside the sealed sign-in state).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CliTarget {
    /// `http://127.0.0.1:PORT/...` (or `[::1]`, `localhost`), checked by [`loopback_redirect`].
    pub redirect_uri: String,
    /// The CLI's PKCE S256 challenge.
    pub challenge: String,
    /// The CLI's state, given back on its redirect.
    pub state: String,
}

impl std::fmt::Debug for CliTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CliTarget")
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

fn bad(why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::BadRequest,
        format!("{why}; start the sign-in with `kubectl nodeshell login`"),
    )
}

/// Checks a CLI sign-in request: the redirect must be plain http to a loopback host
/// (127.0.0.1, [::1] or localhost) with an explicit port and no user info or fragment; the
/// challenge a PKCE S256 one (43 base64url characters); the state present and short.
pub fn cli_target(
    redirect_uri: Option<&str>,
    challenge: Option<&str>,
    method: Option<&str>,
    state: Option<&str>,
) -> Result<CliTarget, ApiError> {
    let redirect = loopback_redirect(redirect_uri.unwrap_or_default())?;
    if method != Some("S256") {
        return Err(bad("code_challenge_method must be S256"));
    }
    let challenge = challenge.unwrap_or_default();
    if challenge.len() != 43
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad("code_challenge must be a PKCE S256 challenge"));
    }
    let state = state.unwrap_or_default();
    if state.is_empty() || state.len() > 128 {
        return Err(bad("state must be 1 to 128 characters"));
    }
    Ok(CliTarget {
        redirect_uri: redirect,
        challenge: challenge.to_string(),
        state: state.to_string(),
    })
}

/// The redirect URI if it is a loopback one the CLI can listen on, else `E_BAD_REQUEST`.
pub fn loopback_redirect(uri: &str) -> Result<String, ApiError> {
    let url =
        url::Url::parse(uri).map_err(|_| bad("redirect_uri must be http://127.0.0.1:PORT/…"))?;
    let host_ok = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
        Some(url::Host::Ipv6(ip)) => ip == std::net::Ipv6Addr::LOCALHOST,
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    if url.scheme() != "http"
        || !host_ok
        || url.port().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.fragment().is_some()
    {
        return Err(bad(
            "redirect_uri must be a loopback address with a port (http://127.0.0.1:PORT, http://[::1]:PORT or http://localhost:PORT)",
        ));
    }
    Ok(url.into())
}

/// Where the gateway sends the browser once a CLI sign-in is done: the CLI's redirect with
/// the one-time `code` and the CLI's `state`.
pub fn handoff_location(target: &CliTarget, code: &str) -> String {
    let mut url = match url::Url::parse(&target.redirect_uri) {
        Ok(url) => url,
        Err(_) => return target.redirect_uri.clone(),
    };
    url.query_pairs_mut()
        .append_pair("code", code)
        .append_pair("state", &target.state);
    url.into()
}

struct Handoff {
    challenge: String,
    session_key: String,
    sub: String,
    issued: Instant,
}

/// One-time codes of finished CLI sign-ins: single use, [`HANDOFF_TTL`]-lived, bounded, each
/// bound to the CLI's PKCE challenge.
#[derive(Clone, Default)]
pub struct CliHandoffs {
    codes: Arc<Mutex<HashMap<String, Handoff>>>,
}

impl std::fmt::Debug for CliHandoffs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CliHandoffs").finish_non_exhaustive()
    }
}

fn refused(why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Auth,
        format!("sign-in refused: {why}; run `kubectl nodeshell login` again"),
    )
}

impl CliHandoffs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Handoff>> {
        self.codes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A code for the console session `session_key` of person `sub`, redeemable once with
    /// the verifier of `challenge`. The person's oldest code goes when they hold
    /// [`MAX_HANDOFFS_PER_USER`].
    pub fn issue(
        &self,
        challenge: &str,
        session_key: &str,
        sub: &str,
        now: Instant,
    ) -> Result<String, ApiError> {
        let mut codes = self.lock();
        codes.retain(|_, h| now.duration_since(h.issued) < HANDOFF_TTL);
        let mut own: Vec<(Instant, String)> = codes
            .iter()
            .filter(|(_, h)| h.sub == sub)
            .map(|(code, h)| (h.issued, code.clone()))
            .collect();
        if own.len() >= MAX_HANDOFFS_PER_USER {
            own.sort();
            for (_, code) in own.iter().take(own.len() + 1 - MAX_HANDOFFS_PER_USER) {
                codes.remove(code);
            }
        }
        if codes.len() >= MAX_HANDOFFS {
            let oldest = codes
                .values()
                .map(|h| now.duration_since(h.issued))
                .max()
                .unwrap_or_default();
            let wait = HANDOFF_TTL.saturating_sub(oldest).as_secs().max(1);
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "too many command-line sign-ins are in progress on this gateway; try again in {wait} s"
                ),
            )
            .with(RETRY_AFTER, wait));
        }
        let code = random_token(32);
        codes.insert(
            code.clone(),
            Handoff {
                challenge: challenge.to_string(),
                session_key: session_key.to_string(),
                sub: sub.to_string(),
                issued: now,
            },
        );
        Ok(code)
    }

    /// The console session of `code` if it is known, young enough and `verifier` matches its
    /// challenge. The code is gone after one try, right or wrong.
    pub fn redeem(&self, code: &str, verifier: &str, now: Instant) -> Result<String, ApiError> {
        let handoff = self
            .lock()
            .remove(code)
            .ok_or_else(|| refused("unknown or already used code"))?;
        if now.duration_since(handoff.issued) >= HANDOFF_TTL {
            return Err(refused("the code expired"));
        }
        if pkce_challenge(verifier) != handoff.challenge {
            return Err(refused("the code_verifier does not match the challenge"));
        }
        Ok(handoff.session_key)
    }
}

/// The handle in an `Authorization: Nodeshell-Session <handle>` header, if it is one.
pub fn session_handle(authorization: Option<&str>) -> Option<&str> {
    let (scheme, value) = authorization?.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case(HANDLE_SCHEME)
        .then(|| value.trim())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    #[test]
    fn only_loopback_redirects_with_a_port_are_accepted() {
        for ok in [
            "http://127.0.0.1:53682/callback",
            "http://[::1]:8080/",
            "http://localhost:1234/cb",
        ] {
            assert!(loopback_redirect(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://127.0.0.1/callback",
            "https://127.0.0.1:443/",
            "http://evil.example:8080/",
            "http://127.0.0.2:8080/",
            "http://localhost.evil.example:80/",
            "http://user@127.0.0.1:8080/",
            "http://127.0.0.1:8080/#frag",
            "javascript:alert(1)",
            "",
        ] {
            let e = loopback_redirect(refused).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{refused}");
        }
    }

    #[test]
    fn a_cli_target_needs_s256_a_challenge_and_a_state() {
        let uri = Some("http://127.0.0.1:9/cb");
        assert!(cli_target(uri, Some(CHALLENGE), Some("S256"), Some("s")).is_ok());
        assert!(cli_target(uri, Some(CHALLENGE), Some("plain"), Some("s")).is_err());
        assert!(cli_target(uri, Some("short"), Some("S256"), Some("s")).is_err());
        assert!(cli_target(uri, Some(CHALLENGE), Some("S256"), None).is_err());
        assert!(cli_target(None, Some(CHALLENGE), Some("S256"), Some("s")).is_err());
    }

    #[test]
    fn a_code_is_single_use_short_lived_and_bound_to_the_verifier() {
        let book = CliHandoffs::default();
        let t0 = Instant::now();
        let code = book.issue(CHALLENGE, "key-1", "alice", t0).unwrap();
        assert_eq!(book.redeem(&code, VERIFIER, t0).unwrap(), "key-1");
        assert_eq!(
            book.redeem(&code, VERIFIER, t0).unwrap_err().code,
            ErrorCode::Auth
        );

        let code = book.issue(CHALLENGE, "key-2", "alice", t0).unwrap();
        let wrong = book.redeem(&code, "another-verifier", t0).unwrap_err();
        assert!(wrong.message.contains("code_verifier"), "{}", wrong.message);
        // A wrong verifier used the code up: an attacker gets one guess.
        assert!(book.redeem(&code, VERIFIER, t0).is_err());

        let code = book.issue(CHALLENGE, "key-3", "alice", t0).unwrap();
        let late = book.redeem(&code, VERIFIER, t0 + HANDOFF_TTL).unwrap_err();
        assert!(late.message.contains("expired"), "{}", late.message);
    }

    #[test]
    fn handoffs_are_bounded_and_a_full_book_says_when_to_come_back() {
        let book = CliHandoffs::default();
        let t0 = Instant::now();
        for i in 0..MAX_HANDOFFS {
            book.issue(CHALLENGE, &format!("key-{i}"), &format!("user-{i}"), t0)
                .unwrap();
        }
        let full = book
            .issue(
                CHALLENGE,
                "one-more",
                "someone",
                t0 + Duration::from_secs(20),
            )
            .unwrap_err();
        assert_eq!(full.code, ErrorCode::RateLimited);
        assert_eq!(full.extra.get(RETRY_AFTER), Some(&serde_json::json!(40)));
        // Once the first ones expire there is room again.
        assert!(
            book.issue(CHALLENGE, "later", "someone", t0 + HANDOFF_TTL)
                .is_ok()
        );
    }

    #[test]
    fn one_person_cannot_fill_the_handoff_book() {
        let book = CliHandoffs::default();
        let t0 = Instant::now();
        let codes: Vec<String> = (0..MAX_HANDOFFS + 10)
            .map(|i| {
                let at = t0 + Duration::from_millis(i as u64);
                book.issue(CHALLENGE, &format!("key-{i}"), "mallory", at)
                    .unwrap()
            })
            .collect();
        assert_eq!(book.lock().len(), MAX_HANDOFFS_PER_USER);
        // Her newest codes still work, her oldest are gone, and others are not refused.
        let last = codes.last().unwrap();
        assert!(book.redeem(last, VERIFIER, t0).is_ok());
        assert!(book.redeem(&codes[0], VERIFIER, t0).is_err());
        assert!(book.issue(CHALLENGE, "key-a", "alice", t0).is_ok());
    }

    #[test]
    fn the_handoff_goes_back_to_the_cli_with_code_and_state() {
        let target = cli_target(
            Some("http://127.0.0.1:9/cb"),
            Some(CHALLENGE),
            Some("S256"),
            Some("st&x"),
        )
        .unwrap();
        assert_eq!(
            handoff_location(&target, "c1"),
            "http://127.0.0.1:9/cb?code=c1&state=st%26x"
        );
    }

    #[test]
    fn the_handle_header_is_recognised_only_by_its_scheme() {
        assert_eq!(session_handle(Some("Nodeshell-Session abc")), Some("abc"));
        assert_eq!(session_handle(Some("nodeshell-session  abc ")), Some("abc"));
        assert_eq!(session_handle(Some("Bearer abc")), None);
        assert_eq!(session_handle(Some("Nodeshell-Session ")), None);
        assert_eq!(session_handle(None), None);
    }
}

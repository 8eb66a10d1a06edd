//! Verifying one id_token against a key set: its size and header (algorithm allow-list, no
//! unknown `crit`), the key's fit, the signature, then `iss`, `aud`/`azp`, `exp`, `nbf` and
//! `iat` as OIDC Core 3.1.3.7, RFC 7519 and RFC 7515 say. Pure: the caller supplies keys and
//! time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

use super::keys::KeySet;
use crate::gateway::error::{ApiError, ErrorCode};

/// Algorithms an id_token may be signed with. No `none`, no HMAC: the HMAC secret would be
/// something we publish (the classic RS256 → HS256 confusion).
pub const ALLOWED_ALGORITHMS: [Algorithm; 5] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// Longest id_token accepted, checked before any parsing: issuers mint a few KiB at most, and
/// a bound keeps a hostile token from making the gateway decode megabytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What a token must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRules {
    /// Exact `iss`.
    pub issuer: String,
    /// Required `aud` (the client id).
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Neither a console session cookie nor an `Authorization: Bearer` header.
    #[error(
        "not signed in: sign in to the console (it goes through /auth/login), or, from a server, send `Authorization: Bearer <id_token>`"
    )]
    Missing,
    /// Not a compact JWS with a JSON header and claims.
    #[error("the bearer token is not a JWT id_token ({0})")]
    Malformed(String),
    /// `alg: none`.
    #[error("unsigned id_tokens (alg none) are refused")]
    Unsigned,
    /// An algorithm outside the allow-list.
    #[error(
        "id_tokens signed with {0} are refused; the issuer must sign with RS256, RS384, RS512, ES256 or ES384"
    )]
    AlgorithmRefused(String),
    /// The token names a key the issuer does not publish.
    #[error(
        "the id_token was signed with key {kid:?}, which the issuer does not publish; sign in again"
    )]
    UnknownKey {
        /// The token's `kid` (empty when absent).
        kid: String,
    },
    /// The published key does not fit the token's algorithm.
    #[error("the id_token's algorithm {alg} does not match the issuer's key {kid:?}")]
    KeyMismatch {
        /// Token algorithm.
        alg: String,
        /// Key id.
        kid: String,
    },
    /// The signature does not verify.
    #[error("the id_token's signature does not verify against the issuer's keys")]
    BadSignature,
    /// `exp` has passed.
    #[error("your sign-in has expired; sign in again")]
    Expired,
    /// `nbf` is in the future.
    #[error(
        "the id_token is not valid yet (nbf in the future); check the clocks of the issuer and the gateway"
    )]
    NotYetValid,
    /// `iss` is another issuer.
    #[error("the id_token was issued by {got:?}; this gateway trusts only {expected:?}")]
    WrongIssuer {
        /// Token issuer.
        got: String,
        /// Configured issuer.
        expected: String,
    },
    /// `aud` does not contain the client id.
    #[error(
        "the id_token is for audience {got}; this gateway accepts only aud={expected:?} (sign in through the nodeshell client)"
    )]
    WrongAudience {
        /// Token audience(s).
        got: String,
        /// Configured client id.
        expected: String,
    },
    /// A required claim is missing or has the wrong type.
    #[error("the id_token lacks a valid {0:?} claim")]
    MissingClaim(String),
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error(
        "the bearer token is {0} bytes, over the {MAX_TOKEN_BYTES}-byte limit for id_tokens; send the id_token itself"
    )]
    TooLarge(usize),
    /// The header lists extensions in `crit` that must be understood; this gateway knows none.
    #[error(
        "the id_token's header marks {0} as critical, which this gateway does not implement; the issuer must not require it"
    )]
    CriticalHeader(String),
    /// `azp` names another client, or several audiences come without `azp` naming ours.
    #[error(
        "the id_token was issued to client {got:?}, not to this gateway's client {expected:?}; sign in through the nodeshell client"
    )]
    WrongAuthorizedParty {
        /// The token's `azp` (empty when absent).
        got: String,
        /// Configured client id.
        expected: String,
    },
    /// `exp`, `nbf` or `iat` is not an integer number of seconds.
    #[error("the id_token's {0:?} claim must be an integer number of seconds since the epoch")]
    BadTimeClaim(String),
}

// === impl TokenError ===

impl TokenError {
    /// The API error for this refusal (always `E_AUTH`, with the reason spelled out).
    pub fn to_api(&self) -> ApiError {
        ApiError::new(ErrorCode::Auth, self.to_string())
    }
}

/// A verified token's claims.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedClaims {
    /// Every claim.
    pub claims: serde_json::Map<String, Value>,
    /// `aud` as a list.
    pub audiences: Vec<String>,
    /// `exp` (seconds since the epoch).
    pub expires_at: u64,
}

fn decode_part(part: &str, what: &str) -> Result<serde_json::Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed(format!("{what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenError::Malformed(format!(
            "{what} is not a JSON object"
        ))),
    }
}

/// The `aud` claim as a list (it may be a string or an array).
pub fn audiences(claims: &serde_json::Map<String, Value>) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// The header's algorithm and key id, refusing `none` and anything off the allow-list
/// before any key is looked at.
pub fn header_alg_kid(token: &str) -> Result<(Algorithm, Option<String>), TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    };
    let header = decode_part(header, "the header")?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| TokenError::Malformed("the header has no alg".into()))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(TokenError::Unsigned);
    }
    let parsed: Algorithm = alg
        .parse()
        .map_err(|_| TokenError::AlgorithmRefused(alg.to_string()))?;
    if !ALLOWED_ALGORITHMS.contains(&parsed) {
        return Err(TokenError::AlgorithmRefused(alg.to_string()));
    }
    // RFC 7515 §4.1.11: a recipient must refuse extensions it does not understand, and an
    // empty or malformed list is itself invalid. We implement none.
    if let Some(crit) = header.get("crit") {
        let names = match crit {
            Value::Array(list) if !list.is_empty() => list
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(", "),
            other => format!("a malformed crit ({other})"),
        };
        return Err(TokenError::CriticalHeader(names));
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((parsed, kid))
}

/// Verifies `token` with `keys` under `rules` at time `now` (seconds since the epoch).
pub fn verify(
    token: &str,
    keys: &KeySet,
    rules: &TokenRules,
    now: u64,
) -> Result<VerifiedClaims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge(token.len()));
    }
    let (alg, kid) = header_alg_kid(token)?;
    let key = keys
        .find(kid.as_deref(), alg)
        .ok_or_else(|| TokenError::UnknownKey {
            kid: kid.clone().unwrap_or_default(),
        })?;
    if !key.kind.fits(alg) || key.alg.is_some_and(|a| a != alg) {
        return Err(TokenError::KeyMismatch {
            alg: format!("{alg:?}"),
            kid: kid.unwrap_or_default(),
        });
    }
    // jsonwebtoken checks exp/nbf against the system clock; we check them ourselves against
    // `now` so the function stays pure, and let the library verify signature, iss and aud.
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_required_spec_claims(&["iss", "aud", "sub"]);
    validation.set_issuer(&[rules.issuer.as_str()]);
    validation.set_audience(&[rules.audience.as_str()]);
    let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key.key, &validation)
        .map_err(|e| map_library_error(e.kind(), token, rules))?;
    let claims = data.claims;
    // One string equal to the issuer (the library also takes a list).
    if claims.get("iss").and_then(Value::as_str) != Some(rules.issuer.as_str()) {
        return Err(TokenError::WrongIssuer {
            got: claims
                .get("iss")
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .unwrap_or_default(),
            expected: rules.issuer.clone(),
        });
    }
    check_authorized_party(&claims, &rules.audience)?;
    let exp = time_claim(&claims, "exp")?.ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
    let nbf = time_claim(&claims, "nbf")?;
    time_claim(&claims, "iat")?;
    if exp.saturating_add(rules.leeway_seconds) <= now {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = nbf
        && nbf > now.saturating_add(rules.leeway_seconds)
    {
        return Err(TokenError::NotYetValid);
    }
    // A control character in the sub would reach kubectl (spec.user.sub) and could rewrite an
    // auditor's terminal; OIDC Core 2 makes the sub an ASCII identifier, never text to print.
    if claims
        .get("sub")
        .and_then(Value::as_str)
        .is_none_or(|sub| sub.is_empty() || sub.chars().any(char::is_control))
    {
        return Err(TokenError::MissingClaim("sub".into()));
    }
    Ok(VerifiedClaims {
        audiences: audiences(&claims),
        claims,
        expires_at: exp,
    })
}

/// OIDC Core 3.1.3.7 (4, 5): with several audiences, `azp` must name our client; an `azp`
/// naming another client is refused whatever `aud` says.
fn check_authorized_party(
    claims: &serde_json::Map<String, Value>,
    client_id: &str,
) -> Result<(), TokenError> {
    let azp = claims.get("azp");
    let several = audiences(claims).len() > 1;
    match azp {
        Some(Value::String(a)) if a == client_id => Ok(()),
        None if !several => Ok(()),
        other => Err(TokenError::WrongAuthorizedParty {
            got: other
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .unwrap_or_default(),
            expected: client_id.to_string(),
        }),
    }
}

/// A NumericDate claim (RFC 7519 §2) that must be an integer when present: a float or a
/// string is refused, never skipped.
fn time_claim(
    claims: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<u64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| TokenError::BadTimeClaim(name.to_string())),
    }
}

fn map_library_error(
    kind: &jsonwebtoken::errors::ErrorKind,
    token: &str,
    rules: &TokenRules,
) -> TokenError {
    use jsonwebtoken::errors::ErrorKind as K;
    // Only reached after the signature verified (the library checks it first), so reading
    // the claims for the message is safe.
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|p| decode_part(p, "claims").ok())
        .unwrap_or_default();
    match kind {
        K::InvalidSignature => TokenError::BadSignature,
        K::InvalidIssuer => TokenError::WrongIssuer {
            got: claims
                .get("iss")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            expected: rules.issuer.clone(),
        },
        K::InvalidAudience => TokenError::WrongAudience {
            got: format!("{:?}", audiences(&claims)),
            expected: rules.audience.clone(),
        },
        K::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
        K::InvalidClaimFormat(c) => TokenError::MissingClaim(c.clone()),
        K::InvalidAlgorithm => TokenError::AlgorithmRefused("a mismatched algorithm".into()),
        other => TokenError::Malformed(format!("{other:?}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use crate::sim::jwt::{BadToken, KeyRing};
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use serde_json::json;

    pub(crate) const ISS: &str = "https://issuer.test";
    pub(crate) const NOW: u64 = 1_800_000_000;

    pub(crate) fn rules() -> TokenRules {
        TokenRules {
            issuer: ISS.into(),
            audience: "nodeshell".into(),
            leeway_seconds: 30,
        }
    }

    pub(crate) fn claims() -> Value {
        json!({
            "iss": ISS, "sub": "auth0|alice", "aud": "nodeshell",
            "iat": NOW, "nbf": NOW, "exp": NOW + 600,
            "email": "alice@example.com", "name": "Alice", "groups": ["sre"],
        })
    }

    pub(crate) fn ring() -> (KeyRing, KeySet) {
        let ring = KeyRing::generate().unwrap();
        let set = KeySet::from_jwks(&ring.jwks()).unwrap();
        (ring, set)
    }

    #[test]
    fn a_good_token_verifies() {
        let (ring, keys) = ring();
        let token = ring.sign_claims(&claims()).unwrap();
        let v = verify(&token, &keys, &rules(), NOW).unwrap();
        assert_eq!(v.audiences, vec!["nodeshell".to_string()]);
        assert_eq!(v.claims["sub"], "auth0|alice");
        assert_eq!(v.expires_at, NOW + 600);
    }

    #[test]
    fn every_bad_kind_is_refused_with_its_reason() {
        let (ring, keys) = ring();
        let cases = [
            (BadToken::Expired, "expired"),
            (BadToken::WrongAudience, "aud=\"nodeshell\""),
            (BadToken::WrongIssuer, "trusts only"),
            (BadToken::UnknownKid, "does not publish"),
            (BadToken::AlgNone, "alg none"),
            (BadToken::Hs256, "HS256"),
            (BadToken::ForgedSignature, "signature does not verify"),
        ];
        for (kind, words) in cases {
            let token = ring.mint_bad(kind, claims()).unwrap();
            let err = verify(&token, &keys, &rules(), NOW).unwrap_err();
            assert!(err.to_string().contains(words), "{kind:?}: {err}");
            assert_eq!(err.to_api().code, ErrorCode::Auth);
        }
    }

    #[test]
    fn wrong_audience_names_the_expected_one() {
        let (ring, keys) = ring();
        let token = ring.mint_bad(BadToken::WrongAudience, claims()).unwrap();
        let err = verify(&token, &keys, &rules(), NOW).unwrap_err();
        assert_eq!(
            err,
            TokenError::WrongAudience {
                got: "[\"someone-else\"]".into(),
                expected: "nodeshell".into()
            }
        );
    }

    #[test]
    fn leeway_applies_to_exp_and_nbf() {
        let (ring, keys) = ring();
        let mut c = claims();
        c["exp"] = json!(NOW - 10);
        let token = ring.sign_claims(&c).unwrap();
        assert!(
            verify(&token, &keys, &rules(), NOW).is_ok(),
            "10 s late is within 30 s"
        );
        assert_eq!(
            verify(&token, &keys, &rules(), NOW + 60).unwrap_err(),
            TokenError::Expired
        );
        let mut c = claims();
        c["nbf"] = json!(NOW + 120);
        let token = ring.sign_claims(&c).unwrap();
        assert_eq!(
            verify(&token, &keys, &rules(), NOW).unwrap_err(),
            TokenError::NotYetValid
        );
    }

    #[test]
    fn audience_lists_and_missing_sub() {
        let (ring, keys) = ring();
        let mut c = claims();
        c["aud"] = json!(["other", "nodeshell"]);
        // Several audiences are accepted only with azp naming us (OIDC Core 3.1.3.7).
        c["azp"] = json!("nodeshell");
        let token = ring.sign_claims(&c).unwrap();
        let v = verify(&token, &keys, &rules(), NOW).unwrap();
        assert_eq!(v.audiences.len(), 2);
        let mut c = claims();
        c.as_object_mut().unwrap().remove("sub");
        let token = ring.sign_claims(&c).unwrap();
        assert!(matches!(
            verify(&token, &keys, &rules(), NOW).unwrap_err(),
            TokenError::MissingClaim(_)
        ));
        for sub in ["alice\u{1b}[2J", "bob\r\nroot", "x\u{9b}"] {
            let mut c = claims();
            c["sub"] = json!(sub);
            let token = ring.sign_claims(&c).unwrap();
            assert_eq!(
                verify(&token, &keys, &rules(), NOW).unwrap_err(),
                TokenError::MissingClaim("sub".into()),
                "{sub:?}"
            );
        }
        assert!(matches!(
            verify("garbage", &keys, &rules(), NOW).unwrap_err(),
            TokenError::Malformed(_)
        ));
    }

    fn es256_token(pair: &EcdsaKeyPair, kid: &str, claims: &Value) -> String {
        es256_token_with(
            pair,
            &json!({"alg": "ES256", "typ": "JWT", "kid": kid}),
            claims,
        )
    }

    fn es256_token_with(pair: &EcdsaKeyPair, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
        );
        let sig = pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    #[test]
    fn es256_keys_verify_and_rsa_keys_do_not_stand_in_for_ec() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "ec-1", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]});
        let keys = KeySet::from_jwks(&jwks).unwrap();
        let token = es256_token(&pair, "ec-1", &claims());
        assert!(verify(&token, &keys, &rules(), NOW).is_ok());
        // An RS256 token claiming the EC key's kid must not be checked with it.
        let (ring, _) = ring();
        let rs = ring.sign_claims(&claims()).unwrap();
        let (_, rs_kid) = header_alg_kid(&rs).unwrap();
        let mut keys_by_rsa_kid = jwks.clone();
        keys_by_rsa_kid["keys"][0]["kid"] = json!(rs_kid.unwrap());
        let keys = KeySet::from_jwks(&keys_by_rsa_kid).unwrap();
        assert!(matches!(
            verify(&rs, &keys, &rules(), NOW).unwrap_err(),
            TokenError::KeyMismatch { .. }
        ));
    }

    fn ec_keys() -> (EcdsaKeyPair, KeySet) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let (x, y) = pair.public_key().as_ref()[1..].split_at(32);
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "ec-1", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]});
        (pair, KeySet::from_jwks(&jwks).unwrap())
    }

    #[test]
    fn iss_must_be_one_string_equal_to_the_issuer() {
        let (ring, keys) = ring();
        let mut c = claims();
        c["iss"] = json!([ISS]);
        let token = ring.sign_claims(&c).unwrap();
        assert!(matches!(
            verify(&token, &keys, &rules(), NOW).unwrap_err(),
            TokenError::WrongIssuer { .. }
        ));
    }

    #[test]
    fn several_audiences_need_azp_naming_our_client() {
        let (ring, keys) = ring();
        let verdict = |aud: Value, azp: Option<&str>| {
            let mut c = claims();
            c["aud"] = aud;
            if let Some(azp) = azp {
                c["azp"] = json!(azp);
            }
            verify(&ring.sign_claims(&c).unwrap(), &keys, &rules(), NOW)
        };
        let several = json!(["nodeshell", "dashboard"]);
        assert!(matches!(
            verdict(several.clone(), None).unwrap_err(),
            TokenError::WrongAuthorizedParty { ref got, .. } if got.is_empty()
        ));
        assert!(matches!(
            verdict(several.clone(), Some("dashboard")).unwrap_err(),
            TokenError::WrongAuthorizedParty { ref got, .. } if got == "dashboard"
        ));
        assert!(verdict(several, Some("nodeshell")).is_ok());
        // One audience: azp may be absent, but if present it must be ours.
        assert!(verdict(json!("nodeshell"), None).is_ok());
        assert!(matches!(
            verdict(json!("nodeshell"), Some("console-spa")).unwrap_err(),
            TokenError::WrongAuthorizedParty { .. }
        ));
        let err = verdict(json!("nodeshell"), Some("console-spa")).unwrap_err();
        assert_eq!(err.to_api().code, ErrorCode::Auth);
    }

    #[test]
    fn time_claims_must_be_integers() {
        let (ring, keys) = ring();
        for (claim, value) in [
            ("exp", json!((NOW + 600) as f64 + 0.5)),
            ("exp", json!((NOW + 600).to_string())),
            ("nbf", json!(NOW as f64 + 0.5)),
            ("nbf", json!(NOW.to_string())),
            ("iat", json!("yesterday")),
            ("iat", json!(-5)),
        ] {
            let mut c = claims();
            c[claim] = value.clone();
            let token = ring.sign_claims(&c).unwrap();
            let err = verify(&token, &keys, &rules(), NOW).unwrap_err();
            assert_eq!(
                err,
                TokenError::BadTimeClaim(claim.to_string()),
                "{claim} = {value}"
            );
        }
    }

    #[test]
    fn an_unknown_critical_header_is_refused() {
        let (pair, keys) = ec_keys();
        let ok = es256_token_with(&pair, &json!({"alg": "ES256", "kid": "ec-1"}), &claims());
        assert!(verify(&ok, &keys, &rules(), NOW).is_ok());
        for crit in [json!(["exp"]), json!(["b64"]), json!([]), json!("b64")] {
            let token = es256_token_with(
                &pair,
                &json!({"alg": "ES256", "kid": "ec-1", "crit": crit, "b64": true, "exp": 1}),
                &claims(),
            );
            assert!(
                matches!(
                    verify(&token, &keys, &rules(), NOW).unwrap_err(),
                    TokenError::CriticalHeader(_)
                ),
                "crit {crit}"
            );
        }
    }

    #[test]
    fn a_token_over_16_kib_is_refused_before_parsing() {
        let (ring, keys) = ring();
        let mut c = claims();
        c["padding"] = json!("x".repeat(MAX_TOKEN_BYTES));
        let token = ring.sign_claims(&c).unwrap();
        assert_eq!(
            verify(&token, &keys, &rules(), NOW).unwrap_err(),
            TokenError::TooLarge(token.len())
        );
        // Not even a well-formed token: refused for its size, not its shape.
        let junk = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(
            verify(&junk, &keys, &rules(), NOW).unwrap_err(),
            TokenError::TooLarge(MAX_TOKEN_BYTES + 1)
        );
    }
}

//! STS's checks, as pure functions: web identity token validation, the role's trust policy,
//! and the request parameter rules of AssumeRoleWithWebIdentity.

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::config::RoleConfig;
use super::trust_policy::{PolicyError, TrustDecision, TrustPolicy, TrustRequest, simple_policy};

/// STS error codes the simulator returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StsErrorCode {
    /// The trust policy does not allow this caller (403).
    AccessDenied,
    /// The token is malformed, not from a registered issuer, or badly signed (400).
    InvalidIdentityToken,
    /// The token's `exp` has passed (400).
    ExpiredTokenException,
    /// A request parameter breaks its constraints (400).
    ValidationError,
    /// The operation is not known (400).
    InvalidAction,
    /// STS could not reach the token's issuer (400, transient).
    IdpCommunicationError,
}

impl StsErrorCode {
    /// The `<Code>` text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessDenied => "AccessDenied",
            Self::InvalidIdentityToken => "InvalidIdentityToken",
            Self::ExpiredTokenException => "ExpiredTokenException",
            Self::ValidationError => "ValidationError",
            Self::InvalidAction => "InvalidAction",
            Self::IdpCommunicationError => "IDPCommunicationError",
        }
    }

    /// The HTTP status AWS answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::AccessDenied => 403,
            _ => 400,
        }
    }
}

/// A rejected AssumeRoleWithWebIdentity call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct StsRejection {
    /// Error code.
    pub code: StsErrorCode,
    /// Human message.
    pub message: String,
}

fn reject(code: StsErrorCode, message: impl Into<String>) -> StsRejection {
    StsRejection {
        code,
        message: message.into(),
    }
}

/// The facts a validated token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebIdentity {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// The `aud` value that matched.
    pub audience: String,
    /// `azp`, when the token carries one: IAM's `<provider>:aud` condition key reads it
    /// instead of `aud` then (IAM user guide, "IAM and AWS STS condition context keys").
    pub authorized_party: Option<String>,
}

/// The registered OIDC provider STS trusts.
pub struct RegisteredIssuer<'a> {
    /// Issuer URL (`iss` must equal it).
    pub url: &'a str,
    /// The provider's client-id list.
    pub audiences: &'a [String],
    /// Looks a published key up by kid (PKCS#1 DER).
    pub key: &'a dyn Fn(&str) -> Option<Vec<u8>>,
    /// Knob `issuer.allowHttpIssuer`: accept an `http://` issuer, which IAM cannot register.
    pub allow_http: bool,
}

fn decode_json(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Validates a web identity token the way STS does for a registered OIDC provider.
pub fn validate_token(
    token: &str,
    issuer: &RegisteredIssuer<'_>,
    now: u64,
) -> Result<WebIdentity, StsRejection> {
    let malformed = || {
        reject(
            StsErrorCode::InvalidIdentityToken,
            "Couldn't parse the web identity token.",
        )
    };
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let header = decode_json(h).ok_or_else(malformed)?;
    let claims = decode_json(p).ok_or_else(malformed)?;
    let iss = claims["iss"].as_str().unwrap_or_default();
    // IAM registers only https providers (CreateOpenIDConnectProvider: the URL "must begin
    // with https://"), so an http `iss` matches no provider of the account.
    if iss != issuer.url || !(iss.starts_with("https://") || issuer.allow_http) {
        return Err(reject(
            StsErrorCode::InvalidIdentityToken,
            format!("No OpenIDConnect provider found in your account for {iss}"),
        ));
    }
    if header["alg"].as_str() != Some("RS256") {
        return Err(reject(
            StsErrorCode::InvalidIdentityToken,
            "The web identity token uses an unsupported signing algorithm.",
        ));
    }
    let kid = header["kid"].as_str().unwrap_or_default();
    let Some(der) = (issuer.key)(kid) else {
        return Err(reject(
            StsErrorCode::InvalidIdentityToken,
            "The web identity token was signed with a key that the provider's JWKS does not list.",
        ));
    };
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| malformed())?;
    let signed = &token[..h.len() + 1 + p.len()];
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| {
            reject(
                StsErrorCode::InvalidIdentityToken,
                "The web identity token's signature is invalid.",
            )
        })?;
    let exp = claims["exp"].as_u64().ok_or_else(malformed)?;
    if exp <= now {
        return Err(reject(
            StsErrorCode::ExpiredTokenException,
            format!(
                "Token expired: current date/time {now} must be before the expiration date/time {exp}"
            ),
        ));
    }
    let auds: Vec<&str> = match &claims["aud"] {
        Value::String(a) => vec![a.as_str()],
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let Some(audience) = auds
        .iter()
        .find(|a| issuer.audiences.iter().any(|x| x == *a))
    else {
        return Err(reject(
            StsErrorCode::InvalidIdentityToken,
            "Incorrect token audience",
        ));
    };
    let subject = claims["sub"].as_str().ok_or_else(malformed)?.to_string();
    Ok(WebIdentity {
        issuer: iss.to_string(),
        subject,
        audience: (*audience).to_string(),
        authorized_party: claims["azp"].as_str().map(str::to_string),
    })
}

/// The role's trust policy: its `trustPolicy` document, or the policy its `audience` and
/// `allowedSubs` stand for (trusting the account's provider for `issuer_url`).
pub fn role_trust_policy(
    role: &RoleConfig,
    account_id: &str,
    issuer_url: &str,
) -> Result<TrustPolicy, PolicyError> {
    match &role.trust_policy {
        Some(document) => TrustPolicy::parse(document),
        None => TrustPolicy::parse(&simple_policy(
            account_id,
            issuer_url,
            &role.audience,
            role.allowed_subs.as_deref(),
        )),
    }
}

/// The role's trust policy against this call. An explicit and an implicit deny get the same
/// answer: STS does not say which statement refused.
pub fn check_trust_policy(
    policy: &TrustPolicy,
    request: &TrustRequest,
) -> Result<(), StsRejection> {
    match policy.evaluate(request) {
        TrustDecision::Allowed => Ok(()),
        TrustDecision::ExplicitDeny | TrustDecision::ImplicitDeny => Err(reject(
            StsErrorCode::AccessDenied,
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        )),
    }
}

/// RoleSessionName: 2–64 characters of `[\w+=,.@-]`.
pub fn check_role_session_name(name: &str) -> Result<(), StsRejection> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c);
    if !(2..=64).contains(&name.len()) || !name.chars().all(valid_char) {
        return Err(reject(
            StsErrorCode::ValidationError,
            format!(
                "1 validation error detected: Value '{name}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]* and have length between 2 and 64"
            ),
        ));
    }
    Ok(())
}

/// DurationSeconds: 900–43200 and no more than the role's maximum.
pub fn check_duration(requested: Option<&str>, role_max: u32) -> Result<u32, StsRejection> {
    let Some(text) = requested else {
        return Ok(3600.min(role_max.max(900)));
    };
    let value: u32 = text.parse().map_err(|_| {
        reject(
            StsErrorCode::ValidationError,
            format!("Invalid DurationSeconds '{text}'"),
        )
    })?;
    if !(900..=43200).contains(&value) {
        return Err(reject(
            StsErrorCode::ValidationError,
            format!(
                "1 validation error detected: Value '{value}' at 'durationSeconds' failed to satisfy constraint: Member must have value between 900 and 43200"
            ),
        ));
    }
    if value > role_max {
        return Err(reject(
            StsErrorCode::ValidationError,
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
        ));
    }
    Ok(value)
}

/// Splits `arn:aws:iam::<acct>:role/<path/>name` into (account, role name).
pub fn parse_role_arn(arn: &str) -> Option<(&str, String, &str)> {
    let rest = arn.strip_prefix("arn:aws:iam::")?;
    let (account, resource) = rest.split_once(':')?;
    let path_and_name = resource.strip_prefix("role/")?;
    let (path, name) = match path_and_name.rsplit_once('/') {
        Some((path, name)) => (format!("/{path}/"), name),
        None => ("/".to_string(), path_and_name),
    };
    if account.len() != 12
        || !account.chars().all(|c| c.is_ascii_digit())
        || name.is_empty()
        || path.contains("//")
    {
        return None;
    }
    Some((account, path, name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::super::config::TestUser;
    use super::super::jwt::{BadToken, KeyRing, user_claims};
    use super::*;

    const ISS: &str = "https://127.0.0.1:1";

    fn check(ring: &KeyRing, token: &str, now: u64) -> Result<WebIdentity, StsRejection> {
        check_at(ring, token, now, ISS, false)
    }

    fn check_at(
        ring: &KeyRing,
        token: &str,
        now: u64,
        url: &str,
        allow_http: bool,
    ) -> Result<WebIdentity, StsRejection> {
        let auds = vec!["nodeshell".to_string()];
        let key = |kid: &str| ring.public_key_der(kid);
        let issuer = RegisteredIssuer {
            url,
            audiences: &auds,
            key: &key,
            allow_http,
        };
        validate_token(token, &issuer, now)
    }

    #[test]
    fn an_http_issuer_matches_no_provider_unless_the_knob_allows_it() {
        let ring = KeyRing::generate().unwrap();
        let now = 1_800_000_000;
        let http = "http://127.0.0.1:1";
        let claims = user_claims(&TestUser::default(), http, "nodeshell", now, 600);
        let token = ring.sign_claims(&claims).unwrap();
        let refused = check_at(&ring, &token, now, http, false).unwrap_err();
        assert_eq!(refused.code, StsErrorCode::InvalidIdentityToken);
        assert_eq!(
            refused.message,
            "No OpenIDConnect provider found in your account for http://127.0.0.1:1"
        );
        let allowed = check_at(&ring, &token, now, http, true).unwrap();
        assert_eq!(allowed.issuer, http);
    }

    #[test]
    fn good_and_bad_tokens() {
        let ring = KeyRing::generate().unwrap();
        let now = 1_800_000_000;
        let claims = user_claims(&TestUser::default(), ISS, "nodeshell", now, 600);
        let good = ring.sign_claims(&claims).unwrap();
        let id = check(&ring, &good, now).unwrap();
        assert_eq!(id.subject, "alice");
        let expect = [
            (BadToken::Expired, StsErrorCode::ExpiredTokenException),
            (BadToken::WrongAudience, StsErrorCode::InvalidIdentityToken),
            (BadToken::WrongIssuer, StsErrorCode::InvalidIdentityToken),
            (BadToken::UnknownKid, StsErrorCode::InvalidIdentityToken),
            (BadToken::AlgNone, StsErrorCode::InvalidIdentityToken),
            (BadToken::Hs256, StsErrorCode::InvalidIdentityToken),
            (
                BadToken::ForgedSignature,
                StsErrorCode::InvalidIdentityToken,
            ),
        ];
        for (kind, code) in expect {
            let bad = ring.mint_bad(kind, claims.clone()).unwrap();
            assert_eq!(check(&ring, &bad, now).unwrap_err().code, code, "{kind:?}");
        }
        assert_eq!(
            check(&ring, "not-a-jwt", now).unwrap_err().code,
            StsErrorCode::InvalidIdentityToken
        );
    }

    #[test]
    fn rotation_keeps_old_key_listed_then_drops_it() {
        let mut ring = KeyRing::generate().unwrap();
        let now = 1_800_000_000;
        let claims = user_claims(&TestUser::default(), ISS, "nodeshell", now, 600);
        let old = ring.sign_claims(&claims).unwrap();
        ring.rotate(std::time::Duration::from_secs(60)).unwrap();
        let new = ring.sign_claims(&claims).unwrap();
        assert_eq!(ring.public_keys().len(), 2);
        assert!(check(&ring, &old, now).is_ok());
        assert!(check(&ring, &new, now).is_ok());
        ring.rotate(std::time::Duration::ZERO).unwrap();
        assert_eq!(ring.public_keys().len(), 1);
        assert!(check(&ring, &old, now).is_err());
    }

    #[test]
    fn trust_policy_of_a_simple_role_and_of_a_document() {
        use super::super::trust_policy::web_identity_request;
        let role = RoleConfig {
            allowed_subs: Some(vec!["alice".to_string()]),
            ..RoleConfig::default()
        };
        let policy = role_trust_policy(&role, "123456789012", ISS).unwrap();
        let call =
            |aud: &str, sub: &str| web_identity_request("123456789012", ISS, aud, sub, "ns-alice");
        assert!(check_trust_policy(&policy, &call("nodeshell", "alice")).is_ok());
        let denied = check_trust_policy(&policy, &call("nodeshell", "mallory")).unwrap_err();
        assert_eq!(denied.code, StsErrorCode::AccessDenied);
        assert_eq!(
            denied.message,
            "Not authorized to perform sts:AssumeRoleWithWebIdentity"
        );
        assert_eq!(
            check_trust_policy(&policy, &call("other", "alice"))
                .unwrap_err()
                .code,
            StsErrorCode::AccessDenied
        );
        // A document replaces the simple conditions; a malformed one is refused.
        let role = RoleConfig {
            trust_policy: Some(serde_json::json!({
                "Version": "2012-10-17",
                "Statement": {"Effect": "Allow", "Principal": "*",
                              "Action": "sts:AssumeRoleWithWebIdentity",
                              "Condition": {"StringEquals": {"127.0.0.1:1:sub": "bob"}}},
            })),
            ..role
        };
        let policy = role_trust_policy(&role, "123456789012", ISS).unwrap();
        assert!(check_trust_policy(&policy, &call("any", "bob")).is_ok());
        assert!(check_trust_policy(&policy, &call("nodeshell", "alice")).is_err());
        let broken = RoleConfig {
            trust_policy: Some(serde_json::json!({"Statement": "nope"})),
            ..RoleConfig::default()
        };
        assert!(role_trust_policy(&broken, "123456789012", ISS).is_err());
    }

    #[test]
    fn session_name_and_duration_rules() {
        assert!(check_role_session_name("ns-alice@example.com").is_ok());
        assert!(check_role_session_name("a").is_err());
        assert!(check_role_session_name(&"a".repeat(65)).is_err());
        assert!(check_role_session_name("has space").is_err());
        assert!(check_role_session_name("a/b").is_err());
        assert_eq!(check_duration(None, 43200).unwrap(), 3600);
        assert_eq!(check_duration(Some("900"), 43200).unwrap(), 900);
        assert!(check_duration(Some("899"), 43200).is_err());
        assert!(check_duration(Some("43201"), 43200).is_err());
        assert!(check_duration(Some("7200"), 3600).is_err());
        assert!(check_duration(Some("x"), 3600).is_err());
    }

    #[test]
    fn role_arns() {
        assert_eq!(
            parse_role_arn("arn:aws:iam::123456789012:role/ops/nodeshell-user"),
            Some(("123456789012", "/ops/".to_string(), "nodeshell-user"))
        );
        assert_eq!(
            parse_role_arn("arn:aws:iam::123456789012:role/nodeshell-user"),
            Some(("123456789012", "/".to_string(), "nodeshell-user"))
        );
        assert_eq!(
            parse_role_arn("arn:aws:iam::123456789012:role/a/b/nodeshell-user").map(|r| r.1),
            Some("/a/b/".to_string())
        );
        assert_eq!(parse_role_arn("arn:aws:iam::123456789012:role//x"), None);
        assert_eq!(parse_role_arn("arn:aws:iam::123:role/x"), None);
        assert_eq!(parse_role_arn("arn:aws:iam::123456789012:user/x"), None);
    }
}

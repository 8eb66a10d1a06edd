//! The checks on the OIDC settings, as pure functions: the issuer (and the JWKS it names) must
//! be served over https, except on loopback, so tests and `nodeshell dev` work; the floor under
//! `jwksMinRefetchSeconds`; the claim that names a person to auditors.

use std::net::IpAddr;
use std::time::Duration;

/// Least `jwksMinRefetchSeconds`: every token with an unknown `kid` may cost one request to the
/// issuer per this interval per replica, so a flood of made-up kids cannot hammer it.
pub const MIN_JWKS_REFETCH_SECONDS: u64 = 5;

/// Default `oidc.identityClaim`: the `sub`, the one claim that never changes, is unique at the
/// issuer and is what IAM and CloudTrail see.
pub const DEFAULT_IDENTITY_CLAIM: &str = "sub";

/// CA certificates the gateway trusts for the issuer besides the system's (`oidc.caFile`):
/// an issuer whose https certificate comes from an internal CA (a corporate Keycloak or Dex).
/// Used by both of the gateway's clients of the issuer (discovery and JWKS; the console's
/// code exchange and refresh).
#[derive(Clone, PartialEq, Eq)]
pub struct IssuerCa {
    pem: Vec<u8>,
    certificates: usize,
}

impl std::fmt::Debug for IssuerCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IssuerCa({} certificates)", self.certificates)
    }
}

impl IssuerCa {
    /// The certificates of a PEM file; refused when it holds none or one that does not parse.
    pub fn from_pem(pem: Vec<u8>) -> Result<Self, String> {
        let parsed = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("not a PEM certificate bundle ({e})"))?;
        if parsed.is_empty() {
            return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_string());
        }
        Ok(Self {
            certificates: parsed.len(),
            pem,
        })
    }

    /// The certificates, for a client's trust roots.
    pub fn certificates(&self) -> Vec<reqwest::Certificate> {
        reqwest::Certificate::from_pem_bundle(&self.pem).unwrap_or_default()
    }

    /// How many certificates the file holds.
    pub fn len(&self) -> usize {
        self.certificates
    }

    /// Never true for a value [`Self::from_pem`] returned.
    pub fn is_empty(&self) -> bool {
        self.certificates == 0
    }
}

/// Whether `url` may be fetched for keys or discovery: https anywhere, http only on a
/// loopback host (`127.0.0.0/8`, `::1`, `localhost`).
pub fn secure_or_loopback(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
            None => false,
        },
        _ => false,
    }
}

/// The issuer URL must be an https URL without query or fragment (OIDC Discovery §2); plain
/// http is accepted only on loopback.
pub fn check_issuer_url(issuer: &str) -> Result<(), String> {
    let parsed = url::Url::parse(issuer)
        .map_err(|e| format!("oidc.issuerUrl {issuer:?} is not a URL ({e})"))?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!(
            "oidc.issuerUrl {issuer:?} has a query or fragment; an OIDC issuer is https://host[/path] only"
        ));
    }
    if !secure_or_loopback(&parsed) {
        return Err(format!(
            "oidc.issuerUrl {issuer:?} must use https (plain http is accepted only on 127.0.0.1, ::1 or localhost, for tests and `nodeshell dev`): keys fetched over http could be replaced on the way"
        ));
    }
    Ok(())
}

/// `jwksMinRefetchSeconds` (default 10) must be at least [`MIN_JWKS_REFETCH_SECONDS`].
pub fn jwks_min_refetch(seconds: Option<u64>) -> Result<Duration, String> {
    let seconds = seconds.unwrap_or(10);
    if seconds < MIN_JWKS_REFETCH_SECONDS {
        return Err(format!(
            "oidc.jwksMinRefetchSeconds is {seconds}; it must be at least {MIN_JWKS_REFETCH_SECONDS}, or every token naming an unknown key id could make the gateway call the issuer"
        ));
    }
    Ok(Duration::from_secs(seconds))
}

/// The claim that names a person in `spec.user.name` (the USER column), the user label and
/// Events: `sub` unless set. `email` is shown only when the issuer says it is verified.
pub fn identity_claim(configured: Option<String>) -> Result<String, String> {
    let claim = configured
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| DEFAULT_IDENTITY_CLAIM.to_string());
    // Claims whose value is not one person's name would make every row read alike.
    if matches!(
        claim.as_str(),
        "iss" | "aud" | "azp" | "exp" | "iat" | "nbf" | "nonce"
    ) {
        return Err(format!(
            "oidc.identityClaim {claim:?} does not name a person; use sub (the default), email or preferred_username"
        ));
    }
    Ok(claim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_must_be_https_except_on_loopback() {
        for ok in [
            "https://login.example.com/realms/ops",
            "https://login.example.com:8443",
            "http://127.0.0.1:9000",
            "http://127.1.2.3",
            "http://localhost:8080/issuer",
            "http://[::1]:9000",
        ] {
            assert_eq!(check_issuer_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://login.example.com",
            "http://10.0.0.1",
            "http://localhost.example.com",
            "ftp://127.0.0.1",
            "https://login.example.com/?tenant=a",
            "https://login.example.com/#x",
            "login.example.com",
        ] {
            let err = check_issuer_url(bad).unwrap_err();
            assert!(err.contains("oidc.issuerUrl"), "{bad}: {err}");
        }
        assert!(
            check_issuer_url("http://login.example.com")
                .unwrap_err()
                .contains("https")
        );
    }

    #[test]
    fn the_refetch_floor_is_enforced() {
        assert_eq!(jwks_min_refetch(None), Ok(Duration::from_secs(10)));
        assert_eq!(jwks_min_refetch(Some(5)), Ok(Duration::from_secs(5)));
        for low in [0, 1, 4] {
            let err = jwks_min_refetch(Some(low)).unwrap_err();
            assert!(err.contains("at least 5"), "{err}");
        }
    }

    #[test]
    fn the_identity_claim_defaults_to_sub() {
        assert_eq!(identity_claim(None).unwrap(), "sub");
        assert_eq!(identity_claim(Some(" ".into())).unwrap(), "sub");
        assert_eq!(identity_claim(Some("email".into())).unwrap(), "email");
        assert!(identity_claim(Some("aud".into())).is_err());
    }
}

//! The console's sign-in through the gateway (backend-for-frontend): the gateway as a
//! confidential OIDC client (its secret, its redirect URL) and the bounds of the sign-ins and
//! console sessions it keeps in memory. The one home of their defaults and checks.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use super::{ConfigError, GatewayArgs, GatewayFile};

/// The confidential client's secret. `Debug` never shows it; it is read from a mounted
/// Kubernetes Secret (a file) or the environment, never from a flag's value in `ps`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// Wraps a secret (surrounding whitespace, such as a file's last newline, removed).
    pub fn new(secret: impl AsRef<str>) -> Self {
        Self(secret.as_ref().trim().to_string())
    }

    /// The secret, for the token endpoint's `Authorization: Basic` only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// Parses `NODESHELL_OIDC_CLIENT_SECRET` for clap.
pub fn parse_client_secret(value: &str) -> Result<ClientSecret, String> {
    Ok(ClientSecret::new(value))
}

/// Default of `identityCheckSeconds`: how often a live shell's person is checked again at
/// the issuer (a refresh of their tokens).
pub const DEFAULT_IDENTITY_CHECK: Duration = Duration::from_secs(300);
/// A sign-in started at `/auth/login` must come back to `/auth/callback` within this.
pub const PENDING_LOGIN_TTL: Duration = Duration::from_secs(600);
/// Finished sign-ins' states a replica remembers to refuse them again (the oldest are
/// forgotten first; a sign-in in progress itself is kept by the browser, sealed).
pub const MAX_PENDING_LOGINS: usize = 4096;
/// Console sessions one person may hold at once (browsers, devices); a new sign-in ends
/// their oldest beyond this.
pub const MAX_CONSOLE_SESSIONS_PER_USER: usize = 5;
/// Console sessions this replica keeps at once; a new sign-in ends the least recently used
/// beyond this.
pub const MAX_CONSOLE_SESSIONS: usize = 10_000;
/// Default of `consoleSessionIdleSeconds`: a console session unused this long ends.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(3600);
/// Default of `consoleSessionMaxSeconds`: a console session ends this long after sign-in.
pub const DEFAULT_SESSION_MAX: Duration = Duration::from_secs(12 * 3600);

/// The console's sign-in through the gateway, when configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSettings {
    /// The confidential client's secret.
    pub client_secret: ClientSecret,
    /// Where the issuer sends the browser back: `<public URL>/auth/callback`.
    pub redirect_url: String,
    /// The gateway's public origin (`scheme://host[:port]` of the redirect URL).
    pub public_origin: String,
    /// Whether the public URL is https: cookies are then `Secure` and `__Host-` prefixed.
    pub secure_cookies: bool,
    /// A console session unused this long ends.
    pub session_idle: Duration,
    /// A console session ends this long after sign-in, whatever its use.
    pub session_max: Duration,
}

/// Settings of the identity re-check of live shells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityCheck {
    /// How often a live shell's person is checked again (at most).
    pub every: Duration,
}

impl Default for IdentityCheck {
    fn default() -> Self {
        Self {
            every: DEFAULT_IDENTITY_CHECK,
        }
    }
}

fn read_secret_file(path: &Path) -> Result<ClientSecret, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let secret = ClientSecret::new(text);
    if secret.expose().is_empty() {
        return Err(ConfigError::Invalid(format!(
            "the client secret file {} is empty; mount the Kubernetes Secret that holds the OIDC client secret",
            path.display()
        )));
    }
    Ok(secret)
}

/// Flags and environment over the file: `None` when no client secret is configured (the
/// console's sign-in is then off and only bearer tokens are accepted).
pub(super) fn resolve_login(
    args: &GatewayArgs,
    file: &GatewayFile,
) -> Result<Option<LoginSettings>, ConfigError> {
    let secret = match (&args.oidc_client_secret, &args.oidc_client_secret_file) {
        (Some(secret), _) if !secret.expose().is_empty() => Some(secret.clone()),
        (_, Some(path)) => Some(read_secret_file(path)?),
        _ => match &file.oidc.client_secret_file {
            Some(path) => Some(read_secret_file(path)?),
            None => None,
        },
    };
    let redirect = args
        .oidc_redirect_url
        .clone()
        .filter(|u| !u.trim().is_empty())
        .or_else(|| file.oidc.redirect_url.clone());
    let (client_secret, redirect_url) = match (secret, redirect) {
        (None, None) => return Ok(None),
        (Some(secret), Some(url)) => (secret, url),
        (Some(_), None) => {
            return Err(ConfigError::Invalid(
                "a client secret is set but no redirect URL: set --oidc-redirect-url (NODESHELL_OIDC_REDIRECT_URL) or oidc.redirectUrl to https://<gateway host>/auth/callback".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::Invalid(
                "a redirect URL is set but no client secret: set oidc.clientSecretFile (a mounted Kubernetes Secret), --oidc-client-secret-file or NODESHELL_OIDC_CLIENT_SECRET".into(),
            ));
        }
    };
    let parsed = url::Url::parse(&redirect_url).map_err(|e| {
        ConfigError::Invalid(format!(
            "oidc.redirectUrl {redirect_url:?} is not an absolute URL ({e}); use https://<gateway host>/auth/callback"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.path() != "/auth/callback" {
        return Err(ConfigError::Invalid(format!(
            "oidc.redirectUrl {redirect_url:?} must be http(s)://<gateway host>/auth/callback, the route that finishes a sign-in"
        )));
    }
    let secure_cookies = parsed.scheme() == "https";
    let public_origin = parsed.origin().ascii_serialization();
    let idle = file
        .console_session_idle_seconds
        .map_or(DEFAULT_SESSION_IDLE, Duration::from_secs);
    let max = file
        .console_session_max_seconds
        .map_or(DEFAULT_SESSION_MAX, Duration::from_secs);
    if idle.is_zero() || max.is_zero() {
        return Err(ConfigError::Invalid(
            "consoleSessionIdleSeconds and consoleSessionMaxSeconds must be positive".into(),
        ));
    }
    Ok(Some(LoginSettings {
        client_secret,
        redirect_url,
        public_origin,
        secure_cookies,
        session_idle: idle,
        session_max: max,
    }))
}

/// `identityCheckSeconds` over its default; at least one second.
pub(super) fn resolve_identity_check(file: &GatewayFile) -> Result<IdentityCheck, ConfigError> {
    match file.identity_check_seconds {
        None => Ok(IdentityCheck::default()),
        Some(0) => Err(ConfigError::Invalid(
            "identityCheckSeconds must be positive (default 300)".into(),
        )),
        Some(s) => Ok(IdentityCheck {
            every: Duration::from_secs(s),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::gateway::config::parse_file;

    fn args() -> GatewayArgs {
        GatewayArgs {
            oidc_issuer: Some("https://issuer.example".into()),
            oidc_client_id: Some("nodeshell".into()),
            ..GatewayArgs::default()
        }
    }

    #[test]
    fn no_secret_no_login() {
        let file = parse_file("").unwrap();
        assert_eq!(resolve_login(&args(), &file).unwrap(), None);
        assert_eq!(
            resolve_identity_check(&file).unwrap().every,
            DEFAULT_IDENTITY_CHECK
        );
    }

    #[test]
    fn secret_from_a_file_never_shows_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client-secret");
        std::fs::write(&path, "s3cr3t-value\n").unwrap();
        let file = parse_file(&format!(
            "oidc:\n  clientSecretFile: {}\n  redirectUrl: https://ns.example.com/auth/callback\n",
            path.display()
        ))
        .unwrap();
        let login = resolve_login(&args(), &file).unwrap().unwrap();
        assert_eq!(login.client_secret.expose(), "s3cr3t-value");
        assert!(login.secure_cookies);
        assert_eq!(login.public_origin, "https://ns.example.com");
        assert_eq!(login.session_idle, DEFAULT_SESSION_IDLE);
        let shown = format!("{login:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        let mut with_env = args();
        with_env.oidc_client_secret = Some(ClientSecret::new("from-env"));
        assert!(!format!("{with_env:?}").contains("from-env"));
        let login = resolve_login(&with_env, &file).unwrap().unwrap();
        assert_eq!(login.client_secret.expose(), "from-env", "env wins");
    }

    #[test]
    fn half_a_client_or_a_wrong_redirect_is_refused() {
        let file =
            parse_file("oidc:\n  redirectUrl: https://ns.example.com/auth/callback\n").unwrap();
        let err = resolve_login(&args(), &file).unwrap_err().to_string();
        assert!(err.contains("no client secret"), "{err}");
        let mut with_secret = args();
        with_secret.oidc_client_secret = Some(ClientSecret::new("x"));
        let err = resolve_login(&with_secret, &parse_file("").unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no redirect URL"), "{err}");
        let file = parse_file("oidc:\n  redirectUrl: https://ns.example.com/callback\n").unwrap();
        let err = resolve_login(&with_secret, &file).unwrap_err().to_string();
        assert!(err.contains("/auth/callback"), "{err}");
        let file =
            parse_file("oidc:\n  redirectUrl: http://127.0.0.1:8080/auth/callback\n").unwrap();
        let login = resolve_login(&with_secret, &file).unwrap().unwrap();
        assert!(!login.secure_cookies, "plain http: no Secure cookie");
        let empty = dir_with_empty_secret();
        let file = parse_file(&format!(
            "oidc:\n  clientSecretFile: {}\n  redirectUrl: https://a.example/auth/callback\n",
            empty.1.display()
        ))
        .unwrap();
        let err = resolve_login(&args(), &file).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        assert!(resolve_identity_check(&parse_file("identityCheckSeconds: 0").unwrap()).is_err());
    }

    fn dir_with_empty_secret() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        std::fs::write(&path, "\n").unwrap();
        (dir, path)
    }
}

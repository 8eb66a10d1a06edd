//! The console's sign-in through the gateway (backend-for-frontend) as use cases: start a
//! sign-in, finish it (code exchange with the client secret, id_token and nonce checks, a
//! console session), authenticate a request by its cookie (refreshing the tokens when they
//! are about to expire), the CSRF check of cookie-authenticated writes, sign out, and the
//! identity re-check of a live shell. The rules are in [`login`](super::login) and
//! [`console_sessions`](super::console_sessions).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::Access;
use super::auth::issuer::{IssuerClient, IssuerRefusal, TokenAnswer};
use super::auth::{Authenticated, Credential};
use super::cli_login::{CliHandoffs, CliTarget, handoff_location, session_handle};
use super::console_sessions::{ConsoleSessions, RefreshToken, SessionGone, SessionLimits, Tokens};
use super::login::{
    AuthorizeRequest, LoginBook, SCOPES, authorize_url, binding_cookie, csrf_refusal,
    session_cookie,
};
use crate::gateway::config::LoginSettings;
use crate::gateway::config::login::{
    MAX_CONSOLE_SESSIONS, MAX_CONSOLE_SESSIONS_PER_USER, MAX_PENDING_LOGINS, PENDING_LOGIN_TTL,
};
use crate::gateway::config::oidc::IssuerCa;
use crate::gateway::error::{ApiError, ErrorCode};
use crate::gateway::handover::{Caller, IdToken};

/// A console session's id_token is refreshed when it has less than this left.
const REFRESH_MARGIN_SECONDS: u64 = 60;
/// Tokens refreshed this recently (by a concurrent call) are used as they are.
const FRESH_ENOUGH: Duration = Duration::from_secs(5);

/// The console's sign-in: settings, sign-ins in progress, console sessions, the issuer.
#[derive(Clone, Debug)]
pub struct ConsoleLogin {
    /// Its settings.
    pub settings: LoginSettings,
    /// Sign-ins in progress.
    pub book: LoginBook,
    /// Console sessions.
    pub sessions: ConsoleSessions,
    /// The confidential client at the issuer.
    pub issuer: IssuerClient,
    /// Finished command-line sign-ins waiting for the CLI's code exchange.
    pub handoffs: CliHandoffs,
    /// One refresh at a time: issuers that rotate refresh tokens treat a second use of the
    /// same one as theft and revoke the sign-in.
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

impl ConsoleLogin {
    /// The sign-in of a gateway whose client is `client_id` at `issuer`.
    pub fn new(
        settings: LoginSettings,
        issuer: &str,
        client_id: &str,
        ca: Option<&IssuerCa>,
    ) -> Result<Self, reqwest::Error> {
        let client = IssuerClient::new(issuer, client_id, settings.client_secret.clone(), ca)?;
        let limits = SessionLimits {
            idle: settings.session_idle,
            max_age: settings.session_max,
            per_user: MAX_CONSOLE_SESSIONS_PER_USER,
            total: MAX_CONSOLE_SESSIONS,
        };
        Ok(Self {
            settings,
            book: LoginBook::new(PENDING_LOGIN_TTL, MAX_PENDING_LOGINS),
            sessions: ConsoleSessions::new(limits),
            issuer: client,
            handoffs: CliHandoffs::default(),
            refreshing: Arc::default(),
        })
    }
}

/// Where `/auth/login` sends the browser, and the cookie binding the sign-in to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRedirect {
    /// The issuer's authorization URL.
    pub location: String,
    /// `Set-Cookie` of the binding.
    pub binding_cookie: String,
}

/// How a finished sign-in leaves `/auth/callback`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIn {
    /// The console's: `Set-Cookie` of the session cookie.
    Cookie(String),
    /// The command line's: where to send the browser (the CLI's loopback listener with a
    /// one-time code).
    Cli(String),
}

/// What `POST /auth/cli/token` answers: the session handle and how long it may live.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CliSession {
    /// The handle, for `Authorization: Nodeshell-Session <handle>`.
    pub session: String,
    /// Seconds the handle may go unused before it ends.
    pub idle_seconds: u64,
    /// Seconds after sign-in it ends whatever the use.
    pub max_seconds: u64,
}

/// The query of `/auth/callback`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct CallbackParams {
    /// The authorization code.
    pub code: Option<String>,
    /// The state sent at `/auth/login`.
    pub state: Option<String>,
    /// The issuer's error, if it refused.
    pub error: Option<String>,
    /// Its description.
    pub error_description: Option<String>,
}

/// Why a live shell's person is no longer who the session was opened for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityVerdict {
    /// Still valid; the person as the fresh id_token says.
    Valid(Caller),
    /// The issuer refused the refresh, or the fresh token does not verify.
    Revoked(String),
    /// The issuer could not be asked; try again at the next check.
    Unknown(String),
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn no_sign_in() -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        "this gateway has no console sign-in configured (oidc.clientSecretFile and oidc.redirectUrl); call the API with Authorization: Bearer <id_token>",
    )
}

fn sign_in_again(why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ReauthRequired,
        format!("{why}; sign in again (reload the console, or open /auth/login)"),
    )
}

fn issuer_error(what: &str, e: IssuerRefusal) -> ApiError {
    match e {
        IssuerRefusal::Refused { error, description } => ApiError::new(
            ErrorCode::Auth,
            format!(
                "sign-in refused: the identity provider refused {what} ({error}: {description}); open the console again to sign in"
            ),
        ),
        IssuerRefusal::Unavailable(why) => ApiError::new(
            ErrorCode::Internal,
            format!("cannot reach the identity provider for {what} ({why}); try again shortly"),
        ),
    }
}

// === impl Access: the console's sign-in ===

impl Access {
    fn console_login(&self) -> Result<&ConsoleLogin, ApiError> {
        self.console.as_ref().ok_or_else(no_sign_in)
    }

    /// Whether console cookies are `Secure` (`None`: no console sign-in).
    pub fn secure_cookies(&self) -> Option<bool> {
        self.console.as_ref().map(|c| c.settings.secure_cookies)
    }

    /// Starts a sign-in: the issuer's authorization URL and the binding cookie.
    pub async fn begin_login(&self) -> Result<LoginRedirect, ApiError> {
        self.begin_login_for(None).await
    }

    /// Starts a sign-in for the console, or for the command line when `cli` is set.
    pub async fn begin_login_for(&self, cli: Option<CliTarget>) -> Result<LoginRedirect, ApiError> {
        let console = self.console_login()?;
        let endpoints = console
            .issuer
            .endpoints()
            .await
            .map_err(|e| issuer_error("the discovery document", e))?;
        let start = console.book.begin_for(Instant::now(), cli)?;
        let location = authorize_url(&AuthorizeRequest {
            endpoint: &endpoints.authorization,
            client_id: console.issuer.client_id(),
            redirect_url: &console.settings.redirect_url,
            scopes: SCOPES,
            state: &start.state,
            nonce: &start.nonce,
            challenge: &start.challenge,
        })?;
        Ok(LoginRedirect {
            location,
            binding_cookie: binding_cookie(
                &start.binding,
                console.settings.secure_cookies,
                console.book.ttl(),
            ),
        })
    }

    /// Finishes a sign-in: the state (single use, this browser's), the code exchanged with
    /// the client secret, the id_token verified with its nonce. Returns the session cookie,
    /// or for a command-line sign-in where the browser goes next.
    pub async fn finish_login(
        &self,
        params: CallbackParams,
        binding: Option<&str>,
    ) -> Result<SignedIn, ApiError> {
        let console = self.console_login()?;
        let pending = console
            .book
            .finish(params.state.as_deref(), binding, Instant::now())?;
        if let Some(error) = params.error {
            return Err(ApiError::new(
                ErrorCode::Auth,
                format!(
                    "sign-in refused by the identity provider: {error}: {}; open the console again to sign in",
                    params.error_description.unwrap_or_default()
                ),
            ));
        }
        let code = params.code.filter(|c| !c.is_empty()).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Auth,
                "sign-in refused: the identity provider's answer has no code; open the console again to sign in",
            )
        })?;
        let answer = console
            .issuer
            .exchange_code(&code, &pending.verifier, &console.settings.redirect_url)
            .await
            .map_err(|e| issuer_error("the code", e))?;
        let (auth, claims) = self.auth.verify(&answer.id_token).await?;
        if claims.get("nonce").and_then(Value::as_str) != Some(pending.nonce.as_str()) {
            tracing::warn!(sub = auth.caller.sub, "sign-in with a wrong nonce refused");
            return Err(ApiError::new(
                ErrorCode::Auth,
                "sign-in refused: the id_token was not issued for this sign-in (nonce mismatch); open the console again to sign in",
            ));
        }
        let tokens = tokens_of(answer, auth.expires_at);
        let key = console
            .sessions
            .create(&auth.caller.sub, tokens, Instant::now());
        if let Some(target) = pending.cli {
            let code = console.handoffs.issue(
                &target.challenge,
                &key,
                &auth.caller.sub,
                Instant::now(),
            )?;
            tracing::info!(sub = auth.caller.sub, "signed in on the command line");
            return Ok(SignedIn::Cli(handoff_location(&target, &code)));
        }
        tracing::info!(sub = auth.caller.sub, "signed in to the console");
        Ok(SignedIn::Cookie(session_cookie(
            &key,
            console.settings.secure_cookies,
        )))
    }

    /// The command line's code exchange: the one-time code and the PKCE verifier of the CLI
    /// that started the sign-in give its session handle.
    pub fn exchange_cli_code(
        &self,
        code: Option<&str>,
        verifier: Option<&str>,
    ) -> Result<CliSession, ApiError> {
        let console = self.console_login()?;
        let (Some(code), Some(verifier)) = (code, verifier) else {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "the exchange needs code and code_verifier; run `kubectl nodeshell login`",
            ));
        };
        let session = console.handoffs.redeem(code, verifier, Instant::now())?;
        Ok(CliSession {
            session,
            idle_seconds: console.settings.session_idle.as_secs(),
            max_seconds: console.settings.session_max.as_secs(),
        })
    }

    /// Authenticates a request: its bearer header when it has one, else its console cookie.
    pub async fn authenticate_request(
        &self,
        authorization: Option<&str>,
        session_key: Option<&str>,
    ) -> Result<Authenticated, ApiError> {
        if let Some(handle) = session_handle(authorization) {
            let console = self.console_login()?;
            return self.cookie_session(console, handle, true).await;
        }
        match (authorization, session_key, &self.console) {
            (None, Some(key), Some(console)) => self.cookie_session(console, key, false).await,
            _ => self.authenticate(authorization).await,
        }
    }

    async fn cookie_session(
        &self,
        console: &ConsoleLogin,
        key: &str,
        handle: bool,
    ) -> Result<Authenticated, ApiError> {
        let sign_in_again = |why: &str| {
            if handle {
                ApiError::new(
                    ErrorCode::ReauthRequired,
                    format!(
                        "{}; run `kubectl nodeshell login` again",
                        why.replace("console session", "command-line session")
                    ),
                )
            } else {
                sign_in_again(why)
            }
        };
        let session = console
            .sessions
            .touch(key, Instant::now())
            .map_err(|gone| {
                sign_in_again(match gone {
                    SessionGone::Unknown => "your console session is unknown to this gateway",
                    SessionGone::Idle => "your console session ended after being idle",
                    SessionGone::TooOld => "your console session reached its maximum age",
                })
            })?;
        let id_token = if session.tokens.expires_at <= unix_now() + REFRESH_MARGIN_SECONDS {
            match self.refresh_console_session(console, key, true).await {
                IdentityVerdict::Valid(_) => console
                    .sessions
                    .peek(key)
                    .map(|s| s.tokens.id_token)
                    .ok_or_else(|| sign_in_again("your console session ended"))?,
                IdentityVerdict::Revoked(why) => return Err(sign_in_again(&why)),
                IdentityVerdict::Unknown(why) => {
                    return Err(ApiError::new(
                        ErrorCode::Internal,
                        format!(
                            "cannot renew your sign-in at the identity provider ({why}); try again shortly"
                        ),
                    ));
                }
            }
        } else {
            session.tokens.id_token
        };
        let (mut auth, _) = self.auth.verify(id_token.expose()).await?;
        auth.via = if handle {
            Credential::Handle(key.to_string())
        } else {
            Credential::Cookie(key.to_string())
        };
        Ok(auth)
    }

    /// Refreshes the tokens of console session `key` at the issuer. A refusal ends the
    /// console session.
    /// With `reuse_fresh`, tokens another call refreshed a moment ago are used as they are
    /// (the API path); the identity re-check always asks the issuer.
    pub async fn refresh_console_session(
        &self,
        console: &ConsoleLogin,
        key: &str,
        reuse_fresh: bool,
    ) -> IdentityVerdict {
        let _one_at_a_time = console.refreshing.lock().await;
        let Some(session) = console.sessions.peek(key) else {
            return IdentityVerdict::Revoked("the console session ended".into());
        };
        if reuse_fresh && session.refreshed_within(FRESH_ENOUGH, Instant::now()) {
            // Another call refreshed these tokens a moment ago: the issuer said yes then.
            return match self.auth.verify(session.tokens.id_token.expose()).await {
                Ok((auth, _)) => IdentityVerdict::Valid(auth.caller),
                Err(e) => IdentityVerdict::Unknown(e.message),
            };
        }
        let Some(refresh) = session.tokens.refresh_token.clone() else {
            console.sessions.end(key);
            return IdentityVerdict::Revoked(
                "the identity provider gave no refresh token, so the sign-in cannot be renewed"
                    .into(),
            );
        };
        let answer = match console.issuer.refresh(refresh.expose()).await {
            Ok(answer) => answer,
            Err(IssuerRefusal::Refused { error, description }) => {
                console.sessions.end(key);
                tracing::info!(
                    sub = session.sub,
                    error,
                    "the identity provider refused to renew a sign-in"
                );
                return IdentityVerdict::Revoked(format!(
                    "the identity provider no longer accepts your sign-in ({error}: {description})"
                ));
            }
            Err(IssuerRefusal::Unavailable(why)) => return IdentityVerdict::Unknown(why),
        };
        let verified = self.auth.verify(&answer.id_token).await;
        match verified {
            Ok((auth, _)) if auth.caller.sub == session.sub => {
                console.sessions.replace_tokens(
                    key,
                    tokens_of(answer, auth.expires_at),
                    Instant::now(),
                );
                IdentityVerdict::Valid(auth.caller)
            }
            Ok(_) => {
                console.sessions.end(key);
                IdentityVerdict::Revoked("the renewed id_token names another person".into())
            }
            Err(e) if e.code == ErrorCode::Internal => IdentityVerdict::Unknown(e.message),
            Err(e) => {
                console.sessions.end(key);
                IdentityVerdict::Revoked(format!("the renewed id_token is refused: {}", e.message))
            }
        }
    }

    /// The CSRF check of a write: a cookie-authenticated one needs an allowed `Origin` and the
    /// CSRF header; a bearer one needs neither (no browser sends a bearer header on its own).
    pub fn check_write(
        &self,
        auth: &Authenticated,
        origin: Option<&str>,
        marker: Option<&str>,
    ) -> Result<(), ApiError> {
        match auth.via {
            // No browser sends either header on its own, so neither needs a CSRF check.
            Credential::Bearer | Credential::Handle(_) => Ok(()),
            Credential::Cookie(_) => {
                match csrf_refusal(origin, marker, &self.config.write_origins()) {
                    Some(e) => {
                        tracing::warn!(
                            sub = auth.caller.sub,
                            origin,
                            "cookie-authenticated write refused (CSRF)"
                        );
                        Err(e)
                    }
                    None => Ok(()),
                }
            }
        }
    }

    /// Signs out: ends the console session of `key` (after the CSRF check of `origin` and
    /// `marker`). Without a session there is nothing to end.
    /// A command-line session (`Authorization: Nodeshell-Session`) ends without the CSRF
    /// check: no browser sends that header on its own.
    pub fn logout(
        &self,
        key: Option<&str>,
        authorization: Option<&str>,
        origin: Option<&str>,
        marker: Option<&str>,
    ) -> Result<(), ApiError> {
        let console = self.console_login()?;
        if let Some(handle) = session_handle(authorization) {
            if let Some(session) = console.sessions.peek(handle) {
                tracing::info!(sub = session.sub, "signed out on the command line");
            }
            console.sessions.end(handle);
            return Ok(());
        }
        if let Some(e) = csrf_refusal(origin, marker, &self.config.write_origins()) {
            return Err(e);
        }
        if let Some(key) = key {
            if let Some(session) = console.sessions.peek(key) {
                tracing::info!(sub = session.sub, "signed out of the console");
            }
            console.sessions.end(key);
        }
        Ok(())
    }

    /// The console session behind an id_token (the one a ticket carried), if any.
    pub fn console_session_of(&self, id_token: &IdToken) -> Option<String> {
        self.console.as_ref()?.sessions.key_of_token(id_token)
    }

    /// Checks a live shell's person again: refreshes their console session's tokens and maps
    /// their groups to a tier again. A running shell counts as use of its console session,
    /// so a shell in use does not lose it to the idle limit.
    pub async fn recheck_identity(&self, key: &str) -> IdentityVerdict {
        let Some(console) = &self.console else {
            return IdentityVerdict::Unknown("no console sign-in".into());
        };
        if let Err(gone) = console.sessions.touch(key, Instant::now()) {
            return IdentityVerdict::Revoked(
                match gone {
                    SessionGone::Unknown => {
                        "the console session it was opened from ended (signed out, or replaced by newer sign-ins)"
                    }
                    SessionGone::Idle => "the console session it was opened from ended after being idle",
                    SessionGone::TooOld => {
                        "the console session it was opened from reached its maximum age (consoleSessionMaxSeconds)"
                    }
                }
                .to_string(),
            );
        }
        self.refresh_console_session(console, key, false).await
    }

    /// Drops idle and too old console sessions and expired sign-ins.
    pub fn sweep_console(&self) {
        if let Some(console) = &self.console {
            console.sessions.sweep(Instant::now());
        }
    }
}

fn tokens_of(answer: TokenAnswer, expires_at: u64) -> Tokens {
    Tokens {
        id_token: IdToken::new(answer.id_token),
        refresh_token: answer.refresh_token.map(RefreshToken::new),
        expires_at,
    }
}

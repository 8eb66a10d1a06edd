//! A session's credentials that outlive one STS answer: temporary credentials re-minted
//! before they expire by whoever can (the gateway, from a fresh id_token of the person's
//! console sign-in), and handed to every SSM and KMS call of the session through the SDK's
//! credential provider, so ResumeSession after the service's hourly recycle and the final
//! TerminateSession sign with credentials that still work. Without a way to renew (a bearer
//! caller), the first credentials serve until their `Expiration`, then calls fail with
//! [`CredentialsUnavailable`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, future};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::credentials::TemporaryCredentials;

/// Longest margin before `Expiration` at which credentials are re-minted.
const RENEW_MARGIN_MAX: chrono::Duration = chrono::Duration::minutes(5);

/// Mints a session's next credentials (an AssumeRoleWithWebIdentity with a fresh id_token).
pub trait CredentialRenewal: Send + Sync + 'static {
    /// New credentials for the same role and role session name, or why there are none.
    fn renew(&self) -> BoxFuture<'static, Result<TemporaryCredentials, String>>;
}

/// Why a session has no usable credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the AWS credentials of this session expired and cannot be renewed: {0}")]
pub struct CredentialsUnavailable(pub String);

/// Pure: how long before `expiration` credentials issued at `issued` are renewed: a quarter
/// of their lifetime, at most five minutes.
pub fn renew_margin(issued: DateTime<Utc>, expiration: DateTime<Utc>) -> chrono::Duration {
    ((expiration - issued) / 4).clamp(chrono::Duration::zero(), RENEW_MARGIN_MAX)
}

/// Pure: whether credentials issued at `issued` that expire at `expiration` are due for
/// renewal at `now`.
pub fn renewal_due(issued: DateTime<Utc>, expiration: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now + renew_margin(issued, expiration) >= expiration
}

struct Current {
    credentials: TemporaryCredentials,
    issued: DateTime<Utc>,
}

struct State {
    current: Mutex<Current>,
    renewal: Option<Arc<dyn CredentialRenewal>>,
    /// One renewal at a time (a second caller waits and takes its result).
    renewing: tokio::sync::Mutex<()>,
    renewals: AtomicU64,
}

/// One session's credentials, renewed on use when due. Cheap to clone (clones share them).
#[derive(Clone)]
pub struct RenewableCredentials {
    state: Arc<State>,
}

impl std::fmt::Debug for RenewableCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenewableCredentials")
            .field("current", &self.lock().credentials)
            .field("renewable", &self.state.renewal.is_some())
            .field("renewals", &self.renewals())
            .finish()
    }
}

impl RenewableCredentials {
    /// Starts from `initial`; `renewal` mints the next ones (`None`: they cannot be renewed).
    pub fn new(initial: TemporaryCredentials, renewal: Option<Arc<dyn CredentialRenewal>>) -> Self {
        Self {
            state: Arc::new(State {
                current: Mutex::new(Current {
                    credentials: initial,
                    issued: Utc::now(),
                }),
                renewal,
                renewing: tokio::sync::Mutex::new(()),
                renewals: AtomicU64::new(0),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Current> {
        self.state
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How many times the credentials were re-minted.
    pub fn renewals(&self) -> u64 {
        self.state.renewals.load(Ordering::Relaxed)
    }

    /// Whether they can be renewed at all.
    pub fn is_renewable(&self) -> bool {
        self.state.renewal.is_some()
    }

    /// The `Expiration` of the current credentials.
    pub fn expiration(&self) -> DateTime<Utc> {
        self.lock().credentials.expiration
    }

    fn due(&self, now: DateTime<Utc>) -> Option<TemporaryCredentials> {
        let current = self.lock();
        (!renewal_due(current.issued, current.credentials.expiration, now))
            .then(|| current.credentials.clone())
    }

    /// Credentials to sign with now: the current ones, re-minted first when they are due.
    /// A failed renewal keeps the current ones while they last.
    pub async fn fresh(&self) -> Result<TemporaryCredentials, CredentialsUnavailable> {
        if let Some(current) = self.due(Utc::now()) {
            return Ok(current);
        }
        let _one = self.state.renewing.lock().await;
        // Another caller may have renewed them while this one waited.
        if let Some(current) = self.due(Utc::now()) {
            return Ok(current);
        }
        let why = match &self.state.renewal {
            None => "they were minted from a bearer token, which the gateway cannot refresh; sign in to the console again and reopen the shell".to_string(),
            Some(renewal) => match renewal.renew().await {
                Ok(next) => {
                    let mut current = self.lock();
                    *current = Current {
                        credentials: next.clone(),
                        issued: Utc::now(),
                    };
                    self.state.renewals.fetch_add(1, Ordering::Relaxed);
                    return Ok(next);
                }
                Err(why) => why,
            },
        };
        let current = self.lock().credentials.clone();
        if current.expiration > Utc::now() {
            tracing::warn!(
                error = why,
                "could not renew a session's AWS credentials; using them until they expire"
            );
            Ok(current)
        } else {
            Err(CredentialsUnavailable(why))
        }
    }
}

/// Wait before trying again after a renewal that failed (the credentials stay due; they are
/// used while they last).
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

impl RenewableCredentials {
    /// How long until the current credentials are due for renewal (zero when they are).
    fn until_due(&self) -> std::time::Duration {
        let current = self.lock();
        let expiration = current.credentials.expiration;
        let due_at = expiration - renew_margin(current.issued, expiration);
        (due_at - Utc::now()).to_std().unwrap_or_default()
    }

    /// Renews the credentials ahead of their expiry, each time they come due, for as long as
    /// any clone of them is alive (the task holds none); ends at once when they cannot be
    /// renewed, or once they expired and renewal failed.
    pub fn keep_fresh(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let weak = Arc::downgrade(&self.state);
        async move {
            loop {
                let Some(state) = weak.upgrade() else { return };
                let credentials = Self { state };
                if !credentials.is_renewable() {
                    return;
                }
                let wait = credentials.until_due();
                drop(credentials);
                tokio::time::sleep(wait).await;
                let Some(state) = weak.upgrade() else { return };
                let credentials = Self { state };
                if credentials.fresh().await.is_err() {
                    return;
                }
                if credentials.until_due().is_zero() {
                    // The renewal failed and the old ones still serve: not again at once.
                    drop(credentials);
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }
}

impl ProvideCredentials for RenewableCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.fresh()
                .await
                .map(|c| c.to_sdk())
                .map_err(CredentialsError::not_loaded)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn credentials_are_renewed_a_quarter_of_their_life_before_expiry_at_most_five_minutes() {
        // An hour: five minutes before.
        assert!(!renewal_due(at(0), at(3600), at(3600 - 301)));
        assert!(renewal_due(at(0), at(3600), at(3600 - 300)));
        // Eight seconds (the simulator's knob in tests): two seconds before.
        assert!(!renewal_due(at(0), at(8), at(5)));
        assert!(renewal_due(at(0), at(8), at(6)));
        // Expired ones are always due.
        assert!(renewal_due(at(0), at(8), at(9)));
    }

    fn creds(key: &str, expires_in: i64) -> TemporaryCredentials {
        TemporaryCredentials::new(
            key.into(),
            "secret".into(),
            "token".into(),
            Utc::now() + chrono::Duration::seconds(expires_in),
            "arn:aws:sts::123456789012:assumed-role/r/ns-alice".into(),
            "AROAX:ns-alice".into(),
        )
    }

    struct Next(&'static str);

    impl CredentialRenewal for Next {
        fn renew(&self) -> BoxFuture<'static, Result<TemporaryCredentials, String>> {
            let key = self.0;
            Box::pin(async move { Ok(creds(key, 3600)) })
        }
    }

    #[tokio::test]
    async fn expired_credentials_are_reminted_or_reported() {
        let renewable =
            RenewableCredentials::new(creds("ASIAOLD", -1), Some(Arc::new(Next("ASIANEW"))));
        assert_eq!(renewable.fresh().await.unwrap().access_key_id, "ASIANEW");
        assert_eq!(renewable.fresh().await.unwrap().access_key_id, "ASIANEW");
        assert_eq!(renewable.renewals(), 1);
        let fixed = RenewableCredentials::new(creds("ASIAOLD", 3600), None);
        assert_eq!(fixed.fresh().await.unwrap().access_key_id, "ASIAOLD");
        let expired = RenewableCredentials::new(creds("ASIAOLD", -1), None);
        let e = expired.fresh().await.unwrap_err();
        assert!(e.to_string().contains("sign in"), "{e}");
    }

    #[tokio::test]
    async fn keep_fresh_renews_ahead_of_expiry_without_a_call_needing_them() {
        let renewable =
            RenewableCredentials::new(creds("ASIAOLD", 2), Some(Arc::new(Next("ASIANEW"))));
        tokio::spawn(renewable.keep_fresh());
        for _ in 0..50 {
            if renewable.renewals() > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(renewable.renewals(), 1);
        assert_eq!(renewable.lock().credentials.access_key_id, "ASIANEW");
        // Credentials that cannot be renewed are not watched.
        let fixed = RenewableCredentials::new(creds("ASIAOLD", 2), None);
        tokio::time::timeout(std::time::Duration::from_secs(1), fixed.keep_fresh())
            .await
            .unwrap();
    }
}

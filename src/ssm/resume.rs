//! Reconnecting a dropped data channel: the `ssm:ResumeSession` call is the caller's to make
//! (with the user's credentials), so the channel only sees this trait.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why a resume attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// A transient failure (network, throttling): the channel retries with backoff.
    #[error("ResumeSession failed: {0}; the channel will retry")]
    Transient(String),
    /// A permanent refusal (access denied, expired credentials, unknown session): give up.
    #[error("ResumeSession was refused: {0}; the session cannot be reconnected, open a new one")]
    Refused(String),
    /// The caller's credentials expired and could not be renewed: give up.
    #[error("{0}")]
    CredentialsExpired(String),
}

/// Obtains a fresh data-channel token for an existing session (`ssm:ResumeSession`).
pub trait SessionResumer: Send + Sync + 'static {
    /// Returns the new token, or `None` when the service says the session timed out.
    fn resume(
        &self,
        session_id: &str,
    ) -> impl Future<Output = Result<Option<String>, ResumeError>> + Send;
}

/// A resumer for channels that must not reconnect: every attempt is refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoResume;

impl SessionResumer for NoResume {
    async fn resume(&self, session_id: &str) -> Result<Option<String>, ResumeError> {
        Err(ResumeError::Refused(format!(
            "reconnecting session {session_id} is disabled"
        )))
    }
}

/// An in-memory resumer that plays back scripted answers (for tests and the simulator);
/// once the script is exhausted it reports the session as timed out.
#[derive(Debug, Default)]
pub struct ScriptedResumer {
    answers: Mutex<VecDeque<Result<Option<String>, ResumeError>>>,
    calls: AtomicUsize,
}

impl ScriptedResumer {
    /// A resumer answering with `answers` in order.
    pub fn new(answers: impl IntoIterator<Item = Result<Option<String>, ResumeError>>) -> Self {
        Self {
            answers: Mutex::new(answers.into_iter().collect()),
            calls: AtomicUsize::new(0),
        }
    }

    /// How many times [`SessionResumer::resume`] was called.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl SessionResumer for ScriptedResumer {
    async fn resume(&self, _session_id: &str) -> Result<Option<String>, ResumeError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let next = match self.answers.lock() {
            Ok(mut answers) => answers.pop_front(),
            Err(poisoned) => poisoned.into_inner().pop_front(),
        };
        next.unwrap_or(Ok(None))
    }
}

impl<T: SessionResumer> SessionResumer for std::sync::Arc<T> {
    fn resume(
        &self,
        session_id: &str,
    ) -> impl Future<Output = Result<Option<String>, ResumeError>> + Send {
        (**self).resume(session_id)
    }
}

//! The AWS credentials an open minted, kept on this replica for the session's first attach,
//! so that a session costs one AssumeRoleWithWebIdentity instead of two (the open's own
//! gate, then the start's). In memory only, keyed by the session's UID, bounded in number,
//! taken (removed) by the attach that redeemed that session's ticket, and dropped after the
//! ticket's lifetime by the gateway's sweep. An attach that lands on another replica, or
//! comes later, finds nothing and the start asks STS as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::gateway::handover::MintedCredentials;

/// Most sessions whose credentials wait for their first attach on one replica; beyond it
/// an open keeps nothing (its start asks STS).
pub const MINTED_CAP: usize = 2048;

struct Kept {
    at: Instant,
    minted: MintedCredentials,
}

/// Credentials waiting for their session's first attach. Cheap to clone (clones share).
#[derive(Clone)]
pub struct MintedStore {
    ttl: Duration,
    cap: usize,
    entries: Arc<Mutex<HashMap<String, Kept>>>,
}

impl std::fmt::Debug for MintedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedStore")
            .field("ttl", &self.ttl)
            .field("waiting", &self.len())
            .finish_non_exhaustive()
    }
}

impl MintedStore {
    /// An empty store whose entries live `ttl` (the attach ticket's lifetime).
    pub fn new(ttl: Duration) -> Self {
        Self::with_cap(ttl, MINTED_CAP)
    }

    /// An empty store holding at most `cap` sessions' credentials.
    pub fn with_cap(ttl: Duration, cap: usize) -> Self {
        Self {
            ttl,
            cap,
            entries: Arc::default(),
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Kept>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `minted` for the session with UID `uid` from `now`; at the cap, keeps nothing.
    pub fn keep(&self, uid: &str, minted: MintedCredentials, now: Instant) {
        let mut entries = self.entries();
        self.drop_expired(&mut entries, now);
        if entries.len() < self.cap {
            entries.insert(uid.to_string(), Kept { at: now, minted });
        }
    }

    /// Removes and returns the credentials of the session with UID `uid`, if kept less than
    /// the lifetime ago.
    pub fn take(&self, uid: &str, now: Instant) -> Option<MintedCredentials> {
        let kept = self.entries().remove(uid)?;
        (now.saturating_duration_since(kept.at) < self.ttl).then_some(kept.minted)
    }

    /// Drops every entry older than the lifetime.
    pub fn sweep(&self, now: Instant) {
        self.drop_expired(&mut self.entries(), now);
    }

    /// Drops from `entries` every entry kept the lifetime or longer before `now`.
    fn drop_expired(&self, entries: &mut HashMap<String, Kept>, now: Instant) {
        entries.retain(|_, k| now.saturating_duration_since(k.at) < self.ttl);
    }

    /// Sessions whose credentials are kept.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::TemporaryCredentials;

    fn minted(key: &str) -> MintedCredentials {
        MintedCredentials {
            credentials: TemporaryCredentials::new(
                key.into(),
                "secret".into(),
                "token".into(),
                chrono::Utc::now() + chrono::Duration::seconds(900),
                "arn:aws:sts::111122223333:assumed-role/shell/nodeshell-alice".into(),
                "AROAEXAMPLE:nodeshell-alice".into(),
            ),
            role_arn: "arn:aws:iam::111122223333:role/shell".into(),
            role_session_name: "nodeshell-alice".into(),
            duration_seconds: Some(900),
            token_expires_at: chrono::Utc::now() + chrono::Duration::seconds(60),
        }
    }

    #[test]
    fn credentials_are_taken_once_by_their_session_within_the_lifetime() {
        let store = MintedStore::new(Duration::from_secs(30));
        let now = Instant::now();
        store.keep("uid-1", minted("ASIA1"), now);
        store.keep("uid-2", minted("ASIA2"), now);
        assert!(store.take("uid-3", now).is_none(), "another session's");
        let taken = store.take("uid-1", now + Duration::from_secs(29));
        assert_eq!(
            taken.map(|m| m.credentials.access_key_id).as_deref(),
            Some("ASIA1")
        );
        assert!(store.take("uid-1", now).is_none(), "taken once");
        assert!(
            store.take("uid-2", now + Duration::from_secs(30)).is_none(),
            "past the ticket's lifetime"
        );
        assert!(store.is_empty(), "a late take drops them too");
    }

    #[test]
    fn the_store_is_bounded_and_swept() {
        let store = MintedStore::with_cap(Duration::from_secs(30), 2);
        let now = Instant::now();
        store.keep("a", minted("A"), now);
        store.keep("b", minted("B"), now);
        store.keep("c", minted("C"), now);
        assert_eq!(store.len(), 2, "at the cap an open keeps nothing");
        assert!(store.take("c", now).is_none());
        // Expired entries make room.
        store.keep("d", minted("D"), now + Duration::from_secs(31));
        assert_eq!(store.len(), 1);
        store.sweep(now + Duration::from_secs(61));
        assert!(store.is_empty());
    }
}

//! The server-side sessions behind the console's cookie: the person's id_token and refresh
//! token, in this replica's memory only, bounded per person and in total, ended when idle too
//! long or too old. The cookie holds only a random key into this map. No I/O: the clock is a
//! parameter.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::gateway::handover::IdToken;

use super::login::random_token;

/// A refresh token. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    /// Wraps a refresh token.
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The token, for the issuer's token endpoint only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

/// The tokens a sign-in or a refresh gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokens {
    /// The id_token.
    pub id_token: IdToken,
    /// The refresh token, if the issuer gave one.
    pub refresh_token: Option<RefreshToken>,
    /// The id_token's `exp`, seconds since the epoch.
    pub expires_at: u64,
}

/// One console session.
#[derive(Clone, Debug)]
pub struct ConsoleSession {
    /// The person's `sub`.
    pub sub: String,
    /// Their current tokens.
    pub tokens: Tokens,
    /// The id_token before the last refresh (a ticket issued just before it still names it).
    pub previous_id_token: Option<IdToken>,
    started: Instant,
    last_used: Instant,
    refreshed: Option<Instant>,
}

impl ConsoleSession {
    /// Whether its tokens were refreshed less than `within` before `now`.
    pub fn refreshed_within(&self, within: Duration, now: Instant) -> bool {
        self.refreshed
            .is_some_and(|at| now.saturating_duration_since(at) < within)
    }
}

/// Why a cookie does not lead to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionGone {
    /// No such session (never was, signed out, evicted, or another replica's).
    Unknown,
    /// Unused longer than the idle limit.
    Idle,
    /// Older than the absolute limit.
    TooOld,
}

/// The limits of [`ConsoleSessions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Ends a session unused this long.
    pub idle: Duration,
    /// Ends a session this long after sign-in.
    pub max_age: Duration,
    /// Sessions one person may hold; their oldest goes beyond this.
    pub per_user: usize,
    /// Sessions in total; the least recently used goes beyond this.
    pub total: usize,
}

/// The console sessions of this replica. Cheap to clone.
#[derive(Clone)]
pub struct ConsoleSessions {
    map: Arc<Mutex<HashMap<String, ConsoleSession>>>,
    limits: SessionLimits,
}

impl fmt::Debug for ConsoleSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsoleSessions")
            .field("sessions", &self.len())
            .field("limits", &self.limits)
            .finish()
    }
}

// === impl ConsoleSessions ===

impl ConsoleSessions {
    /// No sessions yet.
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            map: Arc::default(),
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, ConsoleSession>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn gone(&self, session: &ConsoleSession, now: Instant) -> Option<SessionGone> {
        if now.duration_since(session.started) >= self.limits.max_age {
            Some(SessionGone::TooOld)
        } else if now.duration_since(session.last_used) >= self.limits.idle {
            Some(SessionGone::Idle)
        } else {
            None
        }
    }

    /// Creates a session for `sub`; returns the cookie's key. Ends the person's oldest
    /// sessions beyond the per-person bound and the least recently used beyond the total.
    pub fn create(&self, sub: &str, tokens: Tokens, now: Instant) -> String {
        let mut map = self.lock();
        map.retain(|_, s| self.gone(s, now).is_none());
        let mut mine: Vec<(Instant, String)> = map
            .iter()
            .filter(|(_, s)| s.sub == sub)
            .map(|(k, s)| (s.started, k.clone()))
            .collect();
        mine.sort();
        let over = (mine.len() + 1).saturating_sub(self.limits.per_user);
        for (_, key) in mine.into_iter().take(over) {
            map.remove(&key);
        }
        while map.len() >= self.limits.total.max(1) {
            let Some(key) = map
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&key);
        }
        let key = random_token(32);
        map.insert(
            key.clone(),
            ConsoleSession {
                sub: sub.to_string(),
                tokens,
                previous_id_token: None,
                started: now,
                last_used: now,
                refreshed: None,
            },
        );
        key
    }

    /// The session of `key`, marked as used now; an idle or too old one ends here.
    pub fn touch(&self, key: &str, now: Instant) -> Result<ConsoleSession, SessionGone> {
        let mut map = self.lock();
        let session = map.get(key).ok_or(SessionGone::Unknown)?;
        if let Some(gone) = self.gone(session, now) {
            map.remove(key);
            return Err(gone);
        }
        let session = map.get_mut(key).ok_or(SessionGone::Unknown)?;
        session.last_used = now;
        Ok(session.clone())
    }

    /// The session of `key` without marking it used (the identity re-check of a live shell).
    pub fn peek(&self, key: &str) -> Option<ConsoleSession> {
        self.lock().get(key).cloned()
    }

    /// Stores tokens refreshed at `now`; a refresh that brought no new refresh token keeps
    /// the old.
    pub fn replace_tokens(&self, key: &str, mut tokens: Tokens, now: Instant) {
        if let Some(session) = self.lock().get_mut(key) {
            session.refreshed = Some(now);
            if tokens.refresh_token.is_none() {
                tokens.refresh_token = session.tokens.refresh_token.take();
            }
            let old = std::mem::replace(&mut session.tokens, tokens);
            session.previous_id_token = Some(old.id_token);
        }
    }

    /// Ends a session (sign-out, a refused refresh).
    pub fn end(&self, key: &str) -> bool {
        self.lock().remove(key).is_some()
    }

    /// The key of the session whose current or previous id_token is `token`.
    pub fn key_of_token(&self, token: &IdToken) -> Option<String> {
        self.lock()
            .iter()
            .find(|(_, s)| {
                &s.tokens.id_token == token || s.previous_id_token.as_ref() == Some(token)
            })
            .map(|(k, _)| k.clone())
    }

    /// Drops idle and too old sessions.
    pub fn sweep(&self, now: Instant) {
        let mut map = self.lock();
        map.retain(|_, s| self.gone(s, now).is_none());
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sessions held by `sub`.
    pub fn count_of(&self, sub: &str) -> usize {
        self.lock().values().filter(|s| s.sub == sub).count()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn limits() -> SessionLimits {
        SessionLimits {
            idle: Duration::from_secs(60),
            max_age: Duration::from_secs(600),
            per_user: 2,
            total: 3,
        }
    }

    fn tokens(id: &str) -> Tokens {
        Tokens {
            id_token: IdToken::new(id),
            refresh_token: Some(RefreshToken::new(format!("r-{id}"))),
            expires_at: 0,
        }
    }

    #[test]
    fn idle_and_absolute_expiry() {
        let book = ConsoleSessions::new(limits());
        let t0 = Instant::now();
        let k = book.create("alice", tokens("a"), t0);
        assert_eq!(
            book.touch(&k, t0 + Duration::from_secs(59)).unwrap().sub,
            "alice"
        );
        // Used at 59 s: idle counts from there.
        for s in (109..600).step_by(50) {
            book.touch(&k, t0 + Duration::from_secs(s)).unwrap();
        }
        assert_eq!(
            book.touch(&k, t0 + Duration::from_secs(600)).unwrap_err(),
            SessionGone::TooOld
        );
        assert_eq!(book.touch(&k, t0).unwrap_err(), SessionGone::Unknown);
        let k = book.create("alice", tokens("b"), t0);
        assert_eq!(
            book.touch(&k, t0 + Duration::from_secs(61)).unwrap_err(),
            SessionGone::Idle
        );
    }

    #[test]
    fn bounded_per_person_and_in_total() {
        let book = ConsoleSessions::new(limits());
        let t0 = Instant::now();
        let a1 = book.create("alice", tokens("a1"), t0);
        let a2 = book.create("alice", tokens("a2"), t0 + Duration::from_secs(1));
        let a3 = book.create("alice", tokens("a3"), t0 + Duration::from_secs(2));
        assert_eq!(book.count_of("alice"), 2);
        assert!(book.peek(&a1).is_none(), "the oldest went");
        assert!(book.peek(&a2).is_some() && book.peek(&a3).is_some());
        for (i, who) in ["bob", "carol", "dave", "erin"].iter().enumerate() {
            book.create(who, tokens(who), t0 + Duration::from_secs(3 + i as u64));
            assert!(book.len() <= 3);
        }
        assert_eq!(book.len(), 3);
    }

    #[test]
    fn refresh_keeps_the_refresh_token_and_the_previous_id_token() {
        let book = ConsoleSessions::new(limits());
        let t0 = Instant::now();
        let k = book.create("alice", tokens("a"), t0);
        assert!(
            !book
                .peek(&k)
                .unwrap()
                .refreshed_within(Duration::from_secs(5), t0)
        );
        book.replace_tokens(
            &k,
            Tokens {
                id_token: IdToken::new("a2"),
                refresh_token: None,
                expires_at: 9,
            },
            t0,
        );
        let s = book.peek(&k).unwrap();
        assert!(s.refreshed_within(Duration::from_secs(5), t0 + Duration::from_secs(4)));
        assert!(!s.refreshed_within(Duration::from_secs(5), t0 + Duration::from_secs(5)));
        assert_eq!(s.tokens.id_token.expose(), "a2");
        assert_eq!(s.tokens.refresh_token.as_ref().unwrap().expose(), "r-a");
        assert_eq!(book.key_of_token(&IdToken::new("a")), Some(k.clone()));
        assert_eq!(book.key_of_token(&IdToken::new("a2")), Some(k.clone()));
        assert_eq!(book.key_of_token(&IdToken::new("zz")), None);
        assert!(!format!("{s:?}").contains("r-a"));
        assert!(book.end(&k));
        assert!(book.is_empty());
    }
}

//! Attach tickets: a browser cannot put an `Authorization` header on a WebSocket, and tokens
//! must not travel in URLs, so `POST …/shell` hands out a random single-use ticket that the
//! attach URL carries instead. A ticket is bound to one person and one session, lives a few
//! seconds, and holds the id_token the live side exchanges for AWS credentials.
//!
//! Tickets live in the memory of the replica that issued them, so the Service in front of
//! the gateways uses ClientIP session affinity (docs/gateway.md).
//!
//! The book is bounded, since each ticket holds an id_token: a person holds at most
//! [`MAX_TICKETS_PER_USER`] (a new one evicts their own oldest, so only their own forgotten
//! tickets are lost), and the replica at most [`MAX_TICKETS_TOTAL`] (beyond that a new one is
//! refused with `E_RATE_LIMITED` until the oldest expires, so nobody's ticket is evicted by
//! someone else).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::gateway::access::auth::Authenticated;
use crate::gateway::error::{ApiError, ErrorCode, RETRY_AFTER};
use crate::gateway::handover::{Caller, IdToken};

/// What a ticket stands for, handed back at redemption.
#[derive(Clone, Debug)]
pub struct TicketGrant {
    /// The person who asked for it.
    pub caller: Caller,
    /// Their id_token (redacted in `Debug`).
    pub id_token: IdToken,
    /// The session it opens.
    pub session: String,
    /// The policy that governs the session, as the ticket's issuer read it (the attach reads
    /// it beside the session instead of after it, and reads the session's own if it differs).
    pub policy: String,
    /// Initial terminal columns.
    pub cols: u16,
    /// Initial terminal rows.
    pub rows: u16,
    /// Issued for a reattach (`POST …/ticket`) rather than the first attach.
    pub reattach: bool,
}

/// Why a ticket was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Never issued here, already used, or swept (another replica may have issued it).
    #[error(
        "the attach ticket is unknown or already used; ask for a new one (POST /api/v1/sessions/{{name}}/ticket)"
    )]
    Unknown,
    /// Issued, but its lifetime passed.
    #[error(
        "the attach ticket has expired; ask for a new one (POST /api/v1/sessions/{{name}}/ticket)"
    )]
    Expired,
    /// Issued for another session.
    #[error("the attach ticket was issued for another session")]
    WrongSession,
    /// The system's random generator failed.
    #[error("cannot generate a ticket")]
    Random,
    /// The replica already holds [`MAX_TICKETS_TOTAL`] unexpired tickets.
    #[error(
        "this gateway holds too many outstanding attach tickets; try again in {retry_after_seconds} s"
    )]
    Full {
        /// Whole seconds until the oldest ticket expires.
        retry_after_seconds: u64,
    },
}

/// Outstanding tickets one person may hold on a replica; a new one evicts their oldest.
pub const MAX_TICKETS_PER_USER: usize = 8;
/// Outstanding tickets a replica holds; beyond that new ones are refused until one expires.
pub const MAX_TICKETS_TOTAL: usize = 4096;

struct Entry {
    grant: TicketGrant,
    expires: Instant,
}

/// The tickets of this replica.
#[derive(Clone)]
pub struct TicketBook {
    ttl: Duration,
    per_user: usize,
    total: usize,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl std::fmt::Debug for TicketBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tickets themselves.
        f.debug_struct("TicketBook")
            .field("ttl", &self.ttl)
            .field("outstanding", &self.len())
            .finish()
    }
}

/// A fresh ticket: 256 random bits, base64url without padding.
pub fn new_ticket() -> Result<String, TicketError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| TicketError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

// === impl TicketBook ===

impl TicketBook {
    /// An empty book whose tickets live `ttl`, with the default bounds.
    pub fn new(ttl: Duration) -> Self {
        Self::with_bounds(ttl, MAX_TICKETS_PER_USER, MAX_TICKETS_TOTAL)
    }

    /// An empty book holding at most `per_user` tickets of one person and `total` in all
    /// (each at least 1).
    pub fn with_bounds(ttl: Duration, per_user: usize, total: usize) -> Self {
        Self {
            ttl,
            per_user: per_user.max(1),
            total: total.max(1),
            entries: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Ticket lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave a half-written entry: use the map anyway.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Issues a ticket for `grant`, valid from `now` for the book's lifetime. A person at
    /// their bound loses their oldest ticket; a full book refuses ([`TicketError::Full`]).
    pub fn issue(&self, grant: TicketGrant, now: Instant) -> Result<String, TicketError> {
        let ticket = new_ticket()?;
        let mut entries = self.entries();
        entries.retain(|_, e| e.expires > now);
        let sub = grant.caller.sub.as_str();
        let mut theirs: Vec<(Instant, String)> = entries
            .iter()
            .filter(|(_, e)| e.grant.caller.sub == sub)
            .map(|(t, e)| (e.expires, t.clone()))
            .collect();
        if theirs.len() >= self.per_user {
            theirs.sort();
            for (_, old) in theirs.iter().take(theirs.len() + 1 - self.per_user) {
                entries.remove(old);
            }
        }
        if entries.len() >= self.total {
            let oldest = entries.values().map(|e| e.expires).min().unwrap_or(now);
            let wait = oldest.saturating_duration_since(now);
            return Err(TicketError::Full {
                retry_after_seconds: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            });
        }
        entries.insert(
            ticket.clone(),
            Entry {
                grant,
                expires: now + self.ttl,
            },
        );
        Ok(ticket)
    }

    /// Redeems a ticket for `session` at `now`. A ticket is removed on the first attempt,
    /// whatever its outcome, so a leaked ticket cannot be tried twice.
    pub fn redeem(
        &self,
        ticket: &str,
        session: &str,
        now: Instant,
    ) -> Result<TicketGrant, TicketError> {
        let entry = self.entries().remove(ticket).ok_or(TicketError::Unknown)?;
        if entry.expires <= now {
            return Err(TicketError::Expired);
        }
        if entry.grant.session != session {
            return Err(TicketError::WrongSession);
        }
        Ok(entry.grant)
    }

    /// Drops expired tickets.
    pub fn sweep(&self, now: Instant) {
        self.entries().retain(|_, e| e.expires > now);
    }

    /// Outstanding tickets.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// True when no ticket is outstanding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What `POST …/shell` and `POST …/ticket` answer: the session and how to attach to it.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketOffer {
    /// The session's name.
    pub session: String,
    /// The WebSocket path, ticket included.
    pub attach_url: String,
    /// The single-use ticket.
    pub ticket: String,
    /// When the ticket expires (RFC 3339).
    pub expires_at: String,
    /// The session's resume token, on a reattach ticket asked for by the console session the
    /// shell was attached from (a reloaded page, which lost the one its `hello` frame gave).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_token: Option<String>,
}

impl TicketBook {
    /// Issues a ticket for `auth`'s caller to attach `session` (governed by `policy`) at
    /// `cols`×`rows`.
    pub fn offer(
        &self,
        auth: &Authenticated,
        session: &str,
        policy: &str,
        cols: u16,
        rows: u16,
        reattach: bool,
    ) -> Result<TicketOffer, ApiError> {
        let grant = TicketGrant {
            caller: auth.caller.clone(),
            id_token: auth.id_token.clone(),
            session: session.to_string(),
            policy: policy.to_string(),
            cols,
            rows,
            reattach,
        };
        self.offer_grant(grant)
    }

    /// Issues a ticket for `grant` now, as the API answers it.
    pub fn offer_grant(&self, grant: TicketGrant) -> Result<TicketOffer, ApiError> {
        let session = grant.session.clone();
        let ticket = self.issue(grant, Instant::now()).map_err(|e| match e {
            TicketError::Full {
                retry_after_seconds,
            } => ApiError::new(ErrorCode::RateLimited, e.to_string())
                .with(RETRY_AFTER, retry_after_seconds.max(1)),
            _ => ApiError::new(ErrorCode::Internal, e.to_string()),
        })?;
        let ttl = chrono::Duration::from_std(self.ttl()).unwrap_or_default();
        Ok(TicketOffer {
            session: session.clone(),
            attach_url: format!("/api/v1/sessions/{session}/attach?ticket={ticket}"),
            ticket,
            expires_at: (chrono::Utc::now() + ttl)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            resume_token: None,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn grant(session: &str) -> TicketGrant {
        grant_of("alice", session)
    }

    fn grant_of(sub: &str, session: &str) -> TicketGrant {
        TicketGrant {
            caller: Caller {
                sub: sub.into(),
                email: None,
                name: "Alice".into(),
                groups: vec![],
                tier: Some("engineer".into()),
            },
            id_token: IdToken::new("secret-token"),
            session: session.into(),
            policy: "p".into(),
            cols: 80,
            rows: 24,
            reattach: false,
        }
    }

    #[test]
    fn tickets_are_random_256_bit_base64url() {
        let a = new_ticket().unwrap();
        let b = new_ticket().unwrap();
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn single_use() {
        let book = TicketBook::new(Duration::from_secs(30));
        let now = Instant::now();
        let t = book.issue(grant("s-1"), now).unwrap();
        let g = book.redeem(&t, "s-1", now).unwrap();
        assert_eq!(g.caller.sub, "alice");
        assert_eq!(
            book.redeem(&t, "s-1", now).unwrap_err(),
            TicketError::Unknown
        );
    }

    #[test]
    fn expiry_and_sweep() {
        let book = TicketBook::new(Duration::from_secs(30));
        let now = Instant::now();
        let t = book.issue(grant("s-1"), now).unwrap();
        assert_eq!(
            book.redeem(&t, "s-1", now + Duration::from_secs(31))
                .unwrap_err(),
            TicketError::Expired
        );
        book.issue(grant("s-2"), now).unwrap();
        book.sweep(now + Duration::from_secs(5));
        assert_eq!(book.len(), 1);
        book.sweep(now + Duration::from_secs(30));
        assert!(book.is_empty());
    }

    #[test]
    fn bound_to_the_session_and_burnt_by_a_wrong_try() {
        let book = TicketBook::new(Duration::from_secs(30));
        let now = Instant::now();
        let t = book.issue(grant("s-1"), now).unwrap();
        assert_eq!(
            book.redeem(&t, "s-2", now).unwrap_err(),
            TicketError::WrongSession
        );
        assert_eq!(
            book.redeem(&t, "s-1", now).unwrap_err(),
            TicketError::Unknown
        );
    }

    #[test]
    fn a_person_at_their_bound_loses_their_own_oldest_ticket() {
        let book = TicketBook::with_bounds(Duration::from_secs(30), 3, 100);
        let start = Instant::now();
        let bob = book.issue(grant_of("bob", "b-1"), start).unwrap();
        let alice: Vec<String> = (0..10u64)
            .map(|i| {
                book.issue(grant("s-1"), start + Duration::from_millis(i))
                    .unwrap()
            })
            .collect();
        assert_eq!(book.len(), 4, "three of alice's and bob's one");
        let now = start + Duration::from_secs(1);
        for old in &alice[..7] {
            assert_eq!(
                book.redeem(old, "s-1", now).unwrap_err(),
                TicketError::Unknown
            );
        }
        for newest in &alice[7..] {
            assert_eq!(book.redeem(newest, "s-1", now).unwrap().caller.sub, "alice");
        }
        assert_eq!(book.redeem(&bob, "b-1", now).unwrap().caller.sub, "bob");
    }

    #[test]
    fn a_full_book_refuses_until_the_oldest_ticket_expires() {
        let book = TicketBook::with_bounds(Duration::from_secs(30), 2, 4);
        let start = Instant::now();
        let held: Vec<String> = (0..4u64)
            .map(|i| {
                book.issue(
                    grant_of(&format!("user-{i}"), "s"),
                    start + Duration::from_secs(i),
                )
                .unwrap()
            })
            .collect();
        let at = start + Duration::from_secs(10);
        assert_eq!(
            book.issue(grant_of("carol", "s"), at).unwrap_err(),
            TicketError::Full {
                retry_after_seconds: 20
            },
            "the oldest (issued at 0 s) expires at 30 s"
        );
        assert_eq!(book.len(), 4, "nobody else's ticket was evicted");
        assert_eq!(book.redeem(&held[0], "s", at).unwrap().caller.sub, "user-0");
        book.issue(grant_of("carol", "s"), at).unwrap();
        let later = start + Duration::from_secs(31);
        book.issue(grant_of("dave", "s"), later).unwrap();
        assert_eq!(book.len(), 4, "expired tickets made room");
    }

    #[test]
    fn a_full_book_answers_rate_limited_with_retry_after() {
        let book = TicketBook::with_bounds(Duration::from_secs(30), 1, 1);
        book.issue(grant_of("bob", "s"), Instant::now()).unwrap();
        let g = grant("s-1");
        let err = book.offer_grant(g).unwrap_err();
        assert_eq!(err.code, ErrorCode::RateLimited);
        let after = err.extra[RETRY_AFTER].as_u64().unwrap();
        assert!((1..=30).contains(&after), "{after}");
        assert!(err.message.contains("try again"), "{}", err.message);
    }

    #[test]
    fn debug_never_shows_tickets_or_tokens() {
        let book = TicketBook::new(Duration::from_secs(30));
        let t = book.issue(grant("s-1"), Instant::now()).unwrap();
        let text = format!("{book:?} {:?}", grant("s-1"));
        assert!(!text.contains(&t));
        assert!(!text.contains("secret-token"));
    }
}

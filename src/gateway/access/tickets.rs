//! Attach tickets: a browser cannot put an `Authorization` header on a WebSocket, and tokens
//! must not travel in URLs, so `POST …/shell` hands out a random single-use ticket that the
//! attach URL carries instead. A ticket is bound to one person and one session, lives a few
//! seconds, and holds the id_token the live side exchanges for AWS credentials.
//!
//! Tickets live in the memory of the replica that issued them, so the Service in front of
//! the gateways uses ClientIP session affinity (docs/gateway.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::gateway::access::auth::Authenticated;
use crate::gateway::error::{ApiError, ErrorCode};
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
}

struct Entry {
    grant: TicketGrant,
    expires: Instant,
}

/// The tickets of this replica.
#[derive(Clone)]
pub struct TicketBook {
    ttl: Duration,
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
    /// An empty book whose tickets live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
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

    /// Issues a ticket for `grant`, valid from `now` for the book's lifetime.
    pub fn issue(&self, grant: TicketGrant, now: Instant) -> Result<String, TicketError> {
        let ticket = new_ticket()?;
        let mut entries = self.entries();
        entries.retain(|_, e| e.expires > now);
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
}

impl TicketBook {
    /// Issues a ticket for `auth`'s caller to attach `session` at `cols`×`rows`.
    pub fn offer(
        &self,
        auth: &Authenticated,
        session: &str,
        cols: u16,
        rows: u16,
        reattach: bool,
    ) -> Result<TicketOffer, ApiError> {
        let grant = TicketGrant {
            caller: auth.caller.clone(),
            id_token: auth.id_token.clone(),
            session: session.to_string(),
            cols,
            rows,
            reattach,
        };
        let ticket = self
            .issue(grant, Instant::now())
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        let ttl = chrono::Duration::from_std(self.ttl()).unwrap_or_default();
        Ok(TicketOffer {
            session: session.to_string(),
            attach_url: format!("/api/v1/sessions/{session}/attach?ticket={ticket}"),
            ticket,
            expires_at: (chrono::Utc::now() + ttl)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn grant(session: &str) -> TicketGrant {
        TicketGrant {
            caller: Caller {
                sub: "alice".into(),
                email: None,
                name: "Alice".into(),
                groups: vec![],
                tier: Some("engineer".into()),
            },
            id_token: IdToken::new("secret-token"),
            session: session.into(),
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
    fn debug_never_shows_tickets_or_tokens() {
        let book = TicketBook::new(Duration::from_secs(30));
        let t = book.issue(grant("s-1"), Instant::now()).unwrap();
        let text = format!("{book:?} {:?}", grant("s-1"));
        assert!(!text.contains(&t));
        assert!(!text.contains("secret-token"));
    }
}

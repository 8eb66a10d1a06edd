//! Pure: which sessions hold a cap slot, as the gateway's one session watch last saw them
//! ([`crate::gateway::session_watch`]), so an open counts the caps without listing every
//! session. A few facts per session (policy, person, whether it holds a slot, its
//! resourceVersion), never the object.

use std::collections::HashMap;

use kube::ResourceExt;

use std::collections::BTreeMap;

use crate::api::{CapCount, NodeShellSession, SessionPhase, holds_cap_slot};

/// What the caps count needs of one session.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Holder {
    policy: String,
    sub: String,
    holds_slot: bool,
    phase: SessionPhase,
    /// The apiserver's resourceVersion, when it reads as a number.
    version: Option<u64>,
}

impl Holder {
    fn of(session: &NodeShellSession) -> Self {
        Self {
            policy: session.spec.policy_name.clone(),
            sub: session.spec.user.sub.clone(),
            holds_slot: holds_cap_slot(session),
            phase: session.phase(),
            version: session
                .metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok()),
        }
    }
}

/// Every session the watch has seen, and whether its first listing is complete.
#[derive(Debug, Default)]
pub struct SlotHolders {
    sessions: HashMap<String, Holder>,
    /// A listing in progress (the watch's start or a re-list), swapped in when complete.
    listing: Option<HashMap<String, Holder>>,
    synced: bool,
}

impl SlotHolders {
    /// A (re-)listing starts.
    pub fn listing_started(&mut self) {
        self.listing = Some(HashMap::new());
    }

    /// One session of the listing.
    pub fn listed(&mut self, session: &NodeShellSession) {
        let holder = Holder::of(session);
        match &mut self.listing {
            Some(listing) => listing.insert(session.name_any(), holder),
            None => self.sessions.insert(session.name_any(), holder),
        };
    }

    /// The listing is complete: it replaces what was known.
    pub fn listing_done(&mut self) {
        if let Some(listing) = self.listing.take() {
            self.sessions = listing;
        }
        self.synced = true;
    }

    /// A session as the watch or a read saw it; an older version than the one known (a read
    /// that raced the watch) changes nothing.
    pub fn observed(&mut self, session: &NodeShellSession) {
        let holder = Holder::of(session);
        let older = self.sessions.get(&session.name_any()).is_some_and(
            |known| matches!((known.version, holder.version), (Some(k), Some(h)) if h < k),
        );
        if !older {
            self.sessions.insert(session.name_any(), holder);
        }
    }

    /// A session was deleted.
    pub fn deleted(&mut self, name: &str) {
        self.sessions.remove(name);
    }

    /// Whether the watch has already seen session `name` out of Pending (decided), in what it
    /// knows or in a listing in progress.
    pub fn seen_decided(&self, name: &str) -> bool {
        [self.listing.as_ref(), Some(&self.sessions)]
            .into_iter()
            .flatten()
            .any(|known| {
                known
                    .get(name)
                    .is_some_and(|h| h.phase != SessionPhase::Pending)
            })
    }

    /// The live sessions of `policy`, `sub`'s and everyone's; `None` until the first listing
    /// is complete.
    pub fn count(&self, policy: &str, sub: &str) -> Option<CapCount> {
        if !self.synced {
            return None;
        }
        let mut count = CapCount::default();
        for holder in self.sessions.values() {
            if holder.holds_slot && holder.policy == policy {
                count.total += 1;
                if holder.sub == sub {
                    count.per_user += 1;
                }
            }
        }
        Some(count)
    }
}

impl SlotHolders {
    /// Every session the watch knows, counted by phase name in name order (the `sessions`
    /// gauge); `None` until the first listing is complete.
    pub fn by_phase(&self) -> Option<Vec<(String, i64)>> {
        if !self.synced {
            return None;
        }
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for holder in self.sessions.values() {
            *counts.entry(holder.phase.to_string()).or_default() += 1;
        }
        Some(counts.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SessionPhase;
    use crate::testing::session;

    fn at(name: &str, user: &str, phase: Option<SessionPhase>, version: u64) -> NodeShellSession {
        let mut s = session(name, user, "p", 0, phase);
        s.metadata.resource_version = Some(version.to_string());
        s
    }

    #[test]
    fn counts_as_the_controller_does_once_listed() {
        let mut holders = SlotHolders::default();
        holders.listing_started();
        holders.listed(&at("a1", "alice", Some(SessionPhase::Active), 1));
        holders.listed(&at("a2", "alice", None, 2));
        holders.listed(&at("b1", "bob", Some(SessionPhase::Admitted), 3));
        assert_eq!(holders.count("p", "alice"), None, "not listed yet");
        holders.listing_done();
        let sessions = [
            at("a1", "alice", Some(SessionPhase::Active), 1),
            at("a2", "alice", None, 2),
            at("b1", "bob", Some(SessionPhase::Admitted), 3),
        ];
        assert_eq!(
            holders.count("p", "alice"),
            Some(CapCount::of(&sessions, "p", "alice"))
        );
        assert_eq!(
            holders.count("p", "alice"),
            Some(CapCount {
                per_user: 1,
                total: 2
            })
        );
        assert_eq!(holders.count("other", "alice"), Some(CapCount::default()));
    }

    #[test]
    fn a_decision_counts_and_a_stale_read_does_not_undo_it() {
        let mut holders = SlotHolders::default();
        holders.listing_started();
        holders.listing_done();
        holders.observed(&at("a1", "alice", None, 5));
        holders.observed(&at("a1", "alice", Some(SessionPhase::Admitted), 7));
        holders.observed(&at("a1", "alice", None, 6));
        assert_eq!(holders.count("p", "alice").map(|c| c.per_user), Some(1));
        holders.observed(&at("a1", "alice", Some(SessionPhase::Closed), 9));
        assert_eq!(holders.count("p", "alice").map(|c| c.per_user), Some(0));
        holders.observed(&at("a2", "alice", Some(SessionPhase::Active), 10));
        holders.deleted("a2");
        assert_eq!(holders.count("p", "alice").map(|c| c.total), Some(0));
    }

    #[test]
    fn phases_are_counted_over_every_known_session_once_listed() {
        let mut holders = SlotHolders::default();
        holders.listing_started();
        holders.listed(&at("a1", "alice", Some(SessionPhase::Active), 1));
        assert_eq!(holders.by_phase(), None, "not listed yet");
        holders.listed(&at("a2", "alice", None, 2));
        holders.listed(&at("b1", "bob", Some(SessionPhase::Closed), 3));
        holders.listing_done();
        holders.observed(&at("a2", "alice", Some(SessionPhase::Admitted), 4));
        holders.observed(&at("c1", "carol", Some(SessionPhase::Active), 5));
        holders.deleted("b1");
        assert_eq!(
            holders.by_phase(),
            Some(vec![("Active".to_string(), 2), ("Admitted".to_string(), 1)])
        );
    }

    #[test]
    fn a_relisting_replaces_what_was_known_when_complete() {
        let mut holders = SlotHolders::default();
        holders.listing_started();
        holders.listed(&at("gone", "alice", Some(SessionPhase::Active), 1));
        holders.listing_done();
        holders.listing_started();
        holders.listed(&at("new", "bob", Some(SessionPhase::Active), 2));
        // Meanwhile the old knowledge still counts.
        assert_eq!(holders.count("p", "alice").map(|c| c.per_user), Some(1));
        holders.listing_done();
        assert_eq!(
            holders.count("p", "alice"),
            Some(CapCount {
                per_user: 0,
                total: 1
            })
        );
    }

    #[test]
    fn a_decision_seen_known_or_in_a_listing_in_progress_counts_as_seen() {
        let mut holders = SlotHolders::default();
        assert!(!holders.seen_decided("s1"), "never seen");
        holders.observed(&at("s1", "alice", Some(SessionPhase::Pending), 1));
        assert!(!holders.seen_decided("s1"), "seen Pending only");
        holders.observed(&at("s1", "alice", Some(SessionPhase::Rejected), 2));
        assert!(holders.seen_decided("s1"));
        holders.listing_started();
        holders.listed(&at("s2", "bob", Some(SessionPhase::Admitted), 3));
        assert!(
            holders.seen_decided("s2"),
            "in the listing not yet complete"
        );
        holders.deleted("s1");
        assert!(!holders.seen_decided("s1"));
    }
}

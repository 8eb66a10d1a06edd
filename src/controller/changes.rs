//! What changed since the last pass, as the watches report it, so a pass looks only at that:
//! a session that awaits admission wakes the loop at once and is decided before anything
//! else; any other session change only marks that session for expiry; a policy whose spec
//! changed (or that came or went), a relist, or a new leader asks for a full pass.
//!
//! A policy status write (the controller's own) or a gateway's activity write no longer
//! makes every cached session be walked again.
//!
//! It also keeps the latest session resourceVersion the watch has delivered into the cache,
//! which admission compares with a ledger's floor before it counts from the cache.

use super::admission::awaits_admission;
use super::ledger::{caught_up, later_version};
use crate::api::NodeShellSession;
use kube::ResourceExt;
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// The work the watches queued for the next pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dirty {
    /// Walk every cached session (expiry, retention and every policy's status).
    pub full: bool,
    /// Sessions that changed (or went) since the last pass, by name.
    pub sessions: HashSet<String>,
}

/// Shared by the watch tasks (which record) and the pass loop (which takes).
#[derive(Debug, Default)]
pub struct Changes {
    /// Poked when a session awaits admission.
    admit: Notify,
    /// Poked on any other change.
    other: Notify,
    /// Set when a session awaits admission, cleared when an admission pass starts.
    admit_due: AtomicBool,
    dirty: Mutex<Dirty>,
    /// The latest session resourceVersion in the cache (`None`: none delivered yet).
    delivered: watch::Sender<Option<String>>,
}

// === impl Changes ===

impl Changes {
    /// A session was created, changed or deleted (`deleted`).
    pub fn session(&self, session: &NodeShellSession, deleted: bool) {
        if !deleted && awaits_admission(session) {
            self.admit_due.store(true, Ordering::Release);
            self.admit.notify_one();
            return;
        }
        self.with_dirty(|d| {
            d.sessions.insert(session.name_any());
        });
        self.other.notify_one();
    }

    /// The session watch put an object of resourceVersion `version` into the cache (call it
    /// after the cache holds it; for a relist, once with the latest version of the new list
    /// when the cache has switched to it). Versions only move forward.
    pub fn delivered_version(&self, version: &str) {
        self.delivered.send_if_modified(|current| {
            let later = later_version(current.as_deref(), version);
            let changed = later != *current;
            *current = later;
            changed
        });
    }

    /// The latest session resourceVersion the cache holds. Read it before taking a snapshot
    /// of the cache: the snapshot then holds at least everything up to it.
    pub fn delivered(&self) -> Option<String> {
        self.delivered.borrow().clone()
    }

    /// Waits at most `bound` for the cache to deliver `floor`; true once it has.
    pub async fn wait_for_version(&self, floor: Option<&str>, bound: Duration) -> bool {
        let mut seen = self.delivered.subscribe();
        let reached = seen.wait_for(|delivered| caught_up(delivered.as_deref(), floor));
        matches!(tokio::time::timeout(bound, reached).await, Ok(Ok(_)))
    }

    /// Everything must be looked at again (a policy's spec changed, a relist, a new leader).
    pub fn everything(&self) {
        self.with_dirty(|d| {
            d.full = true;
            d.sessions.clear();
        });
        self.other.notify_one();
    }

    /// Resolves when something changed (a session awaiting admission first).
    pub async fn changed(&self) {
        tokio::select! {
            biased;
            () = self.admit.notified() => {}
            () = self.other.notified() => {}
        }
    }

    /// True (once) if a session started awaiting admission since the last call: the pass
    /// checks it between other writes, so a click never waits behind a long expiry pass.
    pub fn take_admit(&self) -> bool {
        self.admit_due.swap(false, Ordering::AcqRel)
    }

    /// The sessions (or the full walk) queued since the last call.
    pub fn take(&self) -> Dirty {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Dirty> {
        // A poisoned lock only means a panic elsewhere; the set itself stays usable.
        match self.dirty.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn with_dirty(&self, f: impl FnOnce(&mut Dirty)) {
        let mut dirty = self.lock();
        if dirty.full {
            // A full pass is queued: it looks at every session anyway.
            let mut scratch = Dirty::default();
            f(&mut scratch);
            dirty.full = true;
            return;
        }
        f(&mut dirty);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SessionPhase;
    use crate::testing::session;

    #[test]
    fn a_waiting_session_asks_for_admission_and_others_only_mark_themselves() {
        let changes = Changes::default();
        changes.session(&session("new", "alice", "p", 1, None), false);
        changes.session(
            &session("active", "alice", "p", 2, Some(SessionPhase::Active)),
            false,
        );
        // A Pending session that is deleted is no longer waiting: only expiry looks at it.
        changes.session(&session("gone", "alice", "p", 3, None), true);
        assert!(changes.take_admit());
        assert!(!changes.take_admit(), "taken once");
        assert_eq!(
            changes.take(),
            Dirty {
                full: false,
                sessions: HashSet::from(["active".to_string(), "gone".to_string()]),
            }
        );
        assert_eq!(changes.take(), Dirty::default(), "taken once");
    }

    #[tokio::test]
    async fn the_delivered_version_only_moves_forward_and_can_be_waited_for() {
        let changes = Changes::default();
        assert_eq!(changes.delivered(), None);
        changes.delivered_version("12");
        changes.delivered_version("9");
        changes.delivered_version("not-a-number");
        assert_eq!(changes.delivered().as_deref(), Some("12"));
        assert!(changes.wait_for_version(Some("12"), Duration::ZERO).await);
        assert!(
            !changes
                .wait_for_version(Some("13"), Duration::from_millis(10))
                .await
        );
        let waiting = changes.wait_for_version(Some("13"), Duration::from_secs(30));
        let deliver = async {
            tokio::task::yield_now().await;
            changes.delivered_version("13");
        };
        let (reached, ()) = tokio::join!(waiting, deliver);
        assert!(reached);
    }

    #[test]
    fn a_full_pass_absorbs_single_sessions() {
        let changes = Changes::default();
        changes.session(
            &session("a", "alice", "p", 1, Some(SessionPhase::Active)),
            false,
        );
        changes.everything();
        changes.session(
            &session("b", "alice", "p", 2, Some(SessionPhase::Active)),
            false,
        );
        let dirty = changes.take();
        assert!(dirty.full);
        assert!(dirty.sessions.is_empty());
    }
}

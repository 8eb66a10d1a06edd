//! What changed since the last pass, as the watches report it, so a pass looks only at that:
//! a session that awaits admission wakes the loop at once and is decided before anything
//! else; any other session change only marks that session for expiry; a policy whose spec
//! changed (or that came or went), a relist, or a new leader asks for a full pass.
//!
//! A policy status write (the controller's own) or a gateway's activity write no longer
//! makes every cached session be walked again.

use super::admission::awaits_admission;
use crate::api::NodeShellSession;
use kube::ResourceExt;
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

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

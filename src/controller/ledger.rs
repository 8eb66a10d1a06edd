//! The admission ledger of one policy: the sessions that hold a slot under its caps, kept in
//! a ConfigMap that every admission writes with a resourceVersion precondition. Pure: how the
//! ledger is read from and written to the ConfigMap's data, how it is reconciled with the
//! watch cache, and how one pass decides a policy's waiting sessions against it.
//!
//! Why a ledger: the watch cache may lag behind the apiserver (a new leader after a failover,
//! or a stale leader that has not noticed it lost the Lease). Every admission is first
//! recorded here with a compare-and-swap, so two controllers deciding at once serialise on
//! this one object and the second one sees the first one's admissions before it counts.

use super::admission::{AdmissionDecision, NodeView, SessionAdmission};
use crate::api::{NodeShellPolicy, NodeShellSession, holds_cap_slot};
use kube::ResourceExt;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The prefix of every ledger ConfigMap's name: `nodeshell-admission-<policy>`.
pub const LEDGER_PREFIX: &str = "nodeshell-admission-";
/// The label on ledger ConfigMaps (value: the policy, as a label value).
pub const LEDGER_LABEL: &str = "nodeshell.periscope.io/admission-ledger";
/// The longest object name the apiserver accepts.
const MAX_NAME: usize = 253;

/// The ConfigMap name of `policy`'s ledger. A policy name too long for the prefix is cut and
/// given a hash of the whole name, so two long names never share a ledger.
pub fn ledger_name(policy: &str) -> String {
    let name = format!("{LEDGER_PREFIX}{policy}");
    if name.len() <= MAX_NAME {
        return name;
    }
    let digest = Sha256::digest(policy.as_bytes());
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let keep = MAX_NAME - LEDGER_PREFIX.len() - hash.len() - 1;
    let cut = policy[..keep].trim_end_matches(['-', '.']);
    format!("{LEDGER_PREFIX}{cut}-{hash}")
}

/// One slot: the session's uid and its person (`spec.user.sub`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// `metadata.uid` of the session (a recreated session of the same name is another one).
    pub uid: String,
    /// `spec.user.sub`, for the per-person cap.
    pub sub: String,
}

/// The sessions that hold a slot under one policy, by session name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    slots: BTreeMap<String, Slot>,
}

/// What the watch cache says about one ledger entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheSays {
    /// The session (same uid) is there and not ended: it keeps its slot.
    Holds,
    /// The session (same uid) has ended (Closed or Rejected): phases never go back, so its
    /// slot is free for good.
    Ended,
    /// Not in the cache, or there under another uid: the cache may simply not have seen it
    /// yet, so only a read from the apiserver may free the slot.
    Unknown,
}

// === impl Ledger ===

impl Ledger {
    /// Reads a ledger from a ConfigMap's `data` (`<session>: "<uid> <sub>"`). An entry
    /// without a space is kept with an empty uid: it still holds its slot.
    pub fn from_data(data: Option<&BTreeMap<String, String>>) -> Self {
        let slots = data
            .into_iter()
            .flatten()
            .map(|(name, value)| {
                let (uid, sub) = value.split_once(' ').unwrap_or(("", value.as_str()));
                (
                    name.clone(),
                    Slot {
                        uid: uid.to_string(),
                        sub: sub.to_string(),
                    },
                )
            })
            .collect();
        Self { slots }
    }

    /// The ConfigMap `data` of this ledger.
    pub fn to_data(&self) -> BTreeMap<String, String> {
        self.slots
            .iter()
            .map(|(name, slot)| (name.clone(), format!("{} {}", slot.uid, slot.sub)))
            .collect()
    }

    /// Number of slots held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no slot is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// True when `session` (name and uid) holds a slot.
    pub fn holds(&self, session: &NodeShellSession) -> bool {
        self.slots
            .get(&session.name_any())
            .is_some_and(|slot| slot.uid == uid_of(session))
    }

    /// Records that `session` holds a slot.
    pub fn insert(&mut self, session: &NodeShellSession) {
        self.slots.insert(
            session.name_any(),
            Slot {
                uid: uid_of(session),
                sub: session.spec.user.sub.clone(),
            },
        );
    }

    /// Frees the slot of the session named `name`.
    pub fn remove(&mut self, name: &str) {
        self.slots.remove(name);
    }

    /// The slots, by session name.
    pub fn slots(&self) -> impl Iterator<Item = (&String, &Slot)> {
        self.slots.iter()
    }

    /// Reconciles the ledger of `policy` with the watch cache: frees the slots of sessions
    /// the cache shows ended, adds live sessions of the policy the ledger lacks (admitted
    /// before the ledger existed), and returns the names the cache cannot vouch for, to be
    /// read from the apiserver.
    pub fn reconcile<'a, I>(&mut self, policy: &str, cache: I) -> Vec<String>
    where
        I: IntoIterator<Item = &'a NodeShellSession>,
    {
        let mut seen: BTreeMap<String, CacheSays> = BTreeMap::new();
        for session in cache {
            if session.spec.policy_name != policy {
                continue;
            }
            let name = session.name_any();
            if let Some(slot) = self.slots.get(&name) {
                if slot.uid == uid_of(session) {
                    seen.insert(name, cache_says(session));
                }
            } else if holds_cap_slot(session) {
                self.insert(session);
                seen.insert(name, CacheSays::Holds);
            }
        }
        let mut unknown = Vec::new();
        self.slots.retain(
            |name, _| match seen.get(name).copied().unwrap_or(CacheSays::Unknown) {
                CacheSays::Holds => true,
                CacheSays::Ended => false,
                CacheSays::Unknown => {
                    unknown.push(name.clone());
                    true
                }
            },
        );
        unknown
    }

    /// Decides `pending` (one policy's waiting sessions, in admission order) against this
    /// ledger and records every admission in it. A session the ledger already holds was
    /// admitted by an earlier pass whose status write did not land: it is admitted again
    /// without being counted twice. `node` gives each session's node view.
    pub fn decide<'s, 'n, F>(
        &mut self,
        policy: Option<&NodeShellPolicy>,
        pending: &[&'s NodeShellSession],
        mut node: F,
    ) -> Vec<(&'s NodeShellSession, AdmissionDecision)>
    where
        F: FnMut(&NodeShellSession) -> NodeView<'n>,
    {
        let mut admission = SessionAdmission::new(policy, std::iter::empty());
        let policy_name = pending
            .first()
            .map(|s| s.spec.policy_name.clone())
            .unwrap_or_default();
        for slot in self.slots.values() {
            admission.record_slot(&policy_name, &slot.sub);
        }
        let mut decisions = Vec::with_capacity(pending.len());
        for session in pending {
            if self.holds(session) {
                decisions.push((*session, AdmissionDecision::Admit));
                continue;
            }
            let decision = admission.decide(session, node(session));
            if decision == AdmissionDecision::Admit {
                self.insert(session);
            }
            decisions.push((*session, decision));
        }
        decisions
    }
}

fn uid_of(session: &NodeShellSession) -> String {
    session.metadata.uid.clone().unwrap_or_default()
}

fn cache_says(session: &NodeShellSession) -> CacheSays {
    if session.phase().is_terminal() {
        CacheSays::Ended
    } else {
        CacheSays::Holds
    }
}

/// Whether a session read from the apiserver (`None`: it does not exist) still holds the
/// slot recorded for it under `uid`.
pub fn still_holds(read: Option<&NodeShellSession>, uid: &str) -> bool {
    read.is_some_and(|s| uid_of(s) == uid && !s.phase().is_terminal())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{SessionPhase, SessionReason};
    use crate::testing::{node_view, policy, session};

    fn with_uid(mut s: NodeShellSession, uid: &str) -> NodeShellSession {
        s.metadata.uid = Some(uid.into());
        s
    }

    fn reason(d: &AdmissionDecision) -> Option<SessionReason> {
        match d {
            AdmissionDecision::Admit => None,
            AdmissionDecision::Reject { reason, .. } => Some(*reason),
        }
    }

    #[test]
    fn data_round_trips_and_a_sub_may_hold_spaces() {
        let mut ledger = Ledger::default();
        ledger.insert(&with_uid(session("s1", "alice smith", "p", 1, None), "u1"));
        let data = ledger.to_data();
        assert_eq!(data.get("s1").map(String::as_str), Some("u1 alice smith"));
        assert_eq!(Ledger::from_data(Some(&data)), ledger);
        assert!(Ledger::from_data(None).is_empty());
    }

    #[test]
    fn names_fit_the_apiserver_and_long_ones_stay_distinct() {
        assert_eq!(ledger_name("default"), "nodeshell-admission-default");
        let a = ledger_name(&"a".repeat(253));
        let b = ledger_name(&format!("{}b", "a".repeat(252)));
        assert!(a.len() <= 253 && b.len() <= 253);
        assert_ne!(a, b);
        assert!(a.starts_with(LEDGER_PREFIX));
    }

    #[test]
    fn reconcile_frees_ended_slots_adopts_live_ones_and_asks_about_the_rest() {
        let mut ledger = Ledger::default();
        ledger.insert(&with_uid(session("ended", "a", "p", 1, None), "u1"));
        ledger.insert(&with_uid(session("live", "a", "p", 1, None), "u2"));
        ledger.insert(&with_uid(session("unseen", "a", "p", 1, None), "u3"));
        ledger.insert(&with_uid(session("recreated", "a", "p", 1, None), "u4"));
        let cache = [
            with_uid(
                session("ended", "a", "p", 1, Some(SessionPhase::Closed)),
                "u1",
            ),
            with_uid(
                session("live", "a", "p", 1, Some(SessionPhase::Active)),
                "u2",
            ),
            with_uid(
                session("recreated", "a", "p", 1, Some(SessionPhase::Closed)),
                "other",
            ),
            with_uid(
                session("adopted", "b", "p", 1, Some(SessionPhase::Admitted)),
                "u5",
            ),
            with_uid(
                session("elsewhere", "b", "q", 1, Some(SessionPhase::Admitted)),
                "u6",
            ),
        ];
        let unknown = ledger.reconcile("p", &cache);
        assert_eq!(unknown, ["recreated", "unseen"]);
        let names: Vec<&String> = ledger.slots().map(|(n, _)| n).collect();
        assert_eq!(names, ["adopted", "live", "recreated", "unseen"]);
    }

    #[test]
    fn a_read_frees_a_slot_only_when_the_session_is_gone_ended_or_replaced() {
        let live = with_uid(session("s", "a", "p", 1, Some(SessionPhase::Active)), "u");
        let closed = with_uid(session("s", "a", "p", 1, Some(SessionPhase::Closed)), "u");
        assert!(still_holds(Some(&live), "u"));
        assert!(!still_holds(Some(&live), "other"));
        assert!(!still_holds(Some(&closed), "u"));
        assert!(!still_holds(None, "u"));
    }

    #[test]
    fn slots_in_the_ledger_count_even_when_the_cache_has_not_seen_them() {
        // Another controller admitted two of alice's sessions; this one's cache does not
        // show them yet, but the ledger does, so alice's third is refused.
        let p = policy("p", 2, 3);
        let mut ledger = Ledger::default();
        ledger.insert(&with_uid(session("x1", "alice", "p", 1, None), "x1"));
        ledger.insert(&with_uid(session("x2", "alice", "p", 1, None), "x2"));
        let pending = [
            with_uid(session("s1", "alice", "p", 2, None), "s1"),
            with_uid(session("s2", "bob", "p", 3, None), "s2"),
            with_uid(session("s3", "carol", "p", 4, None), "s3"),
        ];
        let refs: Vec<&NodeShellSession> = pending.iter().collect();
        let decisions = ledger.decide(Some(&p), &refs, |_| node_view());
        let reasons: Vec<Option<SessionReason>> =
            decisions.iter().map(|(_, d)| reason(d)).collect();
        assert_eq!(
            reasons,
            [
                Some(SessionReason::CapPerUser),
                None,
                Some(SessionReason::CapTotal)
            ]
        );
        assert_eq!(ledger.len(), 3, "bob's admission is recorded");
        assert!(ledger.holds(&pending[1]));
    }

    #[test]
    fn a_session_the_ledger_holds_is_admitted_again_without_counting_twice() {
        let p = policy("p", 1, 1);
        let waiting = with_uid(session("s1", "alice", "p", 1, None), "s1");
        let mut ledger = Ledger::default();
        ledger.insert(&waiting);
        let decisions = ledger.decide(Some(&p), &[&waiting], |_| node_view());
        assert_eq!(decisions[0].1, AdmissionDecision::Admit);
        assert_eq!(ledger.len(), 1);
    }
}

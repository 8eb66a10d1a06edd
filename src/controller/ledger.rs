//! The admission ledger of one policy: the admissions the watch caches may not have seen yet,
//! and the floor a cache must have reached before a controller counts from it. Kept in a
//! ConfigMap that every admission writes with a resourceVersion precondition. Pure: how the
//! ledger is read from and written to the ConfigMap, how it is reconciled with (pruned by)
//! a session cache, when a cache is recent enough to count from, and how one pass decides a
//! policy's waiting sessions against cache and ledger together.
//!
//! Why a ledger: the watch cache may lag behind the apiserver (a new leader after a failover,
//! or a stale leader that has not noticed it lost the Lease). Every admission is first
//! recorded here with a compare-and-swap, so two controllers deciding at once serialise on
//! this one object and the second one sees the first one's admissions before it counts.
//!
//! Why it stays small: an entry is dropped (and the floor raised to the resourceVersion of
//! the session as seen) once a cache shows the session holding its slot or ended. From then
//! on a cache that has delivered the floor counts that session itself, so the write of one
//! admission carries the few admissions no cache has confirmed yet, not every live session.
//! The argument is written out in `docs/controller.md` ("Why it never admits more than the
//! caps").

use super::admission::{AdmissionDecision, NodeView, SessionAdmission};
use crate::api::{NodeShellPolicy, NodeShellSession, holds_cap_slot};
use kube::ResourceExt;
use sha2::{Digest, Sha256};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// The prefix of every ledger ConfigMap's name: `nodeshell-admission-<policy>`.
pub const LEDGER_PREFIX: &str = "nodeshell-admission-";
/// The label on ledger ConfigMaps (value: the policy, as a label value).
pub const LEDGER_LABEL: &str = "nodeshell.periscope.io/admission-ledger";
/// The annotation on a ledger ConfigMap holding its floor: the NodeShellSession
/// resourceVersion a controller's session watch must have delivered before it counts from
/// its cache. Absent on a ledger written before floors existed (every entry then counts).
pub const FLOOR_ANNOTATION: &str = "nodeshell.periscope.io/admission-floor";
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

/// One policy's ledger: the admissions no cache is known to have seen yet, by session name,
/// and the floor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    slots: BTreeMap<String, Slot>,
    floor: Option<String>,
}

/// What the watch cache says about one ledger entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheSays {
    /// The session (same uid) is there and holds its slot (Admitted, Active or Closing): the
    /// cache counts it from now on.
    Holds,
    /// The session (same uid) has ended (Closed or Rejected): phases never go back, so its
    /// slot is free for good.
    Ended,
    /// The session (same uid) is there but still Pending: the cache has not seen the
    /// admission yet, so the ledger keeps counting it.
    Waiting,
    /// Not in the cache, or there under another uid: the cache may simply not have seen it
    /// yet, so only a read from the apiserver may free the slot.
    Unknown,
}

// === impl Ledger ===

impl Ledger {
    /// Reads a ledger from a ConfigMap's `data` (`<session>: "<uid> <sub>"`) and its floor
    /// annotation. An entry without a space is kept with an empty uid: it still holds its
    /// slot. A ledger of the older format (one entry per live session, no floor) is read the
    /// same way: its entries count until a cache confirms them.
    pub fn from_data(data: Option<&BTreeMap<String, String>>, floor: Option<&str>) -> Self {
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
        Self {
            slots,
            floor: floor.map(str::to_string),
        }
    }

    /// The ConfigMap `data` of this ledger.
    pub fn to_data(&self) -> BTreeMap<String, String> {
        self.slots
            .iter()
            .map(|(name, slot)| (name.clone(), format!("{} {}", slot.uid, slot.sub)))
            .collect()
    }

    /// The floor: the session resourceVersion a cache must have delivered before a
    /// controller counts from it (`None`: any cache will do).
    pub fn floor(&self) -> Option<&str> {
        self.floor.as_deref()
    }

    /// Number of unconfirmed admissions held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no unconfirmed admission is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// True when `session` (name and uid) holds a slot in the ledger.
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

    /// Reconciles the ledger of `policy` with a session cache (or a LIST) that has seen at
    /// least the floor: drops the entries it shows holding their slot or ended, raising the
    /// floor to each such session's resourceVersion, and returns the names it cannot vouch
    /// for, to be read from the apiserver. An entry whose session's resourceVersion is not a
    /// comparable integer is kept (it still counts) unless the session has ended.
    pub fn reconcile<'a, I>(&mut self, policy: &str, cache: I) -> Vec<String>
    where
        I: IntoIterator<Item = &'a NodeShellSession>,
    {
        let mut seen: BTreeMap<String, (CacheSays, Option<String>)> = BTreeMap::new();
        for session in cache {
            if session.spec.policy_name != policy {
                continue;
            }
            let name = session.name_any();
            if let Some(slot) = self.slots.get(&name)
                && slot.uid == uid_of(session)
            {
                let version = session.metadata.resource_version.clone();
                seen.insert(name, (cache_says(session), version));
            }
        }
        let mut unknown = Vec::new();
        let mut floor = self.floor.take();
        self.slots.retain(|name, _| {
            let (says, version) = seen.remove(name).unwrap_or((CacheSays::Unknown, None));
            match says {
                CacheSays::Holds | CacheSays::Ended => {
                    match raise_floor(floor.as_deref(), version.as_deref()) {
                        Some(raised) => {
                            floor = Some(raised);
                            false
                        }
                        // Not comparable: an ended session still frees its slot (a late
                        // admission write would fail on its resourceVersion precondition);
                        // a live one stays counted here.
                        None => says == CacheSays::Holds,
                    }
                }
                CacheSays::Waiting => true,
                CacheSays::Unknown => {
                    unknown.push(name.clone());
                    true
                }
            }
        });
        self.floor = floor;
        unknown
    }

    /// Decides `pending` (one policy's waiting sessions, in admission order) against the
    /// slot holders of `cache` (a cache that has seen the floor, or a LIST) together with this
    /// ledger, a session in both counted once, and records every admission in the ledger. A
    /// session the ledger already holds was admitted by an earlier pass whose status write did
    /// not land (or that the cache has not seen yet): it is admitted again without being
    /// counted twice. `node` gives each session's node view.
    pub fn decide<'s, 'n, 'c, C, F>(
        &mut self,
        policy: Option<&NodeShellPolicy>,
        pending: &[&'s NodeShellSession],
        cache: C,
        mut node: F,
    ) -> Vec<(&'s NodeShellSession, AdmissionDecision)>
    where
        C: IntoIterator<Item = &'c NodeShellSession>,
        F: FnMut(&NodeShellSession) -> NodeView<'n>,
    {
        let Some(policy_name) = pending.first().map(|s| s.spec.policy_name.clone()) else {
            return Vec::new();
        };
        let holders = cache
            .into_iter()
            .filter(|s| s.spec.policy_name == policy_name && holds_cap_slot(s) && !self.holds(s));
        let mut admission = SessionAdmission::new(policy, holders);
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
    let phase = session.phase();
    if phase.is_terminal() {
        CacheSays::Ended
    } else if holds_cap_slot(session) {
        CacheSays::Holds
    } else {
        CacheSays::Waiting
    }
}

/// The floor raised to `seen` (the resourceVersion of a session as a cache showed it), or
/// `None` when either does not compare as an integer.
fn raise_floor(floor: Option<&str>, seen: Option<&str>) -> Option<String> {
    let seen = seen?;
    match floor {
        None => compare_versions(seen, seen).map(|_| seen.to_string()),
        Some(floor) => match compare_versions(seen, floor)? {
            Ordering::Greater => Some(seen.to_string()),
            _ => Some(floor.to_string()),
        },
    }
}

/// Whether a session read from the apiserver (`None`: it does not exist) still holds the
/// slot recorded for it under `uid`.
pub fn still_holds(read: Option<&NodeShellSession>, uid: &str) -> bool {
    read.is_some_and(|s| uid_of(s) == uid && !s.phase().is_terminal())
}

/// Compares two resourceVersions of the same resource as the integers they are. Kubernetes
/// documents them as comparable, monotonically increasing integers per resource type since
/// 1.35 (KEP-5504 "Comparable Resource Version"), without a bound on their size: compared as
/// decimal strings, the longer one (without leading zeros) is the larger. `None` when either
/// is not such an integer (empty, a non-digit, a leading zero): the caller then treats the
/// cache as not caught up.
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    fn valid(v: &str) -> bool {
        !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) && !v.starts_with('0')
    }
    (valid(a) && valid(b)).then(|| a.len().cmp(&b.len()).then_with(|| a.cmp(b)))
}

/// Whether a session cache whose watch has delivered up to `delivered` may be counted from
/// under a ledger with `floor`: watch events of one resource arrive in resourceVersion order,
/// so a cache that delivered `delivered ≥ floor` has seen every session change up to the
/// floor. No floor: yes. Nothing delivered, or a version that does not compare: no.
pub fn caught_up(delivered: Option<&str>, floor: Option<&str>) -> bool {
    match (floor, delivered) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(floor), Some(delivered)) => {
            compare_versions(delivered, floor).is_some_and(|o| o != Ordering::Less)
        }
    }
}

/// The later of `current` and `seen` (resourceVersions of sessions a watch delivered); one
/// that does not compare replaces nothing.
pub fn later_version(current: Option<&str>, seen: &str) -> Option<String> {
    match current {
        None => compare_versions(seen, seen).map(|_| seen.to_string()),
        Some(current) => match compare_versions(seen, current) {
            Some(Ordering::Greater) => Some(seen.to_string()),
            _ => Some(current.to_string()),
        },
    }
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

    /// `session` with uid = name and the given resourceVersion.
    fn at(mut s: NodeShellSession, rv: u64) -> NodeShellSession {
        s.metadata.uid = Some(s.name_any());
        s.metadata.resource_version = Some(rv.to_string());
        s
    }

    fn reason(d: &AdmissionDecision) -> Option<SessionReason> {
        match d {
            AdmissionDecision::Admit => None,
            AdmissionDecision::Reject { reason, .. } => Some(*reason),
        }
    }

    fn names(ledger: &Ledger) -> Vec<String> {
        ledger.slots().map(|(n, _)| n.clone()).collect()
    }

    #[test]
    fn data_round_trips_and_a_sub_may_hold_spaces() {
        let mut ledger = Ledger::from_data(None, Some("42"));
        ledger.insert(&with_uid(session("s1", "alice smith", "p", 1, None), "u1"));
        let data = ledger.to_data();
        assert_eq!(data.get("s1").map(String::as_str), Some("u1 alice smith"));
        assert_eq!(Ledger::from_data(Some(&data), ledger.floor()), ledger);
        assert_eq!(ledger.floor(), Some("42"));
        assert!(Ledger::from_data(None, None).is_empty());
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
    fn resource_versions_compare_as_integers_of_any_size_and_anything_else_does_not() {
        assert_eq!(compare_versions("9", "10"), Some(Ordering::Less));
        assert_eq!(compare_versions("123", "123"), Some(Ordering::Equal));
        // Larger than u64: still ordered.
        let huge = "1".repeat(40);
        assert_eq!(
            compare_versions(&huge, "18446744073709551615"),
            Some(Ordering::Greater)
        );
        for bad in ["", "abc", "12a", "-1", "007", " 1"] {
            assert_eq!(compare_versions(bad, "5"), None, "{bad:?}");
            assert_eq!(compare_versions("5", bad), None, "{bad:?}");
        }
        assert_eq!(later_version(None, "7").as_deref(), Some("7"));
        assert_eq!(later_version(Some("7"), "12").as_deref(), Some("12"));
        assert_eq!(later_version(Some("12"), "7").as_deref(), Some("12"));
        assert_eq!(later_version(Some("12"), "x").as_deref(), Some("12"));
        assert_eq!(later_version(None, "x"), None);
    }

    #[test]
    fn a_cache_is_counted_from_only_once_it_delivered_the_floor() {
        assert!(caught_up(None, None), "no floor: any cache");
        assert!(caught_up(Some("5"), None));
        assert!(caught_up(Some("10"), Some("10")));
        assert!(caught_up(Some("100"), Some("99")));
        assert!(!caught_up(Some("99"), Some("100")), "behind the floor");
        assert!(!caught_up(None, Some("1")), "nothing delivered yet");
        // A version that does not parse as an integer: not caught up (slow path).
        assert!(!caught_up(Some("abc"), Some("1")));
        assert!(!caught_up(Some("10"), Some("v2")));
    }

    #[test]
    fn reconcile_prunes_confirmed_and_ended_entries_raising_the_floor_and_asks_about_the_rest() {
        let mut ledger = Ledger::from_data(None, Some("5"));
        for name in ["ended", "live", "waiting", "unseen", "recreated"] {
            ledger.insert(&at(session(name, "a", "p", 1, None), 1));
        }
        let cache = [
            at(
                session("ended", "a", "p", 1, Some(SessionPhase::Closed)),
                30,
            ),
            at(session("live", "a", "p", 1, Some(SessionPhase::Active)), 20),
            at(session("waiting", "a", "p", 1, None), 3),
            with_uid(
                session("recreated", "a", "p", 1, Some(SessionPhase::Admitted)),
                "other",
            ),
            // Live sessions the ledger lacks are not adopted: the cache counts them.
            at(
                session("adopted", "b", "p", 1, Some(SessionPhase::Admitted)),
                40,
            ),
            at(
                session("elsewhere", "b", "q", 1, Some(SessionPhase::Admitted)),
                50,
            ),
        ];
        let unknown = ledger.reconcile("p", &cache);
        assert_eq!(unknown, ["recreated", "unseen"]);
        assert_eq!(names(&ledger), ["recreated", "unseen", "waiting"]);
        assert_eq!(
            ledger.floor(),
            Some("30"),
            "the latest pruned session's version"
        );
    }

    #[test]
    fn a_live_entry_whose_version_does_not_compare_stays_counted() {
        let mut ledger = Ledger::default();
        ledger.insert(&at(session("s1", "a", "p", 1, None), 1));
        ledger.insert(&at(session("s2", "a", "p", 1, None), 1));
        let mut live = at(session("s1", "a", "p", 1, Some(SessionPhase::Active)), 1);
        live.metadata.resource_version = Some("opaque".into());
        let mut ended = at(session("s2", "a", "p", 1, Some(SessionPhase::Closed)), 1);
        ended.metadata.resource_version = Some("opaque".into());
        assert!(ledger.reconcile("p", [&live, &ended]).is_empty());
        assert_eq!(
            names(&ledger),
            ["s1"],
            "the ended one frees its slot anyway"
        );
        assert_eq!(ledger.floor(), None);
    }

    #[test]
    fn an_old_ledger_with_every_live_session_is_read_and_pruned_as_its_sessions_are_seen() {
        // Written by a controller before floors: one entry per live session, no annotation.
        let data: BTreeMap<String, String> = (1..=50)
            .map(|i| (format!("s{i:02}"), format!("s{i:02} user{}", i % 5)))
            .collect();
        let mut ledger = Ledger::from_data(Some(&data), None);
        assert_eq!(ledger.len(), 50);
        assert!(caught_up(None, ledger.floor()));
        let cache: Vec<NodeShellSession> = (1..=50)
            .map(|i| {
                let name = format!("s{i:02}");
                at(
                    session(
                        &name,
                        &format!("user{}", i % 5),
                        "p",
                        i,
                        Some(SessionPhase::Active),
                    ),
                    100 + u64::try_from(i).expect("small"),
                )
            })
            .collect();
        // Before pruning, a decision counts every entry once (cache and ledger deduplicated).
        let p = policy("p", 100, 50);
        let late = at(session("late", "new", "p", 60, None), 200);
        let decisions = ledger
            .clone()
            .decide(Some(&p), &[&late], &cache, |_| node_view());
        assert_eq!(reason(&decisions[0].1), Some(SessionReason::CapTotal));
        assert!(ledger.reconcile("p", &cache).is_empty());
        assert!(ledger.is_empty(), "every entry confirmed by the cache");
        assert_eq!(ledger.floor(), Some("150"));
        // The cache alone still counts the 50.
        let decisions = ledger.decide(Some(&p), &[&late], &cache, |_| node_view());
        assert_eq!(reason(&decisions[0].1), Some(SessionReason::CapTotal));
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
    fn slots_in_the_ledger_and_in_the_cache_count_together() {
        // Another controller admitted one of alice's sessions (x1, only in the ledger); this
        // cache shows another one (x2) holding its slot. alice's third is refused.
        let p = policy("p", 2, 3);
        let mut ledger = Ledger::default();
        ledger.insert(&at(session("x1", "alice", "p", 1, None), 1));
        let cache = [at(
            session("x2", "alice", "p", 1, Some(SessionPhase::Active)),
            2,
        )];
        let pending = [
            at(session("s1", "alice", "p", 2, None), 3),
            at(session("s2", "bob", "p", 3, None), 4),
            at(session("s3", "carol", "p", 4, None), 5),
        ];
        let refs: Vec<&NodeShellSession> = pending.iter().collect();
        let decisions = ledger.decide(Some(&p), &refs, &cache, |_| node_view());
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
        assert_eq!(names(&ledger), ["s2", "x1"], "bob's admission is recorded");
    }

    #[test]
    fn a_session_the_ledger_holds_is_admitted_again_without_counting_twice() {
        let p = policy("p", 1, 1);
        let waiting = at(session("s1", "alice", "p", 1, None), 1);
        let mut ledger = Ledger::default();
        ledger.insert(&waiting);
        let decisions = ledger.decide(Some(&p), &[&waiting], [&waiting], |_| node_view());
        assert_eq!(decisions[0].1, AdmissionDecision::Admit);
        assert_eq!(ledger.len(), 1);
    }

    /// The ConfigMap as the apiserver keeps it: a ledger and its resourceVersion, replaced
    /// only from the version a writer read.
    struct Stored {
        ledger: Ledger,
        version: u64,
    }

    impl Stored {
        fn read(&self) -> (Ledger, u64) {
            (self.ledger.clone(), self.version)
        }

        fn cas(&mut self, read: u64, next: Ledger) -> bool {
            if read != self.version {
                return false;
            }
            self.ledger = next;
            self.version += 1;
            true
        }
    }

    /// One controller's decision as the engine makes it: read, check the floor, reconcile,
    /// decide, compare-and-swap. `None` when its cache is behind the floor (the engine then
    /// waits for its cache or LISTs) or the write lost.
    fn decide_once(
        stored: &mut Stored,
        p: &NodeShellPolicy,
        delivered: &str,
        cache: &[NodeShellSession],
        pending: &[&NodeShellSession],
    ) -> Option<Vec<Option<SessionReason>>> {
        let (read, version) = stored.read();
        if !caught_up(Some(delivered), read.floor()) {
            return None;
        }
        let mut next = read.clone();
        assert!(
            next.reconcile("p", cache).is_empty(),
            "every entry is cached"
        );
        let decisions = next.decide(Some(p), pending, cache, |_| node_view());
        stored
            .cas(version, next)
            .then(|| decisions.iter().map(|(_, d)| reason(d)).collect())
    }

    #[test]
    fn two_controllers_never_exceed_the_cap_when_the_second_cache_lacks_the_first_admission() {
        let p = policy("p", 1, 10);
        let mut stored = Stored {
            ledger: Ledger::default(),
            version: 1,
        };
        // Both caches: alice's two clicks a1 (rv 10) and a2 (rv 11), both Pending.
        let a1 = at(session("a1", "alice", "p", 1, None), 10);
        let a2 = at(session("a2", "alice", "p", 2, None), 11);

        // Controller A admits a1 (ledger write), then its status write lands at rv 12.
        let cache_a = [a1.clone(), a2.clone()];
        let got = decide_once(&mut stored, &p, "11", &cache_a, &[&a1]);
        assert_eq!(got, Some(vec![None]));
        let a1_admitted = at(
            session("a1", "alice", "p", 1, Some(SessionPhase::Admitted)),
            12,
        );

        // Controller B (a stale leader) still sees a1 Pending and decides a2: the ledger's
        // entry for a1 counts, so alice's second is refused.
        let cache_b = [a1.clone(), a2.clone()];
        let got = decide_once(&mut stored, &p, "11", &cache_b, &[&a2]);
        assert_eq!(got, Some(vec![Some(SessionReason::CapPerUser)]));
        assert_eq!(stored.ledger.len(), 1, "a1 is still unconfirmed");

        // A's cache now shows a1 Admitted; deciding bob's click prunes a1 and raises the floor.
        let b1 = at(session("b1", "bob", "p", 3, None), 13);
        let cache_a = [a1_admitted.clone(), b1.clone()];
        let got = decide_once(&mut stored, &p, "13", &cache_a, &[&b1]);
        assert_eq!(got, Some(vec![None]));
        assert_eq!(names(&stored.ledger), ["b1"]);
        assert_eq!(stored.ledger.floor(), Some("12"));

        // alice clicks again (a3, rv 14). B's cache is still behind (it delivered rv 11: a1
        // Pending, no b1): it must not decide from it, or it would count neither a1 nor b1.
        let a3 = at(session("a3", "alice", "p", 4, None), 14);
        let stale_b = [a1.clone(), a3.clone()];
        assert_eq!(decide_once(&mut stored, &p, "11", &stale_b, &[&a3]), None);
        // Deciding from that cache anyway would have admitted her second session:
        let mut wrong = stored.ledger.clone();
        let decisions = wrong.decide(Some(&p), &[&a3], &stale_b, |_| node_view());
        assert_eq!(
            decisions[0].1,
            AdmissionDecision::Admit,
            "why the floor matters"
        );

        // Once B's cache delivered the floor (or from a quorum LIST), a1 counts from the
        // cache and b1 from the ledger: alice is refused again.
        let caught_up_b = [a1_admitted, b1, a3.clone()];
        let got = decide_once(&mut stored, &p, "14", &caught_up_b, &[&a3]);
        assert_eq!(got, Some(vec![Some(SessionReason::CapPerUser)]));
    }

    #[test]
    fn the_ledger_holds_only_what_no_cache_confirmed_however_many_are_live() {
        let p = policy("p", 1000, 1000);
        let mut stored = Stored {
            ledger: Ledger::default(),
            version: 1,
        };
        let mut cache: Vec<NodeShellSession> = Vec::new();
        let mut rv = 10;
        for i in 0..200 {
            rv += 1;
            let click = at(
                session(&format!("s{i:03}"), &format!("u{i}"), "p", i, None),
                rv,
            );
            cache.push(click.clone());
            let got = decide_once(&mut stored, &p, &rv.to_string(), &cache, &[&click]);
            assert_eq!(got, Some(vec![None]));
            assert!(stored.ledger.len() <= 1, "{} entries", stored.ledger.len());
            // Its status write lands and the cache sees it.
            rv += 1;
            let admitted = cache.last_mut().expect("the click");
            admitted.status = Some(crate::api::NodeShellSessionStatus {
                phase: Some(SessionPhase::Admitted),
                ..Default::default()
            });
            admitted.metadata.resource_version = Some(rv.to_string());
        }
        assert_eq!(cache.iter().filter(|s| holds_cap_slot(s)).count(), 200);
    }
}

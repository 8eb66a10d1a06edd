//! Identity stays true during a session: the live shells opened from a console session, and
//! the periodic re-check of their person (a refresh of the console session's tokens at most
//! every `identityCheckSeconds`, then their tier against the policy's tiers). A refusal ends
//! the shell with reason IdentityRevoked. The verdict is [`revocation`], a pure function.
//! The same record says which console session attached each shell, so a reload of that
//! console (and only that one) resumes it without the resume token ([`may_resume`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::Access;
use super::auth::{Authenticated, Credential};
use super::sign_in::IdentityVerdict;
use crate::gateway::handover::{Caller, LiveShells};

/// A live shell tied to a console session.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Watched {
    /// The console session's key.
    key: String,
    /// The policy that governs the shell.
    policy: String,
    /// The tiers it allowed at attach (used when it cannot be read again).
    tiers: Vec<String>,
    /// When the shell was attached.
    since: Instant,
}

/// Why a live shell's person no longer holds, if they do not: the re-check's verdict and the
/// tiers the session's policy allows now. `None` keeps the shell (also when the identity
/// provider could not be asked; the next check tries again).
pub fn revocation(verdict: &IdentityVerdict, policy: &str, tiers: &[String]) -> Option<String> {
    match verdict {
        IdentityVerdict::Revoked(why) => Some(why.clone()),
        IdentityVerdict::Unknown(_) => None,
        IdentityVerdict::Valid(caller) => tier_refusal(caller, policy, tiers),
    }
}

fn tier_refusal(caller: &Caller, policy: &str, tiers: &[String]) -> Option<String> {
    match &caller.tier {
        Some(tier) if tiers.iter().any(|t| t == tier) => None,
        Some(tier) => Some(format!(
            "their groups now map to tier {tier}, which policy {policy} does not allow ({})",
            tiers.join(", ")
        )),
        None => Some(format!(
            "their groups ({}) no longer map to any tier",
            caller.groups.join(", ")
        )),
    }
}

/// The live shells of this replica opened from console sessions, and when each console
/// session was last checked. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct IdentityWatch {
    shells: Arc<Mutex<HashMap<String, Watched>>>,
    checked: Arc<Mutex<HashMap<String, Instant>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A shell not running this long after its attach was never started or has ended.
const START_GRACE: Duration = Duration::from_secs(60);

// === impl IdentityWatch ===

impl IdentityWatch {
    /// Watches live shell `session`, attached from console session `key`.
    pub fn watch(&self, session: &str, key: &str, policy: &str, tiers: &[String], now: Instant) {
        lock(&self.checked).entry(key.to_string()).or_insert(now);
        lock(&self.shells).insert(
            session.to_string(),
            Watched {
                key: key.to_string(),
                policy: policy.to_string(),
                tiers: tiers.to_vec(),
                since: now,
            },
        );
    }

    /// Shells watched.
    pub fn len(&self) -> usize {
        lock(&self.shells).len()
    }

    /// Whether none is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets shells that no longer run; returns the console sessions due for a check
    /// (last checked `every` ago or more) with their shells.
    fn due(
        &self,
        running: impl Fn(&str) -> bool,
        every: Duration,
        now: Instant,
    ) -> Vec<(String, Vec<(String, Watched)>)> {
        let mut shells = lock(&self.shells);
        shells.retain(|name, w| running(name) || now.duration_since(w.since) < START_GRACE);
        let mut checked = lock(&self.checked);
        checked.retain(|key, _| shells.values().any(|w| &w.key == key));
        let mut due: HashMap<String, Vec<(String, Watched)>> = HashMap::new();
        for (name, w) in shells.iter() {
            let last = checked.get(&w.key).copied().unwrap_or(now);
            if now.duration_since(last) >= every {
                due.entry(w.key.clone())
                    .or_default()
                    .push((name.clone(), w.clone()));
            }
        }
        for key in due.keys() {
            checked.insert(key.clone(), now);
        }
        due.into_iter().collect()
    }

    /// The shells attached from console session `key`, by name (those still running here
    /// are what a reload of that console resumes).
    pub fn shells_of(&self, key: &str) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.shells)
            .iter()
            .filter(|(_, w)| w.key == key)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// The console session shell `session` was attached from, if any.
    pub fn attached_from(&self, session: &str) -> Option<String> {
        lock(&self.shells).get(session).map(|w| w.key.clone())
    }

    fn forget(&self, session: &str) {
        lock(&self.shells).remove(session);
    }
}

/// Whether a request may resume live shell `session` without its resume token: only with
/// the cookie of the console session the shell was attached from (a reload of that tab), never
/// with a bearer token or another console session's cookie, even the same person's.
pub fn may_resume(via: &Credential, attached_from: Option<&str>) -> bool {
    match (via, attached_from) {
        (Credential::Cookie(key), Some(attached)) => key == attached,
        _ => false,
    }
}

// === impl Access: resuming after a reload ===

impl Access {
    /// Live shells (`running` says which run here) attached from the caller's console
    /// session: what the console resumes after a reload. Empty for a bearer token or a
    /// command-line handle.
    pub fn resumable_shells(
        &self,
        auth: &Authenticated,
        running: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        match &auth.via {
            Credential::Cookie(key) => self
                .identity
                .shells_of(key)
                .into_iter()
                .filter(|name| running(name))
                .collect(),
            // `kubectl nodeshell` keeps the resume token its `hello` frame gave; a bearer
            // client keeps its own too.
            Credential::Bearer | Credential::Handle(_) => Vec::new(),
        }
    }

    /// Whether the caller may resume `session` without its resume token (see [`may_resume`]).
    pub fn may_resume(&self, auth: &Authenticated, session: &str) -> bool {
        may_resume(&auth.via, self.identity.attached_from(session).as_deref())
    }
}

// === impl Access: the identity re-check ===

impl Access {
    /// Checks again, once per console session that is due, the person of every live shell
    /// opened from the console; ends the shells whose person no longer holds.
    pub async fn check_identities(&self, shells: &dyn LiveShells) {
        let every = self.config.identity_check.every;
        let due = self
            .identity
            .due(|name| shells.is_running(name), every, Instant::now());
        for (key, watched) in due {
            let verdict = self.recheck_identity(&key).await;
            if let IdentityVerdict::Unknown(why) = &verdict {
                tracing::warn!(
                    error = why,
                    "cannot check a live shell's person again; will retry"
                );
            }
            for (session, w) in watched {
                let tiers = match self.cluster.policy(&w.policy).await {
                    Ok(Some(policy)) => policy.spec.tiers.clone(),
                    _ => w.tiers.clone(),
                };
                if let Some(why) = revocation(&verdict, &w.policy, &tiers) {
                    tracing::info!(session, why, "identity revoked: ending the live shell");
                    self.identity.forget(&session);
                    shells.revoke_identity(&session, why);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn caller(tier: Option<&str>) -> Caller {
        Caller {
            sub: "alice".into(),
            email: None,
            name: "Alice".into(),
            groups: vec!["sre".into()],
            tier: tier.map(str::to_string),
        }
    }

    #[test]
    fn only_the_console_session_that_attached_a_shell_may_resume_it_after_a_reload() {
        let watch = IdentityWatch::default();
        let now = Instant::now();
        watch.watch("s1", "console-a", "default", &[], now);
        watch.watch("s2", "console-b", "default", &[], now);
        watch.watch("s0", "console-a", "default", &[], now);
        assert_eq!(watch.shells_of("console-a"), ["s0", "s1"]);
        assert!(watch.shells_of("console-c").is_empty());
        let a = Credential::Cookie("console-a".into());
        let b = Credential::Cookie("console-b".into());
        let attached = watch.attached_from("s1");
        assert!(may_resume(&a, attached.as_deref()));
        assert!(
            !may_resume(&b, attached.as_deref()),
            "another console session of the same person"
        );
        assert!(
            !may_resume(&Credential::Bearer, attached.as_deref()),
            "a bearer client keeps its own resume token"
        );
        assert!(
            !may_resume(&Credential::Handle("console-a".into()), attached.as_deref()),
            "kubectl nodeshell keeps its own resume token"
        );
        assert!(
            !may_resume(&a, watch.attached_from("unknown").as_deref()),
            "a shell no console attached"
        );
    }

    #[test]
    fn a_refusal_or_a_lost_tier_revokes_an_unreachable_issuer_does_not() {
        let tiers = vec!["admin".to_string(), "engineer".to_string()];
        let ok = IdentityVerdict::Valid(caller(Some("engineer")));
        assert_eq!(revocation(&ok, "default", &tiers), None);
        let demoted = IdentityVerdict::Valid(caller(Some("viewer")));
        let why = revocation(&demoted, "default", &tiers).unwrap();
        assert!(why.contains("viewer") && why.contains("default"), "{why}");
        let none = IdentityVerdict::Valid(caller(None));
        assert!(
            revocation(&none, "default", &tiers)
                .unwrap()
                .contains("sre")
        );
        let refused = IdentityVerdict::Revoked("user disabled".into());
        assert_eq!(
            revocation(&refused, "default", &tiers).as_deref(),
            Some("user disabled")
        );
        let down = IdentityVerdict::Unknown("connection refused".into());
        assert_eq!(revocation(&down, "default", &tiers), None);
    }

    #[test]
    fn a_console_session_is_checked_at_most_every_interval_for_all_its_shells() {
        let watch = IdentityWatch::default();
        let t0 = Instant::now();
        let every = Duration::from_secs(300);
        watch.watch("s1", "k1", "p", &[], t0);
        watch.watch("s2", "k1", "p", &[], t0);
        watch.watch("s3", "k2", "p", &[], t0 + Duration::from_secs(100));
        let running = |_: &str| true;
        assert!(
            watch
                .due(running, every, t0 + Duration::from_secs(299))
                .is_empty()
        );
        let due = watch.due(running, every, t0 + Duration::from_secs(300));
        assert_eq!(due.len(), 1, "one check for k1's two shells");
        assert_eq!(due[0].0, "k1");
        assert_eq!(due[0].1.len(), 2);
        assert!(
            watch
                .due(running, every, t0 + Duration::from_secs(350))
                .is_empty()
        );
        let due = watch.due(running, every, t0 + Duration::from_secs(400));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, "k2");
        // A shell that stopped running is forgotten (after the start grace).
        let stopped = |name: &str| name != "s1";
        watch.due(stopped, every, t0 + Duration::from_secs(401));
        assert_eq!(watch.len(), 2);
    }
}

//! The caps on live sessions: which sessions hold a slot, how many a person and a policy
//! hold, and whether one more fits the policy's limits. The controller's admission and the
//! gateway's preflight both count and decide with these, so the two cannot disagree.

use super::{NodeShellSession, PolicyLimits};

/// True for a session that holds a slot under its policy's caps: one whose phase is live
/// (Admitted, Active or Closing).
pub fn holds_cap_slot(session: &NodeShellSession) -> bool {
    session.phase().is_live()
}

/// Live sessions under one policy: one person's and everyone's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapCount {
    /// Live sessions of the person (`spec.user.sub`) under the policy.
    pub per_user: i64,
    /// Live sessions of everyone under the policy.
    pub total: i64,
}

/// What a policy's limits say about one more session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapVerdict {
    /// It fits under both caps.
    Within,
    /// The person already holds `limits.maxSessionsPerUser` live sessions.
    PerUser {
        /// Live sessions the person holds.
        held: i64,
        /// `limits.maxSessionsPerUser`.
        limit: i64,
    },
    /// The policy already holds `limits.maxSessionsTotal` live sessions.
    Total {
        /// Live sessions under the policy.
        held: i64,
        /// `limits.maxSessionsTotal`.
        limit: i64,
    },
}

// === impl CapCount ===

impl CapCount {
    /// Counts the live sessions of `sessions` under `policy`: those of `sub` and everyone's.
    pub fn of<'a, I>(sessions: I, policy: &str, sub: &str) -> Self
    where
        I: IntoIterator<Item = &'a NodeShellSession>,
    {
        let mut count = Self::default();
        for session in sessions {
            if session.spec.policy_name == policy && holds_cap_slot(session) {
                count.total += 1;
                if session.spec.user.sub == sub {
                    count.per_user += 1;
                }
            }
        }
        count
    }

    /// Whether one more session fits under `limits`. The per-user cap is checked first: closing
    /// one of their own sessions is a remedy the person has at hand.
    pub fn verdict(self, limits: &PolicyLimits) -> CapVerdict {
        let per_user = i64::from(limits.max_sessions_per_user);
        if self.per_user >= per_user {
            return CapVerdict::PerUser {
                held: self.per_user,
                limit: per_user,
            };
        }
        let total = i64::from(limits.max_sessions_total);
        if self.total >= total {
            return CapVerdict::Total {
                held: self.total,
                limit: total,
            };
        }
        CapVerdict::Within
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SessionPhase;
    use crate::testing::session;

    fn limits(per_user: i32, total: i32) -> PolicyLimits {
        PolicyLimits {
            max_sessions_per_user: per_user,
            max_sessions_total: total,
            ..PolicyLimits::default()
        }
    }

    #[test]
    fn admitted_active_and_closing_hold_a_slot() {
        let holds = |phase| holds_cap_slot(&session("s", "alice", "p", 0, phase));
        assert!(!holds(None), "Pending waits for a slot");
        assert!(!holds(Some(SessionPhase::Pending)));
        assert!(holds(Some(SessionPhase::Admitted)));
        assert!(holds(Some(SessionPhase::Active)));
        assert!(holds(Some(SessionPhase::Closing)));
        assert!(!holds(Some(SessionPhase::Closed)));
        assert!(!holds(Some(SessionPhase::Rejected)));
    }

    #[test]
    fn counts_the_persons_and_everyones_live_sessions_of_one_policy() {
        let sessions = [
            session("a1", "alice", "p", 0, Some(SessionPhase::Active)),
            session("a2", "alice", "p", 0, Some(SessionPhase::Closed)),
            session("a3", "alice", "other", 0, Some(SessionPhase::Active)),
            session("a4", "alice", "p", 0, None),
            session("b1", "bob", "p", 0, Some(SessionPhase::Admitted)),
            session("c1", "carol", "p", 0, Some(SessionPhase::Closing)),
        ];
        assert_eq!(
            CapCount::of(&sessions, "p", "alice"),
            CapCount {
                per_user: 1,
                total: 3
            }
        );
        assert_eq!(
            CapCount::of(&sessions, "p", "dave"),
            CapCount {
                per_user: 0,
                total: 3
            }
        );
        assert_eq!(
            CapCount::of(&sessions, "none", "alice"),
            CapCount::default()
        );
    }

    #[test]
    fn per_user_cap_is_checked_before_the_total_cap() {
        let count = |per_user, total| CapCount { per_user, total };
        assert_eq!(count(1, 2).verdict(&limits(2, 3)), CapVerdict::Within);
        assert_eq!(
            count(2, 2).verdict(&limits(2, 3)),
            CapVerdict::PerUser { held: 2, limit: 2 }
        );
        assert_eq!(
            count(2, 3).verdict(&limits(2, 3)),
            CapVerdict::PerUser { held: 2, limit: 2 },
            "both caps full: the person's own is named"
        );
        assert_eq!(
            count(0, 3).verdict(&limits(2, 3)),
            CapVerdict::Total { held: 3, limit: 3 }
        );
        assert_eq!(
            count(0, 0).verdict(&limits(0, 3)),
            CapVerdict::PerUser { held: 0, limit: 0 },
            "a zero cap admits nothing"
        );
    }
}

//! Whether a person may open a shell on a node, as pure functions: the region, the role
//! session name, and the preflight gates with a pass/fail and a hint each (the EC2 instance
//! behind a providerID is `api::ec2`, shared with the controller). The routes fetch the
//! inputs and make the AWS calls.

use std::collections::BTreeMap;

use kube::ResourceExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::{NodeShellPolicy, PolicyMatch, governing_policy};
use crate::gateway::handover::Caller;

use crate::api::{parse_provider_id, region_of_zone};

/// Longest role session name STS accepts.
const MAX_ROLE_SESSION_NAME: usize = 64;

/// Hex characters of the sub's SHA-256 appended to a name that is not the sub verbatim: 64
/// bits, so two subs that sanitise alike stay apart.
const ROLE_SESSION_HASH_HEX: usize = 16;

/// `<prefix>-<sub>` when that is already 2–64 characters of `[\w+=,.@-]` (what STS accepts
/// and CloudTrail shows), so a trust policy can bind `sts:RoleSessionName` to
/// `<prefix>-${<provider>:sub}`. Otherwise characters outside the alphabet (`|`, spaces,
/// non-ASCII) become `-`, runs of `-` collapse, the head is cut to fit, and `-` plus 16 hex
/// characters of the SHA-256 of the sub are appended: whenever anything was replaced, merged
/// or cut, so two different subs never share a name (injective up to a 64-bit hash).
pub fn role_session_name(prefix: &str, sub: &str) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c);
    let raw = if prefix.is_empty() {
        sub.to_string()
    } else {
        format!("{prefix}-{sub}")
    };
    if (2..=MAX_ROLE_SESSION_NAME).contains(&raw.len()) && raw.chars().all(allowed) {
        return raw;
    }
    let mut name = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = if allowed(c) { c } else { '-' };
        if c == '-' && name.ends_with('-') {
            continue;
        }
        name.push(c);
    }
    let hash = hex::encode(Sha256::digest(sub.as_bytes()));
    let suffix = hash.get(..ROLE_SESSION_HASH_HEX).unwrap_or(&hash);
    // All ASCII by now, so byte slicing is character slicing.
    let keep = MAX_ROLE_SESSION_NAME - 1 - suffix.len();
    let head = name.get(..keep).unwrap_or(&name).trim_matches('-');
    if head.is_empty() {
        return format!("u-{suffix}");
    }
    format!("{head}-{suffix}")
}

/// One gate's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GateStatus {
    /// Passed.
    Pass,
    /// Failed: the hint says what to do.
    Fail,
    /// Not checked because an earlier gate failed.
    Skip,
}

/// One preflight gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gate {
    /// `enabled`, `tier`, `ec2`, `policy`, `role`, `region`, `assumeRole`, `agent`, `caps`.
    pub name: &'static str,
    /// Outcome.
    pub status: GateStatus,
    /// What was found, or what to do.
    pub hint: String,
}

impl Gate {
    fn pass(name: &'static str, hint: impl Into<String>) -> Self {
        Self {
            name,
            status: GateStatus::Pass,
            hint: hint.into(),
        }
    }
    fn fail(name: &'static str, hint: impl Into<String>) -> Self {
        Self {
            name,
            status: GateStatus::Fail,
            hint: hint.into(),
        }
    }
    /// A gate not checked.
    pub fn skip(name: &'static str, hint: impl Into<String>) -> Self {
        Self {
            name,
            status: GateStatus::Skip,
            hint: hint.into(),
        }
    }
}

/// Why a person may not open a shell on a node: the decision, with the facts the answer
/// names. [`crate::gateway::refusals::ineligible`] puts it in the API's words.
#[derive(Debug, Clone, PartialEq)]
pub enum Ineligible {
    /// The caller's groups map to no tier, or the tier is not one the governing policy allows.
    Tier {
        /// What happened and what to do.
        message: String,
        /// The caller's tier, when they have one.
        tier: Option<String>,
        /// The tiers that may open shells here.
        allowed_tiers: Vec<String>,
    },
    /// No enabled policy selects the node.
    Disabled {
        /// What happened and what to do.
        message: String,
    },
    /// The node is not backed by an EC2 instance.
    NotEc2 {
        /// What happened and what to do.
        message: String,
    },
    /// The governing policy names no role.
    NoRole {
        /// What happened and what to do.
        message: String,
    },
    /// No region for the node.
    NoRegion {
        /// What happened and what to do.
        message: String,
    },
    /// The caller's token is not for the audience the role trusts.
    Audience {
        /// What happened and what to do.
        message: String,
        /// The audience the policy expects.
        expected: String,
    },
    /// The caller holds the policy's per-person cap.
    CapPerUser {
        /// What happened and what to do.
        message: String,
        /// `maxSessionsPerUser`.
        limit: usize,
    },
    /// The policy holds its total cap.
    CapTotal {
        /// What happened and what to do.
        message: String,
        /// `maxSessionsTotal`.
        limit: usize,
    },
}

impl Ineligible {
    /// The sentence the gate and the answer show.
    pub fn message(&self) -> &str {
        match self {
            Self::Tier { message, .. }
            | Self::Disabled { message }
            | Self::NotEc2 { message }
            | Self::NoRole { message }
            | Self::NoRegion { message }
            | Self::Audience { message, .. }
            | Self::CapPerUser { message, .. }
            | Self::CapTotal { message, .. } => message,
        }
    }
}

/// Where a shell on the node would go, when the node-side gates pass.
#[derive(Debug, Clone, PartialEq)]
pub struct ShellTarget {
    /// The node.
    pub node_name: String,
    /// The instance.
    pub instance_id: String,
    /// Region of STS and SSM calls.
    pub region: String,
    /// The governing policy.
    pub policy: NodeShellPolicy,
    /// Role to assume.
    pub role_arn: String,
}

/// The node-side gates (no AWS call): every gate that can be evaluated is, so a preflight
/// shows all problems at once; `error` is the first failure in the order the API reports
/// them (tier, enabled, EC2, policy, role, region).
#[derive(Debug, Clone)]
pub struct NodeGates {
    /// Gates in display order.
    pub gates: Vec<Gate>,
    /// The target when every gate passed.
    pub target: Option<ShellTarget>,
    /// The first failure.
    pub error: Option<Ineligible>,
}

/// Evaluates the node-side gates for `caller` on a node with these labels and providerID.
pub fn node_gates(
    node_name: &str,
    labels: &BTreeMap<String, String>,
    provider_id: Option<&str>,
    caller: &Caller,
    policies: &[NodeShellPolicy],
    fallback_region: &str,
) -> NodeGates {
    let mut errors: Vec<(u8, Ineligible)> = Vec::new();
    let tier = caller.tier.as_deref().unwrap_or("");
    let matched = governing_policy(labels, tier, policies);

    // enabled: does any enabled policy select the node?
    let enabled = match &matched {
        PolicyMatch::Governed(_) | PolicyMatch::TierNotAllowed { .. } => {
            Gate::pass("enabled", "an enabled NodeShellPolicy selects this node")
        }
        PolicyMatch::Disabled { policy } => {
            let msg = format!(
                "node shells are disabled on {node_name}: policy {} selects it but is disabled",
                policy.name_any()
            );
            errors.push((
                1,
                Ineligible::Disabled {
                    message: msg.clone(),
                },
            ));
            Gate::fail("enabled", msg)
        }
        PolicyMatch::NoPolicy => {
            let msg = format!(
                "node shells are disabled on {node_name}: no enabled NodeShellPolicy selects it"
            );
            errors.push((
                1,
                Ineligible::Disabled {
                    message: msg.clone(),
                },
            ));
            Gate::fail("enabled", msg)
        }
    };

    // tier
    let allowed_tiers: Vec<String> = match &matched {
        PolicyMatch::TierNotAllowed { allowed_tiers, .. } => allowed_tiers.clone(),
        PolicyMatch::Governed(p) => p.spec.tiers.clone(),
        _ => Vec::new(),
    };
    let tier_gate = match (&caller.tier, &matched) {
        (None, _) => {
            let msg = "your groups map to no tier, so you may not open node shells; ask for a group the gateway's groupTiers maps".to_string();
            errors.push((0, forbidden(&msg, None, &allowed_tiers)));
            Gate::fail("tier", msg)
        }
        (
            Some(t),
            PolicyMatch::TierNotAllowed {
                policy,
                allowed_tiers,
            },
        ) => {
            let msg = format!(
                "tier {t:?} may not open shells on {node_name}: policy {} (priority {}) governs it and allows tiers: {}",
                policy.name_any(),
                policy.spec.priority,
                allowed_tiers.join(", ")
            );
            errors.push((0, forbidden(&msg, Some(t), allowed_tiers)));
            Gate::fail("tier", msg)
        }
        (Some(t), PolicyMatch::Governed(_)) => Gate::pass("tier", format!("tier {t:?} is allowed")),
        (Some(t), _) => Gate::skip("tier", format!("tier {t:?}; no enabled policy to allow it")),
    };

    // ec2
    let instance = provider_id.and_then(parse_provider_id);
    let ec2 = match (&instance, provider_id) {
        (Some(i), _) => Gate::pass("ec2", format!("EC2 instance {}", i.instance_id)),
        (None, pid) => {
            let msg = format!(
                "node {node_name} is not backed by an EC2 instance (providerID {}); node shells need `aws:///<zone>/<instance-id>`",
                pid.map_or_else(|| "absent".to_string(), |p| format!("{p:?}"))
            );
            errors.push((
                2,
                Ineligible::NotEc2 {
                    message: msg.clone(),
                },
            ));
            Gate::fail("ec2", msg)
        }
    };

    // policy, role, region: only meaningful with a governing policy
    let (policy_gate, role_gate, region_gate, target_parts) = match &matched {
        PolicyMatch::Governed(policy) => {
            let name = policy.name_any();
            let policy_gate = Gate::pass(
                "policy",
                format!(
                    "governed by NodeShellPolicy {name} (priority {})",
                    policy.spec.priority
                ),
            );
            let role = policy
                .spec
                .aws
                .role_arn
                .clone()
                .filter(|r| !r.trim().is_empty());
            let role_gate = match &role {
                Some(r) => Gate::pass("role", format!("role {r}")),
                None => {
                    let msg = format!(
                        "policy {name} sets no aws.roleArn; a platform admin must set the IAM role to assume"
                    );
                    errors.push((
                        4,
                        Ineligible::NoRole {
                            message: msg.clone(),
                        },
                    ));
                    Gate::fail("role", msg)
                }
            };
            let region = policy
                .spec
                .aws
                .region
                .clone()
                .filter(|r| !r.trim().is_empty())
                .or_else(|| instance.as_ref()?.zone.as_deref().and_then(region_of_zone))
                .or_else(|| (!fallback_region.is_empty()).then(|| fallback_region.to_string()));
            let region_gate = match &region {
                Some(r) => Gate::pass("region", format!("region {r}")),
                None => {
                    let msg = format!(
                        "no AWS region for {node_name}: policy {name} sets no aws.region and the providerID names no zone"
                    );
                    errors.push((
                        5,
                        Ineligible::NoRegion {
                            message: msg.clone(),
                        },
                    ));
                    Gate::fail("region", msg)
                }
            };
            let parts = match (role, region) {
                (Some(role), Some(region)) => Some((policy, role, region)),
                _ => None,
            };
            (policy_gate, role_gate, region_gate, parts)
        }
        _ => (
            Gate::skip("policy", "no governing policy"),
            Gate::skip("role", "no governing policy"),
            Gate::skip("region", "no governing policy"),
            None,
        ),
    };

    errors.sort_by_key(|(rank, _)| *rank);
    let error = errors.into_iter().next().map(|(_, e)| e);
    let target = match (error.is_none(), instance, target_parts) {
        (true, Some(instance), Some((policy, role_arn, region))) => Some(ShellTarget {
            node_name: node_name.to_string(),
            instance_id: instance.instance_id,
            region,
            policy: (*policy).clone(),
            role_arn,
        }),
        _ => None,
    };
    NodeGates {
        gates: vec![enabled, tier_gate, ec2, policy_gate, role_gate, region_gate],
        target,
        error,
    }
}

fn forbidden(message: &str, tier: Option<&str>, allowed: &[String]) -> Ineligible {
    Ineligible::Tier {
        message: message.to_string(),
        tier: tier.map(str::to_string),
        allowed_tiers: allowed.to_vec(),
    }
}

/// The aud check done before calling STS: the role trusts `oidcAudience`, so a token without
/// it would be refused with a message that does not say why.
pub fn audience_error(policy: &NodeShellPolicy, token_audiences: &[String]) -> Option<Ineligible> {
    let expected = policy.spec.aws.oidc_audience.as_deref()?.trim();
    if expected.is_empty() || token_audiences.iter().any(|a| a == expected) {
        return None;
    }
    Some(Ineligible::Audience {
        message: format!(
            "policy {} expects id_tokens for audience {expected:?} but yours is for {:?}; the gateway's OIDC client id and the role's trusted audience must match",
            policy.name_any(),
            token_audiences
        ),
        expected: expected.to_string(),
    })
}

/// The caps gate, as the controller counts at admission, for sessions already counted (the
/// gateway's session watch keeps the count).
pub fn caps_gate_of(
    policy: &NodeShellPolicy,
    count: crate::api::CapCount,
) -> (Gate, Option<Ineligible>) {
    let name = policy.name_any();
    let (mine, total) = (count.per_user, count.total);
    let per_user = usize::try_from(policy.spec.limits.max_sessions_per_user).unwrap_or(0);
    let max_total = usize::try_from(policy.spec.limits.max_sessions_total).unwrap_or(0);
    let verdict = count.verdict(&policy.spec.limits);
    if let crate::api::CapVerdict::PerUser { .. } = verdict {
        let msg = format!(
            "you already hold {mine} live sessions under policy {name} (limit {per_user}); close one and try again"
        );
        return (
            Gate::fail("caps", &msg),
            Some(Ineligible::CapPerUser {
                message: msg,
                limit: per_user,
            }),
        );
    }
    if let crate::api::CapVerdict::Total { .. } = verdict {
        let msg = format!(
            "policy {name} already has {total} live sessions (limit {max_total}); try again when one closes"
        );
        return (
            Gate::fail("caps", &msg),
            Some(Ineligible::CapTotal {
                message: msg,
                limit: max_total,
            }),
        );
    }
    (
        Gate::pass(
            "caps",
            format!("{mine}/{per_user} of yours, {total}/{max_total} in total"),
        ),
        None,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::api::{
        NodeShellPolicySpec, NodeShellSession, NodeShellSessionSpec, SessionPhase, SessionUser,
    };
    use crate::gateway::error::ErrorCode;
    use crate::gateway::refusals::ineligible;

    fn sub_hash(sub: &str) -> String {
        hex::encode(Sha256::digest(sub.as_bytes()))[..16].to_string()
    }

    fn valid_session_name(n: &str) -> bool {
        (2..=64).contains(&n.len())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
    }

    #[test]
    fn a_sub_that_fits_the_alphabet_is_kept_verbatim() {
        // What a trust policy binding sts:RoleSessionName to `<prefix>-${sub}` compares.
        assert_eq!(
            role_session_name("nodeshell", "alice@example.com"),
            "nodeshell-alice@example.com"
        );
        assert_eq!(
            role_session_name("nodeshell", "248289761001"),
            "nodeshell-248289761001"
        );
        assert_eq!(role_session_name("", "ab"), "ab");
        let longest = "x".repeat(64 - "nodeshell-".len());
        assert_eq!(
            role_session_name("nodeshell", &longest),
            format!("nodeshell-{longest}")
        );
    }

    #[test]
    fn any_replaced_character_appends_the_hash() {
        // Before: `auth0|abc` and `auth0-abc` both became `nodeshell-auth0-abc`.
        assert_eq!(
            role_session_name("nodeshell", "auth0|abc"),
            format!("nodeshell-auth0-abc-{}", sub_hash("auth0|abc"))
        );
        assert_eq!(
            role_session_name("nodeshell", "auth0-abc"),
            "nodeshell-auth0-abc"
        );
        assert_eq!(
            role_session_name("ns", "Bob  Smith "),
            format!("ns-Bob-Smith-{}", sub_hash("Bob  Smith "))
        );
        assert_eq!(
            role_session_name("ns", "élodie"),
            format!("ns-lodie-{}", sub_hash("élodie"))
        );
        // Collapsing a run of valid `-` also changes the name, so it too is hashed.
        assert_ne!(
            role_session_name("ns", "a--b"),
            role_session_name("ns", "a-b")
        );
        assert_ne!(role_session_name("ns", "a-"), role_session_name("ns", "a"));
    }

    #[test]
    fn cut_and_empty_names_carry_the_hash() {
        let long = role_session_name("nodeshell", &"x".repeat(100));
        assert_eq!(long.len(), 64);
        assert!(long.ends_with(&sub_hash(&"x".repeat(100))), "{long}");
        assert_ne!(
            long,
            role_session_name("nodeshell", &format!("{}y", "x".repeat(100)))
        );
        assert_eq!(role_session_name("", "|"), format!("u-{}", sub_hash("|")));
        assert_eq!(role_session_name("", "a"), format!("a-{}", sub_hash("a")));
        assert_ne!(role_session_name("", "|"), role_session_name("", "||"));
        for sub in ["a", "日本語", "a b|c", &"é".repeat(80), "x", "", "-"] {
            let n = role_session_name("nodeshell", sub);
            assert!(valid_session_name(&n), "{sub:?} -> {n:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_sub_gives_a_valid_name(sub in ".{0,200}", prefix in "[a-z]{0,12}") {
            let n = role_session_name(&prefix, &sub);
            proptest::prop_assert!(valid_session_name(&n), "{:?}", n);
        }

        #[test]
        fn distinct_subs_give_distinct_names(
            // Pairs that sanitise alike: one skeleton, each `-` spelled as `-`, `|`, ` `, `é`
            // or `--` independently in the two subs, and long enough to be cut.
            skeleton in "[ab-]{0,70}",
            left in proptest::collection::vec(0usize..5, 70),
            right in proptest::collection::vec(0usize..5, 70),
            prefix in "(|nodeshell)",
        ) {
            let spell = |choices: &[usize]| -> String {
                skeleton
                    .chars()
                    .zip(choices)
                    .map(|(c, &k)| match c {
                        '-' => ["-", "|", " ", "é", "--"][k].to_string(),
                        c => c.to_string(),
                    })
                    .collect()
            };
            let (a, b) = (spell(&left), spell(&right));
            proptest::prop_assume!(a != b);
            proptest::prop_assert_ne!(
                role_session_name(&prefix, &a),
                role_session_name(&prefix, &b),
                "{:?} and {:?}", a, b
            );
        }
    }

    fn caller(tier: Option<&str>) -> Caller {
        Caller {
            sub: "alice".into(),
            email: None,
            name: "Alice".into(),
            groups: vec![],
            tier: tier.map(str::to_string),
        }
    }

    fn policy(
        name: &str,
        enabled: bool,
        role: Option<&str>,
        region: Option<&str>,
    ) -> NodeShellPolicy {
        let mut spec = NodeShellPolicySpec {
            enabled,
            tiers: vec!["engineer".into()],
            ..NodeShellPolicySpec::default()
        };
        spec.aws.role_arn = role.map(str::to_string);
        spec.aws.region = region.map(str::to_string);
        spec.aws.oidc_audience = Some("nodeshell".into());
        NodeShellPolicy::new(name, spec)
    }

    const PID: &str = "aws:///eu-west-1a/i-0123456789abcdef0";
    const ROLE: &str = "arn:aws:iam::123456789012:role/nodeshell-user";

    /// The answer a refusal becomes (the mapping is `refusals::ineligible`).
    fn code(g: &NodeGates) -> Option<ErrorCode> {
        g.error.as_ref().map(|e| ineligible(e).code)
    }

    #[test]
    fn all_node_gates_pass() {
        let g = node_gates(
            "n1",
            &BTreeMap::new(),
            Some(PID),
            &caller(Some("engineer")),
            &[policy("default", true, Some(ROLE), Some("eu-west-1"))],
            "",
        );
        assert!(g.error.is_none(), "{:?}", g.error);
        let t = g.target.unwrap();
        assert_eq!(t.instance_id, "i-0123456789abcdef0");
        assert_eq!(t.region, "eu-west-1");
        assert!(g.gates.iter().all(|g| g.status == GateStatus::Pass));
    }

    #[test]
    fn failures_in_api_order() {
        let ok = policy("default", true, Some(ROLE), Some("eu-west-1"));
        let labels = BTreeMap::new();
        // No tier beats everything, even a disabled node.
        let g = node_gates(
            "n1",
            &labels,
            None,
            &caller(None),
            &[policy("off", false, None, None)],
            "",
        );
        assert_eq!(code(&g), Some(ErrorCode::Forbidden));
        let g = node_gates(
            "n1",
            &labels,
            Some(PID),
            &caller(Some("viewer")),
            std::slice::from_ref(&ok),
            "",
        );
        let err = ineligible(&g.error.unwrap());
        assert_eq!(err.code, ErrorCode::Forbidden);
        assert_eq!(err.extra["tier"], "viewer");
        assert_eq!(err.extra["allowed_tiers"], serde_json::json!(["engineer"]));
        let g = node_gates(
            "n1",
            &labels,
            Some(PID),
            &caller(Some("engineer")),
            &[policy("off", false, Some(ROLE), None)],
            "",
        );
        assert_eq!(code(&g), Some(ErrorCode::NodeShellDisabled));
        let g = node_gates("n1", &labels, Some(PID), &caller(Some("engineer")), &[], "");
        assert_eq!(code(&g), Some(ErrorCode::NodeShellDisabled));
        let g = node_gates(
            "n1",
            &labels,
            Some("kind://x"),
            &caller(Some("engineer")),
            std::slice::from_ref(&ok),
            "",
        );
        assert_eq!(code(&g), Some(ErrorCode::NodeNotEc2));
        let g = node_gates(
            "n1",
            &labels,
            Some(PID),
            &caller(Some("engineer")),
            &[policy("p", true, None, Some("eu-west-1"))],
            "",
        );
        assert_eq!(code(&g), Some(ErrorCode::NoRole));
        let g = node_gates(
            "n1",
            &labels,
            Some("aws:///i-0123456789abcdef0"),
            &caller(Some("engineer")),
            &[policy("p", true, Some(ROLE), None)],
            "",
        );
        assert_eq!(code(&g), Some(ErrorCode::NoRegion));
        assert!(g.target.is_none());
    }

    #[test]
    fn region_falls_back_to_zone_then_default() {
        let p = policy("p", true, Some(ROLE), None);
        let g = node_gates(
            "n1",
            &BTreeMap::new(),
            Some(PID),
            &caller(Some("engineer")),
            std::slice::from_ref(&p),
            "",
        );
        assert_eq!(g.target.unwrap().region, "eu-west-1");
        let g = node_gates(
            "n1",
            &BTreeMap::new(),
            Some("aws:///i-0123456789abcdef0"),
            &caller(Some("engineer")),
            &[p],
            "us-east-1",
        );
        assert_eq!(g.target.unwrap().region, "us-east-1");
    }

    #[test]
    fn audience_check_names_the_expected_aud() {
        let p = policy("p", true, Some(ROLE), None);
        assert!(audience_error(&p, &["nodeshell".into()]).is_none());
        let e = ineligible(&audience_error(&p, &["other".into()]).unwrap());
        assert_eq!(e.code, ErrorCode::AudMismatch);
        assert_eq!(e.extra["expected_aud"], "nodeshell");
    }

    fn session(sub: &str, policy: &str, phase: Option<SessionPhase>) -> NodeShellSession {
        let mut s = NodeShellSession::new(
            "s",
            NodeShellSessionSpec {
                policy_name: policy.into(),
                user: SessionUser {
                    sub: sub.into(),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        s.status = Some(crate::api::NodeShellSessionStatus {
            phase,
            ..Default::default()
        });
        s
    }

    #[test]
    fn caps_count_live_sessions_of_the_policy() {
        let mut p = policy("p", true, Some(ROLE), None);
        p.spec.limits.max_sessions_per_user = 2;
        p.spec.limits.max_sessions_total = 3;
        let mut sessions = vec![
            session("alice", "p", Some(SessionPhase::Active)),
            session("alice", "p", Some(SessionPhase::Closed)),
            session("alice", "other", Some(SessionPhase::Active)),
            session("bob", "p", Some(SessionPhase::Admitted)),
        ];
        let (gate, err) = caps_gate_of(
            &p,
            crate::api::CapCount::of(&sessions, &p.name_any(), "alice"),
        );
        assert_eq!(gate.status, GateStatus::Pass, "{}", gate.hint);
        assert!(err.is_none());
        sessions.push(session("alice", "p", Some(SessionPhase::Closing)));
        let (_, err) = caps_gate_of(
            &p,
            crate::api::CapCount::of(&sessions, &p.name_any(), "alice"),
        );
        let err = ineligible(&err.unwrap());
        assert_eq!(err.code, ErrorCode::CapUser);
        assert_eq!(err.extra["limit"], 2);
        let (_, err) = caps_gate_of(
            &p,
            crate::api::CapCount::of(&sessions, &p.name_any(), "carol"),
        );
        assert_eq!(ineligible(&err.unwrap()).code, ErrorCode::CapTotal);
    }
}

//! Which policy governs a shell on a node for a tier. The gateway calls this when it creates a
//! session (and records the answer in `spec.policyName`); the rule lives here so gateway,
//! controller and docs agree.

use super::policy::NodeShellPolicy;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};
use std::collections::BTreeMap;

/// The outcome of looking for the policy that governs a node for a tier.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyMatch<'a> {
    /// This policy governs: it is enabled, selects the node and allows the tier, and no other
    /// such policy has a higher priority (ties go to the alphabetically first name).
    Governed(&'a NodeShellPolicy),
    /// Enabled policies select the node, but none of those at the highest priority among
    /// them allows the tier. Lower-priority policies do not count: a stricter policy that
    /// outranks a broader one is not side-stepped by the broader one.
    TierNotAllowed {
        /// The policy in charge of the node: the first by name at the highest priority.
        policy: &'a NodeShellPolicy,
        /// Union of the tiers the enabled policies at that priority allow, sorted.
        allowed_tiers: Vec<String>,
    },
    /// Only disabled policies select the node (node shells are switched off for it).
    Disabled {
        /// The highest-priority disabled policy that selects the node.
        policy: &'a NodeShellPolicy,
    },
    /// No policy selects the node.
    NoPolicy,
}

/// True when the policy's `nodeSelector` selects a node with these labels. An absent or
/// empty selector selects every node; a selector that cannot be parsed selects none.
pub fn selects_node(policy: &NodeShellPolicy, node_labels: &BTreeMap<String, String>) -> bool {
    match &policy.spec.node_selector {
        None => true,
        Some(selector) => match Selector::try_from(selector.clone()) {
            Ok(selector) => selector.matches(node_labels),
            Err(_) => false,
        },
    }
}

/// Finds the policy that governs a shell on a node (by its labels) for a tier.
///
/// Among the enabled policies whose `nodeSelector` selects the node, only those at the
/// highest `priority` count. Of those, the first by name whose `tiers` contain the tier
/// governs, so every gateway replica picks the same policy. When none at that priority lists
/// the tier, the answer is [`PolicyMatch::TierNotAllowed`], even if a lower-priority policy
/// would allow it.
pub fn governing_policy<'a, I>(
    node_labels: &BTreeMap<String, String>,
    tier: &str,
    policies: I,
) -> PolicyMatch<'a>
where
    I: IntoIterator<Item = &'a NodeShellPolicy>,
{
    let mut selecting: Vec<&'a NodeShellPolicy> = policies
        .into_iter()
        .filter(|p| selects_node(p, node_labels))
        .collect();
    // Highest priority first, then by name, so `find` below honours the tie rule.
    selecting.sort_by(|a, b| {
        b.spec
            .priority
            .cmp(&a.spec.priority)
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    let enabled: Vec<&'a NodeShellPolicy> = selecting
        .iter()
        .copied()
        .filter(|p| p.spec.enabled)
        .collect();
    if let Some(top) = enabled.first() {
        let at_top: Vec<&'a NodeShellPolicy> = enabled
            .iter()
            .copied()
            .take_while(|p| p.spec.priority == top.spec.priority)
            .collect();
        if let Some(policy) = at_top
            .iter()
            .find(|p| p.spec.tiers.iter().any(|t| t == tier))
        {
            return PolicyMatch::Governed(policy);
        }
        let mut allowed_tiers: Vec<String> = at_top
            .iter()
            .flat_map(|p| p.spec.tiers.iter().cloned())
            .collect();
        allowed_tiers.sort();
        allowed_tiers.dedup();
        return PolicyMatch::TierNotAllowed {
            policy: top,
            allowed_tiers,
        };
    }
    match selecting.first() {
        Some(policy) => PolicyMatch::Disabled { policy },
        None => PolicyMatch::NoPolicy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::policy::NodeShellPolicySpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    fn policy(
        name: &str,
        priority: i32,
        tiers: &[&str],
        selector: Option<LabelSelector>,
        enabled: bool,
    ) -> NodeShellPolicy {
        NodeShellPolicy::new(
            name,
            NodeShellPolicySpec {
                enabled,
                priority,
                tiers: tiers.iter().map(|t| t.to_string()).collect(),
                node_selector: selector,
                ..NodeShellPolicySpec::default()
            },
        )
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pool(pool: &str) -> Option<LabelSelector> {
        Some(LabelSelector {
            match_labels: Some(labels(&[("pool", pool)])),
            match_expressions: None,
        })
    }

    fn name(m: &PolicyMatch<'_>) -> String {
        match m {
            PolicyMatch::Governed(p) => p.name_any(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn highest_priority_wins_and_ties_go_to_the_first_name() {
        let policies = vec![
            policy("b", 10, &["admin"], None, true),
            policy("a", 10, &["admin"], None, true),
            policy("c", 5, &["admin"], None, true),
        ];
        assert_eq!(
            name(&governing_policy(&labels(&[]), "admin", &policies)),
            "a"
        );
        let policies = vec![
            policy("z", 11, &["admin"], None, true),
            policy("a", 10, &["admin"], None, true),
        ];
        assert_eq!(
            name(&governing_policy(&labels(&[]), "admin", &policies)),
            "z"
        );
    }

    #[test]
    fn selector_tier_and_enabled_filter() {
        let policies = vec![
            policy("gpu", 100, &["admin"], pool("gpu"), true),
            policy("off", 50, &["admin", "dev"], None, false),
            policy("base", 0, &["admin"], None, true),
        ];
        let gpu = labels(&[("pool", "gpu")]);
        let web = labels(&[("pool", "web")]);
        assert_eq!(name(&governing_policy(&gpu, "admin", &policies)), "gpu");
        assert_eq!(name(&governing_policy(&web, "admin", &policies)), "base");
        assert!(matches!(
            governing_policy(&web, "dev", &policies),
            PolicyMatch::TierNotAllowed { policy, allowed_tiers }
                if policy.name_any() == "base" && allowed_tiers == vec!["admin".to_string()]
        ));
    }

    #[test]
    fn a_lower_priority_policy_does_not_let_a_tier_past_a_higher_one() {
        let policies = vec![
            policy("strict", 100, &["admin"], pool("gpu"), true),
            policy("broad", 0, &["admin", "engineer"], None, true),
        ];
        let gpu = labels(&[("pool", "gpu")]);
        assert!(matches!(
            governing_policy(&gpu, "engineer", &policies),
            PolicyMatch::TierNotAllowed { policy, allowed_tiers }
                if policy.name_any() == "strict" && allowed_tiers == vec!["admin".to_string()]
        ));
        assert_eq!(name(&governing_policy(&gpu, "admin", &policies)), "strict");
        // Off the GPU pool the broad policy is the highest that selects the node.
        assert_eq!(
            name(&governing_policy(&labels(&[]), "engineer", &policies)),
            "broad"
        );
    }

    #[test]
    fn policies_at_the_same_top_priority_pool_their_tiers_and_ties_go_by_name() {
        let policies = vec![
            policy("b-engineers", 10, &["engineer"], None, true),
            policy("a-admins", 10, &["admin"], None, true),
            policy("low", 0, &["viewer"], None, true),
        ];
        assert_eq!(
            name(&governing_policy(&labels(&[]), "engineer", &policies)),
            "b-engineers"
        );
        assert!(matches!(
            governing_policy(&labels(&[]), "viewer", &policies),
            PolicyMatch::TierNotAllowed { policy, allowed_tiers }
                if policy.name_any() == "a-admins"
                    && allowed_tiers == vec!["admin".to_string(), "engineer".to_string()]
        ));
    }

    #[test]
    fn a_disabled_higher_policy_leaves_the_node_to_the_enabled_ones() {
        let policies = vec![
            policy("break-glass", 1000, &["incident"], None, false),
            policy("default", 0, &["engineer"], None, true),
        ];
        assert_eq!(
            name(&governing_policy(&labels(&[]), "engineer", &policies)),
            "default"
        );
    }

    /// The shipped examples: an engineer on a GPU node is governed by `gpu-admins` (admins
    /// only), not let in by `default`.
    #[test]
    fn the_shipped_gpu_policy_keeps_engineers_out_of_gpu_nodes() {
        let load = |text: &str| -> NodeShellPolicy {
            serde_saphyr::from_str(text).expect("a shipped policy parses")
        };
        let policies = vec![
            load(include_str!("../../config/policy-default.yaml")),
            load(include_str!("../../config/policy-gpu-admins.yaml")),
            load(include_str!("../../config/policy-break-glass.yaml")),
        ];
        let gpu = labels(&[
            ("node.kubernetes.io/pool", "gpu"),
            ("environment", "staging"),
        ]);
        assert!(matches!(
            governing_policy(&gpu, "engineer", &policies),
            PolicyMatch::TierNotAllowed { policy, allowed_tiers }
                if policy.name_any() == "gpu-admins" && allowed_tiers == vec!["admin".to_string()]
        ));
        assert_eq!(
            name(&governing_policy(&gpu, "admin", &policies)),
            "gpu-admins"
        );
        let web = labels(&[
            ("node.kubernetes.io/pool", "web"),
            ("environment", "staging"),
        ]);
        assert_eq!(
            name(&governing_policy(&web, "engineer", &policies)),
            "default"
        );
    }

    #[test]
    fn disabled_and_missing() {
        let policies = vec![policy("off", 0, &["admin"], None, false)];
        assert!(matches!(
            governing_policy(&labels(&[]), "admin", &policies),
            PolicyMatch::Disabled { policy } if policy.name_any() == "off"
        ));
        let policies = vec![policy("gpu", 0, &["admin"], pool("gpu"), true)];
        assert_eq!(
            governing_policy(&labels(&[]), "admin", &policies),
            PolicyMatch::NoPolicy
        );
        assert_eq!(
            governing_policy(&labels(&[]), "admin", &[]),
            PolicyMatch::NoPolicy
        );
    }

    #[test]
    fn match_expressions_are_honoured_and_bad_selectors_select_nothing() {
        let exists = Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "shell".into(),
                operator: "Exists".into(),
                values: None,
            }]),
        });
        let bad = Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "shell".into(),
                operator: "Sometimes".into(),
                values: None,
            }]),
        });
        let policies = vec![
            policy("e", 0, &["admin"], exists, true),
            policy("bad", 9, &["admin"], bad, true),
        ];
        assert_eq!(
            name(&governing_policy(
                &labels(&[("shell", "yes")]),
                "admin",
                &policies
            )),
            "e"
        );
        assert_eq!(
            governing_policy(&labels(&[]), "admin", &policies),
            PolicyMatch::NoPolicy
        );
    }
}

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
    /// Enabled policies select the node but none allows the tier; these tiers would be allowed.
    TierNotAllowed {
        /// Union of the tiers the node's enabled policies allow, sorted.
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
/// A policy matches when it is enabled, its `nodeSelector` selects the node and its `tiers`
/// contain the tier. The highest `priority` wins; ties go to the alphabetically first name, so
/// every gateway replica picks the same policy.
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
    if let Some(policy) = selecting
        .iter()
        .find(|p| p.spec.enabled && p.spec.tiers.iter().any(|t| t == tier))
    {
        return PolicyMatch::Governed(policy);
    }
    let enabled: Vec<&&NodeShellPolicy> = selecting.iter().filter(|p| p.spec.enabled).collect();
    if !enabled.is_empty() {
        let mut allowed_tiers: Vec<String> = enabled
            .iter()
            .flat_map(|p| p.spec.tiers.iter().cloned())
            .collect();
        allowed_tiers.sort();
        allowed_tiers.dedup();
        return PolicyMatch::TierNotAllowed { allowed_tiers };
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
        assert_eq!(
            governing_policy(&web, "dev", &policies),
            PolicyMatch::TierNotAllowed {
                allowed_tiers: vec!["admin".into()]
            }
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

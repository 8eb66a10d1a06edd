//! Which tier a person's groups give them, and which tiers are admins: the gateway file's
//! `tierOrder`, `groupTiers` and `adminTiers`. Pure.

use std::collections::BTreeMap;

/// Maps OIDC groups to tiers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierMap {
    /// Declared order, highest first.
    pub order: Vec<String>,
    /// Group → tier.
    pub groups: BTreeMap<String, String>,
    /// Tiers with admin rights over others' sessions.
    pub admin: Vec<String>,
}

// === impl TierMap ===

impl TierMap {
    /// The map of the file's keys; every group must map to a declared tier.
    pub fn new(
        order: Vec<String>,
        groups: BTreeMap<String, String>,
        admin: Vec<String>,
    ) -> Result<Self, String> {
        if let Some((group, tier)) = groups.iter().find(|(_, t)| !order.contains(t)) {
            return Err(format!(
                "groupTiers maps {group:?} to tier {tier:?}, which tierOrder does not list"
            ));
        }
        Ok(Self {
            order,
            groups,
            admin,
        })
    }

    /// The caller's tier: among the tiers their groups map to, the first in declared order.
    pub fn tier_for(&self, groups: &[String]) -> Option<String> {
        let mapped: Vec<&String> = groups.iter().filter_map(|g| self.groups.get(g)).collect();
        self.order
            .iter()
            .find(|tier| mapped.contains(tier))
            .cloned()
    }

    /// Whether a tier has admin rights.
    pub fn is_admin(&self, tier: Option<&str>) -> bool {
        tier.is_some_and(|t| self.admin.iter().any(|a| a == t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_follow_declared_order() {
        let tiers = TierMap {
            order: vec!["admin".into(), "engineer".into(), "viewer".into()],
            groups: BTreeMap::from([
                ("dev".into(), "viewer".into()),
                ("sre".into(), "engineer".into()),
                ("root".into(), "admin".into()),
            ]),
            admin: vec!["admin".into()],
        };
        assert_eq!(
            tiers.tier_for(&["dev".into(), "sre".into()]),
            Some("engineer".into())
        );
        assert_eq!(tiers.tier_for(&["nobody".into()]), None);
        assert!(!tiers.is_admin(Some("engineer")));
        assert!(!tiers.is_admin(None));
    }

    #[test]
    fn groups_must_map_to_declared_tiers() {
        let err = TierMap::new(
            vec!["admin".into()],
            BTreeMap::from([("sre".into(), "engineer".into())]),
            vec![],
        )
        .unwrap_err();
        assert!(
            err.contains("\"engineer\"") && err.contains("tierOrder"),
            "{err}"
        );
    }
}

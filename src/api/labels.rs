//! Labels the gateway puts on sessions (and on the Secrets that hold transcripts) so people
//! and the controller can select them: by node, by policy, by user.

use super::session::NodeShellSessionSpec;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Label on a session: the node it runs on (label-safe form).
pub const LABEL_NODE: &str = "nodeshell.periscope.io/node";
/// Label on a session: its governing policy (label-safe form).
pub const LABEL_POLICY: &str = "nodeshell.periscope.io/policy";
/// Label on a session: a label-safe form of `spec.user.name`. A selection aid only; caps count
/// by `spec.user.sub`.
pub const LABEL_USER: &str = "nodeshell.periscope.io/user";
/// Label on objects that belong to a session (transcript Secrets): the session's name. The
/// controller deletes objects with this label when it deletes the session.
pub const LABEL_SESSION: &str = "nodeshell.periscope.io/session";

/// Longest label value Kubernetes accepts.
const MAX_LABEL_VALUE: usize = 63;
/// Hex characters of the SHA-256 suffix added to shortened values.
const HASH_CHARS: usize = 10;

/// A label value that stands for `input`: at most 63 characters of `[A-Za-z0-9._-]`, starting
/// and ending with an alphanumeric character. Other characters become `_`; a value that had to
/// be shortened ends with `-` and 10 hex characters of the SHA-256 of `input`, so two long
/// inputs with the same beginning still get different values.
pub fn label_value(input: &str) -> String {
    let sanitised: String = input
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = sanitised.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.len() <= MAX_LABEL_VALUE && !trimmed.is_empty() {
        return trimmed.to_string();
    }
    let hash = hex::encode(Sha256::digest(input.as_bytes()));
    let suffix = hash.get(..HASH_CHARS).unwrap_or(&hash);
    // Everything is ASCII here, so byte slicing cannot split a character.
    let keep = MAX_LABEL_VALUE - HASH_CHARS - 1;
    let head = trimmed
        .get(..keep.min(trimmed.len()))
        .unwrap_or_default()
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if head.is_empty() {
        suffix.to_string()
    } else {
        format!("{head}-{suffix}")
    }
}

/// The selection labels of a session: node, policy and user.
pub fn session_labels(spec: &NodeShellSessionSpec) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NODE.to_string(), label_value(&spec.node_name)),
        (LABEL_POLICY.to_string(), label_value(&spec.policy_name)),
        (LABEL_USER.to_string(), label_value(&spec.user.name)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_valid(v: &str) -> bool {
        v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
    }

    #[test]
    fn readable_values_stay_readable() {
        assert_eq!(label_value("alice"), "alice");
        assert_eq!(label_value("alice@example.com"), "alice_example.com");
        assert_eq!(
            label_value("ip-10-0-1-2.eu-west-1.compute.internal"),
            "ip-10-0-1-2.eu-west-1.compute.internal"
        );
        assert_eq!(label_value("  Bob Smith "), "Bob_Smith");
        assert_eq!(label_value("-x-"), "x");
    }

    #[test]
    fn long_values_are_shortened_with_a_hash() {
        let long = "a".repeat(100);
        let v = label_value(&long);
        assert_eq!(v.len(), 63);
        assert!(is_valid(&v));
        assert_ne!(v, label_value(&format!("{long}b")));
        assert_eq!(v, label_value(&long), "pure: same input, same value");
    }

    #[test]
    fn odd_inputs_still_give_valid_values() {
        for input in [
            "",
            "@@@",
            "élodie",
            "日本語",
            &"x.".repeat(40),
            &format!("{}@", "b".repeat(62)),
        ] {
            let v = label_value(input);
            assert!(is_valid(&v), "{input:?} -> {v:?}");
        }
        assert_ne!(label_value("@@@"), label_value("###"));
    }

    proptest::proptest! {
        #[test]
        fn any_input_gives_a_valid_stable_value(input in ".{0,200}") {
            let v = label_value(&input);
            proptest::prop_assert!(is_valid(&v), "{:?} -> {:?}", input, v);
            proptest::prop_assert_eq!(v, label_value(&input));
        }
    }

    #[test]
    fn session_labels_cover_node_policy_user() {
        let spec = NodeShellSessionSpec {
            node_name: "node-1".into(),
            policy_name: "default".into(),
            user: crate::api::SessionUser {
                name: "alice@example.com".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let labels = session_labels(&spec);
        assert_eq!(labels.get(LABEL_NODE).map(String::as_str), Some("node-1"));
        assert_eq!(
            labels.get(LABEL_POLICY).map(String::as_str),
            Some("default")
        );
        assert_eq!(
            labels.get(LABEL_USER).map(String::as_str),
            Some("alice_example.com")
        );
    }
}

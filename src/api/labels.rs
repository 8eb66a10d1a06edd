//! Labels the gateway puts on sessions (and on the Secrets that hold transcripts) so people
//! and the controller can select them: by node, by policy, by user; and the transcript
//! Secrets' type.

use super::session::NodeShellSessionSpec;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Label on a session: the node it runs on (label-safe form).
pub const LABEL_NODE: &str = "nodeshell.periscope.io/node";
/// Label on a session: its governing policy (label-safe form).
pub const LABEL_POLICY: &str = "nodeshell.periscope.io/policy";
/// Label on a session: a label-safe form of `spec.user.name` ([`label_value`]: the name itself
/// when it is a valid label value, else a sanitised head plus a hash, so no two users share
/// one). A selection aid only; caps count by `spec.user.sub`.
pub const LABEL_USER: &str = "nodeshell.periscope.io/user";
/// Label on objects that belong to a session (transcript Secrets): the session's name. The
/// controller deletes objects with this label when it deletes the session.
pub const LABEL_SESSION: &str = "nodeshell.periscope.io/session";

/// `type` of the Secrets that hold transcripts. The gateway writes only Secrets of this type
/// with [`LABEL_SESSION`], the controller deletes only these (a field selector), and the Helm
/// chart's admission policy holds both to it.
pub const TRANSCRIPT_SECRET_TYPE: &str = "nodeshell.periscope.io/transcript";

/// Longest label value Kubernetes accepts.
const MAX_LABEL_VALUE: usize = 63;
/// Hex characters of the SHA-256 suffix added to shortened values.
const HASH_CHARS: usize = 10;

/// A label value that stands for `input`: at most 63 characters of `[A-Za-z0-9._-]`, starting
/// and ending with an alphanumeric character. An input that already is one is kept as it is.
/// Otherwise other characters become `_`, the ends are trimmed, the head is cut to fit, and
/// `-` plus 10 hex characters of the SHA-256 of `input` are appended: whenever anything was
/// replaced, trimmed or cut, so `alice@example.com` and `alice_example.com` (or two long
/// inputs with the same beginning) never share a value.
pub fn label_value(input: &str) -> String {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let ends_alnum = input
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && input
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if input.len() <= MAX_LABEL_VALUE && ends_alnum && input.chars().all(valid_char) {
        return input.to_string();
    }
    let sanitised: String = input
        .chars()
        .map(|c| if valid_char(c) { c } else { '_' })
        .collect();
    let trimmed = sanitised.trim_matches(|c: char| !c.is_ascii_alphanumeric());
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

    fn hash10(input: &str) -> String {
        hex::encode(Sha256::digest(input.as_bytes()))[..10].to_string()
    }

    #[test]
    fn valid_values_stay_as_they_are() {
        assert_eq!(label_value("alice"), "alice");
        assert_eq!(
            label_value("ip-10-0-1-2.eu-west-1.compute.internal"),
            "ip-10-0-1-2.eu-west-1.compute.internal"
        );
        assert_eq!(label_value("alice_example.com"), "alice_example.com");
    }

    #[test]
    fn any_replaced_or_trimmed_character_appends_the_hash() {
        // Before, both of these were `alice_example.com`: a selector by one user's label also
        // matched the other's sessions.
        assert_eq!(
            label_value("alice@example.com"),
            format!("alice_example.com-{}", hash10("alice@example.com"))
        );
        assert_ne!(
            label_value("alice@example.com"),
            label_value("alice_example.com")
        );
        assert_eq!(
            label_value("  Bob Smith "),
            format!("Bob_Smith-{}", hash10("  Bob Smith "))
        );
        assert_eq!(label_value("-x-"), format!("x-{}", hash10("-x-")));
        assert_ne!(label_value("-x-"), label_value("x"));
        assert_eq!(
            label_value("auth0|abc"),
            format!("auth0_abc-{}", hash10("auth0|abc"))
        );
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

        #[test]
        fn distinct_inputs_give_distinct_values(
            // Pairs that sanitise alike: one skeleton, each `_` spelled as `_`, `@`, ` `, `|`
            // or `é` independently, with ends to trim and lengths to cut.
            skeleton in "[ab_.-]{0,80}",
            left in proptest::collection::vec(0usize..5, 80),
            right in proptest::collection::vec(0usize..5, 80),
        ) {
            let spell = |choices: &[usize]| -> String {
                skeleton
                    .chars()
                    .zip(choices)
                    .map(|(c, &k)| match c {
                        '_' => ["_", "@", " ", "|", "é"][k].to_string(),
                        c => c.to_string(),
                    })
                    .collect()
            };
            let (a, b) = (spell(&left), spell(&right));
            proptest::prop_assume!(a != b);
            proptest::prop_assert_ne!(label_value(&a), label_value(&b), "{:?} {:?}", a, b);
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
            labels.get(LABEL_USER),
            Some(&format!(
                "alice_example.com-{}",
                hash10("alice@example.com")
            ))
        );
    }
}

//! Pure: the Kubernetes name rules a name taken from a URL must meet before it is sent to the
//! apiserver (nodes and `NodeShellSession`s are both named by DNS-1123 subdomains).

/// Longest DNS-1123 subdomain.
pub const MAX_SUBDOMAIN: usize = 253;

/// Longest label inside a subdomain.
const MAX_LABEL: usize = 63;

/// Why `name` is not a DNS-1123 subdomain (lowercase letters, digits, `-` and `.`; each
/// dot-separated label starts and ends with a letter or digit, at most 63 characters; at most
/// 253 in all), or `None` when it is one.
pub fn subdomain_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".to_string());
    }
    if name.len() > MAX_SUBDOMAIN {
        return Some(format!(
            "is {} characters long, more than {MAX_SUBDOMAIN}",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Some("has an empty label (two dots in a row, or a dot at an end)".into());
        }
        if label.len() > MAX_LABEL {
            return Some(format!("has a label longer than {MAX_LABEL} characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Some(format!(
                "contains {c:?}; only lowercase letters, digits, '-' and '.' are allowed"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some("has a label that starts or ends with '-'".into());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains_pass() {
        for name in [
            "ip-10-0-1-23.eu-west-1.compute.internal",
            "shell-abc12",
            "a",
            "0",
        ] {
            assert_eq!(subdomain_problem(name), None, "{name}");
        }
        assert_eq!(subdomain_problem(&"a".repeat(63)), None);
        let long = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        assert_eq!(long.len(), 253);
        assert_eq!(subdomain_problem(&long), None);
    }

    #[test]
    fn everything_else_is_refused_with_the_rule() {
        let cases = [
            ("", "empty"),
            ("Node-1", "'N'"),
            ("a_b", "'_'"),
            ("a..b", "empty label"),
            (".a", "empty label"),
            ("a.", "empty label"),
            ("-a", "starts or ends"),
            ("a-", "starts or ends"),
            ("a/b", "'/'"),
            ("a b", "' '"),
            ("é", "'é'"),
        ];
        for (name, why) in cases {
            let problem = subdomain_problem(name).unwrap_or_default();
            assert!(problem.contains(why), "{name:?}: {problem}");
        }
        assert!(
            subdomain_problem(&"a".repeat(64))
                .unwrap_or_default()
                .contains("longer than 63")
        );
        let long = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62),
        ]
        .join(".");
        assert!(
            subdomain_problem(&long)
                .unwrap_or_default()
                .contains("more than 253")
        );
    }
}

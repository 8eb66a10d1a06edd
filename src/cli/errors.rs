//! What `kubectl nodeshell` says about every failure: the gateway's `E_*` codes and the
//! CLI's own, each with what to do next, in one table.

use std::fmt;

/// The CLI's own codes, for failures that happen before or around the gateway's answer.
pub mod codes {
    /// No gateway address: no `--gateway`, `NODESHELL_GATEWAY`, config file or sign-in.
    pub const NO_GATEWAY: &str = "E_NO_GATEWAY";
    /// No stored session for this gateway.
    pub const NOT_SIGNED_IN: &str = "E_NOT_SIGNED_IN";
    /// The gateway could not be reached at all.
    pub const UNREACHABLE: &str = "E_GATEWAY_UNREACHABLE";
    /// The sign-in in the browser did not come back to the CLI.
    pub const LOGIN_FAILED: &str = "E_LOGIN_FAILED";
    /// The connection to a shell dropped and no reattach worked within the grace window.
    pub const RECONNECT_GAVE_UP: &str = "E_RECONNECT_GAVE_UP";
    /// The WebSocket closed before the shell started.
    pub const ATTACH: &str = "E_ATTACH";
    /// The gateway has no session search (it predates the command ledger).
    pub const NO_SEARCH: &str = "E_NO_SEARCH";
    /// Local trouble: the terminal, the config directory, an unreadable answer.
    pub const LOCAL: &str = "E_LOCAL";
}

/// Every code the CLI can show, with what to do about it. The gateway's codes are those of
/// `src/gateway/error.rs` (a test checks none is missing).
pub const HINTS: &[(&str, &str)] = &[
    ("E_AUTH", "sign in again: `kubectl nodeshell login`"),
    (
        "E_REAUTH_REQUIRED",
        "your sign-in ended or expired: `kubectl nodeshell login`",
    ),
    (
        "E_FORBIDDEN",
        "your groups do not map to a tier the node's policy allows, or it is not your session: ask your platform team, or check `kubectl nodeshell preflight NODE`; refused on attach, the gateway's allowedOrigins does not list the address you called (a tunnel's, say)",
    ),
    (
        "E_NODE_SHELL_DISABLED",
        "no enabled NodeShellPolicy selects this node; ask your platform team",
    ),
    (
        "E_NODE_NOT_EC2",
        "the node is not an EC2 instance (no aws:/// providerID); node shells work only on EC2 nodes",
    ),
    (
        "E_NOT_FOUND",
        "check the name: `kubectl get nodes` or `kubectl nodeshell ls`",
    ),
    (
        "E_NODE_SHELL_NO_REGION",
        "the node's policy has no aws.region and none could be derived; ask your platform team",
    ),
    (
        "E_NODE_SHELL_NO_ROLE",
        "the node's policy has no aws.roleArn; ask your platform team",
    ),
    (
        "E_NODE_SHELL_AUD_MISMATCH",
        "the role expects another token audience; ask your platform team to align oidcAudience",
    ),
    (
        "E_NODE_SHELL_TRUST_DENIED",
        "the role's trust policy refused you; ask your platform team",
    ),
    (
        "E_AGENT_OFFLINE",
        "the node's SSM agent is not online; try again in a minute or check the node",
    ),
    (
        "E_CAP_USER",
        "you already have the most shells you may hold; end one: `kubectl nodeshell ls`, then `kubectl nodeshell end SESSION`",
    ),
    (
        "E_CAP_TOTAL",
        "the cluster's shell limit is reached; try again later",
    ),
    ("E_RATE_LIMITED", "wait a few seconds and try again"),
    (
        "E_NODE_SHELL_START_FAILED",
        "AWS did not start the session; try again, and check `kubectl nodeshell preflight NODE`",
    ),
    (
        "E_CSRF",
        "the gateway treated this as a browser write; update kubectl-nodeshell",
    ),
    (
        "E_KMS_DENIED",
        "the role may not use the session's KMS key; ask your platform team",
    ),
    (
        "E_BAD_REQUEST",
        "the gateway refused the request as malformed; check the arguments",
    ),
    (
        "E_PAYLOAD_TOO_LARGE",
        "the request was too large for the gateway",
    ),
    ("E_REQUEST_TIMEOUT", "the network was too slow; try again"),
    (
        "E_INTERNAL",
        "the gateway failed on its side; try again, and tell your platform team if it persists",
    ),
    (
        codes::NO_GATEWAY,
        "pass --gateway URL, set NODESHELL_GATEWAY, or put `gateway: URL` in $XDG_CONFIG_HOME/nodeshell/config.yaml",
    ),
    (
        codes::NOT_SIGNED_IN,
        "sign in first: `kubectl nodeshell login`",
    ),
    (
        codes::UNREACHABLE,
        "check the gateway address and your network",
    ),
    (
        codes::LOGIN_FAILED,
        "run `kubectl nodeshell login` again and finish the sign-in in your browser within 5 minutes",
    ),
    (
        codes::RECONNECT_GAVE_UP,
        "the shell has ended; open a new one",
    ),
    (
        codes::ATTACH,
        "open a new shell; if it keeps happening, the gateway's allowedOrigins must list the gateway's own address",
    ),
    (
        codes::NO_SEARCH,
        "this gateway cannot search sessions yet; use `kubectl nodeshell ls` and `replay`",
    ),
    (codes::LOCAL, "see the message"),
];

/// What to do about `code`, when the table knows it.
pub fn hint(code: &str) -> Option<&'static str> {
    HINTS.iter().find(|(c, _)| *c == code).map(|(_, h)| *h)
}

/// A failure as the CLI reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// The `E_*` code.
    pub code: String,
    /// What happened.
    pub message: String,
}

impl CliError {
    /// A failure with `code` and `message`.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// A local failure.
    pub fn local(message: impl Into<String>) -> Self {
        Self::new(codes::LOCAL, message)
    }

    /// The process exit status for this failure: 2 for sign-in trouble, 1 otherwise.
    pub fn exit_status(&self) -> u8 {
        match self.code.as_str() {
            "E_AUTH" | "E_REAUTH_REQUIRED" | codes::NOT_SIGNED_IN => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {} ({})", self.message, self.code)?;
        if let Some(hint) = hint(&self.code) {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CliError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::error::ErrorCode;

    #[test]
    fn every_gateway_code_has_a_hint() {
        for code in ErrorCode::ALL {
            assert!(
                hint(code.as_str()).is_some(),
                "{} has no hint",
                code.as_str()
            );
        }
    }

    #[test]
    fn the_table_names_each_code_once() {
        let mut seen = std::collections::BTreeSet::new();
        for (code, hint) in HINTS {
            assert!(seen.insert(*code), "{code} twice");
            assert!(code.starts_with("E_") && !hint.is_empty());
        }
    }

    #[test]
    fn an_error_shows_message_code_and_what_to_do() {
        let e = CliError::new("E_CAP_USER", "you hold 2 of 2 sessions");
        let text = e.to_string();
        assert!(text.starts_with("error: you hold 2 of 2 sessions (E_CAP_USER)"));
        assert!(text.contains("hint: ") && text.contains("kubectl nodeshell end SESSION"));
        assert_eq!(CliError::new("E_REAUTH_REQUIRED", "x").exit_status(), 2);
        // The gateway refuses an attach from an unlisted origin with E_FORBIDDEN too.
        let origin = CliError::new("E_FORBIDDEN", "origin http://127.0.0.1:9 may not attach");
        assert!(origin.to_string().contains("allowedOrigins"), "{origin}");
        assert_eq!(CliError::new("E_AGENT_OFFLINE", "x").exit_status(), 1);
    }
}

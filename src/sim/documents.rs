//! Pure: the Session documents the simulator knows besides the default shell and the
//! firehose, and what the agent types into the shell from one. The real agent
//! (`amazon-ssm-agent`, `agent/framework/docparser/docparser.go`,
//! `validateAndReplaceSessionDocumentParameters`) fills parameters the request leaves out
//! with the document's `default`, then replaces every `{{ name }}` (spaces allowed inside
//! the braces: `agent/framework/docparser/parameters/parameters.go`, `ReplaceParameter`)
//! in the document's `inputs`, `shellProfile` included, in one pass (a value that contains
//! `{{ other }}` is not replaced again), and `$$` in a value becomes `$`. The shell plugin
//! then writes `shellProfile.linux` and a newline to the shell's standard input
//! (`agent/session/shell/shell_unix.go`, `runShellProfile`), so the shell runs it as typed
//! input and the terminal echoes it.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `NodeShell-Shell`, the document nodeshell ships (`config/ssm/NodeShell-Shell.json`).
pub const NODESHELL_SHELL_JSON: &str = include_str!("../../config/ssm/NodeShell-Shell.json");

/// The parts of a Session document the simulator uses.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionDocument {
    /// `Standard_Stream` for a shell.
    #[serde(default)]
    pub session_type: String,
    /// The declared parameters.
    #[serde(default)]
    pub parameters: BTreeMap<String, DocumentParameter>,
    /// `inputs`.
    #[serde(default)]
    pub inputs: DocumentInputs,
}

/// One declared parameter.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct DocumentParameter {
    /// The value used when the request gives none.
    #[serde(default)]
    pub default: Option<String>,
}

/// The document's `inputs` (the rest is ignored).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentInputs {
    /// Commands typed into the shell when it starts.
    #[serde(default)]
    pub shell_profile: ShellProfile,
}

/// `inputs.shellProfile`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ShellProfile {
    /// For Linux shells.
    #[serde(default)]
    pub linux: String,
}

/// The documents the simulator knows by name (other than its built-in shell and firehose).
pub fn known(name: &str) -> Option<SessionDocument> {
    (name == crate::api::LEDGER_DOCUMENT_NAME)
        .then(|| serde_json::from_str(NODESHELL_SHELL_JSON).ok())
        .flatten()
}

/// What the agent types into the shell for `document` started with `parameters`: its
/// Linux shell profile with the parameters replaced and a newline, or nothing.
pub fn typed_profile(
    document: &SessionDocument,
    parameters: &BTreeMap<String, Vec<String>>,
) -> Option<String> {
    let profile = &document.inputs.shell_profile.linux;
    if profile.trim().is_empty() {
        return None;
    }
    let mut values: BTreeMap<&str, String> = BTreeMap::new();
    for (name, declared) in &document.parameters {
        let given = parameters.get(name).and_then(|v| v.first()).cloned();
        if let Some(value) = given.or_else(|| declared.default.clone()) {
            values.insert(name, value.replace("$$", "$"));
        }
    }
    Some(format!("{}\n", replace_parameters(profile, &values)))
}

/// Replaces each `{{ name }}` (any spaces inside the braces) of a known parameter, in one
/// left-to-right pass.
fn replace_parameters(text: &str, values: &BTreeMap<&str, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let replaced = after.find("}}").and_then(|close| {
            let name = after[..close].trim_matches(|c: char| c.is_whitespace());
            values.get(name).map(|v| (v, close))
        });
        match replaced {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_replaced_once_with_defaults_for_the_missing() {
        let doc: SessionDocument = serde_json::from_value(serde_json::json!({
            "sessionType": "Standard_Stream",
            "parameters": {"a": {"type": "String", "default": "A"}, "b": {"type": "String"}},
            "inputs": {"shellProfile": {"linux": "x={{a}} y={{  b }} z={{ c }} w={{b}}"}}
        }))
        .expect("doc");
        let params = BTreeMap::from([("b".to_string(), vec!["{{a}}$$".to_string()])]);
        assert_eq!(
            typed_profile(&doc, &params).as_deref(),
            Some("x=A y={{a}}$ z={{ c }} w={{a}}$\n")
        );
    }

    #[test]
    fn nodeshell_shell_is_known_and_types_its_nonce() {
        let doc = known("NodeShell-Shell").expect("known");
        assert_eq!(doc.session_type, "Standard_Stream");
        let params = BTreeMap::from([("markNonce".to_string(), vec!["00ff".to_string()])]);
        let typed = typed_profile(&doc, &params).expect("profile");
        assert!(typed.starts_with("__ns_n='00ff'\n"), "{typed}");
        assert!(!typed.contains("{{"));
        assert!(known("Other").is_none());
    }

    /// Runs `shell` in a PTY as the agent does (profile typed first), types each line after
    /// the next marked prompt like a person, and returns the ledger of its output.
    async fn ledger_of(
        shell: &str,
        args: &[&str],
        lines: &[&str],
    ) -> crate::gateway::ledger::CommandLedger {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let nonce = "00aa11bb";
        let doc = known("NodeShell-Shell").expect("known");
        let params = BTreeMap::from([("markNonce".to_string(), vec![nonce.to_string()])]);
        let (pty, pts) = pty_process::open().expect("pty");
        pty.resize(pty_process::Size::new(24, 200)).expect("size");
        let mut child = pty_process::Command::new(shell)
            .args(args)
            .env("PS1", "$ ")
            .env("TERM", "xterm")
            .kill_on_drop(true)
            .spawn(pts)
            .expect("spawn");
        let (mut read, mut write) = pty.into_split();
        write
            .write_all(typed_profile(&doc, &params).expect("profile").as_bytes())
            .await
            .expect("profile");
        let mut ledger = crate::gateway::ledger::CommandLedger::new(
            nonce,
            crate::gateway::ledger::LedgerLimits::default(),
        );
        let prompt = format!("\x1b]133;B;nonce={nonce}\x07");
        let mut out: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        let mut next = 0;
        let mut typed_at = 0;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let read = tokio::time::timeout_at(deadline, read.read(&mut buf)).await;
            let n = match read {
                Ok(Ok(n)) if n > 0 => n,
                _ => break,
            };
            ledger.output(0.0, &buf[..n]);
            out.extend_from_slice(&buf[..n]);
            // The next line only after a prompt that came after the last line typed.
            let fresh = out
                .get(typed_at..)
                .unwrap_or_default()
                .windows(prompt.len())
                .any(|w| w == prompt.as_bytes());
            if fresh && next < lines.len() {
                typed_at = out.len();
                write
                    .write_all(format!("{}\r", lines[next]).as_bytes())
                    .await
                    .expect("type");
                next += 1;
            }
        }
        let _ = child.wait().await;
        ledger
    }

    #[tokio::test]
    async fn the_profile_marks_commands_in_a_real_sh_and_bash() {
        for (shell, args) in [
            ("/bin/sh", vec!["-i"]),
            ("/bin/bash", vec!["--noprofile", "--norc", "-i"]),
        ] {
            if !std::path::Path::new(shell).exists() {
                continue;
            }
            let ledger = ledger_of(
                shell,
                &args,
                &["cd /tmp", "false", "printf 'a;b\\n'", "exit 3"],
            )
            .await;
            let records = ledger.records();
            let seen: Vec<(&str, Option<i32>, Option<&str>)> = records
                .iter()
                .map(|r| (r.command.as_str(), r.exit_status, r.cwd.as_deref()))
                .collect();
            assert_eq!(seen.len(), 4, "{shell}: {records:?}");
            assert!(
                seen[0].2.is_some(),
                "the start directory: {shell}: {records:?}"
            );
            assert_eq!(
                seen[..3].iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
                [
                    ("cd /tmp", Some(0)),
                    ("false", Some(1)),
                    ("printf 'a;b\\n'", Some(0))
                ],
                "{shell}: {records:?}"
            );
            assert_eq!(seen[1].2, Some("/tmp"), "{shell}: {records:?}");
            assert_eq!(seen[3].0, "exit 3", "{shell}: {records:?}");
            assert_eq!(ledger.counts().shell_exit_status, Some(3), "{shell}");
            assert_eq!(ledger.counts().forged_marks, 0, "{shell}");
        }
    }

    #[test]
    fn the_cloudformation_snippet_in_setup_md_carries_the_same_profile() {
        let setup = include_str!("../../docs/setup.md");
        let start = setup.find("            linux: |-\n").expect("the snippet") + 22;
        let snippet: Vec<&str> = setup[start..]
            .lines()
            .take_while(|l| !l.starts_with("```"))
            .map(|l| l.strip_prefix("              ").unwrap_or(l))
            .collect();
        let doc = known("NodeShell-Shell").expect("known");
        assert_eq!(snippet.join("\n"), doc.inputs.shell_profile.linux);
    }

    #[test]
    fn the_yaml_and_json_documents_say_the_same() {
        let json: serde_json::Value = serde_json::from_str(NODESHELL_SHELL_JSON).expect("json");
        let yaml: serde_json::Value =
            serde_saphyr::from_str(include_str!("../../config/ssm/NodeShell-Shell.yaml"))
                .expect("yaml");
        assert_eq!(json, yaml);
    }
}

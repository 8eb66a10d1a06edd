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

    #[test]
    fn the_yaml_and_json_documents_say_the_same() {
        let json: serde_json::Value = serde_json::from_str(NODESHELL_SHELL_JSON).expect("json");
        let yaml: serde_json::Value =
            serde_saphyr::from_str(include_str!("../../config/ssm/NodeShell-Shell.yaml"))
                .expect("yaml");
        assert_eq!(json, yaml);
    }
}

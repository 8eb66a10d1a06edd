//! The custom resources of nodeshell, group `nodeshell.periscope.io`, version `v1alpha1`, both
//! cluster-scoped: [`NodeShellPolicy`] (who may open shells where, with which limits) and
//! [`NodeShellSession`] (one shell, admitted and expired by the controller).
//!
//! The schemas carry the validation the apiserver enforces (ranges, patterns, CEL rules such
//! as the immutable session spec); [`validate_policy`] checks what CEL cannot.

mod caps;
mod ec2;
mod labels;
mod matching;
mod names;
mod policy;
mod printable;
mod session;
mod validation;

pub use caps::{CapCount, CapVerdict, holds_cap_slot};
pub use ec2::{Ec2Instance, parse_provider_id, region_of_zone, trim_node};
pub use labels::{
    LABEL_NODE, LABEL_POLICY, LABEL_SESSION, LABEL_USER, TRANSCRIPT_SECRET_TYPE, label_value,
    session_labels,
};
pub use matching::{PolicyMatch, governing_policy, selects_node};
pub use names::{MAX_SUBDOMAIN, subdomain_problem};
pub use policy::{
    DEFAULT_DOCUMENT_NAME, IdleActivity, LEDGER_DOCUMENT_NAME, NodeShellPolicy,
    NodeShellPolicySpec, NodeShellPolicyStatus, PolicyAws, PolicyLimits, PolicyRetention,
    PolicyTranscript, PolicyTranscriptS3,
};
pub use printable::printable;
pub use session::{
    ACTIVITY_STATUS_LAG, ACTIVITY_WRITE_INTERVAL, EXIT_CODE_FROM_AGENT, EXIT_CODE_FROM_SHELL,
    GATEWAY_LEASE_LABEL, GATEWAY_LEASE_PREFIX, NodeShellSession, NodeShellSessionSpec,
    NodeShellSessionStatus, SessionAuditRecord, SessionGateway, SessionLedger, SessionPhase,
    SessionReason, SessionTranscript, SessionUser, gateway_lease_name,
};
pub use validation::{PolicyProblem, is_region, is_role_arn, validate_policy};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of the custom resources.
pub const GROUP: &str = "nodeshell.periscope.io";
/// API version of the custom resources.
pub const VERSION: &str = "v1alpha1";

/// Errors while rendering the CRDs.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// A CRD could not be written as YAML.
    #[error("rendering CRD {name} as YAML: {source}")]
    Yaml {
        /// Name of the CRD.
        name: String,
        /// What serde-saphyr said.
        #[source]
        source: serde_saphyr::ser::Error,
    },
}

// === impl CrdError ===

impl CrdError {
    /// Short, stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Yaml { .. } => "crd_yaml",
        }
    }
}

/// Both CRDs, policy first.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![NodeShellPolicy::crd(), NodeShellSession::crd()]
}

/// Each CRD as `(file name under crds/, YAML)`, the files `crds/` holds.
pub fn crd_files() -> Result<Vec<(String, String)>, CrdError> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let yaml = serde_saphyr::to_string(&crd).map_err(|source| CrdError::Yaml {
                name: name.clone(),
                source,
            })?;
            // File names follow the controller-gen convention: <group>_<plural>.yaml.
            let file = format!("{GROUP}_{}.yaml", crd.spec.names.plural);
            Ok((file, yaml))
        })
        .collect()
}

/// The CustomResourceDefinitions of nodeshell as one multi-document YAML string, exactly
/// what `nodeshell crds` prints and `crds/` holds.
pub fn crds_yaml() -> Result<String, CrdError> {
    let mut out = String::new();
    for (_, yaml) in crd_files()? {
        out.push_str("---\n");
        out.push_str(&yaml);
        if !yaml.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Fails when `crds/` differs from what the types generate. With `NODESHELL_UPDATE_CRDS=1`
    /// it rewrites the files instead (what `make crds` runs).
    #[test]
    fn crds_dir_is_fresh() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds");
        let update = std::env::var_os("NODESHELL_UPDATE_CRDS").is_some();
        for (file, yaml) in crd_files().expect("render") {
            let path = dir.join(&file);
            if update {
                std::fs::create_dir_all(&dir).expect("mkdir crds");
                std::fs::write(&path, &yaml).expect("write crd");
                continue;
            }
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                on_disk == yaml,
                "crds/{file} is stale: the Rust types in src/api changed. Regenerate with `make crds` \
                 (NODESHELL_UPDATE_CRDS=1 cargo test --lib api::tests::crds_dir_is_fresh) and commit crds/"
            );
        }
    }

    /// The example policies in config/ parse and are valid.
    #[test]
    fn example_policies_are_valid() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("config/") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if !(name.starts_with("policy-") && name.ends_with(".yaml")) {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            let policy: NodeShellPolicy =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(validate_policy(&policy.spec), vec![], "{name}");
            seen += 1;
        }
        assert!(seen >= 2, "expected example policies in config/");
    }

    fn schema(crd: &CustomResourceDefinition) -> serde_json::Value {
        serde_json::to_value(&crd.spec.versions[0].schema).expect("schema")
    }

    #[test]
    fn crds_are_cluster_scoped_with_status_and_names() {
        for crd in crds() {
            assert_eq!(crd.spec.scope, "Cluster");
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(
                crd.spec.names.categories.as_deref(),
                Some(&["nodeshell".to_string()][..])
            );
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, VERSION);
            assert!(
                version
                    .subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some()
            );
        }
        assert_eq!(
            NodeShellPolicy::crd().spec.names.short_names,
            Some(vec!["nsp".to_string()])
        );
        assert_eq!(
            NodeShellSession::crd().spec.names.short_names,
            Some(vec!["nss".to_string()])
        );
    }

    #[test]
    fn session_spec_carries_the_immutability_rules() {
        let s = schema(&NodeShellSession::crd());
        let spec = &s["openAPIV3Schema"]["properties"]["spec"];
        let rules: Vec<&str> = spec["x-kubernetes-validations"]
            .as_array()
            .expect("spec rules")
            .iter()
            .filter_map(|r| r["rule"].as_str())
            .collect();
        assert!(rules.contains(&"self.terminate || !oldSelf.terminate"));
        for field in [
            "nodeName",
            "instanceId",
            "region",
            "policyName",
            "user",
            "roleArn",
            "roleSessionName",
            "documentName",
            "reason",
        ] {
            assert_eq!(
                spec["properties"][field]["x-kubernetes-validations"][0]["rule"], "self == oldSelf",
                "{field} must be immutable"
            );
        }
        assert!(
            spec["properties"]["terminate"]
                .get("x-kubernetes-validations")
                .is_none()
        );
    }

    #[test]
    fn every_field_has_a_description() {
        fn walk(path: &str, v: &serde_json::Value, missing: &mut Vec<String>) {
            if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
                for (k, p) in props {
                    let here = format!("{path}.{k}");
                    if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                        && p.get("description").is_none()
                    {
                        missing.push(here.clone());
                    }
                    walk(&here, p, missing);
                }
            }
            if let Some(items) = v.get("items") {
                walk(&format!("{path}[]"), items, missing);
            }
        }
        let mut missing = Vec::new();
        for crd in crds() {
            walk(
                &crd.spec.names.kind,
                &schema(&crd)["openAPIV3Schema"],
                &mut missing,
            );
        }
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
    }

    #[test]
    fn policy_schema_has_defaults_ranges_and_rules() {
        let s = schema(&NodeShellPolicy::crd());
        let spec = &s["openAPIV3Schema"]["properties"]["spec"];
        let aws = &spec["properties"]["aws"]["properties"];
        assert_eq!(aws["sessionDurationSeconds"]["minimum"], 900.0);
        assert_eq!(aws["sessionDurationSeconds"]["maximum"], 43200.0);
        assert_eq!(aws["sessionDurationSeconds"]["default"], 3600);
        assert!(
            aws["roleArn"]["pattern"]
                .as_str()
                .is_some_and(|p| p.contains(r"\d{12}:role/"))
        );
        let limits = &spec["properties"]["limits"];
        assert_eq!(limits["properties"]["maxSessionsPerUser"]["minimum"], 1.0);
        assert_eq!(limits["properties"]["maxSessionsPerUser"]["default"], 2);
        assert!(
            limits["x-kubernetes-validations"][0]["rule"]
                .as_str()
                .is_some_and(|r| r.contains("idleWarningSeconds"))
        );
        assert!(
            spec["x-kubernetes-validations"][0]["rule"]
                .as_str()
                .is_some_and(|r| r.contains("maxDurationSeconds"))
        );
        assert_eq!(spec["properties"]["enabled"]["default"], true);
    }

    #[test]
    fn printer_columns() {
        let cols = |crd: CustomResourceDefinition| -> Vec<String> {
            crd.spec.versions[0]
                .additional_printer_columns
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.name.to_uppercase())
                .collect()
        };
        assert_eq!(
            cols(NodeShellSession::crd()),
            ["USER", "NODE", "PHASE", "REASON", "EXIT", "AGE"]
        );
        assert_eq!(
            cols(NodeShellPolicy::crd()),
            ["ENABLED", "TIERS", "ACTIVE", "READY", "AGE"]
        );
    }
}

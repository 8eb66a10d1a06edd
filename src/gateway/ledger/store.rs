//! A session's ledger as one Secret beside its transcript chunks: `<session>-ledger`
//! in the same namespace, of the transcript Secret type, labelled with the session and owned
//! by it (so retention removes it with the chunks), its JSON under [`LEDGER_DATA_KEY`].

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};

use super::LedgerDocument;
use crate::api::{LABEL_SESSION, NodeShellSession, TRANSCRIPT_SECRET_TYPE, label_value};
use crate::gateway::FIELD_MANAGER;
use crate::gateway::handover::TranscriptLoadError;
use crate::gateway::transcript::{TranscriptError, transcript_ref};

/// Key of the ledger's JSON in its Secret.
pub const LEDGER_DATA_KEY: &str = "ledger.json";

/// The name of a session's ledger Secret (`status.ledger.ref`): `<session>-ledger`, or for a
/// session name too long for that, the same cut and hash as [`transcript_ref`]. Never
/// `<session>-transcript-…`, which names only chunks.
pub fn ledger_secret_name(session_name: &str) -> String {
    let transcript = transcript_ref(session_name);
    let stem = transcript
        .strip_suffix("-transcript")
        .unwrap_or(&transcript);
    format!("{stem}-ledger")
}

/// The Secret holding `ledger`, owned by `session`.
pub fn ledger_secret(
    session: &NodeShellSession,
    namespace: &str,
    ledger: &LedgerDocument,
) -> Result<Secret, TranscriptError> {
    let name = session.name_any();
    let uid = session
        .meta()
        .uid
        .clone()
        .ok_or_else(|| TranscriptError::NoOwner(name.clone()))?;
    let json = serde_json::to_vec(ledger).unwrap_or_default();
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(ledger_secret_name(&name)),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                LABEL_SESSION.to_string(),
                label_value(&name),
            )])),
            owner_references: Some(vec![OwnerReference {
                api_version: NodeShellSession::api_version(&()).into_owned(),
                kind: NodeShellSession::kind(&()).into_owned(),
                name,
                uid,
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        },
        type_: Some(TRANSCRIPT_SECRET_TYPE.to_string()),
        data: Some(BTreeMap::from([(
            LEDGER_DATA_KEY.to_string(),
            ByteString(json),
        )])),
        ..Secret::default()
    })
}

/// Writes and reads ledger Secrets (server-side apply, `get` by name).
#[derive(Clone)]
pub struct LedgerStore {
    api: Api<Secret>,
    namespace: String,
}

impl LedgerStore {
    /// A store for Secrets in `namespace` (the transcripts' namespace).
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
        }
    }

    /// Writes (or rewrites) the ledger of `session`.
    pub async fn store(
        &self,
        session: &NodeShellSession,
        ledger: &LedgerDocument,
    ) -> Result<(), TranscriptError> {
        let secret = ledger_secret(session, &self.namespace, ledger)?;
        self.api
            .patch(
                &ledger_secret_name(&session.name_any()),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await?;
        Ok(())
    }

    /// The stored ledger of `session`; `Missing` when it has none (another document, or
    /// nothing stored yet).
    pub async fn load(
        &self,
        session: &NodeShellSession,
    ) -> Result<LedgerDocument, TranscriptLoadError> {
        let name = session.name_any();
        let secret = self
            .api
            .get_opt(&ledger_secret_name(&name))
            .await
            .map_err(|e| {
                tracing::warn!(namespace = %self.namespace, error = %e, "reading a ledger Secret failed");
                TranscriptLoadError::Storage(
                    "the ledger store (Kubernetes API) is unavailable; try again in a moment"
                        .to_string(),
                )
            })?;
        let data = secret
            .and_then(|s| s.data)
            .and_then(|mut d| d.remove(LEDGER_DATA_KEY))
            .ok_or_else(|| {
                TranscriptLoadError::Missing(format!(
                    "session {name} has no command ledger: only sessions on the NodeShell-Shell \
                     document have one (see docs/transcripts-and-audit.md)"
                ))
            })?;
        serde_json::from_slice(&data.0).map_err(|_| {
            TranscriptLoadError::Storage(format!(
                "the ledger Secret of session {name} is not a ledger; it was edited by hand"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NodeShellSessionSpec;

    #[test]
    fn the_ledger_secret_sits_beside_the_chunks_and_is_owned() {
        let mut session = NodeShellSession::new("shell-7fq2k", NodeShellSessionSpec::default());
        session.metadata.uid = Some("uid-1".into());
        let doc = super::super::Ledger::new("n", k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
            .document("shell-7fq2k");
        let secret = ledger_secret(&session, "ns", &doc).expect("secret");
        assert_eq!(secret.metadata.name.as_deref(), Some("shell-7fq2k-ledger"));
        assert_eq!(secret.type_.as_deref(), Some(TRANSCRIPT_SECRET_TYPE));
        let back: LedgerDocument =
            serde_json::from_slice(&secret.data.expect("data")[LEDGER_DATA_KEY].0).expect("json");
        assert_eq!(back, doc);
    }
}

//! Transcript chunks as Secrets in the operator's namespace: `<session>-transcript-<n>`,
//! labelled with the session, owned by it (so the garbage collector removes them with it),
//! each holding one gzip member under [`CHUNK_DATA_KEY`].

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use prometheus_client::metrics::counter::Counter;

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use super::chain::{CHAIN_ANNOTATION, ChainReport, StoredChunk, verify};
use super::chunks::{Chunk, gunzip_chunks};
use crate::api::{LABEL_SESSION, NodeShellSession, label_value};
use crate::gateway::FIELD_MANAGER;
use crate::gateway::handover::{TranscriptLoadError, TranscriptSource};

/// `status.transcript.format` of stored transcripts.
pub const TRANSCRIPT_FORMAT: &str = "asciicast-v2+gzip";
/// Key of the gzip member in each Secret.
pub const CHUNK_DATA_KEY: &str = "asciicast.gz";
/// Annotation holding the chunk's position (0, 1, …).
pub const CHUNK_ANNOTATION: &str = "nodeshell.periscope.io/transcript-chunk";
/// Secret type of transcript chunks, so they are easy to tell from other Secrets (and admission
/// can hold the gateway to it).
pub const SECRET_TYPE: &str = crate::api::TRANSCRIPT_SECRET_TYPE;
/// Why storing a transcript failed.
#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    /// The apiserver refused or could not be reached.
    #[error("transcript storage: {0}")]
    Kube(#[from] kube::Error),
    /// The session has no uid (it was never stored), so nothing can be owned by it.
    #[error("session {0} has no uid; it must be read from the apiserver first")]
    NoOwner(String),
    /// The task storing the chunks ended without an answer (it panicked); its chunks wait
    /// to be stored again.
    #[error("the transcript's store task ended without an answer")]
    TaskLost,
    /// The policy's required S3 sink did not take a chunk.
    #[error("{0}")]
    Sink(#[from] super::s3::SinkError),
}

/// Longest Secret name (a DNS subdomain).
const MAX_NAME: usize = 253;
/// Room kept after the prefix for `-<chunk index>`.
const INDEX_ROOM: usize = 8;

/// The `status.transcript.ref` of a session: the prefix of its chunk Secrets' names,
/// `<session>-transcript`. A session name too long for that (and a chunk index) to stay a
/// valid Secret name is cut and followed by 10 hex characters of its SHA-256.
pub fn transcript_ref(session_name: &str) -> String {
    const SUFFIX: &str = "-transcript";
    if session_name.len() + SUFFIX.len() + INDEX_ROOM <= MAX_NAME {
        return format!("{session_name}{SUFFIX}");
    }
    let hash = hex::encode(Sha256::digest(session_name.as_bytes()));
    let keep = MAX_NAME - SUFFIX.len() - INDEX_ROOM - 11;
    // Session names are DNS subdomains (ASCII), so byte slicing cannot split a character.
    let head = session_name
        .get(..keep)
        .unwrap_or(session_name)
        .trim_end_matches(['-', '.']);
    format!("{head}-{}{SUFFIX}", hash.get(..10).unwrap_or(&hash))
}

/// The name of chunk `index` of a session's transcript.
pub fn chunk_secret_name(session_name: &str, index: usize) -> String {
    format!("{}-{index}", transcript_ref(session_name))
}

/// The Secret holding one chunk, owned by the session.
pub fn chunk_secret(
    session: &NodeShellSession,
    namespace: &str,
    chunk: &Chunk,
) -> Result<Secret, TranscriptError> {
    let name = session.name_any();
    let uid = session
        .meta()
        .uid
        .clone()
        .ok_or_else(|| TranscriptError::NoOwner(name.clone()))?;
    let owner = OwnerReference {
        api_version: NodeShellSession::api_version(&()).into_owned(),
        kind: NodeShellSession::kind(&()).into_owned(),
        name: name.clone(),
        uid,
        controller: Some(true),
        block_owner_deletion: None,
    };
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(chunk_secret_name(&name, chunk.index)),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                LABEL_SESSION.to_string(),
                label_value(&name),
            )])),
            annotations: Some(BTreeMap::from([
                (CHUNK_ANNOTATION.to_string(), chunk.index.to_string()),
                (CHAIN_ANNOTATION.to_string(), chunk.prev.clone()),
            ])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some(SECRET_TYPE.to_string()),
        data: Some(BTreeMap::from([(
            CHUNK_DATA_KEY.to_string(),
            ByteString(chunk.gz.to_vec()),
        )])),
        ..Secret::default()
    })
}

/// Writes transcript chunks (server-side apply, field manager `nodeshell-gateway`) and reads
/// them back by name (`<session>-transcript-<n>`, from 0), so the gateway needs only `get`
/// and `patch` on Secrets.
#[derive(Clone)]
pub struct TranscriptStore {
    api: Api<Secret>,
    namespace: String,
    /// Compressed chunk bytes written (every write of a chunk, rewrites of the open one
    /// included).
    stored_bytes: Counter,
}

impl TranscriptStore {
    /// A store for Secrets in `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            stored_bytes: Counter::default(),
        }
    }

    /// The same store, counting the compressed bytes of every chunk it writes in `counter`.
    pub fn counting(self, counter: Counter) -> Self {
        Self {
            stored_bytes: counter,
            ..self
        }
    }

    /// The namespace the chunks are written to (named in failure messages).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Writes (or rewrites) the given chunks in order; stops at the first failure.
    pub async fn store(
        &self,
        session: &NodeShellSession,
        chunks: &[Chunk],
    ) -> Result<(), TranscriptError> {
        for chunk in chunks {
            let secret = chunk_secret(session, &self.namespace, chunk)?;
            let name = chunk_secret_name(&session.name_any(), chunk.index);
            self.api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&secret),
                )
                .await?;
            self.stored_bytes
                .inc_by(u64::try_from(chunk.gz.len()).unwrap_or(u64::MAX));
        }
        Ok(())
    }

    /// The stored recording of `session`: the gzip members of its chunk Secrets, in order,
    /// every one of them (chunks 0, 1, … up to the first that does not exist).
    pub async fn load(&self, session: &NodeShellSession) -> Result<Vec<u8>, TranscriptLoadError> {
        let name = session.name_any();
        let (out, chunks) = read_chunks(|index| {
            let secret_name = chunk_secret_name(&name, index);
            async move {
                let secret = self
                    .api
                    .get_opt(&secret_name)
                    .await
                    .map_err(|e| read_failure(&e, &self.namespace))?;
                Ok(secret.map(|s| {
                    s.data
                        .and_then(|mut d| d.remove(CHUNK_DATA_KEY))
                        .map(|b| b.0)
                        .unwrap_or_default()
                }))
            }
        })
        .await?;
        if chunks == 0 {
            let recorded = session
                .status
                .as_ref()
                .and_then(|s| s.transcript.as_ref())
                .is_some();
            return Err(TranscriptLoadError::Missing(if recorded {
                format!("the transcript Secrets of session {name} are gone (retention?)")
            } else {
                format!(
                    "session {name} has no stored transcript (recording disabled, or nothing flushed yet)"
                )
            }));
        }
        Ok(out)
    }
}

impl TranscriptStore {
    /// Every stored chunk of `session` as verification reads it: its Secret's name, its chain
    /// annotation and its text (each chunk decompressed on its own).
    pub async fn load_stored_chunks(
        &self,
        session: &NodeShellSession,
    ) -> Result<Vec<StoredChunk>, TranscriptLoadError> {
        let name = session.name_any();
        let mut out = Vec::new();
        loop {
            let secret_name = chunk_secret_name(&name, out.len());
            let Some(secret) = self
                .api
                .get_opt(&secret_name)
                .await
                .map_err(|e| read_failure(&e, &self.namespace))?
            else {
                break;
            };
            let prev = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(CHAIN_ANNOTATION).cloned());
            let gz = secret
                .data
                .and_then(|mut d| d.remove(CHUNK_DATA_KEY))
                .map(|b| b.0)
                .unwrap_or_default();
            out.push(StoredChunk {
                secret: secret_name,
                prev,
                text: gunzip_chunks([gz.as_slice()]).map_err(|e| e.to_string()),
            });
        }
        Ok(out)
    }

    /// Checks the stored chunks of `session` against the chain head its status records.
    pub async fn verify(
        &self,
        session: &NodeShellSession,
    ) -> Result<ChainReport, TranscriptLoadError> {
        let chunks = self.load_stored_chunks(session).await?;
        let head = session
            .status
            .as_ref()
            .and_then(|s| s.transcript.as_ref())
            .and_then(|t| t.chain_head.as_deref());
        Ok(verify(&chunks, head))
    }
}

/// Reads chunk 0, 1, … through `fetch` until the first that does not exist and returns their
/// bytes in order with how many there were. There is no count limit: a download holds every
/// chunk or fails with the first read error, never a silently shortened recording.
async fn read_chunks<F, Fut>(mut fetch: F) -> Result<(Vec<u8>, usize), TranscriptLoadError>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Vec<u8>>, TranscriptLoadError>>,
{
    let mut out = Vec::new();
    let mut index = 0;
    while let Some(data) = fetch(index).await? {
        out.extend_from_slice(&data);
        index += 1;
    }
    Ok((out, index))
}

impl TranscriptSource for TranscriptStore {
    fn load(
        &self,
        session: &NodeShellSession,
    ) -> BoxFuture<'static, Result<Vec<u8>, TranscriptLoadError>> {
        let store = self.clone();
        let session = session.clone();
        Box::pin(async move { store.load(&session).await })
    }
}

/// What a caller is told when the transcript Secrets cannot be read: what happened and what
/// to do, never the apiserver's own text (that goes to the log).
fn read_failure(error: &kube::Error, namespace: &str) -> TranscriptLoadError {
    tracing::warn!(namespace, error = %error, "reading transcript Secrets failed");
    TranscriptLoadError::Storage(match error {
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => format!(
            "the gateway may not read Secrets in namespace {namespace}; ask your platform team \
             to grant the gateway's service account get on secrets there"
        ),
        _ => "the transcript store (Kubernetes API) is unavailable; try again in a moment"
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NodeShellSessionSpec;

    #[test]
    fn chunk_secrets_are_owned_labelled_and_named() {
        let mut session = NodeShellSession::new("shell-7fq2k", NodeShellSessionSpec::default());
        let chunk = Chunk {
            index: 2,
            gz: vec![1, 2, 3].into(),
            sealed: false,
            prev: "00".into(),
        };
        assert!(matches!(
            chunk_secret(&session, "ns", &chunk),
            Err(TranscriptError::NoOwner(_))
        ));
        session.metadata.uid = Some("uid-1".into());
        let secret = chunk_secret(&session, "nodeshell-system", &chunk).expect("secret");
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("shell-7fq2k-transcript-2")
        );
        assert_eq!(
            secret.metadata.namespace.as_deref(),
            Some("nodeshell-system")
        );
        assert_eq!(
            secret
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_SESSION))
                .map(String::as_str),
            Some("shell-7fq2k")
        );
        let owner = &secret.metadata.owner_references.as_ref().expect("owners")[0];
        assert_eq!(owner.kind, "NodeShellSession");
        assert_eq!(owner.api_version, "nodeshell.periscope.io/v1alpha1");
        assert_eq!(owner.uid, "uid-1");
        assert_eq!(secret.type_.as_deref(), Some(SECRET_TYPE));
        let json = serde_json::to_value(&secret).expect("json");
        assert_eq!(json["apiVersion"], "v1");
        assert_eq!(json["kind"], "Secret");
        assert_eq!(transcript_ref("shell-7fq2k"), "shell-7fq2k-transcript");
    }

    #[tokio::test]
    async fn every_chunk_is_read_however_many_there_are() {
        // More chunks than the 1,024 the store once stopped at without a word.
        const STORED: usize = 3000;
        let (bytes, count) = read_chunks(|i| async move {
            Ok((i < STORED).then(|| u32::try_from(i).expect("small").to_be_bytes().to_vec()))
        })
        .await
        .expect("read");
        assert_eq!(count, STORED);
        assert_eq!(bytes.len(), STORED * 4);
        assert_eq!(bytes[bytes.len() - 4..], 2999u32.to_be_bytes());
    }

    #[tokio::test]
    async fn a_chunk_that_cannot_be_read_fails_the_download() {
        let result = read_chunks(|i| async move {
            if i == 1500 {
                return Err(TranscriptLoadError::Storage(
                    "the store is unavailable".into(),
                ));
            }
            Ok(Some(vec![1]))
        })
        .await;
        assert!(
            matches!(result, Err(TranscriptLoadError::Storage(ref m)) if m.contains("unavailable")),
            "{result:?}"
        );
    }

    #[test]
    fn long_session_names_still_give_valid_secret_names() {
        let long = format!("{}-abcde", "n".repeat(247));
        let name = chunk_secret_name(&long, 9999);
        assert!(name.len() <= 253, "{} chars", name.len());
        assert!(name.ends_with("-transcript-9999"));
        let other = chunk_secret_name(&format!("{}-fghij", "n".repeat(247)), 0);
        assert_ne!(name.trim_end_matches("-9999"), other.trim_end_matches("-0"));
    }

    #[test]
    fn transcript_read_failures_say_what_to_do_without_the_apiservers_text() {
        let raw = r#"secrets "s-transcript-0" is forbidden: User "system:serviceaccount:nodeshell-system:nodeshell-gateway" cannot get resource "secrets""#;
        let denied = kube::Error::Api(
            kube::core::Status::failure(raw, "Forbidden")
                .with_code(403)
                .boxed(),
        );
        let TranscriptLoadError::Storage(m) = read_failure(&denied, "nodeshell-system") else {
            panic!("a refusal is a storage failure");
        };
        assert!(
            m.contains("may not read Secrets in namespace nodeshell-system"),
            "{m}"
        );
        assert!(
            !m.contains("system:serviceaccount") && !m.contains("forbidden:"),
            "{m}"
        );
        let down = kube::Error::Api(
            kube::core::Status::failure("etcdserver: request timed out", "InternalError")
                .with_code(500)
                .boxed(),
        );
        let TranscriptLoadError::Storage(m) = read_failure(&down, "nodeshell-system") else {
            panic!("an outage is a storage failure");
        };
        assert!(m.contains("try again") && !m.contains("etcdserver"), "{m}");
    }
}

//! The S3 sink (issue 12 §4): a copy of each session's transcript in an S3 bucket under Object
//! Lock in compliance mode, written with the gateway's own pod identity (the SDK's default
//! credential chain: IRSA, EKS Pod Identity, or static keys from the environment), never the
//! person's. Objects: `<prefix>/<namespace>/<session>/session.json` when the shell starts,
//! `<prefix>/<namespace>/<session>/<index>.cast.gz` for each sealed chunk as it is stored and
//! for the last chunk when the session ends, and `ledger.json` (the command ledger of a session
//! on the `NodeShell-Shell` document) once at the close; each object is written once.
//!
//! Uploads go through one bounded queue per gateway ([`UPLOAD_QUEUE`]) served by
//! [`PARALLEL_UPLOADS`] uploads at a time. A required sink waits for room (back-pressure:
//! the session's flush waits, and output reading pauses behind it); a non-required one
//! gives up at once when the queue is full and counts that as a failed upload. Either waits
//! for S3's answer to an upload it queued, at most [`UPLOAD_TIMEOUT`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockMode, ServerSideEncryption};
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{OnceCell, mpsc, oneshot};
use tracing::warn;

use super::chunks::Chunk;
use crate::api::PolicyTranscriptS3;
use crate::aws::AwsClients;

/// Uploads waiting for their turn, per gateway.
pub const UPLOAD_QUEUE: usize = 64;
/// Uploads in flight at once, per gateway.
pub const PARALLEL_UPLOADS: usize = 4;
/// How long one upload may take, the SDK's retries included.
pub const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Seconds in a retention day.
const DAY_SECONDS: i64 = 24 * 3600;

/// Why an object could not be written to the sink, in words for the session's message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the S3 sink (bucket {bucket}) did not take the transcript: {error}")]
pub struct SinkError {
    /// The bucket.
    pub bucket: String,
    /// S3's error code and message, the connection error, or "the upload queue is full".
    pub error: String,
}

/// Where one session's objects go, from its policy.
#[derive(Debug)]
pub struct SinkTarget {
    /// The policy's settings.
    pub spec: PolicyTranscriptS3,
    /// Region of the bucket (the policy's, or the session's).
    pub region: String,
    /// Key prefix of this session's objects, `<prefix>/<namespace>/<session>`.
    pub session_prefix: String,
    /// The first upload of a non-required sink that failed (for the close message).
    failed: Mutex<Option<SinkError>>,
}

impl SinkTarget {
    /// The target of session `session` in `namespace` under `spec`; `session_region` when the
    /// policy names no region.
    pub fn new(
        spec: &PolicyTranscriptS3,
        namespace: &str,
        session: &str,
        session_region: &str,
    ) -> Self {
        Self {
            region: spec
                .region
                .clone()
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| session_region.to_string()),
            session_prefix: session_prefix(&spec.prefix, namespace, session),
            spec: spec.clone(),
            failed: Mutex::new(None),
        }
    }

    /// The key of chunk `index`.
    pub fn chunk_key(&self, index: usize) -> String {
        format!("{}/{index:06}.cast.gz", self.session_prefix)
    }

    /// The key of the session's description.
    pub fn manifest_key(&self) -> String {
        format!("{}/session.json", self.session_prefix)
    }

    /// The key of the session's command ledger (written once, at the close).
    pub fn ledger_key(&self) -> String {
        format!("{}/ledger.json", self.session_prefix)
    }

    /// The first failed upload of a non-required sink, if any.
    pub fn first_failure(&self) -> Option<SinkError> {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn note_failure(&self, error: &SinkError) {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert_with(|| error.clone());
    }
}

/// `<prefix>/<namespace>/<session>`, without empty or doubled slashes.
pub fn session_prefix(prefix: &str, namespace: &str, session: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("{namespace}/{session}")
    } else {
        format!("{prefix}/{namespace}/{session}")
    }
}

/// The retain-until date of an object written at `now_seconds` (Unix time) kept `days`.
pub fn retain_until(now_seconds: i64, days: i32) -> i64 {
    now_seconds.saturating_add(i64::from(days.max(1)).saturating_mul(DAY_SECONDS))
}

/// One object to write.
struct Upload {
    target: Arc<SinkTarget>,
    key: String,
    body: Vec<u8>,
    content_type: &'static str,
    reply: oneshot::Sender<Result<(), SinkError>>,
}

/// The gateway's sink: the upload queue and the S3 clients (one per region), built on the
/// gateway's shared HTTP client. Cheap to clone.
#[derive(Clone)]
pub struct S3Sink {
    queue: mpsc::Sender<Upload>,
    /// Uploads that failed or found the queue full.
    failures: Counter,
}

impl std::fmt::Debug for S3Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Sink").finish_non_exhaustive()
    }
}

impl S3Sink {
    /// Starts the sink's upload task (on the current runtime). `endpoint` overrides the S3
    /// endpoint (an S3-compatible server; path-style addressing then).
    pub fn start(aws: &AwsClients, endpoint: Option<String>, failures: Counter) -> Self {
        let (queue, rx) = mpsc::channel(UPLOAD_QUEUE);
        let uploader = Uploader {
            config: aws.sdk_config(),
            endpoint,
            credentials: Arc::new(OnceCell::new()),
            clients: Arc::new(Mutex::new(HashMap::new())),
        };
        tokio::spawn(
            tokio_stream_of(rx).for_each_concurrent(PARALLEL_UPLOADS, move |upload| {
                let uploader = uploader.clone();
                async move {
                    let result = uploader.put(&upload).await;
                    let _ = upload.reply.send(result);
                }
            }),
        );
        Self { queue, failures }
    }

    /// Writes the session's `session.json`.
    pub async fn put_manifest(
        &self,
        target: &Arc<SinkTarget>,
        manifest: &serde_json::Value,
    ) -> Result<(), SinkError> {
        let body = serde_json::to_vec_pretty(manifest).unwrap_or_default();
        self.put(target, target.manifest_key(), body, "application/json")
            .await
    }

    /// Writes the session's command ledger as it stands at the close (`ledger.json`).
    pub async fn put_ledger(
        &self,
        target: &Arc<SinkTarget>,
        ledger: &impl serde::Serialize,
    ) -> Result<(), SinkError> {
        let body = serde_json::to_vec_pretty(ledger).unwrap_or_default();
        self.put(target, target.ledger_key(), body, "application/json")
            .await
    }

    /// Writes chunks (sealed ones as they are stored, the last one at the end), in order.
    pub async fn put_chunks(
        &self,
        target: &Arc<SinkTarget>,
        chunks: &[Chunk],
    ) -> Result<(), SinkError> {
        for chunk in chunks {
            self.put(
                target,
                target.chunk_key(chunk.index),
                chunk.gz.to_vec(),
                "application/gzip",
            )
            .await?;
        }
        Ok(())
    }

    /// Queues one object and waits for S3's answer. A required target waits for room in the
    /// queue; any other gives up when it is full. A failure of a non-required target is
    /// counted, logged and kept for the close message, and reported as success.
    async fn put(
        &self,
        target: &Arc<SinkTarget>,
        key: String,
        body: Vec<u8>,
        content_type: &'static str,
    ) -> Result<(), SinkError> {
        let (reply, answer) = oneshot::channel();
        let upload = Upload {
            target: target.clone(),
            key: key.clone(),
            body,
            content_type,
            reply,
        };
        let queued = if target.spec.required {
            self.queue
                .send(upload)
                .await
                .map_err(|_| "the sink stopped")
        } else {
            self.queue
                .try_send(upload)
                .map_err(|_| "the gateway's upload queue is full")
        };
        let result = match queued {
            Ok(()) => answer.await.unwrap_or_else(|_| {
                Err(SinkError {
                    bucket: target.spec.bucket.clone(),
                    error: "the sink stopped".into(),
                })
            }),
            Err(why) => Err(SinkError {
                bucket: target.spec.bucket.clone(),
                error: why.into(),
            }),
        };
        let Err(error) = result else {
            return Ok(());
        };
        self.failures.inc();
        warn!(bucket = %target.spec.bucket, key, error = %error.error, required = target.spec.required, "S3 sink upload failed");
        if target.spec.required {
            return Err(error);
        }
        target.note_failure(&error);
        Ok(())
    }
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The upload side: S3 clients signed by the gateway's own identity.
#[derive(Clone)]
struct Uploader {
    config: aws_config::SdkConfig,
    endpoint: Option<String>,
    credentials: Arc<OnceCell<SharedCredentialsProvider>>,
    clients: Arc<Mutex<HashMap<String, aws_sdk_s3::Client>>>,
}

impl Uploader {
    async fn client(&self, region: &str) -> aws_sdk_s3::Client {
        let credentials = self
            .credentials
            .get_or_init(|| async {
                SharedCredentialsProvider::new(DefaultCredentialsChain::builder().build().await)
            })
            .await
            .clone();
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        clients
            .entry(region.to_string())
            .or_insert_with(|| {
                let mut config = aws_sdk_s3::config::Builder::from(&self.config)
                    .region(aws_sdk_s3::config::Region::new(region.to_string()))
                    .credentials_provider(credentials);
                if let Some(url) = &self.endpoint {
                    config = config.endpoint_url(url.clone()).force_path_style(true);
                }
                aws_sdk_s3::Client::from_conf(config.build())
            })
            .clone()
    }

    async fn put(&self, upload: &Upload) -> Result<(), SinkError> {
        let target = &upload.target;
        let client = self.client(&target.region).await;
        let now = chrono::Utc::now().timestamp();
        let mut request = client
            .put_object()
            .bucket(&target.spec.bucket)
            .key(&upload.key)
            .content_type(upload.content_type)
            .body(ByteStream::from(upload.body.clone()))
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(DateTime::from_secs(retain_until(
                now,
                target.spec.retention_days,
            )));
        if let Some(key) = target.spec.kms_key_id.as_ref().filter(|k| !k.is_empty()) {
            request = request
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(key);
        }
        // Bounded here rather than with the SDK's timeout settings, which would give this
        // client a connector (and pool) of its own instead of the gateway's shared one.
        let sent = tokio::time::timeout(UPLOAD_TIMEOUT, request.send())
            .await
            .map_err(|_| SinkError {
                bucket: target.spec.bucket.clone(),
                error: format!("no answer within {}s", UPLOAD_TIMEOUT.as_secs()),
            })?;
        sent.map(|_| ()).map_err(|e| SinkError {
            bucket: target.spec.bucket.clone(),
            error: match (e.code(), e.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_string(),
                _ => crate::aws::describe(&e),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(prefix: &str) -> PolicyTranscriptS3 {
        PolicyTranscriptS3 {
            bucket: "audit".into(),
            prefix: prefix.into(),
            region: None,
            kms_key_id: None,
            retention_days: 30,
            required: true,
        }
    }

    #[test]
    fn keys_are_prefix_namespace_session_then_the_zero_padded_chunk() {
        let t = SinkTarget::new(&spec("nodeshell/"), "team-a", "shell-7fq2k", "eu-west-1");
        assert_eq!(
            t.chunk_key(3),
            "nodeshell/team-a/shell-7fq2k/000003.cast.gz"
        );
        assert_eq!(
            t.manifest_key(),
            "nodeshell/team-a/shell-7fq2k/session.json"
        );
        assert_eq!(t.region, "eu-west-1");
        let t = SinkTarget::new(&spec(""), "ns", "s", "eu-west-1");
        assert_eq!(t.chunk_key(12), "ns/s/000012.cast.gz");
    }

    #[test]
    fn the_policy_region_wins_over_the_sessions() {
        let mut s = spec("p");
        s.region = Some("us-east-2".into());
        assert_eq!(
            SinkTarget::new(&s, "ns", "s", "eu-west-1").region,
            "us-east-2"
        );
    }

    #[test]
    fn retention_runs_whole_days_from_the_write() {
        assert_eq!(retain_until(1_000, 1), 1_000 + 86_400);
        assert_eq!(retain_until(0, 30), 30 * 86_400);
        // A zero or negative count (the CRD forbids it) still locks for a day.
        assert_eq!(retain_until(0, 0), 86_400);
    }

    #[tokio::test]
    async fn a_full_queue_fails_a_non_required_upload_at_once_and_counts_it() {
        let (queue, _rx) = mpsc::channel(1);
        let failures = Counter::default();
        let sink = S3Sink {
            queue,
            failures: failures.clone(),
        };
        let mut s = spec("p");
        s.required = false;
        let target = Arc::new(SinkTarget::new(&s, "ns", "s", "r"));
        // The first upload takes the queue's only place (nobody serves it: it waits for an
        // answer that never comes, so it runs in the background).
        let first = tokio::spawn({
            let sink = sink.clone();
            let target = target.clone();
            async move { sink.put(&target, "a".into(), vec![1], "x").await }
        });
        tokio::task::yield_now().await;
        while sink.queue.capacity() > 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(sink.put(&target, "b".into(), vec![2], "x").await, Ok(()));
        assert_eq!(failures.get(), 1);
        assert_eq!(
            target.first_failure().map(|e| e.to_string()),
            Some(
                "the S3 sink (bucket audit) did not take the transcript: the gateway's upload queue is full"
                    .into()
            )
        );
        first.abort();
    }
}

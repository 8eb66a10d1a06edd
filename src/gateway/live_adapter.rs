//! Plugs the live side ([`crate::gateway::live::LiveSessions`]) and the transcript Secrets
//! into the control side's [`LiveRuntime`] and [`TranscriptSource`].

use std::sync::Arc;

use axum::extract::ws::WebSocket;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::api::NodeShellSession;
use crate::gateway::audit::AuditSink;
use crate::gateway::config::GatewayConfig;
use crate::gateway::contract::AttachGrant;
use crate::gateway::live::{LiveConfig, LiveSessions};
use crate::gateway::metrics::GatewayMetrics;
use crate::gateway::runtime::{LiveRuntime, Runtime, TranscriptLoadError, TranscriptSource};
use crate::gateway::transcript::store::{CHUNK_DATA_KEY, chunk_secret_name};

/// Most chunk Secrets read for one transcript (the policy caps a recording at 64 MiB, stored
/// in chunks of at most 512 KiB).
const MAX_CHUNKS: usize = 1024;

impl LiveRuntime for LiveSessions {
    fn attach(
        &self,
        grant: AttachGrant,
        socket: WebSocket,
        resume: bool,
    ) -> BoxFuture<'static, ()> {
        let live = self.clone();
        Box::pin(async move { live.attach(grant, socket, resume).await })
    }

    fn is_running(&self, session_name: &str) -> bool {
        self.is_live(session_name)
    }

    fn request_terminate(&self, session_name: &str) {
        let live = self.clone();
        let name = session_name.to_string();
        // The CR's spec.terminate is the durable request; this only makes the local cut
        // immediate, so it runs off the request's path.
        tokio::spawn(async move {
            live.request_terminate(&name).await;
        });
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        let live = self.clone();
        Box::pin(async move { live.shutdown().await })
    }
}

/// Reads transcript chunk Secrets by name (`<session>-transcript-<n>`, from 0), so the
/// gateway needs only `get` on Secrets.
#[derive(Clone)]
pub struct SecretTranscripts {
    api: Api<Secret>,
}

impl std::fmt::Debug for SecretTranscripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretTranscripts").finish_non_exhaustive()
    }
}

impl SecretTranscripts {
    /// Transcripts in `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
        }
    }
}

impl TranscriptSource for SecretTranscripts {
    fn load(
        &self,
        session: &NodeShellSession,
    ) -> BoxFuture<'static, Result<Vec<u8>, TranscriptLoadError>> {
        let api = self.api.clone();
        let name = session.name_any();
        let recorded = session
            .status
            .as_ref()
            .and_then(|s| s.transcript.as_ref())
            .is_some();
        Box::pin(async move {
            let mut out = Vec::new();
            let mut chunks = 0;
            for index in 0..MAX_CHUNKS {
                let secret = api
                    .get_opt(&chunk_secret_name(&name, index))
                    .await
                    .map_err(|e| TranscriptLoadError::Storage(e.to_string()))?;
                let Some(secret) = secret else { break };
                if let Some(data) = secret.data.and_then(|mut d| d.remove(CHUNK_DATA_KEY)) {
                    out.extend_from_slice(&data.0);
                }
                chunks += 1;
            }
            if chunks == 0 {
                return Err(TranscriptLoadError::Missing(if recorded {
                    format!("the transcript Secrets of session {name} are gone (retention?)")
                } else {
                    format!(
                        "session {name} has no stored transcript (recording disabled, or nothing flushed yet)"
                    )
                }));
            }
            Ok(out)
        })
    }
}

/// The live side a gateway runs with: [`LiveSessions`] with its metrics in the gateway's
/// registry and audit rows on stdout.
pub fn live_runtime(config: &GatewayConfig, client: Client, metrics: GatewayMetrics) -> Runtime {
    let live_config = LiveConfig::new(
        client.clone(),
        config.namespace.clone(),
        config.pod_name.clone(),
        config.aws.clone(),
        config.cluster_name.clone(),
        AuditSink::stdout(),
    );
    metrics
        .registry
        .with(|registry| live_config.metrics.register(registry));
    let live = LiveSessions::new(live_config);
    Runtime {
        live: Arc::new(live),
        transcripts: Arc::new(SecretTranscripts::new(client, &config.namespace)),
    }
}

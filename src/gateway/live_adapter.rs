//! Plugs the live side ([`crate::gateway::live::LiveSessions`]) and the transcript Secrets
//! into the control side's [`LiveShells`] and [`TranscriptSource`].

use std::sync::Arc;

use axum::extract::ws::WebSocket;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::api::NodeShellSession;
use crate::gateway::audit::{AuditError, AuditSink};
use crate::gateway::config::GatewayConfig;
use crate::gateway::handover::AttachGrant;
use crate::gateway::handover::{LiveShells, LiveSide, TranscriptLoadError, TranscriptSource};
use crate::gateway::live::{LiveConfig, LiveSessions};
use crate::gateway::metrics::GatewayMetrics;
use crate::gateway::transcript::store::{CHUNK_DATA_KEY, chunk_secret_name};

/// Most chunk Secrets read for one transcript (the policy caps a recording at 64 MiB, stored
/// in chunks of at most 512 KiB).
const MAX_CHUNKS: usize = 1024;

impl LiveShells for LiveSessions {
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

impl TranscriptSource for SecretTranscripts {
    fn load(
        &self,
        session: &NodeShellSession,
    ) -> BoxFuture<'static, Result<Vec<u8>, TranscriptLoadError>> {
        let api = self.api.clone();
        let namespace = self.api.namespace().unwrap_or_default().to_string();
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
                    .map_err(|e| read_failure(&e, &namespace))?;
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

/// The live side's settings from the gateway's configuration: the resolved
/// [`LiveSettings`](crate::gateway::config::LiveSettings) over `LiveConfig`'s defaults, audit
/// rows to `audit`.
pub fn live_config(config: &GatewayConfig, client: Client, audit: AuditSink) -> LiveConfig {
    let settings = &config.live;
    LiveConfig {
        reattach_grace: settings.reattach_grace,
        heartbeat_interval: settings.heartbeat_interval,
        status_throttle: settings.status_write_throttle,
        transcript_flush_interval: settings.transcript_flush_interval,
        replay_buffer_bytes: settings.replay_buffer_bytes,
        shutdown_timeout: settings.shutdown_timeout,
        ..LiveConfig::new(
            client,
            config.namespace.clone(),
            config.pod_name.clone(),
            config.aws.clone(),
            config.cluster_name.clone(),
            audit,
        )
    }
}

/// Where audit rows go: always stdout (logs are on stderr), and appended to the configured
/// audit file when there is one (design §7).
pub fn audit_sink(config: &GatewayConfig) -> Result<AuditSink, AuditError> {
    AuditSink::new(true, config.live.audit_file.as_deref())
}

/// The live side a gateway runs with: [`LiveSessions`] with its metrics in the gateway's
/// registry and audit rows on stdout (and in the audit file, when configured). Fails only
/// when the audit file cannot be opened for appending.
pub fn live_runtime(
    config: &GatewayConfig,
    client: Client,
    metrics: GatewayMetrics,
) -> Result<LiveSide, AuditError> {
    let live_config = live_config(config, client.clone(), audit_sink(config)?);
    metrics
        .registry
        .with(|registry| live_config.metrics.register(registry));
    let live = LiveSessions::new(live_config);
    Ok(LiveSide {
        shells: Arc::new(live),
        transcripts: Arc::new(SecretTranscripts::new(client, &config.namespace)),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::gateway::audit::{AuditActor, AuditRow, VERB_CLOSE, VERB_OPEN};
    use crate::gateway::config::tests::{CHILD, run_child_test};
    use crate::gateway::config::{GatewayArgs, GatewayFile, LiveSettings, parse_file};

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

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: GatewayArgs,
    }

    fn gateway_config(flags: &[&str], yaml: &str) -> GatewayConfig {
        let mut argv = vec![
            "gateway",
            "--oidc-issuer",
            "https://issuer.example",
            "--oidc-client-id",
            "nodeshell",
        ];
        argv.extend_from_slice(flags);
        let cli = Cli::try_parse_from(argv).expect("flags");
        GatewayConfig::resolve(&cli.args, parse_file(yaml).expect("yaml")).expect("config")
    }

    fn client() -> Client {
        Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap()
    }

    #[tokio::test]
    async fn defaults_match_the_live_side() {
        let config = GatewayConfig::resolve(
            &Cli::try_parse_from([
                "gateway",
                "--oidc-issuer",
                "https://issuer.example",
                "--oidc-client-id",
                "nodeshell",
            ])
            .unwrap()
            .args,
            GatewayFile::default(),
        )
        .unwrap();
        let ours = live_config(&config, client(), AuditSink::capture());
        let theirs = LiveConfig::new(
            client(),
            "ns",
            "pod",
            config.aws.clone(),
            "c",
            AuditSink::capture(),
        );
        assert_eq!(ours.reattach_grace, theirs.reattach_grace);
        assert_eq!(ours.heartbeat_interval, theirs.heartbeat_interval);
        assert_eq!(ours.status_throttle, theirs.status_throttle);
        assert_eq!(
            ours.transcript_flush_interval,
            theirs.transcript_flush_interval
        );
        assert_eq!(ours.replay_buffer_bytes, theirs.replay_buffer_bytes);
        assert_eq!(ours.shutdown_timeout, theirs.shutdown_timeout);
        assert_eq!(config.live, LiveSettings::default());
    }

    #[tokio::test]
    async fn file_and_flags_reach_the_live_config() {
        let config = gateway_config(
            &[
                "--heartbeat-interval",
                "4s",
                "--replay-buffer-bytes",
                "131072",
            ],
            "reattachGraceSeconds: 12\nheartbeatIntervalSeconds: 9\nstatusWriteThrottleSeconds: 2\n\
             transcriptFlushIntervalSeconds: 7\nshutdownTimeoutSeconds: 33\n\
             namespace: audit-ns\nclusterName: prod\n",
        );
        let live = live_config(&config, client(), AuditSink::capture());
        assert_eq!(live.reattach_grace, Duration::from_secs(12));
        assert_eq!(live.heartbeat_interval, Duration::from_secs(4), "flag wins");
        assert_eq!(live.status_throttle, Duration::from_secs(2));
        assert_eq!(live.transcript_flush_interval, Duration::from_secs(7));
        assert_eq!(live.replay_buffer_bytes, 128 * 1024, "flag");
        assert_eq!(live.shutdown_timeout, Duration::from_secs(33));
        assert_eq!(live.namespace, "audit-ns");
        assert_eq!(live.cluster_name, "prod");
        assert_eq!(live.pod_name, config.pod_name);
    }

    /// The child half of [`environment_reaches_the_live_config`].
    #[tokio::test]
    async fn environment_child() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        let config = gateway_config(&[], "");
        let live = live_config(&config, client(), AuditSink::capture());
        assert_eq!(live.reattach_grace, Duration::from_secs(75));
        assert_eq!(live.heartbeat_interval, Duration::from_millis(1500));
        assert_eq!(live.status_throttle, Duration::from_millis(200));
        assert_eq!(live.transcript_flush_interval, Duration::from_secs(2));
        assert_eq!(live.replay_buffer_bytes, 512 * 1024);
        assert_eq!(live.shutdown_timeout, Duration::from_secs(45));
    }

    #[test]
    fn environment_reaches_the_live_config() {
        run_child_test(
            "gateway::live_adapter::tests::environment_child",
            &[
                ("NODESHELL_GATEWAY_REATTACH_GRACE", "75s"),
                ("NODESHELL_GATEWAY_HEARTBEAT_INTERVAL", "1500ms"),
                ("NODESHELL_GATEWAY_STATUS_WRITE_THROTTLE", "200ms"),
                ("NODESHELL_GATEWAY_TRANSCRIPT_FLUSH_INTERVAL", "2s"),
                ("NODESHELL_GATEWAY_REPLAY_BUFFER_BYTES", "524288"),
                ("NODESHELL_GATEWAY_SHUTDOWN_TIMEOUT", "45s"),
            ],
        );
    }

    fn row(event: &'static str, id: &str) -> AuditRow {
        AuditRow {
            id: id.into(),
            event,
            time: "2026-11-23T07:00:00Z".into(),
            actor: AuditActor {
                sub: "alice".into(),
                email: None,
                groups: vec!["sre".into()],
                tier: "engineer".into(),
            },
            cluster: "dev".into(),
            session: "shell-1".into(),
            node: "n1".into(),
            instance_id: "i-0123456789abcdef0".into(),
            session_id: Some("nodeshell-alice-0a1b".into()),
            role_session_name: "nodeshell-alice".into(),
            assumed_role_arn: None,
            region: "eu-west-1".into(),
            started_at: Some("2026-11-23T06:59:00Z".into()),
            ended_at: None,
            duration_ms: None,
            exit_code: None,
            outcome: "success",
            reason: None,
            message: None,
            bytes_in: None,
            bytes_out: None,
            transcript_ref: None,
            transcript_bytes: None,
            transcript_truncated: None,
            sha256: None,
        }
    }

    /// The child half of [`audit_file_gets_the_lines_stdout_gets`]: writes two rows through
    /// the sink the gateway builds from its configuration.
    #[tokio::test]
    async fn audit_child() {
        let Some(path) = std::env::var_os("NODESHELL_TEST_AUDIT_FILE") else {
            return;
        };
        let config = gateway_config(&["--audit-file", path.to_str().unwrap()], "");
        let live = live_config(&config, client(), audit_sink(&config).unwrap());
        live.audit.emit(&row(VERB_OPEN, "row-1")).unwrap();
        live.audit.emit(&row(VERB_CLOSE, "row-2")).unwrap();
    }

    #[test]
    fn audit_file_gets_the_lines_stdout_gets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        // Rows already in the file stay: the sink appends.
        std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
        let stdout = run_child_test(
            "gateway::live_adapter::tests::audit_child",
            &[("NODESHELL_TEST_AUDIT_FILE", path.to_str().unwrap())],
        );
        // libtest prints `test <name> ... ` before the test's own output, on the same line.
        let on_stdout: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.find("{\"id\":").map(|at| &l[at..]))
            .collect();
        let expected = [
            row(VERB_OPEN, "row-1").to_json_line(),
            row(VERB_CLOSE, "row-2").to_json_line(),
        ];
        assert_eq!(on_stdout, expected, "stdout:\n{stdout}");
        let file = std::fs::read_to_string(&path).unwrap();
        let in_file: Vec<&str> = file.lines().collect();
        assert_eq!(in_file[0], "{\"earlier\":true}");
        assert_eq!(
            in_file[1..],
            on_stdout[..],
            "the file has the rows stdout has"
        );
        assert!(file.ends_with('\n'));
    }

    #[test]
    fn an_audit_file_that_cannot_be_opened_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("audit.jsonl");
        let config = gateway_config(&["--audit-file", missing.to_str().unwrap()], "");
        assert!(audit_sink(&config).is_err());
    }
}

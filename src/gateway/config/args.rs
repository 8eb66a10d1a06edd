//! The flags of `nodeshell gateway`, each also read from the environment: what differs per
//! deployment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::duration::parse_duration;

/// Flags of `nodeshell gateway`. Each can also be set from the environment variable named.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GatewayArgs {
    /// YAML configuration file (tiers, origins, timeouts; see config/gateway.example.yaml).
    #[arg(long, env = "NODESHELL_GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to serve the API, /healthz, /readyz and /metrics on (port 0 picks a free
    /// port; the bound address is printed as `listening on http://…`). Default 0.0.0.0:8443.
    #[arg(long, env = "NODESHELL_GATEWAY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// OIDC issuer URL (`iss` of accepted id_tokens, exactly).
    #[arg(long, env = "NODESHELL_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// OIDC client id: the `aud` accepted id_tokens must carry.
    #[arg(long, env = "NODESHELL_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// Name of the claim that lists the caller's groups (default `groups`).
    #[arg(long, env = "NODESHELL_OIDC_GROUPS_CLAIM")]
    pub groups_claim: Option<String>,
    /// Kubeconfig file (default: KUBECONFIG, then the in-cluster service account).
    #[arg(long, env = "NODESHELL_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of transcript Secrets.
    #[arg(long, env = "NODESHELL_NAMESPACE")]
    pub namespace: Option<String>,
    /// This replica's pod name, written into `status.gateway.pod`.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Cluster name written into audit rows.
    #[arg(long, env = "NODESHELL_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Region used when neither the policy nor the node's zone gives one.
    #[arg(long, env = "NODESHELL_AWS_REGION")]
    pub region: Option<String>,
    /// STS endpoint override (the simulator, a VPC endpoint).
    #[arg(long, env = "NODESHELL_STS_ENDPOINT")]
    pub sts_endpoint: Option<String>,
    /// SSM endpoint override (the simulator, a VPC endpoint).
    #[arg(long, env = "NODESHELL_SSM_ENDPOINT")]
    pub ssm_endpoint: Option<String>,
    /// Allowed WebSocket origins, comma-separated (adds to the file's `allowedOrigins`).
    #[arg(long, env = "NODESHELL_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// How long a session whose browser went away waits for it to reattach before ending
    /// with ClientDisconnected (`30s`; also `500ms`, `2m`).
    #[arg(long, env = "NODESHELL_GATEWAY_REATTACH_GRACE", value_parser = parse_duration)]
    pub reattach_grace: Option<Duration>,
    /// How often each session writes `status.gateway.heartbeatAt` (`5s`). Must stay well
    /// below the controller's `--heartbeat-timeout` (default 1m).
    #[arg(long, env = "NODESHELL_GATEWAY_HEARTBEAT_INTERVAL", value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// Least time between two status writes of one session, also the wait between retries
    /// of a failed write (`1s`).
    #[arg(long, env = "NODESHELL_GATEWAY_STATUS_WRITE_THROTTLE", value_parser = parse_duration)]
    pub status_write_throttle: Option<Duration>,
    /// How often the transcript's last chunk is stored; a crash loses at most this much of
    /// the recording (`5s`).
    #[arg(long, env = "NODESHELL_GATEWAY_TRANSCRIPT_FLUSH_INTERVAL", value_parser = parse_duration)]
    pub transcript_flush_interval: Option<Duration>,
    /// Output kept per session for a reattaching browser, in bytes (262144).
    #[arg(long, env = "NODESHELL_GATEWAY_REPLAY_BUFFER_BYTES")]
    pub replay_buffer_bytes: Option<u64>,
    /// Most output a browser may hold unacknowledged (sent, no `ack` frame yet), in bytes
    /// (262144, at most the replay buffer); beyond it the session stops reading the shell.
    #[arg(long, env = "NODESHELL_GATEWAY_BROWSER_WINDOW_BYTES")]
    pub browser_window_bytes: Option<u64>,
    /// Longest wait on SIGTERM for the live sessions to close (`20s`); keep the pod's
    /// terminationGracePeriodSeconds above it.
    #[arg(long, env = "NODESHELL_GATEWAY_SHUTDOWN_TIMEOUT", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// File the audit rows are also appended to, one JSON line each (they always go to
    /// stdout).
    #[arg(long, env = "NODESHELL_GATEWAY_AUDIT_FILE")]
    pub audit_file: Option<PathBuf>,
}

//! The flags of `nodeshell gateway`, each also read from the environment: what differs per
//! deployment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::login::{ClientSecret, parse_client_secret};
use crate::duration::parse_duration;

/// Flags of `nodeshell gateway`. Each can also be set from the environment variable named.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GatewayArgs {
    /// YAML configuration file (tiers, origins, timeouts; see config/gateway.example.yaml).
    #[arg(long, env = "NODESHELL_GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to serve the API and the web console on (port 0 picks a free port; the bound
    /// address is printed as `listening on http://…`). Default 0.0.0.0:8443.
    #[arg(long, env = "NODESHELL_GATEWAY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address to serve /metrics, /healthz and /readyz on, apart from the API so the Ingress
    /// never routes them (port 0 picks a free port; printed as `admin on http://…`).
    /// Default 127.0.0.1:9090, as the controller's; the chart sets 0.0.0.0:9090.
    #[arg(long, env = "NODESHELL_GATEWAY_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// OIDC issuer URL (`iss` of accepted id_tokens, exactly).
    #[arg(long, env = "NODESHELL_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// PEM file of CA certificates to trust for the issuer besides the system's (an issuer
    /// whose https certificate comes from an internal CA).
    #[arg(long, env = "NODESHELL_OIDC_CA_FILE")]
    pub oidc_ca_file: Option<PathBuf>,
    /// OIDC client id: the `aud` accepted id_tokens must carry.
    #[arg(long, env = "NODESHELL_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// File holding the OIDC client secret (a mounted Kubernetes Secret): the gateway is then
    /// a confidential client and the console signs in through it.
    #[arg(long, env = "NODESHELL_OIDC_CLIENT_SECRET_FILE")]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// The OIDC client secret itself, from the environment only (never a flag's value,
    /// which `ps` shows); wins over the file.
    #[arg(long = "oidc-client-secret", env = "NODESHELL_OIDC_CLIENT_SECRET", hide = true,
          hide_env_values = true, value_parser = parse_client_secret)]
    pub oidc_client_secret: Option<ClientSecret>,
    /// Where the issuer sends the browser back after sign-in:
    /// `https://<gateway host>/auth/callback` (registered at the issuer).
    #[arg(long, env = "NODESHELL_OIDC_REDIRECT_URL")]
    pub oidc_redirect_url: Option<String>,
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
    /// KMS endpoint override (the simulator, a VPC endpoint), for KMS-encrypted sessions.
    #[arg(long, env = "NODESHELL_KMS_ENDPOINT")]
    pub kms_endpoint: Option<String>,
    /// S3 endpoint override for the policies' transcript sink (an S3-compatible server, a VPC
    /// endpoint); path-style addressing when set.
    #[arg(long, env = "NODESHELL_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Allowed WebSocket origins, comma-separated (adds to the file's `allowedOrigins`).
    #[arg(long, env = "NODESHELL_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// How long a session whose browser went away waits for it to reattach before ending
    /// with ClientDisconnected (`30s`; also `500ms`, `2m`).
    #[arg(long, env = "NODESHELL_GATEWAY_REATTACH_GRACE", value_parser = parse_duration)]
    pub reattach_grace: Option<Duration>,
    /// How often each session looks at whether its status needs a write (`5s`, at most
    /// `30s`): activity is written at most once a minute.
    #[arg(long, env = "NODESHELL_GATEWAY_HEARTBEAT_INTERVAL", value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// `leaseDurationSeconds` of this pod's coordination Lease (`30s`, at least `3s`),
    /// renewed every third of it; the controller closes the pod's sessions as GatewayLost
    /// when it is not renewed within it.
    #[arg(long, env = "NODESHELL_GATEWAY_LEASE_DURATION", value_parser = parse_duration)]
    pub lease_duration: Option<Duration>,
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

//! The gateway's YAML file (a ConfigMap in the chart): tiers, origins, timeouts. Every key
//! is optional.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::http::HttpFile;

/// The YAML file. Every key is optional; see `config/gateway.example.yaml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayFile {
    /// Listen address of the API and the web console.
    pub listen: Option<SocketAddr>,
    /// Listen address of `/metrics`, `/healthz` and `/readyz` (never routed by the Ingress).
    pub admin_listen: Option<SocketAddr>,
    /// The API listener's limits.
    pub http: HttpFile,
    /// Cluster name for audit rows.
    pub cluster_name: Option<String>,
    /// Namespace of transcript Secrets.
    pub namespace: Option<String>,
    /// Namespace of this pod's liveness Lease (where the controller watches them); default
    /// `namespace`.
    pub lease_namespace: Option<String>,
    /// OIDC settings.
    pub oidc: OidcFile,
    /// Declared tier order, highest first: a caller whose groups map to several tiers gets
    /// the first of them in this order.
    pub tier_order: Vec<String>,
    /// Group → tier.
    pub group_tiers: BTreeMap<String, String>,
    /// Tiers that may list, end and read the transcripts of everyone's sessions.
    pub admin_tiers: Vec<String>,
    /// Origins allowed to open the attach WebSocket (`https://console.example.com`).
    pub allowed_origins: Vec<String>,
    /// Accept attach requests without an `Origin` header (command-line clients; browsers
    /// always send one).
    pub allow_missing_origin: Option<bool>,
    /// Prefix of role session names (`<prefix>-<sanitised sub>`).
    pub role_session_prefix: Option<String>,
    /// AWS region and endpoint overrides.
    pub aws: AwsFile,
    /// Lifetime of attach tickets, in seconds.
    pub ticket_ttl_seconds: Option<u64>,
    /// How long `POST …/shell` waits for the controller's decision, in seconds.
    pub admission_timeout_seconds: Option<u64>,
    /// Opens (`POST …/shell`) one person may make per minute on one replica, as a burst that
    /// refills at this rate.
    pub opens_per_minute: Option<u32>,
    /// How long a session waits for its browser to reattach, in seconds.
    pub reattach_grace_seconds: Option<u64>,
    /// How often each session looks at whether its status needs a write, in seconds.
    pub heartbeat_interval_seconds: Option<u64>,
    /// `leaseDurationSeconds` of this pod's Lease, in seconds.
    pub lease_duration_seconds: Option<u64>,
    /// Least time between two status writes of one session, in seconds.
    pub status_write_throttle_seconds: Option<u64>,
    /// How often the transcript's last chunk is stored, in seconds.
    pub transcript_flush_interval_seconds: Option<u64>,
    /// Output kept per session for a reattaching browser, in bytes.
    pub replay_buffer_bytes: Option<u64>,
    /// Most output a browser may hold unacknowledged, in bytes.
    pub browser_window_bytes: Option<u64>,
    /// Longest wait on shutdown for the live sessions to close, in seconds.
    pub shutdown_timeout_seconds: Option<u64>,
    /// File the audit rows are also appended to.
    pub audit_file: Option<PathBuf>,
    /// How often a live shell's person is checked again at the issuer, in seconds
    /// (console sessions only; default 300).
    pub identity_check_seconds: Option<u64>,
    /// A console session unused this long ends, in seconds (default 3600).
    pub console_session_idle_seconds: Option<u64>,
    /// A console session ends this long after sign-in, in seconds (default 43200).
    pub console_session_max_seconds: Option<u64>,
}

/// OIDC part of the file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcFile {
    /// Issuer URL.
    pub issuer_url: Option<String>,
    /// Client id (expected `aud`).
    pub client_id: Option<String>,
    /// Groups claim name.
    pub groups_claim: Option<String>,
    /// Clock-skew leeway for `exp` and `nbf`, in seconds.
    pub leeway_seconds: Option<u64>,
    /// How often the JWKS is refreshed even when nothing asks, in seconds.
    pub jwks_refresh_seconds: Option<u64>,
    /// Least time between two refetches triggered by unknown key ids, in seconds (at least 5).
    pub jwks_min_refetch_seconds: Option<u64>,
    /// Claim naming the person to auditors (`spec.user.name`, the user label, Events);
    /// default `sub`.
    pub identity_claim: Option<String>,
    /// File holding the confidential client's secret (a mounted Kubernetes Secret); turns
    /// on the console's sign-in through the gateway.
    pub client_secret_file: Option<PathBuf>,
    /// Where the issuer sends the browser back: `https://<gateway host>/auth/callback`.
    pub redirect_url: Option<String>,
    /// PEM file of CA certificates to trust for the issuer besides the system's (a mounted
    /// ConfigMap): for an issuer whose https certificate comes from an internal CA.
    pub ca_file: Option<PathBuf>,
}

/// AWS part of the file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsFile {
    /// Fallback region.
    pub region: Option<String>,
    /// STS endpoint override.
    pub sts_endpoint: Option<String>,
    /// SSM endpoint override.
    pub ssm_endpoint: Option<String>,
    /// KMS endpoint override.
    pub kms_endpoint: Option<String>,
    /// S3 endpoint override for the transcript sink (path-style addressing when set).
    pub s3_endpoint: Option<String>,
}

/// Parses the YAML file.
pub fn parse_file(text: &str) -> Result<GatewayFile, String> {
    if text.trim().is_empty() {
        return Ok(GatewayFile::default());
    }
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

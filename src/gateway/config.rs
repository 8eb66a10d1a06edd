//! The gateway's settings: command-line flags (each also read from the environment) for what
//! differs per deployment, and a YAML file for the rest (tiers, origins, timeouts).
//! Flags win over the file; the file wins over the defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::aws::AwsEndpoints;
use crate::duration::parse_duration;

/// Errors while assembling the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read gateway config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid YAML for [`GatewayFile`].
    #[error("invalid gateway config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A setting is missing or contradicts another.
    #[error("gateway config: {0}")]
    Invalid(String),
}

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
    /// Longest wait on SIGTERM for the live sessions to close (`20s`); keep the pod's
    /// terminationGracePeriodSeconds above it.
    #[arg(long, env = "NODESHELL_GATEWAY_SHUTDOWN_TIMEOUT", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// File the audit rows are also appended to, one JSON line each (they always go to
    /// stdout).
    #[arg(long, env = "NODESHELL_GATEWAY_AUDIT_FILE")]
    pub audit_file: Option<PathBuf>,
}

/// The YAML file. Every key is optional; see `config/gateway.example.yaml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayFile {
    /// Listen address.
    pub listen: Option<SocketAddr>,
    /// Cluster name for audit rows.
    pub cluster_name: Option<String>,
    /// Namespace of transcript Secrets.
    pub namespace: Option<String>,
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
    /// How long a session waits for its browser to reattach, in seconds.
    pub reattach_grace_seconds: Option<u64>,
    /// How often each session writes its heartbeat, in seconds.
    pub heartbeat_interval_seconds: Option<u64>,
    /// Least time between two status writes of one session, in seconds.
    pub status_write_throttle_seconds: Option<u64>,
    /// How often the transcript's last chunk is stored, in seconds.
    pub transcript_flush_interval_seconds: Option<u64>,
    /// Output kept per session for a reattaching browser, in bytes.
    pub replay_buffer_bytes: Option<u64>,
    /// Longest wait on shutdown for the live sessions to close, in seconds.
    pub shutdown_timeout_seconds: Option<u64>,
    /// File the audit rows are also appended to.
    pub audit_file: Option<PathBuf>,
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
    /// Least time between two refetches triggered by unknown key ids, in seconds.
    pub jwks_min_refetch_seconds: Option<u64>,
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
}

/// Maps OIDC groups to tiers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierMap {
    /// Declared order, highest first.
    pub order: Vec<String>,
    /// Group → tier.
    pub groups: BTreeMap<String, String>,
    /// Tiers with admin rights over others' sessions.
    pub admin: Vec<String>,
}

// === impl TierMap ===

impl TierMap {
    /// The caller's tier: among the tiers their groups map to, the first in declared order.
    pub fn tier_for(&self, groups: &[String]) -> Option<String> {
        let mapped: Vec<&String> = groups.iter().filter_map(|g| self.groups.get(g)).collect();
        self.order
            .iter()
            .find(|tier| mapped.contains(tier))
            .cloned()
    }

    /// Whether a tier has admin rights.
    pub fn is_admin(&self, tier: Option<&str>) -> bool {
        tier.is_some_and(|t| self.admin.iter().any(|a| a == t))
    }
}

/// OIDC settings after defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    /// Issuer URL, compared to `iss` exactly.
    pub issuer_url: String,
    /// Client id, the only accepted `aud`.
    pub client_id: String,
    /// Claim holding the groups.
    pub groups_claim: String,
    /// Clock-skew leeway.
    pub leeway: Duration,
    /// Periodic JWKS refresh.
    pub jwks_refresh: Duration,
    /// Floor between refetches on unknown key ids.
    pub jwks_min_refetch: Duration,
}

/// The whole resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Cluster name for audit rows.
    pub cluster_name: String,
    /// Namespace of transcript Secrets.
    pub namespace: String,
    /// This replica's pod name.
    pub pod_name: String,
    /// Kubeconfig file, if not in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// OIDC settings.
    pub oidc: OidcSettings,
    /// Group → tier mapping.
    pub tiers: TierMap,
    /// Allowed WebSocket origins.
    pub allowed_origins: Vec<String>,
    /// Whether an attach without `Origin` is accepted.
    pub allow_missing_origin: bool,
    /// Role session name prefix.
    pub role_session_prefix: String,
    /// Fallback region and endpoint overrides (region may be empty).
    pub aws: AwsEndpoints,
    /// Ticket lifetime.
    pub ticket_ttl: Duration,
    /// Admission wait.
    pub admission_timeout: Duration,
    /// Settings of the live side (running shells).
    pub live: LiveSettings,
}

/// The live side's settings after defaults, the one home of their defaults and checks;
/// [`LiveConfig`](crate::gateway::live::LiveConfig) carries them as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSettings {
    /// How long a session waits for its browser to reattach.
    pub reattach_grace: Duration,
    /// How often `status.gateway.heartbeatAt` is written.
    pub heartbeat_interval: Duration,
    /// Least time between two status writes of a session.
    pub status_throttle: Duration,
    /// How often the transcript's last chunk is stored.
    pub transcript_flush_interval: Duration,
    /// Output kept per session for reattaching browsers.
    pub replay_buffer_bytes: usize,
    /// Longest wait on shutdown for the live sessions to close.
    pub shutdown_timeout: Duration,
    /// File audit rows are appended to, besides stdout.
    pub audit_file: Option<PathBuf>,
}

impl Default for LiveSettings {
    /// The defaults of design §4.
    fn default() -> Self {
        Self {
            reattach_grace: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            status_throttle: Duration::from_secs(1),
            transcript_flush_interval: Duration::from_secs(5),
            replay_buffer_bytes: 256 * 1024,
            shutdown_timeout: Duration::from_secs(20),
            audit_file: None,
        }
    }
}

/// The controller's default `--heartbeat-timeout`: a session whose heartbeat is older is
/// closed as GatewayLost, so the gateway's interval must stay below it.
pub const CONTROLLER_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(60);

/// Smallest replay buffer accepted: one output frame to the browser (16 KiB), below which a
/// reattach could not even be sent the frame it missed.
pub const MIN_REPLAY_BUFFER_BYTES: u64 = 16 * 1024;

/// Shortest shutdown timeout that does not warn: a session's close takes up to 3 s for the
/// channel's last output, then the transcript flush and the Closed write.
const SHUTDOWN_TIMEOUT_WARN_BELOW: Duration = Duration::from_secs(5);

// === impl LiveSettings ===

impl LiveSettings {
    /// Flags over the file over the defaults, then the checks that refuse a setting the live
    /// side cannot work with.
    fn resolve(args: &GatewayArgs, file: &GatewayFile) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let pick = |flag: Option<Duration>, seconds: Option<u64>, default: Duration| {
            flag.or(seconds.map(Duration::from_secs)).unwrap_or(default)
        };
        let replay = args
            .replay_buffer_bytes
            .or(file.replay_buffer_bytes)
            .map_or(Ok(defaults.replay_buffer_bytes), |b| {
                if b < MIN_REPLAY_BUFFER_BYTES {
                    return Err(ConfigError::Invalid(format!(
                        "replay buffer of {b} bytes is smaller than one output frame ({MIN_REPLAY_BUFFER_BYTES} bytes): set --replay-buffer-bytes (NODESHELL_GATEWAY_REPLAY_BUFFER_BYTES) or replayBufferBytes to at least {MIN_REPLAY_BUFFER_BYTES}, or leave it unset for 262144"
                    )));
                }
                usize::try_from(b).map_err(|_| {
                    ConfigError::Invalid(format!(
                        "replay buffer of {b} bytes does not fit in memory; set --replay-buffer-bytes or replayBufferBytes lower (default 262144)"
                    ))
                })
            })?;
        let settings = Self {
            reattach_grace: pick(
                args.reattach_grace,
                file.reattach_grace_seconds,
                defaults.reattach_grace,
            ),
            heartbeat_interval: pick(
                args.heartbeat_interval,
                file.heartbeat_interval_seconds,
                defaults.heartbeat_interval,
            ),
            status_throttle: pick(
                args.status_write_throttle,
                file.status_write_throttle_seconds,
                defaults.status_throttle,
            ),
            transcript_flush_interval: pick(
                args.transcript_flush_interval,
                file.transcript_flush_interval_seconds,
                defaults.transcript_flush_interval,
            ),
            replay_buffer_bytes: replay,
            shutdown_timeout: pick(
                args.shutdown_timeout,
                file.shutdown_timeout_seconds,
                defaults.shutdown_timeout,
            ),
            audit_file: args
                .audit_file
                .clone()
                .or_else(|| file.audit_file.clone())
                .filter(|p| !p.as_os_str().is_empty()),
        };
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let durations = [
            (
                self.reattach_grace,
                "--reattach-grace (NODESHELL_GATEWAY_REATTACH_GRACE) or reattachGraceSeconds",
                "30s",
            ),
            (
                self.heartbeat_interval,
                "--heartbeat-interval (NODESHELL_GATEWAY_HEARTBEAT_INTERVAL) or heartbeatIntervalSeconds",
                "5s",
            ),
            (
                self.status_throttle,
                "--status-write-throttle (NODESHELL_GATEWAY_STATUS_WRITE_THROTTLE) or statusWriteThrottleSeconds",
                "1s",
            ),
            (
                self.transcript_flush_interval,
                "--transcript-flush-interval (NODESHELL_GATEWAY_TRANSCRIPT_FLUSH_INTERVAL) or transcriptFlushIntervalSeconds",
                "5s",
            ),
            (
                self.shutdown_timeout,
                "--shutdown-timeout (NODESHELL_GATEWAY_SHUTDOWN_TIMEOUT) or shutdownTimeoutSeconds",
                "20s",
            ),
        ];
        if let Some((_, setting, default)) = durations.iter().find(|(d, _, _)| d.is_zero()) {
            return Err(ConfigError::Invalid(format!(
                "{setting} is zero: set a positive duration, or leave it unset for the default {default}"
            )));
        }
        if self.heartbeat_interval >= CONTROLLER_HEARTBEAT_TIMEOUT {
            return Err(ConfigError::Invalid(format!(
                "heartbeat interval {:?} is not shorter than the controller's default --heartbeat-timeout ({:?}), so the controller would close every session as GatewayLost: set --heartbeat-interval (NODESHELL_GATEWAY_HEARTBEAT_INTERVAL) or heartbeatIntervalSeconds well below the controller's timeout (default 5s)",
                self.heartbeat_interval, CONTROLLER_HEARTBEAT_TIMEOUT
            )));
        }
        if self.status_throttle > self.heartbeat_interval {
            return Err(ConfigError::Invalid(format!(
                "status write throttle {:?} is longer than the heartbeat interval {:?}, so heartbeats could not be written that often: lower --status-write-throttle (statusWriteThrottleSeconds) or raise --heartbeat-interval (heartbeatIntervalSeconds)",
                self.status_throttle, self.heartbeat_interval
            )));
        }
        Ok(())
    }

    /// Settings that work but risk losing sessions; the gateway logs each at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        // Fewer than three heartbeats per timeout leave no room for one slow or failed write.
        if self.heartbeat_interval * 3 > CONTROLLER_HEARTBEAT_TIMEOUT {
            warnings.push(format!(
                "heartbeat interval {:?} fits fewer than three heartbeats in the controller's default --heartbeat-timeout ({:?}); one slow status write can get sessions closed as GatewayLost: lower --heartbeat-interval, or run the controller with --heartbeat-timeout of at least three times it",
                self.heartbeat_interval, CONTROLLER_HEARTBEAT_TIMEOUT
            ));
        }
        if self.shutdown_timeout < SHUTDOWN_TIMEOUT_WARN_BELOW {
            warnings.push(format!(
                "shutdown timeout {:?} may cut sessions before their transcript and Closed status are written (the close waits up to 3 s for the last output); raise --shutdown-timeout to at least {:?}",
                self.shutdown_timeout, SHUTDOWN_TIMEOUT_WARN_BELOW
            ));
        }
        warnings
    }
}

/// Default listen address: every interface, the chart's container port.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

// === impl GatewayConfig ===

impl GatewayConfig {
    /// Reads the file named by `--config` (if any) and applies the flags over it.
    pub fn load(args: &GatewayArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                parse_file(&text).map_err(|message| ConfigError::Parse {
                    path: path.clone(),
                    message,
                })?
            }
            None => GatewayFile::default(),
        };
        Self::resolve(args, file)
    }

    /// Applies flags over a parsed file and checks the result.
    pub fn resolve(args: &GatewayArgs, file: GatewayFile) -> Result<Self, ConfigError> {
        let default_listen: SocketAddr = DEFAULT_LISTEN
            .parse()
            .map_err(|_| ConfigError::Invalid("bad built-in listen address".into()))?;
        let live = LiveSettings::resolve(args, &file)?;
        let issuer_url = non_empty(args.oidc_issuer.clone())
            .or(non_empty(file.oidc.issuer_url))
            .ok_or_else(|| {
                ConfigError::Invalid(
                    "no OIDC issuer: set --oidc-issuer (NODESHELL_OIDC_ISSUER) or oidc.issuerUrl"
                        .into(),
                )
            })?;
        let client_id = non_empty(args.oidc_client_id.clone())
            .or(non_empty(file.oidc.client_id))
            .ok_or_else(|| {
                ConfigError::Invalid(
                    "no OIDC client id: set --oidc-client-id (NODESHELL_OIDC_CLIENT_ID) or oidc.clientId"
                        .into(),
                )
            })?;
        let tiers = TierMap {
            order: file.tier_order,
            groups: file.group_tiers,
            admin: file.admin_tiers,
        };
        if let Some((group, tier)) = tiers.groups.iter().find(|(_, t)| !tiers.order.contains(t)) {
            return Err(ConfigError::Invalid(format!(
                "groupTiers maps {group:?} to tier {tier:?}, which tierOrder does not list"
            )));
        }
        let mut allowed_origins = file.allowed_origins;
        allowed_origins.extend(
            args.allowed_origins
                .iter()
                .filter(|o| !o.is_empty())
                .cloned(),
        );
        let allowed_origins = allowed_origins
            .into_iter()
            .map(|o| o.trim_end_matches('/').to_string())
            .collect();
        let prefix = file
            .role_session_prefix
            .unwrap_or_else(|| "nodeshell".to_string());
        if prefix.len() > 32 {
            return Err(ConfigError::Invalid(format!(
                "roleSessionPrefix {prefix:?} is longer than 32 characters; the role session name must leave room for the user"
            )));
        }
        let ticket_ttl = Duration::from_secs(file.ticket_ttl_seconds.unwrap_or(30));
        let admission_timeout = Duration::from_secs(file.admission_timeout_seconds.unwrap_or(10));
        if ticket_ttl.is_zero() || admission_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "ticketTtlSeconds and admissionTimeoutSeconds must be positive".into(),
            ));
        }
        Ok(Self {
            listen: args.listen.or(file.listen).unwrap_or(default_listen),
            cluster_name: non_empty(args.cluster_name.clone())
                .or(non_empty(file.cluster_name))
                .unwrap_or_else(|| "kubernetes".to_string()),
            namespace: non_empty(args.namespace.clone())
                .or(non_empty(file.namespace))
                .unwrap_or_else(|| "nodeshell-system".to_string()),
            pod_name: non_empty(args.pod_name.clone()).unwrap_or_else(|| {
                format!(
                    "nodeshell-gateway-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                )
            }),
            kubeconfig: args.kubeconfig.clone(),
            oidc: OidcSettings {
                issuer_url,
                client_id,
                groups_claim: non_empty(args.groups_claim.clone())
                    .or(non_empty(file.oidc.groups_claim))
                    .unwrap_or_else(|| "groups".to_string()),
                leeway: Duration::from_secs(file.oidc.leeway_seconds.unwrap_or(30)),
                jwks_refresh: Duration::from_secs(
                    file.oidc.jwks_refresh_seconds.unwrap_or(300).max(10),
                ),
                jwks_min_refetch: Duration::from_secs(
                    file.oidc.jwks_min_refetch_seconds.unwrap_or(10),
                ),
            },
            tiers,
            allowed_origins,
            allow_missing_origin: file.allow_missing_origin.unwrap_or(true),
            role_session_prefix: prefix,
            aws: AwsEndpoints {
                region: non_empty(args.region.clone())
                    .or(non_empty(file.aws.region))
                    .unwrap_or_default(),
                sts_url: non_empty(args.sts_endpoint.clone()).or(non_empty(file.aws.sts_endpoint)),
                ssm_url: non_empty(args.ssm_endpoint.clone()).or(non_empty(file.aws.ssm_endpoint)),
            },
            ticket_ttl,
            admission_timeout,
            live,
        })
    }

    /// Whether an attach request with this `Origin` header (or none) may proceed.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => self.allow_missing_origin,
            Some(o) => {
                let o = o.trim_end_matches('/');
                self.allowed_origins.iter().any(|a| a == "*" || a == o)
            }
        }
    }
}

/// Parses the YAML file.
pub fn parse_file(text: &str) -> Result<GatewayFile, String> {
    if text.trim().is_empty() {
        return Ok(GatewayFile::default());
    }
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    fn args() -> GatewayArgs {
        GatewayArgs {
            oidc_issuer: Some("https://issuer.example".into()),
            oidc_client_id: Some("nodeshell".into()),
            ..GatewayArgs::default()
        }
    }

    #[test]
    fn example_file_parses_and_resolves() {
        let text = include_str!("../../config/gateway.example.yaml");
        let file = parse_file(text).expect("example parses");
        let config = GatewayConfig::resolve(&GatewayArgs::default(), file).expect("resolves");
        assert_eq!(config.oidc.groups_claim, "groups");
        assert_eq!(config.ticket_ttl, Duration::from_secs(30));
        assert_eq!(config.admission_timeout, Duration::from_secs(10));
        assert!(config.tiers.is_admin(Some("admin")));
        assert_eq!(
            config
                .tiers
                .tier_for(&["platform-admins".into(), "sre".into()]),
            Some("admin".into())
        );
        assert!(config.origin_allowed(Some("https://console.example.com")));
        assert_eq!(config.live, LiveSettings::default());
        let with_audit = text.replace("# auditFile:", "auditFile:");
        let config =
            GatewayConfig::resolve(&args(), parse_file(&with_audit).expect("parses")).unwrap();
        assert_eq!(
            config.live.audit_file,
            Some(PathBuf::from("/var/log/nodeshell/audit.jsonl")),
            "the commented auditFile key is a real key"
        );
    }

    #[test]
    fn defaults_and_flags_over_file() {
        let file = parse_file(
            "oidc:\n  issuerUrl: https://file.example\n  clientId: file\nlisten: 127.0.0.1:9000\n",
        )
        .unwrap();
        let config = GatewayConfig::resolve(&args(), file).unwrap();
        assert_eq!(config.oidc.issuer_url, "https://issuer.example");
        assert_eq!(config.oidc.client_id, "nodeshell");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.role_session_prefix, "nodeshell");
        assert_eq!(config.namespace, "nodeshell-system");
        assert_eq!(config.oidc.leeway, Duration::from_secs(30));
        let config = GatewayConfig::resolve(&args(), GatewayFile::default()).unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn missing_issuer_and_unknown_keys_are_errors() {
        let err = GatewayConfig::resolve(&GatewayArgs::default(), GatewayFile::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--oidc-issuer"), "{err}");
        assert!(parse_file("listn: 1").is_err());
    }

    #[test]
    fn group_tiers_must_name_declared_tiers() {
        let file = parse_file("tierOrder: [admin]\ngroupTiers:\n  sre: engineer\n").unwrap();
        let err = GatewayConfig::resolve(&args(), file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("engineer"), "{err}");
    }

    #[test]
    fn tiers_follow_declared_order() {
        let tiers = TierMap {
            order: vec!["admin".into(), "engineer".into(), "viewer".into()],
            groups: BTreeMap::from([
                ("dev".into(), "viewer".into()),
                ("sre".into(), "engineer".into()),
                ("root".into(), "admin".into()),
            ]),
            admin: vec!["admin".into()],
        };
        assert_eq!(
            tiers.tier_for(&["dev".into(), "sre".into()]),
            Some("engineer".into())
        );
        assert_eq!(tiers.tier_for(&["nobody".into()]), None);
        assert!(!tiers.is_admin(Some("engineer")));
        assert!(!tiers.is_admin(None));
    }

    #[test]
    fn flags_parse_and_a_json_file_is_yaml_too() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: GatewayArgs,
        }
        let cli = Cli::try_parse_from([
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--oidc-issuer",
            "http://127.0.0.1:9",
            "--oidc-client-id",
            "c",
            "--allowed-origins",
            "https://a.example,https://b.example",
        ])
        .expect("parse");
        assert_eq!(cli.args.allowed_origins.len(), 2);
        let json = r#"{"listen": "127.0.0.1:0", "clusterName": "e2e",
            "oidc": {"issuerUrl": "http://127.0.0.1:9", "clientId": "nodeshell", "groupsClaim": "groups"},
            "tierOrder": ["admin", "engineer"], "groupTiers": {"sre": "engineer"},
            "adminTiers": ["admin"], "allowedOrigins": ["http://127.0.0.1"],
            "allowMissingOrigin": false, "roleSessionPrefix": "nodeshell",
            "aws": {"region": "", "stsEndpoint": "http://127.0.0.1:1", "ssmEndpoint": "http://127.0.0.1:2"},
            "ticketTtlSeconds": 30, "admissionTimeoutSeconds": 15}"#;
        let config = GatewayConfig::resolve(&cli.args, parse_file(json).expect("json")).unwrap();
        assert_eq!(config.aws.region, "", "an empty region means none");
        assert_eq!(config.aws.sts_url.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(config.admission_timeout, Duration::from_secs(15));
        assert_eq!(config.oidc.client_id, "c", "flags win over the file");
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: GatewayArgs,
    }

    /// Runs one test of this binary in a child process with `envs` set, since the crate
    /// forbids the `unsafe` that setting variables in this process needs (and tests run in
    /// parallel). The child test does its work only when [`CHILD`] is set. Returns the
    /// child's stdout.
    pub(crate) fn run_child_test(test: &str, envs: &[(&str, &str)]) -> String {
        let exe = std::env::current_exe().expect("test binary");
        let output = std::process::Command::new(exe)
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .envs(envs.iter().copied())
            .output()
            .expect("run the child test");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "child test {test} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// Set in the environment of a child test run by [`run_child_test`].
    pub(crate) const CHILD: &str = "NODESHELL_TEST_CHILD";

    #[test]
    fn live_settings_default_to_the_design() {
        let config = GatewayConfig::resolve(&args(), GatewayFile::default()).unwrap();
        assert_eq!(
            config.live,
            LiveSettings {
                reattach_grace: Duration::from_secs(30),
                heartbeat_interval: Duration::from_secs(5),
                status_throttle: Duration::from_secs(1),
                transcript_flush_interval: Duration::from_secs(5),
                replay_buffer_bytes: 256 * 1024,
                shutdown_timeout: Duration::from_secs(20),
                audit_file: None,
            }
        );
        assert!(config.live.warnings().is_empty());
    }

    #[test]
    fn live_settings_from_the_file_and_flags_over_it() {
        use clap::Parser;
        let file = parse_file(
            "reattachGraceSeconds: 45\nheartbeatIntervalSeconds: 10\nstatusWriteThrottleSeconds: 2\n\
             transcriptFlushIntervalSeconds: 15\nreplayBufferBytes: 1048576\n\
             shutdownTimeoutSeconds: 40\nauditFile: /var/log/nodeshell/audit.jsonl\n",
        )
        .unwrap();
        let config = GatewayConfig::resolve(&args(), file.clone()).unwrap();
        assert_eq!(
            config.live,
            LiveSettings {
                reattach_grace: Duration::from_secs(45),
                heartbeat_interval: Duration::from_secs(10),
                status_throttle: Duration::from_secs(2),
                transcript_flush_interval: Duration::from_secs(15),
                replay_buffer_bytes: 1024 * 1024,
                shutdown_timeout: Duration::from_secs(40),
                audit_file: Some("/var/log/nodeshell/audit.jsonl".into()),
            }
        );
        let cli = Cli::try_parse_from([
            "gateway",
            "--oidc-issuer",
            "https://issuer.example",
            "--oidc-client-id",
            "nodeshell",
            "--reattach-grace",
            "2m",
            "--heartbeat-interval",
            "3s",
            "--status-write-throttle",
            "500ms",
            "--transcript-flush-interval",
            "1s",
            "--replay-buffer-bytes",
            "65536",
            "--shutdown-timeout",
            "25s",
            "--audit-file",
            "/tmp/audit.jsonl",
        ])
        .expect("parse");
        let config = GatewayConfig::resolve(&cli.args, file).unwrap();
        assert_eq!(
            config.live,
            LiveSettings {
                reattach_grace: Duration::from_secs(120),
                heartbeat_interval: Duration::from_secs(3),
                status_throttle: Duration::from_millis(500),
                transcript_flush_interval: Duration::from_secs(1),
                replay_buffer_bytes: 64 * 1024,
                shutdown_timeout: Duration::from_secs(25),
                audit_file: Some("/tmp/audit.jsonl".into()),
            },
            "flags win over the file"
        );
        assert!(
            Cli::try_parse_from(["gateway", "--heartbeat-interval", "5 parsecs"]).is_err(),
            "a duration flag takes 500ms, 30s, 5m…"
        );
    }

    /// The child half of [`live_settings_from_the_environment`].
    #[test]
    fn live_settings_env_child() {
        use clap::Parser;
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        let cli = Cli::try_parse_from(["gateway"]).expect("parse");
        let config = GatewayConfig::resolve(&cli.args, GatewayFile::default()).unwrap();
        assert_eq!(
            config.live,
            LiveSettings {
                reattach_grace: Duration::from_secs(90),
                heartbeat_interval: Duration::from_secs(2),
                status_throttle: Duration::from_millis(250),
                transcript_flush_interval: Duration::from_secs(3),
                replay_buffer_bytes: 32 * 1024,
                shutdown_timeout: Duration::from_secs(30),
                audit_file: Some("/tmp/env-audit.jsonl".into()),
            }
        );
    }

    #[test]
    fn live_settings_from_the_environment() {
        run_child_test(
            "gateway::config::tests::live_settings_env_child",
            &[
                ("NODESHELL_OIDC_ISSUER", "https://issuer.example"),
                ("NODESHELL_OIDC_CLIENT_ID", "nodeshell"),
                ("NODESHELL_GATEWAY_REATTACH_GRACE", "90s"),
                ("NODESHELL_GATEWAY_HEARTBEAT_INTERVAL", "2s"),
                ("NODESHELL_GATEWAY_STATUS_WRITE_THROTTLE", "250ms"),
                ("NODESHELL_GATEWAY_TRANSCRIPT_FLUSH_INTERVAL", "3"),
                ("NODESHELL_GATEWAY_REPLAY_BUFFER_BYTES", "32768"),
                ("NODESHELL_GATEWAY_SHUTDOWN_TIMEOUT", "30s"),
                ("NODESHELL_GATEWAY_AUDIT_FILE", "/tmp/env-audit.jsonl"),
            ],
        );
    }

    #[test]
    fn live_settings_that_cannot_work_are_refused() {
        let refused = |yaml: &str| {
            GatewayConfig::resolve(&args(), parse_file(yaml).unwrap())
                .unwrap_err()
                .to_string()
        };
        for (key, flag) in [
            ("reattachGraceSeconds", "--reattach-grace"),
            ("heartbeatIntervalSeconds", "--heartbeat-interval"),
            ("statusWriteThrottleSeconds", "--status-write-throttle"),
            (
                "transcriptFlushIntervalSeconds",
                "--transcript-flush-interval",
            ),
            ("shutdownTimeoutSeconds", "--shutdown-timeout"),
        ] {
            let err = refused(&format!("{key}: 0\n"));
            assert!(
                err.contains(key) && err.contains(flag) && err.contains("is zero"),
                "{err}"
            );
        }
        let err = refused("heartbeatIntervalSeconds: 60\n");
        assert!(
            err.contains("--heartbeat-timeout") && err.contains("GatewayLost"),
            "{err}"
        );
        let err = refused("heartbeatIntervalSeconds: 2\nstatusWriteThrottleSeconds: 3\n");
        assert!(err.contains("lower --status-write-throttle"), "{err}");
        let err = refused("replayBufferBytes: 1024\n");
        assert!(
            err.contains("--replay-buffer-bytes") && err.contains("16384"),
            "{err}"
        );
        let zero_flag = GatewayArgs {
            reattach_grace: Some(Duration::ZERO),
            ..args()
        };
        let err = GatewayConfig::resolve(&zero_flag, GatewayFile::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--reattach-grace"), "{err}");
        let empty_audit = GatewayArgs {
            audit_file: Some(PathBuf::new()),
            ..args()
        };
        let config = GatewayConfig::resolve(&empty_audit, GatewayFile::default()).unwrap();
        assert_eq!(config.live.audit_file, None, "an empty path means none");
    }

    #[test]
    fn risky_live_settings_warn() {
        let config = GatewayConfig::resolve(
            &args(),
            parse_file("heartbeatIntervalSeconds: 30\nshutdownTimeoutSeconds: 2\n").unwrap(),
        )
        .unwrap();
        let warnings = config.live.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("--heartbeat-timeout"), "{warnings:?}");
        assert!(
            warnings[1].contains("raise --shutdown-timeout"),
            "{warnings:?}"
        );
        let config = GatewayConfig::resolve(
            &args(),
            parse_file("heartbeatIntervalSeconds: 20\n").unwrap(),
        )
        .unwrap();
        assert!(config.live.warnings().is_empty());
    }

    #[test]
    fn origins() {
        let file = GatewayFile {
            allowed_origins: vec!["https://a.example/".into()],
            allow_missing_origin: Some(false),
            ..GatewayFile::default()
        };
        let config = GatewayConfig::resolve(&args(), file).unwrap();
        assert!(config.origin_allowed(Some("https://a.example")));
        assert!(!config.origin_allowed(Some("https://evil.example")));
        assert!(!config.origin_allowed(None));
    }
}

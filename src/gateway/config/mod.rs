//! The gateway's settings: command-line flags (each also read from the environment, [`args`])
//! for what differs per deployment, and a YAML file ([`file`](mod@file)) for the rest (tiers, origins,
//! timeouts). Flags win over the file; the file wins over the defaults. The live side's
//! settings and their defaults are [`live`]'s.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::aws::AwsEndpoints;
use crate::gateway::access::tiers::TierMap;

pub mod args;
pub mod file;
pub mod http;
pub mod live;
pub mod login;
pub mod oidc;

pub use args::GatewayArgs;
pub use file::{AwsFile, GatewayFile, OidcFile, parse_file};
pub use http::{HttpFile, HttpLimits, WEBSOCKET_MAX_MESSAGE_BYTES, WEBSOCKET_READ_BUFFER_BYTES};
pub use live::{LiveSettings, MAX_HEARTBEAT_INTERVAL, MIN_LEASE_DURATION, MIN_REPLAY_BUFFER_BYTES};
pub use login::{ClientSecret, IdentityCheck, LoginSettings};

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
    /// Floor between refetches on unknown key ids (at least [`oidc::MIN_JWKS_REFETCH_SECONDS`]).
    pub jwks_min_refetch: Duration,
    /// Claim that names the person to auditors (`spec.user.name`, the user label, Events).
    pub identity_claim: String,
    /// CA certificates trusted for the issuer besides the system's (`oidc.caFile`).
    pub issuer_ca: Option<oidc::IssuerCa>,
}

/// The whole resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Listen address of the API and the web console.
    pub listen: SocketAddr,
    /// Listen address of `/metrics`, `/healthz` and `/readyz`.
    pub admin_listen: SocketAddr,
    /// The API listener's limits.
    pub http: HttpLimits,
    /// Cluster name for audit rows.
    pub cluster_name: String,
    /// Namespace of transcript Secrets.
    pub namespace: String,
    /// Namespace of this pod's liveness Lease (the controller's namespace, where it watches
    /// them); defaults to `namespace`.
    pub lease_namespace: String,
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
    /// Opens one person may make per minute on this replica (`opensPerMinute`).
    pub opens_per_minute: u32,
    /// Settings of the live side (running shells).
    pub live: LiveSettings,
    /// The console's sign-in through the gateway (a confidential client), when configured.
    pub login: Option<LoginSettings>,
    /// How often a live shell's person is checked again.
    pub identity_check: IdentityCheck,
}

/// Default `opensPerMinute`: far more than a person clicks, far fewer than a script tries.
pub const DEFAULT_OPENS_PER_MINUTE: u32 = 20;

/// Default listen address: every interface, the chart's container port.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// Default admin listen address: loopback only, as the controller's `--metrics-addr`; the
/// chart listens on every interface so the kubelet's probes and Prometheus reach it.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

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
        let default_admin: SocketAddr = DEFAULT_ADMIN_LISTEN
            .parse()
            .map_err(|_| ConfigError::Invalid("bad built-in admin listen address".into()))?;
        let live = LiveSettings::resolve(args, &file)?;
        let http = HttpLimits::resolve(&file.http)?;
        let login = login::resolve_login(args, &file)?;
        let identity_check = login::resolve_identity_check(&file)?;
        let issuer_url = non_empty(args.oidc_issuer.clone())
            .or(non_empty(file.oidc.issuer_url))
            .ok_or_else(|| {
                ConfigError::Invalid(
                    "no OIDC issuer: set --oidc-issuer (NODESHELL_OIDC_ISSUER) or oidc.issuerUrl"
                        .into(),
                )
            })?;
        oidc::check_issuer_url(&issuer_url).map_err(ConfigError::Invalid)?;
        let jwks_min_refetch = oidc::jwks_min_refetch(file.oidc.jwks_min_refetch_seconds)
            .map_err(ConfigError::Invalid)?;
        let identity_claim =
            oidc::identity_claim(file.oidc.identity_claim.clone()).map_err(ConfigError::Invalid)?;
        let issuer_ca = match args.oidc_ca_file.clone().or(file.oidc.ca_file.clone()) {
            Some(path) => Some(read_issuer_ca(&path)?),
            None => None,
        };
        let client_id = non_empty(args.oidc_client_id.clone())
            .or(non_empty(file.oidc.client_id))
            .ok_or_else(|| {
                ConfigError::Invalid(
                    "no OIDC client id: set --oidc-client-id (NODESHELL_OIDC_CLIENT_ID) or oidc.clientId"
                        .into(),
                )
            })?;
        let tiers = TierMap::new(file.tier_order, file.group_tiers, file.admin_tiers)
            .map_err(ConfigError::Invalid)?;
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
        let opens_per_minute = file.opens_per_minute.unwrap_or(DEFAULT_OPENS_PER_MINUTE);
        if opens_per_minute == 0 {
            return Err(ConfigError::Invalid(
                "opensPerMinute must be positive (it bounds each person's opens; 0 would refuse them all)".into(),
            ));
        }
        if ticket_ttl.is_zero() || admission_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "ticketTtlSeconds and admissionTimeoutSeconds must be positive".into(),
            ));
        }
        let listen = args.listen.or(file.listen).unwrap_or(default_listen);
        let admin_listen = args
            .admin_listen
            .or(file.admin_listen)
            .unwrap_or(default_admin);
        if listen.port() != 0 && listen == admin_listen {
            return Err(ConfigError::Invalid(format!(
                "the API and the admin endpoints both listen on {listen}; give --admin-listen (NODESHELL_GATEWAY_ADMIN_LISTEN, adminListen) another port, so the Ingress can route the API without /metrics and /readyz"
            )));
        }
        Ok(Self {
            listen,
            admin_listen,
            http,
            cluster_name: non_empty(args.cluster_name.clone())
                .or(non_empty(file.cluster_name))
                .unwrap_or_else(|| "kubernetes".to_string()),
            lease_namespace: non_empty(file.lease_namespace)
                .or(non_empty(args.namespace.clone()))
                .or(non_empty(file.namespace.clone()))
                .unwrap_or_else(|| "nodeshell-system".to_string()),
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
                jwks_min_refetch,
                identity_claim,
                issuer_ca,
            },
            tiers,
            allowed_origins,
            // Off unless asked for: a stolen ticket then also needs an allowed Origin.
            allow_missing_origin: file.allow_missing_origin.unwrap_or(false),
            role_session_prefix: prefix,
            aws: AwsEndpoints {
                region: non_empty(args.region.clone())
                    .or(non_empty(file.aws.region))
                    .unwrap_or_default(),
                sts_url: non_empty(args.sts_endpoint.clone()).or(non_empty(file.aws.sts_endpoint)),
                ssm_url: non_empty(args.ssm_endpoint.clone()).or(non_empty(file.aws.ssm_endpoint)),
                kms_url: non_empty(args.kms_endpoint.clone()).or(non_empty(file.aws.kms_endpoint)),
                s3_url: non_empty(args.s3_endpoint.clone()).or(non_empty(file.aws.s3_endpoint)),
            },
            ticket_ttl,
            admission_timeout,
            opens_per_minute,
            live,
            login,
            identity_check,
        })
    }

    /// Whether an attach request with this `Origin` header (or none) may proceed: one of
    /// `allowedOrigins`, or the console's own origin (of `oidc.redirectUrl`).
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => self.allow_missing_origin,
            Some(o) => {
                let o = o.trim_end_matches('/');
                self.allowed_origins.iter().any(|a| a == "*" || a == o)
                    || self.login.as_ref().is_some_and(|l| l.public_origin == o)
            }
        }
    }

    /// Origins a cookie-authenticated write may come from: the allowed origins (never `*`)
    /// and the gateway's own public origin.
    pub fn write_origins(&self) -> Vec<String> {
        let mut origins: Vec<String> = self
            .allowed_origins
            .iter()
            .filter(|o| o.as_str() != "*")
            .cloned()
            .collect();
        if let Some(login) = &self.login {
            origins.push(login.public_origin.clone());
        }
        origins
    }
}

/// Reads `oidc.caFile` (`--oidc-ca-file`).
fn read_issuer_ca(path: &std::path::Path) -> Result<oidc::IssuerCa, ConfigError> {
    let pem = std::fs::read(path).map_err(|e| {
        ConfigError::Invalid(format!(
            "oidc.caFile {}: {e}; mount the PEM file with the issuer's CA certificate there, or unset oidc.caFile",
            path.display()
        ))
    })?;
    oidc::IssuerCa::from_pem(pem).map_err(|e| {
        ConfigError::Invalid(format!(
            "oidc.caFile {}: {e}; give the PEM certificate of the CA that signed the issuer's https certificate",
            path.display()
        ))
    })
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
    fn oidc_ca_file_is_read_and_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let with = |path: &std::path::Path| {
            let args = GatewayArgs {
                oidc_ca_file: Some(path.to_path_buf()),
                ..args()
            };
            GatewayConfig::resolve(&args, GatewayFile::default())
        };
        let missing = with(&dir.path().join("absent.pem"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("oidc.caFile"), "{missing}");
        assert!(missing.contains("mount the PEM file"), "{missing}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let refused = with(&garbage).unwrap_err().to_string();
        assert!(refused.contains("holds no PEM certificate"), "{refused}");
        let good = dir.path().join("ca.pem");
        let tls = crate::sim::issuer_tls::IssuerTls::generate().unwrap();
        std::fs::write(&good, &tls.ca_pem).unwrap();
        let config = with(&good).unwrap();
        assert_eq!(config.oidc.issuer_ca.map(|ca| ca.len()), Some(1));
        // From the file too; without either, only the system's roots.
        let file = parse_file(&format!(
            "oidc:\n  issuerUrl: https://i.example\n  clientId: c\n  caFile: {}\n",
            good.display()
        ))
        .unwrap();
        let config = GatewayConfig::resolve(&GatewayArgs::default(), file).unwrap();
        assert!(config.oidc.issuer_ca.is_some());
        assert!(
            GatewayConfig::resolve(&args(), GatewayFile::default())
                .unwrap()
                .oidc
                .issuer_ca
                .is_none()
        );
    }

    #[test]
    fn example_file_parses_and_resolves() {
        let text = include_str!("../../../config/gateway.example.yaml");
        let file = parse_file(text).expect("example parses");
        let config = GatewayConfig::resolve(&GatewayArgs::default(), file).expect("resolves");
        assert_eq!(config.oidc.groups_claim, "groups");
        assert_eq!(config.ticket_ttl, Duration::from_secs(30));
        assert_eq!(config.admission_timeout, Duration::from_secs(10));
        assert_eq!(config.opens_per_minute, DEFAULT_OPENS_PER_MINUTE);
        assert!(config.tiers.is_admin(Some("admin")));
        assert_eq!(
            config
                .tiers
                .tier_for(&["platform-admins".into(), "sre".into()]),
            Some("admin".into())
        );
        assert!(config.origin_allowed(Some("https://console.example.com")));
        assert_eq!(config.live, LiveSettings::default());
        assert_eq!(
            config.http,
            HttpLimits::default(),
            "the example shows the defaults"
        );
        assert_eq!(
            config.admin_listen.to_string(),
            "0.0.0.0:9090",
            "as the chart sets it"
        );
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
        assert_eq!(config.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
        assert_eq!(config.http, HttpLimits::default());
        // An attach without Origin is refused unless the file asks for it.
        assert!(!config.allow_missing_origin);
        assert!(!config.origin_allowed(None));
        let file = parse_file(
            "oidc:\n  issuerUrl: https://file.example\n  clientId: file\nallowMissingOrigin: true\n",
        )
        .unwrap();
        assert!(
            GatewayConfig::resolve(&args(), file)
                .unwrap()
                .origin_allowed(None)
        );
    }

    #[test]
    fn admin_listen_from_flag_or_file_and_never_the_api_port() {
        let file = parse_file("adminListen: 127.0.0.1:9191\nhttp:\n  maxConnections: 7\n").unwrap();
        let config = GatewayConfig::resolve(&args(), file.clone()).unwrap();
        assert_eq!(config.admin_listen.to_string(), "127.0.0.1:9191");
        assert_eq!(config.http.max_connections, 7);
        let flagged = GatewayArgs {
            admin_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..args()
        };
        let config = GatewayConfig::resolve(&flagged, file).unwrap();
        assert_eq!(config.admin_listen.to_string(), "127.0.0.1:0", "flag wins");
        let same = parse_file("listen: 127.0.0.1:9191\nadminListen: 127.0.0.1:9191\n").unwrap();
        let err = GatewayConfig::resolve(&args(), same)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--admin-listen"), "{err}");
        assert!(
            parse_file("http:\n  maxConnection: 1\n").is_err(),
            "unknown http key"
        );
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
    fn issuer_refetch_floor_and_identity_claim_are_checked() {
        let with = |oidc: &str| {
            let file = parse_file(&format!("oidc:\n  clientId: c\n{oidc}")).unwrap();
            GatewayConfig::resolve(&GatewayArgs::default(), file).map_err(|e| e.to_string())
        };
        let err = with("  issuerUrl: http://login.example.com\n").unwrap_err();
        assert!(err.contains("must use https"), "{err}");
        assert!(with("  issuerUrl: http://127.0.0.1:9000\n").is_ok());
        let err = with("  issuerUrl: https://i.example\n  jwksMinRefetchSeconds: 0\n").unwrap_err();
        assert!(err.contains("jwksMinRefetchSeconds is 0"), "{err}");
        let config = with("  issuerUrl: https://i.example\n").unwrap();
        assert_eq!(config.oidc.jwks_min_refetch, Duration::from_secs(10));
        assert_eq!(config.oidc.identity_claim, "sub");
        let config = with("  issuerUrl: https://i.example\n  identityClaim: email\n").unwrap();
        assert_eq!(config.oidc.identity_claim, "email");
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
        assert!(!config.origin_allowed(Some("https://ns.example")));
        assert_eq!(config.write_origins(), ["https://a.example"]);
        // The console's own origin (of the redirect URL) may attach and write.
        let mut with_login = args();
        with_login.oidc_client_secret = Some(ClientSecret::new("s"));
        with_login.oidc_redirect_url = Some("https://ns.example/auth/callback".into());
        let file = GatewayFile {
            allowed_origins: vec!["https://a.example/".into(), "*".into()],
            ..GatewayFile::default()
        };
        let config = GatewayConfig::resolve(&with_login, file).unwrap();
        assert!(config.origin_allowed(Some("https://ns.example")));
        assert_eq!(
            config.write_origins(),
            ["https://a.example", "https://ns.example"],
            "never `*` for cookie writes"
        );
    }
}

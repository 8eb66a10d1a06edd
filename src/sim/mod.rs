//! The AWS simulator behind `nodeshell sim` and the tests: an OIDC issuer, STS
//! AssumeRoleWithWebIdentity, the SSM session API (SigV4 verified, every call recorded) and
//! the `ssmmessages` data channel with an in-process agent running a real shell in a PTY.
//!
//! Everything binds 127.0.0.1. Use it as a library with [`Simulator::start`] or as the
//! `nodeshell sim` subcommand with [`run`].

pub mod agent;
mod agent_messages;
pub mod agent_outgoing;
mod clients;
pub mod config;
pub mod documents;
pub mod faults;
mod handshake;
mod ids;
mod issued;
pub mod issuer_tls;
pub mod jwt;
mod kms;
pub mod lifetimes;
mod login;
mod oidc;
pub mod output;
mod relay;
pub mod service_limits;
pub mod sigv4;
mod ssm_api;
pub mod state;
mod sts;
pub mod trust;
pub mod trust_policy;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{
    ClientRegistration, InstanceConfig, IssuerConfig, PingStatus, PortsConfig, RoleConfig,
    SimConfig, TestUser,
};
pub use faults::FaultKnobs;
pub use issued::IssuedCredentials;
pub use jwt::BadToken;
pub use output::firehose_bytes;
pub use ssm_api::{FIREHOSE_DOCUMENT, SHELL_DOCUMENT};
pub use state::{CallRecord, SimUrls};

use state::{Shared, lock, write};

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not bind its loopback port.
    #[error("cannot bind 127.0.0.1:{port}: {source}")]
    Bind {
        /// Port asked for (0 = any).
        port: u16,
        /// Cause.
        source: std::io::Error,
    },
    /// The configuration file could not be read.
    #[error("cannot read simulator config {path}: {source}")]
    ReadConfig {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The configuration file is not valid YAML for [`SimConfig`].
    #[error("invalid simulator config {path}: {message}")]
    ParseConfig {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// Key generation or signing failed.
    #[error(transparent)]
    Jwt(#[from] jwt::JwtError),
    /// The issuer's TLS material could not be made (`issuer.https`).
    #[error(transparent)]
    IssuerTls(#[from] issuer_tls::IssuerTlsError),
    /// A token could not be minted (unknown user, …).
    #[error("cannot mint token: {0}")]
    Token(String),
    /// No instance or session with that id.
    #[error("no such {kind} {id:?}")]
    NotFound {
        /// `instance`, `session` or `role`.
        kind: &'static str,
        /// Id asked for.
        id: String,
    },
    /// The URLs file could not be written.
    #[error("cannot write the simulator's URLs to {path}: {source}")]
    WriteUrls {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A role's trust policy is not a document the simulator can evaluate.
    #[error("role {role:?}: {source}")]
    TrustPolicy {
        /// Role name.
        role: String,
        /// What is wrong with it.
        source: trust_policy::PolicyError,
    },
    /// The KMS keys could not be made.
    #[error("cannot create the simulated KMS keys: {0}")]
    Kms(String),
    /// Waiting for Ctrl-C failed.
    #[error("cannot wait for a shutdown signal: {0}")]
    Signal(std::io::Error),
}

/// Flags of `nodeshell sim`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SimArgs {
    /// YAML configuration (users, roles, instances, fault knobs); defaults apply without it.
    #[arg(long, env = "NODESHELL_SIM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Port of the OIDC issuer (0 = any).
    #[arg(long, env = "NODESHELL_SIM_OIDC_PORT")]
    pub oidc_port: Option<u16>,
    /// Port of the STS endpoint (0 = any).
    #[arg(long, env = "NODESHELL_SIM_STS_PORT")]
    pub sts_port: Option<u16>,
    /// Port of the SSM endpoint (0 = any).
    #[arg(long, env = "NODESHELL_SIM_SSM_PORT")]
    pub ssm_port: Option<u16>,
    /// Port of the ssmmessages data channel (0 = any).
    #[arg(long, env = "NODESHELL_SIM_MESSAGES_PORT")]
    pub messages_port: Option<u16>,
    /// Port of the KMS endpoint (0 = any).
    #[arg(long, env = "NODESHELL_SIM_KMS_PORT")]
    pub kms_port: Option<u16>,
    /// Seed of the fault knobs' random choices.
    #[arg(long, env = "NODESHELL_SIM_SEED")]
    pub seed: Option<u64>,
    /// Once serving, write the URLs, region and role ARNs here as JSON (for scripts and
    /// `nodeshell dev`, which start the simulator on OS-chosen ports).
    #[arg(long, env = "NODESHELL_SIM_URLS_FILE")]
    pub urls_file: Option<PathBuf>,
}

impl SimArgs {
    /// The configuration these flags describe (file first, flags over it).
    pub fn to_config(&self) -> Result<SimConfig, Error> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
                    path: path.clone(),
                    source,
                })?;
                serde_saphyr::from_str(&text).map_err(|e| Error::ParseConfig {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => SimConfig::default(),
        };
        let ports = &mut config.ports;
        for (flag, port) in [
            (self.oidc_port, &mut ports.oidc),
            (self.sts_port, &mut ports.sts),
            (self.ssm_port, &mut ports.ssm),
            (self.messages_port, &mut ports.messages),
            (self.kms_port, &mut ports.kms),
        ] {
            if let Some(p) = flag {
                *port = p;
            }
        }
        if let Some(seed) = self.seed {
            config.seed = seed;
        }
        Ok(config)
    }
}

/// Runs `nodeshell sim` until Ctrl-C.
pub async fn run(args: SimArgs) -> Result<(), Error> {
    let handle = Simulator::start(args.to_config()?).await?;
    let urls = handle.urls();
    println!("nodeshell sim is serving on loopback:");
    println!("  OIDC issuer     {}", urls.issuer);
    if handle.issuer_ca_pem().is_some() {
        println!("  issuer CA       in the URLs file (--urls-file), key issuerCaPem");
    } else if handle.shared.config.issuer.allow_http_issuer {
        println!(
            "  issuer is http  STS accepts its tokens only through the knob issuer.allowHttpIssuer (AWS would not)"
        );
    } else {
        println!(
            "  issuer is http  STS refuses its tokens, as AWS does: set issuer.https (or the knob issuer.allowHttpIssuer)"
        );
    }
    println!("  STS             {}", urls.sts);
    println!("  SSM             {}", urls.ssm);
    println!("  ssmmessages     {}", urls.messages);
    println!("  KMS             {}", urls.kms);
    println!("  region          {}", handle.region());
    for role in &handle.shared.config.roles {
        println!("  role            {}", handle.role_arn(&role.name));
    }
    if handle.shared.config.issuer.test_password_grant {
        println!(
            "  token for alice: curl -s -d sub=alice {}/token",
            urls.issuer
        );
    }
    match &handle.shared.config.issuer.auto_login {
        Some(user) => println!(
            "  browser login   {}/authorize signs in {user} at once",
            urls.issuer
        ),
        None => println!(
            "  browser login   {}/authorize shows a page to pick a user",
            urls.issuer
        ),
    }
    if let Some(path) = &args.urls_file {
        write_urls(&handle, path)?;
    }
    wait_for_stop().await?;
    handle.shutdown().await;
    Ok(())
}

/// Writes the URLs, region, client id and role ARNs as JSON.
fn write_urls(handle: &SimHandle, path: &std::path::Path) -> Result<(), Error> {
    let urls = handle.urls();
    let roles: Vec<String> = handle
        .shared
        .config
        .roles
        .iter()
        .map(|r| handle.role_arn(&r.name))
        .collect();
    let doc = serde_json::json!({
        "issuer": urls.issuer,
        "sts": urls.sts,
        "ssm": urls.ssm,
        "messages": urls.messages,
        "kms": urls.kms,
        "region": handle.region(),
        "clientId": handle.shared.config.issuer.client_id,
        "roleArns": roles,
        // With `issuer.https`: the CA a client (the gateway's `oidc.caFile`) must trust.
        "issuerCaPem": handle.issuer_ca_pem(),
    });
    std::fs::write(path, format!("{doc:#}\n")).map_err(|source| Error::WriteUrls {
        path: path.to_path_buf(),
        source,
    })
}

/// Waits for Ctrl-C or SIGTERM (how `nodeshell dev` stops its children).
async fn wait_for_stop() -> Result<(), Error> {
    crate::shutdown::stop_requested()
        .await
        .map_err(Error::Signal)
}

/// Starts simulators.
#[derive(Debug)]
pub struct Simulator;

/// A running simulator: URLs, token minting, the call log, knobs, shutdown.
pub struct SimHandle {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    issuer_ca_pem: Option<String>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("urls", &self.shared.urls)
            .finish_non_exhaustive()
    }
}

async fn bind(port: u16) -> Result<(TcpListener, SocketAddr), Error> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(|source| Error::Bind { port, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| Error::Bind { port, source })?;
    Ok((listener, addr))
}

impl Simulator {
    /// Binds the four loopback listeners, generates the issuer's key and starts serving.
    pub async fn start(config: SimConfig) -> Result<SimHandle, Error> {
        let (oidc_l, oidc_a) = bind(config.ports.oidc).await?;
        let (sts_l, sts_a) = bind(config.ports.sts).await?;
        let (ssm_l, ssm_a) = bind(config.ports.ssm).await?;
        let (msg_l, msg_a) = bind(config.ports.messages).await?;
        let (kms_l, kms_a) = bind(config.ports.kms).await?;
        let issuer_tls = if config.issuer.https {
            Some(issuer_tls::IssuerTls::generate()?)
        } else {
            None
        };
        let issuer_scheme = if issuer_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let urls = SimUrls {
            issuer: format!("{issuer_scheme}://{oidc_a}"),
            sts: format!("http://{sts_a}"),
            ssm: format!("http://{ssm_a}"),
            messages: format!("ws://{msg_a}"),
            kms: format!("http://{kms_a}"),
        };
        for role in &config.roles {
            trust::role_trust_policy(role, &config.account_id, &urls.issuer).map_err(|source| {
                Error::TrustPolicy {
                    role: role.name.clone(),
                    source,
                }
            })?;
        }
        let instances = config
            .instances
            .iter()
            .map(|i| (i.id.clone(), i.clone()))
            .collect();
        let keys = tokio::task::spawn_blocking(jwt::KeyRing::generate)
            .await
            .map_err(|_| Error::Jwt(jwt::JwtError::KeyGeneration))??;
        let kms = kms::KmsKeys::generate(&config).map_err(|e| Error::Kms(e.message))?;
        let shared = Arc::new(Shared {
            preferences: Mutex::new(config.session_manager_preferences.clone()),
            config,
            urls,
            keys: RwLock::new(keys),
            credentials: Mutex::new(HashMap::new()),
            instances: Mutex::new(instances),
            sessions: Mutex::new(HashMap::new()),
            calls: Mutex::new(Vec::new()),
            ordinal: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
            codes: Mutex::new(login::CodeBook::default()),
            refresh_tokens: Mutex::new(clients::RefreshBook::default()),
            disabled_users: Mutex::new(std::collections::HashSet::new()),
            idp_unreachable: std::sync::atomic::AtomicBool::new(false),
            trust_policies: Mutex::new(HashMap::new()),
            kms,
        });
        let serve = |listener: TcpListener, router: axum::Router, stop: CancellationToken| {
            // Nagle plus the peer's delayed ACK holds a small frame written right after
            // another (an input ack, then the echo) for up to 40 ms: send every write at once.
            let listener = listener.tap_io(|tcp| {
                if let Err(error) = tcp.set_nodelay(true) {
                    tracing::debug!(%error, "could not set TCP_NODELAY on an accepted socket");
                }
            });
            tokio::spawn(async move {
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
            })
        };
        let stop = shared.shutdown.clone();
        let issuer_task = match &issuer_tls {
            Some(tls) => tls.serve(oidc_l, oidc::router(shared.clone()), stop.clone()),
            None => serve(oidc_l, oidc::router(shared.clone()), stop.clone()),
        };
        let tasks = vec![
            issuer_task,
            serve(sts_l, sts::router(shared.clone()), stop.clone()),
            serve(ssm_l, ssm_api::router(shared.clone()), stop.clone()),
            serve(kms_l, kms::router(shared.clone()), stop.clone()),
            serve(msg_l, relay::router(shared.clone()), stop),
        ];
        Ok(SimHandle {
            shared,
            tasks,
            issuer_ca_pem: issuer_tls.map(|tls| tls.ca_pem),
        })
    }
}

impl SimHandle {
    /// The URLs served.
    pub fn urls(&self) -> &SimUrls {
        &self.shared.urls
    }

    /// The CA certificate (PEM) of the issuer's https certificate (`issuer.https`), which a
    /// client must trust to reach it (the gateway's `oidc.caFile`).
    pub fn issuer_ca_pem(&self) -> Option<&str> {
        self.issuer_ca_pem.as_deref()
    }

    /// A client builder for the issuer, as a test client (a browser, a login helper) needs
    /// it: it trusts the issuer's CA when `issuer.https` is on.
    pub fn issuer_client(&self) -> reqwest::ClientBuilder {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let builder = reqwest::Client::builder();
        match self
            .issuer_ca_pem()
            .and_then(|pem| reqwest::Certificate::from_pem(pem.as_bytes()).ok())
        {
            Some(ca) => builder.add_root_certificate(ca),
            None => builder,
        }
    }

    /// Writes the issuer's CA (with `issuer.https`) to `<dir>/issuer-ca.pem`, the file a
    /// gateway's `oidc.caFile` names; `None` when the issuer is plain http.
    pub fn write_issuer_ca(&self, dir: &std::path::Path) -> std::io::Result<Option<PathBuf>> {
        let Some(pem) = self.issuer_ca_pem() else {
            return Ok(None);
        };
        let path = dir.join("issuer-ca.pem");
        write_whole(&path, pem.as_bytes())?;
        Ok(Some(path))
    }

    /// The region SigV4 scopes must name.
    pub fn region(&self) -> &str {
        &self.shared.config.region
    }

    /// Where the `aws` module's STS and SSM calls reach this simulator.
    pub fn aws_endpoints(&self) -> crate::aws::AwsEndpoints {
        crate::aws::AwsEndpoints {
            region: self.region().to_string(),
            sts_url: Some(self.urls().sts.clone()),
            ssm_url: Some(self.urls().ssm.clone()),
            kms_url: Some(self.urls().kms.clone()),
            s3_url: None,
        }
    }

    /// The account id in ARNs.
    pub fn account_id(&self) -> &str {
        &self.shared.config.account_id
    }

    /// `arn:aws:iam::<acct>:role/<path><name>`, with the configured role's IAM path (`/` for
    /// a role that is not configured).
    pub fn role_arn(&self, name: &str) -> String {
        let path = self.shared.role(name).map_or("/", |r| r.path.as_str());
        format!(
            "arn:aws:iam::{}:role{path}{name}",
            self.shared.config.account_id
        )
    }

    /// ARN of the first configured role.
    pub fn default_role_arn(&self) -> String {
        let name = self
            .shared
            .config
            .roles
            .first()
            .map(|r| r.name.as_str())
            .unwrap_or("nodeshell-user");
        self.role_arn(name)
    }

    /// The configuration the simulator runs with.
    pub fn config(&self) -> &SimConfig {
        &self.shared.config
    }

    /// A valid id_token for the configured user `sub` with the issuer's client id as `aud`.
    pub fn mint_token(&self, sub: &str) -> Result<String, Error> {
        oidc::mint(&self.shared, sub, None, None, None).map_err(|e| Error::Token(e.to_string()))
    }

    /// A valid id_token with a chosen audience and lifetime.
    pub fn mint_token_with(
        &self,
        sub: &str,
        audience: &str,
        ttl_seconds: u64,
    ) -> Result<String, Error> {
        oidc::mint(&self.shared, sub, Some(audience), Some(ttl_seconds), None)
            .map_err(|e| Error::Token(e.to_string()))
    }

    /// A deliberately broken id_token for `sub`.
    pub fn mint_bad_token(&self, sub: &str, kind: BadToken) -> Result<String, Error> {
        oidc::mint(&self.shared, sub, None, None, Some(kind))
            .map_err(|e| Error::Token(e.to_string()))
    }

    /// Publishes a new signing key and signs with it from now on; the old key stays in the
    /// JWKS for `overlap`. Returns the new kid.
    pub fn rotate_keys(&self, overlap: Duration) -> Result<String, Error> {
        Ok(write(&self.shared.keys).rotate(overlap)?)
    }

    /// Every API call recorded so far, oldest first.
    pub fn calls(&self) -> Vec<CallRecord> {
        lock(&self.shared.calls).clone()
    }

    /// Every credential set STS issued since the simulator started (expired ones included;
    /// the simulator never forgets one), ordered by access key id.
    pub fn issued_credentials(&self) -> Vec<IssuedCredentials> {
        issued::issued_credentials(&self.shared)
    }

    /// Adds or replaces a managed instance.
    pub fn add_instance(&self, instance: InstanceConfig) {
        lock(&self.shared.instances).insert(instance.id.clone(), instance);
    }

    /// Fault knob (off by default): STS answers every AssumeRoleWithWebIdentity with
    /// `IDPCommunicationError`, as AWS does when it cannot reach the issuer to check a token.
    pub fn set_idp_unreachable(&self, unreachable: bool) {
        self.shared
            .idp_unreachable
            .store(unreachable, std::sync::atomic::Ordering::Relaxed);
    }

    /// Replaces a role's trust policy with an IAM policy document (JSON), evaluated as IAM
    /// does from the next AssumeRoleWithWebIdentity on. The provider in it is
    /// [`Self::provider_name`], known only once the issuer's port is.
    pub fn set_trust_policy(&self, role: &str, document: &serde_json::Value) -> Result<(), Error> {
        if self.shared.role(role).is_none() {
            return Err(Error::NotFound {
                kind: "role",
                id: role.to_string(),
            });
        }
        let policy =
            trust_policy::TrustPolicy::parse(document).map_err(|source| Error::TrustPolicy {
                role: role.to_string(),
                source,
            })?;
        lock(&self.shared.trust_policies).insert(role.to_string(), policy);
        Ok(())
    }

    /// The name IAM gives the issuer's provider (its URL without the scheme), the prefix of
    /// the `<provider>:aud` and `<provider>:sub` condition keys.
    pub fn provider_name(&self) -> String {
        trust_policy::provider_name(&self.shared.urls.issuer)
    }

    /// The ARN of the issuer's OIDC provider, for a policy's `Principal.Federated`.
    pub fn provider_arn(&self) -> String {
        trust_policy::provider_arn(&self.shared.config.account_id, &self.shared.urls.issuer)
    }

    /// Knob (off by default): the identity provider disables (`true`) or re-enables a user.
    /// A disabled user's refresh tokens and authorization codes answer `invalid_grant`, as an
    /// IdP does once an account is deactivated.
    pub fn set_user_disabled(&self, sub: &str, disabled: bool) {
        let mut users = lock(&self.shared.disabled_users);
        if disabled {
            users.insert(sub.to_string());
        } else {
            users.remove(sub);
        }
    }

    /// Knob: the account's Session Manager preferences name `key` (a `kmsKeys` entry) for
    /// KMS encryption, or none; sessions started afterwards follow it.
    pub fn set_session_kms_key(&self, key: Option<&str>) {
        lock(&self.shared.preferences).kms_key_id = key.map(str::to_string);
    }

    /// Knob: the key policy of `key` denies these roles every `kms:` action from now on.
    pub fn set_kms_denied_roles(&self, key: &str, roles: &[&str]) -> Result<(), Error> {
        self.shared
            .kms
            .set_deny_roles(key, roles.iter().map(|r| r.to_string()).collect())
            .map_err(|e| Error::NotFound {
                kind: "KMS key",
                id: e.message,
            })
    }

    /// Changes an instance's agent connectivity.
    pub fn set_ping_status(&self, instance_id: &str, status: PingStatus) -> Result<(), Error> {
        let mut instances = lock(&self.shared.instances);
        let inst = instances
            .get_mut(instance_id)
            .ok_or_else(|| Error::NotFound {
                kind: "instance",
                id: instance_id.to_string(),
            })?;
        inst.ping_status = status;
        Ok(())
    }

    /// Sets the fault knobs of an instance; sessions started afterwards inherit them.
    pub fn set_instance_faults(&self, instance_id: &str, knobs: FaultKnobs) -> Result<(), Error> {
        let mut instances = lock(&self.shared.instances);
        let inst = instances
            .get_mut(instance_id)
            .ok_or_else(|| Error::NotFound {
                kind: "instance",
                id: instance_id.to_string(),
            })?;
        inst.faults = knobs;
        Ok(())
    }

    /// Sets the fault knobs of a live session (effective from the next frame).
    pub fn set_session_faults(&self, session_id: &str, knobs: FaultKnobs) -> Result<(), Error> {
        let session = self
            .shared
            .session(session_id)
            .ok_or_else(|| Error::NotFound {
                kind: "session",
                id: session_id.to_string(),
            })?;
        *lock(&session.knobs) = knobs;
        Ok(())
    }

    /// Makes temporary credentials expire now (to provoke ExpiredTokenException).
    pub fn expire_credentials(&self, access_key_id: &str) -> Result<(), Error> {
        let mut creds = lock(&self.shared.credentials);
        let c = creds
            .get_mut(access_key_id)
            .ok_or_else(|| Error::NotFound {
                kind: "credentials",
                id: access_key_id.to_string(),
            })?;
        c.expiration = chrono::Utc::now() - chrono::Duration::seconds(1);
        Ok(())
    }

    /// Whether a session has ended (terminated or its shell exited), and the shell's real exit
    /// status if it exited (which the agent never sends to the client).
    pub fn session_status(&self, session_id: &str) -> Option<(bool, Option<i32>)> {
        let session = self.shared.session(session_id)?;
        let state = lock(&session.state);
        Some((state.terminated, state.exit_code))
    }

    /// What the input-side fault knobs lost in a session: (input frames from the client lost
    /// by `inputDrop`, acknowledgements lost by `ackDrop` in either direction).
    pub fn input_faults_fired(&self, session_id: &str) -> Option<(u64, u64)> {
        let session = self.shared.session(session_id)?;
        let state = lock(&session.state);
        Some((state.input_dropped, state.acks_dropped))
    }

    /// Changes how old a live session's data-channel connections get before the service
    /// closes them with `1000 Bye` (its hourly recycle; `dataChannel.recycleSeconds` when it
    /// started). Applies to the open connection too, measured from when it opened; checked
    /// every 100 ms.
    pub fn set_session_recycle(&self, session_id: &str, every: Duration) -> Result<(), Error> {
        let session = self
            .shared
            .session(session_id)
            .ok_or_else(|| Error::NotFound {
                kind: "session",
                id: session_id.to_string(),
            })?;
        *lock(&session.recycle) = every.max(Duration::from_millis(100));
        Ok(())
    }

    /// Changes Session Manager's own limits on a live session (its idle timeout and maximum
    /// duration, which start as the account's preferences); checked every 100 ms.
    pub fn set_session_limits(
        &self,
        session_id: &str,
        limits: service_limits::ServiceLimits,
    ) -> Result<(), Error> {
        let session = self
            .shared
            .session(session_id)
            .ok_or_else(|| Error::NotFound {
                kind: "session",
                id: session_id.to_string(),
            })?;
        *lock(&session.limits) = limits;
        Ok(())
    }

    /// The agent's send counters of a session: (messages resent by its resend loop, messages
    /// that found its outgoing buffer full and were sent once, never resent).
    pub fn agent_counters(&self, session_id: &str) -> Option<(u64, u64)> {
        let session = self.shared.session(session_id)?;
        let state = lock(&session.state);
        Some((state.agent_resends, state.agent_not_kept))
    }

    /// Stops every listener and agent.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

/// Writes `bytes` to `path` as one step for readers: written beside it, then renamed into
/// place. The gateways of one test process start concurrently and read the issuer's CA
/// while another start writes it again; a plain write truncates first, and a gateway that
/// read the file then found no certificate in it.
fn write_whole(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.{n}.tmp", std::process::id()));
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod write_whole_tests {
    use super::write_whole;

    /// Readers racing writers of the same file see the whole content every time, never an
    /// empty or partial file (what a plain `fs::write` showed a starting gateway).
    #[test]
    fn readers_never_see_a_partly_written_file() {
        let dir =
            std::env::temp_dir().join(format!("nodeshell-write-whole-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        let content = vec![b'c'; 64 * 1024];
        write_whole(&path, &content).unwrap();
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    for _ in 0..200 {
                        write_whole(&path, &content).unwrap();
                    }
                });
            }
            scope.spawn(|| {
                for _ in 0..2000 {
                    assert_eq!(std::fs::read(&path).unwrap().len(), content.len());
                }
            });
        });
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

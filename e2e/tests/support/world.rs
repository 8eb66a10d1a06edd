//! The world a gateway test binary shares ([`GatewayWorld`]: the real local control plane with
//! CRDs and RBAC, the AWS simulator in-process, `nodeshell controller` and `nodeshell gateway`
//! child processes), how it is shaped ([`WorldOptions`], [`GatewayOptions`]), and per-test
//! [`Scope`]s (own nodes, instances and policy).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Node, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use nodeshell::api::{NodeShellPolicy, NodeShellSession};
use nodeshell::localcluster::{Identity, LocalCluster, SYSTEM_NAMESPACE};
use nodeshell::sim::config::KmsKeyConfig;
use nodeshell::sim::{
    ClientRegistration, InstanceConfig, PingStatus, RoleConfig, SimConfig, SimHandle, Simulator,
    TestUser,
};
use serde_json::{Value, json};

use super::http::{GatewayClient, Opened};
use super::json::merge;
use super::process::{ControllerProcess, GatewayProcess, NodeshellProcess};
use super::terminal::Terminal;
use super::wait::wait_for;

/// Label that ties the nodes of one test to that test's policy.
pub const SCOPE_LABEL: &str = "e2e.nodeshell.periscope.io/scope";
/// The browser origin the gateways allow.
pub const ORIGIN: &str = "http://127.0.0.1";
/// Group → tier mapping the gateways are configured with.
pub const ENGINEER_GROUP: &str = "sre";
/// Group of the admin tier (may end anyone's session).
pub const ADMIN_GROUP: &str = "platform-admins";
/// A group mapped to a tier no policy allows.
pub const VIEWER_GROUP: &str = "viewers";
/// Role name prefix of role session names (`<prefix>-<sanitised sub>`).
pub const SESSION_PREFIX: &str = "nodeshell";
/// Engineers `eng-01` … `eng-NN` configured in the simulator.
pub const ENGINEERS: usize = 60;
/// A sub with characters STS refuses in a role session name.
pub const SUB_PIPE: &str = "auth0|5f8a9b2c";
/// A sub with spaces.
pub const SUB_SPACES: &str = "Jane Q Public";
/// A sub with non-ASCII letters.
pub const SUB_UNICODE: &str = "jürgen.müller@例え.jp";
/// The admin user.
pub const ADMIN: &str = "oncall-admin";
/// A user whose tier no policy allows.
pub const VIEWER: &str = "viewer-01";
/// Role whose trust policy accepts only the sub `nobody`.
pub const ROLE_STRICT: &str = "nodeshell-strict";
/// Role without SSM permissions.
pub const ROLE_NO_SSM: &str = "nodeshell-nossm";
/// Role whose permission policy lacks the KMS statement (`kms:GenerateDataKey` on the key).
pub const ROLE_NO_KMS: &str = "nodeshell-nokms";
/// A role whose credentials the simulator issues for [`SHORT_CREDENTIAL_SECONDS`] only (its
/// `credentialLifetimeSeconds` knob), so a test crosses their expiry in seconds.
pub const ROLE_SHORT: &str = "nodeshell-short";
/// How long the credentials of [`ROLE_SHORT`] last.
pub const SHORT_CREDENTIAL_SECONDS: u32 = 5;
/// A role whose credentials last [`MINUTE_CREDENTIAL_SECONDS`]: a bearer shell under it
/// reaches its credentials' end a few seconds after it opens.
pub const ROLE_MINUTE: &str = "nodeshell-minute";
/// How long the credentials of [`ROLE_MINUTE`] last: a little more than the minute before
/// their expiry at which a shell they cannot be renewed for ends.
pub const MINUTE_CREDENTIAL_SECONDS: u32 = 75;
/// The person who signs in through the console in the recycle tests.
pub const RECYCLE_CONSOLE_USER: &str = "console-recycle";
/// The secret of the gateways' confidential client (the issuer's client id, `nodeshell`,
/// which the default role's trust policy names as audience).
pub const GATEWAY_CLIENT_SECRET: &str = "e2e-gateway-client-secret";
/// A public client of the issuer (PKCE, no secret): what anyone can sign in to on their own.
pub const PUBLIC_CLIENT: &str = "nodeshell-public";
/// Engineers who sign in through the console in the sign-in tests.
pub const CONSOLE_USERS: [&str; 4] = ["console-01", "console-02", "console-03", "console-04"];

/// A 100-character sub.
pub fn long_sub() -> String {
    let mut s = String::from("long-");
    while s.len() < 100 {
        s.push_str("abcdefghij");
    }
    s.truncate(100);
    s
}

/// Name of engineer `n` (1-based).
pub fn engineer(n: usize) -> String {
    format!("eng-{n:02}")
}

/// The simulator configuration every gateway test binary uses.
pub fn sim_config() -> SimConfig {
    let mut users: Vec<TestUser> = (1..=ENGINEERS)
        .map(|n| user(&engineer(n), &[ENGINEER_GROUP]))
        .collect();
    users.push(user(ADMIN, &[ADMIN_GROUP]));
    users.push(user(VIEWER, &[VIEWER_GROUP]));
    for sub in [SUB_PIPE, SUB_SPACES, SUB_UNICODE, &long_sub()] {
        users.push(user(sub, &[ENGINEER_GROUP]));
    }
    for sub in CONSOLE_USERS {
        users.push(user(sub, &[ENGINEER_GROUP]));
    }
    users.push(user(RECYCLE_CONSOLE_USER, &[ENGINEER_GROUP]));
    let mut base = SimConfig::for_tests();
    base.issuer.clients = vec![ClientRegistration {
        client_id: base.issuer.client_id.clone(),
        client_secret: Some(GATEWAY_CLIENT_SECRET.to_string()),
    }];
    base.issuer.extra_audiences = vec![PUBLIC_CLIENT.to_string()];
    let default_role = RoleConfig::default();
    SimConfig {
        users,
        roles: vec![
            default_role.clone(),
            RoleConfig {
                name: ROLE_STRICT.to_string(),
                allowed_subs: Some(vec!["nobody".to_string()]),
                ..default_role.clone()
            },
            RoleConfig {
                name: ROLE_SHORT.to_string(),
                credential_lifetime_seconds: Some(SHORT_CREDENTIAL_SECONDS),
                ..default_role.clone()
            },
            RoleConfig {
                name: ROLE_MINUTE.to_string(),
                credential_lifetime_seconds: Some(MINUTE_CREDENTIAL_SECONDS),
                ..default_role.clone()
            },
            RoleConfig {
                name: ROLE_NO_SSM.to_string(),
                ssm_allowed: false,
                ..default_role.clone()
            },
            RoleConfig {
                name: ROLE_NO_KMS.to_string(),
                deny_actions: vec!["kms:GenerateDataKey".to_string()],
                ..default_role
            },
        ],
        instances: Vec::new(),
        // The account's KMS key; sessions use it only once a test turns the Session Manager
        // preference on (`SimHandle::set_session_kms_key`), as `gateway_kms` does.
        kms_keys: vec![KmsKeyConfig::default()],
        ..base
    }
}

fn user(sub: &str, groups: &[&str]) -> TestUser {
    let local: String = sub
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    TestUser {
        sub: sub.to_string(),
        email: format!("{local}@example.com"),
        name: format!("Test {sub}"),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

/// Everything a gateway test binary shares: control plane, simulator, controllers, gateways.
pub struct GatewayWorld {
    /// The real kube-apiserver + etcd (+ garbage collector).
    pub cluster: &'static LocalCluster,
    /// The AWS simulator, served from its own runtime (tests each have their own).
    pub sim: &'static SimHandle,
    /// The controllers (two, leader-elected).
    pub controllers: Vec<ControllerProcess>,
    /// The shared gateways (tests that kill a gateway start their own).
    pub gateways: Vec<GatewayProcess>,
    /// Where this world keeps configs and logs.
    pub dir: PathBuf,
}

static WORLD: tokio::sync::OnceCell<GatewayWorld> = tokio::sync::OnceCell::const_new();
static SIM: OnceLock<SimHandle> = OnceLock::new();
pub(super) static COUNTER: AtomicU64 = AtomicU64::new(0);

/// How the shared world is shaped.
#[derive(Clone, Debug)]
pub struct WorldOptions {
    /// Controller processes (leader-elected).
    pub controllers: usize,
    /// Shared gateway processes.
    pub gateways: usize,
    /// Merged into every shared gateway's config (e.g. a larger `http.maxConnections`).
    pub gateway_patch: Value,
}

impl Default for WorldOptions {
    fn default() -> Self {
        Self {
            controllers: 1,
            gateways: 1,
            gateway_patch: json!({}),
        }
    }
}

/// A client builder that trusts the shared simulator's issuer (its https CA), once the world
/// has started it.
pub fn issuer_client() -> reqwest::ClientBuilder {
    match SIM.get() {
        Some(sim) => sim.issuer_client(),
        None => reqwest::Client::builder(),
    }
}

/// Starts the simulator on a runtime of its own that lives as long as the process, so it
/// survives the per-test runtimes of `#[tokio::test]`.
fn start_sim() -> anyhow::Result<&'static SimHandle> {
    if let Some(sim) = SIM.get() {
        return Ok(sim);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("simulator".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::anyhow!("simulator runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                match Simulator::start(sim_config()).await {
                    Ok(sim) => {
                        let _ = SIM.set(sim);
                        let _ = tx.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(anyhow::anyhow!("simulator: {e}")));
                        return;
                    }
                }
                std::future::pending::<()>().await;
            });
        })?;
    rx.recv()??;
    SIM.get()
        .ok_or_else(|| anyhow::anyhow!("simulator did not start"))
}

impl GatewayWorld {
    /// The world of this test binary with one controller and one gateway.
    pub async fn shared() -> anyhow::Result<&'static GatewayWorld> {
        Self::shared_with(WorldOptions::default()).await
    }

    /// The world of this test binary, started on first use with `options`.
    pub async fn shared_with(options: WorldOptions) -> anyhow::Result<&'static GatewayWorld> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        WORLD
            .get_or_try_init(|| async move {
                let cluster = LocalCluster::shared().await?;
                cluster.install_crds().await?;
                let sim = start_sim()?;
                let dir = cluster.work_dir().join("gateway-e2e");
                std::fs::create_dir_all(&dir)?;
                let mut world = GatewayWorld {
                    cluster,
                    sim,
                    controllers: Vec::new(),
                    gateways: Vec::new(),
                    dir,
                };
                for i in 0..options.controllers {
                    world
                        .controllers
                        .push(world.start_controller(&format!("ctl-{i}"))?);
                }
                for i in 0..options.gateways {
                    let gw = world
                        .start_gateway(GatewayOptions {
                            patch: options.gateway_patch.clone(),
                            ..GatewayOptions::named(&format!("gw-{i}"))
                        })
                        .await?;
                    world.gateways.push(gw);
                }
                Ok::<_, anyhow::Error>(world)
            })
            .await
    }

    /// The first shared gateway.
    pub fn gateway(&self) -> &GatewayProcess {
        &self.gateways[0]
    }

    /// Starts a `nodeshell controller` with short clocks, its output in the world's directory.
    pub fn start_controller(&self, identity: &str) -> anyhow::Result<ControllerProcess> {
        ControllerProcess::start_in(
            &self.dir,
            self.cluster,
            identity,
            "nodeshell-controller-gw-e2e",
            &[
                "--heartbeat-timeout",
                "15s",
                "--attach-timeout",
                "60s",
                "--backstop-grace",
                "5s",
                "--closing-grace",
                "15s",
            ],
        )
    }

    /// Writes a gateway config file and starts `nodeshell gateway` with it, as the gateway's
    /// service account; returns once it is listening.
    pub async fn start_gateway(&self, options: GatewayOptions) -> anyhow::Result<GatewayProcess> {
        let config_path = self.dir.join(format!("{}.yaml", options.name));
        std::fs::write(&config_path, self.gateway_config(&options))?;
        let kubeconfig = match &options.kubeconfig {
            Some(path) => path.clone(),
            None => self.cluster.kubeconfig_path(Identity::Gateway),
        };
        let args: Vec<String> = vec![
            "--log-format=json".into(),
            "gateway".into(),
            "--config".into(),
            config_path.display().to_string(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
        ];
        let process = NodeshellProcess::spawn(
            &format!("gateway-{}", options.name),
            &self.dir,
            &args,
            &[("RUST_LOG", "info"), ("POD_NAME", options.name.as_str())]
                .into_iter()
                .chain(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .collect::<Vec<_>>(),
        )?;
        let (base, admin) = wait_for("gateway listening", Duration::from_secs(60), || {
            let found = process.listening_url().zip(process.admin_url());
            let exited = process.has_exited();
            let logs = process.logs();
            async move {
                if let Some(urls) = found {
                    return Ok(Some(urls));
                }
                anyhow::ensure!(!exited, "gateway exited before listening:\n{logs}");
                Ok(None)
            }
        })
        .await?;
        Ok(GatewayProcess {
            name: options.name,
            base,
            admin,
            process,
        })
    }

    /// Starts a gateway whose console signs in through it (a confidential client with
    /// [`GATEWAY_CLIENT_SECRET`]) on a port chosen now, since its redirect URL names it;
    /// `patch` is merged into its config.
    pub async fn start_console_gateway(
        &self,
        name: &str,
        patch: Value,
    ) -> anyhow::Result<GatewayProcess> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let secret = self.dir.join(format!("{name}.client-secret"));
        std::fs::write(&secret, format!("{GATEWAY_CLIENT_SECRET}\n"))?;
        let mut config = json!({
            "listen": format!("127.0.0.1:{port}"),
            "oidc": {
                "clientSecretFile": secret.display().to_string(),
                "redirectUrl": format!("{base}/auth/callback"),
            },
        });
        merge(&mut config, patch);
        self.start_gateway(GatewayOptions {
            name: name.to_string(),
            patch: config,
            kubeconfig: None,
            env: Vec::new(),
        })
        .await
    }

    /// The gateway configuration file for `options`.
    pub fn gateway_config(&self, options: &GatewayOptions) -> String {
        let urls = self.sim.urls();
        // The issuer is https with a CA made for the run, trusted through `oidc.caFile`.
        let ca_file = match self.sim.write_issuer_ca(&self.dir) {
            Ok(path) => path.map(|p| p.display().to_string()),
            Err(e) => panic!("writing the issuer's CA to {}: {e}", self.dir.display()),
        };
        let mut config = json!({
            "listen": "127.0.0.1:0",
            "adminListen": "127.0.0.1:0",
            "clusterName": "e2e",
            "namespace": SYSTEM_NAMESPACE,
            "oidc": {
                "issuerUrl": urls.issuer,
                "clientId": self.sim.config().issuer.client_id,
                "groupsClaim": "groups",
                "caFile": ca_file,
            },
            "tierOrder": ["admin", "engineer", "viewer"],
            "groupTiers": {
                ENGINEER_GROUP: "engineer",
                ADMIN_GROUP: "admin",
                VIEWER_GROUP: "viewer",
            },
            "adminTiers": ["admin"],
            "allowedOrigins": [ORIGIN],
            "allowMissingOrigin": false,
            "roleSessionPrefix": SESSION_PREFIX,
            "aws": {
                "region": self.sim.region(),
                "stsEndpoint": urls.sts,
                "ssmEndpoint": urls.ssm,
                "kmsEndpoint": urls.kms,
            },
            "ticketTtlSeconds": 30,
            "admissionTimeoutSeconds": 15,
        });
        merge(&mut config, options.patch.clone());
        serde_json::to_string_pretty(&config).unwrap_or_default()
    }

    /// A fresh test scope: `nodes` EC2-like nodes (each with a simulator instance) and a
    /// policy named after the scope selecting them, its spec merged with `policy_patch`.
    pub async fn scope(
        &self,
        name: &str,
        nodes: usize,
        policy_patch: Value,
    ) -> anyhow::Result<Scope> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let scope_name = format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let admin = self.cluster.client(Identity::Admin).await?;
        let node_api: Api<Node> = Api::all(admin.clone());
        let mut node_names = Vec::new();
        let mut instances = Vec::new();
        for i in 0..nodes {
            let instance = format!(
                "i-{:017x}",
                (u64::from_str_radix(&scope_name[scope_name.len() - 6..], 16).unwrap_or(0) << 20)
                    | (n << 8)
                    | i as u64
            );
            let node_name = format!("ip-10-9-{}-{i}.{scope_name}.ec2.internal", n % 250);
            self.sim.add_instance(InstanceConfig {
                id: instance.clone(),
                name: node_name.clone(),
                ..InstanceConfig::default()
            });
            let node = json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": node_name,
                    "labels": {
                        SCOPE_LABEL: scope_name,
                        "kubernetes.io/os": "linux",
                        "topology.kubernetes.io/zone": format!("{}a", self.sim.region()),
                    }
                },
                "spec": { "providerID": format!("aws:///{}a/{instance}", self.sim.region()) }
            });
            node_api
                .patch(
                    &node_name,
                    &PatchParams::apply("gateway-e2e").force(),
                    &Patch::Apply(&node),
                )
                .await?;
            node_names.push(node_name);
            instances.push(instance);
        }
        let policy_name = scope_name.clone();
        self.apply_policy(&policy_name, &scope_name, policy_patch)
            .await?;
        Ok(Scope {
            name: scope_name,
            policy: policy_name,
            nodes: node_names,
            instances,
        })
    }

    /// A policy selecting the nodes of `scope`; waits until the controller reports it Ready.
    pub async fn apply_policy(&self, name: &str, scope: &str, patch: Value) -> anyhow::Result<()> {
        let mut spec = json!({
            "enabled": true,
            "tiers": ["engineer", "admin"],
            "priority": 10,
            "nodeSelector": { "matchLabels": { SCOPE_LABEL: scope } },
            "aws": {
                "roleArn": self.sim.default_role_arn(),
                "oidcAudience": self.sim.config().issuer.client_id,
                "region": self.sim.region(),
            },
            "limits": { "maxSessionsPerUser": 2, "maxSessionsTotal": 10 },
            "retention": { "closedSessionSeconds": 3600 },
        });
        merge(&mut spec, patch);
        let policy = json!({
            "apiVersion": "nodeshell.periscope.io/v1alpha1",
            "kind": "NodeShellPolicy",
            "metadata": { "name": name },
            "spec": spec,
        });
        let api: Api<NodeShellPolicy> = Api::all(self.cluster.client(Identity::Admin).await?);
        api.patch(
            name,
            &PatchParams::apply("gateway-e2e").force(),
            &Patch::Apply(&policy),
        )
        .await?;
        Ok(())
    }

    /// Adds an EC2-like node in `scope` backed by a new simulator instance `instance`, with
    /// providerID `aws:///<zone>/<instance>` (and a zone label when `zone` is not empty).
    pub async fn add_node(
        &self,
        scope: &Scope,
        instance: &str,
        zone: Option<&str>,
    ) -> anyhow::Result<String> {
        let zone = zone
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}a", self.sim.region()));
        let name = format!("ip-{instance}.{}.ec2.internal", scope.name);
        self.sim.add_instance(InstanceConfig {
            id: instance.to_string(),
            name: name.clone(),
            ..InstanceConfig::default()
        });
        let mut labels = json!({ SCOPE_LABEL: scope.name, "kubernetes.io/os": "linux" });
        if !zone.is_empty() {
            labels["topology.kubernetes.io/zone"] = json!(zone);
        }
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": { "name": name, "labels": labels },
            "spec": { "providerID": format!("aws:///{zone}/{instance}") }
        });
        let api: Api<Node> = Api::all(self.cluster.client(Identity::Admin).await?);
        api.patch(
            &name,
            &PatchParams::apply("gateway-e2e").force(),
            &Patch::Apply(&node),
        )
        .await?;
        Ok(name)
    }

    /// A non-EC2 node (no providerID) in `scope`.
    pub async fn add_non_ec2_node(&self, scope: &Scope) -> anyhow::Result<String> {
        let name = format!("onprem-{}", scope.name);
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": { "name": name, "labels": { SCOPE_LABEL: scope.name } },
            "spec": {}
        });
        let api: Api<Node> = Api::all(self.cluster.client(Identity::Admin).await?);
        api.patch(
            &name,
            &PatchParams::apply("gateway-e2e").force(),
            &Patch::Apply(&node),
        )
        .await?;
        Ok(name)
    }

    /// Opens and attaches a shell on the scope's first node through `gw` for `sub`, and
    /// waits for the prompt. Returns the open answer, the terminal and the `hello` frame.
    pub async fn attach_shell(
        &self,
        gw: &GatewayProcess,
        scope: &Scope,
        sub: &str,
        timeout: Duration,
    ) -> anyhow::Result<(Opened, Terminal, Value)> {
        let opened = gw.client(&self.token(sub)).open_ok(&scope.nodes[0]).await?;
        let mut term = Terminal::connect(&opened.attach_url).await?;
        let hello = term.hello().await?;
        term.expect_output("$ ", timeout).await?;
        Ok((opened, term, hello))
    }

    /// A valid id_token for `sub`.
    pub fn token(&self, sub: &str) -> String {
        self.sim
            .mint_token(sub)
            .unwrap_or_else(|e| panic!("mint token for {sub:?}: {e}"))
    }

    /// An API client of the first shared gateway for `sub`.
    pub fn client(&self, sub: &str) -> GatewayClient {
        GatewayClient::new(&self.gateway().base, &self.token(sub))
    }

    /// A session as the admin reads it (JSON), if it exists.
    pub async fn session(&self, name: &str) -> anyhow::Result<Option<Value>> {
        let api: Api<NodeShellSession> = Api::all(self.cluster.client(Identity::Admin).await?);
        Ok(api
            .get_opt(name)
            .await?
            .map(|s| serde_json::to_value(s).unwrap_or_default()))
    }

    /// Polls the session until `done` holds; returns it as JSON.
    pub async fn wait_session(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let api: Api<NodeShellSession> = Api::all(self.cluster.client(Identity::Admin).await?);
        let deadline = Instant::now() + timeout;
        loop {
            let current = api
                .get_opt(name)
                .await?
                .map(|s| serde_json::to_value(s).unwrap_or_default());
            if let Some(s) = current.as_ref().filter(|s| done(s)) {
                return Ok(s.clone());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for session {name} to be {what}; last seen status: {}",
                current
                    .map(|s| s["status"].to_string())
                    .unwrap_or_else(|| "<gone>".into())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the session is Closed and returns it.
    pub async fn wait_closed(&self, name: &str, timeout: Duration) -> anyhow::Result<Value> {
        self.wait_session(name, "Closed", timeout, |s| {
            s["status"]["phase"] == "Closed"
        })
        .await
    }

    /// Every session governed by `policy`, as JSON.
    pub async fn sessions_of(&self, policy: &str) -> anyhow::Result<Vec<Value>> {
        let api: Api<NodeShellSession> = Api::all(self.cluster.client(Identity::Admin).await?);
        Ok(api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|s| s.spec.policy_name == policy)
            .map(|s| serde_json::to_value(s).unwrap_or_default())
            .collect())
    }

    /// Ends every live session of the scope (spec.terminate), waits for them to close, and
    /// deletes them.
    pub async fn cleanup_sessions(&self, scope: &Scope) -> anyhow::Result<()> {
        let admin = self.cluster.client(Identity::Admin).await?;
        let sessions: Api<NodeShellSession> = Api::all(admin.clone());
        let all = self.sessions_of(&scope.policy).await?;
        let names: Vec<String> = all
            .iter()
            .filter_map(|s| s["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        for s in &all {
            let phase = s["status"]["phase"].as_str().unwrap_or("Pending");
            if !matches!(phase, "Closed" | "Rejected") && s["spec"]["terminate"] != true {
                let name = s["metadata"]["name"].as_str().unwrap_or_default();
                let _ = sessions
                    .patch(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"terminate": true}})),
                    )
                    .await;
            }
        }
        for name in &names {
            let _ = self
                .wait_session(name, "ended", Duration::from_secs(40), |s| {
                    matches!(s["status"]["phase"].as_str(), Some("Closed" | "Rejected"))
                })
                .await;
            let _ = sessions.delete(name, &DeleteParams::default()).await;
        }
        Ok(())
    }

    /// Ends every live session of the scope (spec.terminate), waits for them to close, then
    /// deletes the scope's sessions, policy and nodes.
    pub async fn cleanup(&self, scope: &Scope) -> anyhow::Result<()> {
        self.cleanup_sessions(scope).await?;
        let admin = self.cluster.client(Identity::Admin).await?;
        let policies: Api<NodeShellPolicy> = Api::all(admin.clone());
        let _ = policies
            .delete(&scope.policy, &DeleteParams::default())
            .await;
        let nodes: Api<Node> = Api::all(admin);
        let selector = ListParams::default().labels(&format!("{SCOPE_LABEL}={}", scope.name));
        for node in nodes.list(&selector).await?.items {
            let _ = nodes
                .delete(&node.name_any(), &DeleteParams::default())
                .await;
        }
        Ok(())
    }

    /// Every Secret in the operator's namespace (admin view).
    pub async fn secrets(&self) -> anyhow::Result<Vec<Secret>> {
        self.secrets_in(SYSTEM_NAMESPACE).await
    }

    /// Every Secret in `namespace` (admin view).
    pub async fn secrets_in(&self, namespace: &str) -> anyhow::Result<Vec<Secret>> {
        let api: Api<Secret> =
            Api::namespaced(self.cluster.client(Identity::Admin).await?, namespace);
        Ok(api.list(&ListParams::default()).await?.items)
    }

    /// Every Event in every namespace (admin view).
    pub async fn events(&self) -> anyhow::Result<Vec<Event>> {
        let api: Api<Event> = Api::all(self.cluster.client(Identity::Admin).await?);
        Ok(api.list(&ListParams::default()).await?.items)
    }

    /// Sets a simulator instance's PingStatus.
    pub fn set_ping(&self, instance: &str, status: PingStatus) {
        self.sim
            .set_ping_status(instance, status)
            .unwrap_or_else(|e| panic!("ping status of {instance}: {e}"));
    }

    /// Every log and output file of the world's processes, concatenated.
    pub fn all_process_output(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("stdout" | "stderr")
                ) {
                    out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
                }
            }
        }
        out
    }
}

/// Options of one gateway process.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// Its name (pod name in `status.gateway.pod`, log file names).
    pub name: String,
    /// Merged into the generated config file.
    pub patch: Value,
    /// Another kubeconfig (e.g. one pointing at a dead apiserver).
    pub kubeconfig: Option<PathBuf>,
    /// More environment for the process (e.g. the static keys of its own AWS identity).
    pub env: Vec<(String, String)>,
}

impl GatewayOptions {
    /// Defaults with a name.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            patch: json!({}),
            kubeconfig: None,
            env: Vec::new(),
        }
    }
}

/// The nodes, instances and policy of one test.
#[derive(Clone, Debug)]
pub struct Scope {
    /// Unique name (also the policy's name and the nodes' scope label).
    pub name: String,
    /// The policy governing the nodes.
    pub policy: String,
    /// Node names.
    pub nodes: Vec<String>,
    /// The simulator instance behind each node.
    pub instances: Vec<String>,
}

//! Helpers shared by the `gateway_*` tests (included with `#[path = "gateway_support.rs"] mod
//! gateway_support;`): a [`GatewayWorld`] per test binary (the real local control plane with
//! CRDs and RBAC, the AWS simulator in-process, `nodeshell controller` and `nodeshell gateway`
//! child processes), per-test [`Scope`]s (own nodes, instances and policy), an HTTP client
//! with id_tokens minted by the simulator, and a WebSocket [`Terminal`] that speaks the
//! gateway's frame protocol.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::{Event, Node, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use nodeshell::api::{NodeShellPolicy, NodeShellSession};
use nodeshell::localcluster::{Identity, LocalCluster, SYSTEM_NAMESPACE};
use nodeshell::sim::{
    InstanceConfig, PingStatus, RoleConfig, SimConfig, SimHandle, Simulator, TestUser,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

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
    let base = SimConfig::for_tests();
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
                name: ROLE_NO_SSM.to_string(),
                ssm_allowed: false,
                ..default_role
            },
        ],
        instances: Vec::new(),
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

// === World ===

/// Everything a gateway test binary shares: control plane, simulator, controllers, gateways.
pub struct GatewayWorld {
    /// The real kube-apiserver + etcd (+ garbage collector).
    pub cluster: &'static LocalCluster,
    /// The AWS simulator, served from its own runtime (tests each have their own).
    pub sim: &'static SimHandle,
    /// The controllers (two, leader-elected).
    pub controllers: Vec<NodeshellProcess>,
    /// The shared gateways (tests that kill a gateway start their own).
    pub gateways: Vec<GatewayProcess>,
    /// Where this world keeps configs and logs.
    pub dir: PathBuf,
}

static WORLD: tokio::sync::OnceCell<GatewayWorld> = tokio::sync::OnceCell::const_new();
static SIM: OnceLock<SimHandle> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// How the shared world is shaped.
#[derive(Clone, Debug)]
pub struct WorldOptions {
    /// Controller processes (leader-elected).
    pub controllers: usize,
    /// Shared gateway processes.
    pub gateways: usize,
}

impl Default for WorldOptions {
    fn default() -> Self {
        Self {
            controllers: 1,
            gateways: 1,
        }
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
                        .start_gateway(GatewayOptions::named(&format!("gw-{i}")))
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

    /// Starts a `nodeshell controller` with short clocks.
    pub fn start_controller(&self, identity: &str) -> anyhow::Result<NodeshellProcess> {
        let args: Vec<String> = [
            "--log-format=json",
            "controller",
            "--kubeconfig",
            &self
                .cluster
                .kubeconfig_path(Identity::Controller)
                .display()
                .to_string(),
            "--namespace",
            SYSTEM_NAMESPACE,
            "--lease-name",
            "nodeshell-controller-gw-e2e",
            "--identity",
            identity,
            "--lease-duration",
            "3s",
            "--lease-renew-grace",
            "1s",
            "--metrics-addr",
            "127.0.0.1:0",
            "--resync-interval",
            "1s",
            "--heartbeat-timeout",
            "15s",
            "--attach-timeout",
            "60s",
            "--backstop-grace",
            "5s",
            "--closing-grace",
            "15s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        NodeshellProcess::spawn(
            &format!("controller-{identity}"),
            &self.dir,
            &args,
            &[("RUST_LOG", "info,kube_lease_manager=warn")],
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
            &[("RUST_LOG", "info"), ("POD_NAME", options.name.as_str())],
        )?;
        let base = wait_for("gateway listening", Duration::from_secs(60), || {
            let found = process.listening_url();
            let exited = process.has_exited();
            let logs = process.logs();
            async move {
                if let Some(url) = found {
                    return Ok(Some(url));
                }
                anyhow::ensure!(!exited, "gateway exited before listening:\n{logs}");
                Ok(None)
            }
        })
        .await?;
        Ok(GatewayProcess {
            name: options.name,
            base,
            process,
        })
    }

    /// The gateway configuration file for `options`.
    pub fn gateway_config(&self, options: &GatewayOptions) -> String {
        let urls = self.sim.urls();
        let mut config = json!({
            "listen": "127.0.0.1:0",
            "clusterName": "e2e",
            "namespace": SYSTEM_NAMESPACE,
            "oidc": {
                "issuerUrl": urls.issuer,
                "clientId": self.sim.config().issuer.client_id,
                "groupsClaim": "groups",
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
        let api: Api<Secret> = Api::namespaced(
            self.cluster.client(Identity::Admin).await?,
            SYSTEM_NAMESPACE,
        );
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
}

impl GatewayOptions {
    /// Defaults with a name.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            patch: json!({}),
            kubeconfig: None,
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

// === processes ===

// Like the control plane's supervisor: the program dies when our pipe closes (also when we
// are SIGKILLed), and the wrapper tells us the program's own pid for signals and /proc.
const WRAPPER: &str = r#"exec 3<&0
"$@" 3<&- &
p=$!
echo "$p" > "$NODESHELL_E2E_PIDFILE"
{ cat <&3 >/dev/null; kill -TERM "$p" 2>/dev/null; sleep 10; kill -KILL "$p" 2>/dev/null; } &
w=$!
exec 3<&-
wait "$p"
s=$?
kill "$w" 2>/dev/null
exit "$s"
"#;

/// A `nodeshell` child process with stdout and stderr captured in separate files.
pub struct NodeshellProcess {
    /// Name used in file names.
    pub name: String,
    /// Captured stdout.
    pub stdout: PathBuf,
    /// Captured stderr.
    pub stderr: PathBuf,
    /// The program's pid (not the wrapper's).
    pub pid: u32,
    wrapper: Mutex<Child>,
    lifeline: Mutex<Option<ChildStdin>>,
}

impl NodeshellProcess {
    /// Spawns `nodeshell <args>` under the lifeline wrapper.
    pub fn spawn(
        name: &str,
        dir: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let pidfile = dir.join(format!("{name}.pid"));
        let _ = std::fs::remove_file(&pidfile);
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("nodeshell-e2e")
            .arg(env!("CARGO_BIN_EXE_nodeshell"))
            .args(args)
            .envs(env.iter().copied())
            .env("NODESHELL_E2E_PIDFILE", &pidfile)
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&stdout)?)
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()?;
        let lifeline = child.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
            {
                break pid;
            }
            anyhow::ensure!(Instant::now() < deadline, "{name}: no pid from the wrapper");
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(Self {
            name: name.to_string(),
            stdout,
            stderr,
            pid,
            wrapper: Mutex::new(child),
            lifeline: Mutex::new(lifeline),
        })
    }

    /// Sends a signal (`KILL`, `TERM`, `STOP`, `CONT`) to the program.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .stderr(Stdio::null())
            .status();
    }

    /// True once the program has exited.
    pub fn has_exited(&self) -> bool {
        let mut child = self.wrapper.lock().unwrap_or_else(|e| e.into_inner());
        !matches!(child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the program to exit; true if it did.
    pub async fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.has_exited() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.has_exited()
    }

    /// Captured stdout so far.
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Captured stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Both, for failure messages (the end of each).
    pub fn logs(&self) -> String {
        let tail = |s: String| {
            let start = s.len().saturating_sub(6000);
            let start = (start..s.len())
                .find(|i| s.is_char_boundary(*i))
                .unwrap_or(s.len());
            s[start..].to_string()
        };
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            tail(self.stdout_text()),
            self.name,
            tail(self.stderr_text())
        )
    }

    /// `http://127.0.0.1:PORT` from the `listening on` line, once printed.
    pub fn listening_url(&self) -> Option<String> {
        let text = format!("{}\n{}", self.stdout_text(), self.stderr_text());
        let at = text.find("listening on http://127.0.0.1:")?;
        let rest = &text[at + "listening on ".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '.')))
            .unwrap_or(rest.len());
        Some(rest[..end].trim_end_matches('/').to_string())
    }

    /// Resident memory of the program, bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    }

    /// Closes the lifeline (SIGTERM through the wrapper) and waits for the exit.
    pub fn stop(&self) {
        self.lifeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.has_exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut child = self.wrapper.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NodeshellProcess {
    fn drop(&mut self) {
        self.signal("KILL");
        self.stop();
    }
}

/// A running `nodeshell gateway`.
pub struct GatewayProcess {
    /// Its name (pod name).
    pub name: String,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The process.
    pub process: NodeshellProcess,
}

impl GatewayProcess {
    /// An API client of this gateway with `token`.
    pub fn client(&self, token: &str) -> GatewayClient {
        GatewayClient::new(&self.base, token)
    }

    /// Audit rows (JSON lines with an `event` or `verb` field) printed on stdout so far.
    pub fn audit_rows(&self) -> Vec<Value> {
        audit_rows(&self.process.stdout_text())
    }
}

/// Audit rows among JSON lines: objects whose `event`, `verb` or `type` is an
/// `ssm_session_*` name.
pub fn audit_rows(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| audit_verb(v).is_some())
        .collect()
}

/// The `ssm_session_*` verb of an audit row.
pub fn audit_verb(row: &Value) -> Option<&str> {
    ["event", "verb", "type", "action"]
        .iter()
        .find_map(|k| row[*k].as_str())
        .filter(|v| v.starts_with("ssm_session_"))
}

// === HTTP ===

/// The gateway's HTTP API with one person's bearer token.
#[derive(Clone, Debug)]
pub struct GatewayClient {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The id_token sent as bearer.
    pub token: String,
    http: reqwest::Client,
}

/// An HTTP answer: status and JSON body (Null when not JSON).
#[derive(Clone, Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Parsed body.
    pub body: Value,
    /// Raw body.
    pub raw: Vec<u8>,
}

impl Answer {
    /// The error code (`E_…`) of an error body.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

impl GatewayClient {
    /// A client for `base` with bearer `token`.
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.to_string(),
            token: token.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Sends a request with the bearer token.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Answer> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let raw = resp.bytes().await?.to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Ok(Answer { status, body, raw })
    }

    /// GET.
    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.request(reqwest::Method::GET, path, None).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Answer> {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Answer> {
        self.request(reqwest::Method::DELETE, path, None).await
    }

    /// `POST /api/v1/nodes/{node}/shell`.
    pub async fn open(&self, node: &str, body: Value) -> anyhow::Result<Answer> {
        self.post(&format!("/api/v1/nodes/{node}/shell"), body)
            .await
    }

    /// Opens a shell and expects 201: `(session, attach URL, ticket)`.
    pub async fn open_ok(&self, node: &str) -> anyhow::Result<Opened> {
        let answer = self.open(node, json!({"cols": 100, "rows": 30})).await?;
        anyhow::ensure!(
            answer.status == 201,
            "open shell on {node}: HTTP {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.raw)
        );
        Opened::from_body(&self.base, &answer.body)
    }

    /// A new ticket for a session (`POST /api/v1/sessions/{name}/ticket`).
    pub async fn ticket(&self, session: &str) -> anyhow::Result<Opened> {
        let answer = self
            .post(&format!("/api/v1/sessions/{session}/ticket"), json!({}))
            .await?;
        anyhow::ensure!(
            answer.status == 200 || answer.status == 201,
            "ticket for {session}: HTTP {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.raw)
        );
        let mut body = answer.body.clone();
        if body["session"].is_null() {
            body["session"] = json!(session);
        }
        Opened::from_body(&self.base, &body)
    }
}

/// What `POST …/shell` (or `…/ticket`) answered.
#[derive(Clone, Debug)]
pub struct Opened {
    /// Session name.
    pub session: String,
    /// Absolute ws:// URL with the ticket.
    pub attach_url: String,
    /// The ticket.
    pub ticket: String,
    /// The full body.
    pub body: Value,
}

impl Opened {
    /// Reads an open (or ticket) answer; relative attach URLs are resolved against `base`.
    pub fn from_body(base: &str, body: &Value) -> anyhow::Result<Self> {
        let session = body["session"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no session in {body}"))?
            .to_string();
        let ticket = body["ticket"].as_str().unwrap_or_default().to_string();
        let attach = body["attachUrl"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("/api/v1/sessions/{session}/attach?ticket={ticket}"));
        let ws_base = base.replacen("http://", "ws://", 1);
        let attach_url = if attach.starts_with("ws://") || attach.starts_with("wss://") {
            attach
        } else if attach.starts_with("http://") {
            attach.replacen("http://", "ws://", 1)
        } else {
            format!("{ws_base}{attach}")
        };
        Ok(Self {
            session,
            attach_url,
            ticket,
            body: body.clone(),
        })
    }
}

// === WebSocket ===

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A browser-side terminal: binary frames are terminal bytes, text frames JSON control.
/// Frames are read only when a method asks, so a test can stop reading on purpose.
pub struct Terminal {
    ws: Ws,
    /// Every terminal byte received, in order.
    pub output: Vec<u8>,
    /// Every control message received, in order.
    pub controls: Vec<Value>,
    /// Set once the socket closed.
    pub closed: bool,
}

impl Terminal {
    /// Connects to an attach URL with the allowed Origin.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_with_origin(url, Some(ORIGIN)).await
    }

    /// Connects with a chosen Origin header (None: no header).
    pub async fn connect_with_origin(url: &str, origin: Option<&str>) -> anyhow::Result<Self> {
        let mut request = url.into_client_request()?;
        if let Some(origin) = origin {
            request.headers_mut().insert("Origin", origin.parse()?);
        }
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(30),
            tokio_tungstenite::connect_async(request),
        )
        .await
        .map_err(|_| anyhow::anyhow!("websocket connect timed out"))??;
        Ok(Self {
            ws,
            output: Vec::new(),
            controls: Vec::new(),
            closed: false,
        })
    }

    /// Reads one frame (or times out); returns false once the socket is closed.
    pub async fn pump(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        if self.closed {
            return Ok(false);
        }
        match tokio::time::timeout(timeout, self.ws.next()).await {
            Err(_) => Ok(true),
            Ok(None) => {
                self.closed = true;
                Ok(false)
            }
            Ok(Some(Err(e))) => {
                self.closed = true;
                match e {
                    tokio_tungstenite::tungstenite::Error::ConnectionClosed
                    | tokio_tungstenite::tungstenite::Error::AlreadyClosed
                    | tokio_tungstenite::tungstenite::Error::Protocol(_)
                    | tokio_tungstenite::tungstenite::Error::Io(_) => Ok(false),
                    other => Err(other.into()),
                }
            }
            Ok(Some(Ok(message))) => {
                match message {
                    Message::Binary(bytes) => self.output.extend_from_slice(&bytes),
                    Message::Text(text) => {
                        let value = serde_json::from_str(text.as_str()).unwrap_or_else(
                            |_| json!({"type": "<not json>", "text": text.as_str()}),
                        );
                        self.controls.push(value);
                    }
                    Message::Close(_) => {
                        self.closed = true;
                        return Ok(false);
                    }
                    _ => {}
                }
                Ok(true)
            }
        }
    }

    /// Reads until `done` holds, the socket closes, or `timeout` passes.
    pub async fn read_until(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Terminal) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            anyhow::ensure!(
                !left.is_zero() && !self.closed,
                "{} waiting for {what}; controls: {:?}; output tail: {:?}",
                if self.closed {
                    "socket closed"
                } else {
                    "timed out"
                },
                self.controls,
                self.output_tail(400)
            );
            self.pump(left.min(Duration::from_millis(500))).await?;
        }
    }

    /// The first control message of `kind` (waits for it).
    pub async fn control(&mut self, kind: &str, timeout: Duration) -> anyhow::Result<Value> {
        self.read_until(&format!("a {kind:?} frame"), timeout, |t| {
            t.find_control(kind).is_some()
        })
        .await?;
        Ok(self.find_control(kind).cloned().unwrap_or_default())
    }

    /// A control message already received.
    pub fn find_control(&self, kind: &str) -> Option<&Value> {
        self.controls.iter().find(|c| c["type"] == kind)
    }

    /// Waits for the `hello` frame.
    pub async fn hello(&mut self) -> anyhow::Result<Value> {
        self.control("hello", Duration::from_secs(30)).await
    }

    /// Waits until the output contains `needle`.
    pub async fn expect_output(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let needle_bytes = needle.as_bytes().to_vec();
        self.read_until(&format!("output {needle:?}"), timeout, move |t| {
            t.output
                .windows(needle_bytes.len().max(1))
                .any(|w| w == needle_bytes.as_slice())
        })
        .await
    }

    /// Waits until the output after `from` contains `needle`; returns the text after `from`.
    pub async fn expect_output_after(
        &mut self,
        from: usize,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let needle_bytes = needle.as_bytes().to_vec();
        self.read_until(&format!("output {needle:?}"), timeout, move |t| {
            t.output
                .get(from..)
                .unwrap_or_default()
                .windows(needle_bytes.len().max(1))
                .any(|w| w == needle_bytes.as_slice())
        })
        .await?;
        Ok(String::from_utf8_lossy(&self.output[from..]).into_owned())
    }

    /// Types `text` (binary frame).
    pub async fn send_input(&mut self, text: &[u8]) -> anyhow::Result<()> {
        self.ws.send(Message::Binary(text.to_vec().into())).await?;
        Ok(())
    }

    /// Sends a JSON control frame.
    pub async fn send_control(&mut self, value: Value) -> anyhow::Result<()> {
        self.ws
            .send(Message::Text(value.to_string().into()))
            .await?;
        Ok(())
    }

    /// `resize {cols, rows}`.
    pub async fn resize(&mut self, cols: u16, rows: u16) -> anyhow::Result<()> {
        self.send_control(json!({"type": "resize", "cols": cols, "rows": rows}))
            .await
    }

    /// Runs a command and waits for a marker printed after it; returns the output of the
    /// command (between the echo of the command line and the marker).
    pub async fn run(&mut self, command: &str, timeout: Duration) -> anyhow::Result<String> {
        let marker = format!("__done_{}__", COUNTER.fetch_add(1, Ordering::SeqCst));
        let from = self.output.len();
        // The marker is printed by `printf` with a split literal so its echo never matches.
        let split = marker.len() / 2;
        let line = format!(
            "{command}; printf '%s%s\\n' '{}' '{}'\r",
            &marker[..split],
            &marker[split..]
        );
        self.send_input(line.as_bytes()).await?;
        let text = self.expect_output_after(from, &marker, timeout).await?;
        let end = text.rfind(&marker).unwrap_or(text.len());
        Ok(text[..end].to_string())
    }

    /// Sends `close` and reads until the `closed` frame.
    pub async fn close(&mut self) -> anyhow::Result<Value> {
        self.send_control(json!({"type": "close"})).await?;
        self.control("closed", Duration::from_secs(30)).await
    }

    /// Drops the connection without a close handshake (a browser tab killed).
    pub fn drop_connection(self) {
        drop(self.ws);
    }

    /// The last `n` bytes of output, as text.
    pub fn output_tail(&self, n: usize) -> String {
        String::from_utf8_lossy(&self.output[self.output.len().saturating_sub(n)..]).into_owned()
    }
}

// === transcripts ===

/// Decompresses gzip data (one or more members: the transcript format).
pub fn gunzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out)?;
    Ok(out)
}

/// The terminal output recorded in an asciicast v2 text (header line, then `[t, "o", data]`).
pub fn asciicast_output(cast: &str) -> anyhow::Result<(Value, String)> {
    let mut lines = cast.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap_or_default())?;
    let mut out = String::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let event: Value = serde_json::from_str(line)?;
        if event[1] == "o" {
            out.push_str(event[2].as_str().unwrap_or_default());
        }
    }
    Ok((header, out))
}

/// The transcript Secrets of a session, ordered by part number.
pub async fn transcript_secrets(
    world: &GatewayWorld,
    session: &str,
) -> anyhow::Result<Vec<Secret>> {
    let prefix = format!("{session}-transcript-");
    let mut parts: Vec<(u64, Secret)> = world
        .secrets()
        .await?
        .into_iter()
        .filter_map(|s| {
            let n = s.name_any().strip_prefix(&prefix)?.parse::<u64>().ok()?;
            Some((n, s))
        })
        .collect();
    parts.sort_by_key(|(n, _)| *n);
    Ok(parts.into_iter().map(|(_, s)| s).collect())
}

/// Every data value of the Secrets, concatenated in part order.
pub fn secret_bytes(secrets: &[Secret]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in secrets {
        let data: BTreeMap<_, _> = s.data.clone().unwrap_or_default();
        for (_, v) in data {
            out.extend_from_slice(&v.0);
        }
    }
    out
}

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

// === polling ===

/// Polls `check` every 100 ms until it returns Some, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deep-merges `patch` into `target` (objects merge, everything else replaces).
pub fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch,
    }
}

/// Shared mutable value for tests (a small convenience around `Arc<Mutex<T>>`).
pub type Shared<T> = Arc<Mutex<T>>;

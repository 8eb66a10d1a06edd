//! Helpers shared by the `controller_*` tests (included with `mod controller_support;`): the
//! shared local control plane, `nodeshell controller` child processes, sample objects, and
//! polling.

#![allow(dead_code)]

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use nodeshell::api::{NodeShellPolicy, NodeShellSession, SessionPhase};
use nodeshell::localcluster::{Identity, LocalCluster, SYSTEM_NAMESPACE};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The shared cluster with CRDs and RBAC installed.
pub async fn cluster() -> anyhow::Result<&'static LocalCluster> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cluster = LocalCluster::shared().await?;
    cluster.install_crds().await?;
    Ok(cluster)
}

/// A `nodeshell controller` child process, killed when dropped.
pub struct ControllerProcess {
    /// Its election identity.
    pub identity: String,
    /// Its log file (JSON lines).
    pub log: PathBuf,
    child: Child,
}

impl ControllerProcess {
    /// Starts `nodeshell controller` as the controller's service account, with short lease
    /// timings and the given extra flags.
    pub fn start(
        cluster: &LocalCluster,
        identity: &str,
        lease: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let log = cluster
            .work_dir()
            .join("logs")
            .join(format!("controller-{identity}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_nodeshell"))
            .arg("--log-format=json")
            .arg("controller")
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig_path(Identity::Controller))
            .args([
                "--namespace",
                SYSTEM_NAMESPACE,
                "--lease-name",
                lease,
                "--identity",
                identity,
            ])
            .args(["--lease-duration", "3s", "--lease-renew-grace", "1s"])
            .args(["--metrics-addr", "127.0.0.1:0", "--resync-interval", "1s"])
            .args(extra)
            .env("RUST_LOG", "info,kube_lease_manager=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()?;
        Ok(Self {
            identity: identity.to_string(),
            log,
            child,
        })
    }

    /// Kills the process at once (SIGKILL: no lease release, as in a node failure).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id (for resource measurements).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The admin server's address, read from the log once it is listening.
    pub async fn admin_addr(&self) -> anyhow::Result<String> {
        let log = self.log.clone();
        wait_for(
            "admin server address in the log",
            Duration::from_secs(30),
            || {
                let log = log.clone();
                async move {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    Ok(text
                        .lines()
                        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                        .find_map(|v| v["fields"]["addr"].as_str().map(str::to_string)))
                }
            },
        )
        .await
    }

    /// The log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP/1.0 GET on loopback: (status code, body).
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

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

/// The current holder of a Lease in the operator's namespace.
pub async fn lease_holder(cluster: &LocalCluster, lease: &str) -> anyhow::Result<Option<String>> {
    let leases: Api<Lease> =
        Api::namespaced(cluster.client(Identity::Admin).await?, SYSTEM_NAMESPACE);
    Ok(leases
        .get_opt(lease)
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
}

/// Applies a valid policy named `name` (tier `engineer`), with `patch` merged into its spec.
pub async fn apply_policy(
    cluster: &LocalCluster,
    name: &str,
    spec_patch: Value,
) -> anyhow::Result<NodeShellPolicy> {
    let mut spec = json!({
        "enabled": true,
        "tiers": ["engineer"],
        "aws": {
            "roleArn": "arn:aws:iam::123456789012:role/nodeshell-test",
            "oidcAudience": "nodeshell-test",
            "region": "us-east-1"
        }
    });
    merge(&mut spec, spec_patch);
    let policy = json!({
        "apiVersion": "nodeshell.periscope.io/v1alpha1",
        "kind": "NodeShellPolicy",
        "metadata": { "name": name },
        "spec": spec,
    });
    let api: Api<NodeShellPolicy> = Api::all(cluster.client(Identity::Admin).await?);
    Ok(api
        .patch(
            name,
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(&policy),
        )
        .await?)
}

/// A session as the gateway would create it.
pub fn session(name: &str, user: &str, policy: &str) -> anyhow::Result<NodeShellSession> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "nodeshell.periscope.io/v1alpha1",
        "kind": "NodeShellSession",
        "metadata": { "name": name },
        "spec": {
            "nodeName": "ip-10-0-1-17.ec2.internal",
            "instanceId": "i-0123456789abcdef0",
            "region": "us-east-1",
            "policyName": policy,
            "user": { "sub": format!("{user}-sub"), "name": user, "tier": "engineer" },
            "roleArn": "arn:aws:iam::123456789012:role/nodeshell-test",
            "roleSessionName": format!("nodeshell-{user}"),
            "documentName": "SSM-SessionManagerRunShell"
        }
    }))?)
}

/// Creates a session as the gateway.
pub async fn create_session(
    cluster: &LocalCluster,
    name: &str,
    user: &str,
    policy: &str,
) -> anyhow::Result<NodeShellSession> {
    let api: Api<NodeShellSession> = Api::all(cluster.client(Identity::Gateway).await?);
    Ok(api
        .create(&PostParams::default(), &session(name, user, policy)?)
        .await?)
}

/// Every session whose name starts with `prefix`.
pub async fn sessions_with_prefix(
    cluster: &LocalCluster,
    prefix: &str,
) -> anyhow::Result<Vec<NodeShellSession>> {
    let api: Api<NodeShellSession> = Api::all(cluster.client(Identity::Admin).await?);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|s| s.name_any().starts_with(prefix))
        .collect())
}

/// Waits until the named session satisfies `done`, returning it.
pub async fn wait_session(
    cluster: &LocalCluster,
    name: &str,
    timeout: Duration,
    done: impl Fn(&NodeShellSession) -> bool,
) -> anyhow::Result<NodeShellSession> {
    let api: Api<NodeShellSession> = Api::all(cluster.client(Identity::Admin).await?);
    let deadline = Instant::now() + timeout;
    loop {
        let current = api.get_opt(name).await?;
        if let Some(s) = current.as_ref().filter(|s| done(s)) {
            return Ok(s.clone());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for session {name}; last seen: {:?}",
            current.map(|s| s.status)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the named session is in `phase` (with `reason`, when given).
pub async fn wait_phase(
    cluster: &LocalCluster,
    name: &str,
    phase: SessionPhase,
    reason: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<NodeShellSession> {
    wait_session(cluster, name, timeout, |s| {
        s.phase() == phase
            && reason
                .is_none_or(|r| s.status.as_ref().and_then(|st| st.reason.as_deref()) == Some(r))
    })
    .await
}

/// A timestamp `offset` from now, as the API writes it.
pub fn time_from_now(offset: SignedDuration) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(Time(
        Timestamp::now().checked_add(offset)?,
    ))?)
}

/// Writes status fields the way a gateway does (server-side apply as the gateway).
pub async fn gateway_status(
    cluster: &LocalCluster,
    name: &str,
    status: Value,
) -> anyhow::Result<NodeShellSession> {
    let api: Api<NodeShellSession> = Api::all(cluster.client(Identity::Gateway).await?);
    let patch = json!({
        "apiVersion": "nodeshell.periscope.io/v1alpha1",
        "kind": "NodeShellSession",
        "metadata": { "name": name },
        "status": status,
    });
    Ok(api
        .patch_status(
            name,
            &PatchParams::apply("nodeshell-gateway").force(),
            &Patch::Apply(&patch),
        )
        .await?)
}

/// The replica and sequence number recorded in a session's Admitted condition.
pub fn decided_by(session: &NodeShellSession) -> Option<(String, u64)> {
    let condition = session
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Admitted")?;
    let rest = condition.message.split("replica ").nth(1)?;
    let (replica, rest) = rest.split_once(" (decision ")?;
    let seq = rest.split(')').next()?.parse().ok()?;
    Some((replica.to_string(), seq))
}

/// Managers that wrote a session's status subresource.
pub fn status_managers(session: &NodeShellSession) -> Vec<String> {
    session
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .filter_map(|m| m.manager.clone())
        .collect()
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch,
    }
}

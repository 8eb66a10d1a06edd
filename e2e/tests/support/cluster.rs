//! The shared local control plane (the real kube-apiserver and etcd) and helpers that talk to
//! it: objects created as one identity or another, session polling, Leases, `kubectl`.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use nodeshell::api::{NodeShellPolicy, NodeShellSession, SessionPhase};
use nodeshell::localcluster::{Identity, LocalCluster, SYSTEM_NAMESPACE};
use serde_json::{Value, json};

use super::json::{SESSION_INSTANCE, SESSION_NODE, gateway_session, merge, session_json};

/// The shared cluster with nodeshell's CRDs and RBAC installed.
pub async fn cluster() -> anyhow::Result<&'static LocalCluster> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cluster = LocalCluster::shared().await?;
    cluster.install_crds().await?;
    Ok(cluster)
}

/// A client of another control plane (e.g. `nodeshell dev`'s) from a kubeconfig file.
pub async fn admin_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Creates a session as `identity`.
pub async fn create_session(
    cluster: &LocalCluster,
    identity: Identity,
    name: &str,
    user: &str,
) -> anyhow::Result<NodeShellSession> {
    let api: Api<NodeShellSession> = Api::all(cluster.client(identity).await?);
    let session: NodeShellSession = serde_json::from_value(session_json(name, user))?;
    Ok(api.create(&PostParams::default(), &session).await?)
}

/// Creates a policy as the admin.
pub async fn create_policy(
    cluster: &LocalCluster,
    policy: Value,
) -> Result<NodeShellPolicy, kube::Error> {
    let api: Api<NodeShellPolicy> =
        Api::all(cluster.client(Identity::Admin).await.map_err(to_kube)?);
    let policy: NodeShellPolicy =
        serde_json::from_value(policy).map_err(kube::Error::SerdeError)?;
    api.create(&PostParams::default(), &policy).await
}

fn to_kube(error: nodeshell::localcluster::Error) -> kube::Error {
    match error {
        nodeshell::localcluster::Error::Kube(e) => e,
        other => kube::Error::Service(Box::new(other)),
    }
}

/// The HTTP status code of an API error, if it is one.
pub fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// The apiserver's message of an API error (or the error's text).
pub fn message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// Runs the real `kubectl` with `identity`'s kubeconfig.
pub async fn kubectl(
    cluster: &LocalCluster,
    identity: Identity,
    args: &[&str],
) -> anyhow::Result<Output> {
    Ok(tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path(identity))
        .args(args)
        .output()
        .await?)
}

/// stdout of a `kubectl` run that must succeed.
pub async fn kubectl_ok(
    cluster: &LocalCluster,
    identity: Identity,
    args: &[&str],
) -> anyhow::Result<String> {
    let output = kubectl(cluster, identity, args).await?;
    anyhow::ensure!(
        output.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
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

/// The node a [`gateway_session`] runs on: an EC2-backed node with the instance and zone its
/// spec names, since the controller re-reads the node at admission. Idempotent.
pub async fn ensure_session_node(cluster: &LocalCluster) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(cluster.client(Identity::Admin).await?);
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": SESSION_NODE },
        "spec": { "providerID": format!("aws:///us-east-1a/{SESSION_INSTANCE}") },
    }))?;
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates a [`gateway_session`] as the gateway (and its node, when missing).
pub async fn create_gateway_session(
    cluster: &LocalCluster,
    name: &str,
    user: &str,
    policy: &str,
) -> anyhow::Result<NodeShellSession> {
    ensure_session_node(cluster).await?;
    let api: Api<NodeShellSession> = Api::all(cluster.client(Identity::Gateway).await?);
    Ok(api
        .create(
            &PostParams::default(),
            &gateway_session(name, user, policy)?,
        )
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

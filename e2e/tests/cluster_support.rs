//! Helpers shared by the `cluster_*` tests (included with `mod cluster_support;`): sample
//! objects and a `kubectl` runner bound to the shared local control plane.

#![allow(dead_code)]

use std::process::Output;

use kube::api::{Api, PostParams};
use nodeshell::api::{NodeShellPolicy, NodeShellSession};
use nodeshell::localcluster::{Identity, LocalCluster};
use serde_json::{Value, json};

/// The shared cluster with nodeshell's CRDs and RBAC installed.
pub async fn cluster() -> anyhow::Result<&'static LocalCluster> {
    let cluster = LocalCluster::shared().await?;
    cluster.install_crds().await?;
    Ok(cluster)
}

/// A valid policy spec; tests override fields through `patch`.
pub fn policy_json(name: &str, patch: Value) -> Value {
    let mut policy = json!({
        "apiVersion": "nodeshell.periscope.io/v1alpha1",
        "kind": "NodeShellPolicy",
        "metadata": { "name": name },
        "spec": {
            "enabled": true,
            "tiers": ["engineer", "admin"],
            "aws": {
                "roleArn": "arn:aws:iam::123456789012:role/nodeshell-test",
                "oidcAudience": "nodeshell-test",
                "region": "us-east-1",
                "sessionDurationSeconds": 3600
            },
            "limits": { "maxDurationSeconds": 3600 }
        }
    });
    merge(&mut policy, patch);
    policy
}

/// A valid session spec as the gateway would write it.
pub fn session_json(name: &str, user: &str) -> Value {
    json!({
        "apiVersion": "nodeshell.periscope.io/v1alpha1",
        "kind": "NodeShellSession",
        "metadata": { "name": name },
        "spec": {
            "nodeName": "ip-10-0-1-17.ec2.internal",
            "instanceId": "i-0123456789abcdef0",
            "region": "us-east-1",
            "policyName": "default",
            "user": {
                "sub": format!("{user}-sub"),
                "email": format!("{user}@example.com"),
                "name": user,
                "groups": ["engineers"],
                "tier": "engineer"
            },
            "roleArn": "arn:aws:iam::123456789012:role/nodeshell-test",
            "roleSessionName": format!("nodeshell-{user}"),
            "documentName": "SSM-SessionManagerRunShell",
            "reason": "investigating disk pressure"
        }
    })
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

//! The RBAC manifests in e2e/manifests/rbac, checked with real requests and with
//! `kubectl auth can-i`: auditors read, components do their part, a plain user gets nothing.

mod support;

use futures::TryStreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchParams};
use nodeshell::api::{NodeShellPolicy, NodeShellSession};
use nodeshell::localcluster::{Identity, LocalCluster, SYSTEM_NAMESPACE};
use serde_json::json;
use support::{
    cluster, create_policy, create_session, kubectl, policy_json, session_json, status_code,
};

async fn can_i(cluster: &LocalCluster, identity: Identity, args: &[&str]) -> anyhow::Result<bool> {
    let mut full = vec!["auth", "can-i"];
    full.extend_from_slice(args);
    let output = kubectl(cluster, identity, &full).await?;
    let answer = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    anyhow::ensure!(
        answer == "yes" || answer == "no",
        "kubectl auth can-i said {answer:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(answer == "yes")
}

fn expect_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(error) => assert_eq!(status_code(&error), Some(403), "{what}: {error}"),
        Ok(value) => panic!("{what} was allowed: {value:?}"),
    }
}

#[tokio::test]
async fn auditor_reads_sessions_and_policies_but_changes_nothing() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    create_session(cluster, Identity::Admin, "audited", "frank").await?;
    create_policy(cluster, policy_json("audited-policy", json!({}))).await?;
    let auditor = cluster.client(Identity::Auditor).await?;
    let sessions: Api<NodeShellSession> = Api::all(auditor.clone());
    let policies: Api<NodeShellPolicy> = Api::all(auditor.clone());

    assert_eq!(sessions.get("audited").await?.spec.user.name, "frank");
    assert!(
        sessions
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some("audited"))
    );
    policies.get("audited-policy").await?;
    policies.list(&ListParams::default()).await?;
    // A watch that ends after a second: the request itself must be authorised.
    let events: Vec<_> = sessions
        .watch(&WatchParams::default().timeout(1), "0")
        .await?
        .try_collect()
        .await?;
    assert!(!events.is_empty(), "the watch replayed nothing");

    let session: NodeShellSession = serde_json::from_value(session_json("auditor-made", "frank"))?;
    expect_forbidden(
        sessions.create(&PostParams::default(), &session).await,
        "auditor create session",
    );
    expect_forbidden(
        sessions
            .patch(
                "audited",
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": { "terminate": true } })),
            )
            .await,
        "auditor patch session",
    );
    expect_forbidden(
        sessions
            .patch_status(
                "audited",
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": { "phase": "Closed" } })),
            )
            .await,
        "auditor patch session status",
    );
    expect_forbidden(
        policies
            .patch(
                "audited-policy",
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": { "enabled": false } })),
            )
            .await,
        "auditor patch policy",
    );
    expect_forbidden(
        sessions.delete("audited", &Default::default()).await,
        "auditor delete session",
    );
    let secrets: Api<Secret> = Api::namespaced(auditor, SYSTEM_NAMESPACE);
    expect_forbidden(
        secrets.list(&ListParams::default()).await,
        "auditor list transcript secrets",
    );
    Ok(())
}

#[tokio::test]
async fn auditor_permissions_through_kubectl_auth_can_i() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    for verb in ["get", "list", "watch"] {
        for resource in ["nodeshellsessions", "nodeshellpolicies", "nss", "nsp"] {
            assert!(
                can_i(cluster, Identity::Auditor, &[verb, resource]).await?,
                "auditor {verb} {resource}"
            );
        }
    }
    for verb in ["create", "patch", "update", "delete"] {
        for resource in ["nodeshellsessions", "nodeshellpolicies"] {
            assert!(
                !can_i(cluster, Identity::Auditor, &[verb, resource]).await?,
                "auditor {verb} {resource}"
            );
        }
    }
    assert!(
        !can_i(
            cluster,
            Identity::Auditor,
            &["get", "secrets", "-n", SYSTEM_NAMESPACE]
        )
        .await?
    );
    Ok(())
}

#[tokio::test]
async fn a_plain_user_cannot_create_or_read_sessions() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let alice = cluster.client(Identity::Alice).await?;
    let sessions: Api<NodeShellSession> = Api::all(alice.clone());
    let session: NodeShellSession = serde_json::from_value(session_json("alice-own", "alice"))?;
    expect_forbidden(
        sessions.create(&PostParams::default(), &session).await,
        "alice create session",
    );
    expect_forbidden(
        sessions.list(&ListParams::default()).await,
        "alice list sessions",
    );
    let policies: Api<NodeShellPolicy> = Api::all(alice);
    expect_forbidden(
        policies.list(&ListParams::default()).await,
        "alice list policies",
    );

    assert!(!can_i(cluster, Identity::Alice, &["create", "nodeshellsessions"]).await?);
    assert!(!can_i(cluster, Identity::Alice, &["list", "nodeshellsessions"]).await?);
    // The admin asking on alice's behalf gets the same answer.
    assert!(
        !can_i(
            cluster,
            Identity::Admin,
            &["create", "nodeshellsessions", "--as", "alice"]
        )
        .await?
    );
    Ok(())
}

#[tokio::test]
async fn the_gateway_creates_sessions_and_the_controller_decides_them() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    create_session(cluster, Identity::Gateway, "gateway-made", "grace").await?;
    let controller: Api<NodeShellSession> = Api::all(cluster.client(Identity::Controller).await?);
    controller
        .patch_status(
            "gateway-made",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": { "phase": "Admitted" } })),
        )
        .await?;
    let session: NodeShellSession =
        serde_json::from_value(session_json("controller-made", "grace"))?;
    expect_forbidden(
        controller.create(&PostParams::default(), &session).await,
        "controller create session",
    );

    let gateway_user = Identity::Gateway.user_name();
    let controller_user = Identity::Controller.user_name();
    let admin = Identity::Admin;
    assert!(
        can_i(
            cluster,
            admin,
            &["create", "nodeshellsessions", "--as", gateway_user]
        )
        .await?
    );
    assert!(
        !can_i(
            cluster,
            admin,
            &["delete", "nodeshellsessions", "--as", gateway_user]
        )
        .await?
    );
    assert!(
        can_i(
            cluster,
            admin,
            &[
                "create",
                "secrets",
                "-n",
                SYSTEM_NAMESPACE,
                "--as",
                gateway_user
            ]
        )
        .await?
    );
    assert!(
        !can_i(
            cluster,
            admin,
            &["create", "secrets", "-n", "default", "--as", gateway_user]
        )
        .await?
    );
    assert!(
        can_i(
            cluster,
            admin,
            &["delete", "nodeshellsessions", "--as", controller_user]
        )
        .await?
    );
    assert!(
        can_i(
            cluster,
            admin,
            &[
                "patch",
                "nodeshellsessions",
                "--subresource",
                "status",
                "--as",
                controller_user
            ]
        )
        .await?
    );
    assert!(
        can_i(
            cluster,
            admin,
            &[
                "create",
                "leases",
                "-n",
                SYSTEM_NAMESPACE,
                "--as",
                controller_user
            ]
        )
        .await?
    );
    // The gateway keeps its own Lease (its liveness) in the operator's namespace, and only
    // there; the controller reads the gateways' Leases from a watch.
    for verb in ["create", "get", "patch", "update", "delete"] {
        assert!(
            can_i(
                cluster,
                admin,
                &[verb, "leases", "-n", SYSTEM_NAMESPACE, "--as", gateway_user]
            )
            .await?,
            "gateway {verb} leases"
        );
    }
    assert!(
        !can_i(
            cluster,
            admin,
            &["create", "leases", "-n", "default", "--as", gateway_user]
        )
        .await?
    );
    for verb in ["get", "list", "watch"] {
        assert!(
            can_i(
                cluster,
                admin,
                &[
                    verb,
                    "leases",
                    "-n",
                    SYSTEM_NAMESPACE,
                    "--as",
                    controller_user
                ]
            )
            .await?,
            "controller {verb} leases"
        );
    }
    assert!(
        !can_i(
            cluster,
            admin,
            &["create", "nodeshellsessions", "--as", controller_user]
        )
        .await?
    );
    assert!(
        !can_i(
            cluster,
            admin,
            &["patch", "nodeshellpolicies", "--as", controller_user]
        )
        .await?
    );
    // Retention removes transcripts with one deletecollection by type and label: the
    // controller may not read any Secret, nor delete one by name.
    for (verb, want) in [
        ("deletecollection", true),
        ("get", false),
        ("list", false),
        ("watch", false),
        ("delete", false),
    ] {
        assert_eq!(
            can_i(
                cluster,
                admin,
                &[
                    verb,
                    "secrets",
                    "-n",
                    SYSTEM_NAMESPACE,
                    "--as",
                    controller_user
                ]
            )
            .await?,
            want,
            "controller {verb} secrets"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_session_admin_may_only_terminate() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    create_session(cluster, Identity::Admin, "to-terminate", "heidi").await?;
    let oncall: Api<NodeShellSession> = Api::all(cluster.client(Identity::SessionAdmin).await?);
    let patched = oncall
        .patch(
            "to-terminate",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "terminate": true } })),
        )
        .await?;
    assert!(patched.spec.terminate);
    let session: NodeShellSession = serde_json::from_value(session_json("oncall-made", "heidi"))?;
    expect_forbidden(
        oncall.create(&PostParams::default(), &session).await,
        "session admin create",
    );
    expect_forbidden(
        oncall.delete("to-terminate", &Default::default()).await,
        "session admin delete",
    );
    Ok(())
}

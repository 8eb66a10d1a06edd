//! The local control plane itself: it starts, authenticates every identity, enforces RBAC,
//! collects garbage, serves CRDs applied through the harness, and cleans up after itself.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use nodeshell::localcluster::{Identity, LocalCluster, Options, SYSTEM_NAMESPACE};

fn forbidden(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 403)
}

#[tokio::test]
async fn admin_is_ready_and_lists_namespaces() -> anyhow::Result<()> {
    let cluster = LocalCluster::shared().await?;
    let admin = cluster.client(Identity::Admin).await?;
    let readyz = admin
        .request_text(http::Request::get("/readyz").body(Vec::new())?)
        .await?;
    assert_eq!(readyz.trim(), "ok");
    let namespaces: Api<Namespace> = Api::all(admin);
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|ns| ns.metadata.name)
        .collect();
    assert!(names.iter().any(|n| n == "default"), "{names:?}");
    assert!(
        names.iter().any(|n| n == SYSTEM_NAMESPACE),
        "RBAC namespace missing: {names:?}"
    );
    Ok(())
}

#[tokio::test]
async fn alice_may_not_list_secrets() -> anyhow::Result<()> {
    let cluster = LocalCluster::shared().await?;
    let alice = cluster.client(Identity::Alice).await?;
    let secrets: Api<Secret> = Api::namespaced(alice, "default");
    let error = secrets
        .list(&ListParams::default())
        .await
        .expect_err("alice has no role that reads secrets");
    assert!(forbidden(&error), "{error}");
    if let kube::Error::Api(status) = &error {
        // The apiserver knew who asked: authentication by token worked.
        assert!(status.message.contains("\"alice\""), "{}", status.message);
    }
    Ok(())
}

#[tokio::test]
async fn controller_reads_no_secret_in_any_namespace() -> anyhow::Result<()> {
    // Retention deletes transcripts by a collection delete selected by type and label; the
    // controller never lists or reads a Secret, not even in its own namespace.
    let cluster = LocalCluster::shared().await?;
    let controller = cluster.client(Identity::Controller).await?;
    for namespace in [SYSTEM_NAMESPACE, "default"] {
        let secrets: Api<Secret> = Api::namespaced(controller.clone(), namespace);
        let listed = secrets
            .list(&ListParams::default())
            .await
            .expect_err("the controller may not list Secrets");
        assert!(forbidden(&listed), "{namespace}: {listed}");
        let read = secrets
            .get("any-secret")
            .await
            .expect_err("the controller may not read a Secret");
        assert!(forbidden(&read), "{namespace}: {read}");
    }
    Ok(())
}

#[tokio::test]
async fn kubectl_uses_the_written_kubeconfig() -> anyhow::Result<()> {
    let cluster = LocalCluster::shared().await?;
    let output = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path(Identity::Admin))
        .args(["get", "namespace", SYSTEM_NAMESPACE, "-o", "name"])
        .output()
        .await?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "namespace/nodeshell-system"
    );
    let whoami = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path(Identity::Auditor))
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .await?;
    assert!(
        whoami.status.success(),
        "{}",
        String::from_utf8_lossy(&whoami.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&whoami.stdout).trim(), "auditor");
    Ok(())
}

#[tokio::test]
async fn garbage_collector_removes_dependents() -> anyhow::Result<()> {
    let cluster = LocalCluster::shared().await?;
    let admin = cluster.client(Identity::Admin).await?;
    let maps: Api<ConfigMap> = Api::namespaced(admin, "default");
    let owner = maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": { "name": "smoke-owner" }
            }))?,
        )
        .await?;
    let uid = owner.metadata.uid.clone().unwrap_or_default();
    maps.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "smoke-dependent",
                "ownerReferences": [{
                    "apiVersion": "v1", "kind": "ConfigMap", "name": "smoke-owner", "uid": uid
                }]
            }
        }))?,
    )
    .await?;
    maps.delete("smoke-owner", &DeleteParams::background())
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while maps.get_opt("smoke-dependent").await?.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the garbage collector did not delete the dependent; see {}",
            cluster.log_path("kube-controller-manager").display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

#[tokio::test]
async fn a_crd_applied_through_the_harness_is_served() -> anyhow::Result<()> {
    let cluster = LocalCluster::shared().await?;
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.nodeshell.test
spec:
  group: smoke.nodeshell.test
  scope: Cluster
  names: { plural: widgets, singular: widget, kind: Widget }
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: { type: integer, minimum: 1 }
---
apiVersion: smoke.nodeshell.test/v1
kind: Widget
metadata:
  name: first
spec:
  size: 3
"#;
    let applied = cluster.apply_yaml(crd).await?;
    assert_eq!(
        applied,
        vec![
            "CustomResourceDefinition/widgets.smoke.nodeshell.test",
            "Widget/first"
        ]
    );
    let gvk = GroupVersionKind::gvk("smoke.nodeshell.test", "v1", "Widget");
    let widgets: Api<DynamicObject> = Api::all_with(
        cluster.client(Identity::Admin).await?,
        &ApiResource::from_gvk(&gvk),
    );
    assert_eq!(widgets.get("first").await?.data["spec"]["size"], 3);
    let invalid = cluster
        .apply_yaml("apiVersion: smoke.nodeshell.test/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {size: 0}\n")
        .await
        .expect_err("schema says minimum 1");
    assert!(invalid.to_string().contains("size"), "{invalid}");
    Ok(())
}

#[tokio::test]
async fn a_stopped_cluster_leaves_nothing_behind() -> anyhow::Result<()> {
    let mut cluster = LocalCluster::start(Options::default()).await?;
    let work_dir = cluster.work_dir().to_path_buf();
    let port: u16 = cluster
        .server()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("server URL ends with the port");
    assert!(work_dir.exists());
    cluster.stop();
    assert!(!work_dir.exists(), "{} survived stop()", work_dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the apiserver still listens on {port}"
    );
    Ok(())
}

#[tokio::test]
async fn manifests_from_a_directory_apply_in_file_order_and_idempotently() -> anyhow::Result<()> {
    let cluster = LocalCluster::shared().await?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/manifests/rbac");
    let applied = cluster.apply_manifests(&dir).await?;
    assert_eq!(
        applied.first().map(String::as_str),
        Some("Namespace/nodeshell-system")
    );
    assert!(
        applied.contains(&"ClusterRole/nodeshell-auditor".to_owned()),
        "{applied:?}"
    );
    assert!(
        applied.contains(&"RoleBinding/nodeshell-gateway".to_owned()),
        "{applied:?}"
    );
    // A second apply changes nothing and fails on nothing.
    assert_eq!(cluster.apply_manifests(&dir).await?, applied);
    Ok(())
}

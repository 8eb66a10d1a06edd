//! What an auditor sees with the real `kubectl`: the printer columns of both kinds, the
//! short names, and field documentation through `kubectl explain`.

mod support;

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use nodeshell::api::NodeShellSession;
use nodeshell::localcluster::Identity;
use serde_json::json;
use support::{cluster, create_policy, create_session, kubectl, kubectl_ok, policy_json};

fn header(table: &str) -> Vec<String> {
    table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn row<'a>(table: &'a str, name: &str) -> Option<Vec<&'a str>> {
    table
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&name))
}

#[tokio::test]
async fn get_nodeshellsessions_shows_the_session_columns() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    create_session(cluster, Identity::Admin, "columns-closed", "erin").await?;
    let sessions: Api<NodeShellSession> = Api::all(cluster.client(Identity::Admin).await?);
    sessions
        .patch_status(
            "columns-closed",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({ "status": { "phase": "Closed", "reason": "UserExit", "exitCode": 0 } }),
            ),
        )
        .await?;

    let table = kubectl_ok(cluster, Identity::Auditor, &["get", "nodeshellsessions"]).await?;
    assert_eq!(
        header(&table),
        ["NAME", "USER", "NODE", "PHASE", "REASON", "EXIT", "AGE"],
        "{table}"
    );
    let cells = row(&table, "columns-closed").unwrap_or_else(|| panic!("no row in\n{table}"));
    assert_eq!(
        &cells[1..6],
        [
            "erin",
            "ip-10-0-1-17.ec2.internal",
            "Closed",
            "UserExit",
            "0"
        ],
        "{table}"
    );

    let short = kubectl_ok(
        cluster,
        Identity::Auditor,
        &["get", "nss", "columns-closed"],
    )
    .await?;
    assert!(short.contains("UserExit"), "{short}");
    Ok(())
}

#[tokio::test]
async fn get_nsp_shows_the_policy_columns() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    create_policy(cluster, policy_json("columns-policy", json!({}))).await?;
    let table = kubectl_ok(cluster, Identity::Auditor, &["get", "nsp"]).await?;
    assert_eq!(
        header(&table),
        ["NAME", "ENABLED", "TIERS", "ACTIVE", "READY", "AGE"],
        "{table}"
    );
    let cells = row(&table, "columns-policy").unwrap_or_else(|| panic!("no row in\n{table}"));
    assert_eq!(cells[1], "true", "{table}");
    assert!(cells[2].contains("engineer"), "{table}");
    Ok(())
}

#[tokio::test]
async fn kubectl_explain_shows_field_docs() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    // The apiserver publishes a new CRD's OpenAPI a moment after it is Established.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let explained = loop {
        let output = kubectl(
            cluster,
            Identity::Admin,
            &["explain", "nodeshellsession.spec"],
        )
        .await?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() && stdout.contains("nodeName") {
            break stdout;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "kubectl explain never showed the schema: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for text in [
        "nodeName",
        "instanceId",
        "terminate",
        "Name of the Kubernetes node",
    ] {
        assert!(
            explained.contains(text),
            "{text} missing from:\n{explained}"
        );
    }
    let user = kubectl_ok(
        cluster,
        Identity::Admin,
        &["explain", "nodeshellsession.spec.user.sub"],
    )
    .await?;
    assert!(user.contains("OIDC subject"), "{user}");
    Ok(())
}

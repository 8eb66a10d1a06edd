//! Audit rows for a SIEM (issue 14 §5): the rows a running gateway writes for a real
//! session (opened with a typed reason, used, exited) match the published, versioned JSON
//! Schema (docs/audit-row.schema.json), carry the source address, user agent, typed reason,
//! policy and gateway, and the typed reason reaches SSM's StartSession `Reason`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const T: Duration = Duration::from_secs(60);

fn validator() -> jsonschema::Validator {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/audit-row.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_audit_rows_match_the_published_schema_and_carry_who_where_why() -> anyhow::Result<()>
{
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("audit-schema", 1, json!({})).await?;
    let node = scope.nodes[0].clone();
    let user = engineer(1);
    let api = world.client(&user);
    let typed = "INC-4711: kubelet stuck\non this node";
    let opened = api
        .open(&node, json!({"reason": typed, "cols": 80, "rows": 24}))
        .await?;
    assert_eq!(opened.status, 201, "{}", opened.body);
    let opened = Opened::from_body(&api.base, &opened.body)?;
    let mut term = Terminal::connect_with_headers(
        &opened.attach_url,
        Some(ORIGIN),
        &[
            ("User-Agent", "kubectl-nodeshell/0.1 (e2e)"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
    )
    .await?;
    term.hello().await?;
    term.expect_output("$ ", T).await?;
    term.send_input(b"exit\n").await?;

    let gw = world.gateway();
    let session = opened.session.clone();
    let rows = wait_for("the session's close row", T, || {
        let rows: Vec<Value> = gw
            .audit_rows()
            .into_iter()
            .filter(|r| r["session"] == session.as_str())
            .collect();
        async move {
            Ok(rows
                .iter()
                .any(|r| audit_verb(r) == Some("ssm_session_close"))
                .then_some(rows))
        }
    })
    .await?;

    // Every row this gateway wrote in this run (other tests' included) fits the schema.
    let validator = validator();
    let all = gw.audit_rows();
    assert!(all.len() >= 2);
    for row in &all {
        let errors: Vec<String> = validator.iter_errors(row).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{row}\n{errors:#?}");
    }
    // Ours say who, from where, why, under which policy, through which gateway.
    let printable = "INC-4711: kubelet stuck on this node";
    for row in &rows {
        assert_eq!(row["schema"], "nodeshell.periscope.io/audit/v1", "{row}");
        assert_eq!(row["policy"], scope.policy.as_str(), "{row}");
        assert_eq!(row["justification"], printable, "{row}");
        assert_eq!(row["client"]["source_address"], "127.0.0.1", "{row}");
        assert!(
            row["gateway"].as_str().is_some_and(|g| !g.is_empty()),
            "{row}"
        );
        assert_eq!(row["client"]["forwarded_for"], "203.0.113.9", "{row}");
        assert_eq!(
            row["client"]["user_agent"], "kubectl-nodeshell/0.1 (e2e)",
            "{row}"
        );
    }
    let ssm_id = rows[0]["session_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The typed reason reached StartSession's Reason (what CloudTrail records), on one line.
    let reason = world
        .sim
        .calls()
        .into_iter()
        .find(|c| c.operation == "StartSession" && c.session_id.as_deref() == Some(&ssm_id))
        .and_then(|c| c.reason)
        .unwrap_or_default();
    assert!(reason.ends_with(&format!(": {printable}")), "{reason}");
    assert!(
        reason.chars().count() <= 256 && !reason.contains('\n'),
        "{reason}"
    );
    world.cleanup(&scope).await?;
    Ok(())
}

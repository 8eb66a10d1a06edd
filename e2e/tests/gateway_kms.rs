//! KMS-encrypted Session Manager sessions through the real gateway, controller, apiserver
//! and simulator: with the account's preferences naming a key, a shell works and its
//! transcript holds the plaintext; a role the key policy denies, and a role whose own
//! permission policy lacks the KMS statement, get `E_KMS_DENIED` naming the statement to add. Its own binary: the preference is account-wide in the simulator,
//! so it would encrypt every other test's sessions too.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const T: Duration = Duration::from_secs(30);
const KEY: &str = "alias/nodeshell-sessions";

#[tokio::test]
async fn an_encrypted_shell_works_and_a_role_kms_denies_gets_e_kms_denied() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    world.sim.set_session_kms_key(Some(KEY));
    let scope = world.scope("kms", 1, json!({})).await?;
    let node = scope.nodes[0].clone();
    let api = world.client(&engineer(1));

    // A shell works: typed input reaches the shell and its output comes back in the clear.
    let opened = api.open(&node, json!({})).await?;
    assert_eq!(opened.status, 201, "{}", opened.body);
    let session = opened.body["session"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let attach = Opened::from_body(&api.base, &opened.body)?;
    let mut term = Terminal::connect(&attach.attach_url).await?;
    let hello = term.hello().await?;
    let ssm_id = hello["ssmSessionId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let out = term.run("echo sealed-$((40+2))", T).await?;
    assert!(out.contains("sealed-42"), "{out:?}");
    term.send_input(b"exit\r").await?;
    let closed = term.control("closed", T).await?;
    assert_eq!(closed["reason"], "UserExit", "{closed}");
    assert!(
        term.find_control("error").is_none(),
        "{:?}",
        term.find_control("error")
    );
    let done = world
        .wait_session(&session, "Closed with a transcript", T, |s| {
            s["status"]["phase"] == "Closed" && !s["status"]["transcript"]["sha256"].is_null()
        })
        .await?;
    assert_eq!(done["status"]["reason"], "UserExit", "{done}");
    let parts = transcript_secrets(world, &session).await?;
    let cast = String::from_utf8(gunzip(&secret_bytes(&parts))?)?;
    let (_, output) = asciicast_output(&cast)?;
    assert!(
        output.contains("sealed-42"),
        "the transcript holds the plaintext: {output:?}"
    );
    // The data key was generated once, as the person, for this session (the other test of
    // this binary shares the simulator under another role).
    let keys: Vec<_> = world
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.operation == "GenerateDataKey" && !by_role(c, ROLE_NO_KMS))
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].error_code, None, "{keys:?}");
    assert!(
        keys[0]
            .principal_arn
            .as_deref()
            .is_some_and(|arn| arn.contains(":assumed-role/nodeshell-user/")),
        "{keys:?}"
    );
    assert_eq!(world.sim.session_status(&ssm_id).map(|s| s.0), Some(true));

    // The key policy denies the role: the terminal gets E_KMS_DENIED with the statement.
    world.sim.set_kms_denied_roles(KEY, &["nodeshell-user"])?;
    let opened = api.open(&node, json!({})).await?;
    assert_eq!(opened.status, 201, "{}", opened.body);
    let denied = opened.body["session"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let attach = Opened::from_body(&api.base, &opened.body)?;
    let mut term = Terminal::connect(&attach.attach_url).await?;
    let error = term.control("error", T).await?;
    assert_eq!(error["code"], "E_KMS_DENIED", "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains(KEY), "{message}");
    assert!(
        message.contains(r#""Action": "kms:GenerateDataKey""#),
        "names the statement: {message}"
    );
    assert!(
        message.contains("is not authorized to perform: kms:GenerateDataKey"),
        "quotes KMS: {message}"
    );
    let closed = term.control("closed", T).await?;
    assert_eq!(closed["reason"], "StartFailed", "{closed}");
    let st = world.wait_closed(&denied, T).await?;
    assert_eq!(st["status"]["reason"], "StartFailed", "{st}");
    assert!(
        st["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("kms:GenerateDataKey")),
        "{st}"
    );
    let refused = world
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.operation == "GenerateDataKey" && !by_role(c, ROLE_NO_KMS))
        .filter_map(|c| c.error_code)
        .collect::<Vec<_>>();
    assert_eq!(refused, vec!["AccessDeniedException".to_string()]);
    world.cleanup(&scope).await?;
    Ok(())
}

#[tokio::test]
async fn a_role_without_the_kms_statement_gets_e_kms_denied_with_iams_implicit_deny()
-> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    world.sim.set_session_kms_key(Some(KEY));
    let scope = world
        .scope(
            "nokms",
            1,
            json!({"aws": {"roleArn": world.sim.role_arn(ROLE_NO_KMS)}}),
        )
        .await?;
    let node = scope.nodes[0].clone();
    let api = world.client(&engineer(2));
    let opened = api.open(&node, json!({})).await?;
    assert_eq!(opened.status, 201, "{}", opened.body);
    let session = opened.body["session"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let attach = Opened::from_body(&api.base, &opened.body)?;
    let mut term = Terminal::connect(&attach.attach_url).await?;
    let error = term.control("error", T).await?;
    assert_eq!(error["code"], "E_KMS_DENIED", "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(r#""Action": "kms:GenerateDataKey""#),
        "names the statement: {message}"
    );
    assert!(
        message.contains(&format!(
            "assumed-role/{ROLE_NO_KMS}/nodeshell-eng-02 is not authorized to perform: kms:GenerateDataKey"
        )),
        "quotes KMS on the person's role: {message}"
    );
    assert!(
        message.contains("because no identity-based policy allows the kms:GenerateDataKey action"),
        "IAM's implicit deny, not the key policy's: {message}"
    );
    let closed = term.control("closed", T).await?;
    assert_eq!(closed["reason"], "StartFailed", "{closed}");
    let st = world.wait_closed(&session, T).await?;
    assert_eq!(st["status"]["reason"], "StartFailed", "{st}");
    let refused: Vec<_> = world
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.operation == "GenerateDataKey" && by_role(c, ROLE_NO_KMS))
        .map(|c| c.error_code)
        .collect();
    assert_eq!(refused, vec![Some("AccessDeniedException".to_string())]);
    world.cleanup(&scope).await?;
    Ok(())
}

/// Whether the call was made under an assumed role of `role`.
fn by_role(call: &nodeshell::sim::CallRecord, role: &str) -> bool {
    call.principal_arn
        .as_deref()
        .is_some_and(|arn| arn.contains(&format!(":assumed-role/{role}/")))
}

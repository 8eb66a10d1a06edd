//! Every error code of design §5, provoked through the real gateway, controller, apiserver and
//! simulator, with the HTTP status and the extra fields a client relies on.

use std::time::Duration;

use crate::support::*;
use nodeshell::sim::{BadToken, PingStatus};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

/// Where an error surfaced: the HTTP answer of `POST …/shell`, or the attach's `error` frame.
#[derive(Debug)]
enum Surfaced {
    Http(Answer),
    Frame(Value),
}

impl Surfaced {
    fn code(&self) -> &str {
        match self {
            Surfaced::Http(a) => a.code(),
            Surfaced::Frame(f) => f["code"].as_str().unwrap_or(""),
        }
    }
}

/// Opens a shell and, if the open is accepted, attaches: returns the first error met.
async fn open_until_error(api: &GatewayClient, node: &str) -> anyhow::Result<Surfaced> {
    let answer = api.open(node, json!({})).await?;
    if answer.status != 201 {
        return Ok(Surfaced::Http(answer));
    }
    let opened = Opened::from_body(&api.base, &answer.body)?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    term.read_until("an error frame", T, |t| t.find_control("error").is_some())
        .await?;
    Ok(Surfaced::Frame(
        term.find_control("error").cloned().unwrap_or_default(),
    ))
}

/// Asserts an HTTP error answer: status, code, a non-empty message.
fn assert_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(
        (answer.status, answer.code()),
        (status, code),
        "body: {}",
        String::from_utf8_lossy(&answer.raw)
    );
    assert!(
        answer.body["message"]
            .as_str()
            .is_some_and(|m| m.len() > 10),
        "{code} says what to do: {}",
        answer.body
    );
}

#[tokio::test]
async fn bad_tokens_are_refused_with_e_auth() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("auth", 1, json!({})).await?;
    let node = &scope.nodes[0];
    let sub = engineer(10);
    let gw = &world.gateway().base;
    let mut cases: Vec<(String, String)> = [
        ("forged signature", BadToken::ForgedSignature),
        ("alg none", BadToken::AlgNone),
        ("HS256 keyed with the public key", BadToken::Hs256),
        ("expired", BadToken::Expired),
        ("wrong audience", BadToken::WrongAudience),
        ("wrong issuer", BadToken::WrongIssuer),
        ("unknown kid", BadToken::UnknownKid),
    ]
    .into_iter()
    .map(|(what, kind)| {
        (
            what.to_string(),
            world.sim.mint_bad_token(&sub, kind).unwrap_or_default(),
        )
    })
    .collect();
    cases.push(("garbage".into(), "not-a-jwt".into()));
    cases.push((
        "audience of another client".into(),
        world.sim.mint_token_with(&sub, "someone-else", 600)?,
    ));
    for (what, token) in &cases {
        let api = GatewayClient::new(gw, token);
        for answer in [
            api.get("/api/v1/nodes").await?,
            api.open(node, json!({})).await?,
            api.get("/api/v1/sessions").await?,
        ] {
            assert_eq!(
                (answer.status, answer.code()),
                (401, "E_AUTH"),
                "{what}: {}",
                answer.body
            );
        }
    }
    // No header at all.
    let none = reqwest::get(format!("{gw}/api/v1/nodes")).await?;
    assert_eq!(none.status(), 401);
    let body: Value = none.json().await?;
    assert_eq!(body["code"], "E_AUTH", "{body}");
    // A good token still works, and nothing above created a session.
    assert_eq!(world.client(&sub).get("/api/v1/nodes").await?.status, 200);
    assert!(world.sessions_of(&scope.policy).await?.is_empty());
    world.cleanup(&scope).await
}

#[tokio::test]
async fn policy_and_node_gates_answer_their_codes() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("gates", 1, json!({})).await?;
    let node = scope.nodes[0].clone();
    let eng = world.client(&engineer(11));

    // Tier not allowed: 403 with the caller's tier and the allowed ones.
    let viewer = world.client(VIEWER);
    let answer = viewer.open(&node, json!({})).await?;
    assert_error(&answer, 403, "E_FORBIDDEN");
    assert_eq!(answer.body["tier"], "viewer", "{}", answer.body);
    assert_eq!(answer.body["allowed_tiers"], json!(["admin", "engineer"]));

    // Unknown node, unknown session.
    assert_error(
        &eng.open("no-such-node", json!({})).await?,
        404,
        "E_NOT_FOUND",
    );
    assert_error(
        &eng.get("/api/v1/sessions/no-such-session").await?,
        404,
        "E_NOT_FOUND",
    );

    // A node without an EC2 providerID.
    let onprem = world.add_non_ec2_node(&scope).await?;
    assert_error(&eng.open(&onprem, json!({})).await?, 404, "E_NODE_NOT_EC2");
    let pre = eng
        .get(&format!("/api/v1/nodes/{onprem}/shell/preflight"))
        .await?;
    assert!(
        pre.body.to_string().contains("providerID") || pre.status == 404,
        "{}",
        pre.body
    );

    // Malformed bodies.
    let bad = eng
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/nodes/{node}/shell"),
            None,
        )
        .await;
    let _ = bad?; // an empty body is allowed (every field is optional)
    let answer = eng.open(&node, json!({"cols": "wide"})).await?;
    assert_error(&answer, 400, "E_BAD_REQUEST");
    let answer = eng.open(&node, json!({"cols": 0, "rows": 100000})).await?;
    assert_error(&answer, 400, "E_BAD_REQUEST");

    // The policy is disabled.
    world
        .apply_policy(&scope.policy, &scope.name, json!({"enabled": false}))
        .await?;
    wait_code(&eng, &node, 403, "E_NODE_SHELL_DISABLED").await?;

    // No role.
    world
        .apply_policy(
            &scope.policy,
            &scope.name,
            json!({"enabled": true, "aws": {"roleArn": null}}),
        )
        .await?;
    wait_code(&eng, &node, 403, "E_NODE_SHELL_NO_ROLE").await?;

    // The policy's audience is not the one in the person's token.
    world
        .apply_policy(
            &scope.policy,
            &scope.name,
            json!({"aws": {"roleArn": world.sim.default_role_arn(), "oidcAudience": "other-client"}}),
        )
        .await?;
    let answer = wait_code(&eng, &node, 403, "E_NODE_SHELL_AUD_MISMATCH").await?;
    assert_eq!(
        answer.body["expected_aud"], "other-client",
        "{}",
        answer.body
    );

    // The role's trust policy refuses the person.
    world
        .apply_policy(
            &scope.policy,
            &scope.name,
            json!({"aws": {"roleArn": world.sim.role_arn(ROLE_STRICT), "oidcAudience": world.sim.config().issuer.client_id}}),
        )
        .await?;
    let surfaced = open_until_error(&eng, &node).await?;
    assert_eq!(surfaced.code(), "E_NODE_SHELL_TRUST_DENIED", "{surfaced:?}");
    if let Surfaced::Http(a) = &surfaced {
        assert_eq!(a.status, 403);
    }
    let pre = eng
        .get(&format!("/api/v1/nodes/{node}/shell/preflight"))
        .await?;
    assert!(
        pre.body.to_string().contains("false") || pre.body.to_string().contains("fail"),
        "preflight shows the AssumeRole gate failing: {}",
        pre.body
    );

    // The role may not call SSM: the agent check at open already fails.
    world
        .apply_policy(
            &scope.policy,
            &scope.name,
            json!({"aws": {"roleArn": world.sim.role_arn(ROLE_NO_SSM)}}),
        )
        .await?;
    let surfaced = open_until_error(&eng, &node).await?;
    assert_eq!(surfaced.code(), "E_NODE_SHELL_START_FAILED", "{surfaced:?}");
    if let Surfaced::Http(a) = &surfaced {
        assert_eq!(a.status, 502);
    }

    // SSM refuses StartSession itself (a document it does not know): the open is admitted,
    // the attach gets the error frame and the session ends as StartFailed.
    world
        .apply_policy(
            &scope.policy,
            &scope.name,
            json!({"aws": {"roleArn": world.sim.default_role_arn(), "documentName": "NoSuch-Document"}}),
        )
        .await?;
    let answer = wait_for("an admitted open", T, || async {
        let a = eng.open(&node, json!({})).await?;
        Ok((a.status == 201).then_some(a))
    })
    .await?;
    let opened = Opened::from_body(&eng.base, &answer.body)?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    let error = term.control("error", T).await?;
    assert_eq!(error["code"], "E_NODE_SHELL_START_FAILED", "{error}");
    assert!(term.find_control("hello").is_none(), "{:?}", term.controls);
    let cr = world.wait_closed(&opened.session, T).await?;
    assert_eq!(cr["status"]["reason"], "StartFailed", "{}", cr["status"]);
    let refused = world.sim.calls().into_iter().any(|c| {
        c.operation == "StartSession" && c.error_code.as_deref() == Some("InvalidDocument")
    });
    assert!(refused, "the simulator refused StartSession");
    world.cleanup(&scope).await
}

/// Retries an open until it answers `code` (the gateway's policy cache follows the
/// apiserver's watch), then asserts the status and message.
async fn wait_code(
    api: &GatewayClient,
    node: &str,
    status: u16,
    code: &str,
) -> anyhow::Result<Answer> {
    let answer = wait_for(&format!("{code} on {node}"), T, || async {
        let a = api.open(node, json!({})).await?;
        Ok((a.code() == code).then_some(a))
    })
    .await?;
    assert_error(&answer, status, code);
    Ok(answer)
}

#[tokio::test]
async fn no_region_anywhere_is_e_node_shell_no_region() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    // A gateway without a fallback region, a node whose zone names no region, a policy
    // without a region.
    let gw = world
        .start_gateway(GatewayOptions {
            patch: json!({"aws": {"region": ""}}),
            ..GatewayOptions::named("gw-noregion")
        })
        .await?;
    let scope = world
        .scope("noregion", 0, json!({"aws": {"region": null}}))
        .await?;
    let node = world
        .add_node(&scope, "i-0badbadbadbadbad0", Some(""))
        .await?;
    let api = gw.client(&world.token(&engineer(12)));
    let answer = wait_for("E_NODE_SHELL_NO_REGION", T, || async {
        let a = api.open(&node, json!({})).await?;
        Ok((a.code() == "E_NODE_SHELL_NO_REGION").then_some(a))
    })
    .await?;
    assert_error(&answer, 400, "E_NODE_SHELL_NO_REGION");
    world.cleanup(&scope).await
}

#[tokio::test]
async fn an_offline_agent_is_e_agent_offline() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("offline", 1, json!({})).await?;
    let node = &scope.nodes[0];
    let api = world.client(&engineer(13));
    world.set_ping(&scope.instances[0], PingStatus::ConnectionLost);
    let surfaced = open_until_error(&api, node).await?;
    assert_eq!(surfaced.code(), "E_AGENT_OFFLINE", "{surfaced:?}");
    if let Surfaced::Http(a) = &surfaced {
        assert_eq!(a.status, 409);
    }
    let pre = api
        .get(&format!("/api/v1/nodes/{node}/shell/preflight"))
        .await?;
    assert!(
        pre.body.to_string().contains("ConnectionLost"),
        "preflight names the PingStatus: {}",
        pre.body
    );
    world.set_ping(&scope.instances[0], PingStatus::Online);
    world.cleanup(&scope).await
}

#[tokio::test]
async fn caps_answer_429_with_the_limit() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let scope = world
        .scope(
            "caps",
            1,
            json!({"limits": {"maxSessionsPerUser": 1, "maxSessionsTotal": 2}}),
        )
        .await?;
    let node = &scope.nodes[0];
    let a = world.client(&engineer(14));
    let b = world.client(&engineer(15));
    let c = world.client(&engineer(16));
    let first = a.open_ok(node).await?;
    let answer = a.open(node, json!({})).await?;
    assert_error(&answer, 429, "E_CAP_USER");
    assert_eq!(answer.body["limit"], 1, "{}", answer.body);
    let second = b.open_ok(node).await?;
    let answer = c.open(node, json!({})).await?;
    assert_error(&answer, 429, "E_CAP_TOTAL");
    assert_eq!(answer.body["limit"], 2, "{}", answer.body);
    // A refused open creates no object (issue 10 §3): the gateway counted the caps before
    // `create`, so only the two admitted sessions exist.
    let sessions = world.sessions_of(&scope.policy).await?;
    let phases: Vec<&str> = sessions
        .iter()
        .filter_map(|s| s["status"]["phase"].as_str())
        .collect();
    assert_eq!(sessions.len(), 2, "{phases:?}");
    assert!(!phases.contains(&"Rejected"), "{phases:?}");
    // Closing one frees a place.
    let closed = a
        .delete(&format!("/api/v1/sessions/{}", first.session))
        .await?;
    assert!(closed.status < 300, "{}", closed.body);
    world
        .wait_session(&first.session, "ended", T, |s| {
            matches!(s["status"]["phase"].as_str(), Some("Closed"))
        })
        .await?;
    let _third = wait_for("a place after a close", T, || async {
        let r = c.open(node, json!({})).await?;
        Ok((r.status == 201).then_some(r))
    })
    .await?;
    let _ = second;
    world.cleanup(&scope).await
}

#[tokio::test]
async fn an_expired_token_at_attach_asks_to_sign_in_again() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("reauth", 1, json!({})).await?;
    let sub = engineer(17);
    // The token is valid for the open; STS sees it after it expired.
    let token = world
        .sim
        .mint_token_with(&sub, &world.sim.config().issuer.client_id, 3)?;
    let api = GatewayClient::new(&world.gateway().base, &token);
    let opened = api.open_ok(&scope.nodes[0]).await?;
    tokio::time::sleep(Duration::from_secs(5)).await; // let the token expire (not an assertion)
    let mut term = Terminal::connect(&opened.attach_url).await?;
    term.read_until("an error frame", T, |t| t.find_control("error").is_some())
        .await?;
    let error = term.find_control("error").cloned().unwrap_or_default();
    assert_eq!(error["code"], "E_REAUTH_REQUIRED", "{error}");
    assert_eq!(error["retryable"], false, "{error}");
    // Nothing started on the node, and the session does not stay open.
    let cr = world.wait_closed(&opened.session, T).await?;
    assert!(cr["status"]["ssmSessionId"].is_null(), "{}", cr["status"]);
    assert!(
        !world
            .sim
            .calls()
            .iter()
            .any(|c| c.operation == "StartSession"
                && c.principal_arn
                    .as_deref()
                    .is_some_and(|p| p.ends_with(&format!("/{SESSION_PREFIX}-{sub}")))),
        "no StartSession for {sub}"
    );
    world.cleanup(&scope).await
}

#[tokio::test]
async fn attach_checks_origin_and_ticket() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("origin", 1, json!({})).await?;
    let api = world.client(&engineer(18));
    let opened = api.open_ok(&scope.nodes[0]).await?;
    // Another web page's origin cannot attach.
    let evil =
        Terminal::connect_with_origin(&opened.attach_url, Some("https://evil.example")).await;
    if let Ok(mut t) = evil {
        t.pump(Duration::from_secs(5)).await?;
        assert!(
            t.find_control("hello").is_none(),
            "foreign origin attached: {:?}",
            t.controls
        );
    }
    // A forged ticket cannot attach.
    let forged = opened.attach_url.replace(&opened.ticket, "forged-ticket");
    if let Ok(mut t) = Terminal::connect(&forged).await {
        t.pump(Duration::from_secs(5)).await?;
        assert!(
            t.find_control("hello").is_none(),
            "forged ticket attached: {:?}",
            t.controls
        );
    }
    // Another person's token cannot mint a ticket for this session.
    let other = world.client(&engineer(19));
    let answer = other
        .post(
            &format!("/api/v1/sessions/{}/ticket", opened.session),
            json!({}),
        )
        .await?;
    assert!(matches!(answer.status, 403 | 404), "{}", answer.body);
    // The real ticket still works.
    let mut term = Terminal::connect(&opened.attach_url).await?;
    term.hello().await?;
    // An unreadable control frame is answered with E_BAD_REQUEST and the shell stays up.
    term.send_control(json!({"type": "resize", "cols": -1}))
        .await?;
    let error = term.control("error", T).await?;
    assert_eq!(error["code"], "E_BAD_REQUEST", "{error}");
    let echo = term.run("echo still-here", T).await?;
    assert!(echo.contains("still-here"));
    term.close().await?;
    world.cleanup(&scope).await
}

//! Session Manager's hourly recycle is invisible to the person: the service closes the data
//! channel with `1000 Bye` (every few hundred milliseconds here, through the simulator's
//! per-session interval) and the gateway resumes it through ResumeSession with no byte lost
//! or repeated, while output streams and while someone types; a console shell's AWS
//! credentials are re-minted from a refreshed id_token across their expiry (a role whose
//! credentials last seconds), and a bearer shell ends as `CredentialsExpired` a minute
//! before its credentials expire, closed on AWS while they still hold.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

const T: Duration = Duration::from_secs(30);

/// Successful ResumeSession calls of SSM session `ssm_id`, with the access key each was
/// signed with.
fn resumes(world: &GatewayWorld, ssm_id: &str) -> Vec<String> {
    world
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.operation == "ResumeSession" && c.error_code.is_none())
        .filter(|c| c.session_id.as_deref() == Some(ssm_id))
        .map(|c| c.access_key_id.unwrap_or_default())
        .collect()
}

/// Access keys STS issued to `principal` so far, in call order.
fn issued_to(world: &GatewayWorld, principal: &str) -> Vec<String> {
    world
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.operation == "AssumeRoleWithWebIdentity" && c.error_code.is_none())
        .filter(|c| c.principal_arn.as_deref() == Some(principal))
        .filter_map(|c| c.access_key_id)
        .collect()
}

/// `line-1` … `line-n`, each once and in order, in `text`.
fn assert_lines_once_in_order(text: &str, n: usize) {
    // What follows the last carriage return of each line (bash's bracketed-paste switch
    // precedes the first one).
    let got: Vec<usize> = text
        .split("\r\n")
        .filter_map(|l| l.rsplit('\r').next())
        .filter_map(|l| l.strip_prefix("line-"))
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(got.first(), Some(&1), "the stream starts at line-1");
    assert_eq!(got.len(), n, "lines lost or repeated");
    assert!(
        got.windows(2).all(|w| w[0] + 1 == w[1]),
        "lines out of order"
    );
}

#[tokio::test]
async fn a_stream_and_typed_input_cross_the_hourly_recycle_once_and_in_order() -> anyhow::Result<()>
{
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("recycle", 1, json!({})).await?;
    let (_, mut term, hello) = world
        .attach_shell(world.gateway(), &scope, &engineer(51), T)
        .await?;
    let ssm_id = hello["ssmSessionId"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // Typing across a recycle: half a command, the service's `1000 Bye`, the other half.
    world
        .sim
        .set_session_recycle(&ssm_id, Duration::from_secs(1))?;
    let before = resumes(world, &ssm_id).len();
    term.send_input(b"echo typed-$((40+").await?;
    term.read_until("a recycle and its ResumeSession", T, |_| {
        resumes(world, &ssm_id).len() > before
    })
    .await?;
    term.send_input(b"2))-end\r").await?;
    term.expect_output("typed-42-end", T).await?;
    let text = String::from_utf8_lossy(&term.output).into_owned();
    assert_eq!(
        text.matches("echo typed-$((40+2))-end").count(),
        1,
        "the typed line is echoed exactly once: {:?}",
        term.output_tail(300)
    );
    assert_eq!(text.matches("typed-42-end").count(), 1, "{text:?}");

    // A stream across at least two recycles: every line once, in order.
    world
        .sim
        .set_session_recycle(&ssm_id, Duration::from_millis(400))?;
    let before = resumes(world, &ssm_id).len();
    let from = term.output.len();
    let lines = 60_000;
    term.send_input(format!("seq -f 'line-%g' 1 {lines}; echo 'stream''-end'\r").as_bytes())
        .await?;
    let text = term
        .expect_output_after(from, "stream-end", Duration::from_secs(180))
        .await?;
    let recycled = resumes(world, &ssm_id).len() - before;
    assert!(recycled >= 2, "the stream crossed {recycled} recycles");
    assert_lines_once_in_order(&text, lines);
    assert!(term.find_control("error").is_none(), "{:?}", term.controls);
    world
        .sim
        .set_session_recycle(&ssm_id, Duration::from_secs(3600))?;
    term.send_input(b"exit\r").await?;
    let closed = term.control("closed", T).await?;
    assert_eq!(closed["reason"], "UserExit", "{closed}");
    world.cleanup(&scope).await
}

#[tokio::test]
async fn a_console_shells_credentials_are_reminted_across_their_expiry() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let role = world.sim.role_arn(ROLE_SHORT);
    let scope = world
        .scope("recycle-renew", 1, json!({"aws": {"roleArn": role}}))
        .await?;
    let gw = world
        .start_console_gateway("gw-recycle-renew", json!({}))
        .await?;
    let (browser, _) = ConsoleBrowser::sign_in(&gw.base, RECYCLE_CONSOLE_USER).await?;
    let opened = browser.open_ok(&scope.nodes[0]).await?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    let hello = term.hello().await?;
    term.expect_output("$ ", T).await?;
    let ssm_id = hello["ssmSessionId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let session = world.session(&opened.session).await?.unwrap_or_default();
    let principal = format!(
        "arn:aws:sts::{}:assumed-role/{ROLE_SHORT}/{}",
        world.sim.config().account_id,
        session["spec"]["roleSessionName"]
            .as_str()
            .unwrap_or_default()
    );
    let first = issued_to(world, &principal);
    let attach_key = first.last().cloned().unwrap_or_default();
    // Past the first credentials' expiry, then a recycle: ResumeSession must be signed with
    // credentials minted after them (the first would be ExpiredTokenException).
    let expiry = Duration::from_secs(u64::from(SHORT_CREDENTIAL_SECONDS));
    term.read_until("the first credentials' expiry", expiry * 2, |_| false)
        .await
        .ok();
    world
        .sim
        .set_session_recycle(&ssm_id, Duration::from_millis(500))?;
    term.read_until("a ResumeSession", T, |_| {
        !resumes(world, &ssm_id).is_empty()
    })
    .await?;
    world
        .sim
        .set_session_recycle(&ssm_id, Duration::from_secs(3600))?;
    let issued = issued_to(world, &principal);
    let resumed = resumes(world, &ssm_id);
    assert!(
        issued.len() > first.len(),
        "STS minted no credentials after the attach: {issued:?}"
    );
    for key in &resumed {
        assert_ne!(
            key, &attach_key,
            "ResumeSession signed with expired credentials"
        );
        assert!(
            issued[first.len()..].contains(key),
            "ResumeSession signed with {key}, not with credentials minted after the attach {issued:?}"
        );
    }
    let refused: Vec<_> = world
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.session_id.as_deref() == Some(ssm_id.as_str()))
        .filter_map(|c| c.error_code)
        .collect();
    assert!(refused.is_empty(), "refused SSM calls: {refused:?}");
    let out = term.run("echo renewed-$((6*7))", T).await?;
    assert!(out.contains("renewed-42"), "{out}");
    term.send_input(b"exit\r").await?;
    let closed = term.control("closed", T).await?;
    assert_eq!(closed["reason"], "UserExit", "{closed}");
    // TerminateSession at the end signed with current credentials too.
    let terminate = world
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.operation == "TerminateSession")
        .find(|c| c.session_id.as_deref() == Some(ssm_id.as_str()));
    if let Some(call) = terminate {
        assert_eq!(call.error_code, None, "{call:?}");
    }
    world.cleanup(&scope).await
}

/// Nothing renews a bearer caller's credentials: the shell ends a minute before they expire,
/// while its TerminateSession can still be signed, and says why and what to do.
#[tokio::test]
async fn a_bearer_shell_ends_as_credentials_expired_while_it_can_still_be_closed_on_aws()
-> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let role = world.sim.role_arn(ROLE_MINUTE);
    let scope = world
        .scope("recycle-expired", 1, json!({"aws": {"roleArn": role}}))
        .await?;
    // The credentials are minted after this instant, so they expire after `expiry`.
    let before_open = std::time::Instant::now();
    let expiry = before_open + Duration::from_secs(u64::from(MINUTE_CREDENTIAL_SECONDS));
    let (opened, mut term, hello) = world
        .attach_shell(world.gateway(), &scope, &engineer(52), T)
        .await?;
    let ssm_id = hello["ssmSessionId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let out = term.run("echo alive-$((1+1))", T).await?;
    assert!(out.contains("alive-2"), "{out}");
    let closed = term
        .control(
            "closed",
            Duration::from_secs(u64::from(MINUTE_CREDENTIAL_SECONDS)),
        )
        .await?;
    assert_eq!(closed["reason"], "CredentialsExpired", "{closed}");
    assert!(
        std::time::Instant::now() < expiry,
        "the shell ended after its credentials expired"
    );
    let session = world.wait_closed(&opened.session, T).await?;
    assert_eq!(
        session["status"]["reason"], "CredentialsExpired",
        "{session}"
    );
    let message = session["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("sign in to the console again and reopen the shell")
            && message.contains("bearer token"),
        "{message}"
    );
    // Closed on AWS with credentials that still held: the host's shell is gone too.
    let terminates: Vec<_> = world
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.operation == "TerminateSession")
        .filter(|c| c.session_id.as_deref() == Some(ssm_id.as_str()))
        .collect();
    assert!(!terminates.is_empty(), "no TerminateSession for {ssm_id}");
    for call in &terminates {
        assert_eq!(call.error_code, None, "{call:?}");
    }
    world.cleanup(&scope).await
}

//! The command ledger end to end (issue 12 §1–§2): a policy picks the `NodeShell-Shell`
//! document, the simulator's agent types its shell profile (with the gateway's nonce) into a
//! real bash, the person runs a few commands (one failing, one printing a forged mark) and
//! exits 3. The session's `status.ledger` counts them, `exitCode` is 3 from the shell, the
//! ledger route lists them with their exit status, directory and offsets into the
//! recording, search finds them by line and by output, and every read of the ledger or transcript writes an `ssm_transcript_read`
//! audit row naming the reader.

use std::time::Duration;

use crate::support::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);
/// What every prompt of the profile ends with (the nonce follows).
const PROMPT_END: &str = "\x1b]133;B;nonce=";

/// Types `line` at the prompt and waits for the next prompt.
async fn at_prompt(term: &mut Terminal, line: &str) -> anyhow::Result<()> {
    let from = term.output.len();
    term.send_input(format!("{line}\r").as_bytes()).await?;
    term.expect_output_after(from, PROMPT_END, T).await?;
    Ok(())
}

/// The `ssm_transcript_read` rows of `session` on the gateway's stdout.
fn read_rows(world: &GatewayWorld, session: &str) -> Vec<Value> {
    world
        .gateway()
        .audit_rows()
        .into_iter()
        .filter(|r| r["event"] == "ssm_transcript_read" && r["session"] == session)
        .collect()
}

#[tokio::test]
async fn the_shell_document_builds_a_ledger_and_reports_the_shells_exit() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let scope = world
        .scope(
            "ledger",
            1,
            json!({"aws": {"documentName": "NodeShell-Shell"}}),
        )
        .await?;
    let user = engineer(3);
    let api = world.client(&user);
    let opened = api.open_ok(&scope.nodes[0]).await?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    term.hello().await?;
    // The profile has run once the first marked prompt shows.
    term.expect_output(PROMPT_END, T).await?;
    at_prompt(&mut term, "cd /tmp").await?;
    at_prompt(&mut term, "printf 'found-%s\\n' here").await?;
    at_prompt(&mut term, "false").await?;
    // Output that merely prints a mark is forged: no command "evil" appears.
    at_prompt(
        &mut term,
        r"printf '\033]133;C;nonce=0123;cmd=evil\007\033]133;D;0;nonce=0123\007'",
    )
    .await?;
    term.send_input(b"exit 3\r").await?;
    let closed = term.control("closed", T).await?;
    assert_eq!(closed["exitCode"], 3, "the shell's final mark: {closed}");

    let cr = world
        .wait_session(&opened.session, "Closed with a ledger", T, |s| {
            s["status"]["phase"] == "Closed" && !s["status"]["ledger"].is_null()
        })
        .await?;
    let st = &cr["status"];
    assert_eq!(st["exitCode"], 3, "{st}");
    assert_eq!(st["exitCodeSource"], "Shell", "{st}");
    let summary = &st["ledger"];
    // cd, echo, false, printf, exit.
    assert_eq!(summary["commands"], 5, "{summary}");
    assert_eq!(summary["failedCommands"], 1, "{summary}");
    assert_eq!(
        summary["lastExitStatus"], 0,
        "the printf succeeded: {summary}"
    );
    assert_eq!(summary["forgedMarks"], 2, "{summary}");
    assert_eq!(summary["truncated"], false, "{summary}");

    let ledger = api
        .get(&format!("/api/v1/sessions/{}/ledger", opened.session))
        .await?;
    assert_eq!(ledger.status, 200, "{}", ledger.body);
    let body = &ledger.body;
    assert_eq!(body["trust"], "cooperative", "{body}");
    assert_eq!(body["shellExitStatus"], 3, "{body}");
    let commands = body["commands"].as_array().cloned().unwrap_or_default();
    let lines: Vec<&str> = commands
        .iter()
        .filter_map(|c| c["command"].as_str())
        .collect();
    assert_eq!(lines.len(), 5, "{body}");
    assert_eq!(
        lines[..3],
        ["cd /tmp", "printf 'found-%s\\n' here", "false"],
        "{body}"
    );
    assert!(lines[3].starts_with("printf "), "{body}");
    assert_eq!(lines[4], "exit 3", "{body}");
    assert!(
        !lines.contains(&"evil"),
        "a forged mark never becomes a command: {body}"
    );
    let failing = &commands[2];
    assert_eq!(failing["exitStatus"], 1, "{failing}");
    assert_eq!(failing["cwd"], "/tmp", "{failing}");
    assert_eq!(failing["forged"], false, "{failing}");
    assert!(
        failing["startSeconds"].as_f64().unwrap_or(-1.0) > 0.0,
        "{failing}"
    );

    // The printf's output offsets point at its output in the recording.
    let download = api
        .get(&format!("/api/v1/sessions/{}/transcript", opened.session))
        .await?;
    assert_eq!(download.status, 200);
    let (_, output) = asciicast_output(&String::from_utf8(gunzip(&download.raw)?)?)?;
    let echo = &commands[1];
    let (start, end) = (
        echo["outputStart"].as_u64().unwrap_or(0) as usize,
        echo["outputEnd"].as_u64().unwrap_or(0) as usize,
    );
    assert_eq!(
        output.as_bytes().get(start..end),
        Some(&b"found-here\r\n"[..]),
        "output of `printf` at {start}..{end}"
    );

    // Search finds the failing command by its line and exit status, and the printf by its
    // output; another engineer's search does not see this session.
    let found = api
        .get(&format!(
            "/api/v1/sessions/search?q=false&exit=failed&node={}",
            scope.nodes[0]
        ))
        .await?;
    assert_eq!(found.status, 200, "{}", found.body);
    let hits = found.body["hits"].as_array().cloned().unwrap_or_default();
    assert_eq!(hits.len(), 1, "{}", found.body);
    assert_eq!(hits[0]["session"], opened.session.as_str());
    assert_eq!(hits[0]["command"], "false");
    assert_eq!(hits[0]["exitStatus"], 1);
    assert_eq!(hits[0]["match"], "command");
    assert_eq!(hits[0]["index"], 2);
    assert_eq!(hits[0]["startSeconds"], failing["startSeconds"]);
    assert_eq!(found.body["truncated"], false);
    let by_output = api.get("/api/v1/sessions/search?q=FOUND-HERE").await?;
    let hits = by_output.body["hits"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(hits.len(), 1, "{}", by_output.body);
    assert_eq!(hits[0]["match"], "output", "{}", by_output.body);
    assert_eq!(hits[0]["index"], 1, "{}", by_output.body);
    assert!(
        hits[0]["snippet"]
            .as_str()
            .unwrap_or("")
            .contains("found-here"),
        "{}",
        by_output.body
    );
    let other = world
        .client(&engineer(5))
        .get("/api/v1/sessions/search?q=found-here")
        .await?;
    assert_eq!(other.status, 200, "{}", other.body);
    assert_eq!(other.body["hits"], json!([]), "{}", other.body);
    let bad = api.get("/api/v1/sessions/search?exit=sometimes").await?;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.body["code"], "E_BAD_REQUEST", "{}", bad.body);

    // The reads are audited with the reader.
    let rows = wait_for("the transcript read rows", T, || {
        let rows = read_rows(world, &opened.session);
        async move { Ok((rows.len() >= 4).then_some(rows)) }
    })
    .await?;
    assert!(
        rows.iter().all(|r| r["actor"]["sub"] == user.as_str()),
        "{rows:?}"
    );
    // ... and with the request they came from, as an open's row is.
    assert!(
        rows.iter()
            .all(|r| r["client"]["source_address"] == "127.0.0.1"),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r["message"].as_str().is_some_and(|m| m.contains("ledger")))
            && rows.iter().any(|r| r["message"]
                .as_str()
                .is_some_and(|m| m.contains("transcript"))),
        "{rows:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_session_on_the_default_document_has_no_ledger() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("noledger", 1, json!({})).await?;
    let api = world.client(&engineer(4));
    let opened = api.open_ok(&scope.nodes[0]).await?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    term.hello().await?;
    term.send_input(b"exit 2\r").await?;
    let closed = term.control("closed", T).await?;
    assert_eq!(closed["exitCode"], Value::Null, "{closed}");
    let cr = world.wait_closed(&opened.session, T).await?;
    assert!(cr["status"].get("ledger").is_none(), "{cr}");
    assert!(cr["status"].get("exitCodeSource").is_none(), "{cr}");
    let ledger = api
        .get(&format!("/api/v1/sessions/{}/ledger", opened.session))
        .await?;
    assert_eq!(ledger.status, 404, "{}", ledger.body);
    assert_eq!(ledger.body["code"], "E_NOT_FOUND", "{}", ledger.body);
    Ok(())
}

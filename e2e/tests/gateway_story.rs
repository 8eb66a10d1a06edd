//! The gateway end to end, as a person sees it: preflight, open, attach, a few commands, a
//! resize, `exit 3` (which Session Manager does not report: no exit code anywhere); the
//! session object, audit rows, transcript and the simulator's call log agree; role session names are attributed and sanitised; no AWS credential is written
//! anywhere. Real kube-apiserver, simulator, `nodeshell controller` and `nodeshell gateway`.

use std::time::Duration;

use crate::support::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

/// The gates of a preflight answer as (name, passed).
fn preflight_gates(body: &Value) -> Vec<(String, bool)> {
    let list = ["checks", "gates"]
        .iter()
        .find_map(|k| body[*k].as_array())
        .cloned()
        .unwrap_or_default();
    list.iter()
        .map(|g| {
            let name = ["name", "gate", "id"]
                .iter()
                .find_map(|k| g[*k].as_str())
                .unwrap_or("?")
                .to_string();
            let passed = g["pass"]
                .as_bool()
                .or(g["ok"].as_bool())
                .or(g["passed"].as_bool())
                .unwrap_or_else(|| {
                    matches!(
                        g["status"].as_str().or(g["result"].as_str()),
                        Some("pass" | "passed" | "ok")
                    )
                });
            (name, passed)
        })
        .collect()
}

/// The `closed` frame of a shell whose exit status Session Manager did not report: the key is
/// there and null (the PTY path of the agent never sends EXIT_CODE).
fn assert_no_exit_code(closed: &Value) {
    assert_eq!(
        closed.get("exitCode"),
        Some(&Value::Null),
        "no exit status is reported: {closed}"
    );
}

/// Opens a shell for `sub` on `node`, attaches, checks the hello frame, runs `exit <code>`
/// and waits until the session is Closed. Returns (session name, hello, closed frame, CR).
async fn open_and_exit(
    world: &GatewayWorld,
    scope: &Scope,
    sub: &str,
    code: i32,
) -> anyhow::Result<(String, Value, Value, Value)> {
    let api = world.client(sub);
    let opened = api.open_ok(&scope.nodes[0]).await?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    let hello = term.hello().await?;
    term.send_input(format!("exit {code}\r").as_bytes()).await?;
    let closed = term.control("closed", T).await?;
    let cr = world.wait_closed(&opened.session, T).await?;
    Ok((opened.session, hello, closed, cr))
}

#[tokio::test]
async fn a_person_opens_a_shell_runs_commands_resizes_and_exits_3() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("story", 1, json!({})).await?;
    let node = scope.nodes[0].clone();
    let user = engineer(1);
    let api = world.client(&user);

    // The node is listed as eligible and every preflight gate passes.
    let nodes = api.get("/api/v1/nodes").await?;
    assert_eq!(nodes.status, 200, "{}", nodes.body);
    assert!(
        nodes.body.to_string().contains(&node),
        "node list lacks {node}: {}",
        nodes.body
    );
    let pre = api
        .get(&format!("/api/v1/nodes/{node}/shell/preflight"))
        .await?;
    assert_eq!(pre.status, 200, "{}", pre.body);
    assert_eq!(pre.body["eligible"], true, "{}", pre.body);
    let gates = preflight_gates(&pre.body);
    assert!(gates.len() >= 6, "preflight lists every gate: {}", pre.body);
    assert!(
        gates.iter().all(|(_, ok)| *ok),
        "every gate passes: {}",
        pre.body
    );

    // Open and attach.
    let opened = api
        .open(
            &node,
            json!({"reason": "disk pressure on /var", "cols": 100, "rows": 30}),
        )
        .await?;
    assert_eq!(opened.status, 201, "{}", opened.body);
    for key in ["session", "attachUrl", "ticket", "expiresAt"] {
        assert!(
            !opened.body[key].is_null(),
            "open answer has {key}: {}",
            opened.body
        );
    }
    let session = opened.body["session"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let attach = Opened::from_body(&api.base, &opened.body)?;
    assert!(
        !attach.attach_url.contains(&api.token),
        "the id_token never travels in the attach URL"
    );
    let mut term = Terminal::connect(&attach.attach_url).await?;
    let hello = term.hello().await?;
    assert_eq!(hello["session"], session.as_str(), "{hello}");
    assert_eq!(hello["node"], node.as_str(), "{hello}");
    assert_eq!(hello["instanceId"], scope.instances[0].as_str(), "{hello}");
    let ssm_id = hello["ssmSessionId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        ssm_id.starts_with(&format!("{SESSION_PREFIX}-{user}-")),
        "{hello}"
    );
    assert!(
        hello["resumeToken"].as_str().is_some_and(|t| !t.is_empty()),
        "{hello}"
    );

    // The ticket is single-use.
    let reuse = Terminal::connect(&attach.attach_url).await;
    if let Ok(mut second) = reuse {
        second.pump(Duration::from_secs(5)).await?;
        assert!(
            second.find_control("hello").is_none(),
            "a used ticket opened a second attach: {:?}",
            second.controls
        );
    }

    // Commands run on the node's shell, as the agent's user.
    let me = String::from_utf8(std::process::Command::new("id").arg("-un").output()?.stdout)?;
    let who = term.run("whoami", T).await?;
    assert!(
        who.contains(me.trim()),
        "whoami printed {who:?}, expected {me:?}"
    );

    // A resize reaches the PTY.
    term.resize(123, 45).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let size = term.run("stty size", T).await?;
        if size.contains("45 123") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stty size still says {size:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The session is Active meanwhile, owned by this gateway, with the same SSM id.
    let live = world
        .wait_session(&session, "Active", T, |s| s["status"]["phase"] == "Active")
        .await?;
    assert_eq!(live["status"]["ssmSessionId"], ssm_id.as_str());
    assert_eq!(live["spec"]["reason"], "disk pressure on /var");
    assert_eq!(
        live["status"]["gateway"]["pod"],
        world.gateway().name.as_str()
    );

    // exit 3 ends it: closed frame, Closed/UserExit. The shell document's agent never sends
    // the exit status, so it is null in the frame and absent on the session.
    term.send_input(b"exit 3\r").await?;
    let closed = term.control("closed", T).await?;
    assert_no_exit_code(&closed);
    assert_eq!(closed["reason"], "UserExit", "{closed}");
    let cr = world
        .wait_session(&session, "Closed with a transcript", T, |s| {
            s["status"]["phase"] == "Closed" && !s["status"]["transcript"]["sha256"].is_null()
        })
        .await?;
    let st = &cr["status"];
    assert_eq!(st["reason"], "UserExit", "{st}");
    assert!(
        st.get("exitCode").is_none(),
        "no exit status was reported: {st}"
    );
    assert_eq!(
        world.sim.session_status(&ssm_id),
        Some((true, Some(3))),
        "the shell did exit with 3 on the node"
    );
    assert_eq!(st["ssmSessionId"], ssm_id.as_str(), "{st}");
    assert!(
        !st["endedAt"].is_null() && !st["startedAt"].is_null(),
        "{st}"
    );
    assert!(st["bytesOut"].as_i64().unwrap_or(0) > 0, "{st}");
    let verbs: Vec<&str> = st["audit"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["verb"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        verbs.contains(&"ssm_session_open") && verbs.contains(&"ssm_session_close"),
        "{st}"
    );

    // Audit rows on the gateway's stdout carry the same SSM session id.
    let rows = wait_for("the close audit row", T, || {
        let rows: Vec<Value> = world
            .gateway()
            .audit_rows()
            .into_iter()
            .filter(|r| r["session_id"] == ssm_id.as_str())
            .collect();
        async move {
            Ok(rows
                .iter()
                .any(|r| audit_verb(r) == Some("ssm_session_close"))
                .then_some(rows))
        }
    })
    .await?;
    let open_row = rows
        .iter()
        .find(|r| audit_verb(r) == Some("ssm_session_open"));
    let close_row = rows
        .iter()
        .find(|r| audit_verb(r) == Some("ssm_session_close"));
    let (Some(open_row), Some(close_row)) = (open_row, close_row) else {
        panic!("open and close rows for {ssm_id}: {rows:?}");
    };
    assert_eq!(
        close_row.get("exit_code"),
        Some(&Value::Null),
        "{close_row}"
    );
    assert_eq!(close_row["reason"], "UserExit", "{close_row}");
    assert_eq!(open_row["node"], node.as_str(), "{open_row}");
    assert_eq!(
        open_row["instance_id"],
        scope.instances[0].as_str(),
        "{open_row}"
    );
    assert_eq!(open_row["actor"]["sub"], user.as_str(), "{open_row}");
    assert_eq!(
        close_row["sha256"], st["transcript"]["sha256"],
        "{close_row}"
    );

    // The simulator saw the session end with exit code 3.
    assert_eq!(world.sim.session_status(&ssm_id), Some((true, Some(3))));

    // The transcript: stored in Secrets, served by GET /transcript, and the recording both
    // hold hashes to status.transcript.sha256 (the gateway hashes the asciicast text).
    let want_sha = st["transcript"]["sha256"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(st["transcript"]["format"], "asciicast-v2+gzip", "{st}");
    let parts = transcript_secrets(world, &session).await?;
    assert!(!parts.is_empty(), "no {session}-transcript-N Secret");
    let stored = gunzip(&secret_bytes(&parts))?;
    assert_eq!(
        sha256_hex(&stored),
        want_sha,
        "sha256 of the recording in the Secrets"
    );
    let served = api
        .get(&format!("/api/v1/sessions/{session}/transcript"))
        .await?;
    assert_eq!(
        served.status,
        200,
        "{}",
        String::from_utf8_lossy(&served.raw)
    );
    let served = gunzip(&served.raw)?;
    assert_eq!(sha256_hex(&served), want_sha, "sha256 of GET /transcript");
    assert_eq!(served, stored, "GET /transcript is the stored recording");
    let cast = String::from_utf8(stored)?;
    let (header, output) = asciicast_output(&cast)?;
    assert_eq!(header["version"], 2, "{header}");
    assert!(
        output.contains(me.trim()),
        "the transcript records whoami's output"
    );
    assert!(
        output.contains("45 123"),
        "the transcript records stty size"
    );
    assert_eq!(
        st["transcript"]["bytes"].as_i64(),
        Some(output.len() as i64),
        "status.transcript.bytes counts the recorded terminal bytes"
    );

    // Someone else may not read it.
    let other = world.client(&engineer(2));
    let denied = other
        .get(&format!("/api/v1/sessions/{session}/transcript"))
        .await?;
    assert!(matches!(denied.status, 403 | 404), "{}", denied.body);

    world.cleanup(&scope).await
}

/// The documented naming: `nodeshell-<sub>` verbatim when it fits `[\w+=,.@-]` and 64
/// characters; otherwise characters outside the alphabet become `-` (runs collapsed), the head
/// is cut to 47 characters, and `-<first 16 hex of sha256(sub)>` is appended.
fn expected_role_session_name(sub: &str) -> String {
    let hash = &sha256_hex(sub.as_bytes())[..16];
    match sub {
        SUB_PIPE => format!("nodeshell-auth0-5f8a9b2c-{hash}"),
        SUB_SPACES => format!("nodeshell-Jane-Q-Public-{hash}"),
        SUB_UNICODE => format!("nodeshell-j-rgen.m-ller@-.jp-{hash}"),
        s if s.len() > 54 => {
            let full = format!("nodeshell-{s}");
            format!("{}-{hash}", full[..47].trim_end_matches('-'))
        }
        s => format!("nodeshell-{s}"),
    }
}

/// `nodeshell-<sub>` sanitised to 2–64 characters of `[\w+=,.@-]`.
fn valid_role_session_name(name: &str) -> bool {
    (2..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
}

#[tokio::test]
async fn ssm_calls_are_attributed_to_the_person_with_sanitised_session_names() -> anyhow::Result<()>
{
    let world = GatewayWorld::shared().await?;
    let scope = world
        .scope("attrib", 1, json!({"limits": {"maxSessionsTotal": 20}}))
        .await?;
    let long = long_sub();
    let subs = [
        engineer(3),
        SUB_PIPE.to_string(),
        SUB_SPACES.to_string(),
        SUB_UNICODE.to_string(),
        long,
    ];
    let role = world.sim.default_role_arn();
    let role_name = role.rsplit('/').next().unwrap_or_default().to_string();
    let mut names = Vec::new();
    for sub in &subs {
        let (session, hello, closed, cr) = open_and_exit(world, &scope, sub, 0).await?;
        assert_no_exit_code(&closed);
        let rsn = cr["spec"]["roleSessionName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            valid_role_session_name(&rsn),
            "{sub:?} → {rsn:?} is not a valid role session name"
        );
        assert!(
            rsn.starts_with(&format!("{SESSION_PREFIX}-")),
            "{sub:?} → {rsn:?}"
        );
        assert_eq!(
            rsn,
            expected_role_session_name(sub),
            "sanitised form of {sub:?}"
        );
        let ssm_id = hello["ssmSessionId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(cr["status"]["ssmSessionId"], ssm_id.as_str(), "{sub}");
        assert!(
            ssm_id.starts_with(&format!("{rsn}-")),
            "{sub}: {ssm_id} vs {rsn}"
        );
        let principal = format!(
            "arn:aws:sts::{}:assumed-role/{role_name}/{rsn}",
            world.sim.account_id()
        );
        let calls = world.sim.calls();
        for op in ["StartSession", "TerminateSession"] {
            let call = wait_for(&format!("{op} of {ssm_id}"), T, || {
                let found = world.sim.calls().into_iter().find(|c| {
                    c.operation == op
                        && c.session_id.as_deref() == Some(ssm_id.as_str())
                        && c.error_code.is_none()
                });
                async move { Ok(found) }
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}; calls: {calls:?}"))?;
            assert_eq!(
                call.principal_arn.as_deref(),
                Some(principal.as_str()),
                "{sub}: {op} {call:?}"
            );
        }
        // Auditors see the sub (the default identity claim) in the USER column, the
        // SessionStarted event and the StartSession Reason AWS records.
        assert_eq!(cr["spec"]["user"]["name"], sub.as_str(), "{cr}");
        if sub.len() < 50 {
            let start = world
                .sim
                .calls()
                .into_iter()
                .find(|c| {
                    c.operation == "StartSession"
                        && c.session_id.as_deref() == Some(ssm_id.as_str())
                })
                .ok_or_else(|| anyhow::anyhow!("no StartSession of {ssm_id}"))?;
            assert!(
                start
                    .reason
                    .as_deref()
                    .unwrap_or_default()
                    .contains(&format!("by {sub},")),
                "{start:?}"
            );
            let started = wait_for("the SessionStarted event", T, || {
                let session = session.clone();
                async move {
                    Ok(world.events().await?.into_iter().find(|e| {
                        e.involved_object.name.as_deref() == Some(session.as_str())
                            && e.reason.as_deref() == Some("SessionStarted")
                    }))
                }
            })
            .await?;
            let message = started.message.unwrap_or_default();
            assert!(
                message.contains(&format!(" for {sub} through")),
                "{message}"
            );
        }
        // Both audit rows carry the SSM id and the role session name.
        let rows = wait_for("audit rows", T, || {
            let rows: Vec<Value> = world
                .gateway()
                .audit_rows()
                .into_iter()
                .filter(|r| r["session_id"] == ssm_id.as_str())
                .collect();
            async move { Ok((rows.len() >= 2).then_some(rows)) }
        })
        .await?;
        for row in &rows {
            assert_eq!(row["role_session_name"], rsn.as_str(), "{row}");
            assert_eq!(row["assumed_role_arn"], principal.as_str(), "{row}");
            assert_eq!(row["actor"]["sub"], sub.as_str(), "{row}");
        }
        let audit_ids: Vec<&str> = cr["status"]["audit"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["verb"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            audit_ids.contains(&"ssm_session_open") && audit_ids.contains(&"ssm_session_close"),
            "{session}"
        );
        names.push(rsn);
    }
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        names.len(),
        "distinct people get distinct session names: {names:?}"
    );
    world.cleanup(&scope).await
}

/// Every string in `text` that looks like temporary AWS credentials the simulator issues:
/// access key ids `ASIA` + 16 and session tokens starting `IQoJb3JpZ2luX2VjE`.
fn credential_like(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices("ASIA") {
        let tail = &bytes[i + 4..];
        let n = tail
            .iter()
            .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            .count();
        if n == 16 {
            found.push(text[i..i + 20].to_string());
        }
    }
    for (i, _) in text.match_indices("IQoJb3JpZ2luX2VjE") {
        found.push(text[i..(i + 40).min(text.len())].to_string());
    }
    found
}

#[tokio::test]
async fn no_credential_is_written_anywhere() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let scope = world
        .scope("nocred", 1, json!({"transcript": {"captureInput": true}}))
        .await?;
    let user = engineer(4);
    let token = world.token(&user);
    let api = GatewayClient::new(&world.gateway().base, &token);
    let opened = api.open_ok(&scope.nodes[0]).await?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    let hello = term.hello().await?;
    // The shell's environment must not see them either.
    let env = term.run("env | grep -c AWS_ || true", T).await?;
    assert!(!env.contains("ASIA"), "{env}");
    term.send_input(b"exit 0\r").await?;
    term.control("closed", T).await?;
    let cr = world
        .wait_session(&opened.session, "Closed with a transcript", T, |s| {
            s["status"]["phase"] == "Closed" && !s["status"]["transcript"]["sha256"].is_null()
        })
        .await?;
    let ssm_id = hello["ssmSessionId"].as_str().unwrap_or_default();
    assert!(
        world
            .sim
            .calls()
            .iter()
            .any(|c| c.operation == "AssumeRoleWithWebIdentity" && c.error_code.is_none())
    );
    assert_eq!(cr["status"]["ssmSessionId"], ssm_id);

    let mut haystacks: Vec<(String, String)> = Vec::new();
    for s in world.sessions_of(&scope.policy).await? {
        haystacks.push((format!("session {}", s["metadata"]["name"]), s.to_string()));
    }
    for secret in world.secrets().await? {
        let name = kube::ResourceExt::name_any(&secret);
        let raw = secret_bytes(std::slice::from_ref(&secret));
        let text = gunzip(&raw)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|_| String::from_utf8_lossy(&raw).into_owned());
        haystacks.push((
            format!("secret {name}"),
            format!("{}\n{text}", serde_json::to_string(&secret)?),
        ));
    }
    for event in world.events().await? {
        haystacks.push(("event".into(), serde_json::to_string(&event)?));
    }
    haystacks.push(("process output".into(), world.all_process_output()));
    haystacks.push((
        "kube-apiserver log".into(),
        std::fs::read_to_string(world.cluster.log_path("kube-apiserver")).unwrap_or_default(),
    ));
    let served = api
        .get(&format!("/api/v1/sessions/{}/transcript", opened.session))
        .await?;
    let served = gunzip(&served.raw).unwrap_or(served.raw);
    haystacks.push((
        "GET /transcript".into(),
        String::from_utf8_lossy(&served).into_owned(),
    ));
    assert!(
        haystacks.iter().any(|(w, _)| w.starts_with("secret")),
        "transcript Secrets were scanned"
    );
    haystacks.push((
        "the browser's terminal and frames".into(),
        format!(
            "{}\n{:?}",
            String::from_utf8_lossy(&term.output),
            term.controls
        ),
    ));

    // The exact values STS handed out (to this person, at the open's checks and at attach,
    // and to every other test of this binary), not only their shape.
    let issued = world.sim.issued_credentials();
    let mine = format!("/{SESSION_PREFIX}-{user}");
    assert!(
        issued.iter().any(|c| c.principal_arn.ends_with(&mine)),
        "the simulator issued credentials to {user}: {issued:?}"
    );
    for (what, text) in &haystacks {
        let leaks = credential_like(text);
        assert!(leaks.is_empty(), "{what} holds AWS credentials: {leaks:?}");
        assert!(!text.contains(&token), "{what} holds the person's id_token");
        for set in &issued {
            // The message names the set by its redacting Debug, never the value found.
            for (part, value) in [
                ("access key id", &set.access_key_id),
                ("secret access key", &set.secret_access_key),
                ("session token", &set.session_token),
            ] {
                assert!(
                    !text.contains(value.as_str()),
                    "{what} holds the {part} of {set:?}"
                );
            }
        }
    }
    world.cleanup(&scope).await
}

#[tokio::test]
async fn output_printed_just_before_exit_reaches_the_browser_and_the_transcript()
-> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let scope = world
        .scope("lastwords", 1, json!({"transcript": {"maxBytes": 4194304}}))
        .await?;
    let api = world.client(&engineer(5));
    let opened = api.open_ok(&scope.nodes[0]).await?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    term.hello().await?;
    term.expect_output("$ ", T).await?;
    // About 300 KB printed, then the shell exits at once.
    term.send_input(b"seq -f 'last-%g' 1 30000; exit 7\r")
        .await?;
    let closed = term.control("closed", Duration::from_secs(120)).await?;
    assert_no_exit_code(&closed);
    let text = String::from_utf8_lossy(&term.output).into_owned();
    let got = text.matches("last-").count();
    assert!(
        text.contains("last-30000\r\n"),
        "the last lines before exit were lost: {got} of 30000 lines (+1 echo) arrived, tail {:?}",
        term.output_tail(200)
    );
    let cr = world
        .wait_session(&opened.session, "Closed with a transcript", T, |s| {
            s["status"]["phase"] == "Closed" && !s["status"]["transcript"]["sha256"].is_null()
        })
        .await?;
    assert!(cr["status"].get("exitCode").is_none(), "{}", cr["status"]);
    let recording = String::from_utf8(gunzip(&secret_bytes(
        &transcript_secrets(world, &opened.session).await?,
    ))?)?;
    let (_, output) = asciicast_output(&recording)?;
    assert!(
        output.contains("last-30000\r\n"),
        "the transcript lost the last lines"
    );

    // The same with a browser that is slow to read while the shell prints and exits.
    let opened = api.open_ok(&scope.nodes[0]).await?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    term.hello().await?;
    term.expect_output("$ ", T).await?;
    term.send_input(b"seq -f 'slow-%g' 1 30000; exit 9\r")
        .await?;
    tokio::time::sleep(Duration::from_secs(8)).await; // the browser reads nothing meanwhile
    let closed = term.control("closed", Duration::from_secs(120)).await?;
    assert_no_exit_code(&closed);
    let text = String::from_utf8_lossy(&term.output).into_owned();
    assert!(
        text.contains("slow-30000\r\n"),
        "a slow browser lost the last lines before exit: {} of 30000 arrived, tail {:?}",
        text.matches("slow-").count().saturating_sub(1),
        term.output_tail(120)
    );
    world.cleanup(&scope).await
}

#[tokio::test]
async fn a_fast_stream_arrives_complete_before_the_closed_frame() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let scope = world
        .scope(
            "fastexit",
            1,
            json!({"aws": {"documentName": nodeshell::sim::FIREHOSE_DOCUMENT}}),
        )
        .await?;
    let api = world.client(&engineer(6));
    let opened = api.open_ok(&scope.nodes[0]).await?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    term.hello().await?;
    // The simulator's firehose: 1 MiB as fast as the socket takes it, then the channel closes.
    let closed = term.control("closed", Duration::from_secs(120)).await?;
    let _ = term
        .read_until("the socket to close", T, |t| t.closed)
        .await;
    let cr = world.wait_closed(&opened.session, T).await?;
    let want = nodeshell::sim::firehose_bytes(1024 * 1024);
    assert_no_exit_code(&closed);
    assert!(
        term.output == want,
        "the browser got {} of {} bytes (status.bytesOut {}) before `closed`",
        term.output.len(),
        want.len(),
        cr["status"]["bytesOut"]
    );
    world.cleanup(&scope).await
}

/// The same person ends the SSM session from outside nodeshell (the AWS CLI's
/// `aws ssm terminate-session`), with their own role session.
async fn terminate_from_outside(
    world: &GatewayWorld,
    session: &str,
    sub: &str,
    ssm_id: &str,
) -> anyhow::Result<()> {
    let cr = world
        .session(session)
        .await?
        .ok_or_else(|| anyhow::anyhow!("session {session} is gone"))?;
    let request = nodeshell::aws::WebIdentityRequest {
        role_arn: cr["spec"]["roleArn"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        role_session_name: cr["spec"]["roleSessionName"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        web_identity_token: world.sim.mint_token(sub)?,
        duration_seconds: None,
    };
    let endpoints = world.sim.aws_endpoints();
    let creds = nodeshell::aws::assume_role_with_web_identity(&endpoints, &request).await?;
    nodeshell::aws::SsmSessions::new(&endpoints, &creds)
        .terminate_session(ssm_id)
        .await?;
    Ok(())
}

/// Session Manager ends a live session by itself (its idle timeout, its maximum session
/// duration, TerminateSession from outside): the gateway names each close with its own
/// reason and AWS's text in `status.message`, never `UserExit`.
#[tokio::test]
async fn session_manager_closes_are_named_for_what_aws_did() -> anyhow::Result<()> {
    use nodeshell::sim::service_limits::{DEFAULT_IDLE, ServiceLimits};
    use nodeshell::ssm::service_close::{IDLE_TIMEOUT_TEXT, MAX_DURATION_TEXT, TERMINATED_TEXT};
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("ssmcloses", 1, json!({})).await?;
    let user = engineer(9);
    let api = world.client(&user);
    for (reason, text) in [
        ("SsmIdleTimeout", IDLE_TIMEOUT_TEXT),
        ("SsmMaxDuration", MAX_DURATION_TEXT),
        ("SsmTerminated", TERMINATED_TEXT),
    ] {
        let opened = api.open_ok(&scope.nodes[0]).await?;
        let mut term = Terminal::connect(&opened.attach_url).await?;
        let hello = term.hello().await?;
        let ssm_id = hello["ssmSessionId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        term.expect_output("$ ", T).await?;
        match reason {
            "SsmIdleTimeout" => world.sim.set_session_limits(
                &ssm_id,
                ServiceLimits {
                    idle: Duration::from_secs(2),
                    max: None,
                },
            )?,
            "SsmMaxDuration" => world.sim.set_session_limits(
                &ssm_id,
                ServiceLimits {
                    idle: DEFAULT_IDLE,
                    max: Some(Duration::from_secs(1)),
                },
            )?,
            _ => terminate_from_outside(world, &opened.session, &user, &ssm_id).await?,
        }
        let closed = term.control("closed", T).await?;
        assert_eq!(closed["reason"], reason, "{closed}");
        let cr = world.wait_closed(&opened.session, T).await?;
        let st = &cr["status"];
        assert_eq!(st["reason"], reason, "{st}");
        let message = st["message"].as_str().unwrap_or_default();
        assert!(message.contains(text), "AWS's text in status.message: {st}");
    }
    world.cleanup(&scope).await
}

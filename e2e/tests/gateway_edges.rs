//! Gateway paths the other `gateway_*` tests leave alone: a required transcript that cannot
//! be stored (fail closed before any AWS call, with a message that says what to do and no
//! apiserver dump) and an optional one (the shell opens, the failure is recorded, the close
//! is not held back by retries); a required transcript whose storage is revoked mid-session; a
//! reattach with a wrong resume token; a Closing phase set by the controller; a transcript
//! split over several Secrets and one cut at a small cap; and a browser that never comes
//! back within the reattach grace. Real kube-apiserver, simulator, `nodeshell controller`
//! and `nodeshell gateway` processes.

use std::time::{Duration, Instant};

use crate::support::*;
use kube::api::{Api, Patch, PatchParams};
use nodeshell::api::NodeShellSession;
use nodeshell::localcluster::{Identity, SYSTEM_NAMESPACE};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);
/// From `exit` to the `closed` frame when the transcript store refuses every write: one
/// final attempt, no pauses between retries (five of them at the 1 s status throttle took
/// about 5 s).
const PROMPT_CLOSE: Duration = Duration::from_secs(2);

/// Checks that `text` (`what` says where it was read) tells the person the transcript
/// namespace `namespace` refuses the gateway and what to ask for, without the apiserver's
/// own error: no `Status` dump, no HTTP code, no service-account name.
fn assert_names_the_refusal_plainly(what: &str, text: &str, namespace: &str) {
    assert!(
        text.contains(&format!(
            "the gateway may not write Secrets in namespace {namespace}"
        )),
        "{what} names the cause: {text:?}"
    );
    assert!(
        text.contains("Ask your platform team to grant the gateway's service account create/patch on secrets there (see docs/gateway.md, RBAC)"),
        "{what} says what to do: {text:?}"
    );
    for leak in [
        "Status {",
        "code: 403",
        "Forbidden",
        "system:serviceaccount",
        "nodeshell-gateway",
        "ApiError",
    ] {
        assert!(!text.contains(leak), "{what} carries {leak:?}: {text:?}");
    }
}

/// Opens and attaches a shell through `gw` for `sub`; waits for the prompt.
async fn attach(
    world: &GatewayWorld,
    gw: &GatewayProcess,
    scope: &Scope,
    sub: &str,
) -> anyhow::Result<(Opened, Terminal, Value)> {
    world.attach_shell(gw, scope, sub, T).await
}

/// The `ssmSessionId` of a `hello` frame.
fn ssm_id(hello: &Value) -> String {
    hello["ssmSessionId"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The assumed-role ARN suffix of `sub`'s calls (`/<prefix>-<sub>`).
fn principal_suffix(sub: &str) -> String {
    format!("/{SESSION_PREFIX}-{sub}")
}

/// How many successful `operation` calls the simulator saw from `sub`'s credentials.
fn calls_by(world: &GatewayWorld, operation: &str, sub: &str) -> usize {
    let suffix = principal_suffix(sub);
    world
        .sim
        .calls()
        .iter()
        .filter(|c| {
            c.operation == operation
                && c.error_code.is_none()
                && c.principal_arn
                    .as_deref()
                    .is_some_and(|p| p.ends_with(&suffix))
        })
        .count()
}

/// Waits for a successful TerminateSession of `ssm_id` and checks it was made with `sub`'s
/// own credentials, and that the simulator's session ended.
async fn expect_terminated_by_owner(
    world: &GatewayWorld,
    ssm_id: &str,
    sub: &str,
) -> anyhow::Result<()> {
    let call = wait_for("TerminateSession", T, || {
        let found = world.sim.calls().into_iter().find(|c| {
            c.operation == "TerminateSession"
                && c.session_id.as_deref() == Some(ssm_id)
                && c.error_code.is_none()
        });
        async move { Ok(found) }
    })
    .await?;
    let principal = call.principal_arn.unwrap_or_default();
    assert!(
        principal.ends_with(&principal_suffix(sub)),
        "TerminateSession with the owner's credentials: {principal:?}"
    );
    assert_eq!(
        world.sim.session_status(ssm_id).map(|s| s.0),
        Some(true),
        "the SSM session {ssm_id} ended"
    );
    Ok(())
}

/// The audit row `verb` of `session` printed by `gw` (waits for it).
async fn audit_row(gw: &GatewayProcess, session: &str, verb: &str) -> anyhow::Result<Value> {
    wait_for(&format!("the {verb} row of {session}"), T, || {
        let row = gw
            .audit_rows()
            .into_iter()
            .find(|r| r["session"] == session && audit_verb(r) == Some(verb));
        async move { Ok(row) }
    })
    .await
}

/// The sum of the samples of metric `name` (every label set) on `gw`'s `/metrics`.
async fn metric(gw: &GatewayProcess, name: &str) -> anyhow::Result<f64> {
    let text = gw.metrics_text().await?;
    Ok(text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// The transcript Secrets named after `session` in `namespace` (admin view).
async fn secrets_named_after(
    world: &GatewayWorld,
    namespace: &str,
    session: &str,
) -> anyhow::Result<Vec<String>> {
    Ok(world
        .secrets_in(namespace)
        .await?
        .iter()
        .map(kube::ResourceExt::name_any)
        .filter(|n| n.starts_with(&format!("{session}-transcript")))
        .collect())
}

#[tokio::test]
async fn a_required_transcript_that_cannot_be_stored_refuses_the_shell_an_optional_one_does_not()
-> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    // The gateway's identity may write Secrets only in nodeshell-system (e2e/manifests/rbac):
    // pointed at `default`, every transcript write is refused by the apiserver (403).
    let gw = world
        .start_gateway(GatewayOptions {
            patch: json!({"namespace": "default"}),
            ..GatewayOptions::named("gw-no-secrets")
        })
        .await?;
    let required = world
        .scope("tr-required", 1, json!({"transcript": {"required": true}}))
        .await?;
    let optional = world
        .scope("tr-optional", 1, json!({"transcript": {"required": false}}))
        .await?;

    // Required: the attach is refused before any AWS call, and the session is closed.
    let sub = engineer(40);
    let api = gw.client(&world.token(&sub));
    let opened = api.open_ok(&required.nodes[0]).await?;
    // The open's own checks assumed the role once; the attach must not do it again.
    let assumed_at_open = calls_by(world, "AssumeRoleWithWebIdentity", &sub);
    let mut term = Terminal::connect(&opened.attach_url).await?;
    let error = term.control("error", T).await?;
    assert_eq!(error["code"], "E_INTERNAL", "{error}");
    assert_eq!(
        error["retryable"], false,
        "a 403 fails the same way on every retry: {error}"
    );
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("transcripts for this policy are required")
            && message.contains("no session was opened"),
        "the error says the shell was refused for its transcript: {error}"
    );
    assert_names_the_refusal_plainly("the error frame", message, "default");
    assert!(term.find_control("hello").is_none(), "{:?}", term.controls);
    term.read_until("the socket to close", T, |t| t.closed)
        .await?;
    let cr = world.wait_closed(&opened.session, T).await?;
    let st = &cr["status"];
    assert_eq!(st["reason"], "StartFailed", "{st}");
    assert_eq!(st["message"].as_str(), Some(message), "{st}");
    assert!(st["ssmSessionId"].is_null(), "no SSM session: {st}");
    assert!(st["transcript"].is_null(), "nothing stored: {st}");
    let shown = api
        .get(&format!("/api/v1/sessions/{}", opened.session))
        .await?;
    assert_eq!(shown.body["phase"], "Closed", "{}", shown.body);
    assert_eq!(shown.body["statusReason"], "StartFailed", "{}", shown.body);
    assert_eq!(
        calls_by(world, "AssumeRoleWithWebIdentity", &sub),
        assumed_at_open,
        "no AssumeRole at the refused attach"
    );
    assert_eq!(calls_by(world, "StartSession", &sub), 0, "no StartSession");
    let row = audit_row(&gw, &opened.session, "ssm_session_open").await?;
    assert_eq!(row["outcome"], "failure", "{row}");
    assert_eq!(row["reason"], "StartFailed", "{row}");
    assert_eq!(row["message"].as_str(), Some(message), "{row}");
    assert!(row["session_id"].is_null(), "{row}");
    let session = opened.session.clone();
    let event = wait_for("a StartFailed Warning event", T, || {
        let session = session.clone();
        async move {
            Ok(world.events().await?.into_iter().find(|e| {
                e.involved_object.name.as_deref() == Some(session.as_str())
                    && e.reason.as_deref() == Some("StartFailed")
            }))
        }
    })
    .await?;
    assert_eq!(event.type_.as_deref(), Some("Warning"), "{event:?}");
    assert_names_the_refusal_plainly(
        "the Event",
        event.message.as_deref().unwrap_or_default(),
        "default",
    );
    // The apiserver's own answer goes to the gateway's log, for its operators.
    let log = gw.process.stderr_text();
    assert!(
        log.contains("the policy requires a transcript, so the session is refused")
            && log.contains("forbidden"),
        "the raw refusal is logged"
    );

    // Optional: the shell opens and works; the failures are counted, logged and said at
    // the close, and nothing pretends a transcript exists.
    let sub = engineer(41);
    let (opened, mut term, hello) = attach(world, &gw, &optional, &sub).await?;
    let out = term.run("echo optional-shell-works", T).await?;
    assert!(out.contains("optional-shell-works"), "{out:?}");
    assert!(
        metric(&gw, "nodeshell_gateway_live_transcript_failures_total").await? >= 1.0,
        "the failed first write is counted"
    );
    assert!(
        gw.process
            .stderr_text()
            .contains("first transcript write failed"),
        "the failed first write is logged"
    );
    let live = world
        .wait_session(&opened.session, "Active", T, |s| {
            s["status"]["phase"] == "Active"
        })
        .await?;
    assert!(live["status"]["transcript"].is_null(), "{}", live["status"]);
    term.send_input(b"exit 0\r").await?;
    // A store that refuses (403) is tried once at the end, not five times a second apart.
    let closed = term.control("closed", PROMPT_CLOSE).await?;
    assert_eq!(closed["reason"], "UserExit", "{closed}");
    let cr = world.wait_closed(&opened.session, T).await?;
    let st = &cr["status"];
    assert_eq!(st["reason"], "UserExit", "{st}");
    assert_eq!(st["ssmSessionId"], ssm_id(&hello).as_str(), "{st}");
    assert!(st["transcript"].is_null(), "{st}");
    let message = st["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("the shell exited; no transcript was stored: "),
        "the close says no transcript exists, not that its end is missing: {st}"
    );
    assert_names_the_refusal_plainly("the close message", message, "default");
    let row = audit_row(&gw, &opened.session, "ssm_session_close").await?;
    assert!(row["transcript_ref"].is_null(), "{row}");
    assert_eq!(row["message"].as_str(), Some(message), "{row}");
    for namespace in [SYSTEM_NAMESPACE, "default"] {
        let names = secrets_named_after(world, namespace, &opened.session).await?;
        assert!(names.is_empty(), "{namespace}: {names:?}");
    }
    let transcript = world
        .client(&sub)
        .get(&format!("/api/v1/sessions/{}/transcript", opened.session))
        .await?;
    assert_eq!(
        (transcript.status, transcript.code()),
        (404, "E_NOT_FOUND"),
        "{}",
        transcript.body
    );

    world.cleanup(&required).await?;
    world.cleanup(&optional).await
}

#[tokio::test]
async fn a_required_transcript_that_stops_being_stored_ends_the_session() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    // A namespace of this test only, where the gateway's identity may write Secrets through
    // one RoleBinding; deleting it mid-session makes the next flush fail with a 403.
    let namespace = format!(
        "nodeshell-edges-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    world
        .cluster
        .apply_yaml(&format!(
            r#"apiVersion: v1
kind: Namespace
metadata:
  name: {namespace}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: transcripts
  namespace: {namespace}
rules:
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["create", "get", "list", "patch", "update"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: gateway-transcripts
  namespace: {namespace}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: transcripts
subjects:
  - kind: ServiceAccount
    name: nodeshell-gateway
    namespace: {SYSTEM_NAMESPACE}
"#
        ))
        .await?;
    let gw = world
        .start_gateway(GatewayOptions {
            patch: json!({"namespace": namespace, "transcriptFlushIntervalSeconds": 1}),
            ..GatewayOptions::named("gw-revoked")
        })
        .await?;
    let scope = world
        .scope("tr-revoked", 1, json!({"transcript": {"required": true}}))
        .await?;
    let sub = engineer(47);
    let (opened, mut term, hello) = attach(world, &gw, &scope, &sub).await?;
    let ssm = ssm_id(&hello);
    term.run("echo stored-while-allowed", T).await?;
    world
        .wait_session(&opened.session, "Active with a stored transcript", T, |s| {
            s["status"]["phase"] == "Active" && !s["status"]["transcript"]["sha256"].is_null()
        })
        .await?;
    let stored = transcript_secrets_in(world, &namespace, &opened.session).await?;
    assert!(!stored.is_empty(), "the first chunk is in {namespace}");
    // Every chunk write is counted in compressed bytes (this gateway records this session
    // only): at least what the chunks hold now, once the writes the apiserver has taken are
    // counted too.
    let held = secret_bytes(&stored).len();
    assert!(held > 0, "the chunks hold the recording");
    wait_for("the chunk bytes written to be counted", T, || async {
        let counted = metric(&gw, "nodeshell_gateway_live_transcript_bytes_stored_total").await?;
        Ok((counted >= held as f64).then_some(()))
    })
    .await?;

    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(world.cluster.client(Identity::Admin).await?, &namespace);
    bindings
        .delete("gateway-transcripts", &Default::default())
        .await?;
    // Output after the revocation makes the transcript dirty, so the next flush is tried.
    term.send_input(b"echo typed-after-the-revocation\r")
        .await?;
    let closed = term.control("closed", T).await?;
    assert_eq!(closed["reason"], "TranscriptFailed", "{closed}");
    let cr = world.wait_closed(&opened.session, T).await?;
    let st = &cr["status"];
    assert_eq!(st["reason"], "TranscriptFailed", "{st}");
    let message = st["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("the transcript could not be stored and the policy requires one: ")
            && message.contains("the session was closed"),
        "{st}"
    );
    assert_names_the_refusal_plainly("the TranscriptFailed message", message, &namespace);
    expect_terminated_by_owner(world, &ssm, &sub).await?;
    let row = audit_row(&gw, &opened.session, "ssm_session_close").await?;
    assert_eq!(row["reason"], "TranscriptFailed", "{row}");
    assert_eq!(row["outcome"], "error", "{row}");
    assert_eq!(row["message"].as_str(), Some(message), "{row}");
    world.cleanup(&scope).await?;
    // Best effort: this control plane runs no namespace controller to finish the deletion,
    // but the namespace is marked for it and the cluster dies with the test binary.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> =
        Api::all(world.cluster.client(Identity::Admin).await?);
    let _ = namespaces.delete(&namespace, &Default::default()).await;
    Ok(())
}

#[tokio::test]
async fn a_reattach_with_a_wrong_resume_token_is_refused_and_the_right_one_still_works()
-> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("wrongtoken", 1, json!({})).await?;
    let sub = engineer(42);
    let api = world.client(&sub);
    let (opened, mut first, hello) = attach(world, world.gateway(), &scope, &sub).await?;
    let token = hello["resumeToken"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!token.is_empty(), "{hello}");
    first.run("echo before-the-drop", T).await?;
    // The same length and alphabet, one character off: only the value is wrong.
    let mut wrong = token.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong)?;

    // Refused while the first browser is still attached; that browser keeps its shell.
    let refuse = |offset: usize, resume_token: String| {
        let api = api.clone();
        let session = opened.session.clone();
        async move {
            let ticket = api.ticket(&session).await?;
            let mut term = Terminal::connect(&ticket.attach_url).await?;
            term.send_control(
                json!({"type": "resume", "resumeToken": resume_token, "offset": offset}),
            )
            .await?;
            let error = term.control("error", T).await?;
            term.read_until("the socket to close", T, |t| t.closed)
                .await?;
            assert!(term.find_control("hello").is_none(), "{:?}", term.controls);
            assert!(term.output.is_empty(), "no output replayed to a stranger");
            anyhow::Ok(error)
        }
    };
    let error = refuse(first.output.len(), wrong.clone()).await?;
    assert_eq!(error["code"], "E_FORBIDDEN", "{error}");
    assert_eq!(error["retryable"], false, "{error}");
    let out = first.run("echo first-still-attached", T).await?;
    assert!(out.contains("first-still-attached"), "{out:?}");

    // Refused after the browser dropped too; the session waits for the right token.
    let received = std::mem::take(&mut first.output);
    first.drop_connection();
    let error = refuse(received.len(), wrong).await?;
    assert_eq!(error["code"], "E_FORBIDDEN", "{error}");
    let error = refuse(received.len(), String::new()).await?;
    assert_eq!(error["code"], "E_FORBIDDEN", "an empty token: {error}");
    let cr = world.session(&opened.session).await?.unwrap_or_default();
    assert_eq!(cr["status"]["phase"], "Active", "{}", cr["status"]);
    assert_eq!(
        world.sim.session_status(&ssm_id(&hello)).map(|s| s.0),
        Some(false),
        "the SSM session is still up"
    );

    // The right token reattaches to the same SSM session, with nothing lost.
    let ticket = api.ticket(&opened.session).await?;
    let mut back = Terminal::connect(&ticket.attach_url).await?;
    back.send_control(json!({"type": "resume", "resumeToken": token, "offset": received.len()}))
        .await?;
    let again = back.hello().await?;
    assert_eq!(again["ssmSessionId"], hello["ssmSessionId"], "{again}");
    let out = back.run("echo after-the-right-token", T).await?;
    assert!(out.contains("after-the-right-token"), "{out:?}");
    assert!(back.find_control("error").is_none(), "{:?}", back.controls);
    back.send_input(b"exit 0\r").await?;
    let closed = back.control("closed", T).await?;
    assert_eq!(closed["reason"], "UserExit", "{closed}");
    world.cleanup(&scope).await
}

#[tokio::test]
async fn a_closing_phase_set_by_the_controller_ends_the_live_session_with_its_reason()
-> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("ctlclosing", 1, json!({})).await?;
    let sub = engineer(43);
    let (opened, mut term, hello) = attach(world, world.gateway(), &scope, &sub).await?;
    let ssm = ssm_id(&hello);
    let active = world
        .wait_session(&opened.session, "Active", T, |s| {
            s["status"]["phase"] == "Active"
        })
        .await?;

    // What the controller's expiry writes: phase Closing with a reason and its Closing
    // condition, as its own field manager, carrying the fields it already owns.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let message = "no activity for the policy's idle time (e2e: written as the controller)";
    let mut conditions: Vec<Value> = active["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["type"] == "Admitted")
        .collect();
    conditions.push(json!({
        "type": "Closing", "status": "True", "reason": "IdleTimeout",
        "message": message, "lastTransitionTime": now,
    }));
    let patch = json!({
        "apiVersion": "nodeshell.periscope.io/v1alpha1",
        "kind": "NodeShellSession",
        "metadata": { "name": opened.session },
        "status": {
            "phase": "Closing",
            "reason": "IdleTimeout",
            "message": message,
            "admittedAt": active["status"]["admittedAt"],
            "conditions": conditions,
        },
    });
    let as_controller: Api<NodeShellSession> =
        Api::all(world.cluster.client(Identity::Controller).await?);
    as_controller
        .patch_status(
            &opened.session,
            &PatchParams::apply(nodeshell::controller::FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    let written = Instant::now();

    let closed = term.control("closed", T).await?;
    let took = written.elapsed();
    assert_eq!(closed["reason"], "IdleTimeout", "{closed}");
    // The gateway watches its session; its end sequence (TerminateSession, up to 3 s of
    // last output, the final flush and status) fits well under the controller's 15 s
    // closing grace, after which the controller would close the session itself.
    assert!(
        took < Duration::from_secs(8),
        "the closed frame came {took:?} after Closing"
    );
    let cr = world.wait_closed(&opened.session, T).await?;
    let st = &cr["status"];
    assert_eq!(st["reason"], "IdleTimeout", "{st}");
    assert!(
        st["message"]
            .as_str()
            .is_some_and(|m| m.contains("the controller closed the session")),
        "closed by the gateway, not by the controller's grace: {st}"
    );
    assert!(!st["endedAt"].is_null(), "{st}");
    assert!(!st["transcript"]["sha256"].is_null(), "{st}");
    expect_terminated_by_owner(world, &ssm, &sub).await?;
    let row = audit_row(world.gateway(), &opened.session, "ssm_session_close").await?;
    assert_eq!(row["reason"], "IdleTimeout", "{row}");
    assert_eq!(row["session_id"], ssm.as_str(), "{row}");
    let verbs: Vec<&str> = st["audit"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["verb"].as_str()).collect())
        .unwrap_or_default();
    assert!(verbs.contains(&"ssm_session_close"), "{st}");
    world.cleanup(&scope).await
}

/// Checks that the `o` events of `output` hold `<prefix>1` … `<prefix><n>` once each, in
/// order (lines as `seq -f '<prefix>%07g'` prints them).
fn assert_numbered_lines(output: &str, prefix: &str, n: usize) {
    let got: Vec<usize> = output
        .split(['\r', '\n'])
        .filter_map(|l| l.strip_prefix(prefix)?.parse().ok())
        .collect();
    assert_eq!(got.len(), n, "lines lost or repeated");
    assert!(
        got.iter().enumerate().all(|(i, v)| *v == i + 1),
        "lines out of order"
    );
}

#[tokio::test]
async fn a_large_transcript_spans_several_secrets_and_a_small_cap_truncates_with_a_marker()
-> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let big = world
        .scope(
            "bigcast",
            1,
            json!({"transcript": {"maxBytes": 4 * 1024 * 1024}}),
        )
        .await?;
    let small = world
        .scope("smallcast", 1, json!({"transcript": {"maxBytes": 4096}}))
        .await?;

    // About 1.5 MB of numbered lines: with JSON escaping, several 508 KiB segments.
    let big_case = async {
        let sub = engineer(44);
        let (opened, mut term, _) = attach(world, world.gateway(), &big, &sub).await?;
        let lines = 125_000;
        term.send_input(format!("seq -f 'tl-%07g' 1 {lines}; echo 'big''-done'\r").as_bytes())
            .await?;
        term.expect_output("big-done", Duration::from_secs(150))
            .await?;
        term.send_input(b"exit 0\r").await?;
        term.control("closed", T).await?;
        let cr = world
            .wait_session(&opened.session, "Closed with a transcript", T, |s| {
                s["status"]["phase"] == "Closed" && !s["status"]["transcript"]["sha256"].is_null()
            })
            .await?;
        let st = &cr["status"]["transcript"];
        assert_eq!(st["truncated"], false, "{st}");
        let parts = transcript_secrets(world, &opened.session).await?;
        assert!(parts.len() >= 3, "{} Secrets for ~1.5 MB", parts.len());
        for (n, part) in parts.iter().enumerate() {
            let data = part.data.clone().unwrap_or_default();
            let gz = data
                .get("asciicast.gz")
                .map(|b| b.0.len())
                .unwrap_or_default();
            assert!(
                gz > 0 && gz <= 512 * 1024,
                "chunk {n} holds {gz} bytes of gzip"
            );
            assert_eq!(
                part.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("nodeshell.periscope.io/transcript-chunk"))
                    .map(String::as_str),
                Some(n.to_string().as_str()),
                "chunk annotation"
            );
        }
        let stored = gunzip(&secret_bytes(&parts))?;
        let served = world
            .client(&sub)
            .get(&format!("/api/v1/sessions/{}/transcript", opened.session))
            .await?;
        assert_eq!(served.status, 200, "{}", served.body);
        let served = gunzip(&served.raw)?;
        assert_eq!(served, stored, "GET /transcript is every Secret, in order");
        assert_eq!(
            st["sha256"].as_str(),
            Some(sha256_hex(&served).as_str()),
            "status.transcript.sha256"
        );
        let (_, output) = asciicast_output(&String::from_utf8(served)?)?;
        assert_numbered_lines(&output, "tl-", lines);
        assert_eq!(st["bytes"].as_u64(), Some(output.len() as u64), "{st}");
        anyhow::Ok(())
    };

    // A 4096-byte cap: the recording is the first 4096 bytes, then the marker.
    let small_case = async {
        let sub = engineer(45);
        let (opened, mut term, _) = attach(world, world.gateway(), &small, &sub).await?;
        term.send_input(b"seq 1 3000; echo 'small''-done'\r")
            .await?;
        term.expect_output("small-done", T).await?;
        term.send_input(b"exit 0\r").await?;
        term.control("closed", T).await?;
        let cr = world
            .wait_session(&opened.session, "Closed with a transcript", T, |s| {
                s["status"]["phase"] == "Closed" && !s["status"]["transcript"]["sha256"].is_null()
            })
            .await?;
        let st = &cr["status"]["transcript"];
        assert_eq!(st["truncated"], true, "{st}");
        assert_eq!(st["bytes"], 4096, "{st}");
        let recording = gunzip(
            &world
                .client(&sub)
                .get(&format!("/api/v1/sessions/{}/transcript", opened.session))
                .await?
                .raw,
        )?;
        assert_eq!(st["sha256"].as_str(), Some(sha256_hex(&recording).as_str()));
        let cast = String::from_utf8(recording)?;
        let (_, output) = asciicast_output(&cast)?;
        assert_eq!(
            output.as_bytes(),
            &term.output[..4096],
            "the recording is the first 4096 bytes the terminal printed"
        );
        let last: Value = serde_json::from_str(cast.lines().last().unwrap_or_default())?;
        assert_eq!(last[1], "m", "the recording ends with a marker: {last}");
        assert!(
            last[2]
                .as_str()
                .is_some_and(|m| m.starts_with("transcript truncated")),
            "{last}"
        );
        anyhow::Ok(())
    };

    let (a, b) = tokio::join!(big_case, small_case);
    world.cleanup(&big).await?;
    world.cleanup(&small).await?;
    a?;
    b
}

#[tokio::test]
async fn a_browser_that_never_comes_back_ends_the_session_after_the_reattach_grace()
-> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let grace = Duration::from_secs(3);
    let gw = world
        .start_gateway(GatewayOptions {
            patch: json!({"reattachGraceSeconds": grace.as_secs()}),
            ..GatewayOptions::named("gw-grace")
        })
        .await?;
    let scope = world.scope("grace", 1, json!({})).await?;
    let sub = engineer(46);
    let (opened, mut term, hello) = attach(world, &gw, &scope, &sub).await?;
    let ssm = ssm_id(&hello);
    term.run("echo about-to-vanish", T).await?;
    world
        .wait_session(&opened.session, "Active", T, |s| {
            s["status"]["phase"] == "Active"
        })
        .await?;

    term.drop_connection();
    let dropped = Instant::now();
    let cr = world
        .wait_session(&opened.session, "Closing or Closed", T, |s| {
            matches!(s["status"]["phase"].as_str(), Some("Closing" | "Closed"))
        })
        .await?;
    let ended_after = dropped.elapsed();
    assert!(
        ended_after >= grace,
        "ended {ended_after:?} after the drop, before the {grace:?} grace: {}",
        cr["status"]
    );
    assert!(
        ended_after < grace + Duration::from_secs(10),
        "ended {ended_after:?} after the drop (grace {grace:?})"
    );
    let cr = world.wait_closed(&opened.session, T).await?;
    assert_eq!(
        cr["status"]["reason"], "ClientDisconnected",
        "{}",
        cr["status"]
    );
    expect_terminated_by_owner(world, &ssm, &sub).await?;
    let row = audit_row(&gw, &opened.session, "ssm_session_close").await?;
    assert_eq!(row["reason"], "ClientDisconnected", "{row}");

    // Coming back too late: no ticket for an ended session.
    let late = gw
        .client(&world.token(&sub))
        .post(
            &format!("/api/v1/sessions/{}/ticket", opened.session),
            json!({}),
        )
        .await?;
    assert_eq!(
        (late.status, late.code()),
        (400, "E_BAD_REQUEST"),
        "{}",
        late.body
    );
    world.cleanup(&scope).await
}

/// The access keys of `sub`'s role session in its successful `operation` calls, in call
/// order: for `AssumeRoleWithWebIdentity` the keys STS issued, for an SSM call the keys it
/// was signed with.
fn role_session_keys(world: &GatewayWorld, sub: &str, operation: &str) -> Vec<String> {
    let suffix = principal_suffix(sub);
    world
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.operation == operation && c.error_code.is_none())
        .filter(|c| {
            c.principal_arn
                .as_deref()
                .is_some_and(|p| p.ends_with(&suffix))
        })
        .filter_map(|c| c.access_key_id)
        .collect()
}

#[tokio::test]
async fn an_opened_session_costs_one_assume_role_unless_it_starts_on_another_replica()
-> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("one-sts", 2, json!({})).await?;

    // Open and attach on one replica: the open's credentials start the session.
    let sub = engineer(48);
    let (_, mut term, _) = attach(world, world.gateway(), &scope, &sub).await?;
    let issued = role_session_keys(world, &sub, "AssumeRoleWithWebIdentity");
    assert_eq!(
        issued.len(),
        1,
        "one AssumeRoleWithWebIdentity per opened session: {issued:?}"
    );
    assert_eq!(
        role_session_keys(world, &sub, "StartSession"),
        issued,
        "StartSession signed with the credentials minted at open, under the person's role session name"
    );
    term.send_input(b"exit\r").await?;
    term.read_until("the socket to close", T, |t| t.closed)
        .await?;

    // Open on one replica, attach on another: nothing was minted there, so it asks STS.
    let sub = engineer(49);
    let other = world
        .start_gateway(GatewayOptions::named("gw-other-replica"))
        .await?;
    let opened = world
        .gateway()
        .client(&world.token(&sub))
        .open_ok(&scope.nodes[1])
        .await?;
    let there = other
        .client(&world.token(&sub))
        .ticket(&opened.session)
        .await?;
    let mut term = Terminal::connect(&there.attach_url).await?;
    term.hello().await?;
    term.expect_output("$ ", T).await?;
    let issued = role_session_keys(world, &sub, "AssumeRoleWithWebIdentity");
    assert_eq!(
        issued.len(),
        2,
        "open and start each assumed the role: {issued:?}"
    );
    assert_eq!(
        role_session_keys(world, &sub, "StartSession"),
        vec![issued[1].clone()],
        "the other replica started the session with its own credentials"
    );
    term.send_input(b"exit\r").await?;
    term.read_until("the socket to close", T, |t| t.closed)
        .await?;
    Ok(())
}

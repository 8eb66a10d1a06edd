//! How live sessions end without the person typing `exit`: the idle cut (with its warning
//! frame first), the InputOnly idle rule while output streams, the maximum duration, and an
//! admin's termination through `spec.terminate` and through `DELETE`.
//!
//! The CRD allows no idle or maximum duration under 60 s, so these tests run on a 60 s clock
//! and in parallel with each other.

mod support;

use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use nodeshell::api::NodeShellSession;
use nodeshell::localcluster::Identity;
use serde_json::json;
use support::*;

const T: Duration = Duration::from_secs(30);
/// How far from the configured second a cut may land (polling, a busy 2-core machine).
const SLACK: f64 = 4.0;

/// The tests of this binary run one at a time: one of them counts the apiserver's session
/// watches, which any other test's gateway or wait would also move.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Opens and attaches a shell for `sub` on the scope's first node; waits for the prompt.
async fn attach(
    world: &GatewayWorld,
    scope: &Scope,
    sub: &str,
) -> anyhow::Result<(Opened, Terminal)> {
    let opened = world.client(sub).open_ok(&scope.nodes[0]).await?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    term.hello().await?;
    term.expect_output("$ ", T).await?;
    Ok((opened, term))
}

#[tokio::test]
async fn idle_warns_then_cuts_and_input_only_ignores_output_and_max_duration_cuts()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let world = GatewayWorld::shared().await?;
    let idle = world
        .scope(
            "idle",
            1,
            json!({"limits": {"idleSeconds": 60, "idleWarningSeconds": 15}}),
        )
        .await?;
    let input_only = world
        .scope(
            "inputonly",
            1,
            json!({"limits": {"idleSeconds": 60, "idleWarningSeconds": 15, "idleActivity": "InputOnly"}}),
        )
        .await?;
    let max = world
        .scope(
            "maxdur",
            1,
            json!({"limits": {"idleSeconds": 600, "idleWarningSeconds": 30, "maxDurationSeconds": 60}}),
        )
        .await?;

    // 1. Nothing happens after the prompt: warning 15 s before the cut, cut at 60 s.
    let idle_case = async {
        let (opened, mut term) = attach(world, &idle, &engineer(20)).await?;
        let quiet_since = Instant::now();
        let warn = term.control("idle_warn", Duration::from_secs(90)).await?;
        let warned_at = quiet_since.elapsed().as_secs_f64();
        let closed = term.control("closed", Duration::from_secs(60)).await?;
        let cut_at = quiet_since.elapsed().as_secs_f64();
        assert_eq!(closed["reason"], "IdleTimeout", "{closed}");
        assert!(
            (warned_at - 45.0).abs() <= SLACK,
            "warning at {warned_at:.1}s, expected 45s"
        );
        let remaining = warn["secondsRemaining"].as_u64().unwrap_or(0);
        assert!((14..=15).contains(&remaining), "{warn}");
        assert!(
            (cut_at - 60.0).abs() <= SLACK,
            "idle cut at {cut_at:.1}s, expected 60s"
        );
        let cr = world.wait_closed(&opened.session, T).await?;
        assert_eq!(cr["status"]["reason"], "IdleTimeout");
        anyhow::Ok(())
    };

    // 2. A browser that takes the session over during the warning period is told too (a
    //    reattach is no activity), with the seconds left when it came, after its hello.
    let reattach_case = async {
        let sub = engineer(28);
        let (opened, mut first) = attach(world, &idle, &sub).await?;
        let quiet_since = Instant::now();
        let token = first
            .find_control("hello")
            .and_then(|h| h["resumeToken"].as_str())
            .unwrap_or_default()
            .to_string();
        first.control("idle_warn", Duration::from_secs(90)).await?;
        let ticket = world.client(&sub).ticket(&opened.session).await?;
        let mut second = Terminal::connect(&ticket.attach_url).await?;
        second
            .send_control(json!({"type": "resume", "resumeToken": token, "offset": first.received}))
            .await?;
        let warn = second.control("idle_warn", T).await?;
        let told_at = quiet_since.elapsed().as_secs_f64();
        let kinds: Vec<_> = second.controls.iter().map(|c| c["type"].clone()).collect();
        assert_eq!(kinds, ["hello", "idle_warn"], "{:?}", second.controls);
        let remaining = warn["secondsRemaining"].as_u64().unwrap_or(0) as f64;
        assert!(
            remaining >= 1.0 && (remaining - (60.0 - told_at)).abs() <= SLACK,
            "told at {told_at:.1}s that {remaining}s are left; the cut is at 60s"
        );
        let closed = second.control("closed", Duration::from_secs(60)).await?;
        assert_eq!(closed["reason"], "IdleTimeout", "{closed}");
        let cut_at = quiet_since.elapsed().as_secs_f64();
        assert!(
            (cut_at - 60.0).abs() <= SLACK,
            "idle cut at {cut_at:.1}s, expected 60s"
        );
        world.wait_closed(&opened.session, T).await?;
        anyhow::Ok(())
    };

    // 3. InputOnly: output streams all along, the cut still comes 60 s after the last key.
    let input_only_case = async {
        let (opened, mut term) = attach(world, &input_only, &engineer(21)).await?;
        term.send_input(b"while true; do echo tick; sleep 1; done\r")
            .await?;
        let typed_at = Instant::now();
        term.expect_output("tick", T).await?;
        let closed = term.control("closed", Duration::from_secs(90)).await?;
        let cut_at = typed_at.elapsed().as_secs_f64();
        assert_eq!(closed["reason"], "IdleTimeout", "{closed}");
        assert!(
            term.find_control("idle_warn").is_some(),
            "warned first: {:?}",
            term.controls
        );
        let ticks = String::from_utf8_lossy(&term.output)
            .matches("tick")
            .count();
        assert!(ticks > 30, "output kept streaming ({ticks} ticks)");
        assert!(
            (cut_at - 60.0).abs() <= SLACK,
            "InputOnly cut at {cut_at:.1}s, expected 60s"
        );
        world.wait_closed(&opened.session, T).await?;
        anyhow::Ok(())
    };

    // 4. Maximum duration: typing every few seconds does not keep it open past 60 s.
    let max_case = async {
        let started = Instant::now();
        let (opened, mut term) = attach(world, &max, &engineer(22)).await?;
        let deadline = started + Duration::from_secs(90);
        while term.find_control("closed").is_none() && !term.closed && Instant::now() < deadline {
            term.send_input(b"echo busy\r").await.ok();
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until && !term.closed {
                term.pump(Duration::from_millis(300)).await?;
            }
        }
        let closed = term.find_control("closed").cloned().unwrap_or_default();
        assert_eq!(closed["reason"], "MaxDuration", "{:?}", term.controls);
        let cr = world.wait_closed(&opened.session, T).await?;
        assert_eq!(cr["status"]["reason"], "MaxDuration");
        let lived = cr["status"]["durationSeconds"].as_f64().unwrap_or(0.0);
        assert!(
            (lived - 60.0).abs() <= SLACK + 1.0,
            "durationSeconds {lived}"
        );
        anyhow::Ok(())
    };

    let (a, b, c, d) = tokio::join!(idle_case, reattach_case, input_only_case, max_case);
    for scope in [&idle, &input_only, &max] {
        world.cleanup(scope).await?;
    }
    a?;
    b?;
    c?;
    d?;
    Ok(())
}

#[tokio::test]
async fn an_admin_ends_sessions_through_spec_terminate_and_delete() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let world = GatewayWorld::shared().await?;
    let scope = world
        .scope("terminate", 1, json!({"limits": {"maxSessionsPerUser": 3}}))
        .await?;
    let owner = engineer(23);

    // spec.terminate, set by an on-call engineer with kubectl rights.
    let (opened, mut term) = attach(world, &scope, &owner).await?;
    let ssm_id = term.hello().await?["ssmSessionId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let oncall: Api<NodeShellSession> =
        Api::all(world.cluster.client(Identity::SessionAdmin).await?);
    oncall
        .patch(
            &opened.session,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"terminate": true}})),
        )
        .await?;
    let closed = term.control("closed", T).await?;
    assert_eq!(closed["reason"], "AdminTerminated", "{closed}");
    let cr = world.wait_closed(&opened.session, T).await?;
    assert_eq!(cr["status"]["reason"], "AdminTerminated");
    let terminated = world.sim.calls().into_iter().find(|c| {
        c.operation == "TerminateSession" && c.session_id.as_deref() == Some(ssm_id.as_str())
    });
    let principal = terminated.and_then(|c| c.principal_arn).unwrap_or_default();
    assert!(
        principal.ends_with(&format!("/{SESSION_PREFIX}-{owner}")),
        "TerminateSession with the owner's credentials, not the gateway's: {principal:?}"
    );
    assert_eq!(world.sim.session_status(&ssm_id).map(|s| s.0), Some(true));

    // DELETE by someone else of the same tier: refused, the session stays up.
    let (opened, mut term) = attach(world, &scope, &owner).await?;
    let stranger = world.client(&engineer(24));
    let refused = stranger
        .delete(&format!("/api/v1/sessions/{}", opened.session))
        .await?;
    assert!(matches!(refused.status, 403 | 404), "{}", refused.body);
    assert!(term.run("echo alive", T).await?.contains("alive"));

    // DELETE by an admin tier ends it.
    let admin = world.client(ADMIN);
    let answer = admin
        .delete(&format!("/api/v1/sessions/{}", opened.session))
        .await?;
    assert!(answer.status < 300, "{}", answer.body);
    let closed = term.control("closed", T).await?;
    assert_eq!(closed["reason"], "AdminTerminated", "{closed}");
    world.wait_closed(&opened.session, T).await?;

    // DELETE by the owner ends it too.
    let (opened, mut term) = attach(world, &scope, &owner).await?;
    let answer = world
        .client(&owner)
        .delete(&format!("/api/v1/sessions/{}", opened.session))
        .await?;
    assert!(answer.status < 300, "{}", answer.body);
    term.control("closed", T).await?;
    let cr = world.wait_closed(&opened.session, T).await?;
    assert!(
        cr["spec"]["terminate"] == true,
        "DELETE requests termination through the spec: {}",
        cr["spec"]
    );
    world.cleanup(&scope).await
}

/// A shell printing a line a second for 70 s: its session's status is written for activity at
/// most once a minute (so at most twice in the window), not every few seconds; the byte
/// counters are exact at the close. Counted as watch events on the session.
#[tokio::test]
async fn a_busy_session_writes_its_status_at_most_once_a_minute() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    use futures::StreamExt as _;
    use kube::api::{WatchEvent, WatchParams};
    const WINDOW: u32 = 70;
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("churn", 1, json!({})).await?;
    let (opened, mut term) = attach(world, &scope, &engineer(23)).await?;
    let sessions: Api<NodeShellSession> = Api::all(world.cluster.client(Identity::Admin).await?);
    let active = world
        .wait_session(&opened.session, "Active", T, |s| {
            s["status"]["phase"] == "Active"
        })
        .await?;
    let from = active["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    term.send_input(b"while true; do echo tick; sleep 1; done\r")
        .await?;
    term.expect_output("tick", T).await?;
    let params = WatchParams::default()
        .fields(&format!("metadata.name={}", opened.session))
        .timeout(WINDOW);
    let mut events = sessions.watch(&params, &from).await?.boxed();
    let count = async {
        let mut writes = Vec::new();
        while let Some(event) = events.next().await {
            if let WatchEvent::Modified(s) = event? {
                let status = s.status.unwrap_or_default();
                writes.push((status.phase, status.last_activity_at, status.bytes_out));
            }
        }
        anyhow::Ok(writes)
    };
    let stream = async {
        let until = Instant::now() + Duration::from_secs(u64::from(WINDOW));
        while Instant::now() < until && !term.closed {
            term.pump(Duration::from_millis(500)).await?;
        }
        anyhow::Ok(())
    };
    let (writes, streamed) = tokio::join!(count, stream);
    let (writes, ()) = (writes?, streamed?);
    let ticks = String::from_utf8_lossy(&term.output)
        .matches("tick")
        .count();
    assert!(ticks > 50, "output kept streaming ({ticks} ticks)");
    assert!(
        writes.len() <= 2,
        "{} status writes in {WINDOW} s of output (at most one a minute): {writes:?}",
        writes.len()
    );
    // The counters are exact at the close.
    term.send_input(b"\x03exit\r").await?;
    let closed = world.wait_closed(&opened.session, T).await?;
    let printed = String::from_utf8_lossy(&term.output)
        .matches("tick")
        .count();
    let bytes_out = closed["status"]["bytesOut"].as_u64().unwrap_or(0);
    assert!(
        bytes_out >= (printed * "tick\r\n".len()) as u64,
        "bytesOut {bytes_out} for {printed} ticks"
    );
    world.cleanup(&scope).await
}

/// The sum of the apiserver's own metric `metric` over its series for NodeShellSession
/// requests of `verb`, whoever made them.
async fn session_metric(world: &GatewayWorld, metric: &str, verb: &str) -> anyhow::Result<u64> {
    let client = world.cluster.client(Identity::Admin).await?;
    let text = client
        .request_text(::http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let (series, verb) = (format!("{metric}{{"), format!("verb=\"{verb}\""));
    anyhow::ensure!(
        text.contains(&series),
        "the apiserver's /metrics has no {metric}"
    );
    let sum: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with(&series)
                && l.contains("resource=\"nodeshellsessions\"")
                && l.contains(&verb)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    Ok(sum as u64)
}

/// Watches the apiserver is serving on NodeShellSessions now, whoever opened them.
async fn session_watches(world: &GatewayWorld) -> anyhow::Result<u64> {
    session_metric(world, "apiserver_longrunning_requests", "WATCH").await
}

/// Session requests of `verb` the apiserver has finished so far (`apiserver_request_total`
/// counts a WATCH when it ends), whoever made them.
async fn session_requests(world: &GatewayWorld, verb: &str) -> anyhow::Result<u64> {
    session_metric(world, "apiserver_request_total", verb).await
}

#[tokio::test]
async fn a_gateway_follows_its_live_sessions_through_one_apiserver_watch() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    // Before (issue 13), every live session held an apiserver watch (and a connection) of
    // its own: eight shells were eight more watches.
    const SHELLS: usize = 8;
    let world = GatewayWorld::shared().await?;
    let gw = world
        .start_gateway(GatewayOptions::named("gw-onewatch"))
        .await?;
    let scope = world
        .scope("onewatch", 1, json!({"limits": {"maxSessionsTotal": 20}}))
        .await?;
    let before = session_watches(world).await?;
    let reads_before = session_requests(world, "GET").await?;
    let mut shells = Vec::new();
    for n in 0..SHELLS {
        shells.push(
            world
                .attach_shell(&gw, &scope, &engineer(20 + n), T)
                .await?,
        );
    }
    let during = session_watches(world).await?;
    // Each shell reads its session once: the attach, before its upgrade. The open learns
    // its decision from the watch (it reads only when the watch saw the decision before it
    // subscribed), the start works from the attach's copy, and the running session
    // subscribes before its Active write (before, each of the four read it: 32 reads for 8
    // shells). Two reads to spare for the controller's and an open's rare one.
    let reads = session_requests(world, "GET").await? - reads_before;
    assert!(
        reads <= SHELLS as u64 + 2,
        "{SHELLS} opened and attached shells read their sessions {reads} times"
    );
    // The gateway's one watch, plus at most one still closing (the tests here run one at a
    // time, so no other test's gateway or wait is counted).
    assert!(
        during <= before + 2,
        "{SHELLS} live shells on one gateway took {} more session watches ({before} → {during})",
        during.saturating_sub(before)
    );
    // The fanned-out watch still ends a session an admin terminates.
    let sessions: Api<NodeShellSession> = Api::all(world.cluster.client(Identity::Admin).await?);
    let (opened, term, _) = &mut shells[0];
    sessions
        .patch(
            &opened.session,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"terminate": true}})),
        )
        .await?;
    let closed = term.control("closed", T).await?;
    assert_eq!(closed["reason"], "AdminTerminated", "{closed}");
    for (_, term, _) in shells.iter_mut().skip(1) {
        term.send_control(json!({"type": "close"})).await.ok();
    }
    world.cleanup(&scope).await
}

#[tokio::test]
async fn opens_count_caps_and_learn_their_decision_from_the_gateways_one_watch()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    // Before (issue 13), every open listed every session for the caps gate and started a
    // LIST+WATCH of its own for the controller's decision, ended once decided: six opens
    // were twelve more lists and six more finished watches.
    const OPENS: usize = 6;
    let world = GatewayWorld::shared().await?;
    let gw = world
        .start_gateway(GatewayOptions::named("gw-openwatch"))
        .await?;
    let scope = world
        .scope("openwatch", 1, json!({"limits": {"maxSessionsTotal": 20}}))
        .await?;
    // One open first: the gateway's own watch has listed the sessions by then.
    gw.client(&world.token(&engineer(29)))
        .open_ok(&scope.nodes[0])
        .await?;
    let (watches, lists) = (
        session_requests(world, "WATCH").await?,
        session_requests(world, "LIST").await?,
    );
    // Each person looks at the node list and runs the preflight first, as the console does:
    // both count the caps from the same watch, listing no session either.
    let opens = (0..OPENS).map(|n| {
        let api = gw.client(&world.token(&engineer(30 + n)));
        let node = scope.nodes[0].clone();
        async move {
            let listed = api.get("/api/v1/nodes").await?;
            anyhow::ensure!(listed.status == 200, "node list: {listed:?}");
            let preflight = api
                .get(&format!("/api/v1/nodes/{node}/shell/preflight"))
                .await?;
            anyhow::ensure!(preflight.status == 200, "preflight: {preflight:?}");
            api.open_ok(&node).await
        }
    });
    for opened in futures::future::join_all(opens).await {
        let opened = opened?;
        let session = world
            .session(&opened.session)
            .await?
            .ok_or_else(|| anyhow::anyhow!("session {} is gone", opened.session))?;
        assert_eq!(session["status"]["phase"], "Admitted", "{session}");
    }
    // The sessions gauge comes from the same watch: the admitted sessions show there.
    let admitted = "nodeshell_gateway_sessions{phase=\"Admitted\"} ";
    wait_for("the admitted sessions in the sessions gauge", T, || {
        let gw = &gw;
        async move {
            let text = gw.metrics_text().await?;
            let n: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix(admitted)?.trim().parse().ok())
                .unwrap_or(0);
            Ok((n > OPENS as u64).then_some(()))
        }
    })
    .await?;
    // A watch an open dropped ends at the apiserver a moment later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (watches_after, lists_after) = (
        session_requests(world, "WATCH").await?,
        session_requests(world, "LIST").await?,
    );
    // At most one other watch ending (and its re-list) meanwhile: the controller's, the
    // shared gateway's.
    assert!(
        watches_after <= watches + 1,
        "{OPENS} opens on one gateway ended {} session watches ({watches} → {watches_after})",
        watches_after.saturating_sub(watches)
    );
    assert!(
        lists_after <= lists + 1,
        "{OPENS} node lists, preflights and opens on one gateway listed sessions {} times ({lists} → {lists_after})",
        lists_after.saturating_sub(lists)
    );
    world.cleanup(&scope).await
}

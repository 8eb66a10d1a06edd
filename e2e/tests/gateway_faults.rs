//! The gateway under faults: SIGKILL mid-session (the controller marks GatewayLost, the
//! transcript up to the last flush survives), SIGTERM (every session closes with its audit
//! row), a browser that drops and reattaches (no byte lost or repeated), a browser that stops
//! reading (the gateway's memory stays bounded), and an unreachable apiserver (no session
//! opens; the error says why).

#[path = "gateway_support.rs"]
mod gateway_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_support::*;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const T: Duration = Duration::from_secs(30);

/// Opens and attaches a shell through `gw`; waits for the prompt.
async fn attach(
    world: &GatewayWorld,
    gw: &GatewayProcess,
    scope: &Scope,
    sub: &str,
) -> anyhow::Result<(Opened, Terminal, String)> {
    let opened = gw
        .client(&world.token(sub))
        .open_ok(&scope.nodes[0])
        .await?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    let hello = term.hello().await?;
    term.expect_output("$ ", T).await?;
    let ssm_id = hello["ssmSessionId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((opened, term, ssm_id))
}

/// The recording stored in the session's transcript Secrets so far (None until one decodes).
async fn stored_recording(world: &GatewayWorld, session: &str) -> anyhow::Result<Option<String>> {
    let parts = transcript_secrets(world, session).await?;
    if parts.is_empty() {
        return Ok(None);
    }
    Ok(gunzip(&secret_bytes(&parts))
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}

#[tokio::test]
async fn a_killed_gateway_is_marked_lost_and_keeps_the_flushed_transcript() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let gw = world
        .start_gateway(GatewayOptions::named("gw-sigkill"))
        .await?;
    let scope = world.scope("sigkill", 1, json!({})).await?;
    let (opened, mut term, _) = attach(world, &gw, &scope, &engineer(30)).await?;
    let marker = "flushed-before-the-kill";
    term.run(&format!("echo {marker}"), T).await?;
    // Wait for a flush that holds the marker (flushes are periodic).
    wait_for(
        "a transcript flush with the marker",
        Duration::from_secs(30),
        || async {
            Ok(stored_recording(world, &opened.session)
                .await?
                .filter(|r| r.contains(marker)))
        },
    )
    .await?;
    world
        .wait_session(&opened.session, "heartbeating", T, |s| {
            s["status"]["gateway"]["pod"] == "gw-sigkill"
                && !s["status"]["gateway"]["heartbeatAt"].is_null()
        })
        .await?;
    gw.process.signal("KILL");
    assert!(
        gw.process.wait_exit(Duration::from_secs(10)).await,
        "gateway died"
    );
    // The browser notices.
    let _ = term.read_until("socket closed", T, |t| t.closed).await;
    let cr = world
        .wait_closed(&opened.session, Duration::from_secs(60))
        .await?;
    assert_eq!(cr["status"]["reason"], "GatewayLost", "{}", cr["status"]);
    let recording = stored_recording(world, &opened.session)
        .await?
        .unwrap_or_default();
    assert!(
        recording.contains(marker),
        "the flushed transcript survives the kill"
    );
    world.cleanup(&scope).await
}

#[tokio::test]
async fn sigterm_closes_every_session_with_its_audit_row() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let gw = world
        .start_gateway(GatewayOptions::named("gw-sigterm"))
        .await?;
    let scope = world
        .scope("sigterm", 1, json!({"limits": {"maxSessionsTotal": 10}}))
        .await?;
    let mut live = Vec::new();
    for n in 31..34 {
        let (opened, mut term, ssm_id) = attach(world, &gw, &scope, &engineer(n)).await?;
        term.run(&format!("echo user-{n}-was-here"), T).await?;
        live.push((opened, term, ssm_id));
    }
    gw.process.signal("TERM");
    for (opened, term, ssm_id) in &mut live {
        let closed = term.control("closed", T).await?;
        assert_eq!(closed["reason"], "GatewayShutdown", "{closed}");
        let cr = world
            .wait_session(&opened.session, "Closed with a transcript", T, |s| {
                s["status"]["phase"] == "Closed" && !s["status"]["transcript"]["sha256"].is_null()
            })
            .await?;
        assert_eq!(cr["status"]["reason"], "GatewayShutdown");
        assert_eq!(
            world.sim.session_status(ssm_id).map(|s| s.0),
            Some(true),
            "SSM session ended"
        );
    }
    assert!(
        gw.process.wait_exit(Duration::from_secs(30)).await,
        "the gateway exits after closing"
    );
    let rows = gw.audit_rows();
    for (_, _, ssm_id) in &live {
        let close = rows.iter().find(|r| {
            r["session_id"] == ssm_id.as_str() && audit_verb(r) == Some("ssm_session_close")
        });
        let close = close.unwrap_or_else(|| panic!("no close row for {ssm_id}: {rows:?}"));
        assert_eq!(close["reason"], "GatewayShutdown", "{close}");
    }
    world.cleanup(&scope).await
}

/// Checks that `text` holds `line-1` … `line-<n>` each exactly once, in order.
fn assert_lines_once(text: &str, n: usize) {
    let got: Vec<usize> = text
        .split(['\r', '\n'])
        .filter_map(|l| l.strip_prefix("line-"))
        .filter_map(|v| v.parse().ok())
        .collect();
    let missing = (1..=n)
        .filter(|i| !got.contains(i))
        .take(5)
        .collect::<Vec<_>>();
    assert!(missing.is_empty(), "lines lost, e.g. {missing:?}");
    assert_eq!(got.len(), n, "lines duplicated or garbled");
    assert!(
        got.windows(2).all(|w| w[0] + 1 == w[1]),
        "lines out of order"
    );
}

#[tokio::test]
async fn a_dropped_browser_reattaches_without_losing_or_repeating_a_byte() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("reattach", 1, json!({})).await?;
    let user = engineer(34);
    let api = world.client(&user);
    let opened = api.open_ok(&scope.nodes[0]).await?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    let hello = term.hello().await?;
    let resume_token = hello["resumeToken"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    term.expect_output("$ ", T).await?;
    // About 0.6 MB of numbered lines (more than the replay ring's 256 KiB), then a marker.
    let lines = 60_000;
    term.send_input(format!("seq -f 'line-%g' 1 {lines}; echo 'stream''-end'\r").as_bytes())
        .await?;
    term.read_until("the stream to be flowing", T, |t| t.output.len() > 100_000)
        .await?;
    // The browser's tab dies without a close handshake.
    let mut received = std::mem::take(&mut term.output);
    term.drop_connection();
    tokio::time::sleep(Duration::from_secs(2)).await; // the node keeps printing meanwhile
    let ticket = api.ticket(&opened.session).await?;
    let mut term = Terminal::connect(&ticket.attach_url).await?;
    term.send_control(
        json!({"type": "resume", "resumeToken": resume_token, "offset": received.len()}),
    )
    .await?;
    let hello = term.hello().await?;
    assert_eq!(
        hello["ssmSessionId"],
        world.session(&opened.session).await?.unwrap_or_default()["status"]["ssmSessionId"]
    );
    term.expect_output("stream-end", Duration::from_secs(120))
        .await?;
    assert!(term.find_control("error").is_none(), "{:?}", term.controls);
    received.extend_from_slice(&term.output);
    let text = String::from_utf8_lossy(&received);
    assert_lines_once(&text, lines);
    term.send_input(b"exit\r").await?;
    term.control("closed", T).await?;
    world.cleanup(&scope).await
}

#[tokio::test]
async fn a_browser_that_stops_reading_does_not_grow_the_gateway() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let gw = world
        .start_gateway(GatewayOptions::named("gw-slowreader"))
        .await?;
    let scope = world.scope("slowreader", 1, json!({})).await?;
    let (opened, mut term, _) = attach(world, &gw, &scope, &engineer(35)).await?;
    let baseline = gw.process.rss_bytes().unwrap_or(0);
    // An endless stream of output into a browser that reads nothing.
    term.send_input(b"yes 'a firehose line of text into a browser that stopped reading'\r")
        .await?;
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        samples.push(gw.process.rss_bytes().unwrap_or(0));
    }
    let peak = samples.iter().copied().max().unwrap_or(0);
    let late: Vec<u64> = samples[samples.len() - 10..].to_vec();
    println!(
        "gateway RSS baseline {} MiB, peak {} MiB, last samples {:?} MiB",
        baseline >> 20,
        peak >> 20,
        late.iter().map(|b| b >> 20).collect::<Vec<_>>()
    );
    assert!(
        peak.saturating_sub(baseline) < 64 << 20,
        "gateway grew by {} MiB while the browser did not read",
        peak.saturating_sub(baseline) >> 20
    );
    let growth_late = late.last().copied().unwrap_or(0).saturating_sub(late[0]);
    assert!(
        growth_late < 8 << 20,
        "RSS still climbing at the end: {late:?}"
    );
    // The stream was flowing all along and resumes once the browser reads again.
    term.send_input(b"\x03").await?;
    let ctl = gw.client(&world.token(&engineer(35)));
    term.read_until(
        "the stream to drain to a prompt",
        Duration::from_secs(120),
        |t| t.output.ends_with(b"$ "),
    )
    .await?;
    let lines = String::from_utf8_lossy(&term.output)
        .matches("a firehose line of text")
        .count();
    assert!(
        lines > 1000,
        "the firehose reached the browser ({lines} lines)"
    );
    assert!(
        term.run("echo still-usable", T)
            .await?
            .contains("still-usable")
    );
    let answer = ctl
        .delete(&format!("/api/v1/sessions/{}", opened.session))
        .await?;
    assert!(answer.status < 300, "{}", answer.body);
    world.wait_closed(&opened.session, T).await?;
    world.cleanup(&scope).await
}

/// A TCP forwarder in front of the apiserver that the test can cut.
struct CuttableProxy {
    addr: String,
    cut: watch::Sender<bool>,
}

impl CuttableProxy {
    async fn start(upstream: String) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (cut, cut_rx) = watch::channel(false);
        let upstream = Arc::new(upstream);
        tokio::spawn(async move {
            loop {
                let mut stop = cut_rx.clone();
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stop.wait_for(|c| *c) => return, // drops the listener: connections refused
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let upstream = upstream.clone();
                let mut stop = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream.as_str()).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = stop.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Ok(Self { addr, cut })
    }

    fn cut(&self) {
        let _ = self.cut.send(true);
    }
}

#[tokio::test]
async fn an_unreachable_apiserver_opens_no_session_and_says_why() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("apidown", 1, json!({})).await?;
    let server = world.cluster.server().to_string();
    let upstream = server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let proxy = CuttableProxy::start(upstream.clone()).await?;
    let kubeconfig = std::fs::read_to_string(
        world
            .cluster
            .kubeconfig_path(nodeshell::localcluster::Identity::Gateway),
    )?
    .replace(&upstream, &proxy.addr);
    let path = world.dir.join("gateway-via-proxy.kubeconfig");
    std::fs::write(&path, kubeconfig)?;
    let gw = world
        .start_gateway(GatewayOptions {
            kubeconfig: Some(path),
            ..GatewayOptions::named("gw-apidown")
        })
        .await?;
    let api = gw.client(&world.token(&engineer(36)));
    // Working while the apiserver is reachable.
    let opened = api.open_ok(&scope.nodes[0]).await?;
    let before = world.sessions_of(&scope.policy).await?.len();
    proxy.cut();
    let started = Instant::now();
    let answer = api.open(&scope.nodes[0], json!({})).await?;
    let took = started.elapsed();
    assert_eq!(
        (answer.status, answer.code()),
        (500, "E_INTERNAL"),
        "{}",
        answer.body
    );
    let message = answer.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Kubernetes API"),
        "the error says the apiserver is unreachable: {message}"
    );
    assert!(
        took < Duration::from_secs(60),
        "fails within a minute, took {took:?}"
    );
    // Attaching the already-admitted session fails closed as well.
    if let Ok(mut term) = Terminal::connect(&opened.attach_url).await {
        term.pump(Duration::from_secs(10)).await?;
        assert!(
            term.find_control("hello").is_none(),
            "attached without the apiserver: {:?}",
            term.controls
        );
    }
    let readyz = reqwest::get(format!("{}/readyz", gw.base)).await?;
    assert_eq!(
        readyz.status(),
        503,
        "/readyz reports the apiserver unreachable"
    );
    assert_eq!(
        world.sessions_of(&scope.policy).await?.len(),
        before,
        "no session object was created while the apiserver was unreachable"
    );
    // A gateway started against a dead apiserver refuses too.
    let dead = world.dir.join("gateway-dead.kubeconfig");
    std::fs::write(
        &dead,
        std::fs::read_to_string(
            world
                .cluster
                .kubeconfig_path(nodeshell::localcluster::Identity::Gateway),
        )?
        .replace(&upstream, &proxy.addr),
    )?;
    match world
        .start_gateway(GatewayOptions {
            kubeconfig: Some(dead),
            ..GatewayOptions::named("gw-dead")
        })
        .await
    {
        Err(e) => assert!(e.to_string().contains("gateway exited"), "{e}"),
        Ok(dead_gw) => {
            let answer = dead_gw
                .client(&world.token(&engineer(36)))
                .open(&scope.nodes[0], json!({}))
                .await?;
            assert_eq!(answer.code(), "E_INTERNAL", "{}", answer.body);
        }
    }
    world.cleanup(&scope).await
}

//! The gateway under faults: SIGKILL mid-session (its Lease runs out, the controller marks
//! GatewayLost, the transcript up to the last flush survives), SIGTERM (every session closes
//! with its audit row, then the Lease is deleted), a browser that drops and reattaches (no byte lost or repeated), a browser that stops
//! reading (the gateway's memory stays bounded), and an unreachable apiserver (no session
//! opens; the error says why).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const T: Duration = Duration::from_secs(30);

/// Opens and attaches a shell through `gw`; waits for the prompt. Returns the SSM session id
/// from the `hello` frame.
async fn attach(
    world: &GatewayWorld,
    gw: &GatewayProcess,
    scope: &Scope,
    sub: &str,
) -> anyhow::Result<(Opened, Terminal, String)> {
    let (opened, term, hello) = world.attach_shell(gw, scope, sub, T).await?;
    let ssm_id = hello["ssmSessionId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((opened, term, ssm_id))
}

/// The Lease gateway pod `pod` renews (None when there is none).
async fn gateway_lease(
    world: &GatewayWorld,
    pod: &str,
) -> anyhow::Result<Option<k8s_openapi::api::coordination::v1::Lease>> {
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> = kube::Api::namespaced(
        world
            .cluster
            .client(nodeshell::localcluster::Identity::Admin)
            .await?,
        nodeshell::localcluster::SYSTEM_NAMESPACE,
    );
    Ok(leases
        .get_opt(&nodeshell::api::gateway_lease_name(pod))
        .await?)
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
    let held = world
        .wait_session(&opened.session, "held by gw-sigkill", T, |s| {
            s["status"]["gateway"]["pod"] == "gw-sigkill"
        })
        .await?;
    assert!(
        held["status"]["gateway"]["heartbeatAt"].is_null(),
        "no per-session heartbeat: {}",
        held["status"]
    );
    // The pod's liveness is its Lease, renewed while it runs.
    let lease = gateway_lease(world, "gw-sigkill")
        .await?
        .context("the gateway's Lease exists while it runs")?;
    let spec = lease.spec.unwrap_or_default();
    assert_eq!(spec.holder_identity.as_deref(), Some("gw-sigkill"));
    assert!(spec.renew_time.is_some() && spec.lease_duration_seconds.is_some());
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
    assert!(
        cr["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nodeshell-gateway-gw-sigkill")),
        "the message names the Lease that ran out: {}",
        cr["status"]
    );
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
    assert!(
        gateway_lease(world, "gw-sigterm").await?.is_some(),
        "the gateway's Lease exists while it runs"
    );
    gw.process.signal("TERM");
    for (opened, term, ssm_id) in &mut live {
        // The gateway's own account of the shutdown, for when a browser misses its frame.
        let closed = term
            .control("closed", T)
            .await
            .with_context(|| gw.process.logs())?;
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
    assert!(
        gateway_lease(world, "gw-sigterm").await?.is_none(),
        "a clean shutdown deletes the gateway's Lease once its sessions are closed"
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

/// Sessions streaming at once into browsers that stopped reading (one PTY stream alone is
/// too slow in a debug build to tell bounded buffers from unbounded growth).
const NON_READERS: usize = 6;
/// Least time the browsers read nothing.
const NOT_READING: Duration = Duration::from_secs(30);
/// Longest wait, once the browsers stop reading, for every session to pause its output
/// reading (a condition, not a timing: the kernel's socket buffers fill first, then the
/// gateway's own, at the agents' pace, which load slows).
const SETTLE_LIMIT: Duration = Duration::from_secs(150);
/// RSS sampling once back-pressure is fully engaged (the late-growth check looks at it).
const SAMPLE_SETTLED: Duration = Duration::from_secs(10);
/// RSS and metrics sampling interval.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// Most output bytes the gateway may hold for one browser that neither reads nor
/// acknowledges (issue 13): what `output::held_bound` sums for the default settings (the
/// 256 KiB replay ring that holds every unacknowledged byte, a chunk waiting for room,
/// the frames queued to the socket, the data channel's queue and its 128 KiB receive
/// window) stays under it.
const HELD_PER_SESSION: u64 = 512 << 10;
/// Gauge: output bytes held for browsers, all sessions together.
const HELD_METRIC: &str = "nodeshell_gateway_output_held_bytes";
/// Gauge: sessions whose output reading waits for their browser.
const PAUSED_METRIC: &str = "nodeshell_gateway_output_paused_sessions";

/// The value of the unlabelled metric `name` on `gw`'s `/metrics`.
async fn gauge(gw: &GatewayProcess, name: &str) -> anyhow::Result<u64> {
    let text = gw.metrics_text().await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("{name} missing from /metrics:\n{text}"))
}

/// Counter: times the gateway handed freed memory back after its live shells changed.
const TRIMS_METRIC: &str = "nodeshell_gateway_heap_trims_total";

/// An idle gateway never walks its heap; once shells have opened and the set is still for a
/// moment, it hands the memory their opening freed back to the kernel, once.
#[tokio::test]
async fn a_gateway_gives_back_what_opening_shells_freed_once_they_settle() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let gw = world
        .start_gateway(GatewayOptions::named("gw-heap"))
        .await?;
    let scope = world.scope("heaptrim", 1, json!({})).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(gauge(&gw, TRIMS_METRIC).await?, 0, "no shell, no trim");
    let mut terms = Vec::new();
    for n in 0..3 {
        let (opened, term, _) = attach(world, &gw, &scope, &engineer(40 + n)).await?;
        terms.push((opened, term));
    }
    // A trim is due 1 s after the last change, and at most 5 s after the one before it.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let trims = gauge(&gw, TRIMS_METRIC).await?;
    assert!(trims >= 1, "no trim after the opens settled");
    // Nothing changes any more (the shells sit at their prompts): no further trim.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        gauge(&gw, TRIMS_METRIC).await?,
        trims,
        "a still gateway trims no more"
    );
    for (_, term) in &mut terms {
        term.send_input(b"exit\r").await?;
        term.control("closed", T).await?;
    }
    world.cleanup(&scope).await
}

#[tokio::test]
async fn a_browser_that_stops_reading_does_not_grow_the_gateway() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let gw = world
        .start_gateway(GatewayOptions::named("gw-slowreader"))
        .await?;
    let scope = world
        .scope("slowreader", 1, json!({"limits": {"maxSessionsTotal": 20}}))
        .await?;
    let mut terms = Vec::new();
    for n in 0..NON_READERS {
        let (opened, term, _) = attach(world, &gw, &scope, &engineer(50 + n)).await?;
        terms.push((opened, term));
    }
    let baseline = gw.process.rss_bytes().unwrap_or(0);
    // Endless output in every session; first read it for a while to learn the rate.
    for (_, term) in terms.iter_mut() {
        term.send_input(b"yes 'a firehose line of text into a browser that stopped reading'\r")
            .await?;
    }
    let mut offered = 0usize;
    let rate_started = Instant::now();
    while rate_started.elapsed() < Duration::from_secs(3) {
        for (_, term) in terms.iter_mut() {
            let before = term.output.len();
            term.pump(Duration::from_millis(20)).await?;
            offered += term.output.len() - before;
        }
    }
    let rate = offered as f64 / rate_started.elapsed().as_secs_f64();
    // Now nobody reads nor acknowledges. The held output stays under the bound at every
    // sample; first wait until every session paused its reading, then watch RSS.
    let mut samples = Vec::new();
    let mut held = Vec::new();
    let started = Instant::now();
    let settled_after = loop {
        tokio::time::sleep(SAMPLE_EVERY).await;
        samples.push(gw.process.rss_bytes().unwrap_or(0));
        let paused = gauge(&gw, PAUSED_METRIC).await?;
        held.push(gauge(&gw, HELD_METRIC).await?);
        if paused == NON_READERS as u64 {
            break started.elapsed();
        }
        anyhow::ensure!(
            started.elapsed() < SETTLE_LIMIT,
            "back-pressure did not engage fully within {SETTLE_LIMIT:?} of the browsers stopping: {paused} of {NON_READERS} sessions paused, held output {:?} KiB (last samples)",
            held.iter()
                .rev()
                .take(12)
                .rev()
                .map(|b| b >> 10)
                .collect::<Vec<_>>()
        );
    };
    let settled_samples = samples.len();
    let tail_len = (SAMPLE_SETTLED.as_millis() / SAMPLE_EVERY.as_millis()) as usize;
    while started.elapsed() < NOT_READING
        || started.elapsed() < settled_after + SAMPLE_SETTLED
        || samples.len() < settled_samples + tail_len
    {
        tokio::time::sleep(SAMPLE_EVERY).await;
        samples.push(gw.process.rss_bytes().unwrap_or(0));
        held.push(gauge(&gw, HELD_METRIC).await?);
    }
    let not_reading = started.elapsed();
    let peak = samples.iter().copied().max().unwrap_or(0);
    let held_peak = held.iter().copied().max().unwrap_or(0);
    let mib = |b: u64| b >> 20;
    let would_be = rate * not_reading.as_secs_f64();
    println!(
        "{NON_READERS} streams at {:.1} MB/s together would pile up {:.0} MB in {not_reading:.0?}; back-pressure fully engaged after {settled_after:.1?}; held output peak {} KiB ({} KiB per session, bound {} KiB), at the end {} KiB; gateway RSS baseline {} MiB, peak {} MiB, samples {:?} MiB (settled from sample {settled_samples})",
        rate / 1e6,
        would_be / 1e6,
        held_peak >> 10,
        (held_peak / NON_READERS as u64) >> 10,
        HELD_PER_SESSION >> 10,
        held.last().copied().unwrap_or(0) >> 10,
        mib(baseline),
        mib(peak),
        samples.iter().map(|b| mib(*b)).collect::<Vec<_>>()
    );
    assert!(
        held_peak <= NON_READERS as u64 * HELD_PER_SESSION,
        "the gateway held {} KiB per session for browsers that did not read (bound {} KiB)",
        (held_peak / NON_READERS as u64) >> 10,
        HELD_PER_SESSION >> 10
    );
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < 48 << 20,
        "the gateway grew by {} MiB while browsers did not read",
        mib(growth)
    );
    // Flat at the end: the last 10 s, all after back-pressure engaged fully, add little,
    // whatever the streams could have produced.
    let tail = &samples[samples.len() - tail_len..];
    let late_growth = tail.last().copied().unwrap_or(0).saturating_sub(tail[0]);
    assert!(
        (late_growth as f64) < (rate * 10.0 / 4.0).max(4.0 * 1024.0 * 1024.0),
        "RSS still climbing at the end ({} MiB in 10 s) at {:.1} MB/s offered",
        mib(late_growth),
        rate / 1e6
    );
    // The streams were flowing all along and drain once the browsers read again.
    for (n, (opened, term)) in terms.iter_mut().enumerate() {
        let ctl = gw.client(&world.token(&engineer(50 + n)));
        let from = term.output.len();
        term.send_input(b"\x03").await?;
        term.read_until(
            "the stream to drain to a prompt",
            Duration::from_secs(180),
            |t| t.output.len() > from + 10_000 && t.output.ends_with(b"$ "),
        )
        .await?;
        assert!(
            term.run("echo still-usable", T)
                .await?
                .contains("still-usable")
        );
        let answer = ctl
            .delete(&format!("/api/v1/sessions/{}", opened.session))
            .await?;
        assert!(answer.status < 300, "{}", answer.body);
    }
    world.cleanup(&scope).await
}

/// The output of `seq 1 n` as the PTY prints it.
fn seq_output(n: u32) -> String {
    (1..=n).map(|i| format!("{i}\r\n")).collect()
}

/// The gateway's default browser window (`browserWindowBytes`).
const BROWSER_WINDOW: u64 = 256 << 10;

#[tokio::test]
async fn a_browser_that_acknowledges_gets_a_large_output_byte_exact() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let gw = world
        .start_gateway(GatewayOptions::named("gw-credit"))
        .await?;
    let scope = world.scope("credit", 1, json!({})).await?;
    let (_, mut term, _) = attach(world, &gw, &scope, &engineer(57)).await?;
    // About 1.5 MB: several browser windows, each released only by the terminal's acks.
    let expected = seq_output(200_000);
    let text = term.run("seq 1 200000", Duration::from_secs(240)).await?;
    assert!(
        text.contains(&expected),
        "the output of seq is not all there, once and in order ({} bytes of {} received; tail {:?})",
        text.len(),
        expected.len(),
        &text[text.len().saturating_sub(200)..]
    );
    assert!(term.find_control("error").is_none(), "{:?}", term.controls);
    term.send_input(b"exit\r").await?;
    term.control("closed", T).await?;
    world.cleanup(&scope).await
}

#[tokio::test]
async fn a_browser_that_stops_acknowledging_gets_one_window_then_everything_once_it_resumes()
-> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let gw = world
        .start_gateway(GatewayOptions::named("gw-stall"))
        .await?;
    let scope = world.scope("stall", 1, json!({})).await?;
    let (_, mut term, _) = attach(world, &gw, &scope, &engineer(58)).await?;
    // The terminal keeps reading but stops acknowledging before the output starts.
    term.stop_acking();
    let acked = term.received;
    let from = term.output.len();
    let expected = seq_output(300_000);
    term.send_input(b"seq 1 300000; echo seq-done\r").await?;
    term.read_until(
        "one browser window of output",
        Duration::from_secs(120),
        |t| t.received - acked >= BROWSER_WINDOW,
    )
    .await?;
    // Whatever more time passes, nothing beyond the window arrives.
    let stalled = Instant::now();
    while stalled.elapsed() < Duration::from_secs(2) {
        term.pump(Duration::from_millis(200)).await?;
    }
    assert_eq!(
        term.received - acked,
        BROWSER_WINDOW,
        "unacknowledged output sent beyond the browser window"
    );
    // Garbage acks are refused with E_BAD_REQUEST and release nothing (one at a time: an
    // error frame finding the socket's queue full would not wait).
    let refused = |t: &Terminal| {
        t.controls
            .iter()
            .filter(|c| c["type"] == "error" && c["code"] == "E_BAD_REQUEST")
            .count()
    };
    let garbage = [
        json!({"type": "ack", "bytes": term.received + 1}),
        json!({"type": "ack", "bytes": acked.saturating_sub(1)}),
        json!({"type": "ack", "bytes": 1.5}),
    ];
    for (n, frame) in garbage.into_iter().enumerate() {
        term.send_control(frame).await?;
        term.read_until("a refusal", T, |t| refused(t) > n).await?;
    }
    let refusals: Vec<String> = term
        .controls
        .iter()
        .filter_map(|c| c["message"].as_str().map(str::to_owned))
        .collect();
    assert!(refusals[0].contains("beyond"), "{refusals:?}");
    assert!(refusals[1].contains("goes back"), "{refusals:?}");
    let stalled = Instant::now();
    while stalled.elapsed() < Duration::from_secs(1) {
        term.pump(Duration::from_millis(200)).await?;
    }
    assert_eq!(
        term.received - acked,
        BROWSER_WINDOW,
        "a refused ack moved the window"
    );
    // Acknowledging again releases the rest: every line once, in order.
    term.resume_acking().await?;
    term.expect_output_after(from, "\r\nseq-done", Duration::from_secs(240))
        .await?;
    let text = String::from_utf8_lossy(&term.output[from..]).into_owned();
    assert!(
        text.contains(&expected),
        "output lost or repeated across the stall ({} bytes of {} received)",
        text.len(),
        expected.len()
    );
    term.send_input(b"exit\r").await?;
    term.control("closed", T).await?;
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
    let (status, readyz) = gw.admin_get("/readyz").await?;
    assert_eq!(status, 503, "/readyz reports the apiserver unreachable");
    // A fixed phrase per failing check: no address, no error text from the client.
    assert_eq!(readyz, "Kubernetes API unreachable");
    assert_eq!(
        reqwest::get(format!("{}/readyz", gw.base)).await?.status(),
        404,
        "the API port does not serve /readyz"
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

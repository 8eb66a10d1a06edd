//! Benchmark of `nodeshell gateway` on this machine, against the real local control plane,
//! the simulator, `nodeshell controller` and the gateway process:
//!
//! * open latency (POST …/shell → `hello` on the WebSocket) with many sessions opened and kept
//!   live through one gateway, and the gateway's resident memory per live session;
//! * firehose throughput through the full path (browser-side WebSocket ← gateway ← simulator)
//!   against our `nodeshell::ssm` client reading the same firehose alone;
//! * keystroke round trip through the gateway (a byte typed, its PTY echo back);
//! * status writes per busy session and minute (shells printing a line a second, their
//!   sessions' watch events counted over a window).
//! * output held per session whose browser stopped reading (`gateway_stuck_reader_bytes`,
//!   the gateway's own held-output gauge, and the RSS it adds).
//!
//! Prints the figures and writes `target/bench/gateway.json`; never fails on a time.
//! `cargo bench --bench gateway` runs the full size; without `--bench` (e.g.
//! `cargo test --bench gateway`) it runs a smoke size. `NODESHELL_BENCH_SESSIONS` overrides
//! the number of sessions.

#[path = "support/proc_stats.rs"]
#[allow(dead_code, unused_imports)]
mod proc_stats;
#[path = "../e2e/tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nodeshell::aws::{SsmSessions, WebIdentityRequest, assume_role_with_web_identity};
use nodeshell::sim::FIREHOSE_DOCUMENT;
use nodeshell::ssm::{DataChannel, DataChannelOptions, ReceiveConfig};
use serde_json::json;
use support::*;

/// Size of the simulator's firehose when the document gets no `bytes` parameter (the gateway
/// passes none).
const FIREHOSE_LEN: usize = 1024 * 1024;

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let sessions: usize = std::env::var("NODESHELL_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 200 } else { 10 });
    let runs = if full { 10 } else { 2 };
    // Status writes are counted over this window (activity is written at most once a minute).
    let status_window = Duration::from_secs(if full { 120 } else { 10 });
    let keystrokes = if full { 300 } else { 30 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(sessions, runs, keystrokes, status_window))
}

async fn bench(
    sessions: usize,
    runs: usize,
    keystrokes: usize,
    status_window: Duration,
) -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let gw = world.gateway();
    println!("gateway bench: {sessions} sessions, {runs} firehose runs, {keystrokes} keystrokes");

    // === open latency and memory per live session ===
    let scope = world
        .scope(
            "bench-open",
            4,
            json!({"limits": {"maxSessionsPerUser": 50, "maxSessionsTotal": 1000}}),
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await; // let the gateway settle before the baseline
    let baseline = gw.process.rss_bytes().unwrap_or(0);
    let users: Vec<String> = (1..=ENGINEERS.min(50)).map(engineer).collect();
    let tokens: Vec<String> = users.iter().map(|u| world.token(u)).collect();
    let in_flight = 20;
    let mut terminals = Vec::with_capacity(sessions);
    let mut names = Vec::with_capacity(sessions);
    let mut open_ms = Vec::with_capacity(sessions);
    let mut post_ms = Vec::with_capacity(sessions);
    let started = Instant::now();
    for batch in (0..sessions).collect::<Vec<_>>().chunks(in_flight) {
        let opens = batch.iter().map(|i| {
            let api = gw.client(&tokens[i % tokens.len()]);
            let node = scope.nodes[i % scope.nodes.len()].clone();
            async move {
                let t0 = Instant::now();
                let opened = api.open_ok(&node).await?;
                let post = t0.elapsed();
                let mut term = Terminal::connect(&opened.attach_url).await?;
                term.hello().await?;
                anyhow::Ok((t0.elapsed(), post, term, opened.session))
            }
        });
        for result in futures::future::join_all(opens).await {
            let (open, post, term, name) = result?;
            names.push(name);
            open_ms.push(open.as_secs_f64() * 1000.0);
            post_ms.push(post.as_secs_f64() * 1000.0);
            terminals.push(term);
        }
    }
    let opened_in = started.elapsed();
    // Every shell answers before memory is measured.
    for term in terminals.iter_mut() {
        term.expect_output("$ ", Duration::from_secs(60)).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = gw.process.rss_bytes().unwrap_or(0);
    let rss_per_session = loaded.saturating_sub(baseline) / sessions.max(1) as u64;
    let p = |v: &[f64], q: f64| proc_stats::percentile(v, q).unwrap_or(0.0);
    println!(
        "open (POST → hello): p50 {:.1} ms, p99 {:.1} ms; POST alone p50 {:.1} ms, p99 {:.1} ms; {sessions} sessions in {:.1?}",
        p(&open_ms, 50.0),
        p(&open_ms, 99.0),
        p(&post_ms, 50.0),
        p(&post_ms, 99.0),
        opened_in
    );
    println!(
        "gateway RSS: {} MiB idle, {} MiB with {sessions} live sessions → {} KiB per session",
        baseline >> 20,
        loaded >> 20,
        rss_per_session >> 10
    );

    // === keystroke round trip ===
    let rtt_ms = {
        let term = &mut terminals[0];
        let mut samples = Vec::with_capacity(keystrokes);
        for _ in 0..keystrokes {
            let before = term.output.len();
            let t0 = Instant::now();
            term.send_input(b"x").await?;
            term.read_until("the echo", Duration::from_secs(10), |t| {
                t.output.len() > before
            })
            .await?;
            samples.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        term.send_input(b"\x15").await?; // ^U clears the typed line
        samples
    };
    println!(
        "keystroke round trip through the gateway: p50 {:.2} ms, p99 {:.2} ms",
        p(&rtt_ms, 50.0),
        p(&rtt_ms, 99.0)
    );

    // === status writes of busy sessions ===
    let busy = terminals.len().min(5);
    let status_writes_per_session_minute =
        status_writes(world, &mut terminals[..busy], &names[..busy], status_window).await?;
    println!(
        "status writes: {status_writes_per_session_minute:.2} per busy session and minute ({busy} sessions printing every second for {status_window:?})"
    );

    // Close every session (the browser's close button) and clean up.
    for term in terminals.iter_mut() {
        term.send_control(json!({"type": "close"})).await.ok();
    }
    drop(terminals);
    world.cleanup(&scope).await?;

    // === firehose: full path vs our client alone ===
    let fh = world
        .scope(
            "bench-firehose",
            1,
            json!({
                "aws": {"documentName": FIREHOSE_DOCUMENT},
                "limits": {"maxSessionsPerUser": 5},
                "transcript": {"maxBytes": 1024 * 1024 * 4}
            }),
        )
        .await?;
    let api = gw.client(&world.token(&engineer(1)));
    let mut path_bytes = 0usize;
    let mut path_time = Duration::ZERO;
    let mut path_incomplete = 0usize;
    for _ in 0..runs {
        let opened = api.open_ok(&fh.nodes[0]).await?;
        let mut term = Terminal::connect(&opened.attach_url).await?;
        term.hello().await?;
        let t0 = Instant::now();
        term.read_until("the whole firehose", Duration::from_secs(120), |t| {
            t.output.len() >= FIREHOSE_LEN || t.find_control("closed").is_some()
        })
        .await?;
        path_time += t0.elapsed();
        if term.output != nodeshell::sim::firehose_bytes(FIREHOSE_LEN) {
            path_incomplete += 1;
            println!(
                "WARNING: the firehose arrived incomplete or damaged through the gateway ({} of {FIREHOSE_LEN} bytes)",
                term.output.len()
            );
        }
        path_bytes += term.output.len();
        let _ = term.control("closed", Duration::from_secs(30)).await;
        world
            .wait_closed(&opened.session, Duration::from_secs(30))
            .await?;
    }
    world.cleanup(&fh).await?;
    let path_mb_per_s = path_bytes as f64 / 1e6 / path_time.as_secs_f64().max(1e-9);

    let client_mb_per_s = client_alone(world, &fh.instances[0], runs)
        .await
        .unwrap_or_else(|e| {
            println!("client-alone firehose failed: {e}");
            0.0
        });
    println!(
        "firehose of {} KiB × {runs}: through the gateway {path_mb_per_s:.1} MB/s, our ssm client alone {client_mb_per_s:.1} MB/s",
        FIREHOSE_LEN >> 10
    );

    let stuck = stuck_readers(world, if runs > 2 { 60 } else { 10 }).await?;

    let figures = json!({
        "open_p50_ms": p(&open_ms, 50.0),
        "open_p99_ms": p(&open_ms, 99.0),
        "post_p50_ms": p(&post_ms, 50.0),
        "post_p99_ms": p(&post_ms, 99.0),
        "sessions": sessions,
        "gateway_rss_baseline_bytes": baseline,
        "gateway_rss_loaded_bytes": loaded,
        "gateway_rss_per_session_bytes": rss_per_session,
        "path_mb_per_s": path_mb_per_s,
        "path_runs_incomplete": path_incomplete,
        "client_mb_per_s": client_mb_per_s,
        "firehose_bytes": FIREHOSE_LEN,
        "firehose_runs": runs,
        "rtt_p50_ms": p(&rtt_ms, 50.0),
        "rtt_p99_ms": p(&rtt_ms, 99.0),
        "keystrokes": keystrokes,
        "status_writes_per_session_minute": status_writes_per_session_minute,
        "gateway_stuck_reader_bytes": stuck.held_per_session,
        "gateway_stuck_reader_rss_bytes": stuck.rss_per_session,
        "gateway_stuck_reader_sessions": STUCK_READERS,
        "gateway_stuck_reader_seconds": stuck.seconds,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("gateway.json"), format!("{figures:#}\n"))?;
    println!("{figures:#}");
    println!("wrote {}", dir.join("gateway.json").display());
    Ok(())
}

/// Starts a line a second in each shell of `terms`, then counts the status writes (watch
/// events) of their sessions `names` over `window` while the browsers keep reading: writes per
/// session and minute.
async fn status_writes(
    world: &GatewayWorld,
    terms: &mut [Terminal],
    names: &[String],
    window: Duration,
) -> anyhow::Result<f64> {
    use futures::StreamExt as _;
    use kube::api::{Api, WatchEvent, WatchParams};
    use nodeshell::api::NodeShellSession;
    let sessions: Api<NodeShellSession> = Api::all(
        world
            .cluster
            .client(nodeshell::localcluster::Identity::Admin)
            .await?,
    );
    for term in terms.iter_mut() {
        term.send_input(b"while true; do echo tick; sleep 1; done\r")
            .await?;
        term.expect_output("tick", Duration::from_secs(30)).await?;
    }
    let counts = names.iter().map(|name| {
        let sessions = sessions.clone();
        async move {
            let from = sessions
                .get(name)
                .await?
                .metadata
                .resource_version
                .unwrap_or_default();
            let params = WatchParams::default()
                .fields(&format!("metadata.name={name}"))
                .timeout(u32::try_from(window.as_secs()).unwrap_or(u32::MAX));
            let mut events = sessions.watch(&params, &from).await?.boxed();
            let mut writes = 0usize;
            while let Some(event) = events.next().await {
                if matches!(event?, WatchEvent::Modified(_)) {
                    writes += 1;
                }
            }
            anyhow::Ok(writes)
        }
    });
    let pumps = terms.iter_mut().map(|term| async move {
        let until = Instant::now() + window;
        while Instant::now() < until && !term.closed {
            term.pump(Duration::from_millis(500)).await?;
        }
        term.send_input(b"\x03").await?;
        anyhow::Ok(())
    });
    let (counts, pumps) = tokio::join!(
        futures::future::join_all(counts),
        futures::future::join_all(pumps)
    );
    for pumped in pumps {
        pumped?;
    }
    let mut writes = 0usize;
    for count in counts {
        writes += count?;
    }
    let minutes = window.as_secs_f64() / 60.0;
    Ok(writes as f64 / names.len().max(1) as f64 / minutes.max(1e-9))
}

/// Sessions whose browser stops reading in the stuck-reader part.
const STUCK_READERS: usize = 4;

/// What the stuck-reader part measured.
struct Stuck {
    /// Peak of the gateway's held-output gauge over the stuck sessions, per session.
    held_per_session: u64,
    /// Peak RSS growth of the gateway over the same time, per session.
    rss_per_session: u64,
    /// How long the browsers read nothing.
    seconds: u64,
}

/// The value of the unlabelled metric `name` on the gateway's `/metrics`.
async fn gauge(gw: &GatewayProcess, name: &str) -> anyhow::Result<u64> {
    let text = gw.metrics_text().await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{name} missing from /metrics"))
}

/// [`STUCK_READERS`] shells stream `yes` into browsers that neither read nor acknowledge
/// for `seconds`; samples the held-output gauge and RSS every 500 ms.
async fn stuck_readers(world: &GatewayWorld, seconds: u64) -> anyhow::Result<Stuck> {
    let gw = world.gateway();
    let scope = world
        .scope(
            "bench-stuck",
            1,
            json!({"limits": {"maxSessionsPerUser": 10, "maxSessionsTotal": 100}}),
        )
        .await?;
    let mut terms = Vec::new();
    for n in 0..STUCK_READERS {
        let (opened, term, _) = world
            .attach_shell(gw, &scope, &engineer(40 + n), Duration::from_secs(60))
            .await?;
        terms.push((opened, term));
    }
    let baseline = gw.process.rss_bytes().unwrap_or(0);
    for (_, term) in terms.iter_mut() {
        term.send_input(b"yes 'a line of output into a browser that stopped reading'\r")
            .await?;
    }
    let (mut held_peak, mut rss_peak) = (0u64, baseline);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        held_peak = held_peak.max(gauge(gw, "nodeshell_gateway_output_held_bytes").await?);
        rss_peak = rss_peak.max(gw.process.rss_bytes().unwrap_or(0));
    }
    let stuck = Stuck {
        held_per_session: held_peak / STUCK_READERS as u64,
        rss_per_session: rss_peak.saturating_sub(baseline) / STUCK_READERS as u64,
        seconds,
    };
    println!(
        "{STUCK_READERS} browsers not reading for {seconds} s: held output peak {} KiB per session, RSS +{} KiB per session",
        stuck.held_per_session >> 10,
        stuck.rss_per_session >> 10
    );
    for (opened, mut term) in terms {
        term.send_control(json!({"type": "close"})).await.ok();
        term.drop_connection();
        world
            .wait_closed(&opened.session, Duration::from_secs(60))
            .await
            .ok();
    }
    world.cleanup(&scope).await?;
    Ok(stuck)
}

/// The same firehose read by our `nodeshell::ssm` client directly from the simulator.
async fn client_alone(world: &GatewayWorld, instance: &str, runs: usize) -> anyhow::Result<f64> {
    let sim = world.sim;
    world.set_ping(instance, nodeshell::sim::PingStatus::Online);
    let endpoints = sim.aws_endpoints();
    let creds = assume_role_with_web_identity(
        &endpoints,
        &WebIdentityRequest {
            role_arn: sim.default_role_arn(),
            role_session_name: "nodeshell-bench".to_string(),
            web_identity_token: world.token(&engineer(2)),
            duration_seconds: None,
        },
    )
    .await?;
    let ssm = SsmSessions::new(&endpoints, &creds);
    let mut bytes = 0usize;
    let mut time = Duration::ZERO;
    for _ in 0..runs {
        let params = HashMap::from([("bytes".to_string(), vec![FIREHOSE_LEN.to_string()])]);
        let stream = ssm
            .start_session(instance, Some(FIREHOSE_DOCUMENT), None, params)
            .await?;
        let mut options = DataChannelOptions::new(stream.session_id.clone());
        options.receive = ReceiveConfig {
            max_messages: 10_000,
            max_bytes: 16 * 1024 * 1024,
            max_early_messages: 10_000,
            max_early_bytes: 16 * 1024 * 1024,
        };
        let t0 = Instant::now();
        let mut channel = DataChannel::connect(
            &stream.stream_url,
            &stream.token_value,
            options,
            ssm.clone(),
        )
        .await?;
        let mut received = 0usize;
        while let Some(chunk) = channel.output().recv().await {
            received += chunk.len();
        }
        time += t0.elapsed();
        channel.closed().await;
        anyhow::ensure!(
            received == FIREHOSE_LEN,
            "client alone got {received} bytes"
        );
        bytes += received;
    }
    Ok(bytes as f64 / 1e6 / time.as_secs_f64().max(1e-9))
}

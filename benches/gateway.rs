//! Benchmark of `nodeshell gateway` on this machine, against the real local control plane,
//! the simulator, `nodeshell controller` and the gateway process:
//!
//! * open latency (POST …/shell → first prompt byte on the WebSocket) with many sessions
//!   opened (`NODESHELL_BENCH_CONCURRENCY` at a time) and kept live through one gateway,
//!   against the same opens made directly (STS, StartSession, data channel, first prompt
//!   byte: the simulator's own time), and the gateway's resident memory per idle shell;
//! * firehose throughput and gateway CPU through the full path (browser-side WebSocket ←
//!   gateway ← simulator), transcript on and off, against our `nodeshell::ssm` client
//!   reading the same firehose alone;
//! * keystroke round trip through the gateway (a byte typed, its PTY echo back) against the
//!   same round trip through our client alone, both at the same key spacing;
//! * status writes per busy session and minute (shells printing a line a second, their
//!   sessions' watch events counted over a window).
//! * output held per session whose browser stopped reading (`gateway_stuck_reader_bytes`,
//!   the gateway's own held-output gauge, and the RSS it adds).
//!
//! Prints the figures and writes `target/bench/gateway.json`; never fails on a time.
//! `cargo bench --bench gateway` runs the full size; without `--bench` (e.g.
//! `cargo test --bench gateway`) it runs a smoke size. `NODESHELL_BENCH_SESSIONS` overrides
//! the number of sessions.

#![recursion_limit = "256"]

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

/// Name prefix of the bench's own runtime threads: their CPU is the client's (the simulator
/// runs in this process too, on threads of its own).
const CLIENT_THREADS: &str = "bench-client";

/// Typing pace of the round-trip samples, the same for the gateway and the client alone:
/// the agent pauses 1 ms after each PTY read (as the official agent does), and a key typed
/// inside that pause would measure the pause, not the path.
const KEY_SPACING: Duration = Duration::from_millis(5);

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let sessions: usize = std::env::var("NODESHELL_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1000 } else { 10 });
    let concurrency: usize = std::env::var("NODESHELL_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 200 } else { 10 })
        .clamp(1, sessions.max(1));
    let runs = if full { 10 } else { 2 };
    // Status writes are counted over this window (activity is written at most once a minute).
    let env_secs = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let status_window = Duration::from_secs(env_secs(
        "NODESHELL_BENCH_STATUS_SECONDS",
        if full { 120 } else { 10 },
    ));
    let stuck_seconds = env_secs("NODESHELL_BENCH_STUCK_SECONDS", if full { 60 } else { 10 });
    let keystrokes = if full { 300 } else { 30 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()?;
    runtime.block_on(bench(
        sessions,
        concurrency,
        runs,
        keystrokes,
        status_window,
        stuck_seconds,
    ))
}

async fn bench(
    sessions: usize,
    in_flight: usize,
    runs: usize,
    keystrokes: usize,
    status_window: Duration,
    stuck_seconds: u64,
) -> anyhow::Result<()> {
    // Every idle shell keeps its WebSocket, and the opening clients keep pooled API
    // connections: the default `http.maxConnections` (1024) would close the 1,000th shell's
    // socket on accept, as it would in a cluster sized the same way.
    let max_connections = 2 * sessions + 1024;
    let world = GatewayWorld::shared_with(WorldOptions {
        gateway_patch: json!({"http": {"maxConnections": max_connections}}),
        ..WorldOptions::default()
    })
    .await?;
    let gw = world.gateway();
    println!(
        "gateway bench: {sessions} sessions ({in_flight} opened at a time), {runs} firehose runs, {keystrokes} keystrokes"
    );

    // === open latency and memory per live session ===
    let scope = world
        .scope(
            "bench-open",
            4,
            json!({"limits": {"maxSessionsPerUser": 1000, "maxSessionsTotal": 100_000}}),
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await; // let the gateway settle before the baseline
    // Measuring by hand (heaptrack --pid, /proc/<pid>/smaps): time to attach before the
    // baseline and to look after the idle figure.
    let hold = Duration::from_secs(
        std::env::var("NODESHELL_BENCH_HOLD_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    if !hold.is_zero() {
        println!(
            "gateway pid {}: holding {hold:?} before the baseline",
            gw.process.pid
        );
        tokio::time::sleep(hold).await;
    }
    let baseline = gw.process.rss_bytes().unwrap_or(0);
    let users: Vec<String> = (1..=ENGINEERS.min(50)).map(engineer).collect();
    let tokens: Vec<String> = users.iter().map(|u| world.token(u)).collect();
    let mut terminals = Vec::with_capacity(sessions);
    let mut names = Vec::with_capacity(sessions);
    let mut open_ms = Vec::with_capacity(sessions);
    let mut post_ms = Vec::with_capacity(sessions);
    let mut hello_ms = Vec::with_capacity(sessions);
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
                let hello = t0.elapsed();
                // The first prompt byte: the shell is there.
                term.read_until("the first prompt byte", Duration::from_secs(120), |t| {
                    !t.output.is_empty()
                })
                .await?;
                anyhow::Ok((t0.elapsed(), post, hello, term, opened.session))
            }
        });
        for result in futures::future::join_all(opens).await {
            let (open, post, hello, term, name) = result?;
            names.push(name);
            open_ms.push(open.as_secs_f64() * 1000.0);
            post_ms.push(post.as_secs_f64() * 1000.0);
            hello_ms.push(hello.as_secs_f64() * 1000.0);
            terminals.push(term);
        }
    }
    let opened_in = started.elapsed();
    // Every shell answers before memory is measured.
    for term in terminals.iter_mut() {
        term.expect_output("$ ", Duration::from_secs(60)).await?;
    }
    tokio::time::sleep(Duration::from_secs(5)).await; // let them settle
    let loaded = gw.process.rss_bytes().unwrap_or(0);
    let rss_per_session = loaded.saturating_sub(baseline) / sessions.max(1) as u64;
    let p = |v: &[f64], q: f64| proc_stats::percentile(v, q).unwrap_or(0.0);
    println!(
        "open (POST → first prompt byte): p50 {:.1} ms, p99 {:.1} ms; POST alone p50 {:.1} ms, p99 {:.1} ms; {sessions} sessions in {:.1?}",
        p(&open_ms, 50.0),
        p(&open_ms, 99.0),
        p(&post_ms, 50.0),
        p(&post_ms, 99.0),
        opened_in
    );
    let breakdown = OpenBreakdown::read(
        &gw.process.stderr_text(),
        &names,
        &open_ms,
        &post_ms,
        &hello_ms,
    );
    breakdown.print();
    println!(
        "gateway RSS: {} MiB idle, {} MiB with {sessions} live sessions → {} KiB per session",
        baseline >> 20,
        loaded >> 20,
        rss_per_session >> 10
    );
    if !hold.is_zero() {
        println!(
            "gateway pid {}: holding {hold:?} after the idle figure",
            gw.process.pid
        );
        tokio::time::sleep(hold).await;
    }
    if std::env::var_os("NODESHELL_BENCH_IDLE_ONLY").is_some() {
        println!("NODESHELL_BENCH_IDLE_ONLY: stopping after the idle figure; nothing written");
        return Ok(());
    }

    // === keystroke round trip ===
    let rtt_ms = {
        let term = &mut terminals[0];
        let mut samples = Vec::with_capacity(keystrokes);
        for _ in 0..keystrokes {
            tokio::time::sleep(KEY_SPACING).await;
            let before = term.output.len();
            let t0 = Instant::now();
            term.send_input(b"x").await?;
            term.read_until("the echo", Duration::from_secs(10), |t| {
                t.output[before..].contains(&b'x')
            })
            .await?;
            samples.push(t0.elapsed().as_secs_f64() * 1000.0);
            // DEL: readline answers with a backspace sequence.
            let before = term.output.len();
            term.send_input(&[0x7f]).await?;
            term.read_until("the erase", Duration::from_secs(10), |t| {
                t.output[before..].contains(&0x08)
            })
            .await?;
        }
        samples
    };
    let direct_rtt_ms = direct_rtt(world, &scope.instances[0], keystrokes).await?;
    let rtt_added_p99_ms = p(&rtt_ms, 99.0) - p(&direct_rtt_ms, 99.0);
    println!(
        "keystroke round trip through the gateway: p50 {:.2} ms, p99 {:.2} ms; our client alone p50 {:.2} ms, p99 {:.2} ms; added p99 {rtt_added_p99_ms:.2} ms",
        p(&rtt_ms, 50.0),
        p(&rtt_ms, 99.0),
        p(&direct_rtt_ms, 50.0),
        p(&direct_rtt_ms, 99.0),
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
    // The same opens without the gateway, as many at a time: the simulator's own time.
    let direct_open_ms = direct_opens(world, &scope.instances, in_flight).await?;
    let open_added_p99_ms = p(&open_ms, 99.0) - p(&direct_open_ms, 99.0);
    println!(
        "direct opens ({in_flight} at a time, STS + StartSession + data channel + first prompt byte): p50 {:.1} ms, p99 {:.1} ms; the gateway adds {open_added_p99_ms:.1} ms at p99",
        p(&direct_open_ms, 50.0),
        p(&direct_open_ms, 99.0),
    );
    world.cleanup(&scope).await?;

    // === firehose: full path (transcript on and off) vs our client alone ===
    let on = firehose_path(world, runs, true).await?;
    let off = firehose_path(world, runs, false).await?;
    let fh_instance = on.instance.clone();
    let client = client_alone(world, &fh_instance, runs)
        .await
        .unwrap_or_else(|e| {
            println!("client-alone firehose failed: {e}");
            Firehose::default()
        });
    println!(
        "firehose of {} KiB × {runs}: through the gateway {:.1} MB/s with the transcript ({:.2} gateway CPU s per 100 MB, {:.2} counted until Closed), {:.1} MB/s without ({:.2}, {:.2}); our ssm client alone {:.1} MB/s ({:.2} client CPU s per 100 MB)",
        FIREHOSE_LEN >> 10,
        on.mb_per_s,
        on.cpu_s_per_100mb,
        on.cpu_to_close_s_per_100mb,
        off.mb_per_s,
        off.cpu_s_per_100mb,
        off.cpu_to_close_s_per_100mb,
        client.mb_per_s,
        client.cpu_s_per_100mb,
    );

    let stuck = stuck_readers(world, stuck_seconds).await?;

    let figures = json!({
        "open_p50_ms": p(&open_ms, 50.0),
        "open_p99_ms": p(&open_ms, 99.0),
        "open_concurrency": in_flight,
        "direct_open_p50_ms": p(&direct_open_ms, 50.0),
        "direct_open_p99_ms": p(&direct_open_ms, 99.0),
        "open_added_p99_ms": open_added_p99_ms,
        "open_steps_ms": breakdown.json(),
        "open_own_p50_ms": p(&breakdown.own_ms, 50.0),
        "open_own_p99_ms": p(&breakdown.own_ms, 99.0),
        "post_p50_ms": p(&post_ms, 50.0),
        "post_p99_ms": p(&post_ms, 99.0),
        "sessions": sessions,
        "gateway_rss_baseline_bytes": baseline,
        "gateway_rss_loaded_bytes": loaded,
        "gateway_rss_per_session_bytes": rss_per_session,
        "gateway_idle_session_bytes": rss_per_session,
        "path_mb_per_s": on.mb_per_s,
        "path_mb_per_s_transcript_off": off.mb_per_s,
        "path_runs_incomplete": on.incomplete + off.incomplete,
        "client_mb_per_s": client.mb_per_s,
        "gateway_cpu_s_per_100mb": on.cpu_s_per_100mb,
        "gateway_cpu_s_per_100mb_transcript_off": off.cpu_s_per_100mb,
        "gateway_cpu_to_close_s_per_100mb": on.cpu_to_close_s_per_100mb,
        "gateway_cpu_to_close_s_per_100mb_transcript_off": off.cpu_to_close_s_per_100mb,
        "client_cpu_s_per_100mb": client.cpu_s_per_100mb,
        "firehose_bytes": FIREHOSE_LEN,
        "firehose_runs": runs,
        "rtt_p50_ms": p(&rtt_ms, 50.0),
        "rtt_p99_ms": p(&rtt_ms, 99.0),
        "direct_rtt_p50_ms": p(&direct_rtt_ms, 50.0),
        "direct_rtt_p99_ms": p(&direct_rtt_ms, 99.0),
        "rtt_added_p99_ms": rtt_added_p99_ms,
        "keystrokes": keystrokes,
        "status_writes_per_session_minute": status_writes_per_session_minute,
        "gateway_stuck_reader_bytes": stuck.held_per_session,
        "gateway_stuck_reader_rss_bytes": stuck.rss_per_session,
        "gateway_stuck_reader_sessions": STUCK_READERS,
        "gateway_stuck_reader_seconds": stuck.seconds,
        "transcript_levels": transcript_levels(),
        "transcript_cpu_s_per_100mb": transcript_cpu(),
        "targets": {
            "gateway_idle_session_bytes_max": 65_536,
            "gateway_stuck_reader_bytes_max": 524_288,
            "path_over_client_min": 0.7,
            "gateway_cpu_over_client_max": 2.0,
            "rtt_added_p99_ms_max": 1.0,
            "open_added_p99_ms_max": 50.0,
            "status_writes_per_session_minute_max": 1.0,
        },
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("gateway.json"), format!("{figures:#}\n"))?;
    println!("{figures:#}");
    println!("wrote {}", dir.join("gateway.json").display());
    Ok(())
}

/// Where the opens' time went: the gateway's own step times (its `open decided` and `start
/// steps` log lines, in microseconds) and the bench's client-side laps, per step p50/p99, and
/// per open the time that was neither an AWS call the gateway waited on nor the agent's
/// first output.
struct OpenBreakdown {
    /// (side, step) → each open's milliseconds, in the order first seen.
    steps: Vec<((&'static str, String), Vec<f64>)>,
    /// Per open: its time minus STS, DescribeInstanceInformation, StartSession, the data
    /// channel's handshake (as the gateway timed them) and hello → first byte (the agent's
    /// shell starting, plus one forward).
    own_ms: Vec<f64>,
}

/// The open steps that wait on AWS or the agent (the simulator's time), by side.
const AWS_STEPS: [(&str, &str); 5] = [
    ("open", "sts"),
    ("open", "ping"),
    ("start", "sts"),
    ("start", "start_session"),
    ("start", "channel"),
];

impl OpenBreakdown {
    fn read(
        logs: &str,
        names: &[String],
        open_ms: &[f64],
        post_ms: &[f64],
        hello_ms: &[f64],
    ) -> Self {
        type Laps = Vec<((&'static str, String), f64)>;
        let mut per_session: HashMap<String, Laps> = HashMap::new();
        for line in logs.lines() {
            let Ok(row) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let fields = &row["fields"];
            let side = match fields["message"].as_str() {
                Some("open decided") => "open",
                Some("start steps") => "start",
                _ => continue,
            };
            let (Some(session), Some(steps)) =
                (fields["session"].as_str(), fields["steps_us"].as_str())
            else {
                continue;
            };
            let entry = per_session.entry(session.to_string()).or_default();
            for (step, micros) in steps.split(' ').filter_map(|s| s.split_once('=')) {
                let ms = micros.parse::<f64>().unwrap_or(0.0) / 1000.0;
                entry.push(((side, step.to_string()), ms));
            }
        }
        let mut steps: Vec<((&'static str, String), Vec<f64>)> = Vec::new();
        let mut own_ms = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let client = [
                ("post", post_ms[i]),
                ("attach_to_hello", hello_ms[i] - post_ms[i]),
                ("hello_to_first_byte", open_ms[i] - hello_ms[i]),
            ];
            let gateway = per_session.get(name);
            let mut laps: Laps = client
                .iter()
                .map(|(step, ms)| (("client", step.to_string()), *ms))
                .collect();
            if let Some(gateway) = gateway {
                laps.extend(gateway.iter().cloned());
                // What the POST took that no gateway step timed: the connection, reading the
                // request, routing, writing the answer.
                let open_steps: f64 = gateway
                    .iter()
                    .filter(|((side, _), _)| *side == "open")
                    .map(|(_, ms)| ms)
                    .sum();
                laps.push((
                    ("client", "post_untimed".to_string()),
                    post_ms[i] - open_steps,
                ));
                let aws: f64 = gateway
                    .iter()
                    .filter(|((side, step), _)| AWS_STEPS.contains(&(*side, step.as_str())))
                    .map(|(_, ms)| ms)
                    .sum();
                // Up to the hello: the first byte after it is the agent's shell starting.
                own_ms.push(hello_ms[i] - aws);
            }
            for (key, ms) in laps {
                match steps.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => v.push(ms),
                    None => steps.push((key, vec![ms])),
                }
            }
        }
        Self { steps, own_ms }
    }

    fn print(&self) {
        let p = |v: &[f64], q: f64| proc_stats::percentile(v, q).unwrap_or(0.0);
        println!("where an open's time goes (ms; gateway steps from its log):");
        for ((side, step), v) in &self.steps {
            println!(
                "  {side:>6} {step:<20} p50 {:>8.1}  p99 {:>8.1}  ({} opens)",
                p(v, 50.0),
                p(v, 99.0),
                v.len()
            );
        }
        println!(
            "  gateway's own (open − AWS calls − hello→first byte): p50 {:.1}, p99 {:.1} ms",
            p(&self.own_ms, 50.0),
            p(&self.own_ms, 99.0)
        );
    }

    fn json(&self) -> serde_json::Value {
        let p = |v: &[f64], q: f64| proc_stats::percentile(v, q).unwrap_or(0.0);
        let mut out = serde_json::Map::new();
        for ((side, step), v) in &self.steps {
            out.insert(
                format!("{side}.{step}"),
                json!({"p50": p(v, 50.0), "p99": p(v, 99.0)}),
            );
        }
        serde_json::Value::Object(out)
    }
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

/// A firehose figure: throughput, CPU per 100 MB of whoever relays or reads it.
#[derive(Default)]
struct Firehose {
    mb_per_s: f64,
    cpu_s_per_100mb: f64,
    /// The same CPU counted on until the session is Closed: the last transcript flush, its
    /// store and the close are in it (through the gateway only).
    cpu_to_close_s_per_100mb: f64,
    incomplete: usize,
    instance: String,
}

/// `runs` firehoses through the gateway, the policy's transcript on or off; the gateway
/// process's CPU is sampled around each transfer (after `hello`, until the last byte), and
/// again once the session is Closed (its transcript stored).
async fn firehose_path(
    world: &GatewayWorld,
    runs: usize,
    transcript: bool,
) -> anyhow::Result<Firehose> {
    let gw = world.gateway();
    let fh = world
        .scope(
            if transcript {
                "bench-firehose"
            } else {
                "bench-firehose-off"
            },
            1,
            json!({
                "aws": {"documentName": FIREHOSE_DOCUMENT},
                "limits": {"maxSessionsPerUser": 5},
                "transcript": if transcript {
                    json!({"maxBytes": 1024 * 1024 * 4})
                } else {
                    json!({"enabled": false})
                }
            }),
        )
        .await?;
    let api = gw.client(&world.token(&engineer(1)));
    let pid = gw.process.pid.to_string();
    // Every thread of the gateway, at the scheduler's nanoseconds (clock ticks are 10 ms).
    let cpu = || proc_stats::threads_cpu_s(&pid, "");
    let (mut bytes, mut time, mut cpu_s, mut incomplete) = (0usize, Duration::ZERO, 0.0, 0usize);
    let mut to_close_s = 0.0;
    for _ in 0..runs {
        let opened = api.open_ok(&fh.nodes[0]).await?;
        let mut term = Terminal::connect(&opened.attach_url).await?;
        term.hello().await?;
        let (t0, c0) = (Instant::now(), cpu());
        term.read_until("the whole firehose", Duration::from_secs(120), |t| {
            t.output.len() >= FIREHOSE_LEN || t.find_control("closed").is_some()
        })
        .await?;
        time += t0.elapsed();
        cpu_s += cpu() - c0;
        if term.output != nodeshell::sim::firehose_bytes(FIREHOSE_LEN) {
            incomplete += 1;
            println!(
                "WARNING: the firehose arrived incomplete or damaged through the gateway ({} of {FIREHOSE_LEN} bytes)",
                term.output.len()
            );
        }
        bytes += term.output.len();
        let _ = term.control("closed", Duration::from_secs(30)).await;
        world
            .wait_closed(&opened.session, Duration::from_secs(30))
            .await?;
        to_close_s += cpu() - c0;
    }
    let instance = fh.instances[0].clone();
    world.cleanup(&fh).await?;
    Ok(Firehose {
        mb_per_s: bytes as f64 / 1e6 / time.as_secs_f64().max(1e-9),
        cpu_s_per_100mb: cpu_s / (bytes as f64 / 1e8).max(1e-9),
        cpu_to_close_s_per_100mb: to_close_s / (bytes as f64 / 1e8).max(1e-9),
        incomplete,
        instance,
    })
}

/// Role credentials for direct calls, as the gateway would mint them for a person.
async fn direct_ssm(world: &GatewayWorld, user: usize) -> anyhow::Result<SsmSessions> {
    let endpoints = world.sim.aws_endpoints();
    let creds = assume_role_with_web_identity(
        &endpoints,
        &WebIdentityRequest {
            role_arn: world.sim.default_role_arn(),
            role_session_name: format!("nodeshell-bench-{user}"),
            web_identity_token: world.token(&engineer(user)),
            duration_seconds: None,
        },
    )
    .await?;
    Ok(SsmSessions::new(&endpoints, &creds))
}

/// A shell opened directly (no gateway) on `instance`, until its first output byte.
async fn direct_shell(ssm: &SsmSessions, instance: &str) -> anyhow::Result<DataChannel> {
    let stream = ssm
        .start_session(instance, None, None, HashMap::new())
        .await?;
    let mut channel = DataChannel::connect(
        &stream.stream_url,
        &stream.token_value,
        DataChannelOptions::new(stream.session_id.clone()),
        ssm.clone(),
    )
    .await?;
    tokio::time::timeout(Duration::from_secs(120), channel.output().recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the direct shell closed before its prompt"))?;
    Ok(channel)
}

/// `n` shells opened directly, all at once, each timed from AssumeRoleWithWebIdentity to
/// its first output byte: what the simulator's STS, SSM and agent take without the gateway.
async fn direct_opens(
    world: &GatewayWorld,
    instances: &[String],
    n: usize,
) -> anyhow::Result<Vec<f64>> {
    let opens = (0..n).map(|i| {
        let instance = instances[i % instances.len()].clone();
        async move {
            let t0 = Instant::now();
            let ssm = direct_ssm(world, 1 + i % ENGINEERS.min(50)).await?;
            let channel = direct_shell(&ssm, &instance).await?;
            anyhow::Ok((t0.elapsed().as_secs_f64() * 1000.0, channel))
        }
    });
    let mut times = Vec::with_capacity(n);
    let mut channels = Vec::with_capacity(n);
    for result in futures::future::join_all(opens).await {
        let (ms, channel) = result?;
        times.push(ms);
        channels.push(channel);
    }
    for channel in &channels {
        let _ = channel.send_input(b"exit\r").await;
    }
    for channel in channels {
        let _ = tokio::time::timeout(Duration::from_secs(20), channel.closed()).await;
    }
    Ok(times)
}

/// Keystroke round trips through our client alone, measured as through the gateway: the
/// same key spacing, an `x` until its echo, a DEL until its backspace.
async fn direct_rtt(
    world: &GatewayWorld,
    instance: &str,
    samples: usize,
) -> anyhow::Result<Vec<f64>> {
    let ssm = direct_ssm(world, 3).await?;
    let mut channel = direct_shell(&ssm, instance).await?;
    let mut rtts = Vec::with_capacity(samples);
    async fn until(channel: &mut DataChannel, byte: u8) -> anyhow::Result<()> {
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(10), channel.output().recv())
                .await?
                .ok_or_else(|| anyhow::anyhow!("the direct shell closed"))?;
            if chunk.contains(&byte) {
                return Ok(());
            }
        }
    }
    // The prompt may still be arriving: wait for it to end before typing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(Some(_)) =
        tokio::time::timeout(Duration::from_millis(50), channel.output().recv()).await
    {}
    for _ in 0..samples {
        tokio::time::sleep(KEY_SPACING).await;
        let t0 = Instant::now();
        channel.send_input(b"x").await?;
        until(&mut channel, b'x').await?;
        rtts.push(t0.elapsed().as_secs_f64() * 1000.0);
        channel.send_input(&[0x7f]).await?;
        until(&mut channel, 0x08).await?;
    }
    let _ = channel.send_input(b"exit\r").await;
    let _ = tokio::time::timeout(Duration::from_secs(20), channel.closed()).await;
    Ok(rtts)
}

/// The recording header both transcript measurements start from (an 80x24 terminal).
fn bench_header() -> nodeshell::gateway::transcript::AsciicastHeader {
    nodeshell::gateway::transcript::AsciicastHeader {
        width: 80,
        height: 24,
        timestamp: 0,
        title: "bench".into(),
        term: "xterm".into(),
    }
}

/// Deflate levels on the asciicast text of `seq` output (the gateway's own flate2 backend):
/// compressed share of the text and MB/s of text compressed, per level, on this machine.
fn transcript_levels() -> serde_json::Value {
    use flate2::{Compress, Compression, FlushCompress};
    use nodeshell::gateway::transcript::AsciicastWriter;
    let header = bench_header();
    let (mut writer, mut text) = AsciicastWriter::start(&header, u64::MAX, false);
    let seq: String = (1..=400_000).map(|i| format!("{i}\r\n")).collect();
    for (n, piece) in seq.as_bytes().chunks(4096).enumerate() {
        text.extend(writer.output(n as f64 / 1000.0, piece));
    }
    let mut levels = serde_json::Map::new();
    for level in [1u32, 3, 6] {
        let t0 = Instant::now();
        let mut out = Vec::with_capacity(text.len());
        for _ in 0..3 {
            out.clear();
            let mut deflate = Compress::new(Compression::new(level), false);
            let _ = deflate.compress_vec(&text, &mut out, FlushCompress::Finish);
        }
        let seconds = t0.elapsed().as_secs_f64() / 3.0;
        levels.insert(
            format!("level_{level}"),
            json!({
                "ratio": out.len() as f64 / text.len() as f64,
                "mb_per_s": text.len() as f64 / 1e6 / seconds.max(1e-9),
            }),
        );
    }
    levels.insert("text_bytes".into(), json!(text.len()));
    serde_json::Value::Object(levels)
}

/// The recorder alone, as a gateway runs it (output queued in 16 KiB buffers, a flush
/// whenever one is due, encoded and compressed on one thread; storing left out): CPU
/// seconds of that thread per 10⁸ terminal bytes, on the firehose's bytes (mostly invalid
/// UTF-8 and control characters: the asciicast text is ~2.6× the input) and on `seq` output.
fn transcript_cpu() -> serde_json::Value {
    use nodeshell::gateway::transcript::Transcript;
    let run = |name: &'static str, data: Vec<u8>| {
        // A thread's name in /proc is cut at 15 bytes: keep it short enough to find.
        let thread = format!("bench-tr-{name}");
        std::thread::Builder::new()
            .name(thread.clone())
            .spawn(move || {
                let header = bench_header();
                let mut t = Transcript::start(&header, u64::MAX, false);
                let mut stored = 0usize;
                let mut flush = |t: &mut Transcript, with_open: bool| {
                    if let Some(job) = t.begin_flush(with_open) {
                        let encoded = job.run();
                        stored += encoded.chunks.iter().map(|c| c.gz.len()).sum::<usize>();
                        t.end_flush(encoded, true);
                    }
                };
                let c0 = proc_stats::threads_cpu_s("self", &thread);
                let data = bytes::Bytes::from(data);
                for (n, at) in (0..data.len()).step_by(16 * 1024).enumerate() {
                    let piece = data.slice(at..(at + 16 * 1024).min(data.len()));
                    t.output(n as f64 / 1000.0, &piece);
                    if t.flush_due() {
                        flush(&mut t, false);
                    }
                }
                flush(&mut t, true);
                let cpu = proc_stats::threads_cpu_s("self", &thread) - c0;
                json!({
                    "cpu_s_per_100mb": cpu / (data.len() as f64 / 1e8),
                    "encoded_over_input": t.summary().encoded_bytes as f64 / data.len() as f64,
                    "stored_over_input": stored as f64 / data.len() as f64,
                })
            })
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    };
    let seq: Vec<u8> = (1..=4_000_000)
        .flat_map(|i: u32| format!("{i}\r\n").into_bytes())
        .collect();
    json!({
        "firehose": run("fire", nodeshell::sim::firehose_bytes(32 << 20)),
        "seq": run("seq", seq),
    })
}

/// The same firehose read by our `nodeshell::ssm` client directly from the simulator; its
/// CPU is the bench runtime's threads' (the simulator runs on threads of its own).
async fn client_alone(
    world: &GatewayWorld,
    instance: &str,
    runs: usize,
) -> anyhow::Result<Firehose> {
    world.set_ping(instance, nodeshell::sim::PingStatus::Online);
    let ssm = direct_ssm(world, 2).await?;
    let mut bytes = 0usize;
    let mut time = Duration::ZERO;
    let mut cpu_s = 0.0;
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
        let (t0, c0) = (
            Instant::now(),
            proc_stats::threads_cpu_s("self", CLIENT_THREADS),
        );
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
        cpu_s += proc_stats::threads_cpu_s("self", CLIENT_THREADS) - c0;
        channel.closed().await;
        anyhow::ensure!(
            received == FIREHOSE_LEN,
            "client alone got {received} bytes"
        );
        bytes += received;
    }
    Ok(Firehose {
        mb_per_s: bytes as f64 / 1e6 / time.as_secs_f64().max(1e-9),
        cpu_s_per_100mb: cpu_s / (bytes as f64 / 1e8).max(1e-9),
        incomplete: 0,
        instance: instance.to_string(),
        ..Firehose::default()
    })
}

//! Controller benchmark against a real kube-apiserver and etcd: admission latency
//! (create → Admitted, p50/p99) with many live sessions present, and the controller's
//! resident memory with many session objects cached.
//!
//! `cargo bench --bench controller` runs the full size (1,000 live sessions, 10,000 objects)
//! and writes `target/bench/controller.json`; under `cargo test` it runs a small smoke size
//! and writes nothing. It prints figures and never fails on time.

#[path = "../e2e/tests/support/mod.rs"]
mod support;

use futures::{StreamExt, TryStreamExt, stream};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use nodeshell::api::{NodeShellSession, SessionPhase};
use nodeshell::localcluster::{Identity, LocalCluster, Options};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{ControllerProcess, apply_policy, ensure_session_node, gateway_session, http_get};

/// Sizes of one run.
struct Size {
    live: usize,
    objects: usize,
    samples: usize,
}

const CREATE_CONCURRENCY: usize = 16;
const LEASE: &str = "controller-bench";

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let size = if full {
        Size {
            live: 1000,
            objects: 10_000,
            samples: 200,
        }
    } else {
        Size {
            live: 20,
            objects: 60,
            samples: 10,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(size, full))
}

async fn run(size: Size, write_json: bool) -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cluster = LocalCluster::start(Options::default()).await?;
    cluster.install_rbac().await?;
    cluster.install_crds().await?;
    ensure_session_node(&cluster).await?;
    apply_policy(
        &cluster,
        "bench-live",
        json!({ "limits": { "maxSessionsPerUser": 1000, "maxSessionsTotal": 100000 } }),
    )
    .await?;
    // Sessions under this policy are refused (tier not allowed): cheap objects that stay.
    apply_policy(&cluster, "bench-closed", json!({ "tiers": ["nobody"] })).await?;
    let controller = ControllerProcess::start(&cluster, "bench", LEASE, &[])?;
    let gateway: Api<NodeShellSession> = Api::all(cluster.client(Identity::Gateway).await?);
    let admin: Api<NodeShellSession> = Api::all(cluster.client(Identity::Admin).await?);

    // Decision times as the watch sees them.
    let decided: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    {
        let decided = decided.clone();
        let api = admin.clone();
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).applied_objects();
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(s)) = stream.next().await {
                if s.phase() != SessionPhase::Pending
                    && let Ok(mut m) = decided.lock()
                {
                    m.entry(s.name_any()).or_insert_with(Instant::now);
                }
            }
        });
    }

    let started = Instant::now();
    create_many(&gateway, "live", size.live, "bench-live").await?;
    wait_decided(&admin, size.live).await?;
    println!(
        "controller bench: {} live sessions admitted in {:?}",
        size.live,
        started.elapsed()
    );

    let mut latencies = Vec::with_capacity(size.samples);
    for i in 0..size.samples {
        let name = format!("lat-{i:05}");
        let t0 = Instant::now();
        gateway
            .create(
                &PostParams::default(),
                &gateway_session(&name, &format!("lat{}", i % 50), "bench-live")?,
            )
            .await?;
        let deadline = t0 + Duration::from_secs(60);
        loop {
            if let Some(at) = decided.lock().ok().and_then(|m| m.get(&name).copied()) {
                latencies.push(at.saturating_duration_since(t0));
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{name} was not decided within 60s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let (p50, p99) = (pct(0.50), pct(0.99));
    // The controller's own view: how long its passes take (the rest is watch and API latency).
    let addr = controller.admin_addr().await?;
    let (_, metrics) = http_get(&addr, "/metrics").await?;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("nodeshell_controller_pass_duration_seconds_"))
    {
        if line.contains("_sum") || line.contains("_count") {
            println!("controller bench: {line}");
        }
    }
    let live_sessions = size.live + size.samples;

    let rest = size.objects.saturating_sub(live_sessions);
    let started = Instant::now();
    create_many(&gateway, "obj", rest, "bench-closed").await?;
    wait_decided(&admin, size.objects).await?;
    println!(
        "controller bench: {rest} more sessions decided in {:?}",
        started.elapsed()
    );
    // Let the cache settle after the last writes before measuring memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = controller.rss_bytes().unwrap_or(0);

    let figures = json!({
        "admission_p50_ms": p50,
        "admission_p99_ms": p99,
        "live_sessions": live_sessions,
        "controller_rss_bytes": rss,
        "session_objects": size.objects,
    });
    println!("controller bench: {figures}");
    if write_json {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("bench");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("controller.json"),
            serde_json::to_string_pretty(&figures)?,
        )?;
        println!(
            "controller bench: wrote {}",
            dir.join("controller.json").display()
        );
    }
    Ok(())
}

async fn create_many(
    api: &Api<NodeShellSession>,
    prefix: &str,
    count: usize,
    policy: &str,
) -> anyhow::Result<()> {
    stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            let prefix = prefix.to_string();
            let policy = policy.to_string();
            async move {
                let s = gateway_session(
                    &format!("{prefix}-{i:05}"),
                    &format!("{prefix}{}", i % 100),
                    &policy,
                )?;
                api.create(&PostParams::default(), &s).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn wait_decided(api: &Api<NodeShellSession>, expected: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let list = api.list(&ListParams::default()).await?;
        let decided = list
            .items
            .iter()
            .filter(|s| s.phase() != SessionPhase::Pending)
            .count();
        if decided >= expected {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {decided} of {expected} sessions decided"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

//! Controller benchmark against a real kube-apiserver and etcd: admission latency
//! (create → Admitted, p50/p99) with many live sessions present, all of them Active and
//! writing their status as a gateway does (activity once a minute each, spread evenly;
//! `NODESHELL_BENCH_STATUS_PER_MINUTE` sets another rate per session), and the controller's
//! resident memory with many session objects cached.
//!
//! `cargo bench --bench controller` runs the full size (1,000 live sessions, 10,000 objects)
//! and writes `target/bench/controller.json`; under `cargo test` it runs a small smoke size
//! and writes nothing. It prints figures and never fails on time.

#[path = "../e2e/tests/support/mod.rs"]
mod support;

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use nodeshell::api::{NodeShellSession, SessionPhase};
use nodeshell::localcluster::{Identity, LocalCluster, Options, SYSTEM_NAMESPACE};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
/// The gateway pod the live sessions are Active on (its Lease is kept valid).
const GATEWAY_POD: &str = "bench-gateway";
/// Status writes per active session and minute: the gateway writes activity at most once a
/// minute.
const STATUS_PER_MINUTE: f64 = 1.0;
/// Pause before each latency sample.
const SAMPLE_SPACING: Duration = Duration::from_millis(20);

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
    let per_minute = std::env::var("NODESHELL_BENCH_STATUS_PER_MINUTE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(STATUS_PER_MINUTE);
    let status_writes = activate(&cluster, "live", size.live, per_minute).await?;
    let traffic_started = Instant::now();
    let before = timings(&controller).await?;
    let writes_before = status_writes.load(Ordering::Relaxed);

    let mut latencies = Vec::with_capacity(size.samples);
    for i in 0..size.samples {
        // Clicks are not back to back: spaced, the samples span seconds of status traffic.
        tokio::time::sleep(SAMPLE_SPACING).await;
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
    let traffic_seconds = traffic_started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let status_writes_per_s =
        (status_writes.load(Ordering::Relaxed) - writes_before) as f64 / traffic_seconds;
    println!(
        "controller bench: {status_writes_per_s:.1} status writes/s from {} active sessions during the samples",
        size.live
    );
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let (p50, p99) = (pct(0.50), pct(0.99));
    // The controller's own view of the samples: how long its passes and the steps of its
    // admission passes took (the rest is watch and API latency).
    let after = timings(&controller).await?;
    for (name, (sum, count)) in &after {
        let (sum_before, count_before) = before.get(name).copied().unwrap_or_default();
        let (sum, count) = (sum - sum_before, count - count_before);
        if count > 0.0 {
            println!(
                "controller bench: during the samples {name}: {count} observations, mean {:.2} ms",
                1000.0 * sum / count
            );
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
        "active_sessions": size.live,
        "status_writes_per_s": status_writes_per_s,
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

/// The controller's pass and admission-step histograms: (sum of seconds, count) by series.
async fn timings(
    controller: &ControllerProcess,
) -> anyhow::Result<std::collections::BTreeMap<String, (f64, f64)>> {
    let addr = controller.admin_addr().await?;
    let (_, metrics) = http_get(&addr, "/metrics").await?;
    let mut out: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for line in metrics.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        for family in [
            "nodeshell_controller_pass_duration_seconds",
            "nodeshell_controller_admission_step_seconds",
        ] {
            let Some(rest) = series.strip_prefix(family) else {
                continue;
            };
            let (sum, labels) = if let Some(l) = rest.strip_prefix("_sum") {
                (true, l)
            } else if let Some(l) = rest.strip_prefix("_count") {
                (false, l)
            } else {
                continue;
            };
            let entry = out.entry(format!("{family}{labels}")).or_default();
            if sum {
                entry.0 = value;
            } else {
                entry.1 = value;
            }
        }
    }
    Ok(out)
}

/// Makes the first `count` sessions of `prefix` Active on [`GATEWAY_POD`] (whose Lease is
/// kept valid, so the controller does not close them) and keeps writing their activity, as a
/// gateway does, `per_minute` times a minute each, spread evenly. Returns the count of status
/// writes made so far.
async fn activate(
    cluster: &LocalCluster,
    prefix: &str,
    count: usize,
    per_minute: f64,
) -> anyhow::Result<Arc<AtomicU64>> {
    let leases: Api<Lease> =
        Api::namespaced(cluster.client(Identity::Gateway).await?, SYSTEM_NAMESPACE);
    let lease_name = nodeshell::api::gateway_lease_name(GATEWAY_POD);
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": lease_name,
            "labels": { nodeshell::api::GATEWAY_LEASE_LABEL: "gateway" }
        },
        "spec": {
            "holderIdentity": GATEWAY_POD,
            "leaseDurationSeconds": 3600,
            "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                k8s_openapi::jiff::Timestamp::now()
            ),
        }
    });
    leases
        .patch(
            &lease_name,
            &PatchParams::apply("nodeshell-gateway").force(),
            &Patch::Apply(&lease),
        )
        .await?;
    let api: Api<NodeShellSession> = Api::all(cluster.client(Identity::Gateway).await?);
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i:05}")).collect();
    let writes = Arc::new(AtomicU64::new(0));
    let started =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let write =
        move |api: Api<NodeShellSession>, name: String, bytes: u64, writes: Arc<AtomicU64>| {
            let started = started.clone();
            async move {
                let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                );
                let patch = json!({
                    "apiVersion": "nodeshell.periscope.io/v1alpha1",
                    "kind": "NodeShellSession",
                    "metadata": { "name": name },
                    "status": {
                        "phase": "Active",
                        "startedAt": started,
                        "lastActivityAt": now,
                        "bytesOut": bytes,
                        "gateway": { "pod": GATEWAY_POD },
                    },
                });
                let written = api
                    .patch_status(
                        &name,
                        &PatchParams::apply("nodeshell-gateway").force(),
                        &Patch::Apply(&patch),
                    )
                    .await;
                writes.fetch_add(1, Ordering::Relaxed);
                written.map(|_| ())
            }
        };
    stream::iter(names.clone())
        .map(|name| write(api.clone(), name, 0, writes.clone()))
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let total_per_s = per_minute * names.len() as f64 / 60.0;
    if total_per_s > 0.0 {
        let writes = writes.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / total_per_s));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut round = 0u64;
            loop {
                round += 1;
                for name in &names {
                    tick.tick().await;
                    let (api, name, writes) = (api.clone(), name.clone(), writes.clone());
                    let write = write.clone();
                    // Each write on its own task, as each session's own task writes.
                    tokio::spawn(async move {
                        let _ = write(api, name, round * 4096, writes).await;
                    });
                }
            }
        });
    }
    Ok(writes)
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

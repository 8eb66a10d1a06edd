//! SSM data-channel benchmark: our client (`nodeshell::ssm`) side by side with
//! aws-ssm-bridge 0.6.0 and AWS's official session-manager-plugin, against one simulator
//! process in one run.
//!
//! Figures: firehose throughput (MB/s) and CPU seconds per 100 MB for each peer; resident
//! memory per idle interactive session of ours against the RSS of one idle plugin process;
//! the keystroke round trip (one byte in, its echo back) through our client, p50/p99;
//! recovery from two dropped sockets during a firehose under the official agent's resend
//! (its time, the messages our receive window refused and the agent's resends; this run
//! uses a simulator inside this process, whose agent counters it reads).
//!
//! The simulator runs as a separate `nodeshell sim` process so that the CPU measured in this
//! process is the client's alone: ours and the bridge run here (CPU delta of
//! `/proc/self/stat`), the plugin is a child process (children CPU delta after waiting).
//!
//! `cargo bench --bench ssm` runs the full size and writes `target/bench/ssm.json`; under
//! `cargo test --all-targets` it runs a smoke size and writes nothing. Environment:
//! `NODESHELL_BENCH_BYTES` (firehose size, default 100 MB), `NODESHELL_BENCH_IDLE_SESSIONS`
//! (default 1000), `NODESHELL_BENCH_RTT_SAMPLES` (default 300), `NODESHELL_SSM_PLUGIN`
//! (plugin binary, default `e2e/.bin/session-manager-plugin`).
//!
//! It prints the targets next to the figures and never fails on a time; it fails on a broken
//! peer or wrong data (a firehose that arrives incomplete or with another SHA-256).

// The report's one `json!` literal outgrows the default macro recursion limit.
#![recursion_limit = "256"]

// Under `cargo test`/`check` the shared file's `#[cfg(test)]` module is compiled without a
// test harness here, which leaves its `use super::*` unused.
#[path = "support/proc_stats.rs"]
#[allow(unused_imports)]
mod proc_stats;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_ssm_bridge::{EndpointPolicy, Session, SessionConfig};
use futures::{StreamExt, stream};
use nodeshell::aws::{
    AwsEndpoints, SessionStream, SsmSessions, TemporaryCredentials, WebIdentityRequest,
    assume_role_with_web_identity,
};
use nodeshell::gateway::config::live::{
    SSM_RECEIVE_EARLY_BYTES, SSM_RECEIVE_EARLY_MESSAGES, SSM_RECEIVE_WINDOW_BYTES,
    SSM_RECEIVE_WINDOW_MESSAGES,
};
use nodeshell::sim::output::fill_firehose;
use nodeshell::sim::{FIREHOSE_DOCUMENT, FaultKnobs, SimConfig, Simulator};
use nodeshell::ssm::{CloseCause, DataChannel, DataChannelOptions, ReceiveConfig};
use proc_stats::ProcSample;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// The simulator's default managed instance.
const INSTANCE: &str = "i-0123456789abcdef0";
/// Bytes in one MB (decimal, as MB/s is quoted).
const MB: f64 = 1e6;
/// "Per 100 MB" of the CPU figure.
const CPU_UNIT_BYTES: f64 = 100.0 * MB;
/// A peer that delivers nothing for this long is stalled (broken), not slow.
const STALL: Duration = Duration::from_secs(60);
/// Sessions opened at once while building the idle population.
const OPEN_CONCURRENCY: usize = 16;
/// aws-ssm-bridge version pinned in Cargo.toml (dev-dependency `=0.6.0`).
const BRIDGE_VERSION: &str = "0.6.0";

/// Targets printed next to the figures (never enforced).
const TARGET_VS_PLUGIN: f64 = 3.0;
const TARGET_VS_BRIDGE: f64 = 1.5;
const TARGET_IDLE_BYTES: f64 = 64.0 * 1024.0;
const TARGET_RTT_P99_MS: f64 = 1.0;

/// Sizes of one run.
struct Size {
    /// `cargo bench` (full size, JSON written) or `cargo test` (smoke size).
    full: bool,
    firehose_bytes: usize,
    idle_sessions: usize,
    rtt_samples: usize,
}

fn main() -> anyhow::Result<()> {
    // cargo passes `--bench` to a harness-less bench under `cargo bench` only.
    let full = std::env::args().any(|a| a == "--bench");
    let size = Size {
        full,
        firehose_bytes: env_usize(
            "NODESHELL_BENCH_BYTES",
            if full { 100_000_000 } else { 2_000_000 },
        )?,
        idle_sessions: env_usize(
            "NODESHELL_BENCH_IDLE_SESSIONS",
            if full { 1000 } else { 10 },
        )?,
        rtt_samples: env_usize("NODESHELL_BENCH_RTT_SAMPLES", if full { 300 } else { 20 })?,
    };
    if size.firehose_bytes == 0 {
        bail!("NODESHELL_BENCH_BYTES must be at least 1");
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(size))
}

/// A positive integer from the environment, or `default` when unset.
fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .with_context(|| format!("{name}={v:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

/// Where JSON figures and the simulator's log go (`target/bench`, honouring
/// `CARGO_TARGET_DIR`).
fn bench_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench")
}

async fn run(size: Size) -> anyhow::Result<()> {
    let ticks = proc_stats::ticks_per_second();
    let source = SourceState::read();
    let dir = bench_dir();
    std::fs::create_dir_all(&dir)?;
    check_fd_limit(size.idle_sessions);

    let mut sim = SimProcess::start(&dir.join("ssm-sim.log")).await?;
    println!(
        "ssm bench: simulator pid {} ({} / {}), firehose {} bytes, {} idle sessions, {} RTT samples",
        sim.pid,
        sim.ssm_url,
        sim.messages_url,
        size.firehose_bytes,
        size.idle_sessions,
        size.rtt_samples
    );
    let creds = sim.credentials("ns-bench").await?;
    let ssm = SsmSessions::new(&sim.endpoints(), &creds);

    let expected = expected_digest(size.firehose_bytes);
    let hash_cpu_s = hashing_cpu_seconds(size.firehose_bytes, ticks);

    let plugin = PluginPeer::find(&sim, &creds);

    // Warm-up: first connections, page cache of the plugin binary, allocator growth.
    let warm = 1_000_000.min(size.firehose_bytes);
    let warm_digest = expected_digest(warm);
    let sim_pid = sim.pid;
    let meter = || Meter::start(sim_pid, ticks);
    firehose_ours(&ssm, warm, &warm_digest, meter).await?;
    firehose_bridge(&ssm, warm, &warm_digest, meter).await?;
    if let Ok(p) = &plugin {
        // A plugin that cannot be driven at all shows up (as null) in the measured run.
        let _ = p.firehose(&ssm, warm, &warm_digest, meter).await?;
    }

    let ours = firehose_ours(&ssm, size.firehose_bytes, &expected, meter).await?;
    ours.print("ours");
    let bridge = firehose_bridge(&ssm, size.firehose_bytes, &expected, meter).await?;
    bridge.print("aws-ssm-bridge");
    let plugin_run: Result<FirehoseRun, String> = match &plugin {
        Ok(p) => {
            p.firehose(&ssm, size.firehose_bytes, &expected, meter)
                .await?
        }
        Err(why) => Err(why.clone()),
    };
    match &plugin_run {
        Ok(run) => run.print("session-manager-plugin"),
        Err(why) => println!("  session-manager-plugin: not measured: {why}"),
    }

    let recovery = recovery_run(size.firehose_bytes).await?;
    recovery.print();
    let rtt_ms = keystroke_rtt(&ssm, size.rtt_samples).await?;
    let plugin_rss: Result<u64, String> = match &plugin {
        Ok(p) => p.idle_rss(&ssm).await,
        Err(why) => Err(why.clone()),
    };
    let idle = idle_sessions(&ssm, size.idle_sessions).await?;

    let report = Report {
        size: &size,
        hash_cpu_s,
        ours: &ours,
        bridge: &bridge,
        plugin: &plugin_run,
        plugin_version: plugin.as_ref().ok().map(|p| p.version.clone()),
        source: &source,
        plugin_rss: &plugin_rss,
        idle: &idle,
        rtt_ms: &rtt_ms,
        recovery: &recovery,
    };
    let figures = report.json();
    report.print();
    sim.stop().await;
    if size.full {
        let path = dir.join("ssm.json");
        std::fs::write(&path, serde_json::to_string_pretty(&figures)?)?;
        println!("ssm bench: wrote {}", path.display());
    } else {
        println!("ssm bench (smoke size, nothing written): {figures}");
    }
    Ok(())
}

/// Which source the figures belong to (the checkout is shared, so say it).
struct SourceState {
    /// `git rev-parse --short HEAD`, when git answers.
    head: Option<String>,
    /// Whether `src/ssm` or `src/sim` differ from HEAD (the figures then describe local edits).
    dirty: Option<bool>,
}

impl SourceState {
    /// Asks git once, before any CPU meter runs (a spawned child counts as child CPU).
    fn read() -> Self {
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .args(args)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        Self {
            head: git(&["rev-parse", "--short", "HEAD"]),
            dirty: git(&["status", "--porcelain", "--", "src/ssm", "src/sim"])
                .map(|s| !s.is_empty()),
        }
    }
}

/// Warns when this process may run out of file descriptors: each idle session holds a
/// socket here and a socket plus a PTY in the simulator (which inherits our limit).
fn check_fd_limit(sessions: usize) {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<usize>().ok())
        });
    let needed = sessions * 4 + 256;
    if let Some(soft) = soft
        && soft < needed
    {
        println!(
            "ssm bench: warning: open-file limit {soft} is below the ~{needed} that {sessions} idle sessions need; raise it with `ulimit -n {needed}`"
        );
    }
}

// === impl SimProcess ===

/// `nodeshell sim` running as a child process, with the URLs it printed.
struct SimProcess {
    child: Child,
    pid: u32,
    issuer_url: String,
    sts_url: String,
    ssm_url: String,
    messages_url: String,
    region: String,
    role_arn: String,
    /// The CA of the issuer's https certificate (from the URLs file), trusted for the token.
    issuer_ca: reqwest::Certificate,
    /// The YAML config file; removed when the bench ends.
    _config: tempfile::NamedTempFile,
    /// Where the simulator writes its URLs file; removed when the bench ends.
    _urls_dir: tempfile::TempDir,
}

impl SimProcess {
    /// Starts the simulator binary with no agent start delay and OS-chosen ports, and parses
    /// the URLs it prints.
    async fn start(log: &Path) -> anyhow::Result<Self> {
        let mut config = tempfile::Builder::new().suffix(".yaml").tempfile()?;
        // The agent's one-second start delay would only add a constant to every session.
        // The bench fetches alice's token over HTTP from the separate simulator process, so it
        // turns the test password grant on; the issuer is https, as STS requires, and its CA
        // comes from the URLs file.
        std::io::Write::write_all(
            &mut config,
            b"agentStartDelayMs: 0\nissuer:\n  testPasswordGrant: true\n  https: true\n",
        )?;
        let urls_dir = tempfile::tempdir()?;
        let urls_file = urls_dir.path().join("sim-urls.json");
        let log_file = std::fs::File::create(log)?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_nodeshell"))
            .arg("sim")
            .arg("--config")
            .arg(config.path())
            .arg("--urls-file")
            .arg(&urls_file)
            // Per-session info logs would cost the simulator CPU that every peer shares.
            .env(
                "RUST_LOG",
                std::env::var("NODESHELL_BENCH_SIM_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .context("starting `nodeshell sim`")?;
        let pid = child.id().context("simulator pid")?;
        let stdout = child.stdout.take().context("simulator stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut found: HashMap<&'static str, String> = HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let line = tokio::time::timeout_at(deadline, lines.next_line())
                .await
                .with_context(|| {
                    format!(
                        "the simulator printed no URLs in 60 s (log: {})",
                        log.display()
                    )
                })??
                .with_context(|| {
                    format!("the simulator exited at start (log: {})", log.display())
                })?;
            let line = line.trim();
            let value = line
                .split_whitespace()
                .last()
                .unwrap_or_default()
                .to_string();
            for (label, key) in [
                ("OIDC issuer", "issuer"),
                ("STS ", "sts"),
                ("SSM ", "ssm"),
                ("ssmmessages", "messages"),
                ("region", "region"),
                ("role", "role"),
            ] {
                if line.starts_with(label) {
                    found.entry(key).or_insert_with(|| value.clone());
                }
            }
            // The token hint is the last line the simulator prints at start.
            if line.starts_with("token for") {
                break;
            }
        }
        // Keep draining stdout: a closed pipe would make a later print fail in the child.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        // The URLs file is written right after the last line printed.
        let issuer_ca = loop {
            if let Ok(text) = std::fs::read_to_string(&urls_file)
                && let Ok(doc) = serde_json::from_str::<Value>(&text)
            {
                let pem = doc["issuerCaPem"]
                    .as_str()
                    .context("the URLs file has no issuerCaPem")?;
                break reqwest::Certificate::from_pem(pem.as_bytes())?;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the simulator wrote no URLs file in 60 s (log: {})",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut take = |key: &str| {
            found
                .remove(key)
                .with_context(|| format!("the simulator did not print its {key}"))
        };
        Ok(Self {
            pid,
            issuer_url: take("issuer")?,
            sts_url: take("sts")?,
            ssm_url: take("ssm")?,
            messages_url: take("messages")?,
            region: take("region")?,
            role_arn: take("role")?,
            issuer_ca,
            child,
            _config: config,
            _urls_dir: urls_dir,
        })
    }

    /// Endpoint overrides for our AWS calls.
    fn endpoints(&self) -> AwsEndpoints {
        AwsEndpoints {
            region: self.region.clone(),
            sts_url: Some(self.sts_url.clone()),
            ssm_url: Some(self.ssm_url.clone()),
            kms_url: None,
            s3_url: None,
        }
    }

    /// alice's id_token from the issuer, exchanged for role credentials.
    async fn credentials(&self, session_name: &str) -> anyhow::Result<TemporaryCredentials> {
        let http = reqwest::Client::builder()
            .add_root_certificate(self.issuer_ca.clone())
            .build()?;
        let answer: Value = http
            .get(format!("{}/token?sub=alice", self.issuer_url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let token = answer["id_token"]
            .as_str()
            .context("the issuer's answer has no id_token")?;
        let request = WebIdentityRequest {
            role_arn: self.role_arn.clone(),
            role_session_name: session_name.to_string(),
            web_identity_token: token.to_string(),
            duration_seconds: None,
        };
        Ok(assume_role_with_web_identity(&self.endpoints(), &request).await?)
    }

    /// Stops the simulator (our own child, by its handle).
    async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

// === firehose ===

/// One measured firehose transfer.
#[derive(Clone, Copy)]
struct FirehoseRun {
    bytes: usize,
    seconds: f64,
    /// Client CPU seconds, the consumer's SHA-256 included.
    cpu_s: f64,
    /// Client CPU seconds with the measured cost of our SHA-256 removed (0 for the plugin,
    /// whose output is hashed in this process, outside its CPU figure).
    hash_cpu_s: f64,
    /// The simulator's CPU seconds during the transfer.
    sim_cpu_s: f64,
}

impl FirehoseRun {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / MB / self.seconds.max(1e-9)
    }

    /// CPU seconds per 100 MB, without the consumer's hashing.
    fn cpu_per_100mb(&self) -> f64 {
        (self.cpu_s - self.hash_cpu_s).max(0.0) * CPU_UNIT_BYTES / self.bytes as f64
    }

    fn cpu_with_hashing_per_100mb(&self) -> f64 {
        self.cpu_s * CPU_UNIT_BYTES / self.bytes as f64
    }

    fn sim_cpu_per_100mb(&self) -> f64 {
        self.sim_cpu_s * CPU_UNIT_BYTES / self.bytes as f64
    }

    /// Share of one core the simulator used during the transfer (near 1.0: it is the limit).
    fn sim_core_share(&self) -> f64 {
        self.sim_cpu_s / self.seconds.max(1e-9)
    }

    fn print(&self, name: &str) {
        println!(
            "  {name}: {} bytes in {:.2} s = {:.1} MB/s, client {:.3} CPU s (the checker's hashing included for in-process peers); simulator {:.2} CPU s ({:.0}% of a core)",
            self.bytes,
            self.seconds,
            self.mb_per_s(),
            self.cpu_s,
            self.sim_cpu_s,
            self.sim_core_share() * 100.0
        );
    }
}

/// SHA-256 of the first `len` firehose bytes, generated in pieces (no 100 MB buffer that
/// would sit in this process's RSS).
fn expected_digest(len: usize) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0usize;
    while offset < len {
        let n = buf.len().min(len - offset);
        fill_firehose(offset as u64, &mut buf[..n]);
        hasher.update(&buf[..n]);
        offset += n;
    }
    hasher.finalize().into()
}

/// CPU seconds this process spends hashing `len` bytes in 1 KiB pieces (the agent's chunk
/// size), so the client figures can leave out the work of our checker.
fn hashing_cpu_seconds(len: usize, ticks: f64) -> f64 {
    let block = {
        let mut b = vec![0u8; 1024 * 1024];
        fill_firehose(0, &mut b);
        b
    };
    let before = self_sample(ticks);
    let mut hasher = Sha256::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len());
        for piece in block[..n].chunks(1024) {
            hasher.update(piece);
        }
        left -= n;
    }
    std::hint::black_box(hasher.finalize());
    let after = self_sample(ticks);
    (after.cpu_s - before.cpu_s).max(0.0)
}

/// Counts and hashes what a peer delivers and compares it with the firehose.
struct FirehoseCheck<'a> {
    name: &'static str,
    hasher: Sha256,
    received: usize,
    expected_len: usize,
    expected: &'a [u8; 32],
}

impl<'a> FirehoseCheck<'a> {
    fn new(name: &'static str, expected_len: usize, expected: &'a [u8; 32]) -> Self {
        Self {
            name,
            hasher: Sha256::new(),
            received: 0,
            expected_len,
            expected,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        self.received += chunk.len();
        self.hasher.update(chunk);
    }

    /// Fails loudly when the byte count or the SHA-256 differs.
    fn finish(self) -> anyhow::Result<()> {
        if self.received != self.expected_len {
            bail!(
                "{}: the firehose arrived incomplete or with extra bytes: {} of {} bytes",
                self.name,
                self.received,
                self.expected_len
            );
        }
        let got: [u8; 32] = self.hasher.finalize().into();
        if &got != self.expected {
            bail!(
                "{}: the firehose content differs (sha256 {} instead of {}): lost, duplicated or reordered bytes",
                self.name,
                hex::encode(got),
                hex::encode(self.expected)
            );
        }
        Ok(())
    }
}

/// Own CPU and RSS now, without spawning anything (a spawn would show up as child CPU).
fn self_sample(ticks: f64) -> ProcSample {
    pid_sample("self", ticks)
}

/// CPU and RSS of `pid` (or `self`) from `/proc`, zero when unreadable.
fn pid_sample(pid: &str, ticks: f64) -> ProcSample {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    proc_stats::parse(&stat, &status, ticks).unwrap_or_default()
}

/// CPU meters started together around one transfer: this process, its waited children, and
/// the simulator (which serves every peer the same way, so its share shows who is the limit).
struct Meter {
    ticks: f64,
    sim_pid: String,
    own: ProcSample,
    sim: ProcSample,
    started: Instant,
}

/// What a [`Meter`] read at the end.
struct Metered {
    seconds: f64,
    own_cpu_s: f64,
    children_cpu_s: f64,
    sim_cpu_s: f64,
}

impl Meter {
    fn start(sim_pid: u32, ticks: f64) -> Self {
        let sim_pid = sim_pid.to_string();
        Self {
            ticks,
            own: self_sample(ticks),
            sim: pid_sample(&sim_pid, ticks),
            sim_pid,
            started: Instant::now(),
        }
    }

    fn stop(&self) -> Metered {
        let seconds = self.started.elapsed().as_secs_f64();
        let own = self_sample(self.ticks);
        let sim = pid_sample(&self.sim_pid, self.ticks);
        Metered {
            seconds,
            own_cpu_s: own.cpu_s - self.own.cpu_s,
            children_cpu_s: own.children_cpu_s - self.own.children_cpu_s,
            sim_cpu_s: sim.cpu_s - self.sim.cpu_s,
        }
    }
}

/// `ssm:StartSession` for a firehose of `len` bytes.
async fn start_firehose(ssm: &SsmSessions, len: usize) -> anyhow::Result<SessionStream> {
    let params = HashMap::from([("bytes".to_string(), vec![len.to_string()])]);
    Ok(ssm
        .start_session(INSTANCE, Some(FIREHOSE_DOCUMENT), None, params)
        .await?)
}

/// Our client, default options (what the gateway ships), consumer hashing each chunk.
async fn firehose_ours(
    ssm: &SsmSessions,
    len: usize,
    expected: &[u8; 32],
    meter: impl Fn() -> Meter,
) -> anyhow::Result<FirehoseRun> {
    let stream = start_firehose(ssm, len).await?;
    let mut check = FirehoseCheck::new("ours", len, expected);
    let meter = meter();
    let mut channel = DataChannel::connect(
        &stream.stream_url,
        &stream.token_value,
        DataChannelOptions::new(stream.session_id.clone()),
        ssm.clone(),
    )
    .await?;
    loop {
        let chunk = tokio::time::timeout(STALL, channel.output().recv())
            .await
            .with_context(|| format!("ours: stalled after {} bytes", check.received))?;
        let Some(chunk) = chunk else { break };
        check.feed(&chunk);
    }
    let m = meter.stop();
    let reason = channel.closed().await;
    check.finish()?;
    // The agent sends no EXIT_CODE for the stream (as for the shell document's PTY path).
    if reason.cause != CloseCause::ChannelClosed || reason.exit_code.is_some() {
        bail!("ours: the firehose ended badly: {reason:?}");
    }
    Ok(FirehoseRun {
        bytes: len,
        seconds: m.seconds,
        cpu_s: m.own_cpu_s,
        hash_cpu_s: 0.0,
        sim_cpu_s: m.sim_cpu_s,
    })
}

/// What a firehose with dropped sockets cost our client under the official agent's resend.
struct Recovery {
    bytes: usize,
    /// Bytes that arrived (fewer when the stream ended before the lost messages came back).
    arrived: usize,
    close_after_frames: u64,
    /// Successful ResumeSession calls (one per dropped socket).
    resumes: usize,
    seconds: f64,
    /// Messages our receive window refused (each one resent only as the agent's oldest).
    refused_messages: u64,
    /// Messages the agent's resend loop put on the wire again.
    agent_resends: u64,
}

impl Recovery {
    fn print(&self) {
        println!(
            "  recovery: {} of {} bytes, 2 sockets closed after {} frames each, in {:.2} s: {} refused, {} agent resends",
            self.arrived,
            self.bytes,
            self.close_after_frames,
            self.seconds,
            self.refused_messages,
            self.agent_resends
        );
    }
}

/// A firehose of `len` bytes whose client socket the service closes twice (after 40 % of
/// the stream on each connection), through our client with the gateway's receive window, in
/// a default simulator started in this process so that its agent's resends can be read.
async fn recovery_run(len: usize) -> anyhow::Result<Recovery> {
    let sim = Simulator::start(SimConfig::for_tests()).await?;
    let close_after_frames = u64::try_from(len / 1024 * 2 / 5).unwrap_or(u64::MAX).max(1);
    sim.set_instance_faults(
        INSTANCE,
        FaultKnobs {
            close_after_frames: Some(close_after_frames),
            close_times: 2,
            ..FaultKnobs::default()
        },
    )?;
    let request = WebIdentityRequest {
        role_arn: sim.default_role_arn(),
        role_session_name: "ns-bench".to_string(),
        web_identity_token: sim.mint_token("alice")?,
        duration_seconds: None,
    };
    let creds = assume_role_with_web_identity(&sim.aws_endpoints(), &request).await?;
    let ssm = SsmSessions::new(&sim.aws_endpoints(), &creds);
    let stream = start_firehose(&ssm, len).await?;
    let mut options = DataChannelOptions::new(stream.session_id.clone());
    options.reconnect.retries = 10;
    options.receive = ReceiveConfig {
        max_messages: SSM_RECEIVE_WINDOW_MESSAGES,
        max_bytes: SSM_RECEIVE_WINDOW_BYTES,
        max_early_messages: SSM_RECEIVE_EARLY_MESSAGES,
        max_early_bytes: SSM_RECEIVE_EARLY_BYTES,
    };
    let stats = options.stats.clone();
    let mut hasher = Sha256::new();
    let mut received = 0usize;
    let t0 = Instant::now();
    let mut channel = DataChannel::connect(
        &stream.stream_url,
        &stream.token_value,
        options,
        ssm.clone(),
    )
    .await?;
    loop {
        let chunk = tokio::time::timeout(STALL, channel.output().recv())
            .await
            .with_context(|| format!("recovery: stalled after {received} bytes"))?;
        let Some(chunk) = chunk else { break };
        received += chunk.len();
        hasher.update(&chunk);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let reason = channel.closed().await;
    if reason.cause != CloseCause::ChannelClosed {
        bail!("recovery: the firehose ended badly: {reason:?}");
    }
    // The agent closes 2 s after the program ends, with whatever is still unacknowledged
    // lost (as the official agent does): a stream that ends while lost messages still come
    // back one per tick arrives short. What arrived must be the stream's start, once each.
    let whole = nodeshell::sim::firehose_bytes(len);
    let prefix = whole
        .get(..received)
        .context("recovery: more bytes than sent")?;
    if hasher.finalize().as_slice() != Sha256::digest(prefix).as_slice() {
        bail!("recovery: the {received} bytes that arrived are not the stream's start");
    }
    let (agent_resends, _) = sim
        .agent_counters(&stream.session_id)
        .context("recovery: the simulator lost the session")?;
    let resumes = sim
        .calls()
        .iter()
        .filter(|c| c.operation == "ResumeSession" && c.error_code.is_none())
        .count();
    sim.shutdown().await;
    Ok(Recovery {
        bytes: len,
        arrived: received,
        close_after_frames,
        resumes,
        seconds,
        refused_messages: stats.refused_messages(),
        agent_resends,
    })
}

/// aws-ssm-bridge attached to the same kind of session (its data channel only, as for the
/// other two peers; StartSession is not timed for anyone). Retries a run whose output began
/// before the bench could subscribe (see [`firehose_bridge_once`]).
async fn firehose_bridge(
    ssm: &SsmSessions,
    len: usize,
    expected: &[u8; 32],
    meter: impl Fn() -> Meter,
) -> anyhow::Result<FirehoseRun> {
    const ATTEMPTS: usize = 3;
    for attempt in 1..=ATTEMPTS {
        if let Some(run) = firehose_bridge_once(ssm, len, expected, &meter).await? {
            return Ok(run);
        }
        println!(
            "  aws-ssm-bridge: output began before the bench subscribed (attempt {attempt} of {ATTEMPTS}); retrying"
        );
    }
    bail!("aws-ssm-bridge: output began before the bench could subscribe in {ATTEMPTS} attempts")
}

/// One bridge firehose; `None` when the first chunk seen is not the start of the stream.
/// The bridge drops output that arrives while a session has no subscriber, and its reader
/// task starts inside `attach`; a descheduled bench thread can subscribe a chunk late. That
/// is the harness's race, not the bridge losing data, so it is retried rather than failed.
async fn firehose_bridge_once(
    ssm: &SsmSessions,
    len: usize,
    expected: &[u8; 32],
    meter: &impl Fn() -> Meter,
) -> anyhow::Result<Option<FirehoseRun>> {
    let stream = start_firehose(ssm, len).await?;
    let mut config = SessionConfig::new(INSTANCE);
    // The simulator's loopback ws:// URL is not an AWS endpoint.
    config.endpoint_policy = EndpointPolicy::AllowAny;
    // The bridge evicts a subscriber that falls this many chunks behind; a generous queue
    // keeps a momentarily descheduled consumer from being counted as data loss.
    config.output_buffer = 1 << 16;
    let mut check = FirehoseCheck::new("aws-ssm-bridge", len, expected);
    let meter = meter();
    let session = Session::attach(
        stream.session_id.clone(),
        stream.stream_url.clone(),
        stream.token_value.clone(),
        config,
    )
    .await?;
    // Subscribe before yielding, to keep the race above as narrow as it can be.
    let mut output = session.output();
    loop {
        let chunk = tokio::time::timeout(STALL, output.recv())
            .await
            .with_context(|| format!("aws-ssm-bridge: stalled after {} bytes", check.received))?;
        let Some(chunk) = chunk else { break };
        if check.received == 0 && !is_firehose_start(&chunk) {
            let _ = session.terminate().await;
            // An attached bridge session cannot call TerminateSession; free the agent here.
            let _ = ssm.terminate_session(&stream.session_id).await;
            return Ok(None);
        }
        check.feed(&chunk);
    }
    let m = meter.stop();
    if output.lagged() {
        bail!(
            "aws-ssm-bridge: evicted our subscriber for falling behind after {} bytes",
            check.received
        );
    }
    check.finish()?;
    let _ = tokio::time::timeout(Duration::from_secs(10), session.closed()).await;
    Ok(Some(FirehoseRun {
        bytes: len,
        seconds: m.seconds,
        cpu_s: m.own_cpu_s,
        hash_cpu_s: 0.0,
        sim_cpu_s: m.sim_cpu_s,
    }))
}

/// Whether `chunk` is the first bytes of the firehose.
fn is_firehose_start(chunk: &[u8]) -> bool {
    let mut want = vec![0u8; chunk.len()];
    fill_firehose(0, &mut want);
    want == chunk
}

// === impl PluginPeer ===

/// AWS's session-manager-plugin binary, driven through pipes as the AWS CLI runs it.
struct PluginPeer {
    path: PathBuf,
    version: String,
    region: String,
    ssm_url: String,
    creds: TemporaryCredentials,
}

/// Stdout of one plugin run, split into its banner, the session bytes and its farewell.
struct PluginStdout<'a> {
    banner: Vec<u8>,
    prefix: Vec<u8>,
    check: FirehoseCheck<'a>,
    trailer: Vec<u8>,
}

impl<'a> PluginStdout<'a> {
    /// The plugin prints `\nStarting session with SessionId: <id>\n`, then every payload
    /// verbatim, then `Exiting session ...` (no exit-code line: the agent sends none).
    fn new(session_id: &str, check: FirehoseCheck<'a>) -> Self {
        Self {
            banner: Vec::new(),
            prefix: format!("\nStarting session with SessionId: {session_id}\n").into_bytes(),
            check,
            trailer: Vec::new(),
        }
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        if self.banner.len() < self.prefix.len() {
            let n = (self.prefix.len() - self.banner.len()).min(data.len());
            self.banner.extend_from_slice(&data[..n]);
            data = &data[n..];
            if !self.prefix.starts_with(&self.banner) {
                return Err(format!(
                    "unexpected start of output: {:?}",
                    String::from_utf8_lossy(&self.banner)
                ));
            }
        }
        let want = self.check.expected_len - self.check.received;
        let n = want.min(data.len());
        self.check.feed(&data[..n]);
        if self.trailer.len() < 64 * 1024 {
            self.trailer.extend_from_slice(&data[n..]);
        }
        Ok(())
    }

    fn started(&self) -> bool {
        self.banner.len() == self.prefix.len()
    }
}

impl PluginPeer {
    /// The binary from `NODESHELL_SSM_PLUGIN` or `e2e/.bin`; Err(reason) when unusable.
    fn find(sim: &SimProcess, creds: &TemporaryCredentials) -> Result<Self, String> {
        let path = std::env::var_os("NODESHELL_SSM_PLUGIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/.bin/session-manager-plugin")
            });
        if !path.exists() {
            return Err(format!(
                "no plugin binary at {} (build it with e2e/scripts/build-ssm-plugin.sh or set NODESHELL_SSM_PLUGIN)",
                path.display()
            ));
        }
        let version = std::process::Command::new(&path)
            .arg("--version")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
        Ok(Self {
            path,
            version,
            region: sim.region.clone(),
            ssm_url: sim.ssm_url.clone(),
            creds: creds.clone(),
        })
    }

    /// Spawns the plugin for `stream` with the AWS CLI's argument order.
    fn spawn(&self, stream: &SessionStream, params: &Value, home: &Path) -> Result<Child, String> {
        let response = json!({
            "SessionId": stream.session_id,
            "TokenValue": stream.token_value,
            "StreamUrl": stream.stream_url,
        });
        Command::new(&self.path)
            .arg(response.to_string())
            .arg(&self.region)
            .arg("StartSession")
            .arg("")
            .arg(params.to_string())
            .arg(&self.ssm_url)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("AWS_ACCESS_KEY_ID", &self.creds.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", self.creds.secret_access_key())
            .env("AWS_SESSION_TOKEN", self.creds.session_token())
            .env("AWS_REGION", &self.region)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.path.display()))
    }

    /// A firehose through the plugin's stdout. Outer error: wrong data (the bench fails);
    /// inner error: the plugin could not be driven (recorded as null with the reason).
    async fn firehose(
        &self,
        ssm: &SsmSessions,
        len: usize,
        expected: &[u8; 32],
        meter: impl Fn() -> Meter,
    ) -> anyhow::Result<Result<FirehoseRun, String>> {
        let stream = start_firehose(ssm, len).await?;
        let params = json!({
            "Target": INSTANCE,
            "DocumentName": FIREHOSE_DOCUMENT,
            "Parameters": {"bytes": [len.to_string()]},
        });
        let home = tempfile::tempdir()?;
        let mut out = PluginStdout::new(
            &stream.session_id,
            FirehoseCheck::new("session-manager-plugin", len, expected),
        );
        let meter = meter();
        let mut child = match self.spawn(&stream, &params, home.path()) {
            Ok(c) => c,
            Err(why) => return Ok(Err(why)),
        };
        // Held open: the plugin reads stdin for keystrokes while the session runs.
        let stdin = child.stdin.take();
        let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Ok(Err("plugin pipes missing".into()));
        };
        let stderr_task = tokio::spawn(read_all(stderr));
        let mut buf = vec![0u8; 64 * 1024];
        let ended = loop {
            match tokio::time::timeout(STALL, stdout.read(&mut buf)).await {
                Ok(Ok(0)) => break None,
                Ok(Ok(n)) => {
                    if let Err(why) = out.feed(&buf[..n]) {
                        break Some(why);
                    }
                }
                Ok(Err(e)) => break Some(format!("reading its stdout: {e}")),
                Err(_) => break Some(format!("no output for {STALL:?}")),
            }
        };
        // The clock stops at the end of the output, as for the in-process peers; the CPU
        // meter after the wait, when the kernel has added the plugin to our children.
        let seconds = meter.started.elapsed().as_secs_f64();
        if ended.is_some() {
            let _ = child.start_kill();
        }
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
        let m = meter.stop();
        drop(stdin);
        let stderr_text = stderr_task.await.unwrap_or_default();
        let tail = |s: &str| {
            s.chars()
                .rev()
                .take(600)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<String>()
        };
        if let Some(why) = ended {
            if !out.started() || out.check.received == 0 {
                return Ok(Err(format!("{why}; stderr: {}", tail(&stderr_text))));
            }
            bail!(
                "session-manager-plugin: stopped after {} firehose bytes: {why}; stderr: {}",
                out.check.received,
                tail(&stderr_text)
            );
        }
        if !out.started() {
            return Ok(Err(format!(
                "the plugin never started the session; stdout {:?}; stderr: {}",
                String::from_utf8_lossy(&out.banner),
                tail(&stderr_text)
            )));
        }
        let trailer = String::from_utf8_lossy(&out.trailer).into_owned();
        out.check.finish()?;
        if !trailer.contains("Exiting session") {
            bail!("session-manager-plugin: the session did not end cleanly; trailer {trailer:?}");
        }
        match status {
            Ok(Ok(s)) if s.success() => {}
            other => bail!("session-manager-plugin: exit status {other:?}"),
        }
        Ok(Ok(FirehoseRun {
            bytes: len,
            seconds,
            cpu_s: m.children_cpu_s,
            hash_cpu_s: 0.0,
            sim_cpu_s: m.sim_cpu_s,
        }))
    }

    /// RSS of one plugin process holding an idle interactive shell (prompt shown).
    async fn idle_rss(&self, ssm: &SsmSessions) -> Result<u64, String> {
        let stream = ssm
            .start_session(INSTANCE, None, None, HashMap::new())
            .await
            .map_err(|e| format!("StartSession for the plugin: {e}"))?;
        let home = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut child = self.spawn(&stream, &json!({"Target": INSTANCE}), home.path())?;
        let mut stdin = child.stdin.take().ok_or("plugin stdin missing")?;
        let mut stdout = child.stdout.take().ok_or("plugin stdout missing")?;
        let stderr_task = child.stderr.take().map(|e| tokio::spawn(read_all(e)));
        let pid = child.id().ok_or("plugin exited at once")?;
        let mut seen = String::new();
        let mut buf = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        // The prompt after the banner means the shell is up and idle.
        let prompt_seen = |seen: &str| {
            seen.find("Starting session")
                .is_some_and(|at| seen[at..].contains("$ "))
        };
        while !prompt_seen(&seen) {
            match tokio::time::timeout_at(deadline, stdout.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => {
                    let _ = child.start_kill();
                    let err = match stderr_task {
                        Some(t) => t.await.unwrap_or_default(),
                        None => String::new(),
                    };
                    return Err(format!(
                        "no shell prompt from the plugin; stdout {seen:?}; stderr {err:?}"
                    ));
                }
                Ok(Ok(n)) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        // Let the Go runtime settle (its first GC cycles) before reading RSS.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = proc_stats::sample(&pid.to_string())
            .map(|s| s.rss_bytes)
            .ok_or("cannot read the plugin's /proc status")?;
        let _ = stdin.write_all(b"exit\n").await;
        // Drain so the plugin never blocks on a full pipe while it exits.
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = stdout.read_to_end(&mut sink).await;
        });
        if tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        drain.abort();
        Ok(rss)
    }
}

/// Everything a pipe delivers, as text.
async fn read_all(mut pipe: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut bytes = Vec::new();
    let _ = pipe.read_to_end(&mut bytes).await;
    String::from_utf8_lossy(&bytes).into_owned()
}

// === interactive sessions (ours) ===

/// Opens an interactive shell through our client and waits for its prompt.
async fn open_shell(ssm: &SsmSessions) -> anyhow::Result<DataChannel> {
    let stream = ssm
        .start_session(INSTANCE, None, Some("bench"), HashMap::new())
        .await?;
    let mut channel = DataChannel::connect(
        &stream.stream_url,
        &stream.token_value,
        DataChannelOptions::new(stream.session_id.clone()),
        ssm.clone(),
    )
    .await?;
    let mut seen = Vec::new();
    read_output_until(&mut channel, &mut seen, |s| {
        s.windows(2).any(|w| w == b"$ ")
    })
    .await
    .context("waiting for the shell prompt")?;
    Ok(channel)
}

/// Reads output until `done(all output so far)`; a stall or an ended channel is an error.
async fn read_output_until(
    channel: &mut DataChannel,
    seen: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> bool,
) -> anyhow::Result<()> {
    while !done(seen) {
        match tokio::time::timeout(STALL, channel.output().recv()).await {
            Ok(Some(chunk)) => seen.extend_from_slice(&chunk),
            Ok(None) => bail!(
                "the channel ended; output {:?}",
                String::from_utf8_lossy(seen)
            ),
            Err(_) => bail!(
                "no output for {STALL:?}; output {:?}",
                String::from_utf8_lossy(seen)
            ),
        }
    }
    Ok(())
}

/// Keystroke round trips in milliseconds: one byte typed into bash (readline echoes it),
/// timed until the echo arrives; a DEL after each keeps the line short.
async fn keystroke_rtt(ssm: &SsmSessions, samples: usize) -> anyhow::Result<Vec<f64>> {
    let mut channel = open_shell(ssm).await?;
    let mut rtts = Vec::with_capacity(samples);
    for _ in 0..samples {
        // Typing pace: the agent pauses 1 ms after each PTY read (as the official agent
        // does); a key pressed inside that pause would measure the pause, not the path.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut seen = Vec::new();
        let started = Instant::now();
        channel.send_input(b"x").await?;
        read_output_until(&mut channel, &mut seen, |s| s.contains(&b'x')).await?;
        rtts.push(started.elapsed().as_secs_f64() * 1e3);
        // DEL: readline answers with a backspace sequence.
        channel.send_input(&[0x7f]).await?;
        let mut erased = Vec::new();
        read_output_until(&mut channel, &mut erased, |s| s.contains(&0x08)).await?;
    }
    channel.send_input(b"exit\r").await?;
    let reason = tokio::time::timeout(Duration::from_secs(20), channel.closed()).await?;
    if reason.cause != CloseCause::ChannelClosed {
        bail!("the RTT shell did not end with the shell: {reason:?}");
    }
    Ok(rtts)
}

/// The idle-session population and what it cost this process.
struct IdleResult {
    requested: usize,
    opened: usize,
    /// The first failure, if any session could not be opened.
    failure: Option<String>,
    rss_before: u64,
    rss_after: u64,
    open_seconds: f64,
}

impl IdleResult {
    fn bytes_per_session(&self) -> Option<f64> {
        (self.opened > 0)
            .then(|| (self.rss_after as f64 - self.rss_before as f64) / self.opened as f64)
    }
}

/// Opens `n` interactive shells through our client, waits until each showed its prompt,
/// and reads this process's RSS before and after; then ends them all.
async fn idle_sessions(ssm: &SsmSessions, n: usize) -> anyhow::Result<IdleResult> {
    let ticks = proc_stats::ticks_per_second();
    // Settle: let the previous runs' buffers go back to the allocator first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = self_sample(ticks).rss_bytes;
    let started = Instant::now();
    let results: Vec<anyhow::Result<DataChannel>> = stream::iter(0..n)
        .map(|_| open_shell(ssm))
        .buffer_unordered(OPEN_CONCURRENCY)
        .collect()
        .await;
    let open_seconds = started.elapsed().as_secs_f64();
    let mut channels = Vec::with_capacity(n);
    let mut failure = None;
    let mut failed = 0usize;
    for r in results {
        match r {
            Ok(c) => channels.push(c),
            Err(e) => {
                failed += 1;
                failure.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    if let Some(why) = &failure {
        println!("  idle sessions: {failed} of {n} failed to open; first error: {why}");
    }
    // Idle means idle: nothing flows for a while (keepalive pings are 30 s apart).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = self_sample(ticks).rss_bytes;
    let opened = channels.len();
    println!(
        "  idle sessions: {opened} open in {open_seconds:.1} s, RSS {} → {} MiB",
        rss_before / (1 << 20),
        rss_after / (1 << 20)
    );
    // End every shell so the simulator's agents and PTYs go away.
    let ended = stream::iter(channels)
        .map(|c| async move {
            let _ = c.send_input(b"exit\r").await;
            tokio::time::timeout(Duration::from_secs(30), c.closed())
                .await
                .is_ok()
        })
        .buffer_unordered(64)
        .filter(|ok| std::future::ready(!ok))
        .count()
        .await;
    if ended > 0 {
        println!("  idle sessions: {ended} did not close within 30 s of `exit`");
    }
    Ok(IdleResult {
        requested: n,
        opened,
        failure,
        rss_before,
        rss_after,
        open_seconds,
    })
}

// === impl Report ===

/// Everything measured, for the table and the JSON.
struct Report<'a> {
    size: &'a Size,
    hash_cpu_s: f64,
    ours: &'a FirehoseRun,
    bridge: &'a FirehoseRun,
    plugin: &'a Result<FirehoseRun, String>,
    plugin_version: Option<String>,
    source: &'a SourceState,
    plugin_rss: &'a Result<u64, String>,
    idle: &'a IdleResult,
    rtt_ms: &'a [f64],
    recovery: &'a Recovery,
}

/// "met" / "not met" / "n/a".
fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "NOT MET",
        None => "n/a",
    }
}

impl Report<'_> {
    /// The hashing cost attributed to a run of the firehose size.
    fn with_hash(&self, run: &FirehoseRun) -> FirehoseRun {
        FirehoseRun {
            hash_cpu_s: self.hash_cpu_s * run.bytes as f64 / self.size.firehose_bytes as f64,
            ..*run
        }
    }

    fn ours(&self) -> FirehoseRun {
        self.with_hash(self.ours)
    }

    fn bridge(&self) -> FirehoseRun {
        self.with_hash(self.bridge)
    }

    fn plugin(&self) -> Option<&FirehoseRun> {
        self.plugin.as_ref().ok()
    }

    fn p50(&self) -> Option<f64> {
        proc_stats::percentile(self.rtt_ms, 50.0)
    }

    fn p99(&self) -> Option<f64> {
        proc_stats::percentile(self.rtt_ms, 99.0)
    }

    fn vs_plugin(&self) -> Option<f64> {
        self.plugin()
            .map(|p| self.ours().mb_per_s() / p.mb_per_s().max(1e-9))
    }

    fn vs_bridge(&self) -> f64 {
        self.ours().mb_per_s() / self.bridge().mb_per_s().max(1e-9)
    }

    fn json(&self) -> Value {
        let ours = self.ours();
        let bridge = self.bridge();
        let plugin = self.plugin();
        let round = |v: f64, digits: i32| {
            let f = 10f64.powi(digits);
            (v * f).round() / f
        };
        json!({
            "ours_mb_per_s": round(ours.mb_per_s(), 2),
            "bridge_mb_per_s": round(bridge.mb_per_s(), 2),
            "plugin_mb_per_s": plugin.map(|p| round(p.mb_per_s(), 2)),
            "ours_cpu_s_per_100mb": round(ours.cpu_per_100mb(), 3),
            "bridge_cpu_s_per_100mb": round(bridge.cpu_per_100mb(), 3),
            "plugin_cpu_s_per_100mb": plugin.map(|p| round(p.cpu_per_100mb(), 3)),
            "ours_idle_session_bytes": self.idle.bytes_per_session().map(f64::round),
            "plugin_process_rss_bytes": self.plugin_rss.as_ref().ok(),
            "ours_rtt_p50_ms": self.p50().map(|v| round(v, 3)),
            "ours_rtt_p99_ms": self.p99().map(|v| round(v, 3)),
            "refused_messages": self.recovery.refused_messages,
            "agent_resends": self.recovery.agent_resends,
            "recovery_seconds": round(self.recovery.seconds, 2),
            "context": {
                "date_utc": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                "bytes_per_run": self.size.firehose_bytes,
                "ours_version": env!("CARGO_PKG_VERSION"),
                "git_head": self.source.head,
                "client_or_simulator_source_uncommitted": self.source.dirty,
                "bridge_version": BRIDGE_VERSION,
                "plugin_version": self.plugin_version,
                "plugin_not_measured": self.plugin.as_ref().err(),
                "plugin_rss_not_measured": self.plugin_rss.as_ref().err(),
                "seconds": {
                    "ours": round(ours.seconds, 3),
                    "bridge": round(bridge.seconds, 3),
                    "plugin": plugin.map(|p| round(p.seconds, 3)),
                },
                "sim_cpu_s_per_100mb": {
                    "ours": round(ours.sim_cpu_per_100mb(), 3),
                    "bridge": round(bridge.sim_cpu_per_100mb(), 3),
                    "plugin": plugin.map(|p| round(p.sim_cpu_per_100mb(), 3)),
                },
                "sim_core_share": {
                    "ours": round(ours.sim_core_share(), 2),
                    "bridge": round(bridge.sim_core_share(), 2),
                    "plugin": plugin.map(|p| round(p.sim_core_share(), 2)),
                },
                "cpu_s_per_100mb_with_hashing": {
                    "ours": round(ours.cpu_with_hashing_per_100mb(), 3),
                    "bridge": round(bridge.cpu_with_hashing_per_100mb(), 3),
                },
                "hash_cpu_s_per_100mb": round(self.hash_cpu_s * CPU_UNIT_BYTES / self.size.firehose_bytes as f64, 3),
                "idle_sessions_requested": self.idle.requested,
                "idle_sessions_opened": self.idle.opened,
                "idle_sessions_failure": self.idle.failure,
                "idle_open_seconds": round(self.idle.open_seconds, 2),
                "rss_before_idle_bytes": self.idle.rss_before,
                "rss_after_idle_bytes": self.idle.rss_after,
                "rtt_samples": self.rtt_ms.len(),
                "recovery": {
                    "bytes": self.recovery.bytes,
                    "bytes_arrived": self.recovery.arrived,
                    "socket_closed_after_frames": self.recovery.close_after_frames,
                    "sockets_closed": self.recovery.resumes,
                    "receive_window": {
                        "messages": SSM_RECEIVE_WINDOW_MESSAGES,
                        "bytes": SSM_RECEIVE_WINDOW_BYTES,
                        "early_messages": SSM_RECEIVE_EARLY_MESSAGES,
                        "early_bytes": SSM_RECEIVE_EARLY_BYTES,
                    },
                },
                "targets": {
                    "ours_vs_plugin_throughput": {"want": TARGET_VS_PLUGIN, "got": self.vs_plugin().map(|v| round(v, 2))},
                    "ours_vs_bridge_throughput": {"want": TARGET_VS_BRIDGE, "got": round(self.vs_bridge(), 2)},
                    "idle_session_bytes_max": TARGET_IDLE_BYTES,
                    "rtt_p99_ms_max": TARGET_RTT_P99_MS,
                },
            },
        })
    }

    fn print(&self) {
        let ours = self.ours();
        let bridge = self.bridge();
        let plugin = self.plugin();
        let opt = |v: Option<f64>, digits: usize| match v {
            Some(v) => format!("{v:.digits$}"),
            None => "null".to_string(),
        };
        println!();
        println!(
            "SSM data channel, {} bytes per firehose, one simulator process, {} cores",
            self.size.firehose_bytes,
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        );
        println!(
            "{:<34} {:>12} {:>16} {:>24}",
            "figure", "ours", "aws-ssm-bridge", "session-manager-plugin"
        );
        println!(
            "{:<34} {:>12.1} {:>16.1} {:>24}",
            "firehose MB/s",
            ours.mb_per_s(),
            bridge.mb_per_s(),
            opt(plugin.map(FirehoseRun::mb_per_s), 1)
        );
        println!(
            "{:<34} {:>12.3} {:>16.3} {:>24}",
            "CPU s per 100 MB",
            ours.cpu_per_100mb(),
            bridge.cpu_per_100mb(),
            opt(plugin.map(FirehoseRun::cpu_per_100mb), 3)
        );
        println!(
            "{:<34} {:>12.3} {:>16.3} {:>24}",
            "simulator CPU s per 100 MB",
            ours.sim_cpu_per_100mb(),
            bridge.sim_cpu_per_100mb(),
            opt(plugin.map(FirehoseRun::sim_cpu_per_100mb), 3)
        );
        println!(
            "{:<34} {:>12} {:>16} {:>24}",
            "memory per idle session (KiB)",
            opt(self.idle.bytes_per_session().map(|b| b / 1024.0), 1),
            "-",
            opt(self.plugin_rss.as_ref().ok().map(|b| *b as f64 / 1024.0), 0) + " (process RSS)"
        );
        println!(
            "{:<34} {:>12}",
            "keystroke RTT p50 / p99 (ms)",
            format!("{} / {}", opt(self.p50(), 3), opt(self.p99(), 3))
        );
        if let Err(why) = self.plugin {
            println!("plugin throughput not measured: {why}");
        }
        if let Err(why) = self.plugin_rss {
            println!("plugin RSS not measured: {why}");
        }
        println!();
        println!("targets (reported, never enforced):");
        println!(
            "  throughput >= {TARGET_VS_PLUGIN}x the plugin's      got {:>8}   {}",
            opt(self.vs_plugin(), 2) + "x",
            verdict(self.vs_plugin().map(|r| r >= TARGET_VS_PLUGIN))
        );
        println!(
            "  throughput >= {TARGET_VS_BRIDGE}x aws-ssm-bridge's  got {:>8}   {}",
            format!("{:.2}x", self.vs_bridge()),
            verdict(Some(self.vs_bridge() >= TARGET_VS_BRIDGE))
        );
        let per = self.idle.bytes_per_session();
        println!(
            "  idle session <= 64 KiB              got {:>8}   {}",
            opt(per.map(|b| b / 1024.0), 1) + " KiB",
            verdict(per.map(|b| b <= TARGET_IDLE_BYTES))
        );
        println!(
            "  keystroke RTT p99 <= {TARGET_RTT_P99_MS} ms          got {:>8}   {}",
            opt(self.p99(), 3) + " ms",
            verdict(self.p99().map(|v| v <= TARGET_RTT_P99_MS))
        );
        println!(
            "(CPU excludes the checker's SHA-256: {:.3} s per 100 MB, measured in this process)",
            self.hash_cpu_s * CPU_UNIT_BYTES / self.size.firehose_bytes as f64
        );
    }
}

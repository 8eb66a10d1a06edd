//! `nodeshell gateway`: builds the configuration, the Kubernetes client, the key cache and the
//! live side (wiring only), serves the API on one listener (with its limits) and `/metrics`,
//! `/healthz`, `/readyz` on the admin listener, and on SIGTERM/SIGINT stops accepting, closes
//! every live session cleanly, then exits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::aws::AwsClients;
use crate::gateway::access::Access;
use crate::gateway::access::auth::{Authenticator, KeyCache, keys};
use crate::gateway::access::cluster::Cluster;
use crate::gateway::access::identity::IdentityWatch;
use crate::gateway::access::sign_in::ConsoleLogin;
use crate::gateway::access::tickets::TicketBook;
use crate::gateway::audit::{AuditError, AuditSink};
use crate::gateway::config::{ConfigError, GatewayArgs, GatewayConfig};
use crate::gateway::connections::ApiListener;
use crate::gateway::handover::LiveSide;
use crate::gateway::heap;
use crate::gateway::http::{self, AppState};
use crate::gateway::lease::GatewayLease;
use crate::gateway::ledger::Recordings;
use crate::gateway::live::{LiveConfig, LiveSessions};
use crate::gateway::metrics::{GatewayMetrics, MetricsRegistry};
use crate::gateway::session_watch::SessionWatch;

/// Errors that stop the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration is incomplete or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The kubeconfig could not be read or used.
    #[error("loading kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// Neither a kubeconfig nor an in-cluster configuration was found.
    #[error(
        "no Kubernetes configuration found (set --kubeconfig or KUBECONFIG, or run in a pod): {0}"
    )]
    InferConfig(#[from] kube::config::InferConfigError),
    /// The Kubernetes client could not be built.
    #[error("Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    /// The HTTP client for the issuer could not be built.
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The listener could not bind or serve.
    #[error("serving on {addr}: {source}")]
    Serve {
        /// The address.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The audit file could not be opened for appending.
    #[error(
        "cannot open the audit file {path}: {source}; point --audit-file (NODESHELL_GATEWAY_AUDIT_FILE, auditFile) at a writable file, or unset it to write audit rows to stdout only"
    )]
    AuditFile {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: AuditError,
    },
    /// Signal handlers could not be installed.
    #[error("cannot wait for signals: {0}")]
    Signal(std::io::Error),
}

/// Builds the Kubernetes client from `--kubeconfig`, else KUBECONFIG / in-cluster.
pub async fn kube_client(config: &GatewayConfig) -> Result<Client, GatewayError> {
    crate::kube_client::client(config.kubeconfig.as_deref()).await
}

/// Builds the shared state from a resolved configuration, a client and a live side, with
/// an AWS client and a session watch of its own (tests; `run` shares both with the live
/// side).
pub fn app_state(
    config: GatewayConfig,
    kube: Client,
    live: LiveSide,
    metrics: GatewayMetrics,
) -> Result<AppState, GatewayError> {
    let watch = SessionWatch::new(kube.clone());
    app_state_shared(config, kube, live, metrics, AwsClients::new(), watch)
}

/// [`app_state`] whose opens call AWS through `aws`, the HTTP client the live side uses,
/// and wait for their decisions on `watch`, the live side's session watch.
pub fn app_state_shared(
    config: GatewayConfig,
    kube: Client,
    live: LiveSide,
    metrics: GatewayMetrics,
    aws: AwsClients,
    watch: SessionWatch,
) -> Result<AppState, GatewayError> {
    let http = keys::issuer_http_client(config.oidc.issuer_ca.as_ref())?;
    let cache = KeyCache::new(
        keys::http_fetcher(http, config.oidc.issuer_url.clone()),
        config.oidc.jwks_min_refetch,
    );
    let auth = Authenticator::new(&config.oidc, config.tiers.clone(), cache);
    let console = match &config.login {
        Some(login) => Some(ConsoleLogin::new(
            login.clone(),
            &config.oidc.issuer_url,
            &config.oidc.client_id,
            config.oidc.issuer_ca.as_ref(),
        )?),
        None => None,
    };
    let access = Access {
        console,
        identity: IdentityWatch::default(),
        tickets: TicketBook::new(config.ticket_ttl),
        minted: crate::gateway::access::minted::MintedStore::new(config.ticket_ttl),
        opens: crate::gateway::access::open::OpenLimits::new(config.opens_per_minute),
        config: Arc::new(config),
        auth,
        cluster: Cluster::new(kube, watch),
        aws,
    };
    Ok(AppState {
        access,
        live,
        metrics,
    })
}

/// Where audit rows go: always stdout (logs are on stderr), and appended to the configured
/// audit file when there is one (design §7).
pub fn audit_sink(config: &GatewayConfig) -> Result<AuditSink, AuditError> {
    AuditSink::new(true, config.live.audit_file.as_deref())
}

/// The live side a gateway runs with: [`LiveSessions`] with its metrics in the gateway's
/// registry and audit rows on stdout (and in the audit file, when configured), and the
/// transcript Secrets; its STS and SSM calls go through `aws`, its sessions follow `watch`.
/// Fails only when the audit file cannot be opened for appending.
pub fn live_side(
    config: &GatewayConfig,
    client: Client,
    metrics: &GatewayMetrics,
    aws: &AwsClients,
    watch: &SessionWatch,
) -> Result<LiveSide, AuditError> {
    let audit = audit_sink(config)?;
    let mut live_config = LiveConfig::new(config, client.clone(), audit.clone());
    live_config.aws = aws.clone();
    live_config.session_watch = watch.clone();
    metrics
        .registry
        .with(|registry| live_config.metrics.register(registry));
    Ok(LiveSide {
        shells: Arc::new(LiveSessions::new(live_config)),
        transcripts: Arc::new(Recordings::new(
            client,
            &config.namespace,
            audit,
            &config.cluster_name,
            &config.pod_name,
        )),
    })
}

/// Runs `nodeshell gateway` until SIGTERM or SIGINT.
pub async fn run(args: GatewayArgs) -> Result<(), GatewayError> {
    let config = GatewayConfig::load(&args)?;
    for warning in config.live.warnings() {
        tracing::warn!("{warning}");
    }
    let kube = kube_client(&config).await?;
    let registry = MetricsRegistry::new();
    let metrics = GatewayMetrics::new(registry);
    // One HTTP client (TLS roots, connection pool) for every person's STS and SSM calls.
    let aws = AwsClients::new();
    // One watch on every session: the opens' decisions and the live sessions' takeovers.
    let watch = SessionWatch::new(kube.clone());
    watch.start();
    let live = live_side(&config, kube.clone(), &metrics, &aws, &watch).map_err(|source| {
        GatewayError::AuditFile {
            path: config.live.audit_file.clone().unwrap_or_default(),
            source,
        }
    })?;
    let lease = GatewayLease::new(
        kube.clone(),
        &config.lease_namespace,
        &config.pod_name,
        &config.live,
    );
    let state = app_state_shared(config, kube, live, metrics, aws, watch)?;
    serve(state, Some(lease)).await
}

/// Binds `addr`, naming it in the error.
async fn bind(
    addr: std::net::SocketAddr,
) -> Result<(TcpListener, std::net::SocketAddr), GatewayError> {
    let serve_error = |source| GatewayError::Serve {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(serve_error)?;
    let bound = listener.local_addr().map_err(serve_error)?;
    Ok((listener, bound))
}

/// Serves `state` until a signal, then shuts the live side down. `lease`, this pod's Lease,
/// is renewed from before the first request until every session is closed, then deleted.
pub async fn serve(state: AppState, lease: Option<GatewayLease>) -> Result<(), GatewayError> {
    let (listener, bound) = bind(state.access.config.listen).await?;
    let (admin_listener, admin_bound) = bind(state.access.config.admin_listen).await?;
    // Load the issuer's keys before announcing the port, so the first request verifies; an
    // issuer that is down does not stop the start (the refresh loop keeps trying, /readyz
    // says not ready, the log says why).
    match tokio::time::timeout(Duration::from_secs(10), state.access.auth.keys().refresh()).await {
        Ok(Ok(keys)) => tracing::info!(keys = keys.len(), "loaded the issuer's keys"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot load the issuer's keys yet"),
        Err(_) => tracing::warn!("the issuer did not answer within 10 s; keys not loaded yet"),
    }
    let renewal = lease.as_ref().map(|l| {
        tracing::info!(lease = l.name(), "renewing this gateway's Lease");
        l.spawn()
    });
    let stop = CancellationToken::new();
    let background = spawn_background(&state, stop.clone());
    let api = ApiListener::new(
        listener,
        state.access.config.http.clone(),
        state.metrics.connections.clone(),
    );
    let server = tokio::spawn(api.serve(http::router(state.clone()), stop.clone()));
    let admin_app = http::admin_router(state.clone());
    let admin = tokio::spawn(async move { axum::serve(admin_listener, admin_app).await });
    // Plain lines (not log records) so supervisors and tests find the ports whatever the
    // log format. The admin line must not contain the API's `listening on`.
    eprintln!("admin on http://{admin_bound}");
    eprintln!("listening on http://{bound}");
    tracing::info!(
        address = %bound,
        admin = %admin_bound,
        pod = state.access.config.pod_name,
        issuer = state.access.config.oidc.issuer_url,
        "nodeshell gateway serving"
    );
    wait_for_signal().await?;
    tracing::info!("shutting down: closing live sessions");
    stop.cancel();
    // Returns once every session has closed and every browser connection has written its
    // `closed` frame; the API listener then waits for those connections to close as well.
    state.live.shells.shutdown().await;
    // Every session is closed: the Lease has nothing left to vouch for.
    if let Some(renewal) = renewal {
        renewal.abort();
    }
    if let Some(lease) = &lease {
        lease.release().await;
    }
    if tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10 s; exiting anyway");
    }
    admin.abort();
    for task in background {
        task.abort();
    }
    tracing::info!("nodeshell gateway stopped");
    Ok(())
}

/// Key refresh, ticket sweeping and the session gauges.
fn spawn_background(state: &AppState, stop: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    let auth = state.access.auth.clone();
    let every = state.access.config.oidc.jwks_refresh;
    let keys = tokio::spawn(auth.refresh_loop(every, Duration::from_secs(5)));
    let tickets = state.access.tickets.clone();
    let sweep_access = state.access.clone();
    let sweep_stop = stop.clone();
    let sweep = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = sweep_stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(10)) => {
                    tickets.sweep(Instant::now());
                    sweep_access.minted.sweep(Instant::now());
                    sweep_access.sweep_console();
                }
            }
        }
    });
    let identity_stop = stop.clone();
    let heap = spawn_heap_trims(state, stop.clone());
    let watch = state.access.cluster.watch().clone();
    let metrics = state.metrics.clone();
    let gauges = tokio::spawn(async move {
        loop {
            // From the gateway's one session watch, not a list of every session.
            if let Some(counts) = watch.phase_counts() {
                metrics.set_sessions_by_phase(&counts);
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    });
    let access = state.access.clone();
    let shells = state.live.shells.clone();
    // Polls often enough to honour a short identityCheckSeconds; each console session is
    // still checked at most once per interval.
    let tick = (access.config.identity_check.every / 2)
        .clamp(Duration::from_secs(1), Duration::from_secs(5));
    let identities = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = identity_stop.cancelled() => return,
                () = tokio::time::sleep(tick) => access.check_identities(shells.as_ref()).await,
            }
        }
    });
    vec![keys, sweep, gauges, identities, heap]
}

/// Hands freed memory back to the kernel once the set of live shells has changed and
/// settled (see `gateway::heap`).
fn spawn_heap_trims(state: &AppState, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let shells = state.live.shells.clone();
    let trims = state.metrics.heap_trims.clone();
    tokio::spawn(async move {
        let mut clock = heap::TrimClock::default();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(heap::TICK) => {}
            }
            if clock.tick(shells.running(), Instant::now()) {
                // Walks every arena under its lock: off the runtime's threads.
                let trim = tokio::task::spawn_blocking(nodeshell_heap_trim::release_free_heap);
                if trim.await.is_ok() {
                    trims.inc();
                }
            }
        }
    })
}

async fn wait_for_signal() -> Result<(), GatewayError> {
    crate::shutdown::stop_requested()
        .await
        .map_err(GatewayError::Signal)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::gateway::audit::{AuditActor, AuditRow, AuditSubject, VERB_CLOSE, VERB_OPEN};
    use crate::gateway::config::parse_file;
    use crate::gateway::config::tests::{CHILD, run_child_test};

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: GatewayArgs,
    }

    fn gateway_config(flags: &[&str], yaml: &str) -> GatewayConfig {
        let mut argv = vec![
            "gateway",
            "--oidc-issuer",
            "https://issuer.example",
            "--oidc-client-id",
            "nodeshell",
        ];
        argv.extend_from_slice(flags);
        let cli = Cli::try_parse_from(argv).expect("flags");
        GatewayConfig::resolve(&cli.args, parse_file(yaml).expect("yaml")).expect("config")
    }

    fn client() -> Client {
        Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap()
    }

    #[tokio::test]
    async fn file_and_flags_reach_the_live_config() {
        let config = gateway_config(
            &[
                "--heartbeat-interval",
                "4s",
                "--replay-buffer-bytes",
                "131072",
            ],
            "reattachGraceSeconds: 12\nheartbeatIntervalSeconds: 9\nstatusWriteThrottleSeconds: 2\n\
             transcriptFlushIntervalSeconds: 7\nshutdownTimeoutSeconds: 33\n\
             namespace: audit-ns\nclusterName: prod\n",
        );
        let live = LiveConfig::new(&config, client(), AuditSink::capture());
        assert_eq!(live.settings.reattach_grace, Duration::from_secs(12));
        assert_eq!(
            live.settings.heartbeat_interval,
            Duration::from_secs(4),
            "flag wins"
        );
        assert_eq!(live.settings.status_throttle, Duration::from_secs(2));
        assert_eq!(
            live.settings.transcript_flush_interval,
            Duration::from_secs(7)
        );
        assert_eq!(live.settings.replay_buffer_bytes, 128 * 1024, "flag");
        assert_eq!(live.settings.shutdown_timeout, Duration::from_secs(33));
        assert_eq!(live.namespace, "audit-ns");
        assert_eq!(live.cluster_name, "prod");
        assert_eq!(live.pod_name, config.pod_name);
    }

    /// The child half of [`environment_reaches_the_live_config`].
    #[tokio::test]
    async fn environment_child() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        let config = gateway_config(&[], "");
        let live = LiveConfig::new(&config, client(), AuditSink::capture());
        assert_eq!(live.settings.reattach_grace, Duration::from_secs(75));
        assert_eq!(
            live.settings.heartbeat_interval,
            Duration::from_millis(1500)
        );
        assert_eq!(live.settings.status_throttle, Duration::from_millis(200));
        assert_eq!(
            live.settings.transcript_flush_interval,
            Duration::from_secs(2)
        );
        assert_eq!(live.settings.replay_buffer_bytes, 512 * 1024);
        assert_eq!(live.settings.shutdown_timeout, Duration::from_secs(45));
    }

    #[test]
    fn environment_reaches_the_live_config() {
        run_child_test(
            "gateway::server::tests::environment_child",
            &[
                ("NODESHELL_GATEWAY_REATTACH_GRACE", "75s"),
                ("NODESHELL_GATEWAY_HEARTBEAT_INTERVAL", "1500ms"),
                ("NODESHELL_GATEWAY_STATUS_WRITE_THROTTLE", "200ms"),
                ("NODESHELL_GATEWAY_TRANSCRIPT_FLUSH_INTERVAL", "2s"),
                ("NODESHELL_GATEWAY_REPLAY_BUFFER_BYTES", "524288"),
                ("NODESHELL_GATEWAY_SHUTDOWN_TIMEOUT", "45s"),
            ],
        );
    }

    /// A fixed row (same id and time on every call, so the child's and the parent's agree).
    fn row(event: &'static str, id: &str) -> AuditRow {
        let session = crate::testing::session("shell-1", "alice", "default", 0, None);
        let actor = AuditActor::of(&session);
        let client = crate::gateway::audit::ClientInfo::default();
        let subject = AuditSubject {
            actor: &actor,
            cluster: "dev",
            gateway: "gw-0",
            client: &client,
            session: &session,
            ssm_session_id: Some("nodeshell-alice-0a1b"),
            assumed_role_arn: None,
        };
        let at = k8s_openapi::jiff::Timestamp::from_second(1_795_000_000).unwrap();
        let mut row = AuditRow::opened(subject, at);
        row.id = id.into();
        row.event = event;
        row
    }

    /// The child half of [`audit_file_gets_the_lines_stdout_gets`]: writes two rows through
    /// the sink the gateway builds from its configuration.
    #[tokio::test]
    async fn audit_child() {
        let Some(path) = std::env::var_os("NODESHELL_TEST_AUDIT_FILE") else {
            return;
        };
        let config = gateway_config(&["--audit-file", path.to_str().unwrap()], "");
        let live = LiveConfig::new(&config, client(), audit_sink(&config).unwrap());
        live.audit.emit(&row(VERB_OPEN, "row-1")).unwrap();
        live.audit.emit(&row(VERB_CLOSE, "row-2")).unwrap();
    }

    #[test]
    fn audit_file_gets_the_lines_stdout_gets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        // Rows already in the file stay: the sink appends.
        std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
        let stdout = run_child_test(
            "gateway::server::tests::audit_child",
            &[("NODESHELL_TEST_AUDIT_FILE", path.to_str().unwrap())],
        );
        // libtest prints `test <name> ... ` before the test's own output, on the same line.
        let on_stdout: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.find("{\"schema\":").map(|at| &l[at..]))
            .collect();
        let expected = [
            row(VERB_OPEN, "row-1").to_json_line(),
            row(VERB_CLOSE, "row-2").to_json_line(),
        ];
        assert_eq!(on_stdout, expected, "stdout:\n{stdout}");
        let file = std::fs::read_to_string(&path).unwrap();
        let in_file: Vec<&str> = file.lines().collect();
        assert_eq!(in_file[0], "{\"earlier\":true}");
        assert_eq!(
            in_file[1..],
            on_stdout[..],
            "the file has the rows stdout has"
        );
        assert!(file.ends_with('\n'));
    }

    #[test]
    fn an_audit_file_that_cannot_be_opened_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("audit.jsonl");
        let config = gateway_config(&["--audit-file", missing.to_str().unwrap()], "");
        assert!(audit_sink(&config).is_err());
    }
}

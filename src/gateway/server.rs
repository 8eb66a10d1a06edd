//! `nodeshell gateway`: builds the configuration, the Kubernetes client, the key cache and the
//! live side, serves the API on one listener, and on SIGTERM/SIGINT stops accepting, closes
//! every live session cleanly, then exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::{Listener, ListenerExt};
use kube::Client;
use kube::api::{Api, ListParams};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::NodeShellSession;
use crate::gateway::audit::AuditError;
use crate::gateway::auth::{Authenticator, KeyCache, keys};
use crate::gateway::config::{ConfigError, GatewayArgs, GatewayConfig};
use crate::gateway::metrics::{GatewayMetrics, MetricsRegistry};
use crate::gateway::routes::{self, AppState};
use crate::gateway::runtime::Runtime;
use crate::gateway::tickets::TicketBook;

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
    crate::cluster_client::client(config.kubeconfig.as_deref()).await
}

/// Builds the shared state from a resolved configuration, a client and a live side.
pub fn app_state(
    config: GatewayConfig,
    kube: Client,
    runtime: Runtime,
    metrics: GatewayMetrics,
) -> Result<AppState, GatewayError> {
    let http = reqwest::Client::builder()
        .user_agent(concat!("nodeshell-gateway/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let cache = KeyCache::new(
        keys::http_fetcher(http, config.oidc.issuer_url.clone()),
        config.oidc.jwks_min_refetch,
    );
    let auth = Authenticator::new(&config.oidc, config.tiers.clone(), cache);
    Ok(AppState {
        tickets: TicketBook::new(config.ticket_ttl),
        config: Arc::new(config),
        auth,
        kube,
        runtime,
        metrics,
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
    let runtime =
        crate::gateway::live_runtime(&config, kube.clone(), metrics.clone()).map_err(|source| {
            GatewayError::AuditFile {
                path: config.live.audit_file.clone().unwrap_or_default(),
                source,
            }
        })?;
    let state = app_state(config, kube, runtime, metrics)?;
    serve(state).await
}

/// Serves `state` until a signal, then shuts the live side down.
pub async fn serve(state: AppState) -> Result<(), GatewayError> {
    let addr = state.config.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Serve {
            addr: addr.to_string(),
            source,
        })?;
    let bound = listener
        .local_addr()
        .map_err(|source| GatewayError::Serve {
            addr: addr.to_string(),
            source,
        })?;
    // Load the issuer's keys before announcing the port, so the first request verifies; an
    // issuer that is down does not stop the start (the refresh loop keeps trying, /readyz
    // says why).
    match tokio::time::timeout(Duration::from_secs(10), state.auth.keys().refresh()).await {
        Ok(Ok(keys)) => tracing::info!(keys = keys.len(), "loaded the issuer's keys"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot load the issuer's keys yet"),
        Err(_) => tracing::warn!("the issuer did not answer within 10 s; keys not loaded yet"),
    }
    let stop = CancellationToken::new();
    let background = spawn_background(&state, stop.clone());
    let app = routes::router(state.clone());
    let shutdown = stop.clone();
    let listener = no_delay(listener);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    });
    // A plain line (not a log record) so supervisors and tests find the port whatever the
    // log format.
    eprintln!("listening on http://{bound}");
    tracing::info!(
        address = %bound,
        pod = state.config.pod_name,
        issuer = state.config.oidc.issuer_url,
        "nodeshell gateway serving"
    );
    wait_for_signal().await?;
    tracing::info!("shutting down: closing live sessions");
    stop.cancel();
    // Returns once every session has closed and every browser connection has written its
    // `closed` frame. Those connections are not the server's to wait for (axum spawns their
    // tasks on upgrade), so the server's graceful shutdown alone would let the process exit
    // with those frames still queued.
    state.runtime.live.shutdown().await;
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(Ok(Err(source))) => {
            return Err(GatewayError::Serve {
                addr: bound.to_string(),
                source,
            });
        }
        Ok(_) => {}
        Err(_) => tracing::warn!("connections still open after 10 s; exiting anyway"),
    }
    for task in background {
        task.abort();
    }
    tracing::info!("nodeshell gateway stopped");
    Ok(())
}

/// Accepts connections with TCP_NODELAY set. A keystroke and its echo are a few bytes each:
/// with Nagle's algorithm on, the echo waits for the browser's delayed ACK of the previous
/// segment (~40 ms per key), which makes typing through the gateway feel sluggish.
fn no_delay(listener: TcpListener) -> impl Listener<Io = tokio::net::TcpStream, Addr = SocketAddr> {
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
        }
    })
}

/// Key refresh, ticket sweeping and the session gauges.
fn spawn_background(state: &AppState, stop: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    let auth = state.auth.clone();
    let every = state.config.oidc.jwks_refresh;
    let keys = tokio::spawn(auth.refresh_loop(every, Duration::from_secs(5)));
    let tickets = state.tickets.clone();
    let sweep_stop = stop.clone();
    let sweep = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = sweep_stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(10)) => tickets.sweep(Instant::now()),
            }
        }
    });
    let kube = state.kube.clone();
    let metrics = state.metrics.clone();
    let gauges = tokio::spawn(async move {
        let api: Api<NodeShellSession> = Api::all(kube);
        loop {
            if let Ok(list) = api.list(&ListParams::default()).await {
                metrics.set_sessions_by_phase(&routes::phase_counts(&list.items));
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
    });
    vec![keys, sweep, gauges]
}

async fn wait_for_signal() -> Result<(), GatewayError> {
    crate::shutdown::stop_requested()
        .await
        .map_err(GatewayError::Signal)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_no_delay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = no_delay(listener);
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, peer) = listener.accept().await;
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(
            accepted.nodelay().unwrap(),
            "TCP_NODELAY on the accepted socket"
        );
    }
}

//! How a component reaches its Kubernetes API: an explicit kubeconfig file when one is
//! given, else what kube infers (`KUBECONFIG`, `~/.kube/config`, or the in-cluster service
//! account). The client is kube's own stack with one change: its connection pool keeps at
//! most [`IDLE_CONNECTIONS`] idle connections to the apiserver (and, instead of kube's
//! tracing spans, only its error lines: a server error or a failed connection).

use std::path::Path;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::Client;
use kube::client::retry::RetryPolicy;
use kube::client::{ClientBuilder, ConfigExt};
use kube::config::{InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError};
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

/// Idle apiserver connections the client keeps. kube's own pool keeps every connection a
/// burst opened (a gateway opening 200 shells at once made about 100, each with its TLS
/// state and read buffer, idle for 90 s); beyond this many the pool closes a connection as
/// it is handed back. Watches hold their own connections while they stream; 16 idle ones
/// still carry a steady 16 calls in flight without new TLS handshakes.
pub const IDLE_CONNECTIONS: usize = 16;

/// A client for `kubeconfig` (its current context), or for the inferred configuration.
pub async fn client<E>(kubeconfig: Option<&Path>) -> Result<Client, E>
where
    E: From<KubeconfigError> + From<InferConfigError> + From<kube::Error>,
{
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(pooled(config)?)
}

/// kube's default stack (TLS, connect/read/write timeouts, base URI, retries of server
/// errors, authentication, extra headers) over a pool with at most [`IDLE_CONNECTIONS`]
/// idle connections. A configuration with a proxy or an exec credential plugin (which may
/// hand out a client certificate with an expiry) takes kube's own builder unchanged.
fn pooled(config: kube::Config) -> Result<Client, kube::Error> {
    if config.proxy_url.is_some() || config.auth_info.exec.is_some() {
        return Client::try_from(config);
    }
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Only fails when another thread installed one meanwhile, which is as good.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let mut connector =
        hyper_timeout::TimeoutConnector::new(config.rustls_https_connector_with_connector(http)?);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Builder::new(TokioExecutor::new())
            .pool_max_idle_per_host(IDLE_CONNECTIONS)
            .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        // What kube's own trace layer logged at error level: a server error or a failed
        // connection (the caller gets the error too, often retried, and may say less).
        .map_response(|response: http::Response<hyper::body::Incoming>| {
            if response.status().is_server_error() {
                tracing::error!(status = %response.status(), "apiserver call failed");
            }
            response
        })
        .map_err(|e: hyper_util::client::legacy::Error| {
            tracing::error!(error = %e, "apiserver call failed");
            BoxError::from(e)
        })
        .service(http);
    Ok(ClientBuilder::new(service, config.default_namespace).build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn a_burst_of_calls_leaves_a_bounded_number_of_idle_connections() {
        const BURST: usize = 3 * IDLE_CONNECTIONS;
        let (url, open) = crate::testing::server_answering_bursts(
            BURST,
            "application/json",
            r#"{"major":"1","minor":"33"}"#,
        )
        .await;
        let client = pooled(kube::Config::new(url.parse().unwrap())).unwrap();
        let calls = (0..BURST).map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.apiserver_version().await.unwrap() })
        });
        for call in calls.collect::<Vec<_>>() {
            assert_eq!(call.await.unwrap().minor, "33");
        }
        // Every call of the burst had its own connection; the pool keeps only its bound of
        // them (the rest close as they come back), not all of them for the idle timeout.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while open.load(Ordering::SeqCst) > IDLE_CONNECTIONS
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(open.load(Ordering::SeqCst), IDLE_CONNECTIONS);
    }
}

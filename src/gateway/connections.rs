//! The API listener's connections: at most `http.maxConnections` open at once (a WebSocket
//! keeps its slot until it closes; a connection beyond the limit is closed as soon as it is
//! accepted, so a flood is refused instead of piling up), each served over HTTP/1.1 with the
//! header read timeout (which also bounds the idle time between two requests), and all asked
//! to finish when the gateway stops.

use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::gateway::config::HttpLimits;
use crate::gateway::warn_gate::WarnGate;

/// Least time between two warnings about refused connections (each one is counted).
const REFUSAL_WARN_EVERY: Duration = Duration::from_secs(60);

/// The connection counts the API listener reports.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    /// Connections open now (WebSockets included).
    pub open: Gauge,
    /// Connections closed on accept because `maxConnections` were open.
    pub refused: Counter,
}

/// The API listener with its limits.
#[derive(Debug)]
pub struct ApiListener {
    listener: TcpListener,
    limits: HttpLimits,
    slots: Arc<Semaphore>,
    metrics: ConnectionMetrics,
}

// === impl ApiListener ===

impl ApiListener {
    /// Serves `listener` with `limits`, counting into `metrics`.
    pub fn new(listener: TcpListener, limits: HttpLimits, metrics: ConnectionMetrics) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            listener,
            limits,
            metrics,
        }
    }

    /// Serves `app` until `stop` is cancelled, then asks every connection to finish after
    /// its current request and waits until all of them (WebSockets included) have closed.
    pub async fn serve(self, app: Router, stop: CancellationToken) {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout);
        let refusals = WarnGate::new(REFUSAL_WARN_EVERY);
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                self.metrics.refused.inc();
                if refusals.due(Instant::now()) {
                    tracing::warn!(
                        limit = self.limits.max_connections,
                        refused_total = self.metrics.refused.get(),
                        "refusing connections: http.maxConnections are open (warned at most once a minute)"
                    );
                }
                drop(tcp);
                continue;
            };
            no_delay(&tcp);
            let io = TokioIo::new(CountedStream::new(tcp, slot, self.metrics.open.clone()));
            // The peer's address for handlers (axum's ConnectInfo extractor): the audit rows.
            let service = tower::ServiceExt::map_request(
                app.clone(),
                move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    request
                },
            );
            let conn = builder
                .serve_connection(io, TowerToHyperService::new(service))
                .with_upgrades();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut conn = pin!(conn);
                let result = tokio::select! {
                    result = conn.as_mut() => result,
                    () = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        // Every slot back means every connection, upgraded ones included, has closed.
        let all = u32::try_from(self.limits.max_connections).unwrap_or(u32::MAX);
        let _ = self.slots.acquire_many(all).await;
    }
}

/// Sets TCP_NODELAY. A keystroke and its echo are a few bytes each: with Nagle's algorithm
/// on, the echo waits for the browser's delayed ACK of the previous segment (~40 ms per key),
/// which makes typing through the gateway feel sluggish.
fn no_delay(tcp: &TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
    }
}

/// A slot among `maxConnections`, given back (and the gauge lowered) when the connection,
/// or the WebSocket it was upgraded to, is dropped.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// An accepted connection holding its slot: hyper hands the stream itself to an upgraded
/// WebSocket, so the slot lives exactly as long as the socket.
#[derive(Debug)]
struct CountedStream {
    tcp: TcpStream,
    _slot: Slot,
}

impl CountedStream {
    fn new(tcp: TcpStream, permit: OwnedSemaphorePermit, open: Gauge) -> Self {
        open.inc();
        Self {
            tcp,
            _slot: Slot {
                _permit: permit,
                open,
            },
        }
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn started(limits: HttpLimits) -> (std::net::SocketAddr, ConnectionMetrics) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = ConnectionMetrics::default();
        let api = ApiListener::new(listener, limits, metrics.clone());
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(api.serve(app, CancellationToken::new()));
        (addr, metrics)
    }

    async fn get(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn accepted_connections_have_no_delay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (accepted, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        no_delay(&accepted);
        assert!(
            accepted.nodelay().unwrap(),
            "TCP_NODELAY on the accepted socket"
        );
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_and_counted() {
        let limits = HttpLimits {
            max_connections: 2,
            ..HttpLimits::default()
        };
        let (addr, metrics) = started(limits).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            assert!(get(&mut s).await.starts_with("HTTP/1.1 200"));
            held.push(s);
        }
        assert_eq!(metrics.open.get(), 2);
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
            .await
            .expect("the refused connection is closed at once")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
        assert_eq!(metrics.refused.get(), 1);
        assert_eq!(metrics.open.get(), 2);
        drop(held.pop());
        // The slot comes back once the server sees the close.
        for _ in 0..100 {
            if metrics.open.get() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(metrics.open.get(), 1);
        let mut again = TcpStream::connect(addr).await.unwrap();
        assert!(get(&mut again).await.starts_with("HTTP/1.1 200"));
    }
}

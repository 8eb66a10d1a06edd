//! A TCP forwarder the test can sever: every connection open at that moment is cut (the
//! client sees its socket drop, as after a network change), new ones are accepted as before.

use std::sync::{Arc, OnceLock};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A forwarder on `127.0.0.1:<port>` to an upstream set once with [`SeverableProxy::forward_to`].
pub struct SeverableProxy {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    upstream: Arc<OnceLock<String>>,
    generation: watch::Sender<u64>,
}

impl SeverableProxy {
    /// Listens now; forwards once an upstream is set.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let upstream: Arc<OnceLock<String>> = Arc::default();
        let (generation, rx) = watch::channel(0u64);
        let target = upstream.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let Some(up) = target.get().cloned() else {
                    continue;
                };
                let mut cut = rx.clone();
                let born = *cut.borrow();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(up.as_str()).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|g| *g != born) => {}
                    }
                });
            }
        });
        Ok(Self {
            addr,
            upstream,
            generation,
        })
    }

    /// Where connections go (`host:port`).
    pub fn forward_to(&self, upstream: &str) {
        let _ = self.upstream.set(upstream.to_string());
    }

    /// Cuts every connection open now.
    pub fn sever(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

//! The one way every long-running role (controller, gateway, simulator, `nodeshell dev`)
//! learns it should stop: SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C at a terminal).

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Ctrl-C and SIGTERM, installed once and awaited as often as needed.
pub struct StopSignals {
    terminate: Signal,
}

impl StopSignals {
    /// Installs the SIGTERM handler (SIGINT is handled by [`tokio::signal::ctrl_c`]).
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for the next SIGINT or SIGTERM, whichever comes first.
    pub async fn next(&mut self) -> std::io::Result<()> {
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = self.terminate.recv() => Ok(()),
        }
    }
}

/// Waits for one SIGINT or SIGTERM.
pub async fn stop_requested() -> std::io::Result<()> {
    StopSignals::install()?.next().await
}

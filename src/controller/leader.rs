//! Leadership: one controller replica writes, the others keep their caches warm and wait.
//! Behind a small trait so the reconciler does not depend on how the election is run.

use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use std::future::Future;
use std::pin::Pin;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Whether this replica may write, and a way to wait until that changes.
pub trait Leadership: Send {
    /// True while this replica holds the lease.
    fn is_leader(&self) -> bool;
    /// Resolves when leadership may have changed (acquired or lost).
    fn changed(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// Gives the lease up (on shutdown), so a standby takes over without waiting for expiry.
    fn release(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Leadership through a coordination.k8s.io Lease, run by kube-lease-manager.
pub struct LeaseLeadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
}

// === impl LeaseLeadership ===

impl LeaseLeadership {
    /// Joins the election for `lease` in `namespace` as `identity`. The holder renews every
    /// `duration - grace` seconds; a standby takes over `duration` seconds after the last renewal.
    pub async fn start(
        client: kube::Client,
        namespace: &str,
        lease: &str,
        identity: &str,
        duration_seconds: u64,
        grace_seconds: u64,
        field_manager: &str,
    ) -> Result<Self, kube_lease_manager::LeaseManagerError> {
        // LeaseParams panics on these; clamp rather than crash on odd flags.
        let duration = duration_seconds.max(2);
        let grace = grace_seconds.clamp(1, duration - 1);
        let params = LeaseParams::new(identity, duration, grace)
            .with_field_manager(format!("{field_manager}-lease-{identity}"));
        let manager = LeaseManagerBuilder::new(client, lease)
            .with_namespace(namespace)
            .with_parameters(params)
            .build()
            .await?;
        let (state, task) = manager.watch().await;
        Ok(Self { state, task })
    }
}

impl Leadership for LeaseLeadership {
    fn is_leader(&self) -> bool {
        *self.state.borrow()
    }

    fn changed(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if self.state.changed().await.is_err() {
                // The election task ended; never resolve again rather than spin.
                std::future::pending::<()>().await;
            }
        })
    }

    fn release(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let Self { state, task } = *self;
            // Dropping the last receiver makes the manager release the lease and return.
            drop(state);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        })
    }
}

/// Leadership that is always held: for a single replica and for tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct AlwaysLeader;

impl Leadership for AlwaysLeader {
    fn is_leader(&self) -> bool {
        true
    }

    fn changed(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::pending())
    }

    fn release(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async {})
    }
}

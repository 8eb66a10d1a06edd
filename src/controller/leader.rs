//! Leadership: one controller replica writes, the others keep their caches warm and wait.
//! Behind a small trait so the reconciler does not depend on how the election is run.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
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
    /// Confirms from the apiserver, not from local state, that this replica still holds an
    /// unexpired lease. Admission calls it before deciding, so a leader that was paused past
    /// its lease (and replaced) stops instead of writing.
    fn confirm(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
    /// Gives the lease up (on shutdown), so a standby takes over without waiting for expiry.
    fn release(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Leadership through a coordination.k8s.io Lease, run by kube-lease-manager.
pub struct LeaseLeadership {
    leases: Api<Lease>,
    lease: String,
    identity: String,
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
        let leases = Api::namespaced(client.clone(), namespace);
        let manager = LeaseManagerBuilder::new(client, lease)
            .with_namespace(namespace)
            .with_parameters(params)
            .build()
            .await?;
        let (state, task) = manager.watch().await;
        Ok(Self {
            leases,
            lease: lease.to_string(),
            identity: identity.to_string(),
            state,
            task,
        })
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

    fn confirm(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            if !self.is_leader() {
                return false;
            }
            match self.leases.get_opt(&self.lease).await {
                Ok(Some(lease)) => holds(&lease, &self.identity, Timestamp::now()),
                _ => false,
            }
        })
    }

    fn release(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let Self { state, task, .. } = *self;
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

    fn confirm(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async { true })
    }

    fn release(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async {})
    }
}

/// True when `lease` is held by `identity` and, by its own renewTime and duration, has not
/// expired at `now`.
pub fn holds(lease: &Lease, identity: &str, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    let (Some(holder), Some(renewed), Some(duration)) = (
        &spec.holder_identity,
        &spec.renew_time,
        spec.lease_duration_seconds,
    ) else {
        return false;
    };
    holder == identity
        && renewed.0.as_millisecond() + i64::from(duration) * 1000 > now.as_millisecond()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    #[test]
    fn a_lease_is_held_until_it_expires() {
        let renewed = Timestamp::from_second(1_800_000_000).expect("ts");
        let lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some("a".into()),
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(3),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).expect("ts");
        assert!(holds(&lease, "a", at(2)));
        assert!(!holds(&lease, "a", at(3)));
        assert!(!holds(&lease, "b", at(1)));
        assert!(!holds(&Lease::default(), "a", at(0)));
    }
}

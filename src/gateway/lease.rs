//! This gateway pod's liveness: one coordination.k8s.io Lease, `nodeshell-gateway-<pod>` in
//! the operator's namespace, held by the pod and renewed every third of its duration with
//! server-side apply. The controller closes the sessions of a pod whose Lease is gone or was
//! not renewed within its duration (GatewayLost), so a session's status carries no heartbeat.
//! On a clean shutdown the Lease is deleted once the sessions are closed.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::api::{GATEWAY_LEASE_LABEL, gateway_lease_name};
use crate::gateway::FIELD_MANAGER;
use crate::gateway::config::LiveSettings;

/// Wait before renewing again after a failed renewal (shorter than a renewal interval, so
/// one failure does not cost a whole third of the Lease).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The Lease this pod renews, as applied at `now`: held by `pod`, valid `duration_seconds`
/// after `now`, acquired at `acquired` (the process start).
pub fn lease_object(
    name: &str,
    pod: &str,
    duration_seconds: i32,
    acquired: Timestamp,
    now: Timestamp,
) -> Lease {
    let mut lease = Lease::default();
    lease.metadata.name = Some(name.to_string());
    lease.metadata.labels = Some(
        [(GATEWAY_LEASE_LABEL.to_string(), "gateway".to_string())]
            .into_iter()
            .collect(),
    );
    lease.spec = Some(k8s_openapi::api::coordination::v1::LeaseSpec {
        holder_identity: Some(pod.to_string()),
        lease_duration_seconds: Some(duration_seconds),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(now)),
        ..Default::default()
    });
    lease
}

/// This pod's Lease: renewed by [`GatewayLease::spawn`], deleted by [`GatewayLease::release`].
#[derive(Clone)]
pub struct GatewayLease {
    api: Api<Lease>,
    name: String,
    pod: String,
    duration_seconds: i32,
    renew_every: Duration,
    acquired: Timestamp,
}

// === impl GatewayLease ===

impl GatewayLease {
    /// The Lease of gateway pod `pod` in `namespace`, with the duration of `settings`.
    pub fn new(client: Client, namespace: &str, pod: &str, settings: &LiveSettings) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: gateway_lease_name(pod),
            pod: pod.to_string(),
            duration_seconds: i32::try_from(settings.lease_duration.as_secs()).unwrap_or(i32::MAX),
            renew_every: settings.lease_renew_interval(),
            acquired: Timestamp::now(),
        }
    }

    /// The Lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Applies the Lease with a fresh renewTime.
    pub async fn renew(&self) -> Result<(), kube::Error> {
        let mut lease = lease_object(
            &self.name,
            &self.pod,
            self.duration_seconds,
            self.acquired,
            Timestamp::now(),
        );
        let patch = serde_json::json!({
            "apiVersion": Lease::api_version(&()),
            "kind": Lease::kind(&()),
            "metadata": std::mem::take(&mut lease.metadata),
            "spec": lease.spec,
        });
        self.api
            .patch(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map(|_| ())
    }

    /// Renews the Lease now and then every third of its duration until the task is aborted;
    /// a failed renewal is logged and tried again after a second.
    pub fn spawn(&self) -> JoinHandle<()> {
        let lease = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                let wait = match lease.renew().await {
                    Ok(()) => {
                        if failing {
                            info!(lease = %lease.name, "gateway Lease renewed again");
                        }
                        failing = false;
                        lease.renew_every
                    }
                    Err(e) => {
                        if !failing {
                            warn!(
                                lease = %lease.name, error = %e,
                                "cannot renew this gateway's Lease; if it stays unrenewed for its duration the controller closes this gateway's sessions as GatewayLost (the gateway needs create/patch on leases in its namespace, see docs/setup.md)"
                            );
                        }
                        failing = true;
                        RETRY_AFTER_FAILURE.min(lease.renew_every)
                    }
                };
                tokio::time::sleep(wait).await;
            }
        })
    }

    /// Deletes the Lease (after a clean shutdown closed every session), so nothing of this
    /// pod is left to expire.
    pub async fn release(&self) {
        match self.api.delete(&self.name, &DeleteParams::default()).await {
            Ok(_) => info!(lease = %self.name, "gateway Lease deleted"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => debug!(lease = %self.name, error = %e, "deleting the gateway Lease failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_names_the_pod_and_its_duration() {
        let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).expect("ts");
        let lease = lease_object("nodeshell-gateway-gw-0", "gw-0", 30, at(0), at(10));
        let spec = lease.spec.clone().expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("gw-0"));
        assert_eq!(spec.lease_duration_seconds, Some(30));
        assert_eq!(spec.renew_time, Some(MicroTime(at(10))));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(
            lease
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(GATEWAY_LEASE_LABEL))
                .map(String::as_str),
            Some("gateway"),
            "the controller watches only labelled Leases"
        );
        assert_eq!(gateway_lease_name("gw-0"), "nodeshell-gateway-gw-0");
    }

    #[test]
    fn renewed_every_third_of_its_duration() {
        let settings = LiveSettings {
            lease_duration: Duration::from_secs(30),
            ..LiveSettings::default()
        };
        assert_eq!(settings.lease_renew_interval(), Duration::from_secs(10));
    }
}

//! `nodeshell controller`: admits Pending sessions under each policy's caps, expires sessions
//! (attach timeout, lost gateways, idle and max-duration backstops, stuck closings), deletes
//! ended sessions after retention, and keeps NodeShellPolicy status.
//!
//! Every replica keeps watching sessions and policies; only the holder of a coordination
//! Lease writes. Decisions are pure functions ([`admission`], [`expiry`], [`policy_status`],
//! [`status`]); [`engine`] runs one pass (reads, calls them, writes) and [`runner`] wires the
//! process around it (caches, leader election, the loop, shutdown, the admin server).

pub mod admission;
pub mod changes;
pub mod engine;
pub mod expiry;
pub mod leader;
pub mod ledger;
pub mod ledgers;
pub mod metrics;
pub mod policy_status;
pub mod runner;
pub mod status;

pub use admission::{AdmissionDecision, SessionAdmission, admission_order, pending_in_order};
pub use expiry::{Action, NextAction, Timeouts, next_action};
pub use leader::{AlwaysLeader, Leadership, LeaseLeadership};
pub use policy_status::desired_policy_status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::duration::parse_duration;

/// Field manager of every write the controller makes (server-side apply).
pub const FIELD_MANAGER: &str = "nodeshell-controller";

/// Errors of `nodeshell controller`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be read or used.
    #[error("loading kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// Neither a kubeconfig nor an in-cluster configuration was found.
    #[error(
        "no Kubernetes configuration found (set --kubeconfig or KUBECONFIG, or run in a pod): {0}"
    )]
    InferConfig(#[from] kube::config::InferConfigError),
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The leader election could not start or failed.
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    /// The admin server could not bind or serve.
    #[error("admin server on {addr}: {source}")]
    Admin {
        /// The address of `--metrics-addr`.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A watch stream ended before the caches synced.
    #[error("the {0} cache stopped before it synced")]
    CacheStopped(&'static str),
}

// === impl Error ===

impl Error {
    /// Short, stable label for the `errors` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kubeconfig(_) => "kubeconfig",
            Self::InferConfig(_) => "infer_config",
            Self::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Self::Kube(kube::Error::Api(s)) if s.code == 404 => "not_found",
            Self::Kube(kube::Error::Api(s)) if s.code == 403 => "forbidden",
            Self::Kube(_) => "kube",
            Self::Lease(_) => "lease",
            Self::Admin { .. } => "admin_server",
            Self::CacheStopped(_) => "cache_stopped",
        }
    }
}

/// Flags of `nodeshell controller`. Durations accept `500ms`, `30s`, `5m`, `1h`, `7d` or bare
/// seconds.
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {
    /// Kubeconfig file (default: KUBECONFIG, then the in-cluster service account).
    #[arg(long, env = "NODESHELL_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Namespace of the leader Lease and of the gateways' Leases (and of transcript Secrets
    /// unless `--transcript-namespace` names another).
    #[arg(long, env = "NODESHELL_NAMESPACE", default_value = "nodeshell-system")]
    pub namespace: String,

    /// Namespace of transcript Secrets, whose retention deletes them (default: `--namespace`).
    /// The gateway's `namespace` must name the same one.
    #[arg(long, env = "NODESHELL_TRANSCRIPT_NAMESPACE")]
    pub transcript_namespace: Option<String>,

    /// Name of the coordination.k8s.io Lease the replicas elect a leader with.
    #[arg(
        long,
        env = "NODESHELL_LEASE_NAME",
        default_value = "nodeshell-controller"
    )]
    pub lease_name: String,

    /// This replica's identity in the election (default: POD_NAME, else a random name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// How long the lease is valid after the last renewal; a standby takes over this long
    /// after the leader stops renewing (whole seconds, at least 2).
    #[arg(long, env = "NODESHELL_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// The leader renews this long before the lease would expire (whole seconds, at least 1).
    #[arg(long, env = "NODESHELL_LEASE_RENEW_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub lease_renew_grace: Duration,

    /// Run without leader election (a single replica only).
    #[arg(long, env = "NODESHELL_NO_LEADER_ELECTION")]
    pub no_leader_election: bool,

    /// An Admitted session no browser attached to within this is closed (AttachTimeout).
    #[arg(long, env = "NODESHELL_ATTACH_TIMEOUT", default_value = "2m", value_parser = parse_duration)]
    pub attach_timeout: Duration,

    /// A session whose gateway pod has no Lease (`nodeshell-gateway-<pod>`) is closed
    /// (GatewayLost) this long after it started (or after the per-session `heartbeatAt` of a
    /// gateway older than the Lease). A gateway with a Lease is judged by the Lease's duration.
    #[arg(long, env = "NODESHELL_HEARTBEAT_TIMEOUT", default_value = "1m", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,

    /// The controller's idle and max-duration cuts come this long after the policy's limits,
    /// leaving the precise cut to the gateway.
    #[arg(long, env = "NODESHELL_BACKSTOP_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub backstop_grace: Duration,

    /// A Closing session no gateway finishes within this is marked Closed.
    #[arg(long, env = "NODESHELL_CLOSING_GRACE", default_value = "1m", value_parser = parse_duration)]
    pub closing_grace: Duration,

    /// Retention of ended sessions whose policy no longer exists.
    #[arg(long, env = "NODESHELL_DEFAULT_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub default_retention: Duration,

    /// Full pass over every session at least this often, even without changes.
    #[arg(long, env = "NODESHELL_RESYNC_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub resync_interval: Duration,

    /// Address of the admin server (`/metrics`, `/healthz`, `/readyz`). Port 0 picks a free
    /// port (logged). The Helm chart binds all interfaces so the kubelet and Prometheus reach it.
    #[arg(long, env = "NODESHELL_METRICS_ADDR", default_value = "127.0.0.1:9090")]
    pub metrics_addr: SocketAddr,
}

// === impl ControllerArgs ===

impl ControllerArgs {
    /// The expiry clocks these flags set.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            attach: self.attach_timeout,
            heartbeat: self.heartbeat_timeout,
            backstop_grace: self.backstop_grace,
            activity_lag: crate::api::ACTIVITY_STATUS_LAG,
            closing_grace: self.closing_grace,
            default_retention: self.default_retention,
        }
    }

    /// Where transcript Secrets live: `--transcript-namespace`, else `--namespace`.
    pub fn transcript_namespace_or_default(&self) -> &str {
        self.transcript_namespace
            .as_deref()
            .filter(|ns| !ns.is_empty())
            .unwrap_or(&self.namespace)
    }
}

/// Runs `nodeshell controller` until SIGINT or SIGTERM.
pub async fn run(args: ControllerArgs) -> Result<(), Error> {
    runner::run(args).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_have_working_defaults() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: ControllerArgs,
        }
        let cli = Cli::try_parse_from([
            "controller",
            "--attach-timeout",
            "3s",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .expect("parse");
        assert_eq!(cli.args.timeouts().attach, Duration::from_secs(3));
        assert_eq!(cli.args.lease_duration, Duration::from_secs(15));
        assert_eq!(cli.args.metrics_addr.port(), 0);
    }
}

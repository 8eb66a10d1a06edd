//! Prometheus metrics of the controller and the admin HTTP server that serves them with the
//! health endpoints.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Labels of the decision counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// admitted, rejected, closing, closed, deleted.
    pub outcome: String,
    /// The session reason (empty for admitted and deleted).
    pub reason: String,
}

/// Labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The error's `metric_label()`.
    pub error: String,
}

/// Labels of per-policy gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// Policy name.
    pub policy: String,
}

/// Labels of the admission step histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    /// nodes (reading the sessions' nodes), ledger (deciding and the compare-and-swap),
    /// ledger_write (the compare-and-swap write alone), status (the parallel status writes).
    pub step: String,
}

/// A histogram of one admission step.
fn step_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// Every metric the controller exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Decisions written, by outcome and reason.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Errors, by kind.
    pub errors: Family<ErrorLabels, Counter>,
    /// Seconds from a session's creation to its admission decision being written.
    pub admission_latency: Histogram,
    /// Seconds one reconcile pass takes.
    pub pass_duration: Histogram,
    /// Seconds each step of an admission pass takes (where a click's time goes).
    pub admission_step: Family<StepLabels, Histogram, fn() -> Histogram>,
    /// 1 while this replica holds the lease.
    pub leader: Gauge,
    /// Sessions waiting for admission, as last seen.
    pub pending_sessions: Gauge,
    /// Live sessions per policy, as last seen.
    pub live_sessions: Family<PolicyLabels, Gauge>,
    /// Session objects in the cache.
    pub session_objects: Gauge,
    ready: AtomicBool,
}

// === impl Metrics ===

impl Metrics {
    /// Registers every metric under the `nodeshell_controller` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("nodeshell_controller");
        let decisions = Family::<DecisionLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let admission_latency = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        let pass_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let admission_step =
            Family::<StepLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                step_histogram,
            );
        let leader = Gauge::default();
        let pending_sessions = Gauge::default();
        let live_sessions = Family::<PolicyLabels, Gauge>::default();
        let session_objects = Gauge::default();
        registry.register(
            "decisions",
            "Session decisions written, by outcome and reason",
            decisions.clone(),
        );
        registry.register(
            "errors",
            "Errors while reconciling, by kind",
            errors.clone(),
        );
        registry.register(
            "admission_latency_seconds",
            "Seconds from session creation to the admission decision being written",
            admission_latency.clone(),
        );
        registry.register(
            "pass_duration_seconds",
            "Seconds one reconcile pass takes",
            pass_duration.clone(),
        );
        registry.register(
            "admission_step_seconds",
            "Seconds each step of an admission pass takes: nodes, ledger (ledger_write: its write alone), status",
            admission_step.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        registry.register_collector(Box::new(LeaderOnly {
            leader: leader.clone(),
            pending_sessions: pending_sessions.clone(),
            live_sessions: live_sessions.clone(),
            session_objects: session_objects.clone(),
        }));
        crate::process_metrics::register_build_info(&mut registry);
        Self {
            registry,
            decisions,
            errors,
            admission_latency,
            pass_duration,
            admission_step,
            leader,
            pending_sessions,
            live_sessions,
            session_objects,
            ready: AtomicBool::new(false),
        }
    }

    /// Counts one written decision.
    pub fn decision(&self, outcome: &str, reason: &str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                outcome: outcome.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Records how long one admission step took.
    pub fn step(&self, step: &str, started: std::time::Instant) {
        self.admission_step
            .get_or_create(&StepLabels { step: step.into() })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Counts one error.
    pub fn error(&self, label: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                error: label.into(),
            })
            .inc();
    }

    /// Marks the caches as synced (what `/readyz` reports).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// True once the caches are synced.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The OpenMetrics text exposition, with `build_info` and the process metrics.
    pub fn encode(&self) -> String {
        crate::process_metrics::encode_with_process(&self.registry)
    }
}

/// The cluster-wide gauges (`pending_sessions`, `live_sessions`, `session_objects`), exported
/// only while this replica leads: a standby's copies are stale, and `sum()` over every
/// replica would count each session once per replica.
#[derive(Debug)]
struct LeaderOnly {
    leader: Gauge,
    pending_sessions: Gauge,
    live_sessions: Family<PolicyLabels, Gauge>,
    session_objects: Gauge,
}

impl Collector for LeaderOnly {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if self.leader.get() != 1 {
            return Ok(());
        }
        let gauges: [(&str, &str, &dyn EncodeMetric); 3] = [
            (
                "pending_sessions",
                "Sessions waiting for admission (leader only)",
                &self.pending_sessions,
            ),
            (
                "live_sessions",
                "Live sessions (Admitted, Active, Closing) per policy (leader only)",
                &self.live_sessions,
            ),
            (
                "session_objects",
                "NodeShellSession objects in the cache (leader only)",
                &self.session_objects,
            ),
        ];
        for (name, help, metric) in gauges {
            let metric_encoder =
                encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(metric_encoder)?;
        }
        Ok(())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Binds the admin server (`/metrics`, `/healthz`, `/readyz`) and returns the bound address
/// (useful with port 0) and the serving future.
pub async fn admin_server(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let metrics_route = {
        let metrics = metrics.clone();
        move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
                    .into_response()
            }
        }
    };
    let ready_route = move || {
        let metrics = metrics.clone();
        async move {
            if metrics.is_ready() {
                (StatusCode::OK, "ok")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
            }
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(metrics_route))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready_route));
    Ok((bound, async move { axum::serve(listener, app).await }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_with_prefix() {
        let m = Metrics::new();
        m.decision("admitted", "");
        m.error("kube");
        let text = m.encode();
        assert!(
            text.contains(
                "nodeshell_controller_decisions_total{outcome=\"admitted\",reason=\"\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("nodeshell_controller_errors_total{error=\"kube\"} 1"));
        assert!(text.contains("nodeshell_controller_admission_latency_seconds_bucket"));
    }

    #[test]
    fn cluster_wide_gauges_come_from_the_leader_only() {
        let m = Metrics::new();
        m.pending_sessions.set(3);
        m.session_objects.set(7);
        m.live_sessions
            .get_or_create(&PolicyLabels {
                policy: "default".into(),
            })
            .set(2);
        let standby = m.encode();
        for name in ["pending_sessions", "live_sessions", "session_objects"] {
            assert!(
                !standby.contains(&format!("nodeshell_controller_{name}")),
                "{name} on a standby:\n{standby}"
            );
        }
        assert!(
            standby.contains("nodeshell_controller_leader 0"),
            "{standby}"
        );
        m.leader.set(1);
        let leader = m.encode();
        for line in [
            "nodeshell_controller_pending_sessions 3",
            "nodeshell_controller_session_objects 7",
            "nodeshell_controller_live_sessions{policy=\"default\"} 2",
            "# TYPE nodeshell_controller_live_sessions gauge",
        ] {
            assert!(leader.lines().any(|l| l == line), "{line}:\n{leader}");
        }
    }
}

//! The gateway's Prometheus registry and the control side's metrics. The live side registers
//! its own metrics in the same [`MetricsRegistry`] (one `/metrics` for the whole gateway).

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::gateway::connections::ConnectionMetrics;

/// A registry shared by both sides of the gateway, every name prefixed `nodeshell_gateway_`
/// (the process metrics, `process_*`, are added unprefixed when encoding).
#[derive(Clone, Debug)]
pub struct MetricsRegistry {
    inner: Arc<Mutex<Registry>>,
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        Self::new()
    }
}

// === impl MetricsRegistry ===

impl MetricsRegistry {
    /// An empty registry with the gateway prefix.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new({
                let mut registry = Registry::with_prefix("nodeshell_gateway");
                crate::process_metrics::register_build_info(&mut registry);
                registry
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a metric (counters get `_total` appended by the encoder).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.lock().register(name, help, metric);
    }

    /// Runs `f` with the registry itself (for code that registers into a `&mut Registry`).
    pub fn with<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.lock())
    }

    /// The OpenMetrics text exposition, with `build_info` and the process metrics.
    pub fn encode(&self) -> String {
        crate::process_metrics::encode_with_process(&self.lock())
    }
}

/// Label: an open attempt's outcome (`admitted` or the error code).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `admitted` or `E_…`.
    pub outcome: String,
}

/// Label: a session phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Pending, Admitted, Active, Closing, Closed, Rejected.
    pub phase: String,
}

/// The control side's metrics. Closes by reason and terminal bytes are counted by the live
/// side (`nodeshell_gateway_live_ends_total`, `…_live_bytes_in_total`, `…_live_bytes_out_total`)
/// in the same registry.
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    /// The shared registry.
    pub registry: MetricsRegistry,
    /// `POST …/shell` attempts by outcome.
    pub opens: Family<OutcomeLabels, Counter>,
    /// Session objects by phase, as last listed.
    pub sessions: Family<PhaseLabels, Gauge>,
    /// Seconds from `POST …/shell` to the answer.
    pub open_latency: Histogram,
    /// The API listener's open and refused connections.
    pub connections: ConnectionMetrics,
    /// Times the gateway asked the allocator to give freed memory back (`gateway::heap`).
    pub heap_trims: Counter,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new(MetricsRegistry::new())
    }
}

// === impl GatewayMetrics ===

impl GatewayMetrics {
    /// Registers the control side's metrics in `registry`.
    pub fn new(registry: MetricsRegistry) -> Self {
        let opens = Family::<OutcomeLabels, Counter>::default();
        let sessions = Family::<PhaseLabels, Gauge>::default();
        let open_latency = Histogram::new(exponential_buckets(0.01, 2.0, 12));
        registry.register("opens", "Shell open attempts by outcome", opens.clone());
        registry.register(
            "sessions",
            "NodeShellSession objects by phase",
            sessions.clone(),
        );
        registry.register(
            "open_latency_seconds",
            "Seconds from a shell request to its answer (admission included)",
            open_latency.clone(),
        );
        let connections = ConnectionMetrics::default();
        registry.register(
            "http_connections",
            "Connections open on the API listener (WebSockets included)",
            connections.open.clone(),
        );
        registry.register(
            "http_connections_refused",
            "Connections closed on accept because http.maxConnections were open",
            connections.refused.clone(),
        );
        let heap_trims = Counter::default();
        registry.register(
            "heap_trims",
            "Times freed memory was handed back to the kernel after the live shells changed",
            heap_trims.clone(),
        );
        Self {
            registry,
            opens,
            sessions,
            open_latency,
            connections,
            heap_trims,
        }
    }

    /// Counts one open attempt.
    pub fn open(&self, outcome: &str) {
        self.opens
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Replaces the per-phase session gauges.
    pub fn set_sessions_by_phase(&self, counts: &[(String, i64)]) {
        self.sessions.clear();
        for (phase, n) in counts {
            self.sessions
                .get_or_create(&PhaseLabels {
                    phase: phase.clone(),
                })
                .set(*n);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn control_and_live_metrics_share_one_exposition() {
        let m = GatewayMetrics::default();
        m.open("admitted");
        m.open("E_CAP_USER");
        m.set_sessions_by_phase(&[("Active".into(), 2)]);
        m.open_latency.observe(0.2);
        let extra = Counter::<u64>::default();
        m.registry
            .register("live_extra", "a live-side metric", extra.clone());
        extra.inc();
        let text = m.registry.encode();
        for needle in [
            "nodeshell_gateway_opens_total{outcome=\"admitted\"} 1",
            "nodeshell_gateway_opens_total{outcome=\"E_CAP_USER\"} 1",
            "nodeshell_gateway_sessions{phase=\"Active\"} 2",
            "nodeshell_gateway_open_latency_seconds_count 1",
            "nodeshell_gateway_live_extra_total 1",
            "nodeshell_gateway_http_connections 0",
            "nodeshell_gateway_http_connections_refused_total 0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}

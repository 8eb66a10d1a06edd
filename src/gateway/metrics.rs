//! The gateway's Prometheus registry and the control side's metrics. The live side registers
//! its own metrics in the same [`MetricsRegistry`] (one `/metrics` for the whole gateway).

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

/// A registry shared by both sides of the gateway, every name prefixed `nodeshell_gateway_`.
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
            inner: Arc::new(Mutex::new(Registry::with_prefix("nodeshell_gateway"))),
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

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.lock()).is_err() {
            out.clear();
        }
        out
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

/// Label: why a session closed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The session reason.
    pub reason: String,
}

/// Label: traffic direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `in` (browser → node) or `out` (node → browser).
    pub direction: String,
}

/// The gateway's own metrics.
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    /// The shared registry.
    pub registry: MetricsRegistry,
    /// `POST …/shell` attempts by outcome.
    pub opens: Family<OutcomeLabels, Counter>,
    /// Sessions closed, by reason (the live side counts these).
    pub closes: Family<ReasonLabels, Counter>,
    /// Terminal bytes, by direction (the live side counts these).
    pub bytes: Family<DirectionLabels, Counter>,
    /// Session objects by phase, as last listed.
    pub sessions: Family<PhaseLabels, Gauge>,
    /// Seconds from `POST …/shell` to the answer.
    pub open_latency: Histogram,
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
        let closes = Family::<ReasonLabels, Counter>::default();
        let bytes = Family::<DirectionLabels, Counter>::default();
        let sessions = Family::<PhaseLabels, Gauge>::default();
        let open_latency = Histogram::new(exponential_buckets(0.01, 2.0, 12));
        registry.register("opens", "Shell open attempts by outcome", opens.clone());
        registry.register("closes", "Sessions closed by reason", closes.clone());
        registry.register("bytes", "Terminal bytes by direction", bytes.clone());
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
        Self {
            registry,
            opens,
            closes,
            bytes,
            sessions,
            open_latency,
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

    /// Counts one closed session.
    pub fn closed(&self, reason: &str) {
        self.closes
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// Adds terminal bytes in (browser → node) and out.
    pub fn traffic(&self, bytes_in: u64, bytes_out: u64) {
        for (direction, n) in [("in", bytes_in), ("out", bytes_out)] {
            self.bytes
                .get_or_create(&DirectionLabels {
                    direction: direction.into(),
                })
                .inc_by(n);
        }
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
        m.closed("UserExit");
        m.traffic(3, 5);
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
            "nodeshell_gateway_closes_total{reason=\"UserExit\"} 1",
            "nodeshell_gateway_bytes_total{direction=\"out\"} 5",
            "nodeshell_gateway_sessions{phase=\"Active\"} 2",
            "nodeshell_gateway_open_latency_seconds_count 1",
            "nodeshell_gateway_live_extra_total 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}

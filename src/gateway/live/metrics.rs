//! Metrics of the live side: sessions running and attached, starts and ends, traffic,
//! storage and status-write failures, and the output held back for browsers.

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::ssm::HeldBytes;
use crate::ssm::channel::ChannelStats;

/// Label: an outcome or a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LiveLabels {
    /// `success`, an `E_…` code, or a session reason.
    pub value: String,
}

/// Counters and gauges of running sessions. Cheap to clone (shared inside).
#[derive(Clone, Debug, Default)]
pub struct LiveMetrics {
    /// Sessions running on this gateway.
    pub live: Gauge,
    /// Sessions with a browser attached.
    pub attached: Gauge,
    /// Start attempts by outcome (`success` or the error code).
    pub starts: Family<LiveLabels, Counter>,
    /// Ended sessions by reason.
    pub ends: Family<LiveLabels, Counter>,
    /// Bytes typed (browser → node).
    pub bytes_in: Counter,
    /// Bytes printed (node → browser).
    pub bytes_out: Counter,
    /// Reattaches accepted.
    pub reattaches: Counter,
    /// Transcript writes that failed.
    pub transcript_failures: Counter,
    /// Compressed transcript bytes written to Secrets (each write of a chunk, rewrites of
    /// the open chunk included): the etcd write load the recording makes.
    pub transcript_bytes_stored: Counter,
    /// Uploads to a policy's S3 transcript sink that failed or found the queue full.
    pub s3_sink_failures: Counter,
    /// Status writes that failed (retried).
    pub status_failures: Counter,
    /// Session Events dropped: refused, unanswered, or beyond the creates in flight.
    pub event_failures: Counter,
    /// Output bytes held for browsers across sessions: replay rings, chunks waiting for
    /// ring room, and what each data channel holds (receive window, queued chunks).
    pub output_held: HeldBytes,
    /// Sessions whose output reading is paused because their browser is behind.
    pub output_paused: Gauge,
    /// What the data channels of this gateway's sessions refused: frames whose payload
    /// digest did not match (dropped unacked, recovered by the agent's resend).
    pub ssm: ChannelStats,
}

impl LiveMetrics {
    /// Registers every metric under `live_…` names in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "live_sessions",
            "Sessions running on this gateway",
            self.live.clone(),
        );
        registry.register(
            "live_attached",
            "Running sessions with a browser attached",
            self.attached.clone(),
        );
        registry.register(
            "live_starts",
            "Shell start attempts by outcome",
            self.starts.clone(),
        );
        registry.register("live_ends", "Ended sessions by reason", self.ends.clone());
        registry.register(
            "live_bytes_in",
            "Terminal bytes typed (browser to node)",
            self.bytes_in.clone(),
        );
        registry.register(
            "live_bytes_out",
            "Terminal bytes printed (node to browser)",
            self.bytes_out.clone(),
        );
        registry.register(
            "live_reattaches",
            "Browser reattaches accepted",
            self.reattaches.clone(),
        );
        registry.register(
            "live_transcript_failures",
            "Transcript writes that failed",
            self.transcript_failures.clone(),
        );
        registry.register(
            "live_transcript_bytes_stored",
            "Compressed transcript bytes written to Secrets (every chunk write, rewrites of the open chunk included)",
            self.transcript_bytes_stored.clone(),
        );
        registry.register(
            "live_s3_sink_failures",
            "Uploads to a policy's S3 transcript sink that failed or found the upload queue full",
            self.s3_sink_failures.clone(),
        );
        registry.register(
            "live_status_failures",
            "Session status writes that failed and were retried",
            self.status_failures.clone(),
        );
        registry.register(
            "live_event_failures",
            "Session Events dropped: refused or unanswered by the Kubernetes API, or beyond the creates in flight",
            self.event_failures.clone(),
        );
        registry.register(
            "output_held_bytes",
            "Output bytes held for browsers across sessions (replay rings, waiting chunks, data channel windows and queues)",
            self.output_held.clone(),
        );
        registry.register(
            "output_paused_sessions",
            "Sessions whose output reading is paused because their browser is behind",
            self.output_paused.clone(),
        );
        registry.register(
            "ssm_digest_mismatches",
            "SSM data-channel frames dropped unacked because their payload digest did not match",
            DigestMismatches(self.ssm.clone()),
        );
    }

    pub(crate) fn start(&self, outcome: &str) {
        self.starts
            .get_or_create(&LiveLabels {
                value: outcome.to_string(),
            })
            .inc();
    }

    pub(crate) fn end(&self, reason: &str) {
        self.ends
            .get_or_create(&LiveLabels {
                value: reason.to_string(),
            })
            .inc();
    }
}

/// [`HeldBytes`] read at scrape time: the gauge is the live total, never a stale copy.
impl TypedMetric for HeldBytes {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for HeldBytes {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&(self.get() as u64))
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// The digest-mismatch count of [`ChannelStats`], read at scrape time as a counter.
#[derive(Clone, Debug)]
struct DigestMismatches(ChannelStats);

impl TypedMetric for DigestMismatches {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for DigestMismatches {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
            &self.0.digest_mismatches(),
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// One session's mark in [`LiveMetrics::output_paused`]; dropping it takes the mark off.
#[derive(Debug)]
pub(crate) struct PausedMark {
    gauge: Gauge,
    paused: bool,
}

impl PausedMark {
    pub(crate) fn new(gauge: &Gauge) -> Self {
        Self {
            gauge: gauge.clone(),
            paused: false,
        }
    }

    /// Marks the session paused or not, counting each change once.
    pub(crate) fn set(&mut self, paused: bool) {
        if paused != self.paused {
            if paused {
                self.gauge.inc();
            } else {
                self.gauge.dec();
            }
            self.paused = paused;
        }
    }
}

impl Drop for PausedMark {
    fn drop(&mut self) {
        self.set(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_register_and_encode() {
        let m = LiveMetrics::default();
        let mut registry = Registry::with_prefix("nodeshell_gateway");
        m.register(&mut registry);
        m.start("success");
        m.end("UserExit");
        m.bytes_out.inc_by(5);
        let mut held = m.output_held.share();
        held.set(1234);
        let mut paused = PausedMark::new(&m.output_paused);
        paused.set(true);
        paused.set(true);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains("nodeshell_gateway_live_starts_total{value=\"success\"} 1"));
        assert!(text.contains("nodeshell_gateway_live_ends_total{value=\"UserExit\"} 1"));
        assert!(text.contains("nodeshell_gateway_live_bytes_out_total 5"));
        assert!(
            text.contains("nodeshell_gateway_output_held_bytes 1234"),
            "{text}"
        );
        assert!(
            text.contains("nodeshell_gateway_output_paused_sessions 1"),
            "{text}"
        );
        assert!(
            text.contains("nodeshell_gateway_ssm_digest_mismatches_total 0"),
            "{text}"
        );
        // a channel sharing the gateway's stats counts into the metric; other refusals do not
        let channel_stats = m.ssm.clone();
        channel_stats.count_refusal(&crate::ssm::FrameError::DigestMismatch);
        channel_stats.count_refusal(&crate::ssm::FrameError::MissingCreatedDate);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("nodeshell_gateway_ssm_digest_mismatches_total 1"),
            "{text}"
        );
        drop((held, paused));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("nodeshell_gateway_output_held_bytes 0"),
            "{text}"
        );
        assert!(
            text.contains("nodeshell_gateway_output_paused_sessions 0"),
            "{text}"
        );
    }
}

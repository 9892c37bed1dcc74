//! Prometheus metrics, served as text at `GET /metrics`.
//!
//! Labels stay low-cardinality: operations outside the known set are
//! `other`, statuses are codes, model names are capped at
//! [`MAX_MODEL_LABELS`] distinct values (then `other`), policy names come
//! from configuration. No path, id or request content is ever a label.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::pipeline::shipper::status::TargetStatus;
use crate::pipeline::PipelineStats;

/// Distinct model names kept as label values before the rest become
/// `other`.
pub const MAX_MODEL_LABELS: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// Shared with the call (see [`operation_label`]), so a lookup copies
    /// no text.
    pub operation: Arc<str>,
    pub status: u16,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
    pub severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub model: String,
    pub kind: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the proxy exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub calls: Family<CallLabels, Counter>,
    pub call_duration: HistogramFamily<OperationLabels>,
    pub ttfb: HistogramFamily<OperationLabels>,
    /// Time the proxy itself adds to a call: reading the request prefix and
    /// building the upstream request, and turning upstream's response head
    /// into the app's.
    pub added_latency: Histogram,
    pub upstream_errors: Family<KindLabels, Counter>,
    pub violations: Family<PolicyLabels, Counter>,
    pub tokens: Family<TokenLabels, Counter>,
    pub store_bytes: Gauge,
    /// Calls refused before forwarding, by the proxy error's code.
    pub refused_calls: Family<KindLabels, Counter>,
    /// Open connections per listener (`kind`: `proxy`, `admin`).
    pub open_connections: Family<KindLabels, Gauge>,
    /// Times a listener reached its connection cap and paused accepting
    /// until a connection closed, per listener.
    pub listener_cap_reached: Family<KindLabels, Counter>,
    /// Refused admin calls, each counted once (however they are collapsed
    /// into AUTHENTICATION events).
    pub admin_refusals: Counter,
    /// Each shipping target's progress, read at scrape time and by
    /// `/api/stats` (empty when shipping is off).
    shipping: Vec<Arc<TargetStatus>>,
    models: Mutex<HashSet<String>>,
}

/// Reads the shipping targets' progress at scrape time.
#[derive(Debug)]
struct ShippingCollector {
    targets: Vec<Arc<TargetStatus>>,
}

/// Reads the pipeline's counters at scrape time.
#[derive(Debug)]
struct PipelineCollector {
    stats: Arc<PipelineStats>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~8 min.
    Histogram::new(exponential_buckets(0.0005, 2.0, 20))
}

fn overhead_histogram() -> Histogram {
    // 10 µs to ~80 ms.
    Histogram::new(exponential_buckets(0.00001, 2.0, 14))
}

// === impl Metrics ===

impl Metrics {
    pub fn new(pipeline: Arc<PipelineStats>) -> Self {
        let mut registry = Registry::with_prefix("llm_audit_proxy");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "LLM calls by operation, status and outcome",
            calls.clone(),
        );
        let call_duration: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "call_duration_seconds",
            "Time from the call's arrival to the end of its response body",
            call_duration.clone(),
        );
        let ttfb: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "time_to_first_byte_seconds",
            "Time from the call's arrival to upstream's first response byte",
            ttfb.clone(),
        );
        let added_latency = overhead_histogram();
        registry.register(
            "added_latency_seconds",
            "Time the proxy adds to a call, not spent waiting on upstream",
            added_latency.clone(),
        );
        let upstream_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream failures: unreachable, timeout, stream_error, stream_idle_timeout",
            upstream_errors.clone(),
        );
        let violations = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "policy_violations",
            "Compliance policy violations by policy and severity",
            violations.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens reported by upstream, by model and kind (prompt, completion)",
            tokens.clone(),
        );
        let store_bytes = Gauge::default();
        registry.register(
            "store_bytes",
            "Bytes the audit store occupies on disk",
            store_bytes.clone(),
        );
        let refused_calls = Family::<KindLabels, Counter>::default();
        registry.register(
            "refused_calls",
            "Calls refused before forwarding: method_not_allowed, invalid_path",
            refused_calls.clone(),
        );
        let open_connections = Family::<KindLabels, Gauge>::default();
        registry.register(
            "open_connections",
            "Open client connections per listener (proxy, admin)",
            open_connections.clone(),
        );
        let listener_cap_reached = Family::<KindLabels, Counter>::default();
        registry.register(
            "listener_cap_reached",
            "Times a listener reached its connection cap and paused accepting",
            listener_cap_reached.clone(),
        );
        let admin_refusals = Counter::default();
        registry.register(
            "admin_refusals",
            "Admin API calls refused for a missing, wrong or under-scoped token",
            admin_refusals.clone(),
        );
        registry.register(
            "store_write_seconds",
            "Time to append one batch of events to the store",
            pipeline.write_seconds.clone(),
        );
        registry.register_collector(Box::new(PipelineCollector { stats: pipeline }));
        Self {
            registry,
            calls,
            call_duration,
            ttfb,
            added_latency,
            upstream_errors,
            violations,
            tokens,
            store_bytes,
            refused_calls,
            open_connections,
            listener_cap_reached,
            admin_refusals,
            shipping: Vec::new(),
            models: Mutex::new(HashSet::new()),
        }
    }

    /// Adds the shipping targets' series (lag, age of the oldest unshipped
    /// event, last success, errors, events shipped), labelled by target.
    pub fn register_shipping(&mut self, targets: Vec<Arc<TargetStatus>>) {
        if targets.is_empty() {
            return;
        }
        self.shipping = targets.clone();
        self.registry
            .register_collector(Box::new(ShippingCollector { targets }));
    }

    /// The shipping targets' progress, for `/api/stats`.
    pub fn shipping(&self) -> &[Arc<TargetStatus>] {
        &self.shipping
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts a call refused before forwarding; `code` is the proxy
    /// error's fixed code.
    pub fn refused_call(&self, code: &str) {
        self.refused_calls
            .get_or_create(&KindLabels { kind: code.into() })
            .inc();
    }

    /// The label for `model`: itself while fewer than [`MAX_MODEL_LABELS`]
    /// names have been seen, then `other`.
    pub fn model_label(&self, model: &str) -> String {
        let Ok(mut seen) = self.models.lock() else {
            return "other".to_owned();
        };
        if seen.contains(model) {
            return model.to_owned();
        }
        if seen.len() < MAX_MODEL_LABELS {
            seen.insert(model.to_owned());
            return model.to_owned();
        }
        "other".to_owned()
    }
}

/// The operation as a label: the known names, else `other`.
pub fn operation_label(operation: &str) -> Arc<str> {
    // Every call takes a label: the usual ones are shared, not allocated.
    static SHARED: std::sync::OnceLock<Vec<Arc<str>>> = std::sync::OnceLock::new();
    let label = if operation.contains('.') && !operation.contains(' ') {
        operation
    } else {
        "other"
    };
    let shared = SHARED.get_or_init(|| {
        crate::capture::operation::known_names()
            .chain(["other"])
            .map(Arc::from)
            .collect()
    });
    shared
        .iter()
        .find(|s| ***s == *label)
        .cloned()
        .unwrap_or_else(|| label.into())
}

// === impl PipelineCollector ===

impl Collector for PipelineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.stats;
        let counters = [
            ("events_offered", "Events offered to the queue", &s.offered),
            (
                "events_dropped",
                "Events dropped: the queue was full, over its byte budget or closed",
                &s.dropped,
            ),
            (
                "events_dropped_over_budget",
                "Of events_dropped: over queue.max_bytes",
                &s.dropped_over_budget,
            ),
            (
                "events_dropped_after_close",
                "Of events_dropped: offered after the queue closed at shutdown",
                &s.dropped_after_close,
            ),
            (
                "record_build_failures",
                "Call records lost because building them failed",
                &s.build_failures,
            ),
            (
                "events_filtered",
                "Events below audit.log_level, or auditing off",
                &s.filtered,
            ),
            ("events_written", "Events appended to the store", &s.written),
            (
                "store_write_failures",
                "Failed batch appends (each retried)",
                &s.write_failures,
            ),
            (
                "events_lost",
                "Events in batches the store never took",
                &s.lost,
            ),
            (
                "events_held",
                "Events that found no queue room and were held for it, up to queue.full_wait_ms",
                &s.events_held,
            ),
            (
                "queue_waits",
                "Calls held at admission until the queue had room",
                &s.queue_waits,
            ),
            (
                "queue_wait_timeouts",
                "Of queue_waits: calls held for all of queue.full_wait_ms",
                &s.queue_wait_timeouts,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let waited = ConstCounter::new(s.queue_wait_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let metric = encoder.encode_descriptor(
            "queue_wait_seconds",
            "Time calls were held at admission while the queue was full",
            None,
            waited.metric_type(),
        )?;
        waited.encode(metric)?;
        let depth = ConstGauge::new(s.queue_depth.load(Ordering::Relaxed) as i64);
        let metric = encoder.encode_descriptor(
            "queue_depth",
            "Events waiting for the writer",
            None,
            depth.metric_type(),
        )?;
        depth.encode(metric)?;
        let held = ConstGauge::new(s.held_events.load(Ordering::Relaxed) as i64);
        let metric = encoder.encode_descriptor(
            "queue_held_events",
            "Events of call records waiting for queue room (see events_held)",
            None,
            held.metric_type(),
        )?;
        held.encode(metric)?;
        let bytes = ConstGauge::new(s.queue_bytes.load(Ordering::Relaxed) as i64);
        let metric = encoder.encode_descriptor(
            "queue_bytes",
            "Bytes the queued events hold (queue.max_bytes bounds it)",
            None,
            bytes.metric_type(),
        )?;
        bytes.encode(metric)?;
        Ok(())
    }
}

// === impl ShippingCollector ===

impl Collector for ShippingCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        type Read = fn(&TargetStatus) -> i64;
        let gauges: [(&str, &str, Read); 3] = [
            (
                "shipping_lag_events",
                "Events in the local store not yet acknowledged by the target",
                |t| i64::try_from(t.lag_events()).unwrap_or(i64::MAX),
            ),
            (
                "shipping_oldest_unshipped_age_seconds",
                "Age of the oldest event not yet acknowledged by the target (0 when none)",
                |t| i64::try_from(t.oldest_unshipped_age_secs()).unwrap_or(i64::MAX),
            ),
            (
                "shipping_last_success_timestamp_seconds",
                "Unix time of the last batch the target acknowledged (0 before the first)",
                TargetStatus::last_success_unix,
            ),
        ];
        for (name, help, read) in gauges {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for t in &self.targets {
                let labels = TargetLabels {
                    target: t.name().to_owned(),
                };
                ConstGauge::new(read(t)).encode(metric.encode_family(&labels)?)?;
            }
        }
        type Count = fn(&TargetStatus) -> u64;
        let counters: [(&str, &str, Count); 3] = [
            (
                "shipping_events_lost",
                "Events removed from the local store before the target got them",
                TargetStatus::lost,
            ),
            (
                "shipping_errors",
                "Failed tries to ship a batch to the target (each retried)",
                TargetStatus::errors,
            ),
            (
                "shipping_events_shipped",
                "Events the target acknowledged",
                TargetStatus::shipped,
            ),
        ];
        for (name, help, read) in counters {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for t in &self.targets {
                let labels = TargetLabels {
                    target: t.name().to_owned(),
                };
                ConstCounter::new(read(t)).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_labels_are_known_names_or_other_and_shared() {
        assert_eq!(&*operation_label("chat.create"), "chat.create");
        assert!(Arc::ptr_eq(
            &operation_label("chat.create"),
            &operation_label("chat.create")
        ));
        for other in ["POST /v1/x", "GET /a.b c", ""] {
            assert_eq!(&*operation_label(other), "other", "{other:?}");
        }
        assert!(Arc::ptr_eq(
            &operation_label("POST /x"),
            &operation_label("")
        ));
        // A dotted name classify never gives is still its own label.
        assert_eq!(&*operation_label("x.y"), "x.y");
    }

    #[test]
    fn encodes_every_series_in_prometheus_text() {
        let stats = Arc::new(PipelineStats::default());
        stats.written.fetch_add(7, Ordering::Relaxed);
        let m = Metrics::new(stats);
        m.calls
            .get_or_create(&CallLabels {
                operation: "chat.create".into(),
                status: 200,
                outcome: "completed",
            })
            .inc();
        m.added_latency.observe(0.0002);
        let text = m.encode();
        for series in [
            "llm_audit_proxy_calls_total{operation=\"chat.create\",status=\"200\",outcome=\"completed\"} 1",
            "llm_audit_proxy_events_written_total 7",
            "llm_audit_proxy_queue_depth 0",
            "llm_audit_proxy_queue_bytes 0",
            "llm_audit_proxy_events_dropped_over_budget_total 0",
            "llm_audit_proxy_record_build_failures_total 0",
            "llm_audit_proxy_queue_waits_total 0",
            "llm_audit_proxy_events_held_total 0",
            "llm_audit_proxy_queue_held_events 0",
            "llm_audit_proxy_queue_wait_timeouts_total 0",
            "llm_audit_proxy_queue_wait_seconds_total 0.0",
            "# TYPE llm_audit_proxy_added_latency_seconds histogram",
            "# TYPE llm_audit_proxy_store_write_seconds histogram",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
    }

    #[test]
    fn shipping_series_are_labelled_by_target() {
        let mut m = Metrics::new(Arc::new(PipelineStats::default()));
        assert!(!m.encode().contains("shipping"));
        m.register_shipping(vec![Arc::new(TargetStatus::new("postgres"))]);
        let text = m.encode();
        for series in [
            "llm_audit_proxy_shipping_lag_events{target=\"postgres\"} 0",
            "llm_audit_proxy_shipping_oldest_unshipped_age_seconds{target=\"postgres\"} 0",
            "llm_audit_proxy_shipping_last_success_timestamp_seconds{target=\"postgres\"} 0",
            "llm_audit_proxy_shipping_errors_total{target=\"postgres\"} 0",
            "llm_audit_proxy_shipping_events_shipped_total{target=\"postgres\"} 0",
            "llm_audit_proxy_shipping_events_lost_total{target=\"postgres\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
        assert_eq!(m.shipping().len(), 1);
    }

    #[test]
    fn model_labels_are_capped() {
        let m = Metrics::new(Arc::new(PipelineStats::default()));
        for i in 0..MAX_MODEL_LABELS {
            assert_eq!(m.model_label(&format!("m{i}")), format!("m{i}"));
        }
        assert_eq!(m.model_label("one-too-many"), "other");
        assert_eq!(m.model_label("m0"), "m0");
        assert_eq!(&*operation_label("POST /v1/x"), "other");
        assert_eq!(&*operation_label("chat.create"), "chat.create");
    }
}

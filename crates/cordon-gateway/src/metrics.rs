//! Prometheus metrics. Labels are bounded and carry no subject ids or personal data: jurisdiction,
//! processing region set, outcome, reason code, operation.

use std::fmt::Write as _;

use cordon_types::Jurisdiction;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

// Label values are `&'static str` or inline values where they can be, so counting a request
// allocates nothing unless its label set is new.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub jurisdiction: JurisdictionLabel,
    pub processing_region: String,
    pub outcome: &'static str,
    pub reason: &'static str,
}

/// A data subject's jurisdiction as a label value (`unknown` before one is known).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct JurisdictionLabel(pub Option<Jurisdiction>);

impl EncodeLabelValue for JurisdictionLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.0.as_ref().map_or("unknown", Jurisdiction::as_str))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurabilityLabels {
    pub durability: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<OperationLabels, Histogram>,
    pub upstream_duration: Family<OperationLabels, Histogram>,
    /// Total minus time waiting on the upstream: what the gateway itself adds.
    pub overhead: Family<OperationLabels, Histogram>,
    /// What waiting for the decision record's durability added to a request, by durability mode
    /// (strict: the whole wait before forwarding; overlapped: the wait left after the upstream answered).
    pub audit_wait: Family<DurabilityLabels, Histogram>,
    pub failovers: Counter,
    pub evidence_mismatch: Counter,
    pub audit_failures: Counter,
    pub reloads: Family<ResultLabels, Counter>,
}

fn seconds_histogram() -> Histogram {
    // 50 µs .. ~105 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 22))
}

/// The audit wait is compared with the disk's fsync p99 (a few hundred µs to a few ms): the same
/// bounds as the store's own fsync histogram (`cordon_audit_fsync_seconds`), bucket for bucket.
fn audit_wait_histogram() -> Histogram {
    Histogram::new(cordon_audit::latency_bounds_us().map(|us| us as f64 / 1e6))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cordon");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<OperationLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        let upstream_duration = Family::<OperationLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        let overhead = Family::<OperationLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        let audit_wait = Family::<DurabilityLabels, Histogram>::new_with_constructor(
            audit_wait_histogram as fn() -> Histogram,
        );
        registry.register(
            "audit_wait_seconds",
            "Latency the decision record's durability added to a request, by durability mode",
            audit_wait.clone(),
        );
        let failovers = Counter::default();
        let evidence_mismatch = Counter::default();
        let audit_failures = Counter::default();
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by data-subject jurisdiction, processing region, outcome and reason",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Total request latency",
            duration.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time waiting on the upstream",
            upstream_duration.clone(),
        );
        registry.register(
            "gateway_overhead_seconds",
            "Latency the gateway adds: total minus time waiting on the upstream",
            overhead.clone(),
        );
        registry.register(
            "failovers",
            "Attempts moved to the next permitted endpoint",
            failovers.clone(),
        );
        registry.register(
            "processing_evidence_mismatch",
            "Upstream-reported processing location contradicting the decision",
            evidence_mismatch.clone(),
        );
        registry.register(
            "audit_append_failures",
            "Audit appends that failed (requests answered 503)",
            audit_failures.clone(),
        );
        registry.register(
            "policy_reloads",
            "Policy reload attempts by result",
            reloads.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            upstream_duration,
            overhead,
            audit_wait,
            failovers,
            evidence_mismatch,
            audit_failures,
            reloads,
        }
    }

    /// The registry's families, then `extra`'s (families collected at scrape time), then `# EOF`.
    pub fn encode(&self, extra: impl FnOnce(&mut String)) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        extra(&mut out);
        let _ = encode_eof(&mut out);
        out
    }

    pub fn count_request(
        &self,
        jurisdiction: Option<Jurisdiction>,
        processing_region: &str,
        outcome: &'static str,
        reason: &'static str,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                jurisdiction: JurisdictionLabel(jurisdiction),
                processing_region: processing_region.to_string(),
                outcome,
                reason,
            })
            .inc();
    }

    pub fn observe_audit_wait(&self, durability: &'static str, seconds: f64) {
        self.audit_wait
            .get_or_create(&DurabilityLabels { durability })
            .observe(seconds);
    }

    pub fn observe(&self, operation: &'static str, total: f64, upstream: f64) {
        let l = OperationLabels { operation };
        self.duration.get_or_create(&l).observe(total);
        if upstream > 0.0 {
            self.upstream_duration.get_or_create(&l).observe(upstream);
        }
        self.overhead
            .get_or_create(&l)
            .observe((total - upstream).max(0.0));
    }
}

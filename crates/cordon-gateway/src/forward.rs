//! Forwarding an allowed request: walk the decision's candidates in order (failover never leaves
//! that list, so it never crosses a border), then answer with the upstream's response, streamed
//! through chunk by chunk, and write the completion record when it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use cordon_audit::{CompletionRecord, Evidence, Latency, RECORD_VERSION, Record};
use cordon_policy::Candidate;
use cordon_types::ReasonCode;
use cordon_upstream::{RequestBody, ResponseBody, UpstreamError, UpstreamResponse};
use futures_util::Stream;

use crate::audit_set::{StoreLocation, commit_settings};
use crate::error::ApiError;
use crate::pipeline::Ctx;
use crate::runtime::Runtime;
use crate::state::AppState;

/// A response from a permitted endpoint.
pub struct Served {
    pub endpoint: usize,
    pub response: UpstreamResponse,
    pub attempts: u32,
    pub upstream_wait: Duration,
}

/// Every candidate failed, or the upstream rejected the request itself.
pub struct Failed {
    pub error: ApiError,
    pub attempts: u32,
    pub last_endpoint: Option<usize>,
    pub upstream_wait: Duration,
}

/// Try the candidates in order.
pub async fn forward(ctx: &Ctx<'_>, candidates: &[Candidate], body: &RequestBody) -> Result<Served, Failed> {
    let Some(op) = ctx.op.upstream() else {
        let error = ctx.error(ReasonCode::InvalidRequest, "nothing to forward");
        return Err(Failed {
            error,
            attempts: 0,
            last_endpoint: None,
            upstream_wait: Duration::ZERO,
        });
    };
    let rt = &ctx.rt;
    let mut attempts = 0u32;
    let mut wait = Duration::ZERO;
    let mut failures: Vec<(String, UpstreamError)> = Vec::new();
    let mut last = None;
    for (i, c) in candidates.iter().enumerate() {
        let ep = &rt.policy.endpoints[c.endpoint];
        attempts += 1;
        last = Some(c.endpoint);
        let t = Instant::now();
        let result = rt
            .upstreams
            .send_with(&rt.targets, c.endpoint, ep, op, body)
            .await;
        wait += t.elapsed();
        match result {
            Ok(response) => {
                rt.health.success(c.endpoint);
                return Ok(Served {
                    endpoint: c.endpoint,
                    response,
                    attempts,
                    upstream_wait: wait,
                });
            }
            Err(e) if e.is_retryable() => {
                if rt.health.failure(c.endpoint) {
                    tracing::warn!(endpoint = ep.id(), model = %ep.model, "endpoint ejected after consecutive failures");
                }
                tracing::info!(endpoint = ep.id(), error = %e.public_message(), "upstream attempt failed");
                if i + 1 < candidates.len() {
                    ctx.state.metrics.failovers.inc();
                }
                failures.push((ep.id().to_string(), e));
            }
            Err(e) => {
                // The upstream rejected the request itself (4xx): pass it on, don't fail over.
                let status = match &e {
                    UpstreamError::Status { status, .. } => Some(*status),
                    _ => None,
                };
                let code = match status {
                    Some(413) => ReasonCode::PayloadTooLarge,
                    Some(404) => ReasonCode::ModelNotFound,
                    Some(s) if (400..500).contains(&s) => ReasonCode::InvalidRequest,
                    _ => e.reason(),
                };
                let mut error = ctx.error(
                    code,
                    format!(
                        "endpoint {} rejected the request: {}",
                        ep.id(),
                        e.public_message()
                    ),
                );
                error.status = status.filter(|s| (400..500).contains(s));
                return Err(Failed {
                    error,
                    attempts,
                    last_endpoint: last,
                    upstream_wait: wait,
                });
            }
        }
    }
    let all_down = failures.iter().all(|(_, e)| e.is_unreachable());
    let detail: Vec<String> = failures
        .iter()
        .map(|(id, e)| format!("{id}: {}", e.public_message()))
        .collect();
    let error = if all_down || failures.is_empty() {
        ctx.error(
            ReasonCode::AllPermittedEndpointsUnavailable,
            format!(
                "every endpoint permitted for this request is unavailable ({}); Cordon does not fail over across a border",
                detail.join("; ")
            ),
        )
    } else {
        let code = failures
            .last()
            .map(|(_, e)| e.reason())
            .unwrap_or(ReasonCode::UpstreamError);
        ctx.error(
            code,
            format!("the permitted endpoints failed: {}", detail.join("; ")),
        )
    };
    Err(Failed {
        error,
        attempts,
        last_endpoint: last,
        upstream_wait: wait,
    })
}

/// What the completion record needs, captured when the response starts.
pub struct Completion {
    pub state: Arc<AppState>,
    pub rt: Arc<Runtime>,
    pub loc: Arc<StoreLocation>,
    pub decision_id: uuid::Uuid,
    pub started: Instant,
    pub upstream_wait: Duration,
    pub endpoint: Option<usize>,
    pub attempts: u32,
    pub stream: bool,
    pub op: cordon_upstream::Operation,
}

impl Completion {
    /// Write the completion record (not awaited by the client: the response is already out).
    pub fn finish(self, status: u16, error: Option<&str>, body: Option<&[u8]>) {
        let (usage, evidence) = match body {
            Some(b) => cordon_upstream::extract_usage_and_evidence(self.op, b),
            None => (None, None),
        };
        self.finish_with(status, error, usage, evidence);
    }

    /// [`Completion::finish`] with the usage and evidence already read (from a stream's events).
    fn finish_with(
        self,
        status: u16,
        error: Option<&str>,
        usage: Option<serde_json::Value>,
        evidence: Option<serde_json::Value>,
    ) {
        let policy = &self.rt.policy;
        let ep = self.endpoint.map(|i| &policy.endpoints[i]);
        let processing_evidence = evidence.map(|reported| {
            let contradicts = ep.is_some_and(|ep| contradicts(policy, ep, &reported));
            if contradicts {
                self.state.metrics.evidence_mismatch.inc();
                tracing::warn!(decision_id = %self.decision_id, "upstream-reported processing location contradicts the decision");
            }
            Evidence { reported, contradicts_decision: contradicts }
        });
        let total = self.started.elapsed();
        let rec = CompletionRecord {
            v: RECORD_VERSION,
            decision_id: self.decision_id,
            ts: cordon_audit::now_rfc3339_micros(),
            status,
            model_endpoint: ep.map(|e| e.id().to_string()),
            processing_regions: ep
                .map(|e| e.location.regions.iter().map(|r| r.to_string()).collect())
                .unwrap_or_default(),
            attempts: self.attempts,
            latency_ms: Latency {
                total: ms(total),
                upstream: ms(self.upstream_wait),
            },
            usage,
            stream: self.stream,
            error: error.map(str::to_string),
            processing_evidence,
        };
        let store = match self.state.audit.open_store(&self.loc, commit_settings(policy)) {
            Ok(s) => s,
            Err(e) => {
                self.state.metrics.audit_failures.inc();
                tracing::error!(decision_id = %self.decision_id, error = %e, "completion record not written");
                return;
            }
        };
        // Nobody waits for the completion record (the response is already on its way): it rides
        // along with the next batch's fsync instead of waking the writer and costing one of its own.
        let state = self.state.clone();
        let id = self.decision_id;
        let on_failure = move |e: cordon_audit::AuditError| {
            state.metrics.audit_failures.inc();
            tracing::error!(decision_id = %id, error = %e, "completion record not durable");
        };
        if let Err(e) = store.append_deferred(&Record::Completion(rec), on_failure) {
            self.state.metrics.audit_failures.inc();
            tracing::error!(decision_id = %self.decision_id, error = %e, "completion record not written");
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

/// Does what the upstream reported (e.g. Anthropic's `inference_geo: "us"`) contradict where the
/// decision permitted it to process?
fn contradicts(
    policy: &cordon_policy::Policy,
    ep: &cordon_policy::Endpoint,
    reported: &serde_json::Value,
) -> bool {
    let geo = reported
        .get("inference_geo")
        .and_then(|v| v.as_str())
        .or_else(|| reported.as_str())
        .map(str::to_ascii_uppercase);
    let Some(geo) = geo else { return false };
    let Some(allowed) = &ep.location.jurisdictions else {
        return false;
    };
    if geo == "GLOBAL" {
        return true;
    }
    match policy.resolve_residency(&geo) {
        Some((j, _)) => !allowed.contains(&j),
        None => false,
    }
}

/// Build the client response from a served upstream response.
pub fn respond(served: Served, completion: Completion, headers: Vec<(&'static str, String)>) -> Response {
    let status = StatusCode::from_u16(served.response.status).unwrap_or(StatusCode::OK);
    let content_type = served.response.content_type.clone();
    let body = match served.response.body {
        ResponseBody::Full(bytes) => {
            completion.finish(status.as_u16(), None, Some(&bytes));
            Body::from(bytes)
        }
        ResponseBody::Stream(s) => Body::from_stream(Recorded {
            inner: s,
            tap: Some(cordon_upstream::StreamTap::new(completion.op)),
            completion: Some(completion),
            status: status.as_u16(),
        }),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        h.insert(axum::http::header::CONTENT_TYPE, v);
    }
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    resp
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>;

/// Passes chunks through untouched (reading the usage and processing evidence events as they go
/// by) and writes the completion record when the stream ends, fails, or the client goes away
/// (drop).
struct Recorded {
    inner: ChunkStream,
    tap: Option<cordon_upstream::StreamTap>,
    completion: Option<Completion>,
    status: u16,
}

impl Recorded {
    fn finish(&mut self, status: u16, error: Option<&str>) {
        if let Some(c) = self.completion.take() {
            let (usage, evidence) = self.tap.take().map(|t| t.finish()).unwrap_or_default();
            c.finish_with(status, error, usage, evidence);
        }
    }
}

impl Stream for Recorded {
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(t) = self.tap.as_mut() {
                    t.feed(chunk);
                }
            }
            Poll::Ready(None) => {
                let status = self.status;
                self.finish(status, None);
            }
            Poll::Ready(Some(Err(e))) => {
                let code = e.reason().as_str();
                self.finish(502, Some(code));
            }
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.finish(499, Some("client_closed"));
    }
}

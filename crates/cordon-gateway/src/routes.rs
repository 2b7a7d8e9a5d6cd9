//! The HTTP surface (PRODUCT.md "HTTP surface"): OpenAI- and Anthropic-compatible routes plus
//! health, readiness and metrics.

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cordon_audit::Outcome;
use cordon_policy::{Decision, Request};
use cordon_types::ReasonCode;
use cordon_upstream::RequestBody;
use http_body_util::BodyExt;

use crate::error::ApiError;
use crate::forward::{Completion, forward, respond};
use crate::pipeline::{Ctx, Operation, Subject, authenticate, payload_for, today};
use crate::state::SharedState;

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/messages", post(messages))
        .route("/v1/models", get(models))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

// Handlers take the whole request rather than a `HeaderMap` extractor, which would clone every
// header of every request.
async fn chat(State(s): State<SharedState>, req: axum::extract::Request) -> Response {
    inference(s, Operation::Chat, req).await
}

async fn embeddings(State(s): State<SharedState>, req: axum::extract::Request) -> Response {
    inference(s, Operation::Embeddings, req).await
}

async fn messages(State(s): State<SharedState>, req: axum::extract::Request) -> Response {
    inference(s, Operation::Messages, req).await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<SharedState>) -> Response {
    let rt = s.runtime.load();
    match s.audit.check_ready(&rt.policy) {
        Ok(()) => (StatusCode::OK, format!("ready: policy {}\n", rt.policy.version)).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

async fn metrics(State(s): State<SharedState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics
            .encode(|out| crate::audit_metrics::encode(&s.audit, out)),
    )
        .into_response()
}

/// Read the body with the policy's size limit.
async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ReasonCode> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(ReasonCode::PayloadTooLarge)
        }
        Err(_) => Err(ReasonCode::InvalidRequest),
    }
}

async fn inference(state: SharedState, op: Operation, req: axum::extract::Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    let ctx = Ctx {
        state: &state,
        rt: state.runtime.load_full(),
        op,
        decision_id: cordon_audit::new_decision_id(),
    };
    let subject = match authenticate(&ctx, headers).await {
        Ok(s) => s,
        Err(e) => return finish_error(&ctx, started, e),
    };
    match serve(&ctx, &state, &subject, started, body).await {
        Ok(r) => r,
        Err(e) => finish_error(&ctx, started, e),
    }
}

fn finish_error(ctx: &Ctx<'_>, started: Instant, e: ApiError) -> Response {
    ctx.state
        .metrics
        .observe(ctx.op.as_str(), started.elapsed().as_secs_f64(), 0.0);
    e.into_response()
}

async fn serve(
    ctx: &Ctx<'_>,
    state: &SharedState,
    subject: &Subject,
    started: Instant,
    body: Body,
) -> Result<Response, ApiError> {
    let policy = ctx.policy();
    let bytes = match read_body(body, policy.file.limits.max_body_bytes).await {
        Ok(b) => b,
        Err(code) => {
            let msg = match code {
                ReasonCode::PayloadTooLarge => {
                    format!(
                        "request body exceeds the limit of {} bytes",
                        policy.file.limits.max_body_bytes
                    )
                }
                _ => "the request body could not be read".to_string(),
            };
            return Err(ctx.refuse(subject, None, code, msg, Vec::new()).await);
        }
    };
    let body = match RequestBody::parse(bytes) {
        Ok(b) => b,
        Err(e) => {
            let msg = e.to_string();
            return Err(ctx
                .refuse(subject, None, ReasonCode::InvalidRequest, msg, Vec::new())
                .await);
        }
    };
    let model = body.model();
    let stream = body.stream();
    let Some(up_op) = ctx.op.upstream() else {
        return Err(ctx.error(ReasonCode::InvalidRequest, "not an inference operation"));
    };

    let rt = &ctx.rt;
    let decision = policy.decide(
        &Request {
            jurisdiction: subject.jurisdiction,
            model,
            tier: subject.tier,
            today: today(),
        },
        |i| rt.health.is_healthy(i),
        |ep| {
            (!cordon_upstream::supports(ep.provider(), up_op)).then(|| {
                format!(
                    "provider {} does not serve {}",
                    ep.provider().as_str(),
                    ctx.op.as_str()
                )
            })
        },
    );
    let allow = match decision {
        Decision::Refuse(mut r) => {
            // No endpoint of the model, in any region, speaks this API: the caller used the
            // wrong route, which is not a residency matter (400, not 403).
            let speaks = |e: &usize| cordon_upstream::supports(policy.endpoints[*e].provider(), up_op);
            if r.code == ReasonCode::NoPermittedEndpoint
                && let Some(m) = policy.model(model)
                && !m.endpoints.iter().any(speaks)
            {
                r.code = ReasonCode::InvalidRequest;
                r.message = format!(
                    "model '{model}' does not serve {} requests (its endpoints' providers: {}); use the route its provider speaks",
                    ctx.op.as_str(),
                    providers_of(policy, m)
                );
            }
            return Err(ctx
                .refuse(subject, Some(model), r.code, r.message, r.reasons)
                .await);
        }
        Decision::Allow(a) => a,
    };

    let Some(loc) = ctx.rt.location(&state.audit, subject.jurisdiction) else {
        return Err(ctx.no_store(subject.jurisdiction));
    };
    let first = &allow.candidates[0];
    let ep = &policy.endpoints[first.endpoint];
    let mut rec = ctx.base_record();
    ctx.subject_fields(&mut rec, subject);
    rec.model = Some(model.to_string());
    rec.outcome = Outcome::Allowed;
    rec.reasons = allow.reasons.clone();
    rec.model_endpoint = Some(ep.id().to_string());
    rec.provider = Some(ep.provider().as_str().to_string());
    rec.operator = ep.spec.operator.clone();
    rec.processing_regions = ep.location.regions.iter().map(|r| r.to_string()).collect();
    rec.processing_jurisdictions = ep.location.jurisdiction_list();
    rec.transfer_mechanism = Some(first.mechanism.as_str().to_string());
    rec.transfer_reference = first.reference.clone();
    rec.payload = payload_for(ctx, subject, body.raw()).await?;
    let ack = ctx.append(&loc, rec)?;

    // Strict: durable before anything is forwarded. Overlapped: the fsync runs while the upstream
    // works, and the response is released only once the record is durable.
    let forwarded = match policy.tier_spec(subject.tier).durability {
        cordon_policy::Durability::Strict => {
            let t = Instant::now();
            ctx.durable(&loc, ack).await?;
            state
                .metrics
                .observe_audit_wait("strict", t.elapsed().as_secs_f64());
            forward(ctx, &allow.candidates, &body).await
        }
        cordon_policy::Durability::Overlapped => {
            // What the append adds here is how long the record stays un-durable after the
            // upstream has answered.
            let (acked, forwarded) = tokio::join!(
                async {
                    let r = ctx.durable(&loc, ack).await;
                    (r, Instant::now())
                },
                async {
                    let f = forward(ctx, &allow.candidates, &body).await;
                    (f, Instant::now())
                }
            );
            let ((acked, acked_at), (forwarded, forwarded_at)) = (acked, forwarded);
            acked?;
            let added = acked_at.saturating_duration_since(forwarded_at);
            state
                .metrics
                .observe_audit_wait("overlapped", added.as_secs_f64());
            forwarded
        }
    };
    let mut completion = Completion {
        state: state.clone(),
        rt: ctx.rt.clone(),
        loc,
        decision_id: ctx.decision_id,
        started,
        upstream_wait: std::time::Duration::ZERO,
        endpoint: None,
        attempts: 0,
        stream,
        op: up_op,
    };
    match forwarded {
        Ok(served) => {
            let ep = &policy.endpoints[served.endpoint];
            let regions = ep.location.region_list();
            completion.upstream_wait = served.upstream_wait;
            completion.endpoint = Some(served.endpoint);
            completion.attempts = served.attempts;
            ctx.count(Some(subject.jurisdiction), &regions, "allowed", "");
            let total = started.elapsed().as_secs_f64();
            state
                .metrics
                .observe(ctx.op.as_str(), total, served.upstream_wait.as_secs_f64());
            let headers = vec![
                ("x-cordon-decision-id", ctx.decision_id.to_string()),
                ("x-cordon-processing-region", regions),
                ("x-cordon-policy-version", policy.version.clone()),
            ];
            Ok(respond(served, completion, headers))
        }
        Err(mut failed) => {
            failed.error.processing_region = failed
                .last_endpoint
                .map(|e| policy.endpoints[e].location.region_list());
            completion.upstream_wait = failed.upstream_wait;
            completion.endpoint = failed.last_endpoint;
            completion.attempts = failed.attempts;
            let code = failed.error.code;
            completion.finish(failed.error.status().as_u16(), Some(code.as_str()), None);
            ctx.count(Some(subject.jurisdiction), "", "error", code.as_str());
            state.metrics.observe(
                ctx.op.as_str(),
                started.elapsed().as_secs_f64(),
                failed.upstream_wait.as_secs_f64(),
            );
            Err(failed.error)
        }
    }
}

async fn models(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let ctx = Ctx {
        state: &state,
        rt: state.runtime.load_full(),
        op: Operation::Models,
        decision_id: cordon_audit::new_decision_id(),
    };
    let subject = match authenticate(&ctx, &headers).await {
        Ok(s) => s,
        Err(e) => return finish_error(&ctx, started, e),
    };
    let policy = ctx.policy();
    let day = today();
    let mut data = Vec::new();
    let mut reasons = Vec::new();
    let mut out_of_jurisdiction = None;
    for m in &policy.models {
        let d = policy.decide_simple(&Request {
            jurisdiction: subject.jurisdiction,
            model: &m.name,
            tier: subject.tier,
            today: day,
        });
        match d {
            Decision::Allow(_) => {
                reasons.push(format!("{}: permitted", m.name));
                data.push(serde_json::json!({ "id": m.name, "object": "model", "created": 0, "owned_by": "cordon" }));
            }
            Decision::Refuse(r) => {
                reasons.push(format!("{}: {}", m.name, r.code.as_str()));
                if r.code == ReasonCode::GatewayOutOfJurisdiction && out_of_jurisdiction.is_none() {
                    out_of_jurisdiction = Some(r.message);
                }
            }
        }
    }
    // A gateway that may not process this subject at all says so (and names the right gateway),
    // rather than listing nothing.
    if let (true, Some(message)) = (data.is_empty(), out_of_jurisdiction) {
        let code = ReasonCode::GatewayOutOfJurisdiction;
        let e = ctx.refuse(&subject, None, code, message, reasons).await;
        return finish_error(&ctx, started, e);
    }
    let Some(loc) = ctx.rt.location(&state.audit, subject.jurisdiction) else {
        return finish_error(&ctx, started, ctx.no_store(subject.jurisdiction));
    };
    let mut rec = ctx.base_record();
    ctx.subject_fields(&mut rec, &subject);
    rec.outcome = Outcome::Allowed;
    rec.reasons = reasons;
    if let Err(e) = ctx.append_durable(&loc, rec).await {
        return finish_error(&ctx, started, e);
    }
    ctx.count(Some(subject.jurisdiction), "", "allowed", "");
    state
        .metrics
        .observe("models", started.elapsed().as_secs_f64(), 0.0);
    let body = serde_json::json!({ "object": "list", "data": data });
    let mut resp = axum::Json(body).into_response();
    let h = resp.headers_mut();
    for (k, v) in [
        ("x-cordon-decision-id", ctx.decision_id.to_string()),
        ("x-cordon-policy-version", policy.version.clone()),
    ] {
        if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    resp
}

/// The distinct providers of a model's endpoints, for an error message ("anthropic, echo").
fn providers_of(policy: &cordon_policy::Policy, m: &cordon_policy::Model) -> String {
    let mut names: Vec<&str> = m
        .endpoints
        .iter()
        .map(|&e| policy.endpoints[e].provider().as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    names.join(", ")
}

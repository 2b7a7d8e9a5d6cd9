//! The request path up to forwarding: authenticate, resolve the subject's jurisdiction and tier,
//! decide, and make the decision record durable in the subject's jurisdiction. Everything that
//! refuses ends here with an audited error.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use cordon_audit::{CallerRecord, DecisionRecord, Outcome, Payload, RECORD_VERSION, Record};
use cordon_identity::{Caller, Identity, Residency};
use cordon_policy::{Day, PayloadMode, Policy};
use cordon_types::{Country, Jurisdiction, ReasonCode, Region, Tier};

use crate::audit_set::{StoreLocation, commit_settings};
use crate::error::{ApiError, Dialect};
use crate::runtime::Runtime;
use crate::state::AppState;

/// The operation a route performs (the audit record's `operation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Chat,
    Embeddings,
    Messages,
    Models,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::Embeddings => "embeddings",
            Operation::Messages => "messages",
            Operation::Models => "models",
        }
    }
    pub fn upstream(self) -> Option<cordon_upstream::Operation> {
        match self {
            Operation::Chat => Some(cordon_upstream::Operation::Chat),
            Operation::Embeddings => Some(cordon_upstream::Operation::Embeddings),
            Operation::Messages => Some(cordon_upstream::Operation::Messages),
            Operation::Models => None,
        }
    }
    pub fn dialect(self) -> Dialect {
        if self == Operation::Messages {
            Dialect::Anthropic
        } else {
            Dialect::OpenAi
        }
    }
}

/// A verified data subject, bound to a jurisdiction and a tier.
pub struct Subject {
    pub identity: Identity,
    pub jurisdiction: Jurisdiction,
    pub country: Option<Country>,
    pub pseudonym: String,
    pub tier: Tier,
    pub tier_declared: Option<Tier>,
    pub origin_region: Option<String>,
}

/// Per-request context shared by the steps.
pub struct Ctx<'a> {
    pub state: &'a AppState,
    pub rt: Arc<Runtime>,
    pub op: Operation,
    pub decision_id: uuid::Uuid,
}

impl Ctx<'_> {
    pub fn policy(&self) -> &Policy {
        &self.rt.policy
    }

    /// An error answer for this request, with its decision id and policy version.
    pub fn error(&self, code: ReasonCode, message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(code, message);
        e.decision_id = Some(self.decision_id);
        e.policy_version = Some(self.policy().version.clone());
        e.dialect = self.op.dialect();
        e
    }

    /// A decision record with the gateway fields filled in and everything else empty.
    pub fn base_record(&self) -> DecisionRecord {
        let p = self.policy();
        DecisionRecord {
            v: RECORD_VERSION,
            decision_id: self.decision_id,
            ts: cordon_audit::now_rfc3339_micros(),
            gateway_id: p.file.gateway.id.clone(),
            gateway_region: p.gateway.as_ref().map(|g| g.region.to_string()),
            policy_version: p.version.clone(),
            subject: None,
            caller: None,
            data_subject_jurisdiction: None,
            data_subject_country: None,
            residency_source: None,
            request_origin_region: None,
            tier: None,
            tier_declared: None,
            operation: self.op.as_str().to_string(),
            model: None,
            outcome: Outcome::Refused,
            reason: None,
            reasons: Vec::new(),
            model_endpoint: None,
            provider: None,
            operator: None,
            processing_regions: Vec::new(),
            processing_jurisdictions: Vec::new(),
            transfer_mechanism: None,
            transfer_reference: None,
            audit_storage_region: None,
            payload: Payload::None,
            pii: None,
        }
    }

    /// Fill the subject fields of a record.
    pub fn subject_fields(&self, rec: &mut DecisionRecord, s: &Subject) {
        rec.subject = Some(s.pseudonym.clone());
        rec.caller = Some(caller_record(&s.identity.caller));
        rec.data_subject_jurisdiction = Some(s.jurisdiction.to_string());
        rec.data_subject_country = s.country.map(|c| c.to_string());
        rec.residency_source = Some(s.identity.residency_source.clone());
        rec.request_origin_region = s.origin_region.clone();
        rec.tier = Some(s.tier.number());
        rec.tier_declared = s.tier_declared.map(Tier::number);
    }

    /// Append a record to the store at `loc` and wait until it is durable.
    pub async fn append_durable(&self, loc: &StoreLocation, rec: DecisionRecord) -> Result<(), ApiError> {
        let ack = self.append(loc, rec)?;
        self.durable(loc, ack).await
    }

    /// Wait for an ack; a failure is `audit_unavailable` and marks the store for reopening.
    pub async fn durable(&self, loc: &StoreLocation, ack: cordon_audit::Ack) -> Result<(), ApiError> {
        match ack.await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.state.audit.invalidate(loc);
                Err(self.audit_failed(&e))
            }
        }
    }

    /// Enqueue a record; the returned ack resolves when it is durable.
    pub fn append(
        &self,
        loc: &StoreLocation,
        mut rec: DecisionRecord,
    ) -> Result<cordon_audit::Ack, ApiError> {
        rec.audit_storage_region = loc.region.clone();
        let store = self
            .state
            .audit
            .store(loc, commit_settings(self.policy()))
            .map_err(|e| self.audit_failed(&e))?;
        store.append(&Record::Decision(rec)).map_err(|e| {
            self.state.audit.invalidate(loc);
            self.audit_failed(&e)
        })
    }

    pub fn audit_failed(&self, e: &dyn std::fmt::Display) -> ApiError {
        self.state.metrics.audit_failures.inc();
        tracing::error!(decision_id = %self.decision_id, error = %e, "audit append failed; refusing");
        self.error(
            ReasonCode::AuditUnavailable,
            "the audit store for this request's jurisdiction is unavailable; nothing was forwarded",
        )
    }

    /// Record a refusal for a verified subject (no payload) and build the error answer.
    pub async fn refuse(
        &self,
        s: &Subject,
        model: Option<&str>,
        code: ReasonCode,
        message: String,
        reasons: Vec<String>,
    ) -> ApiError {
        let mut rec = self.base_record();
        self.subject_fields(&mut rec, s);
        rec.model = model.map(str::to_string);
        rec.reason = Some(code.as_str().to_string());
        rec.reasons = reasons;
        self.count(Some(s.jurisdiction), "", "refused", code.as_str());
        let appended = match self.rt.location(&self.state.audit, s.jurisdiction) {
            Some(loc) => self.append_durable(&loc, rec).await,
            None => {
                // This gateway has no store for the subject's jurisdiction (a regional gateway
                // refusing a caller from elsewhere). The refusal is still recorded, in the gateway's
                // own store, but without the pseudonymous subject or country: nothing about the
                // person leaves their jurisdiction, and a refusal carries no payload anyway.
                rec.subject = None;
                rec.data_subject_country = None;
                let loc = self.state.audit.unauthenticated_location(self.policy());
                self.append_durable(&loc, rec).await
            }
        };
        match appended {
            Ok(()) => self.error(code, message),
            Err(e) => e,
        }
    }

    pub fn no_store(&self, j: Jurisdiction) -> ApiError {
        self.audit_failed(&format!("no audit store is configured for jurisdiction {j}"))
    }

    pub fn count(&self, j: Option<Jurisdiction>, region: &str, outcome: &'static str, reason: &'static str) {
        self.state.metrics.count_request(j, region, outcome, reason);
    }
}

pub fn caller_record(c: &Caller) -> CallerRecord {
    match c {
        Caller::User { issuer } => CallerRecord::User {
            issuer: issuer.clone(),
        },
        Caller::Workload { key_id } => CallerRecord::Workload {
            key_id: key_id.clone(),
        },
    }
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

pub fn today() -> Day {
    Day(time::OffsetDateTime::now_utc().date())
}

/// The bearer credential: `Authorization: Bearer …`, or `x-api-key` on the Anthropic route.
fn credential(headers: &HeaderMap, op: Operation) -> Option<String> {
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or("")
            .trim();
        return (!token.is_empty()).then(|| token.to_string());
    }
    if op == Operation::Messages {
        return headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
    }
    None
}

/// Verify the caller, bind the subject to a jurisdiction and a tier. Failures are audited (without
/// subject or payload) and returned as the error answer.
pub async fn authenticate(ctx: &Ctx<'_>, headers: &HeaderMap) -> Result<Subject, ApiError> {
    let policy = ctx.policy();
    let identity = match credential(headers, ctx.op) {
        None => Err((
            ReasonCode::MissingCredentials,
            "no credentials: send Authorization: Bearer <token or API key>".to_string(),
            None,
        )),
        Some(cred) => ctx
            .rt
            .verifier
            .verify(&cred, now_unix())
            .await
            .map_err(|e| (e.reason(), e.to_string(), None)),
    };
    let identity = match identity {
        Ok(i) => i,
        Err((code, message, caller)) => return Err(auth_failure(ctx, code, message, caller).await),
    };
    let (jurisdiction, country) = match &identity.residency {
        Residency::Fixed {
            jurisdiction,
            country,
        } => (*jurisdiction, *country),
        Residency::Claim(value) => match policy.resolve_residency(value) {
            Some(x) => x,
            None => {
                let message = format!(
                    "the residency claim '{}' is neither a known country nor a known jurisdiction",
                    identity.residency_source
                );
                let caller = Some(caller_record(&identity.caller));
                return Err(auth_failure(ctx, ReasonCode::UnknownResidency, message, caller).await);
            }
        },
    };
    let pseudonym = ctx
        .state
        .pseudonyms
        .subject(
            jurisdiction.as_str(),
            &identity.caller.subject_key(&identity.subject),
        )
        .map_err(|e| ctx.audit_failed(&e))?;
    let origin_region = headers
        .get(policy.file.identity.origin_header.as_str())
        .and_then(|v| v.to_str().ok())
        .map(|v| match v.trim().parse::<Region>() {
            Ok(r) => r.to_string(),
            Err(_) => "unparseable".to_string(),
        });
    let mut subject = Subject {
        tier: identity.tier,
        identity,
        jurisdiction,
        country,
        pseudonym,
        tier_declared: None,
        origin_region,
    };
    if let Some(raw) = headers.get("x-cordon-tier") {
        let declared = raw.to_str().ok().and_then(|s| s.parse::<Tier>().ok());
        let Some(declared) = declared else {
            let msg = "x-cordon-tier must be 1, 2 or 3".to_string();
            return Err(ctx
                .refuse(&subject, None, ReasonCode::InvalidRequest, msg, Vec::new())
                .await);
        };
        subject.tier_declared = Some(declared);
        match cordon_policy::effective_tier(subject.tier, Some(declared)) {
            Ok(t) => subject.tier = t,
            Err(r) => return Err(ctx.refuse(&subject, None, r.code, r.message, Vec::new()).await),
        }
    }
    Ok(subject)
}

async fn auth_failure(
    ctx: &Ctx<'_>,
    code: ReasonCode,
    message: String,
    caller: Option<CallerRecord>,
) -> ApiError {
    let mut rec = ctx.base_record();
    rec.caller = caller;
    rec.reason = Some(code.as_str().to_string());
    let loc = ctx.state.audit.unauthenticated_location(ctx.policy());
    ctx.count(None, "", "refused", code.as_str());
    match ctx.append_durable(&loc, rec).await {
        Ok(()) => ctx.error(code, message),
        Err(e) => e,
    }
}

/// The payload the record carries for an allowed request, per the tier's policy.
pub async fn payload_for(ctx: &Ctx<'_>, s: &Subject, body: &[u8]) -> Result<Payload, ApiError> {
    match ctx.policy().tier_spec(s.tier).audit_payload {
        PayloadMode::None => Ok(Payload::None),
        PayloadMode::Digest => Ok(cordon_audit::digest(body)),
        PayloadMode::Encrypted => {
            let keystore = &ctx.state.keystore;
            match keystore.seal_cached(s.jurisdiction.as_str(), &s.pseudonym, body) {
                Ok(Some(sealed)) => Ok(sealed),
                Ok(None) => {
                    // The subject's first request since start: reading or creating its data key
                    // (file I/O, fsyncs) runs on a blocking thread, not on the async worker that
                    // serves everybody else's requests.
                    let (keystore, j, subject, body) = (
                        keystore.clone(),
                        s.jurisdiction,
                        s.pseudonym.clone(),
                        body.to_vec(),
                    );
                    tokio::task::spawn_blocking(move || keystore.seal(j.as_str(), &subject, &body))
                        .await
                        .map_err(|e| ctx.audit_failed(&e))?
                        .map_err(|e| ctx.audit_failed(&e))
                }
                Err(e) => Err(ctx.audit_failed(&e)),
            }
        }
    }
}

//! Sample records for tests, examples and benchmarks of this crate and of other stores (not part of
//! the stable API).

use std::collections::BTreeMap;

use crate::record::{
    CallerRecord, CompletionRecord, DecisionRecord, Evidence, Latency, Outcome, RECORD_VERSION, Record,
    digest, new_decision_id, now_rfc3339_micros,
};

/// A representative allowed decision record for subject number `n`.
pub fn sample_decision(n: u64) -> Record {
    Record::Decision(DecisionRecord {
        v: RECORD_VERSION,
        decision_id: new_decision_id(),
        ts: now_rfc3339_micros(),
        gateway_id: "gw-test".into(),
        gateway_region: Some("eu-central-1".into()),
        policy_version: "sha256:abc".into(),
        subject: Some(format!("ps:{n:032x}")),
        caller: Some(CallerRecord::User {
            issuer: "https://idp.example".into(),
        }),
        data_subject_jurisdiction: Some("EU".into()),
        data_subject_country: Some("DE".into()),
        residency_source: Some("claim:country".into()),
        request_origin_region: None,
        tier: Some(2),
        tier_declared: None,
        operation: "chat".into(),
        model: Some("m-small".into()),
        outcome: Outcome::Allowed,
        reason: None,
        reasons: vec!["eu-1: permitted".into()],
        model_endpoint: Some("eu-1".into()),
        provider: Some("echo".into()),
        operator: None,
        processing_regions: vec!["eu-central-1".into()],
        processing_jurisdictions: vec!["EU".into()],
        transfer_mechanism: None,
        transfer_reference: None,
        audit_storage_region: Some("eu-central-1".into()),
        payload: digest(&n.to_le_bytes()),
        pii: Some(BTreeMap::from([("email".to_string(), 1)])),
    })
}

/// A representative completion record.
pub fn sample_completion() -> Record {
    Record::Completion(CompletionRecord {
        v: RECORD_VERSION,
        decision_id: new_decision_id(),
        ts: now_rfc3339_micros(),
        status: 200,
        model_endpoint: Some("eu-1".into()),
        processing_regions: vec!["eu-central-1".into()],
        attempts: 1,
        latency_ms: Latency {
            total: 12.5,
            upstream: 10.25,
        },
        usage: Some(serde_json::json!({"prompt_tokens": 3, "completion_tokens": 5})),
        stream: false,
        error: None,
        processing_evidence: Some(Evidence {
            reported: serde_json::json!({"inference_geo": "eu"}),
            contradicts_decision: false,
        }),
    })
}

/// The decision record `examples/verify_speed` writes (`RECORDS=mixed`) for request number `n`:
/// no caller, no PII counts, a digest payload.
pub fn bench_decision(n: u64) -> DecisionRecord {
    DecisionRecord {
        v: RECORD_VERSION,
        decision_id: new_decision_id(),
        ts: now_rfc3339_micros(),
        gateway_id: "gw-1".into(),
        gateway_region: Some("eu-central-1".into()),
        policy_version: "sha256:0123456789abcdef".into(),
        subject: Some(format!("ps:{n:032x}")),
        caller: None,
        data_subject_jurisdiction: Some("EU".into()),
        data_subject_country: None,
        residency_source: None,
        request_origin_region: None,
        tier: Some(1),
        tier_declared: None,
        operation: "chat".into(),
        model: Some("m".into()),
        outcome: Outcome::Allowed,
        reason: None,
        reasons: vec![],
        model_endpoint: Some("eu-1".into()),
        provider: Some("echo".into()),
        operator: None,
        processing_regions: vec!["eu-central-1".into()],
        processing_jurisdictions: vec!["EU".into()],
        transfer_mechanism: None,
        transfer_reference: None,
        audit_storage_region: Some("eu-central-1".into()),
        payload: digest(&n.to_le_bytes()),
        pii: None,
    }
}

/// The completion record `examples/verify_speed` writes: no usage, no evidence.
pub fn bench_completion() -> CompletionRecord {
    CompletionRecord {
        v: RECORD_VERSION,
        decision_id: new_decision_id(),
        ts: now_rfc3339_micros(),
        status: 200,
        model_endpoint: Some("eu-1".into()),
        processing_regions: vec!["eu-central-1".into()],
        attempts: 1,
        latency_ms: Latency {
            total: 12.5,
            upstream: 11.0,
        },
        usage: None,
        stream: false,
        error: None,
        processing_evidence: None,
    }
}

//! The audit record schema (PRODUCT.md "Audit record"): serde structs, one JSON object per record,
//! tagged by `kind`. Every field is always written (absent values as `null` / `[]`), so the schema
//! of version [`RECORD_VERSION`] is the same for every record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Schema version written in every record's `v`.
pub const RECORD_VERSION: u32 = 1;

/// One audit log entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
// Records are built once per request and serialized at once; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Record {
    Decision(DecisionRecord),
    Completion(CompletionRecord),
}

impl Record {
    pub fn decision_id(&self) -> uuid::Uuid {
        match self {
            Record::Decision(d) => d.decision_id,
            Record::Completion(c) => c.decision_id,
        }
    }
}

/// Written before anything is forwarded, allowed or refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub v: u32,
    /// UUIDv7 ([`new_decision_id`]).
    pub decision_id: uuid::Uuid,
    /// RFC 3339 UTC with microseconds ([`now_rfc3339_micros`]).
    pub ts: String,
    pub gateway_id: String,
    pub gateway_region: Option<String>,
    pub policy_version: String,
    /// Pseudonymous (see [`crate::Pseudonymizer`]); `None` when authentication failed.
    pub subject: Option<String>,
    pub caller: Option<CallerRecord>,
    pub data_subject_jurisdiction: Option<String>,
    pub data_subject_country: Option<String>,
    pub residency_source: Option<String>,
    pub request_origin_region: Option<String>,
    pub tier: Option<u8>,
    pub tier_declared: Option<u8>,
    /// `chat` | `embeddings` | `messages` | `models`.
    pub operation: String,
    pub model: Option<String>,
    pub outcome: Outcome,
    /// The wire reason code.
    pub reason: Option<String>,
    /// A short why per candidate endpoint.
    pub reasons: Vec<String>,
    pub model_endpoint: Option<String>,
    pub provider: Option<String>,
    pub operator: Option<String>,
    pub processing_regions: Vec<String>,
    pub processing_jurisdictions: Vec<String>,
    pub transfer_mechanism: Option<String>,
    pub transfer_reference: Option<String>,
    pub audit_storage_region: Option<String>,
    pub payload: Payload,
    /// Counts per entity type; never values.
    pub pii: Option<BTreeMap<String, u64>>,
}

/// Who called: `{"type":"user","issuer":..}` or `{"type":"workload","key_id":..}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallerRecord {
    User { issuer: String },
    Workload { key_id: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allowed,
    Refused,
}

/// What of the request content is kept: nothing, a digest, or ciphertext under the subject's data key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Payload {
    None,
    Digest {
        sha256: String,
    },
    Encrypted {
        alg: String,
        key_id: String,
        nonce: String,
        ciphertext: String,
    },
}

/// Follows the response (or the failure) of an allowed decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletionRecord {
    pub v: u32,
    pub decision_id: uuid::Uuid,
    pub ts: String,
    pub status: u16,
    /// The endpoint that finally served (after any failover).
    pub model_endpoint: Option<String>,
    pub processing_regions: Vec<String>,
    pub attempts: u32,
    pub latency_ms: Latency,
    /// Token usage when the upstream reports it.
    pub usage: Option<serde_json::Value>,
    pub stream: bool,
    /// Error code, if the request failed.
    pub error: Option<String>,
    pub processing_evidence: Option<Evidence>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub total: f64,
    pub upstream: f64,
}

/// What the upstream itself reported about where it ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub reported: serde_json::Value,
    pub contradicts_decision: bool,
}

/// A fresh decision id: a UUIDv7 (millisecond timestamp, then 74 random bits), so ids sort by
/// time to the millisecond. The random bits come from aws-lc's user-space DRBG (seeded by the OS)
/// rather than `Uuid::now_v7`'s `getrandom` system call per id, which was a syscall per request.
pub fn new_decision_id() -> uuid::Uuid {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut random = [0u8; 10];
    if aws_lc_rs::rand::fill(&mut random).is_err() {
        // Never expected; the OS generator is then still a sound source.
        return uuid::Uuid::now_v7();
    }
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

/// Now, as RFC 3339 UTC with microseconds: `2026-11-25T07:40:01.123456Z`.
pub fn now_rfc3339_micros() -> String {
    format_rfc3339_micros(time::OffsetDateTime::now_utc())
}

pub(crate) fn format_rfc3339_micros(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let Ok(year) = u32::try_from(t.year()) else {
        return format_rfc3339_micros_fmt(t);
    };
    if year > 9999 {
        return format_rfc3339_micros_fmt(t);
    }
    // Two of these are written per request (decision and completion record): fixed-width digits
    // into a stack buffer, the same bytes as `format_rfc3339_micros_fmt` (a test compares them) at a
    // fraction of the cost of `format!`.
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut b[0..4], year);
    put_digits(&mut b[5..7], u32::from(u8::from(t.month())));
    put_digits(&mut b[8..10], u32::from(t.day()));
    put_digits(&mut b[11..13], u32::from(t.hour()));
    put_digits(&mut b[14..16], u32::from(t.minute()));
    put_digits(&mut b[17..19], u32::from(t.second()));
    put_digits(&mut b[20..26], t.microsecond());
    // Only ASCII digits were written into an ASCII template.
    String::from_utf8(b.to_vec()).unwrap_or_else(|_| format_rfc3339_micros_fmt(t))
}

/// `n` as zero-padded decimal filling `out` (`n` must fit: the callers' ranges guarantee it).
fn put_digits(out: &mut [u8], mut n: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// The reference formatting (and the path for years outside 0000-9999).
fn format_rfc3339_micros_fmt(t: time::OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Lowercase hex of `bytes` (what `hex::encode` returns, without its char-by-char collect).
pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex_lower(&mut out, bytes);
    out
}

/// Append the lowercase hex of `bytes` to `out`.
pub(crate) fn push_hex_lower(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// `Payload::Digest` of the content: lowercase hex SHA-256.
pub fn digest(bytes: &[u8]) -> Payload {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    Payload::Digest {
        sha256: hex_lower(d.as_ref()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) use crate::testing::{sample_completion, sample_decision};

    #[test]
    fn decision_json_has_spec_field_names() {
        let v = serde_json::to_value(sample_decision(1)).unwrap();
        let obj = v.as_object().unwrap();
        for k in [
            "v",
            "kind",
            "decision_id",
            "ts",
            "gateway_id",
            "gateway_region",
            "policy_version",
            "subject",
            "caller",
            "data_subject_jurisdiction",
            "data_subject_country",
            "residency_source",
            "request_origin_region",
            "tier",
            "tier_declared",
            "operation",
            "model",
            "outcome",
            "reason",
            "reasons",
            "model_endpoint",
            "provider",
            "operator",
            "processing_regions",
            "processing_jurisdictions",
            "transfer_mechanism",
            "transfer_reference",
            "audit_storage_region",
            "payload",
            "pii",
        ] {
            assert!(obj.contains_key(k), "missing {k}");
        }
        assert_eq!(obj.len(), 30);
        assert_eq!(v["kind"], "decision");
        assert_eq!(v["outcome"], "allowed");
        assert_eq!(v["caller"]["type"], "user");
        assert_eq!(v["payload"]["mode"], "digest");
        let back: Record = serde_json::from_value(v).unwrap();
        assert!(matches!(back, Record::Decision(_)));
    }

    #[test]
    fn completion_json_round_trips() {
        let r = sample_completion();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["kind"], "completion");
        assert_eq!(v["latency_ms"]["upstream"], 10.25);
        assert_eq!(v["processing_evidence"]["contradicts_decision"], false);
        let back: Record = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn payload_and_caller_shapes() {
        assert_eq!(
            serde_json::to_string(&Payload::None).unwrap(),
            r#"{"mode":"none"}"#
        );
        let c = CallerRecord::Workload { key_id: "k1".into() };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"type":"workload","key_id":"k1"}"#
        );
        let Payload::Digest { sha256 } = digest(b"abc") else {
            panic!("not a digest")
        };
        assert_eq!(
            sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn timestamps_have_microseconds() {
        let t = time::macros::datetime!(2026-11-25 07:40:01.123456 UTC);
        assert_eq!(format_rfc3339_micros(t), "2026-11-25T07:40:01.123456Z");
        let t = time::macros::datetime!(2026-01-02 03:04:05 +02:00);
        assert_eq!(format_rfc3339_micros(t), "2026-01-02T01:04:05.000000Z");
        let t = time::macros::datetime!(0001-12-31 23:59:59.999999 UTC);
        assert_eq!(format_rfc3339_micros(t), "0001-12-31T23:59:59.999999Z");
        let now = now_rfc3339_micros();
        assert_eq!(now.len(), 27);
        assert!(now.ends_with('Z'));
        assert_eq!(new_decision_id().get_version_num(), 7);
    }

    /// The fast formatter writes exactly what the reference `format!` does, over years, months,
    /// leap days, offsets and every microsecond digit position.
    #[test]
    fn fast_timestamp_matches_reference_formatting() {
        let start = time::macros::datetime!(1970-01-01 00:00:00 UTC).unix_timestamp_nanos();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // 1970 .. ~2540, any microsecond.
            let nanos = start + i128::from(x % 18_000_000_000_000_000) * 1_000;
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
            let off = time::UtcOffset::from_whole_seconds(((x >> 40) % 50_000) as i32 - 25_000).unwrap();
            let t = t.to_offset(off);
            assert_eq!(
                format_rfc3339_micros(t),
                format_rfc3339_micros_fmt(t.to_offset(time::UtcOffset::UTC))
            );
        }
        for t in [
            time::macros::datetime!(2024-02-29 23:59:59.000001 UTC),
            time::macros::datetime!(9999-12-31 23:59:59.999999 UTC),
            time::macros::datetime!(0000-01-01 00:00:00 UTC),
        ] {
            assert_eq!(format_rfc3339_micros(t), format_rfc3339_micros_fmt(t));
        }
    }

    #[test]
    fn hex_lower_matches_hex_encode() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_lower(&bytes), hex::encode(&bytes));
        assert_eq!(hex_lower(&[]), "");
    }
}

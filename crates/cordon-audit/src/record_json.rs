//! A record's JSON on the request path: [`Record::to_json`] writes the bytes `serde_json::to_vec`
//! writes for it, exactly (the tests below compare the two over thousands of varied records).
//!
//! Why not serde_json itself: every request serializes two records, and serde_json pushes every
//! key and every string value through its escaping loop, a byte at a time (~8% of the gateway's
//! user-space instructions per request, `bench/callgrind.sh`). Here keys are literals, and a
//! string value is copied whole when it holds nothing to escape (the usual case: ids, regions,
//! codes), else handed to serde_json. Nested values (caller, payload, latency, usage, evidence,
//! pii) are small or rare and go through serde_json as they are.

use serde::Serialize;

use crate::record::{CompletionRecord, DecisionRecord, Outcome, Record};

impl Record {
    /// The record as one JSON object, as `serde_json::to_vec(self)` writes it.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(1536);
        match self {
            Record::Decision(d) => decision(&mut out, d)?,
            Record::Completion(c) => completion(&mut out, c)?,
        }
        Ok(out)
    }
}

fn decision(o: &mut Vec<u8>, d: &DecisionRecord) -> Result<(), serde_json::Error> {
    // Every field by name: a field added to the struct does not compile until it is written.
    let DecisionRecord {
        v,
        decision_id,
        ts,
        gateway_id,
        gateway_region,
        policy_version,
        subject,
        caller,
        data_subject_jurisdiction,
        data_subject_country,
        residency_source,
        request_origin_region,
        tier,
        tier_declared,
        operation,
        model,
        outcome,
        reason,
        reasons,
        model_endpoint,
        provider,
        operator,
        processing_regions,
        processing_jurisdictions,
        transfer_mechanism,
        transfer_reference,
        audit_storage_region,
        payload,
        pii,
    } = d;
    o.extend_from_slice(br#"{"kind":"decision","v":"#);
    uint(o, u64::from(*v));
    key(o, "decision_id");
    uuid(o, decision_id);
    key(o, "ts");
    string(o, ts)?;
    key(o, "gateway_id");
    string(o, gateway_id)?;
    key(o, "gateway_region");
    opt_string(o, gateway_region.as_deref())?;
    key(o, "policy_version");
    string(o, policy_version)?;
    key(o, "subject");
    opt_string(o, subject.as_deref())?;
    key(o, "caller");
    nested(o, &caller)?;
    key(o, "data_subject_jurisdiction");
    opt_string(o, data_subject_jurisdiction.as_deref())?;
    key(o, "data_subject_country");
    opt_string(o, data_subject_country.as_deref())?;
    key(o, "residency_source");
    opt_string(o, residency_source.as_deref())?;
    key(o, "request_origin_region");
    opt_string(o, request_origin_region.as_deref())?;
    key(o, "tier");
    opt_uint(o, tier.map(u64::from));
    key(o, "tier_declared");
    opt_uint(o, tier_declared.map(u64::from));
    key(o, "operation");
    string(o, operation)?;
    key(o, "model");
    opt_string(o, model.as_deref())?;
    key(o, "outcome");
    o.extend_from_slice(match outcome {
        Outcome::Allowed => br#""allowed""#.as_slice(),
        Outcome::Refused => br#""refused""#.as_slice(),
    });
    key(o, "reason");
    opt_string(o, reason.as_deref())?;
    key(o, "reasons");
    strings(o, reasons)?;
    key(o, "model_endpoint");
    opt_string(o, model_endpoint.as_deref())?;
    key(o, "provider");
    opt_string(o, provider.as_deref())?;
    key(o, "operator");
    opt_string(o, operator.as_deref())?;
    key(o, "processing_regions");
    strings(o, processing_regions)?;
    key(o, "processing_jurisdictions");
    strings(o, processing_jurisdictions)?;
    key(o, "transfer_mechanism");
    opt_string(o, transfer_mechanism.as_deref())?;
    key(o, "transfer_reference");
    opt_string(o, transfer_reference.as_deref())?;
    key(o, "audit_storage_region");
    opt_string(o, audit_storage_region.as_deref())?;
    key(o, "payload");
    nested(o, &payload)?;
    key(o, "pii");
    nested(o, &pii)?;
    o.push(b'}');
    Ok(())
}

fn completion(o: &mut Vec<u8>, c: &CompletionRecord) -> Result<(), serde_json::Error> {
    // Every field by name: a field added to the struct does not compile until it is written.
    let CompletionRecord {
        v,
        decision_id,
        ts,
        status,
        model_endpoint,
        processing_regions,
        attempts,
        latency_ms,
        usage,
        stream,
        error,
        processing_evidence,
    } = c;
    o.extend_from_slice(br#"{"kind":"completion","v":"#);
    uint(o, u64::from(*v));
    key(o, "decision_id");
    uuid(o, decision_id);
    key(o, "ts");
    string(o, ts)?;
    key(o, "status");
    uint(o, u64::from(*status));
    key(o, "model_endpoint");
    opt_string(o, model_endpoint.as_deref())?;
    key(o, "processing_regions");
    strings(o, processing_regions)?;
    key(o, "attempts");
    uint(o, u64::from(*attempts));
    key(o, "latency_ms");
    nested(o, &latency_ms)?;
    key(o, "usage");
    nested(o, &usage)?;
    key(o, "stream");
    o.extend_from_slice(if *stream { b"true" } else { b"false" });
    key(o, "error");
    opt_string(o, error.as_deref())?;
    key(o, "processing_evidence");
    nested(o, &processing_evidence)?;
    o.push(b'}');
    Ok(())
}

/// `,"name":` (every key follows another member; names are plain ASCII).
fn key(o: &mut Vec<u8>, name: &str) {
    o.extend_from_slice(b",\"");
    o.extend_from_slice(name.as_bytes());
    o.extend_from_slice(b"\":");
}

/// A JSON string: copied whole unless something in it needs escaping (then serde_json does it).
fn string(o: &mut Vec<u8>, s: &str) -> Result<(), serde_json::Error> {
    if needs_escape(s.as_bytes()) {
        return serde_json::to_writer(&mut *o, s);
    }
    o.push(b'"');
    o.extend_from_slice(s.as_bytes());
    o.push(b'"');
    Ok(())
}

/// Does `b` hold a byte JSON must escape (below 0x20, `"` or `\`)? Eight bytes at a time: the
/// classic "has a byte less than n / equal to c" word tests, exact as a yes/no (a byte of 0x80 or
/// more never raises a flag by itself).
fn needs_escape(b: &[u8]) -> bool {
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        if escape_flags(x) != 0 {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&c| c < 0x20 || c == b'"' || c == b'\\')
}

/// The bytes of the word `x` (eight bytes, little-endian) that JSON must escape, each flagged by
/// its high bit: the classic "has a byte less than n / equal to c" word tests. A byte of 0x80 or
/// more never raises a flag by itself, and a flag can be wrong only above a right one (a borrow
/// from a flagged byte): the lowest flag is exact, so `trailing_zeros() / 8` is the position of
/// the first such byte ([`crate::record_check`] relies on that).
pub(crate) fn escape_flags(x: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let less = |x: u64, n: u8| x.wrapping_sub(LO * u64::from(n)) & !x & HI;
    let zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
    less(x, 0x20) | zero(x ^ (LO * u64::from(b'"'))) | zero(x ^ (LO * u64::from(b'\\')))
}

fn opt_string(o: &mut Vec<u8>, s: Option<&str>) -> Result<(), serde_json::Error> {
    match s {
        Some(s) => string(o, s),
        None => {
            o.extend_from_slice(b"null");
            Ok(())
        }
    }
}

fn strings(o: &mut Vec<u8>, v: &[String]) -> Result<(), serde_json::Error> {
    o.push(b'[');
    for (k, s) in v.iter().enumerate() {
        if k > 0 {
            o.push(b',');
        }
        string(o, s)?;
    }
    o.push(b']');
    Ok(())
}

fn uint(o: &mut Vec<u8>, n: u64) {
    crate::segment::push_u64(o, n);
}

fn opt_uint(o: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => uint(o, n),
        None => o.extend_from_slice(b"null"),
    }
}

fn uuid(o: &mut Vec<u8>, id: &uuid::Uuid) {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    o.push(b'"');
    o.extend_from_slice(id.hyphenated().encode_lower(&mut buf).as_bytes());
    o.push(b'"');
}

fn nested<T: Serialize>(o: &mut Vec<u8>, v: &T) -> Result<(), serde_json::Error> {
    serde_json::to_writer(&mut *o, v)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use crate::record::{CallerRecord, Evidence, Latency, Payload};
    use crate::testing::{sample_completion, sample_decision};

    use super::*;

    /// A small deterministic generator (no dependency): varied strings, options and lists.
    pub(crate) struct Gen(pub(crate) u64);

    impl Gen {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        pub(crate) fn pick(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        pub(crate) fn string(&mut self) -> String {
            const PARTS: &[&str] = &[
                "",
                "eu-central-1",
                "a\"quote",
                "back\\slash",
                "tab\there",
                "nl\n",
                "\u{0}",
                "\u{1f}",
                "\u{7f}",
                "é",
                "漢字",
                "😀",
                "/slash",
                "</script>",
                "\u{2028}",
                "plain text",
            ];
            (0..self.pick(4))
                .map(|_| PARTS[self.pick(PARTS.len() as u64) as usize])
                .collect()
        }
        fn opt(&mut self) -> Option<String> {
            (self.pick(3) > 0).then(|| self.string())
        }
        fn list(&mut self) -> Vec<String> {
            (0..self.pick(4)).map(|_| self.string()).collect()
        }
    }

    pub(crate) fn varied_decision(g: &mut Gen) -> Record {
        let Record::Decision(mut d) = sample_decision(g.next()) else {
            unreachable!()
        };
        d.v = g.pick(1_000_000) as u32;
        d.ts = g.string();
        d.gateway_id = g.string();
        d.gateway_region = g.opt();
        d.policy_version = g.string();
        d.subject = g.opt();
        d.caller = match g.pick(3) {
            0 => None,
            1 => Some(CallerRecord::User { issuer: g.string() }),
            _ => Some(CallerRecord::Workload { key_id: g.string() }),
        };
        d.data_subject_jurisdiction = g.opt();
        d.data_subject_country = g.opt();
        d.residency_source = g.opt();
        d.request_origin_region = g.opt();
        d.tier = (g.pick(2) == 0).then(|| g.pick(256) as u8);
        d.tier_declared = (g.pick(2) == 0).then(|| g.pick(256) as u8);
        d.operation = g.string();
        d.model = g.opt();
        d.outcome = if g.pick(2) == 0 {
            Outcome::Allowed
        } else {
            Outcome::Refused
        };
        d.reason = g.opt();
        d.reasons = g.list();
        d.model_endpoint = g.opt();
        d.provider = g.opt();
        d.operator = g.opt();
        d.processing_regions = g.list();
        d.processing_jurisdictions = g.list();
        d.transfer_mechanism = g.opt();
        d.transfer_reference = g.opt();
        d.audit_storage_region = g.opt();
        d.payload = match g.pick(3) {
            0 => Payload::None,
            1 => Payload::Digest { sha256: g.string() },
            _ => Payload::Encrypted {
                alg: g.string(),
                key_id: g.string(),
                nonce: g.string(),
                ciphertext: g.string(),
            },
        };
        d.pii = (g.pick(2) == 0).then(|| {
            (0..g.pick(3))
                .map(|_| (g.string(), g.next()))
                .collect::<BTreeMap<_, _>>()
        });
        Record::Decision(d)
    }

    pub(crate) fn varied_completion(g: &mut Gen) -> Record {
        let Record::Completion(mut c) = sample_completion() else {
            unreachable!()
        };
        c.v = g.next() as u32;
        c.ts = g.string();
        c.status = g.pick(65_536) as u16;
        c.model_endpoint = g.opt();
        c.processing_regions = g.list();
        c.attempts = g.next() as u32;
        c.latency_ms = Latency {
            total: g.next() as f64 / 7.0,
            upstream: [0.0, -0.0, 1e300, f64::NAN, 0.125][g.pick(5) as usize],
        };
        c.usage =
            (g.pick(2) == 0).then(|| serde_json::json!({"prompt_tokens": g.next(), "note": g.string()}));
        c.stream = g.pick(2) == 0;
        c.error = g.opt();
        c.processing_evidence = (g.pick(2) == 0).then(|| Evidence {
            reported: serde_json::json!({ "region": g.string() }),
            contradicts_decision: g.pick(2) == 0,
        });
        Record::Completion(c)
    }

    #[test]
    fn writes_exactly_what_serde_json_writes() {
        for r in [sample_decision(7), sample_completion()] {
            assert_eq!(r.to_json().unwrap(), serde_json::to_vec(&r).unwrap());
        }
        let mut g = Gen(42);
        for _ in 0..5_000 {
            for r in [varied_decision(&mut g), varied_completion(&mut g)] {
                let (fast, serde) = (r.to_json().unwrap(), serde_json::to_vec(&r).unwrap());
                assert!(
                    fast == serde,
                    "to_json:    {}\nserde_json: {}",
                    String::from_utf8_lossy(&fast),
                    String::from_utf8_lossy(&serde)
                );
                assert_eq!(serde_json::from_slice::<Record>(&fast).is_ok(), !has_nan(&r));
            }
        }
    }

    pub(crate) fn has_nan(r: &Record) -> bool {
        matches!(r, Record::Completion(c) if c.latency_ms.total.is_nan() || c.latency_ms.upstream.is_nan())
    }

    #[test]
    fn every_ascii_byte_at_every_place_is_escaped_as_serde_json_does() {
        let base = "abcdefghijklmnopq\u{e9}rst";
        for c in 0u8..0x80 {
            for at in 0..=base.len() {
                if !base.is_char_boundary(at) {
                    continue;
                }
                let s = format!("{}{}{}", &base[..at], c as char, &base[at..]);
                let mut fast = Vec::new();
                string(&mut fast, &s).unwrap();
                assert_eq!(fast, serde_json::to_vec(&s).unwrap(), "byte {c:#x} at {at}");
                assert_eq!(needs_escape(s.as_bytes()), c < 0x20 || c == b'"' || c == b'\\');
            }
        }
    }

    #[test]
    fn integers_are_written_in_full() {
        for n in [0u64, 1, 9, 10, 99, 100, 65_535, u64::from(u32::MAX), u64::MAX] {
            let mut o = Vec::new();
            uint(&mut o, n);
            assert_eq!(o, n.to_string().into_bytes());
        }
    }
}

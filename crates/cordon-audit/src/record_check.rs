//! The fast check of a record's JSON on the verification path: [`canonical_kind`] recognizes a
//! record written exactly as [`crate::Record::to_json`] writes it (keys as literals in the
//! writer's order, no whitespace, strings with nothing escaped) and checks every value against
//! the schema of [`crate::record`], without serde.
//!
//! Why: offline verification validates every record, and serde_json's field matching and string
//! scanning were a third of its CPU time. Records in the writer's form are nearly all of them; for
//! them this is one pass over the bytes with the strings scanned eight bytes at a time.
//!
//! It only ever recognizes: anything else (an escaped string, a number with an exponent, another
//! key order, whitespace, a value of another type, ...) gets `None`, and the caller takes the
//! serde path, which gives the verdict and the error. The rule that makes that sound: whenever
//! [`canonical_kind`] returns `Some(kind)`, the full parse (`serde_json` into [`crate::Record`])
//! succeeds with that kind. What it accepts is a subset of JSON that serde_json tokenizes the same
//! way (a string without a backslash ends at its first `"`), holding every field exactly once with
//! a value serde accepts for its type: see the tests below (differential over generated records,
//! and random mutations of written ones).

use crate::record_json::escape_flags;

/// `Some(true)` for a decision record, `Some(false)` for a completion record, when `rec` is one in
/// the writer's exact form and valid for the schema; `None` for anything else (not necessarily
/// invalid: the caller then decides with the full parse).
pub(crate) fn canonical_kind(rec: &str) -> Option<bool> {
    // `&str`: the whole record is UTF-8, so every string value (delimited by ASCII quotes) is.
    let mut c = Cursor {
        b: rec.as_bytes(),
        i: 0,
    };
    let is_decision = if c.lit(br#"{"kind":"decision","v":"#) {
        decision(&mut c)?;
        true
    } else if c.lit(br#"{"kind":"completion","v":"#) {
        completion(&mut c)?;
        false
    } else {
        return None;
    };
    (c.lit(b"}") && c.i == c.b.len()).then_some(is_decision)
}

/// The fields of [`crate::DecisionRecord`] after `"v":`, in the writer's order.
fn decision(c: &mut Cursor<'_>) -> Option<()> {
    c.uint(u64::from(u32::MAX))?;
    c.key(br#","decision_id":"#)?;
    c.uuid()?;
    c.key(br#","ts":"#)?;
    c.string()?;
    c.key(br#","gateway_id":"#)?;
    c.string()?;
    c.key(br#","gateway_region":"#)?;
    c.opt_string()?;
    c.key(br#","policy_version":"#)?;
    c.string()?;
    c.key(br#","subject":"#)?;
    c.opt_string()?;
    c.key(br#","caller":"#)?;
    caller(c)?;
    c.key(br#","data_subject_jurisdiction":"#)?;
    c.opt_string()?;
    c.key(br#","data_subject_country":"#)?;
    c.opt_string()?;
    c.key(br#","residency_source":"#)?;
    c.opt_string()?;
    c.key(br#","request_origin_region":"#)?;
    c.opt_string()?;
    c.key(br#","tier":"#)?;
    c.opt_uint(u64::from(u8::MAX))?;
    c.key(br#","tier_declared":"#)?;
    c.opt_uint(u64::from(u8::MAX))?;
    c.key(br#","operation":"#)?;
    c.string()?;
    c.key(br#","model":"#)?;
    c.opt_string()?;
    c.key(br#","outcome":"#)?;
    if !(c.lit(br#""allowed""#) || c.lit(br#""refused""#)) {
        return None;
    }
    c.key(br#","reason":"#)?;
    c.opt_string()?;
    c.key(br#","reasons":"#)?;
    c.strings()?;
    c.key(br#","model_endpoint":"#)?;
    c.opt_string()?;
    c.key(br#","provider":"#)?;
    c.opt_string()?;
    c.key(br#","operator":"#)?;
    c.opt_string()?;
    c.key(br#","processing_regions":"#)?;
    c.strings()?;
    c.key(br#","processing_jurisdictions":"#)?;
    c.strings()?;
    c.key(br#","transfer_mechanism":"#)?;
    c.opt_string()?;
    c.key(br#","transfer_reference":"#)?;
    c.opt_string()?;
    c.key(br#","audit_storage_region":"#)?;
    c.opt_string()?;
    c.key(br#","payload":"#)?;
    payload(c)?;
    c.key(br#","pii":"#)?;
    pii(c)
}

/// The fields of [`crate::CompletionRecord`] after `"v":`, in the writer's order.
fn completion(c: &mut Cursor<'_>) -> Option<()> {
    c.uint(u64::from(u32::MAX))?;
    c.key(br#","decision_id":"#)?;
    c.uuid()?;
    c.key(br#","ts":"#)?;
    c.string()?;
    c.key(br#","status":"#)?;
    c.uint(u64::from(u16::MAX))?;
    c.key(br#","model_endpoint":"#)?;
    c.opt_string()?;
    c.key(br#","processing_regions":"#)?;
    c.strings()?;
    c.key(br#","attempts":"#)?;
    c.uint(u64::from(u32::MAX))?;
    // `Latency`: two finite numbers (NaN is written as `null`, which the schema rejects).
    c.key(br#","latency_ms":{"total":"#)?;
    c.plain_number()?;
    c.key(br#","upstream":"#)?;
    c.plain_number()?;
    c.key(br#"},"usage":"#)?;
    // `Option<serde_json::Value>`: null or any value.
    c.value(VALUE_DEPTH)?;
    c.key(br#","stream":"#)?;
    c.bool()?;
    c.key(br#","error":"#)?;
    c.opt_string()?;
    c.key(br#","processing_evidence":"#)?;
    // `Option<Evidence>`.
    if !c.lit(b"null") {
        c.key(br#"{"reported":"#)?;
        c.value(VALUE_DEPTH)?;
        c.key(br#","contradicts_decision":"#)?;
        c.bool()?;
        c.key(b"}")?;
    }
    Some(())
}

/// `Option<CallerRecord>` (tagged by `type`, fields in declaration order).
fn caller(c: &mut Cursor<'_>) -> Option<()> {
    if c.lit(b"null") {
        return Some(());
    }
    if !(c.lit(br#"{"type":"user","issuer":"#) || c.lit(br#"{"type":"workload","key_id":"#)) {
        return None;
    }
    c.string()?;
    c.key(b"}")
}

/// `Payload` (tagged by `mode`, fields in declaration order).
fn payload(c: &mut Cursor<'_>) -> Option<()> {
    if c.lit(br#"{"mode":"none"}"#) {
        return Some(());
    }
    if c.lit(br#"{"mode":"digest","sha256":"#) {
        c.string()?;
        return c.key(b"}");
    }
    c.key(br#"{"mode":"encrypted","alg":"#)?;
    c.string()?;
    c.key(br#","key_id":"#)?;
    c.string()?;
    c.key(br#","nonce":"#)?;
    c.string()?;
    c.key(br#","ciphertext":"#)?;
    c.string()?;
    c.key(b"}")
}

/// `Option<BTreeMap<String, u64>>` (a repeated key is not an error for a map: the last wins).
fn pii(c: &mut Cursor<'_>) -> Option<()> {
    if c.lit(b"null") {
        return Some(());
    }
    c.key(b"{")?;
    if c.lit(b"}") {
        return Some(());
    }
    loop {
        c.string()?;
        c.key(b":")?;
        c.uint(u64::MAX)?;
        if !c.lit(b",") {
            return c.key(b"}");
        }
    }
}

/// How deep a `serde_json::Value` (usage, reported evidence) may nest here: well within
/// serde_json's recursion limit (128) at the depth these values sit in a record.
const VALUE_DEPTH: u32 = 16;

/// Numbers longer than this are declined (a plain decimal this short is a finite f64).
const MAX_NUMBER: usize = 40;

/// A position in a record. `i <= b.len()` always.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    /// Skip `s` if it comes next.
    #[inline]
    fn lit(&mut self, s: &[u8]) -> bool {
        let hit = self.b[self.i..].starts_with(s);
        if hit {
            self.i += s.len();
        }
        hit
    }

    /// `s` must come next.
    #[inline]
    fn key(&mut self, s: &[u8]) -> Option<()> {
        self.lit(s).then_some(())
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// A string with nothing escaped: `"`, then anything but `"`, `\` and bytes below 0x20, then
    /// `"`.
    #[inline]
    fn string(&mut self) -> Option<()> {
        self.key(b"\"")?;
        let rest = &self.b[self.i..];
        let end = first_special(rest)?;
        if rest[end] != b'"' {
            return None;
        }
        self.i += end + 1;
        Some(())
    }

    fn opt_string(&mut self) -> Option<()> {
        if self.lit(b"null") {
            return Some(());
        }
        self.string()
    }

    /// `[]` or `["..",..]`.
    fn strings(&mut self) -> Option<()> {
        self.key(b"[")?;
        if self.lit(b"]") {
            return Some(());
        }
        loop {
            self.string()?;
            if !self.lit(b",") {
                return self.key(b"]");
            }
        }
    }

    /// An unsigned integer in canonical decimal (no sign, no leading zero) up to `max`.
    fn uint(&mut self, max: u64) -> Option<u64> {
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        let len = self.i - start;
        if len == 0 || (len > 1 && self.b[start] == b'0') || n > max {
            return None;
        }
        Some(n)
    }

    fn opt_uint(&mut self, max: u64) -> Option<()> {
        if self.lit(b"null") {
            return Some(());
        }
        self.uint(max).map(drop)
    }

    fn bool(&mut self) -> Option<()> {
        (self.lit(b"true") || self.lit(b"false")).then_some(())
    }

    /// A quoted lowercase hyphenated UUID (`8-4-4-4-12` hex digits), which `Uuid::parse_str`
    /// accepts.
    fn uuid(&mut self) -> Option<()> {
        let s = self.b.get(self.i..self.i + 38)?;
        if s[0] != b'"' || s[37] != b'"' {
            return None;
        }
        for (k, &ch) in s[1..37].iter().enumerate() {
            let ok = match k {
                8 | 13 | 18 | 23 => ch == b'-',
                _ => ch.is_ascii_digit() || (b'a'..=b'f').contains(&ch),
            };
            if !ok {
                return None;
            }
        }
        self.i += 38;
        Some(())
    }

    /// A JSON number without an exponent, at most [`MAX_NUMBER`] bytes: `-?(0|[1-9][0-9]*)(.[0-9]+)?`.
    /// serde_json reads it as a finite f64 (or an integer, for a `Value`). What follows must be a
    /// delimiter, which the caller's next literal checks (a digit after a lone `0`, an `e`, ... is
    /// none).
    fn plain_number(&mut self) -> Option<()> {
        let start = self.i;
        self.lit(b"-");
        let digits = |c: &mut Self| {
            let from = c.i;
            while c.peek().is_some_and(|d| d.is_ascii_digit()) {
                c.i += 1;
            }
            c.i - from
        };
        if !self.lit(b"0") && digits(self) == 0 {
            return None;
        }
        if self.lit(b".") && digits(self) == 0 {
            return None;
        }
        (self.i - start <= MAX_NUMBER).then_some(())
    }

    /// Any `serde_json::Value` in serde_json's compact form, nested at most `depth` deep, with
    /// plain numbers and unescaped strings. Object keys starting with `$` are declined: serde_json
    /// gives `$serde_json::private::..` keys a meaning of their own (with its `raw_value` and
    /// `arbitrary_precision` features).
    fn value(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'n' => self.key(b"null"),
            b't' => self.key(b"true"),
            b'f' => self.key(b"false"),
            b'"' => self.string(),
            b'-' | b'0'..=b'9' => self.plain_number(),
            b'[' => {
                let depth = depth.checked_sub(1)?;
                self.i += 1;
                if self.lit(b"]") {
                    return Some(());
                }
                loop {
                    self.value(depth)?;
                    if !self.lit(b",") {
                        return self.key(b"]");
                    }
                }
            }
            b'{' => {
                let depth = depth.checked_sub(1)?;
                self.i += 1;
                if self.lit(b"}") {
                    return Some(());
                }
                loop {
                    if self.b.get(self.i + 1) == Some(&b'$') {
                        return None;
                    }
                    self.string()?;
                    self.key(b":")?;
                    self.value(depth)?;
                    if !self.lit(b",") {
                        return self.key(b"}");
                    }
                }
            }
            _ => None,
        }
    }
}

/// The position of the first `"`, `\` or byte below 0x20 in `b`, eight bytes at a time.
#[inline]
fn first_special(b: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(w) = b.get(at..at + 8) {
        let x = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        let flags = escape_flags(x);
        if flags != 0 {
            return Some(at + (flags.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    b[at..]
        .iter()
        .position(|&c| c < 0x20 || c == b'"' || c == b'\\')
        .map(|k| at + k)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::record::{CallerRecord, Evidence, Latency, Payload, Record};
    use crate::record_json::tests::{Gen, has_nan, varied_completion, varied_decision};
    use crate::testing::{bench_completion, bench_decision, sample_completion, sample_decision};
    use crate::verify::{parse_kind, parse_record};

    fn fast(json: &[u8]) -> Option<bool> {
        std::str::from_utf8(json).ok().and_then(canonical_kind)
    }

    /// The fast verdict, after checking the soundness rule on `json`: when it says a kind, the
    /// full parse succeeds with that kind; and `parse_kind` (fast check, twins, full parse) gives
    /// exactly the full parse's verdict.
    fn sound(json: &[u8]) -> Option<bool> {
        let full = parse_record(json).map(|r| matches!(r, Record::Decision(_)));
        let f = fast(json);
        if let Some(k) = f {
            assert_eq!(
                full,
                Ok(k),
                "accepted what the full parse does not: {}",
                String::from_utf8_lossy(json)
            );
        }
        assert_eq!(parse_kind(json), full, "{}", String::from_utf8_lossy(json));
        f
    }

    fn is_decision(r: &Record) -> bool {
        matches!(r, Record::Decision(_))
    }

    /// A `serde_json::Value` of any shape: numbers in plain and exponent form, strings that need
    /// escaping or not, `$` keys, nesting.
    fn any_value(g: &mut Gen, depth: u32) -> Value {
        match g.pick(if depth == 0 { 5 } else { 8 }) {
            0 => Value::Null,
            1 => Value::Bool(g.pick(2) == 0),
            2 => {
                let n = [
                    json!(0),
                    json!(3),
                    json!(u64::MAX),
                    json!(-1),
                    json!(i64::MIN),
                    json!(0.5),
                    json!(-0.0),
                    json!(1e300),
                    json!(1.5e-7),
                    json!(12345.678),
                    json!(1e16),
                    json!(123_456_789.123_456_79),
                ];
                n[g.pick(n.len() as u64) as usize].clone()
            }
            3 | 4 => Value::String(g.string()),
            5 | 6 => Value::Object(
                (0..g.pick(4))
                    .map(|_| {
                        let k = match g.pick(8) {
                            0 => "$serde_json::private::RawValue".to_string(),
                            1 => "$ref".to_string(),
                            _ => g.string(),
                        };
                        (k, any_value(g, depth - 1))
                    })
                    .collect(),
            ),
            _ => Value::Array((0..g.pick(4)).map(|_| any_value(g, depth - 1)).collect()),
        }
    }

    /// More varied nested values than the writer's generator has: callers, payloads, usage and
    /// evidence of every shape.
    fn varied(g: &mut Gen) -> Record {
        let mut r = if g.pick(2) == 0 {
            varied_decision(g)
        } else {
            varied_completion(g)
        };
        match &mut r {
            Record::Decision(d) => {
                if g.pick(4) == 0 {
                    d.pii = Some(Default::default());
                }
            }
            Record::Completion(c) => {
                c.usage = match g.pick(4) {
                    0 => None,
                    1 => Some(json!({
                        "prompt_tokens": g.next(),
                        "completion_tokens": g.next(),
                        "total_tokens": g.next()
                    })),
                    _ => Some(any_value(g, 3)),
                };
                if g.pick(2) == 0 {
                    c.processing_evidence = Some(Evidence {
                        reported: any_value(g, 3),
                        contradicts_decision: g.pick(2) == 0,
                    });
                }
                if g.pick(4) == 0 {
                    c.latency_ms = Latency {
                        total: [1e21, 3.0, -7.25, 0.1, 1e-9, 123456.789][g.pick(6) as usize],
                        upstream: g.next() as f64,
                    };
                }
            }
        }
        r
    }

    /// The record with every string (values and keys, nested ones too) stripped of what JSON
    /// escapes, so it is written without a backslash.
    fn cleaned(r: &Record) -> Record {
        fn scrub(s: &str) -> String {
            s.replace(|c: char| c < ' ' || c == '"' || c == '\\', "_")
        }
        fn walk(v: &mut Value) {
            match v {
                Value::String(s) => *s = scrub(s),
                Value::Array(a) => a.iter_mut().for_each(walk),
                Value::Object(o) => {
                    *o = std::mem::take(o)
                        .into_iter()
                        .map(|(k, mut v)| {
                            walk(&mut v);
                            (scrub(&k), v)
                        })
                        .collect();
                }
                _ => {}
            }
        }
        // NaN is written as null, which does not read back: set it aside.
        let mut r = r.clone();
        let latency = match &mut r {
            Record::Completion(c) => Some(std::mem::replace(
                &mut c.latency_ms,
                Latency {
                    total: 0.0,
                    upstream: 0.0,
                },
            )),
            Record::Decision(_) => None,
        };
        let mut v = serde_json::to_value(&r).unwrap();
        walk(&mut v);
        // With serde_json's `raw_value` feature on (feature unification in a workspace build), a
        // value with a `$serde_json::private::RawValue` key does not read back: keep such a
        // record as it is (the differential test still covers it).
        let Ok(mut cleaned) = serde_json::from_value::<Record>(v) else {
            if let (Record::Completion(c), Some(l)) = (&mut r, latency) {
                c.latency_ms = l;
            }
            return r;
        };
        if let (Record::Completion(c), Some(l)) = (&mut cleaned, latency) {
            c.latency_ms = l;
        }
        cleaned
    }

    /// Whether the checker must accept the record as written: whatever the full parse accepts,
    /// unless a string needed escaping, a number is written with an exponent (or is very long), or
    /// a nested value has a `$` key.
    fn expect_fast(r: &Record, json: &[u8]) -> bool {
        fn plain(s: &str) -> bool {
            !s.contains(['e', 'E']) && s.len() <= MAX_NUMBER
        }
        fn value_ok(v: &Value) -> bool {
            match v {
                Value::Number(_) => plain(&v.to_string()),
                Value::Array(a) => a.iter().all(value_ok),
                Value::Object(o) => o.iter().all(|(k, v)| !k.starts_with('$') && value_ok(v)),
                _ => true,
            }
        }
        let nested_ok = match r {
            Record::Decision(_) => true,
            Record::Completion(c) => {
                plain(&serde_json::to_string(&c.latency_ms.total).unwrap())
                    && plain(&serde_json::to_string(&c.latency_ms.upstream).unwrap())
                    && c.usage.as_ref().is_none_or(value_ok)
                    && c.processing_evidence
                        .as_ref()
                        .is_none_or(|e| value_ok(&e.reported))
            }
        };
        parse_record(json).is_ok() && !json.contains(&b'\\') && nested_ok
    }

    /// Over thousands of generated records, raw and with their strings cleaned: the checker
    /// accepts exactly the records it should (with the right kind) and nothing the full parse
    /// rejects.
    #[test]
    fn accepts_exactly_the_canonical_records() {
        let mut g = Gen(7);
        let (mut total, mut accepted) = (0, 0);
        for _ in 0..4_000 {
            let r = varied(&mut g);
            for r in [r.clone(), cleaned(&r)] {
                let json = r.to_json().unwrap();
                let want = expect_fast(&r, &json).then_some(is_decision(&r));
                assert_eq!(sound(&json), want, "{}", String::from_utf8_lossy(&json));
                // With serde_json's `raw_value` feature (on in a workspace build, through feature
                // unification), a `$serde_json::private::RawValue` key does not read back.
                let raw_key = String::from_utf8_lossy(&json).contains("$serde_json::private::RawValue");
                if !raw_key {
                    assert_eq!(parse_record(&json).is_ok(), !has_nan(&r));
                }
                total += 1;
                accepted += usize::from(want.is_some());
            }
        }
        // The cleaned half is mostly accepted (NaN latency and exponents aside).
        assert!(accepted * 3 > total, "{accepted} of {total}");
    }

    /// The records the gateway and the benchmark write take the fast path: it cannot silently
    /// go unused.
    #[test]
    fn accepts_the_records_the_gateway_writes() {
        let mut records = vec![
            sample_decision(7),
            sample_completion(),
            Record::Decision(bench_decision(3)),
            Record::Completion(bench_completion()),
        ];
        let Record::Decision(d) = sample_decision(9) else {
            unreachable!()
        };
        for (caller, payload) in [
            (
                Some(CallerRecord::Workload { key_id: "k-1".into() }),
                Payload::None,
            ),
            (
                None,
                Payload::Encrypted {
                    alg: "AES-256-GCM".into(),
                    key_id: "dk-1".into(),
                    nonce: "bm9uY2U=".into(),
                    ciphertext: "Y2lwaGVydGV4dA==".into(),
                },
            ),
        ] {
            let mut d = d.clone();
            d.caller = caller;
            d.payload = payload;
            d.outcome = crate::Outcome::Refused;
            d.reason = Some("no_endpoint_in_jurisdiction".into());
            d.tier = Some(255);
            d.tier_declared = Some(0);
            records.push(Record::Decision(d));
        }
        let Record::Completion(c) = sample_completion() else {
            unreachable!()
        };
        let mut c2 = c.clone();
        c2.usage = Some(json!({
            "prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "accepted_prediction_tokens": 0}
        }));
        c2.processing_evidence = Some(Evidence {
            reported: json!({"inference_geo": "eu", "service_tier": null, "regions": ["eu-west-1"]}),
            contradicts_decision: true,
        });
        c2.stream = true;
        c2.error = Some("upstream_timeout".into());
        c2.status = 504;
        c2.attempts = 3;
        c2.latency_ms = Latency {
            total: 30000.0,
            upstream: 0.0,
        };
        records.push(Record::Completion(c2));
        for r in records {
            let json = r.to_json().unwrap();
            assert_eq!(
                sound(&json),
                Some(is_decision(&r)),
                "{}",
                String::from_utf8_lossy(&json)
            );
        }
    }

    /// Hand-made edges: ranges, number forms, shapes. Each one either accepted with the full
    /// parse agreeing, or declined (and then decided by the full parse).
    #[test]
    fn edges() {
        let dec = String::from_utf8(Record::Decision(bench_decision(1)).to_json().unwrap()).unwrap();
        let com = String::from_utf8(sample_completion().to_json().unwrap()).unwrap();
        assert!(dec.contains(r#""tier":1,"#) && com.contains(r#""status":200,"#));
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str, Option<bool>)] = &[
            (&dec, r#""tier":1,"#, r#""tier":255,"#, Some(true)),
            (&dec, r#""tier":1,"#, r#""tier":256,"#, None),
            (&dec, r#""tier":1,"#, r#""tier":01,"#, None),
            (&dec, r#""tier":1,"#, r#""tier":-1,"#, None),
            (&dec, r#""tier":1,"#, r#""tier":1.0,"#, None),
            (&dec, r#""tier":1,"#, r#""tier":"1","#, None),
            (&dec, r#""tier":1,"#, r#""tier":0,"#, Some(true)),
            (&dec, r#""v":1,"#, r#""v":4294967295,"#, Some(true)),
            (&dec, r#""v":1,"#, r#""v":4294967296,"#, None),
            (&dec, r#""v":1,"#, r#""v":99999999999999999999999,"#, None),
            (&dec, r#""v":1,"#, r#""v":null,"#, None),
            (&dec, r#""outcome":"allowed""#, r#""outcome":"refused""#, Some(true)),
            (&dec, r#""outcome":"allowed""#, r#""outcome":"Allowed""#, None),
            (&dec, r#""outcome":"allowed""#, r#""outcome":null"#, None),
            (&dec, r#""pii":null"#, r#""pii":{}"#, Some(true)),
            (&dec, r#""pii":null"#, r#""pii":{"a":18446744073709551615,"a":0}"#, Some(true)),
            (&dec, r#""pii":null"#, r#""pii":{"a":18446744073709551616}"#, None),
            (&dec, r#""pii":null"#, r#""pii":{"a":-1}"#, None),
            (&dec, r#""pii":null"#, r#""pii":{"a":1,}"#, None),
            (&dec, r#""pii":null"#, r#""pii":[]"#, None),
            (&dec, r#""reasons":[]"#, r#""reasons":["a","b"]"#, Some(true)),
            (&dec, r#""reasons":[]"#, r#""reasons":["a",]"#, None),
            (&dec, r#""reasons":[]"#, r#""reasons":["a\"b"]"#, None),
            (&dec, r#""reasons":[]"#, "\"reasons\":[\"é\u{7f}😀\u{2028}\"]", Some(true)),
            (&dec, r#""reasons":[]"#, "\"reasons\":[\"a\tb\"]", None),
            (&dec, r#""reasons":[]"#, r#""reasons":[null]"#, None),
            (&dec, r#""caller":null"#, r#""caller":{"type":"user","issuer":"x"}"#, Some(true)),
            (&dec, r#""caller":null"#, r#""caller":{"type":"workload","key_id":""}"#, Some(true)),
            (&dec, r#""caller":null"#, r#""caller":{"type":"user","key_id":"x"}"#, None),
            (&dec, r#""caller":null"#, r#""caller":{"type":"user","issuer":"x","y":1}"#, None),
            (&dec, r#""caller":null"#, r#""caller":{}"#, None),
            (&dec, r#""payload":{"mode":"digest","#, r#""payload":{"mode":"none","#, None),
            (&dec, r#""gateway_region":"eu-central-1""#, r#""gateway_region":null"#, Some(true)),
            (&dec, r#""gateway_id":"gw-1""#, r#""gateway_id":null"#, None),
            (&dec, r#""decision_id":""#, r#""decision_id":"x"#, None),
            (&dec, r#""kind":"decision""#, r#""kind":"completion""#, None),
            (&com, r#""status":200,"#, r#""status":65535,"#, Some(false)),
            (&com, r#""status":200,"#, r#""status":65536,"#, None),
            (&com, r#""attempts":1,"#, r#""attempts":4294967295,"#, Some(false)),
            (&com, r#""attempts":1,"#, r#""attempts":4294967296,"#, None),
            (&com, r#""total":12.5,"#, r#""total":12,"#, Some(false)),
            (&com, r#""total":12.5,"#, r#""total":-0.0,"#, Some(false)),
            (&com, r#""total":12.5,"#, r#""total":0.000000000000000000000000000001,"#, Some(false)),
            (&com, r#""total":12.5,"#, r#""total":1e3,"#, None),
            (&com, r#""total":12.5,"#, r#""total":12.,"#, None),
            (&com, r#""total":12.5,"#, r#""total":.5,"#, None),
            (&com, r#""total":12.5,"#, r#""total":-,"#, None),
            (&com, r#""total":12.5,"#, r#""total":012.5,"#, None),
            (&com, r#""total":12.5,"#, r#""total":null,"#, None),
            (&com, r#""total":12.5,"#, &format!(r#""total":1{},"#, "0".repeat(400)), None),
            (&com, r#""stream":false"#, r#""stream":true"#, Some(false)),
            (&com, r#""stream":false"#, r#""stream":null"#, None),
            (&com, r#""stream":false"#, r#""stream":0"#, None),
            (&com, r#""error":null"#, r#""error":"e""#, Some(false)),
            (&com, r#""usage":{"#, r#""usage":{"$serde_json::private::RawValue":"{}","#, None),
            (&com, r#""usage":{"#, r#""usage":{"a":[1,-2,3.5,true,false,null,"s",{}],"#, Some(false)),
            (&com, r#""usage":{"#, r#""usage":{"a":1e400,"#, None),
            (&com, r#""usage":{"#, r#""usage":{"a":1,"a":2,"#, Some(false)),
            (&com, r#""usage":{"#, r#""usage":{"a":[1,],"#, None),
            (&com, r#""usage":{"#, r#""usage":{"a":{"b":},"#, None),
            (&com, r#""usage":{"#, r#""usage":{"a" :1,"#, None),
            (&com, r#""contradicts_decision":false"#, r#""contradicts_decision":null"#, None),
            (&com, r#""contradicts_decision":false}"#, r#""contradicts_decision":false,"x":1}"#, None),
        ];
        for (base, from, to, want) in cases {
            assert!(base.contains(from), "{from}");
            let json = base.replacen(from, to, 1);
            assert_eq!(sound(json.as_bytes()), *want, "{json}");
        }
        // Nesting: declined past the depth limit.
        for (n, want) in [
            (VALUE_DEPTH as usize, Some(false)),
            (VALUE_DEPTH as usize + 1, None),
            (200, None),
        ] {
            let json = com.replacen(
                r#""usage":{"completion_tokens":5,"prompt_tokens":3}"#,
                &format!(r#""usage":{}1{}"#, "[".repeat(n), "]".repeat(n)),
                1,
            );
            assert_ne!(json, com);
            assert_eq!(sound(json.as_bytes()), want, "depth {n}");
        }
        // The end: one `}` and nothing after it.
        for tail in ["", " ", "}", "\n", ",", "x"] {
            let json = format!("{dec}{tail}");
            assert_eq!(
                sound(json.as_bytes()),
                tail.is_empty().then_some(true),
                "{tail:?}"
            );
        }
        assert_eq!(sound(&dec.as_bytes()[..dec.len() - 1]), None);
        assert_eq!(sound(b""), None);
        assert_eq!(sound(br#"{"kind":"decision","v":"#), None);
    }

    /// Thousands of random byte changes, insertions and deletions of written records (a
    /// deterministic generator): whatever the checker accepts, the full parse accepts with the
    /// same kind, and `parse_kind`'s verdict is always the full parse's.
    #[test]
    fn mutations_never_fool_it() {
        const BYTES: &[u8] = b"0123456789-+.eE \"\\{}[]:,nulltruefalse$xyzAF\x00\x1f\x7f\xc3\xa9\xff";
        let mut g = Gen(99);
        let mut bases: Vec<Vec<u8>> = [
            sample_decision(1),
            sample_completion(),
            Record::Decision(bench_decision(2)),
            Record::Completion(bench_completion()),
        ]
        .iter()
        .map(|r| r.to_json().unwrap())
        .collect();
        while bases.len() < 12 {
            let json = cleaned(&varied(&mut g)).to_json().unwrap();
            if fast(&json).is_some() {
                bases.push(json);
            }
        }
        let (mut tried, mut accepted) = (0u32, 0u32);
        for base in &bases {
            assert!(sound(base).is_some());
            for _ in 0..3_000 {
                let mut m = base.clone();
                for _ in 0..1 + g.pick(3) * g.pick(2) {
                    let at = g.pick(m.len() as u64 + 1) as usize;
                    let byte = BYTES[g.pick(BYTES.len() as u64) as usize];
                    match g.pick(3) {
                        0 if at < m.len() => m[at] = byte,
                        1 => m.insert(at, byte),
                        _ if at < m.len() => {
                            m.remove(at);
                        }
                        _ => m.push(byte),
                    }
                }
                tried += 1;
                accepted += u32::from(sound(&m).is_some());
            }
        }
        // Some mutations keep a record canonical and valid (a digit for a digit, a letter in a
        // string): those were checked against the full parse too.
        assert!(accepted > tried / 20, "{accepted} of {tried}");
    }

    /// The word-at-a-time scan finds exactly the first byte a string cannot hold raw.
    #[test]
    fn first_special_is_exact() {
        let base = b"abcdefghijklmnopqrstuvwxyz\xc3\xa9\x80\xff\x7f ".to_vec();
        for c in 0u8..=255 {
            for at in 0..=base.len() {
                let mut b = base.clone();
                b.insert(at, c);
                // A second special byte after the first must not matter.
                b.push(b'"');
                let want = b.iter().position(|&c| c < 0x20 || c == b'"' || c == b'\\');
                assert_eq!(first_special(&b), want, "byte {c:#x} at {at}");
            }
        }
        assert_eq!(first_special(b""), None);
        assert_eq!(first_special(b"abc"), None);
    }
}

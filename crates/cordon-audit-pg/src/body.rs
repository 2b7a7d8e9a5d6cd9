//! The record body and its hashes, byte for byte the file store's format (cordon-audit
//! `segment.rs`), so a record's body and entry hash are the same whichever store holds it:
//!
//! ```text
//! body           = {"i":<index>,"prev":"<64 lowercase hex>","rec":<record JSON>}
//! entry_hash(i)  = SHA-256(entry_hash(i-1) || body(i)),  entry_hash(-1) = 32 zero bytes
//! leaf_hash(i)   = SHA-256(0x00 || body(i))              (RFC 6962 leaf hash)
//! ```

pub(crate) const ZERO_HASH: [u8; 32] = [0; 32];

const PRE_I: &[u8] = b"{\"i\":";
const PRE_PREV: &[u8] = b",\"prev\":\"";
const PRE_REC: &[u8] = b"\",\"rec\":";

/// SHA-256(prev || body): the hash chain link.
pub fn entry_hash(prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(prev);
    ctx.update(body);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// RFC 6962 leaf hash: SHA-256(0x00 || body) (`cordon_audit::merkle::leaf_hash`).
pub use cordon_audit::merkle::leaf_hash;

/// Build the body for `rec` (record JSON) at `index`, chained to `prev`, into `buf` (cleared).
pub(crate) fn encode_body(buf: &mut Vec<u8>, index: u64, prev: &[u8; 32], rec: &[u8]) {
    buf.clear();
    buf.reserve(PRE_I.len() + 20 + PRE_PREV.len() + 64 + PRE_REC.len() + rec.len() + 1);
    buf.extend_from_slice(PRE_I);
    let mut digits = [0u8; 20];
    let mut pos = digits.len();
    let mut n = index;
    loop {
        pos -= 1;
        digits[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[pos..]);
    buf.extend_from_slice(PRE_PREV);
    let mut hex_prev = [0u8; 64];
    // Cannot fail: the output is exactly twice the input.
    let _ = hex::encode_to_slice(prev, &mut hex_prev);
    buf.extend_from_slice(&hex_prev);
    buf.extend_from_slice(PRE_REC);
    buf.extend_from_slice(rec);
    buf.push(b'}');
}

/// A parsed body.
pub(crate) struct Envelope<'a> {
    pub index: u64,
    pub prev: [u8; 32],
    pub rec: &'a [u8],
}

/// Strictly parse a body as [`encode_body`] emits it.
pub(crate) fn parse_body(body: &[u8]) -> Option<Envelope<'_>> {
    let rest = body.strip_prefix(PRE_I)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let index: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(PRE_PREV)?;
    if rest.len() < 64 {
        return None;
    }
    let (hex_prev, rest) = rest.split_at(64);
    if !hex_prev.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut prev = [0u8; 32];
    hex::decode_to_slice(hex_prev, &mut prev).ok()?;
    let rest = rest.strip_prefix(PRE_REC)?;
    let rec = rest.strip_suffix(b"}")?;
    if rec.is_empty() {
        return None;
    }
    Some(Envelope { index, prev, rec })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trip_and_strict_parse() {
        let mut buf = Vec::new();
        encode_body(&mut buf, 0, &ZERO_HASH, br#"{"kind":"x"}"#);
        assert_eq!(
            buf,
            format!(r#"{{"i":0,"prev":"{}","rec":{{"kind":"x"}}}}"#, "0".repeat(64)).as_bytes()
        );
        let h0 = entry_hash(&ZERO_HASH, &buf);
        let mut b1 = Vec::new();
        encode_body(&mut b1, 12345678901, &h0, br#"{"kind":"y"}"#);
        let e = parse_body(&b1).unwrap();
        assert_eq!(
            (e.index, e.prev, e.rec),
            (12345678901, h0, &br#"{"kind":"y"}"#[..])
        );
        let v: serde_json::Value = serde_json::from_slice(&b1).unwrap();
        assert_eq!(v["prev"], hex::encode(h0));
        assert!(parse_body(br#"{"i":01,"prev":"00","rec":{}}"#).is_none());
        assert!(parse_body(b"{\"i\": 1}").is_none());
    }

    #[test]
    fn leaf_hash_is_rfc6962() {
        // RFC 6962 / certificate-transparency test vector: the hash of the empty leaf.
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }
}

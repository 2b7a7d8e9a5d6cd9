//! The record body and its hashes, byte for byte the file store's format (`cordon_audit::body`), so
//! a record's body and entry hash are the same whichever store holds it:
//!
//! ```text
//! body           = {"i":<index>,"prev":"<64 lowercase hex>","rec":<record JSON>}
//! leaf_hash(i)   = SHA-256(0x00 || body(i))                           (RFC 6962 leaf hash)
//! entry_hash(i)  = SHA-256(0x02 || entry_hash(i-1) || leaf_hash(i)),  entry_hash(-1) = 32 zero bytes
//! ```

pub(crate) use cordon_audit::body::{Envelope, ZERO_HASH};
pub use cordon_audit::body::{entry_and_leaf_hash, entry_hash};

/// RFC 6962 leaf hash: SHA-256(0x00 || body) (`cordon_audit::merkle::leaf_hash`).
pub use cordon_audit::merkle::leaf_hash;

/// Build the body for `rec` (record JSON) at `index`, chained to `prev`, into `buf` (cleared).
pub(crate) fn encode_body(buf: &mut Vec<u8>, index: u64, prev: &[u8; 32], rec: &[u8]) {
    buf.clear();
    cordon_audit::body::append_body(buf, index, prev, rec);
}

/// Strictly parse a body as [`encode_body`] emits it.
pub(crate) fn parse_body(body: &[u8]) -> Option<Envelope<'_>> {
    cordon_audit::body::parse_envelope(body)
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
        let h0 = entry_hash(&ZERO_HASH, &leaf_hash(&buf));
        assert_eq!(entry_and_leaf_hash(&ZERO_HASH, &buf), (h0, leaf_hash(&buf)));
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

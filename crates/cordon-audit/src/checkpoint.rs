//! C2SP tlog checkpoints (<https://c2sp.org/tlog-checkpoint>), signed as notes ([`crate::note`]).
//!
//! ```text
//! <origin>\n<tree size, decimal>\n<base64 std root hash>\n[<extension line>\n]*
//! ```
//!
//! Cordon's origin is `cordon/<label>/<store>` (e.g. `cordon/gw-eu/EU`); the store's checkpoint
//! key uses the origin as its key name, as transparency-log tooling expects.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::merkle::Hash;
use crate::note::{self, NoteError, NoteSigner, NoteVerifier, SignedNote};

/// A checkpoint body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Optional extension lines (without their newlines).
    pub extensions: Vec<String>,
}

fn bad(why: &'static str) -> NoteError {
    NoteError::MalformedCheckpoint(why)
}

impl Checkpoint {
    pub fn new(origin: &str, size: u64, root: Hash) -> Self {
        Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The body text.
    pub fn to_text(&self) -> String {
        let mut s = format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root));
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parse a body strictly: non-empty origin, canonical decimal size, canonical base64 of 32
    /// bytes, non-empty extension lines.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let body = text.strip_suffix('\n').ok_or(bad("does not end in a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(bad("empty origin"));
        }
        let size = lines.next().ok_or(bad("no tree size"))?;
        if size.is_empty()
            || size.len() > 20
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(bad("tree size is not a canonical decimal"));
        }
        let size: u64 = size.parse().map_err(|_| bad("tree size out of range"))?;
        let root = lines.next().ok_or(bad("no root hash"))?;
        let root = note::b64_strict(root).ok_or(bad("root hash is not canonical base64"))?;
        let root: Hash = root.try_into().map_err(|_| bad("root hash is not 32 bytes"))?;
        let mut extensions = Vec::new();
        for l in lines {
            if l.is_empty() {
                return Err(bad("empty extension line"));
            }
            extensions.push(l.to_owned());
        }
        if origin
            .chars()
            .chain(extensions.iter().flat_map(|e| e.chars()))
            .any(char::is_control)
        {
            return Err(bad("control characters"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// The signed note.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, NoteError> {
        signer.sign(&self.to_text())
    }

    /// Parse a signed checkpoint and verify it against `known` (see [`SignedNote::verify`]).
    pub fn open(note: &[u8], known: &[NoteVerifier]) -> Result<Self, NoteError> {
        Self::parse(&note::open(note, known)?)
    }

    /// Parse a signed checkpoint without verifying its signatures.
    pub fn parse_unverified(note: &[u8]) -> Result<Self, NoteError> {
        Self::parse(&SignedNote::parse(note)?.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> NoteSigner {
        NoteSigner::from_seed("cordon/test/EU", &[3; 32]).unwrap()
    }

    #[test]
    fn round_trip_and_tampering_is_rejected() {
        let s = signer();
        let v = [s.verifier()];
        let mut c = Checkpoint::new("cordon/test/EU", 1234, [7; 32]);
        let note = c.sign(&s).unwrap();
        assert!(
            note.starts_with(
                "cordon/test/EU\n1234\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n\n\u{2014} "
            )
        );
        assert_eq!(Checkpoint::open(note.as_bytes(), &v).unwrap(), c);
        c.extensions.push("ext one".into());
        assert_eq!(Checkpoint::open(c.sign(&s).unwrap().as_bytes(), &v).unwrap(), c);
        // Changed size, root, signature, key id: rejected.
        let changed_size = note.replacen("\n1234\n", "\n1235\n", 1);
        assert!(Checkpoint::open(changed_size.as_bytes(), &v).is_err());
        let changed_root = note.replacen("BwcHBwcH", "CAcHBwcH", 1);
        assert!(Checkpoint::open(changed_root.as_bytes(), &v).is_err());
        let sig_line = note.lines().last().unwrap();
        let b64 = sig_line.rsplit(' ').next().unwrap();
        let mut blob = B64.decode(b64).unwrap();
        blob[10] ^= 1;
        let bad_sig = note.replace(b64, &B64.encode(&blob));
        assert!(matches!(
            Checkpoint::open(bad_sig.as_bytes(), &v),
            Err(NoteError::InvalidSignature { .. })
        ));
        blob[10] ^= 1;
        blob[0] ^= 1;
        let bad_id = note.replace(b64, &B64.encode(&blob));
        assert!(matches!(
            Checkpoint::open(bad_id.as_bytes(), &v),
            Err(NoteError::UnknownKey { .. })
        ));
        // Another key: unknown.
        let other = NoteSigner::from_seed("cordon/test/EU", &[4; 32]).unwrap();
        let by_other = Checkpoint::new("cordon/test/EU", 1234, [7; 32])
            .sign(&other)
            .unwrap();
        assert!(Checkpoint::open(by_other.as_bytes(), &v).is_err());
        // Non-canonical bodies.
        for body in [
            "o\n01\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "o\n+1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "o\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc\n",
            "o\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH\n",
            "\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "o\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
            "o\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n\n",
            "o\n99999999999999999999\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
        ] {
            assert!(Checkpoint::parse(body).is_err(), "{body:?}");
        }
        assert!(Checkpoint::parse("o\n0\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n").is_ok());
    }

    /// Interop with Cloudflare's `tlog_tiles` 0.2 checkpoint parser/formatter.
    #[test]
    fn interop_with_tlog_tiles_crate() {
        let c = Checkpoint::new("cordon/test/EU", 99, [0xab; 32]);
        let theirs = tlog_tiles::Checkpoint::from_bytes(c.to_text().as_bytes()).unwrap();
        assert_eq!(theirs.origin(), "cordon/test/EU");
        assert_eq!(theirs.size(), 99);
        assert_eq!(theirs.hash().0, [0xab; 32]);
        let made = tlog_tiles::Checkpoint::new("cordon/test/EU", 99, tlog_tiles::Hash([0xab; 32]), "")
            .unwrap()
            .to_bytes();
        assert_eq!(Checkpoint::parse(std::str::from_utf8(&made).unwrap()).unwrap(), c);
        // A note we sign carries a checkpoint they parse.
        let note = c.sign(&signer()).unwrap();
        let parsed = signed_note::Note::from_bytes(note.as_bytes()).unwrap();
        assert!(tlog_tiles::Checkpoint::from_bytes(parsed.text()).is_ok());
    }
}

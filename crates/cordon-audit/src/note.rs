//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519 keys.
//!
//! ```text
//! note      = text "\n" 1*signature-line
//! text      = UTF-8 lines, each ending in "\n", no other control characters
//! signature = "— " key-name " " base64(4-byte key id || 64-byte Ed25519 signature) "\n"
//! key id    = first 4 bytes (big endian) of SHA-256(key-name || "\n" || 0x01 || 32-byte public key)
//! verifier  = key-name "+" 8 hex digits of the key id "+" base64(0x01 || public key)
//! ```
//!
//! Parsing is strict (canonical base64, no stray lines, at most 100 signatures). Opening a note
//! needs at least one signature by a known key and every known-key signature valid; signatures by
//! unknown keys (e.g. witnesses) are ignored.

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// The signature-line prefix: U+2014 EM DASH and a space.
pub const SIG_PREFIX: &str = "\u{2014} ";
const ALG_ED25519: u8 = 0x01;
const MAX_SIGS: usize = 100;

/// Why a note, checkpoint or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
    #[error("malformed verifier key: {0}")]
    BadVerifierKey(&'static str),
    #[error("invalid key name (empty, or contains whitespace or '+')")]
    BadKeyName,
    #[error("invalid signature by {name}+{id:08x}")]
    InvalidSignature { name: String, id: u32 },
    #[error("no signature by a known key (signed by: {signers})")]
    UnknownKey { signers: String },
    #[error("signing key: {0}")]
    Key(&'static str),
}

/// Key names: non-empty, no whitespace (Unicode), no '+'.
pub fn is_key_name_valid(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// The 4-byte key id of an Ed25519 key.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut buf = Vec::with_capacity(name.len() + 2 + 32);
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'\n');
    buf.push(ALG_ED25519);
    buf.extend_from_slice(public_key);
    let d = digest(&SHA256, &buf);
    let d = d.as_ref();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Decode canonical standard base64 (padding required, re-encoding gives the same text).
pub(crate) fn b64_strict(s: &str) -> Option<Vec<u8>> {
    let v = B64.decode(s).ok()?;
    (B64.encode(&v) == s).then_some(v)
}

/// An Ed25519 signing key with its note key name. Clones share the key.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key: std::sync::Arc<Ed25519KeyPair>,
    public: [u8; 32],
    id: u32,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("id", &format_args!("{:08x}", self.id))
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A fresh random key as PKCS#8 (v2) DER.
    pub fn generate_pkcs8() -> Result<Vec<u8>, NoteError> {
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| NoteError::Key("key generation failed"))
    }

    /// A signer from a PKCS#8 DER Ed25519 key.
    pub fn from_pkcs8(name: &str, der: &[u8]) -> Result<Self, NoteError> {
        let key = Ed25519KeyPair::from_pkcs8(der)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(der))
            .map_err(|_| NoteError::Key("not a PKCS#8 Ed25519 key"))?;
        Self::new(name, key)
    }

    /// A signer from a raw 32-byte Ed25519 seed (tests, interop).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        let key =
            Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| NoteError::Key("bad Ed25519 seed"))?;
        Self::new(name, key)
    }

    fn new(name: &str, key: Ed25519KeyPair) -> Result<Self, NoteError> {
        if !is_key_name_valid(name) {
            return Err(NoteError::BadKeyName);
        }
        let mut public = [0u8; 32];
        public.copy_from_slice(key.public_key().as_ref());
        Ok(NoteSigner {
            name: name.to_owned(),
            id: key_id(name, &public),
            key: std::sync::Arc::new(key),
            public,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            id: self.id,
            public: self.public,
        }
    }

    /// The signature line for `text` (without checking the text).
    fn signature_line(&self, text: &str) -> String {
        let sig = self.key.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&self.id.to_be_bytes());
        blob.extend_from_slice(sig.as_ref());
        format!("{SIG_PREFIX}{} {}\n", self.name, B64.encode(blob))
    }

    /// Sign `text` (which must be a valid note text): the whole note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        Ok(format!("{text}\n{}", self.signature_line(text)))
    }
}

/// A verifier key: name, key id, Ed25519 public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: u32,
    public: [u8; 32],
}

impl NoteVerifier {
    /// Parse `<name>+<8 hex key id>+<base64(0x01 || public key)>`; the id must match the key.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let vkey = vkey.trim_end_matches('\n');
        let (name, rest) = vkey
            .split_once('+')
            .ok_or(NoteError::BadVerifierKey("expected name+id+key"))?;
        let (id_hex, key64) = rest
            .split_once('+')
            .ok_or(NoteError::BadVerifierKey("expected name+id+key"))?;
        if !is_key_name_valid(name) {
            return Err(NoteError::BadKeyName);
        }
        if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NoteError::BadVerifierKey("key id is not 8 hex digits"));
        }
        let id = u32::from_str_radix(id_hex, 16).map_err(|_| NoteError::BadVerifierKey("key id"))?;
        let key = b64_strict(key64).ok_or(NoteError::BadVerifierKey("key is not canonical base64"))?;
        if key.len() != 33 || key[0] != ALG_ED25519 {
            return Err(NoteError::BadVerifierKey("not an Ed25519 key (0x01 || 32 bytes)"));
        }
        let mut public = [0u8; 32];
        public.copy_from_slice(&key[1..]);
        if key_id(name, &public) != id {
            return Err(NoteError::BadVerifierKey("key id does not match the key"));
        }
        Ok(NoteVerifier {
            name: name.to_owned(),
            id,
            public,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    fn verify(&self, text: &str, sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public)
            .verify(text.as_bytes(), sig)
            .is_ok()
    }
}

impl std::fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut key = vec![ALG_ED25519];
        key.extend_from_slice(&self.public);
        write!(f, "{}+{:08x}+{}", self.name, self.id, B64.encode(key))
    }
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub id: u32,
    /// The signature proper (64 bytes for Ed25519; other algorithms may differ).
    pub sig: Vec<u8>,
}

/// A parsed (not yet verified) note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedNote {
    /// The signed text, ending in "\n".
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("text does not end in a newline"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed("text contains control characters"));
    }
    Ok(())
}

impl SignedNote {
    /// Parse a note strictly.
    pub fn parse(note: &[u8]) -> Result<Self, NoteError> {
        let note = std::str::from_utf8(note).map_err(|_| NoteError::Malformed("not UTF-8"))?;
        // The text ends at the last blank line ("\n\n"); signatures follow.
        let split = note
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
        check_text(text)?;
        if !sigs.ends_with('\n') {
            return Err(NoteError::Malformed("signature block does not end in a newline"));
        }
        let mut signatures = Vec::new();
        for line in sigs[..sigs.len() - 1].split('\n') {
            let rest = line.strip_prefix(SIG_PREFIX).ok_or(NoteError::Malformed(
                "signature line does not start with an em dash",
            ))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or(NoteError::Malformed("signature line has no space"))?;
            if !is_key_name_valid(name) {
                return Err(NoteError::BadKeyName);
            }
            let blob = b64_strict(b64).ok_or(NoteError::Malformed("signature is not canonical base64"))?;
            if blob.len() < 5 {
                return Err(NoteError::Malformed("signature too short"));
            }
            signatures.push(NoteSignature {
                name: name.to_owned(),
                id: u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]),
                sig: blob[4..].to_vec(),
            });
            if signatures.len() > MAX_SIGS {
                return Err(NoteError::Malformed("too many signatures"));
            }
        }
        if signatures.is_empty() {
            return Err(NoteError::Malformed("no signatures"));
        }
        Ok(SignedNote {
            text: text.to_owned(),
            signatures,
        })
    }

    /// Check the signatures against `known`: every signature by a known (name, id) must verify and
    /// at least one must exist. Returns the verifiers that signed.
    pub fn verify<'a>(&self, known: &'a [NoteVerifier]) -> Result<Vec<&'a NoteVerifier>, NoteError> {
        let mut ok = Vec::new();
        for s in &self.signatures {
            let Some(v) = known.iter().find(|v| v.name == s.name && v.id == s.id) else {
                continue;
            };
            if !v.verify(&self.text, &s.sig) {
                return Err(NoteError::InvalidSignature {
                    name: s.name.clone(),
                    id: s.id,
                });
            }
            if !ok
                .iter()
                .any(|o: &&NoteVerifier| o.id == v.id && o.name == v.name)
            {
                ok.push(v);
            }
        }
        if ok.is_empty() {
            let signers: Vec<String> = self
                .signatures
                .iter()
                .map(|s| format!("{}+{:08x}", s.name, s.id))
                .collect();
            return Err(NoteError::UnknownKey {
                signers: signers.join(", "),
            });
        }
        Ok(ok)
    }
}

/// Parse and verify a note; returns its text.
pub fn open(note: &[u8], known: &[NoteVerifier]) -> Result<String, NoteError> {
    let n = SignedNote::parse(note)?;
    n.verify(known)?;
    Ok(n.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(name: &str, b: u8) -> NoteSigner {
        NoteSigner::from_seed(name, &[b; 32]).unwrap()
    }

    #[test]
    fn sign_parse_verify_round_trip_and_rejections() {
        let s = signer("example.com/log", 7);
        let note = s.sign("hello\nworld\n").unwrap();
        assert!(note.starts_with("hello\nworld\n\n\u{2014} example.com/log "));
        let v = NoteVerifier::parse(&s.verifier().to_string()).unwrap();
        assert_eq!(v, s.verifier());
        assert_eq!(
            open(note.as_bytes(), std::slice::from_ref(&v)).unwrap(),
            "hello\nworld\n"
        );
        // Unknown key only: refused; an extra unknown signature: ignored.
        let other = signer("witness", 9);
        assert!(matches!(
            open(note.as_bytes(), &[other.verifier()]),
            Err(NoteError::UnknownKey { .. })
        ));
        let cosigned = format!("{note}{}", other.signature_line("hello\nworld\n"));
        assert_eq!(
            open(cosigned.as_bytes(), std::slice::from_ref(&v)).unwrap(),
            "hello\nworld\n"
        );
        // Changed text, bad base64, no signatures, no trailing newline, bad key id.
        let changed = note.replacen("world", "World", 1);
        assert!(matches!(
            open(changed.as_bytes(), std::slice::from_ref(&v)),
            Err(NoteError::InvalidSignature { .. })
        ));
        let line = note.lines().last().unwrap();
        let b64 = line.rsplit(' ').next().unwrap();
        let unpadded = note.replace(b64, b64.trim_end_matches('='));
        assert!(open(unpadded.as_bytes(), std::slice::from_ref(&v)).is_err());
        assert!(open(b"hello\n\n", std::slice::from_ref(&v)).is_err());
        assert!(open(note.trim_end().as_bytes(), std::slice::from_ref(&v)).is_err());
        assert!(s.sign("no newline").is_err());
        assert!(s.sign("tab\there\n").is_err());
        let mut vk = v.to_string();
        let id_at = vk.find('+').unwrap() + 1;
        vk.replace_range(
            id_at..id_at + 1,
            if &vk[id_at..id_at + 1] == "0" { "1" } else { "0" },
        );
        assert!(NoteVerifier::parse(&vk).is_err());
        assert!(NoteSigner::from_seed("bad name", &[1; 32]).is_err());
        assert!(NoteSigner::from_seed("a+b", &[1; 32]).is_err());
        // PKCS#8 round trip.
        let der = NoteSigner::generate_pkcs8().unwrap();
        let k = NoteSigner::from_pkcs8("n", &der).unwrap();
        assert_eq!(
            open(k.sign("x\n").unwrap().as_bytes(), &[k.verifier()]).unwrap(),
            "x\n"
        );
    }

    /// Interop with Cloudflare's `signed_note` 0.2 (a port of Go's golang.org/x/mod/sumdb/note).
    #[test]
    fn interop_with_signed_note_crate() {
        use signed_note::{Note, Signer as _, StandardSigner, StandardVerifier, VerifierList};
        let seed = [42u8; 32];
        let ours = signer("cordon/test/EU", 42);
        // Theirs accepts ours.
        let text = "cordon/test/EU\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
        let note = ours.sign(text).unwrap();
        let their_v = StandardVerifier::new(&ours.verifier().to_string()).unwrap();
        let parsed = Note::from_bytes(note.as_bytes()).unwrap();
        let (verified, _) = parsed
            .verify(&VerifierList::new(vec![Box::new(their_v)]))
            .unwrap();
        assert_eq!(verified.len(), 1);
        assert_eq!(parsed.text(), text.as_bytes());
        // Ours accepts theirs: Go's private key format is PRIVATE+KEY+name+id+base64(0x01 || seed).
        let mut sk = vec![ALG_ED25519];
        sk.extend_from_slice(&seed);
        let skey = format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            ours.name(),
            ours.key_id(),
            B64.encode(sk)
        );
        let their_s = StandardSigner::new(&skey).unwrap();
        assert_eq!(their_s.key_id(), ours.key_id());
        let mut n = Note::new(text.as_bytes(), &[]).unwrap();
        n.add_sigs(&[&their_s]).unwrap();
        let bytes = n.to_bytes();
        assert_eq!(open(&bytes, &[ours.verifier()]).unwrap(), text);
        // Ed25519 is deterministic: byte-identical notes.
        assert_eq!(bytes, note.as_bytes());
    }
}

//! What protects the per-subject data keys at rest: the [`KeyWrap`] seam between the
//! [`crate::Keystore`] and a master key. [`LocalMasterKey`] (AES-256-GCM under a 32-byte key from
//! a file or `CORDON_MASTER_KEY`) is the one Cordon ships; a KMS (AWS KMS `Encrypt`/`Decrypt`, a
//! Vault transit key, a PKCS#11 token) implements the same two calls, so the master key never has
//! to sit in the gateway's memory. Crypto-shredding is unaffected by the choice: it destroys the
//! wrapped data key, not the master key.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// Why a data key could not be wrapped or unwrapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyWrapError {
    /// The wrapped bytes are not this wrapper's format (wrong length, unknown version).
    #[error("not a wrapped data key: {0}")]
    Malformed(&'static str),
    /// Authentication failed: another master key, another context, or modified bytes.
    #[error("the data key does not unwrap under this master key")]
    Rejected,
    /// The wrapper could not run (random source, KMS unreachable); fail closed.
    #[error("key wrapping unavailable: {0}")]
    Unavailable(String),
}

/// Wraps and unwraps 32-byte data keys. `context` (jurisdiction and subject key id) is bound to the
/// wrapped key: unwrapping with another context must fail, so a wrapped key cannot be moved to
/// another subject or jurisdiction.
pub trait KeyWrap: Send + Sync {
    fn wrap(&self, context: &[u8], data_key: &[u8; 32]) -> Result<Vec<u8>, KeyWrapError>;
    fn unwrap(&self, context: &[u8], wrapped: &[u8]) -> Result<[u8; 32], KeyWrapError>;
}

/// AES-256-GCM under a local 32-byte master key; wrapped = nonce (12) || ciphertext (32) || tag (16).
pub struct LocalMasterKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for LocalMasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalMasterKey")
    }
}

/// Length of a [`LocalMasterKey`] wrapped key.
pub(crate) const LOCAL_WRAPPED_LEN: usize = NONCE_LEN + 32 + 16;

impl LocalMasterKey {
    pub fn new(master_key: [u8; 32]) -> Result<LocalMasterKey, KeyWrapError> {
        let key = UnboundKey::new(&AES_256_GCM, &master_key)
            .map_err(|_| KeyWrapError::Unavailable("bad AES-256 key".into()))?;
        Ok(LocalMasterKey {
            key: LessSafeKey::new(key),
        })
    }
}

impl KeyWrap for LocalMasterKey {
    fn wrap(&self, context: &[u8], data_key: &[u8; 32]) -> Result<Vec<u8>, KeyWrapError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| KeyWrapError::Unavailable("random source failed".into()))?;
        let mut out = Vec::with_capacity(LOCAL_WRAPPED_LEN);
        out.extend_from_slice(&nonce);
        let mut ct = data_key.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context), &mut ct)
            .map_err(|_| KeyWrapError::Unavailable("AES-GCM seal failed".into()))?;
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn unwrap(&self, context: &[u8], wrapped: &[u8]) -> Result<[u8; 32], KeyWrapError> {
        if wrapped.len() != LOCAL_WRAPPED_LEN {
            return Err(KeyWrapError::Malformed("a locally wrapped key is 60 bytes"));
        }
        let mut buf = wrapped.to_vec();
        let (nonce, ct) = buf.split_at_mut(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyWrapError::Malformed("bad nonce"))?;
        let dk = self
            .key
            .open_in_place(nonce, Aad::from(context), ct)
            .map_err(|_| KeyWrapError::Rejected)?;
        let mut out = [0u8; 32];
        out.copy_from_slice(dk);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_wrap_round_trips_and_binds_key_and_context() {
        let k = LocalMasterKey::new([7; 32]).unwrap();
        let w = k.wrap(b"EU\0alice", &[9; 32]).unwrap();
        assert_eq!(w.len(), LOCAL_WRAPPED_LEN);
        assert_eq!(k.unwrap(b"EU\0alice", &w).unwrap(), [9; 32]);
        assert_eq!(k.unwrap(b"EU\0bob", &w), Err(KeyWrapError::Rejected));
        let other = LocalMasterKey::new([8; 32]).unwrap();
        assert_eq!(other.unwrap(b"EU\0alice", &w), Err(KeyWrapError::Rejected));
        let mut flipped = w.clone();
        flipped[20] ^= 1;
        assert_eq!(k.unwrap(b"EU\0alice", &flipped), Err(KeyWrapError::Rejected));
        assert!(matches!(
            k.unwrap(b"EU\0alice", &w[1..]),
            Err(KeyWrapError::Malformed(_))
        ));
    }
}

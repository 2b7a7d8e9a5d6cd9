//! Payload encryption with crypto-shredding. Each subject has a random AES-256 data key per
//! jurisdiction, stored wrapped (AES-256-GCM under the master key, bound by AAD to jurisdiction
//! and key id) in `<keys_dir>/<J>/data-keys/<hex(key_id)>.key` = nonce(12) || ciphertext+tag(48).
//! Payloads are AES-256-GCM under the data key (AAD binds jurisdiction and key id too), stored as
//! base64 in [`Payload::Encrypted`] with `key_id` = the subject's pseudonym.
//!
//! An export bundle that shows decrypted payloads carries their subjects' raw data keys
//! ([`Keystore::export_data_key`]) so that its verifier can check the plaintext against the
//! attested ciphertext ([`open_payload_with_key`]).
//!
//! Shredding overwrites and deletes the wrapped key (and forgets the cached copy): the payload
//! can no longer be decrypted, while the log, which hashes the ciphertext, still verifies.
//! (On copy-on-write or flash storage the overwrite is best effort; the master-key wrapping is
//! what protects a stale copy.)

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::AuditError;
use crate::key_wrap::{KeyWrap, KeyWrapError, LocalMasterKey};
use crate::keyfile::{check_component, create_private_dir, create_private_file, destroy_file, sync_dir};
use crate::record::Payload;

/// The `alg` of encrypted payloads.
pub const PAYLOAD_ALG: &str = "A256GCM";
const WRAP_AAD: &[u8] = b"cordon-audit data key v1\0";
const PAYLOAD_AAD: &[u8] = b"cordon-audit payload v1\0";
const CACHE_MAX: usize = 4096;
/// Longest wrapped key file read (a KMS's ciphertext blob is larger than the local 60 bytes).
const WRAPPED_MAX: usize = 4096;

/// Per-jurisdiction, per-subject payload keys, wrapped by a master key ([`KeyWrap`]).
pub struct Keystore {
    dir: PathBuf,
    master: Arc<dyn KeyWrap>,
    /// Unwrapped data keys by `J \0 key_id`. The lock also serializes creation and shredding.
    cache: Mutex<HashMap<String, Arc<LessSafeKey>>>,
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn aad(prefix: &[u8], jurisdiction: &str, key_id: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(prefix.len() + jurisdiction.len() + 1 + key_id.len());
    a.extend_from_slice(prefix);
    a.extend_from_slice(jurisdiction.as_bytes());
    a.push(0);
    a.extend_from_slice(key_id.as_bytes());
    a
}

fn random_nonce() -> Result<[u8; NONCE_LEN], AuditError> {
    let mut n = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut n).map_err(|_| AuditError::Crypto("random source failed"))?;
    Ok(n)
}

fn aes_key(bytes: &[u8]) -> Result<LessSafeKey, AuditError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| AuditError::Crypto("bad AES-256 key"))
}

/// How far [`Keystore::data_key`] may go on a cache miss.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// Only the in-memory cache.
    Cached,
    /// Read the key file.
    Load,
    /// Read the key file, or create the key.
    Create,
}

/// AES-256-GCM `plaintext` under `key`, bound to the jurisdiction and subject by the AAD.
fn seal_with(
    key: &LessSafeKey,
    jurisdiction: &str,
    subject_pseudonym: &str,
    plaintext: &[u8],
) -> Result<Payload, AuditError> {
    let nonce = random_nonce()?;
    let mut ct = Vec::with_capacity(plaintext.len() + 16);
    ct.extend_from_slice(plaintext);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad(PAYLOAD_AAD, jurisdiction, subject_pseudonym).as_slice()),
        &mut ct,
    )
    .map_err(|_| AuditError::Crypto("payload encryption failed"))?;
    Ok(Payload::Encrypted {
        alg: PAYLOAD_ALG.to_owned(),
        key_id: subject_pseudonym.to_owned(),
        nonce: B64.encode(nonce),
        ciphertext: B64.encode(&ct),
    })
}

/// A subject's raw AES-256 data key ([`Keystore::export_data_key`]). Its `Debug` does not show
/// the key.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey(pub [u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// The key id, nonce and ciphertext of an encrypted payload of a supported algorithm.
fn encrypted_parts(payload: &Payload) -> Result<(&str, &str, &str), AuditError> {
    let Payload::Encrypted {
        alg,
        key_id,
        nonce,
        ciphertext,
    } = payload
    else {
        return Err(AuditError::InvalidInput {
            what: "payload",
            why: "not an encrypted payload",
        });
    };
    if alg != PAYLOAD_ALG {
        return Err(AuditError::InvalidInput {
            what: "payload alg",
            why: "unsupported algorithm",
        });
    }
    Ok((key_id, nonce, ciphertext))
}

/// Decrypt `payload` (an encrypted payload of [`PAYLOAD_ALG`]) under `key`, with the AAD of
/// `jurisdiction` and the payload's key id.
fn open_with(key: &LessSafeKey, jurisdiction: &str, payload: &Payload) -> Result<Vec<u8>, AuditError> {
    let (key_id, nonce, ciphertext) = encrypted_parts(payload)?;
    let bad_b64 = |_| AuditError::InvalidInput {
        what: "payload",
        why: "nonce or ciphertext is not base64",
    };
    let nonce = B64.decode(nonce).map_err(bad_b64)?;
    let mut ct = B64.decode(ciphertext).map_err(bad_b64)?;
    let nonce =
        Nonce::try_assume_unique_for_key(&nonce).map_err(|_| AuditError::Crypto("bad payload nonce"))?;
    let plain = key
        .open_in_place(
            nonce,
            Aad::from(aad(PAYLOAD_AAD, jurisdiction, key_id).as_slice()),
            &mut ct,
        )
        .map_err(|_| AuditError::Crypto("payload does not decrypt (modified, or wrong key)"))?;
    let n = plain.len();
    ct.truncate(n);
    Ok(ct)
}

/// Decrypt `payload` with a data key held outside any keystore (e.g. one carried in an export
/// bundle): the same algorithm and AAD (jurisdiction and the payload's key id) as
/// [`Keystore::open_payload`]. AES-GCM authenticates: an `Ok` means this key sealed exactly this
/// ciphertext for this jurisdiction and key id.
pub fn open_payload_with_key(
    key: &DataKey,
    jurisdiction: &str,
    payload: &Payload,
) -> Result<Vec<u8>, AuditError> {
    open_with(&aes_key(&key.0)?, jurisdiction, payload)
}

fn check_key_id(key_id: &str) -> Result<(), AuditError> {
    if key_id.is_empty() || key_id.len() > 100 {
        return Err(AuditError::InvalidInput {
            what: "payload key id",
            why: "must be 1 to 100 bytes",
        });
    }
    Ok(())
}

impl Keystore {
    /// Open the key directory (created 0700 if missing) with a local master key.
    pub fn open(keys_dir: &Path, master_key: [u8; 32]) -> Result<Self, AuditError> {
        let local = LocalMasterKey::new(master_key).map_err(|_| AuditError::Crypto("bad AES-256 key"))?;
        Self::open_with(keys_dir, Arc::new(local))
    }

    /// Open the key directory (created 0700 if missing) with any [`KeyWrap`] (e.g. a KMS).
    pub fn open_with(keys_dir: &Path, master: Arc<dyn KeyWrap>) -> Result<Self, AuditError> {
        create_private_dir(keys_dir).map_err(AuditError::io(keys_dir, "create key directory"))?;
        Ok(Keystore {
            dir: keys_dir.to_path_buf(),
            master,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn jurisdiction_dir(&self, jurisdiction: &str) -> PathBuf {
        self.dir.join(jurisdiction).join("data-keys")
    }

    fn key_path(&self, jurisdiction: &str, key_id: &str) -> PathBuf {
        self.jurisdiction_dir(jurisdiction)
            .join(format!("{}.key", hex::encode(key_id)))
    }

    /// The subject's data key; read from disk (or, when `lookup` is [`Lookup::Create`], created)
    /// on a cache miss, unless `lookup` is [`Lookup::Cached`].
    fn data_key(
        &self,
        jurisdiction: &str,
        key_id: &str,
        lookup: Lookup,
    ) -> Result<Option<Arc<LessSafeKey>>, AuditError> {
        check_component("jurisdiction", jurisdiction)?;
        check_key_id(key_id)?;
        let cache_key = format!("{jurisdiction}\0{key_id}");
        let path = self.key_path(jurisdiction, key_id);
        // A cached key counts only while its file exists: another process (`cordon audit shred`)
        // may have destroyed it, and nothing must be sealed under a destroyed key. The check is a
        // path lookup, done before taking the lock so other seals do not queue behind it.
        let exists = fs::symlink_metadata(&path).is_ok();
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if exists {
                if let Some(k) = cache.get(&cache_key) {
                    return Ok(Some(k.clone()));
                }
            } else {
                cache.remove(&cache_key);
            }
        }
        if lookup == Lookup::Cached {
            return Ok(None);
        }
        // Loading and creating run without the lock: a new subject's key creation (with its
        // fsyncs) must not hold up every other subject's seal. Creation is atomic (a temporary file
        // hard-linked into place), so racing creators, here or in another process, all end up
        // using the one file that won.
        let key = match self.load(&path, jurisdiction, key_id)? {
            Some(k) => k,
            None if lookup == Lookup::Create => {
                let dir = self.jurisdiction_dir(jurisdiction);
                create_private_dir(&dir).map_err(AuditError::io(&dir, "create key directory"))?;
                let mut dk = [0u8; 32];
                aws_lc_rs::rand::fill(&mut dk).map_err(|_| AuditError::Crypto("random source failed"))?;
                let wrapped = self.wrap(jurisdiction, key_id, &dk)?;
                create_private_file(&path, &wrapped).map_err(AuditError::io(&dir, "create data key"))?;
                // Another process may have won the race: use what is on disk.
                self.load(&path, jurisdiction, key_id)?
                    .ok_or_else(|| AuditError::Key {
                        path: dir.clone(),
                        detail: "data key vanished after creation".into(),
                    })?
            }
            None => return Ok(None),
        };
        let key = Arc::new(key);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(cache_key, key.clone());
        Ok(Some(key))
    }

    fn wrap(&self, jurisdiction: &str, key_id: &str, dk: &[u8; 32]) -> Result<Vec<u8>, AuditError> {
        self.master
            .wrap(&aad(WRAP_AAD, jurisdiction, key_id), dk)
            .map_err(|e| match e {
                KeyWrapError::Unavailable(why) => AuditError::Io {
                    path: self.jurisdiction_dir(jurisdiction),
                    op: "wrap data key",
                    source: Arc::new(io::Error::other(why)),
                },
                _ => AuditError::Crypto("wrapping a data key failed"),
            })
    }

    fn load(&self, path: &Path, jurisdiction: &str, key_id: &str) -> Result<Option<LessSafeKey>, AuditError> {
        match self.load_raw(path, jurisdiction, key_id)? {
            Some(dk) => aes_key(&dk.0).map(Some),
            None => Ok(None),
        }
    }

    /// The unwrapped data key in `path`; `Ok(None)` when there is no such file.
    fn load_raw(&self, path: &Path, jurisdiction: &str, key_id: &str) -> Result<Option<DataKey>, AuditError> {
        let dir = self.jurisdiction_dir(jurisdiction);
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AuditError::io(&dir, "read data key")(e)),
        };
        if bytes.is_empty() || bytes.len() > WRAPPED_MAX {
            return Err(AuditError::Key {
                path: dir,
                detail: format!("a wrapped data key has {} bytes", bytes.len()),
            });
        }
        let dk = self
            .master
            .unwrap(&aad(WRAP_AAD, jurisdiction, key_id), &bytes)
            .map_err(|e| match e {
                // The wrapper could not run (a KMS outage): an availability failure, not a bad key.
                KeyWrapError::Unavailable(why) => AuditError::Io {
                    path: dir.clone(),
                    op: "unwrap data key",
                    source: Arc::new(io::Error::other(why)),
                },
                other => AuditError::Key {
                    path: dir.clone(),
                    detail: other.to_string(),
                },
            })?;
        Ok(Some(DataKey(dk)))
    }

    /// Encrypt `plaintext` under the subject's data key (created on first use: file I/O and
    /// fsyncs; see [`Keystore::seal_cached`] for the call that never touches more than a `stat`).
    pub fn seal(
        &self,
        jurisdiction: &str,
        subject_pseudonym: &str,
        plaintext: &[u8],
    ) -> Result<Payload, AuditError> {
        let key = self
            .data_key(jurisdiction, subject_pseudonym, Lookup::Create)?
            .ok_or(AuditError::Crypto("data key not created"))?;
        seal_with(&key, jurisdiction, subject_pseudonym, plaintext)
    }

    /// [`Keystore::seal`] when the subject's key is already in memory (and its file still exists);
    /// `Ok(None)` when it would have to be read or created, so an async caller can do that part
    /// on a blocking thread.
    pub fn seal_cached(
        &self,
        jurisdiction: &str,
        subject_pseudonym: &str,
        plaintext: &[u8],
    ) -> Result<Option<Payload>, AuditError> {
        match self.data_key(jurisdiction, subject_pseudonym, Lookup::Cached)? {
            Some(key) => seal_with(&key, jurisdiction, subject_pseudonym, plaintext).map(Some),
            None => Ok(None),
        }
    }

    /// Decrypt an encrypted payload. `Err(KeyShredded)` once the subject's key is destroyed.
    pub fn open_payload(&self, jurisdiction: &str, payload: &Payload) -> Result<Vec<u8>, AuditError> {
        let (key_id, ..) = encrypted_parts(payload)?;
        let key = self
            .data_key(jurisdiction, key_id, Lookup::Load)?
            .ok_or_else(|| AuditError::KeyShredded {
                jurisdiction: jurisdiction.to_owned(),
            })?;
        open_with(&key, jurisdiction, payload)
    }

    /// The subject's data key itself, read from its key file and unwrapped (never created, never
    /// cached): `Ok(None)` when there is none (shredded, or never created). For export bundles,
    /// whose verifier checks decrypted payloads against the attested ciphertext with it
    /// ([`open_payload_with_key`]). The key opens every payload of this subject in this
    /// jurisdiction: whoever receives it must treat it as that subject's personal data.
    pub fn export_data_key(&self, jurisdiction: &str, key_id: &str) -> Result<Option<DataKey>, AuditError> {
        check_component("jurisdiction", jurisdiction)?;
        check_key_id(key_id)?;
        self.load_raw(&self.key_path(jurisdiction, key_id), jurisdiction, key_id)
    }

    /// Destroy the subject's data key. `Ok(false)` if there was none.
    pub fn shred(&self, jurisdiction: &str, subject_pseudonym: &str) -> Result<bool, AuditError> {
        check_component("jurisdiction", jurisdiction)?;
        check_key_id(subject_pseudonym)?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.remove(&format!("{jurisdiction}\0{subject_pseudonym}"));
        let dir = self.jurisdiction_dir(jurisdiction);
        let path = self.key_path(jurisdiction, subject_pseudonym);
        let existed = destroy_file(&path).map_err(AuditError::io(&dir, "destroy data key"))?;
        if existed {
            sync_dir(&dir).map_err(AuditError::io(&dir, "fsync dir"))?;
        }
        Ok(existed)
    }
}

/// Development helper: read a master key (64 hex chars, or 32 raw bytes) from `path`, or create
/// one (0600). Production deployments pass the key in from their secret store.
pub fn load_or_create_master_key(path: &Path) -> Result<[u8; 32], AuditError> {
    if let Some(k) = read_master_key(path)? {
        return Ok(k);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent).map_err(AuditError::io(parent, "create key directory"))?;
    }
    let mut k = [0u8; 32];
    aws_lc_rs::rand::fill(&mut k).map_err(|_| AuditError::Crypto("random source failed"))?;
    let text = format!("{}\n", hex::encode(k));
    create_private_file(path, text.as_bytes()).map_err(AuditError::io(path, "create master key"))?;
    read_master_key(path)?.ok_or_else(|| AuditError::Key {
        path: path.to_path_buf(),
        detail: "master key vanished after creation".into(),
    })
}

fn read_master_key(path: &Path) -> Result<Option<[u8; 32]>, AuditError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuditError::io(path, "read master key")(e)),
    };
    let mut k = [0u8; 32];
    if bytes.len() == 32 {
        k.copy_from_slice(&bytes);
        return Ok(Some(k));
    }
    let text = bytes.trim_ascii();
    if text.len() == 64 && hex::decode_to_slice(text, &mut k).is_ok() {
        return Ok(Some(k));
    }
    Err(AuditError::Key {
        path: path.to_path_buf(),
        detail: "master key must be 64 hex characters or 32 raw bytes".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_shred() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::open(dir.path(), [7u8; 32]).unwrap();
        let a = ks.seal("EU", "ps:aaaa", b"hello alice").unwrap();
        let b = ks.seal("EU", "ps:bbbb", b"hello bob").unwrap();
        let Payload::Encrypted { alg, key_id, .. } = &a else {
            panic!("not encrypted")
        };
        assert_eq!((alg.as_str(), key_id.as_str()), ("A256GCM", "ps:aaaa"));
        assert_eq!(ks.open_payload("EU", &a).unwrap(), b"hello alice");
        // A second seal reuses the key; a fresh Keystore unwraps it from disk.
        let a2 = ks.seal("EU", "ps:aaaa", b"again").unwrap();
        let ks2 = Keystore::open(dir.path(), [7u8; 32]).unwrap();
        assert_eq!(ks2.open_payload("EU", &a2).unwrap(), b"again");
        // Bound to the jurisdiction.
        assert!(ks.open_payload("US", &a).is_err());
        // Wrong master key: refused, not garbage.
        let bad = Keystore::open(dir.path(), [8u8; 32]).unwrap();
        assert!(bad.open_payload("EU", &a).is_err());

        assert!(ks.shred("EU", "ps:aaaa").unwrap());
        assert!(!ks.shred("EU", "ps:aaaa").unwrap());
        assert!(matches!(
            ks.open_payload("EU", &a),
            Err(AuditError::KeyShredded { .. })
        ));
        // Another instance (another process) that had the key cached sees the shred too.
        assert!(matches!(
            ks2.open_payload("EU", &a2),
            Err(AuditError::KeyShredded { .. })
        ));
        // Sealing again after a shred makes a new key; the old payloads stay unreadable.
        let a3 = ks2.seal("EU", "ps:aaaa", b"new").unwrap();
        assert_eq!(ks.open_payload("EU", &a3).unwrap(), b"new");
        assert!(ks.open_payload("EU", &a).is_err());
        assert_eq!(ks.open_payload("EU", &b).unwrap(), b"hello bob");
        let e = ks.open_payload("EU", &a).unwrap_err().to_string();
        assert!(!e.contains("aaaa"), "error names the subject: {e}");
    }

    /// The exported raw key opens exactly what the keystore opens (same AAD), nothing once
    /// shredded, and its `Debug` does not print it.
    #[test]
    fn exported_data_key_opens_the_subjects_payloads_only() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::open(dir.path(), [7u8; 32]).unwrap();
        let a = ks.seal("EU", "ps:aaaa", b"hello alice").unwrap();
        let b = ks.seal("EU", "ps:bbbb", b"hello bob").unwrap();
        assert!(ks.export_data_key("EU", "ps:nobody").unwrap().is_none());
        let ka = ks.export_data_key("EU", "ps:aaaa").unwrap().unwrap();
        assert_eq!(open_payload_with_key(&ka, "EU", &a).unwrap(), b"hello alice");
        // Bound to the jurisdiction and to the key id by the AAD; another subject's key fails.
        assert!(open_payload_with_key(&ka, "US", &a).is_err());
        assert!(open_payload_with_key(&ka, "EU", &b).is_err());
        let Payload::Encrypted {
            alg,
            nonce,
            ciphertext,
            ..
        } = a.clone()
        else {
            panic!()
        };
        let relabelled = Payload::Encrypted {
            alg,
            key_id: "ps:bbbb".into(),
            nonce,
            ciphertext,
        };
        assert!(open_payload_with_key(&ka, "EU", &relabelled).is_err());
        let mut other = ka.clone();
        other.0[0] ^= 1;
        assert!(open_payload_with_key(&other, "EU", &a).is_err());
        assert_eq!(format!("{ka:?}"), "DataKey(..)");
        assert!(ks.shred("EU", "ps:aaaa").unwrap());
        assert!(ks.export_data_key("EU", "ps:aaaa").unwrap().is_none());
        // A key already exported still opens what it sealed (that is why it must be guarded).
        assert_eq!(open_payload_with_key(&ka, "EU", &a).unwrap(), b"hello alice");
    }

    /// `seal_cached` seals only with a key already in memory, and never creates or reads one.
    /// A stand-in for a KMS: counts its calls and keeps the wrapped form opaque (a version byte
    /// and the local format), as a KMS ciphertext blob is to the keystore.
    struct CountingKms {
        inner: LocalMasterKey,
        wraps: std::sync::atomic::AtomicUsize,
        unwraps: std::sync::atomic::AtomicUsize,
    }

    impl KeyWrap for CountingKms {
        fn wrap(&self, context: &[u8], data_key: &[u8; 32]) -> Result<Vec<u8>, crate::KeyWrapError> {
            self.wraps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut out = vec![0x4b];
            out.extend(self.inner.wrap(context, data_key)?);
            Ok(out)
        }
        fn unwrap(&self, context: &[u8], wrapped: &[u8]) -> Result<[u8; 32], crate::KeyWrapError> {
            self.unwraps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match wrapped.split_first() {
                Some((0x4b, rest)) => self.inner.unwrap(context, rest),
                _ => Err(crate::KeyWrapError::Malformed("unknown version")),
            }
        }
    }

    #[test]
    fn a_kms_wraps_the_data_keys_and_shredding_still_works() {
        let dir = tempfile::tempdir().unwrap();
        let kms = Arc::new(CountingKms {
            inner: LocalMasterKey::new([5; 32]).unwrap(),
            wraps: Default::default(),
            unwraps: Default::default(),
        });
        let ks = Keystore::open_with(dir.path(), kms.clone()).unwrap();
        let p = ks.seal("EU", "alice", b"hello").unwrap();
        assert_eq!(kms.wraps.load(std::sync::atomic::Ordering::Relaxed), 1);
        // A fresh keystore (another process) unwraps through the KMS.
        let again = Keystore::open_with(dir.path(), kms.clone()).unwrap();
        assert_eq!(again.open_payload("EU", &p).unwrap(), b"hello");
        assert!(kms.unwraps.load(std::sync::atomic::Ordering::Relaxed) >= 1);
        // The local master key cannot read what the KMS wrapped.
        let local = Keystore::open(dir.path(), [5; 32]).unwrap();
        assert!(matches!(
            local.open_payload("EU", &p),
            Err(AuditError::Key { .. })
        ));
        assert!(again.shred("EU", "alice").unwrap());
        assert!(matches!(
            again.open_payload("EU", &p),
            Err(AuditError::KeyShredded { .. })
        ));
    }

    /// A KMS that is down: wrapping and unwrapping fail as unavailable.
    struct DownKms;

    impl KeyWrap for DownKms {
        fn wrap(&self, _: &[u8], _: &[u8; 32]) -> Result<Vec<u8>, crate::KeyWrapError> {
            Err(crate::KeyWrapError::Unavailable("kms unreachable".into()))
        }
        fn unwrap(&self, _: &[u8], _: &[u8]) -> Result<[u8; 32], crate::KeyWrapError> {
            Err(crate::KeyWrapError::Unavailable("kms unreachable".into()))
        }
    }

    #[test]
    fn a_kms_outage_is_an_availability_failure_not_a_bad_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = Keystore::open(dir.path(), [5; 32])
            .unwrap()
            .seal("EU", "alice", b"x")
            .unwrap();
        let down = Keystore::open_with(dir.path(), Arc::new(DownKms)).unwrap();
        assert!(matches!(down.open_payload("EU", &p), Err(AuditError::Io { .. })));
        assert!(matches!(down.seal("EU", "bob", b"y"), Err(AuditError::Io { .. })));
    }

    #[test]
    fn seal_cached_uses_only_a_cached_key_that_still_exists() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::open(dir.path(), [7u8; 32]).unwrap();
        assert!(ks.seal_cached("EU", "ps:aaaa", b"x").unwrap().is_none());
        assert!(
            !ks.key_path("EU", "ps:aaaa").exists(),
            "seal_cached created a key"
        );
        ks.seal("EU", "ps:aaaa", b"first").unwrap();
        let p = ks
            .seal_cached("EU", "ps:aaaa", b"cached")
            .unwrap()
            .expect("cached key");
        assert_eq!(ks.open_payload("EU", &p).unwrap(), b"cached");
        // A key on disk but not in this instance's memory is not read.
        let other = Keystore::open(dir.path(), [7u8; 32]).unwrap();
        assert!(other.seal_cached("EU", "ps:aaaa", b"x").unwrap().is_none());
        // After a shred (here by another instance) the cached key is not used.
        assert!(other.shred("EU", "ps:aaaa").unwrap());
        assert!(ks.seal_cached("EU", "ps:aaaa", b"x").unwrap().is_none());
    }

    /// A new subject's first seals race to create its key (outside the cache lock): every one
    /// succeeds, and every payload opens under the one key that was kept, in this instance and in
    /// a fresh one reading it from disk.
    #[test]
    fn racing_first_seals_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Arc::new(Keystore::open(dir.path(), [7u8; 32]).unwrap());
        let payloads: Vec<Payload> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let ks = ks.clone();
                    s.spawn(move || ks.seal("EU", "ps:race", format!("p{i}").as_bytes()).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let fresh = Keystore::open(dir.path(), [7u8; 32]).unwrap();
        for (i, p) in payloads.iter().enumerate() {
            assert_eq!(ks.open_payload("EU", p).unwrap(), format!("p{i}").as_bytes());
            assert_eq!(fresh.open_payload("EU", p).unwrap(), format!("p{i}").as_bytes());
        }
    }

    #[test]
    fn tampered_payload_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::open(dir.path(), [1u8; 32]).unwrap();
        let Payload::Encrypted {
            alg,
            key_id,
            nonce,
            ciphertext,
        } = ks.seal("EU", "ps:x", b"secret").unwrap()
        else {
            panic!()
        };
        let mut raw = B64.decode(&ciphertext).unwrap();
        raw[0] ^= 1;
        let p = Payload::Encrypted {
            alg,
            key_id,
            nonce,
            ciphertext: B64.encode(raw),
        };
        assert!(ks.open_payload("EU", &p).is_err());
        assert!(ks.open_payload("EU", &Payload::None).is_err());
    }

    #[test]
    fn master_key_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("master.key");
        let k1 = load_or_create_master_key(&p).unwrap();
        let k2 = load_or_create_master_key(&p).unwrap();
        assert_eq!(k1, k2);
        assert_eq!(fs::read_to_string(&p).unwrap().trim(), hex::encode(k1));
        fs::write(&p, b"nope").unwrap();
        assert!(load_or_create_master_key(&p).is_err());
    }
}

//! Pseudonymous subjects: `ps:` + the first 128 bits (32 hex) of HMAC-SHA256 under a random
//! 32-byte key per jurisdiction, kept in `<keys_dir>/<J>/pseudonym.key` (0600, created on first
//! use) and held in memory. The same raw id gets a different pseudonym in each jurisdiction, and
//! without the key a pseudonym cannot be linked back to an id.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use aws_lc_rs::hmac;

use crate::error::AuditError;
use crate::keyfile::{check_component, create_private_dir, create_private_file};

const KEY_FILE: &str = "pseudonym.key";

/// Maps raw subject ids to per-jurisdiction pseudonyms.
pub struct Pseudonymizer {
    dir: PathBuf,
    keys: RwLock<HashMap<String, hmac::Key>>,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pseudonymizer")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Pseudonymizer {
    /// Open the key directory (created 0700 if missing) and load the keys already there.
    pub fn open(keys_dir: &Path) -> Result<Self, AuditError> {
        create_private_dir(keys_dir).map_err(AuditError::io(keys_dir, "create key directory"))?;
        let mut keys = HashMap::new();
        let entries = fs::read_dir(keys_dir).map_err(AuditError::io(keys_dir, "read key directory"))?;
        for entry in entries {
            let entry = entry.map_err(AuditError::io(keys_dir, "read key directory"))?;
            let Some(j) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if check_component("jurisdiction", &j).is_err() {
                continue;
            }
            if let Some(key) = load_key(&entry.path().join(KEY_FILE))? {
                keys.insert(j, key);
            }
        }
        Ok(Pseudonymizer {
            dir: keys_dir.to_path_buf(),
            keys: RwLock::new(keys),
        })
    }

    /// The pseudonym of `raw_subject` in `jurisdiction`: `ps:` + 32 lowercase hex.
    pub fn subject(&self, jurisdiction: &str, raw_subject: &str) -> Result<String, AuditError> {
        {
            let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
            if let Some(k) = keys.get(jurisdiction) {
                return Ok(pseudonym(k, raw_subject));
            }
        }
        check_component("jurisdiction", jurisdiction)?;
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if !keys.contains_key(jurisdiction) {
            let key = self.load_or_create(jurisdiction)?;
            keys.insert(jurisdiction.to_owned(), key);
        }
        match keys.get(jurisdiction) {
            Some(k) => Ok(pseudonym(k, raw_subject)),
            None => Err(AuditError::Crypto("pseudonym key missing after creation")),
        }
    }

    /// The pseudonym of `raw_subject` in `jurisdiction` if that jurisdiction has a key already;
    /// never creates one (for lookups: `shred`, `export`).
    pub fn existing(&self, jurisdiction: &str, raw_subject: &str) -> Option<String> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.get(jurisdiction).map(|k| pseudonym(k, raw_subject))
    }

    fn load_or_create(&self, jurisdiction: &str) -> Result<hmac::Key, AuditError> {
        let dir = self.dir.join(jurisdiction);
        let path = dir.join(KEY_FILE);
        if let Some(k) = load_key(&path)? {
            return Ok(k);
        }
        create_private_dir(&dir).map_err(AuditError::io(&dir, "create key directory"))?;
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| AuditError::Crypto("random source failed"))?;
        create_private_file(&path, &bytes).map_err(AuditError::io(&path, "create pseudonym key"))?;
        // Whoever won a creation race, use what is on disk.
        load_key(&path)?.ok_or_else(|| AuditError::Key {
            path: path.clone(),
            detail: "pseudonym key vanished after creation".into(),
        })
    }
}

fn pseudonym(key: &hmac::Key, raw: &str) -> String {
    let tag = hmac::sign(key, raw.as_bytes());
    let mut out = String::with_capacity(3 + 32);
    out.push_str("ps:");
    crate::record::push_hex_lower(&mut out, &tag.as_ref()[..16]);
    out
}

fn load_key(path: &Path) -> Result<Option<hmac::Key>, AuditError> {
    match fs::read(path) {
        Ok(bytes) if bytes.len() == 32 => Ok(Some(hmac::Key::new(hmac::HMAC_SHA256, &bytes))),
        Ok(bytes) => Err(AuditError::Key {
            path: path.to_path_buf(),
            detail: format!("pseudonym key must be 32 bytes, found {}", bytes.len()),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuditError::io(path, "read pseudonym key")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_and_per_jurisdiction() {
        let dir = tempfile::tempdir().unwrap();
        let p = Pseudonymizer::open(dir.path()).unwrap();
        let eu = p.subject("EU", "alice@example.com").unwrap();
        assert!(eu.starts_with("ps:") && eu.len() == 35, "{eu}");
        assert!(!eu.contains("alice"));
        assert_eq!(p.subject("EU", "alice@example.com").unwrap(), eu);
        assert_ne!(p.subject("EU", "bob@example.com").unwrap(), eu);
        let us = p.subject("US", "alice@example.com").unwrap();
        assert_ne!(us, eu);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = fs::metadata(dir.path().join("EU").join(KEY_FILE)).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o600);
            assert_eq!(m.len(), 32);
        }
        // Reopened: the keys are loaded, the pseudonyms unchanged.
        drop(p);
        let p = Pseudonymizer::open(dir.path()).unwrap();
        assert_eq!(p.subject("EU", "alice@example.com").unwrap(), eu);
        assert_eq!(p.subject("US", "alice@example.com").unwrap(), us);
        // A different key directory gives different pseudonyms.
        let other = tempfile::tempdir().unwrap();
        let q = Pseudonymizer::open(other.path()).unwrap();
        assert_ne!(q.subject("EU", "alice@example.com").unwrap(), eu);
    }

    #[test]
    fn bad_jurisdiction_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = Pseudonymizer::open(dir.path()).unwrap();
        assert!(p.subject("../x", "a").is_err());
        assert!(p.subject("", "a").is_err());
    }

    #[test]
    fn wrong_size_key_is_an_error_not_a_silent_new_key() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("EU")).unwrap();
        fs::write(dir.path().join("EU").join(KEY_FILE), b"short").unwrap();
        let e = Pseudonymizer::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("32 bytes"), "{e}");
    }
}

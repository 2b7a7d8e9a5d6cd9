//! Small file helpers for key material: private directories, race-free creation of 0600 files,
//! directory fsync, and validation of names used as path components.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::AuditError;

/// A jurisdiction (or similar) used as a directory name: 1..=64 of `[A-Za-z0-9_-]`.
pub(crate) fn check_component(what: &'static str, s: &str) -> Result<(), AuditError> {
    if s.is_empty() || s.len() > 64 {
        return Err(AuditError::InvalidInput {
            what,
            why: "must be 1 to 64 characters",
        });
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(AuditError::InvalidInput {
            what,
            why: "only ASCII letters, digits, '_' and '-' are allowed",
        });
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `mkdir -p` with mode 0700 for what it creates.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Create `path` (mode 0600) holding `bytes`, durably, unless it already exists. Written to a
/// temporary file, synced, then hard-linked into place, so a reader never sees a partial key and
/// two creators cannot both win. Returns whether this call created it.
pub(crate) fn create_private_file(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let result = (|| {
        let mut f = o.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = fs::remove_file(&tmp);
    if let Ok(true) = result {
        sync_dir(dir)?;
    }
    result
}

/// Overwrite a file's bytes, sync, remove it and sync its directory. `Ok(false)` if it was absent.
pub(crate) fn destroy_file(path: &Path) -> io::Result<bool> {
    let mut f = match OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len() as usize;
    let mut noise = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut noise).map_err(|_| io::Error::other("random source failed"))?;
    f.write_all(&noise)?;
    f.sync_all()?;
    drop(f);
    fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_validated() {
        assert!(check_component("jurisdiction", "EU").is_ok());
        assert!(check_component("jurisdiction", "us-east_1").is_ok());
        for bad in ["", "..", "a/b", "EU ", "é", &"x".repeat(65)] {
            assert!(check_component("jurisdiction", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn create_private_file_does_not_replace() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        assert!(create_private_file(&p, b"one").unwrap());
        assert!(!create_private_file(&p, b"two").unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"one");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left");
        assert!(destroy_file(&p).unwrap());
        assert!(!destroy_file(&p).unwrap());
    }
}

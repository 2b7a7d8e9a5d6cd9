//! The exclusive `flock` on a directory's `LOCK` file that makes one process the only writer of
//! an audit store, and one replicator the only writer of a DR replica (and the one on a
//! publication target's `latest.lock`, see [`crate::tlog`]). The kernel drops the lock
//! when its holder dies, so a crashed writer never leaves a stale lock behind.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::AuditError;

/// The lock file of a store or replica directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// Whether the lock could be taken.
pub(crate) enum Taken {
    /// Held until the file is dropped.
    Held(File),
    /// Another open file description holds it (another process, or another holder here).
    Busy,
}

/// Take the exclusive lock of `dir` without waiting.
pub(crate) fn try_lock(dir: &Path) -> Result<Taken, AuditError> {
    let path = dir.join(LOCK_FILE);
    try_lock_file(&path).map_err(|(op, e)| AuditError::io(&path, op)(e))
}

/// Take the exclusive lock on the file at `path` (created owner-only if missing) without waiting.
/// The error names the step that failed.
pub(crate) fn try_lock_file(path: &Path) -> Result<Taken, (&'static str, std::io::Error)> {
    // Owner-only: another local user must not be able to hold the lock and block the directory.
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ("open lock file", e))?;
    match file.try_lock() {
        Ok(()) => Ok(Taken::Held(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(Taken::Busy),
        Err(fs::TryLockError::Error(e)) => Err(("lock", e)),
    }
}

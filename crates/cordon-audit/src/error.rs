//! Errors. Messages name the store or key directory and what failed; they never carry a subject,
//! a pseudonym, a key or record content (serde messages, which can quote values, are reduced to a
//! category and a column).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Why an audit operation failed. Any `Err` from [`crate::AuditStore::append`] or its
/// [`crate::Ack`] means the record is **not** durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("audit store {path}: {op} failed: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: Arc<io::Error>,
    },
    #[error(
        "audit store {store} is unavailable after an earlier failure ({cause}); nothing more is \
         acknowledged until it is reopened"
    )]
    Unavailable { store: String, cause: String },
    #[error("audit store {store}: the writer has stopped")]
    Stopped { store: String },
    #[error(
        "audit store {path}: refusing to open, damaged at byte {offset} with intact records after \
         it: {detail} (run `cordon audit verify`)"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    #[error(
        "audit store {path}: refusing to open: record {index} on is forged (appended after a clean \
         shutdown, not signed by the store): the signed close marker {} attests {index} records and \
         no open marker follows it; nothing was cut or signed (run `cordon audit verify`)",
        .marker.display()
    )]
    Forged {
        path: PathBuf,
        /// The first record written while the store was closed.
        index: u64,
        marker: PathBuf,
    },
    #[error("audit store {path}: refusing to open: bad close/open marker {marker}: {detail}")]
    BadMarker {
        path: PathBuf,
        marker: PathBuf,
        detail: String,
    },
    #[error("audit store {path} is already open in this process")]
    AlreadyOpen { path: PathBuf },
    #[error("audit store {path} is in use by another process (it holds {path}/LOCK); one writer per store")]
    Locked { path: PathBuf },
    #[error(
        "DR replica {path} is in use by another replicator (it holds {path}/LOCK); one primary per replica"
    )]
    ReplicaLocked { path: PathBuf },
    #[error("audit record could not be serialized: {0}")]
    Serialize(String),
    #[error("audit record too large: {len} bytes (limit {limit})")]
    TooLarge { len: usize, limit: usize },
    #[error("key store {path}: {detail}")]
    Key { path: PathBuf, detail: String },
    #[error("invalid {what}: {why}")]
    InvalidInput { what: &'static str, why: &'static str },
    #[error("the subject's payload key in jurisdiction {jurisdiction} is gone (shredded or never created)")]
    KeyShredded { jurisdiction: String },
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
}

impl AuditError {
    /// `map_err` helper: an I/O failure of `op` on `path`.
    pub fn io(path: impl Into<PathBuf>, op: &'static str) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |e| AuditError::Io {
            path,
            op,
            source: Arc::new(e),
        }
    }
}

/// Serde errors can quote the offending value; keep only where and what category.
pub(crate) fn describe_json_error(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// What is wrong with a store, found by [`crate::verify_store`] / [`crate::read_records`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakKind {
    #[error("truncated: the last frame of the segment is incomplete")]
    Truncated,
    #[error("bad framing: impossible frame length {len}")]
    BadFraming { len: u32 },
    #[error("checksum mismatch: the record bytes were modified or torn")]
    BadCrc,
    #[error("not a valid record: {detail}")]
    BadJson { detail: String },
    /// The hash chain breaks after this record: the next record's link is not this record's
    /// hash. Reported at the first record that may be bad (a rewritten body is the usual cause;
    /// a rewritten link in the next record looks the same). At index 0: its own link is not zero.
    #[error(
        "modified: the hash chain breaks at this record (its bytes were changed, or the link to it \
         in the next record was)"
    )]
    Modified,
    /// Record `expected` is missing: the next one found is `found`, and `expected` does not appear
    /// later in the segment.
    #[error("chain break: record {expected} was removed (found record {found} in its place)")]
    Removed { expected: u64, found: u64 },
    /// The records are out of order: `found` stands where `expected` should, and `expected` is
    /// earlier or later in the segment.
    #[error("chain break: records reordered (expected record {expected}, found record {found})")]
    Reordered { expected: u64, found: u64 },
    #[error("segment file is named for record {named} but its first record is {found}")]
    MisnamedSegment { named: u64, found: u64 },
    #[error(
        "checkpoint mismatch: the signed checkpoint at tree size {size} does not match the records \
         (records 0..{size} were modified, or the checkpoint was replaced)"
    )]
    CheckpointMismatch { size: u64 },
    #[error(
        "records removed: a signed checkpoint attests {published_size} records, the store holds \
         {found} (the newest were removed, or records were removed and the chain rebuilt)"
    )]
    RemovedTail { published_size: u64, found: u64 },
    #[error("bad checkpoint: {detail}")]
    BadCheckpoint { detail: String },
    #[error(
        "forged (appended after a clean shutdown, not signed by the store): the store was closed at \
         {closed_at} records (signed close marker {marker}) and never reopened by its writer, yet \
         holds {found}"
    )]
    Forged {
        closed_at: u64,
        found: u64,
        marker: String,
    },
    #[error("bad close/open marker: {detail}")]
    BadMarker { detail: String },
}

/// Verification failed: where (store, segment file, byte offset, record index) and what.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("audit store {store}: cannot read {path}: {source}")]
    Io {
        store: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("audit store {store}: record {index} ({segment} at byte {offset}): {kind}")]
    Broken {
        store: PathBuf,
        segment: String,
        offset: u64,
        index: u64,
        kind: BreakKind,
    },
}

impl VerifyError {
    /// The kind of damage, when the store could be read.
    pub fn kind(&self) -> Option<&BreakKind> {
        match self {
            VerifyError::Broken { kind, .. } => Some(kind),
            VerifyError::Io { .. } => None,
        }
    }

    /// The index of the record at which verification stopped, when the store could be read.
    pub fn index(&self) -> Option<u64> {
        match self {
            VerifyError::Broken { index, .. } => Some(*index),
            VerifyError::Io { .. } => None,
        }
    }
}

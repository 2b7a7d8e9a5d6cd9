//! [`FileStore`]: the hash-chained, group-committed segment log of one jurisdiction (format in
//! [`crate::segment`]).
//!
//! Opening recovers the chain head from the last segment only (its last body carries `prev`, so
//! the head is `SHA-256(prev || body)` without rereading history). Damage at the end of the last
//! segment with no intact frame after it is a torn write from a crash: it is cut back to the last
//! whole record, with a warning. Damage followed by intact frames means acknowledged records sit
//! behind it: open refuses with [`AuditError::Corrupt`] (fail closed: the gateway answers
//! `audit_unavailable` for that jurisdiction until an operator has run `cordon audit verify`).
//!
//! One writer per store directory: a second `open` of the same directory in this process is
//! refused ([`AuditError::AlreadyOpen`]); there is no cross-process lock yet.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::AuditError;
use crate::keyfile::sync_dir;
use crate::record::Record;
use crate::segment::{self, Frames, ZERO_HASH};
use crate::store::{Ack, AuditStore};
use crate::writer::{Job, Shared, Writer};

/// Group-commit tuning.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Most records per batch (one fsync). Default 1024.
    pub batch_max: usize,
    /// How long the writer waits for more records after draining the queue. Default 0: commit as
    /// soon as the queue is drained (appends that arrive during an fsync form the next batch).
    pub batch_delay: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            batch_max: 1024,
            batch_delay: Duration::ZERO,
        }
    }
}

/// A directory of hash-chained segment files, written by one dedicated thread.
pub struct FileStore {
    dir: PathBuf,
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    _guard: OpenGuard,
}

/// Directories with an open [`FileStore`] in this process.
static OPEN: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Registration of an open store directory; released on drop (after the writer has stopped).
struct OpenGuard(PathBuf);

impl OpenGuard {
    fn acquire(dir: &Path) -> Result<OpenGuard, AuditError> {
        let key = fs::canonicalize(dir).map_err(AuditError::io(dir, "resolve store directory"))?;
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        if !open.get_or_insert_with(HashSet::new).insert(key.clone()) {
            return Err(AuditError::AlreadyOpen {
                path: dir.to_path_buf(),
            });
        }
        Ok(OpenGuard(key))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = open.as_mut() {
            set.remove(&self.0);
        }
    }
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore").field("dir", &self.dir).finish()
    }
}

struct Recovered {
    next_index: u64,
    head: [u8; 32],
    seg_path: PathBuf,
    seg_len: u64,
}

impl FileStore {
    /// Open (creating if needed) the store in `dir`, recover the chain head, start the writer.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<FileStore, AuditError> {
        Self::open_with_segment_limit(dir, opts, segment::SEGMENT_BYTES)
    }

    /// [`FileStore::open`] with a custom segment roll size (tests, small deployments).
    pub fn open_with_segment_limit(
        dir: &Path,
        opts: StoreOptions,
        segment_bytes: u64,
    ) -> Result<FileStore, AuditError> {
        fs::create_dir_all(dir).map_err(AuditError::io(dir, "create store directory"))?;
        let guard = OpenGuard::acquire(dir)?;
        let rec = recover(dir)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&rec.seg_path)
            .map_err(AuditError::io(&rec.seg_path, "open segment"))?;
        let shared = Arc::new(Shared {
            store: dir.display().to_string(),
            syncs: AtomicU64::new(0),
            fault: AtomicBool::new(false),
            failed: OnceLock::new(),
        });
        let batch_max = opts.batch_max.max(1);
        let writer = Writer {
            dir: dir.to_path_buf(),
            file,
            seg_path: rec.seg_path,
            seg_len: rec.seg_len,
            seg_limit: segment_bytes.max(1),
            next_index: rec.next_index,
            head: rec.head,
            batch_max,
            batch_delay: opts.batch_delay,
            shared: shared.clone(),
            buf: Vec::with_capacity(256 * 1024),
            acks: Vec::with_capacity(batch_max.min(4096)),
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("cordon-audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(AuditError::io(dir, "spawn writer thread"))?;
        tracing::debug!(store = %dir.display(), next_index = rec.next_index, "audit store open");
        Ok(FileStore {
            dir: dir.to_path_buf(),
            shared,
            tx: Some(tx),
            thread: Some(thread),
            _guard: guard,
        })
    }

    /// How many batches have been fsynced since open (group commit: fewer than records).
    pub fn sync_count(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Test hook (also for the gateway's tests): the next batch fails as if its write failed,
    /// which makes the store unavailable exactly like a real I/O error.
    pub fn inject_fault_for_tests(&self) {
        self.shared.fault.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> AuditError {
        AuditError::Stopped {
            store: self.shared.store.clone(),
        }
    }
}

impl AuditStore for FileStore {
    fn append(&self, record: &Record) -> Result<Ack, AuditError> {
        if let Some(e) = self.shared.unavailable() {
            return Err(e);
        }
        let rec = serde_json::to_vec(record)
            .map_err(|e| AuditError::Serialize(crate::error::describe_json_error(&e)))?;
        let (ack, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or_else(|| self.stopped())?;
        if tx.send(Job { rec, ack }).is_err() {
            return Err(self.shared.unavailable().unwrap_or_else(|| self.stopped()));
        }
        Ok(Ack::new(rx, self.shared.clone()))
    }

    fn check_writable(&self) -> Result<(), AuditError> {
        if let Some(e) = self.shared.unavailable() {
            return Err(e);
        }
        match &self.thread {
            Some(t) if !t.is_finished() => {}
            _ => return Err(self.stopped()),
        }
        let meta = fs::metadata(&self.dir).map_err(AuditError::io(&self.dir, "stat"))?;
        if meta.permissions().readonly() {
            return Err(AuditError::io(&self.dir, "check writable")(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "read-only",
            )));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("file store {}", self.dir.display())
    }
}

impl Drop for FileStore {
    /// Close the queue and wait for the writer to commit what was already enqueued.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn corrupt(path: &Path, offset: usize, detail: impl Into<String>) -> AuditError {
    AuditError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        detail: detail.into(),
    }
}

/// (index, entry hash) of a record.
type Head = (u64, [u8; 32]);

/// The last record of a segment: (index, entry hash), after checking the frames are whole.
/// `allow_torn_tail`: cut a torn tail (returning the new length) instead of refusing.
fn scan_segment(
    start: u64,
    path: &Path,
    data: &[u8],
    allow_torn_tail: bool,
) -> Result<(Option<Head>, usize), AuditError> {
    let mut last = None;
    let mut good_end = 0;
    let mut first = true;
    for frame in Frames::new(data) {
        match frame {
            Ok(f) => {
                let env = segment::parse_envelope(f.body)
                    .ok_or_else(|| corrupt(path, f.offset, "frame body is not a record envelope"))?;
                if first && env.index != start {
                    return Err(corrupt(
                        path,
                        f.offset,
                        format!(
                            "segment named for record {start} starts with record {}",
                            env.index
                        ),
                    ));
                }
                first = false;
                last = Some((env.index, f.body, env.prev));
                good_end = f.end;
            }
            Err((offset, fault)) => {
                if !allow_torn_tail {
                    return Err(corrupt(path, offset, format!("{fault:?} in a sealed segment")));
                }
                if let Some(next) = segment::valid_frame_after(data, offset) {
                    return Err(corrupt(
                        path,
                        offset,
                        format!("{fault:?}; an intact frame follows at byte {next}"),
                    ));
                }
                good_end = offset;
                break;
            }
        }
    }
    let head = last.map(|(i, body, prev)| (i, segment::entry_hash(&prev, body)));
    Ok((head, good_end))
}

fn recover(dir: &Path) -> Result<Recovered, AuditError> {
    let segs = segment::list_segments(dir).map_err(AuditError::io(dir, "list segments"))?;
    let Some((last_start, last_path)) = segs.last().cloned() else {
        let path = dir.join(segment::segment_name(0));
        File::create_new(&path).map_err(AuditError::io(&path, "create segment"))?;
        sync_dir(dir).map_err(AuditError::io(dir, "fsync dir"))?;
        return Ok(Recovered {
            next_index: 0,
            head: ZERO_HASH,
            seg_path: path,
            seg_len: 0,
        });
    };
    let data = fs::read(&last_path).map_err(AuditError::io(&last_path, "read segment"))?;
    let (last, good_end) = scan_segment(last_start, &last_path, &data, true)?;
    if good_end < data.len() {
        tracing::warn!(
            segment = %last_path.display(),
            offset = good_end,
            dropped_bytes = data.len() - good_end,
            "audit store: cutting a torn tail (incomplete last write) back to the last whole record"
        );
        let f = OpenOptions::new()
            .write(true)
            .open(&last_path)
            .map_err(AuditError::io(&last_path, "open segment"))?;
        f.set_len(good_end as u64)
            .map_err(AuditError::io(&last_path, "truncate torn tail"))?;
        f.sync_all().map_err(AuditError::io(&last_path, "fsync"))?;
    }
    let (next_index, head) = match last {
        Some((i, h)) => (i + 1, h),
        None if last_start == 0 => (0, ZERO_HASH),
        None => {
            // An empty segment (a crash right after a roll): the head is in the one before it.
            let Some((prev_start, prev_path)) = segs.len().checked_sub(2).map(|k| segs[k].clone()) else {
                return Err(corrupt(
                    &last_path,
                    0,
                    format!("first segment is named for record {last_start}, not 0"),
                ));
            };
            let data = fs::read(&prev_path).map_err(AuditError::io(&prev_path, "read segment"))?;
            match scan_segment(prev_start, &prev_path, &data, false)?.0 {
                Some((i, h)) if i + 1 == last_start => (i + 1, h),
                _ => {
                    return Err(corrupt(
                        &last_path,
                        0,
                        "empty segment does not continue the one before it",
                    ));
                }
            }
        }
    };
    Ok(Recovered {
        next_index,
        head,
        seg_path: last_path,
        seg_len: good_end as u64,
    })
}

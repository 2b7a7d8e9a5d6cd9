//! [`FileStore`]: the hash-chained, group-committed segment log of one jurisdiction (format in
//! [`crate::segment`]), with a Merkle tree over the same bodies and signed checkpoints
//! ([`crate::tlog`]).
//!
//! Opening recovers the chain head from the last segment only (its last body carries `prev`, so
//! the head is `SHA-256(0x02 || prev || leaf hash(body))` without rereading history). Damage at the end of the last
//! segment with no intact frame after it is a torn write from a crash: it is cut back to the last
//! whole record, with a warning. So is a torn batch: a zeroed sector followed by intact frames,
//! within the [`segment::TORN_WINDOW`] the writer may leave unsynced ([`torn_batch`]). Other
//! damage followed by intact frames means acknowledged records sit behind it, and a cut that
//! would drop a record some checkpoint attests is no crash's doing either: open refuses with
//! [`AuditError::Corrupt`] and leaves the segment as it is (fail closed: the gateway answers
//! `audit_unavailable` for that jurisdiction until an operator has run `cordon audit verify`).
//!
//! One writer per store directory: a second `open` of the same directory is refused, in this
//! process ([`AuditError::AlreadyOpen`]) and from another one ([`AuditError::Locked`]: an
//! exclusive `flock` on `LOCK` in the store directory, held while the store is open and released
//! by the kernel when the process dies, so a crash leaves no stale lock). Two writers would each
//! extend the chain from the same head and fork the log.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::checkpoint::Checkpoint;
use crate::commit_stats::CommitSnapshot;
use crate::error::AuditError;
use crate::keyfile::sync_dir;
use crate::marker::{self, Marker, MarkerKind};
use crate::merkle::{Frontier, Hash};
use crate::note::NoteVerifier;
use crate::record::Record;
use crate::segment::{self, Fault, ZERO_HASH};
use crate::store::{Ack, AuditStore};
use crate::tlog::{self, Checkpointer, CkptStats, MarkerCtl};
use crate::writer::{CkptCtl, Job, Shared, Writer};

/// Group-commit and checkpoint tuning.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Most records per batch (one fsync). Default 1024.
    pub batch_max: usize,
    /// How long the writer waits for more records after draining the queue. Default 0: commit as
    /// soon as the queue is drained (appends that arrive during an fsync form the next batch).
    pub batch_delay: Duration,
    /// How long deferred records ([`FileStore::append_deferred`]) may wait for a real append to
    /// share its fsync before they are committed on their own. Default 10 ms: a deferred record is
    /// durable within about this long (plus one fsync) even when no other request comes.
    pub deferred_delay: Duration,
    /// Cut a signed checkpoint once this many records are durable since the last one (at batch
    /// granularity). Default 1024.
    pub checkpoint_every: u64,
    /// ... or once this long has passed with unattested records. Default 1 s. A checkpoint is also
    /// cut at clean shutdown.
    pub checkpoint_interval: Duration,
    /// The checkpoint signing key (PKCS#8 Ed25519). `None`: `<store>/checkpoint.key`, created on
    /// first open — a development default; production keeps the key outside the store.
    pub checkpoint_key: Option<PathBuf>,
    /// The checkpoint origin and key name. `None`: the one in `<store>/checkpoint.vkey`, or for a
    /// new store `cordon/<parent dir name>/<store dir name>/<8 random hex digits>` (unique).
    pub origin: Option<String>,
    /// Directories the gateway cannot rewrite (e.g. the DR replica's) that receive every
    /// checkpoint and a compare-and-swap `latest.ckpt`. Failures there never fail appends.
    pub publish_to: Vec<PathBuf>,
    /// A witness / timestamp hook: a command (program and arguments) run after every checkpoint
    /// with the signed checkpoint on stdin (and `CORDON_CHECKPOINT_SIZE`, `CORDON_CHECKPOINT_ORIGIN`
    /// in its environment), e.g. to send it to a transparency-log witness or a timestamp authority.
    /// It runs on the checkpoint thread with a time limit; failures are logged and counted
    /// ([`CheckpointStats::witness_failures`]), never failing appends. Empty: no hook.
    pub witness_command: Vec<String>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            batch_max: 1024,
            batch_delay: Duration::ZERO,
            deferred_delay: Duration::from_millis(10),
            checkpoint_every: 1024,
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_key: None,
            origin: None,
            publish_to: Vec::new(),
            witness_command: Vec::new(),
        }
    }
}

/// Checkpoint counters of an open [`FileStore`] (for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Checkpoints written to the store since open.
    pub written: u64,
    /// Tree size of the newest checkpoint written since open (0 if none).
    pub last_size: u64,
    /// Local checkpoint writes that failed.
    pub failures: u64,
    /// Successful publications (one per target per checkpoint).
    pub published: u64,
    /// Publications that failed with an I/O error (retried with the next checkpoint).
    pub publish_failures: u64,
    /// Witness hook runs that succeeded / failed (non-zero exit, timeout, or could not start).
    pub witnessed: u64,
    pub witness_failures: u64,
    /// Publications refused by the compare-and-swap: a fork attempt or a foreign `latest.ckpt`.
    pub rejected: u64,
}

/// A directory of hash-chained segment files, written by one dedicated thread.
pub struct FileStore {
    dir: PathBuf,
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    ckpt_thread: Option<JoinHandle<()>>,
    ckpt_stats: Arc<CkptStats>,
    verifier: NoteVerifier,
    _guard: OpenGuard,
}

/// Directories with an open [`FileStore`] in this process.
static OPEN: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Registration of an open store directory, in this process and (by the lock file) for every
/// other; released on drop (after the writer has stopped).
struct OpenGuard {
    key: PathBuf,
    /// Holds the exclusive lock until dropped (first, in `drop`: a reopen in this process right
    /// after must not see its own process's lock as another's).
    lock: Option<File>,
}

impl OpenGuard {
    fn acquire(dir: &Path) -> Result<OpenGuard, AuditError> {
        let key = fs::canonicalize(dir).map_err(AuditError::io(dir, "resolve store directory"))?;
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        if open.as_ref().is_some_and(|set| set.contains(&key)) {
            return Err(AuditError::AlreadyOpen {
                path: dir.to_path_buf(),
            });
        }
        let lock = match crate::dir_lock::try_lock(dir)? {
            crate::dir_lock::Taken::Held(file) => file,
            crate::dir_lock::Taken::Busy => {
                return Err(AuditError::Locked {
                    path: dir.to_path_buf(),
                });
            }
        };
        open.get_or_insert_with(HashSet::new).insert(key.clone());
        Ok(OpenGuard {
            key,
            lock: Some(lock),
        })
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        drop(self.lock.take());
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = open.as_mut() {
            set.remove(&self.key);
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
    /// A torn tail to cut off the last segment, once the checkpoints say no attested record is in
    /// it: the file is left as it is when opening refuses.
    cut: Option<TornTail>,
}

/// Damage at the end of the last segment that recovery cuts off ([`scan_segment`]).
struct TornTail {
    path: PathBuf,
    /// Where the damage starts: the end of the last whole record kept.
    at: usize,
    file_len: usize,
    /// The first intact frame after the damage and how many whole frames follow it there (a
    /// torn batch), if any.
    intact_after: Option<IntactAfter>,
}

impl TornTail {
    /// Opening refuses: `attested` (a checkpoint at `source`) reaches past the `whole` records
    /// before the damage, so it is not a crash's unsynced write.
    fn refused(&self, source: &Path, attested: u64, whole: u64) -> AuditError {
        corrupt(
            &self.path,
            self.at,
            format!(
                "damaged tail not cut: {} attests {attested} records, only {whole} are whole before the damage",
                source.display()
            ),
        )
    }

    /// Cut; `first_dropped`: the index the damaged record had.
    fn apply(&self, first_dropped: u64) -> Result<(), AuditError> {
        let path = &self.path;
        match self.intact_after {
            // Loud: the intact frames were never acknowledged if this was a crash (the writer
            // syncs every piece before writing the next), but they are records all the same.
            Some((next, intact)) => tracing::error!(
                segment = %path.display(),
                offset = self.at,
                first_dropped_index = first_dropped,
                first_intact_frame_dropped = next,
                intact_frames_dropped = intact,
                dropped_bytes = self.file_len - self.at,
                "audit store: cutting a torn batch (zeros, then intact frames: a crash left part of the last write unwritten) back to the last whole record"
            ),
            None => tracing::warn!(
                segment = %path.display(),
                offset = self.at,
                first_dropped_index = first_dropped,
                dropped_bytes = self.file_len - self.at,
                "audit store: cutting a torn tail (incomplete last write) back to the last whole record"
            ),
        }
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(AuditError::io(path, "open segment"))?;
        f.set_len(self.at as u64)
            .map_err(AuditError::io(path, "truncate torn tail"))?;
        f.sync_all().map_err(AuditError::io(path, "fsync"))
    }
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
        let signer = tlog::load_signer(dir, opts.checkpoint_key.as_deref(), opts.origin.as_deref())?;
        let rec = recover(dir)?;
        let local = tlog::list_checkpoints(dir).map_err(AuditError::io(dir, "list checkpoints"))?;
        let last_ckpt = match local.last_key_value() {
            Some((&size, path)) => {
                let bytes = fs::read(path).map_err(AuditError::io(path, "read checkpoint"))?;
                let c = Checkpoint::open(&bytes, &[signer.verifier()])
                    .map_err(|e| corrupt(path, 0, format!("checkpoint does not verify: {e}")))?;
                if c.size != size {
                    return Err(corrupt(
                        path,
                        0,
                        format!("file is named for size {size}, holds {}", c.size),
                    ));
                }
                if size > rec.next_index {
                    return Err(match &rec.cut {
                        Some(cut) => cut.refused(path, size, rec.next_index),
                        None => corrupt(
                            path,
                            0,
                            format!(
                                "a checkpoint attests {size} records but the store holds {}: records were removed",
                                rec.next_index
                            ),
                        ),
                    });
                }
                Some(c)
            }
            None => None,
        };
        // A torn tail is cut only when no checkpoint attests a record in it, local (above) or
        // published: a crash's unsynced write never is. (The cut itself is made at the end.)
        if let Some(cut) = &rec.cut {
            for t in &opts.publish_to {
                let latest = t.join(tlog::LATEST);
                match crate::publisher::published_size(t) {
                    Ok(Some(size)) if size > rec.next_index => {
                        return Err(cut.refused(&latest, size, rec.next_index));
                    }
                    Ok(_) => {}
                    // What cannot be read may attest the records: fail closed.
                    Err(e) => {
                        return Err(corrupt(
                            &cut.path,
                            cut.at,
                            format!(
                                "damaged tail not cut: cannot read the published checkpoint {}: {e}",
                                latest.display()
                            ),
                        ));
                    }
                }
            }
        }
        // Publication proofs need the leaf hashes after the oldest size a target still holds.
        let keep_from = opts
            .publish_to
            .iter()
            .map(|t| {
                tlog::target_latest_size(t)
                    .unwrap_or(rec.next_index)
                    .min(rec.next_index)
            })
            .min()
            .unwrap_or(rec.next_index);
        let attested = last_ckpt.as_ref().map_or(0, |c| c.size);
        let marks = marker::at_open(
            dir,
            &opts.publish_to,
            &signer.verifier(),
            rec.next_index,
            rec.cut.as_ref().map(|c| (c.path.as_path(), c.at as u64)),
            attested,
        )?;
        // Signed claims on the tree: the newest checkpoint, and the close marker if it is the newest.
        let mut claims = Vec::new();
        if let Some(c) = &last_ckpt {
            claims.push((
                c.size,
                c.root,
                dir.join(tlog::CKPT_DIR).join(tlog::ckpt_name(c.size)),
            ));
        }
        if let Some(f) = &marks.closed {
            claims.push((f.marker.size, f.marker.root, f.path.clone()));
        }
        let tree = rebuild_tree(dir, rec.next_index, &claims, keep_from, rec.cut.as_ref())?;
        // Every check has passed: only now is a torn tail cut (a refused open leaves it).
        if let Some(cut) = &rec.cut {
            cut.apply(rec.next_index)?;
        }
        let own = (rec.next_index, tree.full.root());
        let markers = open_marker(dir, &signer, &opts.publish_to, &marks, own)?;
        if marks.closed.is_none() && rec.next_index > attested {
            // A crash (no close marker): the tail is kept, and the operator told which records
            // are adopted without a signature from before the restart. Never their contents.
            tracing::warn!(
                store = %dir.display(),
                first_index = attested,
                last_index = rec.next_index - 1,
                "audit store: records {attested}..{} were not covered by a checkpoint before the restart; signing them",
                rec.next_index
            );
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&rec.seg_path)
            .map_err(AuditError::io(&rec.seg_path, "open segment"))?;
        let shared = Arc::new(Shared {
            store: dir.display().to_string(),
            commits: crate::commit_stats::CommitStats::new(),
            fault: AtomicU8::new(0),
            failed: OnceLock::new(),
            deferred: Mutex::new(Vec::new()),
            deferred_lost: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
        });
        let batch_max = opts.batch_max.max(1);
        let ckpt_stats = Arc::new(CkptStats::default());
        let verifier = signer.verifier();
        let checkpointer = Checkpointer {
            name: dir.display().to_string(),
            local: Some(dir.to_path_buf()),
            signer,
            known: vec![None; opts.publish_to.len()],
            targets: opts.publish_to.clone(),
            witness: opts.witness_command.clone(),
            stats: ckpt_stats.clone(),
            base: tree.base,
            tail: tree.tail,
            markers: Some(markers),
        };
        let (ckpt_tx, ckpt_rx) = mpsc::channel();
        let ckpt_thread = crate::background::spawn("cordon-audit-ckpt", move || checkpointer.run(ckpt_rx))
            .map_err(AuditError::io(dir, "spawn checkpoint thread"))?;
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
            deferred_delay: opts.deferred_delay,
            shared: shared.clone(),
            taken: Vec::new(),
            deferred_in_batch: 0,
            buf: Vec::with_capacity(256 * 1024),
            frame_ends: Vec::with_capacity(batch_max.min(4096)),
            acks: Vec::with_capacity(batch_max.min(4096)),
            leaves: Vec::with_capacity(batch_max.min(4096)),
            tree: tree.full,
            ckpt: CkptCtl {
                tx: ckpt_tx,
                every: opts.checkpoint_every.max(1),
                interval: opts.checkpoint_interval,
                last_size: last_ckpt.as_ref().map_or(0, |c| c.size),
                last_at: Instant::now(),
                send_leaves: !opts.publish_to.is_empty(),
                since: Vec::new(),
            },
        };
        let (tx, rx) = mpsc::channel();
        let thread = crate::background::spawn("cordon-audit-writer", move || writer.run(rx))
            .map_err(AuditError::io(dir, "spawn writer thread"))?;
        tracing::debug!(store = %dir.display(), next_index = rec.next_index, "audit store open");
        Ok(FileStore {
            dir: dir.to_path_buf(),
            shared,
            tx: Some(tx),
            thread: Some(thread),
            ckpt_thread: Some(ckpt_thread),
            ckpt_stats,
            verifier,
            _guard: guard,
        })
    }

    /// Checkpoint counters since open.
    pub fn checkpoint_stats(&self) -> CheckpointStats {
        self.ckpt_stats.snapshot()
    }

    /// The store's checkpoint verifier key (`<origin>+<key id>+<base64 key>`).
    pub fn verifier_key(&self) -> String {
        self.verifier.to_string()
    }

    /// How many batches have been fsynced since open (group commit: fewer than records).
    pub fn sync_count(&self) -> u64 {
        self.shared.commits.batches()
    }

    /// `fdatasync` calls since open: one per batch, more for a batch longer than the 4 MiB the
    /// writer leaves unsynced at most (it syncs such a batch piece by piece).
    pub fn fsync_count(&self) -> u64 {
        self.shared.fsyncs.load(Ordering::Relaxed)
    }

    /// Group-commit counters and the fsync latency histogram since open (for `/metrics`).
    pub fn commit_stats(&self) -> CommitSnapshot {
        self.shared.commits.snapshot()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Test hook (also for the gateway's tests): the next batch fails as if its write failed,
    /// which makes the store unavailable exactly like a real I/O error.
    pub fn inject_fault_for_tests(&self) {
        self.shared
            .fault
            .store(crate::writer::FAULT_BEFORE_WRITE, Ordering::Relaxed);
    }

    /// Test hook: the next batch is written, then fails as if its `fdatasync` had failed.
    pub fn inject_sync_fault_for_tests(&self) {
        self.shared
            .fault
            .store(crate::writer::FAULT_AT_SYNC, Ordering::Relaxed);
    }

    /// Append a record nobody waits for (e.g. a completion record written after the response):
    /// no ack, no wake-up of the writer per record and no fsync of its own. It is committed with
    /// the next batch, or on its own after [`StoreOptions::deferred_delay`] when no append comes,
    /// and at shutdown. `Err` only when the store is already unavailable or stopped; a later
    /// failure of its batch is logged and counted in [`FileStore::deferred_lost`].
    pub fn append_deferred(&self, record: &Record) -> Result<(), AuditError> {
        if let Some(e) = self.shared.unavailable() {
            return Err(e);
        }
        let rec = record
            .to_json()
            .map_err(|e| AuditError::Serialize(crate::error::describe_json_error(&e)))?;
        let tx = self.tx.as_ref().ok_or_else(|| self.stopped())?;
        let first = {
            let mut q = self.shared.deferred.lock().unwrap_or_else(|e| e.into_inner());
            q.push(rec);
            q.len() == 1
        };
        // Only the first record since the writer's last drain needs to tell it (see writer.rs).
        if first && tx.send(Job::Tick).is_err() {
            return Err(self.shared.unavailable().unwrap_or_else(|| self.stopped()));
        }
        Ok(())
    }

    /// Deferred records lost because their batch failed (they were never acknowledged).
    pub fn deferred_lost(&self) -> u64 {
        self.shared.deferred_lost.load(Ordering::Relaxed)
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
        let rec = record
            .to_json()
            .map_err(|e| AuditError::Serialize(crate::error::describe_json_error(&e)))?;
        let (ack, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or_else(|| self.stopped())?;
        if tx.send(Job::Append { rec, ack }).is_err() {
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
        // The writer sent its final checkpoint and dropped its sender: the checkpointer drains.
        if let Some(t) = self.ckpt_thread.take() {
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

/// After a clean shutdown (the newest marker is a close marker): write the open marker, durably,
/// before the writer starts, and leave its publication to the checkpointer (retried with every
/// checkpoint). `own`: the store's size and root now (the open marker's claim when the newest
/// close marker is a published one attesting more than the store holds). Returns the markers'
/// state for the checkpointer.
fn open_marker(
    dir: &Path,
    signer: &crate::note::NoteSigner,
    targets: &[PathBuf],
    marks: &marker::AtOpen,
    own: (u64, Hash),
) -> Result<MarkerCtl, AuditError> {
    // Markers this store holds that a target lacks (a close marker whose publication failed at
    // the last shutdown, which nothing retries after the process exits) are published again.
    let mut pending = unpublished_markers(dir, &signer.verifier(), targets);
    let (size, root) = match &marks.closed {
        Some(closed) => (closed.marker.size, closed.marker.root),
        None if marks.reopen => own,
        None => {
            return Ok(MarkerCtl {
                close_seq: marks.next_seq,
                pending,
            });
        }
    };
    let m = Marker {
        kind: MarkerKind::Opened,
        seq: marks.next_seq,
        size,
        root,
    };
    let note = m.sign(signer).map_err(|e| AuditError::Key {
        path: dir.join(tlog::VKEY_FILE),
        detail: format!("signing the open marker: {e}"),
    })?;
    let name = m.file_name();
    marker::write_marker(dir, &name, &note).map_err(AuditError::io(
        dir.join(marker::MARKER_DIR).join(&name),
        "write open marker",
    ))?;
    pending.extend((0..targets.len()).map(|k| (k, name.clone(), note.clone())));
    Ok(MarkerCtl {
        close_seq: marks.next_seq + 1,
        pending,
    })
}

/// (target index, file name, note) of every marker in `dir` (already checked by
/// [`marker::at_open`]) that a target does not hold, oldest first.
fn unpublished_markers(
    dir: &Path,
    verifier: &crate::note::NoteVerifier,
    targets: &[PathBuf],
) -> Vec<(usize, String, String)> {
    let own = marker::read_place(dir, verifier).unwrap_or_default();
    let mut out = Vec::new();
    for (k, t) in targets.iter().enumerate() {
        for f in &own {
            let name = f.marker.file_name();
            if !t.join(marker::MARKER_DIR).join(&name).exists()
                && let Ok(note) = fs::read_to_string(&f.path)
            {
                out.push((k, name, note));
            }
        }
    }
    out
}

/// (index, entry hash) of a record.
type Head = (u64, [u8; 32]);

/// After damage in a torn batch: the offset of the first intact frame, and how many whole frames
/// run from there.
type IntactAfter = (usize, usize);

/// The last record of a segment: (index, entry hash), after checking the frames are whole, and
/// the length of the whole frames. Streams the file (see [`segment::for_each_frame_in_file`]).
/// `allow_torn_tail`: damage that a crash in the middle of the last write can leave is a torn
/// tail to cut (the returned length stops before it) instead of an error: either nothing valid
/// after it, or a torn batch ([`torn_batch`]). The third value is then the offset of the first
/// intact frame dropped with it and how many whole frames run from there, if any.
fn scan_segment(
    start: u64,
    path: &Path,
    allow_torn_tail: bool,
) -> Result<(Option<Head>, usize, Option<IntactAfter>), AuditError> {
    let mut last: Option<(u64, Vec<u8>, [u8; 32])> = None;
    let mut good_end = 0;
    let fault = walk_frames(path, |offset, body| {
        let env = segment::parse_envelope(body)
            .ok_or_else(|| corrupt(path, offset, "frame body is not a record envelope"))?;
        if last.is_none() && env.index != start {
            return Err(corrupt(
                path,
                offset,
                format!(
                    "segment named for record {start} starts with record {}",
                    env.index
                ),
            ));
        }
        let (index, prev) = (env.index, env.prev);
        match &mut last {
            Some((i, b, p)) => {
                *i = index;
                b.clear();
                b.extend_from_slice(body);
                *p = prev;
            }
            None => last = Some((index, body.to_vec(), prev)),
        }
        good_end = offset + segment::HEADER + body.len();
        Ok(())
    })?;
    if let Some((offset, fault)) = fault {
        if !allow_torn_tail {
            return Err(corrupt(path, offset, format!("{fault:?} in a sealed segment")));
        }
        // Only the damaged remainder is read whole, to tell a torn tail (nothing valid after the
        // damage) from damage in the middle (acknowledged records follow it).
        let rest = read_from(path, offset).map_err(AuditError::io(path, "read segment"))?;
        let next = segment::valid_frame_after(&rest, 0);
        if let Some(next) = next
            && !torn_batch(&rest, offset, next)
        {
            return Err(corrupt(
                path,
                offset,
                format!("{fault:?}; an intact frame follows at byte {}", offset + next),
            ));
        }
        let head = last.map(|(i, body, prev)| (i, segment::entry_and_leaf_hash(&prev, &body).0));
        let intact = next.map(|n| {
            let whole = segment::Frames::new(&rest[n..]).take_while(Result::is_ok).count();
            (offset + n, whole)
        });
        return Ok((head, offset, intact));
    }
    let head = last.map(|(i, body, prev)| (i, segment::entry_and_leaf_hash(&prev, &body).0));
    Ok((head, good_end, None))
}

/// Is damage at file offset `at`, with `rest` the bytes from there to the end of the segment and
/// an intact frame at `rest[next..]`, what a crash in the middle of the writer's last write
/// leaves? The writer never has more than [`segment::TORN_WINDOW`] bytes written but unsynced
/// (it syncs a long batch piece by piece), and a block of that write that never reached the disk
/// reads as zeros while a later block of it may have: so the damage must lie within that window
/// of the end and hold a zeroed sector. A flipped bit or an edited record does neither, and
/// stays a refusal. Whether the cut would drop an attested record is checked by the caller.
pub(crate) fn torn_batch(rest: &[u8], at: usize, next: usize) -> bool {
    rest.len() <= segment::TORN_WINDOW && segment::has_zero_sector(&rest[..next], at)
}

/// [`segment::for_each_frame_in_file`] with the store's errors.
fn walk_frames(
    path: &Path,
    mut each: impl FnMut(usize, &[u8]) -> Result<(), AuditError>,
) -> Result<Option<(usize, Fault)>, AuditError> {
    segment::for_each_frame_in_file(path, |offset, body| {
        each(offset, body).map_err(FrameWalkError::Audit)
    })
    .map_err(|e| match e {
        FrameWalkError::Io(e) => AuditError::io(path, "read segment")(e),
        FrameWalkError::Audit(e) => e,
    })
}

/// The errors of a frame walk whose callback can fail.
enum FrameWalkError {
    Io(std::io::Error),
    Audit(AuditError),
}

impl From<std::io::Error> for FrameWalkError {
    fn from(e: std::io::Error) -> Self {
        FrameWalkError::Io(e)
    }
}

/// The bytes of the file at `path` from `offset` on.
fn read_from(path: &Path, offset: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset as u64))?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

/// A batch that failed in this process and could not be cut off then ([`crate::writer::UNCUT`]):
/// cut it now, before recovery reads the segment through the page cache, if the segment still
/// ends where the failure left it; or refuse to open when the cut fails again.
fn cut_uncut(seg: &Path) -> Result<(), AuditError> {
    let key = fs::canonicalize(seg).unwrap_or_else(|_| seg.to_path_buf());
    let mut uncut = crate::writer::lock_uncut();
    let Some(k) = uncut.iter().position(|u| u.segment == key) else {
        return Ok(());
    };
    let entry = uncut[k].clone();
    let len = fs::metadata(seg)
        .map_err(AuditError::io(seg, "stat segment"))?
        .len();
    if entry.observed != Some(len) {
        // Another writer has appended since (or the failure's length is unknown): its records
        // chain onto the failed batch now, and cutting would destroy them. Leave the segment.
        tracing::warn!(segment = %seg.display(), "a failed batch was not cut: the segment has changed since");
        uncut.swap_remove(k);
        return Ok(());
    }
    let f = OpenOptions::new()
        .write(true)
        .open(seg)
        .map_err(AuditError::io(seg, "open segment"))?;
    f.set_len(entry.durable)
        .and_then(|()| f.sync_all())
        .map_err(AuditError::io(seg, "cut a failed batch"))?;
    uncut.swap_remove(k);
    Ok(())
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
            cut: None,
        });
    };
    cut_uncut(&last_path)?;
    let file_len = fs::metadata(&last_path)
        .map_err(AuditError::io(&last_path, "stat segment"))?
        .len() as usize;
    let (last, good_end, intact_after) = scan_segment(last_start, &last_path, true)?;
    let cut = (good_end < file_len).then(|| TornTail {
        path: last_path.clone(),
        at: good_end,
        file_len,
        intact_after,
    });
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
            match scan_segment(prev_start, &prev_path, false)?.0 {
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
        cut,
    })
}

/// The Merkle tree of an opened store.
struct Rebuilt {
    /// The whole tree.
    full: Frontier,
    /// The tree at `keep_from`, and the leaf hashes after it.
    base: Frontier,
    tail: Vec<Hash>,
}

/// Rebuild the Merkle tree by hashing every record body (O(store bytes) at open: ~1.5 GB/s of
/// SHA-256 here, plus reading the segments), check the newest local checkpoint against it, and
/// keep the leaf hashes from `keep_from` on for publication proofs.
fn rebuild_tree(
    dir: &Path,
    n: u64,
    claims: &[(u64, Hash, PathBuf)],
    keep_from: u64,
    cut: Option<&TornTail>,
) -> Result<Rebuilt, AuditError> {
    let mut full = Frontier::new();
    let mut base = Frontier::new();
    let mut tail = Vec::new();
    let check = |full: &Frontier| -> Result<(), AuditError> {
        for (size, root, path) in claims {
            if *size == full.size() && *root != full.root() {
                return Err(corrupt(
                    path,
                    0,
                    "the records do not match the root this file signs",
                ));
            }
        }
        Ok(())
    };
    check(&full)?;
    for (_, path) in segment::list_segments(dir).map_err(AuditError::io(dir, "list segments"))? {
        let fault = walk_frames(&path, |offset, body| {
            if full.size() >= n {
                return Err(corrupt(&path, offset, "more records than recovered"));
            }
            let h = crate::merkle::leaf_hash(body);
            full.push_hash(h);
            if full.size() <= keep_from {
                base.push_hash(h);
            } else {
                tail.push(h);
            }
            check(&full)
        })?;
        if let Some((offset, fault)) = fault
            // The torn tail recovery found, not yet cut: the records end there.
            && cut.is_none_or(|c| c.path != path || c.at != offset)
        {
            return Err(corrupt(&path, offset, format!("{fault:?}")));
        }
    }
    if full.size() != n {
        return Err(corrupt(
            dir,
            0,
            format!("found {} records, expected {n}", full.size()),
        ));
    }
    Ok(Rebuilt { full, base, tail })
}

#[cfg(test)]
mod deferred_tests {
    use std::time::Duration;

    use crate::record::tests::{sample_completion, sample_decision};
    use crate::{AuditStore, FileStore, StoreOptions, read_records, verify_store};

    #[tokio::test]
    async fn deferred_records_ride_along_and_are_committed_alone_after_the_delay() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            deferred_delay: Duration::from_millis(20),
            ..StoreOptions::default()
        };
        let store = FileStore::open(dir.path(), opts).unwrap();
        // Alone: committed (one fsync) once the delay has passed, with no other append.
        store.append_deferred(&sample_completion()).unwrap();
        store.append_deferred(&sample_completion()).unwrap();
        let t = std::time::Instant::now();
        while store.sync_count() == 0 {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "deferred records never committed"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(read_records(dir.path()).unwrap().len(), 2);
        // Riding along: a deferred record queued before an append is durable with it.
        store.append_deferred(&sample_completion()).unwrap();
        let idx = store.append(&sample_decision(1)).unwrap().await.unwrap();
        assert_eq!(
            idx, 2,
            "the acked record is framed before the deferred ones of its batch"
        );
        assert_eq!(read_records(dir.path()).unwrap().len(), 4);
        // Shutdown commits what is still deferred.
        store.append_deferred(&sample_completion()).unwrap();
        drop(store);
        assert_eq!(read_records(dir.path()).unwrap().len(), 5);
        verify_store(dir.path()).unwrap();
    }

    #[tokio::test]
    async fn deferred_append_fails_once_the_store_failed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
        store.inject_fault_for_tests();
        store.append_deferred(&sample_completion()).unwrap();
        assert!(store.append(&sample_decision(1)).unwrap().await.is_err());
        assert_eq!(store.deferred_lost(), 1);
        assert!(store.append_deferred(&sample_completion()).is_err());
    }
}

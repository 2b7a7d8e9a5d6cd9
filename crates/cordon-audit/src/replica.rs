//! Disaster-recovery copy of a [`crate::FileStore`]: [`Replicator`] ships segments and signed
//! checkpoints to a second directory asynchronously, and [`verify_replica`] proves that the copy is
//! a prefix of the primary.
//!
//! # What is shipped
//! A background thread (every `interval`, and on [`Replicator::sync_now`]) copies, in order:
//! * `checkpoint.vkey` (the public verifier key; never `checkpoint.key`), once;
//! * each segment `{first index:020}.log`: the **whole frames** beyond the replica's length
//!   (segments are append-only, so this is an append; an incomplete frame the writer is still
//!   writing is left for the next pass), then `fsync` (and the directory's, for a new file);
//! * each `checkpoints/{size:020}.ckpt` whose records are already in the replica, created without
//!   replacing anything (temp file, `fsync`, hard link, directory `fsync`).
//!
//! The replica directory may also be the store's publication target
//! ([`crate::StoreOptions::publish_to`], as the gateway configures it): the checkpointer then
//! writes the same checkpoint files (byte-identical: Ed25519 is deterministic) and `latest.ckpt`
//! there, possibly ahead of the shipped segments. The replicator never touches `latest.ckpt`.
//!
//! The replicator only reads the primary's files: it never blocks or fails an append.
//!
//! One replicator per replica: it holds an exclusive `flock` on `<replica>/LOCK` while it runs, so
//! a second primary configured with the same replica directory (in this process or another) is
//! refused at start ([`AuditError::ReplicaLocked`]) instead of interleaving its segments with the
//! first one's.
//!
//! # Divergence
//! The replica is never overwritten. When a replicator first sees a segment that already exists in
//! the replica, it compares the whole replica file with the primary's prefix (O(replica bytes),
//! once per start); afterwards it checks, before every append, that the replica file still has the
//! length it left it at and that its last 4 KiB equal the primary's. A replica segment that is
//! longer than the primary's, holds different bytes, was changed behind the replicator's back, or
//! is not in the primary at all; a replica `checkpoint.vkey` of another store; a replica checkpoint
//! file that differs from the primary's: each **halts** the replicator ([`ReplicaStatus::halted`],
//! the error in [`ReplicaStatus::last_error`] and from every later [`Replicator::sync_now`]) until
//! an operator has looked (a new `Replicator` re-checks from scratch). I/O errors and damage in the
//! primary are reported and retried at the next pass.
//!
//! Known limit: frames are shipped once they are whole in the primary's page cache, which is before
//! the writer's `fsync` returns. After a power loss (not a process crash) the primary can lose an
//! unacknowledged batch the replica already has; the replicator then reports the replica as longer
//! than the primary and halts.
//!
//! [`verify_replica`] verifies the replica on its own ([`crate::verify_store_with`]: framing, chain,
//! its checkpoints), then walks both stores in lockstep comparing Merkle leaf hashes (the leaf data
//! is the frame body), so a difference is named by its record index, and checks every replica
//! checkpoint (`checkpoints/*.ckpt` and `latest.ckpt`) against the primary's tree at its size. A
//! replica checkpoint beyond the replica's records (normal when the replica is a publication target
//! that lags) is accepted if the primary's tree matches it. Running it on a replica the replicator
//! is writing may see the in-flight write as `Truncated`; an incomplete last frame in the *primary*
//! is treated as the writer's in-flight batch.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::checkpoint::Checkpoint;
use crate::error::{AuditError, BreakKind, VerifyError};
use crate::keyfile::sync_dir;
use crate::merkle::{Frontier, Hash};
use crate::note::NoteVerifier;
use crate::segment::{self, Fault, Frames, HEADER, ZERO_HASH};
use crate::tlog::{self, CKPT_DIR, LATEST, VKEY_FILE};
use crate::verify::{VerifyOptions, verify_store_with};

/// Bytes at the end of a replica segment compared with the primary before each append.
const TAIL_CHECK: u64 = 4096;
/// Primary bytes read per step while shipping or comparing.
const CHUNK: usize = 4 << 20;

/// Why a replica is not (or would no longer be) a prefix of its primary, or cannot be checked.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("the replica fails its own verification: {0}")]
    Replica(#[source] VerifyError),
    #[error("the primary fails verification: {0}")]
    Primary(#[source] VerifyError),
    #[error(
        "replica {replica} diverges from primary {primary} at record {index} ({segment} at byte \
         {offset})"
    )]
    Diverged {
        replica: PathBuf,
        primary: PathBuf,
        index: u64,
        segment: String,
        offset: u64,
    },
    #[error("replica {replica} is longer than primary {primary}: {detail}")]
    Longer {
        replica: PathBuf,
        primary: PathBuf,
        detail: String,
    },
    #[error("replica file {path} was changed outside the replicator: {detail}")]
    Tampered { path: PathBuf, detail: String },
    #[error(
        "replica {replica} belongs to another store: its checkpoint.vkey differs from primary \
         {primary}'s"
    )]
    ForeignKey { replica: PathBuf, primary: PathBuf },
    #[error("replica checkpoint {file} (tree size {size}) is not consistent with the primary: {detail}")]
    CheckpointMismatch {
        file: PathBuf,
        size: u64,
        detail: String,
    },
    #[error("replica checkpoint {file} is not a checkpoint of the primary: {detail}")]
    BadCheckpoint { file: PathBuf, detail: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ReplicaError {
    /// The kind of damage when the replica or the primary failed its own verification.
    pub fn kind(&self) -> Option<&BreakKind> {
        match self {
            ReplicaError::Replica(e) | ReplicaError::Primary(e) => e.kind(),
            _ => None,
        }
    }
}

impl AuditError {
    /// The replica divergence behind an error of [`Replicator::sync_now`], if that is what it is.
    pub fn replica_error(&self) -> Option<&ReplicaError> {
        match self {
            AuditError::Io { source, .. } => source.get_ref()?.downcast_ref::<ReplicaError>(),
            _ => None,
        }
    }
}

/// What the replicator has done (see [`Replicator::status`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// Passes that completed without error.
    pub passes: u64,
    /// Passes that failed (I/O, a damaged primary, or a halt).
    pub failed_passes: u64,
    /// Segment bytes, whole records and checkpoint files shipped since start.
    pub shipped_bytes: u64,
    pub shipped_records: u64,
    pub shipped_checkpoints: u64,
    /// Segment bytes and whole records in the replica.
    pub replica_bytes: u64,
    pub replica_records: u64,
    /// Primary segment bytes not in the replica, as of the end of the last pass.
    pub lag_bytes: u64,
    /// The error of the last pass (`None` once a pass succeeds, unless halted).
    pub last_error: Option<String>,
    /// A divergence was found: nothing more is shipped by this replicator.
    pub halted: bool,
}

/// Ships a store's segments and checkpoints to a replica directory (module docs).
pub struct Replicator {
    inner: Arc<Inner>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// The replica's lock, released when the replicator is dropped (after its thread stopped).
    _lock: fs::File,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("store", &self.inner.store)
            .field("replica", &self.inner.replica)
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: PathBuf,
    replica: PathBuf,
    state: Mutex<State>,
    status: Mutex<ReplicaStatus>,
}

impl Replicator {
    /// Ship the store in `store_dir` to `replica_dir` (created if needed) from a background
    /// thread, every `interval`, starting now. Errors only for an unusable configuration; what
    /// goes wrong while shipping is in [`Replicator::status`].
    pub fn start(store_dir: &Path, replica_dir: &Path, interval: Duration) -> Result<Replicator, AuditError> {
        fs::create_dir_all(replica_dir).map_err(AuditError::io(replica_dir, "create replica directory"))?;
        let replica_abs = fs::canonicalize(replica_dir)
            .map_err(AuditError::io(replica_dir, "resolve replica directory"))?;
        if fs::canonicalize(store_dir).is_ok_and(|s| s == replica_abs) {
            return Err(AuditError::InvalidInput {
                what: "replica directory",
                why: "must not be the store's own directory",
            });
        }
        let lock = match crate::dir_lock::try_lock(replica_dir)? {
            crate::dir_lock::Taken::Held(file) => file,
            crate::dir_lock::Taken::Busy => {
                return Err(AuditError::ReplicaLocked {
                    path: replica_dir.to_path_buf(),
                });
            }
        };
        let inner = Arc::new(Inner {
            store: store_dir.to_path_buf(),
            replica: replica_dir.to_path_buf(),
            state: Mutex::new(State::new(store_dir, replica_dir)),
            status: Mutex::new(ReplicaStatus::default()),
        });
        let (stop, rx) = mpsc::channel::<()>();
        let bg = inner.clone();
        let thread = crate::background::spawn("cordon-audit-replica", move || {
            loop {
                let _ = bg.pass();
                match rx.recv_timeout(interval) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
        })
        .map_err(AuditError::io(replica_dir, "spawn replica thread"))?;
        Ok(Replicator {
            inner,
            stop: Some(stop),
            thread: Some(thread),
            _lock: lock,
        })
    }

    /// One synchronous pass (tests, shutdown). Waits for a pass of the background thread that is
    /// running. `Err` when the pass failed or the replicator is halted (then
    /// [`AuditError::replica_error`] says which divergence).
    pub fn sync_now(&self) -> Result<ReplicaStatus, AuditError> {
        self.inner.pass()
    }

    /// Counters, lag and the last error, as of the last pass.
    pub fn status(&self) -> ReplicaStatus {
        lock(&self.inner.status).clone()
    }

    pub fn replica_dir(&self) -> &Path {
        &self.inner.replica
    }

    /// The primary store this replicator ships.
    pub fn store_dir(&self) -> &Path {
        &self.inner.store
    }

    /// Stop the background thread (after its current pass) and return the status.
    pub fn stop(mut self) -> ReplicaStatus {
        self.shutdown();
        self.status()
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn pass(&self) -> Result<ReplicaStatus, AuditError> {
        let mut st = lock(&self.state);
        let was_halted = st.halted.is_some();
        let result = st.ship();
        let mut status = lock(&self.status);
        status.shipped_bytes = st.shipped_bytes;
        status.shipped_records = st.shipped_records;
        status.shipped_checkpoints = st.shipped_ckpts;
        status.replica_bytes = st.segs.values().map(|s| s.len).sum();
        status.replica_records = st.segs.values().map(|s| s.records).sum();
        status.halted = st.halted.is_some();
        match &result {
            Ok(()) => {
                status.passes += 1;
                status.lag_bytes = st.primary_bytes.saturating_sub(status.replica_bytes);
                status.last_error = None;
                Ok(status.clone())
            }
            Err(e) => {
                status.failed_passes += 1;
                let msg = e.to_string();
                if st.halted.is_some() && !was_halted {
                    tracing::error!(store = %self.store.display(), replica = %self.replica.display(),
                        error = %msg, "audit replica diverges from its primary; replication halted");
                } else if status.last_error.as_ref() != Some(&msg) {
                    tracing::warn!(store = %self.store.display(), replica = %self.replica.display(),
                        error = %msg, "audit replication failed (retried at the next pass)");
                }
                status.last_error = Some(msg);
                Err(e.clone())
            }
        }
    }
}

/// What the replicator knows about one replica segment.
#[derive(Clone, Copy, Debug, Default)]
struct Seg {
    /// Bytes in the replica file (as left by the replicator).
    len: u64,
    /// End of the last whole frame (< `len` only after an interrupted write).
    boundary: u64,
    /// Whole frames.
    records: u64,
}

enum Fail {
    /// A divergence: stop shipping.
    Halt(ReplicaError),
    /// Retried at the next pass.
    Retry(AuditError),
}

impl From<AuditError> for Fail {
    fn from(e: AuditError) -> Self {
        Fail::Retry(e)
    }
}

/// Damage in the primary that stops shipping at `offset` (retried: the operator runs verify).
fn primary_damaged(path: &Path, offset: u64, detail: impl std::fmt::Display) -> Fail {
    Fail::Retry(AuditError::io(path, "replicate")(io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "primary segment damaged at byte {offset}: {detail}; not shipping past it (run `cordon audit verify`)"
        ),
    )))
}

struct State {
    store: PathBuf,
    replica: PathBuf,
    segs: BTreeMap<u64, Seg>,
    ckpts: BTreeSet<u64>,
    vkey_done: bool,
    halted: Option<AuditError>,
    primary_bytes: u64,
    shipped_bytes: u64,
    shipped_records: u64,
    shipped_ckpts: u64,
}

impl State {
    fn new(store: &Path, replica: &Path) -> State {
        State {
            store: store.to_path_buf(),
            replica: replica.to_path_buf(),
            segs: BTreeMap::new(),
            ckpts: BTreeSet::new(),
            vkey_done: false,
            halted: None,
            primary_bytes: 0,
            shipped_bytes: 0,
            shipped_records: 0,
            shipped_ckpts: 0,
        }
    }

    fn ship(&mut self) -> Result<(), AuditError> {
        if let Some(e) = &self.halted {
            return Err(e.clone());
        }
        match self.ship_inner() {
            Ok(()) => Ok(()),
            Err(Fail::Retry(e)) => Err(e),
            Err(Fail::Halt(re)) => {
                let e = AuditError::Io {
                    path: self.replica.clone(),
                    op: "replicate",
                    source: Arc::new(io::Error::other(re)),
                };
                self.halted = Some(e.clone());
                Err(e)
            }
        }
    }

    fn ship_inner(&mut self) -> Result<(), Fail> {
        // A replica of another store is refused before anything is written; the key itself is
        // copied once the segments check out.
        self.ship_vkey(false)?;
        let primary =
            segment::list_segments(&self.store).map_err(AuditError::io(&self.store, "list segments"))?;
        let replica =
            segment::list_segments(&self.replica).map_err(AuditError::io(&self.replica, "list segments"))?;
        let known: BTreeSet<u64> = primary.iter().map(|(s, _)| *s).collect();
        if let Some((start, _)) = replica.iter().find(|(s, _)| !known.contains(s)) {
            return Err(Fail::Halt(ReplicaError::Longer {
                replica: self.replica.clone(),
                primary: self.store.clone(),
                detail: format!("segment {} is not in the primary", segment::segment_name(*start)),
            }));
        }
        let mut total = 0;
        let mut expected = 0u64;
        for (k, (start, path)) in primary.iter().enumerate() {
            if *start != expected {
                return Err(primary_damaged(
                    path,
                    0,
                    format!(
                        "segment is named for record {start}, the previous ones end at record {expected}"
                    ),
                ));
            }
            let sealed = k + 1 < primary.len();
            total += self.ship_segment(*start, path, sealed)?;
            expected = start + self.segs.get(start).map_or(0, |s| s.records);
        }
        self.primary_bytes = total;
        self.ship_vkey(true)?;
        self.ship_checkpoints(expected)
    }

    /// Check the replica's `checkpoint.vkey` against the primary's; with `write`, copy it there if
    /// it is missing.
    fn ship_vkey(&mut self, write: bool) -> Result<(), Fail> {
        if self.vkey_done {
            return Ok(());
        }
        let src = self.store.join(VKEY_FILE);
        let key = match fs::read(&src) {
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()), // not opened yet
            Err(e) => return Err(AuditError::io(&src, "read verifier key")(e).into()),
        };
        let dst = self.replica.join(VKEY_FILE);
        let have = match fs::read(&dst) {
            Ok(h) => h,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !write {
                    return Ok(());
                }
                if create_no_replace(&dst, &key).map_err(AuditError::io(&dst, "write verifier key"))? {
                    self.vkey_done = true;
                    return Ok(());
                }
                // Created meanwhile (another replicator): compare.
                fs::read(&dst).map_err(AuditError::io(&dst, "read verifier key"))?
            }
            Err(e) => return Err(AuditError::io(&dst, "read verifier key")(e).into()),
        };
        if have.trim_ascii_end() != key.trim_ascii_end() {
            return Err(Fail::Halt(ReplicaError::ForeignKey {
                replica: self.replica.clone(),
                primary: self.store.clone(),
            }));
        }
        self.vkey_done = true;
        Ok(())
    }

    /// Ship the whole frames of one segment; returns the primary segment's length.
    fn ship_segment(&mut self, start: u64, ppath: &Path, sealed: bool) -> Result<u64, Fail> {
        let name = segment::segment_name(start);
        let rpath = self.replica.join(&name);
        let mut pf = File::open(ppath).map_err(AuditError::io(ppath, "open primary segment"))?;
        let plen = pf
            .metadata()
            .map_err(AuditError::io(ppath, "stat primary segment"))?
            .len();
        let mut seg = match self.segs.get(&start) {
            Some(s) => *s,
            None => {
                let s = self.adopt(start, &rpath, ppath, &mut pf, plen)?;
                self.segs.insert(start, s);
                s
            }
        };
        let rlen = match fs::metadata(&rpath) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(AuditError::io(&rpath, "stat replica segment")(e).into()),
        };
        if rlen != seg.len {
            return Err(Fail::Halt(ReplicaError::Tampered {
                path: rpath,
                detail: format!("{rlen} bytes, the replicator left {}", seg.len),
            }));
        }
        if seg.len > plen {
            return Err(Fail::Halt(self.longer(&name, seg.len, plen)));
        }
        if seg.len > 0 {
            let from = seg.len.saturating_sub(TAIL_CHECK);
            let theirs = read_range(&mut pf, from, (seg.len - from) as usize)
                .map_err(AuditError::io(ppath, "read primary segment"))?;
            let mut rf = File::open(&rpath).map_err(AuditError::io(&rpath, "open replica segment"))?;
            let ours = read_range(&mut rf, from, (seg.len - from) as usize)
                .map_err(AuditError::io(&rpath, "read replica segment"))?;
            if let Some(d) = first_difference(&ours, &theirs) {
                let data = fs::read(&rpath).map_err(AuditError::io(&rpath, "read replica segment"))?;
                return Err(Fail::Halt(self.diverged(start, &name, &data, from as usize + d)));
            }
        }
        let mut out: Option<File> = None;
        let mut created = false;
        let mut pos = seg.boundary;
        let mut want = CHUNK;
        while pos < plen {
            let buf = read_range(&mut pf, pos, ((plen - pos) as usize).min(want))
                .map_err(AuditError::io(ppath, "read primary segment"))?;
            let (mut end, mut n) = (0usize, 0u64);
            let mut big = None;
            for frame in Frames::new(&buf) {
                match frame {
                    Ok(f) => {
                        let at = pos + f.offset as u64;
                        let env = segment::parse_envelope(f.body).ok_or_else(|| {
                            primary_damaged(ppath, at, "frame body is not a record envelope")
                        })?;
                        let index = start + seg.records + n;
                        if env.index != index {
                            return Err(primary_damaged(
                                ppath,
                                at,
                                format!("expected record {index}, found record {}", env.index),
                            ));
                        }
                        end = f.end;
                        n += 1;
                    }
                    Err((off, Fault::Truncated)) => {
                        // A frame cut by the read size, or the writer's in-flight batch.
                        let rest = &buf[off..];
                        if rest.len() >= HEADER {
                            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                            big = Some(HEADER + len);
                        }
                    }
                    Err((off, fault)) => {
                        return Err(primary_damaged(ppath, pos + off as u64, format!("{fault:?}")));
                    }
                }
            }
            if n == 0 {
                match big {
                    // One frame larger than the read: read it whole if it is all there.
                    Some(need) if need > want && pos + need as u64 <= plen => {
                        want = need;
                        continue;
                    }
                    _ => break,
                }
            }
            want = CHUNK;
            let new_end = pos + end as u64;
            if new_end > seg.len {
                let skip = (seg.len - pos) as usize;
                if out.is_none() {
                    created = !rpath.exists();
                    let f = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&rpath)
                        .map_err(|e| self.forget(start, AuditError::io(&rpath, "open replica segment")(e)))?;
                    out = Some(f);
                }
                let written = match &mut out {
                    Some(f) => f.write_all(&buf[skip..end]),
                    None => Ok(()),
                };
                if let Err(e) = written {
                    return Err(self.forget(start, AuditError::io(&rpath, "write replica segment")(e)));
                }
                self.shipped_bytes += new_end - seg.len;
            }
            self.shipped_records += n;
            seg = Seg {
                len: seg.len.max(new_end),
                boundary: new_end,
                records: seg.records + n,
            };
            pos = new_end;
        }
        if let Some(f) = out {
            if let Err(e) = f.sync_data() {
                return Err(self.forget(start, AuditError::io(&rpath, "fsync replica segment")(e)));
            }
            if created {
                sync_dir(&self.replica).map_err(AuditError::io(&self.replica, "fsync replica directory"))?;
            }
        }
        self.segs.insert(start, seg);
        if sealed && seg.boundary != plen {
            return Err(primary_damaged(
                ppath,
                seg.boundary,
                "a sealed segment ends in an incomplete frame",
            ));
        }
        Ok(plen)
    }

    /// After a failed write the replica file's length is unknown: compare it afresh next pass.
    fn forget(&mut self, start: u64, e: AuditError) -> Fail {
        self.segs.remove(&start);
        Fail::Retry(e)
    }

    /// Take over a segment seen for the first time: the replica's copy, if any, must be a prefix
    /// of the primary's (compared in full).
    fn adopt(&self, start: u64, rpath: &Path, ppath: &Path, pf: &mut File, plen: u64) -> Result<Seg, Fail> {
        let data = match fs::read(rpath) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Seg::default()),
            Err(e) => return Err(AuditError::io(rpath, "read replica segment")(e).into()),
        };
        let name = segment::segment_name(start);
        let shared = (data.len() as u64).min(plen) as usize;
        let mut off = 0;
        while off < shared {
            let n = (shared - off).min(CHUNK);
            let theirs =
                read_range(pf, off as u64, n).map_err(AuditError::io(ppath, "read primary segment"))?;
            if let Some(d) = first_difference(&data[off..off + n], &theirs) {
                return Err(Fail::Halt(self.diverged(start, &name, &data, off + d)));
            }
            off += n;
        }
        if data.len() as u64 > plen {
            return Err(Fail::Halt(self.longer(&name, data.len() as u64, plen)));
        }
        let mut seg = Seg {
            len: data.len() as u64,
            ..Seg::default()
        };
        for frame in Frames::new(&data) {
            match frame {
                Ok(f) => {
                    let index = start + seg.records;
                    match segment::parse_envelope(f.body) {
                        Some(env) if env.index == index => {}
                        _ => {
                            return Err(primary_damaged(
                                ppath,
                                f.offset as u64,
                                format!("record {index} is not there"),
                            ));
                        }
                    }
                    seg.records += 1;
                    seg.boundary = f.end as u64;
                }
                // An interrupted copy: completed from the primary.
                Err((_, Fault::Truncated)) => break,
                // The same bytes are in the primary.
                Err((off, fault)) => return Err(primary_damaged(ppath, off as u64, format!("{fault:?}"))),
            }
        }
        Ok(seg)
    }

    fn longer(&self, name: &str, replica_len: u64, primary_len: u64) -> ReplicaError {
        ReplicaError::Longer {
            replica: self.replica.clone(),
            primary: self.store.clone(),
            detail: format!("segment {name} holds {replica_len} bytes, the primary's only {primary_len}"),
        }
    }

    /// The replica segment `data` differs from the primary at byte `at`.
    fn diverged(&self, start: u64, name: &str, data: &[u8], at: usize) -> ReplicaError {
        let (before, offset) = frame_containing(data, at);
        ReplicaError::Diverged {
            replica: self.replica.clone(),
            primary: self.store.clone(),
            index: start + before,
            segment: name.to_owned(),
            offset: offset as u64,
        }
    }

    /// Copy the checkpoints whose records are all in the replica (`records`).
    fn ship_checkpoints(&mut self, records: u64) -> Result<(), Fail> {
        let list =
            tlog::list_checkpoints(&self.store).map_err(AuditError::io(&self.store, "list checkpoints"))?;
        let dir = self.replica.join(CKPT_DIR);
        let mut created = false;
        for (size, src) in list {
            if size > records || self.ckpts.contains(&size) {
                continue;
            }
            let bytes = fs::read(&src).map_err(AuditError::io(&src, "read checkpoint"))?;
            if !dir.exists() {
                fs::create_dir_all(&dir).map_err(AuditError::io(&dir, "create checkpoints directory"))?;
                sync_dir(&self.replica).map_err(AuditError::io(&self.replica, "fsync replica directory"))?;
            }
            let dst = dir.join(tlog::ckpt_name(size));
            if create_no_replace(&dst, &bytes).map_err(AuditError::io(&dst, "write checkpoint"))? {
                created = true;
                self.shipped_ckpts += 1;
            } else {
                let have = fs::read(&dst).map_err(AuditError::io(&dst, "read replica checkpoint"))?;
                if have != bytes && !same_checkpoint(&have, &bytes) {
                    return Err(Fail::Halt(ReplicaError::CheckpointMismatch {
                        file: dst,
                        size,
                        detail: "the replica holds a different checkpoint at this size (not replaced)".into(),
                    }));
                }
            }
            self.ckpts.insert(size);
        }
        if created {
            sync_dir(&dir).map_err(AuditError::io(&dir, "fsync checkpoints directory"))?;
        }
        Ok(())
    }
}

/// Same origin, size and root (the publisher accepts such a file too).
fn same_checkpoint(a: &[u8], b: &[u8]) -> bool {
    match (Checkpoint::parse_unverified(a), Checkpoint::parse_unverified(b)) {
        (Ok(a), Ok(b)) => a.origin == b.origin && a.size == b.size && a.root == b.root,
        _ => false,
    }
}

/// Create `path` with `bytes` durably unless it exists (temp file, fsync, hard link, dir fsync).
/// Returns whether this call created it.
pub(crate) fn create_no_replace(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".replica-tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
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

fn read_range(f: &mut File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(&mut buf)?;
    Ok(buf)
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    Some(
        a.iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len())),
    )
}

/// (whole frames before byte `at`, offset of the frame holding it) in a segment's bytes.
fn frame_containing(data: &[u8], at: usize) -> (u64, usize) {
    let (mut n, mut offset) = (0u64, 0usize);
    for frame in Frames::new(data) {
        match frame {
            Ok(f) if f.end <= at => {
                n += 1;
                offset = f.end;
            }
            _ => break,
        }
    }
    (n, offset)
}

/// What [`verify_replica`] established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaReport {
    pub replica_records: u64,
    pub primary_records: u64,
    /// `primary_records - replica_records`.
    pub lag_records: u64,
    /// Hex RFC 6962 root of the primary's tree at the replica's size (= the replica's tree root).
    pub root_at_replica_size: String,
    /// Replica checkpoint files (`checkpoints/*.ckpt`, `latest.ckpt`) checked against the primary.
    pub checkpoints: u64,
}

/// Prove that the store in `replica_dir` is a prefix of the store in `primary_dir` (module docs).
pub fn verify_replica(primary_dir: &Path, replica_dir: &Path) -> Result<ReplicaReport, ReplicaError> {
    let pkey = read_optional(&primary_dir.join(VKEY_FILE))?;
    let rkey = read_optional(&replica_dir.join(VKEY_FILE))?;
    if let (Some(p), Some(r)) = (&pkey, &rkey)
        && p.trim_ascii_end() != r.trim_ascii_end()
    {
        return Err(ReplicaError::ForeignKey {
            replica: replica_dir.to_path_buf(),
            primary: primary_dir.to_path_buf(),
        });
    }
    // The replica on its own. Checkpoints beyond its records (a lagging publication target) are
    // checked against the primary below.
    match verify_store_with(replica_dir, &VerifyOptions::default()) {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), Some(BreakKind::RemovedTail { .. })) => {}
        // The close marker is the primary's (published here): the primary's verification, with
        // this replica as a publication target, decides whether records after it are forged, and
        // the replica's records are compared with the primary's below.
        Err(e) if matches!(e.kind(), Some(BreakKind::Forged { .. })) => {}
        Err(e) => return Err(ReplicaError::Replica(e)),
    }
    let claims = replica_claims(primary_dir, replica_dir, pkey.as_deref())?;
    let mut checked = 0u64;
    let mut check = |tree: &Frontier| -> Result<(), ReplicaError> {
        if let Some(cs) = claims.get(&tree.size()) {
            let root = tree.root();
            for (file, claimed) in cs {
                checked += 1;
                if *claimed != root {
                    return Err(ReplicaError::CheckpointMismatch {
                        file: file.clone(),
                        size: tree.size(),
                        detail: "its root differs from the primary's tree at that size".into(),
                    });
                }
            }
        }
        Ok(())
    };
    let mut rw = Walker::new(replica_dir, false).map_err(ReplicaError::Replica)?;
    let mut pw = Walker::new(primary_dir, true).map_err(ReplicaError::Primary)?;
    let mut tree = Frontier::new();
    let mut at_replica: Option<(u64, Hash)> = None;
    check(&tree)?;
    loop {
        let r = match at_replica {
            None => rw.next().map_err(ReplicaError::Replica)?,
            Some(_) => None,
        };
        if r.is_none() && at_replica.is_none() {
            at_replica = Some((tree.size(), tree.root()));
        }
        let p = pw.next().map_err(ReplicaError::Primary)?;
        let leaf = match (r, p) {
            (Some((offset, rl)), Some((_, pl))) => {
                if rl != pl {
                    return Err(ReplicaError::Diverged {
                        replica: replica_dir.to_path_buf(),
                        primary: primary_dir.to_path_buf(),
                        index: tree.size(),
                        segment: rw.name.clone(),
                        offset,
                    });
                }
                pl
            }
            (Some(_), None) => {
                let mut n = tree.size() + 1;
                while rw.next().map_err(ReplicaError::Replica)?.is_some() {
                    n += 1;
                }
                return Err(ReplicaError::Longer {
                    replica: replica_dir.to_path_buf(),
                    primary: primary_dir.to_path_buf(),
                    detail: format!(
                        "it holds {n} records, the primary {} (record {} on is not in the primary)",
                        tree.size(),
                        tree.size()
                    ),
                });
            }
            (None, Some((_, pl))) => pl,
            (None, None) => break,
        };
        tree.push_hash(leaf);
        check(&tree)?;
    }
    let primary_records = tree.size();
    if let Some((&size, cs)) = claims.last_key_value()
        && size > primary_records
    {
        return Err(ReplicaError::CheckpointMismatch {
            file: cs[0].0.clone(),
            size,
            detail: format!("it attests {size} records, the primary holds {primary_records}"),
        });
    }
    let (replica_records, root) = at_replica.unwrap_or((primary_records, tree.root()));
    Ok(ReplicaReport {
        replica_records,
        primary_records,
        lag_records: primary_records - replica_records,
        root_at_replica_size: hex::encode(root),
        checkpoints: checked,
    })
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, ReplicaError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ReplicaError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

type Claims = BTreeMap<u64, Vec<(PathBuf, Hash)>>;

/// The replica's `checkpoints/*.ckpt` and `latest.ckpt`, verified with the primary's key.
fn replica_claims(primary: &Path, replica: &Path, pkey: Option<&[u8]>) -> Result<Claims, ReplicaError> {
    let mut files = Vec::new();
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReplicaError::Io { path, source }
    };
    for (size, p) in tlog::list_checkpoints(replica).map_err(io_err(replica))? {
        files.push((Some(size), p));
    }
    let latest = replica.join(LATEST);
    if latest.exists() {
        files.push((None, latest));
    }
    let mut claims = Claims::new();
    if files.is_empty() {
        return Ok(claims);
    }
    let vkey_path = primary.join(VKEY_FILE);
    let pkey = pkey.ok_or_else(|| {
        io_err(&vkey_path)(io::Error::new(
            io::ErrorKind::NotFound,
            "the primary has no verifier key",
        ))
    })?;
    let verifier = std::str::from_utf8(pkey)
        .ok()
        .and_then(|s| NoteVerifier::parse(s.trim_end()).ok())
        .ok_or_else(|| {
            io_err(&vkey_path)(io::Error::new(io::ErrorKind::InvalidData, "not a verifier key"))
        })?;
    for (named, file) in files {
        let bytes = fs::read(&file).map_err(io_err(&file))?;
        let c = Checkpoint::open(&bytes, std::slice::from_ref(&verifier)).map_err(|e| {
            ReplicaError::BadCheckpoint {
                file: file.clone(),
                detail: e.to_string(),
            }
        })?;
        if named.is_some_and(|n| n != c.size) {
            return Err(ReplicaError::BadCheckpoint {
                file,
                detail: format!("named for another size than its {}", c.size),
            });
        }
        claims.entry(c.size).or_default().push((file, c.root));
    }
    Ok(claims)
}

/// Streams a store's records in order, checking framing, indices and the chain: yields
/// (offset in the current segment, Merkle leaf hash).
struct Walker {
    dir: PathBuf,
    segs: std::vec::IntoIter<(u64, PathBuf)>,
    /// Tolerate an incomplete frame at the end of the last segment (a live writer's batch).
    live_tail: bool,
    data: Vec<u8>,
    pos: usize,
    seg_start: u64,
    first_in_seg: bool,
    name: String,
    index: u64,
    head: [u8; 32],
    /// Segment name and offset of the last record that passed (where a broken link points).
    last: (String, usize),
}

impl Walker {
    fn new(dir: &Path, live_tail: bool) -> Result<Walker, VerifyError> {
        let segs = segment::list_segments(dir).map_err(|source| VerifyError::Io {
            store: dir.to_path_buf(),
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Walker {
            dir: dir.to_path_buf(),
            segs: segs.into_iter(),
            live_tail,
            data: Vec::new(),
            pos: 0,
            seg_start: 0,
            first_in_seg: false,
            name: String::new(),
            index: 0,
            head: ZERO_HASH,
            last: (String::new(), 0),
        })
    }

    fn broken(&self, offset: usize, kind: BreakKind) -> VerifyError {
        VerifyError::Broken {
            store: self.dir.clone(),
            segment: self.name.clone(),
            offset: offset as u64,
            index: self.index,
            kind,
        }
    }

    fn next(&mut self) -> Result<Option<(u64, Hash)>, VerifyError> {
        while self.pos >= self.data.len() {
            let Some((start, path)) = self.segs.next() else {
                return Ok(None);
            };
            self.data.clear();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut self.data))
                .map_err(|source| VerifyError::Io {
                    store: self.dir.clone(),
                    path: path.clone(),
                    source,
                })?;
            self.pos = 0;
            self.seg_start = start;
            self.first_in_seg = true;
            self.name = segment::segment_name(start);
        }
        let at = self.pos;
        let frame = Frames::new(&self.data[at..]).next();
        let (end, env) = match frame {
            Some(Ok(f)) => (
                at + f.end,
                segment::parse_envelope(f.body).map(|e| (e.index, e.prev)),
            ),
            Some(Err((_, Fault::Truncated))) if self.live_tail && self.segs.len() == 0 => {
                self.pos = self.data.len();
                return Ok(None);
            }
            Some(Err((_, fault))) => {
                let kind = match fault {
                    Fault::Truncated => BreakKind::Truncated,
                    Fault::BadLength(len) => BreakKind::BadFraming { len },
                    Fault::BadCrc => BreakKind::BadCrc,
                };
                return Err(self.broken(at, kind));
            }
            None => return Ok(None),
        };
        let Some((index, prev)) = env else {
            return Err(self.broken(
                at,
                BreakKind::BadJson {
                    detail: "the body is not a record envelope".into(),
                },
            ));
        };
        if index != self.index {
            let kind = crate::verify::order_break(&self.data, end, self.index, index);
            return Err(self.broken(at, kind));
        }
        if self.first_in_seg && index != self.seg_start {
            return Err(self.broken(
                at,
                BreakKind::MisnamedSegment {
                    named: self.seg_start,
                    found: index,
                },
            ));
        }
        if prev != self.head {
            // The first record that may be bad is the one before (see `verify::walk`).
            return Err(match self.index.checked_sub(1) {
                Some(index) => VerifyError::Broken {
                    store: self.dir.clone(),
                    segment: self.last.0.clone(),
                    offset: self.last.1 as u64,
                    index,
                    kind: BreakKind::Modified,
                },
                None => self.broken(at, BreakKind::Modified),
            });
        }
        let body = &self.data[at + HEADER..end];
        let (head, leaf) = segment::entry_and_leaf_hash(&prev, body);
        self.head = head;
        self.first_in_seg = false;
        if self.last.0 != self.name {
            self.last.0.clone_from(&self.name);
        }
        self.last.1 = at;
        self.pos = end;
        self.index += 1;
        Ok(Some((at as u64, leaf)))
    }
}

#[cfg(test)]
#[path = "replica_tests.rs"]
mod tests;

//! The single writer of a [`crate::FileStore`]: a dedicated OS thread that drains the queue,
//! chains and frames the batch into one reused buffer, issues one `write_all` and ONE
//! `sync_data` per batch (group commit), then acknowledges every record of the batch. (A batch
//! longer than [`segment::TORN_WINDOW`] is written and synced in pieces: crash recovery relies
//! on no more than that being unsynced.)
//!
//! Deferred records (completion records: nobody waits for them) do not wake the writer per record
//! and never cause an fsync of their own: they sit in [`Shared::deferred`] and ride along with the
//! next batch. The first deferred record after a drain sends one [`Job::Tick`]; a writer woken by
//! a tick alone waits up to `deferred_delay` for a real append before committing the deferred
//! records by themselves, so a deferred record is durable within about that delay even when idle.
//!
//! A write or sync error is fatal for the store: the batch and everything queued behind it fail,
//! later appends fail at once, and nothing is acknowledged that was not synced. The failed batch
//! is then cut off the segment (truncated back to the last durable length, and synced): its bytes
//! may sit whole in the page cache after a failed `fdatasync` (Linux may even mark such pages
//! clean), and the reopen's crash recovery, which reads through the page cache, would otherwise
//! take records the gateway answered 503 for (and never forwarded) into the chain. When the cut
//! itself fails, the segment is remembered in [`UNCUT`] and the next open in this process cuts it
//! before recovering, or refuses to open.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::commit_stats::CommitStats;
use crate::error::AuditError;
use crate::merkle::{Frontier, Hash};
use crate::segment;
use crate::store::AckSource;
use crate::tlog::{CkptJob, CkptMsg};

pub(crate) type AckTx = oneshot::Sender<Result<u64, AuditError>>;

/// Values of [`Shared::fault`] (test hooks).
pub(crate) const FAULT_BEFORE_WRITE: u8 = 1;
pub(crate) const FAULT_AT_SYNC: u8 = 2;

/// A segment a failed batch could not be cut off (module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Uncut {
    pub segment: PathBuf,
    /// The length that was durable before the failed batch.
    pub durable: u64,
    /// The file's length just after the failure, if it could be read. The cut is made only if
    /// the file still has exactly this length: anything else means another writer (a later
    /// process, after this one released the lock) has appended since, and cutting would destroy
    /// its acknowledged records.
    pub observed: Option<u64>,
}

/// Segments failed batches could not be cut off. In memory: a restart forgets them (recovery then
/// keeps the failed batch's whole frames, as before the cut existed; they were never
/// acknowledged, and nothing was forwarded for them).
pub(crate) static UNCUT: Mutex<Vec<Uncut>> = Mutex::new(Vec::new());

pub(crate) fn lock_uncut() -> std::sync::MutexGuard<'static, Vec<Uncut>> {
    UNCUT.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the writer receives.
pub(crate) enum Job {
    /// One append: the record's JSON and where to answer once it is durable.
    Append { rec: Vec<u8>, ack: AckTx },
    /// Deferred records are waiting in [`Shared::deferred`]: commit them within `deferred_delay`.
    Tick,
}

/// State shared by the store handle, the writer and outstanding acks.
pub(crate) struct Shared {
    pub store: String,
    /// Batches, records and fsync latencies, for `/metrics`.
    pub commits: CommitStats,
    /// Test hook: 1 = the next batch fails before its write, 2 = after its write, at the sync.
    pub fault: AtomicU8,
    pub failed: OnceLock<AuditError>,
    /// Records nobody waits for (see the module docs), committed with the next batch.
    pub deferred: Mutex<Vec<Vec<u8>>>,
    /// Deferred records that were lost because their batch failed.
    pub deferred_lost: AtomicU64,
    /// `fdatasync` calls: one per batch, more for a batch written in pieces.
    pub fsyncs: AtomicU64,
}

impl Shared {
    pub(crate) fn unavailable(&self) -> Option<AuditError> {
        self.failed.get().map(|cause| AuditError::Unavailable {
            store: self.store.clone(),
            cause: cause.to_string(),
        })
    }
}

impl AckSource for Shared {
    fn closed_error(&self) -> AuditError {
        self.unavailable().unwrap_or_else(|| AuditError::Stopped {
            store: self.store.clone(),
        })
    }
}

pub(crate) struct Writer {
    pub dir: PathBuf,
    pub file: File,
    pub seg_path: PathBuf,
    pub seg_len: u64,
    pub seg_limit: u64,
    pub next_index: u64,
    pub head: [u8; 32],
    pub batch_max: usize,
    pub batch_delay: Duration,
    /// How long a batch of deferred records alone may wait for a real append to ride along with.
    pub deferred_delay: Duration,
    pub shared: Arc<Shared>,
    /// Deferred records taken from [`Shared::deferred`] (reused buffer).
    pub taken: Vec<Vec<u8>>,
    /// How many records of the pending batch are deferred (no ack).
    pub deferred_in_batch: usize,
    pub buf: Vec<u8>,
    /// Where each frame of `buf` ends (the batch is written in pieces cut there).
    pub frame_ends: Vec<usize>,
    pub acks: Vec<(u64, AckTx)>,
    /// Leaf hashes of the pending batch (SHA-256(0x00 || body)), folded into `tree` once durable.
    pub leaves: Vec<Hash>,
    /// The Merkle tree of every durable record (its right edge).
    pub tree: Frontier,
    pub ckpt: CkptCtl,
}

/// When to cut a checkpoint, and where to send it.
pub(crate) struct CkptCtl {
    pub tx: mpsc::Sender<CkptMsg>,
    pub every: u64,
    pub interval: Duration,
    /// Size of the last checkpoint cut (or found on disk at open).
    pub last_size: u64,
    pub last_at: Instant,
    /// Forward leaf hashes to the checkpointer (it needs them for publication proofs).
    pub send_leaves: bool,
    pub since: Vec<Hash>,
}

impl Writer {
    pub(crate) fn run(mut self, rx: mpsc::Receiver<Job>) {
        while let Some(first) = self.next_job(&rx) {
            self.buf.clear();
            self.frame_ends.clear();
            self.acks.clear();
            self.leaves.clear();
            self.deferred_in_batch = 0;
            let mut urgent = self.take(first);
            while self.acks.len() < self.batch_max {
                match rx.try_recv() {
                    Ok(job) => urgent |= self.take(job),
                    Err(_) => break,
                }
            }
            if !urgent {
                // Only deferred records are waiting: give a real append a chance to carry them.
                let deadline = Instant::now() + self.deferred_delay;
                while !urgent {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(job) => urgent |= self.take(job),
                        Err(_) => break,
                    }
                }
            }
            if urgent && !self.batch_delay.is_zero() && self.acks.len() < self.batch_max {
                let deadline = Instant::now() + self.batch_delay;
                while self.acks.len() < self.batch_max {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(job) => {
                            self.take(job);
                        }
                        Err(_) => break,
                    }
                }
            }
            self.add_deferred();
            if self.leaves.is_empty() {
                continue; // every job of the batch was rejected individually, or only ticks
            }
            if !self.commit_batch() {
                return;
            }
        }
        // Clean shutdown: commit what was deferred, then attest everything that is durable.
        self.buf.clear();
        self.frame_ends.clear();
        self.acks.clear();
        self.leaves.clear();
        self.deferred_in_batch = 0;
        self.add_deferred();
        if !self.leaves.is_empty() && !self.commit_batch() {
            return;
        }
        self.checkpoint();
        // Every record is durable and attested: the checkpointer writes the close marker after
        // the final checkpoint (a writer that failed above leaves none: its restart is a crash's).
        let _ = self.ckpt.tx.send(CkptMsg::Close {
            size: self.tree.size(),
            root: self.tree.root(),
        });
    }

    /// Take one job into the batch; true when it is an append somebody waits for.
    fn take(&mut self, job: Job) -> bool {
        match job {
            Job::Append { rec, ack } => {
                self.add(rec, Some(ack));
                true
            }
            Job::Tick => false,
        }
    }

    /// Move every deferred record into the batch (after the acked ones).
    fn add_deferred(&mut self) {
        {
            let mut q = self.shared.deferred.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut *q, &mut self.taken);
        }
        let mut taken = std::mem::take(&mut self.taken);
        for rec in taken.drain(..) {
            self.add(rec, None);
        }
        self.taken = taken;
    }

    /// Commit the pending batch and answer its acks. False: the store failed (stop the writer).
    fn commit_batch(&mut self) -> bool {
        match self.commit() {
            Ok(()) => {
                for (index, ack) in self.acks.drain(..) {
                    // The appender may have given up waiting; the record is durable anyway.
                    let _ = ack.send(Ok(index));
                }
                for h in &self.leaves {
                    self.tree.push_hash(*h);
                }
                if self.ckpt.send_leaves {
                    self.ckpt.since.extend_from_slice(&self.leaves);
                }
                let due = self.tree.size() - self.ckpt.last_size >= self.ckpt.every
                    || self.ckpt.last_at.elapsed() >= self.ckpt.interval;
                if due {
                    self.checkpoint();
                }
                true
            }
            Err(e) => {
                tracing::error!(store = %self.shared.store, error = %e, deferred_lost = self.deferred_in_batch,
                    "audit store failed; refusing further appends until reopened");
                let _ = self.shared.failed.set(e.clone());
                let queued = {
                    let mut q = self.shared.deferred.lock().unwrap_or_else(|e| e.into_inner());
                    std::mem::take(&mut *q).len()
                };
                self.shared
                    .deferred_lost
                    .fetch_add((self.deferred_in_batch + queued) as u64, Ordering::Relaxed);
                for (_, ack) in self.acks.drain(..) {
                    let _ = ack.send(Err(e.clone()));
                }
                // Dropping the receiver fails everything still queued (their acks close).
                false
            }
        }
    }

    /// The next append, cutting an interval checkpoint while waiting if one is due.
    fn next_job(&mut self, rx: &mpsc::Receiver<Job>) -> Option<Job> {
        loop {
            if self.tree.size() == self.ckpt.last_size {
                return rx.recv().ok();
            }
            let left = (self.ckpt.last_at + self.ckpt.interval).saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(job) => return Some(job),
                Err(mpsc::RecvTimeoutError::Timeout) => self.checkpoint(),
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Hand the tree at its current size to the checkpointer thread (which signs, writes and
    /// publishes it off the append path). No-op when nothing new is durable.
    fn checkpoint(&mut self) {
        self.ckpt.last_at = Instant::now();
        let size = self.tree.size();
        if size == self.ckpt.last_size {
            return;
        }
        self.ckpt.last_size = size;
        let job = CkptJob {
            size,
            root: self.tree.root(),
            leaves: std::mem::take(&mut self.ckpt.since),
            note: None,
        };
        // The checkpointer only stops after the writer; a send error cannot happen in practice.
        let _ = self.ckpt.tx.send(CkptMsg::Job(job));
    }

    /// Chain and frame one record into the batch buffer (`ack`: None for a deferred record).
    fn add(&mut self, rec: Vec<u8>, ack: Option<AckTx>) {
        match segment::encode_frame(&mut self.buf, self.next_index, &self.head, &rec) {
            Ok((hash, leaf)) => {
                self.frame_ends.push(self.buf.len());
                self.head = hash;
                // The Merkle leaf hash of the frame body, which the chain link covers too.
                self.leaves.push(leaf);
                match ack {
                    Some(ack) => self.acks.push((self.next_index, ack)),
                    None => self.deferred_in_batch += 1,
                }
                self.next_index += 1;
            }
            Err(len) => {
                let e = AuditError::TooLarge {
                    len,
                    limit: segment::MAX_BODY,
                };
                match ack {
                    Some(ack) => {
                        let _ = ack.send(Err(e));
                    }
                    None => {
                        tracing::error!(store = %self.shared.store, error = %e, "deferred audit record dropped");
                        self.shared.deferred_lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    fn commit(&mut self) -> Result<(), AuditError> {
        if self.seg_len > 0 && self.seg_len + self.buf.len() as u64 > self.seg_limit {
            self.roll()?;
        }
        let sync_started = match self.write_and_sync() {
            Ok(t) => t,
            Err(e) => {
                self.cut_back();
                return Err(e);
            }
        };
        self.shared
            .commits
            .batch(self.leaves.len(), sync_started.elapsed());
        self.seg_len += self.buf.len() as u64;
        Ok(())
    }

    /// Write the batch and sync it; returns when the first sync started (for the fsync
    /// histogram). A batch longer than [`segment::TORN_WINDOW`] (rare: it takes thousands of
    /// records) is written and synced in pieces, so a crash leaves at most that many unsynced
    /// bytes at the end of the segment: recovery relies on it.
    fn write_and_sync(&mut self) -> Result<Instant, AuditError> {
        let injected = || AuditError::io(&self.seg_path, "write")(io::Error::other("injected fault"));
        if self.shared.fault.load(Ordering::Relaxed) == FAULT_BEFORE_WRITE {
            return Err(injected());
        }
        let mut sync_started = None;
        let mut start = 0;
        for end in segment::piece_ends(&self.frame_ends, segment::TORN_WINDOW) {
            self.file
                .write_all(&self.buf[start..end])
                .map_err(AuditError::io(&self.seg_path, "write"))?;
            sync_started.get_or_insert_with(Instant::now);
            if self.shared.fault.load(Ordering::Relaxed) == FAULT_AT_SYNC {
                return Err(injected());
            }
            self.file
                .sync_data()
                .map_err(AuditError::io(&self.seg_path, "fsync"))?;
            self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
            start = end;
        }
        Ok(sync_started.unwrap_or_else(Instant::now))
    }

    /// Cut a failed batch off the segment (module docs): back to `seg_len`, the durable length.
    fn cut_back(&mut self) {
        let cut = self
            .file
            .set_len(self.seg_len)
            .and_then(|()| self.file.sync_all());
        if let Err(e) = cut {
            tracing::error!(store = %self.shared.store, segment = %self.seg_path.display(), error = %e,
                "could not cut a failed batch off the segment; the store will not reopen in this process until it can");
            let segment = fs::canonicalize(&self.seg_path).unwrap_or_else(|_| self.seg_path.clone());
            let observed = self.file.metadata().ok().map(|m| m.len());
            lock_uncut().push(Uncut {
                segment,
                durable: self.seg_len,
                observed,
            });
        }
    }

    /// Start a new segment named for the first record of the pending batch.
    fn roll(&mut self) -> Result<(), AuditError> {
        // Every framed record of the batch (acked or deferred) has a leaf.
        let first = self.next_index - self.leaves.len() as u64;
        let path = self.dir.join(segment::segment_name(first));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(AuditError::io(&path, "create segment"))?;
        crate::keyfile::sync_dir(&self.dir).map_err(AuditError::io(&self.dir, "fsync dir"))?;
        self.file = file;
        self.seg_path = path;
        self.seg_len = 0;
        Ok(())
    }
}

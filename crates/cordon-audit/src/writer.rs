//! The single writer of a [`crate::FileStore`]: a dedicated OS thread that drains the queue,
//! chains and frames the batch into one reused buffer, issues one `write_all` and ONE
//! `sync_data` per batch (group commit), then acknowledges every record of the batch.
//!
//! A write or sync error is fatal for the store: the batch and everything queued behind it fail,
//! later appends fail at once, and nothing is acknowledged that was not synced. (A failed batch may
//! still reach the disk; such records were never acknowledged, so the gateway forwarded nothing.)

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::AuditError;
use crate::merkle::{self, Frontier, Hash};
use crate::segment;
use crate::store::AckSource;
use crate::tlog::CkptJob;

pub(crate) type AckTx = oneshot::Sender<Result<u64, AuditError>>;

/// One append request: the record's JSON and where to answer.
pub(crate) struct Job {
    pub rec: Vec<u8>,
    pub ack: AckTx,
}

/// State shared by the store handle, the writer and outstanding acks.
pub(crate) struct Shared {
    pub store: String,
    pub syncs: AtomicU64,
    pub fault: AtomicBool,
    pub failed: OnceLock<AuditError>,
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
    pub shared: Arc<Shared>,
    pub buf: Vec<u8>,
    pub acks: Vec<(u64, AckTx)>,
    /// Leaf hashes of the pending batch (SHA-256(0x00 || body)), folded into `tree` once durable.
    pub leaves: Vec<Hash>,
    /// The Merkle tree of every durable record (its right edge).
    pub tree: Frontier,
    pub ckpt: CkptCtl,
}

/// When to cut a checkpoint, and where to send it.
pub(crate) struct CkptCtl {
    pub tx: mpsc::Sender<CkptJob>,
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
            self.acks.clear();
            self.leaves.clear();
            self.add(first);
            while self.acks.len() < self.batch_max {
                match rx.try_recv() {
                    Ok(job) => self.add(job),
                    Err(_) => break,
                }
            }
            if !self.batch_delay.is_zero() && self.acks.len() < self.batch_max {
                let deadline = Instant::now() + self.batch_delay;
                while self.acks.len() < self.batch_max {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(job) => self.add(job),
                        Err(_) => break,
                    }
                }
            }
            if self.acks.is_empty() {
                continue; // every job of the batch was rejected individually
            }
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
                }
                Err(e) => {
                    tracing::error!(store = %self.shared.store, error = %e,
                        "audit store failed; refusing further appends until reopened");
                    let _ = self.shared.failed.set(e.clone());
                    for (_, ack) in self.acks.drain(..) {
                        let _ = ack.send(Err(e.clone()));
                    }
                    // Dropping the receiver fails everything still queued (their acks close).
                    return;
                }
            }
        }
        // Clean shutdown: attest everything that is durable.
        self.checkpoint();
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
        };
        // The checkpointer only stops after the writer; a send error cannot happen in practice.
        let _ = self.ckpt.tx.send(job);
    }

    /// Chain and frame one record into the batch buffer.
    fn add(&mut self, job: Job) {
        let start = self.buf.len();
        match segment::encode_frame(&mut self.buf, self.next_index, &self.head, &job.rec) {
            Ok(hash) => {
                self.head = hash;
                // The Merkle leaf is the frame body, the same bytes the hash chain covers.
                self.leaves
                    .push(merkle::leaf_hash(&self.buf[start + segment::HEADER..]));
                self.acks.push((self.next_index, job.ack));
                self.next_index += 1;
            }
            Err(len) => {
                let _ = job.ack.send(Err(AuditError::TooLarge {
                    len,
                    limit: segment::MAX_BODY,
                }));
            }
        }
    }

    fn commit(&mut self) -> Result<(), AuditError> {
        if self.seg_len > 0 && self.seg_len + self.buf.len() as u64 > self.seg_limit {
            self.roll()?;
        }
        if self.shared.fault.load(Ordering::Relaxed) {
            return Err(AuditError::io(&self.seg_path, "write")(io::Error::other(
                "injected fault",
            )));
        }
        self.file
            .write_all(&self.buf)
            .map_err(AuditError::io(&self.seg_path, "write"))?;
        self.file
            .sync_data()
            .map_err(AuditError::io(&self.seg_path, "fsync"))?;
        self.seg_len += self.buf.len() as u64;
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Start a new segment named for the first record of the pending batch.
    fn roll(&mut self) -> Result<(), AuditError> {
        let first = self.acks.first().map_or(self.next_index, |(i, _)| *i);
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

//! Signed checkpoints of a [`crate::FileStore`]: the store's key, the local checkpoint files,
//! and publication to places the gateway cannot rewrite, with a compare-and-swap `latest.ckpt`.
//!
//! On disk, in the store directory:
//! * `checkpoint.key`: the Ed25519 signing key (PKCS#8 DER, mode 0600), created on first open
//!   unless [`crate::StoreOptions::checkpoint_key`] names another file. Development default only:
//!   whoever can read it can sign checkpoints, so production keeps the key outside the store
//!   (another volume, a secret mount) and the publication targets outside the gateway's write
//!   access.
//! * `checkpoint.vkey`: the public verifier key, `<origin>+<key id>+<base64(0x01||pubkey)>`.
//! * `checkpoints/<size:020>.ckpt`: the signed checkpoint (C2SP note) at each tree size.
//!
//! In each publication target (one directory per store): `checkpoints/<size:020>.ckpt` (added,
//! never replaced by a different one) and `latest.ckpt`, replaced only under an `flock` on `latest.lock` and only
//! by a checkpoint of the same origin, signed by the same key, at least as large, and provably an
//! extension (consistency proof against the local tree). The target should be writable by the
//! gateway only through this protocol (e.g. a replica host's directory mounted without delete
//! rights, or a witness service behind the same interface later); anything that can rewrite the
//! target can also rewrite its `latest.ckpt`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::checkpoint::Checkpoint;
use crate::error::AuditError;
use crate::keyfile::{create_private_file, sync_dir};
use crate::marker::{Marker, MarkerKind};
use crate::merkle::{self, Frontier, Hash};
use crate::note::{NoteSigner, NoteVerifier, is_key_name_valid};

pub(crate) const KEY_FILE: &str = "checkpoint.key";
pub(crate) const VKEY_FILE: &str = "checkpoint.vkey";
pub(crate) const CKPT_DIR: &str = "checkpoints";
pub(crate) const LATEST: &str = "latest.ckpt";
const LOCK: &str = "latest.lock";
const LOCK_WAIT: Duration = Duration::from_secs(2);

pub(crate) fn ckpt_name(size: u64) -> String {
    format!("{size:020}.ckpt")
}

fn parse_ckpt_name(name: &str) -> Option<u64> {
    let d = name.strip_suffix(".ckpt")?;
    (d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit()))
        .then(|| d.parse().ok())
        .flatten()
}

/// `<dir>/checkpoints/*.ckpt` by size (other files ignored; a missing directory is empty).
pub(crate) fn list_checkpoints(dir: &Path) -> io::Result<BTreeMap<u64, PathBuf>> {
    let mut out = BTreeMap::new();
    let d = dir.join(CKPT_DIR);
    let rd = match fs::read_dir(&d) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        if let Some(size) = entry.file_name().to_str().and_then(parse_ckpt_name) {
            out.insert(size, entry.path());
        }
    }
    Ok(out)
}

/// Write `bytes` to `path` atomically and durably (temp file, fsync, rename, fsync dir).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("f"),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// The default origin of a new log: `cordon/<parent dir name>/<store dir name>/<8 random hex
/// digits>`, made a valid key name. The random part makes it unique across deployments (every
/// gateway's EU store would otherwise be `cordon/audit/EU`), as C2SP asks of an origin:
/// witnesses and monitors track logs by it. It is fixed at creation (`checkpoint.vkey` names it).
fn default_origin(dir: &Path) -> String {
    let clean = |s: Option<&std::ffi::OsStr>| -> String {
        let s = s.map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let s: String = s
            .chars()
            .map(|c| {
                if c.is_whitespace() || c == '+' || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        if s.is_empty() { "store".into() } else { s }
    };
    let abs = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut unique = [0u8; 4];
    // Cannot fail on a supported platform; zeros would only make the origin less unique.
    let _ = aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut unique);
    format!(
        "cordon/{}/{}/{}",
        clean(abs.parent().and_then(|p| p.file_name())),
        clean(abs.file_name()),
        hex::encode(unique)
    )
}

/// Load (creating on first use) a log's checkpoint signing key: `key_path`, or
/// `<dir>/checkpoint.key`; write `<dir>/checkpoint.vkey` on first use and check the key against it
/// afterwards (a lost or replaced key is refused, never silently replaced). `origin`: the
/// checkpoint origin and key name (`None`: the one in `checkpoint.vkey`, or for a new log
/// `cordon/<parent dir name>/<dir name>/<8 random hex digits>`).
pub fn load_signer(
    dir: &Path,
    key_path: Option<&Path>,
    origin: Option<&str>,
) -> Result<NoteSigner, AuditError> {
    let vkey_path = dir.join(VKEY_FILE);
    let existing = match fs::read_to_string(&vkey_path) {
        Ok(s) => Some(NoteVerifier::parse(s.trim_end()).map_err(|e| AuditError::Key {
            path: vkey_path.clone(),
            detail: e.to_string(),
        })?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(AuditError::io(&vkey_path, "read verifier key")(e)),
    };
    let origin = match (origin, &existing) {
        (Some(o), Some(v)) if o != v.name() => {
            return Err(AuditError::Key {
                path: vkey_path,
                detail: format!(
                    "the store's checkpoints use origin {:?}, not the configured {o:?}",
                    v.name()
                ),
            });
        }
        (Some(o), _) => o.to_owned(),
        (None, Some(v)) => v.name().to_owned(),
        (None, None) => default_origin(dir),
    };
    if !is_key_name_valid(&origin) {
        return Err(AuditError::InvalidInput {
            what: "checkpoint origin",
            why: "must be non-empty without whitespace or '+'",
        });
    }
    let key_path = key_path.map_or_else(|| dir.join(KEY_FILE), Path::to_path_buf);
    if !key_path.exists() {
        if existing.is_some() {
            return Err(AuditError::Key {
                path: key_path,
                detail: "checkpoint key missing while checkpoint.vkey exists (refusing to start a new key)"
                    .into(),
            });
        }
        let der = NoteSigner::generate_pkcs8().map_err(|_| AuditError::Crypto("key generation failed"))?;
        create_private_file(&key_path, &der).map_err(AuditError::io(&key_path, "create checkpoint key"))?;
    }
    let der = fs::read(&key_path).map_err(AuditError::io(&key_path, "read checkpoint key"))?;
    let signer = NoteSigner::from_pkcs8(&origin, &der).map_err(|e| AuditError::Key {
        path: key_path.clone(),
        detail: e.to_string(),
    })?;
    match existing {
        Some(v) if v != signer.verifier() => Err(AuditError::Key {
            path: key_path,
            detail: "checkpoint key does not match the store's checkpoint.vkey".into(),
        }),
        Some(_) => Ok(signer),
        None => {
            let text = format!("{}\n", signer.verifier());
            create_private_file(&vkey_path, text.as_bytes())
                .map_err(AuditError::io(&vkey_path, "write verifier key"))?;
            Ok(signer)
        }
    }
}

/// Counters of the checkpointer, readable from the store handle.
#[derive(Default, Debug)]
pub(crate) struct CkptStats {
    pub written: AtomicU64,
    pub last_size: AtomicU64,
    pub failures: AtomicU64,
    pub published: AtomicU64,
    pub publish_failures: AtomicU64,
    pub rejected: AtomicU64,
    pub witnessed: AtomicU64,
    pub witness_failures: AtomicU64,
}

impl CkptStats {
    pub(crate) fn snapshot(&self) -> crate::file_store::CheckpointStats {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        crate::file_store::CheckpointStats {
            written: n(&self.written),
            last_size: n(&self.last_size),
            failures: n(&self.failures),
            published: n(&self.published),
            publish_failures: n(&self.publish_failures),
            witnessed: n(&self.witnessed),
            witness_failures: n(&self.witness_failures),
            rejected: n(&self.rejected),
        }
    }
}

/// A checkpoint to sign and publish: the tree at `size`, and the leaf hashes appended since the
/// previous job (only sent when there are publication targets).
pub(crate) struct CkptJob {
    pub size: u64,
    pub root: Hash,
    pub leaves: Vec<Hash>,
    /// The note, when the caller has signed it already (a PostgreSQL store stores it in its own
    /// table first); `None`: the checkpointer signs.
    pub note: Option<String>,
}

/// What the checkpointer thread is sent.
pub(crate) enum CkptMsg {
    Job(CkptJob),
    /// Answer once everything sent before has been handled.
    Flush(mpsc::Sender<()>),
    /// Clean shutdown: every record is durable and the tree is at `size` with `root`; write the
    /// close marker (after the final checkpoint, sent before this).
    Close {
        size: u64,
        root: Hash,
    },
}

/// The close and open markers of a log that keeps them ([`crate::marker`]).
pub(crate) struct MarkerCtl {
    /// The sequence number the close marker takes at shutdown.
    pub close_seq: u64,
    /// Markers (target index, file name, note) not yet published, retried with every checkpoint.
    pub pending: Vec<(usize, String, String)>,
}

/// Why a publication target refused a checkpoint.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("compare-and-swap rejected: {0}")]
    Rejected(String),
}

/// The thread that signs, stores and publishes checkpoints off the append path.
pub(crate) struct Checkpointer {
    /// The store, for logs.
    pub name: String,
    /// The store directory that keeps its own `checkpoints/` (`None`: the store keeps them
    /// elsewhere, e.g. a PostgreSQL table).
    pub local: Option<PathBuf>,
    pub signer: NoteSigner,
    pub targets: Vec<PathBuf>,
    /// The witness / timestamp hook command (empty: none).
    pub witness: Vec<String>,
    pub stats: Arc<CkptStats>,
    /// The tree at `base.size()` and the leaf hashes after it, enough to prove consistency from
    /// any size >= base to the newest checkpoint. Trimmed to the smallest size a target may
    /// still hold.
    pub base: Frontier,
    pub tail: Vec<Hash>,
    /// The size of each target's latest, when known.
    pub known: Vec<Option<u64>>,
    /// Close and open markers (`None`: a log without them, e.g. a PostgreSQL chain).
    pub markers: Option<MarkerCtl>,
}

impl Checkpointer {
    pub(crate) fn run(mut self, rx: mpsc::Receiver<CkptMsg>) {
        // An open marker written at open is published first.
        self.publish_markers();
        while let Ok(first) = rx.recv() {
            // Coalesce a backlog: only the newest checkpoint needs writing (all their leaves are
            // kept, for the proofs).
            let mut newest = None;
            let mut flushes = Vec::new();
            let mut close = None;
            let mut take = |msg: CkptMsg, tail: &mut Vec<Hash>| match msg {
                CkptMsg::Job(mut job) => {
                    tail.append(&mut job.leaves);
                    newest = Some(job);
                }
                CkptMsg::Flush(done) => flushes.push(done),
                CkptMsg::Close { size, root } => close = Some((size, root)),
            };
            take(first, &mut self.tail);
            while let Ok(next) = rx.try_recv() {
                take(next, &mut self.tail);
            }
            if let Some(job) = newest {
                self.handle(job.size, job.root, job.note);
            }
            if let Some((size, root)) = close {
                self.close(size, root);
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    fn handle(&mut self, size: u64, root: Hash, signed: Option<String>) {
        let ckpt = Checkpoint::new(self.signer.name(), size, root);
        let note = match signed.map_or_else(|| ckpt.sign(&self.signer), Ok) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(store = %self.name, error = %e, "audit checkpoint: signing failed");
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if let Some(dir) = &self.local {
            let local = (|| {
                let d = dir.join(CKPT_DIR);
                if !d.exists() {
                    fs::create_dir_all(&d)?;
                    sync_dir(dir)?;
                }
                write_atomic(&d.join(ckpt_name(size)), note.as_bytes())
            })();
            match local {
                Ok(()) => {
                    self.stats.written.fetch_add(1, Ordering::Relaxed);
                    self.stats.last_size.store(size, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(store = %self.name, size, error = %e,
                        "audit checkpoint: writing the local checkpoint failed (retried at the next one)");
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        for k in 0..self.targets.len() {
            let target = self.targets[k].clone();
            match self.publish(&target, &ckpt, &note) {
                Ok(()) => {
                    self.known[k] = Some(size);
                    self.stats.published.fetch_add(1, Ordering::Relaxed);
                }
                Err(PublishError::Rejected(why)) => {
                    // A fork attempt (or a target we cannot prove against): never overwrite.
                    tracing::error!(store = %self.name, target = %target.display(), size,
                        reason = %why, "audit checkpoint publication rejected (possible fork)");
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    self.known[k] = Some(size);
                }
                Err(PublishError::Io(e)) => {
                    tracing::warn!(store = %self.name, target = %target.display(), size,
                        error = %e, "audit checkpoint publication failed (retried at the next checkpoint)");
                    self.stats.publish_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if !self.witness.is_empty() {
            match run_witness(&self.witness, &ckpt, &note) {
                Ok(()) => {
                    self.stats.witnessed.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(store = %self.name, size, error = %e,
                        "audit checkpoint: the witness hook failed (retried with the next checkpoint)");
                    self.stats.witness_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.publish_markers();
        self.trim(size);
    }

    /// Clean shutdown: sign the close marker for the whole log, keep it next to the checkpoints
    /// and publish it to every target (a target the gateway cannot rewrite keeps it even if the
    /// local copy is deleted).
    fn close(&mut self, size: u64, root: Hash) {
        let Some(ctl) = &mut self.markers else {
            return;
        };
        let marker = Marker {
            kind: MarkerKind::Closed,
            seq: ctl.close_seq,
            size,
            root,
        };
        let note = match marker.sign(&self.signer) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(store = %self.name, error = %e, "audit store: signing the close marker failed");
                return;
            }
        };
        let name = marker.file_name();
        if let Some(dir) = &self.local {
            match crate::marker::write_marker(dir, &name, &note) {
                Ok(()) => tracing::debug!(store = %self.name, size, "audit store: closed cleanly"),
                Err(e) => tracing::error!(store = %self.name, size, error = %e,
                    "audit store: writing the close marker failed (the next open takes the shutdown for a crash)"),
            }
        }
        for k in 0..self.targets.len() {
            ctl.pending.push((k, name.clone(), note.clone()));
        }
        self.publish_markers();
    }

    /// Publish the pending markers; an I/O failure is retried with the next checkpoint.
    fn publish_markers(&mut self) {
        let Some(ctl) = &mut self.markers else {
            return;
        };
        let (name, targets, stats) = (&self.name, &self.targets, &self.stats);
        ctl.pending.retain(|(k, file, note)| {
            let Some(target) = targets.get(*k) else {
                return false;
            };
            match crate::marker::write_marker(target, file, note) {
                Ok(()) => false,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    tracing::error!(store = %name, target = %target.display(), marker = %file, error = %e,
                        "audit store: marker publication rejected");
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Err(e) => {
                    tracing::warn!(store = %name, target = %target.display(), marker = %file, error = %e,
                        "audit store: marker publication failed (retried with the next checkpoint)");
                    stats.publish_failures.fetch_add(1, Ordering::Relaxed);
                    true
                }
            }
        });
    }

    /// Drop the leaf hashes no target can still need.
    fn trim(&mut self, size: u64) {
        let keep_from = self
            .known
            .iter()
            .map(|k| k.unwrap_or(self.base.size()))
            .min()
            .unwrap_or(size)
            .clamp(self.base.size(), size);
        let drop = ((keep_from - self.base.size()) as usize).min(self.tail.len());
        for h in self.tail.drain(..drop) {
            self.base.push_hash(h);
        }
    }

    /// Consistency proof from `old` to the current tree, if `old` is within what we keep.
    fn prove_from(&self, old: u64) -> Option<Vec<Hash>> {
        if old < self.base.size() {
            return None;
        }
        let mut f = self.base.clone();
        let k = (old - self.base.size()) as usize;
        if k > self.tail.len() {
            return None;
        }
        for h in &self.tail[..k] {
            f.push_hash(*h);
        }
        Some(f.consistency_proof(&self.tail[k..]))
    }

    /// Under the target's lock: check the compare-and-swap, then add `checkpoints/<size>.ckpt`
    /// (never replacing a different one) and replace `latest.ckpt`.
    fn publish(&self, target: &Path, ckpt: &Checkpoint, note: &str) -> Result<(), PublishError> {
        let d = target.join(CKPT_DIR);
        fs::create_dir_all(&d)?;
        let _lock = TargetLock::acquire(&target.join(LOCK))?;
        let latest = target.join(LATEST);
        match fs::read(&latest) {
            Ok(current) => self.check_cas(&current, ckpt)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let at_size = d.join(ckpt_name(ckpt.size));
        match fs::read(&at_size) {
            Ok(existing) if existing == note.as_bytes() => {}
            Ok(existing) => {
                // Same size, same key: Ed25519 is deterministic, so a different note means a
                // different root (or a foreign file). Keep the evidence.
                let same_root = Checkpoint::open(&existing, &[self.signer.verifier()])
                    .is_ok_and(|c| c.root == ckpt.root && c.origin == ckpt.origin);
                if !same_root {
                    return Err(PublishError::Rejected(format!(
                        "{} already holds a different checkpoint",
                        at_size.display()
                    )));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => write_atomic(&at_size, note.as_bytes())?,
            Err(e) => return Err(e.into()),
        }
        write_atomic(&latest, note.as_bytes())?;
        Ok(())
    }

    /// May `new` replace the target's `current` latest?
    fn check_cas(&self, current: &[u8], new: &Checkpoint) -> Result<(), PublishError> {
        let reject = |s: String| Err(PublishError::Rejected(s));
        let cur = match Checkpoint::open(current, &[self.signer.verifier()]) {
            Ok(c) => c,
            Err(e) => {
                return reject(format!(
                    "current latest is not a checkpoint signed by this store's key: {e}"
                ));
            }
        };
        if cur.origin != new.origin {
            return reject(format!("origin {:?} differs from {:?}", cur.origin, new.origin));
        }
        if cur.size > new.size {
            return reject(format!("current latest has size {} > {}", cur.size, new.size));
        }
        if cur.size == new.size {
            return if cur.root == new.root {
                Ok(())
            } else {
                reject(format!("a different root at the same size {}", new.size))
            };
        }
        if cur.size == 0 {
            return Ok(());
        }
        let Some(proof) = self.prove_from(cur.size) else {
            return reject(format!(
                "no local tree state to prove consistency from size {}",
                cur.size
            ));
        };
        match merkle::verify_consistency(cur.size, new.size, &cur.root, &new.root, &proof) {
            Ok(()) => Ok(()),
            Err(e) => reject(format!(
                "current latest (size {}) is not a prefix of this log: {e}",
                cur.size
            )),
        }
    }
}

/// An exclusive `flock` on the target's `latest.lock`, held while `latest.ckpt` is compared and
/// replaced (waiting up to [`LOCK_WAIT`]). The kernel releases it when its holder exits, so a crash
/// leaves nothing behind, and the file is never deleted (a target mounted without delete rights
/// works, and no waiter can remove a lock another one just took).
struct TargetLock {
    _held: fs::File,
}

impl TargetLock {
    fn acquire(path: &Path) -> io::Result<TargetLock> {
        let start = std::time::Instant::now();
        loop {
            match crate::dir_lock::try_lock_file(path).map_err(|(_, e)| e)? {
                crate::dir_lock::Taken::Held(f) => return Ok(TargetLock { _held: f }),
                crate::dir_lock::Taken::Busy if start.elapsed() > LOCK_WAIT => {
                    return Err(io::Error::new(io::ErrorKind::WouldBlock, "latest.lock is held"));
                }
                crate::dir_lock::Taken::Busy => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

/// The size of a target's latest checkpoint, if it has a readable one.
pub(crate) fn target_latest_size(target: &Path) -> Option<u64> {
    crate::publisher::published_size(target).ok().flatten()
}

/// How long a witness hook may run before it is killed.
const WITNESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Run the witness hook with the signed checkpoint on stdin; Ok only on exit status 0 in time.
fn run_witness(cmd: &[String], ckpt: &Checkpoint, note: &str) -> io::Result<()> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let (program, args) = cmd
        .split_first()
        .ok_or_else(|| io::Error::other("empty witness command"))?;
    let mut child = Command::new(program)
        .args(args)
        .env("CORDON_CHECKPOINT_SIZE", ckpt.size.to_string())
        .env("CORDON_CHECKPOINT_ORIGIN", &ckpt.origin)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is its own business; its exit status decides.
        let _ = stdin.write_all(note.as_bytes());
    }
    let deadline = std::time::Instant::now() + WITNESS_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            return if status.success() {
                Ok(())
            } else {
                Err(io::Error::other(format!("witness hook exited with {status}")))
            };
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("witness hook timed out"));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn the_target_lock_excludes_other_holders_and_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK);
        let first = TargetLock::acquire(&path).unwrap();
        // Another open file description (as another process would have) waits, then gives up.
        let started = std::time::Instant::now();
        let err = TargetLock::acquire(&path).map(|_| ()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(started.elapsed() >= LOCK_WAIT);
        drop(first);
        let again = TargetLock::acquire(&path).unwrap();
        drop(again);
        assert!(path.exists(), "the lock file stays (no delete right needed)");
    }
}

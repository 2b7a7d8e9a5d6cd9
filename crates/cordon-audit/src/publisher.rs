//! Checkpoint publication for logs that keep their records elsewhere (a PostgreSQL chain): the
//! same signed C2SP checkpoints, compare-and-swap `latest.ckpt` and witness hook as a
//! [`crate::FileStore`]'s (see `tlog`), run on a thread of their own, plus what a verifier needs
//! to read a publication target back.
//!
//! A target directory holds `checkpoint.vkey` (the log's verifier key, written once and never
//! replaced: a different key is refused), `checkpoints/<size:020>.ckpt` and `latest.ckpt`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::error::AuditError;
use crate::file_store::CheckpointStats;
use crate::keyfile::sync_dir;
use crate::merkle::{Frontier, Hash};
use crate::note::{NoteSigner, NoteVerifier};
use crate::tlog::{self, Checkpointer, CkptJob, CkptMsg, CkptStats};

/// Signs nothing itself: the log signs each checkpoint (it keeps the note too) and hands it over;
/// this publishes it to every target and runs the witness hook, off the append path. Failures
/// are logged and counted ([`CheckpointPublisher::stats`]), never returned to the appender.
pub struct CheckpointPublisher {
    tx: mpsc::Sender<CkptMsg>,
    stats: Arc<CkptStats>,
}

impl std::fmt::Debug for CheckpointPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointPublisher").finish_non_exhaustive()
    }
}

impl CheckpointPublisher {
    /// Start the publication thread for the log `name` (used in logs). `base` is the log's tree
    /// at the smallest size a target may still hold ([`published_size`], or the log's size) and
    /// `tail` the leaf hashes after it: enough to prove that each new checkpoint extends what a
    /// target already has.
    pub fn start(
        name: &str,
        signer: NoteSigner,
        targets: Vec<PathBuf>,
        witness: Vec<String>,
        base: Frontier,
        tail: Vec<Hash>,
    ) -> Result<CheckpointPublisher, AuditError> {
        let stats = Arc::new(CkptStats::default());
        let checkpointer = Checkpointer {
            name: name.to_string(),
            local: None,
            signer,
            known: vec![None; targets.len()],
            markers: None,
            targets,
            witness,
            stats: stats.clone(),
            base,
            tail,
        };
        let (tx, rx) = mpsc::channel();
        // Detached: it ends when the last handle is dropped (after what was sent before), and a
        // drop never waits for it (it may be in a slow target or the witness hook), so dropping is
        // safe anywhere, an async worker included. [`CheckpointPublisher::flush`] waits.
        let _detached: JoinHandle<()> = crate::background::spawn("cordon-audit-publish", move || {
            checkpointer.run(rx)
        })
        .map_err(|e| AuditError::Io {
            path: PathBuf::from(name),
            op: "spawn checkpoint publication thread",
            source: Arc::new(e),
        })?;
        Ok(CheckpointPublisher { tx, stats })
    }

    /// Publish the signed `note` of the checkpoint at `size` with `root`; `leaves` are the leaf
    /// hashes appended since the previous call (or since `start`).
    pub fn submit(&self, size: u64, root: Hash, note: String, leaves: Vec<Hash>) {
        self.stats.written.fetch_add(1, Ordering::Relaxed);
        self.stats.last_size.store(size, Ordering::Relaxed);
        // The thread only stops when this handle drops its sender.
        let _ = self.tx.send(CkptMsg::Job(CkptJob {
            size,
            root,
            leaves,
            note: Some(note),
        }));
    }

    /// Wait (blocking, at most `timeout`) until everything submitted so far has been published
    /// (or has failed, counted); `false` on timeout. For shutdown: call it off the async workers.
    pub fn flush(&self, timeout: std::time::Duration) -> bool {
        let (done, wait) = mpsc::channel();
        if self.tx.send(CkptMsg::Flush(done)).is_err() {
            return false;
        }
        wait.recv_timeout(timeout).is_ok()
    }

    /// Counters: `written` counts checkpoints handed over, the rest are the publication thread's.
    pub fn stats(&self) -> CheckpointStats {
        self.stats.snapshot()
    }
}

/// The tree size of a target's `latest.ckpt`: `Ok(None)` when it has none; an error when it
/// cannot be read or is not a checkpoint (never mistaken for "nothing published").
pub fn published_size(target: &Path) -> io::Result<Option<u64>> {
    let path = target.join(tlog::LATEST);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    crate::checkpoint::Checkpoint::parse_unverified(&bytes)
        .map(|c| Some(c.size))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))
}

/// The note texts a target holds for tree size `size`: its `checkpoints/` file of that size and
/// its `latest.ckpt` when that is the size (signatures not checked). Reads at most two files, however
/// many checkpoints the target keeps.
pub fn published_at(target: &Path, size: u64) -> Vec<String> {
    let mut out = Vec::new();
    let named = target.join(tlog::CKPT_DIR).join(tlog::ckpt_name(size));
    for path in [named, target.join(tlog::LATEST)] {
        if let Ok(text) = fs::read_to_string(&path)
            && crate::checkpoint::Checkpoint::parse_unverified(text.as_bytes()).is_ok_and(|c| c.size == size)
            && !out.contains(&text)
        {
            out.push(text);
        }
    }
    out
}

/// Make sure `target` names `verifier` as its log's key: write `checkpoint.vkey` if it has none,
/// refuse if it names another key (another log, or a replaced key: its checkpoints would no
/// longer verify against what was published before).
pub fn publish_verifier_key(target: &Path, verifier: &NoteVerifier) -> Result<(), AuditError> {
    let path = target.join(tlog::VKEY_FILE);
    let text = format!("{verifier}\n");
    if check_verifier_key(target, verifier)? {
        return Ok(());
    }
    fs::create_dir_all(target).map_err(AuditError::io(target, "create publication target"))?;
    // Never replaces: a racing writer of another key loses here and is refused below.
    let tmp = target.join(format!(".{}.tmp-{}", tlog::VKEY_FILE, std::process::id()));
    let written = (|| {
        fs::write(&tmp, text.as_bytes())?;
        fs::File::open(&tmp)?.sync_all()?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => sync_dir(target).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })()
    .map_err(AuditError::io(&path, "write verifier key"))?;
    if written || check_verifier_key(target, verifier)? {
        return Ok(());
    }
    Err(AuditError::io(&path, "read verifier key")(io::Error::other(
        "checkpoint.vkey vanished while it was being written",
    )))
}

/// Read-only: does `target` name `verifier` as its log's key? `Ok(true)` if it does, `Ok(false)`
/// if it names none yet; [`AuditError::Key`] if it names another key (or not a key),
/// [`AuditError::Io`] if it cannot be read.
pub fn check_verifier_key(target: &Path, verifier: &NoteVerifier) -> Result<bool, AuditError> {
    let path = target.join(tlog::VKEY_FILE);
    let existing = match fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(AuditError::io(&path, "read verifier key")(e)),
    };
    match NoteVerifier::parse(existing.trim_end()) {
        Ok(v) if &v == verifier => Ok(true),
        Ok(v) => Err(AuditError::Key {
            path,
            detail: format!(
                "the publication target belongs to key {}+{:08x}, not this log's {}+{:08x}",
                v.name(),
                v.key_id(),
                verifier.name(),
                verifier.key_id()
            ),
        }),
        Err(e) => Err(AuditError::Key {
            path,
            detail: format!("not a verifier key: {e}"),
        }),
    }
}

/// What a publication target holds, read back for verification (signatures not yet checked).
#[derive(Debug, Default)]
pub struct Published {
    /// `checkpoint.vkey`, if present.
    pub vkey: Option<String>,
    /// Every signed checkpoint file: `latest.ckpt` (named `None`) and `checkpoints/<size>.ckpt`
    /// (named for its size), with its path.
    pub notes: Vec<(Option<u64>, PathBuf, Vec<u8>)>,
}

/// Read a publication target. A missing directory reads as empty.
pub fn read_published(target: &Path) -> io::Result<Published> {
    let mut out = Published::default();
    match fs::read_to_string(target.join(tlog::VKEY_FILE)) {
        Ok(v) => out.vkey = Some(v),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let latest = target.join(tlog::LATEST);
    match fs::read(&latest) {
        Ok(b) => out.notes.push((None, latest, b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listed: BTreeMap<u64, PathBuf> = tlog::list_checkpoints(target)?;
    for (size, p) in listed {
        let b = fs::read(&p)?;
        out.notes.push((Some(size), p, b));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;

    fn signer(seed: u8) -> NoteSigner {
        NoteSigner::from_seed("cordon/pg/test/gw-a", &[seed; 32]).unwrap()
    }

    #[test]
    fn a_target_keeps_its_first_key_and_refuses_another() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("gw-a");
        publish_verifier_key(&t, &signer(1).verifier()).unwrap();
        publish_verifier_key(&t, &signer(1).verifier()).unwrap();
        let err = publish_verifier_key(&t, &signer(2).verifier()).unwrap_err();
        assert!(err.to_string().contains("belongs to key"), "{err}");
        let read = read_published(&t).unwrap();
        assert_eq!(read.vkey.unwrap().trim_end(), signer(1).verifier().to_string());
    }

    #[test]
    fn published_checkpoints_extend_each_other_and_a_fork_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("gw-a");
        let s = signer(1);
        let leaves: Vec<Hash> = (0..10u8).map(|i| crate::merkle::leaf_hash(&[i])).collect();
        let mut tree = Frontier::new();
        let publisher = CheckpointPublisher::start(
            "test",
            signer(1),
            vec![t.clone()],
            Vec::new(),
            Frontier::new(),
            Vec::new(),
        )
        .unwrap();
        for chunk in leaves.chunks(5) {
            for h in chunk {
                tree.push_hash(*h);
            }
            let c = Checkpoint::new(s.name(), tree.size(), tree.root());
            publisher.submit(c.size, c.root, c.sign(&s).unwrap(), chunk.to_vec());
        }
        assert!(publisher.flush(std::time::Duration::from_secs(10)));
        assert_eq!(published_size(&t).unwrap(), Some(10));
        let read = read_published(&t).unwrap();
        let sizes: Vec<Option<u64>> = read.notes.iter().map(|(n, _, _)| *n).collect();
        // latest.ckpt first; a backlog is coalesced, so size 5 may or may not have been written.
        assert_eq!(sizes.first(), Some(&None));
        assert_eq!(sizes.last(), Some(&Some(10)));
        for (_, _, note) in &read.notes {
            Checkpoint::open(note, &[s.verifier()]).unwrap();
        }

        // Another history under the same key, from a fresh start: its size-12 checkpoint is not
        // an extension of the published size 10, so latest.ckpt is kept.
        let other: Vec<Hash> = (100..112u8).map(|i| crate::merkle::leaf_hash(&[i])).collect();
        let mut forked = Frontier::new();
        for h in &other {
            forked.push_hash(*h);
        }
        let publisher = CheckpointPublisher::start(
            "test",
            signer(1),
            vec![t.clone()],
            Vec::new(),
            Frontier::new(),
            other.clone(),
        )
        .unwrap();
        let c = Checkpoint::new(s.name(), 12, forked.root());
        publisher.submit(12, c.root, c.sign(&s).unwrap(), Vec::new());
        assert!(publisher.flush(std::time::Duration::from_secs(10)));
        let stats = publisher.stats.clone();
        assert_eq!(stats.rejected.load(Ordering::Relaxed), 1);
        assert_eq!(published_size(&t).unwrap(), Some(10));
    }
}

//! Tests of [`crate::replica`]: shipping under load, catching up, verification as a prefix, and
//! every way a replica can diverge (each detected, nothing overwritten, the primary unaffected).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::checkpoint::Checkpoint;
use crate::note::NoteSigner;
use crate::record::tests::sample_decision;
use crate::segment::Frames;
use crate::store_tests::{append_n, segments};
use crate::tlog::{CKPT_DIR, KEY_FILE, VKEY_FILE};
use crate::{AuditStore, FileStore, StoreOptions, verify_store};

/// Small segments (several per test) and frequent checkpoints, published to `publish_to`.
fn open(dir: &Path, publish_to: Option<&Path>) -> FileStore {
    let opts = StoreOptions {
        checkpoint_every: 8,
        publish_to: publish_to.map(Path::to_path_buf).into_iter().collect(),
        ..StoreOptions::default()
    };
    FileStore::open_with_segment_limit(dir, opts, 8 << 10).unwrap()
}

/// A long interval: only `sync_now` ships.
const MANUAL: Duration = Duration::from_secs(3600);

fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let primary = tmp.path().join("EU");
    let replica = tmp.path().join("replica-EU");
    (tmp, primary, replica)
}

/// A closed primary of `n` records and a replica fully synced to it.
async fn synced(n: u64) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (tmp, primary, replica) = dirs();
    let store = open(&primary, Some(&replica));
    append_n(&store, n).await;
    drop(store);
    let r = manual(&primary, &replica);
    let s = r.sync_now().unwrap();
    assert_eq!((s.replica_records, s.lag_bytes), (n, 0));
    drop(r);
    (tmp, primary, replica)
}

/// A replicator that ships only on `sync_now`, once its initial background pass is over (so that
/// a test's own changes to the replica cannot race with it).
fn manual(primary: &Path, replica: &Path) -> Replicator {
    let r = Replicator::start(primary, replica, MANUAL).unwrap();
    wait_for("the initial pass", Duration::from_secs(30), || {
        let s = r.status();
        s.passes + s.failed_passes >= 1
    });
    r
}

fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn replica_err(e: &AuditError) -> &ReplicaError {
    e.replica_error()
        .unwrap_or_else(|| panic!("not a replica divergence: {e}"))
}

/// Snapshot of every data file in a directory (name -> bytes; not the replicator's empty `LOCK`),
/// to show nothing was overwritten.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() && !p.ends_with(crate::dir_lock::LOCK_FILE) {
            out.push((p.clone(), fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

/// A frame that chains correctly onto the last record of the segment `seg`, as a forger without
/// the checkpoint key could make.
fn forged_frame(seg: &Path) -> Vec<u8> {
    let data = fs::read(seg).unwrap();
    let last = Frames::new(&data).map(|f| f.unwrap()).last().unwrap();
    let env = segment::parse_envelope(last.body).unwrap();
    let (head, _) = segment::entry_and_leaf_hash(&env.prev, last.body);
    let rec = serde_json::to_vec(&sample_decision(999)).unwrap();
    let mut buf = Vec::new();
    segment::encode_frame(&mut buf, env.index + 1, &head, &rec).unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_catches_up_with_concurrent_appends_and_verifies_as_a_prefix() {
    let (_tmp, primary, replica) = dirs();
    // The replica is also the publication target, as the gateway configures it.
    let store = Arc::new(open(&primary, Some(&replica)));
    append_n(&store, 40).await;
    let rep = Replicator::start(&primary, &replica, Duration::from_millis(10)).unwrap();
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..60 {
                store
                    .append(&sample_decision(t * 100 + k))
                    .unwrap()
                    .await
                    .unwrap();
            }
        }));
    }
    for _ in 0..5 {
        let s = tokio::task::block_in_place(|| rep.sync_now()).unwrap();
        assert!(s.last_error.is_none() && !s.halted, "{s:?}");
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = 40 + 4 * 60;
    let s = rep.sync_now().unwrap();
    assert_eq!((s.replica_records, s.lag_bytes), (total, 0), "{s:?}");
    assert!(s.shipped_records <= total && s.shipped_bytes == s.replica_bytes);
    assert!(segments(&replica).len() > 2, "several segments shipped");
    let r = verify_replica(&primary, &replica).unwrap();
    assert_eq!(
        (r.replica_records, r.primary_records, r.lag_records),
        (total, total, 0)
    );

    // Closed: the final checkpoint is shipped too, and the replica is a complete copy.
    drop(store);
    let s = rep.sync_now().unwrap();
    assert_eq!((s.replica_records, s.lag_bytes), (total, 0), "{s:?}");
    assert!(
        tlog::list_checkpoints(&replica).unwrap().contains_key(&total),
        "final checkpoint"
    );
    let r = verify_replica(&primary, &replica).unwrap();
    assert_eq!(r.lag_records, 0);
    assert!(
        r.checkpoints > 0,
        "replica checkpoints checked against the primary"
    );
    let p = verify_store(&primary).unwrap();
    assert_eq!(r.root_at_replica_size, p.tree_root);
    let own = verify_store(&replica).unwrap();
    assert_eq!((own.records, own.unattested), (total, 0));
    let local: Vec<u64> = tlog::list_checkpoints(&primary).unwrap().into_keys().collect();
    let copied: Vec<u64> = tlog::list_checkpoints(&replica).unwrap().into_keys().collect();
    assert!(local.iter().all(|s| copied.contains(s)), "{local:?} ⊆ {copied:?}");
    assert_eq!(
        fs::read(replica.join(VKEY_FILE)).unwrap(),
        fs::read(primary.join(VKEY_FILE)).unwrap()
    );
    assert!(
        !replica.join(KEY_FILE).exists(),
        "the signing key is never shipped"
    );
    rep.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipping_in_the_background_while_appends_continue_keeps_a_prefix() {
    let (_tmp, primary, replica) = dirs();
    let store = Arc::new(open(&primary, Some(&replica)));
    let running = Arc::new(AtomicBool::new(true));
    let writer = {
        let (store, running) = (store.clone(), running.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while running.load(Ordering::Relaxed) {
                store.append(&sample_decision(n)).unwrap().await.unwrap();
                n += 1;
            }
            n
        })
    };
    let rep = Replicator::start(&primary, &replica, Duration::from_millis(2)).unwrap();
    tokio::task::block_in_place(|| {
        wait_for(
            "the background thread to ship 100 records over 3 passes",
            Duration::from_secs(30),
            || {
                let s = rep.status();
                assert!(s.last_error.is_none(), "{s:?}");
                s.replica_records >= 100 && s.passes >= 3
            },
        )
    });
    let s = rep.stop();
    assert!(!s.halted);
    // The primary is still being written: the replica is a (lagging) prefix.
    let r = tokio::task::block_in_place(|| verify_replica(&primary, &replica)).unwrap();
    assert_eq!(r.replica_records, s.replica_records);
    assert!(r.primary_records >= r.replica_records);
    assert_eq!(r.lag_records, r.primary_records - r.replica_records);
    running.store(false, Ordering::Relaxed);
    let n = writer.await.unwrap();
    drop(store);
    let r = verify_replica(&primary, &replica).unwrap();
    assert_eq!(r.primary_records, n);
    // A new replicator resumes where the old one stopped.
    let rep = manual(&primary, &replica);
    assert_eq!(rep.sync_now().unwrap().replica_records, n);
    assert_eq!(verify_replica(&primary, &replica).unwrap().lag_records, 0);
}

#[tokio::test]
async fn flipped_byte_in_the_replica_fails_its_own_verification() {
    let (_tmp, primary, replica) = synced(30).await;
    let seg = segments(&replica).remove(0);
    let mut data = fs::read(&seg).unwrap();
    let frames: Vec<_> = Frames::new(&data).map(|f| f.unwrap().offset).collect();
    let mid = frames[frames.len() / 2] + HEADER + 30;
    data[mid] ^= 1;
    fs::write(&seg, &data).unwrap();
    let e = verify_replica(&primary, &replica).unwrap_err();
    assert!(matches!(e, ReplicaError::Replica(_)), "{e}");
    assert_eq!(e.kind(), Some(&BreakKind::BadCrc), "{e}");
}

#[tokio::test]
async fn replica_truncated_mid_frame_is_reported() {
    let (_tmp, primary, replica) = synced(30).await;
    let seg = segments(&replica).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let e = verify_replica(&primary, &replica).unwrap_err();
    assert_eq!(e.kind(), Some(&BreakKind::Truncated), "{e}");
}

#[tokio::test]
async fn forged_frame_makes_the_replica_longer_or_divergent() {
    let (_tmp, primary, replica) = synced(30).await;
    let seg = segments(&replica).pop().unwrap();
    let forged = forged_frame(&seg);
    let mut data = fs::read(&seg).unwrap();
    data.extend_from_slice(&forged);
    fs::write(&seg, &data).unwrap();
    // The forged record chains correctly, but the replica holds the primary's published close
    // marker: alone it is named forged ...
    let e = verify_store(&replica).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            Some(BreakKind::Forged {
                closed_at: 30,
                found: 31,
                ..
            })
        ),
        "{e}"
    );
    // ... but it is not the primary's.
    let e = verify_replica(&primary, &replica).unwrap_err();
    assert!(matches!(e, ReplicaError::Longer { .. }), "{e}");
    assert!(e.to_string().contains("longer than primary"), "{e}");

    // With more records in the primary, the forged one sits where the primary has another.
    let store = open(&primary, None);
    append_n(&store, 5).await;
    drop(store);
    let e = verify_replica(&primary, &replica).unwrap_err();
    match &e {
        ReplicaError::Diverged { index, .. } => assert_eq!(*index, 30),
        other => panic!("{other}"),
    }
    assert!(
        e.to_string().contains("diverges from primary") && e.to_string().contains("record 30"),
        "{e}"
    );

    // A replicator refuses to ship onto it and changes nothing.
    let before = fs::read(&seg).unwrap();
    let rep = manual(&primary, &replica);
    let e = rep.sync_now().unwrap_err();
    assert!(
        matches!(replica_err(&e), ReplicaError::Diverged { index: 30, .. }),
        "{e}"
    );
    assert!(rep.status().halted);
    assert_eq!(fs::read(&seg).unwrap(), before, "never overwritten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_holding_another_stores_segment_is_refused_and_the_primary_keeps_appending() {
    let (tmp, primary, replica) = dirs();
    let other = tmp.path().join("other");
    let o = open(&other, None);
    append_n(&o, 10).await;
    drop(o);
    fs::create_dir_all(&replica).unwrap();
    let foreign = segments(&other).remove(0);
    fs::copy(&foreign, replica.join(foreign.file_name().unwrap())).unwrap();
    let before = snapshot(&replica);

    let store = open(&primary, None);
    append_n(&store, 10).await;
    let rep = Replicator::start(&primary, &replica, Duration::from_millis(5)).unwrap();
    let e = rep.sync_now().unwrap_err();
    assert!(
        matches!(replica_err(&e), ReplicaError::Diverged { index: 0, .. }),
        "{e}"
    );
    let s = rep.status();
    assert!(
        s.halted && s.last_error.as_deref().is_some_and(|m| m.contains("diverges")),
        "{s:?}"
    );
    // The primary is unaffected, the replicator stays halted, the replica unchanged.
    append_n(&store, 10).await;
    assert!(rep.sync_now().is_err());
    tokio::task::block_in_place(|| {
        wait_for("a background pass", Duration::from_secs(10), || {
            rep.status().failed_passes >= 3
        })
    });
    assert!(snapshot(&replica) == before, "nothing shipped or overwritten");
    drop(rep);
    drop(store);
    assert_eq!(verify_store(&primary).unwrap().records, 20);
    assert!(matches!(
        verify_replica(&primary, &replica).unwrap_err(),
        ReplicaError::Diverged { index: 0, .. }
    ));
}

#[tokio::test]
async fn replica_with_another_stores_key_is_refused() {
    let (tmp, primary, replica) = dirs();
    let other = tmp.path().join("other");
    drop(open(&other, None));
    fs::create_dir_all(&replica).unwrap();
    fs::copy(other.join(VKEY_FILE), replica.join(VKEY_FILE)).unwrap();
    let store = open(&primary, None);
    append_n(&store, 3).await;
    let rep = manual(&primary, &replica);
    let e = rep.sync_now().unwrap_err();
    assert!(matches!(replica_err(&e), ReplicaError::ForeignKey { .. }), "{e}");
    assert!(segments(&replica).is_empty());
    drop(store);
    assert!(matches!(
        verify_replica(&primary, &replica).unwrap_err(),
        ReplicaError::ForeignKey { .. }
    ));
}

#[tokio::test]
async fn changes_behind_the_replicators_back_halt_it() {
    // Rewritten bytes at the replica's end (same length): caught by the tail comparison.
    let (_tmp, primary, replica) = dirs();
    let store = open(&primary, None);
    append_n(&store, 5).await;
    let rep = manual(&primary, &replica);
    rep.sync_now().unwrap();
    let seg = segments(&replica).pop().unwrap();
    let mut data = fs::read(&seg).unwrap();
    let n = data.len();
    data[n - 3] ^= 1;
    fs::write(&seg, &data).unwrap();
    append_n(&store, 5).await;
    let e = rep.sync_now().unwrap_err();
    assert!(
        matches!(replica_err(&e), ReplicaError::Diverged { index: 4, .. }),
        "{e}"
    );
    assert_eq!(fs::read(&seg).unwrap(), data);

    // Bytes appended to the replica: its length is not what the replicator left.
    let (_tmp2, primary, replica) = dirs();
    let store = open(&primary, None);
    append_n(&store, 5).await;
    let rep = manual(&primary, &replica);
    rep.sync_now().unwrap();
    let seg = segments(&replica).pop().unwrap();
    let mut data = fs::read(&seg).unwrap();
    data.extend_from_slice(&forged_frame(&seg));
    fs::write(&seg, &data).unwrap();
    let e = rep.sync_now().unwrap_err();
    assert!(matches!(replica_err(&e), ReplicaError::Tampered { .. }), "{e}");
    assert!(rep.status().halted);
    assert_eq!(fs::read(&seg).unwrap(), data);
    // The primary never noticed.
    append_n(&store, 2).await;
}

#[tokio::test]
async fn a_different_checkpoint_in_the_replica_is_not_replaced() {
    let (_tmp, primary, replica) = dirs();
    let store = open(&primary, None);
    append_n(&store, 20).await;
    drop(store);
    let sizes: Vec<u64> = tlog::list_checkpoints(&primary).unwrap().into_keys().collect();
    let (a, b) = (sizes[0], sizes[1]);
    // The replica holds, under size a's name, another checkpoint of the same store.
    fs::create_dir_all(replica.join(CKPT_DIR)).unwrap();
    let other = fs::read(primary.join(CKPT_DIR).join(tlog::ckpt_name(b))).unwrap();
    let planted = replica.join(CKPT_DIR).join(tlog::ckpt_name(a));
    fs::write(&planted, &other).unwrap();
    let rep = manual(&primary, &replica);
    let e = rep.sync_now().unwrap_err();
    assert!(
        matches!(replica_err(&e), ReplicaError::CheckpointMismatch { size, .. } if *size == a),
        "{e}"
    );
    assert_eq!(fs::read(&planted).unwrap(), other, "not replaced");
}

#[tokio::test]
async fn lagging_replica_checkpoints_are_checked_against_the_primary() {
    let (_tmp, primary, replica) = synced(40).await;
    // The replica lags (its last records not yet shipped) while it already holds checkpoints
    // published beyond them: accepted, since they match the primary.
    let seg = segments(&replica).pop().unwrap();
    let data = fs::read(&seg).unwrap();
    let cut = Frames::new(&data).map(|f| f.unwrap().offset).nth(1).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(cut as u64)
        .unwrap();
    let r = verify_replica(&primary, &replica).unwrap();
    assert!(
        r.lag_records > 0 && r.replica_records + r.lag_records == 40,
        "{r:?}"
    );
    assert!(r.checkpoints > 0);

    // A correctly signed checkpoint beyond the replica's records that the primary contradicts.
    let vkey = fs::read_to_string(primary.join(VKEY_FILE)).unwrap();
    let origin = vkey.split('+').next().unwrap();
    let signer = NoteSigner::from_pkcs8(origin, &fs::read(primary.join(KEY_FILE)).unwrap()).unwrap();
    let size = 39;
    let note = Checkpoint::new(origin, size, [9; 32]).sign(&signer).unwrap();
    let forged = replica.join(CKPT_DIR).join(tlog::ckpt_name(size));
    fs::write(&forged, note).unwrap();
    let e = verify_replica(&primary, &replica).unwrap_err();
    assert!(
        matches!(&e, ReplicaError::CheckpointMismatch { size: 39, .. }),
        "{e}"
    );

    // ... or attests more records than the primary holds.
    fs::remove_file(&forged).unwrap();
    let note = Checkpoint::new(origin, 41, [9; 32]).sign(&signer).unwrap();
    fs::write(replica.join(CKPT_DIR).join(tlog::ckpt_name(41)), note).unwrap();
    let e = verify_replica(&primary, &replica).unwrap_err();
    assert!(
        matches!(&e, ReplicaError::CheckpointMismatch { size: 41, .. }),
        "{e}"
    );
}

#[tokio::test]
async fn an_interrupted_copy_is_completed_after_a_restart() {
    let (_tmp, primary, replica) = synced(12).await;
    // A replicator crashed mid-write: the replica ends in part of a frame.
    let seg = segments(&replica).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let store = open(&primary, None);
    append_n(&store, 20).await;
    drop(store);
    let rep = manual(&primary, &replica);
    let s = rep.sync_now().unwrap();
    assert_eq!((s.replica_records, s.lag_bytes), (32, 0), "{s:?}");
    // Reopened without publication: the new checkpoints reach the replica only by shipping.
    assert!(s.shipped_checkpoints > 0, "{s:?}");
    let copied = tlog::list_checkpoints(&replica).unwrap();
    assert!(
        tlog::list_checkpoints(&primary)
            .unwrap()
            .keys()
            .all(|k| copied.contains_key(k))
    );
    let r = verify_replica(&primary, &replica).unwrap();
    assert_eq!((r.replica_records, r.lag_records), (32, 0));
}

#[test]
fn the_store_itself_is_not_a_replica_and_an_empty_store_verifies() {
    let (_tmp, primary, replica) = dirs();
    fs::create_dir_all(&primary).unwrap();
    assert!(Replicator::start(&primary, &primary, MANUAL).is_err());
    drop(open(&primary, None));
    let rep = manual(&primary, &replica);
    assert_eq!(rep.sync_now().unwrap().replica_records, 0);
    let r = verify_replica(&primary, &replica).unwrap();
    assert_eq!((r.replica_records, r.primary_records), (0, 0));
    assert_eq!(r.root_at_replica_size, hex::encode(crate::merkle::empty_root()));
}

#[tokio::test]
async fn a_replica_takes_one_primary_at_a_time() {
    let (tmp, primary, replica) = dirs();
    let other = tmp.path().join("EU-2");
    for dir in [&primary, &other] {
        let store = open(dir, None);
        append_n(&store, 3).await;
    }
    let first = manual(&primary, &replica);
    // A second primary on the same replica (here in this process; another process's flock
    // conflicts the same way) is refused before it writes anything.
    let err = Replicator::start(&other, &replica, MANUAL).unwrap_err();
    assert!(matches!(err, AuditError::ReplicaLocked { .. }), "{err}");
    assert!(err.to_string().contains("in use by another replicator"), "{err}");
    assert_eq!(first.sync_now().unwrap().replica_records, 3);
    verify_replica(&primary, &replica).unwrap();
    // Once the first replicator is gone, the lock is free again (the same primary resumes).
    drop(first);
    let again = manual(&primary, &replica);
    assert!(!again.status().halted);
}

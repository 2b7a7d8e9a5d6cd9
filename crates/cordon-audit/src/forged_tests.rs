//! Forged tails: records appended to a cleanly closed store by someone without its key are named
//! ([`BreakKind::Forged`], [`AuditError::Forged`]), also when the local close marker is deleted
//! but a publication target keeps it; a crash's unattested tail is still adopted, a restart that
//! crashes before its first checkpoint is not mistaken for forgery, and a marker signed by another
//! key is never trusted.

use std::fs;
use std::path::{Path, PathBuf};

use crate::marker::MARKER_DIR;
use crate::note::NoteSigner;
use crate::record::tests::sample_decision;
use crate::store_tests::{append_n, forget_close_markers, segments};
use crate::{AuditError, BreakKind, FileStore, StoreOptions, VerifyOptions, verify_store, verify_store_with};

fn opts(publish_to: Vec<PathBuf>) -> StoreOptions {
    StoreOptions {
        publish_to,
        ..StoreOptions::default()
    }
}

/// Open the store at `dir`, append `n` records and close it cleanly (final checkpoint and close
/// marker).
async fn close_after(dir: &Path, options: StoreOptions, n: u64) {
    let store = FileStore::open(dir, options).unwrap();
    append_n(&store, n).await;
    drop(store);
}

/// Append one frame with a correct CRC and chain link after the last record, as anyone with
/// write access can (the link is just a hash); returns its index.
fn append_forged(dir: &Path) -> u64 {
    // The chain head and length from the records themselves (the chain alone verifies).
    let mut head = crate::segment::ZERO_HASH;
    let mut n = 0;
    crate::verify::read_bodies(dir, |i, body| {
        let env = crate::segment::parse_envelope(body).unwrap();
        head = crate::segment::entry_and_leaf_hash(&env.prev, body).0;
        n = i + 1;
    })
    .unwrap();
    let rec = serde_json::to_vec(&sample_decision(99)).unwrap();
    let mut buf = Vec::new();
    crate::segment::encode_frame(&mut buf, n, &head, &rec).unwrap();
    let seg = segments(dir).pop().unwrap();
    let mut data = fs::read(&seg).unwrap();
    data.extend_from_slice(&buf);
    fs::write(&seg, data).unwrap();
    n
}

fn marker_names(place: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(place.join(MARKER_DIR))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn external(t: &Path) -> VerifyOptions<'static> {
    VerifyOptions {
        external: vec![t.to_path_buf()],
        progress: None,
    }
}

fn assert_forged_at(e: &crate::VerifyError, index: u64) {
    assert!(
        matches!(e.kind(), Some(BreakKind::Forged { closed_at, .. }) if *closed_at == index),
        "{e}"
    );
    assert_eq!(e.index(), Some(index));
}

#[tokio::test]
async fn a_record_appended_after_a_clean_close_is_refused_at_open_and_named_by_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("EU");
    close_after(&dir, opts(vec![]), 7).await;
    assert_eq!(marker_names(&dir), vec!["00000000000000000001.closed"]);
    assert_eq!(append_forged(&dir), 7);
    let e = verify_store(&dir).unwrap_err();
    assert_forged_at(&e, 7);
    let msg = e.to_string();
    assert!(
        msg.contains(&dir.display().to_string())
            && msg.contains("record 7")
            && msg.contains("00000000000000000000.log"),
        "names the store, the index and the segment: {msg}"
    );
    let seg = segments(&dir).pop().unwrap();
    let before = fs::read(&seg).unwrap();
    let err = FileStore::open(&dir, opts(vec![])).unwrap_err();
    assert!(matches!(err, AuditError::Forged { index: 7, .. }), "{err}");
    assert!(
        err.to_string()
            .contains("forged (appended after a clean shutdown"),
        "{err}"
    );
    // Nothing cut, nothing signed, no open marker: a second try refuses the same way.
    assert_eq!(fs::read(&seg).unwrap(), before);
    assert_eq!(marker_names(&dir), vec!["00000000000000000001.closed"]);
    assert!(matches!(
        FileStore::open(&dir, opts(vec![])),
        Err(AuditError::Forged { index: 7, .. })
    ));
}

#[tokio::test]
async fn a_deleted_local_close_marker_is_caught_by_the_published_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("EU");
    let target = tmp.path().join("published");
    close_after(&dir, opts(vec![target.clone()]), 9).await;
    assert_eq!(marker_names(&target), vec!["00000000000000000001.closed"]);
    append_forged(&dir);
    forget_close_markers(&dir);
    // Locally the clean shutdown now looks like a crash (the documented limit without a target)...
    assert_eq!(verify_store(&dir).unwrap().unattested, 1);
    // ... but the target the gateway cannot rewrite still holds the close marker.
    assert_forged_at(&verify_store_with(&dir, &external(&target)).unwrap_err(), 9);
    let err = FileStore::open(&dir, opts(vec![target.clone()])).unwrap_err();
    assert!(matches!(err, AuditError::Forged { index: 9, .. }), "{err}");
    assert!(
        err.to_string().contains("published"),
        "names the target's marker: {err}"
    );
}

#[tokio::test]
async fn a_crash_tail_is_kept_and_signed_at_the_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("EU");
    let target = tmp.path().join("published");
    let every = |publish_to| StoreOptions {
        checkpoint_every: 3,
        ..opts(publish_to)
    };
    close_after(&dir, every(vec![target.clone()]), 10).await;
    // As after a crash before the checkpoint of the last records: no close marker, and the
    // newest checkpoint (local and published) below 10.
    let attested = simulate_crash(&dir, &target, 6);
    assert!(attested < 10);
    let r = verify_store_with(&dir, &external(&target)).unwrap();
    assert_eq!(r.unattested, 10 - attested);
    let store = FileStore::open(&dir, every(vec![target.clone()])).unwrap();
    assert_eq!(append_n(&store, 1).await, vec![10], "the tail is kept");
    drop(store);
    let r = verify_store_with(&dir, &external(&target)).unwrap();
    assert_eq!((r.records, r.unattested), (11, 0));
}

/// Leave `dir` as a crash would have with no checkpoint above `size`: the checkpoints above it
/// and every close marker gone, here and in `target`, whose `latest.ckpt` goes back to its newest
/// remaining checkpoint. Returns that checkpoint's size (0: none).
fn simulate_crash(dir: &Path, target: &Path, size: u64) -> u64 {
    for place in [dir, target] {
        for (s, p) in crate::tlog::list_checkpoints(place).unwrap() {
            if s > size {
                fs::remove_file(p).unwrap();
            }
        }
        forget_close_markers(place);
    }
    let latest = target.join(crate::tlog::LATEST);
    match crate::tlog::list_checkpoints(target).unwrap().pop_last() {
        Some((s, p)) => {
            fs::copy(p, latest).unwrap();
            s
        }
        None => {
            fs::remove_file(latest).unwrap();
            0
        }
    }
}

#[tokio::test]
async fn a_restart_that_crashes_before_its_first_checkpoint_is_not_forgery() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("EU");
    let target = tmp.path().join("published");
    close_after(&dir, opts(vec![target.clone()]), 5).await;
    // A clean restart writes (and publishes) its open marker before any append.
    let store = FileStore::open(&dir, opts(vec![target.clone()])).unwrap();
    assert_eq!(
        marker_names(&dir),
        vec!["00000000000000000001.closed", "00000000000000000002.opened"]
    );
    append_n(&store, 3).await;
    drop(store);
    assert_eq!(
        marker_names(&target),
        vec![
            "00000000000000000001.closed",
            "00000000000000000002.opened",
            "00000000000000000003.closed"
        ]
    );
    // It crashed before the checkpoint of its 3 records: no close marker of its own (the first
    // session's stays), newest checkpoint at 5.
    for place in [&dir, &target] {
        for (s, p) in crate::tlog::list_checkpoints(place).unwrap() {
            if s > 5 {
                fs::remove_file(p).unwrap();
            }
        }
        fs::remove_file(place.join(MARKER_DIR).join("00000000000000000003.closed")).unwrap();
    }
    fs::copy(
        target.join(crate::tlog::CKPT_DIR).join(crate::tlog::ckpt_name(5)),
        target.join(crate::tlog::LATEST),
    )
    .unwrap();
    let r = verify_store_with(&dir, &external(&target)).unwrap();
    assert_eq!((r.records, r.unattested), (8, 3));
    let store = FileStore::open(&dir, opts(vec![target.clone()])).unwrap();
    assert_eq!(append_n(&store, 1).await, vec![8]);
    drop(store);
    assert_eq!(verify_store_with(&dir, &external(&target)).unwrap().unattested, 0);
}

#[tokio::test]
async fn clean_restarts_without_records_do_not_open_a_hole() {
    // close(1) at 4, open(2) at 4, close(3) at 4: the newest is a close marker again.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("EU");
    close_after(&dir, opts(vec![]), 4).await;
    drop(FileStore::open(&dir, opts(vec![])).unwrap());
    assert_eq!(
        marker_names(&dir),
        vec![
            "00000000000000000001.closed",
            "00000000000000000002.opened",
            "00000000000000000003.closed"
        ]
    );
    append_forged(&dir);
    assert_forged_at(&verify_store(&dir).unwrap_err(), 4);
    assert!(matches!(
        FileStore::open(&dir, opts(vec![])),
        Err(AuditError::Forged { index: 4, .. })
    ));
}

#[tokio::test]
async fn a_marker_signed_by_another_key_is_reported_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("EU");
    close_after(&dir, opts(vec![]), 3).await;
    // An attacker appends a record and, to cover it, an open marker of their own key.
    append_forged(&dir);
    let origin = crate::read_verifier_key(&dir).unwrap();
    let origin = origin.split('+').next().unwrap();
    let other = NoteSigner::from_seed(origin, &[42; 32]).unwrap();
    let fake = crate::marker::Marker {
        kind: crate::marker::MarkerKind::Opened,
        seq: 2,
        size: 3,
        root: [0; 32],
    };
    crate::marker::write_marker(&dir, &fake.file_name(), &fake.sign(&other).unwrap()).unwrap();
    let e = verify_store(&dir).unwrap_err();
    assert!(
        matches!(e.kind(), Some(BreakKind::BadMarker { detail }) if detail.contains("not a marker signed by this store's key")),
        "{e}"
    );
    assert!(e.to_string().contains("00000000000000000002.opened"), "{e}");
    let err = FileStore::open(&dir, opts(vec![])).unwrap_err();
    assert!(
        matches!(&err, AuditError::BadMarker { detail, .. } if detail.contains("not a marker signed by this store's key")),
        "{err}"
    );
    assert!(err.to_string().contains("bad close/open marker"), "{err}");
    // Removed again, the forgery is named as before.
    fs::remove_file(dir.join(MARKER_DIR).join(fake.file_name())).unwrap();
    assert_forged_at(&verify_store(&dir).unwrap_err(), 3);
}

#[tokio::test]
async fn a_close_marker_is_checked_against_the_records() {
    // The close marker signs the root too: a rewritten history under it is a mismatch.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("EU");
    close_after(&dir, opts(vec![]), 3).await;
    // Without the checkpoints, the marker alone still attests 3 records.
    for (_, p) in crate::tlog::list_checkpoints(&dir).unwrap() {
        fs::remove_file(p).unwrap();
    }
    let seg = segments(&dir).pop().unwrap();
    let data = fs::read(&seg).unwrap();
    let first = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize + crate::segment::HEADER;
    fs::write(&seg, &data[..first]).unwrap();
    let e = verify_store(&dir).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            Some(BreakKind::RemovedTail {
                published_size: 3,
                found: 1
            })
        ),
        "{e}"
    );
    assert!(FileStore::open(&dir, opts(vec![])).is_err());
}

// ----- Forks and strangers in the publication target (a reviewer's scenarios) -----

/// Two stores with one key, origin and publication target: the second forks the first's log.
fn forking(tmp: &Path) -> impl Fn() -> StoreOptions + '_ {
    move || StoreOptions {
        checkpoint_every: 5,
        checkpoint_key: Some(tmp.join("ck.key")),
        origin: Some("cordon/test/EU".into()),
        publish_to: vec![tmp.join("witness")],
        ..StoreOptions::default()
    }
}

#[tokio::test]
async fn a_forks_close_marker_never_condemns_the_real_logs_crash_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let o = forking(tmp.path());
    let target = tmp.path().join("witness");
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    close_after(&a_dir, o(), 10).await;
    // The fork writes more records and closes: its close marker (15) reaches the target.
    close_after(&b_dir, o(), 15).await;
    let newest = |place: &Path| marker_names(place).pop().unwrap();
    assert!(
        newest(&target).ends_with(".closed"),
        "{:?}",
        marker_names(&target)
    );
    // A reopens (an open marker at its own size), appends, and crashes (no close marker).
    close_after(&a_dir, o(), 6).await;
    let own_close = newest(&a_dir);
    assert!(own_close.ends_with(".closed"));
    for place in [&a_dir, &target] {
        let _ = fs::remove_file(place.join(MARKER_DIR).join(&own_close));
    }
    let a = FileStore::open(&a_dir, o()).expect("the real log's crash tail is not forged");
    drop(a);
}

#[tokio::test]
async fn a_forks_marker_with_the_logs_sequence_number_is_ignored_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let o = forking(tmp.path());
    let target = tmp.path().join("witness");
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    close_after(&a_dir, o(), 10).await;
    let b = FileStore::open(&b_dir, o()).unwrap(); // takes marker number 2 for its close
    let a = FileStore::open(&a_dir, o()).unwrap(); // writes 2.opened
    append_n(&b, 3).await;
    drop(b); // its 2.closed is not published beside A's 2.opened
    append_n(&a, 2).await;
    drop(a);
    // At most one marker per sequence number reaches the target.
    let names = marker_names(&target);
    let mut seqs: Vec<&str> = names.iter().map(|n| n.split('.').next().unwrap()).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), names.len(), "{names:?}");
    let a = FileStore::open(&a_dir, o()).expect("the real log still opens");
    drop(a);
    let r = verify_store_with(
        &a_dir,
        &VerifyOptions {
            external: vec![target.clone()],
            progress: None,
        },
    );
    assert!(r.is_ok(), "{r:?}");
}

#[tokio::test]
async fn a_strangers_marker_in_the_target_does_not_take_a_clean_store_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let (target, dir) = (tmp.path().join("replica"), tmp.path().join("EU"));
    let o = || StoreOptions {
        publish_to: vec![target.clone()],
        ..StoreOptions::default()
    };
    close_after(&dir, o(), 3).await;
    let other = NoteSigner::from_seed("cordon/other/UK", &[9; 32]).unwrap();
    let m = crate::marker::Marker {
        kind: crate::marker::MarkerKind::Closed,
        seq: 7,
        size: 0,
        root: [0; 32],
    };
    crate::marker::write_marker(&target, &m.file_name(), &m.sign(&other).unwrap()).unwrap();
    let s = FileStore::open(&dir, o()).expect("a cleanly closed store opens");
    append_n(&s, 1).await;
    drop(s);
}

#[tokio::test]
async fn a_close_marker_whose_publication_failed_is_published_at_the_next_open() {
    let tmp = tempfile::tempdir().unwrap();
    let (target, dir) = (tmp.path().join("replica"), tmp.path().join("EU"));
    close_after(&dir, opts(vec![target.clone()]), 3).await;
    let close = marker_names(&dir).pop().unwrap();
    assert!(close.ends_with(".closed"));
    // The publication at shutdown did not happen (the target was down then).
    fs::remove_file(target.join(MARKER_DIR).join(&close)).unwrap();
    let s = FileStore::open(&dir, opts(vec![target.clone()])).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !target.join(MARKER_DIR).join(&close).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            marker_names(&target)
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    drop(s);
    assert_eq!(
        fs::read(target.join(MARKER_DIR).join(&close)).unwrap(),
        fs::read(dir.join(MARKER_DIR).join(&close)).unwrap()
    );
}

//! Tamper and crash tests: what [`crate::verify_store`] reports and what [`crate::FileStore::open`]
//! does with each kind of damage; shredding keeps the chain verifiable.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::record::tests::sample_decision;
use crate::segment::{Frames, HEADER};
use crate::store_tests::{append_n, forget_close_markers, segments};
use crate::{
    AuditError, AuditStore, BreakKind, FileStore, Keystore, Payload, Pseudonymizer, Record, StoreOptions,
    read_records, verify_store,
};

/// A closed store of `n` records in one segment; returns (dir guard, segment path, frame ranges).
async fn store_of(n: u64) -> (tempfile::TempDir, PathBuf, Vec<Range<usize>>) {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
    append_n(&store, n).await;
    drop(store);
    let seg = segments(dir.path()).remove(0);
    let ranges = frame_ranges(&seg);
    assert_eq!(ranges.len() as u64, n);
    (dir, seg, ranges)
}

fn frame_ranges(seg: &Path) -> Vec<Range<usize>> {
    let data = fs::read(seg).unwrap();
    Frames::new(&data)
        .map(|f| {
            let f = f.unwrap();
            f.offset..f.end
        })
        .collect()
}

fn kind_at(dir: &Path) -> (BreakKind, u64) {
    let e = verify_store(dir).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&dir.display().to_string()), "names the store: {msg}");
    (e.kind().unwrap().clone(), e.index().unwrap())
}

/// Simulate a crash before the checkpoint of the last records was cut: remove the checkpoints
/// above `size` (a torn write can only hit records no checkpoint attests yet) and the close
/// marker (a crash writes none).
fn forget_checkpoints_above(dir: &Path, size: u64) {
    for (s, p) in crate::tlog::list_checkpoints(dir).unwrap() {
        if s > size {
            fs::remove_file(p).unwrap();
        }
    }
    forget_close_markers(dir);
}

fn reopen(dir: &Path) -> Result<FileStore, AuditError> {
    FileStore::open(dir, StoreOptions::default())
}

#[tokio::test]
async fn flipped_byte_is_a_bad_crc_and_open_refuses() {
    let (dir, seg, r) = store_of(10).await;
    let mut data = fs::read(&seg).unwrap();
    data[r[4].start + HEADER + 30] ^= 0x01;
    fs::write(&seg, &data).unwrap();
    assert_eq!(kind_at(dir.path()), (BreakKind::BadCrc, 4));
    // Acknowledged records follow the damage: not a torn tail, so open fails closed.
    let err = reopen(dir.path()).unwrap_err();
    assert!(matches!(err, AuditError::Corrupt { .. }), "{err}");
    assert!(read_records(dir.path()).is_err());
}

/// Rewrite frame `k` with `f(body)` and a correct header, as a careful forger would.
fn forge(seg: &Path, r: &[Range<usize>], k: usize, f: impl FnOnce(&str) -> String) {
    let data = fs::read(seg).unwrap();
    let body = std::str::from_utf8(&data[r[k].start + HEADER..r[k].end]).unwrap();
    let new_body = f(body);
    assert_ne!(new_body, body);
    let mut frame = Vec::new();
    frame.extend_from_slice(&(new_body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32c::crc32c(new_body.as_bytes()).to_le_bytes());
    frame.extend_from_slice(new_body.as_bytes());
    let mut out = data[..r[k].start].to_vec();
    out.extend_from_slice(&frame);
    out.extend_from_slice(&data[r[k].end..]);
    fs::write(seg, out).unwrap();
}

#[tokio::test]
async fn rewritten_body_with_recomputed_crc_is_named_modified_at_its_index() {
    let (dir, seg, r) = store_of(10).await;
    forge(&seg, &r, 3, |b| b.replace("\"allowed\"", "\"refused\""));
    assert_eq!(kind_at(dir.path()), (BreakKind::Modified, 3));
    // A different length too.
    let (dir, seg, r) = store_of(10).await;
    forge(&seg, &r, 6, |b| b.replace("gw-test", "gw-forged-elsewhere"));
    assert_eq!(kind_at(dir.path()), (BreakKind::Modified, 6));
}

#[tokio::test]
async fn rewritten_link_is_modified_too() {
    let (dir, seg, r) = store_of(10).await;
    forge(&seg, &r, 5, |b| {
        let at = b.find("\"prev\":\"").unwrap() + 8;
        let flipped = if &b[at..at + 1] == "0" { "1" } else { "0" };
        format!("{}{}{}", &b[..at], flipped, &b[at + 1..])
    });
    // Indistinguishable from a rewritten record 4: named at the first record that may be bad.
    assert_eq!(kind_at(dir.path()), (BreakKind::Modified, 4));
}

#[tokio::test]
async fn deleted_middle_frame_is_a_chain_break() {
    let (dir, seg, r) = store_of(10).await;
    let data = fs::read(&seg).unwrap();
    let mut out = data[..r[4].start].to_vec();
    out.extend_from_slice(&data[r[4].end..]);
    fs::write(&seg, out).unwrap();
    assert_eq!(
        kind_at(dir.path()),
        (
            BreakKind::Removed {
                expected: 4,
                found: 5
            },
            4
        )
    );
}

#[tokio::test]
async fn swapped_frames_are_a_chain_break() {
    let (dir, seg, r) = store_of(10).await;
    let data = fs::read(&seg).unwrap();
    let mut out = data[..r[2].start].to_vec();
    out.extend_from_slice(&data[r[3].clone()]);
    out.extend_from_slice(&data[r[2].clone()]);
    out.extend_from_slice(&data[r[3].end..]);
    fs::write(&seg, out).unwrap();
    assert_eq!(
        kind_at(dir.path()),
        (
            BreakKind::Reordered {
                expected: 2,
                found: 3
            },
            2
        )
    );
}

#[tokio::test]
async fn removed_first_segment_is_a_chain_break() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open_with_segment_limit(dir.path(), StoreOptions::default(), 2048).unwrap();
    append_n(&store, 30).await;
    drop(store);
    let segs = segments(dir.path());
    fs::remove_file(&segs[0]).unwrap();
    let (kind, index) = kind_at(dir.path());
    assert!(matches!(kind, BreakKind::Removed { expected: 0, .. }), "{kind:?}");
    assert_eq!(index, 0);
}

#[tokio::test]
async fn truncated_tail_is_reported_then_cut_on_open() {
    let (dir, seg, r) = store_of(10).await;
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len((r[9].start + 20) as u64).unwrap();
    drop(f);
    assert_eq!(kind_at(dir.path()), (BreakKind::Truncated, 9));
    // Record 9 is attested by the checkpoint written at close: cutting it would lose an
    // attested record, so open refuses.
    let err = reopen(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("attests 10 records, only 9 are whole before the damage"),
        "{err}"
    );
    forget_checkpoints_above(dir.path(), 0);
    let store = reopen(dir.path()).unwrap();
    assert_eq!(append_n(&store, 3).await, vec![9, 10, 11]);
    drop(store);
    assert_eq!(verify_store(dir.path()).unwrap().records, 12);
}

#[tokio::test]
async fn torn_last_frame_with_bad_crc_or_zeros_is_cut_on_open() {
    // Garbage inside the last frame: its CRC fails and nothing valid follows.
    let (dir, seg, r) = store_of(5).await;
    let mut data = fs::read(&seg).unwrap();
    data[r[4].end - 3] ^= 0xff;
    fs::write(&seg, &data).unwrap();
    assert_eq!(kind_at(dir.path()), (BreakKind::BadCrc, 4));
    forget_checkpoints_above(dir.path(), 0);
    let store = reopen(dir.path()).unwrap();
    assert_eq!(append_n(&store, 1).await, vec![4]);
    drop(store);
    assert_eq!(verify_store(dir.path()).unwrap().records, 5);

    // A file extended with zeros by a crash (the data never reached the disk).
    let (dir, seg, _) = store_of(5).await;
    let mut data = fs::read(&seg).unwrap();
    data.extend_from_slice(&[0u8; 300]);
    fs::write(&seg, &data).unwrap();
    assert!(matches!(kind_at(dir.path()).0, BreakKind::BadFraming { len: 0 }));
    // After a clean shutdown no crash can have left them: open refuses, cuts nothing.
    let err = reopen(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("damage after a clean shutdown at 5 records"),
        "{err}"
    );
    assert_eq!(fs::read(&seg).unwrap(), data);
    forget_close_markers(dir.path());
    let store = reopen(dir.path()).unwrap();
    assert_eq!(append_n(&store, 1).await, vec![5]);
    drop(store);
    assert_eq!(verify_store(dir.path()).unwrap().records, 6);
}

/// Zero the first whole 512-byte sector at or after `from` in `seg`, as a crash leaves a block of
/// the last write that never reached the disk; returns the index of the first frame it damages.
fn zero_sector_from(seg: &Path, r: &[Range<usize>], from: usize) -> usize {
    let mut data = fs::read(seg).unwrap();
    let at = from.next_multiple_of(512);
    data[at..at + 512].fill(0);
    fs::write(seg, &data).unwrap();
    r.iter().position(|f| f.end > at).unwrap()
}

#[tokio::test]
async fn a_torn_batch_is_cut_back_unless_a_checkpoint_attests_it() {
    // A crash in the last write can persist a later block of it and not an earlier one: zeros,
    // then intact frames.
    let (dir, seg, r) = store_of(40).await;
    let bad = zero_sector_from(&seg, &r, r[30].start);
    assert!(bad < 38, "intact frames follow the damage");
    assert!(matches!(
        kind_at(dir.path()).0,
        BreakKind::BadCrc | BreakKind::BadFraming { .. }
    ));
    // The closed store's last checkpoint attests every record: not a crash's torn write. Open
    // refuses and leaves the segment as it was (the evidence stays).
    let damaged = fs::read(&seg).unwrap();
    let err = reopen(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("damaged tail not cut") && err.to_string().contains("attests 40 records"),
        "{err}"
    );
    assert_eq!(fs::read(&seg).unwrap(), damaged);
    // As after a crash: no checkpoint reaches into the unsynced write. Cut back, and the chain
    // continues from the last whole record before the damage.
    forget_checkpoints_above(dir.path(), bad as u64);
    let store = reopen(dir.path()).unwrap();
    assert_eq!(append_n(&store, 2).await, vec![bad as u64, bad as u64 + 1]);
    drop(store);
    assert_eq!(verify_store(dir.path()).unwrap().records, bad as u64 + 2);
}

/// A closed store of 40 records that published its checkpoints to `<tmp>/published`, then a torn
/// batch from record 30 on and no local checkpoint: (store dir, its options, the segment).
async fn published_store_with_a_torn_batch(tmp: &Path) -> (PathBuf, StoreOptions, PathBuf) {
    let dir = tmp.join("EU");
    let opts = StoreOptions {
        publish_to: vec![tmp.join("published")],
        ..StoreOptions::default()
    };
    let store = FileStore::open(&dir, opts.clone()).unwrap();
    append_n(&store, 40).await;
    drop(store);
    let seg = segments(&dir).remove(0);
    let r = frame_ranges(&seg);
    zero_sector_from(&seg, &r, r[30].start);
    forget_checkpoints_above(&dir, 0);
    (dir, opts, seg)
}

#[tokio::test]
async fn a_torn_tail_a_published_checkpoint_attests_is_not_cut() {
    let tmp = tempfile::tempdir().unwrap();
    // Even with the store's own checkpoints gone, the published one attests all 40 records.
    let (dir, opts, seg) = published_store_with_a_torn_batch(tmp.path()).await;
    let damaged = fs::read(&seg).unwrap();
    let err = FileStore::open(&dir, opts).unwrap_err();
    assert!(err.to_string().contains("damaged tail not cut"), "{err}");
    assert_eq!(fs::read(&seg).unwrap(), damaged);
}

#[tokio::test]
async fn a_torn_tail_is_not_cut_when_the_published_checkpoint_cannot_be_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, opts, seg) = published_store_with_a_torn_batch(tmp.path()).await;
    let target = tmp.path().join("published");
    // Unreadable (as EIO or EACCES would make it): it may attest the records, so nothing is cut.
    fs::remove_file(target.join(crate::tlog::LATEST)).unwrap();
    fs::create_dir(target.join(crate::tlog::LATEST)).unwrap();
    let damaged = fs::read(&seg).unwrap();
    let err = FileStore::open(&dir, opts).unwrap_err();
    assert!(
        err.to_string().contains("cannot read the published checkpoint"),
        "{err}"
    );
    assert_eq!(fs::read(&seg).unwrap(), damaged);
}

#[tokio::test]
async fn an_open_refused_for_older_damage_does_not_cut_the_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open_with_segment_limit(dir.path(), StoreOptions::default(), 8192).unwrap();
    append_n(&store, 40).await;
    drop(store);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "{segs:?}");
    let last = segs.last().unwrap();
    let r = frame_ranges(last);
    let bad = zero_sector_from(last, &r, r[1].start);
    assert!(bad + 1 < r.len(), "intact frames follow the damage");
    forget_checkpoints_above(dir.path(), 0);
    // A flipped bit in the first segment: acknowledged records, no crash's doing.
    let first = &segs[0];
    let r0 = frame_ranges(first);
    let mut data = fs::read(first).unwrap();
    data[r0[1].start + HEADER + 30] ^= 0x01;
    fs::write(first, &data).unwrap();
    let torn = fs::read(last).unwrap();
    let err = reopen(dir.path()).unwrap_err();
    assert!(
        matches!(err, AuditError::Corrupt { .. }) && err.to_string().contains(&first.display().to_string()),
        "{err}"
    );
    assert_eq!(
        fs::read(last).unwrap(),
        torn,
        "the last segment was left as it was"
    );
}

#[tokio::test]
async fn damage_with_intact_frames_after_it_and_no_zeroed_sector_is_refused() {
    // A flipped bit in an unattested record: no crash leaves that, so it is not cut.
    let (dir, seg, r) = store_of(40).await;
    let mut data = fs::read(&seg).unwrap();
    data[r[30].start + HEADER + 30] ^= 0x01;
    fs::write(&seg, &data).unwrap();
    forget_checkpoints_above(dir.path(), 0);
    let err = reopen(dir.path()).unwrap_err();
    assert!(
        matches!(err, AuditError::Corrupt { .. }) && err.to_string().contains("an intact frame follows"),
        "{err}"
    );
    assert_eq!(fs::read(&seg).unwrap(), data, "nothing was cut");
}

#[test]
fn a_torn_batch_lies_within_the_window_the_writer_leaves_unsynced() {
    use crate::segment::TORN_WINDOW;
    // Zeros at the start, an intact frame after them; only the remainder's length differs.
    let rest = |len: usize| {
        let mut b = vec![7u8; len];
        b[..1024].fill(0);
        b
    };
    assert!(crate::file_store::torn_batch(&rest(TORN_WINDOW), 0, 2048));
    assert!(!crate::file_store::torn_batch(&rest(TORN_WINDOW + 1), 0, 2048));
    // Zeros after the intact frame do not count: the damage is what precedes it.
    let mut b = vec![7u8; 8192];
    b[4096..5120].fill(0);
    assert!(!crate::file_store::torn_batch(&b, 0, 2048));
}

#[tokio::test]
async fn a_batch_longer_than_the_torn_window_is_written_in_pieces_and_verifies() {
    use crate::record::tests::sample_completion;
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        deferred_delay: std::time::Duration::from_secs(30),
        ..StoreOptions::default()
    };
    let store = FileStore::open(dir.path(), opts).unwrap();
    // Ten deferred records of ~600 KB wait for the next append and share its batch: ~6 MB, more
    // than the window, in one commit.
    let Record::Completion(mut big) = sample_completion() else {
        unreachable!()
    };
    big.error = Some("x".repeat(600_000));
    for _ in 0..10 {
        store.append_deferred(&Record::Completion(big.clone())).unwrap();
    }
    assert_eq!(store.append(&sample_decision(1)).unwrap().await.unwrap(), 0);
    assert_eq!(store.sync_count(), 1, "one batch");
    assert_eq!(
        store.fsync_count(),
        2,
        "~6 MB synced in two pieces of at most 4 MiB"
    );
    drop(store);
    let report = verify_store(dir.path()).unwrap();
    assert_eq!(report.records, 11);
    assert!(fs::metadata(&segments(dir.path())[0]).unwrap().len() > crate::segment::TORN_WINDOW as u64);
}

#[tokio::test]
async fn shredding_a_key_keeps_the_chain_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("EU");
    let keys = dir.path().join("keys");
    let pseudo = Pseudonymizer::open(&keys).unwrap();
    let ks = Keystore::open(&keys, [9u8; 32]).unwrap();
    let alice = pseudo.subject("EU", "alice").unwrap();
    let bob = pseudo.subject("EU", "bob").unwrap();
    let store = FileStore::open(&store_dir, StoreOptions::default()).unwrap();
    for (k, (who, text)) in [(&alice, "alice's prompt"), (&bob, "bob's prompt")]
        .into_iter()
        .enumerate()
    {
        let Record::Decision(mut d) = sample_decision(k as u64) else {
            unreachable!()
        };
        d.subject = Some(who.clone());
        d.payload = ks.seal("EU", who, text.as_bytes()).unwrap();
        store.append(&Record::Decision(d)).unwrap().await.unwrap();
    }
    drop(store);
    let before = verify_store(&store_dir).unwrap();
    assert!(ks.shred("EU", &alice).unwrap());
    assert_eq!(verify_store(&store_dir).unwrap(), before);
    let payloads: Vec<Payload> = read_records(&store_dir)
        .unwrap()
        .into_iter()
        .map(|(_, r)| match r {
            Record::Decision(d) => d.payload,
            Record::Completion(_) => unreachable!(),
        })
        .collect();
    assert!(matches!(
        ks.open_payload("EU", &payloads[0]),
        Err(AuditError::KeyShredded { .. })
    ));
    assert_eq!(ks.open_payload("EU", &payloads[1]).unwrap(), b"bob's prompt");
}

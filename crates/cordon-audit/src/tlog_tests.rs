//! Checkpoints, publication, verification against checkpoints, and proof bundles of a
//! [`crate::FileStore`].

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::checkpoint::Checkpoint;
use crate::note::NoteSigner;
use crate::record::tests::{sample_completion, sample_decision};
use crate::segment::{self, Frames};
use crate::store_tests::{append_n, segments};
use crate::tlog::{self, CKPT_DIR, LATEST, VKEY_FILE};
use crate::{
    AuditStore, BreakKind, FileStore, StoreOptions, VerifyOptions, prove_consistency, prove_inclusion,
    read_records, verify_consistency_bundle, verify_inclusion_bundle, verify_store, verify_store_with,
};

/// Checkpoints at exactly every `every` records (and at close): no interval checkpoint in
/// between, which a loaded machine would cut at a size the tests do not expect.
fn opts(every: u64, publish_to: Vec<PathBuf>) -> StoreOptions {
    StoreOptions {
        checkpoint_every: every,
        checkpoint_interval: std::time::Duration::from_secs(3600),
        publish_to,
        ..StoreOptions::default()
    }
}

/// Append `n` records, waiting after every `every` for the checkpoint of that size to be
/// written: the checkpointer coalesces a backlog (only the newest checkpoint is written), which a
/// loaded machine makes likely, and the tests name the sizes they prove against.
async fn append_checkpointed(store: &FileStore, dir: &Path, n: u64, every: u64) {
    let mut done = 0;
    while done < n {
        let k = every.min(n - done);
        append_n(store, k).await;
        done += k;
        if done % every == 0 {
            let file = dir.join(CKPT_DIR).join(tlog::ckpt_name(done));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while !file.exists() {
                assert!(std::time::Instant::now() < deadline, "no checkpoint at {done}");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    }
}

fn local_sizes(dir: &Path) -> Vec<u64> {
    tlog::list_checkpoints(dir).unwrap().into_keys().collect()
}

fn external(t: &Path) -> VerifyOptions<'static> {
    VerifyOptions {
        external: vec![t.to_path_buf()],
        progress: None,
    }
}

fn frame_ranges(seg: &Path) -> Vec<Range<usize>> {
    let data = fs::read(seg).unwrap();
    Frames::new(&data)
        .map(|f| f.unwrap())
        .map(|f| f.offset..f.end)
        .collect()
}

/// 3000 records from 30 concurrent appenders, a checkpoint every 500, published to a replica dir.
async fn busy_store() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("EU");
    let replica = tmp.path().join("replica-EU");
    let store = Arc::new(FileStore::open(&dir, opts(500, vec![replica.clone()])).unwrap());
    let mut handles = Vec::new();
    for t in 0..30u64 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for k in 0..100u64 {
                let rec = if k % 2 == 0 {
                    sample_decision(t * 1000 + k)
                } else {
                    sample_completion()
                };
                store.append(&rec).unwrap().await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let store = Arc::into_inner(store).unwrap();
    drop(store);
    (tmp, dir, replica)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_checkpointed_published_and_verify() {
    let (_tmp, dir, replica) = busy_store().await;
    let sizes = local_sizes(&dir);
    // One is cut every 500 records; a busy checkpointer coalesces a backlog into its newest, so
    // how many get written depends on the machine. Deterministic: the first (the thread is idle
    // when it arrives) and the final one at close.
    assert!(sizes.len() >= 2, "checkpoints at {sizes:?}");
    assert!(sizes[0] >= 500, "checkpoints at {sizes:?}");
    assert_eq!(sizes.last(), Some(&3000), "a final checkpoint at close");
    let report = verify_store(&dir).unwrap();
    assert_eq!(report.records, 3000);
    assert_eq!(report.checkpoints, sizes.len() as u64);
    assert_eq!(report.unattested, 0);
    let leaves: Vec<_> = {
        let mut v = Vec::new();
        crate::verify::read_bodies(&dir, |_, b| v.push(crate::merkle::leaf_hash(b))).unwrap();
        v
    };
    assert_eq!(report.tree_root, hex::encode(crate::merkle::root(&leaves)));
    // The replica holds every checkpoint and the latest.
    let with_ext = verify_store_with(&dir, &external(&replica)).unwrap();
    assert!(with_ext.checkpoints > 2 * sizes.len() as u64);
    let latest = Checkpoint::parse_unverified(&fs::read(replica.join(LATEST)).unwrap()).unwrap();
    assert_eq!(latest.size, 3000);
    // The verifier key is the store's, and the key file is private.
    let vkey = fs::read_to_string(dir.join(VKEY_FILE)).unwrap();
    assert!(vkey.starts_with("cordon/"), "{vkey}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.join(tlog::KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Progress is reported up to the total.
    let last = std::cell::Cell::new((0, 1));
    let progress = |d, t| last.set((d, t));
    verify_store_with(
        &dir,
        &VerifyOptions {
            external: vec![],
            progress: Some(&progress),
        },
    )
    .unwrap();
    let (d, t) = last.get();
    assert_eq!(d, t);
    // Reopening continues the tree: new records are checkpointed consistently.
    let store = FileStore::open(&dir, opts(500, vec![replica.clone()])).unwrap();
    append_n(&store, 7).await;
    drop(store);
    let r = verify_store_with(&dir, &external(&replica)).unwrap();
    assert_eq!((r.records, r.unattested), (3007, 0));
    let latest = Checkpoint::parse_unverified(&fs::read(replica.join(LATEST)).unwrap()).unwrap();
    assert_eq!(latest.size, 3007);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_tail_is_reported_as_removed_tail_naming_sizes() {
    let (_tmp, dir, replica) = busy_store().await;
    let seg = segments(&dir).pop().unwrap();
    let r = frame_ranges(&seg);
    let cut = r[r.len() - 10].start;
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(cut as u64)
        .unwrap();
    // The attacker also removes the local checkpoints and close marker that would betray the cut.
    for (size, p) in tlog::list_checkpoints(&dir).unwrap() {
        if size > 2990 {
            fs::remove_file(p).unwrap();
        }
    }
    crate::store_tests::forget_close_markers(&dir);
    // The chain alone sees a valid, shorter log.
    assert_eq!(verify_store(&dir).unwrap().records, 2990);
    let e = verify_store_with(&dir, &external(&replica)).unwrap_err();
    assert_eq!(
        e.kind(),
        Some(&BreakKind::RemovedTail {
            published_size: 3000,
            found: 2990
        })
    );
    let msg = e.to_string();
    assert!(msg.contains("3000") && msg.contains("2990"), "{msg}");
    assert!(msg.contains("replica-EU"), "names the external checkpoint: {msg}");
}

#[tokio::test]
async fn replaced_checkpoint_is_a_mismatch_or_a_bad_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("EU");
    let store = FileStore::open(&dir, opts(10, vec![])).unwrap();
    append_checkpointed(&store, &dir, 40, 10).await;
    drop(store);
    let sizes = local_sizes(&dir);
    assert_eq!(sizes, vec![10, 20, 30, 40]);
    let path = dir.join(CKPT_DIR).join(tlog::ckpt_name(20));
    let original = fs::read_to_string(&path).unwrap();
    let c20 = Checkpoint::parse_unverified(original.as_bytes()).unwrap();
    let c30 = Checkpoint::parse_unverified(&fs::read(dir.join(CKPT_DIR).join(tlog::ckpt_name(30))).unwrap())
        .unwrap();
    // Another valid root in the text, without the key: the signature fails.
    let swapped = original.replacen(&B64.encode(c20.root), &B64.encode(c30.root), 1);
    fs::write(&path, &swapped).unwrap();
    let e = verify_store(&dir).unwrap_err();
    assert!(matches!(e.kind(), Some(BreakKind::BadCheckpoint { .. })), "{e}");
    // Re-signed with the store's key (an insider who has it): the root does not match the records.
    let der = fs::read(dir.join(tlog::KEY_FILE)).unwrap();
    let signer = NoteSigner::from_pkcs8(&c20.origin, &der).unwrap();
    let forged = Checkpoint::new(&c20.origin, 20, c30.root).sign(&signer).unwrap();
    fs::write(&path, forged).unwrap();
    let e = verify_store(&dir).unwrap_err();
    assert_eq!(e.kind(), Some(&BreakKind::CheckpointMismatch { size: 20 }));
    assert!(e.to_string().contains("00000000000000000020.ckpt"), "{e}");
    // And reopening the store refuses when the newest checkpoint does not match.
    fs::write(&path, &original).unwrap();
    let p40 = dir.join(CKPT_DIR).join(tlog::ckpt_name(40));
    fs::write(
        &p40,
        Checkpoint::new(&c20.origin, 40, c30.root).sign(&signer).unwrap(),
    )
    .unwrap();
    assert!(FileStore::open(&dir, StoreOptions::default()).is_err());
}

#[tokio::test]
async fn forged_record_after_a_clean_close_is_named_and_a_foreign_checkpoint_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("EU");
    let store = FileStore::open(&dir, opts(1024, vec![])).unwrap();
    append_n(&store, 12).await;
    drop(store);
    let before = verify_store(&dir).unwrap();
    assert_eq!(before.unattested, 0);
    // Append a frame with a correct CRC and chain link, but no key to sign a checkpoint.
    let mut head = [0u8; 32];
    hex::decode_to_slice(&before.head_hash, &mut head).unwrap();
    let rec = serde_json::to_vec(&sample_decision(99)).unwrap();
    let mut buf = Vec::new();
    segment::encode_frame(&mut buf, 12, &head, &rec).unwrap();
    let seg = segments(&dir).pop().unwrap();
    let mut data = fs::read(&seg).unwrap();
    data.extend_from_slice(&buf);
    fs::write(&seg, data).unwrap();
    // The store was closed cleanly at 12 (its signed close marker says so) and never reopened by
    // its writer: record 12 is forged, not an unattested tail.
    let e = verify_store(&dir).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            Some(BreakKind::Forged {
                closed_at: 12,
                found: 13,
                ..
            })
        ),
        "{e}"
    );
    assert_eq!(e.index(), Some(12));
    assert!(e.to_string().contains("forged"), "{e}");
    // Opening refuses too, naming the store and the index; nothing is cut or signed.
    let before = fs::read(&seg).unwrap();
    match FileStore::open(&dir, opts(1024, vec![])) {
        Err(crate::AuditError::Forged { index: 12, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(fs::read(&seg).unwrap(), before);
    assert_eq!(local_sizes(&dir), vec![12]);
    // A checkpoint over it signed with a different key is refused.
    let origin =
        Checkpoint::parse_unverified(&fs::read(dir.join(CKPT_DIR).join(tlog::ckpt_name(12))).unwrap())
            .unwrap()
            .origin;
    let other = NoteSigner::from_seed(&origin, &[5; 32]).unwrap();
    let mut leaves = Vec::new();
    crate::verify::read_bodies(&dir, |_, b| leaves.push(crate::merkle::leaf_hash(b))).unwrap();
    let fake = Checkpoint::new(&origin, 13, crate::merkle::root(&leaves))
        .sign(&other)
        .unwrap();
    fs::write(dir.join(CKPT_DIR).join(tlog::ckpt_name(13)), fake).unwrap();
    let e = verify_store(&dir).unwrap_err();
    assert!(
        matches!(e.kind(), Some(BreakKind::BadCheckpoint { detail }) if detail.contains("no signature by a known key")),
        "{e}"
    );
}

#[tokio::test]
async fn publishing_a_fork_is_rejected_and_latest_is_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("witness");
    let key = tmp.path().join("ck.key");
    let shared = |dir: &str| -> (PathBuf, StoreOptions) {
        let o = StoreOptions {
            checkpoint_every: 5,
            checkpoint_key: Some(key.clone()),
            origin: Some("cordon/test/EU".into()),
            publish_to: vec![target.clone()],
            ..StoreOptions::default()
        };
        (tmp.path().join(dir), o)
    };
    // Log A publishes first.
    let (a_dir, a_opts) = shared("a");
    let a = FileStore::open(&a_dir, a_opts.clone()).unwrap();
    append_checkpointed(&a, &a_dir, 10, 5).await;
    drop(a);
    let latest_a = fs::read(target.join(LATEST)).unwrap();
    assert_eq!(Checkpoint::parse_unverified(&latest_a).unwrap().size, 10);
    // Log B: same origin and key, different records (a second instance forking the log).
    let (b_dir, b_opts) = shared("b");
    let b = FileStore::open(&b_dir, b_opts).unwrap();
    for k in 0..15 {
        b.append(&sample_decision(1000 + k)).unwrap().await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // B cuts checkpoints at 5, 10 and 15; the checkpoint thread publishes only the newest of
    // those queued together, so how many publications are attempted (and rejected) depends on
    // timing: at least one, and none may succeed.
    while b.checkpoint_stats().rejected < 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let stats = b.checkpoint_stats();
    assert!(stats.rejected >= 1, "{stats:?}");
    assert_eq!(stats.published, 0);
    drop(b);
    assert_eq!(
        fs::read(target.join(LATEST)).unwrap(),
        latest_a,
        "latest unchanged"
    );
    // A extends its own log: accepted (consistency proof from 10 to 13).
    let a = FileStore::open(&a_dir, a_opts).unwrap();
    append_n(&a, 3).await;
    let a_stats = a.checkpoint_stats();
    drop(a);
    let latest = Checkpoint::parse_unverified(&fs::read(target.join(LATEST)).unwrap()).unwrap();
    assert_eq!(latest.size, 13);
    assert_eq!(a_stats.rejected, 0);
    assert_eq!(local_sizes(&target), vec![5, 10, 13]);
}

#[tokio::test]
async fn bundles_verify_offline_and_fail_on_any_change() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("EU");
    let store = FileStore::open(&dir, opts(10, vec![])).unwrap();
    append_checkpointed(&store, &dir, 57, 10).await;
    let vkey = store.verifier_key();
    drop(store);
    assert_eq!(fs::read_to_string(dir.join(VKEY_FILE)).unwrap().trim_end(), vkey);
    assert_eq!(crate::read_verifier_key(&dir).unwrap(), vkey);
    let b = prove_inclusion(&dir, &[], 37).unwrap();
    assert_eq!(b.tree_size, 57);
    // JSON round trip: the bundle is all a verifier needs.
    let json = serde_json::to_string(&b).unwrap();
    let b: crate::InclusionBundle = serde_json::from_str(&json).unwrap();
    verify_inclusion_bundle(&b, &vkey).unwrap();
    for index in [0, 9, 10, 56] {
        verify_inclusion_bundle(&prove_inclusion(&dir, &[], index).unwrap(), &vkey).unwrap();
    }
    assert!(prove_inclusion(&dir, &[], 57).is_err());
    // Any byte of the leaf, the path or the checkpoint changed: refused.
    let leaf = B64.decode(&b.leaf).unwrap();
    for i in [0, 10, leaf.len() / 2, leaf.len() - 1] {
        let mut t = b.clone();
        let mut l = leaf.clone();
        l[i] ^= 1;
        t.leaf = B64.encode(l);
        assert!(verify_inclusion_bundle(&t, &vkey).is_err(), "leaf byte {i}");
    }
    for k in 0..b.path.len() {
        let mut t = b.clone();
        let mut h = B64.decode(&t.path[k]).unwrap();
        h[3] ^= 0x10;
        t.path[k] = B64.encode(h);
        assert!(verify_inclusion_bundle(&t, &vkey).is_err(), "path {k}");
    }
    for i in 0..b.checkpoint.len() {
        let mut bytes = b.checkpoint.clone().into_bytes();
        bytes[i] ^= 1;
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        let mut t = b.clone();
        t.checkpoint = text;
        assert!(verify_inclusion_bundle(&t, &vkey).is_err(), "checkpoint byte {i}");
    }
    let mut t = b.clone();
    t.index = 36;
    assert!(verify_inclusion_bundle(&t, &vkey).is_err());
    let mut t = b.clone();
    t.path.pop();
    assert!(verify_inclusion_bundle(&t, &vkey).is_err());
    let other = NoteSigner::from_seed("x", &[1; 32])
        .unwrap()
        .verifier()
        .to_string();
    assert!(verify_inclusion_bundle(&b, &other).is_err());

    let c = prove_consistency(&dir, &[], 20, 57).unwrap();
    let c: crate::ConsistencyBundle = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    verify_consistency_bundle(&c, &vkey).unwrap();
    verify_consistency_bundle(&prove_consistency(&dir, &[], 10, 20).unwrap(), &vkey).unwrap();
    verify_consistency_bundle(&prove_consistency(&dir, &[], 50, 50).unwrap(), &vkey).unwrap();
    assert!(
        prove_consistency(&dir, &[], 21, 57).is_err(),
        "no checkpoint at 21"
    );
    for k in 0..c.proof.len() {
        let mut t = c.clone();
        let mut h = B64.decode(&t.proof[k]).unwrap();
        h[0] ^= 1;
        t.proof[k] = B64.encode(h);
        assert!(verify_consistency_bundle(&t, &vkey).is_err(), "proof {k}");
    }
    for i in 0..c.old_checkpoint.len() {
        let mut bytes = c.old_checkpoint.clone().into_bytes();
        bytes[i] ^= 1;
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        let mut t = c.clone();
        t.old_checkpoint = text;
        assert!(
            verify_consistency_bundle(&t, &vkey).is_err(),
            "old checkpoint byte {i}"
        );
    }
    let mut t = c.clone();
    std::mem::swap(&mut t.old_checkpoint, &mut t.new_checkpoint);
    assert!(verify_consistency_bundle(&t, &vkey).is_err());
}

/// Big segments are verified on all cores; the first damage is still reported exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_verification_reports_the_first_damage() {
    let (_tmp, dir, _) = busy_store().await;
    let seg = segments(&dir).pop().unwrap();
    let r = frame_ranges(&seg);
    let pristine = fs::read(&seg).unwrap();
    // A rewritten body with a recomputed CRC at 1500 and a flipped byte at 2500: the first wins.
    let mut data = pristine.clone();
    let body = &data[r[1500].start + segment::HEADER..r[1500].end];
    let mut new_body = body.to_vec();
    let at = new_body.len() - 3;
    new_body[at] = if new_body[at] == b'1' { b'2' } else { b'1' };
    let crc = crc32c::crc32c(&new_body);
    data[r[1500].start + 4..r[1500].start + 8].copy_from_slice(&crc.to_le_bytes());
    data[r[1500].start + segment::HEADER..r[1500].end].copy_from_slice(&new_body);
    data[r[2500].start + segment::HEADER + 5] ^= 1;
    fs::write(&seg, &data).unwrap();
    let e = verify_store(&dir).unwrap_err();
    assert!(
        matches!(
            (e.kind(), e.index()),
            (Some(BreakKind::Modified | BreakKind::BadJson { .. }), Some(1500))
        ),
        "{e}"
    );
    // Only the flipped byte: a CRC error at 2500, after 2500 good records.
    let mut data = pristine.clone();
    data[r[2500].start + segment::HEADER + 5] ^= 1;
    fs::write(&seg, &data).unwrap();
    let e = verify_store(&dir).unwrap_err();
    assert_eq!((e.kind(), e.index()), (Some(&BreakKind::BadCrc), Some(2500)));
    // Two frames swapped in the middle.
    let mut data = pristine[..r[2000].start].to_vec();
    data.extend_from_slice(&pristine[r[2001].clone()]);
    data.extend_from_slice(&pristine[r[2000].clone()]);
    data.extend_from_slice(&pristine[r[2001].end..]);
    fs::write(&seg, &data).unwrap();
    let e = verify_store(&dir).unwrap_err();
    assert_eq!(
        e.kind(),
        Some(&BreakKind::Reordered {
            expected: 2000,
            found: 2001
        })
    );
    fs::write(&seg, &pristine).unwrap();
    assert_eq!(verify_store(&dir).unwrap().records, 3000);
}

/// Segments big enough for the parallel pass, starting at unaligned indices, with checkpoints at
/// sizes that are not chunk boundaries: the Merkle subtrees hashed by the workers give the same
/// roots as leaf-by-leaf pushing, and a forged root at such a size is caught at that size.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_merkle_subtrees_check_every_checkpoint_size() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("EU");
    let store = Arc::new(FileStore::open_with_segment_limit(&dir, opts(777, vec![]), 2_500_000).unwrap());
    let mut handles = Vec::new();
    for t in 0..50u64 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for k in 0..150u64 {
                let rec = if k % 2 == 0 {
                    sample_decision(t * 1000 + k)
                } else {
                    sample_completion()
                };
                store.append(&rec).unwrap().await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    drop(Arc::into_inner(store).unwrap());
    let starts: Vec<u64> = segment::list_segments(&dir)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert!(starts.len() >= 2, "segments at {starts:?}");
    assert!(
        !starts[1].is_multiple_of(1024) && starts[1] >= 2048,
        "segments at {starts:?}"
    );
    let report = verify_store(&dir).unwrap();
    assert_eq!((report.records, report.unattested), (7500, 0));
    let mut leaves = Vec::new();
    crate::verify::read_bodies(&dir, |_, b| leaves.push(crate::merkle::leaf_hash(b))).unwrap();
    assert_eq!(report.tree_root, hex::encode(crate::merkle::root(&leaves)));
    // A checkpoint inside the second segment, not on a chunk boundary, re-signed with the key but
    // the root of another size.
    let sizes = local_sizes(&dir);
    assert!(sizes.len() >= 9, "checkpoints at {sizes:?}");
    let size = *sizes
        .iter()
        .find(|&&s| s > starts[1] + 1024 && !s.is_multiple_of(1024) && !starts.contains(&s) && s < 7500)
        .unwrap();
    let path = dir.join(CKPT_DIR).join(tlog::ckpt_name(size));
    let original = Checkpoint::parse_unverified(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(original.root, crate::merkle::root(&leaves[..size as usize]));
    let der = fs::read(dir.join(tlog::KEY_FILE)).unwrap();
    let signer = NoteSigner::from_pkcs8(&original.origin, &der).unwrap();
    let wrong = crate::merkle::root(&leaves[..size as usize - 1]);
    fs::write(
        &path,
        Checkpoint::new(&original.origin, size, wrong)
            .sign(&signer)
            .unwrap(),
    )
    .unwrap();
    let e = verify_store(&dir).unwrap_err();
    assert_eq!(e.kind(), Some(&BreakKind::CheckpointMismatch { size }));
}

/// An empty segment file holds no records, whatever index it is named for: verification walks
/// past it as before (its empty Merkle run is not appended).
#[tokio::test]
async fn an_empty_segment_adds_nothing_to_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("EU");
    let store = FileStore::open(&dir, opts(5, vec![])).unwrap();
    append_n(&store, 12).await;
    drop(store);
    let before = verify_store(&dir).unwrap();
    fs::write(dir.join(segment::segment_name(99)), b"").unwrap();
    assert_eq!(verify_store(&dir).unwrap(), before);
}

/// The witness hook receives every signed checkpoint on stdin; a failing hook is counted and never
/// fails appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witness_hook_receives_checkpoints_and_failures_never_block_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let witnessed = tmp.path().join("witnessed");
    fs::create_dir_all(&witnessed).unwrap();
    let script = format!("cat > '{}'/$CORDON_CHECKPOINT_SIZE.ckpt", witnessed.display());
    let store = FileStore::open(
        &tmp.path().join("EU"),
        StoreOptions {
            checkpoint_every: 10,
            witness_command: vec!["sh".into(), "-c".into(), script],
            ..StoreOptions::default()
        },
    )
    .unwrap();
    append_n(&store, 25).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while store.checkpoint_stats().witnessed < 2 {
        assert!(std::time::Instant::now() < deadline, "the witness hook never ran");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let stats = store.checkpoint_stats();
    assert_eq!(stats.witness_failures, 0);
    let vkey = crate::read_verifier_key(&tmp.path().join("EU")).unwrap();
    let verifier = crate::note::NoteVerifier::parse(&vkey).unwrap();
    let mut seen = 0;
    for e in fs::read_dir(&witnessed).unwrap() {
        let text = fs::read_to_string(e.unwrap().path()).unwrap();
        let c = Checkpoint::open(text.as_bytes(), std::slice::from_ref(&verifier)).unwrap();
        assert!(c.size >= 10);
        seen += 1;
    }
    assert!(seen >= 2, "{seen}");
    drop(store);

    // A hook that fails: counted, appends unaffected.
    let failing = FileStore::open(
        &tmp.path().join("UK"),
        StoreOptions {
            checkpoint_every: 5,
            witness_command: vec!["false".into()],
            ..StoreOptions::default()
        },
    )
    .unwrap();
    append_n(&failing, 12).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while failing.checkpoint_stats().witness_failures < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the failing hook was never counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(failing.checkpoint_stats().written >= 1);
    append_n(&failing, 3).await;
}

/// A log rewritten as a whole with the store's own key (its records, chain and local checkpoints
/// all consistent) is still a different log from the one published: showing, proving and
/// exporting it checks the published checkpoints too, as `verify` does.
#[tokio::test]
async fn a_rewritten_log_is_not_shown_proved_or_exported_against_its_published_checkpoints() {
    let (tmp, dir, target) = ten_records_published().await;
    // Rewrite: the same key and origin, other records, its own checkpoints; no publication.
    let orig = tmp.path().join("EU-orig");
    fs::rename(&dir, &orig).unwrap();
    fs::create_dir(&dir).unwrap();
    for f in [tlog::KEY_FILE, tlog::VKEY_FILE] {
        fs::copy(orig.join(f), dir.join(f)).unwrap();
    }
    let store = FileStore::open(&dir, opts(5, Vec::new())).unwrap();
    for n in 100..110 {
        store.append(&sample_decision(n)).unwrap().await.unwrap();
    }
    drop(store);
    // On its own, the rewritten store is a valid log.
    verify_store(&dir).unwrap();
    assert_eq!(read_records(&dir).unwrap().len(), 10);
    prove_inclusion(&dir, &[], 3).unwrap();
    let f = crate::bundle::ExportFilter {
        subject: None,
        from: None,
        to: None,
        decrypt: false,
    };
    crate::bundle::export(&dir, &[], "EU", &f, None).unwrap();
    // Against what it published, it is not.
    let published = [target.clone()];
    let mismatch = |e: &dyn std::fmt::Display| {
        let m = e.to_string();
        assert!(m.contains("checkpoint mismatch"), "{m}");
    };
    mismatch(&crate::read_verified_records(&dir, &external(&target)).unwrap_err());
    mismatch(&prove_inclusion(&dir, &published, 3).unwrap_err());
    mismatch(&prove_consistency(&dir, &published, 5, 10).unwrap_err());
    mismatch(&crate::bundle::export(&dir, &published, "EU", &f, None).unwrap_err());
    // The original still proves against the published checkpoints.
    prove_inclusion(&orig, &published, 3).unwrap();
}

/// A publication target emptied (or the wrong directory given) would check nothing: a store that
/// signs checkpoints must find some of them there.
#[tokio::test]
async fn a_publication_target_holding_none_of_the_checkpoints_fails_the_check() {
    let (tmp, dir, target) = ten_records_published().await;
    verify_store_with(&dir, &external(&target)).unwrap();
    let emptied = tmp.path().join("emptied");
    fs::create_dir(&emptied).unwrap();
    let e = verify_store_with(&dir, &external(&emptied)).unwrap_err();
    assert!(
        matches!(e.kind(), Some(BreakKind::BadCheckpoint { detail }) if detail.contains("holds none")),
        "{e}"
    );
}

/// A closed store of 10 records, checkpointed every 5 and published to `replica-EU`: (its temp
/// dir, the store, the target).
async fn ten_records_published() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("EU");
    let target = tmp.path().join("replica-EU");
    let store = FileStore::open(&dir, opts(5, vec![target.clone()])).unwrap();
    append_n(&store, 10).await;
    drop(store);
    (tmp, dir, target)
}

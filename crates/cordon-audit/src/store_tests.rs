//! Tests of [`crate::FileStore`]: concurrency, group commit, reopen, segment rolling, failures.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::record::tests::{sample_completion, sample_decision};
use crate::{AuditError, AuditStore, FileStore, StoreOptions, read_records, verify_store};

pub(crate) fn segments(dir: &Path) -> Vec<PathBuf> {
    crate::segment::list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// Remove the close markers: as after a crash, which writes none (or after a writer that failed).
pub(crate) fn forget_close_markers(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir.join(crate::marker::MARKER_DIR)) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "closed") {
            std::fs::remove_file(p).unwrap();
        }
    }
}

pub(crate) async fn append_n(store: &FileStore, n: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for k in 0..n {
        let rec = if k % 3 == 2 {
            sample_completion()
        } else {
            sample_decision(k)
        };
        out.push(store.append(&rec).unwrap().await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_get_distinct_indices_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path(), StoreOptions::default()).unwrap());
    let (tasks, per_task) = (64u64, 50u64);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for k in 0..per_task {
                let rec = if k % 2 == 0 {
                    sample_decision(t * 1000 + k)
                } else {
                    sample_completion()
                };
                got.push(store.append(&rec).unwrap().await.unwrap());
            }
            got
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let total = tasks * per_task;
    all.sort_unstable();
    assert_eq!(all, (0..total).collect::<Vec<_>>(), "indices distinct and dense");
    let syncs = store.sync_count();
    assert!(syncs < total, "group commit: {syncs} fsyncs for {total} records");
    let report = verify_store(dir.path()).unwrap();
    assert_eq!(report.records, total);
    assert_eq!(report.decisions, total / 2);
    assert_eq!(report.completions, total / 2);
    assert_eq!(report.head_hash.len(), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_shares_fsyncs_with_a_batch_delay() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        batch_max: 1024,
        batch_delay: Duration::from_millis(2),
        ..StoreOptions::default()
    };
    let store = Arc::new(FileStore::open(dir.path(), opts).unwrap());
    let mut handles = Vec::new();
    for t in 0..32u64 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for k in 0..20 {
                store
                    .append(&sample_decision(t * 100 + k))
                    .unwrap()
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let syncs = store.sync_count();
    assert!(syncs * 4 < 640, "{syncs} fsyncs for 640 records");
    assert_eq!(verify_store(dir.path()).unwrap().records, 640);
}

#[tokio::test]
async fn batch_max_bounds_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        batch_max: 1,
        batch_delay: Duration::ZERO,
        ..StoreOptions::default()
    };
    let store = FileStore::open(dir.path(), opts).unwrap();
    let acks: Vec<_> = (0..20)
        .map(|k| store.append(&sample_decision(k)).unwrap())
        .collect();
    for (k, ack) in acks.into_iter().enumerate() {
        assert_eq!(ack.await.unwrap(), k as u64);
    }
    assert_eq!(store.sync_count(), 20);
}

#[tokio::test]
async fn reopen_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert!(store.check_writable().is_ok());
    assert!(store.describe().contains(&dir.path().display().to_string()));
    assert_eq!(append_n(&store, 10).await, (0..10).collect::<Vec<_>>());
    let head1 = verify_store(dir.path()).unwrap().head_hash;
    drop(store);
    let store = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(append_n(&store, 10).await, (10..20).collect::<Vec<_>>());
    drop(store);
    let report = verify_store(dir.path()).unwrap();
    assert_eq!(report.records, 20);
    assert_ne!(report.head_hash, head1);
    let recs = read_records(dir.path()).unwrap();
    assert_eq!(
        recs.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn records_read_back_equal() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
    let a = sample_decision(1);
    let b = sample_completion();
    store.append(&a).unwrap().await.unwrap();
    store.append(&b).unwrap().await.unwrap();
    let recs = read_records(dir.path()).unwrap();
    assert_eq!(recs, vec![(0, a), (1, b)]);
}

#[tokio::test]
async fn segments_roll_and_the_chain_spans_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open_with_segment_limit(dir.path(), StoreOptions::default(), 4096).unwrap();
    append_n(&store, 60).await;
    drop(store);
    let segs = segments(dir.path());
    assert!(segs.len() > 3, "{} segments", segs.len());
    assert_eq!(verify_store(dir.path()).unwrap().records, 60);
    let store = FileStore::open_with_segment_limit(dir.path(), StoreOptions::default(), 4096).unwrap();
    assert_eq!(append_n(&store, 5).await, (60..65).collect::<Vec<_>>());
    drop(store);
    assert_eq!(verify_store(dir.path()).unwrap().records, 65);
}

#[tokio::test]
async fn empty_last_segment_after_a_roll_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
    append_n(&store, 5).await;
    drop(store);
    // A crash right after rolling: the new segment exists but is empty.
    std::fs::File::create(dir.path().join(crate::segment::segment_name(5))).unwrap();
    let store = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(append_n(&store, 2).await, vec![5, 6]);
    drop(store);
    assert_eq!(verify_store(dir.path()).unwrap().records, 7);
}

#[test]
fn empty_store_verifies() {
    let dir = tempfile::tempdir().unwrap();
    drop(FileStore::open(dir.path(), StoreOptions::default()).unwrap());
    let r = verify_store(dir.path()).unwrap();
    assert_eq!((r.records, r.decisions, r.completions), (0, 0, 0));
    assert_eq!(r.head_hash, "0".repeat(64));
    assert!(verify_store(&dir.path().join("missing")).is_err());
}

#[tokio::test]
async fn write_failure_poisons_the_store_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
    append_n(&store, 3).await;
    store.inject_fault_for_tests();
    let ack = store.append(&sample_decision(9)).unwrap();
    let err = ack.await.unwrap_err();
    assert!(err.to_string().contains("injected fault"), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
    // Every later append fails at once; the readiness probe says so.
    let later = store.append(&sample_decision(10)).unwrap_err();
    assert!(matches!(later, AuditError::Unavailable { .. }), "{later}");
    assert!(store.check_writable().is_err());
    drop(store);
    // Reopened, the store works; the failed record was never written.
    let store = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert!(store.check_writable().is_ok());
    assert_eq!(append_n(&store, 1).await, vec![3]);
    drop(store);
    assert_eq!(verify_store(dir.path()).unwrap().records, 4);
}

#[tokio::test]
async fn a_batch_whose_sync_failed_is_cut_off_and_not_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
    append_n(&store, 3).await;
    let durable = std::fs::metadata(&segments(dir.path())[0]).unwrap().len();
    // The batch is written whole, then its fdatasync "fails": nobody is acknowledged.
    store.inject_sync_fault_for_tests();
    let err = store.append(&sample_decision(9)).unwrap().await.unwrap_err();
    assert!(err.to_string().contains("injected fault"), "{err}");
    drop(store);
    // Its bytes are gone from the segment, so the reopen cannot take them into the chain.
    assert_eq!(
        std::fs::metadata(&segments(dir.path())[0]).unwrap().len(),
        durable
    );
    let store = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(append_n(&store, 1).await, vec![3]);
    drop(store);
    let decisions: Vec<u64> = crate::read_records(dir.path())
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert_eq!(decisions, vec![0, 1, 2, 3]);
    assert_eq!(verify_store(dir.path()).unwrap().records, 4);
}

#[tokio::test]
async fn a_failed_batch_that_could_not_be_cut_is_cut_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
    append_n(&store, 2).await;
    drop(store);
    let seg = segments(dir.path()).remove(0);
    let durable = std::fs::metadata(&seg).unwrap().len();
    // Whole frames beyond the durable length, as a failed batch left in the page cache would be:
    // two more records, without the checkpoint the clean close signed over them.
    let store = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
    append_n(&store, 2).await;
    drop(store);
    assert!(std::fs::metadata(&seg).unwrap().len() > durable);
    let ckpt = dir
        .path()
        .join(crate::tlog::CKPT_DIR)
        .join(format!("{:020}.ckpt", 4));
    std::fs::remove_file(&ckpt).unwrap();
    // Nor the close marker: a failed writer writes none. (The first session's stays: the second
    // one's open marker follows it.)
    std::fs::remove_file(
        dir.path()
            .join(crate::marker::MARKER_DIR)
            .join("00000000000000000003.closed"),
    )
    .unwrap();
    let failed_len = std::fs::metadata(&seg).unwrap().len();
    let entry = |observed| crate::writer::Uncut {
        segment: std::fs::canonicalize(&seg).unwrap(),
        durable,
        observed,
    };
    crate::writer::lock_uncut().push(entry(Some(failed_len)));
    let store = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(
        append_n(&store, 1).await,
        vec![2],
        "records 2 and 3 were cut, not recovered"
    );
    drop(store);
    assert!(
        crate::writer::lock_uncut()
            .iter()
            .all(|u| u.segment != entry(None).segment)
    );
    assert_eq!(verify_store(dir.path()).unwrap().records, 3);

    // A segment that grew since the failure (another process appended acknowledged records after
    // this one released the lock) is left whole: nothing acknowledged is ever cut.
    let grown = std::fs::metadata(&seg).unwrap().len();
    crate::writer::lock_uncut().push(entry(Some(grown - 1)));
    let store = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(append_n(&store, 1).await, vec![3]);
    drop(store);
    assert_eq!(verify_store(dir.path()).unwrap().records, 4);
}

#[tokio::test]
async fn queued_appends_fail_when_the_writer_fails() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        batch_max: 1,
        batch_delay: Duration::ZERO,
        ..StoreOptions::default()
    };
    let store = FileStore::open(dir.path(), opts).unwrap();
    store.inject_fault_for_tests();
    let acks: Vec<_> = (0..50)
        .filter_map(|k| store.append(&sample_decision(k)).ok())
        .collect();
    assert!(!acks.is_empty());
    for ack in acks {
        assert!(ack.await.is_err(), "no record may be acknowledged");
    }
}

#[test]
fn open_on_a_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = FileStore::open(&file, StoreOptions::default()).unwrap_err();
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[tokio::test]
async fn oversized_record_is_refused_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
    let crate::Record::Decision(mut d) = sample_decision(1) else {
        unreachable!()
    };
    d.reasons = vec!["x".repeat(crate::MAX_BODY)];
    let err = store.append(&crate::Record::Decision(d)).unwrap().await;
    assert!(matches!(err, Err(AuditError::TooLarge { .. })));
    assert_eq!(append_n(&store, 1).await, vec![0]);
    assert!(store.check_writable().is_ok());
}

#[test]
fn a_store_is_opened_once_per_process() {
    let dir = tempfile::tempdir().unwrap();
    let a = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
    let again = FileStore::open(&dir.path().join("."), StoreOptions::default()).unwrap_err();
    assert!(matches!(again, AuditError::AlreadyOpen { .. }), "{again}");
    drop(a);
    assert!(FileStore::open(dir.path(), StoreOptions::default()).is_ok());
}

/// The scheduling policy of every thread of this process named `name` (field 41 of
/// /proc/self/task/TID/stat).
#[cfg(target_os = "linux")]
fn thread_policies(name: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let task = task.unwrap().path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        if comm.trim_end() != name {
            continue;
        }
        // Fields after the parenthesised command start at field 3 (state).
        let after = &stat[stat.rfind(')').unwrap() + 1..];
        out.push(after.split_whitespace().nth(41 - 3).unwrap().parse().unwrap());
    }
    out
}

#[cfg(target_os = "linux")]
#[test]
fn the_writer_and_checkpointer_threads_do_not_preempt_request_threads() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
    // Thread names are cut to 15 bytes by the kernel. A new thread names itself and then sets
    // its policy, so wait (with a deadline) for both.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for name in ["cordon-audit-wr", "cordon-audit-ck"] {
        loop {
            let policies = thread_policies(name);
            if !policies.is_empty() && policies.iter().all(|&p| p == libc::SCHED_BATCH) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: policies {policies:?} (expected SCHED_BATCH = {})",
                libc::SCHED_BATCH
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    drop(store);
}

#[test]
fn a_store_locked_by_another_process_is_refused_until_released() {
    let dir = tempfile::tempdir().unwrap();
    drop(FileStore::open(dir.path(), StoreOptions::default()).unwrap());
    // Another process's lock: an flock on a separate open file description conflicts the same way.
    let other = std::fs::File::open(dir.path().join(crate::dir_lock::LOCK_FILE)).unwrap();
    other.lock().unwrap();
    let err = FileStore::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(matches!(err, AuditError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("another process"), "{err}");
    other.unlock().unwrap();
    let store = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
    // While open, the lock is held.
    let probe = std::fs::File::open(dir.path().join(crate::dir_lock::LOCK_FILE)).unwrap();
    assert!(matches!(probe.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
    drop(store);
    probe.try_lock().unwrap();
}

//! Signed, published checkpoints of PostgreSQL chains, against the real PostgreSQL
//! (`CORDON_TEST_PG`, default `host=127.0.0.1 port=5432 user=postgres dbname=test`, a superuser).
//! Each test makes its own schema and drops it at the end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cordon_audit::checkpoint::Checkpoint;
use cordon_audit::note::{NoteSigner, NoteVerifier};
use cordon_audit_pg::{
    PgBreakKind, PgCheckpointOptions, PgError, PgStore, PgStoreOptions, PgVerifyError, PgVerifyReport,
    migrate, verify_with_published,
};
use tokio_postgres::{Client, Config};

mod common;
use common::{append_n, broken, fresh_schema, insert_linked_row};

struct TestDb {
    admin: Client,
    config: Config,
    schema: String,
    /// The publication target (a directory the gateway only adds to).
    target: tempfile::TempDir,
}

async fn setup() -> TestDb {
    let (admin, config, schema) = fresh_schema("cordon_ckpt").await;
    TestDb {
        admin,
        config,
        schema,
        target: tempfile::tempdir().unwrap(),
    }
}

fn signer(schema: &str, chain: &str, seed: u8) -> NoteSigner {
    NoteSigner::from_seed(&format!("cordon/{schema}/{chain}"), &[seed; 32]).unwrap()
}

impl TestDb {
    fn opts(&self, chain: &str, seed: u8) -> PgStoreOptions {
        let mut o = PgStoreOptions::new(self.config.clone(), &self.schema, chain);
        let mut c = PgCheckpointOptions::new(signer(&self.schema, chain, seed));
        c.every = 4;
        c.interval = Duration::from_millis(50);
        c.publish_to = vec![self.target.path().to_path_buf()];
        o.checkpoints = Some(c);
        o
    }

    async fn open(&self, chain: &str) -> PgStore {
        PgStore::open(self.opts(chain, 1)).await.expect("open store")
    }

    /// A store that cuts checkpoints only when told (`checkpoint_now`): neither the count nor the
    /// interval would cut one during a test.
    async fn open_checkpointed_by_hand(&self, chain: &str) -> PgStore {
        let mut opts = self.opts(chain, 1);
        if let Some(c) = opts.checkpoints.as_mut() {
            c.every = 1_000_000;
            c.interval = Duration::from_secs(3600);
        }
        PgStore::open(opts).await.expect("open store")
    }

    async fn verify(&self, published: bool) -> Result<PgVerifyReport, PgVerifyError> {
        let targets: Vec<PathBuf> = if published {
            vec![self.target.path().to_path_buf()]
        } else {
            Vec::new()
        };
        verify_with_published(&self.config, &cordon_audit_pg::Tls::Off, &self.schema, &targets).await
    }

    /// Export chain `gw-a` (EU subjects) against the publication target.
    async fn export(
        &self,
        filter: &cordon_audit::bundle::ExportFilter,
    ) -> Result<cordon_audit::Bundle, cordon_audit_pg::PgExportError> {
        cordon_audit_pg::export_chain(
            &self.config,
            &cordon_audit_pg::Tls::Off,
            &self.schema,
            "gw-a",
            &[self.target.path().to_path_buf()],
            "EU",
            filter,
            None,
        )
        .await
    }

    /// Close/open markers in the table, all chains.
    async fn marker_rows(&self) -> i64 {
        let s = &self.schema;
        self.admin
            .query_one(&format!("SELECT count(*) FROM \"{s}\".markers"), &[])
            .await
            .unwrap()
            .get(0)
    }

    async fn tamper(&self, sql: &str) {
        common::tamper(&self.admin, &self.schema, sql).await;
    }

    async fn cleanup(self) {
        common::drop_schema(&self.admin, &self.schema).await;
    }
}

/// Stop a store as the gateway does at SIGTERM, and require a clean stop (its close marker
/// written).
async fn stop_cleanly(store: PgStore) {
    assert!(
        store.shut_down(Duration::from_secs(10)).await,
        "the close marker was written"
    );
}

fn latest(target: &Path, chain: &str) -> Checkpoint {
    let bytes = std::fs::read(target.join(chain).join("latest.ckpt")).expect("latest.ckpt");
    let vkey = std::fs::read_to_string(target.join(chain).join("checkpoint.vkey")).unwrap();
    let v = NoteVerifier::parse(vkey.trim_end()).unwrap();
    Checkpoint::open(&bytes, &[v]).expect("a checkpoint signed by the chain's key")
}

/// The sizes of the checkpoints published for `chain`, ascending.
fn published_sizes(target: &Path, chain: &str) -> Vec<u64> {
    let mut sizes: Vec<u64> = std::fs::read_dir(target.join(chain).join("checkpoints"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".ckpt")?.parse().ok())
        .collect();
    sizes.sort();
    sizes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_signed_into_the_table_published_and_verified_across_restarts() {
    let db = setup().await;
    let store = db.open("gw-a").await;
    append_n(&store, 10).await;
    store.close().await;
    // Closing covers every committed record, in the table and at the target.
    let c = latest(db.target.path(), "gw-a");
    assert_eq!(c.size, 10);
    assert_eq!(c.origin, format!("cordon/{}/gw-a", db.schema));
    let report = db.verify(true).await.unwrap();
    assert_eq!(report.records, 10);
    assert!(report.checkpoints >= 2, "{report}");
    assert_eq!(
        report.signed, report.checkpoints,
        "every row the writer made is signed"
    );
    assert!(report.published >= 2, "latest.ckpt and checkpoints/10: {report}");
    assert_eq!(
        c.root.to_vec(),
        hex::decode(&report.chains[0].root).unwrap(),
        "the published root is the chain's"
    );

    // A restart continues the same tree: the new checkpoint extends the published one (the
    // compare-and-swap accepts it), and nothing is refused.
    let store = db.open("gw-a").await;
    append_n(&store, 5).await;
    let stats = store.checkpoint_stats();
    store.close().await;
    assert_eq!(stats.rejected, 0, "{stats:?}");
    assert_eq!(latest(db.target.path(), "gw-a").size, 15);
    // Idle: the interval alone cuts a checkpoint.
    let store = db.open("gw-a").await;
    append_n(&store, 1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while latest(db.target.path(), "gw-a").size != 16 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint after the interval"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store.close().await;
    let report = db.verify(true).await.unwrap();
    assert_eq!(report.records, 16);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_cut_with_its_table_checkpoints_is_caught_by_the_published_ones() {
    let db = setup().await;
    let store = db.open("gw-a").await;
    append_n(&store, 10).await;
    store.close().await;
    let s = &db.schema;
    // The administrator removes the last records and every checkpoint and marker row that
    // covered them (the table's close marker alone would name the cut).
    db.tamper(&format!(
        "DELETE FROM \"{s}\".records WHERE idx >= 6; DELETE FROM \"{s}\".checkpoints WHERE tree_size > 6; \
         DELETE FROM \"{s}\".markers"
    ))
    .await;
    // The database alone cannot tell: it is a valid, shorter chain.
    let alone = db.verify(false).await.unwrap();
    assert_eq!(alone.records, 6);
    // Against the published checkpoints it fails, naming the chain and where.
    let (chain, index, kind) = broken(db.verify(true).await.unwrap_err());
    assert_eq!((chain.as_str(), index), ("gw-a", 6));
    // The first published size past 6 (which sizes were cut depends on timing and coalescing).
    let first_past = *published_sizes(db.target.path(), "gw-a")
        .iter()
        .find(|&&s| s > 6)
        .unwrap();
    assert_eq!(
        kind,
        PgBreakKind::Truncated {
            checkpoint_size: first_past,
            records: 6
        }
    );
    // And the writer refuses to extend a chain that lost records.
    let err = PgStore::open(db.opts("gw-a", 1)).await.unwrap_err();
    assert!(matches!(err, PgError::Checkpoint { .. }), "{err}");
    assert!(err.to_string().contains("records were removed"), "{err}");

    // A whole chain removed (rows, checkpoints and key) is still named.
    db.tamper(&format!(
        "DELETE FROM \"{s}\".records; DELETE FROM \"{s}\".checkpoints; DELETE FROM \"{s}\".chain_keys"
    ))
    .await;
    let (chain, index, kind) = broken(db.verify(true).await.unwrap_err());
    assert_eq!((chain.as_str(), index), ("gw-a", 0));
    assert!(
        matches!(
            kind,
            PgBreakKind::Truncated {
                checkpoint_size: 1..,
                records: 0
            }
        ),
        "{kind}"
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_history_or_a_forged_checkpoint_is_named() {
    let db = setup().await;
    let store = db.open("gw-a").await;
    append_n(&store, 8).await;
    store.close().await;
    let s = &db.schema;
    // A forged table checkpoint: the note re-signed by another key (no one else has the chain's).
    let forged = Checkpoint::new(&format!("cordon/{s}/gw-a"), 8, [9; 32])
        .sign(&signer(s, "gw-a", 2))
        .unwrap();
    db.tamper(&format!(
        "UPDATE \"{s}\".checkpoints SET note = '{forged}', root_hash = '\\x{}' WHERE tree_size = 8",
        hex::encode([9u8; 32])
    ))
    .await;
    let (_, index, kind) = broken(db.verify(true).await.unwrap_err());
    assert_eq!(index, 7);
    assert!(
        matches!(&kind, PgBreakKind::BadCheckpoint { detail } if detail.contains("does not verify")),
        "{kind}"
    );

    // The whole chain rewritten consistently (new bodies, hashes and unsigned checkpoints): the
    // published root at 8 no longer matches.
    db.tamper(&format!(
        "DELETE FROM \"{s}\".records; DELETE FROM \"{s}\".checkpoints"
    ))
    .await;
    let plain = PgStore::open(PgStoreOptions::new(db.config.clone(), s, "gw-a"))
        .await
        .unwrap();
    for i in 100..108 {
        plain
            .append(&cordon_audit::testing::sample_decision(i))
            .unwrap()
            .await
            .unwrap();
    }
    plain.close().await;
    let (_, index, kind) = broken(db.verify(true).await.unwrap_err());
    // The first published size.
    let first = published_sizes(db.target.path(), "gw-a")[0];
    assert_eq!(
        (index, kind),
        (first - 1, PgBreakKind::CheckpointMismatch { tree_size: first })
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_is_signed_by_one_key_only() {
    let db = setup().await;
    let store = db.open("gw-a").await;
    append_n(&store, 2).await;
    store.close().await;
    // Another key for the same chain is refused by the publication target's record of the key...
    let err = PgStore::open(db.opts("gw-a", 2)).await.unwrap_err();
    assert!(err.to_string().contains("belongs to key"), "{err}");
    // ... and by the table's, where nothing is published.
    let mut unpublished = db.opts("gw-a", 2);
    if let Some(c) = unpublished.checkpoints.as_mut() {
        c.publish_to.clear();
    }
    let err = PgStore::open(unpublished).await.unwrap_err();
    assert!(err.to_string().contains("signed by another key"), "{err}");
    // Neither refusal left a trace: the original key still writes.
    let store = db.open("gw-a").await;
    append_n(&store, 1).await;
    store.close().await;
    // A second chain has a key of its own and verifies beside the first.
    let other = PgStore::open(db.opts("gw-b", 3)).await.unwrap();
    append_n(&other, 3).await;
    other.close().await;
    let report = db.verify(true).await.unwrap();
    assert_eq!(report.chains.len(), 2);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tree_survives_failed_batches_and_reconnects() {
    let db = setup().await;
    let s = &db.schema;
    let role = cordon_audit_pg::WRITER_ROLE;
    let store = db.open("gw-a").await;
    append_n(&store, 5).await;
    db.admin
        .batch_execute(&format!("REVOKE INSERT ON \"{s}\".records FROM {role}"))
        .await
        .unwrap();
    assert!(
        store
            .append(&cordon_audit::testing::sample_decision(99))
            .unwrap()
            .await
            .is_err()
    );
    db.admin
        .batch_execute(&format!("GRANT INSERT ON \"{s}\".records TO {role}"))
        .await
        .unwrap();
    // The writer reconnects, reloads the head and brings its tree up to the chain.
    append_n(&store, 6).await;
    let stats = store.checkpoint_stats();
    store.close().await;
    assert_eq!(stats.rejected, 0, "{stats:?}");
    assert_eq!(latest(db.target.path(), "gw-a").size, 11);
    let report = db.verify(true).await.unwrap();
    assert_eq!(report.records, 11);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_now_covers_every_committed_record_and_publishes_it() {
    let db = setup().await;
    let store = db.open_checkpointed_by_hand("gw-a").await;
    append_n(&store, 3).await;
    assert!(!db.target.path().join("gw-a/latest.ckpt").exists());
    assert!(store.checkpoint_now(Duration::from_secs(10)).await);
    assert_eq!(latest(db.target.path(), "gw-a").size, 3);
    assert_eq!(store.checkpoint_stats().written, 1);
    // The store goes on.
    append_n(&store, 2).await;
    assert!(store.checkpoint_now(Duration::from_secs(10)).await);
    assert_eq!(latest(db.target.path(), "gw-a").size, 5);
    drop(store);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_lost_in_transit_extends_the_tree_on_reload() {
    let db = setup().await;
    let store = db.open("gw-a").await;
    append_n(&store, 4).await;
    // Row 4 commits, but its writer never hears back: its append fails, and the reload finds
    // exactly that batch in the table and takes it into the tree.
    store.lose_next_commit_answer();
    assert!(
        store
            .append(&cordon_audit::testing::sample_decision(5))
            .unwrap()
            .await
            .is_err(),
        "the batch whose answer was lost is not acknowledged"
    );
    // The lost connection's session may hold the chain's lock a moment longer: the writer
    // reconnects when it is gone (probing every second).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.check_writable().is_err() {
        assert!(std::time::Instant::now() < deadline, "the writer did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    append_n(&store, 3).await;
    let stats = store.checkpoint_stats();
    store.close().await;
    assert_eq!(stats.rejected, 0, "{stats:?}");
    assert_eq!(latest(db.target.path(), "gw-a").size, 8);
    let report = db.verify(true).await.unwrap();
    assert_eq!(report.records, 8);
    db.cleanup().await;
}

/// Another holder of the writer role (another replica's credentials) inserts a well-linked row
/// into a live chain: the chain's writer fails its next batch on the primary key and reloads, and
/// refuses to adopt (and sign) a row that is not its own batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_inserted_into_a_live_chain_by_someone_else_is_refused() {
    let db = setup().await;
    let s = &db.schema;
    let store = db.open("gw-a").await;
    append_n(&store, 4).await;
    let head = db.verify(false).await.unwrap().chains[0].head_hash.clone();
    insert_linked_row(&db.admin, s, "gw-a", 4, &head).await;
    assert!(
        store
            .append(&cordon_audit::testing::sample_decision(5))
            .unwrap()
            .await
            .is_err(),
        "the batch conflicting with the foreign row fails"
    );
    let after = store
        .append(&cordon_audit::testing::sample_decision(6))
        .unwrap()
        .await;
    let err = after.expect_err("the writer does not chain onto someone else's row");
    assert!(err.to_string().contains("written by someone else"), "{err}");
    assert!(
        store.check_writable().is_err(),
        "the store reports itself unavailable"
    );
    // The refusal outlives the process: a restart names the row forged, verify too.
    assert!(!store.shut_down(Duration::from_secs(5)).await, "not a clean stop");
    drop(store);
    let err = PgStore::open(db.opts("gw-a", 1)).await.unwrap_err();
    assert!(err.to_string().contains("forged"), "{err}");
    let (_, index, kind) = broken(db.verify(false).await.unwrap_err());
    assert!(
        matches!(
            kind,
            PgBreakKind::Forged {
                closed_at: 4,
                found: 5,
                ..
            }
        ) && index == 4,
        "{kind}"
    );
    db.cleanup().await;
}

/// A chain opened and stopped cleanly before its first record (a jurisdiction without traffic)
/// has markers at size 0: they match the empty tree, and everything verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_chain_stopped_cleanly_verifies() {
    let db = setup().await;
    let store = db.open("gw-a").await;
    stop_cleanly(store).await;
    let other = db.open("gw-b").await;
    append_n(&other, 3).await;
    other.close().await;
    assert_eq!(db.verify(false).await.unwrap().records, 3);
    assert_eq!(db.verify(true).await.unwrap().records, 3);
    let store = db.open("gw-a").await;
    stop_cleanly(store).await;
    assert_eq!(
        db.marker_rows().await,
        4,
        "gw-a: closed, opened, closed, all at size 0; gw-b: closed"
    );
    assert_eq!(db.verify(true).await.unwrap().records, 3);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_chain_ids_and_wrong_targets_are_refused_not_skipped() {
    let db = setup().await;
    for id in [".gw", "..", "."] {
        let err = PgStore::open(db.opts(id, 1)).await.unwrap_err();
        assert!(err.to_string().contains("chain id"), "{id}: {err}");
    }
    let store = db.open("gw-a").await;
    append_n(&store, 6).await;
    store.close().await;
    // The chain's own directory given instead of the publish directory: an error, not a pass.
    let wrong = verify_with_published(
        &db.config,
        &cordon_audit_pg::Tls::Off,
        &db.schema,
        &[db.target.path().join("gw-a")],
    )
    .await
    .unwrap_err();
    assert!(wrong.to_string().contains("none is published"), "{wrong}");
    // A directory holding checkpoints under a name no chain could have is named.
    std::fs::create_dir_all(db.target.path().join(".hidden/checkpoints")).unwrap();
    let err = db.verify(true).await.unwrap_err();
    assert!(err.to_string().contains("not named for a chain id"), "{err}");
    std::fs::remove_dir_all(db.target.path().join(".hidden")).unwrap();
    // A missing target is an error about the target.
    let missing = verify_with_published(
        &db.config,
        &cordon_audit_pg::Tls::Off,
        &db.schema,
        &[db.target.path().join("nope")],
    )
    .await
    .unwrap_err();
    assert!(matches!(missing, PgVerifyError::Published { .. }), "{missing}");
    db.verify(true).await.unwrap();
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_signed_checkpoints_says_to_migrate() {
    let db = setup().await;
    let s = &db.schema;
    db.admin
        .batch_execute(&format!(
            "DROP TABLE \"{s}\".chain_keys; ALTER TABLE \"{s}\".checkpoints DROP COLUMN note"
        ))
        .await
        .unwrap();
    // Unsigned chains still verify on the old schema.
    let plain = PgStore::open(PgStoreOptions::new(db.config.clone(), s, "gw-a"))
        .await
        .unwrap();
    append_n(&plain, 2).await;
    plain.close().await;
    db.verify(false).await.unwrap();
    let err = PgStore::open(db.opts("gw-a", 1)).await.unwrap_err();
    assert!(err.to_string().contains("init-postgres"), "{err}");
    migrate(&db.admin, s).await.unwrap();
    let store = db.open("gw-a").await;
    append_n(&store, 1).await;
    store.close().await;
    assert_eq!(db.verify(true).await.unwrap().records, 3);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_exports_as_a_bundle_that_verifies_offline() {
    let db = setup().await;
    let store = db.open("gw-a").await;
    append_n(&store, 12).await;
    store.close().await;
    let everything = cordon_audit::bundle::ExportFilter::default();
    let bundle = db.export(&everything).await.unwrap();
    assert_eq!(bundle.manifest.origin, format!("cordon/{}/gw-a", db.schema));
    assert_eq!(bundle.manifest.checkpoint_size, 12);
    assert_eq!(bundle.records.len(), 12);
    // Offline, from the file alone.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bundle.json");
    cordon_audit::bundle::write_bundle(&bundle, &file).unwrap();
    let summary =
        cordon_audit::bundle::verify_bundle(&cordon_audit::bundle::read_bundle(&file).unwrap()).unwrap();
    assert_eq!(summary.records, 12);
    // One subject's records only.
    let one = cordon_audit::bundle::ExportFilter {
        subject: Some(format!("ps:{:032x}", 3)),
        ..Default::default()
    };
    let bundle = db.export(&one).await.unwrap();
    assert_eq!(bundle.records.len(), 1);
    // A checkpoint published but missing from the table (its insert failed) is the newest one.
    let s = &db.schema;
    db.tamper(&format!("DELETE FROM \"{s}\".checkpoints WHERE tree_size = 12"))
        .await;
    assert_eq!(db.export(&everything).await.unwrap().manifest.checkpoint_size, 12);
    // show: a chain that is not there is an error, not an empty table.
    let err = cordon_audit_pg::read_chain_records(
        &db.config,
        &cordon_audit_pg::Tls::Off,
        &db.schema,
        "gw-typo",
        &[db.target.path().to_path_buf()],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no records"), "{err}");
    // A damaged store is not exported.
    db.tamper(&format!("DELETE FROM \"{s}\".records WHERE idx >= 10"))
        .await;
    let err = db.export(&everything).await.unwrap_err();
    assert!(matches!(err, cordon_audit_pg::PgExportError::Verify(_)), "{err}");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_proves_consistency_between_two_of_its_checkpoints() {
    let db = setup().await;
    let store = db.open_checkpointed_by_hand("gw-a").await;
    append_n(&store, 5).await;
    assert!(store.checkpoint_now(Duration::from_secs(10)).await);
    append_n(&store, 8).await;
    assert!(store.checkpoint_now(Duration::from_secs(10)).await);
    drop(store);
    let targets = vec![db.target.path().to_path_buf()];
    let prove = |old: u64, new: u64| {
        cordon_audit_pg::prove_chain_consistency(
            &db.config,
            &cordon_audit_pg::Tls::Off,
            &db.schema,
            "gw-a",
            &targets,
            old,
            new,
        )
    };
    let (vkey, b) = prove(5, 13).await.unwrap();
    assert_eq!((b.old_size, b.new_size), (5, 13));
    assert!(!b.proof.is_empty());
    cordon_audit::verify_consistency_bundle(&b, &vkey).unwrap();
    // The older checkpoint's row gone from the table: the published copy serves.
    let s = &db.schema;
    db.tamper(&format!("DELETE FROM \"{s}\".checkpoints WHERE tree_size = 5"))
        .await;
    let (_, again) = prove(5, 13).await.unwrap();
    assert_eq!(again, b);
    // No checkpoint at that size, or sizes the wrong way round: refused, naming why.
    let err = prove(6, 13).await.unwrap_err();
    assert!(
        err.to_string().contains("no signed checkpoint at size 6"),
        "{err}"
    );
    let err = prove(13, 5).await.unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_exports_while_its_gateway_writes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let db = setup().await;
    // Checkpoints every 4 records or 50 ms: while an export verifies, newer ones keep coming.
    let store = Arc::new(db.open("gw-a").await);
    append_n(&store, 20).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (store, stop) = (store.clone(), stop.clone());
        async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let rec = cordon_audit::testing::sample_decision(1000 + n);
                store.append(&rec).unwrap().await.unwrap();
                n += 1;
            }
            n
        }
    });
    let everything = cordon_audit::bundle::ExportFilter::default();
    let mut sizes = Vec::new();
    for _ in 0..5 {
        let bundle = db.export(&everything).await.expect("a live chain exports");
        let summary = cordon_audit::bundle::verify_bundle(&bundle).unwrap();
        assert_eq!(summary.records as u64, bundle.manifest.checkpoint_size);
        sizes.push(bundle.manifest.checkpoint_size);
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(
        written > 0 && sizes[4] > 20,
        "the chain grew during the exports: {sizes:?}"
    );
    drop(store);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_inserted_after_a_clean_shutdown_are_named_forged_not_adopted() {
    let db = setup().await;
    let s = &db.schema;
    // Clean stops and restarts (one through `shut_down`, as the gateway stops) are never taken
    // for forgery: each start after a close writes an open marker first.
    let store = db.open("gw-a").await;
    append_n(&store, 3).await;
    assert!(store.shut_down(Duration::from_secs(10)).await);
    let after = match store.append(&cordon_audit::testing::sample_decision(1)) {
        Ok(ack) => ack.await,
        Err(e) => Err(e),
    };
    assert!(after.is_err(), "a shut-down store takes no more records");
    drop(store);
    let store = db.open("gw-a").await;
    append_n(&store, 2).await;
    store.close().await;
    let report = db.verify(true).await.unwrap();
    assert_eq!(report.records, 5);
    let markers = db.marker_rows().await;
    assert_eq!(markers, 3, "closed, opened, closed");
    let published = std::fs::read_dir(db.target.path().join("gw-a").join("markers"))
        .unwrap()
        .count();
    assert_eq!(published, 3, "every marker is published beside the checkpoints");

    // The writer role appends a well-linked row while the gateway is stopped.
    let head = report.chains[0].head_hash.clone();
    insert_linked_row(&db.admin, s, "gw-a", 5, &head).await;
    let err = PgStore::open(db.opts("gw-a", 1)).await.unwrap_err();
    assert!(err.to_string().contains("forged"), "{err}");
    let (chain, index, kind) = broken(db.verify(true).await.unwrap_err());
    assert_eq!((chain.as_str(), index), ("gw-a", 5));
    assert!(
        matches!(
            kind,
            PgBreakKind::Forged {
                closed_at: 5,
                found: 6,
                ..
            }
        ),
        "{kind}"
    );

    // The database's owner also deletes the table's markers: the published close marker still
    // names the row.
    db.tamper(&format!("DELETE FROM \"{s}\".markers")).await;
    let err = PgStore::open(db.opts("gw-a", 1)).await.unwrap_err();
    assert!(err.to_string().contains("forged"), "{err}");
    let (_, index, kind) = broken(db.verify(true).await.unwrap_err());
    assert!(matches!(kind, PgBreakKind::Forged { .. }) && index == 5, "{kind}");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_tail_is_adopted_and_a_junk_marker_row_is_no_claim() {
    let db = setup().await;
    let s = &db.schema;
    let store = db.open_checkpointed_by_hand("gw-a").await;
    append_n(&store, 3).await;
    // A crash: the writer's session ends without a close marker (its connection is killed, and
    // the store is then dropped while the database refuses it).
    let report = db.verify(true).await.unwrap();
    // Only this test's writer: its last statement names the test's own schema.
    db.admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND query LIKE '%{s}%'"
        ))
        .await
        .unwrap();
    drop(store);
    // Rows after a crash are kept (they may be acknowledged records) and signed at the restart:
    // had a close marker been written, this open would refuse the row as forged.
    insert_linked_row(&db.admin, s, "gw-a", 3, &report.chains[0].head_hash).await;
    let store = db.open("gw-a").await;
    append_n(&store, 1).await;
    store.close().await;
    assert_eq!(db.verify(true).await.unwrap().records, 5);

    // A marker row that is not the chain's (signed by another key, inserted with the writer
    // role) is no claim, for verify or for the start, and the chain's next marker goes above it.
    let junk = |seq: i64| {
        let note = cordon_audit::marker::Marker {
            kind: cordon_audit::marker::MarkerKind::Closed,
            seq: seq as u64,
            size: 2,
            root: [0; 32],
        }
        .sign(&signer(s, "gw-a", 2))
        .unwrap();
        format!(
            "SET ROLE {role}; INSERT INTO \"{s}\".markers (chain_id, seq, note) VALUES ('gw-a', {seq}, '{note}'); RESET ROLE",
            role = cordon_audit_pg::WRITER_ROLE
        )
    };
    db.admin.batch_execute(&junk(9)).await.unwrap();
    // Even at the largest number: markers take the next free one, never past it.
    db.admin.batch_execute(&junk(i64::MAX)).await.unwrap();
    assert_eq!(db.verify(true).await.unwrap().records, 5);
    let store = db.open("gw-a").await;
    // While it runs, another junk row takes the number its close marker would use (the open
    // marker took 2, after the close marker at 1).
    db.admin.batch_execute(&junk(3)).await.unwrap();
    append_n(&store, 1).await;
    stop_cleanly(store).await;
    let seqs: Vec<i64> = db
        .admin
        .query(
            &format!("SELECT seq FROM \"{s}\".markers WHERE chain_id = 'gw-a' ORDER BY seq"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        seqs,
        [1, 2, 3, 4, 9, i64::MAX],
        "closed 1, opened 2, junk 3, closed 4 (the next free number), junk 9 and MAX"
    );
    // The close marker is real: a row appended now is forged.
    let head = db.verify(true).await.unwrap().chains[0].head_hash.clone();
    insert_linked_row(&db.admin, s, "gw-a", 6, &head).await;
    let err = PgStore::open(db.opts("gw-a", 1)).await.unwrap_err();
    assert!(err.to_string().contains("forged"), "{err}");
    db.cleanup().await;
}

/// The database's owner cuts the tail of a cleanly closed chain, or rewrites its last record,
/// together with the table's checkpoints and markers: the published close marker still names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_close_marker_catches_a_cut_or_rewritten_tail() {
    let db = setup().await;
    let s = &db.schema;
    let store = db.open_checkpointed_by_hand("gw-a").await;
    append_n(&store, 8).await;
    stop_cleanly(store).await;
    db.tamper(&format!(
        "DELETE FROM \"{s}\".records WHERE idx >= 6; DELETE FROM \"{s}\".checkpoints; DELETE FROM \"{s}\".markers"
    ))
    .await;
    // Published: the close marker at 8 (and the final checkpoint). Without the checkpoints, the
    // marker alone names the cut.
    for f in std::fs::read_dir(db.target.path().join("gw-a").join("checkpoints")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    std::fs::remove_file(db.target.path().join("gw-a").join("latest.ckpt")).unwrap();
    let (_, index, kind) = broken(db.verify(true).await.unwrap_err());
    assert_eq!(
        (index, kind),
        (
            6,
            PgBreakKind::Truncated {
                checkpoint_size: 8,
                records: 6
            }
        )
    );

    db.cleanup().await;

    // A rewritten last record (its hashes rebuilt), with the table's checkpoints and every
    // published checkpoint gone: the close marker's root alone no longer matches, and the next
    // start refuses to sign over it.
    let db = setup().await;
    let s = &db.schema;
    let store = db.open_checkpointed_by_hand("gw-a").await;
    append_n(&store, 4).await;
    stop_cleanly(store).await;
    let checkpoints = format!("DELETE FROM \"{s}\".checkpoints");
    common::rewrite_row(&db.admin, s, "gw-a", 3, "gw-test", "gw-evil", &checkpoints).await;
    for f in std::fs::read_dir(db.target.path().join("gw-a").join("checkpoints")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    std::fs::remove_file(db.target.path().join("gw-a").join("latest.ckpt")).unwrap();
    let (_, index, kind) = broken(db.verify(true).await.unwrap_err());
    assert_eq!(
        (index, kind),
        (3, PgBreakKind::CheckpointMismatch { tree_size: 4 })
    );
    let err = PgStore::open(db.opts("gw-a", 1)).await.unwrap_err();
    assert!(
        err.to_string().contains("rewritten while its writer was stopped"),
        "{err}"
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_checkpoint_row_in_a_signed_chain_is_no_claim() {
    let db = setup().await;
    let s = &db.schema;
    let store = db.open("gw-a").await;
    append_n(&store, 4).await;
    store.close().await;
    // The writer role claims a longer chain with an unsigned row: neither verify nor the next
    // start takes it for a removed tail.
    db.admin
        .batch_execute(&format!(
            "SET ROLE {role}; INSERT INTO \"{s}\".checkpoints (chain_id, tree_size, root_hash, entry_hash) \
             VALUES ('gw-a', 50, '\\x{z}', '\\x{z}'); RESET ROLE",
            role = cordon_audit_pg::WRITER_ROLE,
            z = hex::encode([0u8; 32]),
        ))
        .await
        .unwrap();
    assert_eq!(db.verify(true).await.unwrap().records, 4);
    let store = db.open("gw-a").await;
    append_n(&store, 1).await;
    store.close().await;
    assert_eq!(db.verify(true).await.unwrap().records, 5);

    // Unsigned rows inserted ahead for the sizes the writer will sign keep its rows out of the
    // table: each such checkpoint counts as a failure (for the alert), and is still published.
    db.admin
        .batch_execute(&format!(
            "SET ROLE {role}; INSERT INTO \"{s}\".checkpoints (chain_id, tree_size, root_hash, entry_hash) \
             SELECT 'gw-a', n, '\\x{z}', '\\x{z}' FROM generate_series(6, 40) AS n; RESET ROLE",
            role = cordon_audit_pg::WRITER_ROLE,
            z = hex::encode([0u8; 32]),
        ))
        .await
        .unwrap();
    let store = db.open("gw-a").await;
    append_n(&store, 4).await;
    assert!(store.checkpoint_now(Duration::from_secs(10)).await);
    let stats = store.checkpoint_stats();
    store.close().await;
    assert!(stats.failures >= 1, "{stats:?}");
    assert_eq!(latest(db.target.path(), "gw-a").size, 9);
    assert_eq!(db.verify(true).await.unwrap().records, 9);
    db.cleanup().await;
}

/// `cordon audit verify` shows progress for a PostgreSQL store: rows verified of the rows in the
/// store (every chain), ending at all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_reports_progress_over_every_chain() {
    let db = setup().await;
    for (chain, n) in [("gw-a", 5), ("gw-b", 7)] {
        let store = db.open(chain).await;
        append_n(&store, n).await;
        store.close().await;
    }
    let calls = std::sync::Mutex::new(Vec::new());
    let record = |done: u64, total: u64| calls.lock().unwrap().push((done, total));
    let report = cordon_audit_pg::verify_with_progress(
        &db.config,
        &cordon_audit_pg::Tls::Off,
        &db.schema,
        &[db.target.path().to_path_buf()],
        Some(&record),
    )
    .await
    .unwrap();
    assert_eq!(report.records, 12);
    let calls = calls.into_inner().unwrap();
    assert_eq!(calls.last(), Some(&(12, 12)), "{calls:?}");
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0), "{calls:?}");
    db.cleanup().await;
}

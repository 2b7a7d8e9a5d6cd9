//! Against the real PostgreSQL (`CORDON_TEST_PG`, default
//! `host=127.0.0.1 port=5432 user=postgres dbname=test`, a superuser). Each test makes its own
//! schema `cordon_test_<pid>_<nanos>_<n>` and drops it at the end.

use std::str::FromStr;
use std::sync::Arc;

use cordon_audit::{AuditStore, FileStore, Record, StoreOptions};
use cordon_audit_pg::{
    APPEND_ONLY_MESSAGE, PgBreakKind, PgStore, PgStoreOptions, PgVerifyError, WRITER_ROLE, migrate,
    verify_config, verify_url,
};
use tokio_postgres::{Client, Config, NoTls};

mod common;
use common::{append_n, broken, fresh_schema};

struct TestDb {
    admin: Client,
    config: Config,
    schema: String,
}

async fn setup() -> TestDb {
    let (admin, config, schema) = fresh_schema("cordon_test").await;
    // Idempotent.
    migrate(&admin, &schema).await.expect("migrate again");
    TestDb {
        admin,
        config,
        schema,
    }
}

impl TestDb {
    fn opts(&self, chain: &str) -> PgStoreOptions {
        PgStoreOptions::new(self.config.clone(), &self.schema, chain)
    }

    async fn open(&self, chain: &str) -> PgStore {
        PgStore::open(self.opts(chain)).await.expect("open store")
    }

    async fn verify(&self) -> Result<cordon_audit_pg::PgVerifyReport, PgVerifyError> {
        verify_config(&self.config, &self.schema).await
    }

    async fn tamper(&self, sql: &str) {
        common::tamper(&self.admin, &self.schema, sql).await;
    }

    async fn cleanup(self) {
        common::drop_schema(&self.admin, &self.schema).await;
    }
}

fn sample(n: u64) -> Record {
    cordon_audit::testing::sample_decision(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_distinct_indices_and_verify() {
    let db = setup().await;
    let store = Arc::new(db.open("gw-fra-1-a").await);
    store.check_writable().unwrap();
    let mut tasks = Vec::new();
    for t in 0..32u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..50u64 {
                got.push(store.append(&sample(t * 1000 + i)).unwrap().await.unwrap());
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..1600).collect::<Vec<u64>>());
    let stats = store.stats();
    assert_eq!(stats.records, 1600);
    assert_eq!(stats.failed_batches, 0);
    assert!(stats.batches < 1600, "no group commit: {stats:?}");

    let report = db.verify().await.unwrap();
    assert_eq!(report.records, 1600);
    assert_eq!(report.decisions, 1600);
    assert_eq!(report.chains.len(), 1);
    assert_eq!(report.chains[0].chain_id, "gw-fra-1-a");
    // One chain: the store-wide root is the chain's root.
    assert_eq!(report.root, report.chains[0].root);
    let shown = report.to_string();
    assert!(shown.contains("1600 records"), "{shown}");
    assert!(shown.contains("gw-fra-1-a"), "{shown}");
    Arc::try_unwrap(store).unwrap().close().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_write_concurrently_and_both_chains_verify() {
    let db = setup().await;
    let a = Arc::new(db.open("gw-fra-1-a").await);
    let b = Arc::new(db.open("gw-fra-1-b").await);
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let store = if t % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            for i in 0..50u64 {
                store.append(&sample(t * 1000 + i)).unwrap().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let report = db.verify().await.unwrap();
    assert_eq!(report.records, 800);
    let chains: Vec<(&str, u64)> = report
        .chains
        .iter()
        .map(|c| (c.chain_id.as_str(), c.records))
        .collect();
    assert_eq!(chains, [("gw-fra-1-a", 400), ("gw-fra-1-b", 400)]);
    assert_ne!(report.root, report.chains[0].root);
    // The documented leaf order: chain ids in byte order, then idx.
    let rows = db
        .admin
        .query(
            &format!(
                "SELECT leaf_hash FROM \"{}\".records ORDER BY chain_id COLLATE \"C\", idx",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let leaves: Vec<[u8; 32]> = rows
        .iter()
        .map(|r| r.get::<_, Vec<u8>>(0).try_into().unwrap())
        .collect();
    assert_eq!(report.root, hex::encode(cordon_audit::merkle::root(&leaves)));
    for c in &report.chains {
        let rows = db
            .admin
            .query(
                &format!(
                    "SELECT leaf_hash FROM \"{}\".records WHERE chain_id = $1 ORDER BY idx",
                    db.schema
                ),
                &[&c.chain_id],
            )
            .await
            .unwrap();
        let leaves: Vec<[u8; 32]> = rows
            .iter()
            .map(|r| r.get::<_, Vec<u8>>(0).try_into().unwrap())
            .collect();
        assert_eq!(c.root, hex::encode(cordon_audit::merkle::root(&leaves)));
    }
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_role_cannot_update_delete_or_truncate_and_triggers_fence_the_superuser() {
    let db = setup().await;
    let store = db.open("gw-a").await;
    append_n(&store, 3).await;
    store.close().await;
    let s = &db.schema;

    // A separate session as the writer role.
    let (writer, conn) = db.config.connect(NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    writer
        .batch_execute(&format!("SET ROLE {WRITER_ROLE}"))
        .await
        .unwrap();
    let n: i64 = writer
        .query_one(&format!("SELECT count(*) FROM \"{s}\".records"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3, "the writer can read");
    for table in ["records", "checkpoints"] {
        for stmt in [
            format!("UPDATE \"{s}\".{table} SET chain_id = 'x'"),
            format!("DELETE FROM \"{s}\".{table}"),
            format!("TRUNCATE \"{s}\".{table}"),
            format!("ALTER TABLE \"{s}\".{table} DISABLE TRIGGER USER"),
            format!("DROP TABLE \"{s}\".{table}"),
        ] {
            let err = writer.batch_execute(&stmt).await.expect_err(&stmt);
            let code = err.code().map(|c| c.code().to_string());
            assert!(
                matches!(code.as_deref(), Some("42501")),
                "{stmt}: expected insufficient_privilege, got {code:?}"
            );
        }
    }

    // The superuser has the privileges; the triggers still refuse.
    for stmt in [
        format!("UPDATE \"{s}\".records SET chain_id = 'x'"),
        format!("DELETE FROM \"{s}\".records WHERE idx = 1"),
        format!("TRUNCATE \"{s}\".records"),
        format!("TRUNCATE \"{s}\".checkpoints"),
    ] {
        let err = db.admin.batch_execute(&stmt).await.expect_err(&stmt);
        let db_err = err.as_db_error().expect("a server error");
        assert_eq!(db_err.code().code(), "P0001", "{stmt}");
        assert!(
            db_err.message().contains(APPEND_ONLY_MESSAGE),
            "{stmt}: {}",
            db_err.message()
        );
    }
    let report = db.verify().await.unwrap();
    assert_eq!(report.records, 3);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_named_by_chain_index_and_kind() {
    let db = setup().await;
    let a = db.open("gw-a").await;
    let b = db.open("gw-b").await;
    append_n(&a, 10).await;
    append_n(&b, 10).await;
    a.close().await;
    b.close().await;
    db.verify().await.unwrap();
    let s = db.schema.clone();

    // 1. Flip bytes of a body (hash columns left alone).
    db.tamper(&format!(
        "UPDATE \"{s}\".records SET body = convert_to(replace(convert_from(body, 'UTF8'), 'm-small', 'm-large'), 'UTF8') \
         WHERE chain_id = 'gw-b' AND idx = 4"
    ))
    .await;
    let check = db
        .admin
        .query_one(
            &format!("SELECT position('m-large' in convert_from(body, 'UTF8')) > 0 FROM \"{s}\".records WHERE chain_id='gw-b' AND idx=4"),
            &[],
        )
        .await
        .unwrap();
    assert!(check.get::<_, bool>(0), "the tamper step did not change the body");
    let (chain, index, kind) = broken(db.verify().await.unwrap_err());
    assert_eq!((chain.as_str(), index, kind), ("gw-b", 4, PgBreakKind::Modified));
    db.tamper(&format!("DELETE FROM \"{s}\".records WHERE chain_id = 'gw-b'"))
        .await;
    db.verify().await.unwrap();

    // 2. Rewrite a record *and* its hash columns: the next record's link breaks.
    common::rewrite_row(&db.admin, &s, "gw-a", 6, "m-small", "m-evil!", "").await;
    let (chain, index, kind) = broken(db.verify().await.unwrap_err());
    assert_eq!(
        (chain.as_str(), index, kind),
        ("gw-a", 6, PgBreakKind::BrokenLink)
    );

    // 3. Swap two rows' contents: the row at 2 holds record 3's body.
    let db2 = setup().await;
    let c = db2.open("gw-c").await;
    append_n(&c, 6).await;
    c.close().await;
    let s2 = db2.schema.clone();
    db2.tamper(&format!(
        "UPDATE \"{s2}\".records SET idx = 1000 WHERE chain_id = 'gw-c' AND idx = 2; \
         UPDATE \"{s2}\".records SET idx = 2 WHERE chain_id = 'gw-c' AND idx = 3; \
         UPDATE \"{s2}\".records SET idx = 3 WHERE chain_id = 'gw-c' AND idx = 1000"
    ))
    .await;
    let (chain, index, kind) = broken(db2.verify().await.unwrap_err());
    assert_eq!(
        (chain.as_str(), index, kind),
        ("gw-c", 2, PgBreakKind::Reordered { body_index: 3 })
    );
    db2.cleanup().await;

    // 4. Delete a row in the middle.
    let db3 = setup().await;
    let d = db3.open("gw-d").await;
    append_n(&d, 6).await;
    d.close().await;
    let s3 = db3.schema.clone();
    db3.tamper(&format!(
        "DELETE FROM \"{s3}\".records WHERE chain_id = 'gw-d' AND idx = 2"
    ))
    .await;
    let (chain, index, kind) = broken(db3.verify().await.unwrap_err());
    assert_eq!(
        (chain.as_str(), index, kind),
        (
            "gw-d",
            2,
            PgBreakKind::Removed {
                expected: 2,
                found: 3
            }
        )
    );
    // Deleting the first row.
    db3.tamper(&format!(
        "DELETE FROM \"{s3}\".records WHERE chain_id = 'gw-d' AND idx = 0"
    ))
    .await;
    let (_, index, kind) = broken(db3.verify().await.unwrap_err());
    assert_eq!(
        (index, kind),
        (
            0,
            PgBreakKind::Removed {
                expected: 0,
                found: 1
            }
        )
    );
    db3.cleanup().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_reveal_a_cut_tail_and_a_rewritten_history() {
    let db = setup().await;
    let store = db.open("gw-a").await;
    append_n(&store, 5).await;
    let at5 = db.verify().await.unwrap();
    append_n(&store, 3).await;
    store.close().await;
    let s = &db.schema;
    // Publish the head at size 5 (as the writer role may).
    let c = &at5.chains[0];
    db.admin
        .batch_execute(&format!(
            "SET ROLE {WRITER_ROLE}; INSERT INTO \"{s}\".checkpoints (chain_id, tree_size, root_hash, entry_hash) \
             VALUES ('gw-a', 5, '\\x{}', '\\x{}'); RESET ROLE",
            c.root, c.head_hash
        ))
        .await
        .unwrap();
    let report = db.verify().await.unwrap();
    assert_eq!((report.records, report.checkpoints), (8, 1));

    // Cutting the tail below the checkpoint is visible.
    db.tamper(&format!("DELETE FROM \"{s}\".records WHERE idx >= 4"))
        .await;
    let (chain, index, kind) = broken(db.verify().await.unwrap_err());
    assert_eq!(
        (chain.as_str(), index, kind),
        (
            "gw-a",
            4,
            PgBreakKind::Truncated {
                checkpoint_size: 5,
                records: 4
            }
        )
    );
    // So is a consistently rewritten history (a whole new chain under the old id).
    db.tamper(&format!("DELETE FROM \"{s}\".records")).await;
    let store = db.open("gw-a").await;
    append_n(&store, 6).await;
    store.close().await;
    let (_, index, kind) = broken(db.verify().await.unwrap_err());
    assert_eq!(
        (index, kind),
        (4, PgBreakKind::CheckpointMismatch { tree_size: 5 })
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_continues_the_chain() {
    let db = setup().await;
    let store = db.open("gw-a").await;
    assert_eq!(append_n(&store, 10).await, (0..10).collect::<Vec<_>>());
    drop(store);
    let store = db.open("gw-a").await;
    assert_eq!(append_n(&store, 10).await, (10..20).collect::<Vec<_>>());
    store.close().await;
    let store = db.open("gw-a").await;
    assert_eq!(append_n(&store, 1).await, vec![20]);
    store.close().await;
    let report = db.verify().await.unwrap();
    assert_eq!(report.records, 21);
    assert_eq!(report.chains.len(), 1);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_head_refuses_to_open() {
    let db = setup().await;
    let store = db.open("gw-a").await;
    append_n(&store, 3).await;
    store.close().await;
    let s = &db.schema;
    db.tamper(&format!(
        "UPDATE \"{s}\".records SET body = convert_to(replace(convert_from(body, 'UTF8'), 'm-small', 'm-large'), 'UTF8') WHERE idx = 2"
    ))
    .await;
    let err = PgStore::open(db.opts("gw-a")).await.unwrap_err();
    assert!(
        matches!(err, cordon_audit_pg::PgError::CorruptHead { index: 2, .. }),
        "{err}"
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_error_fails_the_batch_and_the_writer_recovers() {
    let db = setup().await;
    let s = &db.schema;
    let store = db.open("gw-a").await;
    append_n(&store, 2).await;
    db.admin
        .batch_execute(&format!("REVOKE INSERT ON \"{s}\".records FROM {WRITER_ROLE}"))
        .await
        .unwrap();
    let err = store.append(&sample(9)).unwrap().await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, cordon_audit::AuditError::Io { .. }), "{msg}");
    assert!(msg.contains("42501"), "{msg}");
    assert!(store.check_writable().is_err());
    db.admin
        .batch_execute(&format!("GRANT INSERT ON \"{s}\".records TO {WRITER_ROLE}"))
        .await
        .unwrap();
    // The failed record was never written; the chain goes on from the reloaded head.
    assert_eq!(store.append(&sample(10)).unwrap().await.unwrap(), 2);
    store.check_writable().unwrap();

    // The connection killed under the writer: at most the next batch fails, then it reconnects.
    db.admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = current_user AND pid <> pg_backend_pid() AND query LIKE 'COPY \"{s}\"%'"
        ))
        .await
        .unwrap();
    let mut ok = 0;
    for i in 0..5 {
        match store.append(&sample(20 + i)).unwrap().await {
            Ok(_) => ok += 1,
            Err(e) => eprintln!("after terminate: {e}"),
        }
    }
    assert!(ok >= 4);
    assert_eq!(store.stats().failed_batches, 1 + (5 - ok));
    store.close().await;
    db.verify().await.unwrap();
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_hashes_match_the_file_store_byte_for_byte() {
    let db = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let file = FileStore::open(dir.path(), StoreOptions::default()).unwrap();
    let pg = db.open("gw-a").await;
    for i in 0..5 {
        let r = sample(i);
        assert_eq!(file.append(&r).unwrap().await.unwrap(), i);
        assert_eq!(pg.append(&r).unwrap().await.unwrap(), i);
    }
    drop(file);
    pg.close().await;
    // Segment frames: [u32 LE len][u32 LE crc32c][body].
    let seg = std::fs::read(dir.path().join(format!("{:020}.log", 0))).unwrap();
    let mut file_bodies = Vec::new();
    let mut pos = 0;
    while pos < seg.len() {
        let len = u32::from_le_bytes(seg[pos..pos + 4].try_into().unwrap()) as usize;
        file_bodies.push(seg[pos + 8..pos + 8 + len].to_vec());
        pos += 8 + len;
    }
    let rows = db
        .admin
        .query(
            &format!("SELECT body FROM \"{}\".records ORDER BY idx", db.schema),
            &[],
        )
        .await
        .unwrap();
    let pg_bodies: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(pg_bodies, file_bodies);
    let file_report = cordon_audit::verify_store(dir.path()).unwrap();
    let pg_report = db.verify().await.unwrap();
    assert_eq!(pg_report.chains[0].head_hash, file_report.head_hash);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_url_reads_store_urls_and_never_shows_the_password() {
    let db = setup().await;
    let store = db.open("gw-a").await;
    append_n(&store, 2).await;
    store.close().await;
    let host = match &db.config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        #[allow(unreachable_patterns)]
        _ => "127.0.0.1".to_string(),
    };
    let port = db.config.get_ports().first().copied().unwrap_or(5432);
    let user = db.config.get_user().unwrap_or("postgres");
    let dbname = db.config.get_dbname().unwrap_or("test");
    // Trust authentication ignores the password; it must still never be shown.
    let url = format!(
        "postgres://{user}:hunter2-secret@{host}:{port}/{dbname}?schema={}&connect_timeout=5",
        db.schema
    );
    let report = verify_url(&url).await.unwrap();
    assert_eq!(report.records, 2);
    let shown = report.to_string();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains(&db.schema), "{shown}");
    // Errors neither.
    let missing =
        format!("postgres://{user}:hunter2-secret@{host}:{port}/{dbname}?schema=cordon_no_such_schema_x");
    let err = verify_url(&missing).await.unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(msg.contains("42P01"), "{msg}");
    // A store writer from the same URL form.
    let parsed = cordon_audit_pg::parse_store_url(&format!("{url}&chain=gw-b")).unwrap();
    let store = PgStore::open(PgStoreOptions::from_url(&parsed, "unused"))
        .await
        .unwrap();
    assert_eq!(store.chain_id(), "gw-b");
    assert!(!store.describe().contains("hunter2"));
    append_n(&store, 1).await;
    store.close().await;
    assert_eq!(verify_url(&url).await.unwrap().chains.len(), 2);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_fails_cleanly_when_the_database_is_unreachable() {
    let config = Config::from_str(
        "host=127.0.0.1 port=1 user=postgres password=pw-secret dbname=test connect_timeout=2",
    )
    .unwrap();
    let err = PgStore::open(PgStoreOptions::new(config, "cordon_x", "gw-a"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains("pw-secret"), "{msg}");
    assert!(msg.contains("cannot connect"), "{msg}");
}

/// TLS against this machine's PostgreSQL (Debian's `ssl = on`, with its self-signed certificate
/// for `localhost`): `sslmode=require` with that certificate as `sslrootcert` writes and verifies
/// over TLS; another issuer's root, or a host name the certificate does not name, is refused:
/// never a silent fallback to plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_are_verified_and_never_fall_back_to_plaintext() {
    let db = setup().await;
    let setting = |name: &'static str| {
        let admin = &db.admin;
        async move {
            let row = admin.query_one(&format!("SHOW {name}"), &[]).await.unwrap();
            row.get::<_, String>(0)
        }
    };
    assert_eq!(
        setting("ssl").await,
        "on",
        "the test database offers no TLS (ssl = off), so this test cannot check it"
    );
    let cert = setting("ssl_cert_file").await;
    let user = db.config.get_user().unwrap_or("postgres").to_string();
    let dbname = db.config.get_dbname().unwrap_or("test").to_string();
    let port = db.config.get_ports().first().copied().unwrap_or(5432);
    let url = |host: &str, extra: &str| {
        format!(
            "postgres://{user}@{host}:{port}/{dbname}?schema={}&sslmode=require{extra}",
            db.schema
        )
    };
    let good = url("localhost", &format!("&sslrootcert={cert}"));
    let parsed = cordon_audit_pg::parse_store_url(&good).unwrap();
    let client = cordon_audit_pg::connect(&parsed.config, &parsed.tls)
        .await
        .unwrap();
    let on_tls: bool = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(on_tls, "connected, but not over TLS");

    // The store's own pool and verification go over the same TLS.
    let store = PgStore::open(PgStoreOptions::from_url(&parsed, "gw-tls"))
        .await
        .unwrap();
    assert_eq!(append_n(&store, 3).await.len(), 3);
    drop(store);
    let report = verify_url(&good).await.unwrap();
    assert_eq!(report.records, 3);

    // A certificate for `localhost` from another issuer (made here with the openssl CLI) is not
    // a root for the server's; and the server's certificate does not name 127.0.0.1.
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("other-ca.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-subj", "/CN=localhost", "-days", "1", "-keyout"])
        .arg(tmp.path().join("other-key.pem"))
        .arg("-out")
        .arg(&other)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    for bad in [
        url("localhost", &format!("&sslrootcert={}", other.display())),
        url("127.0.0.1", &format!("&sslrootcert={cert}")),
    ] {
        let parsed = cordon_audit_pg::parse_store_url(&bad).unwrap();
        let err = cordon_audit_pg::connect(&parsed.config, &parsed.tls)
            .await
            .err()
            .unwrap_or_else(|| panic!("connected without a valid certificate: {bad}"));
        assert!(
            err.to_string().to_lowercase().contains("certificate"),
            "{bad}: {err}"
        );
    }
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writer_per_chain() {
    let db = setup().await;
    let first = db.open("gw-a").await;
    append_n(&first, 2).await;
    // A second gateway configured with the same chain id is refused, clearly, while the first writes.
    let mut second = db.opts("gw-a");
    second.lock_wait = std::time::Duration::from_millis(500);
    let err = PgStore::open(second).await.unwrap_err();
    assert!(
        matches!(err, cordon_audit_pg::PgError::ChainInUse { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("locked by another writer"), "{err}");
    // Another chain id is fine, and once the first writer is gone the chain can be taken over.
    let other = db.open("gw-b").await;
    append_n(&other, 1).await;
    other.close().await;
    first.close().await;
    let second = db.open("gw-a").await;
    assert_eq!(append_n(&second, 1).await, vec![2]);
    second.close().await;
    db.verify().await.unwrap();
    db.cleanup().await;
}

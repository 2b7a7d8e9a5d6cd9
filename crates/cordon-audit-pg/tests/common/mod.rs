//! Shared by the PostgreSQL test files: the connection to the real server and a fresh schema per
//! test.

#![allow(dead_code)]

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cordon_audit_pg::{PgBreakKind, PgStore, PgVerifyError, migrate};
use tokio_postgres::{Client, Config, NoTls};

/// `CORDON_TEST_PG`, default `host=127.0.0.1 port=5432 user=postgres dbname=test` (a superuser).
pub fn conn_str() -> String {
    std::env::var("CORDON_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".to_string())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// An administrator connection and a new, migrated schema `<prefix>_<pid>_<nanos>_<n>`.
pub async fn fresh_schema(prefix: &str) -> (Client, Config, String) {
    let config = Config::from_str(&conn_str()).expect("CORDON_TEST_PG");
    let (admin, conn) = config.connect(NoTls).await.expect("connect to the test database");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let schema = format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    migrate(&admin, &schema).await.expect("migrate");
    (admin, config, schema)
}

/// (chain, index, kind) of a verification that found a bad row.
pub fn broken(e: PgVerifyError) -> (String, u64, PgBreakKind) {
    match e {
        PgVerifyError::Broken {
            chain_id,
            index,
            kind,
            ..
        } => (chain_id, index, kind),
        other => panic!("expected a broken row, got {other}"),
    }
}

/// As superuser, with every append-only trigger off: what a rogue administrator can do.
pub async fn tamper(admin: &Client, schema: &str, sql: &str) {
    let tables = ["records", "checkpoints", "chain_keys", "markers"];
    let switch = |on: &str| -> String {
        tables
            .iter()
            .map(|t| format!("ALTER TABLE \"{schema}\".{t} {on} TRIGGER USER;"))
            .collect()
    };
    admin
        .batch_execute(&format!("{} {sql}; {}", switch("DISABLE"), switch("ENABLE")))
        .await
        .expect("tamper");
}

/// Append `n` sample decisions one after another; their indices.
pub async fn append_n(store: &PgStore, n: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(
            store
                .append(&cordon_audit::testing::sample_decision(i))
                .unwrap()
                .await
                .unwrap(),
        );
    }
    out
}

/// Drop a test's schema.
pub async fn drop_schema(admin: &Client, schema: &str) {
    admin
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .expect("drop schema");
}

/// As the writer role (no key, no UPDATE/DELETE): append one well-linked row with a sample
/// decision to `chain` after its last row, whose entry hash is `head_hex`. What anyone holding
/// the role can do while the gateway is stopped.
pub async fn insert_linked_row(admin: &Client, schema: &str, chain: &str, idx: u64, head_hex: &str) {
    let prev: [u8; 32] = hex::decode(head_hex).unwrap().try_into().unwrap();
    let rec = cordon_audit::testing::sample_decision(9_999).to_json().unwrap();
    let mut body = Vec::new();
    cordon_audit::body::append_body(&mut body, idx, &prev, &rec);
    let (entry, leaf) = cordon_audit_pg::entry_and_leaf_hash(&prev, &body);
    admin
        .batch_execute(&format!(
            "SET ROLE {role}; INSERT INTO \"{schema}\".records (chain_id, idx, body, entry_hash, leaf_hash) \
             VALUES ('{chain}', {idx}, '\\x{}', '\\x{}', '\\x{}'); RESET ROLE",
            hex::encode(&body),
            hex::encode(entry),
            hex::encode(leaf),
            role = cordon_audit_pg::WRITER_ROLE,
        ))
        .await
        .expect("insert a linked row as the writer role");
}

/// As a rogue administrator: rewrite row `idx` of `chain` (its body's `from` replaced by `to`)
/// with its entry and leaf hashes recomputed, so the row itself checks out; `extra_sql` runs in
/// the same tampering session.
pub async fn rewrite_row(
    admin: &Client,
    schema: &str,
    chain: &str,
    idx: u64,
    from: &str,
    to: &str,
    extra_sql: &str,
) {
    let row = admin
        .query_one(
            &format!("SELECT body FROM \"{schema}\".records WHERE chain_id = '{chain}' AND idx = {idx}"),
            &[],
        )
        .await
        .expect("the row to rewrite");
    let text = String::from_utf8(row.get::<_, Vec<u8>>(0))
        .unwrap()
        .replace(from, to);
    let prev_hex = &text[text.find("\"prev\":\"").unwrap() + 8..][..64];
    let prev: [u8; 32] = hex::decode(prev_hex).unwrap().try_into().unwrap();
    let (e, l) = cordon_audit_pg::entry_and_leaf_hash(&prev, text.as_bytes());
    tamper(
        admin,
        schema,
        &format!(
            "UPDATE \"{schema}\".records SET body = '\\x{}'::bytea, entry_hash = '\\x{}'::bytea, \
             leaf_hash = '\\x{}'::bytea WHERE chain_id = '{chain}' AND idx = {idx}; {extra_sql}",
            hex::encode(text.as_bytes()),
            hex::encode(e),
            hex::encode(l)
        ),
    )
    .await;
}

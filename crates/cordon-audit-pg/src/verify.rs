//! Verification of a PostgreSQL store: every chain read in index order inside one
//! `REPEATABLE READ READ ONLY` transaction (a consistent snapshot across chains and checkpoints).
//!
//! Per row: the index is the next one expected (from 0), the body is a record envelope naming
//! that same index, the stored `entry_hash` and `leaf_hash` are those of the body, the body's
//! `prev` is the entry hash of the row before, and the record parses. Per chain: the RFC 6962
//! root and head at every size named in `checkpoints` equal the checkpoint's, and no checkpoint
//! is longer than the chain. The first bad row stops verification and is named (chain, index,
//! [`PgBreakKind`]).
//!
//! Leaf order for the store-wide root ([`PgVerifyReport::root`]): chains in ascending byte order
//! of `chain_id`, and within a chain ascending `idx`. That root describes one snapshot; it is
//! not an append-only tree across time (a later record of chain `a` sorts before chain `b`), so
//! consistency over time is per chain: each chain is its own append-only RFC 6962 tree
//! ([`PgChainReport::root`]), which is what `checkpoints` records.
//!
//! Without checkpoints, dropping the *last* records of a chain (or a whole chain) leaves a valid
//! shorter store: compare heads with ones published elsewhere.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use cordon_audit::Record;
use cordon_audit::merkle::Frontier;
use futures_util::TryStreamExt;

use crate::body;
use crate::error::PgError;
use crate::url::{checked_ident, parse_store_url, redact_config};

/// What is wrong at the named row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgBreakKind {
    #[error("modified: the body does not match the row's stored entry/leaf hash")]
    Modified,
    #[error(
        "hash chain broken: the body's prev is not the entry hash of the record before it \
         (that record was rewritten along with its hashes, or this link was)"
    )]
    BrokenLink,
    #[error("removed: expected record {expected}, the next row is {found}")]
    Removed { expected: u64, found: u64 },
    #[error("reordered: the row at this index holds the body of record {body_index}")]
    Reordered { body_index: u64 },
    #[error("not a record body (the envelope was altered)")]
    BadBody,
    #[error("not a valid record: {detail}")]
    BadRecord { detail: String },
    #[error("truncated: a checkpoint covers {checkpoint_size} records, the chain has {records}")]
    Truncated { checkpoint_size: u64, records: u64 },
    #[error(
        "checkpoint mismatch: the first {tree_size} records do not hash to the checkpoint's root and head"
    )]
    CheckpointMismatch { tree_size: u64 },
}

/// Verification failed: the store could not be read, or the first bad row.
#[derive(Debug, thiserror::Error)]
pub enum PgVerifyError {
    #[error(transparent)]
    Store(#[from] PgError),
    #[error("audit store {store}: chain {chain_id} record {index}: {kind}")]
    Broken {
        store: String,
        chain_id: String,
        index: u64,
        kind: PgBreakKind,
    },
}

impl PgVerifyError {
    pub fn kind(&self) -> Option<&PgBreakKind> {
        match self {
            PgVerifyError::Broken { kind, .. } => Some(kind),
            PgVerifyError::Store(_) => None,
        }
    }

    /// (chain id, index) of the first bad row.
    pub fn location(&self) -> Option<(&str, u64)> {
        match self {
            PgVerifyError::Broken { chain_id, index, .. } => Some((chain_id, *index)),
            PgVerifyError::Store(_) => None,
        }
    }
}

/// One chain that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgChainReport {
    pub chain_id: String,
    pub records: u64,
    /// Hex entry hash of the last record (64 zeros for none).
    pub head_hash: String,
    /// Hex RFC 6962 root of the chain's leaves in index order.
    pub root: String,
}

/// What a successful verification saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgVerifyReport {
    /// The store, without password.
    pub store: String,
    pub records: u64,
    pub decisions: u64,
    pub completions: u64,
    /// Chains in ascending byte order of their id.
    pub chains: Vec<PgChainReport>,
    /// Checkpoint rows checked.
    pub checkpoints: u64,
    /// Hex RFC 6962 root over every leaf, ordered by (chain_id bytes, idx); see the module docs.
    pub root: String,
    /// Decisions about a (pseudonymous) subject, by the subject's jurisdiction (`-`: none given),
    /// so that a caller can check they all sit in their own jurisdiction's store.
    pub subject_jurisdictions: BTreeMap<String, u64>,
}

impl fmt::Display for PgVerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "audit store {}: OK", self.store)?;
        writeln!(
            f,
            "  {} records ({} decisions, {} completions) in {} chain(s); {} checkpoint(s) matched",
            self.records,
            self.decisions,
            self.completions,
            self.chains.len(),
            self.checkpoints
        )?;
        for c in &self.chains {
            writeln!(
                f,
                "  chain {}: {} records, head {}, root {}",
                c.chain_id, c.records, c.head_hash, c.root
            )?;
        }
        write!(
            f,
            "  root over all chains (leaves by chain_id, idx): {}",
            self.root
        )
    }
}

/// Verify the store in `schema` reached with `conn_str` (a `key=value` connection string or a
/// `postgres://` URL without Cordon's query parameters).
pub async fn verify(conn_str: &str, schema: &str) -> Result<PgVerifyReport, PgVerifyError> {
    let config = tokio_postgres::Config::from_str(conn_str)
        .map_err(|_| PgError::Url("not a valid PostgreSQL connection string".into()))?;
    verify_config(&config, schema).await
}

/// Verify the store a `postgres://...?schema=S` URL names (for `cordon audit verify --store`).
pub async fn verify_url(url: &str) -> Result<PgVerifyReport, PgVerifyError> {
    let u = parse_store_url(url)?;
    verify_with(&u.config, &u.tls, &u.schema).await
}

/// Verify the store in `schema` reached with `config`, with the TLS its `sslmode` asks for
/// ([`crate::Tls::for_config`]).
pub async fn verify_config(
    config: &tokio_postgres::Config,
    schema: &str,
) -> Result<PgVerifyReport, PgVerifyError> {
    verify_with(config, &crate::Tls::for_config(config), schema).await
}

/// Verify the store in `schema` reached with `config` and `tls`.
pub async fn verify_with(
    config: &tokio_postgres::Config,
    tls: &crate::Tls,
    schema: &str,
) -> Result<PgVerifyReport, PgVerifyError> {
    let s = checked_ident("schema", schema)?.to_string();
    let store = format!("{}?schema={s}", redact_config(config));
    let mut client = crate::tls::connect(config, tls).await.map_err(|e| match e {
        PgError::Connect { cause, .. } => PgError::Connect {
            store: store.clone(),
            cause,
        },
        other => other,
    })?;
    verify_in(&mut client, &s, &store).await
}

type Checkpoint = (u64, Vec<u8>, Vec<u8>);

async fn verify_in(
    client: &mut tokio_postgres::Client,
    s: &str,
    store: &str,
) -> Result<PgVerifyReport, PgVerifyError> {
    let db = |op: &'static str| PgError::db(store, op);
    let txn = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db("begin"))?;

    let mut checkpoints: BTreeMap<Vec<u8>, Vec<Checkpoint>> = BTreeMap::new();
    let rows = txn
        .query(
            &format!(
                "SELECT chain_id, tree_size, root_hash, entry_hash FROM \"{s}\".checkpoints ORDER BY chain_id, tree_size"
            ),
            &[],
        )
        .await
        .map_err(db("read checkpoints"))?;
    for row in rows {
        let chain: String = row.try_get(0).map_err(db("read checkpoints"))?;
        let size: i64 = row.try_get(1).map_err(db("read checkpoints"))?;
        let root: Vec<u8> = row.try_get(2).map_err(db("read checkpoints"))?;
        let head: Vec<u8> = row.try_get(3).map_err(db("read checkpoints"))?;
        checkpoints
            .entry(chain.into_bytes())
            .or_default()
            .push((size.max(0) as u64, root, head));
    }

    // Chain ids from both tables, in byte order (independent of the database collation).
    let mut chain_ids: BTreeMap<Vec<u8>, ()> = checkpoints.keys().map(|k| (k.clone(), ())).collect();
    let rows = txn
        .query(&format!("SELECT DISTINCT chain_id FROM \"{s}\".records"), &[])
        .await
        .map_err(db("list chains"))?;
    for row in rows {
        let chain: String = row.try_get(0).map_err(db("list chains"))?;
        chain_ids.insert(chain.into_bytes(), ());
    }

    let stmt = txn
        .prepare(&format!(
            "SELECT idx, body, entry_hash, leaf_hash FROM \"{s}\".records WHERE chain_id = $1 ORDER BY idx"
        ))
        .await
        .map_err(db("read records"))?;

    let mut report = PgVerifyReport {
        store: store.to_string(),
        records: 0,
        decisions: 0,
        completions: 0,
        chains: Vec::new(),
        checkpoints: 0,
        root: String::new(),
        subject_jurisdictions: BTreeMap::new(),
    };
    let mut all = Frontier::default();
    for chain_bytes in chain_ids.keys() {
        // Built from Strings above.
        let chain_id = String::from_utf8_lossy(chain_bytes).into_owned();
        let broken = |index: u64, kind: PgBreakKind| PgVerifyError::Broken {
            store: store.to_string(),
            chain_id: chain_id.clone(),
            index,
            kind,
        };
        let cps = checkpoints.get(chain_bytes).map(Vec::as_slice).unwrap_or(&[]);
        let mut cp_iter = cps.iter().peekable();
        let mut tree = Frontier::default();
        let mut expected: u64 = 0;
        let mut head = body::ZERO_HASH;
        let stream = txn
            .query_raw(&stmt, [&chain_id])
            .await
            .map_err(db("read records"))?;
        let mut stream = std::pin::pin!(stream);
        while let Some(row) = stream.try_next().await.map_err(db("read records"))? {
            let idx: i64 = row.try_get(0).map_err(db("read records"))?;
            let body: &[u8] = row.try_get(1).map_err(db("read records"))?;
            let stored_entry: &[u8] = row.try_get(2).map_err(db("read records"))?;
            let stored_leaf: &[u8] = row.try_get(3).map_err(db("read records"))?;
            let idx = u64::try_from(idx).unwrap_or(u64::MAX);
            if idx != expected {
                return Err(broken(expected, PgBreakKind::Removed { expected, found: idx }));
            }
            let env = body::parse_body(body).ok_or_else(|| broken(expected, PgBreakKind::BadBody))?;
            if env.index != expected {
                return Err(broken(
                    expected,
                    PgBreakKind::Reordered {
                        body_index: env.index,
                    },
                ));
            }
            let (entry, leaf) = body::entry_and_leaf_hash(&env.prev, body);
            if stored_entry != entry || stored_leaf != leaf {
                return Err(broken(expected, PgBreakKind::Modified));
            }
            if env.prev != head {
                return Err(broken(expected, PgBreakKind::BrokenLink));
            }
            let rec: Record = serde_json::from_slice(env.rec).map_err(|e| {
                broken(
                    expected,
                    PgBreakKind::BadRecord {
                        detail: format!(
                            "{:?} error at line {} column {}",
                            e.classify(),
                            e.line(),
                            e.column()
                        ),
                    },
                )
            })?;
            match rec {
                Record::Decision(d) => {
                    report.decisions += 1;
                    if d.subject.is_some() {
                        let j = d.data_subject_jurisdiction.unwrap_or_else(|| "-".into());
                        *report.subject_jurisdictions.entry(j).or_default() += 1;
                    }
                }
                Record::Completion(_) => report.completions += 1,
            }
            head = entry;
            tree.push_hash(leaf);
            all.push_hash(leaf);
            expected += 1;
            while let Some((size, root, cp_head)) = cp_iter.peek() {
                if *size > expected {
                    break;
                }
                // Sizes are ascending and every size <= expected was reached exactly here.
                if *size == expected && (root.as_slice() != tree.root() || cp_head.as_slice() != head) {
                    return Err(broken(
                        expected - 1,
                        PgBreakKind::CheckpointMismatch { tree_size: *size },
                    ));
                }
                report.checkpoints += 1;
                cp_iter.next();
            }
        }
        if let Some((size, _, _)) = cp_iter.next() {
            return Err(broken(
                expected,
                PgBreakKind::Truncated {
                    checkpoint_size: *size,
                    records: expected,
                },
            ));
        }
        report.records += expected;
        report.chains.push(PgChainReport {
            chain_id,
            records: expected,
            head_hash: hex::encode(head),
            root: hex::encode(tree.root()),
        });
    }
    report.root = hex::encode(all.root());
    txn.commit().await.map_err(db("commit"))?;
    Ok(report)
}

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
//! Signed checkpoints (the `note` column, written by a writer with
//! [`crate::PgCheckpointOptions`]) must verify with the chain's key (`chain_keys`) and agree with
//! their row. The table alone cannot reveal its own rewrite: whoever owns the database can drop
//! the *last* records of a chain (or a whole chain) together with their checkpoint rows, leaving a
//! valid shorter store. [`verify_with_published`] closes that: every checkpoint published under
//! `<target>/<chain id>/` must be matched by the chain (a chain shorter than one is
//! [`PgBreakKind::Truncated`], one that hashes otherwise [`PgBreakKind::CheckpointMismatch`]),
//! and the target's `checkpoint.vkey` is the key the chain's checkpoints must verify with.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cordon_audit::checkpoint::Checkpoint;
use cordon_audit::note::NoteVerifier;

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
    /// Reported at the first row that may be bad: the next row's link is not this row's entry
    /// hash (or, at index 0, its own link is not zero).
    #[error(
        "hash chain broken after this record: the next record's prev is not this record's entry \
         hash (this record was rewritten along with its hashes, or the next one's link was)"
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
    #[error(
        "truncated: a signed checkpoint or marker covers {checkpoint_size} records, the chain has {records}"
    )]
    Truncated { checkpoint_size: u64, records: u64 },
    #[error(
        "checkpoint mismatch: the first {tree_size} records do not hash to the checkpoint's root and head"
    )]
    CheckpointMismatch { tree_size: u64 },
    /// A signed checkpoint (in the table or published) that does not verify with the chain's key,
    /// disagrees with its row, or a chain whose key differs between the table and a target.
    #[error("bad checkpoint: {detail}")]
    BadCheckpoint { detail: String },
    /// Rows after the chain's signed close marker (a clean stop) with no open marker after it:
    /// inserted while its writer was stopped, by someone without its key.
    #[error(
        "forged: the chain was closed cleanly at {closed_at} records ({marker}) but holds {found}; \
         records {closed_at}.. were inserted while its writer was stopped"
    )]
    Forged {
        closed_at: u64,
        found: u64,
        marker: String,
    },
    /// A close/open marker that does not verify with the chain's key, or disagrees with another.
    #[error("bad close/open marker: {detail}")]
    BadMarker { detail: String },
}

/// Verification failed: the store could not be read, or the first bad row.
#[derive(Debug, thiserror::Error)]
pub enum PgVerifyError {
    #[error(transparent)]
    Store(#[from] PgError),
    /// A publication target could not be read, or holds something that is not a chain's.
    #[error("audit store {store}: publication target {}: {cause}", path.display())]
    Published {
        store: String,
        path: PathBuf,
        cause: String,
    },
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
            _ => None,
        }
    }

    /// (chain id, index) of the first bad row.
    pub fn location(&self) -> Option<(&str, u64)> {
        match self {
            PgVerifyError::Broken { chain_id, index, .. } => Some((chain_id, *index)),
            _ => None,
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
    /// Of those, rows whose signed note verified with the chain's key.
    pub signed: u64,
    /// Published checkpoint files (in the publication targets) checked.
    pub published: u64,
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
            "  {} records ({} decisions, {} completions) in {} chain(s); {} checkpoint(s) matched ({} signed), {} published checkpoint(s) matched",
            self.records,
            self.decisions,
            self.completions,
            self.chains.len(),
            self.checkpoints,
            self.signed,
            self.published
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
            "  root over all chains (leaves by chain_id, idx; computed here, not signed): {}",
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
    verify_url_with_published(url, &[]).await
}

/// [`verify_url`], and every chain against the checkpoints published in `published` (the
/// stores' publication targets, each holding `<chain id>/`).
pub async fn verify_url_with_published(
    url: &str,
    published: &[PathBuf],
) -> Result<PgVerifyReport, PgVerifyError> {
    verify_url_with_progress(url, published, None).await
}

/// [`verify_url_with_published`], calling `progress` now and then with (rows verified, rows in
/// the store).
pub async fn verify_url_with_progress(
    url: &str,
    published: &[PathBuf],
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<PgVerifyReport, PgVerifyError> {
    let u = parse_store_url(url)?;
    verify_with_progress(&u.config, &u.tls, &u.schema, published, progress).await
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
    verify_with_published(config, tls, schema, &[]).await
}

/// Verify the store in `schema` reached with `config` and `tls`, and each chain against the
/// signed checkpoints published under `published/<chain id>/`: a published checkpoint the chain
/// is shorter than (records, or a whole chain, removed along with the table's checkpoints) or
/// does not hash to is named; their `checkpoint.vkey` is the key every signed checkpoint of the
/// chain must verify with.
pub async fn verify_with_published(
    config: &tokio_postgres::Config,
    tls: &crate::Tls,
    schema: &str,
    published: &[PathBuf],
) -> Result<PgVerifyReport, PgVerifyError> {
    verify_with_progress(config, tls, schema, published, None).await
}

/// [`verify_with_published`], calling `progress` now and then with (rows verified, rows in the
/// store).
pub async fn verify_with_progress(
    config: &tokio_postgres::Config,
    tls: &crate::Tls,
    schema: &str,
    published: &[PathBuf],
    progress: Option<&dyn Fn(u64, u64)>,
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
    let targets = read_targets(published, &store)?;
    verify_in(&mut client, &s, &store, targets, published, progress).await
}

/// A `checkpoints` row: (tree size, root, head, signed note).
type TableRow = (u64, Vec<u8>, Vec<u8>, Option<String>);

/// One claim about a chain's tree: its root at `size`, and the head when the table gave it.
struct Claim {
    size: u64,
    root: Vec<u8>,
    head: Option<Vec<u8>>,
    published: bool,
    /// A close/open marker's claim (checked like a checkpoint's, not counted as one).
    marker: bool,
}

/// What the publication targets hold, by chain id bytes: (verifier key, signed notes).
type Targets = BTreeMap<Vec<u8>, (Option<(PathBuf, String)>, Vec<(Option<u64>, PathBuf, Vec<u8>)>)>;

fn read_targets(dirs: &[PathBuf], store: &str) -> Result<Targets, PgVerifyError> {
    let io = |path: &Path, e: std::io::Error| PgVerifyError::Published {
        store: store.to_string(),
        path: path.to_path_buf(),
        cause: e.to_string(),
    };
    let bad = |path: &Path, why: &str| io(path, std::io::Error::other(why.to_string()));
    let mut out = Targets::new();
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(|e| io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io(dir, e))?;
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let p = cordon_audit::read_published(&path).map_err(|e| io(&path, e))?;
            let listed = path.join("checkpoints").is_dir();
            if p.vkey.is_none() && p.notes.is_empty() && !listed {
                continue; // not a chain's directory (e.g. lost+found)
            }
            // Every chain directory counts, whatever its name: one that no chain id could have
            // produced is an error, never skipped.
            let chain = entry
                .file_name()
                .to_str()
                .filter(|c| crate::url::checked_chain_id(c).is_ok())
                .map(str::to_string)
                .ok_or_else(|| bad(&path, "holds checkpoints but is not named for a chain id"))?;
            let slot = out.entry(chain.into_bytes()).or_default();
            if let Some(v) = p.vkey {
                match &slot.0 {
                    Some((_, known)) if known.trim_end() != v.trim_end() => {
                        return Err(bad(&path, "names another key than the other targets"));
                    }
                    _ => slot.0 = Some((path.join("checkpoint.vkey"), v)),
                }
            }
            slot.1.extend(p.notes);
        }
    }
    Ok(out)
}

async fn verify_in(
    client: &mut tokio_postgres::Client,
    s: &str,
    store: &str,
    mut targets: Targets,
    published_dirs: &[PathBuf],
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<PgVerifyReport, PgVerifyError> {
    let published_required = !published_dirs.is_empty();
    let db = |op: &'static str| PgError::db(store, op);
    let txn = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db("begin"))?;

    // Stores made before signed checkpoints have neither `checkpoints.note` nor `chain_keys`.
    let has_notes = txn
        .query_opt(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'checkpoints' AND column_name = 'note'",
            &[&s],
        )
        .await
        .map_err(db("read schema"))?
        .is_some();
    let mut keys: BTreeMap<Vec<u8>, String> = BTreeMap::new();
    if has_notes {
        let rows = txn
            .query(&format!("SELECT chain_id, vkey FROM \"{s}\".chain_keys"), &[])
            .await
            .map_err(db("read chain keys"))?;
        for row in rows {
            let chain: String = row.try_get(0).map_err(db("read chain keys"))?;
            let vkey: String = row.try_get(1).map_err(db("read chain keys"))?;
            keys.insert(chain.into_bytes(), vkey);
        }
    }
    // Close/open markers (a schema from before them has no table): (seq, note) by chain.
    // pg_tables lists a table whatever the verifying role may do with it (information_schema
    // would hide one it has no rights on, and its markers would be skipped silently).
    let has_markers = txn
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = 'markers'",
            &[&s],
        )
        .await
        .map_err(db("read schema"))?
        .is_some();
    let mut marker_rows: BTreeMap<Vec<u8>, Vec<(i64, String)>> = BTreeMap::new();
    if has_markers {
        let rows = txn
            .query(
                &format!("SELECT chain_id, seq, note FROM \"{s}\".markers ORDER BY chain_id, seq"),
                &[],
            )
            .await
            .map_err(db("read markers"))?;
        for row in rows {
            let chain: String = row.try_get(0).map_err(db("read markers"))?;
            let seq: i64 = row.try_get(1).map_err(db("read markers"))?;
            let note: String = row.try_get(2).map_err(db("read markers"))?;
            marker_rows
                .entry(chain.into_bytes())
                .or_default()
                .push((seq, note));
        }
    }
    let mut checkpoints: BTreeMap<Vec<u8>, Vec<TableRow>> = BTreeMap::new();
    let note_col = if has_notes { "note" } else { "NULL::text" };
    let rows = txn
        .query(
            &format!(
                "SELECT chain_id, tree_size, root_hash, entry_hash, {note_col} FROM \"{s}\".checkpoints ORDER BY chain_id, tree_size"
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
        let note: Option<String> = row.try_get(4).map_err(db("read checkpoints"))?;
        checkpoints
            .entry(chain.into_bytes())
            .or_default()
            .push((size.max(0) as u64, root, head, note));
    }

    // Chain ids from both tables, in byte order (independent of the database collation).
    let mut chain_ids: BTreeMap<Vec<u8>, ()> = checkpoints
        .keys()
        .chain(targets.keys())
        .chain(keys.keys())
        .map(|k| (k.clone(), ()))
        .collect();
    let rows = txn
        .query(&format!("SELECT DISTINCT chain_id FROM \"{s}\".records"), &[])
        .await
        .map_err(db("list chains"))?;
    for row in rows {
        let chain: String = row.try_get(0).map_err(db("list chains"))?;
        chain_ids.insert(chain.into_bytes(), ());
    }
    // For the progress line: rows in the store (in the same snapshot), and those done so far.
    let total: u64 = match progress {
        Some(_) => txn
            .query_one(&format!("SELECT count(*) FROM \"{s}\".records"), &[])
            .await
            .map_err(db("count records"))?
            .try_get::<_, i64>(0)
            .map_err(db("count records"))?
            .max(0) as u64,
        None => 0,
    };
    let mut done: u64 = 0;

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
        signed: 0,
        published: 0,
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
        let published = targets.remove(chain_bytes).unwrap_or_default();
        let (mut claims, signed, verifier) = chain_claims(
            &chain_id,
            checkpoints.remove(chain_bytes).unwrap_or_default(),
            keys.get(chain_bytes).map(String::as_str),
            published,
        )
        .map_err(|(index, detail)| broken(index, PgBreakKind::BadCheckpoint { detail }))?;
        // Checked against publication targets, a chain with signed checkpoints must have some
        // published there (a target given at the wrong level, or never written to, would check
        // nothing otherwise). A chain whose first checkpoint is not cut yet has none to publish.
        if published_required && signed > 0 && !claims.iter().any(|c| c.published) {
            return Err(broken(
                0,
                PgBreakKind::BadCheckpoint {
                    detail: "the chain signs checkpoints but none is published in the given targets \
                             (give the publish directory itself, which holds <chain id>/)"
                        .into(),
                },
            ));
        }
        report.signed += signed;
        // Close and open markers sign a size and root too: the chain must match them (a tail cut
        // under a published close marker is a removed tail, a rewrite a mismatch).
        let markers = chain_markers(
            &chain_id,
            marker_rows.remove(chain_bytes).unwrap_or_default(),
            verifier.as_ref(),
            published_dirs,
        )
        .map_err(|detail| broken(0, PgBreakKind::BadMarker { detail }))?;
        claims.extend(markers.iter().map(|f| Claim {
            size: f.marker.size,
            root: f.marker.root.to_vec(),
            head: None,
            published: false,
            marker: true,
        }));
        claims.sort_by_key(|c| c.size);
        let mut cp_iter = claims.iter().peekable();
        let mut tree = Frontier::default();
        let mut expected: u64 = 0;
        let mut head = body::ZERO_HASH;
        // Claims at size 0 (a marker of a chain closed or opened before its first record) are
        // about the empty tree: checked here, as the record loop below never reaches them.
        while let Some(c) = cp_iter.next_if(|c| c.size == 0) {
            if c.root.as_slice() != tree.root() {
                return Err(broken(0, PgBreakKind::CheckpointMismatch { tree_size: 0 }));
            }
        }
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
                // Reported at the first row that may be bad: the one before (its body and hashes
                // rewritten together, the usual case), unless there is none.
                return Err(broken(expected.saturating_sub(1), PgBreakKind::BrokenLink));
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
            done += 1;
            if let Some(p) = progress
                && done.is_multiple_of(65_536)
            {
                p(done, total);
            }
            while let Some(c) = cp_iter.peek() {
                if c.size > expected {
                    break;
                }
                // Sizes are ascending and every size <= expected was reached exactly here.
                let head_differs = c.head.as_ref().is_some_and(|h| h.as_slice() != head);
                if c.size == expected && (c.root.as_slice() != tree.root() || head_differs) {
                    return Err(broken(
                        expected - 1,
                        PgBreakKind::CheckpointMismatch { tree_size: c.size },
                    ));
                }
                if c.marker {
                } else if c.published {
                    report.published += 1;
                } else {
                    report.checkpoints += 1;
                }
                cp_iter.next();
            }
        }
        if let Some(c) = cp_iter.next() {
            return Err(broken(
                expected,
                PgBreakKind::Truncated {
                    checkpoint_size: c.size,
                    records: expected,
                },
            ));
        }
        if let Some((closed_at, marker)) = crate::markers::forged(&markers, expected) {
            return Err(broken(
                closed_at,
                PgBreakKind::Forged {
                    closed_at,
                    found: expected,
                    marker: marker.display().to_string(),
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
    if let Some(p) = progress {
        p(total.max(done), total.max(done));
    }
    report.root = hex::encode(all.root());
    txn.commit().await.map_err(db("commit"))?;
    Ok(report)
}

/// A chain's claims from the table and the publication targets, ascending by size, with every
/// signed note checked against the chain's key; and how many table rows carried a verified note.
/// `Err((index, why))` names the first bad one.
#[allow(clippy::type_complexity)]
fn chain_claims(
    chain_id: &str,
    rows: Vec<TableRow>,
    table_key: Option<&str>,
    (target_key, notes): (Option<(PathBuf, String)>, Vec<(Option<u64>, PathBuf, Vec<u8>)>),
) -> Result<(Vec<Claim>, u64, Option<NoteVerifier>), (u64, String)> {
    let at = |size: u64| size.saturating_sub(1);
    // The published key is the trusted one: the table's must agree with it.
    let key_text = match (&target_key, table_key) {
        (Some((path, t)), Some(k)) if t.trim_end() != k.trim_end() => {
            return Err((
                0,
                format!(
                    "chain_keys names another key for chain {chain_id} than {}",
                    path.display()
                ),
            ));
        }
        (Some((_, t)), _) => Some(t.as_str()),
        (None, k) => k,
    };
    let verifier = match key_text {
        Some(k) => Some(
            NoteVerifier::parse(k.trim_end())
                .map_err(|e| (0, format!("the chain's verifier key is not valid: {e}")))?,
        ),
        None => None,
    };
    let open = |note: &[u8], size_hint: u64| -> Result<Checkpoint, (u64, String)> {
        let Some(v) = &verifier else {
            return Err((
                at(size_hint),
                "a signed checkpoint but no verifier key for the chain".into(),
            ));
        };
        let c = Checkpoint::open(note, std::slice::from_ref(v)).map_err(|e| {
            (
                at(size_hint),
                format!("does not verify with the chain's key: {e}"),
            )
        })?;
        if c.origin != v.name() {
            return Err((at(size_hint), format!("origin {:?} is not the chain's", c.origin)));
        }
        Ok(c)
    };
    let mut claims = Vec::new();
    let mut signed = 0;
    for (size, root, head, note) in rows {
        // In a chain with a key, an unsigned row is no claim: anyone with the writer role can
        // insert one (a signing writer never does), and trusting it would let them make an
        // untouched chain look truncated. Unkeyed chains have only such rows.
        if note.is_none() && verifier.is_some() {
            continue;
        }
        if let Some(note) = note {
            let c = open(note.as_bytes(), size)
                .map_err(|(i, d)| (i, format!("table row at size {size}: {d}")))?;
            if c.size != size || c.root.as_slice() != root.as_slice() {
                return Err((
                    at(size),
                    format!(
                        "table row at size {size}: the signed note says size {} with another root",
                        c.size
                    ),
                ));
            }
            signed += 1;
        }
        claims.push(Claim {
            size,
            root,
            head: Some(head),
            published: false,
            marker: false,
        });
    }
    for (named, path, note) in notes {
        let c = open(&note, named.unwrap_or(0)).map_err(|(i, d)| (i, format!("{}: {d}", path.display())))?;
        if named.is_some_and(|n| n != c.size) {
            return Err((
                at(c.size),
                format!("{} is named for another size than its {}", path.display(), c.size),
            ));
        }
        claims.push(Claim {
            size: c.size,
            root: c.root.to_vec(),
            head: None,
            published: true,
            marker: false,
        });
    }
    claims.sort_by_key(|c| c.size);
    Ok((claims, signed, verifier))
}

/// A chain's close/open markers, from the table rows and from `<target>/<chain id>/markers/` of
/// every publication target, each verified with the chain's key and merged (`markers.rs`).
fn chain_markers(
    chain_id: &str,
    rows: Vec<(i64, String)>,
    verifier: Option<&NoteVerifier>,
    published: &[PathBuf],
) -> Result<Vec<cordon_audit::marker::Found>, String> {
    let dirs: Vec<PathBuf> = published.iter().map(|d| d.join(chain_id)).collect();
    let any_published = dirs
        .iter()
        .any(|d| d.join(cordon_audit::marker::MARKER_DIR).exists());
    if rows.is_empty() && !any_published {
        return Ok(Vec::new());
    }
    let Some(v) = verifier else {
        return Err(format!(
            "chain {chain_id} has close/open markers but no verifier key"
        ));
    };
    // A table row that does not verify is no claim (the writer role can insert any row).
    let own = crate::markers::from_rows(chain_id, rows, v).valid;
    let mut places = vec![own];
    for found in crate::markers::read_targets(&dirs, v) {
        places.push(found.map_err(|e| e.to_string())?);
    }
    cordon_audit::marker::merge(places).map_err(|e| e.to_string())
}

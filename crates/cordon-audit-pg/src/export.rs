//! Export one PostgreSQL chain as a regulator's bundle: the same bundle as a directory store's
//! (`cordon_audit::bundle`), checked offline by `cordon audit verify-bundle`. Each chain is its
//! own log with its own key and checkpoints, so a store with several gateway replicas gives one
//! bundle per chain.

use std::path::PathBuf;

use cordon_audit::Keystore;
use cordon_audit::bundle::{Bundle, BundleError, ExportBuilder, ExportFilter};
use cordon_audit::checkpoint::Checkpoint;
use futures_util::TryStreamExt;

use crate::error::PgError;
use crate::url::{checked_chain_id, checked_ident, redact_config};
use crate::verify::{PgVerifyError, verify_with_published};

/// Why a chain could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum PgExportError {
    /// The store did not verify: a damaged log is not exported.
    #[error(transparent)]
    Verify(#[from] PgVerifyError),
    #[error(transparent)]
    Store(#[from] PgError),
    #[error(
        "audit store {store}: chain {chain_id} has no signed checkpoint yet (nothing to prove records against)"
    )]
    NoCheckpoint { store: String, chain_id: String },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("proof: {0}")]
    Proof(String),
}

/// Export the records of chain `chain_id` in `schema` that match `filter` (decisions of
/// `jurisdiction`'s subjects and their completions), with inclusion proofs to the chain's newest
/// signed checkpoint. The whole store is verified first, against the checkpoints published in
/// `published` when given. `keystore` is needed only when `filter.decrypt`.
#[allow(clippy::too_many_arguments)]
pub async fn export_chain(
    config: &tokio_postgres::Config,
    tls: &crate::Tls,
    schema: &str,
    chain_id: &str,
    published: &[PathBuf],
    jurisdiction: &str,
    filter: &ExportFilter,
    keystore: Option<&Keystore>,
) -> Result<Bundle, PgExportError> {
    let chain_id = checked_chain_id(chain_id)?;
    let v = verified(config, tls, schema, published).await?;
    let len = v.verified_len(chain_id);
    let Verified {
        s, store, mut client, ..
    } = v;
    let db = |op: &'static str| PgError::db(&store, op);
    let txn = snapshot(&mut client, &store).await?;
    let (vkey, note) = key_and_newest_checkpoint(&txn, &s, &store, chain_id, published, len).await?;
    let mut builder = ExportBuilder::new(jurisdiction, filter, &vkey, &note, keystore)?;
    for_each_record(&txn, &s, &store, chain_id, len, |idx, body| {
        builder.push(idx, body);
        Ok(())
    })
    .await?;
    txn.commit().await.map_err(db("commit"))?;
    Ok(builder.finish()?)
}

/// A store that has just verified, and a connection to read it.
struct Verified {
    /// The schema (checked).
    s: String,
    /// The store, for errors (never a password).
    store: String,
    client: tokio_postgres::Client,
    report: crate::verify::PgVerifyReport,
}

impl Verified {
    /// How many records of `chain_id` verification saw: what is read afterwards stays within
    /// them (a live gateway may have appended more, not yet verified).
    fn verified_len(&self, chain_id: &str) -> u64 {
        self.report
            .chains
            .iter()
            .find(|c| c.chain_id == chain_id)
            .map_or(0, |c| c.records)
    }
}

/// Verify the store in `schema` (against `published`, when given: a damaged log is not read
/// further), then connect to read it.
async fn verified(
    config: &tokio_postgres::Config,
    tls: &crate::Tls,
    schema: &str,
    published: &[PathBuf],
) -> Result<Verified, PgExportError> {
    let s = checked_ident("schema", schema)?.to_string();
    let store = format!("{}?schema={s}", redact_config(config));
    let report = verify_with_published(config, tls, &s, published).await?;
    let client = crate::tls::connect(config, tls).await?;
    Ok(Verified {
        s,
        store,
        client,
        report,
    })
}

/// A read-only snapshot: the key, the checkpoint and the records are read consistently.
async fn snapshot<'c>(
    client: &'c mut tokio_postgres::Client,
    store: &str,
) -> Result<tokio_postgres::Transaction<'c>, PgExportError> {
    Ok(client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(PgError::db(store, "begin"))?)
}

/// The chain's verifier key (the publication target's, which verification checked the table's
/// agrees with; without a target, the table's) and its newest signed checkpoint (note text) of at
/// most `max_size` records: the verified length, so that a live gateway's later checkpoints do
/// not reach past the records that are read.
async fn key_and_newest_checkpoint(
    txn: &tokio_postgres::Transaction<'_>,
    s: &str,
    store: &str,
    chain_id: &str,
    published: &[PathBuf],
    max_size: u64,
) -> Result<(String, String), PgExportError> {
    let db = |op: &'static str| PgError::db(store, op);
    let none = || PgExportError::NoCheckpoint {
        store: store.to_string(),
        chain_id: chain_id.to_string(),
    };
    let published_key = published
        .iter()
        .find_map(|t| std::fs::read_to_string(t.join(chain_id).join("checkpoint.vkey")).ok());
    let vkey = match published_key {
        Some(k) => k,
        None => txn
            .query_opt(
                &format!("SELECT vkey FROM \"{s}\".chain_keys WHERE chain_id = $1"),
                &[&chain_id],
            )
            .await
            .map_err(db("read the chain's key"))?
            .map(|r| r.try_get::<_, String>(0))
            .transpose()
            .map_err(db("read the chain's key"))?
            .ok_or_else(none)?,
    };
    let row = txn
        .query_opt(
            &format!(
                "SELECT tree_size, note FROM \"{s}\".checkpoints WHERE chain_id = $1 AND note IS NOT NULL AND tree_size <= $2 ORDER BY tree_size DESC LIMIT 1"
            ),
            &[&chain_id, &sql_index(max_size)],
        )
        .await
        .map_err(db("read checkpoints"))?;
    let mut newest: Option<(u64, String)> = None;
    if let Some(row) = row {
        let size: i64 = row.try_get(0).map_err(db("read checkpoints"))?;
        let note: String = row.try_get(1).map_err(db("read checkpoints"))?;
        // The row's size must be the note's (the writer role may insert rows).
        let noted = Checkpoint::parse_unverified(note.as_bytes()).map(|c| c.size).ok();
        if noted != u64::try_from(size).ok() {
            return Err(PgExportError::Proof(format!(
                "the checkpoint row at size {size} of chain {chain_id} holds a note of another size"
            )));
        }
        newest = Some((noted.unwrap_or(0), note));
    }
    // A checkpoint published but not in the table (its insert failed, e.g. at shutdown) may be
    // newer.
    for t in published {
        if let Ok(note) = std::fs::read_to_string(t.join(chain_id).join("latest.ckpt"))
            && let Ok(c) = Checkpoint::parse_unverified(note.as_bytes())
            && c.size <= max_size
            && newest.as_ref().is_none_or(|(size, _)| c.size > *size)
        {
            newest = Some((c.size, note));
        }
    }
    let note = newest.map(|(_, n)| n).ok_or_else(none)?;
    Ok((vkey, note))
}

/// Which record of a chain to prove.
#[derive(Clone, Debug)]
pub enum ProveTarget {
    Index(u64),
    /// A decision record, by its id (the `x-cordon-decision-id` of a request).
    Decision(String),
}

/// An inclusion proof of one record of chain `chain_id` under its newest signed checkpoint,
/// after verifying the store (against `published`, when given); with the chain's verifier key.
pub async fn prove_chain_inclusion(
    config: &tokio_postgres::Config,
    tls: &crate::Tls,
    schema: &str,
    chain_id: &str,
    published: &[PathBuf],
    target: &ProveTarget,
) -> Result<(String, cordon_audit::InclusionBundle), PgExportError> {
    let chain_id = checked_chain_id(chain_id)?;
    let v = verified(config, tls, schema, published).await?;
    let len = v.verified_len(chain_id);
    let Verified {
        s, store, mut client, ..
    } = v;
    let db = |op: &'static str| PgError::db(&store, op);
    let txn = snapshot(&mut client, &store).await?;
    let (vkey, note) = key_and_newest_checkpoint(&txn, &s, &store, chain_id, published, len).await?;
    let verifier = cordon_audit::note::NoteVerifier::parse(vkey.trim_end())
        .map_err(|e| PgExportError::Proof(e.to_string()))?;
    let ckpt = cordon_audit::checkpoint::Checkpoint::open(note.as_bytes(), std::slice::from_ref(&verifier))
        .map_err(|e| PgExportError::Proof(e.to_string()))?;
    if ckpt.origin != verifier.name() {
        return Err(PgExportError::Proof(format!(
            "the checkpoint's origin {:?} is not the chain's {:?}",
            ckpt.origin,
            verifier.name()
        )));
    }
    let mut leaves = Vec::new();
    let mut found: Option<(u64, Vec<u8>)> = None;
    for_each_record(&txn, &s, &store, chain_id, ckpt.size, |idx, body| {
        leaves.push(cordon_audit::merkle::leaf_hash(body));
        let hit = match target {
            ProveTarget::Index(i) => *i == idx,
            ProveTarget::Decision(id) => crate::body::parse_body(body)
                .and_then(|e| serde_json::from_slice::<cordon_audit::Record>(e.rec).ok())
                .is_some_and(
                    |r| matches!(r, cordon_audit::Record::Decision(d) if d.decision_id.to_string() == *id),
                ),
        };
        if hit && found.is_none() {
            found = Some((idx, body.to_vec()));
        }
        Ok(())
    })
    .await?;
    txn.commit().await.map_err(db("commit"))?;
    let Some((index, body)) = found else {
        return Err(PgExportError::Proof(format!(
            "{target:?} is not among the {} records of chain {chain_id} its newest checkpoint covers",
            ckpt.size
        )));
    };
    if leaves.len() as u64 != ckpt.size || cordon_audit::merkle::root(&leaves) != ckpt.root {
        return Err(PgExportError::Proof(format!(
            "the records do not match the checkpoint at size {}",
            ckpt.size
        )));
    }
    let bundle = cordon_audit::inclusion_bundle(&leaves, index, &body, note)
        .map_err(|e| PgExportError::Proof(e.to_string()))?;
    cordon_audit::verify_inclusion_bundle(&bundle, vkey.trim_end())
        .map_err(|e| PgExportError::Proof(e.to_string()))?;
    Ok((vkey.trim_end().to_string(), bundle))
}

/// A consistency proof that chain `chain_id` at `old_size` is a prefix of itself at `new_size`,
/// both sizes signed checkpoints of the chain (in the table, or in `published`), after verifying
/// the store (against `published`, when given); with the chain's verifier key.
pub async fn prove_chain_consistency(
    config: &tokio_postgres::Config,
    tls: &crate::Tls,
    schema: &str,
    chain_id: &str,
    published: &[PathBuf],
    old_size: u64,
    new_size: u64,
) -> Result<(String, cordon_audit::ConsistencyBundle), PgExportError> {
    let chain_id = checked_chain_id(chain_id)?;
    if old_size > new_size {
        return Err(PgExportError::Proof(format!(
            "the old size {old_size} is larger than the new size {new_size}"
        )));
    }
    let Verified {
        s, store, mut client, ..
    } = verified(config, tls, schema, published).await?;
    let db = |op: &'static str| PgError::db(&store, op);
    let txn = snapshot(&mut client, &store).await?;
    let (vkey, _) = key_and_newest_checkpoint(&txn, &s, &store, chain_id, published, u64::MAX).await?;
    let verifier = cordon_audit::note::NoteVerifier::parse(vkey.trim_end())
        .map_err(|e| PgExportError::Proof(e.to_string()))?;
    let old = signed_checkpoint(&txn, &s, &store, chain_id, published, &verifier, old_size).await?;
    let new = signed_checkpoint(&txn, &s, &store, chain_id, published, &verifier, new_size).await?;
    let leaves = chain_leaves(&txn, &s, &store, chain_id, new_size).await?;
    txn.commit().await.map_err(db("commit"))?;
    for (size, c) in [(old_size, &old), (new_size, &new)] {
        if cordon_audit::merkle::root(&leaves[..size as usize]) != c.1 {
            return Err(PgExportError::Proof(format!(
                "the records do not match the checkpoint at size {size}"
            )));
        }
    }
    let bundle = cordon_audit::consistency_bundle(&leaves, old_size, old.0, new.0)
        .map_err(|e| PgExportError::Proof(e.to_string()))?;
    cordon_audit::verify_consistency_bundle(&bundle, vkey.trim_end())
        .map_err(|e| PgExportError::Proof(e.to_string()))?;
    Ok((vkey.trim_end().to_string(), bundle))
}

/// The signed note of chain `chain_id` at `size` and its root: its row in the table or a
/// checkpoint published under `published`, the first that verifies with the chain's key and
/// origin (the writer role may insert a bad row; a target may hold a stale note).
async fn signed_checkpoint(
    txn: &tokio_postgres::Transaction<'_>,
    s: &str,
    store: &str,
    chain_id: &str,
    published: &[PathBuf],
    verifier: &cordon_audit::note::NoteVerifier,
    size: u64,
) -> Result<(String, cordon_audit::merkle::Hash), PgExportError> {
    let mut why = format!("chain {chain_id} has no signed checkpoint at size {size}");
    for note in checkpoint_notes(txn, s, store, chain_id, published, size).await? {
        match Checkpoint::open(note.as_bytes(), std::slice::from_ref(verifier)) {
            Ok(c) if c.origin == verifier.name() && c.size == size => return Ok((note, c.root)),
            Ok(c) => {
                why = format!(
                    "the checkpoint at size {size} is not chain {chain_id}'s (origin {:?}, size {})",
                    c.origin, c.size
                )
            }
            Err(e) => why = format!("the checkpoint at size {size}: {e}"),
        }
    }
    Err(PgExportError::Proof(why))
}

/// The note texts that claim to be chain `chain_id`'s checkpoint at `size`: its rows in the
/// table, then those published under `published` (signatures not checked here).
async fn checkpoint_notes(
    txn: &tokio_postgres::Transaction<'_>,
    s: &str,
    store: &str,
    chain_id: &str,
    published: &[PathBuf],
    size: u64,
) -> Result<Vec<String>, PgExportError> {
    let db = |op: &'static str| PgError::db(store, op);
    let mut notes: Vec<String> = txn
        .query(
            &format!(
                "SELECT note FROM \"{s}\".checkpoints WHERE chain_id = $1 AND tree_size = $2 AND note IS NOT NULL"
            ),
            &[&chain_id, &sql_index(size)],
        )
        .await
        .map_err(db("read checkpoints"))?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(db("read checkpoints"))?;
    for t in published {
        notes.extend(cordon_audit::published_at(&t.join(chain_id), size));
    }
    Ok(notes)
}

/// An index or size as PostgreSQL's `bigint` (saturating: no chain is that long).
fn sql_index(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Each record of chain `chain_id` below index `below`, in index order: `each(index, body)`.
async fn for_each_record(
    c: &impl tokio_postgres::GenericClient,
    s: &str,
    store: &str,
    chain_id: &str,
    below: u64,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), PgExportError>,
) -> Result<(), PgExportError> {
    let db = |op: &'static str| PgError::db(store, op);
    let rows = c
        .query_raw(
            &format!("SELECT idx, body FROM \"{s}\".records WHERE chain_id = $1 AND idx < $2 ORDER BY idx"),
            [
                &chain_id as &(dyn tokio_postgres::types::ToSql + Sync),
                &sql_index(below),
            ],
        )
        .await
        .map_err(db("read records"))?;
    let mut rows = std::pin::pin!(rows);
    while let Some(row) = rows.try_next().await.map_err(db("read records"))? {
        let idx: i64 = row.try_get(0).map_err(db("read records"))?;
        let body: &[u8] = row.try_get(1).map_err(db("read records"))?;
        each(u64::try_from(idx).unwrap_or(u64::MAX), body)?;
    }
    Ok(())
}

/// The leaf hashes of the first `size` records of chain `chain_id`; an error if it holds fewer.
async fn chain_leaves(
    txn: &tokio_postgres::Transaction<'_>,
    s: &str,
    store: &str,
    chain_id: &str,
    size: u64,
) -> Result<Vec<cordon_audit::merkle::Hash>, PgExportError> {
    let mut leaves = Vec::new();
    for_each_record(txn, s, store, chain_id, size, |_, body| {
        leaves.push(cordon_audit::merkle::leaf_hash(body));
        Ok(())
    })
    .await?;
    if (leaves.len() as u64) < size {
        return Err(PgExportError::Proof(format!(
            "a checkpoint attests {size} records of chain {chain_id} but the store holds {}",
            leaves.len()
        )));
    }
    Ok(leaves)
}

/// Every record of chain `chain_id` that verification saw, with its index, in order, after
/// verifying the store (against the checkpoints published in `published`, when given): what
/// `cordon audit show` renders. Records a live gateway appends meanwhile are left out.
pub async fn read_chain_records(
    config: &tokio_postgres::Config,
    tls: &crate::Tls,
    schema: &str,
    chain_id: &str,
    published: &[PathBuf],
) -> Result<Vec<(u64, cordon_audit::Record)>, PgExportError> {
    let chain_id = checked_chain_id(chain_id)?;
    let v = verified(config, tls, schema, published).await?;
    let len = v.verified_len(chain_id);
    let Verified { s, store, client, .. } = v;
    let mut out = Vec::new();
    for_each_record(&client, &s, &store, chain_id, len, |idx, body| {
        let rec = crate::body::parse_body(body)
            .and_then(|e| serde_json::from_slice(e.rec).ok())
            .ok_or_else(|| {
                PgExportError::Proof(format!("record {idx} of chain {chain_id} is not a valid record"))
            })?;
        out.push((idx, rec));
        Ok(())
    })
    .await?;
    if out.is_empty() {
        return Err(PgExportError::Proof(format!(
            "chain {chain_id} has no records in this store (is the chain id right?)"
        )));
    }
    Ok(out)
}

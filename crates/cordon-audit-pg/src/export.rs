//! Export one PostgreSQL chain as a regulator's bundle: the same bundle as a directory store's
//! (`cordon_audit::bundle`), checked offline by `cordon audit verify-bundle`. Each chain is its
//! own log with its own key and checkpoints, so a store with several gateway replicas gives one
//! bundle per chain.

use std::path::PathBuf;

use cordon_audit::Keystore;
use cordon_audit::bundle::{Bundle, BundleError, ExportBuilder, ExportFilter};
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
    let s = checked_ident("schema", schema)?.to_string();
    let chain_id = checked_chain_id(chain_id)?;
    let store = format!("{}?schema={s}", redact_config(config));
    verify_with_published(config, tls, &s, published).await?;

    let mut client = crate::tls::connect(config, tls).await?;
    let db = |op: &'static str| PgError::db(&store, op);
    let txn = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db("begin"))?;
    // The key the publication target names is the trusted one (verification checked the table's
    // agrees with it); without a target, the table's.
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
            .ok_or_else(|| PgExportError::NoCheckpoint {
                store: store.clone(),
                chain_id: chain_id.to_string(),
            })?,
    };
    let note: String = txn
        .query_opt(
            &format!(
                "SELECT note FROM \"{s}\".checkpoints WHERE chain_id = $1 AND note IS NOT NULL ORDER BY tree_size DESC LIMIT 1"
            ),
            &[&chain_id],
        )
        .await
        .map_err(db("read checkpoints"))?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(db("read checkpoints"))?
        .ok_or_else(|| PgExportError::NoCheckpoint {
            store: store.clone(),
            chain_id: chain_id.to_string(),
        })?;
    let mut builder = ExportBuilder::new(jurisdiction, filter, &vkey, &note, keystore)?;
    let stmt = txn
        .prepare(&format!(
            "SELECT idx, body FROM \"{s}\".records WHERE chain_id = $1 ORDER BY idx"
        ))
        .await
        .map_err(db("read records"))?;
    let rows = txn
        .query_raw(&stmt, [&chain_id])
        .await
        .map_err(db("read records"))?;
    let mut rows = std::pin::pin!(rows);
    while let Some(row) = rows.try_next().await.map_err(db("read records"))? {
        let idx: i64 = row.try_get(0).map_err(db("read records"))?;
        let body: &[u8] = row.try_get(1).map_err(db("read records"))?;
        builder.push(u64::try_from(idx).unwrap_or(u64::MAX), body);
    }
    txn.commit().await.map_err(db("commit"))?;
    Ok(builder.finish()?)
}

/// Every record of chain `chain_id` with its index, in order, after verifying the store (against
/// the checkpoints published in `published`, when given): what `cordon audit show` renders.
pub async fn read_chain_records(
    config: &tokio_postgres::Config,
    tls: &crate::Tls,
    schema: &str,
    chain_id: &str,
    published: &[PathBuf],
) -> Result<Vec<(u64, cordon_audit::Record)>, PgExportError> {
    let s = checked_ident("schema", schema)?.to_string();
    let chain_id = checked_chain_id(chain_id)?;
    let store = format!("{}?schema={s}", redact_config(config));
    verify_with_published(config, tls, &s, published).await?;
    let client = crate::tls::connect(config, tls).await?;
    let db = |op: &'static str| PgError::db(&store, op);
    let rows = client
        .query_raw(
            &format!("SELECT idx, body FROM \"{s}\".records WHERE chain_id = $1 ORDER BY idx"),
            [&chain_id],
        )
        .await
        .map_err(db("read records"))?;
    let mut rows = std::pin::pin!(rows);
    let mut out = Vec::new();
    while let Some(row) = rows.try_next().await.map_err(db("read records"))? {
        let idx: i64 = row.try_get(0).map_err(db("read records"))?;
        let body: &[u8] = row.try_get(1).map_err(db("read records"))?;
        // Verified just above; a row appended since that does not parse is skipped, not shown.
        if let Some(rec) = crate::body::parse_body(body).and_then(|e| serde_json::from_slice(e.rec).ok()) {
            out.push((u64::try_from(idx).unwrap_or(u64::MAX), rec));
        }
    }
    Ok(out)
}

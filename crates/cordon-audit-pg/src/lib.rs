//! Cordon's PostgreSQL audit store, for regional deployments with several gateway replicas.
//!
//! # Layout
//! [`migrate`] creates, in one schema, `records(chain_id, idx, body, entry_hash, leaf_hash,
//! inserted_at)` with primary key `(chain_id, idx)` and `checkpoints(chain_id, tree_size,
//! root_hash, entry_hash, note, created_at)`, plus `chain_keys` and `markers` (each chain's
//! signed close/open markers, see `markers.rs`). Each gateway replica writes its own hash chain
//! (`chain_id` = the replica id, e.g. `gw-fra-1-a`), so replicas never wait on each other.
//!
//! # Format
//! A row's `body` is byte for byte the file store's record body (cordon-audit `segment.rs`):
//! `{"i":<idx>,"prev":"<hex entry hash of idx-1, or 64 zeros>","rec":<record JSON>}`;
//! `leaf_hash = SHA-256(0x00 || body)` is the RFC 6962 leaf, and
//! `entry_hash = SHA-256(0x02 || prev || leaf_hash)` chains the records (each body is hashed once).
//! Hashes are computed by the gateway; the database stores batches.
//!
//! # Append-only, enforced by the database
//! The gateway writes as [`WRITER_ROLE`] (`SET ROLE` on each connection), which holds only
//! `SELECT, INSERT`: `UPDATE`, `DELETE`, `TRUNCATE` fail with SQLSTATE `42501`. As a second fence,
//! triggers raise [`APPEND_ONLY_MESSAGE`] on `UPDATE`/`DELETE`/`TRUNCATE` whoever runs them
//! (a superuser can still disable them: that is what [`verify`] and checkpoints published
//! elsewhere are for).
//!
//! # Writing
//! [`PgStore`] group-commits: appends queue to one writer task per store, which writes each batch
//! with one binary `COPY` and acknowledges its records once committed (see `store.rs`).
//!
//! # Verifying
//! [`verify`] / [`verify_url`] check every chain and report the first bad row by chain, index
//! and [`PgBreakKind`]; Merkle roots come from `cordon_audit::merkle` (RFC 6962), and the
//! store-wide root orders leaves by (chain_id bytes, idx).

mod body;
mod checkpoints;
mod error;
mod export;
mod markers;
mod schema;
mod store;
mod tls;
mod url;
mod verify;

pub use body::{entry_and_leaf_hash, entry_hash, leaf_hash};
pub use checkpoints::PgCheckpointOptions;
pub use error::{PgError, describe_pg_error};
pub use export::{
    PgExportError, ProveTarget, export_chain, prove_chain_consistency, prove_chain_inclusion,
    read_chain_records,
};
pub use schema::{APPEND_ONLY_MESSAGE, WRITER_ROLE, migrate, migrate_with_role};
pub use store::{PgAck, PgStore, PgStoreOptions, PgStoreStats};
pub use tls::{connect, connector};
pub use url::{DEFAULT_SCHEMA, StoreUrl, Tls, checked_chain_id, parse_store_url, redact_config};
pub use verify::{
    PgBreakKind, PgChainReport, PgVerifyError, PgVerifyReport, verify, verify_config, verify_url,
    verify_url_with_progress, verify_url_with_published, verify_with, verify_with_progress,
    verify_with_published,
};

/// Re-exported so callers can build a [`PgStoreOptions`] without naming the crate.
pub use tokio_postgres;

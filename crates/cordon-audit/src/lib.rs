//! Cordon's audit stores: one append-only, hash-chained, Merkle-tree log per jurisdiction, with
//! signed checkpoints.
//!
//! Every gateway decision (allowed or refused) is appended to the store of the data subject's
//! jurisdiction and acknowledged only once fsynced, before anything is forwarded; a completion
//! record follows the response. [`AuditStore`] is the seam: [`FileStore`] is the embedded
//! implementation (a CRC-framed, SHA-256-chained segment log with group commit, format below).
//!
//! # On-disk format
//! A store is a directory of segments `{first index:020}.log` (rolled at ~64 MiB) of frames
//! `[u32 LE len][u32 LE crc32c(body)][body]`, body =
//! `{"i":<index>,"prev":"<hex entry hash of i-1, or 64 zeros>","rec":<record JSON>}`.
//!
//! The same bodies are the leaves of an RFC 6962 / RFC 9162 Merkle tree ([`merkle`]): leaf i =
//! SHA-256(0x00 || body(i)), and the chain links them: entry hash(i) =
//! SHA-256(0x02 || entry hash(i-1) || leaf i), so each body is hashed once. The writer keeps the tree's right edge ([`merkle::Frontier`]) and,
//! every [`StoreOptions::checkpoint_every`] records or [`StoreOptions::checkpoint_interval`] (and
//! at clean shutdown), a second thread signs a C2SP tlog checkpoint ([`checkpoint`], [`note`];
//! Ed25519) into `checkpoints/{size:020}.ckpt` and publishes it to
//! [`StoreOptions::publish_to`] with a compare-and-swap `latest.ckpt` (details and key handling in
//! the `tlog` module: `checkpoint.key` is a development default, `checkpoint.vkey` is the public
//! verifier key). Publication never blocks or fails an append; a refused compare-and-swap (a fork
//! attempt) is logged and counted ([`FileStore::checkpoint_stats`]).
//!
//! Opening rebuilds the tree by hashing every body (O(store bytes): about a second per GB here;
//! a tiled on-disk tree would make it O(log n)) and keeps 32 bytes per record only for records
//! after the oldest checkpoint a publication target still holds. A torn tail (crash mid-write)
//! is cut on open; damage followed by intact records, or a signed checkpoint attesting more
//! records than remain or a different root, makes open refuse ([`AuditError::Corrupt`]).
//!
//! [`verify_store`] / [`verify_store_with`] check framing, CRCs, records, the chain, the tree
//! against every local and published checkpoint (so dropping or rewriting the *last* records is
//! caught as [`BreakKind::RemovedTail`] / [`BreakKind::CheckpointMismatch`]), and report records
//! not yet covered by a checkpoint ([`VerifyReport::unattested`]). A clean shutdown leaves a
//! signed close marker (`markers/`, see the `marker` module): records appended after it without
//! an open marker are refused at open ([`AuditError::Forged`]) and by verify
//! ([`BreakKind::Forged`]); a crash leaves none, and its unattested tail is kept. [`prove_inclusion`] and
//! [`prove_consistency`] make JSON bundles that [`verify_inclusion_bundle`] and
//! [`verify_consistency_bundle`] check offline with only the verifier key.
//! `verify_store` on a store that is being written may see the in-flight batch as `Truncated`.
//!
//! Subjects are pseudonymized per jurisdiction ([`Pseudonymizer`]); payloads are a digest or
//! ciphertext under a per-subject key that can be shredded ([`Keystore`]) while the chain and the
//! tree, which hash the ciphertext, still verify.

mod background;
pub mod bundle;
mod commit_stats;
mod dir_lock;
/// The record body format shared by every store: `{"i":<index>,"prev":"<hex>","rec":<record>}`,
/// hashed as RFC 6962 Merkle leaves (`leaf_hash(i) = SHA-256(0x00 || body(i))`) and chained by
/// `entry_hash(i) = SHA-256(0x02 || entry_hash(i-1) || leaf_hash(i))`.
pub mod body {
    pub use crate::segment::{
        Envelope, ZERO_HASH, append_body, entry_and_leaf_hash, entry_hash, parse_envelope,
    };
}
pub mod checkpoint;
mod error;
mod file_store;
mod key_wrap;
mod keyfile;
mod keystore;
pub mod marker;
pub mod merkle;
pub mod note;
mod proofs;
mod pseudonym;
mod publisher;
mod record;
mod record_check;
mod record_json;
pub mod replica;
mod segment;
mod store;
#[doc(hidden)]
pub mod testing;
mod tlog;
pub use tlog::load_signer as load_checkpoint_signer;
mod verify;
mod writer;

pub use bundle::{
    Bundle, BundleError, BundleSummary, ExportBuilder, ExportFilter, export, read_bundle, verify_bundle,
    write_bundle,
};
pub use commit_stats::{CommitSnapshot, latency_bounds_us};
pub use error::{AuditError, BreakKind, VerifyError};
pub use file_store::{CheckpointStats, FileStore, StoreOptions};
pub use key_wrap::{KeyWrap, KeyWrapError, LocalMasterKey};
pub use keystore::{DataKey, Keystore, PAYLOAD_ALG, load_or_create_master_key, open_payload_with_key};
pub use proofs::{
    ConsistencyBundle, InclusionBundle, ProofError, consistency_bundle, inclusion_bundle, prove_consistency,
    prove_inclusion, read_verifier_key, verify_consistency_bundle, verify_inclusion_bundle,
};
pub use pseudonym::Pseudonymizer;
pub use publisher::{
    CheckpointPublisher, Published, check_verifier_key, publish_verifier_key, published_at, published_size,
    read_published,
};
pub use record::{
    CallerRecord, CompletionRecord, DecisionRecord, Evidence, Latency, Outcome, Payload, RECORD_VERSION,
    Record, digest, new_decision_id, now_rfc3339_micros,
};
pub use replica::{ReplicaError, ReplicaReport, ReplicaStatus, Replicator, verify_replica};
pub use segment::MAX_BODY;
pub use store::{Ack, AckSource, AuditStore};
pub use verify::{
    VerifyOptions, VerifyReport, read_records, read_verified_records, verify_store, verify_store_with,
};

#[cfg(test)]
mod forged_tests;
#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tamper_tests;
#[cfg(test)]
mod tlog_tests;

//! Cordon's audit stores: one append-only, hash-chained log per jurisdiction.
//!
//! Every gateway decision (allowed or refused) is appended to the store of the data subject's
//! jurisdiction and acknowledged only once fsynced, before anything is forwarded; a completion
//! record follows the response. [`AuditStore`] is the seam: [`FileStore`] is the first
//! implementation (a CRC-framed, SHA-256-chained segment log with group commit, format below);
//! a Merkle log (RFC 6962) with signed checkpoints replaces it later behind the same trait.
//!
//! # On-disk format
//! A store is a directory of segments `{first index:020}.log` (rolled at ~64 MiB) of frames
//! `[u32 LE len][u32 LE crc32c(body)][body]`, body =
//! `{"i":<index>,"prev":"<hex entry hash of i-1, or 64 zeros>","rec":<record JSON>}`, and
//! entry hash(i) = SHA-256(entry hash(i-1) || body(i)). [`verify_store`] checks it all.
//! A torn tail (crash mid-write) is cut on open; damage followed by intact records makes open
//! refuse ([`AuditError::Corrupt`]). Removing or rewriting the *last* records cannot be seen
//! from the chain alone: compare [`VerifyReport::head_hash`] with a head published earlier.
//! `verify_store` on a store that is being written may see the in-flight batch as `Truncated`.
//!
//! Subjects are pseudonymized per jurisdiction ([`Pseudonymizer`]); payloads are a digest or
//! ciphertext under a per-subject key that can be shredded ([`Keystore`]) while the chain, which
//! hashes the ciphertext, still verifies.

pub mod checkpoint;
mod error;
mod file_store;
mod keyfile;
mod keystore;
pub mod merkle;
pub mod note;
mod proofs;
mod pseudonym;
mod record;
mod segment;
mod store;
mod tlog;
mod verify;
mod writer;

pub use error::{AuditError, BreakKind, VerifyError};
pub use file_store::{CheckpointStats, FileStore, StoreOptions};
pub use keystore::{Keystore, PAYLOAD_ALG, load_or_create_master_key};
pub use proofs::{
    ConsistencyBundle, InclusionBundle, ProofError, prove_consistency, prove_inclusion,
    verify_consistency_bundle, verify_inclusion_bundle,
};
pub use pseudonym::Pseudonymizer;
pub use record::{
    CallerRecord, CompletionRecord, DecisionRecord, Evidence, Latency, Outcome, Payload, RECORD_VERSION,
    Record, digest, new_decision_id, now_rfc3339_micros,
};
pub use segment::MAX_BODY;
pub use store::{Ack, AuditStore};
pub use verify::{VerifyOptions, VerifyReport, read_records, verify_store, verify_store_with};

#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tamper_tests;
#[cfg(test)]
mod tlog_tests;

//! Export bundles: what a regulator receives and verifies offline, with nothing but the bundle.
//!
//! [`export`] selects records of one jurisdiction's [`crate::FileStore`] (decision records of a
//! subject pseudonym and period, plus their completion records), proves each one's inclusion in
//! the store's newest signed checkpoint and writes everything needed to check that into one JSON
//! document ([`write_bundle`]). [`read_bundle`] / [`parse_bundle`] read it back strictly (unknown
//! fields refused, at most [`MAX_BUNDLE_BYTES`]) and [`verify_bundle`] checks it offline.
//!
//! # Format (`"format": "cordon-audit-bundle/1"`)
//! ```text
//! { "manifest": { "format", "jurisdiction", "origin", "created", "filter": {subject, from, to, decrypt},
//!                 "checkpoint_size", "store_records", "unattested_excluded",
//!                 "counts": {records, decisions, completions, payloads_decrypted, payloads_unavailable} },
//!   "vkey": "<origin>+<key id>+<base64 Ed25519 key>",      // the store's checkpoint.vkey
//!   "checkpoint": "<C2SP signed note>",                    // the checkpoint every proof is against
//!   "records": [ { "index", "leaf": base64(frame body), "proof": [base64 hash, leaf to root],
//!                  "record": {...readable copy of the leaf's record...},
//!                  "payload": {"status":"decrypted","encoding":"utf8"|"base64","data"}
//!                           | {"status":"unavailable","reason"} } ],  // only when decrypt was asked
//!   "keys": [ { "jurisdiction", "key_id", "key": base64(32 bytes) } ] }  // only when a payload was decrypted
//! ```
//! `leaf` is exactly what the Merkle leaf hashes (`{"i":..,"prev":..,"rec":..}`), so it still holds
//! the sealed payload; a decrypted payload is a separate field and never replaces it. `keys` holds
//! the data key of each subject (`key_id` = the payloads' `key_id`, the subject's pseudonym) with
//! at least one decrypted payload in the bundle, and no other key; a bundle without decrypted
//! payloads has no `keys` field (so it reads as it did before keys were added, and a verifier
//! from before refuses a bundle with keys as malformed instead of passing unchecked plaintext).
//!
//! # What is attested, what is not
//! * Only records covered by the newest checkpoint are exported. Matching records after it (the
//!   unattested tail of a live store) are left out and counted in `unattested_excluded`.
//! * [`verify_bundle`] proves that every bundled record is, byte for byte, in the log that the
//!   signed checkpoint commits to, and that the records match the manifest's jurisdiction and
//!   filter. It cannot prove that the exporter left nothing out (completeness needs the whole log,
//!   i.e. `cordon audit verify` on the store): the manifest, its filter and counts are not signed,
//!   so a record removed together with a fixed-up count goes unnoticed.
//! * Every decrypted payload is checked against the attested ciphertext: the verifier decrypts the
//!   leaf's AES-256-GCM payload with the bundled key of its subject (the same AAD: jurisdiction
//!   and key id) and requires the bundle's plaintext to equal it byte for byte. That binds the
//!   plaintext: the ciphertext and its tag were made by the gateway under a random key and are
//!   fixed by the inclusion proof, and finding a second key under which that same ciphertext and
//!   tag verify is infeasible (the "invisible salamanders" attacks on GCM need the attacker to
//!   choose the ciphertext, which a proven record does not allow). A payload marked
//!   `unavailable` (the key was shredded) cannot be checked, and its reason is the exporter's
//!   statement; one marked so while the bundle's key for its subject does open it is refused.
//! * The key reveals nothing about the bundled records that their plaintext does not, but it opens
//!   every other payload of that subject in that jurisdiction to whoever has those ciphertexts: a
//!   decrypting bundle must be handled like the personal data it contains.
//! * The verifier key travels in the bundle, so a verification proves consistency with *that* key;
//!   compare it with the store's key obtained independently ([`verify_bundle_with_key`]).
//!
//! Decisions of records whose authentication failed have no jurisdiction; they live in the
//! gateway's `_unauthenticated` store and are exported with jurisdiction
//! [`UNAUTHENTICATED_JURISDICTION`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::checkpoint::Checkpoint;
use crate::error::{AuditError, VerifyError, describe_json_error};
use crate::keystore::{DataKey, Keystore, open_payload_with_key};
use crate::merkle::{self, Hash};
use crate::note::NoteVerifier;
use crate::proofs::{ProofError, newest_checkpoint, read_verifier_key};
use crate::record::{DecisionRecord, Outcome, Payload, Record, now_rfc3339_micros};
use crate::segment;
use crate::tlog;
use crate::verify::{VerifyOptions, read_bodies, retry_truncated, verify_store_with};

/// The `manifest.format` of this version.
pub const BUNDLE_FORMAT: &str = "cordon-audit-bundle/1";
/// The largest bundle [`read_bundle`] / [`parse_bundle`] accept.
pub const MAX_BUNDLE_BYTES: u64 = 256 << 20;
/// The jurisdiction name that matches decision records without one (authentication failed); the
/// gateway's store for them has this name.
pub const UNAUTHENTICATED_JURISDICTION: &str = "_unauthenticated";

/// Which records to export.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportFilter {
    /// Subject pseudonym (`ps:…`; the CLI pseudonymizes a raw id). `None`: every subject.
    pub subject: Option<String>,
    /// RFC 3339 lower bound on a decision's `ts`, inclusive.
    pub from: Option<String>,
    /// RFC 3339 upper bound on a decision's `ts`, inclusive.
    pub to: Option<String>,
    /// Add decrypted payloads (when the subject's key still exists).
    pub decrypt: bool,
}

/// How many of each thing the bundle holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    pub records: u64,
    pub decisions: u64,
    pub completions: u64,
    pub payloads_decrypted: u64,
    pub payloads_unavailable: u64,
}

/// What was exported, from where, how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    pub jurisdiction: String,
    /// The store's checkpoint origin (e.g. `cordon/gw-eu/EU`).
    pub origin: String,
    /// When the bundle was made (RFC 3339).
    pub created: String,
    pub filter: ExportFilter,
    /// The tree size of the bundled checkpoint.
    pub checkpoint_size: u64,
    /// Records in the store when it was exported (at least `checkpoint_size`).
    pub store_records: u64,
    /// Matching records after the checkpoint, not exported because nothing attests them yet.
    pub unattested_excluded: u64,
    pub counts: Counts,
}

/// A decrypted payload, or why there is none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PayloadExport {
    /// `encoding` is `utf8` (data is the text) or `base64` (the plaintext was not UTF-8).
    Decrypted { encoding: String, data: String },
    /// E.g. the subject's key was shredded.
    Unavailable { reason: String },
}

/// One exported record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleRecord {
    pub index: u64,
    /// Base64 of the frame body: exactly the Merkle leaf data.
    pub leaf: String,
    /// The inclusion proof (audit path) to the bundled checkpoint, base64 hashes, leaf to root.
    pub proof: Vec<String>,
    /// A readable copy of the leaf's record (checked to equal it).
    pub record: serde_json::Value,
    /// Present exactly when decryption was asked and the record is a decision with an encrypted
    /// payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<PayloadExport>,
}

/// A subject's payload data key, carried so that the verifier can check decrypted payloads
/// against the attested ciphertext.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleKey {
    /// The jurisdiction the key belongs to (the manifest's).
    pub jurisdiction: String,
    /// The payloads' `key_id` (the subject's pseudonym).
    pub key_id: String,
    /// Base64 of the 32-byte AES-256 key.
    pub key: String,
}

impl fmt::Debug for BundleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BundleKey")
            .field("jurisdiction", &self.jurisdiction)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// An export bundle (one JSON document).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub manifest: Manifest,
    /// The store's verifier key.
    pub vkey: String,
    /// The signed checkpoint (C2SP note text) every proof is against.
    pub checkpoint: String,
    /// In increasing index order.
    pub records: Vec<BundleRecord>,
    /// The data key of each subject with a decrypted payload in the bundle (by key id); empty (and
    /// not written) otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<BundleKey>,
}

/// Why an export failed or a bundle does not verify.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The store itself does not verify (export refuses to attest a damaged store).
    #[error(transparent)]
    Store(#[from] VerifyError),
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// Decrypting payloads failed for lack of the keystore (e.g. the KMS is unreachable).
    #[error("keystore: {0}")]
    Keystore(AuditError),
    #[error("invalid export filter: {0}")]
    InvalidFilter(String),
    #[error("audit store {store}: no signed checkpoint yet, nothing is attested to export")]
    NoCheckpoint { store: PathBuf },
    #[error("not a valid bundle: {0}")]
    Malformed(String),
    #[error("bundle too large: {len} bytes (limit {limit})")]
    TooLarge { len: u64, limit: u64 },
    #[error("bundle does not verify: {what}")]
    Tampered { what: String },
}

fn tampered(what: impl Into<String>) -> BundleError {
    BundleError::Tampered { what: what.into() }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The period bounds of a filter, parsed.
struct Period {
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
}

impl Period {
    fn of(filter: &ExportFilter) -> Result<Period, String> {
        let parse = |name: &str, v: &Option<String>| -> Result<Option<OffsetDateTime>, String> {
            v.as_deref()
                .map(|s| {
                    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
                        format!("{name} is not an RFC 3339 timestamp (e.g. 2026-01-31T00:00:00Z)")
                    })
                })
                .transpose()
        };
        let p = Period {
            from: parse("from", &filter.from)?,
            to: parse("to", &filter.to)?,
        };
        if let (Some(f), Some(t)) = (p.from, p.to)
            && f > t
        {
            return Err("from is after to".into());
        }
        Ok(p)
    }

    /// Is `ts` within the bounds? A timestamp that does not parse is within only unbounded periods.
    fn contains(&self, ts: &str) -> bool {
        if self.from.is_none() && self.to.is_none() {
            return true;
        }
        let Ok(t) = OffsetDateTime::parse(ts, &Rfc3339) else {
            return false;
        };
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|to| t <= to)
    }
}

fn check_filter(filter: &ExportFilter) -> Result<Period, String> {
    if let Some(s) = &filter.subject
        && (s.is_empty() || s.chars().any(char::is_control))
    {
        return Err("subject is empty or has control characters".into());
    }
    Period::of(filter)
}

fn jurisdiction_of(d: &DecisionRecord) -> &str {
    d.data_subject_jurisdiction
        .as_deref()
        .unwrap_or(UNAUTHENTICATED_JURISDICTION)
}

/// Does a decision record match the jurisdiction and the filter?
fn decision_matches(d: &DecisionRecord, jurisdiction: &str, filter: &ExportFilter, period: &Period) -> bool {
    jurisdiction_of(d) == jurisdiction
        && filter
            .subject
            .as_deref()
            .is_none_or(|s| d.subject.as_deref() == Some(s))
        && period.contains(&d.ts)
}

/// Largest power of two strictly below `n` (n > 1).
fn split(n: usize) -> usize {
    1usize << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The root of `leaves`, and the audit path of each of `targets` (sorted, distinct, indices into
/// `leaves`) pushed onto the matching entry of `out`. Every subtree is hashed once: O(n + k log n)
/// for k proofs, where one [`merkle::inclusion_proof`] per record would be O(k n).
fn root_and_paths(leaves: &[Hash], base: usize, targets: &[usize], out: &mut [Vec<Hash>]) -> Hash {
    if targets.is_empty() {
        return merkle::root(leaves);
    }
    if leaves.len() == 1 {
        return leaves[0];
    }
    let k = split(leaves.len());
    let cut = targets.partition_point(|&t| t < base + k);
    let (tl, tr) = targets.split_at(cut);
    let (ol, or) = out.split_at_mut(cut);
    let left = root_and_paths(&leaves[..k], base, tl, ol);
    let right = root_and_paths(&leaves[k..], base + k, tr, or);
    for p in ol {
        p.push(right);
    }
    for p in or {
        p.push(left);
    }
    merkle::node_hash(&left, &right)
}

/// A selected record: index, frame body, parsed record.
struct Selected {
    index: u64,
    body: Vec<u8>,
    record: Record,
}

/// Export the records of the store in `store_dir` (of `jurisdiction`) that match `filter`, with
/// inclusion proofs to the newest checkpoint of the store or of its publication targets
/// (`external`, e.g. its DR replica). The whole store is verified first, against those targets
/// too (a damaged store is not exported). `keystore` is needed only when `filter.decrypt`. The
/// result is checked with [`verify_bundle`] before it is returned.
pub fn export(
    store_dir: &Path,
    external: &[PathBuf],
    jurisdiction: &str,
    filter: &ExportFilter,
    keystore: Option<&Keystore>,
) -> Result<Bundle, BundleError> {
    // Checked before the store is read.
    check_filter(filter).map_err(BundleError::InvalidFilter)?;
    let opts = VerifyOptions {
        external: external.to_vec(),
        progress: None,
    };
    retry_truncated(|| verify_store_with(store_dir, &opts))?;
    let vkey = read_verifier_key(store_dir)?;
    let Some((_, path)) = newest_checkpoint(store_dir, external)? else {
        return Err(BundleError::NoCheckpoint {
            store: store_dir.to_path_buf(),
        });
    };
    let checkpoint = fs::read_to_string(&path).map_err(io_err(&path))?;
    let mut builder = ExportBuilder::new(jurisdiction, filter, &vkey, &checkpoint, keystore)?;
    retry_truncated(|| {
        builder.reset();
        read_bodies(store_dir, |i, body| builder.push(i, body))
    })?;
    builder.finish()
}

/// Builds a bundle from any log, record by record: the log's verifier key and newest signed
/// checkpoint first, then every record body in index order ([`ExportBuilder::push`]), then
/// [`ExportBuilder::finish`]. Used by the directory store's [`export`] and by the PostgreSQL
/// store's export of one chain. Verify the log before exporting it: the builder checks the
/// records against the checkpoint's root, not the log's chain.
pub struct ExportBuilder<'a> {
    jurisdiction: &'a str,
    filter: &'a ExportFilter,
    period: Period,
    keystore: Option<&'a Keystore>,
    vkey: String,
    checkpoint: String,
    ckpt: Checkpoint,
    leaves: Vec<Hash>,
    selected: Vec<Selected>,
    wanted: HashSet<uuid::Uuid>,
    total: u64,
    unattested: u64,
}

impl<'a> ExportBuilder<'a> {
    /// `vkey`: the log's verifier key; `checkpoint`: its newest signed checkpoint (note text).
    pub fn new(
        jurisdiction: &'a str,
        filter: &'a ExportFilter,
        vkey: &str,
        checkpoint: &str,
        keystore: Option<&'a Keystore>,
    ) -> Result<ExportBuilder<'a>, BundleError> {
        let period = check_filter(filter).map_err(BundleError::InvalidFilter)?;
        if jurisdiction.is_empty() {
            return Err(BundleError::InvalidFilter("empty jurisdiction".into()));
        }
        let keystore = match (filter.decrypt, keystore) {
            (true, None) => {
                return Err(BundleError::InvalidFilter(
                    "decrypting payloads needs the keystore".into(),
                ));
            }
            (true, Some(k)) => Some(k),
            (false, _) => None,
        };
        let verifier = NoteVerifier::parse(vkey.trim_end()).map_err(ProofError::from)?;
        let ckpt = Checkpoint::open(checkpoint.as_bytes(), std::slice::from_ref(&verifier))
            .map_err(ProofError::from)?;
        if ckpt.origin != verifier.name() {
            return Err(ProofError::Invalid(format!(
                "the checkpoint's origin {:?} is not the log's {:?}",
                ckpt.origin,
                verifier.name()
            ))
            .into());
        }
        Ok(ExportBuilder {
            jurisdiction,
            filter,
            period,
            keystore,
            vkey: vkey.trim_end().to_string(),
            checkpoint: checkpoint.to_string(),
            ckpt,
            leaves: Vec::new(),
            selected: Vec::new(),
            wanted: HashSet::new(),
            total: 0,
            unattested: 0,
        })
    }

    /// Forget the records pushed so far (to read the log again).
    pub fn reset(&mut self) {
        self.leaves.clear();
        self.selected.clear();
        self.wanted.clear();
        self.total = 0;
        self.unattested = 0;
    }

    /// The next record body (index `i`, in order from 0).
    pub fn push(&mut self, i: u64, body: &[u8]) {
        let size = self.ckpt.size;
        self.total += 1;
        if i < size {
            self.leaves.push(merkle::leaf_hash(body));
        }
        // The log was verified: every body is an envelope holding a valid record.
        let Some(rec) = segment::parse_envelope(body).and_then(|e| serde_json::from_slice(e.rec).ok()) else {
            return;
        };
        let take = match &rec {
            Record::Decision(d) => decision_matches(d, self.jurisdiction, self.filter, &self.period),
            Record::Completion(c) => self.wanted.contains(&c.decision_id),
        };
        if !take {
            return;
        }
        if let Record::Decision(d) = &rec {
            self.wanted.insert(d.decision_id);
        }
        if i < size {
            self.selected.push(Selected {
                index: i,
                body: body.to_vec(),
                record: rec,
            });
        } else {
            self.unattested += 1;
        }
    }

    /// The bundle, checked with [`verify_bundle`].
    pub fn finish(self) -> Result<Bundle, BundleError> {
        let ExportBuilder {
            jurisdiction,
            filter,
            keystore,
            vkey,
            checkpoint,
            ckpt: c,
            leaves,
            selected,
            total: store_records,
            unattested,
            ..
        } = self;
        let size = c.size;
        if (leaves.len() as u64) < size {
            return Err(ProofError::Invalid(format!(
                "the checkpoint attests {size} records but the log holds {}",
                leaves.len()
            ))
            .into());
        }
        let targets: Vec<usize> = selected.iter().map(|s| s.index as usize).collect();
        let mut paths = vec![Vec::new(); targets.len()];
        if root_and_paths(&leaves, 0, &targets, &mut paths) != c.root {
            return Err(ProofError::Invalid(format!(
                "the records do not match the checkpoint at size {size}"
            ))
            .into());
        }
        drop(leaves);

        let mut counts = Counts::default();
        let mut records = Vec::with_capacity(selected.len());
        // Each subject's data key, read once: the key that decrypts a payload here is the key the
        // bundle carries for it (a shred in between cannot make them differ). `Err`: why not.
        let mut subject_keys: BTreeMap<String, Result<Option<DataKey>, String>> = BTreeMap::new();
        // The keys that decrypted at least one payload: the bundle carries these and no others.
        let mut used_keys: BTreeMap<String, DataKey> = BTreeMap::new();
        for (s, path) in selected.into_iter().zip(paths) {
            counts.records += 1;
            let mut payload = None;
            match &s.record {
                Record::Decision(d) => {
                    counts.decisions += 1;
                    if let (Some(ks), Payload::Encrypted { key_id, .. }) = (keystore, &d.payload) {
                        if !subject_keys.contains_key(key_id) {
                            let looked_up = match ks.export_data_key(jurisdiction, key_id) {
                                Ok(k) => Ok(k),
                                // The keystore could not run (a KMS outage): fail the export
                                // rather than call the payloads erased.
                                Err(e @ AuditError::Io { .. }) => return Err(BundleError::Keystore(e)),
                                Err(e) => Err(e.to_string()),
                            };
                            subject_keys.insert(key_id.clone(), looked_up);
                        }
                        let opened = match &subject_keys[key_id] {
                            Ok(Some(k)) => open_payload_with_key(k, jurisdiction, &d.payload)
                                .map(|plain| (plain, k))
                                .map_err(|e| match e {
                                    // The store verified, so the ciphertext is the gateway's:
                                    // it was sealed under an earlier key of this subject.
                                    AuditError::Crypto(_) => {
                                        "the subject's current payload key does not open it \
                                         (it was sealed under an earlier key, since shredded: payload erased)"
                                            .to_string()
                                    }
                                    other => other.to_string(),
                                }),
                            Ok(None) => {
                                Err("the subject's payload key was shredded (payload erased)".to_string())
                            }
                            Err(why) => Err(why.clone()),
                        };
                        payload = Some(match opened {
                            Ok((plain, key)) => {
                                counts.payloads_decrypted += 1;
                                if !used_keys.contains_key(key_id) {
                                    used_keys.insert(key_id.clone(), key.clone());
                                }
                                match String::from_utf8(plain) {
                                    Ok(text) => PayloadExport::Decrypted {
                                        encoding: "utf8".into(),
                                        data: text,
                                    },
                                    Err(e) => PayloadExport::Decrypted {
                                        encoding: "base64".into(),
                                        data: B64.encode(e.into_bytes()),
                                    },
                                }
                            }
                            Err(reason) => {
                                counts.payloads_unavailable += 1;
                                PayloadExport::Unavailable { reason }
                            }
                        });
                    }
                }
                Record::Completion(_) => counts.completions += 1,
            }
            let env_rec = segment::parse_envelope(&s.body)
                .map(|e| e.rec)
                .unwrap_or_default();
            let record = serde_json::from_slice(env_rec).map_err(|e| {
                ProofError::Invalid(format!("record {}: {}", s.index, describe_json_error(&e)))
            })?;
            records.push(BundleRecord {
                index: s.index,
                leaf: B64.encode(&s.body),
                proof: path.iter().map(|h| B64.encode(h)).collect(),
                record,
                payload,
            });
        }
        let bundle = Bundle {
            manifest: Manifest {
                format: BUNDLE_FORMAT.into(),
                jurisdiction: jurisdiction.into(),
                origin: c.origin.clone(),
                created: now_rfc3339_micros(),
                filter: filter.clone(),
                checkpoint_size: size,
                store_records,
                unattested_excluded: unattested,
                counts,
            },
            vkey,
            checkpoint,
            records,
            keys: used_keys
                .into_iter()
                .map(|(key_id, k)| BundleKey {
                    jurisdiction: jurisdiction.into(),
                    key_id,
                    key: B64.encode(k.0),
                })
                .collect(),
        };
        verify_bundle(&bundle)?;
        Ok(bundle)
    }
}

/// Write `bundle` to `out` as one pretty-printed JSON document (atomically: temp file, rename).
pub fn write_bundle(bundle: &Bundle, out: &Path) -> Result<(), BundleError> {
    let mut bytes =
        serde_json::to_vec_pretty(bundle).map_err(|e| BundleError::Malformed(describe_json_error(&e)))?;
    bytes.push(b'\n');
    let out_abs = if out.parent().is_some_and(|p| !p.as_os_str().is_empty()) {
        out.to_path_buf()
    } else {
        Path::new(".").join(out)
    };
    tlog::write_atomic(&out_abs, &bytes).map_err(io_err(out))
}

/// Read a bundle file strictly (see [`parse_bundle`]); refuses files over [`MAX_BUNDLE_BYTES`].
pub fn read_bundle(path: &Path) -> Result<Bundle, BundleError> {
    let f = fs::File::open(path).map_err(io_err(path))?;
    let len = f.metadata().map_err(io_err(path))?.len();
    if len > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge {
            len,
            limit: MAX_BUNDLE_BYTES,
        });
    }
    let mut bytes = Vec::new();
    f.take(MAX_BUNDLE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    parse_bundle(&bytes)
}

/// Parse bundle bytes strictly: a JSON document of exactly the bundle's shape (unknown fields are
/// refused), at most [`MAX_BUNDLE_BYTES`]. Never panics. Does not verify (see [`verify_bundle`]).
pub fn parse_bundle(bytes: &[u8]) -> Result<Bundle, BundleError> {
    if bytes.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge {
            len: bytes.len() as u64,
            limit: MAX_BUNDLE_BYTES,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| BundleError::Malformed(describe_json_error(&e)))
}

/// What a verified bundle holds; `Display` is the readable summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleSummary {
    pub jurisdiction: String,
    pub origin: String,
    /// The bundle's verifier key (compare it with the store's, obtained independently).
    pub vkey: String,
    pub checkpoint_size: u64,
    /// Hex root hash of the checkpoint.
    pub checkpoint_root: String,
    pub created: String,
    pub filter: ExportFilter,
    pub store_records: u64,
    pub unattested_excluded: u64,
    pub records: u64,
    pub decisions: u64,
    pub completions: u64,
    pub allowed: u64,
    pub refused: u64,
    /// Refused decisions by reason code (`(none)` when there is none).
    pub refused_by_reason: BTreeMap<String, u64>,
    /// Processing regions named by the decisions and completions.
    pub processing_regions: BTreeSet<String>,
    /// The earliest and latest record timestamps.
    pub first_ts: Option<String>,
    pub last_ts: Option<String>,
    /// Decisions whose payload is encrypted (sealed in the leaf).
    pub payloads_encrypted: u64,
    /// Decrypted payloads, each checked to be the plaintext of its record's ciphertext.
    pub payloads_decrypted: u64,
    /// Payloads marked unavailable (not verifiable: the subject's key is not in the bundle).
    pub payloads_unavailable: u64,
    /// Subject data keys the bundle carries (one per subject with a decrypted payload).
    pub data_keys: u64,
}

impl fmt::Display for BundleSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bundle OK: {} records ({} decisions, {} completions) of jurisdiction {}",
            self.records, self.decisions, self.completions, self.jurisdiction
        )?;
        writeln!(f, "  store        {}", self.origin)?;
        writeln!(f, "  key          {}", self.vkey)?;
        writeln!(
            f,
            "  checkpoint   size {}, root {}, signature valid; every record's inclusion proof valid",
            self.checkpoint_size, self.checkpoint_root
        )?;
        let mut filter = Vec::new();
        if let Some(s) = &self.filter.subject {
            filter.push(format!("subject {s}"));
        }
        if let Some(s) = &self.filter.from {
            filter.push(format!("from {s}"));
        }
        if let Some(s) = &self.filter.to {
            filter.push(format!("to {s}"));
        }
        if filter.is_empty() {
            filter.push("all subjects, whole period".into());
        }
        writeln!(f, "  exported     {} ({})", self.created, filter.join(", "))?;
        let reasons: Vec<String> = self
            .refused_by_reason
            .iter()
            .map(|(r, n)| format!("{r}: {n}"))
            .collect();
        write!(
            f,
            "  decisions    {} allowed, {} refused",
            self.allowed, self.refused
        )?;
        if reasons.is_empty() {
            writeln!(f)?;
        } else {
            writeln!(f, " ({})", reasons.join(", "))?;
        }
        let regions: Vec<&str> = self.processing_regions.iter().map(String::as_str).collect();
        writeln!(
            f,
            "  processed in {}",
            if regions.is_empty() {
                "(no processing region recorded)".to_string()
            } else {
                regions.join(", ")
            }
        )?;
        match (&self.first_ts, &self.last_ts) {
            (Some(a), Some(b)) => writeln!(f, "  period       {a} .. {b}")?,
            _ => writeln!(f, "  period       (no records)")?,
        }
        if self.filter.decrypt {
            writeln!(
                f,
                "  payloads     {} encrypted: {} decrypted, each verified against its record's ciphertext; \
                 {} unavailable (key shredded or missing: not verifiable)",
                self.payloads_encrypted, self.payloads_decrypted, self.payloads_unavailable
            )?;
            if self.data_keys > 0 {
                writeln!(
                    f,
                    "  data keys    {} subject key(s) included to verify the payloads; each also decrypts that \
                     subject's other payloads in {}: handle this bundle as the personal data it contains",
                    self.data_keys, self.jurisdiction
                )?;
            }
        } else {
            writeln!(
                f,
                "  payloads     {} encrypted, not decrypted (not requested)",
                self.payloads_encrypted
            )?;
        }
        writeln!(
            f,
            "  store        {} records when exported; {} matching record(s) after the checkpoint not included (unattested)",
            self.store_records, self.unattested_excluded
        )?;
        writeln!(
            f,
            "  proven       every record shown is, byte for byte, in the log the signed checkpoint commits to{}",
            if self.payloads_decrypted > 0 {
                ", and every decrypted payload is its record's plaintext"
            } else {
                ""
            }
        )?;
        write!(
            f,
            "  not proven   that no matching record was left out (the manifest, its filter and counts are \
             not signed; completeness needs `cordon audit verify` on the store), nor that the key is \
             the store's: compare it with the store's published checkpoint.vkey"
        )
    }
}

/// At most 64 characters of `s` (for naming untrusted input in an error).
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The bundle's data keys by key id, checked: only in a decrypting bundle, base64 of 32 bytes, one
/// per key id (their jurisdiction is checked after the records, whose errors say more). The flag
/// is whether a payload used it.
fn bundle_keys(bundle: &Bundle) -> Result<HashMap<&str, (DataKey, bool)>, BundleError> {
    let m = &bundle.manifest;
    if !m.filter.decrypt && !bundle.keys.is_empty() {
        return Err(tampered(
            "keys: the bundle carries data keys but decryption was not asked",
        ));
    }
    let mut keys = HashMap::with_capacity(bundle.keys.len().min(1 << 16));
    for (k, e) in bundle.keys.iter().enumerate() {
        let at = |what: &str| tampered(format!("keys[{k}] (key id {}): {what}", clip(&e.key_id)));
        let key = B64
            .decode(&e.key)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or_else(|| at("key is not base64 of 32 bytes"))?;
        if keys.insert(e.key_id.as_str(), (DataKey(key), false)).is_some() {
            return Err(at("a second key for the same key id"));
        }
    }
    Ok(keys)
}

fn b64_hash(s: &str) -> Option<Hash> {
    B64.decode(s).ok().and_then(|v| Hash::try_from(v).ok())
}

fn ts_key(ts: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(ts, &Rfc3339).ok()
}

/// Verify a bundle offline: the checkpoint's signature with the bundled verifier key; for each
/// record, that its leaf is the envelope of its index, holds a valid record equal to the readable
/// copy, and its inclusion proof leads to the checkpoint's root; that every record matches the
/// manifest's jurisdiction and filter (completions: their decision is in the bundle); and that the
/// manifest's counts equal the contents. Errors name the record and the check.
pub fn verify_bundle(bundle: &Bundle) -> Result<BundleSummary, BundleError> {
    let m = &bundle.manifest;
    if m.format != BUNDLE_FORMAT {
        return Err(BundleError::Malformed(format!(
            "unsupported format {:?} (expected {BUNDLE_FORMAT})",
            m.format.chars().take(64).collect::<String>()
        )));
    }
    let v = NoteVerifier::parse(&bundle.vkey).map_err(|e| tampered(format!("vkey: {e}")))?;
    let c = Checkpoint::open(bundle.checkpoint.as_bytes(), std::slice::from_ref(&v))
        .map_err(|e| tampered(format!("checkpoint: does not verify with the bundled vkey: {e}")))?;
    if c.origin != v.name() {
        return Err(tampered("checkpoint: its origin is not the vkey's name"));
    }
    if m.origin != c.origin {
        return Err(tampered("manifest: origin differs from the checkpoint's"));
    }
    if m.checkpoint_size != c.size {
        return Err(tampered(format!(
            "manifest: checkpoint_size {} but the checkpoint is at size {}",
            m.checkpoint_size, c.size
        )));
    }
    if m.store_records < m.checkpoint_size {
        return Err(tampered("manifest: store_records is below the checkpoint size"));
    }
    let period = check_filter(&m.filter).map_err(|e| tampered(format!("manifest: filter: {e}")))?;
    let mut keys = bundle_keys(bundle)?;

    let mut s = BundleSummary {
        jurisdiction: m.jurisdiction.clone(),
        origin: c.origin.clone(),
        vkey: v.to_string(),
        checkpoint_size: c.size,
        checkpoint_root: hex::encode(c.root),
        created: m.created.clone(),
        filter: m.filter.clone(),
        store_records: m.store_records,
        unattested_excluded: m.unattested_excluded,
        records: 0,
        decisions: 0,
        completions: 0,
        allowed: 0,
        refused: 0,
        refused_by_reason: BTreeMap::new(),
        processing_regions: BTreeSet::new(),
        first_ts: None,
        last_ts: None,
        payloads_encrypted: 0,
        payloads_decrypted: 0,
        payloads_unavailable: 0,
        data_keys: keys.len() as u64,
    };
    let mut first: Option<OffsetDateTime> = None;
    let mut last: Option<OffsetDateTime> = None;
    let mut decisions: HashSet<uuid::Uuid> = HashSet::new();
    for w in bundle.records.windows(2) {
        if w[1].index <= w[0].index {
            return Err(tampered(format!(
                "record {}: out of order or duplicated (indices must increase)",
                w[1].index
            )));
        }
    }
    for r in &bundle.records {
        let at = |what: &str| tampered(format!("record {}: {what}", r.index));
        if r.index >= c.size {
            return Err(at(&format!("index is not below the checkpoint size {}", c.size)));
        }
        let leaf = B64.decode(&r.leaf).map_err(|_| at("leaf is not base64"))?;
        let env = segment::parse_envelope(&leaf).ok_or_else(|| at("leaf is not a record envelope"))?;
        if env.index != r.index {
            return Err(at(&format!("leaf is the envelope of record {}", env.index)));
        }
        let mut proof = Vec::with_capacity(r.proof.len().min(64));
        for (k, h) in r.proof.iter().enumerate() {
            proof.push(b64_hash(h).ok_or_else(|| at(&format!("proof hash {k} is not base64 of 32 bytes")))?);
        }
        merkle::verify_inclusion(&merkle::leaf_hash(&leaf), r.index, c.size, &proof, &c.root)
            .map_err(|e| at(&format!("inclusion proof does not match checkpoint root ({e})")))?;
        let rec: Record = serde_json::from_slice(env.rec).map_err(|e| {
            at(&format!(
                "leaf holds no valid record ({})",
                describe_json_error(&e)
            ))
        })?;
        let copy: serde_json::Value = serde_json::from_slice(env.rec).map_err(|e| {
            at(&format!(
                "leaf holds no valid record ({})",
                describe_json_error(&e)
            ))
        })?;
        if copy != r.record {
            return Err(at("the readable copy `record` differs from the attested leaf"));
        }
        s.records += 1;
        let (ts, regions) = match &rec {
            Record::Decision(d) => {
                if jurisdiction_of(d) != m.jurisdiction {
                    return Err(at(&format!(
                        "decision of jurisdiction {} in a bundle of jurisdiction {}",
                        jurisdiction_of(d),
                        m.jurisdiction
                    )));
                }
                if let Some(want) = &m.filter.subject
                    && d.subject.as_deref() != Some(want.as_str())
                {
                    return Err(at("decision of another subject than the manifest's filter"));
                }
                if !period.contains(&d.ts) {
                    return Err(at("decision outside the manifest's period"));
                }
                if !decisions.insert(d.decision_id) {
                    return Err(at("a second decision record with the same decision id"));
                }
                s.decisions += 1;
                match d.outcome {
                    Outcome::Allowed => s.allowed += 1,
                    Outcome::Refused => {
                        s.refused += 1;
                        let reason = d.reason.clone().unwrap_or_else(|| "(none)".into());
                        *s.refused_by_reason.entry(reason).or_default() += 1;
                    }
                }
                (&d.ts, &d.processing_regions)
            }
            Record::Completion(c) => {
                if !decisions.contains(&c.decision_id) {
                    return Err(at("completion of a decision that is not in the bundle"));
                }
                s.completions += 1;
                (&c.ts, &c.processing_regions)
            }
        };
        s.processing_regions.extend(regions.iter().cloned());
        if let Some(t) = ts_key(ts) {
            if first.is_none_or(|f| t < f) {
                first = Some(t);
                s.first_ts = Some(ts.clone());
            }
            if last.is_none_or(|l| t > l) {
                last = Some(t);
                s.last_ts = Some(ts.clone());
            }
        }
        let sealed = match &rec {
            Record::Decision(d) => match &d.payload {
                Payload::Encrypted { key_id, .. } => Some((d, key_id)),
                _ => None,
            },
            Record::Completion(_) => None,
        };
        if sealed.is_some() {
            s.payloads_encrypted += 1;
        }
        match (sealed.filter(|_| m.filter.decrypt), &r.payload) {
            (None, None) => {}
            (None, Some(_)) => {
                return Err(at(
                    "carries a payload field, but decryption was not asked or the record has no encrypted payload",
                ));
            }
            (Some(_), None) => return Err(at("the decrypted payload (or why it is unavailable) is missing")),
            (Some((d, key_id)), Some(PayloadExport::Decrypted { encoding, data })) => {
                let at = |what: &str| at(&format!("decision {}: {what}", d.decision_id));
                let shown = match encoding.as_str() {
                    "utf8" => Some(data.as_bytes().to_vec()),
                    "base64" => B64.decode(data).ok(),
                    _ => None,
                }
                .ok_or_else(|| at("decrypted payload has a bad encoding"))?;
                let Some((key, used)) = keys.get_mut(key_id.as_str()) else {
                    return Err(at(&format!(
                        "no key in the bundle for a decrypted payload (key id {}); a bundle exported \
                         before payload keys were included cannot have its plaintext checked: export it again",
                        clip(key_id)
                    )));
                };
                let plain = open_payload_with_key(key, &m.jurisdiction, &d.payload).map_err(|_| {
                    at(&format!(
                        "the bundle's data key for key id {} does not open the record's ciphertext",
                        clip(key_id)
                    ))
                })?;
                if plain != shown {
                    return Err(at("decrypted payload does not match the record's ciphertext"));
                }
                *used = true;
                s.payloads_decrypted += 1;
            }
            (Some((d, key_id)), Some(PayloadExport::Unavailable { .. })) => {
                // Unverifiable by nature when the key is gone; but if the bundle carries the key
                // and it opens the ciphertext, the payload was available and is being withheld.
                if let Some((key, _)) = keys.get(key_id.as_str())
                    && open_payload_with_key(key, &m.jurisdiction, &d.payload).is_ok()
                {
                    return Err(at(&format!(
                        "decision {}: payload marked unavailable, but the bundle carries its key and it \
                         decrypts the record's ciphertext",
                        d.decision_id
                    )));
                }
                s.payloads_unavailable += 1;
            }
        }
    }
    for (k, e) in bundle.keys.iter().enumerate() {
        if e.jurisdiction != m.jurisdiction {
            return Err(tampered(format!(
                "keys[{k}] (key id {}): a key of jurisdiction {} in a bundle of jurisdiction {}",
                clip(&e.key_id),
                clip(&e.jurisdiction),
                m.jurisdiction
            )));
        }
    }
    if let Some((key_id, _)) = keys.iter().find(|(_, (_, used))| !used) {
        return Err(tampered(format!(
            "keys: the data key for key id {} decrypts no payload shown in the bundle (a bundle carries \
             only the keys of the payloads it decrypts)",
            clip(key_id)
        )));
    }
    let have = Counts {
        records: s.records,
        decisions: s.decisions,
        completions: s.completions,
        payloads_decrypted: s.payloads_decrypted,
        payloads_unavailable: s.payloads_unavailable,
    };
    let want = &m.counts;
    for (name, said, found) in [
        ("records", want.records, have.records),
        ("decisions", want.decisions, have.decisions),
        ("completions", want.completions, have.completions),
        (
            "payloads_decrypted",
            want.payloads_decrypted,
            have.payloads_decrypted,
        ),
        (
            "payloads_unavailable",
            want.payloads_unavailable,
            have.payloads_unavailable,
        ),
    ] {
        if said != found {
            return Err(tampered(format!(
                "manifest: counts.{name} says {said} but the bundle holds {found}"
            )));
        }
    }
    Ok(s)
}

/// [`verify_bundle`], and the bundle's verifier key must be `trusted_vkey` (the store's key,
/// obtained independently of the bundle).
pub fn verify_bundle_with_key(bundle: &Bundle, trusted_vkey: &str) -> Result<BundleSummary, BundleError> {
    let trusted = NoteVerifier::parse(trusted_vkey).map_err(ProofError::from)?;
    match NoteVerifier::parse(&bundle.vkey) {
        Ok(v) if v == trusted => verify_bundle(bundle),
        Ok(_) => Err(tampered("vkey: the bundle's verifier key is not the trusted key")),
        Err(e) => Err(tampered(format!("vkey: {e}"))),
    }
}

/// The bodies of the fuzz targets in `fuzz/` (also run by the crate's tests on stable).
#[doc(hidden)]
pub mod fuzz {
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Write `data` as the only segment of a fresh store directory, then verify and read it: must
    /// return (Ok or Err), never panic, and agree with each other.
    pub fn segment_reader(data: &[u8]) {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cordon-fuzz-segment-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        if std::fs::create_dir_all(&dir).is_err()
            || std::fs::write(dir.join(crate::segment::segment_name(0)), data).is_err()
        {
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        let verified = crate::verify_store(&dir);
        let read = crate::read_records(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        match (verified, read) {
            (Ok(report), Ok(records)) => assert_eq!(report.records, records.len() as u64),
            (Err(_), Err(_)) => {}
            (v, r) => panic!(
                "verify_store and read_records disagree: {:?} vs {:?}",
                v.is_ok(),
                r.is_ok()
            ),
        }
    }

    /// Parse `data` as a bundle; verify it if it parsed. Must never panic.
    pub fn bundle_reader(data: &[u8]) {
        if let Ok(b) = super::parse_bundle(data) {
            let _ = super::verify_bundle(&b);
        }
    }
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod tests;

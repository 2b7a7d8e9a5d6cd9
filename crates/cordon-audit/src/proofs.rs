//! Inclusion and consistency proofs of a [`crate::FileStore`] as self-contained JSON bundles that
//! verify offline with nothing but the store's verifier key (`checkpoint.vkey`).
//!
//! Generating a proof reads and verifies the store (O(records): the tree is rebuilt from the
//! frame bodies); verifying a bundle is O(log n).

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::VerifyError;
use crate::merkle::{self, Hash, MerkleError};
use crate::note::{NoteError, NoteVerifier};
use crate::segment;
use crate::tlog;

/// Proof that one record is in the log attested by a signed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionBundle {
    /// The record's frame body (the Merkle leaf data), base64.
    pub leaf: String,
    pub index: u64,
    /// The size of the checkpoint the proof is against.
    pub tree_size: u64,
    /// The audit path, base64 hashes, leaf to root.
    pub path: Vec<String>,
    /// The signed checkpoint (C2SP note text).
    pub checkpoint: String,
}

/// Proof that the log at `old_size` is a prefix of the log at `new_size`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyBundle {
    pub old_size: u64,
    pub new_size: u64,
    /// Base64 hashes (RFC 9162 §2.1.4).
    pub proof: Vec<String>,
    /// The signed checkpoints at both sizes.
    pub old_checkpoint: String,
    pub new_checkpoint: String,
}

/// Why a proof could not be made or a bundle did not verify.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("audit store {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint: {0}")]
    Note(#[from] NoteError),
    #[error("merkle proof: {0}")]
    Merkle(#[from] MerkleError),
    #[error("{0}")]
    Invalid(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ProofError + '_ {
    move |source| ProofError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The leaf hashes of the first `size` records (after verifying the whole chain), and the body
/// of record `want`.
fn leaves_of(dir: &Path, size: u64, want: Option<u64>) -> Result<(Vec<Hash>, Vec<u8>), ProofError> {
    let mut leaves = Vec::new();
    let mut wanted = Vec::new();
    crate::verify::read_bodies(dir, |i, body| {
        if i < size {
            leaves.push(merkle::leaf_hash(body));
        }
        if Some(i) == want {
            wanted = body.to_vec();
        }
    })?;
    if (leaves.len() as u64) < size {
        return Err(ProofError::Invalid(format!(
            "a checkpoint attests {size} records but the store holds {}",
            leaves.len()
        )));
    }
    Ok((leaves, wanted))
}

/// The signed checkpoint of `size`: the store's own, else a publication target's (`external`).
fn read_checkpoint(dir: &Path, external: &[PathBuf], size: u64) -> Result<(String, Checkpoint), ProofError> {
    let name = tlog::ckpt_name(size);
    let own = dir.join(tlog::CKPT_DIR).join(&name);
    let path = std::iter::once(own.clone())
        .chain(external.iter().map(|t| t.join(tlog::CKPT_DIR).join(&name)))
        .find(|p| p.exists())
        .unwrap_or(own);
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    let vkey_path = dir.join(tlog::VKEY_FILE);
    let vkey = fs::read_to_string(&vkey_path).map_err(io_err(&vkey_path))?;
    let c = Checkpoint::open(text.as_bytes(), &[NoteVerifier::parse(vkey.trim_end())?])?;
    Ok((text, c))
}

/// The store's verifier key (`<store>/checkpoint.vkey`), checked to be well-formed: what
/// [`verify_inclusion_bundle`] and [`verify_consistency_bundle`] need, e.g. for an export.
pub fn read_verifier_key(dir: &Path) -> Result<String, ProofError> {
    let path = dir.join(tlog::VKEY_FILE);
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    Ok(NoteVerifier::parse(text.trim_end())?.to_string())
}

fn b64_hashes(hs: &[Hash]) -> Vec<String> {
    hs.iter().map(|h| B64.encode(h)).collect()
}

fn parse_hashes(hs: &[String]) -> Result<Vec<Hash>, ProofError> {
    hs.iter()
        .map(|s| {
            B64.decode(s)
                .ok()
                .and_then(|v| <Hash>::try_from(v).ok())
                .ok_or_else(|| ProofError::Invalid("a proof hash is not base64 of 32 bytes".into()))
        })
        .collect()
}

/// Verify the whole store against its own and the published checkpoints before proving anything
/// from it: a log rewritten along with its local checkpoints would otherwise prove its own story.
fn verify_against(dir: &Path, external: &[PathBuf]) -> Result<(), ProofError> {
    let opts = crate::verify::VerifyOptions {
        external: external.to_vec(),
        progress: None,
    };
    crate::verify::retry_truncated(|| crate::verify::verify_store_with(dir, &opts))?;
    Ok(())
}

/// The newest signed checkpoint of the store or of its publication targets (`external`): its
/// size and file. The published ones count because a store's own can be deleted by whoever
/// rewrites it; the published ones are out of its reach.
pub fn newest_checkpoint(dir: &Path, external: &[PathBuf]) -> Result<Option<(u64, PathBuf)>, ProofError> {
    let mut newest: Option<(u64, PathBuf)> = None;
    for place in std::iter::once(dir).chain(external.iter().map(PathBuf::as_path)) {
        if place != dir && !place.join(tlog::CKPT_DIR).exists() {
            continue;
        }
        let sizes = tlog::list_checkpoints(place).map_err(io_err(place))?;
        // At equal sizes a published copy wins: it is the one out of a rewriter's reach.
        if let Some((&size, path)) = sizes.last_key_value()
            && newest.as_ref().is_none_or(|(n, _)| size >= *n)
        {
            newest = Some((size, path.clone()));
        }
    }
    Ok(newest)
}

/// Prove record `index` against the newest checkpoint, the store's or a publication target's
/// (`external`), which must cover it.
pub fn prove_inclusion(dir: &Path, external: &[PathBuf], index: u64) -> Result<InclusionBundle, ProofError> {
    verify_against(dir, external)?;
    let Some(size) = newest_checkpoint(dir, external)?
        .map(|(s, _)| s)
        .filter(|s| *s > index)
    else {
        return Err(ProofError::Invalid(format!(
            "no checkpoint covers record {index} yet (it is in the unattested tail)"
        )));
    };
    let (text, c) = read_checkpoint(dir, external, size)?;
    let (leaves, body) = leaves_of(dir, size, Some(index))?;
    if merkle::root(&leaves[..size as usize]) != c.root {
        return Err(ProofError::Invalid(format!(
            "the records do not match the checkpoint at size {size}"
        )));
    }
    inclusion_bundle(&leaves[..size as usize], index, &body, text)
}

/// The inclusion proof of record `index` (whose body is `body`) in the tree of `leaves`, under
/// `checkpoint` (the signed note of that tree): for logs kept elsewhere, such as a PostgreSQL
/// chain. Check it with [`verify_inclusion_bundle`].
pub fn inclusion_bundle(
    leaves: &[Hash],
    index: u64,
    body: &[u8],
    checkpoint: String,
) -> Result<InclusionBundle, ProofError> {
    let path = merkle::inclusion_proof(leaves, index)?;
    Ok(InclusionBundle {
        leaf: B64.encode(body),
        index,
        tree_size: leaves.len() as u64,
        path: b64_hashes(&path),
        checkpoint,
    })
}

/// Prove that the log at `old_size` is a prefix of the log at `new_size`; both sizes must have a
/// checkpoint, the store's own or a publication target's (`external`).
pub fn prove_consistency(
    dir: &Path,
    external: &[PathBuf],
    old_size: u64,
    new_size: u64,
) -> Result<ConsistencyBundle, ProofError> {
    if old_size > new_size {
        return Err(MerkleError::SizeOutOfRange {
            old: old_size,
            new: new_size,
        }
        .into());
    }
    verify_against(dir, external)?;
    let (old_text, _) = read_checkpoint(dir, external, old_size)?;
    let (new_text, new_c) = read_checkpoint(dir, external, new_size)?;
    let (leaves, _) = leaves_of(dir, new_size, None)?;
    let leaves = &leaves[..new_size as usize];
    if merkle::root(leaves) != new_c.root {
        return Err(ProofError::Invalid(format!(
            "the records do not match the checkpoint at size {new_size}"
        )));
    }
    consistency_bundle(leaves, old_size, old_text, new_text)
}

/// The consistency proof from the first `old_size` of `leaves` to all of them, with the signed
/// notes of both trees: for logs kept elsewhere, such as a PostgreSQL chain. Check it with
/// [`verify_consistency_bundle`].
pub fn consistency_bundle(
    leaves: &[Hash],
    old_size: u64,
    old_checkpoint: String,
    new_checkpoint: String,
) -> Result<ConsistencyBundle, ProofError> {
    let proof = merkle::consistency_proof(leaves, old_size)?;
    Ok(ConsistencyBundle {
        old_size,
        new_size: leaves.len() as u64,
        proof: b64_hashes(&proof),
        old_checkpoint,
        new_checkpoint,
    })
}

/// Verify an inclusion bundle offline against the store's verifier key.
pub fn verify_inclusion_bundle(b: &InclusionBundle, vkey: &str) -> Result<(), ProofError> {
    let v = NoteVerifier::parse(vkey.trim_end())?;
    let c = Checkpoint::open(b.checkpoint.as_bytes(), &[v])?;
    if c.size != b.tree_size {
        return Err(ProofError::Invalid(format!(
            "bundle claims tree size {} but its checkpoint is for {}",
            b.tree_size, c.size
        )));
    }
    let leaf = B64
        .decode(&b.leaf)
        .map_err(|_| ProofError::Invalid("leaf is not base64".into()))?;
    match segment::parse_envelope(&leaf) {
        Some(env) if env.index == b.index => {}
        _ => {
            return Err(ProofError::Invalid(format!(
                "leaf is not the record envelope of index {}",
                b.index
            )));
        }
    }
    let path = parse_hashes(&b.path)?;
    merkle::verify_inclusion(&merkle::leaf_hash(&leaf), b.index, c.size, &path, &c.root)?;
    Ok(())
}

/// Verify a consistency bundle offline against the store's verifier key.
pub fn verify_consistency_bundle(b: &ConsistencyBundle, vkey: &str) -> Result<(), ProofError> {
    let v = [NoteVerifier::parse(vkey.trim_end())?];
    let old = Checkpoint::open(b.old_checkpoint.as_bytes(), &v)?;
    let new = Checkpoint::open(b.new_checkpoint.as_bytes(), &v)?;
    if old.size != b.old_size || new.size != b.new_size {
        return Err(ProofError::Invalid(
            "bundle sizes differ from its checkpoints".into(),
        ));
    }
    if old.origin != new.origin {
        return Err(ProofError::Invalid(
            "the checkpoints have different origins".into(),
        ));
    }
    let proof = parse_hashes(&b.proof)?;
    merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &proof)?;
    Ok(())
}

//! Offline verification of a store: every frame whole and CRC-clean, every body a record envelope
//! holding a valid record, indices contiguous from 0 across segments, and every `prev` equal to the
//! entry hash of the record before it. Finds modification, removal and reordering anywhere.
//!
//! The Merkle tree over the frame bodies is recomputed on the way and compared with every signed
//! checkpoint: the store's own (`checkpoints/*.ckpt`, against `checkpoint.vkey`) and those
//! published elsewhere ([`VerifyOptions::external`]). That closes what the chain alone cannot
//! see: records dropped from the end ([`BreakKind::RemovedTail`]) or rewritten at the end
//! ([`BreakKind::CheckpointMismatch`]). Records after the newest checkpoint are reported as the
//! unattested tail ([`VerifyReport::unattested`]): normal for a live store (checkpoints follow
//! within `checkpoint_interval`), suspicious for a closed one (it writes a final checkpoint).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::error::{BreakKind, VerifyError, describe_json_error};
use crate::merkle::{self, Frontier, Hash};
use crate::note::NoteVerifier;
use crate::record::Record;
use crate::segment::{self, Fault, Frames, ZERO_HASH};
use crate::tlog;

/// What a successful verification saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub decisions: u64,
    pub completions: u64,
    /// Hex entry hash of the last record (64 zeros for an empty store).
    pub head_hash: String,
    /// Signed checkpoint files checked (local and external).
    pub checkpoints: u64,
    /// Hex RFC 6962 root of the Merkle tree over all records.
    pub tree_root: String,
    /// Records after the newest valid checkpoint (not an error by itself).
    pub unattested: u64,
}

/// Options of [`verify_store_with`].
#[derive(Default)]
pub struct VerifyOptions<'a> {
    /// Publication targets (directories holding `latest.ckpt` and `checkpoints/*.ckpt`).
    pub external: Vec<PathBuf>,
    /// Called now and then with (bytes verified, total segment bytes).
    pub progress: Option<&'a dyn Fn(u64, u64)>,
}

/// Verify the whole store in `dir`, with its own checkpoints.
pub fn verify_store(dir: &Path) -> Result<VerifyReport, VerifyError> {
    verify_store_with(dir, &VerifyOptions::default())
}

/// A checkpoint to compare with the tree: where it came from and what it claims.
struct Claim {
    file: PathBuf,
    root: Hash,
}

/// Verify the whole store in `dir` and every checkpoint, local and external.
pub fn verify_store_with(dir: &Path, opts: &VerifyOptions<'_>) -> Result<VerifyReport, VerifyError> {
    let claims = load_claims(dir, &opts.external)?;
    let checkpoints = claims.values().map(|v| v.len() as u64).sum();
    let mut report = VerifyReport {
        records: 0,
        decisions: 0,
        completions: 0,
        head_hash: String::new(),
        checkpoints,
        tree_root: String::new(),
        unattested: 0,
    };
    let mut tree = Frontier::new();
    let mut mismatch: Option<(u64, PathBuf)> = None;
    let mut check = |tree: &Frontier| {
        if mismatch.is_none()
            && let Some(cs) = claims.get(&tree.size())
        {
            let root = tree.root();
            if let Some(c) = cs.iter().find(|c| c.root != root) {
                mismatch = Some((tree.size(), c.file.clone()));
            }
        }
    };
    check(&tree);
    let head = walk(dir, opts.progress, parse_kind, |_, is_decision, _, leaf| {
        report.records += 1;
        if is_decision {
            report.decisions += 1;
        } else {
            report.completions += 1;
        }
        tree.push_hash(*leaf);
        check(&tree);
    })?;
    let ckpt_err = |file: &Path, size: u64, kind: BreakKind| VerifyError::Broken {
        store: dir.to_path_buf(),
        segment: file.display().to_string(),
        offset: 0,
        index: size,
        kind,
    };
    if let Some((size, file)) = mismatch {
        return Err(ckpt_err(&file, size, BreakKind::CheckpointMismatch { size }));
    }
    if let Some((&size, cs)) = claims.last_key_value()
        && size > report.records
    {
        return Err(ckpt_err(
            &cs[0].file,
            report.records,
            BreakKind::RemovedTail {
                published_size: size,
                found: report.records,
            },
        ));
    }
    report.head_hash = hex::encode(head);
    report.tree_root = hex::encode(tree.root());
    report.unattested = report.records - claims.last_key_value().map_or(0, |(s, _)| *s);
    Ok(report)
}

/// Every signed checkpoint of the store and of the external targets, by size; each verified
/// against the store's `checkpoint.vkey` (and named for its size, for files in `checkpoints/`).
fn load_claims(dir: &Path, external: &[PathBuf]) -> Result<BTreeMap<u64, Vec<Claim>>, VerifyError> {
    let io_err = |path: &Path| {
        let store = dir.to_path_buf();
        let path = path.to_path_buf();
        move |source| VerifyError::Io { store, path, source }
    };
    let bad = |file: &Path, detail: String| VerifyError::Broken {
        store: dir.to_path_buf(),
        segment: file.display().to_string(),
        offset: 0,
        index: 0,
        kind: BreakKind::BadCheckpoint { detail },
    };
    let mut files: Vec<(Option<u64>, PathBuf)> = Vec::new();
    for (size, p) in tlog::list_checkpoints(dir).map_err(io_err(dir))? {
        files.push((Some(size), p));
    }
    for t in external {
        if !t.is_dir() {
            return Err(io_err(t)(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "publication target is not a directory",
            )));
        }
        let latest = t.join(tlog::LATEST);
        if latest.exists() {
            files.push((None, latest));
        }
        for (size, p) in tlog::list_checkpoints(t).map_err(io_err(t))? {
            files.push((Some(size), p));
        }
    }
    let mut claims: BTreeMap<u64, Vec<Claim>> = BTreeMap::new();
    if files.is_empty() {
        return Ok(claims);
    }
    let vkey_path = dir.join(tlog::VKEY_FILE);
    let vkey = fs::read_to_string(&vkey_path).map_err(io_err(&vkey_path))?;
    let verifier = NoteVerifier::parse(vkey.trim_end()).map_err(|e| bad(&vkey_path, e.to_string()))?;
    for (named, file) in files {
        let bytes = fs::read(&file).map_err(io_err(&file))?;
        let c = Checkpoint::open(&bytes, std::slice::from_ref(&verifier))
            .map_err(|e| bad(&file, format!("not a valid checkpoint of this store: {e}")))?;
        if c.origin != verifier.name() {
            return Err(bad(&file, format!("origin {:?} is not this store's", c.origin)));
        }
        if let Some(n) = named
            && n != c.size
        {
            return Err(bad(
                &file,
                format!("file is named for size {n} but holds size {}", c.size),
            ));
        }
        claims
            .entry(c.size)
            .or_default()
            .push(Claim { file, root: c.root });
    }
    Ok(claims)
}

/// Every record with its index, after verifying the store exactly as [`verify_store`] does.
pub fn read_records(dir: &Path) -> Result<Vec<(u64, Record)>, VerifyError> {
    let mut out = Vec::new();
    walk(dir, None, parse_record, |i, rec, _, _| out.push((i, rec)))?;
    Ok(out)
}

/// Every frame body (the Merkle leaf data), after verifying the chain.
pub(crate) fn read_bodies(dir: &Path, mut visit: impl FnMut(u64, &[u8])) -> Result<(), VerifyError> {
    walk(dir, None, parse_kind, |i, _, body, _| visit(i, body))?;
    Ok(())
}

/// Parse a record. The writer puts `kind` first, so the variant can be deserialized directly
/// (much faster than serde's buffering of internally tagged enums); anything else takes the
/// general path, which also produces the error.
fn parse_record(rec: &[u8]) -> Result<Record, String> {
    if rec.starts_with(br#"{"kind":"decision","#)
        && let Ok(d) = serde_json::from_slice(rec)
    {
        return Ok(Record::Decision(d));
    }
    if rec.starts_with(br#"{"kind":"completion","#)
        && let Ok(c) = serde_json::from_slice(rec)
    {
        return Ok(Record::Completion(c));
    }
    serde_json::from_slice(rec).map_err(|e| describe_json_error(&e))
}

/// Validate a record fully, keep only its kind.
fn parse_kind(rec: &[u8]) -> Result<bool, String> {
    parse_record(rec).map(|r| matches!(r, Record::Decision(_)))
}

/// What the parallel pass computes for one frame.
struct Item<T> {
    offset: usize,
    end: usize,
    /// (index, prev) from the envelope; `None` if the body is not an envelope.
    env: Option<(u64, [u8; 32])>,
    entry: [u8; 32],
    leaf: Hash,
    rec: Result<T, String>,
}

fn precompute<T>(
    data: &[u8],
    frames: &[(usize, usize)],
    parse: fn(&[u8]) -> Result<T, String>,
) -> Vec<Item<T>> {
    frames
        .iter()
        .map(|&(offset, end)| {
            let body = &data[offset + segment::HEADER..end];
            match segment::parse_envelope(body) {
                Some(env) => Item {
                    offset,
                    end,
                    env: Some((env.index, env.prev)),
                    entry: segment::entry_hash(&env.prev, body),
                    leaf: merkle::leaf_hash(body),
                    rec: parse(env.rec),
                },
                None => Item {
                    offset,
                    end,
                    env: None,
                    entry: ZERO_HASH,
                    leaf: ZERO_HASH,
                    rec: Err(String::new()),
                },
            }
        })
        .collect()
}

/// Parse, hash and deserialize the frames on all cores (each record's entry hash depends only on
/// its own bytes, the link check is done in order afterwards).
fn precompute_parallel<T: Send>(
    data: &[u8],
    frames: &[(usize, usize)],
    parse: fn(&[u8]) -> Result<T, String>,
) -> Vec<Vec<Item<T>>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if threads < 2 || frames.len() < 2048 {
        return vec![precompute(data, frames, parse)];
    }
    let chunk = frames.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = frames
            .chunks(chunk)
            .map(|c| s.spawn(move || precompute(data, c, parse)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Walk and check every record in order; returns the head hash. `visit` gets each record's
/// index, parsed value, body and leaf hash.
fn walk<T: Send>(
    dir: &Path,
    progress: Option<&dyn Fn(u64, u64)>,
    parse: fn(&[u8]) -> Result<T, String>,
    mut visit: impl FnMut(u64, T, &[u8], &Hash),
) -> Result<[u8; 32], VerifyError> {
    let io_err = |path: &Path| {
        let store = dir.to_path_buf();
        let path = path.to_path_buf();
        move |source| VerifyError::Io { store, path, source }
    };
    let segs = segment::list_segments(dir).map_err(io_err(dir))?;
    let total: u64 = match progress {
        Some(_) => segs
            .iter()
            .filter_map(|(_, p)| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum(),
        None => 0,
    };
    let mut done = 0u64;
    let mut expected: u64 = 0;
    let mut head = ZERO_HASH;
    // One buffer for every segment: fresh 64 MiB allocations cost more in page faults than the
    // CRCs of their contents.
    let mut data = Vec::new();
    for (start, path) in segs {
        data.clear();
        fs::File::open(&path)
            .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut data))
            .map_err(io_err(&path))?;
        let data = &data[..];
        let segment_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let broken = |offset: usize, index: u64, kind: BreakKind| VerifyError::Broken {
            store: dir.to_path_buf(),
            segment: segment_name.clone(),
            offset: offset as u64,
            index,
            kind,
        };
        // Framing and CRCs (cheap, sequential), then the expensive part on all cores.
        let mut frames = Vec::new();
        let mut fault = None;
        for frame in Frames::new(data) {
            match frame {
                Ok(f) => frames.push((f.offset, f.end)),
                Err(e) => fault = Some(e),
            }
        }
        let items = precompute_parallel(data, &frames, parse);
        let mut first = true;
        for item in items.into_iter().flatten() {
            let body = &data[item.offset + segment::HEADER..item.end];
            let Some((index, prev)) = item.env else {
                return Err(broken(
                    item.offset,
                    expected,
                    BreakKind::BadJson {
                        detail: "the body is not a record envelope".into(),
                    },
                ));
            };
            if index != expected {
                return Err(broken(
                    item.offset,
                    expected,
                    BreakKind::RemovedOrReordered {
                        expected,
                        found: index,
                    },
                ));
            }
            if first && start != index {
                return Err(broken(
                    item.offset,
                    expected,
                    BreakKind::MisnamedSegment {
                        named: start,
                        found: index,
                    },
                ));
            }
            first = false;
            if prev != head {
                return Err(broken(item.offset, expected, BreakKind::Modified));
            }
            let rec = item
                .rec
                .map_err(|detail| broken(item.offset, expected, BreakKind::BadJson { detail }))?;
            head = item.entry;
            visit(expected, rec, body, &item.leaf);
            expected += 1;
        }
        if let Some((offset, fault)) = fault {
            let kind = match fault {
                Fault::Truncated => BreakKind::Truncated,
                Fault::BadLength(len) => BreakKind::BadFraming { len },
                Fault::BadCrc => BreakKind::BadCrc,
            };
            return Err(broken(offset, expected, kind));
        }
        done += data.len() as u64;
        if let Some(p) = progress {
            p(done, total);
        }
    }
    Ok(head)
}

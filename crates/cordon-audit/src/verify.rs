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
//! within `checkpoint_interval`) or after a crash. A store closed cleanly says so with a signed
//! close marker ([`crate::marker`]): records beyond it with no open marker after it were written
//! while the store was closed, and fail as [`BreakKind::Forged`].

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};

use crate::checkpoint::Checkpoint;
use crate::error::{BreakKind, VerifyError, describe_json_error};
use crate::marker;
use crate::merkle::{Frontier, Hash, Subtrees};
use crate::note::NoteVerifier;
use crate::record::{CallerRecord, Evidence, Latency, Outcome, Payload, Record};
use crate::record_check;
use crate::segment::{self, Fault, ZERO_HASH};
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
    let mut claims = load_claims(dir, &opts.external)?;
    let checkpoints = claims.values().map(|v| v.len() as u64).sum();
    // Close and open markers sign a size and root too: the tree must match them.
    for f in load_markers(dir, &opts.external)? {
        claims.entry(f.marker.size).or_default().push(Claim {
            file: f.path,
            root: f.marker.root,
        });
    }
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
    // The workers hash each run's subtrees; here they are appended whole, stopping exactly at
    // every checkpoint size inside the run to compare its root.
    let mut extend = |run: &Subtrees| {
        assert_eq!(
            tree.size(),
            run.start(),
            "runs arrive in order, after their records"
        );
        let stops: Vec<u64> = claims
            .range(run.start() + 1..=run.end())
            .map(|(s, _)| *s)
            .collect();
        for size in stops {
            tree.extend_from(run, size);
            check(&tree);
        }
        tree.extend_from(run, run.end());
    };
    let head = walk(
        dir,
        opts.progress,
        parse_kind,
        |_, is_decision, _| {
            report.records += 1;
            if is_decision {
                report.decisions += 1;
            } else {
                report.completions += 1;
            }
        },
        Some(&mut extend),
    )?;
    let ckpt_err = |file: &Path, size: u64, kind: BreakKind| VerifyError::Broken {
        store: dir.to_path_buf(),
        segment: file.display().to_string(),
        offset: 0,
        index: size,
        kind,
    };
    if let Some((size, file)) = mismatch {
        // At the last record the checkpoint covers: one of records 0..size differs from it.
        return Err(ckpt_err(
            &file,
            size.saturating_sub(1),
            BreakKind::CheckpointMismatch { size },
        ));
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
    // Read again after the walk: a writer that opened meanwhile wrote its open marker before the
    // records the walk may have seen, so they are never taken for forged.
    if let Some(f) = marker::forged_after(&load_markers(dir, &opts.external)?, report.records) {
        let closed_at = f.marker.size;
        let (segment, offset) = locate(dir, closed_at);
        return Err(VerifyError::Broken {
            store: dir.to_path_buf(),
            segment,
            offset,
            index: closed_at,
            kind: BreakKind::Forged {
                closed_at,
                found: report.records,
                marker: f.path.display().to_string(),
            },
        });
    }
    report.head_hash = hex::encode(head);
    report.tree_root = hex::encode(tree.root());
    report.unattested = report.records - claims.last_key_value().map_or(0, |(s, _)| *s);
    Ok(report)
}

/// Every close and open marker of the store and of the external targets ([`crate::marker`]),
/// verified against the store's `checkpoint.vkey`, by sequence number. A marker that does not
/// verify is reported ([`BreakKind::BadMarker`]), never trusted.
fn load_markers(dir: &Path, external: &[PathBuf]) -> Result<Vec<marker::Found>, VerifyError> {
    let places: Vec<&Path> = std::iter::once(dir)
        .chain(external.iter().map(PathBuf::as_path))
        .collect();
    if !places.iter().any(|p| p.join(marker::MARKER_DIR).exists()) {
        return Ok(Vec::new());
    }
    let conv = |e: marker::MarkerError| match e {
        marker::MarkerError::Io { path, source } => VerifyError::Io {
            store: dir.to_path_buf(),
            path,
            source,
        },
        marker::MarkerError::Bad { path, detail } => VerifyError::Broken {
            store: dir.to_path_buf(),
            segment: path.display().to_string(),
            offset: 0,
            index: 0,
            kind: BreakKind::BadMarker { detail },
        },
    };
    let vkey_path = dir.join(tlog::VKEY_FILE);
    let vkey = fs::read_to_string(&vkey_path).map_err(|source| VerifyError::Io {
        store: dir.to_path_buf(),
        path: vkey_path.clone(),
        source,
    })?;
    let verifier = NoteVerifier::parse(vkey.trim_end()).map_err(|e| {
        conv(marker::MarkerError::Bad {
            path: vkey_path.clone(),
            detail: e.to_string(),
        })
    })?;
    let mut found = Vec::new();
    for p in places {
        found.push(marker::read_place(p, &verifier).map_err(conv)?);
    }
    marker::merge(found).map_err(conv)
}

/// The segment file name and byte offset of record `index` (for a report; best effort).
fn locate(dir: &Path, index: u64) -> (String, u64) {
    let segs = segment::list_segments(dir).unwrap_or_default();
    let Some((start, path)) = segs.iter().rev().find(|(s, _)| *s <= index) else {
        return (String::new(), 0);
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let data = fs::read(path).unwrap_or_default();
    let skip = usize::try_from(index - start).unwrap_or(usize::MAX);
    let offset = segment::Frames::new(&data)
        .nth(skip)
        .and_then(Result::ok)
        .map_or(0, |f| f.offset as u64);
    (name, offset)
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
    let own = files.len();
    for t in external {
        if !t.is_dir() {
            return Err(io_err(t)(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "publication target is not a directory",
            )));
        }
        let before = files.len();
        let latest = t.join(tlog::LATEST);
        if latest.exists() {
            files.push((None, latest));
        }
        for (size, p) in tlog::list_checkpoints(t).map_err(io_err(t))? {
            files.push((Some(size), p));
        }
        // A store that signs checkpoints publishes each: a target holding none was emptied (or
        // is not this store's), and checking against it would check nothing.
        if own > 0 && files.len() == before {
            return Err(bad(
                t,
                "the publication target holds none of the store's checkpoints: it was emptied, is \
                 not this store's target, or was added so recently that no checkpoint reached it \
                 yet (the next one, within a second of the next records, does)"
                    .into(),
            ));
        }
    }
    let mut claims: BTreeMap<u64, Vec<Claim>> = BTreeMap::new();
    if files.is_empty() {
        return Ok(claims);
    }
    let vkey_path = dir.join(tlog::VKEY_FILE);
    let vkey = fs::read_to_string(&vkey_path).map_err(io_err(&vkey_path))?;
    let verifier = NoteVerifier::parse(vkey.trim_end()).map_err(|e| bad(&vkey_path, e.to_string()))?;
    let open = |named: Option<u64>, file: &Path| -> Result<(u64, Claim), VerifyError> {
        let bytes = fs::read(file).map_err(io_err(file))?;
        let c = Checkpoint::open(&bytes, std::slice::from_ref(&verifier))
            .map_err(|e| bad(file, format!("not a valid checkpoint of this store: {e}")))?;
        if c.origin != verifier.name() {
            return Err(bad(file, format!("origin {:?} is not this store's", c.origin)));
        }
        if let Some(n) = named
            && n != c.size
        {
            return Err(bad(
                file,
                format!("file is named for size {n} but holds size {}", c.size),
            ));
        }
        let claim = Claim {
            file: file.to_path_buf(),
            root: c.root,
        };
        Ok((c.size, claim))
    };
    // A store has a checkpoint per ~1,000 records: at ~50 µs per Ed25519 signature, checking them
    // one by one would keep one core busy and the other idle before the walk starts. Results are
    // taken in file order, so the first bad file reported is the same.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let opened: Vec<Result<(u64, Claim), VerifyError>> = if threads < 2 || files.len() < 64 {
        files.iter().map(|(n, f)| open(*n, f)).collect()
    } else {
        std::thread::scope(|s| {
            let open = &open;
            let parts: Vec<_> = files
                .chunks(files.len().div_ceil(threads))
                .map(|part| s.spawn(move || part.iter().map(|(n, f)| open(*n, f)).collect::<Vec<_>>()))
                .collect();
            parts
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    };
    for r in opened {
        let (size, claim) = r?;
        claims.entry(size).or_default().push(claim);
    }
    Ok(claims)
}

/// Every record with its index, after checking framing, checksums, records and the hash chain as
/// [`verify_store`] does, but not the Merkle tree against the checkpoints: a record rewritten
/// with its chain rebuilt passes here. For what is shown to a person as the log, use
/// [`read_verified_records`].
pub fn read_records(dir: &Path) -> Result<Vec<(u64, Record)>, VerifyError> {
    let mut out = Vec::new();
    walk(dir, None, parse_record, |i, rec, _| out.push((i, rec)), None)?;
    Ok(out)
}

/// Every record with its index, after verifying the whole store with `opts` (its checkpoints and
/// markers, local and published) exactly as [`verify_store_with`] does.
pub fn read_verified_records(
    dir: &Path,
    opts: &VerifyOptions<'_>,
) -> Result<Vec<(u64, Record)>, VerifyError> {
    // A store being written may show its in-flight batch half-written: read again then.
    retry_truncated(|| {
        verify_store_with(dir, opts)?;
        read_records(dir)
    })
}

/// Run `f` again (up to three times) when it finds a truncated frame: on a store that is being
/// written, a verifier may read the in-flight batch half-written.
pub(crate) fn retry_truncated<T>(mut f: impl FnMut() -> Result<T, VerifyError>) -> Result<T, VerifyError> {
    let mut tries = 0;
    loop {
        match f() {
            Err(e) if tries < 3 && matches!(e.kind(), Some(BreakKind::Truncated)) => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// Every frame body (the Merkle leaf data), after verifying the chain.
pub(crate) fn read_bodies(dir: &Path, mut visit: impl FnMut(u64, &[u8])) -> Result<(), VerifyError> {
    walk(dir, None, parse_kind, |i, _, body| visit(i, body), None)?;
    Ok(())
}

/// Parse a record. The writer puts `kind` first, so the variant can be deserialized directly
/// (much faster than serde's buffering of internally tagged enums); anything else takes the
/// general path, which also produces the error.
pub(crate) fn parse_record(rec: &[u8]) -> Result<Record, String> {
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
///
/// Fastest path: a record in the writer's exact form is checked without serde
/// ([`record_check::canonical_kind`], which accepts only what [`parse_record`] accepts).
///
/// Fast path: the borrowed twins below ([`DecisionCheck`], [`CompletionCheck`]) accept a subset of
/// what [`parse_record`] accepts (the same fields and types, but strings must be unescaped to be
/// borrowed), without allocating a string per field. Whatever they do not accept goes through
/// [`parse_record`], which decides and produces the error, so the verdict is always that of the
/// full parse.
///
/// The twins read the record as `&str`, after one UTF-8 check of the whole record, so serde_json
/// does not validate each string again. That accepts the same records: a byte sequence that is
/// not UTF-8 is either inside a string (which the full parse rejects) or a syntax error, and such
/// a record is declined here and left to the full parse.
pub(crate) fn parse_kind(rec: &[u8]) -> Result<bool, String> {
    if let Ok(text) = std::str::from_utf8(rec) {
        if let Some(is_decision) = record_check::canonical_kind(text) {
            return Ok(is_decision);
        }
        if text.starts_with(r#"{"kind":"decision","#)
            && serde_json::from_str::<DecisionCheck<'_>>(text).is_ok()
        {
            return Ok(true);
        }
        if text.starts_with(r#"{"kind":"completion","#)
            && serde_json::from_str::<CompletionCheck<'_>>(text).is_ok()
        {
            return Ok(false);
        }
    }
    parse_record(rec).map(|r| matches!(r, Record::Decision(_)))
}

/// [`crate::DecisionRecord`] with borrowed strings: field for field the same names and types
/// (a test destructures the record exhaustively, so a new field cannot be missed here).
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct DecisionCheck<'a> {
    v: u32,
    decision_id: uuid::Uuid,
    ts: &'a str,
    gateway_id: &'a str,
    gateway_region: Option<&'a str>,
    policy_version: &'a str,
    subject: Option<&'a str>,
    caller: Option<CallerRecord>,
    data_subject_jurisdiction: Option<&'a str>,
    data_subject_country: Option<&'a str>,
    residency_source: Option<&'a str>,
    request_origin_region: Option<&'a str>,
    tier: Option<u8>,
    tier_declared: Option<u8>,
    operation: &'a str,
    model: Option<&'a str>,
    outcome: Outcome,
    reason: Option<&'a str>,
    reasons: Vec<&'a str>,
    model_endpoint: Option<&'a str>,
    provider: Option<&'a str>,
    operator: Option<&'a str>,
    processing_regions: Vec<&'a str>,
    processing_jurisdictions: Vec<&'a str>,
    transfer_mechanism: Option<&'a str>,
    transfer_reference: Option<&'a str>,
    audit_storage_region: Option<&'a str>,
    payload: Payload,
    pii: Option<BTreeMap<&'a str, u64>>,
}

/// [`crate::CompletionRecord`] with borrowed strings (see [`DecisionCheck`]).
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct CompletionCheck<'a> {
    v: u32,
    decision_id: uuid::Uuid,
    ts: &'a str,
    status: u16,
    model_endpoint: Option<&'a str>,
    processing_regions: Vec<&'a str>,
    attempts: u32,
    latency_ms: Latency,
    usage: Option<serde_json::Value>,
    stream: bool,
    error: Option<&'a str>,
    processing_evidence: Option<Evidence>,
}

/// What the parallel pass computes for one frame.
struct Item<T> {
    offset: usize,
    end: usize,
    /// (index, prev) from the envelope; `None` if the body is not an envelope.
    env: Option<(u64, [u8; 32])>,
    /// The body matches the frame's CRC (nothing else is computed if not).
    crc: bool,
    entry: [u8; 32],
    leaf: Hash,
    rec: Result<T, String>,
}

/// The parallel pass's result for a run of consecutive frames.
struct Chunk<T> {
    items: Vec<Item<T>>,
    /// The Merkle subtrees of the run's leaves, if asked for. They assume the run's records have
    /// the indices they should (from the segment's name): the consumer uses them only once every
    /// record of the run passed its checks, which include that.
    tree: Option<Subtrees>,
}

/// Hash, parse and check the `frames` of `data` into `items` (empty; a reused buffer); `first` is
/// the index the first frame should have, `tree` whether to hash the Merkle subtrees of the run.
fn precompute<T>(
    data: &[u8],
    frames: &[(usize, usize)],
    parse: fn(&[u8]) -> Result<T, String>,
    first: u64,
    tree: bool,
    mut items: Vec<Item<T>>,
) -> Chunk<T> {
    items.extend(frames.iter().map(|&(offset, end)| {
        let body = &data[offset + segment::HEADER..end];
        let crc = segment::crc_ok(data, offset, end);
        match segment::parse_envelope(body).filter(|_| crc) {
            Some(env) => {
                let (entry, leaf) = segment::entry_and_leaf_hash(&env.prev, body);
                Item {
                    offset,
                    end,
                    env: Some((env.index, env.prev)),
                    crc,
                    entry,
                    leaf,
                    rec: parse(env.rec),
                }
            }
            None => Item {
                offset,
                end,
                env: None,
                crc,
                entry: ZERO_HASH,
                leaf: ZERO_HASH,
                rec: Err(String::new()),
            },
        }
    }));
    let tree = tree.then(|| Subtrees::new(first, items.iter().map(|i| i.leaf).collect()));
    Chunk { items, tree }
}

/// Frames per unit of parallel work: small enough that the in-order consumer starts early and
/// the workers stay busy to the end of a segment, big enough that hand-offs are rare. A power of
/// two: chunks are aligned on record indices, so each whole one is a perfect Merkle subtree.
const CHUNK: usize = 1024;

/// The frames of a segment whose first record is `start`, cut at record indices that are
/// multiples of [`CHUNK`].
fn chunks(start: u64, frames: &[(usize, usize)]) -> Vec<(u64, &[(usize, usize)])> {
    let mut out = Vec::with_capacity(frames.len() / CHUNK + 2);
    let mut rest = frames;
    let mut index = start;
    while !rest.is_empty() {
        let to_boundary = CHUNK - (index % CHUNK as u64) as usize;
        let (c, r) = rest.split_at(to_boundary.min(rest.len()));
        out.push((index, c));
        index += c.len() as u64;
        rest = r;
    }
    out
}

/// Parse, hash and deserialize the frames on all cores (each record's hashes depend only on its
/// own bytes, and a run's Merkle subtrees only on its leaves) and hand the results to `consume`
/// in frame order, on the calling thread, while the workers compute the chunks after it: the
/// in-order checks (links, Merkle tree, checkpoints) overlap with the parallel work instead of
/// waiting for all of it. The first error from `consume` stops the walk (the workers finish their
/// current chunk and stop). `start`: the index the first frame should have.
fn precompute_each<T: Send, E>(
    data: &[u8],
    frames: &[(usize, usize)],
    start: u64,
    parse: fn(&[u8]) -> Result<T, String>,
    tree: bool,
    mut consume: impl FnMut(&mut Chunk<T>) -> Result<(), E>,
) -> Result<(), E> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if threads < 2 || frames.len() < 2 * CHUNK {
        return consume(&mut precompute(data, frames, parse, start, tree, Vec::new()));
    }
    let chunks = chunks(start, frames);
    let next = AtomicUsize::new(0);
    // Item buffers (~160 KiB a chunk) go back to the workers once consumed: allocating and
    // freeing them per chunk, across threads, cost page faults and TLB shootdowns (glibc returns
    // such blocks to the kernel).
    let spare: Mutex<Vec<Vec<Item<T>>>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel::<(usize, Chunk<T>)>();
        for _ in 0..threads {
            let (tx, next, chunks, spare) = (tx.clone(), &next, &chunks, &spare);
            s.spawn(move || {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(first, c)) = chunks.get(k) else { break };
                    let buf = spare
                        .lock()
                        .map(|mut v| v.pop())
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    if tx
                        .send((k, precompute(data, c, parse, first, tree, buf)))
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let mut want = 0;
        let mut run = || {
            for (k, chunk) in rx.iter() {
                pending.insert(k, chunk);
                while let Some(mut chunk) = pending.remove(&want) {
                    consume(&mut chunk)?;
                    chunk.items.clear();
                    if let Ok(mut v) = spare.lock() {
                        v.push(chunk.items);
                    }
                    want += 1;
                }
            }
            Ok(())
        };
        let result = run();
        // On an error, the workers stop after their current chunk.
        next.store(chunks.len(), Ordering::Relaxed);
        // Every chunk was consumed, unless a worker panicked: never report success then.
        assert!(
            result.is_err() || want == chunks.len(),
            "a verification worker stopped early"
        );
        result
    })
}

/// Walk and check every record in order; returns the head hash. `visit` gets each record's
/// index, parsed value and body; `tree`, if given, each run of records' Merkle subtrees, in
/// order, once all of the run's records have passed.
fn walk<T: Send>(
    dir: &Path,
    progress: Option<&dyn Fn(u64, u64)>,
    parse: fn(&[u8]) -> Result<T, String>,
    mut visit: impl FnMut(u64, T, &[u8]),
    mut tree: Option<&mut dyn FnMut(&Subtrees)>,
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
    // Two buffers for all segments (fresh 64 MiB allocations cost more in page faults than the
    // CRCs of their contents): the next segment is read while the current one is checked.
    let read = |path: &Path, buf: &mut Vec<u8>| {
        buf.clear();
        fs::File::open(path).and_then(|mut f| std::io::Read::read_to_end(&mut f, buf))
    };
    let mut data = Vec::new();
    let mut next = Vec::new();
    let mut frames = Vec::new();
    // (segment number, offset) of the last record that passed: where a broken link points.
    let mut last: (usize, usize) = (0, 0);
    if let Some((_, path)) = segs.first() {
        read(path, &mut data).map_err(io_err(path))?;
    }
    for (k, (start, path)) in segs.iter().enumerate() {
        let start = *start;
        let following = segs.get(k + 1).map(|(_, p)| p.as_path());
        let (checked, read_next) = std::thread::scope(|s| {
            let reader = following.map(|p| {
                let next = &mut next;
                s.spawn(move || read(p, next))
            });
            let checked = (|| {
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
                // Framing from the lengths (cheap, sequential), then CRCs and the expensive part
                // on all cores. The first bad CRC in order ends the walk exactly where `Frames`
                // would stop.
                frames.clear();
                let fault = segment::frame_bounds(data, &mut frames);
                let mut first = true;
                let want_tree = tree.is_some();
                let mut check = |item: Item<T>| {
                    if !item.crc {
                        return Err(broken(item.offset, expected, BreakKind::BadCrc));
                    }
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
                        let kind = order_break(data, item.end, expected, index);
                        return Err(broken(item.offset, expected, kind));
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
                        // Record `expected` does not link to its predecessor's hash: the first
                        // record that may be bad is the predecessor (whose body a forger
                        // rewrote, the usual case), unless there is none.
                        let Some(before) = expected.checked_sub(1) else {
                            return Err(broken(item.offset, expected, BreakKind::Modified));
                        };
                        let segment = segs
                            .get(last.0)
                            .and_then(|(_, p)| p.file_name())
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        return Err(VerifyError::Broken {
                            store: dir.to_path_buf(),
                            segment,
                            offset: last.1 as u64,
                            index: before,
                            kind: BreakKind::Modified,
                        });
                    }
                    let rec = item
                        .rec
                        .map_err(|detail| broken(item.offset, expected, BreakKind::BadJson { detail }))?;
                    head = item.entry;
                    last = (k, item.offset);
                    visit(expected, rec, body);
                    expected += 1;
                    Ok(())
                };
                precompute_each(data, &frames, start, parse, want_tree, |chunk| {
                    chunk.items.drain(..).try_for_each(&mut check)?;
                    // An empty segment has an empty run, named for whatever index: nothing to add.
                    if let (Some(run), Some(tree)) = (&chunk.tree, tree.as_mut())
                        && run.end() > run.start()
                    {
                        tree(run);
                    }
                    Ok(())
                })?;
                if let Some((offset, fault)) = fault {
                    let kind = match fault {
                        Fault::Truncated => BreakKind::Truncated,
                        Fault::BadLength(len) => BreakKind::BadFraming { len },
                        Fault::BadCrc => BreakKind::BadCrc,
                    };
                    return Err(broken(offset, expected, kind));
                }
                Ok(())
            })();
            let read_next = reader.map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            (checked, read_next)
        });
        checked?;
        if let (Some(p), Some(r)) = (following, read_next) {
            r.map_err(io_err(p))?;
        }
        done += data.len() as u64;
        if let Some(p) = progress {
            p(done, total);
        }
        std::mem::swap(&mut data, &mut next);
    }
    Ok(head)
}

/// The kind of a chain break where record `found` stands in the place of `expected`: reordered
/// if `found` comes from earlier (`found < expected`) or `expected` still appears later in the
/// segment (`data`, looked through from byte `after` up to the first damaged frame); else removed.
/// Records moved to another segment count as removed from this one.
pub(crate) fn order_break(data: &[u8], after: usize, expected: u64, found: u64) -> BreakKind {
    let later = || {
        segment::Frames::new(data.get(after..).unwrap_or_default())
            .map_while(Result::ok)
            .filter_map(|f| segment::parse_envelope(f.body))
            .any(|e| e.index == expected)
    };
    if found < expected || later() {
        BreakKind::Reordered { expected, found }
    } else {
        BreakKind::Removed { expected, found }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::{sample_completion, sample_decision};
    use crate::record::{CompletionRecord, DecisionRecord};

    /// Adding a field to a record must update its borrowed twin: this stops compiling otherwise.
    #[allow(dead_code)]
    fn twins_cover_every_field(d: DecisionRecord, c: CompletionRecord) {
        let DecisionRecord {
            v: _,
            decision_id: _,
            ts: _,
            gateway_id: _,
            gateway_region: _,
            policy_version: _,
            subject: _,
            caller: _,
            data_subject_jurisdiction: _,
            data_subject_country: _,
            residency_source: _,
            request_origin_region: _,
            tier: _,
            tier_declared: _,
            operation: _,
            model: _,
            outcome: _,
            reason: _,
            reasons: _,
            model_endpoint: _,
            provider: _,
            operator: _,
            processing_regions: _,
            processing_jurisdictions: _,
            transfer_mechanism: _,
            transfer_reference: _,
            audit_storage_region: _,
            payload: _,
            pii: _,
        } = d;
        let CompletionRecord {
            v: _,
            decision_id: _,
            ts: _,
            status: _,
            model_endpoint: _,
            processing_regions: _,
            attempts: _,
            latency_ms: _,
            usage: _,
            stream: _,
            error: _,
            processing_evidence: _,
        } = c;
    }

    /// Whatever a twin accepts, the full parse accepts: with every field removed, nulled or given
    /// a value of another type, one at a time. And both accept the records as written.
    #[test]
    fn borrowed_twins_accept_nothing_the_full_parse_rejects() {
        fn agree<Full: serde::de::DeserializeOwned>(v: &serde_json::Value, twin: fn(&[u8]) -> bool) -> usize {
            let mut accepted = 0;
            let obj = v.as_object().unwrap();
            let others = [
                serde_json::Value::Null,
                serde_json::json!(1),
                serde_json::json!(-1),
                serde_json::json!(1.5),
                serde_json::json!("x"),
                serde_json::json!("a\"b"),
                serde_json::json!([]),
                serde_json::json!(["x"]),
                serde_json::json!({}),
                serde_json::json!(true),
            ];
            for key in obj.keys() {
                let mut variants = vec![{
                    let mut o = obj.clone();
                    o.remove(key);
                    o
                }];
                for other in &others {
                    let mut o = obj.clone();
                    o.insert(key.clone(), other.clone());
                    variants.push(o);
                }
                for o in variants {
                    let bytes = serde_json::to_vec(&o).unwrap();
                    if twin(&bytes) {
                        accepted += 1;
                        assert!(
                            serde_json::from_slice::<Full>(&bytes).is_ok(),
                            "the twin accepts what the full parse rejects: {}",
                            String::from_utf8_lossy(&bytes)
                        );
                    }
                }
            }
            accepted
        }
        for rec in [sample_decision(7), sample_completion()] {
            let bytes = serde_json::to_vec(&rec).unwrap();
            let is_decision = matches!(rec, Record::Decision(_));
            assert_eq!(parse_kind(&bytes), Ok(is_decision));
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let accepted = if is_decision {
                assert!(serde_json::from_slice::<DecisionCheck<'_>>(&bytes).is_ok());
                agree::<DecisionRecord>(&v, |b| {
                    std::str::from_utf8(b).is_ok_and(|t| serde_json::from_str::<DecisionCheck<'_>>(t).is_ok())
                })
            } else {
                assert!(serde_json::from_slice::<CompletionCheck<'_>>(&bytes).is_ok());
                agree::<CompletionRecord>(&v, |b| {
                    std::str::from_utf8(b)
                        .is_ok_and(|t| serde_json::from_str::<CompletionCheck<'_>>(t).is_ok())
                })
            };
            assert!(accepted > 0);
        }
        // An escaped string is not borrowable: the twin declines, the full parse decides.
        let mut v = serde_json::to_value(sample_completion()).unwrap();
        v["ts"] = serde_json::json!("2026-01-01T00:00:00.000000Z\"");
        let s = serde_json::to_string(&v).unwrap();
        let s = format!(
            "{{\"kind\":\"completion\",{}",
            &s[1..].replace("\"kind\":\"completion\",", "")
        );
        assert_eq!(parse_kind(s.as_bytes()), Ok(false));
        // Not UTF-8 inside a string, or outside one: rejected as the full parse rejects it.
        for rec in [sample_decision(7), sample_completion()] {
            let good = serde_json::to_vec(&rec).unwrap();
            let at = good.windows(5).position(|w| w == b"\"ts\":").unwrap() + 7;
            for (pos, byte) in [(at, 0xffu8), (at, 0xc3), (good.len() - 1, 0xff)] {
                let mut bad = good.clone();
                bad.insert(pos, byte);
                let full = parse_record(&bad).map(|r| matches!(r, Record::Decision(_)));
                assert!(full.is_err(), "{}", String::from_utf8_lossy(&bad));
                assert_eq!(parse_kind(&bad), full);
            }
            assert_eq!(parse_kind(&good), Ok(matches!(rec, Record::Decision(_))));
        }
    }
}

//! Offline verification of a store: every frame whole and CRC-clean, every body a record envelope
//! holding a valid record, indices contiguous from 0 across segments, and every `prev` equal to the
//! entry hash of the record before it. Finds modification, removal and reordering anywhere except
//! at the very end: dropping or rewriting the *last* records leaves a shorter valid chain, which
//! only a previously published head (`head_hash`, later signed checkpoints) can reveal.

use std::fs;
use std::path::Path;

use crate::error::{BreakKind, VerifyError, describe_json_error};
use crate::record::Record;
use crate::segment::{self, Fault, Frames, ZERO_HASH};

/// What a successful verification saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub decisions: u64,
    pub completions: u64,
    /// Hex entry hash of the last record (64 zeros for an empty store).
    pub head_hash: String,
}

/// Verify the whole store in `dir`.
pub fn verify_store(dir: &Path) -> Result<VerifyReport, VerifyError> {
    let mut report = VerifyReport {
        records: 0,
        decisions: 0,
        completions: 0,
        head_hash: String::new(),
    };
    let head = walk(dir, |_, rec| {
        report.records += 1;
        match rec {
            Record::Decision(_) => report.decisions += 1,
            Record::Completion(_) => report.completions += 1,
        }
    })?;
    report.head_hash = hex::encode(head);
    Ok(report)
}

/// Every record with its index, after verifying the store exactly as [`verify_store`] does.
pub fn read_records(dir: &Path) -> Result<Vec<(u64, Record)>, VerifyError> {
    let mut out = Vec::new();
    walk(dir, |i, rec| out.push((i, rec)))?;
    Ok(out)
}

/// Walk and check every record in order; returns the head hash.
fn walk(dir: &Path, mut visit: impl FnMut(u64, Record)) -> Result<[u8; 32], VerifyError> {
    let io_err = |path: &Path| {
        let store = dir.to_path_buf();
        let path = path.to_path_buf();
        move |source| VerifyError::Io { store, path, source }
    };
    let segs = segment::list_segments(dir).map_err(io_err(dir))?;
    let mut expected: u64 = 0;
    let mut head = ZERO_HASH;
    for (start, path) in segs {
        let data = fs::read(&path).map_err(io_err(&path))?;
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
        let mut first = true;
        for frame in Frames::new(&data) {
            let f = frame.map_err(|(offset, fault)| {
                let kind = match fault {
                    Fault::Truncated => BreakKind::Truncated,
                    Fault::BadLength(len) => BreakKind::BadFraming { len },
                    Fault::BadCrc => BreakKind::BadCrc,
                };
                broken(offset, expected, kind)
            })?;
            let env = segment::parse_envelope(f.body).ok_or_else(|| {
                broken(
                    f.offset,
                    expected,
                    BreakKind::BadJson {
                        detail: "the body is not a record envelope".into(),
                    },
                )
            })?;
            if env.index != expected {
                return Err(broken(
                    f.offset,
                    expected,
                    BreakKind::RemovedOrReordered {
                        expected,
                        found: env.index,
                    },
                ));
            }
            if first && start != env.index {
                return Err(broken(
                    f.offset,
                    expected,
                    BreakKind::MisnamedSegment {
                        named: start,
                        found: env.index,
                    },
                ));
            }
            first = false;
            if env.prev != head {
                return Err(broken(f.offset, expected, BreakKind::Modified));
            }
            let rec: Record = serde_json::from_slice(env.rec).map_err(|e| {
                broken(
                    f.offset,
                    expected,
                    BreakKind::BadJson {
                        detail: describe_json_error(&e),
                    },
                )
            })?;
            head = segment::entry_hash(&env.prev, f.body);
            visit(expected, rec);
            expected += 1;
        }
    }
    Ok(head)
}

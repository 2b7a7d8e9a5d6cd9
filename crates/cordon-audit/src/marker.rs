//! Close and open markers of a [`crate::FileStore`]: signed notes (the checkpoints' note format
//! and key) that tell a clean shutdown from a crash, so that records appended to a closed store
//! by someone without the key are named as forged instead of being adopted as a crash's tail.
//!
//! ```text
//! cordon-audit closed      (or: cordon-audit opened)
//! <origin>
//! <sequence number>
//! <tree size>
//! <base64 root hash>
//! ```
//!
//! Stored as `markers/<seq:020>.closed` / `.opened` in the store directory and in each
//! publication target (created, never replaced). The sequence number orders them: every marker
//! a store writes takes one more than the highest it can see. At a clean shutdown, after the final
//! checkpoint, the store writes a *close* marker for its size and root. An open that finds a
//! close marker as the newest one writes an *open* marker before it accepts any append. So the
//! newest marker being a close marker at size N while records beyond N exist means they were
//! written while the store was closed: forged. A crash leaves no close marker: its unattested
//! tail is adopted as before. The first line cannot be a checkpoint origin (it holds a space), so
//! a marker never passes for a checkpoint or the other way round.
//!
//! PostgreSQL chains use the same notes, kept in a table and published beside their checkpoints
//! (`cordon-audit-pg`'s `markers.rs`); hence the public items here.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::AuditError;
use crate::merkle::Hash;
use crate::note::{self, NoteError, NoteSigner, NoteVerifier};

/// The markers' directory, in a store and in a publication target.
pub const MARKER_DIR: &str = "markers";

/// Which event a marker records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkerKind {
    /// The store was shut down cleanly: every record is covered by this marker's size and root.
    Closed,
    /// The store was opened after a close marker, before any append.
    Opened,
}

impl MarkerKind {
    fn word(self) -> &'static str {
        match self {
            MarkerKind::Closed => "closed",
            MarkerKind::Opened => "opened",
        }
    }

    fn from_word(w: &str) -> Option<MarkerKind> {
        match w {
            "closed" => Some(MarkerKind::Closed),
            "opened" => Some(MarkerKind::Opened),
            _ => None,
        }
    }
}

/// A marker's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub kind: MarkerKind,
    pub seq: u64,
    pub size: u64,
    pub root: Hash,
}

impl Marker {
    /// The note text for the log `origin`.
    pub fn to_text(&self, origin: &str) -> String {
        format!(
            "cordon-audit {}\n{origin}\n{}\n{}\n{}\n",
            self.kind.word(),
            self.seq,
            self.size,
            B64.encode(self.root)
        )
    }

    /// The file name: `<seq:020>.<kind>`.
    pub fn file_name(&self) -> String {
        format!("{:020}.{}", self.seq, self.kind.word())
    }

    /// The signed note.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, NoteError> {
        signer.sign(&self.to_text(signer.name()))
    }

    /// Parse a body strictly; returns the marker and its origin.
    fn parse(text: &str) -> Result<(Marker, String), &'static str> {
        let body = text.strip_suffix('\n').ok_or("does not end in a newline")?;
        let lines: Vec<&str> = body.split('\n').collect();
        let [head, origin, seq, size, root] = lines[..] else {
            return Err("not five lines");
        };
        let kind = head
            .strip_prefix("cordon-audit ")
            .and_then(MarkerKind::from_word)
            .ok_or("not a cordon-audit close or open marker")?;
        let number = |s: &str| -> Result<u64, &'static str> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
                return Err("a number is not canonical decimal");
            }
            s.parse().map_err(|_| "a number is out of range")
        };
        let root = note::b64_strict(root).ok_or("root hash is not canonical base64")?;
        let root: Hash = root.try_into().map_err(|_| "root hash is not 32 bytes")?;
        let marker = Marker {
            kind,
            seq: number(seq)?,
            size: number(size)?,
            root,
        };
        Ok((marker, origin.to_owned()))
    }
}

/// A signed marker note, checked: signed by `verifier`'s key, well formed, and of its log (the
/// origin). The error says why not.
pub fn open(note_bytes: &[u8], verifier: &NoteVerifier) -> Result<Marker, String> {
    let text = note::open(note_bytes, std::slice::from_ref(verifier))
        .map_err(|e| format!("not a marker signed by this store's key: {e}"))?;
    let (marker, origin) = Marker::parse(&text).map_err(|e| format!("malformed marker: {e}"))?;
    if origin != verifier.name() {
        return Err(format!("origin {origin:?} is not this store's"));
    }
    Ok(marker)
}

/// `<seq>` and kind from a marker file name; `None` for other files (temporary files included).
fn parse_name(name: &str) -> Option<(u64, MarkerKind)> {
    let (digits, word) = name.split_once('.')?;
    let kind = MarkerKind::from_word(word)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok().map(|seq| (seq, kind)))
        .flatten()
}

/// A valid marker and the file it was read from.
#[derive(Clone, Debug)]
pub struct Found {
    pub path: PathBuf,
    pub marker: Marker,
}

/// Why markers could not be read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {detail}", path.display())]
    Bad { path: PathBuf, detail: String },
}

/// The valid markers of `place` (a store directory or a publication target), by sequence number.
/// A missing `markers/` directory holds none. A file that is not a marker of this log (bad
/// signature, another key or origin, a name that does not match its text) is an error: a marker
/// is only ever written by the store's key, so such a file is tampering (or damage) to report.
pub fn read_place(place: &Path, verifier: &NoteVerifier) -> Result<Vec<Found>, MarkerError> {
    let dir = place.join(MARKER_DIR);
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MarkerError::Io { path, source }
    };
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io_err(&dir))?;
        let Some((seq, kind)) = entry.file_name().to_str().and_then(parse_name) else {
            continue;
        };
        let path = entry.path();
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let marker = open(&bytes, verifier).map_err(|detail| MarkerError::Bad {
            path: path.clone(),
            detail,
        })?;
        if marker.seq != seq || marker.kind != kind {
            return Err(MarkerError::Bad {
                path,
                detail: "the file name does not match the signed marker".into(),
            });
        }
        out.push(Found { path, marker });
    }
    out.sort_by_key(|f| f.marker.seq);
    Ok(out)
}

/// Every marker of several places, merged by sequence number (the same marker in two places
/// counts once). The first place is the store's own: where a publication target holds a
/// *different* marker with a sequence number the store's own markers (or an earlier target)
/// already have, it is a fork's (a second instance with the same key, or a store restored from
/// an older copy): it is logged and left out, as the target's compare-and-swap refuses a fork's
/// checkpoints. Two different markers with one number in the store itself are an error: the
/// store never signs two.
pub fn merge(places: Vec<Vec<Found>>) -> Result<Vec<Found>, MarkerError> {
    let mut out: Vec<Found> = Vec::new();
    for (k, place) in places.into_iter().enumerate() {
        for f in place {
            match out.iter().find(|o| o.marker.seq == f.marker.seq) {
                None => out.push(f),
                Some(o) if o.marker == f.marker => {}
                Some(o) if k == 0 => {
                    return Err(MarkerError::Bad {
                        path: f.path,
                        detail: format!(
                            "differs from {}, a marker with the same sequence number",
                            o.path.display()
                        ),
                    });
                }
                Some(o) => tracing::error!(
                    marker = %f.path.display(),
                    kept = %o.path.display(),
                    "audit store: a published marker differs from the store's own with the same sequence number (a forked log?); ignored"
                ),
            }
        }
    }
    out.sort_by_key(|f| f.marker.seq);
    Ok(out)
}

/// The forged records a set of markers reveals: when the newest is a close marker at size N and
/// the store holds `records` > N, the records from N on were written while it was closed.
pub fn forged_after(markers: &[Found], records: u64) -> Option<&Found> {
    markers
        .last()
        .filter(|f| f.marker.kind == MarkerKind::Closed && records > f.marker.size)
}

/// The sequence number the next marker takes.
pub fn next_seq(markers: &[Found]) -> u64 {
    markers.last().map_or(1, |f| f.marker.seq + 1)
}

/// Create `place/markers/<name>` holding `note` unless it exists: `Ok(())` when it was created
/// or already holds these bytes; an error when it holds others (never replaced).
pub fn write_marker(place: &Path, name: &str, note: &str) -> io::Result<()> {
    let dir = place.join(MARKER_DIR);
    if !dir.exists() {
        fs::create_dir_all(&dir)?;
        crate::keyfile::sync_dir(place)?;
    }
    // One marker per sequence number in a place: a fork's marker never lands beside the log's
    // own (which would leave readers two signed claims for one number).
    let seq = name.split('.').next().unwrap_or(name);
    for entry in fs::read_dir(&dir)? {
        let other = entry?.file_name();
        let other = other.to_string_lossy();
        if other != name && other.split('.').next() == Some(seq) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} already holds marker {other} with this sequence number (not added)",
                    dir.display()
                ),
            ));
        }
    }
    let path = dir.join(name);
    if crate::replica::create_no_replace(&path, note.as_bytes())? {
        return Ok(());
    }
    if fs::read(&path)? == note.as_bytes() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{} already holds a different marker (not replaced)",
            path.display()
        ),
    ))
}

/// What opening a store found among its markers.
pub(crate) struct AtOpen {
    /// The newest marker is this close marker, at the store's size: the open must write an open
    /// marker before any append.
    pub closed: Option<Found>,
    /// The newest marker is a published close marker attesting more records than the store
    /// holds (a fork's, or the store was restored from an older copy): the open must still write
    /// an open marker (at the store's own size), or a crash before the next clean shutdown would
    /// make the store's own records look forged.
    pub reopen: bool,
    /// The sequence number the next marker takes.
    pub next_seq: u64,
}

/// Check a store's markers at open, local and published (`targets`), before anything is cut or
/// appended: `whole` records recovered, `damaged` whether a torn tail follows them, `attested`
/// the size of the newest local checkpoint.
///
/// The newest marker a close marker at size N: records beyond N are refused as forged
/// ([`AuditError::Forged`]), fewer than N or damage after them as [`AuditError::Corrupt`] (a
/// clean shutdown leaves neither). Otherwise (a crash, or a store without markers) the tail is
/// kept, but a target whose markers cannot be read may hold the close marker that would condemn
/// it: with records beyond `attested`, the open fails closed then.
pub(crate) fn at_open(
    dir: &Path,
    targets: &[PathBuf],
    verifier: &NoteVerifier,
    whole: u64,
    damaged: Option<(&Path, u64)>,
    attested: u64,
) -> Result<AtOpen, AuditError> {
    let refuse = |e: MarkerError| match e {
        MarkerError::Io { path, source } => AuditError::io(path, "read close/open markers")(source),
        MarkerError::Bad { path, detail } => AuditError::BadMarker {
            path: dir.to_path_buf(),
            marker: path,
            detail,
        },
    };
    let mut places = vec![read_place(dir, verifier).map_err(refuse)?];
    let mut unreadable = None;
    for t in targets {
        match read_place(t, verifier) {
            Ok(found) => places.push(found),
            Err(e @ MarkerError::Io { .. }) => unreadable = Some(e),
            // Not this store's (another store's, or damaged) in a place others write too: it
            // cannot be trusted, so it counts like an unreadable target (fail closed only when
            // it could be hiding the close marker of records no checkpoint covers).
            Err(e @ MarkerError::Bad { .. }) => {
                tracing::error!(store = %dir.display(), error = %e, "audit store: a published marker is not this store's; ignored");
                unreadable = Some(e);
            }
        }
    }
    let markers = merge(places).map_err(refuse)?;
    let next_seq = next_seq(&markers);
    let Some(newest) = markers.last().filter(|f| f.marker.kind == MarkerKind::Closed) else {
        if let Some(e) = unreadable
            && whole > attested
        {
            return Err(refuse(e));
        }
        return Ok(AtOpen {
            closed: None,
            reopen: false,
            next_seq,
        });
    };
    let size = newest.marker.size;
    if whole > size {
        return Err(AuditError::Forged {
            path: dir.to_path_buf(),
            index: size,
            marker: newest.path.clone(),
        });
    }
    let corrupt = |path: &Path, offset: u64, detail: String| AuditError::Corrupt {
        path: path.to_path_buf(),
        offset,
        detail,
    };
    if whole < size {
        // Its own close marker attests more records than remain: refuse, as for a checkpoint.
        if newest.path.starts_with(dir) {
            return Err(corrupt(
                &newest.path,
                0,
                format!(
                    "the store was closed at {size} records and holds {whole}: records were removed or damaged"
                ),
            ));
        }
        // Only a publication target's does (a store restored from an older copy, or a second
        // instance forking the log): as with its published checkpoints, the store opens, its
        // publications are refused and counted, and `verify` names the shorter log.
        tracing::error!(store = %dir.display(), marker = %newest.path.display(), size, whole,
            "audit store: a published close marker attests more records than the store holds");
        return Ok(AtOpen {
            closed: None,
            reopen: true,
            next_seq,
        });
    }
    if let Some((path, offset)) = damaged {
        return Err(corrupt(
            path,
            offset,
            format!(
                "damage after a clean shutdown at {size} records (close marker {}): no crash left it; not cut",
                newest.path.display()
            ),
        ));
    }
    Ok(AtOpen {
        closed: Some(newest.clone()),
        reopen: false,
        next_seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(seed: u8) -> NoteSigner {
        NoteSigner::from_seed("cordon/test/EU", &[seed; 32]).unwrap()
    }

    #[test]
    fn markers_round_trip_and_never_pass_for_checkpoints() {
        let s = signer(1);
        let m = Marker {
            kind: MarkerKind::Closed,
            seq: 3,
            size: 12,
            root: [7; 32],
        };
        let note = m.sign(&s).unwrap();
        assert!(
            note.starts_with("cordon-audit closed\ncordon/test/EU\n3\n12\n"),
            "{note}"
        );
        let text = note::open(note.as_bytes(), &[s.verifier()]).unwrap();
        assert_eq!(
            Marker::parse(&text).unwrap(),
            (m.clone(), "cordon/test/EU".into())
        );
        assert!(crate::checkpoint::Checkpoint::parse(&text).is_err());
        let ckpt = crate::checkpoint::Checkpoint::new("cordon/test/EU", 12, [7; 32]).to_text();
        assert!(Marker::parse(&ckpt).is_err());
        assert_eq!(parse_name(&m.file_name()), Some((3, MarkerKind::Closed)));
        assert_eq!(parse_name(".00000000000000000003.closed.tmp-1"), None);
        assert_eq!(parse_name("00000000000000000003.ckpt"), None);
    }

    #[test]
    fn a_marker_of_another_key_or_renamed_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let s = signer(1);
        let m = Marker {
            kind: MarkerKind::Closed,
            seq: 1,
            size: 0,
            root: [0; 32],
        };
        write_marker(tmp.path(), &m.file_name(), &m.sign(&s).unwrap()).unwrap();
        assert_eq!(read_place(tmp.path(), &s.verifier()).unwrap().len(), 1);
        // The same bytes again: fine; other bytes: refused, never replaced.
        write_marker(tmp.path(), &m.file_name(), &m.sign(&s).unwrap()).unwrap();
        assert!(write_marker(tmp.path(), &m.file_name(), "x").is_err());
        // Signed by another key.
        let other = Marker { seq: 2, ..m.clone() };
        write_marker(tmp.path(), &other.file_name(), &other.sign(&signer(2)).unwrap()).unwrap();
        let e = read_place(tmp.path(), &s.verifier()).unwrap_err();
        assert!(
            e.to_string().contains("not a marker signed by this store's key"),
            "{e}"
        );
        fs::remove_file(tmp.path().join(MARKER_DIR).join(other.file_name())).unwrap();
        // A close marker renamed as an open one.
        fs::copy(
            tmp.path().join(MARKER_DIR).join(m.file_name()),
            tmp.path().join(MARKER_DIR).join("00000000000000000001.opened"),
        )
        .unwrap();
        let e = read_place(tmp.path(), &s.verifier()).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
    }
}

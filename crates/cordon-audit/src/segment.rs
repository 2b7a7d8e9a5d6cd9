//! The on-disk format, shared by the writer, recovery and verification.
//!
//! A store is a directory of segment files named for the index of their first record,
//! `{index:020}.log`. A segment is a sequence of frames:
//!
//! ```text
//! [u32 LE body length][u32 LE CRC-32C of body][body]
//! body = {"i":<index>,"prev":"<64 lowercase hex>","rec":<record JSON>}
//! leaf hash(i)  = SHA-256(0x00 || body(i))                             (RFC 6962 Merkle leaf)
//! entry hash(i) = SHA-256(0x02 || entry hash(i-1) || leaf hash(i)),  entry hash(-1) = 32 zero bytes
//! ```
//!
//! `prev` is the entry hash of the previous record, so each body commits to the whole history
//! before it. The chain link covers the body through its Merkle leaf hash, so every body is
//! hashed once (the verifier needs the leaf hash anyway); the 0x02 prefix keeps a link apart from
//! RFC 6962's leaves (0x00) and nodes (0x01). The body layout is exact (the writer emits it, the
//! reader parses it strictly).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::merkle::Hash;

/// Frame header: length + CRC.
pub(crate) const HEADER: usize = 8;
/// Largest body accepted (a record is a few KiB; encrypted payloads are bounded by the gateway).
pub const MAX_BODY: usize = 16 << 20;
/// A segment is rolled once it reaches this size (at batch granularity).
pub(crate) const SEGMENT_BYTES: u64 = 64 << 20;
/// The link before the first record.
pub const ZERO_HASH: [u8; 32] = [0; 32];

const PRE_I: &[u8] = b"{\"i\":";
const PRE_PREV: &[u8] = b",\"prev\":\"";
const PRE_REC: &[u8] = b"\",\"rec\":";

pub(crate) fn segment_name(start: u64) -> String {
    format!("{start:020}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files of a store, in index order. Other files are ignored.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(start) = name.to_str().and_then(parse_segment_name)
            && entry.file_type()?.is_file()
        {
            out.push((start, entry.path()));
        }
    }
    out.sort_by_key(|(start, _)| *start);
    Ok(out)
}

/// Domain separation of a chain link from RFC 6962's leaf (0x00) and node (0x01) hashes.
const ENTRY_PREFIX: u8 = 0x02;

/// SHA-256(0x02 || prev || leaf): the hash-chain link, from the record's Merkle leaf hash
/// ([`crate::merkle::leaf_hash`] of its body). It takes the leaf hash, not the body, so a caller
/// that needs both (every writer and verifier) hashes the body once: see [`entry_and_leaf_hash`].
pub fn entry_hash(prev: &[u8; 32], leaf: &Hash) -> [u8; 32] {
    let mut buf = [0u8; 65];
    buf[0] = ENTRY_PREFIX;
    buf[1..33].copy_from_slice(prev);
    buf[33..].copy_from_slice(leaf);
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &buf).as_ref());
    out
}

/// `(entry hash, leaf hash)` of `body` chained to `prev`: one SHA-256 pass over the body (the
/// leaf hash) and one over 65 bytes (the link).
pub fn entry_and_leaf_hash(prev: &[u8; 32], body: &[u8]) -> ([u8; 32], Hash) {
    let leaf = crate::merkle::leaf_hash(body);
    (entry_hash(prev, &leaf), leaf)
}

/// `n` in decimal ASCII.
pub(crate) fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut pos = tmp.len();
    loop {
        pos -= 1;
        tmp[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[pos..]);
}

/// Append the body `{"i":<index>,"prev":"<hex prev>","rec":<rec>}` to `buf`: the bytes every store
/// (file or PostgreSQL) chains and the Merkle tree hashes.
pub fn append_body(buf: &mut Vec<u8>, index: u64, prev: &[u8; 32], rec: &[u8]) {
    buf.extend_from_slice(PRE_I);
    push_u64(buf, index);
    buf.extend_from_slice(PRE_PREV);
    let mut hex_prev = [0u8; 64];
    // Cannot fail: the output is exactly twice the input.
    let _ = hex::encode_to_slice(prev, &mut hex_prev);
    buf.extend_from_slice(&hex_prev);
    buf.extend_from_slice(PRE_REC);
    buf.extend_from_slice(rec);
    buf.push(b'}');
}

/// Append one frame for `rec` (record JSON) at `index`, chained to `prev`. Returns the new entry
/// hash and the body's leaf hash, or the body length if it exceeds [`MAX_BODY`] (then `buf` is
/// left unchanged).
pub(crate) fn encode_frame(
    buf: &mut Vec<u8>,
    index: u64,
    prev: &[u8; 32],
    rec: &[u8],
) -> Result<([u8; 32], Hash), usize> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER]);
    append_body(buf, index, prev, rec);
    let body_len = buf.len() - start - HEADER;
    if body_len > MAX_BODY {
        buf.truncate(start);
        return Err(body_len);
    }
    let (head, body) = buf[start..].split_at_mut(HEADER);
    let crc = crc32c::crc32c(body);
    head[..4].copy_from_slice(&(body_len as u32).to_le_bytes());
    head[4..].copy_from_slice(&crc.to_le_bytes());
    Ok(entry_and_leaf_hash(prev, body))
}

/// Lowercase hex digit values; 0xff for every other byte.
const HEX_LOWER: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// A parsed body.
pub struct Envelope<'a> {
    pub index: u64,
    pub prev: [u8; 32],
    pub rec: &'a [u8],
}

/// Strictly parse a body as the writer emits it.
pub fn parse_envelope(body: &[u8]) -> Option<Envelope<'_>> {
    let rest = body.strip_prefix(PRE_I)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let index: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(PRE_PREV)?;
    if rest.len() < 64 {
        return None;
    }
    let (hex_prev, rest) = rest.split_at(64);
    // Lowercase hex only (what the writer emits), decoded branch-free: this is on the verify path.
    let mut prev = [0u8; 32];
    let mut invalid = 0u8;
    for (out, pair) in prev.iter_mut().zip(hex_prev.chunks_exact(2)) {
        let (hi, lo) = (HEX_LOWER[pair[0] as usize], HEX_LOWER[pair[1] as usize]);
        invalid |= hi | lo;
        *out = (hi << 4) | (lo & 0x0f);
    }
    if invalid & 0xf0 != 0 {
        return None;
    }
    let rest = rest.strip_prefix(PRE_REC)?;
    let rec = rest.strip_suffix(b"}")?;
    if rec.is_empty() {
        return None;
    }
    Some(Envelope { index, prev, rec })
}

/// Damage found while walking the frames of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The header or the body runs past the end of the segment.
    Truncated,
    /// A length of zero or above [`MAX_BODY`].
    BadLength(u32),
    /// The body does not match its CRC.
    BadCrc,
}

pub(crate) struct Frame<'a> {
    pub offset: usize,
    pub end: usize,
    pub body: &'a [u8],
}

/// Walks the frames of a segment's bytes; stops after the first fault.
pub(crate) struct Frames<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Frames<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Frames {
            buf,
            pos: 0,
            done: false,
        }
    }

    /// Read the frame at `pos` without advancing.
    fn frame_at(buf: &'a [u8], pos: usize) -> Result<Frame<'a>, Fault> {
        let end = frame_end(buf, pos)?;
        if !crc_ok(buf, pos, end) {
            return Err(Fault::BadCrc);
        }
        Ok(Frame {
            offset: pos,
            end,
            body: &buf[pos + HEADER..end],
        })
    }
}

/// Where the frame at `pos` ends, from its header alone (the CRC is not checked).
fn frame_end(buf: &[u8], pos: usize) -> Result<usize, Fault> {
    let rest = &buf[pos..];
    if rest.len() < HEADER {
        return Err(Fault::Truncated);
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
    if len == 0 || len as usize > MAX_BODY {
        return Err(Fault::BadLength(len));
    }
    let end = HEADER + len as usize;
    if rest.len() < end {
        return Err(Fault::Truncated);
    }
    Ok(pos + end)
}

/// Does the body of the frame `buf[pos..end]` (as returned by [`frame_bounds`]) match its CRC?
pub(crate) fn crc_ok(buf: &[u8], pos: usize, end: usize) -> bool {
    let h = &buf[pos..pos + HEADER];
    crc32c::crc32c(&buf[pos + HEADER..end]) == u32::from_le_bytes([h[4], h[5], h[6], h[7]])
}

/// The frame boundaries `(offset, end)` of a segment from the length headers alone, appended to
/// `out`, and the first length fault (`Truncated` / `BadLength`) with its offset. The CRCs are
/// left to the caller ([`crc_ok`]), which must check every frame in order and treat the first
/// mismatch as [`Fault::BadCrc`] at that frame: then the outcome is exactly that of [`Frames`]
/// (which stops at the first fault of any kind), but the CRCs can be checked in parallel.
pub(crate) fn frame_bounds(buf: &[u8], out: &mut Vec<(usize, usize)>) -> Option<(usize, Fault)> {
    let mut pos = 0;
    while pos < buf.len() {
        match frame_end(buf, pos) {
            Ok(end) => {
                out.push((pos, end));
                pos = end;
            }
            Err(fault) => return Some((pos, fault)),
        }
    }
    None
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, (usize, Fault)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.buf.len() {
            return None;
        }
        match Self::frame_at(self.buf, self.pos) {
            Ok(f) => {
                self.pos = f.end;
                Some(Ok(f))
            }
            Err(fault) => {
                self.done = true;
                Some(Err((self.pos, fault)))
            }
        }
    }
}

/// Calls `each(offset, body)` for every whole frame of the segment file at `path`, in order,
/// reading through a bounded buffer: opening a store must not hold a whole segment (up to
/// [`SEGMENT_BYTES`]) in memory. Same outcome as [`Frames`] over the file's bytes: it stops at the
/// first fault and returns it with its offset. `each`'s error ends the walk and is returned.
pub(crate) fn for_each_frame_in_file<E: From<io::Error>>(
    path: &Path,
    mut each: impl FnMut(usize, &[u8]) -> Result<(), E>,
) -> Result<Option<(usize, Fault)>, E> {
    use std::io::Read;
    let file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut r = io::BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; HEADER];
    let mut body = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let rest = len - pos;
        if rest < HEADER as u64 {
            return Ok(Some((pos as usize, Fault::Truncated)));
        }
        r.read_exact(&mut header)?;
        let blen = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        if blen == 0 || blen as usize > MAX_BODY {
            return Ok(Some((pos as usize, Fault::BadLength(blen))));
        }
        if rest < (HEADER as u64) + u64::from(blen) {
            return Ok(Some((pos as usize, Fault::Truncated)));
        }
        body.resize(blen as usize, 0);
        r.read_exact(&mut body)?;
        if crc32c::crc32c(&body) != u32::from_le_bytes([header[4], header[5], header[6], header[7]]) {
            return Ok(Some((pos as usize, Fault::BadCrc)));
        }
        each(pos as usize, &body)?;
        pos += (HEADER as u64) + u64::from(blen);
    }
    Ok(None)
}

/// The most bytes of several frames the writer has written but not yet synced at any moment. It
/// writes a batch in pieces of at most this many bytes, cut at frame ends ([`piece_ends`]; a
/// longer frame, up to [`MAX_BODY`], is a piece of its own), and syncs each before writing the
/// next. So after a crash, intact frames after damage can only come from the last `TORN_WINDOW`
/// bytes of the last segment (a lone frame's damage has no intact frame after it within its
/// piece): recovery's torn-batch rule (`file_store::torn_batch`) looks no further back.
pub(crate) const TORN_WINDOW: usize = 4 << 20;

/// The ends of the pieces a batch whose frames end at `ends` (ascending, from offset 0) is
/// written in: each piece as long as possible but at most `window` bytes, unless it is one frame.
pub(crate) fn piece_ends(ends: &[usize], window: usize) -> impl Iterator<Item = usize> + '_ {
    let (mut start, mut k) = (0, 0);
    std::iter::from_fn(move || {
        let mut end = *ends.get(k)?;
        k += 1;
        while let Some(&next) = ends.get(k)
            && next - start <= window
        {
            end = next;
            k += 1;
        }
        start = end;
        Some(end)
    })
}

/// Sector size for [`has_zero_sector`]: the smallest unit a disk writes.
const SECTOR: usize = 512;

/// Does `bytes`, which start at file offset `at`, hold a whole sector-aligned run of
/// [`SECTOR`] zero bytes? What a crash leaves where a block of a write never reached the disk
/// (filesystems read unwritten blocks as zeros), and what a flipped bit or an edit does not.
pub(crate) fn has_zero_sector(bytes: &[u8], at: usize) -> bool {
    let first = at.next_multiple_of(SECTOR) - at;
    bytes
        .get(first..)
        .is_some_and(|b| b.chunks_exact(SECTOR).any(|s| s.iter().all(|&x| x == 0)))
}

/// Is there a whole, well-formed frame starting anywhere after `from`? Used to tell a torn tail
/// (nothing valid after the damage) from damage in the middle (acknowledged records follow it).
pub(crate) fn valid_frame_after(buf: &[u8], from: usize) -> Option<usize> {
    let mut search = from + 1;
    while search + HEADER + PRE_I.len() <= buf.len() {
        let hay = &buf[search + HEADER..];
        let hit = hay.windows(PRE_I.len()).position(|w| w == PRE_I)?;
        let pos = search + hit;
        if let Ok(f) = Frames::frame_at(buf, pos)
            && parse_envelope(f.body).is_some()
        {
            return Some(pos);
        }
        search = pos + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_at_most_the_window_unless_one_frame() {
        let cases: &[(&[usize], usize, &[usize])] = &[
            (&[], 10, &[]),
            (&[4, 8, 12], 10, &[8, 12]),
            (&[4, 8, 12], 12, &[12]),
            (&[25, 30, 60, 61], 10, &[25, 30, 60, 61]),
            (&[3, 6, 9, 12, 15], 6, &[6, 12, 15]),
        ];
        for (ends, window, want) in cases {
            let got: Vec<usize> = piece_ends(ends, *window).collect();
            assert_eq!(&got, want, "ends {ends:?} window {window}");
        }
        // Every split: pieces cover the batch, end on frame ends, and only a lone frame is longer.
        let ends: Vec<usize> = (1..200usize)
            .scan(0, |e, k| {
                *e += 1 + (k * 37) % 23;
                Some(*e)
            })
            .collect();
        for window in 1..60 {
            let mut start = 0;
            for end in piece_ends(&ends, window) {
                assert!(ends.contains(&end));
                let frames = ends.iter().filter(|&&e| e > start && e <= end).count();
                assert!(
                    end - start <= window || frames == 1,
                    "window {window}: {start}..{end}"
                );
                start = end;
            }
            assert_eq!(start, *ends.last().unwrap());
        }
    }

    #[test]
    fn zero_sectors_are_found_only_whole_and_aligned() {
        let mut b = vec![1u8; 3000];
        assert!(!has_zero_sector(&b, 0));
        b[600..1100].fill(0); // 500 zeros, no whole aligned sector
        assert!(!has_zero_sector(&b, 0));
        b[512..1024].fill(0);
        assert!(has_zero_sector(&b, 0));
        // The same bytes seen from file offset 100: sector boundaries move.
        assert!(!has_zero_sector(&b, 100));
        assert!(has_zero_sector(&b[12..], 12));
        assert!(!has_zero_sector(&[0u8; 511], 0));
        assert!(has_zero_sector(&[0u8; 1023], 1));
    }

    /// The streaming walk sees exactly what [`Frames`] sees over the same bytes, on every
    /// truncation and on damage at every byte.
    #[test]
    fn streaming_walk_agrees_with_frames() {
        let mut buf = Vec::new();
        let mut prev = ZERO_HASH;
        for i in 0..4u64 {
            let rec = format!(r#"{{"kind":"x","n":{}}}"#, "7".repeat(i as usize * 5));
            prev = encode_frame(&mut buf, i, &prev, rec.as_bytes()).unwrap().0;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg.log");
        let outcome_of_frames = |bytes: &[u8]| {
            let mut seen = Vec::new();
            let mut fault = None;
            for f in Frames::new(bytes) {
                match f {
                    Ok(f) => seen.push((f.offset, f.body.to_vec())),
                    Err(e) => fault = Some(e),
                }
            }
            (seen, fault)
        };
        let outcome_of_walk = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            let mut seen = Vec::new();
            let fault = for_each_frame_in_file::<io::Error>(&path, |o, b| {
                seen.push((o, b.to_vec()));
                Ok(())
            })
            .unwrap();
            (seen, fault)
        };
        let mut variants = Vec::new();
        for cut in 0..=buf.len() {
            variants.push(buf[..cut].to_vec());
        }
        for at in 0..buf.len() {
            let mut damaged = buf.clone();
            damaged[at] ^= 0x41;
            variants.push(damaged);
        }
        for v in variants {
            assert_eq!(outcome_of_walk(&v), outcome_of_frames(&v));
        }
    }

    #[test]
    fn frame_round_trip_and_strict_parse() {
        let mut buf = Vec::new();
        let (h0, l0) = encode_frame(&mut buf, 0, &ZERO_HASH, br#"{"kind":"x"}"#).unwrap();
        let (h1, l1) = encode_frame(&mut buf, 12345678901, &h0, br#"{"kind":"y"}"#).unwrap();
        let frames: Vec<_> = Frames::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(frames.len(), 2);
        let e0 = parse_envelope(frames[0].body).unwrap();
        assert_eq!(
            (e0.index, e0.prev, e0.rec),
            (0, ZERO_HASH, &br#"{"kind":"x"}"#[..])
        );
        let e1 = parse_envelope(frames[1].body).unwrap();
        assert_eq!(e1.index, 12345678901);
        assert_eq!(e1.prev, h0);
        assert_eq!(l0, crate::merkle::leaf_hash(frames[0].body));
        assert_eq!(l1, crate::merkle::leaf_hash(frames[1].body));
        assert_eq!(entry_hash(&e1.prev, &l1), h1);
        assert_eq!(entry_and_leaf_hash(&e1.prev, frames[1].body), (h1, l1));
        // The body is valid JSON.
        let v: serde_json::Value = serde_json::from_slice(frames[1].body).unwrap();
        assert_eq!(v["prev"], hex::encode(h0));
        assert!(parse_envelope(br#"{"i":01,"prev":"00","rec":{}}"#).is_none());
        assert!(parse_envelope(b"{\"i\": 1}").is_none());
        // `prev` must be exactly 64 lowercase hex digits.
        let good = format!(r#"{{"i":1,"prev":"{}","rec":{{}}}}"#, hex::encode([0xab; 32]));
        assert_eq!(parse_envelope(good.as_bytes()).unwrap().prev, [0xab; 32]);
        for bad in [
            good.replace("ab", "AB"),
            good.replacen("ab", "ag", 1),
            good.replacen("ab", "a", 1),
        ] {
            assert!(parse_envelope(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    /// The chain link, pinned: SHA-256(0x02 || prev || SHA-256(0x00 || body)). The expected values
    /// were computed independently (Python's hashlib).
    #[test]
    fn entry_hash_matches_the_reference() {
        let sha = |parts: &[&[u8]]| {
            let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            parts.iter().for_each(|p| ctx.update(p));
            let mut out = [0u8; 32];
            out.copy_from_slice(ctx.finish().as_ref());
            out
        };
        let mut body = Vec::new();
        let mut prev = [0u8; 32];
        for n in 0..300usize {
            body.push((n as u8).wrapping_mul(31).wrapping_add(7));
            prev[n % 32] ^= n as u8;
            let (e, l) = entry_and_leaf_hash(&prev, &body);
            assert_eq!(l, sha(&[&[0], &body]), "leaf, len {}", body.len());
            assert_eq!(e, sha(&[&[2], &prev, &l]), "entry, len {}", body.len());
            assert_eq!(e, entry_hash(&prev, &l));
        }
        let (e, l) = entry_and_leaf_hash(&ZERO_HASH, b"");
        // RFC 6962: the leaf hash of the empty string.
        assert_eq!(
            hex::encode(l),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        assert_eq!(
            hex::encode(e),
            "53cc28b203227f98ab407f4364eb99c7d3902400da57c8a4d35aa471036ee791"
        );
        let mut buf = Vec::new();
        let (e, l) = encode_frame(&mut buf, 0, &ZERO_HASH, br#"{"kind":"x"}"#).unwrap();
        assert_eq!(
            hex::encode(l),
            "027cbf98f2de2c7b1ee7f3031885ca3c1231e154c2d7423d272edc6b8dcfdd45"
        );
        assert_eq!(
            hex::encode(e),
            "011a0107824cf9b31482ba02cc7b0d4eea1da585fec0ccb8ddc757aa8c311ac7"
        );
    }

    #[test]
    fn faults_are_classified() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 0, &ZERO_HASH, b"{}").unwrap();
        let whole = buf.len();
        assert!(matches!(
            Frames::new(&buf[..whole - 1]).next(),
            Some(Err((0, Fault::Truncated)))
        ));
        let mut bad = buf.clone();
        bad[HEADER + 2] ^= 1;
        assert!(matches!(Frames::new(&bad).next(), Some(Err((0, Fault::BadCrc)))));
        assert!(matches!(
            Frames::new(&[0u8; 16]).next(),
            Some(Err((0, Fault::BadLength(0))))
        ));
        let mut two = buf.clone();
        encode_frame(&mut two, 1, &ZERO_HASH, b"{}").unwrap();
        assert_eq!(valid_frame_after(&two, 0), Some(whole));
        assert_eq!(valid_frame_after(&two, whole), None);
        // frame_bounds + crc_ok agree with Frames.
        let mut bounds = Vec::new();
        assert_eq!(frame_bounds(&two, &mut bounds), None);
        assert_eq!(bounds, vec![(0, whole), (whole, two.len())]);
        assert!(bounds.iter().all(|&(p, e)| crc_ok(&two, p, e)));
        bounds.clear();
        assert_eq!(frame_bounds(&bad, &mut bounds), None);
        assert!(!crc_ok(&bad, bounds[0].0, bounds[0].1));
        bounds.clear();
        assert_eq!(
            frame_bounds(&two[..two.len() - 1], &mut bounds),
            Some((whole, Fault::Truncated))
        );
        assert_eq!(bounds, vec![(0, whole)]);
        bounds.clear();
        assert_eq!(
            frame_bounds(&[0u8; 16], &mut bounds),
            Some((0, Fault::BadLength(0)))
        );
        assert!(bounds.is_empty());
        assert_eq!(segment_name(7), "00000000000000000007.log");
        assert_eq!(parse_segment_name("00000000000000000007.log"), Some(7));
        assert_eq!(parse_segment_name("7.log"), None);
    }
}

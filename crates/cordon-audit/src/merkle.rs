//! RFC 6962 / RFC 9162 Merkle trees over SHA-256: hashing, a compact incremental tree
//! ([`Frontier`]), and inclusion / consistency proofs (generation and verification).
//!
//! * leaf hash = SHA-256(0x00 || leaf data), node hash = SHA-256(0x01 || left || right),
//!   the root of the empty tree = SHA-256("") ([`empty_root`]).
//! * MTH(D\[n\]) for n > 1 splits at k = the largest power of two < n (RFC 9162 §2.1.1).
//!
//! Generation from a slice of leaf hashes ([`root`], [`inclusion_proof`], [`consistency_proof`])
//! costs O(n) hashing (every subtree is hashed once); [`Frontier`] keeps only the O(log n)
//! perfect-subtree roots of the right edge, so appending is amortized one node hash per leaf and
//! [`Frontier::root`] is O(log n). [`Subtrees`] hashes the perfect subtrees inside a run of
//! leaves on its own (so runs can be hashed in parallel), and [`Frontier::extend_from`] appends
//! such a run in O(log n) node hashes, stopping at any size inside it. A consistency proof from size m to n needs only the frontier at
//! m plus the leaf hashes appended after it ([`Frontier::consistency_proof`]): every proof node
//! left of m is a frontier node of m.
//!
//! Verification follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency) exactly; it
//! never panics on hostile input.

use aws_lc_rs::digest::{Context, SHA256, digest};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Why a proof could not be made or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {old} is larger than tree size {new}")]
    SizeOutOfRange { old: u64, new: u64 },
    #[error("tree size {size} exceeds the {have} leaves available")]
    NotEnoughLeaves { size: u64, have: u64 },
    #[error("proof has the wrong number of hashes for these tree sizes")]
    WrongProofLength,
    #[error("proof does not verify: the computed root differs")]
    RootMismatch,
}

fn to_hash(d: &[u8]) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(d);
    out
}

/// SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0]);
    ctx.update(data);
    to_hash(ctx.finish().as_ref())
}

/// SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 1;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    to_hash(digest(&SHA256, &buf).as_ref())
}

/// MTH of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    to_hash(digest(&SHA256, b"").as_ref())
}

/// Largest power of two strictly below `n` (n > 1).
fn split(n: u64) -> u64 {
    debug_assert!(n > 1);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// MTH over leaf hashes (O(n)).
pub fn root(leaves: &[Hash]) -> Hash {
    let mut f = Frontier::new();
    for h in leaves {
        f.push_hash(*h);
    }
    f.root()
}

/// The compact right edge of a tree: the roots of its perfect subtrees, largest (leftmost) first,
/// one per set bit of the size. O(log n) memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Frontier::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append a leaf (its data; hashed as a leaf). Returns the leaf hash.
    pub fn push(&mut self, data: &[u8]) -> Hash {
        let h = leaf_hash(data);
        self.push_hash(h);
        h
    }

    /// Append a leaf by its leaf hash.
    pub fn push_hash(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            // Cannot fail: one node per set bit of the size.
            let left = self.nodes.pop().unwrap_or_default();
            h = node_hash(&left, &h);
            s >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// Append a whole perfect subtree of 2^`level` leaves by its root hash: the same frontier as
    /// pushing its leaves one by one. The subtree must start at an aligned position (the size is a
    /// multiple of 2^`level`), as every perfect subtree of an RFC 6962 tree does.
    pub fn push_subtree(&mut self, level: u32, hash: Hash) {
        assert!(
            level < 64 && self.size.trailing_zeros() >= level,
            "subtree of 2^{level} leaves pushed at unaligned size {}",
            self.size
        );
        let mut h = hash;
        let mut s = self.size >> level;
        while s & 1 == 1 {
            // Cannot fail: one node per set bit of the size, and the bits below `level` are 0.
            let left = self.nodes.pop().unwrap_or_default();
            h = node_hash(&left, &h);
            s >>= 1;
        }
        self.nodes.push(h);
        self.size += 1 << level;
    }

    /// Append the leaves of `run` from the current size up to (not including) leaf `end`, as few
    /// whole subtrees as alignment allows: O(log n) node hashes here, whatever the length.
    /// Needs `run.start() <= self.size() <= end <= run.end()`.
    pub fn extend_from(&mut self, run: &Subtrees, end: u64) {
        assert!(
            run.start <= self.size && self.size <= end && end <= run.end(),
            "leaves {}..{end} are not in the run {}..{}",
            self.size,
            run.start,
            run.end()
        );
        while self.size < end {
            let pos = self.size;
            // The largest aligned subtree at `pos` that ends by `end`; it lies inside the run, so
            // the run holds its hash. Level 0 (one leaf) always fits.
            let mut level = pos.trailing_zeros().min(run.levels.len() as u32 - 1);
            while pos + (1u64 << level) > end {
                level -= 1;
            }
            let hash = run.node(level, pos >> level);
            self.push_subtree(level, hash);
        }
    }

    /// The root hash of the tree (MTH), O(log n).
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }

    /// The perfect subtrees as `(start, end, hash)` leaf ranges, left to right.
    pub fn subtrees(&self) -> Vec<(u64, u64, Hash)> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut start = 0u64;
        let mut nodes = self.nodes.iter();
        for bit in (0..64).rev() {
            let w = 1u64 << bit;
            if self.size & w != 0 {
                // Cannot fail: one node per set bit.
                let h = nodes.next().copied().unwrap_or_default();
                out.push((start, start + w, h));
                start += w;
            }
        }
        out
    }

    /// Consistency proof from this tree (size m) to the tree made by appending `appended` (leaf
    /// hashes) to it. O(len(appended)) hashing. An empty proof when nothing is appended or m = 0.
    pub fn consistency_proof(&self, appended: &[Hash]) -> Vec<Hash> {
        let m = self.size;
        let n = m + appended.len() as u64;
        if m == 0 || m == n {
            return Vec::new();
        }
        let subtrees = self.subtrees();
        let mut out = Vec::new();
        subproof(
            m,
            0,
            n,
            true,
            &mut |lo, hi| {
                if lo >= m {
                    root(&appended[(lo - m) as usize..(hi - m) as usize])
                } else {
                    // Every proof node left of m is one of m's perfect subtrees.
                    subtrees
                        .iter()
                        .find(|(s, e, _)| *s == lo && *e == hi)
                        .map(|(_, _, h)| *h)
                        .unwrap_or_default()
                }
            },
            &mut out,
        );
        out
    }
}

/// Every perfect subtree inside a run of consecutive leaves `[start, start + n)` of a tree: the
/// nodes at each level whose leaf range lies within the run. Built from the leaf hashes alone
/// (n - 1 node hashes at most), so runs can be hashed in parallel and then appended to a
/// [`Frontier`] with [`Frontier::extend_from`] in O(log n) each, up to any size inside the run.
#[derive(Clone, Debug)]
pub struct Subtrees {
    start: u64,
    /// `levels[l][j]` is the node of 2^l leaves starting at leaf `(first(l) + j) << l`.
    levels: Vec<Vec<Hash>>,
}

impl Subtrees {
    /// The subtrees of the run of `leaves` (leaf hashes) starting at leaf index `start`.
    pub fn new(start: u64, leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        let mut first = start;
        loop {
            let below = &levels[levels.len() - 1];
            // Nodes one level up whose two children both lie in the run.
            let up_first = first.div_ceil(2);
            let up_end = (first + below.len() as u64) / 2;
            if up_end <= up_first {
                break;
            }
            let up: Vec<Hash> = (up_first..up_end)
                .map(|q| {
                    let i = (2 * q - first) as usize;
                    node_hash(&below[i], &below[i + 1])
                })
                .collect();
            levels.push(up);
            first = up_first;
        }
        Subtrees { start, levels }
    }

    /// Index of the first leaf.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// One past the index of the last leaf.
    pub fn end(&self) -> u64 {
        self.start + self.levels[0].len() as u64
    }

    /// The node at `level` with index `q` at that level (leaves `q << level ..`).
    fn node(&self, level: u32, q: u64) -> Hash {
        // The first node index at `level`: ceil(start / 2^level).
        let first = self.start.div_ceil(1u64 << level);
        self.levels[level as usize][(q - first) as usize]
    }
}

/// RFC 6962 §2.1.1 PATH(m, D[lo:hi]).
fn path(m: u64, lo: u64, hi: u64, mth: &mut dyn FnMut(u64, u64) -> Hash, out: &mut Vec<Hash>) {
    let n = hi - lo;
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(m, lo, lo + k, mth, out);
        out.push(mth(lo + k, hi));
    } else {
        path(m - k, lo + k, hi, mth, out);
        out.push(mth(lo, lo + k));
    }
}

/// RFC 6962 §2.1.2 SUBPROOF(m, D[lo:hi], b).
fn subproof(m: u64, lo: u64, hi: u64, b: bool, mth: &mut dyn FnMut(u64, u64) -> Hash, out: &mut Vec<Hash>) {
    let n = hi - lo;
    if m == n {
        if !b {
            out.push(mth(lo, hi));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, lo, lo + k, b, mth, out);
        out.push(mth(lo + k, hi));
    } else {
        subproof(m - k, lo + k, hi, false, mth, out);
        out.push(mth(lo, lo + k));
    }
}

/// Audit path for leaf `index` in the tree of all `leaves` (leaf hashes). O(n).
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, MerkleError> {
    let n = leaves.len() as u64;
    if index >= n {
        return Err(MerkleError::IndexOutOfRange { index, size: n });
    }
    let mut out = Vec::new();
    path(
        index,
        0,
        n,
        &mut |lo, hi| root(&leaves[lo as usize..hi as usize]),
        &mut out,
    );
    Ok(out)
}

/// Consistency proof from the first `old_size` leaves to all `leaves`. O(n). Empty when
/// `old_size` is 0 or equals the size.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>, MerkleError> {
    let n = leaves.len() as u64;
    if old_size > n {
        return Err(MerkleError::SizeOutOfRange {
            old: old_size,
            new: n,
        });
    }
    if old_size == 0 || old_size == n {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    subproof(
        old_size,
        0,
        n,
        true,
        &mut |lo, hi| root(&leaves[lo as usize..hi as usize]),
        &mut out,
    );
    Ok(out)
}

/// The root implied by an inclusion proof (RFC 9162 §2.1.3.2), or why the proof is malformed.
pub fn root_from_inclusion_proof(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(MerkleError::WrongProofLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(MerkleError::WrongProofLength);
    }
    Ok(r)
}

/// Verify that `leaf` (a leaf hash) is at `index` in the tree of `size` with root `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    if root_from_inclusion_proof(leaf, index, size, proof)? == *root {
        Ok(())
    } else {
        Err(MerkleError::RootMismatch)
    }
}

/// Verify that the tree (`old_size`, `old_root`) is a prefix of (`new_size`, `new_root`)
/// (RFC 9162 §2.1.4.2). Equal sizes need an empty proof and equal roots; `old_size` 0 (the empty
/// tree is a prefix of every tree) needs an empty proof.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::SizeOutOfRange {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == 0 || old_size == new_size {
        if !proof.is_empty() {
            return Err(MerkleError::WrongProofLength);
        }
        if old_size == new_size && old_root != new_root {
            return Err(MerkleError::RootMismatch);
        }
        return Ok(());
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(MerkleError::WrongProofLength);
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return Err(MerkleError::WrongProofLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(MerkleError::WrongProofLength);
    }
    if fr == *old_root && sr == *new_root {
        Ok(())
    } else {
        Err(MerkleError::RootMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hash {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).unwrap();
        out
    }

    /// The RFC 6962 test leaves used by Certificate Transparency implementations.
    fn vector_leaves() -> Vec<Vec<u8>> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|s| hex::decode(s).unwrap())
        .collect()
    }

    /// Roots for the first 1..=8 vector leaves.
    const VECTOR_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn leaf_hashes(data: &[Vec<u8>]) -> Vec<Hash> {
        data.iter().map(|d| leaf_hash(d)).collect()
    }

    /// Naive recursive MTH straight from RFC 6962 §2.1.
    fn naive_mth(data: &[Vec<u8>]) -> Hash {
        match data.len() {
            0 => empty_root(),
            1 => leaf_hash(&data[0]),
            n => {
                let k = split(n as u64) as usize;
                node_hash(&naive_mth(&data[..k]), &naive_mth(&data[k..]))
            }
        }
    }

    #[test]
    fn rfc6962_vector_roots() {
        assert_eq!(
            empty_root(),
            h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        let data = vector_leaves();
        let leaves = leaf_hashes(&data);
        let mut f = Frontier::new();
        for (i, d) in data.iter().enumerate() {
            f.push(d);
            assert_eq!(f.root(), h(VECTOR_ROOTS[i]), "size {}", i + 1);
            assert_eq!(root(&leaves[..=i]), h(VECTOR_ROOTS[i]));
            assert_eq!(naive_mth(&data[..=i]), h(VECTOR_ROOTS[i]));
        }
    }

    #[test]
    fn rfc6962_vector_proofs() {
        let leaves = leaf_hashes(&vector_leaves());
        // Inclusion proofs (index, size, path) from the CT test data.
        let inclusion: &[(u64, usize, &[&str])] = &[
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (index, size, want) in inclusion {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            let got = inclusion_proof(&leaves[..*size], *index).unwrap();
            assert_eq!(got, want, "inclusion {index} in {size}");
            verify_inclusion(
                &leaves[*index as usize],
                *index,
                *size as u64,
                &got,
                &h(VECTOR_ROOTS[size - 1]),
            )
            .unwrap();
        }
        // Consistency proofs (old, new, proof).
        let consistency: &[(u64, usize, &[&str])] = &[
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (old, new, want) in consistency {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            let got = consistency_proof(&leaves[..*new], *old).unwrap();
            assert_eq!(got, want, "consistency {old} -> {new}");
            verify_consistency(
                *old,
                *new as u64,
                &h(VECTOR_ROOTS[*old as usize - 1]),
                &h(VECTOR_ROOTS[new - 1]),
                &got,
            )
            .unwrap();
        }
    }

    fn distinct_leaves(n: usize) -> Vec<Hash> {
        (0..n as u64).map(|i| leaf_hash(&i.to_le_bytes())).collect()
    }

    /// Whole subtrees pushed from a run give exactly the frontier of pushing the same leaves one
    /// by one, at every size inside the run, for runs at every offset (aligned or not).
    #[test]
    fn extend_from_a_run_matches_pushing_leaves() {
        let all = distinct_leaves(1100);
        let mut before = Frontier::new();
        for start in 0..70usize {
            for n in [0usize, 1, 2, 3, 5, 8, 13, 31, 32, 33, 64, 100] {
                let run = Subtrees::new(start as u64, all[start..start + n].to_vec());
                assert_eq!((run.start(), run.end()), (start as u64, (start + n) as u64));
                let mut one_by_one = before.clone();
                for end in start..=start + n {
                    if end > start {
                        one_by_one.push_hash(all[end - 1]);
                    }
                    let mut whole = before.clone();
                    whole.extend_from(&run, end as u64);
                    assert_eq!(whole, one_by_one, "start {start} n {n} end {end}");
                    assert_eq!(whole.root(), root(&all[..end]));
                }
                // Stopping on the way (at checkpoint sizes) changes nothing.
                let mut stepped = before.clone();
                for end in (start..=start + n).step_by(3).chain([start + n]) {
                    stepped.extend_from(&run, end as u64);
                }
                assert_eq!(stepped, one_by_one, "start {start} n {n} stepped");
            }
            before.push_hash(all[start]);
        }
        // Runs of 1,024 aligned leaves (the verifier's chunks) and one straddling them.
        let mut f = Frontier::new();
        let mut g = Frontier::new();
        for (k, c) in all[..1024].chunks(256).enumerate() {
            let run = Subtrees::new(k as u64 * 256, c.to_vec());
            assert_eq!(run.levels.len(), 9);
            f.extend_from(&run, run.end());
            c.iter().for_each(|h| g.push_hash(*h));
            assert_eq!(f, g);
        }
        let run = Subtrees::new(1024, all[1024..1100].to_vec());
        f.extend_from(&run, 1100);
        assert_eq!(f.root(), root(&all));
    }

    #[test]
    fn push_subtree_matches_pushing_leaves() {
        let all = distinct_leaves(96);
        let mut f = Frontier::new();
        // 32 + 16 + 8 + 8 + 32: sizes 32, 48, 56, 64, 96.
        for (start, level) in [(0usize, 5u32), (32, 4), (48, 3), (56, 3), (64, 5)] {
            f.push_subtree(level, root(&all[start..start + (1 << level)]));
            assert_eq!(f.root(), root(&all[..start + (1 << level)]));
        }
        assert_eq!(f, {
            let mut g = Frontier::new();
            all.iter().for_each(|h| g.push_hash(*h));
            g
        });
    }

    #[test]
    #[should_panic(expected = "unaligned")]
    fn push_subtree_refuses_an_unaligned_subtree() {
        let mut f = Frontier::new();
        f.push_hash(leaf_hash(b"a"));
        f.push_subtree(1, [0; 32]);
    }

    type Oracle = ct_merkle::mem_backed_tree::MemoryBackedTree<sha2::Sha256, Vec<u8>>;

    /// Every size 1..=64, every index and every old size, against ct-merkle and the naive MTH;
    /// and proofs with any hash flipped, or claimed at other sizes, are rejected.
    #[test]
    fn matches_ct_merkle_oracle_and_rejects_tampering() {
        let data: Vec<Vec<u8>> = (0..64u32).map(|i| format!("leaf {i}").into_bytes()).collect();
        let leaves = leaf_hashes(&data);
        let mut oracle = Oracle::new();
        let mut f = Frontier::new();
        let mut roots = vec![empty_root()];
        for n in 1..=64usize {
            oracle.push(data[n - 1].clone());
            f.push(&data[n - 1]);
            let r = root(&leaves[..n]);
            assert_eq!(r, naive_mth(&data[..n]));
            assert_eq!(f.root(), r);
            assert_eq!(oracle.root().as_bytes().as_slice(), &r[..], "root {n}");
            roots.push(r);
            for i in 0..n as u64 {
                let p = inclusion_proof(&leaves[..n], i).unwrap();
                let theirs = oracle.prove_inclusion(i as usize);
                assert_eq!(p.concat(), theirs.as_bytes(), "inclusion {i} in {n}");
                verify_inclusion(&leaves[i as usize], i, n as u64, &p, &r).unwrap();
                oracle
                    .root()
                    .verify_inclusion(&data[i as usize], i, &theirs)
                    .unwrap();
                for k in 0..p.len() {
                    let mut bad = p.clone();
                    bad[k][0] ^= 1;
                    assert!(verify_inclusion(&leaves[i as usize], i, n as u64, &bad, &r).is_err());
                }
                if n > 1 {
                    let other = (i + 1) % n as u64;
                    assert!(verify_inclusion(&leaves[other as usize], i, n as u64, &p, &r).is_err());
                }
            }
            for m in 1..=n as u64 {
                let p = consistency_proof(&leaves[..n], m).unwrap();
                let mut fm = Frontier::new();
                for l in &leaves[..m as usize] {
                    fm.push_hash(*l);
                }
                assert_eq!(
                    fm.consistency_proof(&leaves[m as usize..n]),
                    p,
                    "frontier {m}->{n}"
                );
                verify_consistency(m, n as u64, &roots[m as usize], &r, &p).unwrap();
                if m < n as u64 {
                    let theirs = oracle.prove_consistency(n - m as usize);
                    assert_eq!(p.concat(), theirs.as_bytes(), "consistency {m} -> {n}");
                    let old = ct_merkle::RootHash::<sha2::Sha256>::new(
                        ct_merkle::array::Array::try_from(&roots[m as usize][..]).unwrap(),
                        m,
                    );
                    oracle.root().verify_consistency(&old, &theirs).unwrap();
                    // A wrong old root, a flipped hash, a dropped hash: rejected.
                    let wrong_old = roots[m as usize - 1];
                    assert!(verify_consistency(m, n as u64, &wrong_old, &r, &p).is_err());
                    for k in 0..p.len() {
                        let mut bad = p.clone();
                        bad[k][31] ^= 0x80;
                        assert!(verify_consistency(m, n as u64, &roots[m as usize], &r, &bad).is_err());
                    }
                    assert!(
                        verify_consistency(m, n as u64, &roots[m as usize], &r, &p[..p.len() - 1]).is_err()
                    );
                }
            }
        }
        assert!(inclusion_proof(&leaves[..3], 3).is_err());
        assert!(consistency_proof(&leaves[..3], 4).is_err());
        assert!(verify_consistency(5, 4, &roots[5], &roots[4], &[]).is_err());
        assert!(verify_inclusion(&leaves[0], 0, 0, &[], &empty_root()).is_err());
    }

    /// Beyond the exhaustive small sizes: random leaves (random lengths and bytes), random tree
    /// sizes up to 5,000, random indices and old sizes, each proof equal to ct-merkle's and
    /// verified by both sides (a deterministic generator: a failure reproduces).
    #[test]
    fn random_trees_match_ct_merkle_oracle() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut oracle = Oracle::new();
        let mut data: Vec<Vec<u8>> = Vec::new();
        let mut roots = vec![empty_root()];
        let mut f = Frontier::new();
        for _ in 0..5_000 {
            let len = (next() % 200) as usize;
            let leaf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            oracle.push(leaf.clone());
            f.push(&leaf);
            data.push(leaf);
            roots.push(f.root());
        }
        let leaves = leaf_hashes(&data);
        // Random sizes, each with an oracle of exactly that size.
        for _ in 0..30 {
            let n = 1 + (next() % data.len() as u64) as usize;
            let mut sized = Oracle::new();
            for d in &data[..n] {
                sized.push(d.clone());
            }
            let r = root(&leaves[..n]);
            assert_eq!(r, roots[n], "root {n}");
            assert_eq!(sized.root().as_bytes().as_slice(), &r[..], "root {n}");
            for _ in 0..10 {
                let i = next() % n as u64;
                let p = inclusion_proof(&leaves[..n], i).unwrap();
                verify_inclusion(&leaves[i as usize], i, n as u64, &p, &r).unwrap();
                assert_eq!(
                    p.concat(),
                    sized.prove_inclusion(i as usize).as_bytes(),
                    "inclusion {i} in {n}"
                );
                let m = 1 + next() % n as u64;
                let c = consistency_proof(&leaves[..n], m).unwrap();
                verify_consistency(m, n as u64, &roots[m as usize], &r, &c).unwrap();
                if m < n as u64 {
                    let theirs = sized.prove_consistency(n - m as usize);
                    assert_eq!(c.concat(), theirs.as_bytes(), "consistency {m} -> {n}");
                }
            }
        }
        // And against the oracle's whole tree, at random indices and old sizes.
        let n = data.len();
        assert_eq!(oracle.root().as_bytes().as_slice(), &roots[n][..]);
        for _ in 0..200 {
            let i = next() % n as u64;
            let p = inclusion_proof(&leaves, i).unwrap();
            let theirs = oracle.prove_inclusion(i as usize);
            assert_eq!(p.concat(), theirs.as_bytes(), "inclusion {i} in {n}");
            oracle
                .root()
                .verify_inclusion(&data[i as usize], i, &theirs)
                .unwrap();
            let m = 1 + next() % (n as u64 - 1);
            let c = consistency_proof(&leaves, m).unwrap();
            let theirs = oracle.prove_consistency(n - m as usize);
            assert_eq!(c.concat(), theirs.as_bytes(), "consistency {m} -> {n}");
        }
    }
}

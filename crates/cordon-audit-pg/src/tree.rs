//! Streaming RFC 6962 Merkle tree head (MTH) over leaf hashes: the compact range (one perfect
//! subtree root per set bit of the size), so a root is available at any size in O(log n).
//!
//! Interim: to be replaced by `cordon_audit::merkle` (the shared implementation with proofs) once
//! it lands; the tests here pin it to the RFC 6962 definition and published vectors.

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(&[0x01]);
    ctx.update(left);
    ctx.update(right);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// An append-only Merkle tree that keeps only its frontier.
#[derive(Clone, Debug, Default)]
pub(crate) struct Frontier {
    size: u64,
    /// Roots of the perfect subtrees, largest (leftmost) first.
    stack: Vec<[u8; 32]>,
}

impl Frontier {
    #[cfg(test)]
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn push(&mut self, leaf_hash: [u8; 32]) {
        let mut node = leaf_hash;
        let mut n = self.size;
        // Merge with equal-sized subtrees: one per trailing 1-bit of the old size.
        while n & 1 == 1 {
            // Cannot underflow: every 1-bit of `size` has a subtree on the stack.
            let left = self.stack.pop().unwrap_or_default();
            node = node_hash(&left, &node);
            n >>= 1;
        }
        self.stack.push(node);
        self.size += 1;
    }

    /// RFC 6962 MTH of the leaves pushed so far (SHA-256 of the empty string for none).
    pub(crate) fn root(&self) -> [u8; 32] {
        let mut iter = self.stack.iter().rev();
        let Some(last) = iter.next() else {
            let mut out = [0u8; 32];
            out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"").as_ref());
            return out;
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::leaf_hash;

    /// RFC 6962 section 2.1, recursively.
    fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
        match leaves.len() {
            0 => Frontier::default().root(),
            1 => leaves[0],
            n => {
                // The largest power of two smaller than n.
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn frontier_matches_the_recursive_definition() {
        let leaves: Vec<[u8; 32]> = (0u32..70).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let mut f = Frontier::default();
        assert_eq!(f.root(), mth(&[]));
        for (i, l) in leaves.iter().enumerate() {
            f.push(*l);
            assert_eq!(f.size(), i as u64 + 1);
            assert_eq!(f.root(), mth(&leaves[..=i]), "size {}", i + 1);
        }
    }

    #[test]
    fn rfc6962_reference_vectors() {
        // The certificate-transparency reference test tree (leaves below), roots per size.
        let inputs: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let mut f = Frontier::default();
        for (input, root) in inputs.iter().zip(roots) {
            f.push(leaf_hash(input));
            assert_eq!(hex::encode(f.root()), root, "size {}", f.size());
        }
    }
}

//! The Merkle tree of a witness log, as RFC 9162 (and RFC 6962 before it) defines it: leaf
//! hashes, node hashes, tree heads, and inclusion and consistency proofs, made and checked.
//!
//! A leaf is an entry's canonical encoding (`docs/FORMAT.md`). Proofs are made from a
//! function that gives the tree hash of a range of leaves, so that the same code serves a
//! tree held in memory and one stored in tiles; they are checked with the algorithms of
//! RFC 9162 §2.1.3.2 and §2.1.4.2, which need only the proof, the sizes and the roots.

use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf's, a node's, or a tree's root.
pub type Hash = [u8; 32];

/// The root of the empty tree: the hash of the empty string.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Why a proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The index or the sizes cannot be those of a proof (an index past the tree, a tree
    /// smaller than the one it should extend).
    #[error("{0}")]
    Bounds(String),
    /// The proof has more or fewer hashes than the sizes call for.
    #[error("the proof has {found} hashes; a proof for these sizes has {expected}")]
    Length {
        /// Hashes in the proof.
        found: usize,
        /// Hashes the sizes call for.
        expected: usize,
    },
    /// The hashes lead to another root.
    #[error("the proof leads to root {computed}, not to {expected}")]
    Mismatch {
        /// The root the proof leads to, in hex.
        computed: String,
        /// The root it should lead to, in hex.
        expected: String,
    },
}

/// `SHA-256(0x00 ‖ leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(leaf);
    hasher.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The largest power of two below `n`, where the tree of `n` leaves splits (`n` ≥ 2).
pub fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The root of the tree whose leaf hashes are `leaves`, computed from all of them.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3.1):
/// sibling hashes from the leaf up. `range` gives the tree hash of the leaves
/// `start..end`; it is asked only for ranges the proof contains.
pub fn inclusion_proof(
    index: u64,
    size: u64,
    range: &mut impl FnMut(u64, u64) -> Hash,
) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::Bounds(format!(
            "leaf {index} is not in a tree of {size} leaves"
        )));
    }
    let mut proof = Vec::new();
    path(index, 0, size, range, &mut proof);
    Ok(proof)
}

fn path(
    index: u64,
    start: u64,
    end: u64,
    range: &mut impl FnMut(u64, u64) -> Hash,
    out: &mut Vec<Hash>,
) {
    if end - start <= 1 {
        return;
    }
    let middle = start + split(end - start);
    if index < middle {
        path(index, start, middle, range, out);
        out.push(range(middle, end));
    } else {
        path(index, middle, end, range, out);
        out.push(range(start, middle));
    }
}

/// The consistency proof from the tree of `old` leaves to the tree of `new` leaves (RFC 9162
/// §2.1.4.1). Empty when `old` is 0 or equal to `new`.
pub fn consistency_proof(
    old: u64,
    new: u64,
    range: &mut impl FnMut(u64, u64) -> Hash,
) -> Result<Vec<Hash>, ProofError> {
    if old > new {
        return Err(ProofError::Bounds(format!(
            "a tree of {new} leaves cannot extend one of {old}"
        )));
    }
    let mut proof = Vec::new();
    if old > 0 && old < new {
        subproof(old, 0, new, true, range, &mut proof);
    }
    Ok(proof)
}

fn subproof(
    old: u64,
    start: u64,
    end: u64,
    whole: bool,
    range: &mut impl FnMut(u64, u64) -> Hash,
    out: &mut Vec<Hash>,
) {
    let n = end - start;
    if old == n {
        if !whole {
            out.push(range(start, end));
        }
        return;
    }
    let k = split(n);
    if old <= k {
        subproof(old, start, start + k, whole, range, out);
        out.push(range(start + k, end));
    } else {
        subproof(old - k, start + k, end, false, range, out);
        out.push(range(start, start + k));
    }
}

fn mismatch(computed: &Hash, expected: &Hash) -> ProofError {
    ProofError::Mismatch {
        computed: hex(computed),
        expected: hex(expected),
    }
}

fn hex(hash: &Hash) -> String {
    hash.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Checks that `leaf` (a leaf hash) is leaf `index` of the tree of `size` leaves whose root is
/// `root`, by RFC 9162 §2.1.3.2.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::Bounds(format!(
            "leaf {index} is not in a tree of {size} leaves"
        )));
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::Length {
                found: proof.len(),
                expected: inclusion_length(index, size),
            });
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::Length {
            found: proof.len(),
            expected: inclusion_length(index, size),
        });
    }
    if r != *root {
        return Err(mismatch(&r, root));
    }
    Ok(())
}

/// Hashes in the inclusion proof of `index` in a tree of `size` leaves.
fn inclusion_length(index: u64, size: u64) -> usize {
    let mut proof = Vec::new();
    path(index, 0, size, &mut |_, _| EMPTY_ROOT, &mut proof);
    proof.len()
}

/// Checks that the tree of `new` leaves with root `new_root` extends, by appends only, the
/// tree of `old` leaves with root `old_root`, by RFC 9162 §2.1.4.2.
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::Bounds(format!(
            "a tree of {new} leaves cannot extend one of {old}"
        )));
    }
    if old == new || old == 0 {
        if !proof.is_empty() {
            return Err(ProofError::Length {
                found: proof.len(),
                expected: 0,
            });
        }
        if old == new && old_root != new_root {
            return Err(mismatch(new_root, old_root));
        }
        return Ok(());
    }
    let expected = {
        let mut counted = Vec::new();
        subproof(old, 0, new, true, &mut |_, _| EMPTY_ROOT, &mut counted);
        counted.len()
    };
    if proof.len() != expected {
        return Err(ProofError::Length {
            found: proof.len(),
            expected,
        });
    }
    // An old tree whose size is a power of two is a subtree of the new one: its root starts
    // the path.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return Err(ProofError::Length {
                found: proof.len(),
                expected,
            });
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if fr != *old_root {
        return Err(mismatch(&fr, old_root));
    }
    if sr != *new_root || s != 0 {
        return Err(mismatch(&sr, new_root));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(text: &str) -> Hash {
        let bytes: Vec<u8> = (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
            .collect();
        bytes.try_into().unwrap()
    }

    /// The leaves of the transparency-dev reference tests (testonly/constants.go).
    fn reference_leaves() -> Vec<Hash> {
        let inputs: [&[u8]; 8] = [
            b"",
            &[0x00],
            &[0x10],
            &[0x20, 0x21],
            &[0x30, 0x31],
            &[0x40, 0x41, 0x42, 0x43],
            &[0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            &[
                0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d,
                0x6e, 0x6f,
            ],
        ];
        inputs.iter().map(|leaf| leaf_hash(leaf)).collect()
    }

    /// Their roots for every size from 0 to 8.
    const REFERENCE_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn naive_range(leaves: &[Hash]) -> impl FnMut(u64, u64) -> Hash + '_ {
        |start, end| root(&leaves[start as usize..end as usize])
    }

    #[test]
    fn roots_are_the_reference_roots() {
        let leaves = reference_leaves();
        for (size, expected) in REFERENCE_ROOTS.iter().enumerate() {
            assert_eq!(root(&leaves[..size]), h(expected), "size {size}");
        }
    }

    #[test]
    fn inclusion_proofs_are_the_reference_proofs() {
        let leaves = reference_leaves();
        for (index, size, expected) in [
            (0u64, 1u64, vec![]),
            (
                0,
                2,
                vec!["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"],
            ),
            (
                1,
                2,
                vec!["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"],
            ),
            (
                2,
                3,
                vec!["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                vec![
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                0,
                8,
                vec![
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                vec![
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ] {
            let expected: Vec<Hash> = expected.into_iter().map(h).collect();
            let proof = inclusion_proof(index, size, &mut naive_range(&leaves)).unwrap();
            assert_eq!(proof, expected, "{index} in {size}");
            let root = h(REFERENCE_ROOTS[size as usize]);
            verify_inclusion(index, size, &leaves[index as usize], &proof, &root).unwrap();
        }
    }

    #[test]
    fn consistency_proofs_are_the_reference_proofs() {
        let leaves = reference_leaves();
        for (old, new, expected) in [
            (1u64, 1u64, vec![]),
            (
                1,
                8,
                vec![
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                2,
                5,
                vec![
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                6,
                8,
                vec![
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ] {
            let expected: Vec<Hash> = expected.into_iter().map(h).collect();
            let proof = consistency_proof(old, new, &mut naive_range(&leaves)).unwrap();
            assert_eq!(proof, expected, "{old} to {new}");
            let (old_root, new_root) = (
                h(REFERENCE_ROOTS[old as usize]),
                h(REFERENCE_ROOTS[new as usize]),
            );
            verify_consistency(old, new, &proof, &old_root, &new_root).unwrap();
        }
    }

    /// Leaves of a larger tree: the hashes of their indexes.
    fn numbered_leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|index| leaf_hash(&index.to_be_bytes()))
            .collect()
    }

    #[test]
    fn every_inclusion_proof_up_to_a_few_hundred_leaves_holds_and_no_other_does() {
        let leaves = numbered_leaves(300);
        for size in 1..=300u64 {
            let root = root(&leaves[..size as usize]);
            for index in (0..size).step_by(if size > 64 { 7 } else { 1 }) {
                let leaf = &leaves[index as usize];
                let proof = inclusion_proof(index, size, &mut naive_range(&leaves)).unwrap();
                verify_inclusion(index, size, leaf, &proof, &root).unwrap();
                // Another leaf, another index, a changed hash or a cut proof: refused.
                let other = &leaves[((index + 1) % 300) as usize];
                assert!(verify_inclusion(index, size, other, &proof, &root).is_err());
                if size > 1 {
                    let wrong = (index + 1) % size;
                    assert!(verify_inclusion(wrong, size, leaf, &proof, &root).is_err());
                    let mut bent = proof.clone();
                    bent[0][0] ^= 1;
                    assert!(verify_inclusion(index, size, leaf, &bent, &root).is_err());
                    assert!(
                        verify_inclusion(index, size, leaf, &proof[1..], &root).is_err(),
                        "{index} in {size}"
                    );
                }
                let mut long = proof.clone();
                long.push(root);
                assert!(verify_inclusion(index, size, leaf, &long, &root).is_err());
            }
        }
    }

    #[test]
    fn every_consistency_proof_up_to_a_few_hundred_leaves_holds_and_no_other_does() {
        let leaves = numbered_leaves(260);
        let roots: Vec<Hash> = (0..=260).map(|n| root(&leaves[..n])).collect();
        for new in 1..=260u64 {
            for old in (0..=new).step_by(if new > 64 { 5 } else { 1 }) {
                let proof = consistency_proof(old, new, &mut naive_range(&leaves)).unwrap();
                let (old_root, new_root) = (&roots[old as usize], &roots[new as usize]);
                verify_consistency(old, new, &proof, old_root, new_root).unwrap();
                if old > 0 && old < new {
                    // Another old tree (a rewritten past) or a bent proof: refused.
                    let other = leaf_hash(b"rewritten");
                    assert!(verify_consistency(old, new, &proof, &other, new_root).is_err());
                    assert!(verify_consistency(old, new, &proof, old_root, &other).is_err());
                    let mut bent = proof.clone();
                    let last = bent.len() - 1;
                    bent[last][31] ^= 1;
                    assert!(verify_consistency(old, new, &bent, old_root, new_root).is_err());
                    assert!(verify_consistency(old, new, &proof[1..], old_root, new_root).is_err());
                }
            }
        }
        assert!(verify_consistency(5, 4, &[], &roots[5], &roots[4]).is_err());
    }
}

//! The binary Merkle tree over a block's transaction ids: the header's
//! `tx_root` since protocol version 2, so a committed transaction is proven
//! with at most 32 hashes instead of the whole block.
//!
//! The tree is that of RFC 9162 §2.1.1 (Certificate Transparency), with
//! blake3 and Tally's own domain tags in place of SHA-256 and the 0x00 /
//! 0x01 prefixes:
//!
//! ```text
//! root([])        = blake3("tally/tx-empty/v2")
//! root([id])      = leaf(id)      = blake3("tally/tx-leaf/v2" ‖ id)
//! root(ids[0..n]) = node(root(ids[0..k]), root(ids[k..n]))
//!                   where k is the largest power of two below n
//! node(l, r)      = blake3("tally/tx-node/v2" ‖ l ‖ r)
//! ```
//!
//! Built level by level, that is: pair neighbours from the left, and carry
//! an odd last node up unchanged (it is never paired with itself, so no two
//! lists of ids share a root the way Bitcoin's duplicated odd node lets
//! them). Leaves and inner nodes hash under different tags, so a leaf can
//! never pass for a node. The number of ids is not in the root: the header
//! commits to it in `tx_count`, and a proof names it.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::Hash;

/// Tag of a leaf's hash.
pub const LEAF: &[u8] = b"tally/tx-leaf/v2";
/// Tag of an inner node's hash.
pub const NODE: &[u8] = b"tally/tx-node/v2";
/// Tag of the root of no transactions.
pub const EMPTY: &[u8] = b"tally/tx-empty/v2";

/// Most siblings a proof can need: a block holds fewer than 2^32
/// transactions (`tx_count` is a u32).
pub const MAX_PROOF_HASHES: usize = 32;

/// The hash of the leaf for transaction `id`.
pub fn leaf(id: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(LEAF);
    hasher.update(&id.0);
    Hash(*hasher.finalize().as_bytes())
}

/// The hash of an inner node over `left` and `right`.
pub fn node(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(NODE);
    hasher.update(&left.0);
    hasher.update(&right.0);
    Hash(*hasher.finalize().as_bytes())
}

/// The root of the tree over `ids`, in block order.
pub fn root(ids: &[Hash]) -> Hash {
    if ids.is_empty() {
        return Hash(*blake3::hash(EMPTY).as_bytes());
    }
    let mut level: Vec<Hash> = ids.iter().map(leaf).collect();
    while level.len() > 1 {
        level = up(&level);
    }
    level[0]
}

/// The level above `level`: neighbours paired from the left, an odd last
/// node carried up unchanged.
fn up(level: &[Hash]) -> Vec<Hash> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [left, right] => node(left, right),
            [odd] => *odd,
            _ => unreachable!("chunks(2) yields one or two"),
        })
        .collect()
}

/// Proof that a transaction id is the `index`-th of `count` under a root:
/// the sibling hashes from the leaf up, skipping the levels where its node
/// is the odd last one (carried up unpaired).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
pub struct InclusionProof {
    /// Position of the transaction in its block, from 0.
    pub index: u32,
    /// Transactions in the block (the header's `tx_count`).
    pub count: u32,
    /// Sibling hashes, from the leaf's level up.
    pub siblings: Vec<Hash>,
}

/// Why a proof does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The index is not below the count.
    #[error("index {index} is not among {count} transactions")]
    IndexOutOfRange {
        /// The proof's index.
        index: u32,
        /// The proof's count.
        count: u32,
    },
    /// The proof carries more or fewer hashes than the tree's shape needs.
    #[error("the proof has {got} hashes; a tree of {count} at index {index} needs {needed}")]
    WrongLength {
        /// The proof's index.
        index: u32,
        /// The proof's count.
        count: u32,
        /// Hashes the shape needs.
        needed: usize,
        /// Hashes the proof has.
        got: usize,
    },
    /// The proof names another count than the header's `tx_count`.
    #[error("the proof is for a block of {got} transactions; the header says {expected}")]
    WrongCount {
        /// The header's count.
        expected: u32,
        /// The proof's count.
        got: u32,
    },
    /// The hashes lead to another root.
    #[error("the proof leads to root {computed}, not {expected}")]
    RootMismatch {
        /// The root the proof leads to.
        computed: Hash,
        /// The root it was checked against.
        expected: Hash,
    },
}

/// Hashes an inclusion proof for position `index`, of a tree of `count`,
/// needs.
fn needed(mut index: u32, mut count: u32) -> usize {
    let mut n = 0;
    while count > 1 {
        if index % 2 == 1 || index + 1 < count {
            n += 1;
        }
        index /= 2;
        count = count.div_ceil(2);
    }
    n
}

/// The proof for the `index`-th of `ids`; `None` if there is no such
/// transaction.
pub fn prove(ids: &[Hash], index: usize) -> Option<InclusionProof> {
    let count = u32::try_from(ids.len()).ok()?;
    let position = u32::try_from(index).ok().filter(|i| *i < count)?;
    let mut level: Vec<Hash> = ids.iter().map(leaf).collect();
    let mut at = index;
    let mut siblings = Vec::new();
    while level.len() > 1 {
        if at % 2 == 1 {
            siblings.push(level[at - 1]);
        } else if at + 1 < level.len() {
            siblings.push(level[at + 1]);
        }
        level = up(&level);
        at /= 2;
    }
    Some(InclusionProof {
        index: position,
        count,
        siblings,
    })
}

impl InclusionProof {
    /// The root this proof leads to from transaction `id`. The shape (which
    /// side each sibling is on, which levels have none) follows from the
    /// index and count alone.
    pub fn root_from(&self, id: &Hash) -> Result<Hash, ProofError> {
        let (index, count) = (self.index, self.count);
        if index >= count {
            return Err(ProofError::IndexOutOfRange { index, count });
        }
        let needed = needed(index, count);
        if self.siblings.len() != needed {
            return Err(ProofError::WrongLength {
                index,
                count,
                needed,
                got: self.siblings.len(),
            });
        }
        let mut hash = leaf(id);
        let mut siblings = self.siblings.iter();
        let (mut at, mut width) = (index, count);
        while width > 1 {
            if at % 2 == 1 {
                // Counted by `needed`, so present.
                let left = siblings.next().copied().unwrap_or_default();
                hash = node(&left, &hash);
            } else if at + 1 < width {
                let right = siblings.next().copied().unwrap_or_default();
                hash = node(&hash, &right);
            }
            at /= 2;
            width = width.div_ceil(2);
        }
        Ok(hash)
    }

    /// Checks that transaction `id` is the `index`-th of the `tx_count`
    /// transactions under `root` (both from the same header). The count is
    /// checked because the root does not bind it: the first of three and
    /// the first of four have proofs of the same shape.
    pub fn verify(&self, id: &Hash, root: &Hash, tx_count: u32) -> Result<(), ProofError> {
        if self.count != tx_count {
            return Err(ProofError::WrongCount {
                expected: tx_count,
                got: self.count,
            });
        }
        let computed = self.root_from(id)?;
        match computed == *root {
            true => Ok(()),
            false => Err(ProofError::RootMismatch {
                computed,
                expected: *root,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(i: u32) -> Hash {
        Hash::digest(&i.to_le_bytes())
    }

    fn ids(n: u32) -> Vec<Hash> {
        (0..n).map(id).collect()
    }

    /// RFC 9162's recursive definition, as written there.
    fn reference(ids: &[Hash]) -> Hash {
        match ids.len() {
            0 => Hash(*blake3::hash(EMPTY).as_bytes()),
            1 => leaf(&ids[0]),
            n => {
                let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                node(&reference(&ids[..k]), &reference(&ids[k..]))
            }
        }
    }

    #[test]
    fn the_level_by_level_root_is_rfc_9162s_tree() {
        for n in 0..=130 {
            assert_eq!(root(&ids(n)), reference(&ids(n)), "{n} ids");
        }
    }

    #[test]
    fn small_trees_have_the_documented_shape() {
        let (a, b, c) = (id(0), id(1), id(2));
        assert_eq!(root(&[a]), leaf(&a));
        assert_eq!(root(&[a, b]), node(&leaf(&a), &leaf(&b)));
        // The odd last leaf is carried up, not paired with itself.
        assert_eq!(
            root(&[a, b, c]),
            node(&node(&leaf(&a), &leaf(&b)), &leaf(&c))
        );
        assert_ne!(root(&[a, b, c]), root(&[a, b, c, c]));
        // A leaf never passes for a node: the tags differ.
        assert_ne!(leaf(&a), node(&a, &a));
    }

    #[test]
    fn every_position_of_every_small_tree_proves_and_nothing_else_does() {
        for n in 1..=70u32 {
            let ids = ids(n);
            let root = root(&ids);
            for (i, tx) in ids.iter().enumerate() {
                let proof = prove(&ids, i).expect("in range");
                assert!(proof.siblings.len() <= MAX_PROOF_HASHES);
                assert_eq!(proof.verify(tx, &root, n), Ok(()), "{i} of {n}");
                // Another id, another position or another count fails.
                assert!(proof.verify(&id(n + 1), &root, n).is_err());
                if n > 1 {
                    let moved = InclusionProof {
                        index: (proof.index + 1) % n,
                        ..proof.clone()
                    };
                    assert!(moved.verify(tx, &root, n).is_err(), "{i} of {n} moved");
                }
                let recounted = InclusionProof {
                    count: n + 1,
                    ..proof.clone()
                };
                assert_eq!(
                    recounted.verify(tx, &root, n),
                    Err(ProofError::WrongCount {
                        expected: n,
                        got: n + 1
                    }),
                );
            }
            assert_eq!(prove(&ids, n as usize), None);
        }
    }

    #[test]
    fn malformed_proofs_are_refused_with_the_reason() {
        let ids = ids(5);
        let root = root(&ids);
        let mut proof = prove(&ids, 4).expect("in range");
        // The odd last leaf of five is carried up twice: one sibling.
        assert_eq!(proof.siblings.len(), 1);
        proof.siblings.push(Hash::ZERO);
        assert!(matches!(
            proof.verify(&ids[4], &root, 5),
            Err(ProofError::WrongLength {
                needed: 1,
                got: 2,
                ..
            })
        ));
        let outside = InclusionProof {
            index: 5,
            count: 5,
            siblings: vec![],
        };
        assert_eq!(
            outside.verify(&ids[0], &root, 5),
            Err(ProofError::IndexOutOfRange { index: 5, count: 5 })
        );
    }

    /// The worked example (checked with Python's `blake3` package, from the
    /// definitions in the module docs alone): three ids, blake3 of "tx0",
    /// "tx1" and "tx2"; the proof of the third is one sibling, the node over
    /// the first two (it is the odd last leaf at the first level).
    #[test]
    fn the_worked_example() {
        let ids: Vec<Hash> = [b"tx0", b"tx1", b"tx2"]
            .iter()
            .map(|b| Hash::digest(*b))
            .collect();
        let hex = |h: Hash| h.to_hex();
        assert_eq!(
            hex(root(&ids)),
            "0x4f11b031f7d2adfc90f0a0f2e5fe32e7139c77987eabbeabbd0f490a2f97e0cb"
        );
        assert_eq!(
            hex(root(&[])),
            "0xdeddfb77674fd0fea3cc0ab2f3a5eb954b68ecf37a337c92268c4e497bb9c865"
        );
        let third = prove(&ids, 2).expect("in range");
        assert_eq!(
            third.siblings.into_iter().map(hex).collect::<Vec<_>>(),
            ["0x9ef18fc8d4ee49fc760eeed9076203b483e98d96916f76a27330b4cb99f2329a"]
        );
        let second = prove(&ids, 1).expect("in range");
        assert_eq!(
            second.siblings.into_iter().map(hex).collect::<Vec<_>>(),
            [
                "0xb982ae104096720e0f5299f2e67b20b9bcf523eb0888e407d4bc8bea74e54429",
                "0x9cdfd67eab324f55240429e5d78a449a850a27c80512af8b768bd2e723c259a7"
            ]
        );
    }

    proptest! {
        #[test]
        fn any_flipped_bit_in_a_proof_id_or_root_fails(
            n in 1u32..300,
            pick in any::<prop::sample::Index>(),
            byte in 0usize..32,
            bit in 0u8..8,
            target in 0u8..3,
        ) {
            let ids = ids(n);
            let i = pick.index(n as usize);
            let mut proof = prove(&ids, i).expect("in range");
            let mut tx = ids[i];
            let mut root = root(&ids);
            match target {
                0 if !proof.siblings.is_empty() => {
                    let s = byte % proof.siblings.len();
                    proof.siblings[s].0[byte] ^= 1 << bit;
                }
                1 => tx.0[byte] ^= 1 << bit,
                _ => root.0[byte] ^= 1 << bit,
            }
            prop_assert!(proof.verify(&tx, &root, n).is_err());
        }
    }
}

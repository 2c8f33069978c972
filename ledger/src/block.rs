//! Blocks, votes and commit certificates.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::Serialize;

use crate::consensus_msg::Evidence;
use crate::crypto::{Keypair, Signature};
use crate::genesis::ValidatorSet;
use crate::tx::SignedTransaction;
use crate::types::{Address, ChainId, Hash};

/// The block format version this code writes and accepts: 3, whose header
/// commits to the state, the transactions as a Merkle tree, the validator
/// sets, the previous block's commit and the evidence the block carries.
pub const BLOCK_VERSION: u32 = 3;

/// Most pieces of evidence one block carries.
pub const MAX_BLOCK_EVIDENCE: usize = 16;

/// What a block commits to. The block hash is blake3(borsh(header)).
#[derive(
    Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, serde::Deserialize,
)]
pub struct Header {
    /// Format version, [`BLOCK_VERSION`].
    pub version: u32,
    /// The chain this block belongs to.
    pub chain_id: ChainId,
    /// 1 for the first block after genesis.
    pub height: u64,
    /// Hash of the previous block; the genesis hash for height 1.
    pub parent_hash: Hash,
    /// Proposer's clock, milliseconds since the Unix epoch; never below the
    /// parent's (or the genesis time).
    pub timestamp_ms: u64,
    /// The validator that proposed the block and receives its fees.
    pub proposer: Address,
    /// [`tx_root`] of the transactions: the root of their Merkle tree.
    pub tx_root: Hash,
    /// Number of transactions.
    pub tx_count: u32,
    /// The root of the account tree after this block
    /// ([`crate::state_tree`]).
    pub state_root: Hash,
    /// [`ValidatorSet::hash`] of the validators that sign this block.
    pub validators_hash: Hash,
    /// [`ValidatorSet::hash`] of the validators that sign the next block.
    pub next_validators_hash: Hash,
    /// [`last_commit_hash`] of the block's `last_commit`.
    pub last_commit_hash: Hash,
    /// [`evidence_hash`] of the block's evidence.
    pub evidence_hash: Hash,
}

impl Header {
    /// The block hash: blake3 of the canonical header encoding.
    pub fn hash(&self) -> Hash {
        Hash::digest(&borsh::to_vec(self).unwrap_or_default())
    }
}

/// A header and the body it commits to.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Block {
    /// The header.
    pub header: Header,
    /// Transactions in execution order.
    pub txs: Vec<SignedTransaction>,
    /// The commit certificate of the previous block (none in block 1): the
    /// proposer's choice of precommits, which makes "who signed the latest
    /// commit" the same on every node.
    pub last_commit: Option<Commit>,
    /// Equivocation evidence recorded by this block (at most
    /// [`MAX_BLOCK_EVIDENCE`]).
    pub evidence: Vec<Evidence>,
}

impl Block {
    /// The block hash (of the header).
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// Whether the body is the one the header commits to (`tx_count`,
    /// `tx_root`, `last_commit_hash`, `evidence_hash`). The block hash
    /// covers only the header, so anything keyed by it must check this
    /// first.
    pub fn body_matches_header(&self) -> bool {
        let ids: Vec<Hash> = self.txs.iter().map(SignedTransaction::id).collect();
        self.header.tx_count as usize == self.txs.len()
            && tx_root(&ids) == self.header.tx_root
            && last_commit_hash(&self.last_commit) == self.header.last_commit_hash
            && evidence_hash(&self.evidence) == self.header.evidence_hash
    }
}

/// blake3("tally/last-commit/v1" ‖ borsh(last_commit)), where
/// `last_commit` is an `Option<Commit>`.
pub fn last_commit_hash(last_commit: &Option<Commit>) -> Hash {
    let bytes = borsh::to_vec(last_commit).unwrap_or_default();
    Hash::digest_parts(&[crate::domain::LAST_COMMIT, &bytes])
}

/// blake3("tally/evidence-list/v1" ‖ borsh(evidence)), where `evidence` is
/// a `Vec<Evidence>`.
pub fn evidence_hash(evidence: &[Evidence]) -> Hash {
    let bytes = borsh::to_vec(evidence).unwrap_or_default();
    Hash::digest_parts(&[crate::domain::EVIDENCE_LIST, &bytes])
}

/// The transaction root: the root of the binary Merkle tree over the
/// transaction ids in block order ([`crate::merkle`]).
pub fn tx_root(ids: &[Hash]) -> Hash {
    crate::merkle::root(ids)
}

/// The two voting steps of a round.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum VoteKind {
    /// First-step vote.
    Prevote,
    /// Second-step vote; 2f+1 of them for a block make it final.
    Precommit,
}

/// A consensus vote: what a validator signs. `block_hash` `None` is a vote
/// for nothing (nil).
#[derive(
    Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, serde::Deserialize,
)]
pub struct Vote {
    /// The chain.
    pub chain_id: ChainId,
    /// Height voted on.
    pub height: u64,
    /// Round within the height.
    pub round: u32,
    /// Prevote or precommit.
    pub kind: VoteKind,
    /// The block voted for, or nil.
    pub block_hash: Option<Hash>,
}

impl Vote {
    /// blake3("tally/vote/v1" ‖ genesis_hash ‖ borsh(vote)).
    pub fn signing_message(&self, genesis_hash: &Hash) -> Hash {
        let body = borsh::to_vec(self).unwrap_or_default();
        Hash::digest_parts(&[crate::domain::VOTE, &genesis_hash.0, &body])
    }

    /// Signs the vote.
    pub fn sign(&self, key: &Keypair, genesis_hash: &Hash) -> Signature {
        key.sign(&self.signing_message(genesis_hash))
    }
}

/// One validator's precommit signature inside a commit certificate.
#[derive(
    Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, serde::Deserialize,
)]
pub struct CommitSignature {
    /// The validator.
    pub validator: Address,
    /// Its precommit signature for (height, round, block hash).
    pub signature: Signature,
}

/// Proof that a block is final: precommits for it from validators holding
/// more than two thirds of the voting power.
#[derive(
    Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, serde::Deserialize,
)]
pub struct Commit {
    /// Height of the block.
    pub height: u64,
    /// Round in which it was decided.
    pub round: u32,
    /// The block's hash.
    pub block_hash: Hash,
    /// Precommit signatures, at most one per validator.
    pub signatures: Vec<CommitSignature>,
}

/// Why a commit certificate does not prove finality.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// Certificate for another block or height.
    #[error(
        "commit is for height {got_height} block {got_hash}, expected height {height} block {hash}"
    )]
    WrongBlock {
        /// Expected height.
        height: u64,
        /// Expected block.
        hash: Hash,
        /// Certificate's height.
        got_height: u64,
        /// Certificate's block.
        got_hash: Hash,
    },
    /// A signer that is not in the validator set.
    #[error("commit signed by {0}, which is not a validator")]
    UnknownValidator(Address),
    /// The same validator twice.
    #[error("commit has two signatures from {0}")]
    Duplicate(Address),
    /// A signature that does not verify.
    #[error("commit signature from {0} does not verify")]
    BadSignature(Address),
    /// Not enough power.
    #[error("commit carries voting power {got}, needs {needed}")]
    NoQuorum {
        /// Power signed.
        got: u64,
        /// Quorum.
        needed: u64,
    },
}

/// Checks that `commit` proves `(height, block_hash)` final under `validators`.
pub fn verify_commit(
    commit: &Commit,
    height: u64,
    block_hash: &Hash,
    validators: &ValidatorSet,
    chain_id: &ChainId,
    genesis_hash: &Hash,
) -> Result<(), CommitError> {
    if commit.height != height || &commit.block_hash != block_hash {
        return Err(CommitError::WrongBlock {
            height,
            hash: *block_hash,
            got_height: commit.height,
            got_hash: commit.block_hash,
        });
    }
    let vote = Vote {
        chain_id: chain_id.clone(),
        height,
        round: commit.round,
        kind: VoteKind::Precommit,
        block_hash: Some(*block_hash),
    };
    let message = vote.signing_message(genesis_hash);
    let mut seen = std::collections::BTreeSet::new();
    let mut power: u64 = 0;
    for sig in &commit.signatures {
        let validator_power = validators
            .power_of(&sig.validator)
            .ok_or(CommitError::UnknownValidator(sig.validator))?;
        if !seen.insert(sig.validator) {
            return Err(CommitError::Duplicate(sig.validator));
        }
        if !sig.signature.verify(&sig.validator, &message) {
            return Err(CommitError::BadSignature(sig.validator));
        }
        power = power.saturating_add(validator_power);
    }
    let needed = validators.quorum_power();
    if power < needed {
        return Err(CommitError::NoQuorum { got: power, needed });
    }
    Ok(())
}

//! Consensus messages: signed proposals and votes, and evidence of
//! equivocation. Defined here so that the network layer can carry and check
//! them without depending on the consensus state machine.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::block::{Block, Vote, VoteKind};
use crate::crypto::{Keypair, Signature};
use crate::genesis::ValidatorSet;
use crate::types::{Address, ChainId, Hash};

/// Domain tag of a proposal's signing message.
pub const PROPOSAL_DOMAIN: &[u8] = b"tally/proposal/v1";

/// What a proposer signs: the block by hash, so the signature is cheap to
/// check before the block is executed.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ProposalCore {
    /// The chain.
    pub chain_id: ChainId,
    /// Height.
    pub height: u64,
    /// Round.
    pub round: u32,
    /// The round in which the proposer saw 2f+1 prevotes for this block
    /// (Tendermint's `validRound`), or none (`-1` in the paper).
    pub valid_round: Option<u32>,
    /// The proposed block's hash.
    pub block_hash: Hash,
}

impl ProposalCore {
    /// blake3("tally/proposal/v1" ‖ genesis_hash ‖ borsh(core)).
    pub fn signing_message(&self, genesis_hash: &Hash) -> Hash {
        let body = borsh::to_vec(self).unwrap_or_default();
        Hash::digest_parts(&[PROPOSAL_DOMAIN, &genesis_hash.0, &body])
    }
}

/// A proposal: the block and its proposer's signature over [`ProposalCore`].
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SignedProposal {
    /// Height, round, valid round and block hash.
    pub core: ProposalCore,
    /// The block itself.
    pub block: Block,
    /// The proposer.
    pub proposer: Address,
    /// Its signature over `core`.
    pub signature: Signature,
}

impl SignedProposal {
    /// Signs a proposal of `block`.
    pub fn sign(core: ProposalCore, block: Block, key: &Keypair, genesis_hash: &Hash) -> Self {
        let signature = key.sign(&core.signing_message(genesis_hash));
        SignedProposal {
            core,
            block,
            proposer: key.address(),
            signature,
        }
    }

    /// The signature is the proposer's, the block is the one named, and its
    /// transactions are the ones its header commits to.
    pub fn verify(&self, genesis_hash: &Hash) -> bool {
        self.block.hash() == self.core.block_hash
            && self.block.body_matches_header()
            && self
                .signature
                .verify(&self.proposer, &self.core.signing_message(genesis_hash))
    }
}

/// A vote with its signer and signature.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct SignedVote {
    /// The vote.
    pub vote: Vote,
    /// The validator that signed it.
    pub validator: Address,
    /// Its signature over [`Vote::signing_message`].
    pub signature: Signature,
}

impl SignedVote {
    /// Signs `vote` with `key`.
    pub fn sign(vote: Vote, key: &Keypair, genesis_hash: &Hash) -> SignedVote {
        let signature = vote.sign(key, genesis_hash);
        SignedVote {
            vote,
            validator: key.address(),
            signature,
        }
    }

    /// Signed by a member of `validators`, and the signature verifies.
    pub fn verify(&self, validators: &ValidatorSet, genesis_hash: &Hash) -> bool {
        validators.power_of(&self.validator).is_some()
            && self
                .signature
                .verify(&self.validator, &self.vote.signing_message(genesis_hash))
    }
}

/// A message of the consensus protocol.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum ConsensusMessage {
    /// A proposal.
    Proposal(Box<SignedProposal>),
    /// A prevote or precommit.
    Vote(SignedVote),
    /// Proof that a validator equivocated, passed on so that every node
    /// holds it and the next proposer records it in a block.
    Evidence(Box<Evidence>),
}

impl ConsensusMessage {
    /// Height the message is for (evidence: the offence's height).
    pub fn height(&self) -> u64 {
        match self {
            ConsensusMessage::Proposal(p) => p.core.height,
            ConsensusMessage::Vote(v) => v.vote.height,
            ConsensusMessage::Evidence(e) => e.offence().height,
        }
    }
}

/// Proof that a validator signed two conflicting votes: same height, round
/// and kind, different blocks. Both signatures verify.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct DuplicateVoteEvidence {
    /// The vote seen first.
    pub first: SignedVote,
    /// The conflicting vote.
    pub second: SignedVote,
}

impl DuplicateVoteEvidence {
    /// Whether this really proves equivocation by a validator of the set.
    pub fn is_valid(&self, validators: &ValidatorSet, genesis_hash: &Hash) -> bool {
        let (a, b) = (&self.first, &self.second);
        a.validator == b.validator
            && a.vote.height == b.vote.height
            && a.vote.round == b.vote.round
            && a.vote.kind == b.vote.kind
            && a.vote.chain_id == b.vote.chain_id
            && a.vote.block_hash != b.vote.block_hash
            && a.verify(validators, genesis_hash)
            && b.verify(validators, genesis_hash)
    }

    /// The kind of the conflicting votes.
    pub fn kind(&self) -> VoteKind {
        self.first.vote.kind
    }
}

/// Proof that a proposer signed two proposals for one height and round
/// with different blocks. Both signatures verify.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct DuplicateProposalEvidence {
    /// The proposer.
    pub proposer: Address,
    /// The proposal seen first.
    pub first: ProposalCore,
    /// Its signature.
    pub first_signature: Signature,
    /// The conflicting proposal.
    pub second: ProposalCore,
    /// Its signature.
    pub second_signature: Signature,
}

/// Domain tag of an evidence id.
pub const EVIDENCE_DOMAIN: &[u8] = b"tally/evidence/v1";

/// Equivocation evidence, as blocks carry it. JSON:
/// `{"duplicate_vote": {...}}` or `{"duplicate_proposal": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// Two votes of one step.
    DuplicateVote(DuplicateVoteEvidence),
    /// Two proposals of one round.
    DuplicateProposal(DuplicateProposalEvidence),
}

/// What evidence convicts: one validator signing twice at one height,
/// round and step. A chain records each offence at most once.
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
    Deserialize,
)]
pub struct Offence {
    /// The validator.
    pub validator: Address,
    /// Height.
    pub height: u64,
    /// Round.
    pub round: u32,
    /// 0 proposal, 1 prevote, 2 precommit.
    pub step: u8,
}

/// Why evidence does not prove an offence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// The two messages are not for one height, round and step of one chain
    /// by one signer, or do not conflict.
    #[error("the two messages do not conflict: {0}")]
    NoConflict(&'static str),
    /// The signer was not a validator at that height.
    #[error("{0} was not a validator at that height")]
    NotAValidator(Address),
    /// A signature does not verify.
    #[error("a signature of {0} does not verify")]
    BadSignature(Address),
}

impl Evidence {
    /// The evidence id: blake3("tally/evidence/v1" ‖ borsh(evidence)).
    pub fn id(&self) -> Hash {
        Hash::digest_parts(&[EVIDENCE_DOMAIN, &borsh::to_vec(self).unwrap_or_default()])
    }

    /// The same evidence with its two messages in canonical order (the one
    /// with the smaller borsh encoding first), so that nodes that saw them
    /// in different orders hold, gossip and record the same bytes: one
    /// offence proven by one pair of messages has one id.
    pub fn canonical(self) -> Evidence {
        match self {
            Evidence::DuplicateVote(e) => {
                let (a, b) = (borsh::to_vec(&e.first), borsh::to_vec(&e.second));
                match (a, b) {
                    (Ok(a), Ok(b)) if a > b => Evidence::DuplicateVote(DuplicateVoteEvidence {
                        first: e.second,
                        second: e.first,
                    }),
                    _ => Evidence::DuplicateVote(e),
                }
            }
            Evidence::DuplicateProposal(e) => {
                let (a, b) = (borsh::to_vec(&e.first), borsh::to_vec(&e.second));
                match (a, b) {
                    (Ok(a), Ok(b)) if a > b => {
                        Evidence::DuplicateProposal(DuplicateProposalEvidence {
                            proposer: e.proposer,
                            first: e.second,
                            first_signature: e.second_signature,
                            second: e.first,
                            second_signature: e.first_signature,
                        })
                    }
                    _ => Evidence::DuplicateProposal(e),
                }
            }
        }
    }

    /// The offence it proves (whether or not it is valid).
    pub fn offence(&self) -> Offence {
        match self {
            Evidence::DuplicateVote(e) => Offence {
                validator: e.first.validator,
                height: e.first.vote.height,
                round: e.first.vote.round,
                step: match e.first.vote.kind {
                    VoteKind::Prevote => 1,
                    VoteKind::Precommit => 2,
                },
            },
            Evidence::DuplicateProposal(e) => Offence {
                validator: e.proposer,
                height: e.first.height,
                round: e.first.round,
                step: 0,
            },
        }
    }

    /// Whether this proves the offence of a member of `validators` (the set
    /// of the offence's height) on the chain `chain_id`: one signer, one
    /// height, round and step, different blocks (or valid rounds), both
    /// signatures valid.
    pub fn check(
        &self,
        validators: &ValidatorSet,
        chain_id: &ChainId,
        genesis_hash: &Hash,
    ) -> Result<(), EvidenceError> {
        let no = |why| Err(EvidenceError::NoConflict(why));
        if self.offence().height == 0 {
            return no("no consensus runs at height 0");
        }
        match self {
            Evidence::DuplicateVote(e) => {
                let (a, b) = (&e.first, &e.second);
                if a.validator != b.validator {
                    return no("different signers");
                }
                if &a.vote.chain_id != chain_id || &b.vote.chain_id != chain_id {
                    return no("another chain");
                }
                if (a.vote.height, a.vote.round, a.vote.kind)
                    != (b.vote.height, b.vote.round, b.vote.kind)
                {
                    return no("different height, round or step");
                }
                if a.vote.block_hash == b.vote.block_hash {
                    return no("the same vote");
                }
                if validators.power_of(&a.validator).is_none() {
                    return Err(EvidenceError::NotAValidator(a.validator));
                }
                for v in [a, b] {
                    let message = v.vote.signing_message(genesis_hash);
                    if !v.signature.verify(&v.validator, &message) {
                        return Err(EvidenceError::BadSignature(v.validator));
                    }
                }
                Ok(())
            }
            Evidence::DuplicateProposal(e) => {
                let (a, b) = (&e.first, &e.second);
                if &a.chain_id != chain_id || &b.chain_id != chain_id {
                    return no("another chain");
                }
                if (a.height, a.round) != (b.height, b.round) {
                    return no("different height or round");
                }
                if a == b {
                    return no("the same proposal");
                }
                if validators.power_of(&e.proposer).is_none() {
                    return Err(EvidenceError::NotAValidator(e.proposer));
                }
                for (core, signature) in [(a, &e.first_signature), (b, &e.second_signature)] {
                    if !signature.verify(&e.proposer, &core.signing_message(genesis_hash)) {
                        return Err(EvidenceError::BadSignature(e.proposer));
                    }
                }
                Ok(())
            }
        }
    }
}

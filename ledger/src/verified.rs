//! Proof in the type that a signature was checked.
//!
//! A [`Verified<T>`] can only be made by this module: by checking `T`'s
//! signatures ([`Verified::check`] and friends), by signing with a key of
//! the validator set (a node's own messages are verified by construction),
//! or by assembling a certificate from votes that are verified already. It
//! cannot be decoded, defaulted or built from a bare `T`, so a layer that
//! takes `Verified<T>` (the consensus state machine, the commit path) never
//! needs to check again, and a bad signature cannot reach it: the edge that
//! received the bytes could not have produced the value.
//!
//! What "verified" means, per type:
//! - [`SignedVote`]: for this chain, signed by a member of the validator
//!   set it was checked against, and the signature verifies.
//! - [`SignedProposal`]: for this chain, signed by a member of the set, the
//!   block hashes to the hash signed and its body matches its header. (That
//!   the signer is the proposer *of that round* is a consensus rule, checked
//!   by the state machine.)
//! - [`ConsensusMessage`]: one of the above.
//! - [`Commit`]: precommits of distinct members holding a quorum of the
//!   set's power, for exactly this height and block, each signature checked
//!   (here, or when its vote was verified).

use std::ops::Deref;

use crate::block::{Block, Commit, CommitError, CommitSignature, Vote, VoteKind};
use crate::consensus_msg::{ConsensusMessage, Evidence, ProposalCore, SignedProposal, SignedVote};
use crate::crypto::Keypair;
use crate::genesis::{ChainContext, ValidatorSet};
use crate::types::{Address, ChainId, Hash};

/// What a signature is checked against: the chain and the validator set
/// that signs at the height in question.
#[derive(Debug, Clone, Copy)]
pub struct Signers<'a> {
    /// The chain id every signed message names.
    pub chain_id: &'a ChainId,
    /// The genesis hash every signing message covers.
    pub genesis_hash: &'a Hash,
    /// The validators.
    pub validators: &'a ValidatorSet,
}

impl ChainContext {
    /// The genesis validators of this chain, as signers.
    pub fn signers(&self) -> Signers<'_> {
        self.signers_with(&self.validators)
    }

    /// `validators` of this chain (the set of some height), as signers.
    pub fn signers_with<'a>(&'a self, validators: &'a ValidatorSet) -> Signers<'a> {
        Signers {
            chain_id: &self.genesis.chain_id,
            genesis_hash: &self.genesis_hash,
            validators,
        }
    }
}

/// Why a message does not verify. All of them are permanent: the sender
/// sent something no honest node sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Signed for another chain.
    #[error("signed for chain {got}, this is {expected}")]
    WrongChain {
        /// This chain.
        expected: ChainId,
        /// The message's.
        got: ChainId,
    },
    /// The signer is not a validator.
    #[error("{0} is not a validator")]
    NotAValidator(Address),
    /// The signature does not verify.
    #[error("the signature of {0} does not verify")]
    BadSignature(Address),
    /// A proposal whose block is not the one signed, or whose body does
    /// not match its header.
    #[error("the proposal's block is not the one its signature names")]
    WrongBlock,
    /// Evidence that does not prove what it claims.
    #[error("invalid evidence: {0}")]
    Evidence(#[from] crate::consensus_msg::EvidenceError),
}

/// A `T` whose signatures were checked (see the module docs). Nothing
/// outside this module can make one from a bare value:
///
/// ```compile_fail
/// use tally_ledger::{SignedVote, Verified};
/// fn forge(vote: SignedVote) -> Verified<SignedVote> {
///     Verified(vote) // error[E0423]: the field is private
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    /// The verified value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> AsRef<T> for Verified<T> {
    fn as_ref(&self) -> &T {
        &self.0
    }
}

fn same_chain(expected: &ChainId, got: &ChainId) -> Result<(), SignatureError> {
    if expected == got {
        return Ok(());
    }
    Err(SignatureError::WrongChain {
        expected: expected.clone(),
        got: got.clone(),
    })
}

fn member(signers: &Signers<'_>, who: &Address) -> Result<(), SignatureError> {
    match signers.validators.power_of(who) {
        Some(_) => Ok(()),
        None => Err(SignatureError::NotAValidator(*who)),
    }
}

impl Verified<SignedVote> {
    /// Checks the chain, the signer's membership (before the costly
    /// signature, so outsiders cost little) and the signature.
    pub fn check(vote: SignedVote, signers: &Signers<'_>) -> Result<Self, SignatureError> {
        same_chain(signers.chain_id, &vote.vote.chain_id)?;
        member(signers, &vote.validator)?;
        let message = vote.vote.signing_message(signers.genesis_hash);
        if !vote.signature.verify(&vote.validator, &message) {
            return Err(SignatureError::BadSignature(vote.validator));
        }
        Ok(Verified(vote))
    }

    /// Signs `vote` with `key`, a member of the set: verified by
    /// construction (ed25519 signing is deterministic and correct).
    pub fn sign(vote: Vote, key: &Keypair, signers: &Signers<'_>) -> Result<Self, SignatureError> {
        same_chain(signers.chain_id, &vote.chain_id)?;
        member(signers, &key.address())?;
        Ok(Verified(SignedVote::sign(vote, key, signers.genesis_hash)))
    }
}

impl Verified<SignedProposal> {
    /// Checks the chain, the signer's membership, that the block is the one
    /// signed and matches its header, and the signature.
    pub fn check(proposal: SignedProposal, signers: &Signers<'_>) -> Result<Self, SignatureError> {
        same_chain(signers.chain_id, &proposal.core.chain_id)?;
        member(signers, &proposal.proposer)?;
        if proposal.block.hash() != proposal.core.block_hash
            || !proposal.block.body_matches_header()
        {
            return Err(SignatureError::WrongBlock);
        }
        let message = proposal.core.signing_message(signers.genesis_hash);
        if !proposal.signature.verify(&proposal.proposer, &message) {
            return Err(SignatureError::BadSignature(proposal.proposer));
        }
        Ok(Verified(proposal))
    }

    /// Signs a proposal of `block` with `key`, a member of the set.
    pub fn sign(
        core: ProposalCore,
        block: Block,
        key: &Keypair,
        signers: &Signers<'_>,
    ) -> Result<Self, SignatureError> {
        same_chain(signers.chain_id, &core.chain_id)?;
        member(signers, &key.address())?;
        if core.block_hash != block.hash() || !block.body_matches_header() {
            return Err(SignatureError::WrongBlock);
        }
        Ok(Verified(SignedProposal::sign(
            core,
            block,
            key,
            signers.genesis_hash,
        )))
    }
}

/// A verified consensus message, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifiedMessage {
    /// A proposal.
    Proposal(Box<Verified<SignedProposal>>),
    /// A vote.
    Vote(Verified<SignedVote>),
    /// Equivocation evidence, checked against the set of its height.
    Evidence(Box<Verified<Evidence>>),
}

impl Verified<ConsensusMessage> {
    /// Checks a proposal, a vote or evidence (`signers` holds the set of
    /// the message's height).
    pub fn check(message: ConsensusMessage, signers: &Signers<'_>) -> Result<Self, SignatureError> {
        Ok(match message {
            ConsensusMessage::Proposal(p) => Verified::<SignedProposal>::check(*p, signers)?.into(),
            ConsensusMessage::Vote(v) => Verified::<SignedVote>::check(v, signers)?.into(),
            ConsensusMessage::Evidence(e) => Verified::<Evidence>::check(*e, signers)?.into(),
        })
    }

    /// The proposal, the vote or the evidence, still verified.
    pub fn into_kind(self) -> VerifiedMessage {
        match self.0 {
            ConsensusMessage::Proposal(p) => VerifiedMessage::Proposal(Box::new(Verified(*p))),
            ConsensusMessage::Vote(v) => VerifiedMessage::Vote(Verified(v)),
            ConsensusMessage::Evidence(e) => VerifiedMessage::Evidence(Box::new(Verified(*e))),
        }
    }
}

impl Verified<Evidence> {
    /// Checks that `evidence` proves an offence of a member of `signers`'
    /// set (the set of the offence's height).
    pub fn check(evidence: Evidence, signers: &Signers<'_>) -> Result<Self, SignatureError> {
        evidence.check(signers.validators, signers.chain_id, signers.genesis_hash)?;
        Ok(Verified(evidence))
    }
}

impl From<Verified<Evidence>> for Verified<ConsensusMessage> {
    fn from(evidence: Verified<Evidence>) -> Self {
        Verified(ConsensusMessage::Evidence(Box::new(evidence.0)))
    }
}

impl From<Verified<SignedVote>> for Verified<ConsensusMessage> {
    fn from(vote: Verified<SignedVote>) -> Self {
        Verified(ConsensusMessage::Vote(vote.0))
    }
}

impl From<Verified<SignedProposal>> for Verified<ConsensusMessage> {
    fn from(proposal: Verified<SignedProposal>) -> Self {
        Verified(ConsensusMessage::Proposal(Box::new(proposal.0)))
    }
}

impl Verified<Commit> {
    /// Checks that `commit` proves block `(height, block_hash)` final under
    /// `signers`: every signature is checked ([`crate::verify_commit`]).
    /// For certificates from outside (block sync, a peer's catch-up).
    pub fn check(
        commit: Commit,
        height: u64,
        block_hash: &Hash,
        signers: &Signers<'_>,
    ) -> Result<Self, CommitError> {
        crate::verify_commit(
            &commit,
            height,
            block_hash,
            signers.validators,
            signers.chain_id,
            signers.genesis_hash,
        )?;
        Ok(Verified(commit))
    }

    /// Assembles the certificate of block `(height, block_hash)` decided in
    /// `round` from precommits that are verified already (those a state
    /// machine counted): no signature is checked again, but everything else
    /// [`Verified::<Commit>::check`] requires is — each vote is a precommit
    /// for exactly this block, height and round, signers are distinct
    /// members, and their power is a quorum.
    pub fn from_precommits(
        height: u64,
        round: u32,
        block_hash: Hash,
        precommits: &[Verified<SignedVote>],
        signers: &Signers<'_>,
    ) -> Result<Self, CommitError> {
        let mut seen = std::collections::BTreeSet::new();
        let mut power: u64 = 0;
        let mut signatures = Vec::with_capacity(precommits.len());
        for vote in precommits {
            let v = &vote.vote;
            let matches = v.height == height
                && v.round == round
                && v.kind == VoteKind::Precommit
                && v.block_hash == Some(block_hash)
                && v.chain_id == *signers.chain_id;
            if !matches {
                return Err(CommitError::WrongBlock {
                    height,
                    hash: block_hash,
                    got_height: v.height,
                    got_hash: v.block_hash.unwrap_or(Hash::ZERO),
                });
            }
            let validator_power = signers
                .validators
                .power_of(&vote.validator)
                .ok_or(CommitError::UnknownValidator(vote.validator))?;
            if !seen.insert(vote.validator) {
                return Err(CommitError::Duplicate(vote.validator));
            }
            power = power.saturating_add(validator_power);
            signatures.push(CommitSignature {
                validator: vote.validator,
                signature: vote.signature,
            });
        }
        let needed = signers.validators.quorum_power();
        if power < needed {
            return Err(CommitError::NoQuorum { got: power, needed });
        }
        Ok(Verified(Commit {
            height,
            round,
            block_hash,
            signatures,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devnet::devnet_genesis;
    use crate::devnet_key;

    fn chain() -> ChainContext {
        ChainContext::new(devnet_genesis(4, "tally-devnet").unwrap_or_else(|e| panic!("{e}")))
    }

    fn precommit(chain: &ChainContext, who: &str, hash: Hash) -> SignedVote {
        let vote = Vote {
            chain_id: chain.genesis.chain_id.clone(),
            height: 1,
            round: 0,
            kind: VoteKind::Precommit,
            block_hash: Some(hash),
        };
        SignedVote::sign(vote, &devnet_key(who), &chain.genesis_hash)
    }

    #[test]
    fn a_vote_verifies_only_when_a_member_signed_it_for_this_chain() {
        let chain = chain();
        let signers = chain.signers();
        let hash = Hash::digest(b"block");
        let good = precommit(&chain, "validator-1", hash);
        assert!(Verified::<SignedVote>::check(good.clone(), &signers).is_ok());
        let mut forged = good.clone();
        forged.signature.0[0] ^= 1;
        assert_eq!(
            Verified::<SignedVote>::check(forged, &signers),
            Err(SignatureError::BadSignature(good.validator))
        );
        let outsider = precommit(&chain, "mallory", hash);
        assert!(matches!(
            Verified::<SignedVote>::check(outsider, &signers),
            Err(SignatureError::NotAValidator(_))
        ));
        let mut other_chain = good.vote.clone();
        other_chain.chain_id = ChainId::new("other").unwrap_or_else(|e| panic!("{e}"));
        let other = SignedVote::sign(other_chain, &devnet_key("validator-1"), &chain.genesis_hash);
        assert!(matches!(
            Verified::<SignedVote>::check(other, &signers),
            Err(SignatureError::WrongChain { .. })
        ));
        assert!(
            Verified::<SignedVote>::sign(good.vote.clone(), &devnet_key("mallory"), &signers)
                .is_err()
        );
    }

    #[test]
    fn a_certificate_from_verified_precommits_needs_a_quorum_of_distinct_members() {
        let chain = chain();
        let signers = chain.signers();
        let hash = Hash::digest(b"block");
        let votes: Vec<Verified<SignedVote>> = ["validator-0", "validator-1", "validator-2"]
            .iter()
            .map(|v| Verified::<SignedVote>::check(precommit(&chain, v, hash), &signers))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{e}"));
        let commit = Verified::<Commit>::from_precommits(1, 0, hash, &votes, &signers)
            .unwrap_or_else(|e| panic!("{e}"));
        // It is exactly what a full check accepts.
        assert!(Verified::<Commit>::check(commit.clone().into_inner(), 1, &hash, &signers).is_ok());
        assert!(matches!(
            Verified::<Commit>::from_precommits(1, 0, hash, &votes[..2], &signers),
            Err(CommitError::NoQuorum { got: 2, needed: 3 })
        ));
        let twice = [votes[0].clone(), votes[0].clone(), votes[1].clone()];
        assert!(matches!(
            Verified::<Commit>::from_precommits(1, 0, hash, &twice, &signers),
            Err(CommitError::Duplicate(_))
        ));
        let other = Hash::digest(b"other");
        assert!(matches!(
            Verified::<Commit>::from_precommits(1, 0, other, &votes, &signers),
            Err(CommitError::WrongBlock { .. })
        ));
        assert!(matches!(
            Verified::<Commit>::from_precommits(1, 1, hash, &votes, &signers),
            Err(CommitError::WrongBlock { .. })
        ));
    }
}

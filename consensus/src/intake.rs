//! Admission of proposals and votes: which messages count, which wait for
//! the next height, and the bounds that keep a flood of authentic but
//! useless messages from growing memory.
//!
//! Signatures are not checked here: a message arrives as a
//! [`Verified`] value, which only the edge that checked it (the host's
//! network intake, or this machine signing its own) could make. What is
//! checked is what the signature cannot say: the height and round windows,
//! whether a proposal comes from the proposer of its round, whether a vote
//! is known already.

use tally_ledger::{
    ConsensusMessage, DuplicateProposalEvidence, Evidence, Hash, ProposalCore, SignedProposal,
    SignedVote, Verified, VerifiedMessage, VoteKind,
};

use crate::machine::{Consensus, ProposalInfo};
use crate::proposer::proposer;
use crate::types::{Action, Step};
use crate::votes::VoteOutcome;

impl Consensus {
    pub(crate) fn on_message(
        &mut self,
        message: Verified<ConsensusMessage>,
        out: &mut Vec<Action>,
    ) {
        debug_assert!(
            match &*message {
                ConsensusMessage::Vote(v) => v.vote.chain_id == self.chain_id,
                ConsensusMessage::Proposal(p) => p.core.chain_id == self.chain_id,
                // The host keeps evidence; it never reaches this machine.
                ConsensusMessage::Evidence(_) => true,
            },
            "a message verified for another chain"
        );
        let height = message.height();
        if !self.started || height > self.height {
            let next = if self.started {
                self.height + 1
            } else {
                height
            };
            if height == next {
                self.buffer_future(message);
            }
            return;
        }
        if height < self.height || self.step == Step::Decided {
            return;
        }
        match message.into_kind() {
            VerifiedMessage::Proposal(p) => self.on_proposal(*p, out),
            VerifiedMessage::Vote(v) => self.on_vote(v, out),
            VerifiedMessage::Evidence(_) => {}
        }
    }

    /// Keeps a message for the next height, if a proposal comes from its
    /// round's proposer (as far as this height's set can tell) and the
    /// buffer has room (by count and bytes).
    fn buffer_future(&mut self, message: Verified<ConsensusMessage>) {
        let (plausible, bytes) = match &*message {
            ConsensusMessage::Vote(_) => (true, std::mem::size_of::<SignedVote>()),
            ConsensusMessage::Evidence(_) => (false, 0),
            // A proposal of the next height from its round's proposer; when
            // the next height has another set (a validator-set change; its
            // header names it), the proposer is checked once that height
            // starts with its set.
            ConsensusMessage::Proposal(p) => (
                p.proposer == proposer(&self.validators, p.core.height, p.core.round)
                    || p.block.header.validators_hash != self.validators.hash(),
                p.block.txs.len() * tally_ledger::MAX_TX_BYTES
                    + std::mem::size_of::<SignedProposal>(),
            ),
        };
        let room = self.future.len() < self.config.max_future_messages
            && self.future_bytes + bytes <= self.config.max_future_bytes;
        if plausible && room {
            self.future_bytes += bytes;
            self.future.push_back(message);
        }
    }

    pub(crate) fn round_in_range(&self, round: u32) -> bool {
        round <= self.round.saturating_add(self.config.max_rounds_ahead)
    }

    fn on_proposal(&mut self, proposal: Verified<SignedProposal>, out: &mut Vec<Action>) {
        let core = &proposal.core;
        let (round, hash) = (core.round, core.block_hash);
        let from_proposer = self.round_in_range(round)
            && proposal.proposer == proposer(&self.validators, self.height, round);
        if !from_proposer || self.proposals.contains_key(&(round, hash)) {
            return;
        }
        self.note_proposal_equivocation(&proposal, out);
        if core.valid_round.is_some_and(|vr| vr >= round) {
            return;
        }
        let power = self.power_of_member(&proposal.proposer);
        self.votes.note_sender(round, proposal.proposer, power);
        let near = round
            <= self
                .round
                .saturating_add(self.config.max_proposal_rounds_ahead);
        let room = self.proposals_in(round).count() < self.config.max_proposals_per_round;
        if near && (room || self.vouched(round, &hash)) {
            self.accept_proposal(proposal, out);
        }
    }

    /// A second block proposed for a round by its proposer: both signed
    /// proposals are evidence (reported once a round).
    fn note_proposal_equivocation(
        &mut self,
        proposal: &Verified<SignedProposal>,
        out: &mut Vec<Action>,
    ) {
        let round = proposal.core.round;
        let Some(first_hash) = self.first_proposal.get(&round).copied() else {
            return;
        };
        let Some(first) = self.proposals.get(&(round, first_hash)) else {
            return;
        };
        if first_hash == proposal.core.block_hash || !self.proposal_equivocations.insert(round) {
            return;
        }
        let first_core = ProposalCore {
            chain_id: proposal.core.chain_id.clone(),
            height: self.height,
            round,
            valid_round: first.valid_round,
            block_hash: first_hash,
        };
        out.push(Action::Evidence(Evidence::DuplicateProposal(
            DuplicateProposalEvidence {
                proposer: proposal.proposer,
                first: first_core,
                first_signature: first.signature,
                second: proposal.core.clone(),
                second_signature: proposal.signature,
            },
        )));
    }

    /// Whether more than a third of the power voted for `hash` in `round`:
    /// then at least one honest validator saw that proposal.
    fn vouched(&self, round: u32, hash: &Hash) -> bool {
        let total = self.validators.total_power();
        let power = self.votes.power_for(round, VoteKind::Prevote, &Some(*hash))
            + self
                .votes
                .power_for(round, VoteKind::Precommit, &Some(*hash));
        power.saturating_mul(3) > total
    }

    pub(crate) fn proposals_in(
        &self,
        round: u32,
    ) -> impl Iterator<Item = (Hash, ProposalInfo)> + '_ {
        let range = (round, Hash([0; 32]))..=(round, Hash([0xff; 32]));
        self.proposals
            .range(range)
            .map(|((_, hash), info)| (*hash, *info))
    }

    pub(crate) fn accept_proposal(
        &mut self,
        proposal: Verified<SignedProposal>,
        out: &mut Vec<Action>,
    ) {
        let proposal = proposal.into_inner();
        let (round, hash) = (proposal.core.round, proposal.core.block_hash);
        let info = ProposalInfo {
            valid_round: proposal.core.valid_round,
            proposer: proposal.proposer,
            signature: proposal.signature,
        };
        self.proposals.insert((round, hash), info);
        self.first_proposal.entry(round).or_insert(hash);
        self.blocks.entry(hash).or_insert(proposal.block);
        if round == self.round {
            self.request_validation(hash, out);
        }
    }

    /// Asks the host for `valid(v)` once per block, only when it matters
    /// (the current round, or a decision waiting for it).
    pub(crate) fn request_validation(&mut self, hash: Hash, out: &mut Vec<Action>) {
        if self.validity.contains_key(&hash) || !self.validation_requested.insert(hash) {
            return;
        }
        if let Some(block) = self.blocks.get(&hash) {
            out.push(Action::ValidateBlock {
                height: self.height,
                block: block.clone(),
            });
        }
    }

    pub(crate) fn on_vote(&mut self, vote: Verified<SignedVote>, out: &mut Vec<Action>) {
        // Gossip and catch-up deliver votes many times: a vote already
        // counted (same signer, same content) changes nothing.
        if self.votes.has_from(&vote.validator, &vote.vote) {
            return;
        }
        if self.round_in_range(vote.vote.round) {
            self.count_vote(vote, out);
        }
    }

    pub(crate) fn count_vote(&mut self, vote: Verified<SignedVote>, out: &mut Vec<Action>) {
        let power = self.power_of_member(&vote.validator);
        if let VoteOutcome::Equivocation(evidence) = self.votes.add(vote, power) {
            out.push(Action::Evidence(Evidence::DuplicateVote(*evidence)));
        }
    }
}

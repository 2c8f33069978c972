//! Every signature this validator gives, through one guard: the signing
//! record ([`SignState`]) goes out before the signed message, and nothing
//! is signed that conflicts with the record (docs/CONSENSUS.md, "The
//! signing record"). A message signed here is verified by construction.

use tally_ledger::{
    Block, ConsensusMessage, Hash, ProposalCore, SignedProposal, SignedVote, Verified, Vote,
    VoteKind,
};

use crate::guard::{SignState, SignStep};
use crate::machine::Consensus;
use crate::types::Action;

impl Consensus {
    /// Line 19: sign and broadcast a proposal, and take it as received.
    pub(crate) fn propose(
        &mut self,
        block: Block,
        valid_round: Option<u32>,
        out: &mut Vec<Action>,
    ) {
        let block_hash = block.hash();
        if !self.guard(SignStep::Propose, Some(block_hash), valid_round, out) {
            return;
        }
        let Some(key) = &self.key else { return };
        let core = ProposalCore {
            chain_id: self.chain_id.clone(),
            height: self.height,
            round: self.round,
            valid_round,
            block_hash,
        };
        let proposal = match Verified::<SignedProposal>::sign(core, block, key, &self.signers()) {
            Ok(proposal) => proposal,
            Err(e) => {
                // The guard allowed it, so this key is a member and the
                // block's body matches the header the host built.
                debug_assert!(false, "cannot sign a proposal the guard allowed: {e}");
                return;
            }
        };
        out.push(Action::Broadcast(ConsensusMessage::Proposal(Box::new(
            SignedProposal::clone(&proposal),
        ))));
        // A re-proposed valid value is accepted (line 28) only by those who
        // hold its polka. Prevotes of an earlier round may have been lost
        // to a peer that was cut off or restarted, and nobody sends old
        // rounds again: without them, validators locked on this value and
        // those who never saw its polka prevote differently round after
        // round. So the polka travels with the proposal.
        if let Some(vr) = valid_round {
            for vote in self
                .votes
                .votes_for(vr, VoteKind::Prevote, &Some(block_hash))
            {
                out.push(Action::Broadcast(ConsensusMessage::Vote(vote.into_inner())));
            }
        }
        self.accept_proposal(proposal, out);
    }

    /// The signing rule: allowed only strictly after the record (or the same
    /// message again); the new record goes out before the signed message.
    pub(crate) fn guard(
        &mut self,
        step: SignStep,
        block_hash: Option<Hash>,
        valid_round: Option<u32>,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(me) = self.my_address() else {
            return false;
        };
        if self.validators.power_of(&me).is_none() {
            return false;
        }
        if let Some(record) = &self.sign_state {
            let (height, round) = (self.height, self.round);
            if record
                .check(height, round, step, block_hash, valid_round)
                .is_err()
            {
                return false;
            }
        }
        let prevote = match step {
            SignStep::Propose => None,
            SignStep::Prevote => Some(block_hash),
            SignStep::Precommit => self
                .sign_state
                .as_ref()
                .filter(|r| (r.height, r.round) == (self.height, self.round))
                .and_then(|r| r.prevote),
        };
        // The votes of the latest earlier round of this height: the
        // record's own round's once this one moves past it.
        let earlier = match &self.sign_state {
            Some(r) if r.height == self.height && r.round < self.round => {
                r.own_round_votes().or_else(|| r.earlier.clone())
            }
            Some(r) if r.height == self.height => r.earlier.clone(),
            _ => None,
        };
        let record = SignState {
            height: self.height,
            round: self.round,
            step,
            block_hash,
            valid_round,
            locked: self.locked,
            valid: self.valid,
            prevote,
            earlier,
        };
        self.sign_state = Some(record.clone());
        out.push(Action::PersistSignState(record));
        true
    }

    /// Signs and broadcasts a vote of `kind` for `value` in the current round.
    pub(crate) fn vote(&mut self, kind: VoteKind, value: Option<Hash>, out: &mut Vec<Action>) {
        let step = match kind {
            VoteKind::Prevote => SignStep::Prevote,
            VoteKind::Precommit => SignStep::Precommit,
        };
        if !self.guard(step, value, None, out) {
            return;
        }
        self.send_signed_vote(kind, value, out);
    }

    /// Signs this validator's vote in the current height and round,
    /// broadcasts it and counts it (the guard is the caller's business).
    pub(crate) fn send_signed_vote(
        &mut self,
        kind: VoteKind,
        value: Option<Hash>,
        out: &mut Vec<Action>,
    ) {
        self.send_signed_vote_in(self.round, kind, value, out);
    }

    /// Like [`Consensus::send_signed_vote`], in `round` of this height: a
    /// recorded vote of an earlier round sent again after a restart (the
    /// identical message: signing is deterministic).
    pub(crate) fn send_signed_vote_in(
        &mut self,
        round: u32,
        kind: VoteKind,
        value: Option<Hash>,
        out: &mut Vec<Action>,
    ) {
        let Some(key) = &self.key else { return };
        // A key outside this height's set signs nothing. The guard lets a
        // recorded vote be sent again after a restart, and the record may
        // be another key's: a validator restarted with its rotated key
        // while it still catches up to the height the rotation takes
        // effect holds its old key's record.
        if self.validators.power_of(&key.address()).is_none() {
            return;
        }
        let vote = Vote {
            chain_id: self.chain_id.clone(),
            height: self.height,
            round,
            kind,
            block_hash: value,
        };
        let signed = match Verified::<SignedVote>::sign(vote, key, &self.signers()) {
            Ok(signed) => signed,
            Err(e) => {
                // Only members sign (the guard, or the record of a member).
                debug_assert!(false, "cannot sign a vote: {e}");
                return;
            }
        };
        out.push(Action::Broadcast(ConsensusMessage::Vote(
            SignedVote::clone(&signed),
        )));
        self.count_vote(signed, out);
    }
}

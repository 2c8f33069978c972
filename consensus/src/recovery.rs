//! Resuming a height after a restart, from the two durable records: the
//! signing record ([`crate::SignState`]: the last thing signed, the lock and
//! the valid value) and the valid-block record ([`crate::ValidBlockRecord`]:
//! the valid block itself and its polka). docs/CONSENSUS.md, "The signing
//! record", argues why resuming in the recorded round at the recorded step
//! is both safe and live.

use tally_ledger::{ConsensusMessage, SignedVote, ValidatorSet, Verified, VoteKind};

use crate::guard::SignStep;
use crate::machine::Consensus;
use crate::types::{Action, Step};
use crate::votes::VoteBook;

impl Consensus {
    /// Lines 2-10: a new height, at round 0 — or, for a validator
    /// restarted inside this height, where its records left off.
    pub(crate) fn start_height(
        &mut self,
        height: u64,
        validators: ValidatorSet,
        out: &mut Vec<Action>,
    ) {
        if self.started && height <= self.height {
            return;
        }
        self.started = true;
        self.height = height;
        self.validators = validators;
        self.proposals.clear();
        self.first_proposal.clear();
        self.proposal_equivocations.clear();
        self.blocks.clear();
        self.validity.clear();
        self.validation_requested.clear();
        self.votes = VoteBook::default();
        self.fired.clear();
        // Lines 2-8 (initial values), except that a validator restarted
        // inside this height resumes where its record left off: the
        // recorded round, lock and valid value, and the recorded step, whose
        // vote it sends again below (the identical message: the guard allows
        // exactly that). Entering a later round instead would leave that
        // round short of this validator's vote, which with exactly a quorum
        // up stalls the height: the others never skip ahead for one
        // validator (line 55 needs f+1).
        let resume = self.sign_state.clone().filter(|s| s.height == height);
        let (round, locked, valid) = match &resume {
            Some(s) => (s.round, s.locked, s.valid),
            None => (0, None, None),
        };
        self.round = round;
        self.locked = locked;
        self.valid = valid;
        let recovered = self
            .recovered
            .take()
            .filter(|r| r.block.header.height == height);
        if let Some(record) = recovered {
            // It was valid against this very parent before the restart; its
            // polka is signed, so it counts like any received votes.
            let hash = record.block.hash();
            if self
                .valid
                .is_none_or(|(valid_round, _)| valid_round <= record.round)
            {
                self.valid = Some((record.round, hash));
            }
            self.validity.insert(hash, true);
            self.blocks.insert(hash, record.block);
            // The record comes from disk, which is outside input like the
            // network: its votes are checked here, the one place this
            // machine checks signatures itself.
            for vote in record.polka {
                match Verified::<SignedVote>::check(vote, &self.signers()) {
                    Ok(vote) => self.on_vote(vote, out),
                    Err(e) => debug_assert!(false, "a recorded polka vote does not verify: {e}"),
                }
            }
        }
        self.start_round(round, out);
        if let Some(record) = resume {
            match record.step {
                SignStep::Propose => {}
                SignStep::Prevote => {
                    self.step = Step::Prevote;
                    self.vote(VoteKind::Prevote, record.block_hash, out);
                }
                SignStep::Precommit => {
                    self.step = Step::Precommit;
                    // The identical prevote of this round again (signing
                    // is deterministic): only this node can send it.
                    if let Some(value) = record.prevote {
                        self.send_signed_vote(VoteKind::Prevote, value, out);
                    }
                    self.vote(VoteKind::Precommit, record.block_hash, out);
                }
            }
            // The votes of the earlier round of this height again (the
            // identical messages, already signed and recorded): peers still
            // in that round may need them for their 2f+1 (seeds 34 and
            // 20431).
            if let Some(earlier) = record.earlier.filter(|e| e.round < record.round) {
                if let Some(value) = earlier.prevote {
                    self.send_signed_vote_in(earlier.round, VoteKind::Prevote, value, out);
                }
                if let Some(value) = earlier.precommit {
                    self.send_signed_vote_in(earlier.round, VoteKind::Precommit, value, out);
                }
            }
        }
        let buffered: Vec<Verified<ConsensusMessage>> = self.future.drain(..).collect();
        self.future_bytes = 0;
        for message in buffered {
            self.on_message(message, out);
        }
    }
}

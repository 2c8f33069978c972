//! The rules of Algorithm 1 (arXiv:1807.04938), one function each, named
//! after the lines they implement: read this file next to the paper.
//! Deviations are marked and argued in docs/CONSENSUS.md.

use tally_ledger::{Block, Commit, Hash, Verified, VoteKind};

use crate::guard::{SignStep, ValidBlockRecord};
use crate::machine::{Consensus, Once};
use crate::proposer::proposer;
use crate::types::{Action, Step, Timeout, TimeoutKind};

/// Upper bound on rule applications per input; each application changes
/// the step, the round or a once-flag, so the real number is far smaller.
const MAX_RULE_STEPS: usize = 1_000;

impl Consensus {
    /// StartRound, lines 11-21.
    pub(crate) fn start_round(&mut self, round: u32, out: &mut Vec<Action>) {
        self.round = round;
        self.step = Step::Propose;
        let arrived: Vec<Hash> = self.proposals_in(round).map(|(hash, _)| hash).collect();
        for hash in arrived {
            self.request_validation(hash, out);
        }
        let is_proposer = self.my_address() == Some(proposer(&self.validators, self.height, round));
        // A validator restarted in this round may already have signed in
        // it: then the only proposal it may send is the identical one.
        let record = self
            .sign_state
            .as_ref()
            .filter(|s| s.height == self.height && s.round == round)
            .map(|s| (s.step, s.block_hash, s.valid_round));
        if is_proposer {
            // Lines 14-15: re-propose the valid value if there is one.
            let reproposal = self.valid.and_then(|(valid_round, hash)| {
                self.blocks.get(&hash).map(|b| (valid_round, b.clone()))
            });
            match (reproposal, record) {
                (Some((valid_round, block)), None) => self.propose(block, Some(valid_round), out),
                (Some((valid_round, block)), Some((SignStep::Propose, hash, vr)))
                    if hash == Some(block.hash()) && vr == Some(valid_round) =>
                {
                    self.propose(block, Some(valid_round), out)
                }
                // Line 17: getValue().
                (None, None) => out.push(Action::BuildProposal {
                    height: self.height,
                    round,
                }),
                // Signed in this round already: a new proposal would
                // conflict with it (or come after a vote).
                _ => {}
            }
        }
        // Line 21. A proposer schedules it too, so that a block that never
        // comes back from the host cannot stall the round.
        self.schedule(TimeoutKind::Propose, out);
    }

    pub(crate) fn on_proposal_block(
        &mut self,
        height: u64,
        round: u32,
        block: Block,
        out: &mut Vec<Action>,
    ) {
        let is_proposer = self.my_address() == Some(proposer(&self.validators, height, round));
        if height != self.height
            || round != self.round
            || self.step != Step::Propose
            || !is_proposer
        {
            return;
        }
        // The host built it by executing it against the committed state.
        self.validity.insert(block.hash(), true);
        self.propose(block, None, out);
    }

    /// Lines 57-67: a timeout of the current round and step.
    pub(crate) fn on_timeout(&mut self, timeout: Timeout, out: &mut Vec<Action>) {
        if timeout.height != self.height
            || timeout.round != self.round
            || self.step == Step::Decided
        {
            return;
        }
        match timeout.kind {
            // Lines 57-60.
            TimeoutKind::Propose if self.step == Step::Propose => {
                self.vote(VoteKind::Prevote, None, out);
                self.step = Step::Prevote;
            }
            // Lines 61-64.
            TimeoutKind::Prevote if self.step == Step::Prevote => {
                self.vote(VoteKind::Precommit, None, out);
                self.step = Step::Precommit;
            }
            // Lines 65-67.
            TimeoutKind::Precommit => self.start_round(self.round.saturating_add(1), out),
            _ => {}
        }
    }

    pub(crate) fn apply_rules(&mut self, out: &mut Vec<Action>) {
        if !self.started {
            return;
        }
        for _ in 0..MAX_RULE_STEPS {
            if self.step == Step::Decided || !self.apply_one_rule(out) {
                return;
            }
        }
    }

    /// Applies the first rule whose condition holds; false if none does.
    ///
    /// Why this order: a decision (line 49) must win over everything, since
    /// it may concern any round, including an earlier one, and once taken
    /// the height is over. Moving to a later round (line 55, and the nil
    /// round after line 47) comes next: the rules below act on the current
    /// round, and acting in a round that is about to be left would sign
    /// votes nobody needs. The rest follow the step order of a round —
    /// prevote (22/28), the prevote wait (34), lock and precommit (36),
    /// nil precommit (44), the precommit wait (47) — so each input moves a
    /// round through as many steps as its votes allow. Every rule that
    /// fires changes the step, the round or a once-flag, so the loop in
    /// [`Consensus::apply_rules`] ends.
    fn apply_one_rule(&mut self, out: &mut Vec<Action>) -> bool {
        self.rule_decide(out)
            || self.rule_skip_round(out)
            || self.rule_nil_round(out)
            || self.rule_prevote(out)
            || self.rule_prevote_timeout(out)
            || self.rule_lock(out)
            || self.rule_precommit_nil(out)
            || self.rule_precommit_timeout(out)
    }

    /// The first proposal of `round`: lines 22 and 28 act on it.
    fn proposal_value(&self, round: u32) -> Option<(Hash, Option<u32>)> {
        let hash = self.first_proposal.get(&round)?;
        let info = self.proposals.get(&(round, *hash))?;
        Some((*hash, info.valid_round))
    }

    /// Lines 49-54: a proposal and 2f+1 precommits for it in any round.
    /// The proposal only tells which value the precommits are for: a block
    /// held otherwise (proposed in another round, or kept in the
    /// valid-block record across a restart) with 2f+1 precommits for its
    /// hash is decided the same way.
    fn rule_decide(&mut self, out: &mut Vec<Action>) -> bool {
        let quorum = self.quorum();
        let has_quorum = |round: u32, hash: Hash| {
            self.votes
                .power_for(round, VoteKind::Precommit, &Some(hash))
                >= quorum
        };
        let mut candidates: Vec<(u32, Hash)> = self
            .proposals
            .keys()
            .filter(|(round, hash)| has_quorum(*round, *hash))
            .copied()
            .collect();
        // At most one value per round can have a quorum: O(rounds).
        for round in self.votes.rounds_seen() {
            let Some(precommits) = self.votes.round(round, VoteKind::Precommit) else {
                continue;
            };
            for hash in precommits.values_with(quorum).flatten() {
                if self.blocks.contains_key(hash) && !candidates.contains(&(round, *hash)) {
                    candidates.push((round, *hash));
                }
            }
        }
        let mut decided = None;
        for (round, hash) in candidates {
            match self.validity.get(&hash) {
                Some(true) => {
                    decided = Some((round, hash));
                    break;
                }
                Some(false) => {}
                None => self.request_validation(hash, out),
            }
        }
        let Some((round, hash)) = decided else {
            return false;
        };
        let Some(block) = self.blocks.get(&hash).cloned() else {
            debug_assert!(false, "a decision candidate without its block");
            return false;
        };
        // The counted precommits are verified votes: the certificate is
        // assembled from them without checking a signature again.
        let precommits = self
            .votes
            .votes_for(round, VoteKind::Precommit, &Some(hash));
        let commit = match Verified::<Commit>::from_precommits(
            self.height,
            round,
            hash,
            &precommits,
            &self.signers(),
        ) {
            Ok(commit) => commit,
            Err(e) => {
                debug_assert!(
                    false,
                    "2f+1 counted precommits do not make a certificate: {e}"
                );
                return false;
            }
        };
        out.push(Action::Commit { block, commit });
        self.step = Step::Decided;
        true
    }

    /// Lines 55-56: f+1 (more than a third of the power) in a later round.
    fn rule_skip_round(&mut self, out: &mut Vec<Action>) -> bool {
        let total = self.validators.total_power();
        let later = self
            .votes
            .rounds_seen()
            .filter(|r| *r > self.round && self.votes.sender_power(*r).saturating_mul(3) > total)
            .max();
        match later {
            Some(round) => {
                self.start_round(round, out);
                true
            }
            None => false,
        }
    }

    /// Deviation (after line 47): 2f+1 precommits for nil in this round:
    /// start the next round at once instead of after `timeoutPrecommit`.
    /// No value can gather 2f+1 precommits in a round where 2f+1 precommit
    /// nil (the two sets would share more than f signers, so an honest one
    /// would have precommitted twice), so the wait could only delay the
    /// next round. With a crashed proposer this saves the precommit timeout
    /// on every height it would have proposed.
    fn rule_nil_round(&mut self, out: &mut Vec<Action>) -> bool {
        let nil = self.votes.power_for(self.round, VoteKind::Precommit, &None);
        if nil < self.quorum() {
            return false;
        }
        self.start_round(self.round.saturating_add(1), out);
        true
    }

    /// Lines 22-27 (no valid round) and 28-33 (a valid round with 2f+1
    /// prevotes): prevote the proposal if it is valid and the lock allows.
    fn rule_prevote(&mut self, out: &mut Vec<Action>) -> bool {
        if self.step != Step::Propose {
            return false;
        }
        let Some((hash, valid_round)) = self.proposal_value(self.round) else {
            return false;
        };
        let lock_allows = match valid_round {
            None => self.locked.is_none_or(|(_, locked)| locked == hash),
            Some(vr) => {
                let polka = vr < self.round
                    && self.votes.power_for(vr, VoteKind::Prevote, &Some(hash)) >= self.quorum();
                if !polka {
                    return false;
                }
                self.locked
                    .is_none_or(|(locked_round, locked)| locked_round <= vr || locked == hash)
            }
        };
        let Some(valid) = self.validity.get(&hash).copied() else {
            return false;
        };
        let value = (valid && lock_allows).then_some(hash);
        self.vote(VoteKind::Prevote, value, out);
        self.step = Step::Prevote;
        true
    }

    /// Lines 34-35: 2f+1 prevotes of any values, first time in this round.
    fn rule_prevote_timeout(&mut self, out: &mut Vec<Action>) -> bool {
        let ready = self.step == Step::Prevote
            && self.votes.total(self.round, VoteKind::Prevote) >= self.quorum()
            && self.fired.insert((self.round, Once::PrevoteTimeout));
        if ready {
            self.schedule(TimeoutKind::Prevote, out);
        }
        ready
    }

    /// Lines 36-43: the proposal and 2f+1 prevotes for it: lock and
    /// precommit (if still at prevote), and remember it as the valid value.
    fn rule_lock(&mut self, out: &mut Vec<Action>) -> bool {
        if self.step < Step::Prevote || self.fired.contains(&(self.round, Once::Lock)) {
            return false;
        }
        let quorum = self.quorum();
        let round = self.round;
        // The round's proposals, then any block held otherwise (the
        // valid-block record after a restart): 2f+1 prevotes for a hash in
        // this round mean its proposer proposed it here, since honest
        // validators prevote only the round's proposal.
        let mut values: Vec<Hash> = self.proposals_in(round).map(|(hash, _)| hash).collect();
        if let Some(prevotes) = self.votes.round(round, VoteKind::Prevote) {
            values.extend(
                prevotes
                    .values_with(quorum)
                    .flatten()
                    .filter(|hash| self.blocks.contains_key(*hash)),
            );
        }
        let with_polka: Vec<Hash> = values
            .into_iter()
            .filter(|hash| self.votes.power_for(round, VoteKind::Prevote, &Some(*hash)) >= quorum)
            .collect();
        let mut polka = None;
        for hash in with_polka {
            match self.validity.get(&hash) {
                Some(true) => {
                    polka = Some(hash);
                    break;
                }
                Some(false) => {}
                None => self.request_validation(hash, out),
            }
        }
        let Some(hash) = polka else {
            return false;
        };
        self.fired.insert((self.round, Once::Lock));
        if self.valid != Some((self.round, hash)) {
            if let Some(block) = self.blocks.get(&hash) {
                let polka = self
                    .votes
                    .votes_for(self.round, VoteKind::Prevote, &Some(hash))
                    .into_iter()
                    .map(Verified::into_inner)
                    .collect();
                let record = ValidBlockRecord {
                    block: block.clone(),
                    round: self.round,
                    polka,
                };
                out.push(Action::PersistValidBlock(record));
            }
        }
        self.valid = Some((self.round, hash));
        if self.step == Step::Prevote {
            self.locked = Some((self.round, hash));
            self.vote(VoteKind::Precommit, Some(hash), out);
            self.step = Step::Precommit;
        }
        true
    }

    /// Lines 44-46: 2f+1 prevotes for nil.
    fn rule_precommit_nil(&mut self, out: &mut Vec<Action>) -> bool {
        let ready = self.step == Step::Prevote
            && self.votes.power_for(self.round, VoteKind::Prevote, &None) >= self.quorum();
        if ready {
            self.vote(VoteKind::Precommit, None, out);
            self.step = Step::Precommit;
        }
        ready
    }

    /// Lines 47-48: 2f+1 precommits of any values, first time in this round.
    fn rule_precommit_timeout(&mut self, out: &mut Vec<Action>) -> bool {
        let ready = self.votes.total(self.round, VoteKind::Precommit) >= self.quorum()
            && self.fired.insert((self.round, Once::PrecommitTimeout));
        if ready {
            self.schedule(TimeoutKind::Precommit, out);
        }
        ready
    }
}

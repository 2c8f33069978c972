//! Votes of one height, counted by power, with equivocation detection.

use std::collections::{BTreeMap, BTreeSet};

use tally_ledger::{Address, DuplicateVoteEvidence, Hash, SignedVote, Verified, Vote, VoteKind};

/// Most different values one validator is counted for in one round and
/// kind. An honest validator signs one; an equivocating one counts for each
/// value it signed (a quorum for a value is 2f+1 distinct signers of it,
/// and honest validators never sign twice, so this is safe), up to this
/// bound, which keeps memory bounded.
pub const MAX_VALUES_PER_VALIDATOR: usize = 4;

/// The votes of one kind in one round.
#[derive(Debug, Default, Clone)]
pub struct RoundVotes {
    /// Each validator's first vote: the total counts these.
    first: BTreeMap<Address, Verified<SignedVote>>,
    /// Every counted vote, by value.
    by_value: BTreeMap<Option<Hash>, BTreeMap<Address, Verified<SignedVote>>>,
    power_by_value: BTreeMap<Option<Hash>, u64>,
    /// Values each validator is counted for.
    values_of: BTreeMap<Address, usize>,
    total: u64,
}

impl RoundVotes {
    /// Power of the distinct validators that voted for `value` (`None` = nil).
    pub fn power_for(&self, value: &Option<Hash>) -> u64 {
        self.power_by_value.get(value).copied().unwrap_or(0)
    }

    /// Power of the distinct validators that voted, whatever their value.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The values with at least `power` behind them.
    pub fn values_with(&self, power: u64) -> impl Iterator<Item = &Option<Hash>> {
        self.power_by_value
            .iter()
            .filter(move |(_, p)| **p >= power)
            .map(|(v, _)| v)
    }

    /// Counts `vote` for its value; false if it already is, or the
    /// validator is counted for as many values as allowed.
    fn count(&mut self, vote: Verified<SignedVote>, power: u64) -> bool {
        let (validator, value) = (vote.validator, vote.vote.block_hash);
        let counted = self.values_of.get(&validator).copied().unwrap_or(0);
        let known = self
            .by_value
            .get(&value)
            .is_some_and(|signers| signers.contains_key(&validator));
        // Nothing is stored for a vote refused here (no empty entries).
        if known || counted >= MAX_VALUES_PER_VALIDATOR {
            return false;
        }
        self.values_of.insert(validator, counted + 1);
        self.by_value
            .entry(value)
            .or_default()
            .insert(validator, vote);
        *self.power_by_value.entry(value).or_insert(0) += power;
        true
    }
}

/// What adding a vote did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteOutcome {
    /// A new vote, counted.
    Added,
    /// The same vote again: ignored.
    Known,
    /// A second, different vote by the same validator for the same round and
    /// kind: counted for its value (not in the total), and here is the
    /// proof (reported once per validator, round and kind).
    Equivocation(Box<DuplicateVoteEvidence>),
    /// A further conflicting vote of an equivocation already reported
    /// (counted for its value while the bound allows).
    Ignored,
}

/// All votes of one height.
#[derive(Debug, Default, Clone)]
pub struct VoteBook {
    prevotes: BTreeMap<u32, RoundVotes>,
    precommits: BTreeMap<u32, RoundVotes>,
    /// Who sent any message (proposal or vote) in each round, with power:
    /// the f+1 rule (line 55) counts validators, not messages.
    senders: BTreeMap<u32, BTreeMap<Address, u64>>,
    reported: BTreeSet<(Address, u32, VoteKind)>,
}

impl VoteBook {
    fn rounds(&mut self, kind: VoteKind) -> &mut BTreeMap<u32, RoundVotes> {
        match kind {
            VoteKind::Prevote => &mut self.prevotes,
            VoteKind::Precommit => &mut self.precommits,
        }
    }

    /// The votes of `kind` in `round`.
    pub fn round(&self, round: u32, kind: VoteKind) -> Option<&RoundVotes> {
        match kind {
            VoteKind::Prevote => self.prevotes.get(&round),
            VoteKind::Precommit => self.precommits.get(&round),
        }
    }

    /// Power of the votes of `kind` in `round` for `value`.
    pub fn power_for(&self, round: u32, kind: VoteKind, value: &Option<Hash>) -> u64 {
        self.round(round, kind).map_or(0, |r| r.power_for(value))
    }

    /// Power of all votes of `kind` in `round`.
    pub fn total(&self, round: u32, kind: VoteKind) -> u64 {
        self.round(round, kind).map_or(0, RoundVotes::total)
    }

    /// Records that `address` (with `power`) sent a message in `round`.
    pub fn note_sender(&mut self, round: u32, address: Address, power: u64) {
        self.senders
            .entry(round)
            .or_default()
            .insert(address, power);
    }

    /// Power of the distinct validators that sent anything in `round`.
    pub fn sender_power(&self, round: u32) -> u64 {
        self.senders.get(&round).map_or(0, |s| s.values().sum())
    }

    /// Rounds in which anyone sent anything.
    pub fn rounds_seen(&self) -> impl Iterator<Item = u32> + '_ {
        self.senders.keys().copied()
    }

    /// Adds a verified vote of a validator with `power`.
    pub fn add(&mut self, vote: Verified<SignedVote>, power: u64) -> VoteOutcome {
        let (round, kind, validator) = (vote.vote.round, vote.vote.kind, vote.validator);
        self.note_sender(round, validator, power);
        let votes = self.rounds(kind).entry(round).or_default();
        let Some(first) = votes.first.get(&validator) else {
            votes.first.insert(validator, vote.clone());
            votes.total += power;
            votes.count(vote, power);
            return VoteOutcome::Added;
        };
        if first.vote == vote.vote {
            return VoteOutcome::Known;
        }
        let first = first.clone();
        votes.count(vote.clone(), power);
        if !self.reported.insert((validator, round, kind)) {
            return VoteOutcome::Ignored;
        }
        VoteOutcome::Equivocation(Box::new(DuplicateVoteEvidence {
            first: first.into_inner(),
            second: vote.into_inner(),
        }))
    }

    /// Whether `validator`'s `vote` is already counted (then its signature
    /// need not be checked again).
    pub fn has_from(&self, validator: &Address, vote: &Vote) -> bool {
        self.round(vote.round, vote.kind)
            .and_then(|r| r.by_value.get(&vote.block_hash))
            .and_then(|signers| signers.get(validator))
            .is_some_and(|v| &v.vote == vote)
    }

    /// Each validator's first vote in `round`, both kinds (not the
    /// further votes of equivocators).
    pub fn first_votes_in(&self, round: u32) -> Vec<Verified<SignedVote>> {
        [VoteKind::Prevote, VoteKind::Precommit]
            .into_iter()
            .filter_map(|kind| self.round(round, kind))
            .flat_map(|r| r.first.values())
            .cloned()
            .collect()
    }

    /// The votes of `kind` in `round` for `value`, in address order.
    pub fn votes_for(
        &self,
        round: u32,
        kind: VoteKind,
        value: &Option<Hash>,
    ) -> Vec<Verified<SignedVote>> {
        self.round(round, kind)
            .and_then(|r| r.by_value.get(value))
            .map(|signers| signers.values().cloned().collect())
            .unwrap_or_default()
    }
}

//! Votes of one height, counted by power, with equivocation detection.

use std::collections::{BTreeMap, BTreeSet};

use tally_ledger::{Address, CommitSignature, DuplicateVoteEvidence, Hash, SignedVote, VoteKind};

/// The votes of one kind in one round.
#[derive(Debug, Default, Clone)]
pub struct RoundVotes {
    votes: BTreeMap<Address, SignedVote>,
    power_by_value: BTreeMap<Option<Hash>, u64>,
    total: u64,
}

impl RoundVotes {
    /// Power of the votes for `value` (`None` = nil).
    pub fn power_for(&self, value: &Option<Hash>) -> u64 {
        self.power_by_value.get(value).copied().unwrap_or(0)
    }

    /// Power of all votes, whatever their value.
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
}

/// What adding a vote did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteOutcome {
    /// A new vote, counted.
    Added,
    /// The same vote again: ignored.
    Known,
    /// A second, different vote by the same validator for the same round and
    /// kind: not counted; here is the proof (reported once per validator,
    /// round and kind).
    Equivocation(Box<DuplicateVoteEvidence>),
    /// A second conflicting vote already reported.
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

    /// Adds a vote already checked to be signed by a validator with `power`.
    pub fn add(&mut self, vote: SignedVote, power: u64) -> VoteOutcome {
        let (round, kind, validator) = (vote.vote.round, vote.vote.kind, vote.validator);
        self.note_sender(round, validator, power);
        let votes = self.rounds(kind).entry(round).or_default();
        if let Some(first) = votes.votes.get(&validator) {
            if first.vote == vote.vote {
                return VoteOutcome::Known;
            }
            let first = first.clone();
            if !self.reported.insert((validator, round, kind)) {
                return VoteOutcome::Ignored;
            }
            return VoteOutcome::Equivocation(Box::new(DuplicateVoteEvidence {
                first,
                second: vote,
            }));
        }
        *votes
            .power_by_value
            .entry(vote.vote.block_hash)
            .or_insert(0) += power;
        votes.total += power;
        votes.votes.insert(validator, vote);
        VoteOutcome::Added
    }

    /// The votes of `kind` in `round` for `value`, in address order.
    pub fn votes_for(&self, round: u32, kind: VoteKind, value: &Option<Hash>) -> Vec<SignedVote> {
        self.round(round, kind)
            .map(|r| {
                r.votes
                    .values()
                    .filter(|v| &v.vote.block_hash == value)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The signatures of the votes of `kind` in `round` for `value`, in
    /// address order: a commit certificate when `kind` is precommit.
    pub fn signatures_for(
        &self,
        round: u32,
        kind: VoteKind,
        value: &Option<Hash>,
    ) -> Vec<CommitSignature> {
        self.round(round, kind)
            .map(|r| {
                r.votes
                    .values()
                    .filter(|v| &v.vote.block_hash == value)
                    .map(|v| CommitSignature {
                        validator: v.validator,
                        signature: v.signature,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

//! The state machine's state, its constructor and accessors, and
//! [`Consensus::handle`]. What the state means and how it changes lives
//! next door: [`intake`](crate::intake) admits messages, [`rules`](crate::rules)
//! is Algorithm 1, [`signing`](crate::signing) guards every signature and
//! [`recovery`](crate::recovery) resumes a height after a restart.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use tally_ledger::{
    Address, Block, ChainId, ConsensusMessage, Hash, Keypair, ProposalCore, SignedProposal,
    SignedVote, Signers, ValidatorSet, Verified,
};

use crate::guard::{SignState, ValidBlockRecord};
use crate::types::{Action, Config, Input, Step, Timeout, TimeoutKind};
use crate::votes::VoteBook;

/// What is kept of a proposal (its block is kept once, by hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProposalInfo {
    pub(crate) valid_round: Option<u32>,
    /// Its signer and signature, to hand the proposal to a peer that
    /// lacks it.
    pub(crate) proposer: Address,
    pub(crate) signature: tally_ledger::Signature,
}

/// Rules that fire once per round ("for the first time").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Once {
    PrevoteTimeout,
    Lock,
    PrecommitTimeout,
}

/// One validator's (or full node's) consensus state.
pub struct Consensus {
    pub(crate) config: Config,
    pub(crate) chain_id: ChainId,
    pub(crate) genesis_hash: Hash,
    pub(crate) validators: ValidatorSet,
    pub(crate) key: Option<Keypair>,
    pub(crate) sign_state: Option<SignState>,
    pub(crate) started: bool,
    pub(crate) height: u64,
    pub(crate) round: u32,
    pub(crate) step: Step,
    pub(crate) locked: Option<(u32, Hash)>,
    pub(crate) valid: Option<(u32, Hash)>,
    /// Proposals by (round, block hash): several per round are possible
    /// when a proposer equivocates.
    pub(crate) proposals: BTreeMap<(u32, Hash), ProposalInfo>,
    /// The first proposal received in each round (lines 22 and 28 act on it).
    pub(crate) first_proposal: BTreeMap<u32, Hash>,
    /// Rounds whose proposer was caught proposing two blocks (reported
    /// once a round).
    pub(crate) proposal_equivocations: BTreeSet<u32>,
    pub(crate) blocks: HashMap<Hash, Block>,
    pub(crate) validity: HashMap<Hash, bool>,
    pub(crate) validation_requested: HashSet<Hash>,
    pub(crate) votes: VoteBook,
    pub(crate) fired: HashSet<(u32, Once)>,
    pub(crate) future: VecDeque<Verified<ConsensusMessage>>,
    pub(crate) future_bytes: usize,
    /// The valid value from before a restart, until its height starts.
    pub(crate) recovered: Option<ValidBlockRecord>,
}

impl Consensus {
    /// A state machine for the chain `chain_id` with `validators`. `key` is
    /// this node's validator key (none for a full node, which follows but
    /// never signs); `sign_state` is the durable record from before a
    /// restart, and `valid_block` the last record of [`Action::PersistValidBlock`].
    pub fn new(
        config: Config,
        chain_id: ChainId,
        genesis_hash: Hash,
        validators: ValidatorSet,
        key: Option<Keypair>,
        sign_state: Option<SignState>,
        valid_block: Option<ValidBlockRecord>,
    ) -> Consensus {
        // The valid-block record stands on its own (it may be newer than the
        // signing record's valid value); it only has to belong to the
        // height the signing record is at.
        let recovered = valid_block.filter(|r| {
            sign_state
                .as_ref()
                .is_some_and(|s| s.height == r.block.header.height)
                && r.block.body_matches_header()
        });
        Consensus {
            recovered,
            config,
            chain_id,
            genesis_hash,
            validators,
            key,
            sign_state,
            started: false,
            height: 0,
            round: 0,
            step: Step::Propose,
            locked: None,
            valid: None,
            proposals: BTreeMap::new(),
            first_proposal: BTreeMap::new(),
            proposal_equivocations: BTreeSet::new(),
            blocks: HashMap::new(),
            validity: HashMap::new(),
            validation_requested: HashSet::new(),
            votes: VoteBook::default(),
            fired: HashSet::new(),
            future: VecDeque::new(),
            future_bytes: 0,
        }
    }

    /// Current height.
    pub fn height(&self) -> u64 {
        self.height
    }

    /// Current round.
    pub fn round(&self) -> u32 {
        self.round
    }

    /// Current step.
    pub fn step(&self) -> Step {
        self.step
    }

    /// The lock (`lockedRound`, hash of `lockedValue`).
    pub fn locked(&self) -> Option<(u32, Hash)> {
        self.locked
    }

    /// The votes of the current height.
    pub fn votes(&self) -> &VoteBook {
        &self.votes
    }

    /// What this machine's signatures are checked against.
    pub fn signers(&self) -> Signers<'_> {
        Signers {
            chain_id: &self.chain_id,
            genesis_hash: &self.genesis_hash,
            validators: &self.validators,
        }
    }

    /// The votes held for the current and the previous round, anyone's.
    /// A peer that lost some of them (cut off, restarted) cannot get past
    /// the round without them, and a validator restarted after its
    /// precommit can send again only that precommit; so while a height is
    /// stuck the host sends these again (vote gossip).
    ///
    /// Also the polka of the valid value, whatever its round: a proposal of
    /// that value (lines 14–16) is accepted only with it (line 28). The
    /// polka is sent whole even where it holds an equivocator's second
    /// vote: a peer that got the equivocator's other vote first lacks
    /// exactly that one, and without it the value re-proposed in every
    /// later round never gathers 2f+1 prevotes there (seed 271). Otherwise
    /// equivocators' further votes are not relayed: at most one vote per
    /// validator, kind and round, plus the polka.
    pub fn votes_to_relay(&self) -> Vec<SignedVote> {
        let since = self.round.saturating_sub(1);
        let mut votes: Vec<Verified<SignedVote>> = (since..=self.round)
            .flat_map(|round| self.votes.first_votes_in(round))
            .collect();
        if let Some((vr, hash)) = self.valid {
            // Only a polka of the rounds above can repeat a vote.
            let overlaps = vr >= since;
            for vote in self
                .votes
                .votes_for(vr, tally_ledger::VoteKind::Prevote, &Some(hash))
            {
                if !(overlaps && votes.contains(&vote)) {
                    votes.push(vote);
                }
            }
        }
        votes.into_iter().map(Verified::into_inner).collect()
    }

    /// The first proposal received in `round` of the current height (the
    /// one lines 22 and 28 act on), as it was signed.
    pub fn proposal(&self, round: u32) -> Option<SignedProposal> {
        let hash = self.first_proposal.get(&round)?;
        let info = self.proposals.get(&(round, *hash))?;
        let block = self.blocks.get(hash)?;
        Some(SignedProposal {
            core: ProposalCore {
                chain_id: self.chain_id.clone(),
                height: self.height,
                round,
                valid_round: info.valid_round,
                block_hash: *hash,
            },
            block: block.clone(),
            proposer: info.proposer,
            signature: info.signature,
        })
    }

    /// The hash of the first proposal received in `round`.
    pub fn proposal_hash(&self, round: u32) -> Option<Hash> {
        self.first_proposal.get(&round).copied()
    }

    /// Whether the block with this hash is held (from a proposal, or the
    /// valid-block record after a restart).
    pub fn has_block(&self, hash: &Hash) -> bool {
        self.blocks.contains_key(hash)
    }

    /// Processes one input; returns what to do, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::StartHeight { height, validators } => {
                self.start_height(height, validators, &mut out)
            }
            Input::Message(message) => self.on_message(message, &mut out),
            Input::Timeout(timeout) => self.on_timeout(timeout, &mut out),
            Input::ProposalBlock {
                height,
                round,
                block,
            } => self.on_proposal_block(height, round, *block, &mut out),
            Input::BlockValidated {
                height,
                block_hash,
                valid,
            } => {
                if height == self.height && self.blocks.contains_key(&block_hash) {
                    self.validity.insert(block_hash, valid);
                }
            }
        }
        self.apply_rules(&mut out);
        out
    }

    pub(crate) fn quorum(&self) -> u64 {
        self.validators.quorum_power()
    }

    pub(crate) fn my_address(&self) -> Option<Address> {
        self.key.as_ref().map(Keypair::address)
    }

    /// The power of a validator whose message was verified against this
    /// machine's set: it is a member, so it has power.
    pub(crate) fn power_of_member(&self, validator: &Address) -> u64 {
        let power = self.validators.power_of(validator);
        debug_assert!(
            power.is_some(),
            "a verified message's signer {validator} is not in the validator set"
        );
        power.unwrap_or(0)
    }

    fn timeout_after(&self, kind: TimeoutKind, round: u32) -> u64 {
        let base = match kind {
            TimeoutKind::Propose => self.config.propose_timeout_ms,
            TimeoutKind::Prevote => self.config.prevote_timeout_ms,
            TimeoutKind::Precommit => self.config.precommit_timeout_ms,
        };
        base.saturating_add(self.config.timeout_delta_ms.saturating_mul(round as u64))
            .min(self.config.max_timeout_ms.max(base))
    }

    pub(crate) fn schedule(&self, kind: TimeoutKind, out: &mut Vec<Action>) {
        let timeout = Timeout {
            kind,
            height: self.height,
            round: self.round,
        };
        out.push(Action::ScheduleTimeout {
            timeout,
            after_ms: self.timeout_after(kind, self.round),
        });
    }
}

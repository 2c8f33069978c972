//! The Tendermint state machine (Algorithm 1 of arXiv:1807.04938).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use tally_ledger::{
    Address, Block, ChainId, Commit, ConsensusMessage, DuplicateVoteEvidence, Hash, Keypair,
    ProposalCore, SignedProposal, SignedVote, ValidatorSet, Vote, VoteKind,
};

use crate::guard::{SignState, SignStep, ValidBlockRecord};
use crate::proposer::proposer;
use crate::votes::{VoteBook, VoteOutcome};

/// Timeouts and bounds. Timeout of round r = base + r × `timeout_delta_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Base wait for a proposal (`timeoutPropose`).
    pub propose_timeout_ms: u64,
    /// Base wait after 2f+1 prevotes of mixed values (`timeoutPrevote`).
    pub prevote_timeout_ms: u64,
    /// Base wait after 2f+1 precommits of mixed values (`timeoutPrecommit`).
    pub precommit_timeout_ms: u64,
    /// Added to every timeout per round, so rounds grow until the network
    /// is fast enough.
    pub timeout_delta_ms: u64,
    /// Messages for the next height kept until it starts.
    pub max_future_messages: usize,
    /// Bytes of messages for the next height kept until it starts.
    pub max_future_bytes: usize,
    /// Votes for rounds further ahead than this are dropped.
    pub max_rounds_ahead: u32,
    /// Blocks of proposals for rounds further ahead than this are not kept
    /// (the proposal still counts as its proposer's message, line 55).
    pub max_proposal_rounds_ahead: u32,
    /// Distinct proposals kept per round; a further one is kept only when
    /// more than a third of the power voted for it in that round.
    pub max_proposals_per_round: usize,
    /// No timeout grows beyond this.
    pub max_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            propose_timeout_ms: 3_000,
            prevote_timeout_ms: 1_000,
            precommit_timeout_ms: 1_000,
            timeout_delta_ms: 500,
            max_future_messages: 10_000,
            max_future_bytes: 64 * 1024 * 1024,
            max_rounds_ahead: 1_000,
            max_proposal_rounds_ahead: 2,
            max_proposals_per_round: 3,
            max_timeout_ms: 60_000,
        }
    }
}

/// The three timeouts of the algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeoutKind {
    /// Line 21 → `OnTimeoutPropose`, line 57.
    Propose,
    /// Line 34 → `OnTimeoutPrevote`, line 61.
    Prevote,
    /// Line 47 → `OnTimeoutPrecommit`, line 65.
    Precommit,
}

/// A timeout to schedule, and to feed back as [`Input::Timeout`] when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timeout {
    /// Which.
    pub kind: TimeoutKind,
    /// For which height.
    pub height: u64,
    /// For which round.
    pub round: u32,
}

/// The step within a round (`step_p`), plus the end state of a height.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Waiting for a proposal.
    Propose,
    /// Prevoted.
    Prevote,
    /// Precommitted.
    Precommit,
    /// Decided this height; waiting for the shell to commit and start the next.
    Decided,
}

/// What the shell tells the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Start this height (the previous one is committed), at round 0 or at
    /// the round of the sign-state record if it is for this height.
    StartHeight(u64),
    /// A proposal or vote from the network (or from this node's own past).
    Message(ConsensusMessage),
    /// A scheduled timeout fired.
    Timeout(Timeout),
    /// The block built for [`Action::BuildProposal`] (`getValue()`).
    ProposalBlock {
        /// Height it was built for.
        height: u64,
        /// Round it was built for.
        round: u32,
        /// The block.
        block: Block,
    },
    /// The result of [`Action::ValidateBlock`] (`valid(v)`).
    BlockValidated {
        /// Height.
        height: u64,
        /// The block's hash.
        block_hash: Hash,
        /// Whether it is a valid child of the committed chain.
        valid: bool,
    },
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write this record durably (fsync) before carrying out any later action.
    PersistSignState(SignState),
    /// Write this record durably (fsync) before any later action: the valid
    /// value with its polka, which a restarted validator needs to propose it
    /// again (lines 14-15). Give it back to [`Consensus::new`] after a
    /// restart.
    PersistValidBlock(ValidBlockRecord),
    /// Send to all peers.
    Broadcast(ConsensusMessage),
    /// Feed [`Input::Timeout`] back after `after_ms`.
    ScheduleTimeout {
        /// The timeout.
        timeout: Timeout,
        /// Delay.
        after_ms: u64,
    },
    /// Build a block for this height and round from the mempool and answer
    /// with [`Input::ProposalBlock`].
    BuildProposal {
        /// Height.
        height: u64,
        /// Round.
        round: u32,
    },
    /// Execute this block against the committed parent and answer with
    /// [`Input::BlockValidated`].
    ValidateBlock {
        /// Height.
        height: u64,
        /// The block.
        block: Block,
    },
    /// The height is decided: commit this block with this certificate, then
    /// send [`Input::StartHeight`] for the next height.
    Commit {
        /// The block.
        block: Block,
        /// Precommits of more than two thirds of the power for it.
        commit: Commit,
    },
    /// A validator equivocated.
    Evidence(DuplicateVoteEvidence),
}

/// What is kept of a proposal (its block is kept once, by hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProposalInfo {
    valid_round: Option<u32>,
    /// Its signer and signature, to hand the proposal to a peer that
    /// lacks it.
    proposer: Address,
    signature: tally_ledger::Signature,
}

/// Rules that fire once per round ("for the first time").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Once {
    PrevoteTimeout,
    Lock,
    PrecommitTimeout,
}

/// One validator's (or full node's) consensus state.
pub struct Consensus {
    config: Config,
    chain_id: ChainId,
    genesis_hash: Hash,
    validators: ValidatorSet,
    key: Option<Keypair>,
    sign_state: Option<SignState>,
    started: bool,
    height: u64,
    round: u32,
    step: Step,
    locked: Option<(u32, Hash)>,
    valid: Option<(u32, Hash)>,
    /// Proposals by (round, block hash): several per round are possible
    /// when a proposer equivocates.
    proposals: BTreeMap<(u32, Hash), ProposalInfo>,
    /// The first proposal received in each round (lines 22 and 28 act on it).
    first_proposal: BTreeMap<u32, Hash>,
    blocks: HashMap<Hash, Block>,
    validity: HashMap<Hash, bool>,
    validation_requested: HashSet<Hash>,
    votes: VoteBook,
    fired: HashSet<(u32, Once)>,
    future: VecDeque<ConsensusMessage>,
    future_bytes: usize,
    /// The valid value from before a restart, until its height starts.
    recovered: Option<ValidBlockRecord>,
}

/// Upper bound on rule applications per input; each application changes
/// the step, the round or a once-flag, so the real number is far smaller.
const MAX_RULE_STEPS: usize = 1_000;

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

    /// The votes held for the current and the previous round, anyone's.
    /// A peer that lost some of them (cut off, restarted) cannot get past
    /// the round without them, and a validator restarted after its
    /// precommit can send again only that precommit; so while a height is
    /// stuck the shell sends these again (vote gossip).
    ///
    /// Also the polka of the valid value, whatever its round: a proposal of
    /// that value (lines 14–16) is accepted only with it (line 28).
    /// Equivocators' further votes are not relayed: at most 2 votes per
    /// validator and round, plus one polka.
    pub fn votes_to_relay(&self) -> Vec<SignedVote> {
        let since = self.round.saturating_sub(1);
        let mut votes: Vec<SignedVote> = (since..=self.round)
            .flat_map(|round| self.votes.first_votes_in(round))
            .collect();
        if let Some((vr, hash)) = self.valid.filter(|(vr, _)| *vr < since) {
            votes.extend(self.votes.votes_for(vr, VoteKind::Prevote, &Some(hash)));
        }
        votes
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

    /// Processes one input; returns what to do, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::StartHeight(height) => self.start_height(height, &mut out),
            Input::Message(message) => self.on_message(message, &mut out),
            Input::Timeout(timeout) => self.on_timeout(timeout, &mut out),
            Input::ProposalBlock {
                height,
                round,
                block,
            } => self.on_proposal_block(height, round, block, &mut out),
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

    fn quorum(&self) -> u64 {
        self.validators.quorum_power()
    }

    fn my_address(&self) -> Option<Address> {
        self.key.as_ref().map(Keypair::address)
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

    fn schedule(&self, kind: TimeoutKind, out: &mut Vec<Action>) {
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

    fn start_height(&mut self, height: u64, out: &mut Vec<Action>) {
        if self.started && height <= self.height {
            return;
        }
        self.started = true;
        self.height = height;
        self.proposals.clear();
        self.first_proposal.clear();
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
            for vote in record.polka {
                self.on_vote(vote, out);
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
                        if let Some(signed) = self.sign_vote(VoteKind::Prevote, value) {
                            out.push(Action::Broadcast(ConsensusMessage::Vote(signed.clone())));
                            self.count_vote(signed, out);
                        }
                    }
                    self.vote(VoteKind::Precommit, record.block_hash, out);
                }
            }
        }
        let buffered: Vec<ConsensusMessage> = self.future.drain(..).collect();
        self.future_bytes = 0;
        for message in buffered {
            self.on_message(message, out);
        }
    }

    /// StartRound, lines 11-21.
    fn start_round(&mut self, round: u32, out: &mut Vec<Action>) {
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
        // comes back from the shell cannot stall the round.
        self.schedule(TimeoutKind::Propose, out);
    }

    fn on_proposal_block(&mut self, height: u64, round: u32, block: Block, out: &mut Vec<Action>) {
        let is_proposer = self.my_address() == Some(proposer(&self.validators, height, round));
        if height != self.height
            || round != self.round
            || self.step != Step::Propose
            || !is_proposer
        {
            return;
        }
        // The shell built it by executing it against the committed state.
        self.validity.insert(block.hash(), true);
        self.propose(block, None, out);
    }

    /// Line 19: sign and broadcast a proposal, and take it as received.
    fn propose(&mut self, block: Block, valid_round: Option<u32>, out: &mut Vec<Action>) {
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
        let proposal = SignedProposal::sign(core, block, key, &self.genesis_hash);
        out.push(Action::Broadcast(ConsensusMessage::Proposal(Box::new(
            proposal.clone(),
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
                out.push(Action::Broadcast(ConsensusMessage::Vote(vote)));
            }
        }
        self.accept_proposal(proposal, out);
    }

    /// The signing rule: allowed only strictly after the record (or the same
    /// message again); the new record goes out before the signed message.
    fn guard(
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
        let record = SignState {
            height: self.height,
            round: self.round,
            step,
            block_hash,
            valid_round,
            locked: self.locked,
            valid: self.valid,
            prevote,
        };
        self.sign_state = Some(record.clone());
        out.push(Action::PersistSignState(record));
        true
    }

    /// Signs and broadcasts a vote of `kind` for `value` in the current round.
    fn vote(&mut self, kind: VoteKind, value: Option<Hash>, out: &mut Vec<Action>) {
        let step = match kind {
            VoteKind::Prevote => SignStep::Prevote,
            VoteKind::Precommit => SignStep::Precommit,
        };
        if !self.guard(step, value, None, out) {
            return;
        }
        let Some(signed) = self.sign_vote(kind, value) else {
            return;
        };
        out.push(Action::Broadcast(ConsensusMessage::Vote(signed.clone())));
        self.count_vote(signed, out);
    }

    /// This validator's vote in the current height and round (the guard
    /// is the caller's business).
    fn sign_vote(&self, kind: VoteKind, value: Option<Hash>) -> Option<SignedVote> {
        let key = self.key.as_ref()?;
        let vote = Vote {
            chain_id: self.chain_id.clone(),
            height: self.height,
            round: self.round,
            kind,
            block_hash: value,
        };
        Some(SignedVote::sign(vote, key, &self.genesis_hash))
    }

    fn on_message(&mut self, message: ConsensusMessage, out: &mut Vec<Action>) {
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
        match message {
            ConsensusMessage::Proposal(p) => self.on_proposal(*p, out),
            ConsensusMessage::Vote(v) => self.on_vote(v, out),
        }
    }

    /// Keeps a message for the next height, if it is signed by whom it must
    /// be and the buffer has room (by count and bytes).
    fn buffer_future(&mut self, message: ConsensusMessage) {
        let (authentic, bytes) = match &message {
            ConsensusMessage::Vote(v) => (
                v.vote.chain_id == self.chain_id && v.verify(&self.validators, &self.genesis_hash),
                std::mem::size_of::<SignedVote>(),
            ),
            ConsensusMessage::Proposal(p) => (
                p.core.chain_id == self.chain_id
                    && p.proposer == proposer(&self.validators, p.core.height, p.core.round)
                    && p.verify(&self.genesis_hash),
                p.block.txs.len() * tally_ledger::MAX_TX_BYTES
                    + std::mem::size_of::<SignedProposal>(),
            ),
        };
        let room = self.future.len() < self.config.max_future_messages
            && self.future_bytes + bytes <= self.config.max_future_bytes;
        if authentic && room {
            self.future_bytes += bytes;
            self.future.push_back(message);
        }
    }

    fn round_in_range(&self, round: u32) -> bool {
        round <= self.round.saturating_add(self.config.max_rounds_ahead)
    }

    fn on_proposal(&mut self, proposal: SignedProposal, out: &mut Vec<Action>) {
        let core = &proposal.core;
        let (round, hash) = (core.round, core.block_hash);
        let acceptable = core.chain_id == self.chain_id
            && self.round_in_range(round)
            && proposal.proposer == proposer(&self.validators, self.height, round)
            && core.valid_round.is_none_or(|vr| vr < round)
            && !self.proposals.contains_key(&(round, hash))
            && proposal.verify(&self.genesis_hash);
        if !acceptable {
            return;
        }
        let power = self.validators.power_of(&proposal.proposer).unwrap_or(0);
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

    fn proposals_in(&self, round: u32) -> impl Iterator<Item = (Hash, ProposalInfo)> + '_ {
        let range = (round, Hash([0; 32]))..=(round, Hash([0xff; 32]));
        self.proposals
            .range(range)
            .map(|((_, hash), info)| (*hash, *info))
    }

    fn accept_proposal(&mut self, proposal: SignedProposal, out: &mut Vec<Action>) {
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

    /// Asks the shell for `valid(v)` once per block, only when it matters
    /// (the current round, or a decision waiting for it).
    fn request_validation(&mut self, hash: Hash, out: &mut Vec<Action>) {
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

    fn on_vote(&mut self, vote: SignedVote, out: &mut Vec<Action>) {
        // Gossip and rebroadcasts deliver votes many times: a vote already
        // counted (same signer, same content) changes nothing.
        if self.votes.has_from(&vote.validator, &vote.vote) {
            return;
        }
        let acceptable = vote.vote.chain_id == self.chain_id
            && self.round_in_range(vote.vote.round)
            && vote.verify(&self.validators, &self.genesis_hash);
        if acceptable {
            self.count_vote(vote, out);
        }
    }

    fn count_vote(&mut self, vote: SignedVote, out: &mut Vec<Action>) {
        let power = self.validators.power_of(&vote.validator).unwrap_or(0);
        if let VoteOutcome::Equivocation(evidence) = self.votes.add(vote, power) {
            out.push(Action::Evidence(*evidence));
        }
    }

    fn on_timeout(&mut self, timeout: Timeout, out: &mut Vec<Action>) {
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
            TimeoutKind::Precommit => self.start_round(self.round + 1, out),
            _ => {}
        }
    }

    fn apply_rules(&mut self, out: &mut Vec<Action>) {
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
            return false;
        };
        let signatures = self
            .votes
            .signatures_for(round, VoteKind::Precommit, &Some(hash));
        let commit = Commit {
            height: self.height,
            round,
            block_hash: hash,
            signatures,
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
                    .votes_for(self.round, VoteKind::Prevote, &Some(hash));
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

//! The state machine's vocabulary: its configuration, what the host tells
//! it ([`Input`]) and what it asks the host to do ([`Action`]).

use tally_ledger::{Block, Commit, ConsensusMessage, Evidence, Hash, ValidatorSet, Verified};

use crate::guard::{SignState, ValidBlockRecord};

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
    /// Decided this height; waiting for the host to commit and start the next.
    Decided,
}

/// What the host tells the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Start this height (the previous one is committed), at round 0 or at
    /// the round of the sign-state record if it is for this height, with
    /// the validator set that signs it (the chain's, from its validator
    /// state: it changes by vote).
    StartHeight {
        /// The height.
        height: u64,
        /// Its validator set.
        validators: ValidatorSet,
    },
    /// A proposal or vote whose signature the edge that received it has
    /// checked (it cannot be made otherwise).
    Message(Verified<ConsensusMessage>),
    /// A scheduled timeout fired.
    Timeout(Timeout),
    /// The block built for [`Action::BuildProposal`] (`getValue()`).
    ProposalBlock {
        /// Height it was built for.
        height: u64,
        /// Round it was built for.
        round: u32,
        /// The block.
        block: Box<Block>,
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

/// What the host must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write this record durably (fsync) before carrying out any later action.
    PersistSignState(SignState),
    /// Write this record durably (fsync) before any later action: the valid
    /// value with its polka, which a restarted validator needs to propose it
    /// again (lines 14-15). Give it back to [`crate::Consensus::new`] after a
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
        /// Precommits of more than two thirds of the power for it, each
        /// counted by this state machine as a verified vote (the host need
        /// not check them again).
        commit: Verified<Commit>,
    },
    /// A validator equivocated: two votes of one step, or (a proposer)
    /// two proposals of one round, both signatures verified.
    Evidence(Evidence),
}

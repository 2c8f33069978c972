//! Tally's consensus: Tendermint, as in Buchman, Kwon and Milosevic, "The
//! latest gossip on BFT consensus" (arXiv:1807.04938), Algorithm 1.
//!
//! # Design
//! A synchronous state machine: [`Consensus::handle`] takes one [`Input`]
//! (a proposal, a vote, a fired timeout, the shell's answer to a request) and
//! returns the [`Action`]s to carry out, in order. It never reads a clock,
//! never does I/O and never spawns; the shell (the node) owns timers, the
//! network, block execution and the disk. Comments cite the paper's lines.
//!
//! The value decided is a block; `valid(v)` is the shell's execution of the
//! block against the parent state ([`Action::ValidateBlock`] →
//! [`Input::BlockValidated`]); `getValue()` is the shell building a block
//! from its mempool ([`Action::BuildProposal`] → [`Input::ProposalBlock`]).
//!
//! # Safety across crashes
//! Every signature goes through the [`SignState`] guard: before a proposal or
//! vote is broadcast, [`Action::PersistSignState`] carries the new record
//! (height, round, step, what was signed, and the lock) which the shell must
//! write durably before it performs any later action of the same batch. A
//! state machine restarted from that record never signs anything that
//! conflicts with it, and keeps its lock.
//!
//! # Guarantees
//! - With at most f Byzantine validators of n = 3f+1 (by power), two honest
//!   nodes never commit different blocks at one height.
//! - Every [`Action::Commit`] carries precommits of more than two thirds of
//!   the power for that block: a certificate anyone can check.
//! - Two conflicting votes by one validator are reported as evidence.
//!
//! # Not guaranteed
//! - Liveness before the network is synchronous enough for the timeouts.
//! - Checking blocks: the shell's `valid(v)` decides what a valid block is.

mod guard;
mod intake;
mod machine;
mod proposer;
mod recovery;
mod rules;
mod signing;
mod types;
mod votes;

pub use guard::{OwnVotes, SignConflict, SignState, SignStep, ValidBlockRecord};
pub use machine::Consensus;
pub use proposer::proposer;
pub use types::{Action, Config, Input, Step, Timeout, TimeoutKind};
pub use votes::{RoundVotes, VoteBook, VoteOutcome, MAX_VALUES_PER_VALIDATOR};

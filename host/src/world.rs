//! What differs between production and simulation, as four small traits:
//! the clock, timers, the outbox (the network) and the signing-record
//! store. The chain store is the ledger's [`tally_ledger::ChainWrite`]. The
//! node implements them over the system clock, a timer heap on the host
//! thread, libp2p and files; the simulator over simulated time, its event
//! queue, its simulated network and memory.

use std::fmt::{Debug, Display};
use std::hash::Hash as StdHash;

use tally_consensus::{SignState, Timeout, ValidBlockRecord};
use tally_ledger::ConsensusMessage;

use crate::sync::SyncRequest;

/// The wall clock, in milliseconds since the Unix epoch: block timestamps
/// and the mempool's expiry use it. Timers do not ([`Timers`]).
pub trait Clock {
    /// Now.
    fn now_ms(&self) -> u64;
}

/// Timers: [`crate::Host::on_timer`] is called with `timer` once `after_ms`
/// have passed. A timer cannot be cancelled; each carries what it is for,
/// and the host ignores one that no longer applies.
pub trait Timers {
    /// Schedules `timer`.
    fn schedule(&mut self, after_ms: u64, timer: Timer);
}

/// The network as the host sees it. Everything is best effort: a publish
/// may reach nobody, a request may never be answered (the host gives up on
/// it after its own deadline).
pub trait Outbox {
    /// How a peer is named (a libp2p peer id in the node, an index in the
    /// simulator).
    type Peer: Copy + Eq + Ord + StdHash + Debug + Display;

    /// Gossips a consensus message of this node's.
    fn publish(&mut self, message: &ConsensusMessage);
    /// Sends `request` to `peer`; its answer comes back through
    /// [`crate::Host::on_response`] with the same `id`.
    fn request(&mut self, peer: Self::Peer, id: RequestId, request: &SyncRequest);
    /// Disconnects `peer` and refuses it for a while: it sent something no
    /// honest node sends.
    fn ban(&mut self, peer: Self::Peer, reason: &str);
    /// The peers connected now.
    fn peers(&self) -> Vec<Self::Peer>;
}

/// Durable storage of the two consensus records. A write returns only once
/// the record is durable (fsync): the host sends nothing a record covers
/// before that.
pub trait Records {
    /// Writes the signing record.
    fn save_sign_state(&mut self, record: &SignState) -> Result<(), RecordError>;
    /// Writes the valid-block record.
    fn save_valid_block(&mut self, record: &ValidBlockRecord) -> Result<(), RecordError>;
}

/// Everything the host needs from the world.
pub trait World: Clock + Timers + Outbox + Records {}

impl<T: Clock + Timers + Outbox + Records> World for T {}

/// A record could not be written (the host retries until it can).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot write a consensus record: {0}")]
pub struct RecordError(pub String);

/// Names one request of this host's, to match its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Why a request got no answer. None of these blames the peer: honest
/// peers time out, go away and are busy too. (An answer that arrives but
/// does not decode is the peer's fault; the host decides that.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestFailure {
    /// No answer in time, the peer went away, or it declined.
    #[error("no answer: {0}")]
    NoAnswer(String),
    /// The answer was larger than any answer may be.
    #[error("the answer was too large: {0}")]
    TooLarge(String),
}

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// A consensus timeout (the state machine ignores a stale one).
    Consensus(Timeout),
    /// The proposer of this height and round may propose an empty block.
    EmptyBlock {
        /// Height.
        height: u64,
        /// Round.
        round: u32,
    },
    /// The proposer of this height and round has waited long enough for
    /// late precommits ([`crate::HostConfig::live_wait_ms`]).
    LiveSigners {
        /// Height.
        height: u64,
        /// Round.
        round: u32,
    },
    /// The host's periodic tick: stuck checks, block sync, expiry.
    Tick,
    /// Ask the peer that decided a height this node is still deciding.
    CatchupGrace,
    /// Tell the peers that have not moved past this height that it is
    /// decided.
    AnnounceDecided(u64),
    /// Try again what failed on storage (a record write, a commit).
    Retry,
    /// Stop waiting for a request's answer.
    RequestDeadline(RequestId),
    /// Stop waiting for the tips asked for in a round of block sync.
    SyncStatusDeadline(u64),
    /// Stop waiting for a peer's blocks and give the next peer its turn.
    SyncFetchPatience(u64),
}

//! The one host around Tally's consensus, run by the node and by the
//! simulator alike.
//!
//! # Design
//! The consensus state machine (`tally-consensus`) decides; the host acts.
//! [`Host`] owns the state machine and carries out its actions in order:
//! it writes the signing records durably before anything signed leaves,
//! builds proposals from the mempool, validates proposed blocks, commits
//! decided blocks through the one commit path ([`Chain::commit_block`]),
//! and schedules timeouts. Around consensus it runs what keeps a node live
//! when messages are lost: the catch-up exchange (a decision told to every
//! peer; a stuck round repaired point to point) and block sync, both the
//! asking side and the serving side ([`sync`]).
//!
//! Everything that differs between production and simulation is behind
//! four small traits ([`world`]): [`Clock`], [`Timers`], [`Outbox`] and
//! [`Records`]; the chain store is the ledger's `ChainWrite`. The node
//! implements them over the system clock, its host thread's timer heap,
//! libp2p and files; `tally-sim` over simulated time, its network and
//! memory. So the thousands of seeded cluster runs exercise this code, not
//! a copy of it.
//!
//! A host is driven by one caller at a time (`&mut self`): its inputs are
//! [`Host::on_message`], [`Host::on_timer`], [`Host::on_work`],
//! [`Host::on_request`] and [`Host::on_response`]; its effects go out
//! through the world. The [`Chain`] it commits to is shared (behind an
//! `Arc`) with readers such as the node's RPC, and documents its locks.
//!
//! # Checked once
//! Bytes from outside are decoded and their signatures checked once, where
//! they enter: gossip by [`edge`], direct messages and blocks from peers by
//! the host when they arrive. What passed is carried in the type: consensus
//! messages as `Verified<ConsensusMessage>` (only `tally-ledger` can make
//! one, and only by checking or by signing with a validator's key), blocks
//! as [`CertifiedBlock`] (only a checked certificate makes one). The state
//! machine takes only verified messages and never checks a signature
//! itself; a certificate it assembles from the votes it counted is not
//! checked again at commit ([`CertifiedBlock::decided`]), while one that
//! arrives by sync or catch-up is, in full ([`CertifiedBlock::check`]).
//! The argument: every signature in a locally assembled certificate was
//! checked when its vote arrived (or was made by this node's key), against
//! the same validator set, and the certificate's assembly checks the rest
//! (one height, round and block; distinct members; a quorum of power).
//!
//! # Guarantees
//! - Nothing covered by a signing record leaves before the record is
//!   durable: a failing write stops the host's actions, in order, until it
//!   succeeds.
//! - A decided block is committed, or the host stops and says why; a block
//!   from a peer is committed only with a certificate for it and a valid
//!   execution, and a peer that sends anything else is banned.
//! - Every request this host sends has a deadline, and at most one
//!   catch-up request per peer is in flight.
//!
//! # Not guaranteed
//! - Progress while more than a third of the voting power is down or cut
//!   off.
//! - Delivery of anything through the world: the outbox is best effort.

mod catchup;
pub mod chain;
pub mod checked;
pub mod edge;
mod host;
#[cfg(feature = "sabotage")]
pub mod sabotage;
pub mod sync;
pub mod world;

pub use chain::{
    AdmitError, CertifiedBlock, Chain, ChainEvents, CommitFailure, HostStatus, NoEvents, Position,
    Rejection, Signature, TxStatus, ValidatorView,
};
pub use checked::CheckedTxs;
pub use host::{Host, HostConfig, Recovered};

/// Whether this build carries the `sabotage` feature (the simulator's
/// deliberate bugs, each off unless a simulation switches it on).
pub const SABOTAGE_BUILT_IN: bool = cfg!(feature = "sabotage");
#[cfg(feature = "sabotage")]
pub use sabotage::Sabotage;
pub use world::{
    Clock, Outbox, RecordError, Records, RequestFailure, RequestId, Timer, Timers, World,
};

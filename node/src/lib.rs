//! The `tally` binary as a library: configuration, the node's composition
//! (store, mempool, block production, JSON-RPC), and the command line.
//!
//! # Design
//! The node is a thin async shell around pure crates. [`node::Node`] owns the
//! store and mempool and the single commit path every block goes through;
//! [`consensus_driver`] runs the Tendermint state machine that decides them;
//! [`rpc_server`] serves the API. [`run::run`] takes an already bound
//! listener and a shutdown future, so tests start real nodes side by side.
//!
//! # Guarantees
//! - A block is acknowledged (to clients waiting for it) only after it is
//!   durably written.
//! - Every limit is configurable in `config.toml` and listed in
//!   docs/OPERATIONS.md.
//!
//! [`sync`] fetches committed blocks the node is behind on from peers and
//! feeds them to the same commit path; [`devnet`] lays out and runs a local
//! multi-node network, and [`bench`] measures one under load.
//!
//! # Not guaranteed
//! - Progress while more than a third of the voting power is down or cut
//!   off: the chain halts (safely) until enough validators return.

pub mod bench;
pub mod cli;
pub mod config;
pub mod consensus_driver;
pub mod devnet;
pub mod home;
pub mod node;
pub mod rpc_server;
pub mod run;
pub mod sync;
mod wallet;

/// The node's version, reported by `chain_status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Default JSON-RPC port.
pub const DEFAULT_RPC_PORT: u16 = 7700;

/// Default peer-to-peer port.
pub const DEFAULT_P2P_PORT: u16 = 7800;

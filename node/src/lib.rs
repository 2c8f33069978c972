//! The Tally node runtime: configuration, the home directory, the node's
//! shell of the host, and the JSON-RPC server. The `tally` binary's
//! commands (wallet, devnet, benchmark) are tools that use it, in
//! `tally-cli`.
//!
//! # Design
//! [`run::run`] composes a node: it opens the store, makes the shared
//! [`tally_host::Chain`] (store, mempool, the one commit path), starts the
//! network with the host's intake as its message filter and the host's
//! sync server as its request handler, starts the host on a thread of its
//! own ([`shell`]), and serves RPC ([`rpc_server`]) until told to stop. It
//! takes an already bound listener and a shutdown future, so tests start
//! real nodes side by side.
//!
//! # Guarantees
//! - A block is acknowledged (to clients waiting for it) only after it is
//!   durably written.
//! - Every limit is configurable in `config.toml` and listed in
//!   docs/OPERATIONS.md.
//!
//! # Not guaranteed
//! - Progress while more than a third of the voting power is down or cut
//!   off: the chain halts (safely) until enough validators return.

pub mod config;
pub mod home;
pub mod jsonrpc;
pub mod node;
pub mod records;
pub mod rpc_server;
pub mod run;
pub mod shell;

/// The node's version, reported by `chain_status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Default JSON-RPC port.
pub const DEFAULT_RPC_PORT: u16 = 7700;

/// Default peer-to-peer port.
pub const DEFAULT_P2P_PORT: u16 = 7800;

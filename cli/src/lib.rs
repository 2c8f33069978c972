//! The `tally` binary's commands: running a node (a thin caller of
//! `tally_node::run::run`), the wallet, the local devnet and the
//! benchmark. They use the node runtime; none of them is part of it.

pub mod bench;
pub mod cli;
pub mod devnet;
mod doctor;
mod validator;
pub mod verify;
mod wallet;

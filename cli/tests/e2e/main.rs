//! End-to-end tests: real `tally` processes on loopback, started from the
//! binary this package builds (or `TALLY_TEST_BIN`). One test binary for
//! all of them, so the suite links once. docs/TESTING.md says what each
//! checks.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

mod bench;
mod cli;
mod common;
mod crash_recovery;
mod hostile_peers;
mod jsonrpc_spec;
mod operator_override;
mod pause;
mod replication;
mod rpc_e2e;
mod rpc_errors;
mod sync_liar;
mod validator_sets;

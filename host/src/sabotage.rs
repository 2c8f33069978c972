//! Deliberate bugs in the host, for the simulator to find (built only with
//! the `sabotage` feature, which the node never enables). Each is switched
//! on for the current thread only, so simulated runs side by side do not
//! see each other's.

use std::cell::Cell;

/// A bug the host can be made to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// Never write the signing record (a restarted validator forgets what
    /// it signed).
    SkipSignRecord,
    /// Send a vote before its signing record is durable (a crash in
    /// between loses the record of a vote that left).
    VoteBeforeRecord,
    /// Take every proposed block as valid.
    AcceptAnyBlock,
    /// Commit a block from a peer without checking that its certificate
    /// proves that block.
    CommitUncheckedCertificate,
    /// No catch-up exchange: decisions are not told, a stuck round is not
    /// repaired point to point (only block sync and timeouts remain).
    NoCatchup,
    /// Consensus runs every height with the genesis set, whatever the
    /// chain's validator-set changes made it.
    GenesisSetForever,
}

thread_local! {
    static ACTIVE: Cell<Option<Sabotage>> = const { Cell::new(None) };
}

/// Switches `sabotage` on (or every sabotage off) for this thread.
pub fn set(sabotage: Option<Sabotage>) {
    ACTIVE.with(|a| a.set(sabotage));
}

/// Whether `sabotage` is on for this thread.
pub(crate) fn active(sabotage: Sabotage) -> bool {
    ACTIVE.with(|a| a.get()) == Some(sabotage)
}

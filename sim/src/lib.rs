//! Deterministic simulation of whole Tally clusters under faults.
//!
//! # Design
//! One thread runs n validators built from the real `tally-consensus`
//! state machine, `tally-mempool` and `tally-ledger` over the in-memory
//! store, connected by a simulated network and driven by a simulated clock.
//! A single seeded generator decides everything: the cluster size, the fault
//! rates of the run (swarm testing), every delay, drop, crash, partition,
//! Byzantine lie and client transaction. The same seed therefore replays
//! the same history, event for event; the trace digest proves it.
//!
//! # Guarantees
//! Checked continuously; the first violation stops the run and is reported
//! with the seed that replays it:
//! - agreement: no two honest nodes commit different blocks at a height;
//! - every commit certificate carries 2f+1 valid validator signatures for
//!   its block;
//! - every committed transaction is valid, committed once, nonces per sender
//!   strictly sequential, invalid-by-construction transactions never commit;
//! - the total supply is conserved;
//! - no honest validator signs two conflicting messages, restarts included;
//! - an honest node that counts two different votes of one validator for
//!   the same slot records evidence;
//! - once the faults stop (at most f Byzantine validators remain) every
//!   honest node commits new blocks within a bounded simulated time.
//!
//! # Not guaranteed
//! - The network and storage layers themselves (libp2p, RocksDB) are not
//!   simulated: the shell here stands in for the node's driver, sync and
//!   gossip; the end-to-end tests cover the real ones.

mod checker;
mod cluster;
mod profile;

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use cluster::LIVENESS_MS;
pub use profile::{FaultSet, Lie, Profile};

/// A deliberate bug in the simulated node, to show that the invariants
/// catch it (used by the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// Validators lose their signing records on restart.
    ForgetSignState,
    /// Validators accept every proposed block as valid.
    AcceptAnyBlock,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The seed: it decides everything else.
    pub seed: u64,
    /// Cluster size; `None` lets the seed choose 4, 7 or 10.
    pub validators: Option<usize>,
    /// Fault classes the seed may draw from.
    pub faults: FaultSet,
    /// Keep a human-readable trace.
    pub trace: bool,
    /// A deliberate bug, for testing the checker.
    pub sabotage: Option<Sabotage>,
}

impl Options {
    /// All faults, size chosen by the seed, no trace.
    pub fn seed(seed: u64) -> Options {
        Options {
            seed,
            validators: None,
            faults: FaultSet::ALL,
            trace: false,
            sabotage: None,
        }
    }

    /// The command that replays this run with its trace.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!("cargo run -p tally-sim --release -- --seed {}", self.seed);
        if let Some(n) = self.validators {
            cmd.push_str(&format!(" --validators {n}"));
        }
        if self.faults != FaultSet::ALL {
            cmd.push_str(&format!(" --faults {}", self.faults.to_arg()));
        }
        cmd
    }
}

/// Counters of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Messages delivered.
    pub delivered: u64,
    /// Messages lost (drops, partitions, and gossip that waited too long
    /// for a paused peer).
    pub dropped: u64,
    /// Gossip messages a node had seen already (suppressed).
    pub duplicates: u64,
    /// Publishes gossip refused because the sender had seen the bytes.
    pub refused_republish: u64,
    /// Messages that did not decode (garbage).
    pub undecodable: u64,
    /// Crashes.
    pub crashes: u64,
    /// Partitions.
    pub partitions: u64,
    /// Pauses.
    pub pauses: u64,
    /// Client transactions submitted.
    pub submitted: u64,
    /// Client transactions admitted by the node they were sent to.
    pub admitted: u64,
    /// Client submissions to a node that was down.
    pub unavailable: u64,
    /// Evidence records made by any node.
    pub evidence: u64,
    /// Blocks committed through sync.
    pub synced_blocks: u64,
    /// Sync answers refused (forged or conflicting blocks).
    pub refused_sync: u64,
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Cluster size.
    pub validators: usize,
    /// Byzantine validators.
    pub byzantine: usize,
    /// blake3 over every event in order: equal digests, equal runs.
    pub digest: String,
    /// The first invariant broken, if any.
    pub violation: Option<String>,
    /// Height of the committed chain.
    pub height: u64,
    /// Transactions committed.
    pub txs: usize,
    /// Simulated time, ms.
    pub sim_ms: u64,
    /// Counters.
    pub stats: Stats,
    /// The trace (when asked for).
    pub trace: Vec<String>,
}

/// Runs one seed.
pub fn run(options: &Options) -> Outcome {
    cluster::Sim::new(options.clone()).run()
}

/// Runs `options` for each seed of `seeds` on `threads` threads, until the
/// seeds are done or `budget` has passed; `each` sees every outcome as it
/// arrives. Returns the outcomes in the order they finished.
pub fn run_batch(
    template: &Options,
    seeds: impl Iterator<Item = u64> + Send,
    threads: usize,
    budget: Option<Duration>,
    each: &(dyn Fn(&Outcome) + Sync),
) -> Vec<Outcome> {
    let started = Instant::now();
    let seeds = Mutex::new(seeds);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                if budget.is_some_and(|b| started.elapsed() > b) {
                    return;
                }
                let next = seeds.lock().map(|mut s| s.next()).unwrap_or(None);
                let Some(seed) = next else { return };
                let outcome = run(&Options {
                    seed,
                    ..template.clone()
                });
                each(&outcome);
                if let Ok(mut r) = results.lock() {
                    r.push(outcome);
                }
            });
        }
    });
    results.into_inner().unwrap_or_default()
}

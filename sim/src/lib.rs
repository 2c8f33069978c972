//! Deterministic simulation of whole Tally clusters under faults.
//!
//! # Design
//! One thread runs n validators, each the production host
//! (`tally_host::Host`: consensus, the one commit path, the signing
//! records, the catch-up exchange and block sync) over the in-memory store,
//! connected by a simulated network and driven by a simulated clock. The
//! simulator supplies only the world — [`world`] (the event loop and each
//! node's process), [`network`] (links, gossip with gossipsub's duplicate
//! suppression, requests, bans), [`faults`], [`workload`] (clients) and
//! [`byzantine`] (one file per lie) — and the [`checker`]. It holds no copy
//! of the host's logic. A single seeded generator decides everything: the
//! cluster size, the fault rates of the run (swarm testing), every delay,
//! drop, crash, partition, Byzantine lie and client transaction. The same
//! seed therefore replays the same history, event for event; the trace
//! digest proves it.
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
//!   honest node commits new blocks within a bounded simulated time;
//! - with validator-set changes: every certificate is valid for the set of
//!   its height, every honest node's validator state after each block is
//!   the reference chain's, and every completed change keeps the guard
//!   (checked here on its own from the sets before and after).
//!
//! # Not guaranteed
//! - libp2p and RocksDB themselves are not simulated: the network here has
//!   gossipsub's duplicate suppression and its queue's patience with a peer
//!   that does not read, but not its mesh; the end-to-end tests cover the
//!   real ones.

pub mod byzantine;
mod changes;
pub mod checker;
pub mod faults;
pub mod network;
mod node_world;
mod profile;
pub mod workload;
pub mod world;

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use profile::{FaultSet, Lie, Profile};
pub use tally_host::Sabotage;
pub use world::LIVENESS_MS;

/// A fixed fault schedule instead of the seed's: each validator in turn is
/// paused for `pause_ms`, `rounds` times over, one at a time with a healthy
/// network, so that the longest stall while one is silent can be measured
/// ([`Outcome::longest_gap_while_paused_ms`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    /// How long each pause lasts, ms.
    pub pause_ms: u64,
    /// Time from one pause's end to the next one's start, ms: the paused
    /// validator has that long to catch up before another goes silent.
    pub between_ms: u64,
    /// How many times each validator is paused.
    pub rounds: u64,
}

impl Scenario {
    /// Simulated time before the first pause (the chain gets going).
    fn first_at_ms(&self) -> u64 {
        3_000
    }

    /// Time from one pause's start to the next.
    fn every_ms(&self) -> u64 {
        self.pause_ms + self.between_ms
    }

    fn pauses(&self, validators: usize) -> u64 {
        self.rounds * validators as u64
    }

    /// When the scenario is over.
    fn length_ms(&self, validators: usize) -> u64 {
        self.first_at_ms() + self.pauses(validators) * self.every_ms() + 1_000
    }
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
    /// A deliberate bug in the host, to show the checker finds it.
    pub sabotage: Option<Sabotage>,
    /// A fixed fault schedule (with `faults` drawn as usual for the rest;
    /// use [`FaultSet::NONE`] for a healthy network around it).
    pub scenario: Option<Scenario>,
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
            scenario: None,
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
    /// Messages lost (drops, partitions, bans, and gossip that waited too
    /// long for a paused peer).
    pub dropped: u64,
    /// Gossip messages a node had seen already (suppressed).
    pub duplicates: u64,
    /// Publishes gossip refused because the sender had seen the bytes.
    pub refused_republish: u64,
    /// Messages refused by the network intake (garbage, bad signatures).
    pub undecodable: u64,
    /// Crashes.
    pub crashes: u64,
    /// Spells of a failing disk (records and blocks not written).
    pub disk_failures: u64,
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
    /// Offences recorded on chain (in the blocks of the longest honest
    /// chain at the end).
    pub evidence_on_chain: u64,
    /// Blocks committed through sync.
    pub synced_blocks: u64,
    /// Peers banned by a host (forged or conflicting blocks, bad answers).
    pub refused_sync: u64,
    /// Validator-set changes the operators voted for.
    pub changes_proposed: u64,
    /// Validator-set changes completed on chain.
    pub changes_completed: u64,
    /// Nodes restarted with a rotated key.
    pub rotations_applied: u64,
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
    /// With a [`Scenario`]: the longest simulated time between two heights'
    /// first commits that overlaps a pause.
    pub longest_gap_while_paused_ms: Option<u64>,
}

/// Runs one seed.
pub fn run(options: &Options) -> Outcome {
    world::Sim::new(options.clone()).run()
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

//! What a seed decides before the run starts: the cluster's size and the
//! fault rates of this run (swarm testing: each seed stresses a different
//! mix, so that rare combinations are reached without tuning).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Fault classes a run may draw from (`--faults`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultSet {
    /// Delay, jitter, drops, duplicates, reordering and partitions.
    pub network: bool,
    /// Crashes (losing what was not durable) and restarts.
    pub crash: bool,
    /// Paused processes (messages and timers wait).
    pub pause: bool,
    /// Clock offsets and timer drift.
    pub skew: bool,
    /// Up to f Byzantine validators.
    pub byzantine: bool,
    /// Invalid client transactions besides valid ones.
    pub bad_clients: bool,
    /// Validator-set changes by vote (adds of spare nodes, removals, power
    /// changes, key rotations), from a generator of their own.
    pub changes: bool,
}

impl FaultSet {
    /// Every class.
    pub const ALL: FaultSet = FaultSet {
        network: true,
        crash: true,
        pause: true,
        skew: true,
        byzantine: true,
        bad_clients: true,
        changes: true,
    };

    /// Every class but validator-set changes: what every run drew from
    /// before changes existed (the seeds recorded then replay their
    /// histories with it).
    pub const BEFORE_CHANGES: FaultSet = FaultSet {
        changes: false,
        ..FaultSet::ALL
    };

    /// No faults: a healthy cluster with honest clients.
    pub const NONE: FaultSet = FaultSet {
        network: false,
        crash: false,
        pause: false,
        skew: false,
        byzantine: false,
        bad_clients: false,
        changes: false,
    };

    /// Parses `all`, `none`, or a comma-separated list of
    /// `network,crash,pause,skew,byzantine,clients,changes`.
    pub fn parse(text: &str) -> Result<FaultSet, String> {
        let mut set = FaultSet::NONE;
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "all" => set = FaultSet::ALL,
                "none" => {}
                "network" => set.network = true,
                "crash" => set.crash = true,
                "pause" => set.pause = true,
                "skew" => set.skew = true,
                "byzantine" => set.byzantine = true,
                "clients" => set.bad_clients = true,
                "changes" => set.changes = true,
                other => {
                    return Err(format!(
                        "unknown fault class {other:?}: use all, none, or a list of \
                         network,crash,pause,skew,byzantine,clients,changes"
                    ))
                }
            }
        }
        Ok(set)
    }

    /// The canonical text of this set (what `parse` reads back).
    pub fn to_arg(&self) -> String {
        if *self == FaultSet::ALL {
            return "all".into();
        }
        let names = [
            (self.network, "network"),
            (self.crash, "crash"),
            (self.pause, "pause"),
            (self.skew, "skew"),
            (self.byzantine, "byzantine"),
            (self.bad_clients, "clients"),
            (self.changes, "changes"),
        ];
        let on: Vec<&str> = names.iter().filter(|(b, _)| *b).map(|(_, n)| *n).collect();
        if on.is_empty() {
            "none".into()
        } else {
            on.join(",")
        }
    }
}

/// The ways a Byzantine validator misbehaves; each one gets a random subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lie {
    /// Different proposals and votes to different halves of the cluster.
    Equivocate,
    /// Votes for blocks that were never proposed.
    UnknownBlockVotes,
    /// Proposals of invalid blocks; forged blocks in sync answers.
    InvalidBlocks,
    /// Drops most of its own messages.
    Withhold,
    /// Signed votes for far-future and past heights.
    WrongHeights,
    /// Random bytes on every channel.
    Garbage,
}

const LIES: [Lie; 6] = [
    Lie::Equivocate,
    Lie::UnknownBlockVotes,
    Lie::InvalidBlocks,
    Lie::Withhold,
    Lie::WrongHeights,
    Lie::Garbage,
];

/// Everything the seed fixed for one run.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Validators in the cluster.
    pub validators: usize,
    /// Length of the faulty phase, simulated ms.
    pub fault_ms: u64,
    /// Smallest one-way message delay, ms.
    pub delay_ms: u64,
    /// Extra random delay up to this, ms (reorders messages).
    pub jitter_ms: u64,
    /// Chance a message is lost (fault phase only).
    pub drop: f64,
    /// Chance a message is delivered twice (fault phase only).
    pub duplicate: f64,
    /// Mean time between injected faults (partitions, crashes, pauses), ms.
    pub fault_every_ms: u64,
    /// Per node: clock offset (ms) used for block timestamps.
    pub clock_offset_ms: Vec<i64>,
    /// Per node: timer rate in permille (1000 = exact).
    pub timer_permille: Vec<u64>,
    /// Byzantine validators (indices) with their lies.
    pub byzantine: Vec<(usize, Vec<Lie>)>,
    /// Client transactions per simulated second.
    pub tx_per_s: u64,
    /// Share of client transactions that are invalid on purpose.
    pub invalid_share: f64,
    /// How long a proposer without transactions waits before proposing an
    /// empty block, ms.
    pub empty_block_ms: u64,
}

impl Profile {
    /// Draws a profile from the seed's generator. `validators` overrides the
    /// cluster size (otherwise 4, 7 or 10).
    pub fn draw(rng: &mut ChaCha8Rng, validators: Option<usize>, faults: FaultSet) -> Profile {
        let validators = validators.unwrap_or_else(|| [4, 4, 4, 7, 7, 10][rng.gen_range(0..6)]);
        let f = (validators - 1) / 3;
        let net = faults.network;
        let delay_ms = rng.gen_range(1..=30);
        let jitter_ms = if net { rng.gen_range(0..=300) } else { 5 };
        let drop = if net { rng.gen_range(0.0..0.25) } else { 0.0 };
        let duplicate = if net { rng.gen_range(0.0..0.1) } else { 0.0 };
        let clock_offset_ms = (0..validators)
            .map(|_| match faults.skew {
                true => rng.gen_range(-3_000..=3_000),
                false => 0,
            })
            .collect();
        let timer_permille = (0..validators)
            .map(|_| match faults.skew {
                true => rng.gen_range(800..=1_250),
                false => 1_000,
            })
            .collect();
        let mut byzantine = Vec::new();
        if faults.byzantine {
            let count = rng.gen_range(0..=f);
            let mut chosen: Vec<usize> = (0..validators).collect();
            for i in 0..count {
                let j = rng.gen_range(i..validators);
                chosen.swap(i, j);
                let lies: Vec<Lie> = LIES.iter().copied().filter(|_| rng.gen_bool(0.5)).collect();
                let lies = match lies.is_empty() {
                    true => vec![LIES[rng.gen_range(0..LIES.len())]],
                    false => lies,
                };
                byzantine.push((chosen[i], lies));
            }
            byzantine.sort();
        }
        Profile {
            validators,
            fault_ms: rng.gen_range(5_000..=20_000),
            delay_ms,
            jitter_ms,
            drop,
            duplicate,
            fault_every_ms: rng.gen_range(300..=3_000),
            clock_offset_ms,
            timer_permille,
            byzantine,
            tx_per_s: rng.gen_range(5..=60),
            invalid_share: if faults.bad_clients {
                rng.gen_range(0.05..0.5)
            } else {
                0.0
            },
            empty_block_ms: rng.gen_range(100..=1_000),
        }
    }

    /// The lies of validator `i`, if it is Byzantine.
    pub fn lies_of(&self, i: usize) -> Option<&[Lie]> {
        self.byzantine
            .iter()
            .find(|(j, _)| *j == i)
            .map(|(_, lies)| lies.as_slice())
    }
}

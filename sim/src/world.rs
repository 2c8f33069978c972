//! The simulated world: n nodes, each the production host
//! (`tally_host::Host`) over an in-memory store, on one simulated clock and
//! one event queue, driven by one seeded generator. The world supplies only
//! what the host's traits ask for (time, timers, the network, durable
//! records) and the faults; the checker watches.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tally_consensus::{Config, SignState, ValidBlockRecord};
use tally_host::edge::{ConsensusIntake, TransactionIntake};
use tally_host::{Chain, Host, HostConfig, Recovered, RequestId, Timer};
use tally_ledger::{
    devnet_key, Address, ChainContext, ChainId, Genesis, GenesisBalance, GenesisValidator, Keypair,
    Params, SignedVote,
};
use tally_mempool::Mempool;
use tally_store::MemoryStore;

use crate::checker::{Checker, VoteSlot};
use crate::network::SeenCache;
use crate::node_world::{node_store, CommitEvents, Commits, Effect, NodeWorld};
use crate::profile::{Lie, Profile};
use crate::{Options, Outcome, Stats};

/// After the faults stop, every honest node must commit this many new
/// blocks within [`LIVENESS_MS`].
pub(crate) const LIVENESS_BLOCKS: u64 = 2;
/// The bound on recovery once the faults stop, simulated ms.
pub const LIVENESS_MS: u64 = 60_000;
/// Largest message a node decodes.
pub(crate) const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// Funded client accounts.
pub(crate) const CLIENTS: usize = 8;

/// What travels between nodes.
#[derive(Debug, Clone)]
pub(crate) enum Msg {
    /// Gossip on a topic (duplicates suppressed by content).
    Gossip(Topic, Vec<u8>),
    /// A request, point to point.
    Request { id: RequestId, bytes: Vec<u8> },
    /// Its answer.
    Response { id: RequestId, bytes: Vec<u8> },
}

/// The two gossip topics, as the node has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topic {
    /// Proposals and votes.
    Consensus,
    /// Batches of transactions.
    Transactions,
}

#[derive(Debug, Clone)]
pub(crate) enum Event {
    Deliver {
        to: usize,
        from: usize,
        msg: Msg,
        sent_at: u64,
    },
    Timer {
        node: usize,
        epoch: u64,
        timer: Timer,
    },
    Client,
    Fault,
    Restart {
        node: usize,
    },
    Heal {
        partition: u64,
    },
    DiskRecovers {
        node: usize,
    },
    /// The scenario's next pause.
    ScenarioPause {
        index: u64,
    },
    /// Operators may vote for a validator-set change.
    ProposeChange,
    /// Operators tend their validators (restarts after a key rotation).
    TendValidators,
    EndFaults,
    Deadline,
}

struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed: the heap pops the earliest event, ties in scheduling order.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// What survives a node's crash besides its store.
#[derive(Debug, Clone, Default)]
pub(crate) struct Durable {
    pub(crate) sign_state: Option<SignState>,
    pub(crate) valid_block: Option<ValidBlockRecord>,
}

pub(crate) struct SimNode {
    pub(crate) key: Keypair,
    pub(crate) address: Address,
    pub(crate) lies: Option<Vec<Lie>>,
    pub(crate) store: Arc<MemoryStore>,
    pub(crate) dead: Arc<AtomicBool>,
    /// While set, the node's records and blocks fail to write.
    pub(crate) disk_failing: Arc<AtomicBool>,
    pub(crate) durable: Durable,
    /// The running process: its host (none while down).
    pub(crate) host: Option<Host<NodeWorld>>,
    pub(crate) chain: Arc<Chain>,
    pub(crate) commits: Arc<Commits>,
    pub(crate) consensus_intake: ConsensusIntake,
    pub(crate) tx_intake: TransactionIntake,
    pub(crate) gossip_seen: SeenCache,
    pub(crate) up: bool,
    pub(crate) paused_until: u64,
    /// Bumped by crashes: timers of a dead process never fire.
    pub(crate) epoch: u64,
    /// Crash in the middle of the next call into the host.
    pub(crate) crash_pending: bool,
    /// Votes this process counted, for the evidence check.
    pub(crate) seen: BTreeMap<VoteSlot, SignedVote>,
    /// Peers this node banned, until when (simulated ms).
    pub(crate) banned: BTreeMap<usize, u64>,
    /// Invalid gossip each peer sent it.
    pub(crate) strikes: BTreeMap<usize, u32>,
    /// Blocks it committed through sync, and evidence it recorded, over
    /// its past lives.
    pub(crate) synced_before: u64,
    pub(crate) evidence_before: u64,
}

/// The whole simulated world.
pub struct Sim {
    pub(crate) opts: Options,
    pub(crate) profile: Profile,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) chain: ChainContext,
    pub(crate) config: HostConfig,
    pub(crate) nodes: Vec<SimNode>,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    pub(crate) now: u64,
    start_ms: u64,
    pub(crate) partitions: BTreeMap<u64, Vec<(usize, usize)>>,
    pub(crate) next_partition: u64,
    pub(crate) faulty: bool,
    /// After the faults stop: the height every honest node must reach.
    pub(crate) target: Option<u64>,
    pub(crate) done: bool,
    pub(crate) checker: Checker,
    digest: blake3::Hasher,
    pub(crate) trace: Vec<String>,
    pub(crate) stats: Stats,
    pub(crate) clients: Vec<Keypair>,
    pub(crate) recent: std::collections::VecDeque<Vec<u8>>,
    /// When each height was first committed by an honest node (sim ms).
    pub(crate) first_commits: Vec<(u64, u64)>,
    /// The scenario's pauses: node, start, end (sim ms).
    pub(crate) pause_windows: Vec<(usize, u64, u64)>,
    /// Validator-set changes draw from this generator, not the run's.
    pub(crate) change_rng: ChaCha8Rng,
    /// Key rotations voted for, until the node restarts with its new key.
    pub(crate) rotations: Vec<crate::changes::Rotation>,
    /// New keys of rotations being voted for, by address.
    pub(crate) rotation_keys: BTreeMap<Address, Keypair>,
    pub(crate) next_rotation: u64,
}

/// The host's settings in the simulation: the node's, with shorter
/// consensus timeouts so that a run covers many heights.
fn host_config(profile: &Profile) -> HostConfig {
    HostConfig {
        consensus: Config {
            propose_timeout_ms: 1_000,
            prevote_timeout_ms: 500,
            precommit_timeout_ms: 500,
            timeout_delta_ms: 250,
            max_timeout_ms: 8_000,
            ..Config::default()
        },
        empty_block_interval_ms: Some(profile.empty_block_ms),
        sync_batch_blocks: 16,
        max_response_bytes: MAX_MESSAGE_BYTES,
        ..HostConfig::default()
    }
}

pub(crate) fn client_key(i: usize) -> Keypair {
    let seed = blake3::hash(format!("tally/sim/client/{i}").as_bytes());
    Keypair::from_seed(*seed.as_bytes())
}

fn genesis(validators: usize) -> Genesis {
    Genesis {
        chain_id: ChainId::new("tally-sim").unwrap_or_else(|_| unreachable!()),
        genesis_time_ms: tally_ledger::devnet::DEVNET_GENESIS_TIME_MS,
        params: Params {
            max_block_txs: 200,
            ..Params::default()
        },
        validators: (0..validators)
            .map(|i| {
                let name = tally_ledger::devnet::validator_name(i);
                GenesisValidator {
                    address: devnet_key(&name).address(),
                    name,
                    power: 1,
                }
            })
            .collect(),
        balances: (0..CLIENTS)
            .map(|i| GenesisBalance {
                address: client_key(i).address(),
                amount: 1_000_000_000,
            })
            .collect(),
    }
}

impl SimNode {
    fn new(chain: &ChainContext, key: Keypair, lies: Option<Vec<Lie>>) -> SimNode {
        let dead = Arc::new(AtomicBool::new(false));
        let disk_failing = Arc::new(AtomicBool::new(false));
        let store = Arc::new(node_store(chain, dead.clone(), disk_failing.clone()));
        let commits = Arc::new(Commits::default());
        let node_chain = new_chain(chain, &store, &commits);
        let tx_intake = TransactionIntake::new(chain.clone(), node_chain.checked().clone());
        let view = node_chain.validators().clone();
        SimNode {
            address: key.address(),
            key,
            lies,
            store,
            dead,
            disk_failing,
            durable: Durable::default(),
            host: None,
            chain: node_chain,
            commits,
            consensus_intake: ConsensusIntake::new(chain.clone(), view, MAX_MESSAGE_BYTES),
            tx_intake,
            gossip_seen: SeenCache::default(),
            up: false,
            paused_until: 0,
            epoch: 0,
            crash_pending: false,
            seen: BTreeMap::new(),
            banned: BTreeMap::new(),
            strikes: BTreeMap::new(),
            synced_before: 0,
            evidence_before: 0,
        }
    }
}

/// A fresh process's chain over the node's durable store.
fn new_chain(
    context: &ChainContext,
    store: &Arc<MemoryStore>,
    commits: &Arc<Commits>,
) -> Arc<Chain> {
    Arc::new(Chain::new(
        context.clone(),
        store.clone(),
        Mempool::new(tally_mempool::Config::default()),
        10_000,
        Box::new(CommitEvents(commits.clone())),
    ))
}

impl Sim {
    /// Lays out the cluster the seed describes.
    pub fn new(opts: Options) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let mut profile = Profile::draw(&mut rng, opts.validators, opts.faults);
        let chain = ChainContext::new(genesis(profile.validators));
        // Spare nodes (full nodes a change may add) only with changes: a
        // run without them draws exactly what it drew before.
        let spares = match opts.faults.changes {
            true => crate::changes::SPARES,
            false => 0,
        };
        profile
            .clock_offset_ms
            .extend(std::iter::repeat_n(0, spares));
        profile
            .timer_permille
            .extend(std::iter::repeat_n(1_000, spares));
        let nodes = (0..profile.validators + spares)
            .map(|i| {
                let key = devnet_key(&tally_ledger::devnet::validator_name(i));
                SimNode::new(&chain, key, profile.lies_of(i).map(<[Lie]>::to_vec))
            })
            .collect();
        let change_rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x7a11_c4a9_6e5e_7000);
        let checker = Checker::new(&chain);
        let start_ms = chain.genesis.genesis_time_ms + 1_000;
        Sim {
            config: host_config(&profile),
            opts,
            profile,
            rng,
            nodes,
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0,
            start_ms,
            partitions: BTreeMap::new(),
            next_partition: 0,
            faulty: true,
            target: None,
            done: false,
            checker,
            chain,
            digest: blake3::Hasher::new(),
            trace: Vec::new(),
            stats: Stats::default(),
            clients: (0..CLIENTS).map(client_key).collect(),
            recent: std::collections::VecDeque::new(),
            first_commits: Vec::new(),
            pause_windows: Vec::new(),
            change_rng,
            rotations: Vec::new(),
            rotation_keys: BTreeMap::new(),
            next_rotation: 0,
        }
    }

    /// Runs to the end: every honest node recovered after the faults, or a
    /// violation.
    pub fn run(mut self) -> Outcome {
        tally_host::sabotage::set(self.opts.sabotage);
        let p = self.profile.clone();
        self.log(format!(
            "seed {} validators {} byzantine {:?} fault phase {} ms delay {}+{} ms drop {:.3} dup {:.3} \
             fault every {} ms tx/s {} invalid {:.2} clock {:?} timers {:?}",
            self.opts.seed, p.validators, p.byzantine, p.fault_ms, p.delay_ms, p.jitter_ms, p.drop,
            p.duplicate, p.fault_every_ms, p.tx_per_s, p.invalid_share, p.clock_offset_ms,
            p.timer_permille
        ));
        for i in 0..self.nodes.len() {
            self.boot(i);
        }
        self.schedule(0, Event::Client);
        let f = self.opts.faults;
        if f.network || f.crash || f.pause {
            let first = self.rng.gen_range(0..p.fault_every_ms);
            self.schedule(first, Event::Fault);
        }
        let fault_ms = match self.opts.scenario {
            Some(scenario) => {
                self.schedule(scenario.first_at_ms(), Event::ScenarioPause { index: 0 });
                scenario.length_ms(self.nodes.len())
            }
            None => p.fault_ms,
        };
        self.schedule(fault_ms, Event::EndFaults);
        if f.changes {
            let first = self.change_rng.gen_range(1_000..=3_000);
            self.schedule(first, Event::ProposeChange);
            self.schedule(500, Event::TendValidators);
        }
        while let Some(next) = self.queue.pop() {
            self.now = next.at;
            self.note_event(&next);
            self.handle(next.event);
            if self.done || self.checker.violation.is_some() {
                break;
            }
        }
        if let Some(v) = &self.checker.violation {
            let line = format!("t={}ms VIOLATION: {v}", self.now);
            self.trace.push(line);
        }
        tally_host::sabotage::set(None);
        self.stats.synced_blocks = self
            .nodes
            .iter()
            .map(|n| n.synced_before + n.host.as_ref().map_or(0, |h| h.synced_blocks()))
            .sum();
        self.stats.evidence = self
            .nodes
            .iter()
            .map(|n| n.evidence_before + n.chain.evidence_kept())
            .sum();
        self.stats.evidence_on_chain = (0..self.nodes.len())
            .filter(|i| self.honest(*i))
            .map(|i| {
                let store = self.nodes[i].chain.store();
                store
                    .evidence_from(1, usize::MAX)
                    .map_or(0, |e| e.len() as u64)
            })
            .max()
            .unwrap_or(0);
        self.stats.changes_completed = self.checker.completed_changes();
        let longest_gap_ms = self.longest_gap_while_paused();
        Outcome {
            seed: self.opts.seed,
            validators: p.validators,
            byzantine: p.byzantine.len(),
            digest: self.digest.finalize().to_hex().to_string(),
            violation: self.checker.violation.take(),
            height: self.checker.height(),
            txs: self.checker.committed_txs(),
            sim_ms: self.now,
            stats: self.stats,
            trace: self.trace,
            longest_gap_while_paused_ms: longest_gap_ms,
        }
    }

    pub(crate) fn log(&mut self, line: String) {
        self.digest.update(line.as_bytes());
        if self.opts.trace {
            self.trace.push(format!("t={}ms {line}", self.now));
        }
    }

    fn note_event(&mut self, s: &Scheduled) {
        self.digest.update(&s.at.to_le_bytes());
        self.digest.update(&s.seq.to_le_bytes());
        let (kind, a, b): (u8, usize, usize) = match &s.event {
            Event::Deliver { to, from, msg, .. } => {
                let bytes: &[u8] = match msg {
                    Msg::Gossip(_, b) => b,
                    Msg::Request { bytes, .. } | Msg::Response { bytes, .. } => bytes,
                };
                self.digest.update(blake3::hash(bytes).as_bytes());
                (0, *to, *from)
            }
            Event::Timer { node, .. } => (1, *node, 0),
            Event::Client => (4, 0, 0),
            Event::Fault => (5, 0, 0),
            Event::Restart { node } => (6, *node, 0),
            Event::Heal { partition } => (7, *partition as usize, 0),
            Event::DiskRecovers { node } => (11, *node, 0),
            Event::ScenarioPause { index } => (10, *index as usize, 0),
            Event::ProposeChange => (12, 0, 0),
            Event::TendValidators => (13, 0, 0),
            Event::EndFaults => (8, 0, 0),
            Event::Deadline => (9, 0, 0),
        };
        self.digest.update(&[kind, a as u8, b as u8]);
    }

    pub(crate) fn schedule(&mut self, after_ms: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at: self.now + after_ms,
            seq: self.seq,
            event,
        });
    }

    /// Node `i`'s wall clock: simulated time plus its offset.
    pub(crate) fn local_now(&self, i: usize) -> u64 {
        let t = (self.start_ms + self.now) as i64 + self.profile.clock_offset_ms[i];
        t.max(0) as u64
    }

    pub(crate) fn honest(&self, i: usize) -> bool {
        self.nodes[i].lies.is_none()
    }

    fn handle(&mut self, event: Event) {
        // A paused process handles nothing until it resumes; its messages
        // and timers wait, in order.
        let paused_node = match &event {
            Event::Deliver { to, .. } => Some(*to),
            Event::Timer { node, .. } => Some(*node),
            _ => None,
        };
        if let Some(i) = paused_node {
            if self.nodes[i].paused_until > self.now {
                let wait = self.nodes[i].paused_until - self.now;
                self.schedule(wait, event);
                return;
            }
        }
        match event {
            Event::Deliver {
                to,
                from,
                msg,
                sent_at,
            } => self.deliver(to, from, msg, sent_at),
            Event::Timer { node, epoch, timer } => {
                if self.alive(node, epoch) {
                    if self.opts.trace && node == 0 && timer == Timer::Tick {
                        // Where everyone is, four times a second; not part
                        // of the digest (tracing must not change the run).
                        let line = format!("t={}ms states: {}", self.now, self.describe_nodes());
                        self.trace.push(line);
                    }
                    self.with_host(node, |h| h.on_timer(timer));
                }
            }
            Event::Client => {
                self.client();
                let mean = 1_000 / self.profile.tx_per_s.max(1);
                let next = self.rng.gen_range(1..=2 * mean.max(1));
                self.schedule(next, Event::Client);
            }
            Event::Fault => {
                if self.faulty {
                    self.inject_fault();
                    let every = self.profile.fault_every_ms;
                    let next = self.rng.gen_range(every / 2..=every * 3 / 2);
                    self.schedule(next, Event::Fault);
                }
            }
            Event::Restart { node } => {
                if !self.nodes[node].up {
                    self.boot(node);
                }
            }
            Event::Heal { partition } => {
                if self.partitions.remove(&partition).is_some() {
                    self.log(format!("partition {partition} healed"));
                }
            }
            Event::ScenarioPause { index } => self.scenario_pause(index),
            Event::ProposeChange => {
                if self.faulty {
                    self.propose_change();
                    let next = self.change_rng.gen_range(1_500..=4_000);
                    self.schedule(next, Event::ProposeChange);
                }
            }
            Event::TendValidators => {
                self.tend_validators();
                if !self.done {
                    self.schedule(500, Event::TendValidators);
                }
            }
            Event::DiskRecovers { node } => {
                self.nodes[node]
                    .disk_failing
                    .store(false, Ordering::Relaxed);
                self.log(format!("node {node}: disk recovered"));
            }
            Event::EndFaults => self.end_faults(),
            Event::Deadline => {
                if !self.done {
                    let states = self.describe_nodes();
                    let v = format!(
                        "liveness: {LIVENESS_MS} ms after the faults stopped, not every honest node \
                         reached height {} ({states})",
                        self.target.unwrap_or(0),
                    );
                    self.checker.violate(v);
                }
            }
        }
    }

    fn describe_nodes(&self) -> String {
        let states: Vec<String> = (0..self.nodes.len())
            .map(|i| {
                let node = &self.nodes[i];
                let tip = node.chain.tip_height();
                match &node.host {
                    Some(host) => {
                        let m = host.consensus();
                        let record = node
                            .durable
                            .sign_state
                            .as_ref()
                            .map(|s| (s.height, s.round, s.step, s.locked.map(|l| l.0)));
                        let power = |kind| m.votes().total(m.round(), kind);
                        format!(
                            "node {i}: tip {tip} at {}/{}/{:?} locked {:?} signed {record:?} \
                             prevotes {} precommits {}",
                            m.height(),
                            m.round(),
                            m.step(),
                            m.locked().map(|l| l.0),
                            power(tally_ledger::VoteKind::Prevote),
                            power(tally_ledger::VoteKind::Precommit)
                        )
                    }
                    None => format!("node {i}: down at tip {tip}"),
                }
            })
            .collect();
        states.join("; ")
    }

    fn alive(&self, i: usize, epoch: u64) -> bool {
        self.nodes[i].up && self.nodes[i].epoch == epoch
    }

    /// Starts node `i`'s process: a fresh chain (mempool) over its store,
    /// a host resuming from its durable records.
    pub(crate) fn boot(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.dead.store(false, Ordering::Relaxed);
        node.chain = new_chain(&self.chain, &node.store, &node.commits);
        node.consensus_intake = ConsensusIntake::new(
            self.chain.clone(),
            node.chain.validators().clone(),
            MAX_MESSAGE_BYTES,
        );
        node.tx_intake = TransactionIntake::new(self.chain.clone(), node.chain.checked().clone());
        node.gossip_seen = SeenCache::default();
        node.seen.clear();
        node.strikes.clear();
        node.up = true;
        node.paused_until = 0;
        let recovered = Recovered {
            sign_state: node.durable.sign_state.clone(),
            valid_block: node.durable.valid_block.clone(),
        };
        let world = NodeWorld::new(node.dead.clone(), node.disk_failing.clone());
        node.host = Some(Host::new(
            self.config.clone(),
            node.chain.clone(),
            world,
            Some(node.key.clone()),
            recovered,
        ));
        let tip = node.chain.tip_height();
        self.log(format!("node {i} started at tip {tip}"));
        self.with_host(i, Host::start);
    }

    /// The peers node `i` is connected to: up, and neither side banned the
    /// other.
    fn peers_of(&self, i: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&j| j != i && self.nodes[j].up && !self.is_banned(i, j))
            .collect()
    }

    /// Calls into node `i`'s host (if it is up), then carries out what it
    /// did; a crash due in this call strikes partway through its effects.
    pub(crate) fn with_host<T>(
        &mut self,
        i: usize,
        call: impl FnOnce(&mut Host<NodeWorld>) -> T,
    ) -> Option<T> {
        self.nodes[i].host.as_ref()?;
        // The host's log lines (`tally-sim --seed N --log ...`) name the
        // node and the simulated time.
        let _span = tracing::info_span!("node", i, t = self.now).entered();
        let now = self.local_now(i);
        let peers = self.peers_of(i);
        let crash_after = match self.nodes[i].crash_pending {
            true => {
                self.nodes[i].crash_pending = false;
                Some(self.rng.gen_range(0..=24))
            }
            false => None,
        };
        let host = self.nodes[i].host.as_mut()?;
        let world = host.world_mut();
        world.now_ms = now;
        world.peers = peers;
        if crash_after.is_some() {
            world.crash_after = crash_after;
        }
        let result = call(host);
        let effects = std::mem::take(&mut host.world_mut().effects);
        let dead = host.world().is_dead();
        let stopped = host.is_stopped() && !dead;
        for effect in effects {
            self.apply(i, effect);
        }
        self.take_commits(i);
        if stopped && self.honest(i) {
            let why = self.nodes[i].chain.failure().unwrap_or_default();
            self.checker.violate(format!("node {i} stopped: {why}"));
        }
        if dead {
            self.crash(i);
        }
        Some(result)
    }

    fn apply(&mut self, i: usize, effect: Effect) {
        match effect {
            Effect::Publish(message) => self.publish(i, message),
            Effect::Request { to, id, request } => {
                // Own messages travel in catch-up requests too: what an
                // honest validator signs must never conflict, however it
                // leaves.
                if let tally_host::sync::SyncRequest::Catchup(c) = &request {
                    self.signed_in(i, &c.messages);
                }
                if let Ok(bytes) = borsh::to_vec(&request) {
                    self.send(i, to, Msg::Request { id, bytes });
                }
            }
            Effect::Ban { peer } => {
                self.stats.refused_sync += 1;
                self.ban(i, peer);
            }
            Effect::Timer { after_ms, timer } => {
                let after = after_ms * self.profile.timer_permille[i] / 1_000;
                let epoch = self.nodes[i].epoch;
                self.schedule(
                    after,
                    Event::Timer {
                        node: i,
                        epoch,
                        timer,
                    },
                );
            }
            Effect::SignState(record) => self.nodes[i].durable.sign_state = Some(record),
            Effect::ValidBlock(record) => self.nodes[i].durable.valid_block = Some(*record),
        }
    }

    /// Shows the checker what an honest node `i` sent of its own among
    /// `messages`.
    pub(crate) fn signed_in(&mut self, i: usize, messages: &[tally_ledger::ConsensusMessage]) {
        if !self.honest(i) {
            return;
        }
        let address = self.nodes[i].address;
        for message in messages {
            self.checker.on_signed(i, address, message);
        }
    }

    /// Hands node `i`'s new commits to the checker.
    fn take_commits(&mut self, i: usize) {
        let commits = match self.nodes[i].commits.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return,
        };
        for (stored, executed) in commits {
            if !self.honest(i) {
                continue;
            }
            let height = stored.block.header.height;
            let first = height > self.checker.height();
            self.checker.on_commit(i, &stored, &executed);
            self.checker
                .check_proof(i, self.nodes[i].chain.store(), &stored.block.header);
            if first {
                self.first_commits.push((height, self.now));
                self.log(format!(
                    "height {height} committed first by node {i}: {} txs, round {}, block {}",
                    stored.block.txs.len(),
                    stored.commit.round,
                    executed.hash
                ));
            }
        }
        self.check_recovered();
    }

    fn check_recovered(&mut self) {
        let Some(target) = self.target else { return };
        let all = (0..self.nodes.len())
            .filter(|i| self.honest(*i))
            .all(|i| self.nodes[i].chain.tip_height() >= target);
        if all && !self.done {
            self.log(format!("every honest node reached height {target}"));
            self.done = true;
        }
    }

    /// The longest time between two heights' first commits that overlaps
    /// a pause of the scenario (the pause's edges count as points).
    fn longest_gap_while_paused(&self) -> Option<u64> {
        if self.pause_windows.is_empty() {
            return None;
        }
        let mut worst = 0;
        for (_, start, end) in &self.pause_windows {
            let mut points: Vec<u64> = vec![*start, *end];
            points.extend(self.first_commits.iter().map(|(_, t)| *t));
            points.sort_unstable();
            for w in points.windows(2) {
                if w[1] > *start && w[0] < *end {
                    worst = worst.max(w[1] - w[0]);
                }
            }
        }
        Some(worst)
    }
}

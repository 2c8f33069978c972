//! One simulated cluster: n validators, each the real consensus state
//! machine, mempool and ledger over an in-memory store, wired by a
//! simulated network and clock, driven by one seeded generator.
//!
//! The shell around each state machine does what `tally-node`'s driver
//! does: it keeps the signing records durable before anything signed
//! leaves, builds blocks from the mempool, validates and commits blocks,
//! republishes its own messages when the height is stuck, and syncs blocks
//! from a peer when it falls behind.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tally_consensus::{
    Action, Config, Consensus, Input, SignState, Step, Timeout, ValidBlockRecord,
};
use tally_ledger::{
    build_block, decode_strict, devnet_key, execute_block, tx_root, AccountRead, Address, Block,
    BlockMeta, BlockWrite, ChainContext, ChainId, ChainRead, ChainWrite, ConsensusMessage, Genesis,
    GenesisBalance, GenesisValidator, Hash, Keypair, Params, ProposalCore, SigCheck,
    SignedProposal, SignedTransaction, SignedVote, StoredBlock, Transaction, Vote,
};
use tally_mempool::Mempool;
use tally_store::MemoryStore;

use crate::checker::{Checker, VoteSlot};
use crate::profile::{Lie, Profile};
use crate::{Options, Outcome, Sabotage, Stats};

/// After the faults stop, every honest node must commit this many new
/// blocks within [`LIVENESS_MS`].
const LIVENESS_BLOCKS: u64 = 2;
/// The bound on recovery once the faults stop, simulated ms.
pub const LIVENESS_MS: u64 = 60_000;
/// Sync and rebroadcast period of every node, ms (as in the node).
const TICK_MS: u64 = 1_000;
/// Most blocks in one sync answer.
const SYNC_BATCH: u64 = 16;
/// Largest message a node decodes.
const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// Funded client accounts.
const CLIENTS: usize = 8;
/// Own messages kept for rebroadcast (as in the node).
const MAX_OWN_MESSAGES: usize = 16;
/// How long gossip remembers a message's bytes as seen (gossipsub's
/// duplicate cache, as the node configures it).
const DUPLICATE_WINDOW_MS: u64 = 1_000;
/// Gossip drops a message that waited longer than this to be written to a
/// peer that does not read (gossipsub's publish queue duration).
const GOSSIP_QUEUE_MS: u64 = 5_000;

/// What travels between nodes.
#[derive(Debug, Clone)]
enum Msg {
    /// Gossip: suppressed as a duplicate wherever its bytes were seen.
    Consensus(Vec<u8>),
    /// Gossip, like consensus messages.
    Tx(Vec<u8>),
    SyncRequest {
        from: u64,
    },
    SyncBlocks(Vec<u8>),
    /// Messages sent point to point (the catch-up exchange): no duplicate
    /// suppression.
    Direct(Vec<u8>),
}

impl Msg {
    fn is_gossip(&self) -> bool {
        matches!(self, Msg::Consensus(_) | Msg::Tx(_))
    }
}

/// Gossipsub's duplicate cache: ids of bytes seen, each for
/// [`DUPLICATE_WINDOW_MS`] — but, as in gossipsub 0.49, expired ids are
/// only forgotten when a new one is inserted, so on a quiet network the
/// same bytes stay refused however long ago they were seen.
#[derive(Default)]
struct SeenCache {
    order: VecDeque<(Hash, u64)>,
    ids: BTreeSet<Hash>,
}

impl SeenCache {
    /// Records `bytes` as seen at `now`; false if they were already.
    fn insert(&mut self, bytes: &[u8], now: u64) -> bool {
        let id = Hash::digest(bytes);
        if self.ids.contains(&id) {
            return false;
        }
        while let Some((old, at)) = self.order.front().copied() {
            if at + DUPLICATE_WINDOW_MS > now {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&old);
        }
        self.ids.insert(id);
        self.order.push_back((id, now));
        true
    }
}

#[derive(Debug, Clone)]
enum Event {
    Deliver {
        to: usize,
        from: usize,
        msg: Msg,
        sent_at: u64,
    },
    Timer {
        node: usize,
        epoch: u64,
        timeout: Timeout,
    },
    Build {
        node: usize,
        epoch: u64,
    },
    Tick {
        node: usize,
        epoch: u64,
    },
    Client,
    Fault,
    Restart {
        node: usize,
    },
    Heal {
        partition: u64,
    },
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
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed: the heap pops the earliest event, ties in scheduling order.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Node {
    key: Keypair,
    address: Address,
    lies: Option<Vec<Lie>>,
    /// Durable: survives crashes (a block commit is atomic).
    store: MemoryStore,
    /// Durable: the signing record.
    sign_state: Option<SignState>,
    /// Durable: the valid-block record.
    valid_block: Option<ValidBlockRecord>,
    machine: Consensus,
    pool: Mempool,
    up: bool,
    paused_until: u64,
    /// Bumped by crashes: timers of a dead process never fire.
    epoch: u64,
    /// Crash in the middle of the next batch of actions.
    crash_pending: bool,
    build: Option<(u64, u32)>,
    own: VecDeque<ConsensusMessage>,
    ticks: u64,
    /// Votes this process counted, for the evidence check.
    seen: BTreeMap<VoteSlot, SignedVote>,
    /// Its gossip's duplicate cache.
    gossip_seen: SeenCache,
    /// Consensus position at the last tick.
    position: (u64, u32, Step),
    /// Equivocations it reported.
    reported: BTreeSet<VoteSlot>,
}

/// The whole simulated world.
pub struct Sim {
    opts: Options,
    profile: Profile,
    rng: ChaCha8Rng,
    chain: ChainContext,
    config: Config,
    nodes: Vec<Node>,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    now: u64,
    start_ms: u64,
    partitions: BTreeMap<u64, Vec<(usize, usize)>>,
    next_partition: u64,
    faulty: bool,
    /// After the faults stop: the height every honest node must reach.
    target: Option<u64>,
    done: bool,
    checker: Checker,
    digest: blake3::Hasher,
    trace: Vec<String>,
    stats: Stats,
    clients: Vec<Keypair>,
    recent: VecDeque<Vec<u8>>,
}

fn consensus_config() -> Config {
    Config {
        propose_timeout_ms: 1_000,
        prevote_timeout_ms: 500,
        precommit_timeout_ms: 500,
        timeout_delta_ms: 250,
        max_timeout_ms: 8_000,
        ..Config::default()
    }
}

fn client_key(i: usize) -> Keypair {
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

impl Sim {
    /// Lays out the cluster the seed describes.
    pub fn new(opts: Options) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let profile = Profile::draw(&mut rng, opts.validators, opts.faults);
        let chain = ChainContext::new(genesis(profile.validators));
        let config = consensus_config();
        let nodes = (0..profile.validators)
            .map(|i| {
                let key = devnet_key(&tally_ledger::devnet::validator_name(i));
                Node {
                    address: key.address(),
                    lies: profile.lies_of(i).map(<[Lie]>::to_vec),
                    store: MemoryStore::new(&chain),
                    sign_state: None,
                    valid_block: None,
                    machine: new_machine(&config, &chain, &key, None, None),
                    pool: Mempool::new(tally_mempool::Config::default()),
                    key,
                    up: true,
                    paused_until: 0,
                    epoch: 0,
                    crash_pending: false,
                    build: None,
                    own: VecDeque::new(),
                    ticks: 0,
                    seen: BTreeMap::new(),
                    gossip_seen: SeenCache::default(),
                    position: (0, 0, Step::Propose),
                    reported: BTreeSet::new(),
                }
            })
            .collect();
        let checker = Checker::new(&chain);
        let start_ms = chain.genesis.genesis_time_ms + 1_000;
        Sim {
            opts,
            profile,
            rng,
            config,
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
            recent: VecDeque::new(),
        }
    }

    /// Runs to the end: every honest node recovered after the faults, or a
    /// violation.
    pub fn run(mut self) -> Outcome {
        let p = self.profile.clone();
        self.log(format!(
            "seed {} validators {} byzantine {:?} fault phase {} ms delay {}+{} ms drop {:.3} dup {:.3} \
             fault every {} ms tx/s {} invalid {:.2} clock {:?} timers {:?}",
            self.opts.seed, p.validators, p.byzantine, p.fault_ms, p.delay_ms, p.jitter_ms, p.drop,
            p.duplicate, p.fault_every_ms, p.tx_per_s, p.invalid_share, p.clock_offset_ms,
            p.timer_permille
        ));
        for i in 0..self.nodes.len() {
            let first_tick = self.rng.gen_range(0..TICK_MS);
            self.schedule(first_tick, Event::Tick { node: i, epoch: 0 });
            self.feed(i, Input::StartHeight(1));
        }
        self.schedule(0, Event::Client);
        let f = self.opts.faults;
        if f.network || f.crash || f.pause {
            let first = self.rng.gen_range(0..p.fault_every_ms);
            self.schedule(first, Event::Fault);
        }
        self.schedule(p.fault_ms, Event::EndFaults);
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
        }
    }

    fn log(&mut self, line: String) {
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
                    Msg::Consensus(b) | Msg::Tx(b) | Msg::SyncBlocks(b) | Msg::Direct(b) => b,
                    Msg::SyncRequest { .. } => &[],
                };
                self.digest.update(blake3::hash(bytes).as_bytes());
                (0, *to, *from)
            }
            Event::Timer { node, .. } => (1, *node, 0),
            Event::Build { node, .. } => (2, *node, 0),
            Event::Tick { node, .. } => (3, *node, 0),
            Event::Client => (4, 0, 0),
            Event::Fault => (5, 0, 0),
            Event::Restart { node } => (6, *node, 0),
            Event::Heal { partition } => (7, *partition as usize, 0),
            Event::EndFaults => (8, 0, 0),
            Event::Deadline => (9, 0, 0),
        };
        self.digest.update(&[kind, a as u8, b as u8]);
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at: self.now + after_ms,
            seq: self.seq,
            event,
        });
    }

    fn local_now(&self, i: usize) -> u64 {
        let t = (self.start_ms + self.now) as i64 + self.profile.clock_offset_ms[i];
        t.max(0) as u64
    }

    fn honest(&self, i: usize) -> bool {
        self.nodes[i].lies.is_none()
    }

    fn tip(&self, i: usize) -> BlockMeta {
        match self.nodes[i].store.tip() {
            Ok(Some(tip)) => tip,
            _ => self.chain.genesis_meta(),
        }
    }

    fn handle(&mut self, event: Event) {
        // A paused process handles nothing until it resumes; its messages
        // and timers wait, in order.
        let paused_node = match &event {
            Event::Deliver { to, .. } => Some(*to),
            Event::Timer { node, .. } | Event::Build { node, .. } | Event::Tick { node, .. } => {
                Some(*node)
            }
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
            } => {
                // Gossip that waited too long for a peer that did not read
                // (paused) was dropped by the sender's queue.
                if msg.is_gossip() && self.now > sent_at + GOSSIP_QUEUE_MS {
                    self.stats.dropped += 1;
                    return;
                }
                if self.nodes[to].up {
                    self.stats.delivered += 1;
                    self.receive(to, from, msg);
                }
            }
            Event::Timer {
                node,
                epoch,
                timeout,
            } => {
                if self.alive(node, epoch) {
                    self.feed(node, Input::Timeout(timeout));
                }
            }
            Event::Build { node, epoch } => {
                if self.alive(node, epoch) {
                    if let Some(input) = self.build(node) {
                        self.feed(node, input);
                    }
                }
            }
            Event::Tick { node, epoch } => {
                if self.alive(node, epoch) {
                    self.tick(node);
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
                    self.restart(node);
                }
            }
            Event::Heal { partition } => {
                if self.partitions.remove(&partition).is_some() {
                    self.log(format!("partition {partition} healed"));
                }
            }
            Event::EndFaults => self.end_faults(),
            Event::Deadline => {
                if !self.done {
                    let states: Vec<String> = (0..self.nodes.len())
                        .map(|i| {
                            let m = &self.nodes[i].machine;
                            let record = self.nodes[i]
                                .sign_state
                                .as_ref()
                                .map(|s| (s.height, s.round, s.step, s.locked.map(|l| l.0)));
                            let power = |kind| m.votes().total(m.round(), kind);
                            format!(
                                "node {i}: tip {} at {}/{}/{:?} locked {:?} signed {record:?} \
                                 prevotes {} precommits {}",
                                self.tip(i).height,
                                m.height(),
                                m.round(),
                                m.step(),
                                m.locked().map(|l| l.0),
                                power(tally_ledger::VoteKind::Prevote),
                                power(tally_ledger::VoteKind::Precommit)
                            )
                        })
                        .collect();
                    let v = format!(
                        "liveness: {LIVENESS_MS} ms after the faults stopped, not every honest node \
                         reached height {} ({})",
                        self.target.unwrap_or(0),
                        states.join("; ")
                    );
                    self.checker.violate(v);
                }
            }
        }
    }

    fn alive(&self, i: usize, epoch: u64) -> bool {
        self.nodes[i].up && self.nodes[i].epoch == epoch
    }

    // ----- the shell: inputs in, actions out -----

    /// Feeds one input and carries out the resulting actions, feeding the
    /// answers back. A pending crash cuts the actions at a random point:
    /// what was carried out before it happened, the rest is lost.
    fn feed(&mut self, i: usize, input: Input) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            if !self.nodes[i].up {
                return;
            }
            let mut actions = self.nodes[i].machine.handle(input);
            let crash = self.nodes[i].crash_pending && !actions.is_empty();
            if crash {
                let keep = self.rng.gen_range(0..=actions.len());
                actions.truncate(keep);
            }
            for action in actions {
                if let Some(next) = self.act(i, action) {
                    inputs.push_back(next);
                }
            }
            if crash {
                self.crash(i);
                return;
            }
        }
    }

    fn act(&mut self, i: usize, action: Action) -> Option<Input> {
        match action {
            Action::PersistSignState(record) => {
                if self.opts.sabotage != Some(Sabotage::ForgetSignState) {
                    self.nodes[i].sign_state = Some(record);
                }
                None
            }
            Action::PersistValidBlock(record) => {
                if self.opts.sabotage != Some(Sabotage::ForgetSignState) {
                    self.nodes[i].valid_block = Some(record);
                }
                None
            }
            Action::Broadcast(message) => {
                self.broadcast(i, message);
                None
            }
            Action::ScheduleTimeout { timeout, after_ms } => {
                let after = after_ms * self.profile.timer_permille[i] / 1_000;
                let epoch = self.nodes[i].epoch;
                self.schedule(
                    after,
                    Event::Timer {
                        node: i,
                        epoch,
                        timeout,
                    },
                );
                None
            }
            Action::BuildProposal { height, round } => {
                self.nodes[i].build = Some((height, round));
                if self.nodes[i].pool.has_pending() {
                    return self.build(i);
                }
                let epoch = self.nodes[i].epoch;
                self.schedule(self.profile.empty_block_ms, Event::Build { node: i, epoch });
                None
            }
            Action::ValidateBlock { height, block } => Some(Input::BlockValidated {
                height,
                block_hash: block.hash(),
                valid: self.validate(i, &block),
            }),
            Action::Commit { block, commit } => {
                let height = block.header.height;
                if let Err(e) = self.commit(i, StoredBlock { block, commit }) {
                    if self.honest(i) {
                        self.checker.violate(format!(
                            "node {i} cannot commit its decided block {height}: {e}"
                        ));
                    }
                }
                self.nodes[i].build = None;
                let tip = self.tip(i).height;
                Some(Input::StartHeight(height.max(tip) + 1))
            }
            Action::Evidence(e) => {
                let v = &e.first;
                let slot = (v.validator, v.vote.height, v.vote.round, v.vote.kind);
                self.nodes[i].reported.insert(slot);
                self.stats.evidence += 1;
                self.log(format!(
                    "node {i} recorded evidence: validator {} equivocated at height {} round {}",
                    v.validator, v.vote.height, v.vote.round
                ));
                None
            }
        }
    }

    /// Builds the requested block from the mempool (empty if it has
    /// nothing), as the node's driver does.
    fn build(&mut self, i: usize) -> Option<Input> {
        let (height, round) = self.nodes[i].build.take()?;
        let parent = self.tip(i);
        if parent.height + 1 != height {
            return None;
        }
        let now = self.local_now(i);
        let params = &self.chain.genesis.params;
        let (max_txs, max_bytes) = (
            params.max_block_txs as usize,
            params.max_block_bytes as usize,
        );
        let node = &mut self.nodes[i];
        let candidates = node.pool.select_for_block(max_txs, max_bytes);
        let built = build_block(
            &node.store,
            &self.chain,
            &parent,
            node.address,
            now,
            candidates,
        )
        .ok()?;
        for (id, _) in &built.rejected {
            node.pool.remove(id);
        }
        Some(Input::ProposalBlock {
            height,
            round,
            block: built.block,
        })
    }

    fn validate(&self, i: usize, block: &Block) -> bool {
        if self.opts.sabotage == Some(Sabotage::AcceptAnyBlock) {
            return true;
        }
        let parent = self.tip(i);
        block.body_matches_header()
            && execute_block(
                &self.nodes[i].store,
                &self.chain,
                &parent,
                block,
                SigCheck::Verify,
            )
            .is_ok()
    }

    /// The one commit path (consensus and sync): certificate first, an
    /// already committed block is accepted if it is the same one.
    fn commit(&mut self, i: usize, stored: StoredBlock) -> Result<(), String> {
        let tip = self.tip(i);
        let block = &stored.block;
        let (height, hash) = (block.header.height, block.hash());
        self.chain
            .verify_commit(&stored.commit, height, &hash)
            .map_err(|e| format!("bad certificate: {e}"))?;
        if height <= tip.height {
            let have = self.nodes[i].store.header(height).ok().flatten();
            return match have.map(|h| h.hash()) {
                Some(have) if have == hash => Ok(()),
                _ => Err(format!("conflicts with the committed block {height}")),
            };
        }
        if height != tip.height + 1 {
            return Err(format!(
                "block {height} does not follow the tip {}",
                tip.height
            ));
        }
        let node = &mut self.nodes[i];
        let executed = execute_block(&node.store, &self.chain, &tip, block, SigCheck::Verify)
            .map_err(|e| format!("invalid block: {e}"))?;
        node.store
            .commit(&BlockWrite {
                stored: &stored,
                hash,
                tx_ids: &executed.tx_ids,
                accounts: &executed.accounts,
            })
            .map_err(|e| e.to_string())?;
        node.pool
            .on_block_committed(&executed.tx_ids, &executed.accounts);
        if self.honest(i) {
            let first = height > self.checker.height();
            self.checker.on_commit(i, &stored, &executed);
            if first {
                self.log(format!(
                    "height {height} committed first by node {i}: {} txs, round {}, block {hash}",
                    block.txs.len(),
                    stored.commit.round
                ));
            }
        }
        self.check_recovered();
        Ok(())
    }

    fn check_recovered(&mut self) {
        let Some(target) = self.target else { return };
        let all = (0..self.nodes.len())
            .filter(|i| self.honest(*i))
            .all(|i| self.tip(i).height >= target);
        if all {
            self.log(format!("every honest node reached height {target}"));
            self.done = true;
        }
    }

    fn broadcast(&mut self, i: usize, message: ConsensusMessage) {
        let height = self.nodes[i].machine.height();
        let me = self.nodes[i].address;
        let own = &mut self.nodes[i].own;
        own.retain(|m| m.height() == height);
        if own.len() >= MAX_OWN_MESSAGES {
            own.pop_front();
        }
        let signed_by_me = match &message {
            ConsensusMessage::Vote(v) => v.validator == me,
            ConsensusMessage::Proposal(p) => p.proposer == me,
        };
        if signed_by_me {
            own.push_back(message.clone());
        }
        match self.nodes[i].lies.clone() {
            None => {
                self.checker.on_signed(i, self.nodes[i].address, &message);
                self.send_consensus(i, None, &message);
            }
            Some(lies) => self.lie(i, &lies, message),
        }
    }

    /// Gossips `message` (to `to` only, for a liar): refused, as gossipsub
    /// refuses it, if the sender's gossip has seen those bytes.
    fn send_consensus(&mut self, from: usize, to: Option<&[usize]>, message: &ConsensusMessage) {
        let Ok(bytes) = borsh::to_vec(message) else {
            return;
        };
        if !self.nodes[from].gossip_seen.insert(&bytes, self.now) {
            self.stats.refused_republish += 1;
            return;
        }
        match to {
            Some(targets) => {
                for &t in targets {
                    self.send(from, t, Msg::Consensus(bytes.clone()));
                }
            }
            None => self.send_all(from, Msg::Consensus(bytes)),
        }
    }

    fn send_all(&mut self, from: usize, msg: Msg) {
        for to in 0..self.nodes.len() {
            if to != from {
                self.send(from, to, msg.clone());
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        let cut = self
            .partitions
            .values()
            .any(|links| links.contains(&(from, to)));
        if cut || (self.faulty && self.rng.gen_bool(self.profile.drop)) {
            self.stats.dropped += 1;
            return;
        }
        let copies = match self.faulty && self.rng.gen_bool(self.profile.duplicate) {
            true => 2,
            false => 1,
        };
        for _ in 0..copies {
            let delay = self.profile.delay_ms + self.rng.gen_range(0..=self.profile.jitter_ms);
            let sent_at = self.now;
            self.schedule(
                delay,
                Event::Deliver {
                    to,
                    from,
                    msg: msg.clone(),
                    sent_at,
                },
            );
        }
    }

    fn receive(&mut self, i: usize, from: usize, msg: Msg) {
        if let Msg::Consensus(bytes) | Msg::Tx(bytes) = &msg {
            if !self.nodes[i].gossip_seen.insert(bytes, self.now) {
                self.stats.duplicates += 1;
                return;
            }
        }
        match msg {
            Msg::Consensus(bytes) => {
                let Ok(message) = decode_strict::<ConsensusMessage>(&bytes, MAX_MESSAGE_BYTES)
                else {
                    self.stats.undecodable += 1;
                    return;
                };
                self.receive_consensus(i, message);
            }
            Msg::Direct(bytes) => {
                let Ok(messages) =
                    decode_strict::<Vec<ConsensusMessage>>(&bytes, MAX_MESSAGE_BYTES)
                else {
                    self.stats.undecodable += 1;
                    return;
                };
                for message in messages {
                    self.receive_consensus(i, message);
                }
            }
            Msg::Tx(bytes) => {
                let _ = self.admit(i, &bytes, false);
            }
            Msg::SyncRequest { from: height } => self.serve_sync(i, from, height),
            Msg::SyncBlocks(bytes) => self.apply_sync(i, &bytes),
        }
    }

    fn receive_consensus(&mut self, i: usize, message: ConsensusMessage) {
        if !self.nodes[i].up {
            return;
        }
        let expect = match &message {
            ConsensusMessage::Vote(v) if self.honest(i) => self.track_vote(i, v),
            _ => None,
        };
        self.feed(i, Input::Message(message));
        if let Some(slot) = expect {
            if self.nodes[i].up && !self.nodes[i].reported.contains(&slot) {
                self.checker.violate(format!(
                    "node {i} counted two different votes of {} at height {} round {} \
                     ({:?}) and recorded no evidence",
                    slot.0, slot.1, slot.2, slot.3
                ));
            }
        }
    }

    /// For the evidence invariant: a vote the machine is about to count.
    /// Returns the slot if it conflicts with a vote counted before, so the
    /// machine must report it.
    fn track_vote(&mut self, i: usize, v: &SignedVote) -> Option<VoteSlot> {
        let node = &self.nodes[i];
        let m = &node.machine;
        let counted = m.height() == v.vote.height
            && m.step() != Step::Decided
            && v.vote.round <= m.round().saturating_add(self.config.max_rounds_ahead)
            && v.vote.chain_id == self.chain.genesis.chain_id;
        if !counted {
            return None;
        }
        let slot = (v.validator, v.vote.height, v.vote.round, v.vote.kind);
        let (validators, genesis_hash) = (&self.chain.validators, &self.chain.genesis_hash);
        match node.seen.get(&slot) {
            None => {
                self.nodes[i].seen.insert(slot, v.clone());
                None
            }
            Some(first) if first.vote != v.vote => {
                let first_ok = first.verify(validators, genesis_hash);
                let second_ok = v.verify(validators, genesis_hash);
                if !first_ok && second_ok {
                    self.nodes[i].seen.insert(slot, v.clone());
                }
                (first_ok && second_ok).then_some(slot)
            }
            Some(_) => None,
        }
    }

    /// Admits a transaction from a client (`from_client`: then gossips it)
    /// or from a peer.
    fn admit(&mut self, i: usize, bytes: &[u8], from_client: bool) -> Result<(), String> {
        let tx = SignedTransaction::decode(bytes).map_err(|e| e.to_string())?;
        let id = tx.id();
        let now = self.local_now(i);
        let genesis = &self.chain.genesis;
        let node = &mut self.nodes[i];
        if node.store.tx_location(&id).ok().flatten().is_some() {
            return Err("already committed".into());
        }
        tx.verify_stateless(
            &genesis.chain_id,
            &self.chain.genesis_hash,
            genesis.params.min_fee,
        )
        .map_err(|e| e.to_string())?;
        let account = node.store.account(&tx.tx.from).map_err(|e| e.to_string())?;
        node.pool
            .insert(tx, id, account, now)
            .map_err(|e| e.to_string())?;
        if from_client {
            self.stats.admitted += 1;
            if self.nodes[i].gossip_seen.insert(bytes, self.now) {
                self.send_all(i, Msg::Tx(bytes.to_vec()));
            }
        }
        if self.nodes[i].build.is_some() {
            if let Some(input) = self.build(i) {
                self.feed(i, input);
            }
        }
        Ok(())
    }

    fn tick(&mut self, i: usize) {
        // Stuck since the last tick (1 s, as the node's check): send the
        // height's votes and the round's proposal to every peer directly,
        // as the node's catch-up exchange does (gossip would refuse the
        // same bytes again).
        self.nodes[i].ticks += 1;
        let m = &self.nodes[i].machine;
        let position = (m.height(), m.round(), m.step());
        let stuck = position == self.nodes[i].position;
        self.nodes[i].position = position;
        if stuck {
            let (height, round, _) = position;
            let node = &self.nodes[i];
            let since = round.saturating_sub(1);
            let own = node.own.iter().filter(|m| match m {
                ConsensusMessage::Vote(v) => v.vote.height == height && v.vote.round >= since,
                ConsensusMessage::Proposal(_) => false,
            });
            let mut again: Vec<ConsensusMessage> = own
                .cloned()
                .chain(
                    node.machine
                        .votes_to_relay()
                        .into_iter()
                        .map(ConsensusMessage::Vote),
                )
                .collect();
            if let Some(proposal) = node.machine.proposal(round) {
                again.push(ConsensusMessage::Proposal(Box::new(proposal)));
            }
            if let Ok(bytes) = borsh::to_vec(&again) {
                self.send_all(i, Msg::Direct(bytes));
            }
        }
        let n = self.nodes.len();
        let peer = (i + self.rng.gen_range(1..n)) % n;
        let from = self.tip(i).height + 1;
        self.send(i, peer, Msg::SyncRequest { from });
        let now = self.local_now(i);
        self.nodes[i].pool.expire(now);
        let every = TICK_MS * self.profile.timer_permille[i] / 1_000;
        let epoch = self.nodes[i].epoch;
        self.schedule(every, Event::Tick { node: i, epoch });
    }

    fn serve_sync(&mut self, i: usize, to: usize, from: u64) {
        let tip = self.tip(i).height;
        let forge = self.lies_with(i, Lie::InvalidBlocks) && self.rng.gen_bool(0.5);
        let mut blocks = Vec::new();
        for height in from..=tip.min(from + SYNC_BATCH - 1) {
            match self.nodes[i].store.block(height) {
                Ok(Some(stored)) => blocks.push(stored),
                _ => break,
            }
        }
        if forge {
            // A forged block under a real certificate: the hash no longer
            // matches, so the certificate must not vouch for it.
            if let Some(first) = blocks.first_mut() {
                first.block.header.timestamp_ms += 1;
            }
        }
        if blocks.is_empty() {
            return;
        }
        if let Ok(bytes) = borsh::to_vec(&blocks) {
            self.send(i, to, Msg::SyncBlocks(bytes));
        }
    }

    fn apply_sync(&mut self, i: usize, bytes: &[u8]) {
        let Ok(blocks) = decode_strict::<Vec<StoredBlock>>(bytes, MAX_MESSAGE_BYTES) else {
            self.stats.undecodable += 1;
            return;
        };
        let before = self.tip(i).height;
        for stored in blocks {
            if stored.block.header.height <= self.tip(i).height {
                continue;
            }
            if self.commit(i, stored).is_err() {
                self.stats.refused_sync += 1;
                break;
            }
            self.stats.synced_blocks += 1;
        }
        let tip = self.tip(i).height;
        if tip > before && tip >= self.nodes[i].machine.height() {
            self.log(format!("node {i} synced to height {tip}"));
            self.nodes[i].build = None;
            self.feed(i, Input::StartHeight(tip + 1));
        }
    }

    // ----- faults -----

    fn lies_with(&self, i: usize, lie: Lie) -> bool {
        self.nodes[i]
            .lies
            .as_ref()
            .is_some_and(|l| l.contains(&lie))
    }

    fn inject_fault(&mut self) {
        let f = self.opts.faults;
        let mut kinds = Vec::new();
        if f.network {
            kinds.push(0);
        }
        if f.crash {
            kinds.push(1);
        }
        if f.pause {
            kinds.push(2);
        }
        if kinds.is_empty() {
            return;
        }
        let n = self.nodes.len();
        match kinds[self.rng.gen_range(0..kinds.len())] {
            0 => self.partition(),
            1 => {
                let i = self.rng.gen_range(0..n);
                if self.nodes[i].up {
                    if self.rng.gen_bool(0.5) {
                        self.crash(i);
                    } else {
                        self.log(format!(
                            "node {i} will crash in the middle of its next step"
                        ));
                        self.nodes[i].crash_pending = true;
                    }
                }
            }
            _ => {
                let i = self.rng.gen_range(0..n);
                let ms = match self.rng.gen_bool(0.2) {
                    // Long enough for gossip to give up on the paused peer.
                    true => self.rng.gen_range(4_000..=10_000),
                    false => self.rng.gen_range(100..=4_000),
                };
                self.nodes[i].paused_until = self.now + ms;
                self.stats.pauses += 1;
                self.log(format!("node {i} paused for {ms} ms"));
            }
        }
    }

    fn partition(&mut self) {
        let n = self.nodes.len();
        let (group, kind): (Vec<usize>, &str) = match self.rng.gen_range(0..3) {
            0 => {
                // The proposer of the next height's first round, alone.
                let height = self.checker.height() + 1;
                let round = self.nodes[0].machine.round();
                let proposer = tally_consensus::proposer(&self.chain.validators, height, round);
                let i = self.nodes.iter().position(|nd| nd.address == proposer);
                (i.into_iter().collect(), "proposer isolated")
            }
            1 => {
                let size = self.rng.gen_range(1..n);
                let mut all: Vec<usize> = (0..n).collect();
                for k in 0..size {
                    let j = self.rng.gen_range(k..n);
                    all.swap(k, j);
                }
                all.truncate(size);
                all.sort();
                (all, "split")
            }
            _ => {
                let i = self.rng.gen_range(0..n);
                (vec![i], "one-way (cannot send)")
            }
        };
        let one_way = kind.starts_with("one-way");
        let mut links = Vec::new();
        for a in 0..n {
            for b in 0..n {
                let (ina, inb) = (group.contains(&a), group.contains(&b));
                if a != b && ina && !inb {
                    links.push((a, b));
                    if !one_way {
                        links.push((b, a));
                    }
                }
            }
        }
        let id = self.next_partition;
        self.next_partition += 1;
        self.partitions.insert(id, links);
        let ms = self.rng.gen_range(500..=6_000);
        self.schedule(ms, Event::Heal { partition: id });
        self.stats.partitions += 1;
        self.log(format!("partition {id}: {kind} {group:?} for {ms} ms"));
    }

    /// The process dies: memory (consensus state, mempool, timers) is lost;
    /// the store and the signing records survive.
    fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.up = false;
        node.crash_pending = false;
        node.epoch += 1;
        self.stats.crashes += 1;
        let down = self.rng.gen_range(200..=5_000);
        self.log(format!("node {i} crashed, down for {down} ms"));
        self.schedule(down, Event::Restart { node: i });
    }

    fn restart(&mut self, i: usize) {
        let forget = self.opts.sabotage == Some(Sabotage::ForgetSignState);
        let node = &mut self.nodes[i];
        if forget {
            node.sign_state = None;
            node.valid_block = None;
        }
        node.machine = new_machine(
            &self.config,
            &self.chain,
            &node.key,
            node.sign_state.clone(),
            node.valid_block.clone(),
        );
        node.pool = Mempool::new(tally_mempool::Config::default());
        node.up = true;
        node.paused_until = 0;
        node.build = None;
        node.own.clear();
        node.seen.clear();
        node.gossip_seen = SeenCache::default();
        node.reported.clear();
        let epoch = node.epoch;
        let tip = self.tip(i).height;
        self.log(format!("node {i} restarted at tip {tip}"));
        self.schedule(TICK_MS, Event::Tick { node: i, epoch });
        self.feed(i, Input::StartHeight(tip + 1));
    }

    fn end_faults(&mut self) {
        self.faulty = false;
        self.partitions.clear();
        for i in 0..self.nodes.len() {
            self.nodes[i].crash_pending = false;
            self.nodes[i].paused_until = self.nodes[i].paused_until.min(self.now);
            if !self.nodes[i].up {
                self.restart(i);
            }
        }
        let target = self.checker.height() + LIVENESS_BLOCKS;
        self.target = Some(target);
        self.log(format!(
            "faults stopped; every honest node must reach height {target} within {LIVENESS_MS} ms"
        ));
        self.schedule(LIVENESS_MS, Event::Deadline);
    }

    // ----- clients -----

    fn client(&mut self) {
        let c = self.rng.gen_range(0..CLIENTS);
        let i = self.rng.gen_range(0..self.nodes.len());
        if !self.nodes[i].up {
            self.stats.unavailable += 1;
            return;
        }
        let key = self.clients[c].clone();
        let from = key.address();
        let to = self.clients[(c + self.rng.gen_range(1..CLIENTS)) % CLIENTS].address();
        let account = self.nodes[i].store.account(&from).unwrap_or_default();
        let nonce = self.nodes[i].pool.next_nonce(&from, &account);
        let mut tx = Transaction {
            chain_id: self.chain.genesis.chain_id.clone(),
            from,
            to,
            amount: self.rng.gen_range(1..=1_000),
            fee: self.rng.gen_range(1..=5),
            nonce,
        };
        let genesis_hash = self.chain.genesis_hash;
        let bad = self.rng.gen_bool(self.profile.invalid_share);
        let (signed, never_valid) = if !bad {
            (tx.sign(&key, &genesis_hash), false)
        } else {
            match self.rng.gen_range(0..8) {
                0 => {
                    let mut s = tx.sign(&key, &genesis_hash);
                    s.signature.0[self.rng.gen_range(0..64)] ^= 1 << self.rng.gen_range(0..8);
                    (s, true)
                }
                1 => (tx.sign(&key, &Hash::digest(b"another genesis")), true),
                2 => {
                    tx.chain_id = ChainId::new("another-chain").unwrap_or_else(|_| unreachable!());
                    (tx.sign(&key, &genesis_hash), true)
                }
                3 => {
                    tx.nonce += self.rng.gen_range(1..20);
                    (tx.sign(&key, &genesis_hash), false)
                }
                4 => match self.recent.front().cloned() {
                    Some(bytes) => {
                        self.stats.submitted += 1;
                        let _ = self.admit(i, &bytes, true);
                        return;
                    }
                    None => (tx.sign(&key, &genesis_hash), false),
                },
                5 => {
                    // More than any balance can be: the whole supply.
                    tx.amount = self.checker.supply();
                    (tx.sign(&key, &genesis_hash), true)
                }
                6 => {
                    tx.amount = u64::MAX;
                    (tx.sign(&key, &genesis_hash), true)
                }
                _ => {
                    tx.fee = 0;
                    (tx.sign(&key, &genesis_hash), true)
                }
            }
        };
        let bytes = signed.encode();
        if never_valid {
            self.checker.never_valid(signed.id());
        } else {
            if self.recent.len() >= 64 {
                self.recent.pop_back();
            }
            self.recent.push_front(bytes.clone());
        }
        self.stats.submitted += 1;
        let _ = self.admit(i, &bytes, true);
    }

    // ----- Byzantine behaviour -----

    /// Sends what a Byzantine validator sends instead of `message`.
    fn lie(&mut self, i: usize, lies: &[Lie], message: ConsensusMessage) {
        let key = self.nodes[i].key.clone();
        let gh = self.chain.genesis_hash;
        let has = |l: Lie| lies.contains(&l);
        let mut primary = Some(message.clone());
        let mut alternative = None;
        match &message {
            ConsensusMessage::Vote(v) => {
                if has(Lie::UnknownBlockVotes) && self.rng.gen_bool(0.5) {
                    let mut vote = v.vote.clone();
                    vote.block_hash = Some(self.random_hash());
                    primary = Some(ConsensusMessage::Vote(SignedVote::sign(vote, &key, &gh)));
                }
                if has(Lie::Equivocate) && self.rng.gen_bool(0.5) {
                    let mut vote = v.vote.clone();
                    vote.block_hash = match vote.block_hash {
                        Some(_) if self.rng.gen_bool(0.5) => None,
                        _ => Some(self.random_hash()),
                    };
                    alternative = Some(ConsensusMessage::Vote(SignedVote::sign(vote, &key, &gh)));
                }
            }
            ConsensusMessage::Proposal(p) => {
                if has(Lie::InvalidBlocks) && self.rng.gen_bool(0.5) {
                    let block = self.invalid_block(&p.block);
                    primary = Some(self.sign_proposal(&p.core, block, &key));
                }
                if has(Lie::Equivocate) && self.rng.gen_bool(0.5) {
                    let mut block = p.block.clone();
                    block.header.timestamp_ms += 1;
                    alternative = Some(self.sign_proposal(&p.core, block, &key));
                }
            }
        }
        if has(Lie::Withhold) && self.rng.gen_bool(0.7) {
            primary = None;
        }
        let n = self.nodes.len();
        let mut peers: Vec<usize> = (0..n).filter(|&j| j != i).collect();
        match (primary, alternative) {
            (Some(p), Some(a)) => {
                for k in (1..peers.len()).rev() {
                    let j = self.rng.gen_range(0..=k);
                    peers.swap(k, j);
                }
                let half = peers.len() / 2;
                let (left, right) = peers.split_at(half);
                let (left, right) = (left.to_vec(), right.to_vec());
                self.send_consensus(i, Some(&left), &p);
                self.send_consensus(i, Some(&right), &a);
            }
            (Some(p), None) => self.send_consensus(i, None, &p),
            (None, Some(a)) => self.send_consensus(i, None, &a),
            (None, None) => {}
        }
        if has(Lie::WrongHeights) && self.rng.gen_bool(0.3) {
            let height = message.height();
            for h in [height.saturating_add(1_000), height.saturating_sub(1)] {
                let vote = Vote {
                    chain_id: self.chain.genesis.chain_id.clone(),
                    height: h,
                    round: 0,
                    kind: tally_ledger::VoteKind::Prevote,
                    block_hash: Some(self.random_hash()),
                };
                let m = ConsensusMessage::Vote(SignedVote::sign(vote, &key, &gh));
                self.send_consensus(i, None, &m);
            }
        }
        if has(Lie::Garbage) && self.rng.gen_bool(0.3) {
            let len = self.rng.gen_range(0..300);
            let bytes: Vec<u8> = (0..len).map(|_| self.rng.gen()).collect();
            let msg = match self.rng.gen_range(0..3) {
                0 => Msg::Consensus(bytes),
                1 => Msg::Tx(bytes),
                _ => Msg::SyncBlocks(bytes),
            };
            self.send_all(i, msg);
        }
    }

    fn random_hash(&mut self) -> Hash {
        Hash(self.rng.gen())
    }

    fn sign_proposal(&self, core: &ProposalCore, block: Block, key: &Keypair) -> ConsensusMessage {
        let core = ProposalCore {
            block_hash: block.hash(),
            ..core.clone()
        };
        let proposal = SignedProposal::sign(core, block, key, &self.chain.genesis_hash);
        ConsensusMessage::Proposal(Box::new(proposal))
    }

    /// `block` plus a transfer signed by the wrong key; the header commits
    /// to the body, so only execution can tell it is invalid.
    fn invalid_block(&self, block: &Block) -> Block {
        let tx = Transaction {
            chain_id: self.chain.genesis.chain_id.clone(),
            from: self.clients[0].address(),
            to: self.clients[1].address(),
            amount: 1,
            fee: 1,
            nonce: u64::MAX / 2,
        };
        let mut block = block.clone();
        block
            .txs
            .push(tx.sign(&self.clients[1], &self.chain.genesis_hash));
        let ids: Vec<Hash> = block.txs.iter().map(SignedTransaction::id).collect();
        block.header.tx_root = tx_root(&ids);
        block.header.tx_count = block.txs.len() as u32;
        block
    }
}

fn new_machine(
    config: &Config,
    chain: &ChainContext,
    key: &Keypair,
    sign_state: Option<SignState>,
    valid_block: Option<ValidBlockRecord>,
) -> Consensus {
    Consensus::new(
        config.clone(),
        chain.genesis.chain_id.clone(),
        chain.genesis_hash,
        chain.validators.clone(),
        Some(key.clone()),
        sign_state,
        valid_block,
    )
}

//! The host: owns the consensus state machine, turns its actions into
//! effects on the chain and the world, and turns what happens in the world
//! into its inputs. One host per node, driven by one caller at a time (the
//! node's host thread, or the simulator's event loop).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use tally_consensus::{Action, Config, Consensus, Input, SignState, Step, ValidBlockRecord};
use tally_ledger::{ChainContext, ConsensusMessage, Keypair, Verified};
use tracing::{debug, error, warn};

use crate::chain::{CertifiedBlock, Chain, CommitFailure, Position};
use crate::sync::client::SyncClient;
use crate::sync::{self, decode_response, SyncRequest, SyncResponse};
use crate::world::{RequestFailure, RequestId, Timer, World};

/// The host's settings (defaults are the node's).
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Timeouts and bounds of the state machine.
    pub consensus: Config,
    /// How long after the last block a proposer with no transactions
    /// proposes an empty one in round 0 (`None`: it waits for transactions
    /// and rounds time out meanwhile). In later rounds it proposes at once.
    pub empty_block_interval_ms: Option<u64>,
    /// How long after the last block a proposer waits for late precommits
    /// before it builds a block that judges a validator-set change by the
    /// signers of the last commit ([`Chain::wants_more_signers`]); it
    /// builds as soon as every validator of the last set has signed.
    pub live_wait_ms: u64,
    /// The period of the host's tick.
    pub tick_ms: u64,
    /// A height not decided this long after this node started it counts as
    /// stuck: the node sends its votes of the height to every peer, and
    /// again each such period.
    pub stuck_after_ms: u64,
    /// After a peer says it decided a height this node is still deciding,
    /// how long to wait for this node's own decision before asking it.
    pub catchup_grace_ms: u64,
    /// How long to wait before retrying a failed record write or commit.
    pub retry_ms: u64,
    /// How long to wait for a peer's answer.
    pub request_timeout_ms: u64,
    /// How often block sync compares tips with peers.
    pub sync_interval_ms: u64,
    /// How long peers get to tell their tips.
    pub sync_status_deadline_ms: u64,
    /// Most blocks asked for in one request.
    pub sync_batch_blocks: u32,
    /// Largest answer a peer may send (checked by the transport too).
    pub max_response_bytes: usize,
    /// How often queued transactions are checked for expiry.
    pub expiry_interval_ms: u64,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            consensus: Config::default(),
            empty_block_interval_ms: Some(1_000),
            live_wait_ms: 500,
            tick_ms: 250,
            stuck_after_ms: 1_000,
            catchup_grace_ms: 200,
            retry_ms: 500,
            request_timeout_ms: 10_000,
            sync_interval_ms: 1_000,
            sync_status_deadline_ms: 2_000,
            sync_batch_blocks: 64,
            max_response_bytes: 8 * 1024 * 1024,
            expiry_interval_ms: 1_000,
        }
    }
}

/// The records a restarted validator resumes from (none on a first start).
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// The last signing record written.
    pub sign_state: Option<SignState>,
    /// The last valid-block record written.
    pub valid_block: Option<ValidBlockRecord>,
}

/// The records of a validator restarted at a height an operator override
/// gave another set since they were written: a recorded valid block that
/// names another set can never be committed at that height, so it is
/// forgotten, and with it the lock and valid value of the signing record
/// (taken while it was the latest polka: no later one exists). Kept, they
/// would hold the override's validators on that block for good. The
/// signing record itself stays: nothing conflicting is signed in the
/// rounds it covers.
fn forget_overridden(context: &ChainContext, recovered: Recovered) -> Recovered {
    let Some(record) = &recovered.valid_block else {
        return recovered;
    };
    let height = record.block.header.height;
    let Some(set) = context.override_at(height) else {
        return recovered;
    };
    if record.block.header.validators_hash == set.hash() {
        return recovered;
    }
    warn!(
        height,
        "OPERATOR OVERRIDE: forgetting this validator's lock on a block of the replaced set"
    );
    let sign_state = recovered.sign_state.map(|mut s| {
        if s.height == height {
            s.locked = None;
            s.valid = None;
        }
        s
    });
    Recovered {
        sign_state,
        valid_block: None,
    }
}

/// Why a request of this host's was sent, to handle its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A tip, for the block-sync round `round`.
    SyncStatus { round: u64 },
    /// Blocks from `from`, for block sync.
    SyncBlocks { from: u64 },
    /// Catch-up of `height`.
    Catchup { height: u64 },
    /// A decision told.
    Decided,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending<P> {
    pub(crate) peer: P,
    pub(crate) purpose: Purpose,
}

/// An action whose effect failed on storage, kept to be tried again.
pub(crate) struct Held {
    action: Action,
    reason: String,
}

fn held(action: Action, reason: String) -> Box<Held> {
    Box::new(Held { action, reason })
}

/// Most requests of this host's waiting for an answer.
const MAX_REQUESTS_IN_FLIGHT: usize = 256;

/// Most of them to one peer: peers that accept requests and never answer
/// hold this many slots each, not all of them.
const MAX_REQUESTS_PER_PEER: usize = 4;

/// Most actions held while storage fails; inputs beyond are dropped (the
/// node is as good as down until storage recovers).
const MAX_HELD_ACTIONS: usize = 10_000;

/// The host of one node (see the crate docs).
pub struct Host<W: World> {
    pub(crate) world: W,
    pub(crate) chain: Arc<Chain>,
    pub(crate) config: HostConfig,
    pub(crate) machine: Consensus,
    pub(crate) key: Option<Keypair>,
    /// Actions not carried out yet, in order.
    pending: VecDeque<Action>,
    /// Answers to actions, fed back after the current batch.
    inputs: VecDeque<Input>,
    /// A record write or commit failed: waiting for [`Timer::Retry`].
    halted: bool,
    /// A failure the host cannot get past: it does nothing more.
    stopped: bool,
    /// The block the state machine asked for, waiting for transactions.
    build: Option<(u64, u32)>,
    /// The block asked for may be empty (its empty-block interval passed).
    build_empty_ok: bool,
    /// A wait for late precommits is scheduled for the block asked for.
    live_wait_set: bool,
    /// That wait is over.
    live_waited: bool,
    /// The height being decided at the last tick, and for how many ticks
    /// since.
    pub(crate) deciding: u64,
    pub(crate) still_ticks: u64,
    /// A peer that decided a height (the second field) this node is still
    /// deciding, to ask once the grace has passed.
    pub(crate) catchup_due: Option<(W::Peer, u64)>,
    /// Peers with a catch-up request of this host's in flight: one each, so
    /// a silent peer holds one slot.
    pub(crate) asking: BTreeSet<W::Peer>,
    pub(crate) requests: BTreeMap<RequestId, Pending<W::Peer>>,
    next_request: u64,
    pub(crate) sync: SyncClient<W::Peer>,
    ticks: u64,
    /// The highest height each peer has sent a message of.
    pub(crate) heard: BTreeMap<W::Peer, u64>,
    /// (peer, height, round): the round's proposal was handed to the peer.
    pub(crate) proposals_sent: BTreeSet<(W::Peer, u64, u32)>,
}

impl<W: World> Host<W> {
    /// A host for `chain` in `world`, validating with `key` if it is a
    /// validator's, resuming from `recovered`. Call [`Host::start`] next.
    pub fn new(
        config: HostConfig,
        chain: Arc<Chain>,
        world: W,
        key: Option<Keypair>,
        recovered: Recovered,
    ) -> Host<W> {
        let context = chain.context();
        let recovered = forget_overridden(context, recovered);
        let machine = Consensus::new(
            config.consensus.clone(),
            context.genesis.chain_id.clone(),
            context.genesis_hash,
            context.validators.clone(),
            key.clone(),
            recovered.sign_state,
            recovered.valid_block,
        );
        Host {
            world,
            chain,
            config,
            machine,
            key,
            pending: VecDeque::new(),
            inputs: VecDeque::new(),
            halted: false,
            stopped: false,
            build: None,
            build_empty_ok: false,
            live_wait_set: false,
            live_waited: false,
            deciding: 0,
            still_ticks: 0,
            catchup_due: None,
            asking: BTreeSet::new(),
            requests: BTreeMap::new(),
            next_request: 0,
            sync: SyncClient::default(),
            ticks: 0,
            heard: BTreeMap::new(),
            proposals_sent: BTreeSet::new(),
        }
    }

    /// Starts consensus at the height after the committed tip, and the tick.
    pub fn start(&mut self) {
        self.world.schedule(self.config.tick_ms, Timer::Tick);
        match self.chain.tip() {
            Ok(tip) => {
                if let Some(input) = self.start_input(tip.height + 1) {
                    self.feed(input);
                }
            }
            Err(e) => self.stop(format!("consensus cannot read the chain tip: {e}")),
        }
    }

    /// The world, for its owner.
    pub fn world(&self) -> &W {
        &self.world
    }

    /// The world, for its owner.
    pub fn world_mut(&mut self) -> &mut W {
        &mut self.world
    }

    /// The state machine, read only.
    pub fn consensus(&self) -> &Consensus {
        &self.machine
    }

    /// The chain.
    pub fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    /// Whether the host stopped for good (see [`Chain::failure`]).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Whether new transactions would make this host act: it is the
    /// proposer waiting for a block's worth of them ([`Host::on_work`]).
    /// A shell need not wake the host for new work otherwise.
    pub fn waits_for_work(&self) -> bool {
        self.build.is_some() && !self.stopped
    }

    /// A proposal or vote from gossip, verified by the network intake;
    /// `from` is the peer that delivered it.
    pub fn on_message(&mut self, from: W::Peer, message: Verified<ConsensusMessage>) {
        if let ConsensusMessage::Evidence(evidence) = &*message {
            // Checked by the intake against the set of its height; kept
            // for a block, not fed to consensus.
            self.keep_evidence((**evidence).clone(), false);
            return;
        }
        self.heard_from(from, message.height());
        if let ConsensusMessage::Vote(vote) = &*message {
            if vote.vote.height == self.chain.tip_height() {
                // A precommit that arrived after this node decided: it
                // joins the commit the next block carries.
                self.chain.add_late_precommit(vote);
                if self.live_wait_set {
                    self.try_build(false);
                }
            }
        }
        self.feed(Input::Message(message));
    }

    /// Whether a record write or a commit is failing (the host holds its
    /// actions until it succeeds).
    pub(crate) fn halted(&self) -> bool {
        self.halted
    }

    /// The mempool has new pending transactions.
    pub fn on_work(&mut self) {
        if self.build.is_some() && !self.stopped {
            self.try_build(false);
        }
    }

    /// A timer fired.
    pub fn on_timer(&mut self, timer: Timer) {
        if self.stopped {
            return;
        }
        match timer {
            Timer::Consensus(timeout) => self.feed(Input::Timeout(timeout)),
            Timer::EmptyBlock { height, round } => {
                if self.build == Some((height, round)) {
                    self.try_build(true);
                }
            }
            Timer::LiveSigners { height, round } => {
                if self.build == Some((height, round)) {
                    self.live_waited = true;
                    self.try_build(false);
                }
            }
            Timer::Tick => self.tick(),
            Timer::CatchupGrace => self.catch_up_now(),
            Timer::AnnounceDecided(height) => self.announce_now(height),
            Timer::Retry => {
                self.halted = false;
                self.run();
            }
            Timer::RequestDeadline(id) => {
                if self.requests.contains_key(&id) {
                    let failure = RequestFailure::NoAnswer("no answer in time".into());
                    self.answered(id, Err(failure));
                }
            }
            Timer::SyncStatusDeadline(round) => self.sync_status_deadline(round),
            Timer::SyncFetchPatience(fetch) => self.sync_fetch_patience(fetch),
        }
    }

    /// A peer answered request `id` (or the transport gave up on it).
    pub fn on_response(
        &mut self,
        peer: W::Peer,
        id: RequestId,
        answer: Result<Vec<u8>, RequestFailure>,
    ) {
        match self.requests.get(&id) {
            Some(pending) if pending.peer == peer => {}
            // Late (after its deadline), or not ours.
            _ => return,
        }
        let decoded = match answer {
            Ok(bytes) => match decode_response(&bytes, self.config.max_response_bytes) {
                Ok(response) => Ok(response),
                Err(e) => {
                    self.ban(peer, &format!("sent an answer that does not decode: {e}"));
                    Err(RequestFailure::NoAnswer(format!("undecodable answer: {e}")))
                }
            },
            Err(failure) => Err(failure),
        };
        self.answered(id, decoded);
    }

    fn answered(&mut self, id: RequestId, answer: Result<SyncResponse, RequestFailure>) {
        let Some(Pending { peer, purpose }) = self.requests.remove(&id) else {
            return;
        };
        match purpose {
            Purpose::SyncStatus { round } => self.sync_status_answer(round, peer, id, answer),
            Purpose::SyncBlocks { from } => self.sync_blocks_answer(peer, from, answer),
            Purpose::Catchup { height } => {
                self.asking.remove(&peer);
                self.catchup_answer(peer, height, answer);
            }
            Purpose::Decided => {
                self.asking.remove(&peer);
                if let Ok(response) = answer {
                    if !matches!(response, SyncResponse::Status { .. }) {
                        self.ban(peer, "answered a decision with something else");
                    }
                }
            }
        }
    }

    /// A peer's request. Those that need only the store are answered from
    /// it; the catch-up exchange here. `None`: no answer (storage failed).
    pub fn on_request(&mut self, from: W::Peer, request: SyncRequest) -> Option<SyncResponse> {
        match request {
            SyncRequest::Status | SyncRequest::Blocks { .. } => {
                sync::serve(&self.chain, &request, self.config.max_response_bytes)
            }
            SyncRequest::Decided { height } => {
                let tip = self.chain.tip().ok()?;
                if height > tip.height && !self.stopped {
                    self.peer_decided(from, height);
                }
                sync::serve(&self.chain, &SyncRequest::Status, 0)
            }
            SyncRequest::Catchup(catchup) => self.answer_catchup(from, catchup),
        }
    }

    /// Sends `request` to `peer`; the answer comes to [`Host::on_response`].
    /// `false` if too many requests are in flight.
    pub(crate) fn request(
        &mut self,
        peer: W::Peer,
        request: &SyncRequest,
        purpose: Purpose,
    ) -> bool {
        let of_peer = self.requests.values().filter(|p| p.peer == peer).count();
        if self.requests.len() >= MAX_REQUESTS_IN_FLIGHT || of_peer >= MAX_REQUESTS_PER_PEER {
            return false;
        }
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.requests.insert(id, Pending { peer, purpose });
        self.world.request(peer, id, request);
        self.world
            .schedule(self.config.request_timeout_ms, Timer::RequestDeadline(id));
        true
    }

    pub(crate) fn ban(&mut self, peer: W::Peer, reason: &str) {
        warn!(%peer, reason, "banning a peer");
        self.world.ban(peer, reason);
    }

    /// Stops the host for good, saying why.
    fn stop(&mut self, reason: String) {
        error!("{reason}");
        self.chain.set_failure(reason);
        self.stopped = true;
    }

    // ----- consensus: inputs in, actions out -----

    /// Feeds one input and carries out the actions, feeding their answers
    /// back, until nothing is left to do (or storage fails).
    pub(crate) fn feed(&mut self, input: Input) {
        if self.stopped {
            return;
        }
        if self.halted && self.pending.len() >= MAX_HELD_ACTIONS {
            debug!("storage is failing; an input is dropped");
            return;
        }
        let actions = self.machine.handle(input);
        self.hold(actions);
        self.run();
    }

    /// Queues actions to carry out in order. Evidence is recorded at once:
    /// it is bookkeeping, not an effect that anything waits on, and a
    /// failing disk must not delay it.
    fn hold(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Evidence(evidence) => self.record_evidence(evidence),
                other => self.pending.push_back(other),
            }
        }
    }

    fn record_evidence(&mut self, evidence: tally_ledger::Evidence) {
        self.keep_evidence(evidence, true);
    }

    /// Keeps evidence for a block; evidence this node found itself (`own`)
    /// is passed on, so that a node that saw only one of the two messages
    /// holds it too and any next proposer can record it.
    pub(crate) fn keep_evidence(&mut self, evidence: tally_ledger::Evidence, own: bool) {
        let evidence = evidence.canonical();
        let offence = evidence.offence();
        if self.chain.add_evidence(evidence.clone()) {
            warn!(validator = %offence.validator, height = offence.height, round = offence.round, step = offence.step, "validator signed two conflicting messages (step 0: proposal, 1: prevote, 2: precommit)");
            if own {
                self.world
                    .publish(&ConsensusMessage::Evidence(Box::new(evidence)));
            }
        }
    }

    /// Carries out pending actions in order. An action whose effect fails
    /// on storage stays first in line until [`Timer::Retry`]: nothing after
    /// it happens before it does (a vote never leaves before its record).
    fn run(&mut self) {
        while !self.halted && !self.stopped {
            #[cfg(feature = "sabotage")]
            self.sabotage_order();
            if let Some(action) = self.pending.pop_front() {
                match self.act(action) {
                    Ok(Some(input)) => self.inputs.push_back(input),
                    Ok(None) => {}
                    Err(held) => {
                        let Held { action, reason } = *held;
                        warn!("{reason}; retrying");
                        self.chain.set_failure(reason);
                        self.pending.push_front(action);
                        self.halted = true;
                        self.world.schedule(self.config.retry_ms, Timer::Retry);
                    }
                }
                continue;
            }
            match self.inputs.pop_front() {
                Some(input) => {
                    let actions = self.machine.handle(input);
                    self.hold(actions);
                }
                None => break,
            }
        }
        self.report_position();
    }

    #[cfg(feature = "sabotage")]
    fn sabotage_order(&mut self) {
        use crate::sabotage::{active, Sabotage};
        let record_then_vote = matches!(
            (self.pending.front(), self.pending.get(1)),
            (
                Some(Action::PersistSignState(_)),
                Some(Action::Broadcast(_))
            )
        );
        if active(Sabotage::VoteBeforeRecord) && record_then_vote {
            self.pending.swap(0, 1);
        }
    }

    fn report_position(&self) {
        let step = match self.machine.step() {
            Step::Propose => "propose",
            Step::Prevote => "prevote",
            Step::Precommit => "precommit",
            Step::Decided => "commit",
        };
        let position = Position {
            height: self.machine.height(),
            round: self.machine.round(),
            step,
        };
        self.chain.update_host_status(|status| {
            if status.position != Some(position) {
                debug!(
                    height = position.height,
                    round = position.round,
                    step,
                    "consensus moved"
                );
                status.position = Some(position);
            }
        });
    }

    /// Carries out one action; an answer to feed back, or (on a storage
    /// failure) the action back with the reason.
    fn act(&mut self, action: Action) -> Result<Option<Input>, Box<Held>> {
        match action {
            Action::PersistSignState(record) => {
                #[cfg(feature = "sabotage")]
                if crate::sabotage::active(crate::Sabotage::SkipSignRecord) {
                    return Ok(None);
                }
                match self.world.save_sign_state(&record) {
                    Ok(()) => Ok(None),
                    Err(e) => Err(held(Action::PersistSignState(record), e.to_string())),
                }
            }
            Action::PersistValidBlock(record) => {
                #[cfg(feature = "sabotage")]
                if crate::sabotage::active(crate::Sabotage::SkipSignRecord) {
                    return Ok(None);
                }
                match self.world.save_valid_block(&record) {
                    Ok(()) => Ok(None),
                    Err(e) => Err(held(Action::PersistValidBlock(record), e.to_string())),
                }
            }
            Action::Broadcast(message) => {
                self.world.publish(&message);
                Ok(None)
            }
            Action::ScheduleTimeout { timeout, after_ms } => {
                self.world.schedule(after_ms, Timer::Consensus(timeout));
                Ok(None)
            }
            Action::BuildProposal { height, round } => {
                self.request_build(height, round);
                Ok(None)
            }
            Action::ValidateBlock { height, block } => match self.chain.validate_block(&block) {
                Ok(valid) => Ok(Some(Input::BlockValidated {
                    height,
                    block_hash: block.hash(),
                    valid,
                })),
                Err(e) => Err(held(
                    Action::ValidateBlock { height, block },
                    format!("cannot validate block {height}: {e}"),
                )),
            },
            Action::Commit { block, commit } => self.commit_decided(block, commit),
            Action::Evidence(evidence) => {
                self.record_evidence(evidence);
                Ok(None)
            }
        }
    }

    /// Commits the decided block, through the one commit path; then starts
    /// the next height and tells every peer.
    fn commit_decided(
        &mut self,
        block: tally_ledger::Block,
        commit: Verified<tally_ledger::Commit>,
    ) -> Result<Option<Input>, Box<Held>> {
        let height = block.header.height;
        let certified = match CertifiedBlock::decided(block.clone(), commit.clone()) {
            Ok(certified) => certified,
            Err(e) => {
                self.stop(format!(
                    "the decided block {height} has another block's certificate: {e}"
                ));
                return Ok(None);
            }
        };
        match self.chain.commit_block(certified) {
            Ok(_) => {}
            Err(CommitFailure::Storage(e)) => {
                let reason = format!("could not store the decided block {height}: {e}");
                return Err(held(Action::Commit { block, commit }, reason));
            }
            // Decided but refused by the commit path: retrying cannot help,
            // and going on would fork this node from its peers.
            Err(e) => {
                self.stop(format!(
                    "the decided block {height} cannot be committed: {e}"
                ));
                return Ok(None);
            }
        }
        self.chain.clear_failure();
        self.build = None;
        self.proposals_sent.clear();
        self.announce_decided(height);
        // Sync may have committed further meanwhile.
        let tip = self.chain.tip().map_or(height, |t| t.height);
        Ok(self.start_input(height.max(tip) + 1))
    }

    /// The input that starts `height` with the validator set that signs it
    /// (from the chain's validator state); `None`, with the host stopped,
    /// if the state does not know that height's set.
    fn start_input(&mut self, height: u64) -> Option<Input> {
        #[allow(unused_mut)]
        let mut set = self.chain.validators().set_at(height);
        #[cfg(feature = "sabotage")]
        if crate::sabotage::active(crate::Sabotage::GenesisSetForever) {
            set = Some(self.chain.context().validators.clone());
        }
        match set {
            Some(validators) => Some(Input::StartHeight { height, validators }),
            None => {
                self.stop(format!(
                    "the validator state does not know the set of height {height}"
                ));
                None
            }
        }
    }

    /// The block a proposer asked for: now if there are transactions, or if
    /// the empty-block interval since the last block has passed; else when
    /// transactions arrive or the interval ends.
    fn request_build(&mut self, height: u64, round: u32) {
        self.build = Some((height, round));
        self.build_empty_ok = false;
        self.live_wait_set = false;
        self.live_waited = false;
        let Some(interval) = self.config.empty_block_interval_ms else {
            self.try_build(false);
            return;
        };
        // At most one empty block per interval, counted from the last
        // block: a proposer that starts the height late (it was catching
        // up) or in a later round must not make the others, who waited
        // already, wait longer.
        let since_tip = self.chain.tip().map_or(0, |tip| {
            self.world.now_ms().saturating_sub(tip.timestamp_ms)
        });
        let wait = match round {
            0 => interval.saturating_sub(since_tip),
            _ => 0,
        };
        if wait == 0 {
            self.try_build(true);
        } else {
            self.world
                .schedule(wait, Timer::EmptyBlock { height, round });
            self.try_build(false);
        }
    }

    /// Builds the requested block if there are transactions, or if
    /// `empty_ok`; feeds it to the state machine.
    fn try_build(&mut self, empty_ok: bool) {
        let Some((height, round)) = self.build else {
            return;
        };
        self.build_empty_ok |= empty_ok;
        if !self.build_empty_ok && !self.chain.has_pending() {
            return;
        }
        if let Some(wait) = self.live_wait(round) {
            if !self.live_wait_set {
                self.live_wait_set = true;
                self.world
                    .schedule(wait, Timer::LiveSigners { height, round });
            }
            return;
        }
        self.build = None;
        let Some(proposer) = self.key.as_ref().map(Keypair::address) else {
            return;
        };
        match self
            .chain
            .build_proposal(proposer, height, self.world.now_ms())
        {
            Ok(Some(block)) => self.feed(Input::ProposalBlock {
                height,
                round,
                block: Box::new(block),
            }),
            Ok(None) => {}
            // The round's propose timeout moves consensus on.
            Err(e) => error!(height, round, error = %e, "could not build a block"),
        }
    }

    /// How much longer to wait for late precommits before building: only
    /// in round 0, once per height, while the block would judge a
    /// validator-set change by an incomplete commit, and at most
    /// `live_wait_ms` after the last block.
    fn live_wait(&self, round: u32) -> Option<u64> {
        if round > 0 || self.live_waited || !self.chain.wants_more_signers() {
            return None;
        }
        let since_tip = self.chain.tip().map_or(0, |tip| {
            self.world.now_ms().saturating_sub(tip.timestamp_ms)
        });
        Some(self.config.live_wait_ms.saturating_sub(since_tip)).filter(|w| *w > 0)
    }

    /// The tip moved past the height being decided (block sync, catch-up):
    /// start over at the height after it.
    pub(crate) fn follow_tip(&mut self) {
        let Ok(tip) = self.chain.tip() else { return };
        if tip.height < self.machine.height() {
            return;
        }
        self.build = None;
        if let Some(input) = self.start_input(tip.height + 1) {
            self.feed(input);
        }
    }

    fn tick(&mut self) {
        self.world.schedule(self.config.tick_ms, Timer::Tick);
        self.ticks += 1;
        let peers = self.world.peers();
        self.heard.retain(|p, _| peers.contains(p));
        let count = peers.len();
        self.chain.update_host_status(|s| s.peers = count);
        self.check_stuck();
        let tick_ms = self.config.tick_ms.max(1);
        if self
            .ticks
            .is_multiple_of((self.config.sync_interval_ms / tick_ms).max(1))
        {
            self.start_sync_round();
        }
        if self
            .ticks
            .is_multiple_of((self.config.expiry_interval_ms / tick_ms).max(1))
        {
            self.chain.expire(self.world.now_ms());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tally_consensus::SignStep;
    use tally_ledger::devnet::devnet_genesis;
    use tally_ledger::{devnet_key, Block, GenesisValidator, Hash, Header, BLOCK_VERSION};

    fn block_naming(chain: &ChainContext, height: u64, validators_hash: Hash) -> Block {
        Block {
            header: Header {
                version: BLOCK_VERSION,
                chain_id: chain.genesis.chain_id.clone(),
                height,
                parent_hash: Hash::ZERO,
                timestamp_ms: 7,
                proposer: devnet_key("validator-0").address(),
                tx_root: tally_ledger::tx_root(&[]),
                tx_count: 0,
                state_root: Hash::ZERO,
                validators_hash,
                next_validators_hash: validators_hash,
                last_commit_hash: tally_ledger::last_commit_hash(&None),
                evidence_hash: tally_ledger::evidence_hash(&[]),
            },
            txs: vec![],
            last_commit: None,
            evidence: vec![],
        }
    }

    fn locked_on(block: &Block) -> Recovered {
        let hash = block.hash();
        Recovered {
            sign_state: Some(SignState {
                height: block.header.height,
                round: 2,
                step: SignStep::Precommit,
                block_hash: Some(hash),
                valid_round: None,
                locked: Some((1, hash)),
                valid: Some((1, hash)),
                prevote: Some(Some(hash)),
                earlier: None,
            }),
            valid_block: Some(ValidBlockRecord {
                block: block.clone(),
                round: 1,
                polka: Vec::new(),
            }),
        }
    }

    /// A lock on a block of the set an override replaced is forgotten at
    /// the override's height, and only there, and only for such a block.
    #[test]
    fn a_lock_on_a_block_of_the_replaced_set_is_forgotten() {
        let plain = ChainContext::new(devnet_genesis(4, "tally-dev").unwrap());
        let two: Vec<GenesisValidator> = plain.validators.validators()[..2].to_vec();
        let chain = plain.clone().with_overrides(vec![(5, two)]).unwrap();
        let new_set = chain.override_at(5).unwrap().hash();
        let old = block_naming(&chain, 5, plain.validators.hash());
        let forgotten = forget_overridden(&chain, locked_on(&old));
        assert!(forgotten.valid_block.is_none());
        let state = forgotten.sign_state.unwrap();
        assert_eq!((state.locked, state.valid), (None, None));
        assert_eq!(
            (state.height, state.round, state.step),
            (5, 2, SignStep::Precommit),
            "the signing record still guards what was signed"
        );
        // A lock taken under the override's own set is kept.
        let new = block_naming(&chain, 5, new_set);
        let kept = forget_overridden(&chain, locked_on(&new));
        assert!(kept.valid_block.is_some());
        assert!(kept.sign_state.unwrap().locked.is_some());
        // Without an override at that height nothing changes.
        let elsewhere = block_naming(&chain, 6, plain.validators.hash());
        let kept = forget_overridden(&chain, locked_on(&elsewhere));
        assert!(kept.valid_block.is_some());
        let kept = forget_overridden(&plain, locked_on(&old));
        assert!(kept.sign_state.unwrap().locked.is_some());
    }
}

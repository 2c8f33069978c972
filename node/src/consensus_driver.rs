//! The async shell around the consensus state machine: it feeds inputs
//! (timeouts, the mempool's blocks, validation results) in and carries the
//! state machine's actions out, in order — persisting the signing record
//! before anything signed leaves, building and validating blocks, and
//! committing decided blocks through the node's one commit path.
//!
//! Proposals and votes of other validators arrive from the network; the
//! node's own are published to it (and counted by the state machine as it
//! signs them, so a single validator needs no network). When block sync
//! commits blocks past the height consensus is deciding, the driver starts
//! consensus again at the height after the new tip.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tally_consensus::{
    Action, Config, Consensus, Input, SignState, Step, Timeout, ValidBlockRecord,
};
use tally_gossip::{Catchup, GossipError, NodeId, SyncRequest, SyncResponse, Topic};
use tally_ledger::{decode_strict, Block, BlockMeta, ConsensusMessage, Hash, Keypair, StoredBlock};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::node::{CommitFailure, ConsensusPosition, Node};

/// The network as consensus sees it: where its messages go and where
/// other validators' messages come from.
pub struct ConsensusNet {
    /// Publishes this node's proposals and votes.
    pub network: tally_gossip::Handle,
    /// Proposals and votes from peers (already checked to be signed by a
    /// validator of the genesis).
    pub messages: mpsc::Receiver<ConsensusMessage>,
    /// Peers' catch-up requests and decisions, from the sync server.
    pub catchup: mpsc::Receiver<FromPeer>,
}

/// What the sync server hands the driver.
pub enum FromPeer {
    /// A peer's [`SyncRequest::Catchup`] for a height this node has not
    /// committed.
    Catchup(CatchupQuery),
    /// A peer committed a height this node has not.
    Decided {
        /// The peer.
        from: NodeId,
        /// The height it committed.
        height: u64,
    },
}

/// A peer's [`SyncRequest::Catchup`] for the height this node has not
/// committed yet.
pub struct CatchupQuery {
    /// Who asks.
    pub from: NodeId,
    /// What it asks (its messages are not checked yet).
    pub request: Catchup,
    /// Where this node's messages of that height go.
    pub reply: oneshot::Sender<Vec<ConsensusMessage>>,
}

/// A peer's answer to this node's catch-up request.
struct CatchupAnswer {
    peer: NodeId,
    height: u64,
    answer: Result<SyncResponse, GossipError>,
}

/// How long to wait before retrying a failed commit or record write.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);

/// How often the driver checks whether consensus is stuck. When its
/// position (height, round, step) has not moved for [`STUCK_AFTER`], it
/// sends its own proposal and votes of the current round, and the votes it
/// holds, to every peer directly (a catch-up request): a peer that was cut
/// off, paused or restarted missed them, and without them a round that
/// needs its vote never completes. Peers answer with theirs, or with the
/// decided block if they are past this height.
const STUCK_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// No move of consensus for this long counts as stuck.
const STUCK_AFTER: Duration = Duration::from_secs(1);

/// After a peer says it decided a height this node is still deciding, how
/// long to wait for this node's own decision before asking that peer for
/// the block: an honest node is usually only a message behind.
const CATCHUP_GRACE: Duration = Duration::from_millis(200);

/// Most catch-up requests and answers in flight at once.
const MAX_CATCHUP_IN_FLIGHT: usize = 64;

/// Most messages one catch-up request or answer may carry with `validators`
/// validators: a proposal and a re-proposed value's polka, and two votes
/// per validator in each kind of two rounds.
pub fn max_catchup_messages(validators: usize) -> usize {
    16 + 5 * validators
}

/// Most own messages kept for rebroadcast (a few per round).
const MAX_OWN_MESSAGES: usize = 16;

/// Largest signing record file read.
const MAX_SIGN_STATE_BYTES: u64 = 4096;

/// Reads the signing record, if there is one. A damaged record is an error:
/// starting without it could sign a message that conflicts with one already
/// sent.
pub fn load_sign_state(path: &Path) -> anyhow::Result<Option<SignState>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= MAX_SIGN_STATE_BYTES,
        "{} is larger than a signing record can be",
        path.display()
    );
    let record = SignState::decode(&bytes, MAX_SIGN_STATE_BYTES as usize).map_err(|e| {
        anyhow::anyhow!(
            "{} is damaged ({e}). It records what this validator signed last and protects it \
             from signing conflicting votes; restore it from a backup rather than deleting it",
            path.display()
        )
    })?;
    Ok(Some(record))
}

/// Reads the valid-block record, if there is one; `max_bytes` bounds it
/// (the largest block plus its polka).
pub fn load_valid_block(path: &Path, max_bytes: usize) -> anyhow::Result<Option<ValidBlockRecord>> {
    if !path.exists() {
        return Ok(None);
    }
    let len = std::fs::metadata(path)?.len();
    anyhow::ensure!(
        len as usize <= max_bytes,
        "{} is larger than any block can be",
        path.display()
    );
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let record = decode_strict::<ValidBlockRecord>(&bytes, max_bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is damaged ({e}); restore it from a backup",
            path.display()
        )
    })?;
    Ok(Some(record))
}

/// Block production settings of the driver.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Timeouts and bounds of the state machine.
    pub consensus: Config,
    /// How long a proposer waits for transactions before proposing an empty
    /// block (`None`: wait for transactions; rounds time out meanwhile).
    pub empty_block_interval: Option<Duration>,
    /// Where the signing record lives.
    pub sign_state_path: PathBuf,
    /// Where the valid-block record lives.
    pub valid_block_path: PathBuf,
}

/// A block the state machine asked for, waiting for transactions.
struct PendingBuild {
    height: u64,
    round: u32,
    empty_at: Option<Instant>,
}

struct Driver {
    node: Arc<Node>,
    machine: Consensus,
    key: Option<Keypair>,
    config: DriverConfig,
    timers: Vec<(Instant, Timeout)>,
    build: Option<PendingBuild>,
    shutdown: watch::Receiver<bool>,
    network: Option<tally_gossip::Handle>,
    tip: watch::Receiver<BlockMeta>,
    /// This node's messages of the current height, for rebroadcast.
    own: VecDeque<ConsensusMessage>,
    /// Where consensus was at the last stuck check, and since when.
    position: (u64, u32, Step),
    moved_at: Instant,
    /// When consensus last sent catch-up requests for being stuck.
    pushed_at: Option<Instant>,
    /// A peer that decided a height (the last field) this node is still
    /// deciding, to ask if this node has not decided it by then.
    catchup_due: Option<(Instant, NodeId, u64)>,
    answers: mpsc::Sender<CatchupAnswer>,
    /// Peers with a request of the driver's in flight: one at a time each,
    /// so a silent peer holds one slot, not all of them.
    asking: HashSet<NodeId>,
}

/// Runs consensus until `shutdown` turns true.
pub async fn run(
    node: Arc<Node>,
    key: Option<Keypair>,
    config: DriverConfig,
    record: Option<SignState>,
    valid_block: Option<ValidBlockRecord>,
    net: Option<ConsensusNet>,
    shutdown: watch::Receiver<bool>,
) {
    let chain = node.chain().clone();
    let (network, messages, catchup) = match net {
        Some(net) => (Some(net.network), Some(net.messages), Some(net.catchup)),
        None => (None, None, None),
    };
    let (answers, answers_rx) = mpsc::channel(MAX_CATCHUP_IN_FLIGHT);
    let machine = Consensus::new(
        config.consensus.clone(),
        chain.genesis.chain_id.clone(),
        chain.genesis_hash,
        chain.validators.clone(),
        key.clone(),
        record,
        valid_block,
    );
    let tip = node.subscribe_tip();
    let mut driver = Driver {
        node,
        machine,
        key,
        config,
        timers: Vec::new(),
        build: None,
        shutdown,
        network,
        tip,
        own: VecDeque::new(),
        position: (0, 0, Step::Propose),
        moved_at: Instant::now(),
        pushed_at: None,
        catchup_due: None,
        answers,
        asking: HashSet::new(),
    };
    let start = match driver.node.tip() {
        Ok(tip) => tip.height + 1,
        Err(e) => {
            driver
                .node
                .set_failure(format!("consensus cannot read the chain tip: {e}"));
            return;
        }
    };
    if driver.feed(Input::StartHeight(start)).await.is_err() {
        return;
    }
    driver.run(messages, catchup, answers_rx).await;
}

/// The driver stopped (shutdown, or a failure it cannot get past).
struct Stopped;

impl Driver {
    async fn run(
        &mut self,
        mut messages: Option<mpsc::Receiver<ConsensusMessage>>,
        mut catchup: Option<mpsc::Receiver<FromPeer>>,
        mut answers: mpsc::Receiver<CatchupAnswer>,
    ) {
        let mut stuck_check = tokio::time::interval(STUCK_CHECK_INTERVAL);
        loop {
            let next_timer = self.timers.iter().map(|(at, _)| *at).min();
            let empty_at = self.build.as_ref().and_then(|b| b.empty_at);
            let waiting_to_build = self.build.is_some();
            let catchup_at = self.catchup_due.map(|(at, _, _)| at);
            let step = tokio::select! {
                _ = self.shutdown.changed() => return,
                _ = sleep_until(next_timer) => self.fire_timers().await,
                _ = self.node.work_arrived(), if waiting_to_build => self.build_and_feed(false).await,
                _ = sleep_until(empty_at) => self.build_and_feed(true).await,
                Some(message) = next_message(&mut messages) => self.feed(Input::Message(message)).await,
                Ok(()) = self.tip.changed() => self.follow_tip().await,
                Some(from_peer) = next_message(&mut catchup) => match from_peer {
                    FromPeer::Catchup(query) => self.answer_catchup(query).await,
                    FromPeer::Decided { from, height } => {
                        self.peer_decided(from, height);
                        Ok(())
                    }
                },
                Some(answer) = answers.recv() => self.on_catchup_answer(answer).await,
                _ = sleep_until(catchup_at) => self.catch_up_now().await,
                _ = stuck_check.tick() => self.check_stuck().await,
            };
            if step.is_err() {
                return;
            }
        }
    }

    /// Block sync committed past the height being decided: start over at
    /// the height after the new tip.
    async fn follow_tip(&mut self) -> Result<(), Stopped> {
        let tip = self.tip.borrow_and_update().height;
        if tip < self.machine.height() {
            return Ok(());
        }
        self.timers.clear();
        self.build = None;
        self.feed(Input::StartHeight(tip + 1)).await
    }

    /// This node's votes of the height being decided that a peer may lack:
    /// its own of the current and previous round, and the votes it holds
    /// for them, anyone's; and its proposal of `round` unless the peer
    /// holds that one (`peer_has`).
    fn messages_for_peer(&self, round: u32, peer_has: Option<Hash>) -> Vec<ConsensusMessage> {
        let height = self.machine.height();
        let since = self.machine.round().saturating_sub(1);
        let own = self.own.iter().filter(|message| match message {
            ConsensusMessage::Vote(v) => v.vote.height == height && v.vote.round >= since,
            ConsensusMessage::Proposal(_) => false,
        });
        let relayed = self
            .machine
            .votes_to_relay()
            .into_iter()
            .map(ConsensusMessage::Vote);
        let mut messages: Vec<ConsensusMessage> = own.cloned().chain(relayed).collect();
        if let Some(proposal) = self.machine.proposal(round) {
            if Some(proposal.core.block_hash) != peer_has {
                messages.push(ConsensusMessage::Proposal(Box::new(proposal)));
            }
        }
        messages
    }

    /// A catch-up request for the height being decided, with this node's
    /// votes.
    fn catchup_request(&self) -> SyncRequest {
        let round = self.machine.round();
        SyncRequest::Catchup {
            height: self.machine.height(),
            round,
            proposal: self.machine.proposal_hash(round),
            // The asker's own proposal is not pushed: a peer that lacks it
            // asks, and gets it in the answer.
            messages: self
                .messages_for_peer(round, None)
                .into_iter()
                .filter(|m| matches!(m, ConsensusMessage::Vote(_)))
                .collect(),
        }
    }

    /// When consensus has not moved for [`STUCK_AFTER`], sends its
    /// messages of the height to every peer directly, once per
    /// [`STUCK_AFTER`] while it stays stuck.
    async fn check_stuck(&mut self) -> Result<(), Stopped> {
        let now = Instant::now();
        let position = (
            self.machine.height(),
            self.machine.round(),
            self.machine.step(),
        );
        if position != self.position {
            self.position = position;
            self.moved_at = now;
            self.pushed_at = None;
            return Ok(());
        }
        let since = self.pushed_at.unwrap_or(self.moved_at);
        if now.duration_since(since) < STUCK_AFTER {
            return Ok(());
        }
        self.pushed_at = Some(now);
        let request = self.catchup_request();
        self.ask(None, position.0, request).await;
        Ok(())
    }

    /// Sends `request` to `peer`, or to every connected peer, except those
    /// still answering an earlier one; answers come back to the driver.
    async fn ask(&mut self, peer: Option<NodeId>, height: u64, request: SyncRequest) {
        let Some(network) = self.network.clone() else {
            return;
        };
        let peers = match peer {
            Some(peer) => vec![peer],
            None => match network.peers().await {
                Ok(peers) => {
                    let mut ids: Vec<NodeId> = peers.into_iter().map(|p| p.id).collect();
                    ids.dedup();
                    ids
                }
                Err(_) => return,
            },
        };
        for peer in peers {
            if self.asking.contains(&peer) {
                continue;
            }
            let Ok(permit) = self.answers.clone().try_reserve_owned() else {
                return;
            };
            self.asking.insert(peer);
            let network = network.clone();
            let request = request.clone();
            tokio::spawn(async move {
                let answer = network.request(peer, request).await;
                permit.send(CatchupAnswer {
                    peer,
                    height,
                    answer,
                });
            });
        }
    }

    /// A peer asks for this node's messages of a height this node has not
    /// committed: count its messages, answer with this node's, and if the
    /// peer is past the height being decided here, plan to ask it.
    async fn answer_catchup(&mut self, query: CatchupQuery) -> Result<(), Stopped> {
        let CatchupQuery {
            from,
            request,
            reply,
        } = query;
        let Catchup {
            height,
            round,
            proposal,
            messages,
        } = request;
        let height_here = self.machine.height();
        // Answer first: the peer waits, and feeding may commit a block.
        let mine = match height == height_here {
            true => self.messages_for_peer(round, proposal),
            false => Vec::new(),
        };
        let _ = reply.send(mine);
        if height > height_here {
            // It is past the height being decided here.
            self.peer_decided(from, height - 1);
        }
        self.feed_from_peer(from, messages).await
    }

    /// `peer` committed `height`: if this node is still deciding it, ask
    /// that peer for it after a short grace (it is usually only a message
    /// behind and decides by itself).
    fn peer_decided(&mut self, peer: NodeId, height: u64) {
        let deciding = self.machine.height();
        if height < deciding {
            return;
        }
        if height > deciding {
            // Whole heights behind: block sync fetches them in batches.
            self.node.want_sync();
        }
        match &mut self.catchup_due {
            Some((_, due_peer, due_height)) if *due_height < height => {
                (*due_peer, *due_height) = (peer, height);
            }
            Some(_) => {}
            None => self.catchup_due = Some((Instant::now() + CATCHUP_GRACE, peer, height)),
        }
    }

    /// The grace after a peer's decision passed: if this node is still at
    /// that height, ask the peer for it.
    async fn catch_up_now(&mut self) -> Result<(), Stopped> {
        let Some((_, peer, decided)) = self.catchup_due.take() else {
            return Ok(());
        };
        let height = self.machine.height();
        if height <= decided {
            let request = self.catchup_request();
            self.ask(Some(peer), height, request).await;
        }
        Ok(())
    }

    async fn on_catchup_answer(&mut self, answer: CatchupAnswer) -> Result<(), Stopped> {
        let CatchupAnswer {
            peer,
            height,
            answer,
        } = answer;
        self.asking.remove(&peer);
        match answer {
            Ok(SyncResponse::Messages(messages)) => self.feed_from_peer(peer, messages).await,
            // The peer committed the height: the decision itself, which
            // goes through the commit path like any synced block (the tip
            // moves, and consensus starts again after it).
            Ok(SyncResponse::Blocks(mut blocks)) => {
                let stored = match (blocks.pop(), blocks.is_empty()) {
                    (Some(stored), true) if stored.block.header.height == height => stored,
                    _ => {
                        let reason = format!("answered a catch-up for {height} with other blocks");
                        self.ban(peer, &reason).await;
                        return Ok(());
                    }
                };
                if stored.block.header.height != self.tip.borrow().height + 1 {
                    return Ok(()); // committed meanwhile
                }
                let node = self.node.clone();
                match tokio::task::spawn_blocking(move || node.commit_block(stored)).await {
                    Ok(Ok(_)) => {
                        info!(height, %peer, "caught up: a peer sent the decided block");
                        // It may be further ahead still: ask again at once.
                        self.peer_decided(peer, height);
                        if let Some(due) = &mut self.catchup_due {
                            due.0 = Instant::now();
                        }
                    }
                    Ok(Err(CommitFailure::Storage(e))) => {
                        warn!(height, error = %e, "could not store a block a peer sent");
                    }
                    Ok(Err(e)) => self.ban(peer, &format!("sent block {height}: {e}")).await,
                    Err(e) => return Err(self.fail(format!("commit task failed: {e}"))),
                }
                Ok(())
            }
            // The answer to a decision: the peer's tip (it learns from
            // the request itself if it is behind).
            Ok(SyncResponse::Status { .. }) => Ok(()),
            Err(GossipError::BadResponse(e)) => {
                self.ban(peer, &format!("sent an invalid catch-up answer: {e}"))
                    .await;
                Ok(())
            }
            Err(e) => {
                debug!(%peer, error = %e, "catch-up request failed");
                Ok(())
            }
        }
    }

    /// Feeds messages a peer sent directly (not through gossip, so not
    /// checked yet): each must be signed as gossip requires; one that is
    /// not gets the peer banned and the rest ignored.
    async fn feed_from_peer(
        &mut self,
        peer: NodeId,
        messages: Vec<ConsensusMessage>,
    ) -> Result<(), Stopped> {
        let max = max_catchup_messages(self.node.chain().validators.validators().len());
        if messages.len() > max {
            let reason = format!("sent {} catch-up messages (at most {max})", messages.len());
            self.ban(peer, &reason).await;
            return Ok(());
        }
        let chain = self.node.chain().clone();
        for message in messages {
            // Most of what a peer sends is known here already: a vote
            // counted before changes nothing and need not be checked.
            if let ConsensusMessage::Vote(v) = &message {
                if self.machine.votes().has_from(&v.validator, &v.vote) {
                    continue;
                }
            }
            if !tally_gossip::is_authentic(&chain, &message) {
                self.ban(peer, "sent a catch-up message that is not validly signed")
                    .await;
                return Ok(());
            }
            self.feed(Input::Message(message)).await?;
        }
        Ok(())
    }

    async fn ban(&self, peer: NodeId, reason: &str) {
        warn!(%peer, reason, "consensus catch-up: banning peer");
        if let Some(network) = &self.network {
            let _ = network
                .ban(peer, format!("consensus catch-up: {reason}"))
                .await;
        }
    }

    fn report_position(&self) {
        let step = match self.machine.step() {
            Step::Propose => "propose",
            Step::Prevote => "prevote",
            Step::Precommit => "precommit",
            Step::Decided => "commit",
        };
        let position = ConsensusPosition {
            height: self.machine.height(),
            round: self.machine.round(),
            step,
        };
        if self.node.consensus_position() != Some(position) {
            debug!(
                height = position.height,
                round = position.round,
                step,
                "consensus moved"
            );
        }
        self.node.set_consensus_position(position);
    }

    async fn fire_timers(&mut self) -> Result<(), Stopped> {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.timers.drain(..).partition(|(at, _)| *at <= now);
        self.timers = later;
        for (_, timeout) in due {
            self.feed(Input::Timeout(timeout)).await?;
        }
        Ok(())
    }

    async fn build_and_feed(&mut self, empty_ok: bool) -> Result<(), Stopped> {
        match self.try_build(empty_ok).await? {
            Some(input) => self.feed(input).await,
            None => Ok(()),
        }
    }

    /// Builds the requested block if there are transactions, or if
    /// `empty_ok` (the empty-block interval passed); returns it as input.
    async fn try_build(&mut self, empty_ok: bool) -> Result<Option<Input>, Stopped> {
        let Some(pending) = &self.build else {
            return Ok(None);
        };
        if !empty_ok && !self.node.has_pending() {
            return Ok(None);
        }
        let (height, round) = (pending.height, pending.round);
        self.build = None;
        let Some(proposer) = self.key.as_ref().map(Keypair::address) else {
            return Ok(None);
        };
        let node = self.node.clone();
        let built =
            tokio::task::spawn_blocking(move || node.build_proposal(proposer, height)).await;
        match built {
            Ok(Ok(Some(block))) => Ok(Some(Input::ProposalBlock {
                height,
                round,
                block,
            })),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => {
                // The round's propose timeout moves consensus on.
                error!(height, round, error = %e, "could not build a block");
                Ok(None)
            }
            Err(e) => Err(self.fail(format!("block builder task failed: {e}"))),
        }
    }

    fn fail(&self, reason: String) -> Stopped {
        error!("{reason}");
        self.node.set_failure(reason);
        Stopped
    }

    /// Feeds one input and carries out every resulting action, feeding the
    /// answers back, until nothing is left to do.
    async fn feed(&mut self, input: Input) -> Result<(), Stopped> {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            for action in self.machine.handle(input) {
                if let Some(next) = self.act(action).await? {
                    inputs.push_back(next);
                }
            }
        }
        self.report_position();
        Ok(())
    }

    async fn act(&mut self, action: Action) -> Result<Option<Input>, Stopped> {
        match action {
            Action::PersistSignState(record) => {
                let path = self.config.sign_state_path.clone();
                self.persist(path, borsh::to_vec(&record))
                    .await
                    .map(|()| None)
            }
            Action::PersistValidBlock(record) => {
                let path = self.config.valid_block_path.clone();
                self.persist(path, borsh::to_vec(&record))
                    .await
                    .map(|()| None)
            }
            Action::Broadcast(message) => {
                let height = self.machine.height();
                self.own.retain(|m| match m {
                    ConsensusMessage::Vote(v) => v.vote.height == height,
                    ConsensusMessage::Proposal(p) => p.core.height == height,
                });
                if self.own.len() >= MAX_OWN_MESSAGES {
                    self.own.pop_front();
                }
                // Others' votes relayed with a proposal are not ours to keep:
                // the state machine hands them out again when needed.
                let me = self.key.as_ref().map(Keypair::address);
                let signed_by_me = match &message {
                    ConsensusMessage::Vote(v) => Some(v.validator) == me,
                    ConsensusMessage::Proposal(p) => Some(p.proposer) == me,
                };
                if signed_by_me {
                    self.own.push_back(message.clone());
                }
                if let Some(network) = &self.network {
                    match borsh::to_vec(&message) {
                        Ok(bytes) => {
                            // Best effort: with no peers (a single validator,
                            // or all others down) there is no one to tell, and
                            // timeouts cover lost messages.
                            if let Err(e) = network.publish(Topic::Consensus, bytes).await {
                                debug!(error = %e, "consensus message not published");
                            }
                        }
                        Err(e) => error!(error = %e, "cannot encode a consensus message"),
                    }
                }
                Ok(None)
            }
            Action::ScheduleTimeout { timeout, after_ms } => {
                self.timers
                    .push((Instant::now() + Duration::from_millis(after_ms), timeout));
                Ok(None)
            }
            Action::BuildProposal { height, round } => {
                // At most one empty block per interval, counted from the
                // last block: a proposer that starts the height late (it
                // was catching up) or in a later round must not make the
                // others, who waited already, wait longer.
                let since_tip = Duration::from_millis(
                    crate::node::now_ms().saturating_sub(self.tip.borrow().timestamp_ms),
                );
                let empty_at = self.config.empty_block_interval.map(|interval| {
                    let wait = match round {
                        0 => interval.saturating_sub(since_tip),
                        _ => Duration::ZERO,
                    };
                    Instant::now() + wait
                });
                self.build = Some(PendingBuild {
                    height,
                    round,
                    empty_at,
                });
                self.try_build(false).await
            }
            Action::ValidateBlock { height, block } => self.validate(height, block).await.map(Some),
            Action::Commit { block, commit } => {
                let height = block.header.height;
                self.commit(StoredBlock { block, commit }).await?;
                self.timers.clear();
                self.build = None;
                // Tell every peer at once that this height is decided: one
                // that missed the decision asks for it after a short grace
                // instead of waiting for its round to time out.
                self.ask(None, height, SyncRequest::Decided { height })
                    .await;
                // Sync may have committed further meanwhile.
                let tip = self.tip.borrow_and_update().height;
                Ok(Some(Input::StartHeight(height.max(tip) + 1)))
            }
            Action::Evidence(evidence) => {
                warn!(validator = %evidence.first.validator, height = evidence.first.vote.height, round = evidence.first.vote.round, "validator signed two conflicting votes");
                self.node.record_evidence(evidence);
                Ok(None)
            }
        }
    }

    /// Writes a record durably before anything it covers is sent; retries
    /// until it succeeds, because going on without it is not allowed.
    async fn persist(
        &mut self,
        path: PathBuf,
        bytes: std::io::Result<Vec<u8>>,
    ) -> Result<(), Stopped> {
        let bytes = match bytes {
            Ok(bytes) => Arc::new(bytes),
            Err(e) => return Err(self.fail(format!("cannot encode a consensus record: {e}"))),
        };
        loop {
            let (p, b) = (path.clone(), bytes.clone());
            match tokio::task::spawn_blocking(move || crate::home::write_atomically(&p, &b)).await {
                Ok(Ok(())) => {
                    self.node.clear_failure();
                    return Ok(());
                }
                Ok(Err(e)) => {
                    self.node
                        .set_failure(format!("cannot write a consensus record: {e:#}"));
                    self.pause().await?;
                }
                Err(e) => return Err(self.fail(format!("signing record task failed: {e}"))),
            }
        }
    }

    async fn validate(&mut self, height: u64, block: Block) -> Result<Input, Stopped> {
        let block_hash = block.hash();
        loop {
            let node = self.node.clone();
            let b = block.clone();
            match tokio::task::spawn_blocking(move || node.validate_block(&b)).await {
                Ok(Ok(valid)) => {
                    return Ok(Input::BlockValidated {
                        height,
                        block_hash,
                        valid,
                    })
                }
                Ok(Err(e)) => {
                    self.node
                        .set_failure(format!("cannot validate block {height}: {e}"));
                    self.pause().await?;
                }
                Err(e) => return Err(self.fail(format!("validation task failed: {e}"))),
            }
        }
    }

    /// Commits a decided block, retrying the identical block until storage
    /// takes it: the height is decided, so there is nothing else to do.
    async fn commit(&mut self, stored: StoredBlock) -> Result<(), Stopped> {
        loop {
            let node = self.node.clone();
            let s = stored.clone();
            match tokio::task::spawn_blocking(move || node.commit_block(s)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(CommitFailure::Storage(e))) => {
                    error!(height = stored.block.header.height, error = %e, "could not store the decided block; retrying");
                    self.pause().await?;
                }
                // Decided but refused by the commit path: retrying cannot
                // help, and going on would fork this node from its peers.
                Ok(Err(e)) => {
                    let height = stored.block.header.height;
                    return Err(self.fail(format!(
                        "the decided block {height} cannot be committed: {e}"
                    )));
                }
                Err(e) => return Err(self.fail(format!("commit task failed: {e}"))),
            }
        }
    }

    async fn pause(&mut self) -> Result<(), Stopped> {
        tokio::select! {
            _ = self.shutdown.changed() => Err(Stopped),
            _ = tokio::time::sleep(RETRY_AFTER_FAILURE) => Ok(()),
        }
    }
}

async fn next_message<T>(messages: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match messages {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

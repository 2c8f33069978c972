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

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tally_consensus::{
    Action, Config, Consensus, Input, SignState, Step, Timeout, ValidBlockRecord,
};
use tally_gossip::Topic;
use tally_ledger::{decode_strict, Block, BlockMeta, ConsensusMessage, Keypair, StoredBlock};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, warn};

use crate::node::{CommitFailure, ConsensusPosition, Node};

/// The network as consensus sees it: where its messages go and where
/// other validators' messages come from.
pub struct ConsensusNet {
    /// Publishes this node's proposals and votes.
    pub network: tally_gossip::Handle,
    /// Proposals and votes from peers (already checked to be signed by a
    /// validator of the genesis).
    pub messages: mpsc::Receiver<ConsensusMessage>,
}

/// How long to wait before retrying a failed commit or record write.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);

/// When the height has not moved for this long, the node publishes its own
/// proposal and votes of the current round again: a peer that was
/// disconnected or restarted missed them, and without them a round that
/// needs its vote never completes.
const REBROADCAST_INTERVAL: Duration = Duration::from_secs(2);

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
    /// The height at the last rebroadcast tick.
    height_at_tick: u64,
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
    let (network, messages) = match net {
        Some(net) => (Some(net.network), Some(net.messages)),
        None => (None, None),
    };
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
        height_at_tick: 0,
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
    driver.run(messages).await;
}

/// The driver stopped (shutdown, or a failure it cannot get past).
struct Stopped;

impl Driver {
    async fn run(&mut self, mut messages: Option<mpsc::Receiver<ConsensusMessage>>) {
        let mut rebroadcast = tokio::time::interval(REBROADCAST_INTERVAL);
        loop {
            let next_timer = self.timers.iter().map(|(at, _)| *at).min();
            let empty_at = self.build.as_ref().and_then(|b| b.empty_at);
            let waiting_to_build = self.build.is_some();
            let step = tokio::select! {
                _ = self.shutdown.changed() => return,
                _ = sleep_until(next_timer) => self.fire_timers().await,
                _ = self.node.work_arrived(), if waiting_to_build => self.build_and_feed(false).await,
                _ = sleep_until(empty_at) => self.build_and_feed(true).await,
                Some(message) = next_message(&mut messages) => self.feed(Input::Message(message)).await,
                Ok(()) = self.tip.changed() => self.follow_tip().await,
                _ = rebroadcast.tick() => self.rebroadcast().await,
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

    /// Publishes this round's (and the previous round's) own messages and
    /// the votes held for them again if the height has not moved since the
    /// last tick.
    async fn rebroadcast(&mut self) -> Result<(), Stopped> {
        let height = self.machine.height();
        let stuck = height == self.height_at_tick;
        self.height_at_tick = height;
        let Some(network) = &self.network else {
            return Ok(());
        };
        if !stuck {
            return Ok(());
        }
        let since = self.machine.round().saturating_sub(1);
        let own = self.own.iter().filter(|message| {
            let (h, round) = match message {
                ConsensusMessage::Vote(v) => (v.vote.height, v.vote.round),
                ConsensusMessage::Proposal(p) => (p.core.height, p.core.round),
            };
            h == height && round >= since
        });
        // Everyone's votes of these rounds too: a peer may have lost them.
        let relayed = self
            .machine
            .votes_to_relay()
            .into_iter()
            .map(ConsensusMessage::Vote);
        let messages: Vec<ConsensusMessage> = own.cloned().chain(relayed).collect();
        for message in &messages {
            if let Ok(bytes) = borsh::to_vec(message) {
                let _ = network.publish(Topic::Consensus, bytes).await;
            }
        }
        Ok(())
    }

    fn report_position(&self) {
        let step = match self.machine.step() {
            Step::Propose => "propose",
            Step::Prevote => "prevote",
            Step::Precommit => "precommit",
            Step::Decided => "commit",
        };
        self.node.set_consensus_position(ConsensusPosition {
            height: self.machine.height(),
            round: self.machine.round(),
            step,
        });
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
                let empty_at = self.config.empty_block_interval.map(|d| Instant::now() + d);
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

async fn next_message(
    messages: &mut Option<mpsc::Receiver<ConsensusMessage>>,
) -> Option<ConsensusMessage> {
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

//! Starting and stopping a node: the store, the chain, the network with
//! its intake and request handler, the host thread, and the RPC server.

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tally_consensus::{SignState, ValidBlockRecord};
use tally_gossip::{Inbound, MessageFilter, NodeId, RequestHandler, Topic, Verdict};
use tally_host::edge::{self, ConsensusIntake, TransactionIntake};
use tally_host::sync::{self as host_sync, SyncRequest};
use tally_host::{Chain, Host, HostConfig, Recovered, Signature};
use tally_ledger::{decode_strict, ChainContext, ConsensusMessage, SignedTransaction, Verified};
use tally_mempool::Mempool;
use tally_store::{RocksConfig, RocksStore};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::config::NodeConfig;
use crate::home::Home;
use crate::node::{now_ms, Node, NodeEvents, NodeLimits};
use crate::records::{slot_path, Contents, RecordSlots};
use crate::shell::{HostEvent, HostSender, NodeWorld, HOST_ANSWER_WAIT};

/// Room for a block's header and a polka of 256 validators' votes in the
/// valid-block record, beyond the block's transactions.
const MAX_POLKA_BYTES: usize = 1024 * 1024;

/// Largest signing record file read.
const MAX_SIGN_STATE_BYTES: u64 = 4096;

/// Room in a gossip message beyond the block: the proposal's header,
/// signature and framing.
const PROPOSAL_OVERHEAD_BYTES: usize = 64 * 1024;

/// Accepted gossip waiting to be handed on.
const INBOUND_QUEUE: usize = 8_192;

/// Room for one encoded vote in a catch-up request (a vote is about 150
/// bytes).
const VOTE_BYTES: usize = 256;

/// Room in a request beyond its votes.
const REQUEST_FRAMING_BYTES: usize = 1024;

/// How long a transaction that could not be gossiped is retried.
const RELAY_RETRY_FOR: Duration = Duration::from_secs(60);

/// Most transactions waiting to be gossiped again.
const RELAY_RETRY_MAX: usize = 10_000;

/// Batches of admitted transactions waiting to be gossiped (a batch is one
/// `tx_submit` or `tx_submitBatch` call, so at most `MAX_SUBMIT_BATCH`).
const RELAY_QUEUE: usize = 1_024;

/// Opens the signing record's slot files and reads the newest record, if
/// there is one (taking over a record in the single-file layout of earlier
/// builds, `BASE.bin`). A damaged record is an error: starting without it
/// could sign a message that conflicts with one already sent.
pub fn load_sign_state(base: &Path) -> anyhow::Result<(RecordSlots, Option<SignState>)> {
    let max = MAX_SIGN_STATE_BYTES as usize;
    let decode = |bytes: &[u8], from: &Path| {
        SignState::decode(bytes, max).map_err(|e| {
            anyhow::anyhow!(
                "{} is damaged ({e}). It records what this validator signed last and protects \
                 it from signing conflicting votes; restore it from a backup rather than \
                 deleting it",
                from.display()
            )
        })
    };
    open_record(base, max, decode)
}

/// Opens the valid-block record's slot files and reads the newest record,
/// if there is one (and takes over an earlier build's `BASE.bin`);
/// `max_bytes` bounds it (the largest block plus its polka).
pub fn load_valid_block(
    base: &Path,
    max_bytes: usize,
) -> anyhow::Result<(RecordSlots, Option<ValidBlockRecord>)> {
    let decode = |bytes: &[u8], from: &Path| {
        decode_strict::<ValidBlockRecord>(bytes, max_bytes).map_err(|e| {
            anyhow::anyhow!(
                "{} is damaged ({e}); restore it from a backup",
                from.display()
            )
        })
    };
    open_record(base, max_bytes, decode)
}

/// The record kept at `base` (slot files `BASE.0`, `BASE.1`, see
/// [`crate::records`]), decoded.
///
/// An earlier build kept it in one file, `BASE.bin`, written by rename.
/// When the slots hold no whole record, that file's record is written into
/// them (durably) and the file removed (and the removal synced). When the
/// slots hold a record and the old file is still there with the same
/// record, the start before stopped between those two steps: the file is
/// removed. When they differ, an earlier build ran after this one and
/// wrote a newer record the slots do not know: the node refuses to start.
fn open_record<T>(
    base: &Path,
    max_bytes: usize,
    decode: impl Fn(&[u8], &Path) -> anyhow::Result<T>,
) -> anyhow::Result<(RecordSlots, Option<T>)> {
    let legacy = base.with_extension("bin");
    let legacy_bytes = if legacy.exists() {
        let len = std::fs::metadata(&legacy)?.len();
        anyhow::ensure!(
            len <= max_bytes as u64,
            "{} is larger than its record can be",
            legacy.display()
        );
        Some(std::fs::read(&legacy).with_context(|| format!("cannot read {}", legacy.display()))?)
    } else {
        None
    };
    let (mut slots, contents) = RecordSlots::open(base, max_bytes)?;
    let record = match (contents, legacy_bytes) {
        (Contents::Record(bytes), None) => Some(decode(&bytes, slots.newest_path())?),
        (Contents::Record(bytes), Some(old)) => {
            anyhow::ensure!(
                bytes == old,
                "{} (written by an earlier build of tally) and {} hold different records: an \
                 earlier build ran after this one and recorded what it signed in the old file \
                 only. If the earlier build ran last, remove {} and {} so that the old file is \
                 taken over; otherwise remove {}",
                legacy.display(),
                slots.newest_path().display(),
                slot_path(base, 0).display(),
                slot_path(base, 1).display(),
                legacy.display()
            );
            Some(decode(&bytes, slots.newest_path())?)
        }
        (Contents::Empty | Contents::Broken(_), Some(old)) => {
            // A broken pair next to the old file: this takeover was cut
            // short before; the old file is still the record.
            let record = decode(&old, &legacy)?;
            slots.write(&old)?;
            info!(from = %legacy.display(), to = %slots.newest_path().display(), "moved a record to the two-slot layout");
            Some(record)
        }
        (Contents::Empty, None) => None,
        (Contents::Broken(why), None) => anyhow::bail!(
            "{why}: the record of what this validator signed last is damaged; restore {} and {} \
             from a backup rather than deleting them",
            slot_path(base, 0).display(),
            slot_path(base, 1).display()
        ),
    };
    if legacy.exists() {
        std::fs::remove_file(&legacy)
            .and_then(|()| sync_dir(&legacy))
            .with_context(|| format!("cannot remove {}", legacy.display()))?;
    }
    Ok((slots, record))
}

/// Syncs the directory holding `path`.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => std::fs::File::open(".")?.sync_all(),
    }
}

/// What gossip delivers once the intake accepted it.
pub enum Gossiped {
    /// A proposal or vote.
    Consensus(Verified<ConsensusMessage>),
    /// Transactions, checked and offered to the mempool by the filter:
    /// how many it admitted.
    Transactions(usize),
}

/// The network intake: host's checks, run on the network's judging
/// threads before a message is forwarded. Transactions that pass are
/// admitted to the mempool right there, on the same thread.
pub struct NodeFilter {
    consensus: ConsensusIntake,
    transactions: TransactionIntake,
    chain: Arc<Chain>,
}

impl NodeFilter {
    /// Intake for `chain`, consensus messages up to `max_message_bytes`.
    pub fn new(chain: Arc<Chain>, max_message_bytes: usize) -> NodeFilter {
        let context = chain.context().clone();
        NodeFilter {
            consensus: ConsensusIntake::new(
                context.clone(),
                chain.validators().clone(),
                max_message_bytes,
            ),
            transactions: TransactionIntake::new(context, chain.checked().clone()),
            chain,
        }
    }
}

fn verdict<T, U>(verdict: edge::Verdict<T>, wrap: impl FnOnce(T) -> U) -> Verdict<U> {
    match verdict {
        edge::Verdict::Accept(t) | edge::Verdict::Known(t) => Verdict::Accept(wrap(t)),
        edge::Verdict::Reject => Verdict::Reject,
        edge::Verdict::Ignore => Verdict::Ignore,
    }
}

impl MessageFilter for NodeFilter {
    type Message = Gossiped;

    fn check(&self, topic: Topic, data: &[u8]) -> Verdict<Gossiped> {
        match topic {
            Topic::Consensus => verdict(
                self.consensus.check(data, self.chain.tip_height()),
                Gossiped::Consensus,
            ),
            Topic::Transactions => {
                let admit = |txs: Vec<SignedTransaction>| {
                    let now = now_ms();
                    txs.into_iter()
                        // Stale nonces and duplicates are normal under gossip.
                        .filter(
                            |tx| match self.chain.admit(tx.clone(), Signature::Checked, now) {
                                Ok(_) => true,
                                Err(e) => {
                                    debug!(error = %e, "gossiped transaction not admitted");
                                    false
                                }
                            },
                        )
                        .count()
                };
                match self.transactions.check(data) {
                    edge::Verdict::Accept(txs) => {
                        Verdict::Accept(Gossiped::Transactions(admit(txs)))
                    }
                    // Checked before: offered to the pool, not forwarded.
                    edge::Verdict::Known(txs) => {
                        admit(txs);
                        Verdict::Ignore
                    }
                    edge::Verdict::Reject => Verdict::Reject,
                    edge::Verdict::Ignore => Verdict::Ignore,
                }
            }
        }
    }
}

/// Answers peers' requests: from the store directly, or by the host thread
/// for the catch-up exchange.
pub struct NodeRequests {
    chain: Arc<Chain>,
    host: HostSender,
    max_request_bytes: usize,
    max_response_bytes: usize,
    sync_batch_blocks: u32,
}

impl RequestHandler for NodeRequests {
    fn answer(&self, from: NodeId, bytes: Vec<u8>) -> Option<Vec<u8>> {
        let request = match host_sync::decode_request(&bytes, self.max_request_bytes) {
            Ok(request) => request,
            Err(e) => {
                debug!(%from, error = %e, "a request that does not decode");
                return None;
            }
        };
        let response = match request {
            SyncRequest::Status | SyncRequest::Blocks { .. } => {
                host_sync::serve(&self.chain, &request, self.max_response_bytes)?
            }
            // A catch-up for a committed height is answered from the store
            // here, off the host thread, like a block request.
            SyncRequest::Catchup(catchup) if catchup.height <= self.chain.tip_height() => {
                let blocks = SyncRequest::Blocks {
                    from: catchup.height.max(1),
                    max: self.sync_batch_blocks,
                };
                host_sync::serve(&self.chain, &blocks, self.max_response_bytes)?
            }
            SyncRequest::Decided { .. } | SyncRequest::Catchup(_) => {
                let (reply, answer) = std::sync::mpsc::sync_channel(1);
                let event = HostEvent::Request {
                    from,
                    request,
                    reply,
                    asked_at: std::time::Instant::now(),
                };
                if !self.host.send(event) {
                    return None;
                }
                answer.recv_timeout(HOST_ANSWER_WAIT).ok()??
            }
        };
        borsh::to_vec(&response).ok()
    }
}

fn open_store(
    home: &Home,
    config: &NodeConfig,
    chain: &ChainContext,
) -> anyhow::Result<RocksStore> {
    let rocks = RocksConfig {
        block_cache_bytes: config.storage.block_cache_bytes,
        write_buffer_bytes: config.storage.write_buffer_bytes,
        max_open_files: config.storage.max_open_files,
        state_history: config.storage.state_history,
    };
    RocksStore::open(&home.data(), chain, &rocks).map_err(|e| {
        // RocksDB's lock file says another process has the database.
        if e.to_string().contains("LOCK") {
            anyhow::anyhow!(
                "another tally process is using {} (its data directory is locked); stop it \
                 first, or use another --home",
                home.root().display()
            )
        } else {
            anyhow::Error::new(e)
        }
    })
}

/// The host's settings from the node's config.
fn host_config(config: &NodeConfig, max_response_bytes: usize) -> HostConfig {
    HostConfig {
        consensus: config.consensus.machine(),
        empty_block_interval_ms: match config.producer.empty_block_interval_ms {
            0 => None,
            ms => Some(ms),
        },
        live_wait_ms: config.producer.live_wait_ms,
        sync_interval_ms: config.network.sync_interval_ms,
        sync_batch_blocks: config.network.sync_batch_blocks,
        request_timeout_ms: config.network.sync_timeout_ms,
        max_response_bytes,
        ..HostConfig::default()
    }
}

/// Runs the node in `home` with `config`, serving RPC on `listener`, until
/// `shutdown` resolves; then stops producing, finishes the block in flight,
/// and closes the store.
pub async fn run(
    home: &Home,
    config: NodeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let context = ChainContext::new(home.load_genesis()?)
        .with_overrides(config.validator_overrides())
        .map_err(|e| anyhow::anyhow!("config: {e}"))?;
    let key = home.load_validator_key(&config)?;
    let node_key = home.load_or_create_node_key(&config)?;
    let store = {
        let (home, config, context) = (home.clone(), config.clone(), context.clone());
        tokio::task::spawn_blocking(move || open_store(&home, &config, &context))
            .await
            .context("store task failed")??
    };
    let max_message_bytes =
        context.genesis.params.max_block_bytes as usize + PROPOSAL_OVERHEAD_BYTES;
    let (sign_slots, sign_state) = load_sign_state(&home.sign_state())?;
    let (valid_slots, valid_block) =
        load_valid_block(&home.valid_block(), max_message_bytes + MAX_POLKA_BYTES)?;
    let recovered = Recovered {
        sign_state,
        valid_block,
    };

    let (host_tx, host_rx) = HostSender::new();
    let changes = watch::channel(0).0;
    let work = host_tx.clone();
    let events = NodeEvents::new(changes.clone(), move || work.work());
    let chain = Arc::new(Chain::new(
        context,
        Arc::new(store),
        Mempool::new(config.mempool.pool()),
        config.mempool.max_remembered_outcomes,
        Box::new(events),
    ));
    chain
        .check_overrides()
        .map_err(|e| anyhow::anyhow!("config: {e}"))?;
    for (height, set) in &chain.context().overrides {
        warn!(
            height,
            validators = set.validators().len(),
            validators_hash = %set.hash(),
            overrides_id = %chain.context().overrides_id().map(|id| id.to_hex()).unwrap_or_default(),
            "OPERATOR OVERRIDE configured: from this height the validator set is the one \
             [[validator_override]] names; every node of the chain needs the same overrides \
             (peers with other ones are refused)"
        );
    }
    // The key signs from the first height of a set that holds it (the set
    // changes by vote), so the host always has it; the node counts itself a
    // validator when the set in force or the next one holds it.
    let sets = chain.validators().get();
    let is_validator = key.as_ref().is_some_and(|k| {
        sets.current.power_of(&k.address()).is_some() || sets.next.power_of(&k.address()).is_some()
    });
    if let (Some(key), false) = (&key, is_validator) {
        warn!(
            address = %key.address(),
            "the configured key is not in the validator set in force: running as a full node that \
             follows and serves the chain and relays transactions, and signs from the first \
             height of a set that holds this key (validator-set changes, OPERATIONS.md)"
        );
    }
    let validator = if is_validator { key.clone() } else { None };
    let node = Node::new(
        chain.clone(),
        changes,
        validator.clone(),
        NodeLimits {
            wait_timeout: Duration::from_millis(config.rpc.wait_timeout_ms),
        },
    );
    let tip = chain.tip()?;
    let addr = listener.local_addr()?;

    // A sync answer holds at least one block of the largest size; a
    // catch-up request votes only (its asker gets proposals in answers).
    let max_response_bytes = max_message_bytes.max(8 * 1024 * 1024);
    let max_request_bytes =
        // Sized for the largest set a vote may make, not the genesis one.
        REQUEST_FRAMING_BYTES
            + host_sync::max_catchup_messages(tally_ledger::Genesis::MAX_VALIDATORS) * VOTE_BYTES;
    let genesis_hash = chain.context().genesis_hash;
    let net_config = tally_gossip::Config {
        listen: config.network.listen_address()?,
        peers: config.network.peer_addresses()?,
        max_peers: config.network.max_peers,
        max_message_bytes,
        request_protocol: host_sync::protocol_name(&genesis_hash),
        max_request_bytes,
        max_response_bytes,
        request_timeout: Duration::from_millis(config.network.sync_timeout_ms),
        max_messages_per_sec: config.network.max_messages_per_sec,
        max_requests_per_sec: config.network.max_requests_per_sec,
        max_invalid_messages: config.network.max_invalid_messages,
        ban_duration: Duration::from_millis(config.network.ban_duration_ms),
        inbound_queue: INBOUND_QUEUE,
        validator_overrides: chain.context().overrides_id(),
        ..tally_gossip::Config::default()
    };
    let handler = NodeRequests {
        chain: chain.clone(),
        host: host_tx.clone(),
        max_request_bytes,
        max_response_bytes,
        sync_batch_blocks: config.network.sync_batch_blocks,
    };
    let (network, inbound) = tally_gossip::start(
        net_config,
        node_key,
        genesis_hash,
        NodeFilter::new(chain.clone(), max_message_bytes),
        Arc::new(handler),
    )
    .await
    .with_context(|| {
        format!(
            "cannot listen for peers on {} (is another node using it? set network.listen in {})",
            config.network.listen,
            home.config().display()
        )
    })?;
    let (relay_tx, relay_rx) = mpsc::channel(RELAY_QUEUE);
    node.attach_network(network.clone(), relay_tx);

    if tally_host::SABOTAGE_BUILT_IN {
        warn!(
            "this build of tally carries the simulator's deliberate bugs (switched off); build \
             the node with `cargo build -p tally-cli` for production"
        );
    }
    info!(chain_id = %chain.context().genesis.chain_id, height = tip.height, validator = ?validator.as_ref().map(|k| k.address()), node_id = %network.peer_id(), "node started");
    // Stable lines on stdout for people and for scripts that start nodes.
    println!("RPC listening on http://{addr}");
    println!("P2P listening on {}", network.address());
    let _ = std::io::stdout().flush();

    let world = NodeWorld::new(
        network.clone(),
        tokio::runtime::Handle::current(),
        host_tx.clone(),
        sign_slots,
        valid_slots,
    );
    let host = Host::new(
        host_config(&config, max_response_bytes),
        chain.clone(),
        world,
        key,
        recovered,
    );
    let host_thread = crate::shell::spawn(host, host_rx, host_tx.clone())
        .context("cannot start the host thread")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(dispatch(inbound, host_tx.clone(), stop_rx.clone()));
    tasks.spawn(relay(
        chain.clone(),
        network.clone(),
        relay_rx,
        max_message_bytes,
        stop_rx.clone(),
    ));
    tasks.spawn(dial_validators(
        chain.clone(),
        network.clone(),
        stop_rx.clone(),
    ));

    let serve_node = node.clone();
    let on_shutdown = async move {
        shutdown.await;
        info!("shutting down");
        serve_node.close();
    };
    let served = crate::rpc_server::serve(node.clone(), &config.rpc, listener, on_shutdown).await;
    let _ = stop_tx.send(true);
    // The host finishes what it is doing (a commit in flight) and stops.
    host_tx.stop();
    let joined = tokio::task::spawn_blocking(move || host_thread.join()).await;
    if !matches!(joined, Ok(Ok(()))) {
        warn!("the host thread did not stop cleanly");
    }
    // Closes every connection and drops the network's hold on the node.
    network.stop().await;
    while tasks.join_next().await.is_some() {}
    drop(node);
    info!("stopped");
    served
}

/// Hands on what peers sent: consensus messages to the host thread
/// (transactions are in the mempool already).
async fn dispatch(
    mut inbound: mpsc::Receiver<Inbound<Gossiped>>,
    host: HostSender,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let inbound = tokio::select! {
            _ = stop.changed() => return,
            message = inbound.recv() => match message {
                Some(message) => message,
                None => return,
            },
        };
        match inbound.message {
            Gossiped::Consensus(message) => {
                if !host.send(HostEvent::Message(inbound.from, message)) {
                    warn!("consensus is not keeping up; dropping a message from a peer");
                }
            }
            // Admitted by the filter already.
            Gossiped::Transactions(_) => {}
        }
    }
}

/// Gossips the transactions submitted to this node, as many to a message
/// as are waiting (up to `MAX_GOSSIP_TXS` and `max_message_bytes`): a
/// submitted batch travels together, under load one message carries
/// hundreds, and a lone transaction still leaves at once. Transactions that cannot be published (no peer subscribed yet,
/// e.g. just after connecting) are tried again every second while they are
/// still in the mempool, for up to `RELAY_RETRY_FOR`: a full node's client
/// was told they were accepted.
async fn relay(
    chain: Arc<Chain>,
    network: tally_gossip::Handle,
    mut txs: mpsc::Receiver<Vec<Vec<u8>>>,
    max_message_bytes: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut retry: std::collections::VecDeque<(Vec<u8>, tokio::time::Instant)> =
        std::collections::VecDeque::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut batches = Vec::new();
    let mut received = Vec::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            count = txs.recv_many(&mut batches, tally_ledger::MAX_GOSSIP_TXS) => {
                if count == 0 {
                    return;
                }
                received.extend(batches.drain(..).flatten());
                let until = tokio::time::Instant::now() + RELAY_RETRY_FOR;
                let unsent = publish_batches(&network, &received, max_message_bytes).await;
                let room = RELAY_RETRY_MAX.saturating_sub(retry.len());
                retry.extend(unsent.into_iter().take(room).map(|tx| (tx, until)));
                received.clear();
            }
            _ = ticker.tick(), if !retry.is_empty() => {
                let now = tokio::time::Instant::now();
                retry.retain(|(tx, until)| {
                    now < *until
                        && SignedTransaction::decode(tx)
                            .ok()
                            .and_then(|t| chain.tx_status(&t.id(), false).ok())
                            .is_some_and(|s| matches!(s, tally_host::TxStatus::InPool { .. }))
                });
                let waiting: Vec<Vec<u8>> = retry.iter().map(|(tx, _)| tx.clone()).collect();
                let unsent = publish_batches(&network, &waiting, max_message_bytes).await;
                let unsent: std::collections::HashSet<Vec<u8>> = unsent.into_iter().collect();
                retry.retain(|(tx, _)| unsent.contains(tx));
            }
        }
    }
}

/// How often the node looks for validators it is not connected to.
const VALIDATOR_DIAL_EVERY: Duration = Duration::from_secs(5);

/// Keeps this node connected to the validators of the sets in force and
/// announced: a validator added by vote is known by the node address its
/// addition names (the validator state's `peers`), which the node dials
/// while no connection to that node id is open. An address that does not
/// parse or names this node is skipped; a failed dial is tried again
/// every `VALIDATOR_DIAL_EVERY`.
async fn dial_validators(
    chain: Arc<Chain>,
    network: tally_gossip::Handle,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(VALIDATOR_DIAL_EVERY);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {}
        }
        let state = chain.validators().get();
        let connected: std::collections::HashSet<tally_gossip::NodeId> =
            network.peers().iter().map(|p| p.id).collect();
        for (validator, address) in &state.peers {
            let Ok(address) = address.parse::<tally_gossip::PeerAddress>() else {
                continue;
            };
            let Some(id) = tally_gossip::peer_id_of(&address) else {
                continue;
            };
            if id == network.peer_id() || connected.contains(&id) {
                continue;
            }
            tracing::debug!(%validator, %address, "dialling a validator of the set");
            if network.dial(address).await.is_err() {
                return;
            }
        }
    }
}

/// Publishes `txs` as gossip messages of at most `MAX_GOSSIP_TXS`
/// transactions and `max_message_bytes` each; returns those that could not
/// be published.
async fn publish_batches(
    network: &tally_gossip::Handle,
    txs: &[Vec<u8>],
    max_message_bytes: usize,
) -> Vec<Vec<u8>> {
    let mut unsent = Vec::new();
    let mut start = 0;
    while start < txs.len() {
        // The count prefix, then whole transactions while they fit.
        let mut end = start;
        let mut bytes = 4;
        while end < txs.len()
            && end - start < tally_ledger::MAX_GOSSIP_TXS
            && (end == start || bytes + txs[end].len() <= max_message_bytes)
        {
            bytes += txs[end].len();
            end += 1;
        }
        let chunk = &txs[start..end];
        let message = tally_ledger::encode_tx_batch(chunk);
        if let Err(e) = network.publish(Topic::Transactions, message).await {
            debug!(error = %e, "transactions not gossiped yet; will retry");
            unsent.extend_from_slice(chunk);
        }
        start = end;
    }
    unsent
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Binds the RPC listener: `override_addr` if given, else the config's.
pub async fn bind(
    config: &NodeConfig,
    override_addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<TcpListener> {
    let addr = override_addr.unwrap_or(config.rpc.listen_addr);
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for RPC (is another node using it? pick another with --rpc-addr)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_consensus::SignStep;
    use tally_ledger::Hash;

    fn record(height: u64) -> SignState {
        SignState {
            height,
            round: 2,
            step: SignStep::Precommit,
            block_hash: Some(Hash([7; 32])),
            valid_round: None,
            locked: Some((2, Hash([7; 32]))),
            valid: Some((2, Hash([7; 32]))),
            prevote: Some(Some(Hash([7; 32]))),
            earlier: None,
        }
    }

    #[test]
    fn a_signing_record_of_the_single_file_layout_is_taken_over_once() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("sign_state");
        let legacy = base.with_extension("bin");
        std::fs::write(&legacy, borsh::to_vec(&record(9)).unwrap()).unwrap();
        let (mut slots, loaded) = load_sign_state(&base).unwrap();
        assert_eq!(loaded, Some(record(9)));
        assert!(!legacy.exists(), "the old file is removed");
        // Later writes win over what was taken over.
        slots.write(&borsh::to_vec(&record(10)).unwrap()).unwrap();
        assert_eq!(load_sign_state(&base).unwrap().1, Some(record(10)));
        // The old file left by a stop between takeover and removal (same
        // record) is removed; one an earlier build wrote since (another
        // record) stops the node.
        std::fs::write(&legacy, borsh::to_vec(&record(10)).unwrap()).unwrap();
        assert_eq!(load_sign_state(&base).unwrap().1, Some(record(10)));
        assert!(!legacy.exists());
        std::fs::write(&legacy, borsh::to_vec(&record(11)).unwrap()).unwrap();
        let err = load_sign_state(&base).unwrap_err().to_string();
        assert!(err.contains("earlier build ran after this one"), "{err}");
        assert!(legacy.exists(), "nothing is removed then");
    }

    #[test]
    fn a_takeover_cut_short_is_done_again_and_damage_stops_the_node() {
        let dir = tempfile::tempdir().unwrap();
        // A torn first slot write next to the intact old file.
        let base = dir.path().join("sign_state");
        let legacy = base.with_extension("bin");
        std::fs::write(&legacy, borsh::to_vec(&record(3)).unwrap()).unwrap();
        std::fs::write(crate::records::slot_path(&base, 0), [b'x'; 80]).unwrap();
        std::fs::write(crate::records::slot_path(&base, 1), b"").unwrap();
        assert_eq!(load_sign_state(&base).unwrap().1, Some(record(3)));
        assert!(!legacy.exists());
        assert_eq!(load_sign_state(&base).unwrap().1, Some(record(3)));
        // Broken slots and no old file: refused, files kept.
        std::fs::write(crate::records::slot_path(&base, 0), [b'x'; 80]).unwrap();
        std::fs::write(crate::records::slot_path(&base, 1), [b'y'; 80]).unwrap();
        let err = load_sign_state(&base).unwrap_err().to_string();
        assert!(err.contains("damaged") && err.contains("backup"), "{err}");
        // A damaged old file with no slots written stops the node.
        let other = dir.path().join("other");
        std::fs::write(other.with_extension("bin"), b"\x01\x02").unwrap();
        let err = load_sign_state(&other).unwrap_err().to_string();
        assert!(err.contains("damaged") && err.contains("backup"), "{err}");
        assert!(
            other.with_extension("bin").exists(),
            "a damaged record is kept"
        );
    }
}

//! Starting and stopping a node.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tally_gossip::{Inbound, LedgerValidator, Topic};
use tally_ledger::{decode_strict, ChainContext, ConsensusMessage};
use tally_mempool::Mempool;
use tally_store::{RocksConfig, RocksStore};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::config::NodeConfig;
use crate::consensus_driver::{load_sign_state, load_valid_block, ConsensusNet, DriverConfig};
use crate::sync::{NodeSyncServer, SyncConfig};

/// Room for a block's header and a polka of 256 validators' votes in the
/// valid-block record, beyond the block's transactions.
const MAX_POLKA_BYTES: usize = 1024 * 1024;
use crate::home::Home;
use crate::node::{now_ms, Node, NodeLimits};

/// How often queued transactions are checked for expiry.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

/// Room in a gossip message beyond the block: the proposal's header,
/// signature and framing.
const PROPOSAL_OVERHEAD_BYTES: usize = 64 * 1024;

/// Consensus messages and transactions from peers waiting to be handled.
const INBOUND_QUEUE: usize = 8_192;

/// Peers' catch-up requests waiting for the consensus driver.
const CATCHUP_QUEUE: usize = 64;

/// Room for one encoded vote in a catch-up request (a vote is about 150
/// bytes).
const VOTE_BYTES: usize = 256;

/// How long a transaction that could not be gossiped is retried.
const RELAY_RETRY_FOR: Duration = Duration::from_secs(60);

/// Most transactions waiting to be gossiped again.
const RELAY_RETRY_MAX: usize = 10_000;

/// Runs the node in `home` with `config`, serving RPC on `listener`, until
/// `shutdown` resolves; then stops producing, finishes the block in flight,
/// and closes the store.
pub async fn run(
    home: &Home,
    config: NodeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let chain = ChainContext::new(home.load_genesis()?);
    let key = home.load_validator_key(&config)?;
    let is_validator = key
        .as_ref()
        .is_some_and(|k| chain.validators.power_of(&k.address()).is_some());
    let node_key = home.load_or_create_node_key(&config)?;
    let rocks = RocksConfig {
        block_cache_bytes: config.storage.block_cache_bytes,
        max_open_files: config.storage.max_open_files,
    };
    let data = home.data();
    let open_chain = chain.clone();
    let store = tokio::task::spawn_blocking(move || RocksStore::open(&data, &open_chain, &rocks))
        .await
        .context("store task failed")?
        .map_err(|e| {
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
        })?;
    if let (Some(key), false) = (&key, is_validator) {
        warn!(
            address = %key.address(),
            "the configured key is not a validator in this genesis: running as a full node that \
             follows and serves the chain and relays transactions, but does not vote"
        );
    }
    let validator = if is_validator { key } else { None };
    let node = Node::new(
        chain,
        Arc::new(store),
        Mempool::new(config.mempool.pool()),
        validator.clone(),
        NodeLimits {
            wait_timeout: Duration::from_millis(config.rpc.wait_timeout_ms),
            max_remembered_outcomes: config.mempool.max_remembered_outcomes,
        },
    );
    let tip = node.tip()?;
    let sign_state = load_sign_state(&home.sign_state())?;
    let max_record_bytes = node.chain().genesis.params.max_block_bytes as usize + MAX_POLKA_BYTES;
    let valid_block = load_valid_block(&home.valid_block(), max_record_bytes)?;
    let addr = listener.local_addr()?;

    let params = &node.chain().genesis.params;
    let max_message_bytes = params.max_block_bytes as usize + PROPOSAL_OVERHEAD_BYTES;
    let (catchup_tx, catchup_rx) = mpsc::channel(CATCHUP_QUEUE);
    let net_config = tally_gossip::Config {
        listen: config.network.listen_address()?,
        peers: config.network.peer_addresses()?,
        max_peers: config.network.max_peers,
        max_message_bytes,
        // A catch-up request holds a proposal and the votes of two rounds.
        max_sync_request_bytes: max_message_bytes
            + crate::consensus_driver::max_catchup_messages(
                node.chain().validators.validators().len(),
            ) * VOTE_BYTES,
        // A sync answer holds at least one block of the largest size.
        max_sync_response_bytes: max_message_bytes.max(8 * 1024 * 1024),
        sync_request_timeout: Duration::from_millis(config.network.sync_timeout_ms),
        max_messages_per_sec: config.network.max_messages_per_sec,
        max_requests_per_sec: config.network.max_requests_per_sec,
        max_invalid_messages: config.network.max_invalid_messages,
        ban_duration: Duration::from_millis(config.network.ban_duration_ms),
        inbound_queue: INBOUND_QUEUE,
        ..tally_gossip::Config::default()
    };
    let (network, inbound) = tally_gossip::start(
        net_config,
        node_key,
        node.chain().genesis_hash,
        LedgerValidator::new(node.chain().clone(), max_message_bytes).with_tip({
            let tip = node.subscribe_tip();
            move || tip.borrow().height
        }),
        Arc::new(NodeSyncServer {
            node: node.clone(),
            catchup: catchup_tx,
        }),
    )
    .await
    .with_context(|| {
        format!(
            "cannot listen for peers on {} (is another node using it? set network.listen in {})",
            config.network.listen,
            home.config().display()
        )
    })?;
    let (relay_tx, relay_rx) = mpsc::channel(INBOUND_QUEUE);
    node.attach_network(network.clone(), relay_tx);

    info!(chain_id = %node.chain().genesis.chain_id, height = tip.height, validator = ?validator.as_ref().map(|k| k.address()), node_id = %network.peer_id(), "node started");
    // Stable lines on stdout for people and for scripts that start nodes.
    println!("RPC listening on http://{addr}");
    println!("P2P listening on {}", network.address());
    let _ = std::io::stdout().flush();

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let (consensus_tx, consensus_rx) = mpsc::channel(INBOUND_QUEUE);
    tasks.spawn(dispatch(
        node.clone(),
        inbound,
        consensus_tx,
        stop_rx.clone(),
    ));
    tasks.spawn(relay(
        node.clone(),
        network.clone(),
        relay_rx,
        max_message_bytes,
        stop_rx.clone(),
    ));
    let sync = SyncConfig {
        interval: Duration::from_millis(config.network.sync_interval_ms),
        batch_blocks: config.network.sync_batch_blocks,
    };
    tasks.spawn(crate::sync::run(
        node.clone(),
        network.clone(),
        sync,
        stop_rx.clone(),
    ));
    let driver = DriverConfig {
        consensus: config.consensus.machine(),
        empty_block_interval: match config.producer.empty_block_interval_ms {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        },
        sign_state_path: home.sign_state(),
        valid_block_path: home.valid_block(),
    };
    let consensus = crate::consensus_driver::run(
        node.clone(),
        validator.clone(),
        driver,
        sign_state,
        valid_block,
        Some(ConsensusNet {
            network: network.clone(),
            messages: consensus_rx,
            catchup: catchup_rx,
        }),
        stop_rx.clone(),
    );
    tasks.spawn(consensus);
    tasks.spawn(expire_queued(node.clone(), stop_rx.clone()));

    let serve_node = node.clone();
    let on_shutdown = async move {
        shutdown.await;
        info!("shutting down");
        serve_node.close();
    };
    let served = crate::rpc_server::serve(node.clone(), &config.rpc, listener, on_shutdown).await;
    let _ = stop_tx.send(true);
    // Closes every connection and drops the network's hold on the node.
    network.stop().await;
    while tasks.join_next().await.is_some() {}
    drop(node);
    info!("stopped");
    served
}

/// Routes what peers sent: consensus messages to the driver, transactions
/// to the mempool.
async fn dispatch(
    node: Arc<Node>,
    mut inbound: mpsc::Receiver<Inbound>,
    consensus: mpsc::Sender<ConsensusMessage>,
    mut stop: watch::Receiver<bool>,
) {
    let max_bytes = node.chain().genesis.params.max_block_bytes as usize + PROPOSAL_OVERHEAD_BYTES;
    loop {
        let message = tokio::select! {
            _ = stop.changed() => return,
            message = inbound.recv() => match message {
                Some(message) => message,
                None => return,
            },
        };
        match message.topic {
            Topic::Consensus => match decode_strict::<ConsensusMessage>(&message.data, max_bytes) {
                Ok(decoded) => {
                    if consensus.try_send(decoded).is_err() {
                        warn!("consensus is not keeping up; dropping a message from a peer");
                    }
                }
                Err(e) => debug!(error = %e, "undecodable consensus message"),
            },
            Topic::Transactions => match tally_ledger::decode_tx_batch(&message.data) {
                Ok(txs) => {
                    for tx in txs {
                        // Stale nonces and duplicates are normal under gossip.
                        if let Err(e) = node.admit_from_peer(tx) {
                            debug!(error = %e, "gossiped transaction not admitted");
                        }
                    }
                }
                Err(e) => debug!(error = %e, "undecodable transactions message"),
            },
        }
    }
}

/// Gossips the transactions submitted to this node, as many to a message
/// as are waiting (up to `MAX_GOSSIP_TXS` and `max_message_bytes`): under
/// load one message carries hundreds, and a lone transaction still leaves
/// at once. Transactions that cannot be published (no peer subscribed yet,
/// e.g. just after connecting) are tried again every second while they are
/// still in the mempool, for up to `RELAY_RETRY_FOR`: a full node's client
/// was told they were accepted.
async fn relay(
    node: Arc<Node>,
    network: tally_gossip::Handle,
    mut txs: mpsc::Receiver<Vec<u8>>,
    max_message_bytes: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut retry: std::collections::VecDeque<(Vec<u8>, tokio::time::Instant)> =
        std::collections::VecDeque::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut received = Vec::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            count = txs.recv_many(&mut received, tally_ledger::MAX_GOSSIP_TXS) => {
                if count == 0 {
                    return;
                }
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
                        && tally_ledger::SignedTransaction::decode(tx)
                            .ok()
                            .and_then(|t| node.tx_status(&t.id(), false).ok())
                            .is_some_and(|s| matches!(s, crate::node::TxStatus::InPool { .. }))
                });
                let waiting: Vec<Vec<u8>> = retry.iter().map(|(tx, _)| tx.clone()).collect();
                let unsent = publish_batches(&network, &waiting, max_message_bytes).await;
                let unsent: std::collections::HashSet<Vec<u8>> = unsent.into_iter().collect();
                retry.retain(|(tx, _)| unsent.contains(tx));
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

async fn expire_queued(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(EXPIRY_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => node.expire(now_ms()),
        }
    }
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

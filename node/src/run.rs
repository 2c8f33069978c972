//! Starting and stopping a node.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tally_ledger::ChainContext;
use tally_mempool::Mempool;
use tally_store::{RocksConfig, RocksStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::NodeConfig;
use crate::consensus_driver::{load_sign_state, load_valid_block, DriverConfig};

/// Room for a block's header and a polka of 256 validators' votes in the
/// valid-block record, beyond the block's transactions.
const MAX_POLKA_BYTES: usize = 1024 * 1024;
use crate::home::Home;
use crate::node::{now_ms, Node, NodeLimits};

/// How often queued transactions are checked for expiry.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

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
    if is_validator && chain.validators.validators().len() > 1 {
        bail!(
            "this genesis has {} validators; they must agree over the consensus network, which this \
             version of Tally does not run yet. Use a single-validator genesis (see `tally dev`).",
            chain.validators.validators().len()
        );
    }
    let rocks = RocksConfig {
        block_cache_bytes: config.storage.block_cache_bytes,
        max_open_files: config.storage.max_open_files,
    };
    let data = home.data();
    let open_chain = chain.clone();
    let store = tokio::task::spawn_blocking(move || RocksStore::open(&data, &open_chain, &rocks))
        .await
        .context("store task failed")??;
    if let (Some(key), false) = (&key, is_validator) {
        warn!(
            address = %key.address(),
            "the configured key is not a validator in this genesis: running as a node that serves \
             the chain but produces no blocks and accepts no transactions"
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
    info!(chain_id = %node.chain().genesis.chain_id, height = tip.height, validator = ?validator.as_ref().map(|k| k.address()), "node started");
    // A stable line on stdout for people and for scripts that start nodes.
    println!("RPC listening on http://{addr}");
    let _ = std::io::stdout().flush();

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
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
    while tasks.join_next().await.is_some() {}
    drop(node);
    info!("stopped");
    served
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

//! Block sync: a node that is behind fetches committed blocks with their
//! commit certificates from peers and commits them through the node's one
//! commit path, which checks each certificate against the validator set and
//! executes each block against the state.
//!
//! Every `sync_interval` the node asks its peers for their tips. When a peer
//! is at least two blocks ahead (or one ahead while this node's tip has not
//! moved for a whole interval, so live consensus is not raced for the block
//! it is deciding), it fetches blocks in batches from peers that claim to be
//! ahead. A peer that sends a block whose certificate or contents do not
//! verify, blocks it was not asked for, or nothing although it claimed to
//! be ahead, is banned; sync goes on with the others.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tally_gossip::{Catchup, GossipError, Handle, NodeId, SyncRequest, SyncResponse, SyncServer};
use tally_ledger::StoredBlock;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::consensus_driver::{CatchupQuery, FromPeer};
use crate::node::{CommitFailure, Node};

/// Answers peers' sync requests from the node's store, and their catch-up
/// requests from the store or the consensus driver.
pub struct NodeSyncServer {
    /// The node.
    pub node: Arc<Node>,
    /// Where catch-up requests and peers' decisions go.
    pub catchup: mpsc::Sender<FromPeer>,
}

impl SyncServer for NodeSyncServer {
    fn status(&self) -> Option<SyncResponse> {
        let tip = self.node.tip().ok()?;
        Some(SyncResponse::Status {
            height: tip.height,
            hash: tip.hash,
        })
    }

    fn blocks(&self, from: u64, max: u32, max_bytes: usize) -> Option<SyncResponse> {
        let mut blocks = Vec::new();
        let mut bytes = 0usize;
        for height in from.max(1)..from.max(1).saturating_add(u64::from(max)) {
            // A storage error is not "no such block": answer nothing rather
            // than an empty list the peer would take for a lie.
            let Some(stored) = self.node.store().block(height).ok()? else {
                break;
            };
            // The encoded size, counted without encoding (the codec encodes
            // the answer once); the response's own framing is a few bytes.
            let size = borsh::object_length(&stored).unwrap_or(usize::MAX);
            if !blocks.is_empty() && bytes.saturating_add(size) > max_bytes.saturating_sub(64) {
                break;
            }
            bytes = bytes.saturating_add(size);
            blocks.push(stored);
        }
        Some(SyncResponse::Blocks(blocks))
    }

    /// A peer that asks about a height this node has committed is behind:
    /// it gets the decided block with its certificate. Otherwise the
    /// consensus driver counts the peer's messages and answers with its
    /// own (this runs off the network task, so waiting for it is fine).
    fn catchup(&self, from: NodeId, request: Catchup) -> Option<SyncResponse> {
        let tip = self.node.tip().ok()?;
        if request.height <= tip.height {
            let stored = self.node.store().block(request.height.max(1)).ok()??;
            return Some(SyncResponse::Blocks(vec![stored]));
        }
        let (reply, answer) = oneshot::channel();
        let query = CatchupQuery {
            from,
            request,
            reply,
        };
        self.catchup.try_send(FromPeer::Catchup(query)).ok()?;
        answer.blocking_recv().ok().map(SyncResponse::Messages)
    }

    /// A peer committed `height`: the driver hears of it if this node has
    /// not, and the peer gets this node's tip.
    fn decided(&self, from: NodeId, height: u64) -> Option<SyncResponse> {
        let tip = self.node.tip().ok()?;
        if height > tip.height {
            // A full queue only delays the catch-up to the next check.
            let _ = self.catchup.try_send(FromPeer::Decided { from, height });
        }
        self.status()
    }
}

/// Sync settings.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// How often tips are compared.
    pub interval: Duration,
    /// Most blocks per request.
    pub batch_blocks: u32,
}

/// How long peers get to tell their tips.
const STATUS_DEADLINE: Duration = Duration::from_secs(2);

/// Compares tips with peers and fetches what this node is missing, until
/// `shutdown` turns true.
pub async fn run(
    node: Arc<Node>,
    network: Handle,
    config: SyncConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_height = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticker.tick() => {}
            _ = node.sync_wanted() => {}
        }
        // Every await of a round may wait for peers: stop promptly.
        let round = sync_round(&node, &network, &config, &mut last_height);
        tokio::select! {
            _ = shutdown.changed() => return,
            stopped = round => if stopped { return },
        }
        node.set_syncing(false);
    }
}

/// One comparison of tips, and fetching if behind. Returns true when the
/// network has stopped.
async fn sync_round(
    node: &Arc<Node>,
    network: &Handle,
    config: &SyncConfig,
    last_height: &mut Option<u64>,
) -> bool {
    let Ok(tip) = node.tip() else { return false };
    let stalled = *last_height == Some(tip.height);
    *last_height = Some(tip.height);
    let peers = match network.peers().await {
        Ok(peers) => peers,
        Err(_) => return true,
    };
    node.set_peer_count(peers.len());
    let mut asking = tokio::task::JoinSet::new();
    for peer in peers {
        let network = network.clone();
        asking.spawn(async move {
            let answer = network.request(peer.id, SyncRequest::Status).await;
            (peer.id, answer)
        });
    }
    // Answers as they come, for a bounded time: a silent peer must not
    // hold up every round, nor need the others wait once one is known to be
    // whole heights ahead.
    let mut ahead = Vec::new();
    let deadline = tokio::time::Instant::now() + STATUS_DEADLINE;
    while let Ok(Some(Ok((peer, answer)))) =
        tokio::time::timeout_at(deadline, asking.join_next()).await
    {
        match answer {
            Ok(SyncResponse::Status { height, .. }) if height > tip.height => {
                ahead.push((peer, height));
                if height >= tip.height + 2 {
                    break;
                }
            }
            Ok(SyncResponse::Status { .. }) => {}
            Ok(SyncResponse::Blocks(_) | SyncResponse::Messages(_)) => {
                ban(
                    network,
                    peer,
                    "answered a status request with something else",
                )
                .await;
            }
            Err(GossipError::BadResponse(e)) => {
                ban(
                    network,
                    peer,
                    &format!("sent an invalid status answer: {e}"),
                )
                .await;
            }
            Err(e) => debug!(%peer, error = %e, "status request failed"),
        }
    }
    asking.abort_all();
    let best = ahead.iter().map(|(_, h)| *h).max().unwrap_or(0);
    if best >= tip.height + 2 || (best > tip.height && stalled) {
        node.set_syncing(true);
        info!(
            height = tip.height,
            peers_tip = best,
            "behind the network; fetching blocks"
        );
        fetch(node, network, config, ahead).await;
        *last_height = node.tip().ok().map(|t| t.height);
    }
    false
}

/// Fetches blocks from `ahead` (peers with the heights they claim) until
/// this node reaches the highest claim it can get blocks for. Peers take
/// turns, one batch each, so a slow or stingy peer cannot hold sync back.
async fn fetch(node: &Arc<Node>, network: &Handle, config: &SyncConfig, ahead: Vec<(NodeId, u64)>) {
    let mut ahead: VecDeque<(NodeId, u64)> = ahead.into();
    while let Some((peer, claimed)) = ahead.pop_front() {
        let Ok(tip) = node.tip() else { return };
        if tip.height >= claimed {
            continue;
        }
        let from = tip.height + 1;
        let request = SyncRequest::Blocks {
            from,
            max: config.batch_blocks,
        };
        let blocks = match network.request(peer, request).await {
            Ok(SyncResponse::Blocks(blocks)) => blocks,
            Ok(SyncResponse::Status { .. } | SyncResponse::Messages(_)) => {
                ban(
                    network,
                    peer,
                    "answered a block request with something else",
                )
                .await;
                continue;
            }
            Err(GossipError::BadResponse(e)) => {
                ban(network, peer, &format!("sent an invalid block answer: {e}")).await;
                continue;
            }
            Err(e) => {
                // Timeouts, refusals and disconnects happen to honest peers
                // too: leave it out of this round only.
                debug!(%peer, error = %e, "block request failed; trying another peer");
                continue;
            }
        };
        if blocks.is_empty() {
            ban(network, peer, "claimed blocks it does not serve").await;
            continue;
        }
        match commit_batch(node, from, blocks).await {
            // Its turn is over; it goes to the back of the line.
            Ok(()) => ahead.push_back((peer, claimed)),
            Err(BatchError::Peer(reason)) => ban(network, peer, &reason).await,
            Err(BatchError::Local(reason)) => {
                warn!(reason, "block sync paused");
                return;
            }
        }
    }
}

enum BatchError {
    /// The peer sent something false.
    Peer(String),
    /// This node cannot commit now (storage).
    Local(String),
}

async fn commit_batch(
    node: &Arc<Node>,
    from: u64,
    blocks: Vec<StoredBlock>,
) -> Result<(), BatchError> {
    for (expected, stored) in (from..).zip(blocks) {
        if stored.block.header.height != expected {
            return Err(BatchError::Peer(format!(
                "sent block {} when asked for {expected}",
                stored.block.header.height
            )));
        }
        let n = node.clone();
        let committed = tokio::task::spawn_blocking(move || n.commit_block(stored))
            .await
            .map_err(|e| BatchError::Local(format!("commit task failed: {e}")))?;
        match committed {
            Ok(_) => {}
            Err(CommitFailure::Storage(e)) => return Err(BatchError::Local(e.to_string())),
            Err(e @ CommitFailure::Conflict { .. }) => {
                // Two certified blocks at one height: either this node's or
                // the peer's chain is not the one the honest validators
                // signed. Never switch; tell the operator.
                warn!(error = %e, "a peer served a conflicting certified block");
                return Err(BatchError::Peer(e.to_string()));
            }
            Err(e) => return Err(BatchError::Peer(format!("sent block {expected}: {e}"))),
        }
    }
    Ok(())
}

async fn ban(network: &Handle, peer: NodeId, reason: &str) {
    warn!(%peer, reason, "block sync: banning peer");
    let _ = network.ban(peer, format!("block sync: {reason}")).await;
}

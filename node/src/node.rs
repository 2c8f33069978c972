//! What the RPC server sees of a running node: the shared chain, and the
//! node's own parts around it (its role, the network, waiting clients).
//!
//! The chain ([`tally_host::Chain`]) holds the store, the mempool and the
//! one commit path; the host thread ([`crate::shell`]) is the only one that
//! builds and commits blocks. RPC reads the chain and admits transactions
//! to it.
//!
//! # Shared state
//! `Node` itself holds no lock: `changes` and `closing` are watch channels
//! (their own synchronisation), `relay` and `network` are set once at
//! start. The chain documents its own lock order.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tally_host::{AdmitError, Chain, ChainEvents, Signature, TxStatus};
use tally_ledger::{
    ExecutedBlock, Hash, Keypair, SignedTransaction, StorageError, StoredBlock, TxError,
};
use tally_mempool::PoolState;
use tokio::sync::{mpsc, watch};
use tracing::warn;

/// Milliseconds since the Unix epoch by the system clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The transaction does not decode.
    #[error(transparent)]
    Decode(#[from] TxError),
    /// The chain refused it.
    #[error(transparent)]
    Admit(#[from] AdmitError),
    /// This node neither produces blocks nor has peers to pass the
    /// transaction to, so it would wait forever.
    #[error(
        "this node is not a validator and has no connected peers to pass the transaction to; \
         wait for it to connect (see node_peers) or submit to another node"
    )]
    NotProducing,
}

/// Node limits that are not the chain's.
#[derive(Debug, Clone)]
pub struct NodeLimits {
    /// Longest `tx_submit` waits for a commit.
    pub wait_timeout: Duration,
}

/// What the node learns from its chain: clients waiting for a status are
/// woken, and the host thread hears of new work.
pub struct NodeEvents {
    changes: watch::Sender<u64>,
    work: Box<dyn Fn() + Send + Sync>,
}

impl NodeEvents {
    /// Wakes `changes` watchers on status changes, calls `work` on new work.
    pub fn new(changes: watch::Sender<u64>, work: impl Fn() + Send + Sync + 'static) -> Self {
        NodeEvents {
            changes,
            work: Box::new(work),
        }
    }
}

impl ChainEvents for NodeEvents {
    fn committed(&self, _: &StoredBlock, _: &ExecutedBlock) {
        self.changes.send_modify(|n| *n += 1);
    }
    fn statuses_changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
    fn work_arrived(&self) {
        (self.work)();
    }
}

/// The running node, as RPC sees it.
pub struct Node {
    chain: Arc<Chain>,
    validator: Option<Keypair>,
    limits: NodeLimits,
    /// Bumped whenever a transaction's status may have changed.
    changes: watch::Sender<u64>,
    closing: watch::Sender<bool>,
    /// Where transactions submitted here go to be gossiped.
    relay: OnceLock<mpsc::Sender<Vec<Vec<u8>>>>,
    /// The network, once started.
    network: OnceLock<tally_gossip::Handle>,
}

impl Node {
    /// A node over `chain`; `changes` must be the sender its events bump.
    pub fn new(
        chain: Arc<Chain>,
        changes: watch::Sender<u64>,
        validator: Option<Keypair>,
        limits: NodeLimits,
    ) -> Arc<Node> {
        Arc::new(Node {
            chain,
            validator,
            limits,
            changes,
            closing: watch::channel(false).0,
            relay: OnceLock::new(),
            network: OnceLock::new(),
        })
    }

    /// Connects the node to the network: transactions submitted here are
    /// sent to `relay` for gossip, and `network` answers `node_peers`.
    pub fn attach_network(&self, network: tally_gossip::Handle, relay: mpsc::Sender<Vec<Vec<u8>>>) {
        let _ = self.network.set(network);
        let _ = self.relay.set(relay);
    }

    /// The network, if started.
    pub fn network(&self) -> Option<&tally_gossip::Handle> {
        self.network.get()
    }

    /// The chain.
    pub fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    /// This node's validator key, if it validates.
    pub fn validator(&self) -> Option<&Keypair> {
        self.validator.as_ref()
    }

    /// Connected peers at the host's last count.
    pub fn peer_count(&self) -> usize {
        match self.network.get() {
            Some(network) => network.peers().len(),
            None => 0,
        }
    }

    /// Tells waiting clients the node is shutting down.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Decodes, verifies and admits a transaction submitted to this node,
    /// then passes it to the network.
    pub fn submit(
        &self,
        bytes: &[u8],
    ) -> Result<(SignedTransaction, Hash, PoolState), SubmitError> {
        if self.validator.is_none() && (self.relay.get().is_none() || self.peer_count() == 0) {
            return Err(SubmitError::NotProducing);
        }
        let tx = SignedTransaction::decode(bytes)?;
        let admitted = self.chain.admit(tx, Signature::Check, now_ms())?;
        self.relay(vec![bytes.to_vec()]);
        Ok(admitted)
    }

    /// Submits each of `txs` as [`Node::submit`] would, with the same
    /// answer for each; the signatures not checked before are checked in
    /// batches on the calling thread (call it off the async workers).
    pub fn submit_batch(
        &self,
        txs: &[Vec<u8>],
    ) -> Vec<Result<(SignedTransaction, Hash, PoolState), SubmitError>> {
        if self.validator.is_none() && (self.relay.get().is_none() || self.peer_count() == 0) {
            return txs.iter().map(|_| Err(SubmitError::NotProducing)).collect();
        }
        // An overloaded node refuses the batch before decoding anything.
        if let Err(AdmitError::Pool(full)) = self.chain.client_room() {
            return txs
                .iter()
                .map(|_| Err(SubmitError::Admit(AdmitError::Pool(full.clone()))))
                .collect();
        }
        let decoded: Vec<Result<SignedTransaction, TxError>> = txs
            .iter()
            .map(|bytes| SignedTransaction::decode(bytes))
            .collect();
        let valid: Vec<SignedTransaction> = decoded.iter().filter_map(|d| d.clone().ok()).collect();
        let mut admitted = self.chain.admit_batch(valid, now_ms()).into_iter();
        let mut answers = Vec::with_capacity(txs.len());
        // Gossiped together: one message carries the batch's transactions.
        let mut relayed = Vec::new();
        for (bytes, decoded) in txs.iter().zip(decoded) {
            let answer = match decoded {
                Err(e) => Err(SubmitError::Decode(e)),
                Ok(_) => match admitted.next() {
                    Some(Ok(admission)) => {
                        relayed.push(bytes.clone());
                        Ok(admission)
                    }
                    Some(Err(e)) => Err(SubmitError::Admit(e)),
                    None => Err(SubmitError::NotProducing), // cannot happen: one answer each
                },
            };
            answers.push(answer);
        }
        if !relayed.is_empty() {
            self.relay(relayed);
        }
        answers
    }

    /// Passes admitted transactions to the network, as one batch.
    fn relay(&self, txs: Vec<Vec<u8>>) {
        if let Some(relay) = self.relay.get() {
            if relay.try_send(txs).is_err() {
                warn!("the network is not keeping up; transactions were admitted but not gossiped");
            }
        }
    }

    /// Where a transaction is (see [`Chain::tx_status`]).
    pub fn tx_status(&self, id: &Hash, with_tx: bool) -> Result<TxStatus, StorageError> {
        self.chain.tx_status(id, with_tx)
    }

    /// Waits until the transaction's status is final, the timeout passes, or
    /// the node shuts down; returns the status then.
    pub async fn wait_final(&self, id: &Hash) -> Result<TxStatus, StorageError> {
        let mut changes = self.changes.subscribe();
        let mut closing = self.closing.subscribe();
        let deadline = tokio::time::Instant::now() + self.limits.wait_timeout;
        loop {
            changes.borrow_and_update();
            let status = self.tx_status(id, false)?;
            if status.is_final() || *closing.borrow() {
                return Ok(status);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return self.tx_status(id, false),
                _ = closing.changed() => return self.tx_status(id, false),
                changed = changes.changed() => if changed.is_err() { return self.tx_status(id, false) },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tally_host::NoEvents;
    use tally_ledger::devnet::devnet_genesis;
    use tally_ledger::{devnet_key, ChainContext, Transaction};
    use tally_mempool::Mempool;
    use tally_store::MemoryStore;

    #[test]
    fn a_node_that_does_not_produce_refuses_transactions() {
        let context = ChainContext::new(devnet_genesis(1, "tally-dev").unwrap());
        let chain = Arc::new(Chain::new(
            context.clone(),
            Arc::new(MemoryStore::new(&context)),
            Mempool::new(tally_mempool::Config::default()),
            10,
            Box::new(NoEvents),
        ));
        let limits = NodeLimits {
            wait_timeout: Duration::from_secs(1),
        };
        let node = Node::new(chain, watch::channel(0).0, None, limits);
        let alice = devnet_key("alice");
        let tx = Transaction::transfer(
            context.genesis.chain_id.clone(),
            alice.address(),
            devnet_key("bob").address(),
            1,
            1,
            0,
        )
        .sign(&alice, &context.genesis_hash);
        let result = node.submit(&tx.encode());
        assert!(matches!(result, Err(SubmitError::NotProducing)));
    }
}

//! The node's state and its one commit path.
//!
//! Every block enters the chain through [`Node::commit_block`]: verify the
//! commit certificate, execute the block (or take the execution kept when
//! consensus built or validated it), write one synced batch, then bring the
//! mempool and waiting clients up to date. Consensus drives this path; block
//! sync will drive the same one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tally_ledger::{
    build_block, execute_block, Address, Block, BlockError, BlockMeta, BlockWrite, ChainContext,
    ChainWrite, CommitError, DuplicateVoteEvidence, ExecutedBlock, Hash, Keypair, SigCheck,
    SignedTransaction, StorageError, StoredBlock, TxError, TxLocation,
};
use tally_mempool::{Mempool, MempoolError, PoolState, Removal};
use tally_rpc::{tx_error_code, TxRejection};
use tokio::sync::{mpsc, watch, Notify};
use tracing::{info, warn};

/// Most equivocations kept for `chain_getEvidence`.
const MAX_EVIDENCE: usize = 10_000;

/// Most kept executions of candidate blocks (one per round at most).
const MAX_CACHED_EXECUTIONS: usize = 64;

/// Milliseconds since the Unix epoch by the system clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A transaction's place in its lifecycle, as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxStatus {
    /// Never seen, or forgotten.
    Unknown,
    /// In the mempool.
    InPool {
        /// Pending or queued.
        state: PoolState,
        /// The transaction.
        tx: SignedTransaction,
    },
    /// In a committed block.
    Committed {
        /// Where.
        location: TxLocation,
        /// The block's hash.
        block_hash: Hash,
        /// The transaction, when asked for (it costs reading the block).
        tx: Option<SignedTransaction>,
    },
    /// Dropped as invalid.
    Rejected(TxRejection),
    /// Expired behind a nonce gap.
    Expired,
}

impl TxStatus {
    /// Whether the status can no longer change.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TxStatus::Committed { .. } | TxStatus::Rejected(_) | TxStatus::Expired
        )
    }
}

/// Whether a transaction's signature was already checked before admission.
#[derive(Debug, Clone, Copy)]
enum SignatureChecked {
    /// No: check it.
    No,
    /// By the network's validator, before it delivered the transaction.
    ByNetwork,
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The transaction breaks a ledger rule.
    #[error(transparent)]
    Tx(#[from] TxError),
    /// The mempool refused it.
    #[error(transparent)]
    Pool(#[from] MempoolError),
    /// It is already in a committed block.
    #[error("transaction is already committed at height {} index {}", .0.height, .0.index)]
    AlreadyCommitted(TxLocation),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// This node neither produces blocks nor has peers to pass the
    /// transaction to, so it would wait forever.
    #[error(
        "this node is not a validator and has no connected peers to pass the transaction to; \
         wait for it to connect (see node_peers) or submit to another node"
    )]
    NotProducing,
}

/// Why a block could not be committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitFailure {
    /// The certificate does not prove finality.
    #[error("invalid commit certificate: {0}")]
    Certificate(#[from] CommitError),
    /// The block is invalid.
    #[error("invalid block: {0}")]
    Block(#[from] BlockError),
    /// Storage failed: nothing was committed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A different block is already committed at this height. With a valid
    /// certificate for both, more than a third of the validators signed
    /// conflicting blocks: the chain's safety assumption is broken.
    #[error("a different block ({committed}) is already committed at height {height}")]
    Conflict {
        /// The height.
        height: u64,
        /// The block committed there.
        committed: Hash,
    },
}

/// Where consensus is, for `chain_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsensusPosition {
    /// Height being decided.
    pub height: u64,
    /// Round.
    pub round: u32,
    /// Step name: `propose`, `prevote` or `precommit`.
    pub step: &'static str,
}

#[derive(Debug, Clone)]
enum Outcome {
    Rejected(TxRejection),
    Expired,
}

/// Recently rejected or expired transactions, oldest forgotten first.
struct Outcomes {
    map: HashMap<Hash, Outcome>,
    order: VecDeque<Hash>,
    capacity: usize,
}

impl Outcomes {
    fn record(&mut self, id: Hash, outcome: Outcome) {
        if self.map.insert(id, outcome).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

/// Node limits that are not the mempool's own.
#[derive(Debug, Clone)]
pub struct NodeLimits {
    /// Longest `tx_submit` waits for a commit.
    pub wait_timeout: Duration,
    /// How many rejected or expired ids to remember.
    pub max_remembered_outcomes: usize,
}

/// The running node's shared state.
pub struct Node {
    chain: ChainContext,
    store: Arc<dyn ChainWrite>,
    pool: Mutex<Mempool>,
    outcomes: Mutex<Outcomes>,
    /// Bumped whenever a transaction's status may have changed.
    changes: watch::Sender<u64>,
    /// Woken when the mempool has new work for the block producer.
    work: Notify,
    /// Woken when consensus learns that peers are whole heights ahead.
    sync_wanted: Notify,
    /// Serialises the commit path.
    commit_lock: Mutex<()>,
    /// Why the node cannot commit right now (storage failure, stopped
    /// producer), cleared by the next successful commit.
    failure: Mutex<Option<String>>,
    /// Executions of candidate blocks of the next height (own proposals and
    /// validated ones), so that the decided block is executed only once.
    executed: Mutex<HashMap<Hash, ExecutedBlock>>,
    /// Equivocations seen, oldest first (at most `MAX_EVIDENCE`).
    evidence: Mutex<VecDeque<DuplicateVoteEvidence>>,
    closing: watch::Sender<bool>,
    /// The committed tip, for tasks that follow it (consensus, sync, the
    /// network's message filter).
    tip: watch::Sender<BlockMeta>,
    validator: Option<Keypair>,
    limits: NodeLimits,
    /// Where transactions submitted here go to be gossiped.
    relay: OnceLock<mpsc::Sender<Vec<u8>>>,
    /// The network, once started.
    network: OnceLock<tally_gossip::Handle>,
    /// Connected peers at the last count.
    peer_count: AtomicUsize,
    /// Whether block sync is fetching blocks.
    syncing: AtomicBool,
    consensus: Mutex<Option<ConsensusPosition>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves state that is still consistent for
    // these structures (every mutation completes before any call that could
    // panic), so recover the guard instead of spreading the panic.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Node {
    /// A node over `store` for `chain`.
    pub fn new(
        chain: ChainContext,
        store: Arc<dyn ChainWrite>,
        pool: Mempool,
        validator: Option<Keypair>,
        limits: NodeLimits,
    ) -> Arc<Node> {
        let tip = store
            .tip()
            .ok()
            .flatten()
            .unwrap_or_else(|| chain.genesis_meta());
        Arc::new(Node {
            chain,
            store,
            pool: Mutex::new(pool),
            outcomes: Mutex::new(Outcomes {
                map: HashMap::new(),
                order: VecDeque::new(),
                capacity: limits.max_remembered_outcomes,
            }),
            changes: watch::channel(0).0,
            work: Notify::new(),
            sync_wanted: Notify::new(),
            commit_lock: Mutex::new(()),
            failure: Mutex::new(None),
            executed: Mutex::new(HashMap::new()),
            evidence: Mutex::new(VecDeque::new()),
            closing: watch::channel(false).0,
            tip: watch::channel(tip).0,
            validator,
            limits,
            relay: OnceLock::new(),
            network: OnceLock::new(),
            peer_count: AtomicUsize::new(0),
            syncing: AtomicBool::new(false),
            consensus: Mutex::new(None),
        })
    }

    /// Connects the node to the network: transactions submitted here are
    /// sent to `relay` for gossip, and `network` answers `node_peers`.
    pub fn attach_network(&self, network: tally_gossip::Handle, relay: mpsc::Sender<Vec<u8>>) {
        let _ = self.network.set(network);
        let _ = self.relay.set(relay);
    }

    /// The network, if started.
    pub fn network(&self) -> Option<&tally_gossip::Handle> {
        self.network.get()
    }

    /// Follows the committed tip.
    pub fn subscribe_tip(&self) -> watch::Receiver<BlockMeta> {
        self.tip.subscribe()
    }

    /// Records how many peers are connected.
    pub fn set_peer_count(&self, peers: usize) {
        self.peer_count.store(peers, Ordering::Relaxed);
    }

    /// Connected peers at the last count.
    pub fn peer_count(&self) -> usize {
        self.peer_count.load(Ordering::Relaxed)
    }

    /// Records whether block sync is fetching blocks.
    pub fn set_syncing(&self, syncing: bool) {
        self.syncing.store(syncing, Ordering::Relaxed);
    }

    /// Whether block sync is fetching blocks.
    pub fn is_syncing(&self) -> bool {
        self.syncing.load(Ordering::Relaxed)
    }

    /// Records where consensus is.
    pub fn set_consensus_position(&self, position: ConsensusPosition) {
        *lock(&self.consensus) = Some(position);
    }

    /// Where consensus is, once it started.
    pub fn consensus_position(&self) -> Option<ConsensusPosition> {
        *lock(&self.consensus)
    }

    /// The chain this node follows.
    pub fn chain(&self) -> &ChainContext {
        &self.chain
    }

    /// The committed chain.
    pub fn store(&self) -> &dyn ChainWrite {
        &*self.store
    }

    /// This node's validator key, if it validates.
    pub fn validator(&self) -> Option<&Keypair> {
        self.validator.as_ref()
    }

    /// The last committed block, or genesis.
    pub fn tip(&self) -> Result<BlockMeta, StorageError> {
        Ok(self
            .store
            .tip()?
            .unwrap_or_else(|| self.chain.genesis_meta()))
    }

    /// Transactions in the mempool.
    pub fn mempool_len(&self) -> usize {
        lock(&self.pool).len()
    }

    /// Whether the mempool has transactions ready for a block.
    pub fn has_pending(&self) -> bool {
        lock(&self.pool).has_pending()
    }

    /// The nonce the account's next transaction should carry.
    pub fn next_nonce(
        &self,
        address: &tally_ledger::Address,
        account: &tally_ledger::Account,
    ) -> u64 {
        lock(&self.pool).next_nonce(address, account)
    }

    /// Resolves when new mempool work arrives.
    pub async fn work_arrived(&self) {
        self.work.notified().await
    }

    /// Asks block sync to compare tips now rather than at its next tick.
    pub fn want_sync(&self) {
        self.sync_wanted.notify_one();
    }

    /// Resolves when block sync should compare tips now.
    pub async fn sync_wanted(&self) {
        self.sync_wanted.notified().await
    }

    /// Keeps proof that a validator equivocated.
    pub fn record_evidence(&self, evidence: DuplicateVoteEvidence) {
        let mut kept = lock(&self.evidence);
        if kept.len() >= MAX_EVIDENCE {
            kept.pop_front();
        }
        kept.push_back(evidence);
    }

    /// The equivocations seen, oldest first.
    pub fn evidence(&self) -> Vec<DuplicateVoteEvidence> {
        lock(&self.evidence).iter().cloned().collect()
    }

    /// Why the node cannot commit right now, if it cannot.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// Clears a failure that has passed.
    pub fn clear_failure(&self) {
        *lock(&self.failure) = None;
    }

    /// Marks the node as unable to commit (shown by `/health`).
    pub fn set_failure(&self, reason: String) {
        *lock(&self.failure) = Some(reason);
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
        let admitted = self.admit(SignedTransaction::decode(bytes)?, SignatureChecked::No)?;
        if let Some(relay) = self.relay.get() {
            if relay.try_send(bytes.to_vec()).is_err() {
                warn!("the network is not keeping up; a transaction was admitted but not gossiped");
            }
        }
        Ok(admitted)
    }

    /// Admits a transaction that arrived by gossip (the network forwards
    /// it; this node does not send it again). The network delivers only
    /// what its validator accepted ([`tally_gossip::LedgerValidator`], which
    /// checks the signature), so the signature is not checked twice.
    pub(crate) fn admit_from_peer(&self, tx: SignedTransaction) -> Result<Hash, SubmitError> {
        self.admit(tx, SignatureChecked::ByNetwork)
            .map(|(_, id, _)| id)
    }

    fn admit(
        &self,
        tx: SignedTransaction,
        signature: SignatureChecked,
    ) -> Result<(SignedTransaction, Hash, PoolState), SubmitError> {
        let id = tx.id();
        if let Some(location) = self.store.tx_location(&id)? {
            return Err(SubmitError::AlreadyCommitted(location));
        }
        let genesis = &self.chain.genesis;
        match signature {
            SignatureChecked::No => tx.verify_stateless(
                &genesis.chain_id,
                &self.chain.genesis_hash,
                genesis.params.min_fee,
            )?,
            SignatureChecked::ByNetwork => {
                tx.check_fields(&genesis.chain_id, genesis.params.min_fee)?
            }
        }
        let admission = {
            let mut pool = lock(&self.pool);
            // Read the account under the pool lock so a commit cannot slip
            // between the read and the admission.
            let account = self.store.account(&tx.tx.from)?;
            let admission = pool.insert(tx.clone(), id, account, now_ms())?;
            if let Some(replaced) = admission.replaced {
                let reason = format!("replaced by {id}, which pays a higher fee");
                let code = tally_rpc::codes::REPLACEMENT_UNDERPRICED;
                let outcome = Outcome::Rejected(rejection(code, "replaced", reason));
                lock(&self.outcomes).record(replaced, outcome);
            }
            admission
        };
        if admission.state == PoolState::Pending {
            self.work.notify_one();
        }
        if admission.replaced.is_some() {
            // The replaced transaction's status is now final.
            self.changes.send_modify(|n| *n += 1);
        }
        Ok((tx, id, admission.state))
    }

    /// Where a transaction is; `with_tx` also returns a committed
    /// transaction's body, which costs reading its whole block.
    pub fn tx_status(&self, id: &Hash, with_tx: bool) -> Result<TxStatus, StorageError> {
        // Pool, then store, then outcomes: a transaction leaves the pool only
        // after its block is stored, or with its outcome recorded under the
        // pool lock, so one of the three always knows it.
        {
            let pool = lock(&self.pool);
            if let (Some(state), Some(tx)) = (pool.status(id), pool.get(id)) {
                return Ok(TxStatus::InPool {
                    state,
                    tx: tx.clone(),
                });
            }
        }
        if let Some(location) = self.store.tx_location(id)? {
            return self.committed_status(id, location, with_tx);
        }
        Ok(match lock(&self.outcomes).map.get(id) {
            Some(Outcome::Rejected(r)) => TxStatus::Rejected(r.clone()),
            Some(Outcome::Expired) => TxStatus::Expired,
            None => TxStatus::Unknown,
        })
    }

    fn committed_status(
        &self,
        id: &Hash,
        location: TxLocation,
        with_tx: bool,
    ) -> Result<TxStatus, StorageError> {
        let missing =
            || StorageError::Corrupt(format!("indexed block {} is missing", location.height));
        if !with_tx {
            let header = self.store.header(location.height)?.ok_or_else(missing)?;
            return Ok(TxStatus::Committed {
                location,
                block_hash: header.hash(),
                tx: None,
            });
        }
        let stored = self.store.block(location.height)?.ok_or_else(missing)?;
        let tx = stored
            .block
            .txs
            .get(location.index as usize)
            .cloned()
            .ok_or_else(|| {
                StorageError::Corrupt(format!("indexed tx {id} is missing from its block"))
            })?;
        Ok(TxStatus::Committed {
            location,
            block_hash: stored.block.hash(),
            tx: Some(tx),
        })
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

    /// Drops queued transactions that waited too long.
    pub fn expire(&self, now_ms: u64) {
        {
            let mut pool = lock(&self.pool);
            let expired = pool.expire(now_ms);
            if expired.is_empty() {
                return;
            }
            let mut outcomes = lock(&self.outcomes);
            for id in expired {
                outcomes.record(id, Outcome::Expired);
            }
        }
        self.changes.send_modify(|n| *n += 1);
    }

    /// Commits a decided block with its certificate (from consensus or
    /// sync): checks the certificate, executes the block (or takes the
    /// execution kept from validating or building it), stores it. On a
    /// storage failure nothing is committed and the caller retries with the
    /// identical block.
    ///
    /// A block already committed (consensus and sync may both deliver it)
    /// is not committed again: its meta is returned.
    pub fn commit_block(&self, stored: StoredBlock) -> Result<BlockMeta, CommitFailure> {
        let _guard = lock(&self.commit_lock);
        let parent = self.tip()?;
        let hash = stored.block.hash();
        let height = stored.block.header.height;
        // The certificate first: it costs 2f+1 signature checks, where a
        // block from an unknown source could cost thousands.
        self.chain.verify_commit(&stored.commit, height, &hash)?;
        if height <= parent.height {
            let committed = self
                .store
                .header(height)?
                .map(|h| h.hash())
                .ok_or_else(|| StorageError::Corrupt(format!("block {height} is missing")))?;
            if committed != hash {
                return Err(CommitFailure::Conflict { height, committed });
            }
            let header = &stored.block.header;
            return Ok(BlockMeta {
                height,
                hash,
                timestamp_ms: header.timestamp_ms,
            });
        }
        // The kept execution is keyed by the header's hash: use it only for
        // the body that header commits to.
        let kept = match stored.block.body_matches_header() {
            true => lock(&self.executed).remove(&hash),
            false => None,
        };
        let executed = match kept {
            Some(executed) if stored.block.header.parent_hash == parent.hash => executed,
            _ => execute_block(
                &*self.store,
                &self.chain,
                &parent,
                &stored.block,
                SigCheck::SkipVerified(&self.verified_in_pool(&stored.block)),
            )
            // A read failure is this node's problem, not the block's.
            .map_err(|e| match e {
                BlockError::Storage(e) => CommitFailure::Storage(e),
                e => CommitFailure::Block(e),
            })?,
        };
        match self.finish_commit(stored, executed.clone()) {
            Ok(meta) => {
                lock(&self.executed).clear();
                Ok(meta)
            }
            Err(e) => {
                self.keep_execution(executed);
                Err(e)
            }
        }
    }

    /// Builds a block for `height` from the mempool (Tendermint's
    /// `getValue()`), proposed by `proposer`. Its transactions are marked as
    /// in flight, and its execution is kept for the commit. `None` if
    /// `height` is not the next height.
    pub fn build_proposal(
        &self,
        proposer: Address,
        height: u64,
    ) -> Result<Option<Block>, CommitFailure> {
        let _guard = lock(&self.commit_lock);
        let parent = self.tip()?;
        if parent.height + 1 != height {
            return Ok(None);
        }
        let params = &self.chain.genesis.params;
        let (max_txs, max_bytes) = (
            params.max_block_txs as usize,
            params.max_block_bytes as usize,
        );
        let candidates = lock(&self.pool).select_for_block(max_txs, max_bytes);
        let built = build_block(
            &*self.store,
            &self.chain,
            &parent,
            proposer,
            now_ms(),
            candidates,
        )
        .inspect_err(|_| lock(&self.pool).release_block())?;
        if !built.rejected.is_empty() {
            let mut pool = lock(&self.pool);
            let mut outcomes = lock(&self.outcomes);
            for (id, error) in &built.rejected {
                pool.remove(id);
                outcomes.record(*id, Outcome::Rejected(tx_rejection(error)));
            }
        }
        self.keep_execution(built.executed);
        Ok(Some(built.block))
    }

    /// The ids of `block`'s transactions that are in the mempool: their
    /// signatures were checked when they were admitted, so validating the
    /// block need not check them again (a block's transactions normally
    /// reach every node by gossip before the proposal does).
    fn verified_in_pool(&self, block: &Block) -> HashSet<Hash> {
        let ids: Vec<Hash> = block.txs.iter().map(SignedTransaction::id).collect();
        let pool = lock(&self.pool);
        ids.into_iter()
            .filter(|id| pool.get(id).is_some())
            .collect()
    }

    fn keep_execution(&self, executed: ExecutedBlock) {
        let mut cache = lock(&self.executed);
        if cache.len() >= MAX_CACHED_EXECUTIONS {
            cache.clear();
        }
        cache.insert(executed.hash, executed);
    }

    /// `valid(v)`: whether `block` is a valid child of the committed tip,
    /// every signature checked. Storage failures are errors, not "invalid".
    pub fn validate_block(&self, block: &Block) -> Result<bool, StorageError> {
        if !block.body_matches_header() {
            return Ok(false);
        }
        let hash = block.hash();
        let parent = self.tip()?;
        // A kept execution was made against the parent the block names; it
        // still holds only while that parent is the tip.
        if block.header.parent_hash == parent.hash && lock(&self.executed).contains_key(&hash) {
            return Ok(true);
        }
        let verified = self.verified_in_pool(block);
        let sig_check = SigCheck::SkipVerified(&verified);
        match execute_block(&*self.store, &self.chain, &parent, block, sig_check) {
            Ok(executed) => {
                self.keep_execution(executed);
                Ok(true)
            }
            Err(BlockError::Storage(e)) => Err(e),
            Err(e) => {
                warn!(height = block.header.height, %hash, error = %e, "invalid block");
                Ok(false)
            }
        }
    }

    /// The tail of the commit path, shared by every block.
    fn finish_commit(
        &self,
        stored: StoredBlock,
        executed: ExecutedBlock,
    ) -> Result<BlockMeta, CommitFailure> {
        let header = &stored.block.header;
        let write = BlockWrite {
            stored: &stored,
            hash: executed.hash,
            tx_ids: &executed.tx_ids,
            accounts: &executed.accounts,
        };
        if let Err(e) = self.store.commit(&write) {
            warn!(height = header.height, error = %e, "block commit failed; retrying the same block until storage recovers");
            self.set_failure(format!("cannot commit block {}: {e}", header.height));
            return Err(e.into());
        }
        *lock(&self.failure) = None;
        {
            let mut pool = lock(&self.pool);
            let removed = pool.on_block_committed(&executed.tx_ids, &executed.accounts);
            let mut outcomes = lock(&self.outcomes);
            for (id, removal) in removed {
                if let Removal::Invalid(error) = removal {
                    outcomes.record(id, Outcome::Rejected(tx_rejection(&error)));
                }
            }
        }
        self.changes.send_modify(|n| *n += 1);
        let meta = BlockMeta {
            height: header.height,
            hash: executed.hash,
            timestamp_ms: header.timestamp_ms,
        };
        info!(height = meta.height, txs = executed.tx_ids.len(), hash = %meta.hash, "committed block");
        self.tip.send_replace(meta);
        Ok(meta)
    }
}

fn rejection(code: i32, reason: &str, message: String) -> TxRejection {
    TxRejection {
        code,
        reason: reason.to_owned(),
        message,
    }
}

/// The RPC description of a ledger rejection.
pub fn tx_rejection(error: &TxError) -> TxRejection {
    let (code, reason) = tx_error_code(error);
    rejection(code, reason, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tally_ledger::devnet::devnet_genesis;
    use tally_ledger::{
        devnet_key, Account, AccountRead, ChainRead, Commit, CommitSignature, Header, Transaction,
        Vote, VoteKind,
    };
    use tally_store::MemoryStore;

    /// A store whose commits fail while `failing` is set (a full disk).
    struct FlakyStore {
        inner: MemoryStore,
        failing: AtomicBool,
    }

    impl AccountRead for FlakyStore {
        fn account(&self, address: &Address) -> Result<Account, StorageError> {
            self.inner.account(address)
        }
    }

    impl ChainRead for FlakyStore {
        fn genesis_hash(&self) -> Hash {
            self.inner.genesis_hash()
        }
        fn tip(&self) -> Result<Option<BlockMeta>, StorageError> {
            self.inner.tip()
        }
        fn block(&self, height: u64) -> Result<Option<StoredBlock>, StorageError> {
            self.inner.block(height)
        }
        fn header(&self, height: u64) -> Result<Option<Header>, StorageError> {
            self.inner.header(height)
        }
        fn height_of(&self, hash: &Hash) -> Result<Option<u64>, StorageError> {
            self.inner.height_of(hash)
        }
        fn tx_location(&self, id: &Hash) -> Result<Option<TxLocation>, StorageError> {
            self.inner.tx_location(id)
        }
    }

    impl ChainWrite for FlakyStore {
        fn commit(&self, write: &BlockWrite<'_>) -> Result<(), StorageError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(StorageError::Io("No space left on device".into()));
            }
            self.inner.commit(write)
        }
    }

    fn node() -> (Arc<Node>, Arc<FlakyStore>, ChainContext) {
        let chain = ChainContext::new(devnet_genesis(1, "tally-dev").unwrap());
        let store = Arc::new(FlakyStore {
            inner: MemoryStore::new(&chain),
            failing: AtomicBool::new(false),
        });
        let limits = NodeLimits {
            wait_timeout: Duration::from_secs(1),
            max_remembered_outcomes: 10,
        };
        let pool = Mempool::new(tally_mempool::Config::default());
        let key = devnet_key("validator-0");
        let node = Node::new(chain.clone(), store.clone(), pool, Some(key), limits);
        (node, store, chain)
    }

    fn transfer(chain: &ChainContext, nonce: u64, fee: u64) -> SignedTransaction {
        let alice = devnet_key("alice");
        Transaction {
            chain_id: chain.genesis.chain_id.clone(),
            from: alice.address(),
            to: devnet_key("bob").address(),
            amount: 1,
            fee,
            nonce,
        }
        .sign(&alice, &chain.genesis_hash)
    }

    /// What consensus would decide for a one-validator chain: the block and
    /// the validator's precommit for it.
    fn decide(chain: &ChainContext, block: Block) -> StoredBlock {
        let key = devnet_key("validator-0");
        let vote = Vote {
            chain_id: chain.genesis.chain_id.clone(),
            height: block.header.height,
            round: 0,
            kind: VoteKind::Precommit,
            block_hash: Some(block.hash()),
        };
        let commit = Commit {
            height: block.header.height,
            round: 0,
            block_hash: block.hash(),
            signatures: vec![CommitSignature {
                validator: key.address(),
                signature: vote.sign(&key, &chain.genesis_hash),
            }],
        };
        StoredBlock { block, commit }
    }

    #[test]
    fn a_failed_commit_changes_nothing_and_the_identical_block_commits_later() {
        let (node, store, chain) = node();
        let proposer = devnet_key("validator-0").address();
        node.submit(&transfer(&chain, 0, 1).encode()).unwrap();
        let block = node.build_proposal(proposer, 1).unwrap().unwrap();
        assert_eq!(
            node.build_proposal(proposer, 5).unwrap(),
            None,
            "only the next height"
        );
        let stored = decide(&chain, block);
        store.failing.store(true, Ordering::SeqCst);
        assert!(matches!(
            node.commit_block(stored.clone()),
            Err(CommitFailure::Storage(_))
        ));
        assert!(node.failure().is_some(), "health reports the failure");
        assert_eq!(node.tip().unwrap().height, 0);
        // Meanwhile the transaction in the block cannot be replaced.
        let replacement = transfer(&chain, 0, 5).encode();
        assert!(matches!(
            node.submit(&replacement),
            Err(SubmitError::Pool(MempoolError::InBlock { nonce: 0 }))
        ));
        store.failing.store(false, Ordering::SeqCst);
        let tip = node.commit_block(stored.clone()).unwrap();
        assert_eq!(tip.hash, stored.block.hash());
        assert!(node.failure().is_none());
        assert_eq!(node.mempool_len(), 0);
    }

    #[test]
    fn validation_checks_every_rule_and_reports_invalid_blocks() {
        let (node, _, chain) = node();
        let proposer = devnet_key("validator-0").address();
        node.submit(&transfer(&chain, 0, 1).encode()).unwrap();
        let block = node.build_proposal(proposer, 1).unwrap().unwrap();
        assert!(node.validate_block(&block).unwrap());
        let mut tampered = block.clone();
        tampered.txs[0].tx.amount += 1;
        assert!(
            !node.validate_block(&tampered).unwrap(),
            "bad signature, bad tx root"
        );
        // A commit certificate that does not verify is refused.
        let mut stored = decide(&chain, block);
        stored.commit.signatures.clear();
        assert!(matches!(
            node.commit_block(stored),
            Err(CommitFailure::Certificate(_))
        ));
    }

    #[test]
    fn a_node_that_does_not_produce_refuses_transactions() {
        let chain = ChainContext::new(devnet_genesis(1, "tally-dev").unwrap());
        let store = Arc::new(MemoryStore::new(&chain));
        let limits = NodeLimits {
            wait_timeout: Duration::from_secs(1),
            max_remembered_outcomes: 10,
        };
        let pool = Mempool::new(tally_mempool::Config::default());
        let node = Node::new(chain.clone(), store, pool, None, limits);
        let result = node.submit(&transfer(&chain, 0, 1).encode());
        assert!(matches!(result, Err(SubmitError::NotProducing)));
    }
}

//! The committed chain and the transactions waiting to join it, shared by
//! the host (which builds, validates and commits blocks) and its readers
//! (the node's RPC, the simulator's clients and checker).
//!
//! Every block enters the chain through [`Chain::commit_block`], whether
//! consensus decided it or a peer sent it: the block must come as a
//! [`CertifiedBlock`], which only a checked certificate makes; it is
//! executed (or the execution kept when it was built or validated here is
//! used), written in one synced batch, and then the mempool and whoever
//! listens are brought up to date.
//!
//! # Locks
//! The chain is shared between threads, so its parts sit behind mutexes,
//! always taken in this order and never the other way: `commit_lock` (one
//! block at a time through build and commit) → `pool` → `outcomes`. The
//! others (`executed`, `evidence`, `failure`, `status`) are leaves: held
//! only for a read or a write, never while taking another lock. No lock is
//! held while a listener is told anything.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tally_ledger::{
    build_block, execute_block, Account, Action, Address, Block, BlockError, BlockInputs,
    BlockMeta, BlockWrite, ChainContext, ChainWrite, Commit, CommitError, Evidence, ExecutedBlock,
    Hash, LiveSigners, Offence, SigCheck, SignedTransaction, Signers, StorageError, StoredBlock,
    TxError, TxLocation, ValidatorChangeError, ValidatorSet, ValidatorState, Verified,
};
use tally_mempool::{Mempool, MempoolError, PoolState, Removal};
use tracing::{info, warn};

use crate::checked::CheckedTxs;

/// Most equivocations kept for `chain_getEvidence`.
pub const MAX_EVIDENCE: usize = 1_000;

/// Most pending evidence kept against one validator: enough to cite for
/// its removal, and a validator that equivocates at will cannot crowd
/// out the evidence against others.
pub const MAX_EVIDENCE_PER_VALIDATOR: usize = 4;

/// Whether pending evidence `kept` has no room for one more piece like
/// `offence`'s: [`MAX_EVIDENCE_PER_VALIDATOR`] against its validator, or
/// [`MAX_EVIDENCE`] in all.
fn no_room_for(kept: &VecDeque<Evidence>, offence: &Offence) -> bool {
    let against = kept
        .iter()
        .filter(|e| e.offence().validator == offence.validator)
        .count();
    against >= MAX_EVIDENCE_PER_VALIDATOR || kept.len() >= MAX_EVIDENCE
}

/// Most kept executions of candidate blocks (one per round at most).
const MAX_CACHED_EXECUTIONS: usize = 64;

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
    /// Dropped.
    Rejected(Rejection),
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

/// Why an admitted transaction was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// It broke a ledger rule by the time a block would have held it.
    Invalid(TxError),
    /// Another transaction of the same sender and nonce paying a higher
    /// fee took its place.
    Replaced {
        /// The replacement.
        by: Hash,
    },
}

/// Whether a transaction's signature still has to be checked on admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// Check it (RPC, a client).
    Check,
    /// The network intake checked it ([`crate::edge::TransactionIntake`]).
    Checked,
}

/// Why a transaction was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
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
}

/// Why a block could not be committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitFailure {
    /// The certificate does not prove finality of this block.
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

/// A block with a certificate checked to prove it final: the only thing
/// [`Chain::commit_block`] takes.
#[derive(Debug, Clone)]
pub struct CertifiedBlock {
    stored: StoredBlock,
}

impl CertifiedBlock {
    /// A block decided here: its certificate was assembled from votes this
    /// node's state machine counted, each verified when it arrived, so no
    /// signature is checked again; only that it is this block's.
    pub fn decided(block: Block, commit: Verified<Commit>) -> Result<Self, CommitError> {
        let hash = block.hash();
        let height = block.header.height;
        if commit.height != height || commit.block_hash != hash {
            return Err(CommitError::WrongBlock {
                height,
                hash,
                got_height: commit.height,
                got_hash: commit.block_hash,
            });
        }
        Ok(CertifiedBlock {
            stored: StoredBlock {
                block,
                commit: commit.into_inner(),
            },
        })
    }

    /// A block from a peer (block sync, catch-up): every signature of its
    /// certificate is checked against `signers`.
    pub fn check(stored: StoredBlock, signers: &Signers<'_>) -> Result<Self, CommitError> {
        let StoredBlock { block, commit } = stored;
        let (height, hash) = (block.header.height, block.hash());
        #[cfg(feature = "sabotage")]
        if crate::sabotage::active(crate::Sabotage::CommitUncheckedCertificate) {
            return Ok(CertifiedBlock {
                stored: StoredBlock { block, commit },
            });
        }
        let commit = Verified::<Commit>::check(commit, height, &hash, signers)?;
        Self::decided(block, commit)
    }

    /// The block and its certificate.
    pub fn stored(&self) -> &StoredBlock {
        &self.stored
    }
}

#[derive(Debug, Clone)]
enum Outcome {
    Rejected(Rejection),
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

/// What the chain tells whoever follows it (the node wakes waiting RPC
/// clients and its host thread; the simulator feeds its checker). Called
/// with no lock held.
pub trait ChainEvents: Send + Sync {
    /// A block was committed.
    fn committed(&self, stored: &StoredBlock, executed: &ExecutedBlock);
    /// Some transaction's status may have changed.
    fn statuses_changed(&self);
    /// The mempool has a new pending transaction (a block can be built).
    fn work_arrived(&self);
}

/// A listener that ignores everything.
pub struct NoEvents;

impl ChainEvents for NoEvents {
    fn committed(&self, _: &StoredBlock, _: &ExecutedBlock) {}
    fn statuses_changed(&self) {}
    fn work_arrived(&self) {}
}

/// Where consensus is, as reported by the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Height being decided.
    pub height: u64,
    /// Round.
    pub round: u32,
    /// Step name: `propose`, `prevote`, `precommit` or `commit`.
    pub step: &'static str,
}

/// What the host reports about itself, for status queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStatus {
    /// Where consensus is, once it started.
    pub position: Option<Position>,
    /// Whether block sync is fetching blocks.
    pub syncing: bool,
    /// Connected peers at the last count.
    pub peers: usize,
}

/// The validator state after the committed tip, shared with the network
/// intake, which checks each consensus message against the set of its
/// height. Replaced whole at each commit.
#[derive(Debug)]
pub struct ValidatorView(RwLock<Arc<ValidatorState>>);

impl ValidatorView {
    /// A view of `state`.
    pub fn new(state: ValidatorState) -> ValidatorView {
        ValidatorView(RwLock::new(Arc::new(state)))
    }

    /// A view of `chain`'s genesis sets (a chain at height 0).
    pub fn genesis(chain: &ChainContext) -> Arc<ValidatorView> {
        Arc::new(ValidatorView::new(ValidatorState::genesis(
            chain.validators.clone(),
        )))
    }

    /// The state now.
    pub fn get(&self) -> Arc<ValidatorState> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set(&self, state: ValidatorState) {
        *self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(state);
    }

    /// The set that signs block `height`, if it is one of the three the
    /// state knows (the tip and the two heights after it).
    pub fn set_at(&self, height: u64) -> Option<ValidatorSet> {
        self.get().set_at(height).cloned()
    }
}

/// The committed chain, the mempool and the one commit path.
pub struct Chain {
    context: ChainContext,
    store: Arc<dyn ChainWrite>,
    pool: Mutex<Mempool>,
    outcomes: Mutex<Outcomes>,
    /// Serialises building and committing.
    commit_lock: Mutex<()>,
    /// Why the node cannot commit right now (storage failure, stopped
    /// host), cleared by the next successful commit.
    failure: Mutex<Option<String>>,
    /// Executions of candidate blocks of the next height (own proposals and
    /// validated ones), so that the decided block is executed only once.
    executed: Mutex<HashMap<Hash, ExecutedBlock>>,
    /// Equivocations seen and not yet recorded on chain, oldest first (at
    /// most `MAX_EVIDENCE`, one per offence).
    evidence: Mutex<VecDeque<Evidence>>,
    evidence_kept: AtomicU64,
    status: Mutex<HostStatus>,
    /// The committed height, readable without the store (the network
    /// intake asks for every message).
    tip_height: AtomicU64,
    /// Transactions whose signatures this node found valid, by any path.
    checked: Arc<CheckedTxs>,
    /// Header time of the last commit, and the gap to the one before (the
    /// block interval a refused client is told to wait).
    last_commit_ms: AtomicU64,
    block_interval_ms: AtomicU64,
    events: Box<dyn ChainEvents>,
    /// The validator state after the tip.
    validators: Arc<ValidatorView>,
    /// The tip's commit certificate: the next block's `last_commit`.
    last_commit: Mutex<Option<Commit>>,
    /// The signers of the commit the tip block carries (of its parent).
    tip_carried_signers: Mutex<BTreeSet<Address>>,
}

/// The validator state after a block as this node judges messages and
/// runs consensus by: with the override of the next height applied
/// ([`ChainContext::state_after`]), and the set of the height after that
/// replaced by its override, if it has one, so that the intake takes that
/// height's messages from the override's validators. (A block's header
/// announces the set its own state names; the second replacement is not
/// part of that.)
fn view_of(context: &ChainContext, state: ValidatorState) -> ValidatorState {
    let ahead = state.height + 2;
    let mut state = context.state_after(state);
    if let Some(set) = context.override_at(ahead) {
        state.next = set.clone();
    }
    state
}

fn signers(commit: &Option<Commit>) -> BTreeSet<Address> {
    commit
        .iter()
        .flat_map(|c| c.signatures.iter().map(|s| s.validator))
        .collect()
}

/// What a refused client is told to wait before the first commit is seen.
const DEFAULT_RETRY_AFTER_MS: u64 = 1_000;
/// The shortest `retry_after_ms` hint.
pub const MIN_RETRY_AFTER_MS: u64 = 100;
/// The longest `retry_after_ms` hint.
pub const MAX_RETRY_AFTER_MS: u64 = 5_000;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves state that is still consistent for
    // these structures (every mutation completes before any call that could
    // panic), so recover the guard instead of spreading the panic.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Chain {
    /// The chain `context` over `store`, with `pool`, remembering the last
    /// `max_remembered_outcomes` rejected or expired transaction ids.
    pub fn new(
        context: ChainContext,
        store: Arc<dyn ChainWrite>,
        pool: Mempool,
        max_remembered_outcomes: usize,
        events: Box<dyn ChainEvents>,
    ) -> Chain {
        let tip_height = store.tip().ok().flatten().map_or(0, |t| t.height);
        // A store checks its validator state when it opens; one that cannot
        // be read now is reported (the genesis state in its place knows no
        // height past 2, so nothing is built or signed on it).
        let (validators, state_failure) = match store.validator_state() {
            Ok(state) => (view_of(&context, state), None),
            Err(e) => (
                ValidatorState::genesis(context.validators.clone()),
                Some(format!("cannot read the validator state: {e}")),
            ),
        };
        // The tip's certificate is the next block's last commit; without it
        // every block this node builds would be invalid, so say why.
        let tip_carried = Mutex::new(BTreeSet::new());
        let (last_commit, failure) = match tip_height {
            0 => (None, None),
            h => match store.block(h) {
                Ok(Some(b)) => {
                    *lock(&tip_carried) = signers(&b.block.last_commit);
                    (Some(b.commit), None)
                }
                Ok(None) => (
                    None,
                    Some(format!("the tip block {h} is missing from the store")),
                ),
                Err(e) => (None, Some(format!("cannot read the tip block {h}: {e}"))),
            },
        };
        Chain {
            validators: Arc::new(ValidatorView::new(validators)),
            last_commit: Mutex::new(last_commit),
            tip_carried_signers: tip_carried,
            tip_height: AtomicU64::new(tip_height),
            context,
            store,
            pool: Mutex::new(pool),
            outcomes: Mutex::new(Outcomes {
                map: HashMap::new(),
                order: VecDeque::new(),
                capacity: max_remembered_outcomes,
            }),
            commit_lock: Mutex::new(()),
            failure: Mutex::new(state_failure.or(failure)),
            executed: Mutex::new(HashMap::new()),
            evidence: Mutex::new(VecDeque::new()),
            evidence_kept: AtomicU64::new(0),
            status: Mutex::new(HostStatus::default()),
            checked: Arc::new(CheckedTxs::default()),
            last_commit_ms: AtomicU64::new(0),
            block_interval_ms: AtomicU64::new(DEFAULT_RETRY_AFTER_MS),
            events,
        }
    }

    /// Whether clients' transactions are taken at all now
    /// ([`Mempool::client_batch_room`]): checked first, before decoding or
    /// signatures, so the excess of an overload costs almost nothing.
    pub fn client_room(&self) -> Result<(), AdmitError> {
        Ok(lock(&self.pool).client_batch_room()?)
    }

    /// How long a client refused for a full pool should wait before trying
    /// again: the last block interval (room is made a block at a time),
    /// within [`MIN_RETRY_AFTER_MS`] and [`MAX_RETRY_AFTER_MS`].
    pub fn retry_after_ms(&self) -> u64 {
        self.block_interval_ms
            .load(Ordering::Relaxed)
            .clamp(MIN_RETRY_AFTER_MS, MAX_RETRY_AFTER_MS)
    }

    /// The node's memory of checked signatures, for the network intake.
    pub fn checked(&self) -> &Arc<CheckedTxs> {
        &self.checked
    }

    /// The chain this node follows.
    pub fn context(&self) -> &ChainContext {
        &self.context
    }

    /// The committed chain.
    pub fn store(&self) -> &dyn ChainWrite {
        &*self.store
    }

    /// The last committed block, or genesis.
    pub fn tip(&self) -> Result<BlockMeta, StorageError> {
        Ok(self
            .store
            .tip()?
            .unwrap_or_else(|| self.context.genesis_meta()))
    }

    /// The committed height as of the last commit (no storage read).
    pub fn tip_height(&self) -> u64 {
        self.tip_height.load(Ordering::Acquire)
    }

    /// Transactions in the mempool.
    pub fn mempool_len(&self) -> usize {
        lock(&self.pool).len()
    }

    /// Whether the mempool has transactions ready for a block.
    pub fn has_pending(&self) -> bool {
        lock(&self.pool).has_pending()
    }

    /// What the mempool holds of `address` at `now_ms`, with the pool's
    /// limits ([`Mempool::sender_view`]).
    pub fn pending_of(
        &self,
        address: &Address,
        account: &Account,
        now_ms: u64,
    ) -> (tally_mempool::SenderView, tally_mempool::Config) {
        let pool = lock(&self.pool);
        (
            pool.sender_view(address, account, now_ms),
            pool.config().clone(),
        )
    }

    /// The nonce the account's next transaction should carry.
    pub fn next_nonce(&self, address: &Address, account: &Account) -> u64 {
        lock(&self.pool).next_nonce(address, account)
    }

    /// The validator state after the tip, shared.
    pub fn validators(&self) -> &Arc<ValidatorView> {
        &self.validators
    }

    /// Adds a precommit for the tip that arrived after the tip was
    /// committed (checked by the intake against the tip's set) to the
    /// tip's commit, which the next block carries as `last_commit`: the
    /// guard on validator-set votes judges who is live by its signers, and
    /// a certificate assembled at the decision holds only the first quorum.
    /// A vote for another block or round, or a signer already in, changes
    /// nothing.
    pub fn add_late_precommit(&self, vote: &tally_ledger::SignedVote) {
        let mut last = lock(&self.last_commit);
        let Some(commit) = last.as_mut() else { return };
        let v = &vote.vote;
        let fits = v.kind == tally_ledger::VoteKind::Precommit
            && v.height == commit.height
            && v.round == commit.round
            && v.block_hash == Some(commit.block_hash)
            && !commit
                .signatures
                .iter()
                .any(|s| s.validator == vote.validator);
        let member = self
            .validators
            .get()
            .last
            .power_of(&vote.validator)
            .is_some();
        if fits && member {
            commit.signatures.push(tally_ledger::CommitSignature {
                validator: vote.validator,
                signature: vote.signature,
            });
        }
    }

    /// Checks that the operator overrides of the context fit the chain in
    /// the store: the overrides at or below the tip are exactly those its
    /// blocks took, with the same sets. An override added after its height
    /// was committed, changed since, or removed would make this node judge
    /// blocks by another set than its peers (and than itself before).
    pub fn check_overrides(&self) -> Result<(), String> {
        let tip = self.tip().map_err(|e| e.to_string())?.height;
        let applied: BTreeMap<u64, Hash> = self
            .store
            .applied_overrides()
            .map_err(|e| format!("cannot read the overrides this chain took: {e}"))?
            .into_iter()
            .collect();
        for (&height, set) in self.context.overrides.range(..=tip) {
            match applied.get(&height) {
                Some(hash) if *hash == set.hash() => {}
                Some(hash) => {
                    return Err(format!(
                        "the [[validator_override]] at height {height} names a set with hash {}, \
                         but this node's chain (at height {tip}) took an override there with \
                         set {hash}: an override stays exactly as it was first applied; restore it",
                        set.hash()
                    ))
                }
                None => {
                    return Err(format!(
                        "the [[validator_override]] at height {height} does not match this \
                         node's chain (at height {tip}), which committed height {height} without \
                         it: an override takes effect only at a height above the tip when it is \
                         first configured; remove it, or give it a height above {tip}"
                    ))
                }
            }
        }
        for (height, hash) in applied {
            if !self.context.overrides.contains_key(&height) {
                return Err(format!(
                    "this node's chain took an operator override at height {height} (set {hash}) \
                     that config.toml no longer names: put its [[validator_override]] entry \
                     back (every node needs it, forever)"
                ));
            }
        }
        Ok(())
    }

    /// Whether the next block would judge a validator-set change by who
    /// signed the tip's commit, and that commit still lacks a validator of
    /// the tip's set: the pool holds a vote, or an open change has a
    /// quorum and completes at the next block's end. A proposer then waits
    /// a moment for late precommits ([`crate::HostConfig::live_wait_ms`]),
    /// so that a commit made by the first quorum does not count the
    /// others as gone.
    pub fn wants_more_signers(&self) -> bool {
        let state = self.validators.get();
        let complete = lock(&self.last_commit).as_ref().is_none_or(|c| {
            state
                .last
                .validators()
                .iter()
                .all(|v| c.signatures.iter().any(|s| s.validator == v.address))
        });
        if complete {
            return false;
        }
        let ripe = state
            .open
            .iter()
            .any(|c| state.power_for(c) >= state.current.quorum_power());
        ripe || lock(&self.pool).holds_validator_votes()
    }

    /// The signers of the tip's commit: who is live, for the guard on
    /// validator-set votes.
    pub fn live_signers(&self) -> LiveSigners {
        lock(&self.last_commit)
            .as_ref()
            .map(|c| c.signatures.iter().map(|s| s.validator).collect())
    }

    /// A validator-set vote must pass the vote rules against the state
    /// after the tip (the block it would enter next): checked on every
    /// admission, so a vote the guard refuses is answered with its reason
    /// at once. Transfers pass. Admission counts as live the signers of
    /// the tip's commit and of the commit the tip carries: a vote that
    /// arrives just after a decision, before the late precommits, is not
    /// refused for their absence (the block that takes it judges by its
    /// own commit, waiting for them: [`Chain::wants_more_signers`]).
    fn check_vote(&self, tx: &SignedTransaction) -> Result<(), AdmitError> {
        let Action::Validator { change, evidence } = &tx.tx.action else {
            return Ok(());
        };
        let state = self.validators.get();
        let context = &self.context;
        state
            .check_vote(
                &tx.tx.from,
                change,
                &self.live_signers().map(|mut live| {
                    live.extend(lock(&self.tip_carried_signers).iter().copied());
                    live
                }),
                &context.genesis.params,
                &context.genesis_hash,
            )
            .map_err(TxError::from)?;
        if let Some(id) = evidence {
            let record = self
                .store
                .recorded_evidence(id)?
                .ok_or(TxError::from(ValidatorChangeError::EvidenceNotFound(*id)))?;
            let offender = record.evidence.offence().validator;
            if &offender != change.subject() {
                return Err(TxError::from(ValidatorChangeError::EvidenceMismatch {
                    evidence: *id,
                    offender,
                    removed: *change.subject(),
                })
                .into());
            }
        }
        Ok(())
    }

    /// Keeps proof that a validator equivocated (checked by whoever hands
    /// it in: the consensus machine from verified messages, the network
    /// intake against the set of its height) until a block records it.
    /// `false` if its offence is already pending or on chain, if
    /// [`MAX_EVIDENCE_PER_VALIDATOR`] pieces against its validator or
    /// [`MAX_EVIDENCE`] in all are pending, or at height 0. A store that
    /// cannot be read does not lose it: it is kept, and the block builder
    /// leaves it out if it turns out to be recorded.
    pub fn add_evidence(&self, evidence: Evidence) -> bool {
        let offence = evidence.offence();
        if offence.height == 0 || lock(&self.evidence).iter().any(|e| e.offence() == offence) {
            return false;
        }
        if let Ok(Some(_)) = self.store.recorded_offence(&offence) {
            return false;
        }
        let mut kept = lock(&self.evidence);
        // Full: what is kept stays (it is older, and as good); the
        // newcomer may come again by gossip once blocks make room.
        if kept.iter().any(|e| e.offence() == offence) || no_room_for(&kept, &offence) {
            return false;
        }
        kept.push_back(evidence);
        self.evidence_kept.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Whether this node holds evidence of `offence` (pending, or recorded
    /// on chain), or holds the most it keeps against its validator.
    pub fn knows_offence(&self, offence: &Offence) -> bool {
        let kept = lock(&self.evidence);
        kept.iter().any(|e| &e.offence() == offence)
            || no_room_for(&kept, offence)
            || matches!(self.store.recorded_offence(offence), Ok(Some(_)))
    }

    /// How many pieces of evidence this node has kept since it started.
    pub fn evidence_kept(&self) -> u64 {
        self.evidence_kept.load(Ordering::Relaxed)
    }

    /// The equivocations seen and not yet recorded on chain, oldest first.
    pub fn pending_evidence(&self) -> Vec<Evidence> {
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

    /// What the host last reported.
    pub fn host_status(&self) -> HostStatus {
        *lock(&self.status)
    }

    /// Records what the host reports.
    pub fn update_host_status(&self, update: impl FnOnce(&mut HostStatus)) {
        update(&mut lock(&self.status));
    }

    /// Admits a transaction to the mempool: refused if it is committed
    /// already or breaks a rule (its signature checked unless the network
    /// intake checked it, or any path did before).
    pub fn admit(
        &self,
        tx: SignedTransaction,
        signature: Signature,
        now_ms: u64,
    ) -> Result<(SignedTransaction, Hash, PoolState), AdmitError> {
        let id = tx.id();
        self.admit_with_id(tx, id, signature, now_ms)
    }

    /// Admits each of `txs` from a client as [`Chain::admit`] would, with
    /// the same answer for each, but checks the signatures of those not
    /// checked before in batches ([`CheckedTxs::verify`]) on the calling
    /// thread. Two differences, both about room: a full pool refuses the
    /// whole batch at once, and in a batch that arrives below the clients'
    /// share ([`Mempool::client_room`]) the share is judged only for each
    /// sender's first admitted transaction — the rest of its run in the
    /// batch follows (up to `max_txs`), so a run is not cut in the middle
    /// (each cut would strand the rest of it behind a refused nonce).
    pub fn admit_batch(
        &self,
        txs: Vec<SignedTransaction>,
        now_ms: u64,
    ) -> Vec<Result<(SignedTransaction, Hash, PoolState), AdmitError>> {
        if let Err(MempoolError::Full(reason)) = lock(&self.pool).client_batch_room() {
            return txs
                .iter()
                .map(|_| Err(AdmitError::Pool(MempoolError::Full(reason.clone()))))
                .collect();
        }
        let share = !lock(&self.pool).below_client_share();
        let ids: Vec<Hash> = txs.iter().map(SignedTransaction::id).collect();
        // The field rules, and the pool's checks against the pool as the
        // batch found it; the signatures of those that pass are checked
        // together.
        let genesis = &self.context.genesis;
        let early: Vec<Result<(), AdmitError>> = txs
            .iter()
            .zip(&ids)
            .map(|(tx, id)| {
                tx.check_fields(&genesis.chain_id, genesis.params.min_fee)
                    .map_err(AdmitError::Tx)
                    .and_then(|()| self.pool_precheck(tx, id, share))
            })
            .collect();
        let todo: Vec<usize> = (0..txs.len()).filter(|&i| early[i].is_ok()).collect();
        let todo_txs: Vec<&SignedTransaction> = todo.iter().map(|&i| &txs[i]).collect();
        let todo_ids: Vec<Hash> = todo.iter().map(|&i| ids[i]).collect();
        let verdicts = self
            .checked
            .verify(&todo_txs, &todo_ids, &self.context.genesis_hash);
        let mut valid = vec![false; txs.len()];
        for (&i, ok) in todo.iter().zip(verdicts) {
            valid[i] = ok;
        }
        // Then each in order. One that passed goes to the pool, whose
        // insertion applies every pool rule against the pool as the earlier
        // ones left it. One the pool refused as the batch found it is
        // judged again now, in order, as `admit` would (an earlier one of
        // its sender may have closed its nonce gap). The share is judged
        // again for each sender's first transaction of the batch (batches
        // run side by side must not overrun it together); the rest of a
        // sender's run follows its first.
        let mut started: HashSet<Address> = HashSet::new();
        txs.into_iter()
            .zip(ids)
            .zip(early)
            .zip(valid)
            .map(|(((tx, id), early), valid)| match (early, valid) {
                (Ok(()), true) => {
                    let first = !started.contains(&tx.tx.from);
                    let from = tx.tx.from;
                    let admitted = self
                        .pool_precheck(&tx, &id, share || first)
                        .and_then(|()| self.insert_checked(tx, id, now_ms));
                    if admitted.is_ok() {
                        started.insert(from);
                    }
                    admitted
                }
                (Ok(()), false) => self
                    .pool_precheck(&tx, &id, false)
                    .and(Err(AdmitError::Tx(TxError::InvalidSignature))),
                (Err(AdmitError::Tx(e)), _) => Err(AdmitError::Tx(e)),
                (Err(_), _) => self.admit_client(tx, id, share, now_ms),
            })
            .collect()
    }

    fn admit_with_id(
        &self,
        tx: SignedTransaction,
        id: Hash,
        signature: Signature,
        now_ms: u64,
    ) -> Result<(SignedTransaction, Hash, PoolState), AdmitError> {
        match signature {
            Signature::Check => self.admit_client(tx, id, true, now_ms),
            Signature::Checked => {
                let genesis = &self.context.genesis;
                tx.check_fields(&genesis.chain_id, genesis.params.min_fee)?;
                self.insert_checked(tx, id, now_ms)
            }
        }
    }

    /// A client's transaction: fields, the pool's cheap checks (the
    /// clients' share too when `share`), then the signature unless some
    /// path found it valid already, then insertion.
    fn admit_client(
        &self,
        tx: SignedTransaction,
        id: Hash,
        share: bool,
        now_ms: u64,
    ) -> Result<(SignedTransaction, Hash, PoolState), AdmitError> {
        let genesis = &self.context.genesis;
        tx.check_fields(&genesis.chain_id, genesis.params.min_fee)?;
        self.pool_precheck(&tx, &id, share)?;
        if !self.checked.contains(&id) {
            tx.verify_signature(&self.context.genesis_hash)?;
            self.checked.remember([&id]);
        }
        self.insert_checked(tx, id, now_ms)
    }

    /// The pool's cheap checks of a client's transaction (its nonce,
    /// [`Mempool::precheck`], and, when `share`, the room for clients,
    /// [`Mempool::client_room`]), run before its signature is checked; a
    /// committed transaction is answered as such.
    fn pool_precheck(
        &self,
        tx: &SignedTransaction,
        id: &Hash,
        share: bool,
    ) -> Result<(), AdmitError> {
        let refused = {
            let pool = lock(&self.pool);
            let account = match pool.needs_account(&tx.tx.from) {
                true => self.store.account(&tx.tx.from)?,
                false => Account::default(), // not used
            };
            let room = || match share {
                true => pool.client_room(tx, &account),
                false => pool.client_batch_room(),
            };
            match pool.precheck(tx, id, &account).and_then(|()| room()) {
                Ok(()) => return Ok(()),
                Err(refused) => refused,
            }
        };
        if let Some(location) = self.store.tx_location(id)? {
            return Err(AdmitError::AlreadyCommitted(location));
        }
        Err(refused.into())
    }

    /// Puts a transaction that passed the stateless checks into the pool.
    /// A committed transaction is refused as such: the pool refuses it
    /// first (its nonce is used, or its commit is under way), and only then
    /// is the store asked, so a new transaction costs no lookup.
    fn insert_checked(
        &self,
        tx: SignedTransaction,
        id: Hash,
        now_ms: u64,
    ) -> Result<(SignedTransaction, Hash, PoolState), AdmitError> {
        self.check_vote(&tx)?;
        let admission = {
            let mut pool = lock(&self.pool);
            // Read the account under the pool lock so a commit cannot slip
            // between the read and the admission; only when the pool has
            // no view of the sender of its own.
            let account = match pool.needs_account(&tx.tx.from) {
                true => self.store.account(&tx.tx.from)?,
                false => Account::default(), // not used
            };
            let admission = match pool.insert(tx.clone(), id, account, now_ms) {
                Ok(admission) => admission,
                Err(refused) => {
                    if let Some(location) = self.store.tx_location(&id)? {
                        return Err(AdmitError::AlreadyCommitted(location));
                    }
                    return Err(refused.into());
                }
            };
            if let Some(replaced) = admission.replaced {
                let outcome = Outcome::Rejected(Rejection::Replaced { by: id });
                lock(&self.outcomes).record(replaced, outcome);
            }
            admission
        };
        if admission.state == PoolState::Pending {
            self.events.work_arrived();
        }
        if admission.replaced.is_some() {
            // The replaced transaction's status is now final.
            self.events.statuses_changed();
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
        self.events.statuses_changed();
    }

    /// Commits a certified block (decided here, or from a peer): executes
    /// it (or takes the execution kept from validating or building it) and
    /// stores it. On a storage failure nothing is committed and the caller
    /// retries with the identical block.
    ///
    /// A block already committed (consensus and sync may both deliver it)
    /// is not committed again: its meta is returned.
    pub fn commit_block(&self, certified: CertifiedBlock) -> Result<BlockMeta, CommitFailure> {
        let guard = lock(&self.commit_lock);
        let stored = certified.stored;
        let parent = self.tip()?;
        let hash = stored.block.hash();
        let height = stored.block.header.height;
        if height <= parent.height {
            let committed = self
                .store
                .header(height)?
                .map(|h| h.hash())
                .ok_or_else(|| StorageError::Corrupt(format!("block {height} is missing")))?;
            if committed != hash {
                return Err(CommitFailure::Conflict { height, committed });
            }
            return Ok(BlockMeta {
                height,
                hash,
                timestamp_ms: stored.block.header.timestamp_ms,
            });
        }
        // The kept execution is keyed by the header's hash: use it only for
        // the body that header commits to, on the parent it was made on.
        let kept = match stored.block.body_matches_header() {
            true => lock(&self.executed).remove(&hash),
            false => None,
        };
        let executed = match kept {
            Some(executed) if stored.block.header.parent_hash == parent.hash => executed,
            _ => self.execute(&parent, &stored.block)?,
        };
        let committed = self.finish_commit(&stored, &executed);
        drop(guard);
        match committed {
            Ok(meta) => {
                lock(&self.executed).clear();
                if !stored.block.evidence.is_empty() {
                    let recorded: Vec<_> =
                        stored.block.evidence.iter().map(|e| e.offence()).collect();
                    lock(&self.evidence).retain(|e| !recorded.contains(&e.offence()));
                }
                self.events.statuses_changed();
                self.events.committed(&stored, &executed);
                Ok(meta)
            }
            Err(e) => {
                self.keep_execution(executed);
                Err(e)
            }
        }
    }

    fn execute(&self, parent: &BlockMeta, block: &Block) -> Result<ExecutedBlock, CommitFailure> {
        let verified = self.already_checked(block);
        execute_block(
            &*self.store,
            &self.context,
            parent,
            block,
            SigCheck::SkipVerified(&verified),
        )
        // A read failure is this node's problem, not the block's.
        .map_err(|e| match e {
            BlockError::Storage(e) => CommitFailure::Storage(e),
            e => CommitFailure::Block(e),
        })
    }

    /// Builds a block for `height` from the mempool (Tendermint's
    /// `getValue()`), proposed by `proposer` at `now_ms`. Its transactions
    /// are marked as in flight, and its execution is kept for the commit.
    /// `None` if `height` is not the next height.
    pub fn build_proposal(
        &self,
        proposer: Address,
        height: u64,
        now_ms: u64,
    ) -> Result<Option<Block>, CommitFailure> {
        let _guard = lock(&self.commit_lock);
        let parent = self.tip()?;
        if parent.height + 1 != height {
            return Ok(None);
        }
        let params = &self.context.genesis.params;
        let (max_txs, max_bytes) = (
            params.max_block_txs as usize,
            params.max_block_bytes as usize,
        );
        let candidates = lock(&self.pool).select_for_block(max_txs, max_bytes);
        let inputs = BlockInputs {
            proposer,
            now_ms,
            candidates,
            last_commit: lock(&self.last_commit).clone(),
            evidence: self.evidence_candidates(),
        };
        let built = build_block(&*self.store, &self.context, &parent, inputs)
            .inspect_err(|_| lock(&self.pool).release_block())?;
        if !built.rejected.is_empty() {
            let mut pool = lock(&self.pool);
            let mut outcomes = lock(&self.outcomes);
            for (id, error) in &built.rejected {
                pool.remove(id);
                outcomes.record(*id, Outcome::Rejected(Rejection::Invalid(error.clone())));
            }
        }
        self.keep_execution(built.executed);
        Ok(Some(built.block))
    }

    /// The ids of `block`'s transactions whose signatures this node checked
    /// already (on admission, from gossip, or in another block): validating
    /// the block need not check them again (a block's transactions normally
    /// reach every node by gossip before the proposal does). Pool members
    /// count too: a transaction stays in the pool longer than its id may be
    /// remembered.
    fn already_checked(&self, block: &Block) -> HashSet<Hash> {
        let ids: Vec<Hash> = block.txs.iter().map(SignedTransaction::id).collect();
        let known = self.checked.known(&ids);
        let pool = lock(&self.pool);
        ids.into_iter()
            .zip(known)
            .filter(|(id, known)| *known || pool.get(id).is_some())
            .map(|(id, _)| id)
            .collect()
    }

    /// Pending equivocations, oldest first, as block evidence (the builder
    /// leaves out any already recorded or no longer valid).
    fn evidence_candidates(&self) -> Vec<Evidence> {
        lock(&self.evidence)
            .iter()
            .take(tally_ledger::MAX_BLOCK_EVIDENCE * 4)
            .cloned()
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
        #[cfg(feature = "sabotage")]
        if crate::sabotage::active(crate::Sabotage::AcceptAnyBlock) {
            return Ok(true);
        }
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
        let verified = self.already_checked(block);
        let sig_check = SigCheck::SkipVerified(&verified);
        match execute_block(&*self.store, &self.context, &parent, block, sig_check) {
            Ok(executed) => {
                // Every signature of a valid block was checked (or known).
                self.checked.remember(&executed.tx_ids);
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
        stored: &StoredBlock,
        executed: &ExecutedBlock,
    ) -> Result<BlockMeta, CommitFailure> {
        let header = &stored.block.header;
        let write = BlockWrite {
            stored,
            hash: executed.hash,
            tx_ids: &executed.tx_ids,
            accounts: &executed.accounts,
            tree: &executed.tree,
            validators: &executed.validators,
            validators_changed: executed.validators_changed,
            overridden: executed.overridden,
        };
        if let Err(e) = self.store.commit(&write) {
            warn!(height = header.height, error = %e, "block commit failed; retrying the same block until storage recovers");
            self.set_failure(format!("cannot commit block {}: {e}", header.height));
            return Err(e.into());
        }
        *lock(&self.failure) = None;
        if let Some(set) = self.context.override_at(header.height + 1) {
            warn!(
                next_height = header.height + 1,
                validators = set.validators().len(),
                validators_hash = %set.hash(),
                "OPERATOR OVERRIDE: from the next height the validator set is the one \
                 [[validator_override]] names, whatever the chain's votes made it; open \
                 validator-set votes are dropped"
            );
        }
        if executed.overridden {
            warn!(
                height = header.height,
                "OPERATOR OVERRIDE in force: block committed by the override's validator set"
            );
        }
        self.validators
            .set(view_of(&self.context, executed.validators.clone()));
        *lock(&self.last_commit) = Some(stored.commit.clone());
        *lock(&self.tip_carried_signers) = signers(&stored.block.last_commit);
        for outcome in &executed.validator_outcomes {
            info!(height = header.height, change = ?outcome.change, result = ?outcome.result, "validator-set change finished");
        }
        self.tip_height.store(header.height, Ordering::Release);
        let previous = self
            .last_commit_ms
            .swap(header.timestamp_ms, Ordering::Relaxed);
        if previous != 0 && header.timestamp_ms > previous {
            self.block_interval_ms
                .store(header.timestamp_ms - previous, Ordering::Relaxed);
        }
        {
            let mut pool = lock(&self.pool);
            let removed = pool.on_block_committed(&executed.tx_ids, &executed.accounts);
            let mut outcomes = lock(&self.outcomes);
            for (id, removal) in removed {
                if let Removal::Invalid(error) = removal {
                    outcomes.record(id, Outcome::Rejected(Rejection::Invalid(error)));
                }
            }
        }
        let meta = BlockMeta {
            height: header.height,
            hash: executed.hash,
            timestamp_ms: header.timestamp_ms,
        };
        info!(height = meta.height, txs = executed.tx_ids.len(), hash = %meta.hash, "committed block");
        Ok(meta)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tally_ledger::devnet::devnet_genesis;
    use tally_ledger::{devnet_key, Commit, CommitSignature, Transaction, Vote, VoteKind};
    use tally_store::MemoryStore;

    const NOW_MS: u64 = tally_ledger::devnet::DEVNET_GENESIS_TIME_MS + 1_000;

    /// A node over a store whose commits fail while the flag is set (a
    /// full disk).
    fn node() -> (Chain, Arc<AtomicBool>, ChainContext) {
        node_with(tally_mempool::Config::default())
    }

    fn node_with(config: tally_mempool::Config) -> (Chain, Arc<AtomicBool>, ChainContext) {
        let chain = ChainContext::new(devnet_genesis(1, "tally-dev").unwrap());
        let failing = Arc::new(AtomicBool::new(false));
        let flag = failing.clone();
        let store = Arc::new(MemoryStore::with_commit_fault(&chain, move || {
            flag.load(Ordering::SeqCst)
                .then(|| "No space left on device".to_owned())
        }));
        let pool = Mempool::new(config);
        let node = Chain::new(chain.clone(), store, pool, 10, Box::new(NoEvents));
        (node, failing, chain)
    }

    /// Two different prevotes of `signer` at `height` and `round`.
    fn double_vote(chain: &ChainContext, signer: &str, height: u64, round: u32) -> Evidence {
        let key = devnet_key(signer);
        let vote = |tag: &[u8]| {
            let vote = Vote {
                chain_id: chain.genesis.chain_id.clone(),
                height,
                round,
                kind: VoteKind::Prevote,
                block_hash: Some(Hash::digest(tag)),
            };
            tally_ledger::SignedVote::sign(vote, &key, &chain.genesis_hash)
        };
        Evidence::DuplicateVote(tally_ledger::DuplicateVoteEvidence {
            first: vote(b"a"),
            second: vote(b"b"),
        })
    }

    #[test]
    fn pending_evidence_is_bounded_per_validator_and_kept_once() {
        let (node, _, chain) = node();
        for round in 0..MAX_EVIDENCE_PER_VALIDATOR as u32 {
            assert!(node.add_evidence(double_vote(&chain, "validator-0", 1, round)));
        }
        // One validator equivocating at will cannot crowd out the rest.
        let more = double_vote(&chain, "validator-0", 1, 99);
        assert!(!node.add_evidence(more.clone()));
        assert!(
            node.knows_offence(&more.offence()),
            "it holds the most it keeps"
        );
        assert!(node.add_evidence(double_vote(&chain, "validator-1", 1, 0)));
        // The same offence again, in either order, is not kept twice.
        let again = double_vote(&chain, "validator-1", 1, 0);
        let Evidence::DuplicateVote(e) = again.clone() else {
            unreachable!()
        };
        let swapped = Evidence::DuplicateVote(tally_ledger::DuplicateVoteEvidence {
            first: e.second,
            second: e.first,
        });
        assert!(!node.add_evidence(swapped.clone()));
        assert_eq!(swapped.canonical().id(), again.canonical().id());
        // No consensus runs at height 0.
        assert!(!node.add_evidence(double_vote(&chain, "validator-2", 0, 0)));
        assert_eq!(
            node.pending_evidence().len(),
            MAX_EVIDENCE_PER_VALIDATOR + 1
        );
    }

    fn submit(node: &Chain, tx: SignedTransaction) -> Result<(), AdmitError> {
        node.admit(tx, Signature::Check, NOW_MS).map(|_| ())
    }

    fn transfer(chain: &ChainContext, nonce: u64, fee: u64) -> SignedTransaction {
        let alice = devnet_key("alice");
        Transaction::transfer(
            chain.genesis.chain_id.clone(),
            alice.address(),
            devnet_key("bob").address(),
            1,
            fee,
            nonce,
        )
        .sign(&alice, &chain.genesis_hash)
    }

    /// What consensus would decide for a one-validator chain: the block and
    /// the validator's precommit for it.
    fn decide(chain: &ChainContext, block: Block) -> CertifiedBlock {
        CertifiedBlock::check(decided(chain, block), &chain.signers()).unwrap()
    }

    fn decided(chain: &ChainContext, block: Block) -> StoredBlock {
        let vote = precommit_of(chain, "validator-0", &block);
        let commit = Commit {
            height: block.header.height,
            round: 0,
            block_hash: block.hash(),
            signatures: vec![CommitSignature {
                validator: vote.validator,
                signature: vote.signature,
            }],
        };
        StoredBlock { block, commit }
    }

    fn precommit_of(chain: &ChainContext, signer: &str, block: &Block) -> tally_ledger::SignedVote {
        let vote = Vote {
            chain_id: chain.genesis.chain_id.clone(),
            height: block.header.height,
            round: 0,
            kind: VoteKind::Precommit,
            block_hash: Some(block.hash()),
        };
        tally_ledger::SignedVote::sign(vote, &devnet_key(signer), &chain.genesis_hash)
    }

    fn vote_tx(chain: &ChainContext, change: tally_ledger::ValidatorChange) -> SignedTransaction {
        let key = devnet_key("validator-0");
        Transaction::validator_vote(
            chain.genesis.chain_id.clone(),
            key.address(),
            change,
            None,
            0,
            0,
        )
        .sign(&key, &chain.genesis_hash)
    }

    /// Block 1 of four validators is committed by the first three: the
    /// fourth's late precommit joins the commit, admission judges votes by
    /// it, and a proposer is asked to wait for it only while a vote waits.
    #[test]
    fn late_precommits_count_as_live_and_a_vote_waits_for_them() {
        let chain = ChainContext::new(devnet_genesis(4, "tally-dev").unwrap());
        let store = Arc::new(MemoryStore::new(&chain));
        let pool = Mempool::new(tally_mempool::Config::default());
        let node = Chain::new(chain.clone(), store, pool, 10, Box::new(NoEvents));
        let proposer = devnet_key("validator-0").address();
        let block = node.build_proposal(proposer, 1, NOW_MS).unwrap().unwrap();
        let first = ["validator-0", "validator-1", "validator-2"];
        let commit = Commit {
            height: 1,
            round: 0,
            block_hash: block.hash(),
            signatures: first
                .iter()
                .map(|name| CommitSignature {
                    validator: devnet_key(name).address(),
                    signature: precommit_of(&chain, name, &block).signature,
                })
                .collect(),
        };
        let stored = StoredBlock {
            block: block.clone(),
            commit,
        };
        let certified = CertifiedBlock::check(stored, &chain.signers()).unwrap();
        node.commit_block(certified).unwrap();
        assert!(!node.wants_more_signers(), "no vote waits");

        // With three of four live, a fifth validator would leave them 3 of 5.
        let add = tally_ledger::ValidatorChange::Add {
            name: "validator-4".into(),
            address: devnet_key("validator-4").address(),
            power: 1,
            peer: "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
                .into(),
        };
        let refused = submit(&node, vote_tx(&chain, add.clone()));
        assert!(
            matches!(&refused, Err(AdmitError::Tx(TxError::Validator(e)))
                if matches!(**e, ValidatorChangeError::LivenessLost { live: 3, total: 5, .. })),
            "{refused:?}"
        );
        // A removal keeps the three a quorum: admitted, and now a proposer
        // waits for the fourth precommit.
        let remove = tally_ledger::ValidatorChange::Remove {
            address: devnet_key("validator-3").address(),
        };
        submit(&node, vote_tx(&chain, remove)).unwrap();
        assert!(node.wants_more_signers());
        node.add_late_precommit(&precommit_of(&chain, "validator-3", &block));
        assert!(!node.wants_more_signers(), "every validator has signed");
        assert_eq!(node.live_signers().unwrap().len(), 4);
    }

    #[test]
    fn a_failed_commit_changes_nothing_and_the_identical_block_commits_later() {
        let (node, failing, chain) = node();
        let proposer = devnet_key("validator-0").address();
        submit(&node, transfer(&chain, 0, 1)).unwrap();
        let block = node.build_proposal(proposer, 1, NOW_MS).unwrap().unwrap();
        assert_eq!(
            node.build_proposal(proposer, 5, NOW_MS).unwrap(),
            None,
            "only the next height"
        );
        let certified = decide(&chain, block);
        failing.store(true, Ordering::SeqCst);
        assert!(matches!(
            node.commit_block(certified.clone()),
            Err(CommitFailure::Storage(_))
        ));
        assert!(node.failure().is_some(), "health reports the failure");
        assert_eq!(node.tip().unwrap().height, 0);
        // Meanwhile the transaction in the block cannot be replaced.
        let replacement = transfer(&chain, 0, 5);
        assert!(matches!(
            submit(&node, replacement),
            Err(AdmitError::Pool(MempoolError::InBlock { nonce: 0 }))
        ));
        failing.store(false, Ordering::SeqCst);
        let tip = node.commit_block(certified.clone()).unwrap();
        assert_eq!(tip.hash, certified.stored().block.hash());
        assert_eq!(node.tip_height(), 1);
        assert!(node.failure().is_none());
        assert_eq!(node.mempool_len(), 0);
    }

    /// Batch admission answers each transaction as admitting it alone
    /// would: a committed one as committed (found after the pool refused
    /// its nonce), a bad signature or field as such, the rest admitted.
    #[test]
    fn batch_admission_answers_as_single_admission() {
        let (node, _, chain) = node();
        let proposer = devnet_key("validator-0").address();
        let first = transfer(&chain, 0, 1);
        submit(&node, first.clone()).unwrap();
        let block = node.build_proposal(proposer, 1, NOW_MS).unwrap().unwrap();
        node.commit_block(decide(&chain, block)).unwrap();
        let mut forged = transfer(&chain, 2, 1);
        forged.signature.0[0] ^= 1;
        let batch = vec![
            first.clone(),
            transfer(&chain, 1, 1),
            forged.clone(),
            transfer(&chain, 3, 0), // below the minimum fee
            transfer(&chain, 2, 1),
        ];
        let answers = node.admit_batch(batch, NOW_MS);
        assert!(matches!(answers[0], Err(AdmitError::AlreadyCommitted(_))));
        assert!(matches!(answers[1], Ok((_, _, PoolState::Pending))));
        assert!(matches!(
            answers[2],
            Err(AdmitError::Tx(TxError::InvalidSignature))
        ));
        assert!(matches!(
            answers[3],
            Err(AdmitError::Tx(TxError::FeeTooLow { .. }))
        ));
        assert!(matches!(answers[4], Ok((_, _, PoolState::Pending))));
        // And one at a time, the same.
        assert!(matches!(
            submit(&node, first),
            Err(AdmitError::AlreadyCommitted(_))
        ));
        let mut forged_next = transfer(&chain, 3, 1);
        forged_next.signature.0[0] ^= 1;
        assert!(matches!(
            submit(&node, forged_next),
            Err(AdmitError::Tx(TxError::InvalidSignature))
        ));
        // The nonce checks come before the signature: a forged copy of a
        // used nonce costs no signature check.
        assert!(matches!(
            submit(&node, forged),
            Err(AdmitError::Pool(
                MempoolError::ReplacementUnderpriced { .. }
            ))
        ));
        assert!(node.checked().contains(&transfer(&chain, 1, 1).id()));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]
        /// The differential test of the client path: a batch admitted
        /// together (signatures checked in batches) gets, transaction by
        /// transaction, exactly the answers that admitting each alone on an
        /// identical node gets — whatever the count and wherever the bad
        /// ones are (bad signature, bad field, S past the group order), and
        /// whether the pool fills up on the way or not.
        #[test]
        fn batch_admission_is_single_admission(
            count in 1usize..200,
            bad in proptest::collection::vec(
                (proptest::prelude::any::<proptest::sample::Index>(), 0u8..3),
                0..6,
            ),
            small_pool in proptest::prelude::any::<bool>(),
        ) {
            let config = match small_pool {
                // The clients' share is judged once per batch (documented
                // on admit_batch), so the pool that fills up here is the
                // whole pool.
                true => tally_mempool::Config {
                    max_txs: 80,
                    client_fill_percent: 100,
                    ..Default::default()
                },
                false => Default::default(),
            };
            let (batch_node, _, chain) = node_with(config.clone());
            let (single_node, _, _) = node_with(config);
            let mut txs: Vec<SignedTransaction> =
                (0..count as u64).map(|n| transfer(&chain, n, 1)).collect();
            for (at, how) in &bad {
                let tx = &mut txs[at.index(count)];
                match how {
                    0 => tx.tx.fee += 1,
                    1 => tx.tx.fee = 0,
                    _ => tx.signature.0[63] |= 0xf0,
                }
            }
            let show = |r: Result<(SignedTransaction, Hash, PoolState), AdmitError>| {
                format!("{:?}", r.map(|(_, id, state)| (id, state)))
            };
            let together: Vec<String> = batch_node
                .admit_batch(txs.clone(), NOW_MS)
                .into_iter()
                .map(show)
                .collect();
            let alone: Vec<String> = txs
                .into_iter()
                .map(|tx| show(single_node.admit(tx, Signature::Check, NOW_MS)))
                .collect();
            proptest::prop_assert_eq!(together, alone);
        }
    }

    #[test]
    fn validation_checks_every_rule_and_reports_invalid_blocks() {
        let (node, _, chain) = node();
        let proposer = devnet_key("validator-0").address();
        submit(&node, transfer(&chain, 0, 1)).unwrap();
        let block = node.build_proposal(proposer, 1, NOW_MS).unwrap().unwrap();
        assert!(node.validate_block(&block).unwrap());
        let mut tampered = block.clone();
        tampered.txs[0].tx.fee += 1;
        assert!(
            !node.validate_block(&tampered).unwrap(),
            "bad signature, bad tx root"
        );
        // A certificate that does not verify makes no certified block, so
        // it cannot reach the commit path.
        let mut stored = decided(&chain, block.clone());
        stored.commit.signatures.clear();
        assert!(matches!(
            CertifiedBlock::check(stored, &chain.signers()),
            Err(CommitError::NoQuorum { .. })
        ));
        // Nor a good certificate for another block.
        let mut forged = decided(&chain, block);
        forged.block.header.timestamp_ms += 1;
        assert!(matches!(
            CertifiedBlock::check(forged, &chain.signers()),
            Err(CommitError::WrongBlock { .. })
        ));
    }
}

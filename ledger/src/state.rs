//! The state transition: applying transfers and blocks to account state.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use borsh::{BorshDeserialize, BorshSerialize};

use crate::block::{
    evidence_hash, last_commit_hash, tx_root, Block, Commit, Header, BLOCK_VERSION,
    MAX_BLOCK_EVIDENCE,
};
use crate::chain::{BlockMeta, ChainHistory, StorageError};
use crate::consensus_msg::{Evidence, Offence};
use crate::genesis::ChainContext;
use crate::state_tree::{update_tree, TreeUpdate};
use crate::tx::{verify_signatures, Action, SignedTransaction, Transaction, TxError};
use crate::types::{Address, Hash};
use crate::validators::{
    ChangeOutcome, LiveSigners, ValidatorChange, ValidatorChangeError, ValidatorState,
};
use jmt::storage::TreeReader;

/// An account's state. An account never seen has balance 0 and nonce 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Account {
    /// Spendable units.
    pub balance: u64,
    /// Number of transactions applied from this account: the nonce its next
    /// transaction must carry.
    pub nonce: u64,
}

/// Read access to committed account state.
pub trait AccountRead {
    /// The account's state (default if never seen).
    fn account(&self, address: &Address) -> Result<Account, StorageError>;
}

/// Changes layered over a base state, discarded or taken as a whole.
pub struct StateOverlay<'a, R: AccountRead + ?Sized> {
    base: &'a R,
    changes: BTreeMap<Address, Account>,
}

impl<'a, R: AccountRead + ?Sized> StateOverlay<'a, R> {
    /// An overlay with no changes.
    pub fn new(base: &'a R) -> Self {
        StateOverlay {
            base,
            changes: BTreeMap::new(),
        }
    }

    /// The account as changed so far.
    pub fn get(&self, address: &Address) -> Result<Account, StorageError> {
        match self.changes.get(address) {
            Some(account) => Ok(*account),
            None => self.base.account(address),
        }
    }

    /// The changed accounts, sorted by address.
    pub fn into_changes(self) -> Vec<(Address, Account)> {
        self.changes.into_iter().collect()
    }
}

/// Why a transaction could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The transaction is invalid in this state.
    #[error(transparent)]
    Tx(#[from] TxError),
    /// The state could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Applies the account side of one transaction whose signature was already
/// checked: exact next nonce, balance ≥ amount + fee; moves a transfer's
/// amount to `to` and the fee to `proposer`, and counts the nonce. (A
/// validator-set vote's other effect is [`ValidatorState::record_vote`].)
/// On error nothing in `state` changes.
pub fn apply_transaction<R: AccountRead + ?Sized>(
    state: &mut StateOverlay<'_, R>,
    tx: &Transaction,
    proposer: &Address,
) -> Result<(), ApplyError> {
    let cost = tx.total_cost()?;
    let mut sender = state.get(&tx.from)?;
    if tx.nonce < sender.nonce {
        return Err(TxError::NonceTooLow {
            expected: sender.nonce,
            got: tx.nonce,
        }
        .into());
    }
    if tx.nonce > sender.nonce {
        return Err(TxError::NonceGap {
            expected: sender.nonce,
            got: tx.nonce,
        }
        .into());
    }
    sender.balance = sender
        .balance
        .checked_sub(cost)
        .ok_or(TxError::InsufficientFunds {
            balance: sender.balance,
            needed: cost,
        })?;
    sender.nonce = sender.nonce.checked_add(1).ok_or(TxError::AmountOverflow)?;

    // Up to three distinct accounts; compute every new value before writing any.
    let mut touched: Vec<(Address, Account)> = vec![(tx.from, sender)];
    if let Some((to, amount)) = tx.as_transfer() {
        credit(state, &mut touched, to, amount)?;
    }
    credit(state, &mut touched, proposer, tx.fee)?;
    state.changes.extend(touched);
    Ok(())
}

fn credit<R: AccountRead + ?Sized>(
    state: &StateOverlay<'_, R>,
    touched: &mut Vec<(Address, Account)>,
    address: &Address,
    amount: u64,
) -> Result<(), ApplyError> {
    let index = match touched.iter().position(|(a, _)| a == address) {
        Some(i) => i,
        None => {
            touched.push((*address, state.get(address)?));
            touched.len() - 1
        }
    };
    let account = &mut touched[index].1;
    account.balance = account
        .balance
        .checked_add(amount)
        .ok_or(TxError::BalanceOverflow)?;
    Ok(())
}

/// Whether block execution checks transaction signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigCheck<'a> {
    /// Check every signature (blocks from elsewhere).
    Verify,
    /// Every transaction was verified when it entered this node's mempool
    /// (a block this node built itself).
    AlreadyVerified,
    /// Check every signature except those of the transactions whose ids are
    /// in the set: this node verified them when they entered its mempool.
    /// A transaction id hashes the whole signed encoding, signature
    /// included, so an id in the set stands for exactly the bytes checked.
    SkipVerified(&'a HashSet<Hash>),
}

/// Blocks with at least this many signatures to check spread the checks
/// over every core; fewer are not worth starting threads for.
const PARALLEL_VERIFY_MIN: usize = 256;

/// Checks the signatures of `txs` marked in `check`; returns the index of
/// the first invalid one. Large sets are split over the available cores
/// (the answer is the same: the lowest failing index).
fn first_bad_signature(
    txs: &[SignedTransaction],
    check: &[bool],
    genesis_hash: &Hash,
) -> Option<usize> {
    let todo: Vec<usize> = (0..txs.len()).filter(|&i| check[i]).collect();
    // Batched; the first bad one of a share is its first `false`.
    let verify = |indexes: &[usize]| {
        let share: Vec<&SignedTransaction> = indexes.iter().map(|&i| &txs[i]).collect();
        let verdicts = verify_signatures(&share, genesis_hash);
        indexes
            .iter()
            .zip(verdicts)
            .find(|(_, ok)| !ok)
            .map(|(&i, _)| i)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if todo.len() < PARALLEL_VERIFY_MIN || threads < 2 {
        return verify(&todo);
    }
    let chunk = todo.len().div_ceil(threads);
    std::thread::scope(|scope| {
        // A share whose thread cannot be started is checked right here.
        let shares: Vec<Result<_, Option<usize>>> = todo
            .chunks(chunk)
            .map(|part| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || verify(part))
                    .map_err(|_| verify(part))
            })
            .collect();
        shares
            .into_iter()
            .filter_map(|share| match share {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(checked_here) => checked_here,
            })
            .min()
    })
}

/// Why a block is invalid or could not be executed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// A header field breaks a rule.
    #[error("invalid header: {0}")]
    Header(String),
    /// A transaction is invalid.
    #[error("transaction {index} ({id}) is invalid: {error}")]
    Tx {
        /// Its position.
        index: usize,
        /// Its id.
        id: Hash,
        /// Why.
        error: TxError,
    },
    /// Too many transactions, bytes or pieces of evidence.
    #[error("block too large: {0}")]
    TooLarge(String),
    /// The previous block's commit is missing, extra or invalid.
    #[error("invalid last commit: {0}")]
    LastCommit(String),
    /// A piece of evidence is invalid or already recorded.
    #[error("evidence {index} is invalid: {reason}")]
    Evidence {
        /// Its position.
        index: usize,
        /// Why.
        reason: String,
    },
    /// State could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The outcome of executing a valid block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutedBlock {
    /// The block's hash.
    pub hash: Hash,
    /// Its transaction ids in order.
    pub tx_ids: Vec<Hash>,
    /// Changed accounts with their new state, sorted by address.
    pub accounts: Vec<(Address, Account)>,
    /// The account tree after the block (its root is the header's
    /// `state_root`).
    pub tree: TreeUpdate,
    /// The validator state after the block.
    pub validators: ValidatorState,
    /// The validator-set changes the block finished.
    pub validator_outcomes: Vec<ChangeOutcome>,
    /// Whether the validator state changed other than by moving on a
    /// height ([`ValidatorState::advanced`]): a store writes it then.
    pub validators_changed: bool,
    /// Whether an operator override put the block's set in force
    /// ([`ChainContext::override_at`]): a store records that set as in
    /// force from this height and drops any set announced for the next.
    pub overridden: bool,
}

/// What a block's transactions are judged with besides the accounts.
struct TxRules<'a, H: ChainHistory + ?Sized> {
    chain: &'a ChainContext,
    history: &'a H,
    height: u64,
    live: &'a LiveSigners,
    evidence: &'a [Evidence],
}

/// Applies one transaction (fields and signature already checked): a
/// validator-set vote's rules first, then the accounts, then the vote.
/// On error neither `overlay` nor `validators` changes.
fn apply_tx<R: AccountRead + ?Sized, H: ChainHistory + ?Sized>(
    overlay: &mut StateOverlay<'_, R>,
    validators: &mut ValidatorState,
    rules: &TxRules<'_, H>,
    tx: &Transaction,
    proposer: &Address,
) -> Result<(), ApplyError> {
    let Action::Validator { change, evidence } = &tx.action else {
        return apply_transaction(overlay, tx, proposer);
    };
    let (params, genesis_hash) = (&rules.chain.genesis.params, &rules.chain.genesis_hash);
    validators
        .check_vote(&tx.from, change, rules.live, params, genesis_hash)
        .map_err(TxError::from)?;
    if let Some(id) = evidence {
        check_cited(rules, id, change)?;
    }
    apply_transaction(overlay, tx, proposer)?;
    validators
        .record_vote(
            &tx.from,
            change,
            rules.height,
            rules.live,
            params,
            genesis_hash,
        )
        .map_err(TxError::from)?;
    Ok(())
}

/// Evidence cited by a removal is on the chain (or in this block) and
/// convicts the validator removed.
fn check_cited<H: ChainHistory + ?Sized>(
    rules: &TxRules<'_, H>,
    id: &Hash,
    change: &ValidatorChange,
) -> Result<(), ApplyError> {
    let offender = match rules.evidence.iter().find(|e| &e.id() == id) {
        Some(e) => e.offence().validator,
        None => match rules.history.recorded_evidence(id)? {
            Some(record) => record.evidence.offence().validator,
            None => return Err(TxError::from(ValidatorChangeError::EvidenceNotFound(*id)).into()),
        },
    };
    let removed = *change.subject();
    if offender != removed {
        return Err(TxError::from(ValidatorChangeError::EvidenceMismatch {
            evidence: *id,
            offender,
            removed,
        })
        .into());
    }
    Ok(())
}

/// The checks of a block's last commit: none in block 1, and from block 2
/// on a commit of the parent by the parent's validators. Returns its
/// signers.
fn check_last_commit(
    chain: &ChainContext,
    parent: &BlockMeta,
    validators: &ValidatorState,
    last_commit: &Option<Commit>,
    verify: bool,
) -> Result<LiveSigners, BlockError> {
    let bad = |m: String| Err(BlockError::LastCommit(m));
    match (parent.height, last_commit) {
        (0, None) => Ok(None),
        (0, Some(_)) => bad("block 1 carries no last commit".into()),
        (_, None) => bad(format!(
            "block {} must carry the commit of block {}",
            parent.height + 1,
            parent.height
        )),
        (_, Some(commit)) => {
            if verify {
                crate::verify_commit(
                    commit,
                    parent.height,
                    &parent.hash,
                    &validators.last,
                    &chain.genesis.chain_id,
                    &chain.genesis_hash,
                )
                .map_err(|e| BlockError::LastCommit(e.to_string()))?;
            } else if commit.height != parent.height || commit.block_hash != parent.hash {
                return bad(format!(
                    "commit is for block {}, the parent is {}",
                    commit.height, parent.height
                ));
            }
            Ok(Some(
                commit.signatures.iter().map(|s| s.validator).collect(),
            ))
        }
    }
}

/// Checks `evidence` for a block at `height`: at most
/// [`MAX_BLOCK_EVIDENCE`]; each for an earlier height, valid for the set of
/// its height, and an offence recorded neither before nor twice here.
/// With `keep_valid`, invalid pieces are dropped instead of failing (a
/// proposer assembling a block); returns the pieces kept.
fn check_evidence<H: ChainHistory + ?Sized>(
    history: &H,
    chain: &ChainContext,
    validators: &ValidatorState,
    height: u64,
    evidence: &[Evidence],
    keep_valid: bool,
) -> Result<Vec<Evidence>, BlockError> {
    if evidence.len() > MAX_BLOCK_EVIDENCE && !keep_valid {
        return Err(BlockError::TooLarge(format!(
            "{} pieces of evidence, limit {MAX_BLOCK_EVIDENCE}",
            evidence.len()
        )));
    }
    let mut seen = BTreeSet::new();
    let mut kept = Vec::new();
    for (index, e) in evidence.iter().enumerate() {
        let verdict = check_one_evidence(history, chain, validators, height, e, &mut seen)?;
        match verdict {
            Ok(()) if kept.len() < MAX_BLOCK_EVIDENCE => kept.push(e.clone()),
            Ok(()) => {}
            Err(reason) if !keep_valid => return Err(BlockError::Evidence { index, reason }),
            Err(_) => {}
        }
    }
    Ok(kept)
}

fn check_one_evidence<H: ChainHistory + ?Sized>(
    history: &H,
    chain: &ChainContext,
    validators: &ValidatorState,
    height: u64,
    evidence: &Evidence,
    seen: &mut BTreeSet<Offence>,
) -> Result<Result<(), String>, StorageError> {
    let offence = evidence.offence();
    if offence.height >= height || offence.height == 0 {
        return Ok(Err(format!(
            "it is for height {}; a block at {height} records offences of heights 1 to {}",
            offence.height,
            height - 1
        )));
    }
    if seen.contains(&offence) {
        return Ok(Err("the offence appears twice in the block".into()));
    }
    if let Some(id) = history.recorded_offence(&offence)? {
        return Ok(Err(format!(
            "the offence is recorded already, by evidence {id}"
        )));
    }
    let set = match validators.set_at(offence.height) {
        Some(set) => set.clone(),
        None => match history.validator_set_at(offence.height)? {
            Some(set) => set,
            None => {
                return Err(StorageError::Corrupt(format!(
                    "no validator set is stored for height {}",
                    offence.height
                )))
            }
        },
    };
    if let Err(e) = evidence.check(&set, &chain.genesis.chain_id, &chain.genesis_hash) {
        return Ok(Err(e.to_string()));
    }
    seen.insert(offence);
    Ok(Ok(()))
}

/// Validates `block` as the child of `parent` and executes it against
/// `state`, the committed state after `parent` (accounts, tree, validator
/// state and history).
pub fn execute_block<R: AccountRead + TreeReader + ChainHistory + ?Sized>(
    state: &R,
    chain: &ChainContext,
    parent: &BlockMeta,
    block: &Block,
    sig_check: SigCheck<'_>,
) -> Result<ExecutedBlock, BlockError> {
    let mut validators = parent_validators(state, chain, parent)?;
    let unchanged = validators.advanced(block.header.height);
    check_header(chain, parent, &validators, block)?;
    let tx_ids: Vec<Hash> = block.txs.iter().map(SignedTransaction::id).collect();
    if tx_root(&tx_ids) != block.header.tx_root {
        return Err(BlockError::Header(
            "tx_root does not match the transactions".into(),
        ));
    }
    if last_commit_hash(&block.last_commit) != block.header.last_commit_hash {
        return Err(BlockError::Header(
            "last_commit_hash does not match the last commit".into(),
        ));
    }
    if evidence_hash(&block.evidence) != block.header.evidence_hash {
        return Err(BlockError::Header(
            "evidence_hash does not match the evidence".into(),
        ));
    }
    let verify_commit = !matches!(sig_check, SigCheck::AlreadyVerified);
    let live = check_last_commit(
        chain,
        parent,
        &validators,
        &block.last_commit,
        verify_commit,
    )?;
    let height = block.header.height;
    check_evidence(state, chain, &validators, height, &block.evidence, false)?;
    let check: Vec<bool> = tx_ids
        .iter()
        .map(|id| match sig_check {
            SigCheck::Verify => true,
            SigCheck::AlreadyVerified => false,
            SigCheck::SkipVerified(known) => !known.contains(id),
        })
        .collect();
    // Signatures first, all at once (in parallel when many): the first bad
    // one fails the block, as checking them in order would.
    let bad_signature = first_bad_signature(&block.txs, &check, &chain.genesis_hash);
    let rules = TxRules {
        chain,
        history: state,
        height,
        live: &live,
        evidence: &block.evidence,
    };
    let mut overlay = StateOverlay::new(state);
    for (index, (stx, id)) in block.txs.iter().zip(&tx_ids).enumerate() {
        let fail = |error| BlockError::Tx {
            index,
            id: *id,
            error,
        };
        let params = &chain.genesis.params;
        stx.check_fields(&chain.genesis.chain_id, params.min_fee)
            .map_err(fail)?;
        if bad_signature == Some(index) {
            return Err(fail(TxError::InvalidSignature));
        }
        match apply_tx(
            &mut overlay,
            &mut validators,
            &rules,
            &stx.tx,
            &block.header.proposer,
        ) {
            Ok(()) => {}
            Err(ApplyError::Tx(error)) => return Err(fail(error)),
            Err(ApplyError::Storage(e)) => return Err(e.into()),
        }
    }
    let validator_outcomes = validators.end_block(height, &live, &chain.genesis.params);
    let overridden = chain.override_at(height).is_some();
    let accounts = overlay.into_changes();
    let tree = update_tree(state, height, &accounts)?;
    if tree.root != block.header.state_root {
        return Err(BlockError::Header(format!(
            "state_root {} is not the root of the state after the block, {}",
            block.header.state_root, tree.root
        )));
    }
    Ok(ExecutedBlock {
        hash: block.hash(),
        tx_ids,
        accounts,
        tree,
        // An override's state is always written: a store gives back its
        // last written state carried on, which would not have it.
        overridden,
        validators_changed: validators != unchanged || overridden,
        validators,
        validator_outcomes,
    })
}

/// The validator state after `parent`, checked to be for it, as the next
/// block sees it (with an operator override of that height applied:
/// [`ChainContext::state_after`]).
fn parent_validators<H: ChainHistory + ?Sized>(
    state: &H,
    chain: &ChainContext,
    parent: &BlockMeta,
) -> Result<ValidatorState, StorageError> {
    let validators = state.validator_state()?;
    if validators.height != parent.height {
        return Err(StorageError::Corrupt(format!(
            "the validator state is at height {}, the parent block at {}",
            validators.height, parent.height
        )));
    }
    Ok(chain.state_after(validators))
}

fn check_header(
    chain: &ChainContext,
    parent: &BlockMeta,
    validators: &ValidatorState,
    block: &Block,
) -> Result<(), BlockError> {
    let h = &block.header;
    let params = &chain.genesis.params;
    let bad = |m: String| Err(BlockError::Header(m));
    if h.version != BLOCK_VERSION {
        return bad(format!("version {} is not {BLOCK_VERSION}", h.version));
    }
    if h.chain_id != chain.genesis.chain_id {
        return bad(format!(
            "chain id {} is not {}",
            h.chain_id, chain.genesis.chain_id
        ));
    }
    if Some(h.height) != parent.height.checked_add(1) {
        return bad(format!(
            "height {} does not follow {}",
            h.height, parent.height
        ));
    }
    if h.parent_hash != parent.hash {
        return bad(format!(
            "parent hash {} is not {}",
            h.parent_hash, parent.hash
        ));
    }
    if h.timestamp_ms < parent.timestamp_ms {
        return bad(format!(
            "timestamp {} is before the parent's {}",
            h.timestamp_ms, parent.timestamp_ms
        ));
    }
    if validators.current.power_of(&h.proposer).is_none() {
        return bad(format!(
            "proposer {} is not a validator at height {}",
            h.proposer, h.height
        ));
    }
    let validators_hash = validators.current.hash();
    if h.validators_hash != validators_hash {
        return bad(format!(
            "validators_hash {} is not the hash of the validator set of height {}, {validators_hash}",
            h.validators_hash, h.height
        ));
    }
    let next_hash = validators.next.hash();
    if h.next_validators_hash != next_hash {
        return bad(format!(
            "next_validators_hash {} is not the hash of the validator set of height {}, {next_hash}",
            h.next_validators_hash,
            h.height + 1
        ));
    }
    if h.tx_count as usize != block.txs.len() {
        return bad(format!(
            "tx_count {} but {} transactions",
            h.tx_count,
            block.txs.len()
        ));
    }
    if block.txs.len() > params.max_block_txs as usize {
        return Err(BlockError::TooLarge(format!(
            "{} transactions, limit {}",
            block.txs.len(),
            params.max_block_txs
        )));
    }
    let bytes: usize = block.txs.iter().map(|t| t.encode().len()).sum();
    if bytes > params.max_block_bytes as usize {
        return Err(BlockError::TooLarge(format!(
            "{bytes} bytes of transactions, limit {}",
            params.max_block_bytes
        )));
    }
    Ok(())
}

/// What a proposer assembled: the block, its execution, and the candidates
/// it left out because they are invalid in the current state.
#[derive(Debug, Clone)]
pub struct BuiltBlock {
    /// The new block.
    pub block: Block,
    /// Its execution result.
    pub executed: ExecutedBlock,
    /// Candidates refused, with the reason.
    pub rejected: Vec<(Hash, TxError)>,
}

/// What a proposer puts in a block besides the parent.
#[derive(Debug, Clone)]
pub struct BlockInputs {
    /// The proposer (receives the fees).
    pub proposer: Address,
    /// Its clock (the header time is never below the parent's).
    pub now_ms: u64,
    /// Candidate transactions in order, signatures already checked.
    pub candidates: Vec<SignedTransaction>,
    /// The parent's commit certificate (none for block 1), already checked.
    pub last_commit: Option<Commit>,
    /// Candidate evidence; the invalid or recorded pieces are left out.
    pub evidence: Vec<Evidence>,
}

/// Assembles the child of `parent` from `inputs`, keeping each candidate
/// that applies in order and within the limits.
pub fn build_block<R: AccountRead + TreeReader + ChainHistory + ?Sized>(
    state: &R,
    chain: &ChainContext,
    parent: &BlockMeta,
    inputs: BlockInputs,
) -> Result<BuiltBlock, StorageError> {
    let params = &chain.genesis.params;
    let height = parent.height + 1;
    let mut validators = parent_validators(state, chain, parent)?;
    let unchanged = validators.advanced(height);
    let last_commit = inputs.last_commit.filter(|_| parent.height > 0);
    let live: LiveSigners = last_commit
        .as_ref()
        .map(|c| c.signatures.iter().map(|s| s.validator).collect());
    let evidence = match check_evidence(state, chain, &validators, height, &inputs.evidence, true) {
        Ok(kept) => kept,
        Err(BlockError::Storage(e)) => return Err(e),
        Err(_) => Vec::new(),
    };
    let rules = TxRules {
        chain,
        history: state,
        height,
        live: &live,
        evidence: &evidence,
    };
    let proposer = inputs.proposer;
    let mut overlay = StateOverlay::new(state);
    let mut txs = Vec::new();
    let mut tx_ids = Vec::new();
    let mut rejected = Vec::new();
    let mut bytes = 0usize;
    for stx in inputs.candidates {
        let size = stx.encode().len();
        if txs.len() >= params.max_block_txs as usize
            || bytes + size > params.max_block_bytes as usize
        {
            break;
        }
        let id = stx.id();
        match apply_tx(&mut overlay, &mut validators, &rules, &stx.tx, &proposer) {
            Ok(()) => {
                bytes += size;
                txs.push(stx);
                tx_ids.push(id);
            }
            Err(ApplyError::Tx(e)) => rejected.push((id, e)),
            Err(ApplyError::Storage(e)) => return Err(e),
        }
    }
    let header = Header {
        version: BLOCK_VERSION,
        chain_id: chain.genesis.chain_id.clone(),
        height,
        parent_hash: parent.hash,
        timestamp_ms: inputs.now_ms.max(parent.timestamp_ms),
        proposer,
        tx_root: tx_root(&tx_ids),
        tx_count: txs.len() as u32,
        state_root: Hash::ZERO,
        validators_hash: validators.current.hash(),
        next_validators_hash: validators.next.hash(),
        last_commit_hash: last_commit_hash(&last_commit),
        evidence_hash: evidence_hash(&evidence),
    };
    let validator_outcomes = validators.end_block(height, &live, params);
    let overridden = chain.override_at(height).is_some();
    let accounts = overlay.into_changes();
    let tree = update_tree(state, header.height, &accounts)?;
    let mut block = Block {
        header,
        txs,
        last_commit,
        evidence,
    };
    block.header.state_root = tree.root;
    let executed = ExecutedBlock {
        hash: block.hash(),
        tx_ids,
        accounts,
        tree,
        // An override's state is always written: a store gives back its
        // last written state carried on, which would not have it.
        overridden,
        validators_changed: validators != unchanged || overridden,
        validators,
        validator_outcomes,
    };
    Ok(BuiltBlock {
        block,
        executed,
        rejected,
    })
}

/// A plain map is a complete account state: used by tests, the simulator and
/// anything that replays blocks in memory.
impl AccountRead for BTreeMap<Address, Account> {
    fn account(&self, address: &Address) -> Result<Account, StorageError> {
        Ok(self.get(address).copied().unwrap_or_default())
    }
}

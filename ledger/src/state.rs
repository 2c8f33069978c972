//! The state transition: applying transfers and blocks to account state.

use std::collections::{BTreeMap, HashSet};

use borsh::{BorshDeserialize, BorshSerialize};

use crate::block::{tx_root, Block, Header, BLOCK_VERSION};
use crate::chain::{BlockMeta, StorageError};
use crate::genesis::ChainContext;
use crate::state_tree::{update_tree, TreeUpdate};
use crate::tx::{verify_signatures, SignedTransaction, Transaction, TxError};
use crate::types::{Address, Hash};
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

/// Applies one transfer whose signature was already checked: exact next
/// nonce, balance ≥ amount + fee; moves amount to `to` and fee to `proposer`.
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
    credit(state, &mut touched, &tx.to, tx.amount)?;
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
    /// Too many transactions or bytes.
    #[error("block too large: {0}")]
    TooLarge(String),
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
}

/// Validates `block` as the child of `parent` and executes it against
/// `state`, the committed state after `parent` (accounts and tree).
pub fn execute_block<R: AccountRead + TreeReader + ?Sized>(
    state: &R,
    chain: &ChainContext,
    parent: &BlockMeta,
    block: &Block,
    sig_check: SigCheck<'_>,
) -> Result<ExecutedBlock, BlockError> {
    check_header(chain, parent, block)?;
    let tx_ids: Vec<Hash> = block.txs.iter().map(SignedTransaction::id).collect();
    if tx_root(&tx_ids) != block.header.tx_root {
        return Err(BlockError::Header(
            "tx_root does not match the transactions".into(),
        ));
    }
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
        match apply_transaction(&mut overlay, &stx.tx, &block.header.proposer) {
            Ok(()) => {}
            Err(ApplyError::Tx(error)) => return Err(fail(error)),
            Err(ApplyError::Storage(e)) => return Err(e.into()),
        }
    }
    let accounts = overlay.into_changes();
    let tree = update_tree(state, block.header.height, &accounts)?;
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
    })
}

fn check_header(chain: &ChainContext, parent: &BlockMeta, block: &Block) -> Result<(), BlockError> {
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
    if chain.validators.power_of(&h.proposer).is_none() {
        return bad(format!("proposer {} is not a validator", h.proposer));
    }
    let validators_hash = chain.validators.hash();
    if h.validators_hash != validators_hash {
        return bad(format!(
            "validators_hash {} is not the hash of the validator set, {validators_hash}",
            h.validators_hash
        ));
    }
    if h.next_validators_hash != validators_hash {
        return bad(format!(
            "next_validators_hash {} is not the hash of the next validator set, {validators_hash}",
            h.next_validators_hash
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

/// Assembles the child of `parent` from `candidates` (already signature
/// checked), keeping each one that applies in order and within the limits.
pub fn build_block<R: AccountRead + TreeReader + ?Sized>(
    state: &R,
    chain: &ChainContext,
    parent: &BlockMeta,
    proposer: Address,
    now_ms: u64,
    candidates: Vec<SignedTransaction>,
) -> Result<BuiltBlock, StorageError> {
    let params = &chain.genesis.params;
    let mut overlay = StateOverlay::new(state);
    let mut txs = Vec::new();
    let mut tx_ids = Vec::new();
    let mut rejected = Vec::new();
    let mut bytes = 0usize;
    for stx in candidates {
        let size = stx.encode().len();
        if txs.len() >= params.max_block_txs as usize
            || bytes + size > params.max_block_bytes as usize
        {
            break;
        }
        let id = stx.id();
        match apply_transaction(&mut overlay, &stx.tx, &proposer) {
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
        height: parent.height + 1,
        parent_hash: parent.hash,
        timestamp_ms: now_ms.max(parent.timestamp_ms),
        proposer,
        tx_root: tx_root(&tx_ids),
        tx_count: txs.len() as u32,
        state_root: Hash::ZERO,
        validators_hash: chain.validators.hash(),
        next_validators_hash: chain.validators.hash(),
    };
    let accounts = overlay.into_changes();
    let tree = update_tree(state, header.height, &accounts)?;
    let mut block = Block { header, txs };
    block.header.state_root = tree.root;
    let executed = ExecutedBlock {
        hash: block.hash(),
        tx_ids,
        accounts,
        tree,
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

//! The traits through which consensus, RPC and the node see the chain, so
//! that none of them depends on RocksDB.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::Serialize;

use crate::block::{Block, Commit, Header};
use crate::consensus_msg::{Evidence, Offence};
use crate::genesis::ValidatorSet;
use crate::state::{Account, AccountRead};
use crate::state_tree::TreeUpdate;
use crate::types::{Address, Hash};
use crate::validators::ValidatorState;
use jmt::storage::TreeReader;

/// A storage failure. Reads and writes either succeed or say why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The storage engine failed (I/O error, disk full): retrying later may work.
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// Stored bytes are not what was written: the data directory is damaged.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Where a committed transaction sits.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    serde::Deserialize,
)]
pub struct TxLocation {
    /// Block height.
    pub height: u64,
    /// Position in the block.
    pub index: u32,
}

/// The identity of a committed block (or of genesis, at height 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct BlockMeta {
    /// Height; 0 is genesis.
    pub height: u64,
    /// Block hash; the genesis hash at height 0.
    pub hash: Hash,
    /// Block timestamp; the genesis time at height 0.
    pub timestamp_ms: u64,
}

/// A committed block with the certificate that made it final.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct StoredBlock {
    /// The block.
    pub block: Block,
    /// 2f+1 precommits for it.
    pub commit: Commit,
}

/// Evidence as the chain recorded it.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct EvidenceRecord {
    /// The height of the block that carries it.
    pub height: u64,
    /// Its position in that block's evidence.
    pub index: u32,
    /// The evidence.
    pub evidence: Evidence,
}

/// What executing a block reads besides accounts and the tree: the
/// validator state after the parent, the sets of earlier heights, and the
/// evidence already recorded.
pub trait ChainHistory {
    /// The validator state after the last committed block (the genesis
    /// state before block 1).
    fn validator_state(&self) -> Result<ValidatorState, StorageError>;
    /// The set that signed (or signs) block `height`, for every height up
    /// to two past the last committed block.
    fn validator_set_at(&self, height: u64) -> Result<Option<ValidatorSet>, StorageError> {
        Ok(self.validator_set_since(height)?.map(|(_, set)| set))
    }
    /// As [`ChainHistory::validator_set_at`], with the first height of the
    /// run of heights that set has signed without a break up to `height`
    /// (the height a change made it take effect, or 1).
    fn validator_set_since(&self, height: u64)
        -> Result<Option<(u64, ValidatorSet)>, StorageError>;
    /// The id of the evidence that recorded `offence`, if any did.
    fn recorded_offence(&self, offence: &Offence) -> Result<Option<Hash>, StorageError>;
    /// Recorded evidence by id.
    fn recorded_evidence(&self, id: &Hash) -> Result<Option<EvidenceRecord>, StorageError>;
}

/// Read access to the committed chain: blocks, accounts, the account
/// tree of every kept version (the `TreeReader`), and the validator sets
/// and evidence (the `ChainHistory`).
pub trait ChainRead: AccountRead + TreeReader + ChainHistory + Send + Sync {
    /// The genesis hash this store was created for.
    fn genesis_hash(&self) -> Hash;
    /// The last committed block, or `None` before the first block.
    fn tip(&self) -> Result<Option<BlockMeta>, StorageError>;
    /// The committed block at `height`.
    fn block(&self, height: u64) -> Result<Option<StoredBlock>, StorageError>;
    /// The header of the committed block at `height` (cheaper than the block).
    fn header(&self, height: u64) -> Result<Option<Header>, StorageError>;
    /// The height of the committed block with this hash.
    fn height_of(&self, block_hash: &Hash) -> Result<Option<u64>, StorageError>;
    /// Where the committed transaction with this id is.
    fn tx_location(&self, tx_id: &Hash) -> Result<Option<TxLocation>, StorageError>;
    /// The evidence recorded in blocks from `from_height` on, in chain
    /// order (by height, then position in the block), at most `limit`.
    fn evidence_from(
        &self,
        from_height: u64,
        limit: usize,
    ) -> Result<Vec<EvidenceRecord>, StorageError>;
    /// The heights at which committed blocks took an operator override of
    /// the validator set ([`BlockWrite::overridden`]), in order, with the
    /// hash of the set each put in force.
    fn applied_overrides(&self) -> Result<Vec<(u64, Hash)>, StorageError>;
}

/// Everything one block changes, written atomically by [`ChainWrite::commit`].
#[derive(Debug, Clone)]
pub struct BlockWrite<'a> {
    /// The block and its certificate.
    pub stored: &'a StoredBlock,
    /// Its hash.
    pub hash: Hash,
    /// The ids of its transactions, in order.
    pub tx_ids: &'a [Hash],
    /// The accounts it changed, with their new values.
    pub accounts: &'a [(Address, Account)],
    /// The account tree's new version.
    pub tree: &'a TreeUpdate,
    /// The validator state after the block.
    pub validators: &'a ValidatorState,
    /// Whether it changed other than by moving on a height (the store
    /// writes it only then; [`ValidatorState::advanced`]).
    pub validators_changed: bool,
    /// Whether an operator override put the block's set in force: the
    /// store records `validators.last` as the set from this height on and
    /// forgets a set announced for the next height
    /// ([`crate::ExecutedBlock::overridden`]).
    pub overridden: bool,
}

/// Write access: the single way blocks enter the store.
pub trait ChainWrite: ChainRead {
    /// Atomically and durably stores a block, its index entries, the account
    /// changes and the new tip. When this returns `Ok`, a crash cannot undo it;
    /// when it returns `Err`, nothing of it is visible.
    fn commit(&self, write: &BlockWrite<'_>) -> Result<(), StorageError>;
}

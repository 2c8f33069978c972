//! The in-memory store: the same contract as RocksDB without durability.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use jmt::storage::{LeafNode, Node, NodeKey, TreeReader};
use jmt::{KeyHash, OwnedValue, Version};
use tally_ledger::state_tree::{genesis_tree, MemoryTree};
use tally_ledger::{
    Account, AccountRead, Address, BlockMeta, BlockWrite, ChainContext, ChainHistory, ChainRead,
    ChainWrite, EvidenceRecord, Hash, Header, Offence, StorageError, StoredBlock, TxLocation,
    ValidatorSet, ValidatorState,
};

struct Inner {
    blocks: BTreeMap<u64, StoredBlock>,
    heights: HashMap<Hash, u64>,
    txs: HashMap<Hash, TxLocation>,
    accounts: BTreeMap<Address, Account>,
    tree: MemoryTree,
    tip: Option<BlockMeta>,
    validators: ValidatorState,
    /// Each validator set by the first height it signs.
    sets: BTreeMap<u64, ValidatorSet>,
    offences: BTreeMap<Offence, Hash>,
    evidence: HashMap<Hash, EvidenceRecord>,
    /// Operator overrides taken, by height: the set's hash.
    overrides: BTreeMap<u64, Hash>,
}

/// Says why a commit fails now (a full disk, a dead process), or `None`.
type CommitFault = Box<dyn Fn() -> Option<String> + Send + Sync>;

/// A chain store held in memory, for tests and the simulator.
pub struct MemoryStore {
    inner: RwLock<Inner>,
    genesis_hash: Hash,
    commit_fault: Option<CommitFault>,
    /// Versions of the account tree kept (at least 1).
    state_history: u64,
}

/// Versions of the account tree a store keeps unless told otherwise.
pub const DEFAULT_STATE_HISTORY: u64 = 1000;

impl MemoryStore {
    /// A store holding the genesis state of `chain`.
    pub fn new(chain: &ChainContext) -> MemoryStore {
        let accounts = chain.genesis_accounts();
        let mut tree = MemoryTree::default();
        // The genesis tree is built from a validated genesis in memory; it
        // cannot fail short of a bug, which the first commit would report.
        if let Ok(genesis) = genesis_tree(chain) {
            let _ = tree.apply(&genesis, 0);
        }
        MemoryStore {
            inner: RwLock::new(Inner {
                blocks: BTreeMap::new(),
                heights: HashMap::new(),
                txs: HashMap::new(),
                accounts,
                tree,
                tip: None,
                validators: ValidatorState::genesis(chain.validators.clone()),
                sets: [(1, chain.validators.clone())].into_iter().collect(),
                offences: BTreeMap::new(),
                evidence: HashMap::new(),
                overrides: BTreeMap::new(),
            }),
            genesis_hash: chain.genesis_hash,
            commit_fault: None,
            state_history: DEFAULT_STATE_HISTORY,
        }
    }

    /// Keeps only the latest `versions` versions of the account tree
    /// (at least 1): older ones can no longer be proven.
    pub fn with_state_history(mut self, versions: u64) -> MemoryStore {
        self.state_history = versions.max(1);
        self
    }

    /// A store holding the genesis state of `chain` whose commits fail,
    /// writing nothing, whenever `fault` gives a reason: the failing disk
    /// or dead process of a test or a simulated node.
    pub fn with_commit_fault(
        chain: &ChainContext,
        fault: impl Fn() -> Option<String> + Send + Sync + 'static,
    ) -> MemoryStore {
        MemoryStore {
            commit_fault: Some(Box::new(fault)),
            ..MemoryStore::new(chain)
        }
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Inner>, StorageError> {
        self.inner
            .read()
            .map_err(|_| StorageError::Io("store lock poisoned".into()))
    }
}

impl AccountRead for MemoryStore {
    fn account(&self, address: &Address) -> Result<Account, StorageError> {
        Ok(self
            .read()?
            .accounts
            .get(address)
            .copied()
            .unwrap_or_default())
    }
}

impl ChainRead for MemoryStore {
    fn genesis_hash(&self) -> Hash {
        self.genesis_hash
    }
    fn tip(&self) -> Result<Option<BlockMeta>, StorageError> {
        Ok(self.read()?.tip)
    }
    fn block(&self, height: u64) -> Result<Option<StoredBlock>, StorageError> {
        Ok(self.read()?.blocks.get(&height).cloned())
    }
    fn header(&self, height: u64) -> Result<Option<Header>, StorageError> {
        Ok(self
            .read()?
            .blocks
            .get(&height)
            .map(|b| b.block.header.clone()))
    }
    fn height_of(&self, block_hash: &Hash) -> Result<Option<u64>, StorageError> {
        Ok(self.read()?.heights.get(block_hash).copied())
    }
    fn tx_location(&self, tx_id: &Hash) -> Result<Option<TxLocation>, StorageError> {
        Ok(self.read()?.txs.get(tx_id).copied())
    }

    fn evidence_from(
        &self,
        from_height: u64,
        limit: usize,
    ) -> Result<Vec<EvidenceRecord>, StorageError> {
        let mut found: Vec<EvidenceRecord> = self
            .read()?
            .evidence
            .values()
            .filter(|r| r.height >= from_height)
            .cloned()
            .collect();
        found.sort_by_key(|r| (r.height, r.index));
        found.truncate(limit);
        Ok(found)
    }

    fn applied_overrides(&self) -> Result<Vec<(u64, Hash)>, StorageError> {
        Ok(self
            .read()?
            .overrides
            .iter()
            .map(|(h, s)| (*h, *s))
            .collect())
    }
}

impl ChainWrite for MemoryStore {
    fn commit(&self, write: &BlockWrite<'_>) -> Result<(), StorageError> {
        if let Some(why) = self.commit_fault.as_ref().and_then(|fault| fault()) {
            return Err(StorageError::Io(why));
        }
        let mut inner = self
            .inner
            .write()
            .map_err(|_| StorageError::Io("store lock poisoned".into()))?;
        let header = &write.stored.block.header;
        if write.tree.version != header.height || write.tree.root != header.state_root {
            return Err(StorageError::Io(format!(
                "tree version {} does not belong to block {}",
                write.tree.version, header.height
            )));
        }
        if write.validators.height != header.height {
            return Err(StorageError::Io(format!(
                "validator state of height {} does not belong to block {}",
                write.validators.height, header.height
            )));
        }
        let keep_from = (header.height + 1).saturating_sub(self.state_history);
        // First, as the one step that can fail (it finds what becomes stale
        // before it changes anything): a failure leaves the store as it was.
        inner.tree.apply(write.tree, keep_from)?;
        inner.blocks.insert(header.height, write.stored.clone());
        inner.heights.insert(write.hash, header.height);
        for (index, id) in write.tx_ids.iter().enumerate() {
            inner.txs.insert(
                *id,
                TxLocation {
                    height: header.height,
                    index: index as u32,
                },
            );
        }
        inner.accounts.extend(write.accounts.iter().copied());
        inner.validators = write.validators.clone();
        if write.overridden {
            inner
                .sets
                .insert(header.height, write.validators.last.clone());
            inner.sets.remove(&(header.height + 1));
            inner
                .overrides
                .insert(header.height, write.validators.last.hash());
        }
        if write.validators.next != write.validators.current {
            inner
                .sets
                .insert(header.height + 2, write.validators.next.clone());
        }
        for (index, piece) in write.stored.block.evidence.iter().enumerate() {
            let id = piece.id();
            inner.offences.insert(piece.offence(), id);
            inner.evidence.insert(
                id,
                EvidenceRecord {
                    height: header.height,
                    index: index as u32,
                    evidence: piece.clone(),
                },
            );
        }
        inner.tip = Some(BlockMeta {
            height: header.height,
            hash: write.hash,
            timestamp_ms: header.timestamp_ms,
        });
        Ok(())
    }
}

impl ChainHistory for MemoryStore {
    fn validator_state(&self) -> Result<ValidatorState, StorageError> {
        Ok(self.read()?.validators.clone())
    }
    fn validator_set_since(
        &self,
        height: u64,
    ) -> Result<Option<(u64, ValidatorSet)>, StorageError> {
        let inner = self.read()?;
        let tip = inner.tip.map_or(0, |t| t.height);
        if height == 0 || height > tip + 2 {
            return Ok(None);
        }
        Ok(inner
            .sets
            .range(..=height)
            .next_back()
            .map(|(since, s)| (*since, s.clone())))
    }
    fn recorded_offence(&self, offence: &Offence) -> Result<Option<Hash>, StorageError> {
        Ok(self.read()?.offences.get(offence).copied())
    }
    fn recorded_evidence(&self, id: &Hash) -> Result<Option<EvidenceRecord>, StorageError> {
        Ok(self.read()?.evidence.get(id).cloned())
    }
}

impl TreeReader for MemoryStore {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        self.read()?.tree.get_node_option(node_key)
    }
    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        self.read()?.tree.get_value_option(max_version, key_hash)
    }
    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        self.read()?.tree.get_rightmost_leaf()
    }
}

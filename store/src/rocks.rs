//! The RocksDB store.

use std::path::Path;

use borsh::BorshDeserialize;
use rocksdb::{
    BoundColumnFamily, ColumnFamilyDescriptor, DBRecoveryMode, DBWithThreadMode, MultiThreaded,
    Options, WriteBatch, WriteOptions,
};
use std::sync::Arc;
use tally_ledger::{
    Account, AccountRead, Address, BlockMeta, BlockWrite, ChainContext, ChainHistory, ChainRead,
    ChainWrite, EvidenceRecord, Hash, Header, Offence, StorageError, StoredBlock, TxLocation,
    ValidatorSet, ValidatorState,
};

use jmt::storage::{LeafNode, Node, NodeKey, TreeReader};
use jmt::{KeyHash, OwnedValue, Version};
use tally_ledger::state_tree::{genesis_tree, stale_entries, Stale, TreeUpdate};

use crate::OpenError;

type Db = DBWithThreadMode<MultiThreaded>;

const CF_BLOCKS: &str = "blocks";
const CF_HEADERS: &str = "headers";
const CF_BLOCK_HASHES: &str = "block_hashes";
const CF_TXS: &str = "txs";
const CF_ACCOUNTS: &str = "accounts";
const CF_META: &str = "meta";
/// Account tree nodes: borsh(NodeKey) → borsh(Node).
const CF_TREE_NODES: &str = "tree_nodes";
/// Account tree values: key hash ‖ u64be version → borsh(Option<value>).
const CF_TREE_VALUES: &str = "tree_values";
/// What a version made stale: u64be version ‖ borsh(Stale) → nothing.
const CF_TREE_STALE: &str = "tree_stale";
/// Validator sets by first height (`s` ‖ height, big-endian) and the
/// validator state (`state`).
const CF_VALIDATORS: &str = "validators";
/// Recorded evidence: `o` ‖ borsh(offence) → id, `e` ‖ id → record,
/// `i` ‖ BE height ‖ BE position → id.
const CF_EVIDENCE: &str = "evidence";
const KEY_VALIDATOR_STATE: &[u8] = b"state";
const COLUMN_FAMILIES: [&str; 11] = [
    CF_VALIDATORS,
    CF_EVIDENCE,
    CF_BLOCKS,
    CF_HEADERS,
    CF_BLOCK_HASHES,
    CF_TXS,
    CF_ACCOUNTS,
    CF_META,
    CF_TREE_NODES,
    CF_TREE_VALUES,
    CF_TREE_STALE,
];

const KEY_GENESIS: &[u8] = b"genesis_hash";
const KEY_TIP: &[u8] = b"tip";
/// The storage format, u32 little-endian. Absent in directories written by
/// protocol version 1, which had no account tree.
const KEY_FORMAT: &[u8] = b"format";
/// The last version whose stale tree entries are deleted, u64 big-endian.
const KEY_PRUNED_THROUGH: &[u8] = b"tree_pruned_through";
/// The format this code writes: 2, with the account tree.
const FORMAT: u32 = 3;

/// Largest stored value the store will decode (a block of the largest size
/// with its certificate fits many times over).
const MAX_VALUE_BYTES: usize = 256 * 1024 * 1024;

/// RocksDB tuning; defaults suit a laptop devnet and a small server alike.
#[derive(Debug, Clone)]
pub struct RocksConfig {
    /// Size of the shared block cache.
    pub block_cache_bytes: usize,
    /// Memory of all memtables together (RocksDB's `db_write_buffer_size`):
    /// without it each of the column families could hold up to 128 MiB of
    /// writes in memory.
    pub write_buffer_bytes: usize,
    /// Most files RocksDB keeps open.
    pub max_open_files: i32,
    /// Versions of the account tree kept (at least 1).
    pub state_history: u64,
}

impl Default for RocksConfig {
    fn default() -> Self {
        RocksConfig {
            block_cache_bytes: 64 * 1024 * 1024,
            write_buffer_bytes: 64 * 1024 * 1024,
            max_open_files: 512,
            state_history: crate::DEFAULT_STATE_HISTORY,
        }
    }
}

/// The RocksDB chain store.
pub struct RocksStore {
    db: Db,
    genesis_hash: Hash,
    state_history: u64,
}

fn io(e: rocksdb::Error) -> StorageError {
    StorageError::Io(e.into_string())
}

fn decode<T: BorshDeserialize>(what: &str, bytes: &[u8]) -> Result<T, StorageError> {
    tally_ledger::decode_strict(bytes, MAX_VALUE_BYTES)
        .map_err(|e| StorageError::Corrupt(format!("{what}: {e}")))
}

fn encode<T: borsh::BorshSerialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    borsh::to_vec(value).map_err(|e| StorageError::Io(format!("encoding failed: {e}")))
}

impl RocksStore {
    /// Opens (or creates) the store in `path` for the chain `chain`. A new
    /// store is initialised with the genesis balances; an existing one must
    /// have been created for the same genesis.
    pub fn open(
        path: &Path,
        chain: &ChainContext,
        config: &RocksConfig,
    ) -> Result<RocksStore, OpenError> {
        let display = path.display().to_string();
        let storage = |source| OpenError::Storage {
            path: display.clone(),
            source,
        };
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // Every commit is synced before it is acknowledged, so the only
        // write a crash can leave unfinished is one nobody was told about:
        // an incomplete last record is dropped. A complete record whose
        // checksum fails, or damage before the tail, refuses the open
        // (PointInTime would silently stop replay there and lose the
        // acknowledged blocks after it).
        options.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
        options.set_paranoid_checks(true);
        options.set_max_open_files(config.max_open_files);
        let cache = rocksdb::Cache::new_lru_cache(config.block_cache_bytes);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        // Most reads of the hot path ask for keys that are not there (is
        // this new transaction committed?): bloom filters answer those
        // without searching the memtable or reading table blocks.
        table.set_bloom_filter(10.0, false);
        options.set_block_based_table_factory(&table);
        options.set_memtable_prefix_bloom_ratio(0.05);
        options.set_memtable_whole_key_filtering(true);
        options.set_db_write_buffer_size(config.write_buffer_bytes);
        let descriptors = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, options.clone()));
        let damaged = |detail: String| OpenError::Damaged {
            path: display.clone(),
            detail,
        };
        let db = Db::open_cf_descriptors(&options, path, descriptors).map_err(|e| {
            if e.kind() == rocksdb::ErrorKind::Corruption {
                damaged(e.into_string())
            } else {
                storage(io(e))
            }
        })?;
        let store = RocksStore {
            db,
            genesis_hash: chain.genesis_hash,
            state_history: config.state_history.max(1),
        };
        match store.get(CF_META, KEY_GENESIS).map_err(storage)? {
            Some(found) => {
                let format = match store.get(CF_META, KEY_FORMAT).map_err(storage)? {
                    None => 1,
                    Some(bytes) => u32::from_le_bytes(
                        bytes
                            .as_slice()
                            .try_into()
                            .map_err(|_| damaged("the stored format is not 4 bytes".into()))?,
                    ),
                };
                if format != FORMAT {
                    return Err(OpenError::OldFormat {
                        path: display,
                        found: format,
                        expected: FORMAT,
                    });
                }
                let found = Hash(found.as_slice().try_into().map_err(|_| {
                    storage(StorageError::Corrupt(
                        "stored genesis hash is not 32 bytes".into(),
                    ))
                })?);
                if found != chain.genesis_hash {
                    return Err(OpenError::GenesisMismatch {
                        path: display,
                        found,
                        expected: chain.genesis_hash,
                    });
                }
                store
                    .check_tip()
                    .and_then(|()| store.validator_state().map(|_| ()))
                    .and_then(|()| store.index_evidence_by_height())
                    .map_err(|e| match e {
                        StorageError::Corrupt(detail) => damaged(detail),
                        other => storage(other),
                    })?;
            }
            None => store.initialise(chain).map_err(storage)?,
        }
        Ok(store)
    }

    fn cf(&self, name: &str) -> Result<Arc<BoundColumnFamily<'_>>, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StorageError::Corrupt(format!("column family {name} is missing")))
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get_cf(&self.cf(cf)?, key).map_err(io)
    }

    fn initialise(&self, chain: &ChainContext) -> Result<(), StorageError> {
        if self
            .db
            .iterator_cf(&self.cf(CF_BLOCKS)?, rocksdb::IteratorMode::Start)
            .next()
            .is_some()
        {
            return Err(StorageError::Corrupt(
                "blocks exist but no genesis hash is recorded".into(),
            ));
        }
        let mut batch = WriteBatch::default();
        let accounts = self.cf(CF_ACCOUNTS)?;
        for balance in &chain.genesis.balances {
            let account = Account {
                balance: balance.amount,
                nonce: 0,
            };
            batch.put_cf(&accounts, balance.address.0, encode(&account)?);
        }
        let tree = genesis_tree(chain)?;
        self.put_tree(&mut batch, &tree, 0)?;
        batch.put_cf(
            &self.cf(CF_VALIDATORS)?,
            set_key(1),
            encode(&chain.validators)?,
        );
        batch.put_cf(&self.cf(CF_META)?, KEY_FORMAT, FORMAT.to_le_bytes());
        batch.put_cf(&self.cf(CF_META)?, KEY_GENESIS, chain.genesis_hash.0);
        self.write_synced(batch)
    }

    /// Adds the tree's new version to `batch`, records what it made stale,
    /// and deletes what was made stale at or before `keep_from`.
    fn put_tree(
        &self,
        batch: &mut WriteBatch,
        update: &TreeUpdate,
        keep_from: u64,
    ) -> Result<(), StorageError> {
        let stale = stale_entries(update, |key| match update.version.checked_sub(1) {
            Some(below) => self
                .value_at(key, below)
                .map(|v| v.map(|(version, _)| version)),
            None => Ok(None),
        })?;
        let nodes = self.cf(CF_TREE_NODES)?;
        for (key, node) in update.batch.node_batch.nodes() {
            batch.put_cf(&nodes, encode(key)?, encode(node)?);
        }
        let values = self.cf(CF_TREE_VALUES)?;
        for ((version, key), value) in update.batch.node_batch.values() {
            batch.put_cf(&values, value_key(key, *version), encode(value)?);
        }
        let stale_cf = self.cf(CF_TREE_STALE)?;
        for entry in &stale {
            let mut key = update.version.to_be_bytes().to_vec();
            key.extend_from_slice(&encode(entry)?);
            batch.put_cf(&stale_cf, key, []);
        }
        // Prune: every entry made stale at a version up to keep_from, from
        // just after what earlier commits pruned (seeking there skips the
        // deletions RocksDB has not compacted away yet).
        let meta = self.cf(CF_META)?;
        let pruned_through = match self.get(CF_META, KEY_PRUNED_THROUGH)? {
            Some(bytes) => Some(u64::from_be_bytes(bytes.as_slice().try_into().map_err(
                |_| StorageError::Corrupt("the pruned-through mark is not 8 bytes".into()),
            )?)),
            None => None,
        };
        let first = pruned_through.map_or(0, |v| v.saturating_add(1));
        if first > keep_from {
            return Ok(());
        }
        let start = first.to_be_bytes();
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_upper_bound(keep_from.saturating_add(1).to_be_bytes().to_vec());
        let iter = self.db.iterator_cf_opt(
            &stale_cf,
            options,
            rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        batch.put_cf(&meta, KEY_PRUNED_THROUGH, keep_from.to_be_bytes());
        for item in iter {
            let (key, _) = item.map_err(io)?;
            let since = key
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StorageError::Corrupt("stale index key too short".into()))?;
            if since > keep_from {
                break;
            }
            match decode::<Stale>("stale index entry", &key[8..])? {
                Stale::Node(node) => batch.delete_cf(&nodes, encode(&node)?),
                Stale::Value { key, version } => batch.delete_cf(&values, value_key(&key, version)),
            }
            batch.delete_cf(&stale_cf, &key);
        }
        Ok(())
    }

    /// The latest value of `key` written at or below `max_version`, with
    /// the version that wrote it.
    fn value_at(
        &self,
        key: &KeyHash,
        max_version: u64,
    ) -> Result<Option<(u64, Option<OwnedValue>)>, StorageError> {
        let seek = value_key(key, max_version);
        let mut iter = self.db.iterator_cf(
            &self.cf(CF_TREE_VALUES)?,
            rocksdb::IteratorMode::From(&seek, rocksdb::Direction::Reverse),
        );
        let Some(item) = iter.next() else {
            return Ok(None);
        };
        let (found, bytes) = item.map_err(io)?;
        if found.len() != 40 || found[..32] != key.0 {
            return Ok(None);
        }
        let mut version = [0u8; 8];
        version.copy_from_slice(&found[32..]);
        let value = decode("tree value", &bytes)?;
        Ok(Some((u64::from_be_bytes(version), value)))
    }

    /// The tip must name a stored block with that hash: anything else means
    /// the directory was damaged outside RocksDB's guarantees.
    /// Writes the by-height index of recorded evidence where it is missing
    /// (stores of format 3 written before the index existed).
    fn index_evidence_by_height(&self) -> Result<(), StorageError> {
        let cf = self.cf(CF_EVIDENCE)?;
        let iter = self.db.iterator_cf(
            &cf,
            rocksdb::IteratorMode::From(b"e", rocksdb::Direction::Forward),
        );
        let mut batch = WriteBatch::default();
        for item in iter {
            let (key, bytes) = item.map_err(io)?;
            if key.first() != Some(&b'e') {
                break;
            }
            let record: EvidenceRecord = decode("evidence", &bytes)?;
            let index = included_key(record.height, record.index);
            if self.get(CF_EVIDENCE, &index)?.is_none() {
                batch.put_cf(&cf, index, &key[1..]);
            }
        }
        match batch.is_empty() {
            true => Ok(()),
            false => self.write_synced(batch),
        }
    }

    fn check_tip(&self) -> Result<(), StorageError> {
        let Some(tip) = self.tip()? else {
            return Ok(());
        };
        let stored = self
            .block(tip.height)?
            .ok_or_else(|| StorageError::Corrupt(format!("tip block {} is missing", tip.height)))?;
        if stored.block.hash() != tip.hash {
            return Err(StorageError::Corrupt(format!(
                "block {} does not match the recorded tip hash",
                tip.height
            )));
        }
        Ok(())
    }

    fn write_synced(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options).map_err(io)
    }
}

impl AccountRead for RocksStore {
    fn account(&self, address: &Address) -> Result<Account, StorageError> {
        match self.get(CF_ACCOUNTS, &address.0)? {
            Some(bytes) => decode("account", &bytes),
            None => Ok(Account::default()),
        }
    }
}

impl ChainRead for RocksStore {
    fn genesis_hash(&self) -> Hash {
        self.genesis_hash
    }

    fn tip(&self) -> Result<Option<BlockMeta>, StorageError> {
        self.get(CF_META, KEY_TIP)?
            .map(|b| decode("tip", &b))
            .transpose()
    }

    fn block(&self, height: u64) -> Result<Option<StoredBlock>, StorageError> {
        self.get(CF_BLOCKS, &height.to_be_bytes())?
            .map(|b| decode("block", &b))
            .transpose()
    }

    fn header(&self, height: u64) -> Result<Option<Header>, StorageError> {
        self.get(CF_HEADERS, &height.to_be_bytes())?
            .map(|b| decode("header", &b))
            .transpose()
    }

    fn height_of(&self, block_hash: &Hash) -> Result<Option<u64>, StorageError> {
        self.get(CF_BLOCK_HASHES, &block_hash.0)?
            .map(|b| decode("block height", &b))
            .transpose()
    }

    fn tx_location(&self, tx_id: &Hash) -> Result<Option<TxLocation>, StorageError> {
        self.get(CF_TXS, &tx_id.0)?
            .map(|b| decode("tx location", &b))
            .transpose()
    }

    fn evidence_from(
        &self,
        from_height: u64,
        limit: usize,
    ) -> Result<Vec<EvidenceRecord>, StorageError> {
        let start = included_key(from_height, 0);
        let iter = self.db.iterator_cf(
            &self.cf(CF_EVIDENCE)?,
            rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        let mut found = Vec::new();
        for item in iter {
            if found.len() >= limit {
                break;
            }
            let (key, id) = item.map_err(io)?;
            if key.first() != Some(&b'i') {
                break;
            }
            let id = Hash(id.as_ref().try_into().map_err(|_| {
                StorageError::Corrupt("a stored evidence id is not 32 bytes".into())
            })?);
            let record = self.recorded_evidence(&id)?.ok_or_else(|| {
                StorageError::Corrupt(format!("evidence {id} is indexed but not stored"))
            })?;
            found.push(record);
        }
        Ok(found)
    }

    fn applied_overrides(&self) -> Result<Vec<(u64, Hash)>, StorageError> {
        let start = override_key(0);
        let iter = self.db.iterator_cf(
            &self.cf(CF_VALIDATORS)?,
            rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        let mut found = Vec::new();
        for item in iter {
            let (key, hash) = item.map_err(io)?;
            if key.first() != Some(&b'v') {
                break;
            }
            let bad = || StorageError::Corrupt("a stored override entry is malformed".into());
            let height: [u8; 8] = key
                .get(1..)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(bad)?;
            let hash = Hash(hash.as_ref().try_into().map_err(|_| bad())?);
            found.push((u64::from_be_bytes(height), hash));
        }
        Ok(found)
    }
}

impl ChainWrite for RocksStore {
    fn commit(&self, write: &BlockWrite<'_>) -> Result<(), StorageError> {
        let header = &write.stored.block.header;
        let height = header.height;
        let mut batch = WriteBatch::default();
        batch.put_cf(
            &self.cf(CF_BLOCKS)?,
            height.to_be_bytes(),
            encode(write.stored)?,
        );
        batch.put_cf(&self.cf(CF_HEADERS)?, height.to_be_bytes(), encode(header)?);
        batch.put_cf(&self.cf(CF_BLOCK_HASHES)?, write.hash.0, encode(&height)?);
        let txs = self.cf(CF_TXS)?;
        for (index, id) in write.tx_ids.iter().enumerate() {
            let location = TxLocation {
                height,
                index: index as u32,
            };
            batch.put_cf(&txs, id.0, encode(&location)?);
        }
        let accounts = self.cf(CF_ACCOUNTS)?;
        for (address, account) in write.accounts {
            batch.put_cf(&accounts, address.0, encode(account)?);
        }
        let tip = BlockMeta {
            height,
            hash: write.hash,
            timestamp_ms: header.timestamp_ms,
        };
        batch.put_cf(&self.cf(CF_META)?, KEY_TIP, encode(&tip)?);
        if write.tree.version != height || write.tree.root != header.state_root {
            return Err(StorageError::Io(format!(
                "tree version {} does not belong to block {height}",
                write.tree.version
            )));
        }
        let keep_from = (height + 1).saturating_sub(self.state_history);
        self.put_tree(&mut batch, write.tree, keep_from)?;
        let validators = self.cf(CF_VALIDATORS)?;
        if write.validators.height != height {
            return Err(StorageError::Io(format!(
                "validator state of height {} does not belong to block {height}",
                write.validators.height
            )));
        }
        if write.validators_changed {
            batch.put_cf(&validators, KEY_VALIDATOR_STATE, encode(write.validators)?);
        }
        // An operator override: its set signs from this height on, and a
        // set a change announced for the next height never takes effect.
        if write.overridden {
            batch.put_cf(
                &validators,
                set_key(height),
                encode(&write.validators.last)?,
            );
            batch.delete_cf(&validators, set_key(height + 1));
            batch.put_cf(
                &validators,
                override_key(height),
                write.validators.last.hash().0,
            );
        }
        // A change completed by this block: the set it makes signs from
        // height + 2 on.
        if write.validators.next != write.validators.current {
            batch.put_cf(
                &validators,
                set_key(height + 2),
                encode(&write.validators.next)?,
            );
        }
        let evidence = self.cf(CF_EVIDENCE)?;
        for (index, piece) in write.stored.block.evidence.iter().enumerate() {
            let id = piece.id();
            let record = EvidenceRecord {
                height,
                index: index as u32,
                evidence: piece.clone(),
            };
            batch.put_cf(&evidence, offence_key(&piece.offence())?, id.0);
            batch.put_cf(&evidence, evidence_key(&id), encode(&record)?);
            batch.put_cf(&evidence, included_key(height, index as u32), id.0);
        }
        self.write_synced(batch)
    }
}

fn set_key(height: u64) -> Vec<u8> {
    let mut key = b"s".to_vec();
    key.extend_from_slice(&height.to_be_bytes());
    key
}

/// `v` ‖ BE height → the hash of the set an operator override put in force.
fn override_key(height: u64) -> Vec<u8> {
    let mut key = b"v".to_vec();
    key.extend_from_slice(&height.to_be_bytes());
    key
}

fn offence_key(offence: &Offence) -> Result<Vec<u8>, StorageError> {
    let mut key = b"o".to_vec();
    key.extend(encode(offence)?);
    Ok(key)
}

/// `i` ‖ BE height ‖ BE position: evidence in chain order.
fn included_key(height: u64, index: u32) -> Vec<u8> {
    let mut key = b"i".to_vec();
    key.extend_from_slice(&height.to_be_bytes());
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn evidence_key(id: &Hash) -> Vec<u8> {
    let mut key = b"e".to_vec();
    key.extend_from_slice(&id.0);
    key
}

impl ChainHistory for RocksStore {
    fn validator_state(&self) -> Result<ValidatorState, StorageError> {
        let tip = self.tip()?.map_or(0, |t| t.height);
        let stored = match self.get(CF_VALIDATORS, KEY_VALIDATOR_STATE)? {
            Some(bytes) => decode::<ValidatorState>("validator state", &bytes)?,
            None => match self.get(CF_VALIDATORS, &set_key(1))? {
                Some(bytes) => ValidatorState::genesis(decode("validator set", &bytes)?),
                None => {
                    return Err(StorageError::Corrupt(
                        "the genesis validator set is missing".into(),
                    ))
                }
            },
        };
        if stored.height > tip || !stored.is_well_formed(stored.height) {
            return Err(StorageError::Corrupt(format!(
                "the stored validator state (height {}) is not one this node writes at tip {tip}",
                stored.height
            )));
        }
        Ok(stored.advanced(tip))
    }

    fn validator_set_since(
        &self,
        height: u64,
    ) -> Result<Option<(u64, ValidatorSet)>, StorageError> {
        let tip = self.tip()?.map_or(0, |t| t.height);
        if height == 0 || height > tip + 2 {
            return Ok(None);
        }
        let key = set_key(height);
        let mut iter = self.db.iterator_cf(
            &self.cf(CF_VALIDATORS)?,
            rocksdb::IteratorMode::From(&key, rocksdb::Direction::Reverse),
        );
        match iter.next() {
            Some(Ok((found, bytes))) if found.first() == Some(&b's') && found.len() == 9 => {
                let set: ValidatorSet = decode("validator set", &bytes)?;
                if !set.is_well_formed() {
                    return Err(StorageError::Corrupt(format!(
                        "the stored validator set for height {height} breaks the set rules"
                    )));
                }
                let mut since = [0u8; 8];
                since.copy_from_slice(&found[1..]);
                Ok(Some((u64::from_be_bytes(since), set)))
            }
            Some(Err(e)) => Err(io(e)),
            _ => Err(StorageError::Corrupt(format!(
                "no validator set is stored at or below height {height}"
            ))),
        }
    }

    fn recorded_offence(&self, offence: &Offence) -> Result<Option<Hash>, StorageError> {
        match self.get(CF_EVIDENCE, &offence_key(offence)?)? {
            Some(bytes) => Ok(Some(Hash(bytes.as_slice().try_into().map_err(|_| {
                StorageError::Corrupt("a stored evidence id is not 32 bytes".into())
            })?))),
            None => Ok(None),
        }
    }

    fn recorded_evidence(&self, id: &Hash) -> Result<Option<EvidenceRecord>, StorageError> {
        self.get(CF_EVIDENCE, &evidence_key(id))?
            .map(|b| decode("evidence", &b))
            .transpose()
    }
}

fn value_key(key: &KeyHash, version: u64) -> Vec<u8> {
    let mut bytes = key.0.to_vec();
    bytes.extend_from_slice(&version.to_be_bytes());
    bytes
}

fn tree_read_error(e: StorageError) -> anyhow::Error {
    anyhow::anyhow!(e)
}

impl TreeReader for RocksStore {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        let key = encode(node_key).map_err(tree_read_error)?;
        self.get(CF_TREE_NODES, &key)
            .and_then(|bytes| bytes.map(|b| decode("tree node", &b)).transpose())
            .map_err(tree_read_error)
    }

    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        Ok(self
            .value_at(&key_hash, max_version)
            .map_err(tree_read_error)?
            .and_then(|(_, value)| value))
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!("the rightmost leaf is not tracked (only state restore needs it)")
    }
}

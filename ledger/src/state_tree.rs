//! The authenticated account state (protocol version 2): a Jellyfish Merkle
//! tree (the `jmt` crate, Penumbra's fork) over every account, hashed with
//! blake3, whose root every header carries as `state_root`.
//!
//! - Key: `blake3(address)`, 32 bytes; value: `borsh(Account)`, 16 bytes
//!   (balance, nonce as `u64` little-endian); value hash: `blake3(value)`.
//! - Version `h` of the tree is the state after block `h`; version 0 is the
//!   genesis state. Header `h` carries the root of version `h`.
//! - Hashing, proofs and their verification are jmt's, with blake3 as the
//!   hash function; docs/PROTOCOL.md ("State root") states them byte for
//!   byte.
//!
//! Stores keep the tree's nodes and values per version and record which of
//! them a later version replaced ([`stale_entries`]); a store prunes what
//! no kept version needs, so only a window of recent versions can be proven.

use borsh::{BorshDeserialize, BorshSerialize};
use jmt::storage::{LeafNode, Node, NodeKey, TreeReader, TreeUpdateBatch};
use jmt::{JellyfishMerkleTree, KeyHash, OwnedValue, RootHash, SimpleHasher, Version};

use crate::chain::StorageError;
use crate::state::Account;
use crate::types::{Address, Hash};

/// blake3 as jmt's hash function.
pub struct TreeHasher(blake3::Hasher);

impl SimpleHasher for TreeHasher {
    fn new() -> Self {
        TreeHasher(blake3::Hasher::new())
    }
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    fn finalize(self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

/// A proof that an account has a value, or is absent, in one version of
/// the tree: jmt's `SparseMerkleProof` with blake3. Its borsh encoding is
/// the one PROTOCOL.md documents.
pub type AccountProof = jmt::proof::SparseMerkleProof<TreeHasher>;

/// The root of a tree with no accounts (jmt's placeholder hash).
pub const EMPTY_STATE_ROOT: Hash = Hash(*b"SPARSE_MERKLE_PLACEHOLDER_HASH__");

/// The tree key of an account: `blake3(address)`.
pub fn account_key(address: &Address) -> KeyHash {
    KeyHash(*blake3::hash(&address.0).as_bytes())
}

/// The tree value of an account: `borsh(Account)`.
pub fn account_value(account: &Account) -> Vec<u8> {
    borsh::to_vec(account).unwrap_or_default()
}

/// The tree after one block: its root and what a store writes for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TreeUpdate {
    /// The version written (the block height; 0 for genesis).
    pub version: u64,
    /// The root of that version.
    pub root: Hash,
    /// New nodes and values, and the nodes this version makes stale.
    pub batch: TreeUpdateBatch,
}

/// A [`TreeReader`] for a reader that may be unsized (jmt wants a sized one).
struct View<'a, R: ?Sized>(&'a R);

impl<R: TreeReader + ?Sized> TreeReader for View<'_, R> {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        self.0.get_node_option(node_key)
    }
    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        self.0.get_value_option(max_version, key_hash)
    }
    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        self.0.get_rightmost_leaf()
    }
}

fn tree_error(e: anyhow::Error) -> StorageError {
    // A node the tree needs and the store lacks is damage, not bad luck.
    StorageError::Corrupt(format!("state tree: {e:#}"))
}

/// Writes `changes` (new account values) as version `version` on top of
/// version `version - 1` of `tree` (of nothing, for version 0).
pub fn update_tree<R: TreeReader + ?Sized>(
    tree: &R,
    version: u64,
    changes: &[(Address, Account)],
) -> Result<TreeUpdate, StorageError> {
    let view = View(tree);
    let jmt = JellyfishMerkleTree::<_, TreeHasher>::new(&view);
    // jmt's batch insertion (sorted keys, one descent per subtree) gives the
    // same tree as inserting the keys one by one, several times faster; it
    // refuses an empty set, which the one-by-one path turns into a copy of
    // the previous root.
    let (root, batch) = match changes.is_empty() {
        true => jmt.put_value_set(std::iter::empty(), version),
        false => {
            let values = changes
                .iter()
                .map(|(address, account)| (account_key(address), account_value(account)))
                .collect();
            jmt.batch_put_value_sets(vec![values], None, version)
                .map(|(roots, batch)| (roots.first().copied().unwrap_or(RootHash([0; 32])), batch))
        }
    }
    .map_err(tree_error)?;
    Ok(TreeUpdate {
        version,
        root: Hash(root.0),
        batch,
    })
}

/// The root of version `version` of `tree`, if that version is kept.
pub fn tree_root<R: TreeReader + ?Sized>(
    tree: &R,
    version: u64,
) -> Result<Option<Hash>, StorageError> {
    let view = View(tree);
    Ok(JellyfishMerkleTree::<_, TreeHasher>::new(&view)
        .get_root_hash_option(version)
        .map_err(tree_error)?
        .map(|root| Hash(root.0)))
}

/// The account `address` holds in version `version` (the zero account when
/// absent) with its proof.
pub fn prove_account<R: TreeReader + ?Sized>(
    tree: &R,
    version: u64,
    address: &Address,
) -> Result<(Account, AccountProof), StorageError> {
    let view = View(tree);
    let (value, proof) = JellyfishMerkleTree::<_, TreeHasher>::new(&view)
        .get_with_proof(account_key(address), version)
        .map_err(tree_error)?;
    let account = match value {
        Some(bytes) => crate::decode_strict::<Account>(&bytes, 16)
            .map_err(|e| StorageError::Corrupt(format!("state tree value: {e}")))?,
        None => Account::default(),
    };
    Ok((account, proof))
}

/// Why an account proof does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the account proof does not verify against state root {root}: {reason}")]
pub struct AccountProofError {
    /// The root it was checked against.
    pub root: Hash,
    /// What failed.
    pub reason: String,
}

/// Checks that `account` is what `address` holds under `root`: an inclusion
/// proof of its value, or — for the zero account only — an exclusion proof
/// that the address is absent.
pub fn verify_account(
    root: &Hash,
    address: &Address,
    account: &Account,
    proof: &AccountProof,
) -> Result<(), AccountProofError> {
    let key = account_key(address);
    let included = proof.verify(RootHash(root.0), key, Some(account_value(account)));
    let result = match included {
        Ok(()) => Ok(()),
        Err(e) if *account == Account::default() => proof
            .verify(RootHash(root.0), key, None::<Vec<u8>>)
            .map_err(|absent| anyhow::anyhow!("{e:#}; as an exclusion proof: {absent:#}")),
        Err(e) => Err(e),
    };
    result.map_err(|e| AccountProofError {
        root: *root,
        reason: format!("{e:#}"),
    })
}

/// Something a version made unnecessary for every later version: a node, or
/// the value a key had before.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize)]
pub enum Stale {
    /// A tree node.
    Node(NodeKey),
    /// The value `key` was given at `version`.
    Value {
        /// The account key.
        key: KeyHash,
        /// The version that wrote the value.
        version: Version,
    },
}

/// What `update` makes stale, each needed by versions below
/// `update.version` only: the nodes jmt reports, the previous root (jmt
/// copies an unchanged root to the new version without saying so), and the
/// previous value of every key it writes (`previous_value_version` finds the
/// version that wrote it).
pub fn stale_entries(
    update: &TreeUpdate,
    mut previous_value_version: impl FnMut(&KeyHash) -> Result<Option<Version>, StorageError>,
) -> Result<Vec<Stale>, StorageError> {
    let mut stale: Vec<Stale> = update
        .batch
        .stale_node_index_batch
        .iter()
        .map(|index| Stale::Node(index.node_key.clone()))
        .collect();
    if let Some(previous) = update.version.checked_sub(1) {
        let previous_root = Stale::Node(root_key(previous)?);
        if !stale.contains(&previous_root) {
            stale.push(previous_root);
        }
    }
    for (_, key) in update.batch.node_batch.values().keys() {
        if let Some(version) = previous_value_version(key)? {
            stale.push(Stale::Value { key: *key, version });
        }
    }
    Ok(stale)
}

/// The key of the root node of `version`: the version and the empty path.
/// (jmt builds it only internally; its borsh form is `u64` version, `u64`
/// nibble count 0, empty byte vector.)
fn root_key(version: Version) -> Result<NodeKey, StorageError> {
    let mut bytes = version.to_le_bytes().to_vec();
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    NodeKey::try_from_slice(&bytes).map_err(|e| StorageError::Corrupt(format!("root key: {e}")))
}

/// The tree held in memory: the simulator's and the tests' store.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    nodes: std::collections::BTreeMap<NodeKey, Node>,
    values: std::collections::BTreeMap<(KeyHash, Version), Option<OwnedValue>>,
    /// (stale since version, what).
    stale: std::collections::BTreeSet<(Version, Stale)>,
}

impl MemoryTree {
    /// Writes `update` and prunes what no version from `keep_from` on needs.
    pub fn apply(&mut self, update: &TreeUpdate, keep_from: Version) -> Result<(), StorageError> {
        let stale = stale_entries(update, |key| Ok(self.value_version(key, update.version)))?;
        let batch = &update.batch.node_batch;
        self.nodes
            .extend(batch.nodes().iter().map(|(k, n)| (k.clone(), n.clone())));
        self.values.extend(
            batch
                .values()
                .iter()
                .map(|((version, key), value)| ((*key, *version), value.clone())),
        );
        self.stale
            .extend(stale.into_iter().map(|entry| (update.version, entry)));
        self.prune(keep_from);
        Ok(())
    }

    /// The version that wrote the latest value of `key` below `below`.
    fn value_version(&self, key: &KeyHash, below: Version) -> Option<Version> {
        let end = below.checked_sub(1)?;
        self.values
            .range((*key, 0)..=(*key, end))
            .next_back()
            .map(|((_, version), _)| *version)
    }

    /// Drops every entry made stale at or before `keep_from`: versions from
    /// `keep_from` on do not need it.
    fn prune(&mut self, keep_from: Version) {
        while let Some((since, _)) = self.stale.first() {
            if *since > keep_from {
                break;
            }
            let Some((_, entry)) = self.stale.pop_first() else {
                break;
            };
            match entry {
                Stale::Node(key) => {
                    self.nodes.remove(&key);
                }
                Stale::Value { key, version } => {
                    self.values.remove(&(key, version));
                }
            }
        }
    }

    /// Number of nodes held.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

impl TreeReader for MemoryTree {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        Ok(self.nodes.get(node_key).cloned())
    }
    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        Ok(self
            .values
            .range((key_hash, 0)..=(key_hash, max_version))
            .next_back()
            .and_then(|(_, value)| value.clone()))
    }
    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!("the rightmost leaf is not tracked (only state restore needs it)")
    }
}

/// Version 0 of the tree: the genesis accounts.
pub fn genesis_tree(chain: &crate::ChainContext) -> Result<TreeUpdate, StorageError> {
    let accounts: Vec<(Address, Account)> = chain.genesis_accounts().into_iter().collect();
    update_tree(&MemoryTree::default(), 0, &accounts)
}

/// A whole state in memory, accounts and their tree, every version kept:
/// for tests, the simulator's checker, and anything that replays blocks.
#[derive(Debug, Clone)]
pub struct MemoryState {
    accounts: std::collections::BTreeMap<Address, Account>,
    tree: MemoryTree,
    version: u64,
    root: Hash,
    validators: crate::ValidatorState,
    /// Each validator set by the first height it signs.
    sets: std::collections::BTreeMap<u64, crate::ValidatorSet>,
    offences: std::collections::BTreeMap<crate::Offence, Hash>,
    evidence: std::collections::BTreeMap<Hash, crate::EvidenceRecord>,
}

impl MemoryState {
    /// The state of `chain`'s genesis (version 0).
    pub fn genesis(chain: &crate::ChainContext) -> Result<MemoryState, StorageError> {
        let update = genesis_tree(chain)?;
        let mut tree = MemoryTree::default();
        tree.apply(&update, 0)?;
        Ok(MemoryState {
            accounts: chain.genesis_accounts(),
            tree,
            version: 0,
            root: update.root,
            validators: crate::ValidatorState::genesis(chain.validators.clone()),
            sets: [(1, chain.validators.clone())].into_iter().collect(),
            offences: Default::default(),
            evidence: Default::default(),
        })
    }

    /// Takes in `block`, executed against this state as `executed`.
    pub fn apply(
        &mut self,
        block: &crate::Block,
        executed: &crate::ExecutedBlock,
    ) -> Result<(), StorageError> {
        if executed.tree.version != self.version + 1 {
            return Err(StorageError::Io(format!(
                "tree version {} does not follow {}",
                executed.tree.version, self.version
            )));
        }
        self.tree.apply(&executed.tree, 0)?;
        self.accounts.extend(executed.accounts.iter().copied());
        self.version = executed.tree.version;
        self.root = executed.tree.root;
        self.validators = executed.validators.clone();
        if executed.overridden {
            let height = executed.tree.version;
            self.sets.insert(height, executed.validators.last.clone());
            self.sets.remove(&(height + 1));
        }
        for outcome in &executed.validator_outcomes {
            if let crate::ChangeResult::Completed { effective_height } = outcome.result {
                self.sets
                    .insert(effective_height, executed.validators.next.clone());
            }
        }
        for (index, evidence) in block.evidence.iter().enumerate() {
            let id = evidence.id();
            self.offences.insert(evidence.offence(), id);
            self.evidence.insert(
                id,
                crate::EvidenceRecord {
                    height: block.header.height,
                    index: index as u32,
                    evidence: evidence.clone(),
                },
            );
        }
        Ok(())
    }

    /// Every account ever written.
    pub fn accounts(&self) -> &std::collections::BTreeMap<Address, Account> {
        &self.accounts
    }

    /// The latest version (the height of the last block taken in).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The root of the latest version.
    pub fn root(&self) -> Hash {
        self.root
    }
}

impl crate::AccountRead for MemoryState {
    fn account(&self, address: &Address) -> Result<Account, StorageError> {
        Ok(self.accounts.get(address).copied().unwrap_or_default())
    }
}

impl crate::ChainHistory for MemoryState {
    fn validator_state(&self) -> Result<crate::ValidatorState, StorageError> {
        Ok(self.validators.clone())
    }
    fn validator_set_since(
        &self,
        height: u64,
    ) -> Result<Option<(u64, crate::ValidatorSet)>, StorageError> {
        if height == 0 || height > self.version + 2 {
            return Ok(None);
        }
        Ok(self
            .sets
            .range(..=height)
            .next_back()
            .map(|(since, set)| (*since, set.clone())))
    }
    fn recorded_offence(&self, offence: &crate::Offence) -> Result<Option<Hash>, StorageError> {
        Ok(self.offences.get(offence).copied())
    }
    fn recorded_evidence(&self, id: &Hash) -> Result<Option<crate::EvidenceRecord>, StorageError> {
        Ok(self.evidence.get(id).cloned())
    }
}

impl TreeReader for MemoryState {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        self.tree.get_node_option(node_key)
    }
    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        self.tree.get_value_option(max_version, key_hash)
    }
    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        self.tree.get_rightmost_leaf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn address(i: u16) -> Address {
        Address(*blake3::hash(&i.to_le_bytes()).as_bytes())
    }

    /// Versions that each change the same 20 accounts.
    fn churn(tree: &mut MemoryTree, versions: std::ops::Range<u64>, keep: u64) {
        for version in versions {
            let changes: Vec<(Address, Account)> = (0..20)
                .map(|i| {
                    (
                        address(i),
                        Account {
                            balance: version,
                            nonce: version,
                        },
                    )
                })
                .collect();
            let update = update_tree(tree, version, &changes).unwrap();
            // The root node jmt wrote is where `root_key` says.
            let root = root_key(version).unwrap();
            assert!(update.batch.node_batch.nodes().contains_key(&root));
            tree.apply(&update, (version + 1).saturating_sub(keep))
                .unwrap();
        }
    }

    #[test]
    fn the_empty_tree_has_the_placeholder_root() {
        let update = update_tree(&MemoryTree::default(), 0, &[]).unwrap();
        assert_eq!(update.root, EMPTY_STATE_ROOT);
    }

    /// With a window of 2 versions the tree holds as many nodes after 60
    /// versions as after 10; keeping every version, it keeps growing.
    #[test]
    fn pruning_bounds_the_tree() {
        let mut pruned = MemoryTree::default();
        churn(&mut pruned, 0..10, 2);
        let early = pruned.node_count();
        churn(&mut pruned, 10..60, 2);
        assert_eq!(pruned.node_count(), early);
        let mut kept = MemoryTree::default();
        churn(&mut kept, 0..60, u64::MAX);
        assert!(
            kept.node_count() > 4 * early,
            "{} vs {early}",
            kept.node_count()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// The batch insertion `update_tree` uses builds the tree that
        /// inserting the keys one by one (jmt's `put_value_set`) builds,
        /// version after version, empty versions included.
        #[test]
        fn batch_insertion_builds_the_same_tree(
            versions in proptest::collection::vec(
                proptest::collection::btree_map(0u16..300, 0u64..5, 0..40), 1..6),
        ) {
            let mut batched = MemoryTree::default();
            let mut single = MemoryTree::default();
            for (version, changes) in versions.iter().enumerate() {
                let changes: Vec<(Address, Account)> = changes
                    .iter()
                    .map(|(i, b)| (address(*i), Account { balance: *b, nonce: version as u64 }))
                    .collect();
                let version = version as u64;
                let update = update_tree(&batched, version, &changes).unwrap();
                let view = View(&single);
                let values = changes.iter().map(|(a, b)| (account_key(a), Some(account_value(b))));
                let (root, batch) = JellyfishMerkleTree::<_, TreeHasher>::new(&view)
                    .put_value_set(values, version)
                    .unwrap();
                prop_assert_eq!(update.root, Hash(root.0));
                batched.apply(&update, 0).unwrap();
                single.apply(&TreeUpdate { version, root: Hash(root.0), batch }, 0).unwrap();
            }
        }
    }
}

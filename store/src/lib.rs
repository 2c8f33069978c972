//! Tally's chain store: committed blocks, their commit certificates, the
//! transaction index and account state.
//!
//! # Design
//! Two implementations of the ledger's [`ChainRead`]/[`ChainWrite`] traits:
//! [`RocksStore`] for nodes and [`MemoryStore`] for tests and simulation.
//! Everything one block changes — the block with its certificate, the hash
//! and transaction indexes, the account changes and the tip — goes into one
//! RocksDB `WriteBatch` written with `sync = true` (the WAL is on). RocksDB
//! recovers to the last fully written batch after a crash
//! (`PointInTimeRecovery`), so a reopened store holds exactly a prefix of the
//! committed chain, ending at a block that was acknowledged as durable.
//!
//! # Guarantees
//! - `commit` returning `Ok` means the block survives `kill -9` and power loss
//!   (as far as fsync is honoured by the disk).
//! - A store created for one genesis refuses to open for another.
//! - Bytes read back are decoded strictly; damage is reported as
//!   [`StorageError::Corrupt`], never silently skipped.
//!
//! # Not guaranteed
//! - Concurrent writers: one process owns a data directory (RocksDB's lock).

mod memory;
#[cfg(feature = "rocksdb")]
mod rocks;

pub use memory::{MemoryStore, DEFAULT_STATE_HISTORY};
#[cfg(feature = "rocksdb")]
pub use rocks::{RocksConfig, RocksStore};

use tally_ledger::{Hash, StorageError};

pub use tally_ledger::{ChainRead, ChainWrite};

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory belongs to another chain.
    #[error(
        "data directory {path} was created for genesis {found}, but this node's genesis is {expected}; \
         point the node at the right genesis, or use a fresh data directory"
    )]
    GenesisMismatch {
        /// The directory.
        path: String,
        /// The genesis hash stored in it.
        found: Hash,
        /// The genesis hash of the node.
        expected: Hash,
    },
    /// The data on disk is damaged (a checksum mismatch, a record that is
    /// not what was written, a tip that names a missing block). The store
    /// refuses to open rather than silently drop what follows the damage.
    #[error(
        "data directory {path} is damaged ({detail}); it was not opened, so that no committed \
         block is silently dropped. Restore it from a backup, or move it aside, create an empty \
         {path} holding only the old sign_state.0, sign_state.1, valid_block.0 and \
         valid_block.1, and restart: the node syncs the chain from its peers (docs/OPERATIONS.md, Durability and recovery)"
    )]
    Damaged {
        /// The directory.
        path: String,
        /// What the storage engine reported.
        detail: String,
    },
    /// The data directory was written by an older protocol version.
    #[error(
        "data directory {path} was written by storage format {found} (protocol version {found}), \
         which this node (format {expected}, protocol version 3: validator sets change by vote, \
         blocks carry the last commit and evidence) cannot read, and no migration exists. Move \
         {path} aside whole, signing records included (they belong to the old chain), and start \
         a version-3 chain from a new genesis (docs/OPERATIONS.md, Upgrading)"
    )]
    OldFormat {
        /// The directory.
        path: String,
        /// The format it holds.
        found: u32,
        /// The format this node writes.
        expected: u32,
    },
    /// The storage engine failed.
    #[error("cannot open the data directory {path}: {source}")]
    Storage {
        /// The directory.
        path: String,
        /// Why.
        source: StorageError,
    },
}

//! Tally's ledger: the types every other crate speaks, their canonical
//! encodings, the signing rules, the genesis, and the state transition.
//!
//! # Design
//! This crate is pure: no clock, no I/O, no randomness. Time and state come in
//! as arguments, so the same code runs in the node, in tests and in the
//! simulator, and gives the same answer everywhere.
//!
//! Everything that is hashed or signed is encoded with borsh 1.x, strictly: a
//! value decodes only from exactly its canonical bytes (no trailing bytes, no
//! alternative encodings), so an id names exactly one transaction.
//!
//! # Guarantees
//! - A transaction verifies only under the genesis (and so the chain id) it was
//!   signed for; every signature is checked under one rule (ZIP-215 with
//!   byte checks on the key and R, `crypto`), singly or in a batch alike.
//! - Applying a block either applies every transaction or returns an error and
//!   changes nothing; amounts use checked arithmetic and the total supply is the
//!   same before and after every block (fees move to the proposer).
//!
//! # Not guaranteed
//! - Availability of anything: this crate decides validity, it does not store
//!   or fetch.
//! - Secrecy of keys in memory beyond what `ed25519-dalek` zeroizes on drop.

mod block;
mod chain;
mod codec;
mod consensus_msg;
mod crypto;
pub mod devnet;
mod genesis;
pub mod merkle;
#[cfg(any(test, feature = "sig-vectors"))]
pub mod sig_vectors;
mod state;
pub mod state_tree;
mod tx;
mod types;
pub mod validators;
mod verified;

pub use block::{
    evidence_hash, last_commit_hash, tx_root, verify_commit, Block, Commit, CommitError,
    CommitSignature, Header, Vote, VoteKind, BLOCK_VERSION, MAX_BLOCK_EVIDENCE,
};
pub use chain::{
    BlockMeta, BlockWrite, ChainHistory, ChainRead, ChainWrite, EvidenceRecord, StorageError,
    StoredBlock, TxLocation,
};
pub use codec::{decode_strict, DecodeError};
pub use consensus_msg::{
    ConsensusMessage, DuplicateProposalEvidence, DuplicateVoteEvidence, Evidence, EvidenceError,
    Offence, ProposalCore, SignedProposal, SignedVote, EVIDENCE_DOMAIN, PROPOSAL_DOMAIN,
};
pub use crypto::{
    check_signature, devnet_key, verify_batch, Keypair, Signature, SignatureRejection,
};
pub use genesis::{
    ChainContext, Genesis, GenesisBalance, GenesisError, GenesisValidator, OverrideError, Params,
    ValidatorSet,
};
pub use state::{
    apply_transaction, build_block, execute_block, Account, AccountRead, ApplyError, BlockError,
    BlockInputs, BuiltBlock, ExecutedBlock, SigCheck, StateOverlay,
};
pub use tx::{
    decode_tx_batch, encode_tx_batch, verify_signatures, Action, SignedTransaction, Transaction,
    TxError, MAX_GOSSIP_TXS, MAX_TX_BYTES, SIGNATURE_BATCH,
};
pub use types::{
    amount_string, parse_hex, to_hex, Address, AddressError, ChainId, ChainIdError, Hash, HexError,
    ADDRESS_HRP,
};
pub use validators::{
    ChangeOutcome, ChangeResult, LiveSigners, OpenChange, ValidatorChange, ValidatorChangeError,
    ValidatorState,
};
pub use verified::{SignatureError, Signers, Verified, VerifiedMessage};

/// Domain tags put in front of every signed or Merkle-hashed message, so a
/// signature for one purpose can never be replayed as another.
pub mod domain {
    /// Prefix of the message a transaction's signature covers.
    pub const TX: &[u8] = b"tally/tx/v1";
    /// Prefix of the message a consensus vote's signature covers.
    pub const VOTE: &[u8] = b"tally/vote/v1";
    /// Prefix of the hash of a validator set.
    pub const VALIDATORS: &[u8] = b"tally/validators/v2";
    /// Operator overrides of the validator set
    /// ([`crate::ChainContext::overrides_id`]).
    pub const VALIDATOR_OVERRIDE: &[u8] = b"tally/validator-override/v1";
    /// Prefix of the seed of a devnet key.
    pub const DEVNET_KEY: &[u8] = b"tally/devnet-key/v1";
    /// Prefix of the hash of a block's last commit.
    pub const LAST_COMMIT: &[u8] = b"tally/last-commit/v1";
    /// Prefix of the hash of a block's evidence list.
    pub const EVIDENCE_LIST: &[u8] = b"tally/evidence-list/v1";
}

//! Tally's JSON-RPC 2.0 API: one trait from which jsonrpsee generates both the
//! server (mounted by the node) and the typed client (used by the SDK), the
//! request and response types, and the error codes.
//!
//! # Design
//! Methods take parameters by position or by name. Amounts are decimal
//! strings, hashes `0x` hex, addresses bech32m (`tally1…`). Every failure is
//! a JSON-RPC error whose `code` is one of [`codes`] (or a JSON-RPC standard
//! code for malformed requests) and whose `data.reason` names it in words.
//!
//! # Guarantees
//! - The error codes and reasons are stable: clients may match on them.
//!
//! # Not guaranteed
//! - Anything about transport limits: the server that mounts this API sets
//!   body, batch and connection limits.

pub mod codes;
mod types;

use jsonrpsee::core::RpcResult;
use jsonrpsee::proc_macros::rpc;

pub use codes::{error, tx_error, tx_error_code};
pub use types::{
    AccountInfo, AccountProofInfo, BatchEntry, BlockId, BlockInfo, BlockTxs, ChainStatus,
    ConsensusInfo, FullTx, GenesisInfo, NodeRole, PeerEntry, PeersInfo, SubmitResult, TxInfo,
    TxProofInfo, TxRejection, TxState, ValidatorInfo, ValidatorsInfo, WaitMode,
};
pub use types::{ChangeVoteInfo, FinishedChangeInfo, PendingChangeInfo, PendingChangesInfo};
pub use types::{EvidenceInfo, EvidenceList, OverrideInfo};
pub use types::{HeldTxInfo, PendingInfo, SenderLimits};

/// Most pieces of recorded evidence in one `chain_getEvidence` answer.
pub const MAX_EVIDENCE_PAGE: u32 = 100;

/// Most transactions in one `tx_submitBatch` call (about 450 KB of JSON,
/// within the default 1 MiB body limit).
pub const MAX_SUBMIT_BATCH: usize = 1_000;

/// The Tally JSON-RPC API.
#[rpc(server, client)]
pub trait TallyApi {
    /// Submits a signed transaction (hex of its canonical encoding); with
    /// `wait = "committed"` answers once it is committed or the wait times out.
    #[method(name = "tx_submit")]
    async fn tx_submit(&self, tx: String, wait: Option<WaitMode>) -> RpcResult<SubmitResult>;

    /// Submits up to [`MAX_SUBMIT_BATCH`] signed transactions in one call
    /// and answers each, in order, as `tx_submit` with `wait = "none"`
    /// would; one refused transaction does not affect the others.
    #[method(name = "tx_submitBatch")]
    async fn tx_submit_batch(&self, txs: Vec<String>) -> RpcResult<Vec<BatchEntry>>;

    /// Where a transaction is in its lifecycle.
    #[method(name = "tx_get")]
    async fn tx_get(&self, hash: String) -> RpcResult<TxInfo>;

    /// An account's balance and nonces.
    #[method(name = "account_get")]
    async fn account_get(&self, address: String) -> RpcResult<AccountInfo>;

    /// What this node's mempool holds of a sender: its pending run, its
    /// queued transactions with the missing nonces that hold them and the
    /// time each has left, and the pool's limits for one sender.
    #[method(name = "account_getPending")]
    async fn account_get_pending(&self, address: String) -> RpcResult<PendingInfo>;

    /// An account at `height` (the tip when absent) with the header, the
    /// certificate and the Merkle proof that prove it.
    #[method(name = "account_getProof")]
    async fn account_get_proof(
        &self,
        address: String,
        height: Option<u64>,
    ) -> RpcResult<AccountProofInfo>;

    /// A committed transaction's inclusion proof, with its block's header
    /// and certificate.
    #[method(name = "tx_getProof")]
    async fn tx_get_proof(&self, hash: String) -> RpcResult<TxProofInfo>;

    /// A committed block by height, `"latest"`, or `{"hash": …}`; with
    /// `full = true` the transactions themselves, otherwise their ids.
    #[method(name = "chain_getBlock")]
    async fn chain_get_block(&self, block: BlockId, full: Option<bool>) -> RpcResult<BlockInfo>;

    /// The node's view of the chain.
    #[method(name = "chain_status")]
    async fn chain_status(&self) -> RpcResult<ChainStatus>;

    /// The validator set in force at `height` (the tip when absent; up to
    /// two heights past the tip are known), with its hash.
    #[method(name = "chain_getValidators")]
    async fn chain_get_validators(&self, height: Option<u64>) -> RpcResult<ValidatorsInfo>;

    /// Open validator-set changes with their votes, and the latest finished
    /// ones.
    #[method(name = "validator_pendingChanges")]
    async fn validator_pending_changes(&self) -> RpcResult<PendingChangesInfo>;

    /// The genesis document and its hash.
    #[method(name = "chain_getGenesis")]
    async fn chain_get_genesis(&self) -> RpcResult<GenesisInfo>;

    /// Equivocation evidence recorded on chain from `from_height` on (at
    /// most `limit`, default and most [`MAX_EVIDENCE_PAGE`]), with the
    /// height each was included at, and the evidence this node holds that
    /// no block records yet.
    #[method(name = "chain_getEvidence")]
    async fn chain_get_evidence(
        &self,
        from_height: Option<u64>,
        limit: Option<u32>,
    ) -> RpcResult<EvidenceList>;

    /// This node's peer id and address, and its connected peers.
    #[method(name = "node_peers")]
    async fn node_peers(&self) -> RpcResult<PeersInfo>;
}

//! Request and response types of the API.

use serde::{Deserialize, Deserializer, Serialize};
use tally_ledger::merkle::InclusionProof;
use tally_ledger::{
    amount_string, Address, ChainId, ChangeResult, Commit, Evidence, Genesis, Hash, Header,
    SignedTransaction, ValidatorChange,
};

/// How long `tx_submit` waits before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitMode {
    /// Answer once the transaction is admitted to the mempool.
    #[default]
    None,
    /// Answer once it is committed (or the node's wait timeout passes).
    Committed,
}

/// Where a transaction is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxState {
    /// This node has never seen it (or forgot a rejection long ago).
    Unknown,
    /// In the mempool behind a nonce gap.
    Queued,
    /// In the mempool, ready for the next block.
    Pending,
    /// In a committed block: final.
    Committed,
    /// Dropped as invalid; see `error`.
    Rejected,
    /// Waited too long behind a nonce gap and was dropped.
    Expired,
}

/// The answer of `tx_submit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitResult {
    /// Transaction id.
    pub hash: Hash,
    /// `pending`, `queued` or `committed` (or `rejected`/`expired` if that
    /// happened while waiting).
    pub status: TxState,
    /// Block height, when committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    /// Position in the block, when committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// Block hash, when committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_hash: Option<Hash>,
    /// The missing nonce, when queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for_nonce: Option<u64>,
    /// Why, when it was rejected while waiting (as `tx_get` tells it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TxRejection>,
}

/// One transaction's answer in `tx_submitBatch`, in the order submitted:
/// either admitted (`hash`, `status`) or refused (`error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BatchEntry {
    /// Admitted to the mempool.
    Admitted {
        /// Transaction id.
        hash: Hash,
        /// `pending` or `queued`.
        status: TxState,
        /// The missing nonce, when queued.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        waiting_for_nonce: Option<u64>,
    },
    /// Refused, with the error `tx_submit` would have answered.
    Refused {
        /// The error.
        error: TxRejection,
    },
}

/// Why a transaction was rejected after admission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRejection {
    /// The error code (see `codes`).
    pub code: i32,
    /// The reason name.
    pub reason: String,
    /// A sentence.
    pub message: String,
    /// With `mempool_full`: how long to wait before trying again, in
    /// milliseconds (about one block interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// The answer of `tx_get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxInfo {
    /// Transaction id.
    pub hash: Hash,
    /// Lifecycle state.
    pub status: TxState,
    /// The missing nonce, when queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for_nonce: Option<u64>,
    /// Block height, when committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    /// Position in the block, when committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// Block hash, when committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_hash: Option<Hash>,
    /// Why, when rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TxRejection>,
    /// The decoded transaction, when this node has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<SignedTransaction>,
}

/// The answer of `account_get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    /// The account.
    pub address: Address,
    /// Committed balance.
    #[serde(with = "amount_string")]
    pub balance: u64,
    /// Committed nonce: transactions applied so far.
    pub nonce: u64,
    /// The nonce for the sender's next transaction, counting its pending ones.
    pub next_nonce: u64,
}

/// The answer of `account_getPending`: what this node's mempool holds of
/// one sender, and why its queued transactions wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingInfo {
    /// The account.
    pub address: Address,
    /// Committed nonce: the nonce the sender's next transaction in a block
    /// must carry.
    pub nonce: u64,
    /// The nonce a new transaction should carry: past the pending run (the
    /// first missing nonce when transactions are queued).
    pub next_nonce: u64,
    /// Transactions ready for the next block, in nonce order.
    pub pending: Vec<HeldTxInfo>,
    /// Transactions behind a nonce gap, in nonce order.
    pub queued: Vec<HeldTxInfo>,
    /// The nonces missing below the highest queued one, lowest first: a
    /// transaction with each must arrive before the queued ones behind it
    /// can go into a block.
    pub missing_nonces: Vec<u64>,
    /// The mempool's limits for one sender.
    pub limits: SenderLimits,
}

/// One of a sender's transactions in the mempool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldTxInfo {
    /// Transaction id.
    pub hash: Hash,
    /// Its nonce.
    pub nonce: u64,
    /// Its fee.
    #[serde(with = "amount_string")]
    pub fee: u64,
    /// When queued: the missing nonce it waits for (the lowest one), as
    /// `tx_get` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for_nonce: Option<u64>,
    /// When queued: milliseconds left before it expires unless the gap is
    /// filled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
}

/// The mempool's limits for one sender (`config.toml` `[mempool]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderLimits {
    /// Most transactions held for one sender (`max_txs_per_sender`).
    pub max_txs: u64,
    /// How far past its next nonce a transaction may be queued
    /// (`max_nonce_gap`).
    pub max_nonce_gap: u64,
    /// How long a queued transaction waits before it expires
    /// (`queued_ttl_ms`).
    pub queued_ttl_ms: u64,
}

/// Which block `chain_getBlock` returns: a height, `"latest"`, or
/// `{"hash": "0x…"}` (the hash is parsed by the server so that a malformed
/// one gets its own error code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockId {
    /// By height.
    Height(u64),
    /// The tip.
    Latest,
    /// By hash.
    Hash {
        /// The block hash, `0x` hex.
        hash: String,
    },
}

impl BlockId {
    /// The tip.
    pub fn latest() -> BlockId {
        BlockId::Latest
    }
}

impl Serialize for BlockId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            BlockId::Height(h) => serializer.serialize_u64(*h),
            BlockId::Latest => serializer.serialize_str("latest"),
            BlockId::Hash { hash } => {
                use serde::ser::SerializeMap;
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("hash", hash)?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for BlockId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let expected = "a height, \"latest\", or {\"hash\": \"0x…\"}";
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Number(n) => n
                .as_u64()
                .map(BlockId::Height)
                .ok_or_else(|| D::Error::custom(format!("block must be {expected}"))),
            serde_json::Value::String(s) if s == "latest" => Ok(BlockId::Latest),
            serde_json::Value::Object(map) => match (map.len(), map.get("hash")) {
                (1, Some(serde_json::Value::String(hash))) => {
                    Ok(BlockId::Hash { hash: hash.clone() })
                }
                _ => Err(D::Error::custom(format!("block must be {expected}"))),
            },
            _ => Err(D::Error::custom(format!("block must be {expected}"))),
        }
    }
}

/// A transaction inside a full block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullTx {
    /// Its id.
    pub hash: Hash,
    /// The transaction.
    #[serde(flatten)]
    pub tx: SignedTransaction,
}

/// A block's transactions: ids, or the transactions themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BlockTxs {
    /// Full transactions (`full = true`).
    Full(Vec<FullTx>),
    /// Transaction ids.
    Ids(Vec<Hash>),
}

/// The answer of `chain_getBlock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockInfo {
    /// Block hash.
    pub hash: Hash,
    /// The header.
    pub header: Header,
    /// Transaction ids or transactions.
    pub txs: BlockTxs,
    /// The previous block's commit certificate that the block carries (none
    /// in block 1); the header's `last_commit_hash` names it.
    pub last_commit: Option<Commit>,
    /// The equivocation evidence the block records; the header's
    /// `evidence_hash` names it.
    pub evidence: Vec<Evidence>,
    /// The commit certificate proving this block final.
    pub commit: Commit,
}

/// The answer of `chain_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStatus {
    /// Chain id.
    pub chain_id: ChainId,
    /// Genesis hash.
    pub genesis_hash: Hash,
    /// Height of the last committed block (0 before the first).
    pub height: u64,
    /// Hash of the last committed block (the genesis hash at height 0).
    pub tip_hash: Hash,
    /// Its timestamp.
    pub tip_time_ms: u64,
    /// Smallest fee a transaction may pay.
    #[serde(with = "amount_string")]
    pub min_fee: u64,
    /// Transactions in the mempool.
    pub mempool_size: u64,
    /// This node's validator address, if it validates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validator: Option<Address>,
    /// `"validator"` (its key is in the validator set) or `"full"`.
    pub role: NodeRole,
    /// Connected peers.
    pub peers: u64,
    /// Whether the node is fetching blocks it is behind on from peers.
    pub syncing: bool,
    /// Where consensus is (absent before it starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consensus: Option<ConsensusInfo>,
    /// The node's version.
    pub node_version: String,
    /// The operator overrides of the validator set this node was given
    /// (config.toml `[[validator_override]]`), oldest first; absent when
    /// it has none. Every node of the chain must show the same list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validator_overrides: Vec<OverrideInfo>,
    /// What names that list (compared by peers at identify and by
    /// `tally doctor`); absent without overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides_id: Option<Hash>,
}

/// One operator override of the validator set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideInfo {
    /// The first height its set signs.
    pub height: u64,
    /// The set's hash (what the header of that height names).
    pub validators_hash: Hash,
    /// How many validators it has.
    pub validators: u32,
}

/// What a node does in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// Signs proposals and votes.
    Validator,
    /// Follows and serves the chain without voting.
    Full,
}

/// The height, round and step consensus is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusInfo {
    /// Height being decided (the tip's height + 1).
    pub height: u64,
    /// Round within it (0 unless rounds failed).
    pub round: u32,
    /// `propose`, `prevote` or `precommit`.
    pub step: String,
}

/// The answer of `node_peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersInfo {
    /// This node's peer id (from its node key).
    pub node_id: String,
    /// The address peers can dial, ending in `/p2p/<node_id>`.
    pub listen_address: String,
    /// The connected peers.
    pub peers: Vec<PeerEntry>,
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// Its peer id.
    pub node_id: String,
    /// Its address on this connection.
    pub address: String,
    /// `"outbound"` (this node dialled it) or `"inbound"`.
    pub direction: String,
    /// Whether it is one of this node's configured peers.
    pub persistent: bool,
}

/// The answer of `chain_getGenesis`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisInfo {
    /// blake3 of the genesis's canonical encoding.
    pub genesis_hash: Hash,
    /// The genesis, as in `genesis.json`.
    pub genesis: Genesis,
}

/// A validator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorInfo {
    /// Name from the genesis.
    pub name: String,
    /// Public key as an address.
    pub address: Address,
    /// Voting power.
    pub power: u64,
}

/// The answer of `chain_getValidators`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorsInfo {
    /// The height the set is in force at (the tip when not asked).
    pub height: u64,
    /// The first height of the unbroken run of heights this set has
    /// signed up to `height`: the height the change that made it took
    /// effect, or 1. The header of `since - 1` announces it (its
    /// `next_validators_hash`); a verifier follows the sets back this way.
    pub since: u64,
    /// The hash a header names for this set (`validators_hash`,
    /// PROTOCOL.md "Validator-set hash").
    pub validators_hash: Hash,
    /// The set, in genesis order.
    pub validators: Vec<ValidatorInfo>,
    /// Sum of voting power.
    pub total_power: u64,
    /// Power a commit certificate must carry (more than two thirds).
    pub quorum_power: u64,
}

/// One vote for an open validator-set change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeVoteInfo {
    /// The voter.
    pub validator: Address,
    /// Its name in the set in force (none if it has left the set).
    pub name: Option<String>,
    /// Its power in the set in force (0 if it has left the set).
    pub power: u64,
    /// The block that holds the vote.
    pub height: u64,
    /// The last block at whose end the vote still counts.
    pub counts_through: u64,
}

/// An open validator-set change and its votes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChangeInfo {
    /// The change id (PROTOCOL.md, "Validator-set changes").
    pub id: Hash,
    /// The change.
    pub change: ValidatorChange,
    /// The block with its first vote.
    pub opened_at: u64,
    /// Its votes.
    pub votes: Vec<ValidatorInfo>,
    /// Details of each vote, in the order of `votes`.
    pub vote_details: Vec<ChangeVoteInfo>,
    /// Power of the set in force that voted for it.
    pub voted_power: u64,
    /// Power it needs to complete (the quorum of the set in force).
    pub quorum_power: u64,
    /// Validators of the set in force that have not voted for it.
    pub missing: Vec<ValidatorInfo>,
}

/// A finished validator-set change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedChangeInfo {
    /// The change id.
    pub id: Hash,
    /// The change.
    pub change: ValidatorChange,
    /// The block whose end finished it.
    pub height: u64,
    /// `completed` (with `effective_height`), `refused` (with `reason`)
    /// or `expired`.
    #[serde(flatten)]
    pub result: ChangeResult,
}

/// The answer of `validator_pendingChanges`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChangesInfo {
    /// The tip the answer is for.
    pub height: u64,
    /// Blocks a vote counts for (genesis `validator_vote_expiry`).
    pub vote_expiry: u64,
    /// Open changes, in the order they were opened (the first with a
    /// quorum completes first).
    pub open: Vec<PendingChangeInfo>,
    /// The latest finished changes, oldest first.
    pub recent: Vec<FinishedChangeInfo>,
}

/// One piece of equivocation evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceInfo {
    /// Its id: blake3("tally/evidence/v1" ‖ borsh(evidence)), what a
    /// removal vote cites.
    pub id: Hash,
    /// The validator it convicts.
    pub validator: Address,
    /// Height, round and step of the offence (step 0 proposal, 1
    /// prevote, 2 precommit).
    pub height: u64,
    /// Round of the offence.
    pub round: u32,
    /// Step of the offence.
    pub step: u8,
    /// The height of the block that records it; `null` while pending.
    pub included_height: Option<u64>,
    /// Its position in that block's evidence; `null` while pending.
    pub included_index: Option<u32>,
    /// The two signed messages.
    pub evidence: Evidence,
}

impl EvidenceInfo {
    /// `evidence`, recorded at `included` (height, position) or pending.
    pub fn new(evidence: Evidence, included: Option<(u64, u32)>) -> Self {
        let offence = evidence.offence();
        EvidenceInfo {
            id: evidence.id(),
            validator: offence.validator,
            height: offence.height,
            round: offence.round,
            step: offence.step,
            included_height: included.map(|(h, _)| h),
            included_index: included.map(|(_, i)| i),
            evidence,
        }
    }
}

/// The answer of `chain_getEvidence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceList {
    /// Evidence recorded on chain from the requested height on, in chain
    /// order.
    pub recorded: Vec<EvidenceInfo>,
    /// Where the next page starts (`from_height` to ask with), if the page
    /// is full.
    pub next_height: Option<u64>,
    /// Evidence this node holds that no block records yet, oldest first
    /// (the next proposer includes it).
    pub pending: Vec<EvidenceInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_id_json_round_trips() {
        for (id, text) in [
            (BlockId::Height(7), "7"),
            (BlockId::Latest, "\"latest\""),
            (
                BlockId::Hash {
                    hash: "0xab".into(),
                },
                "{\"hash\":\"0xab\"}",
            ),
        ] {
            assert_eq!(serde_json::to_string(&id).unwrap(), text);
            assert_eq!(serde_json::from_str::<BlockId>(text).unwrap(), id);
        }
        for bad in [
            "-1",
            "1.5",
            "\"tip\"",
            "{\"height\":1}",
            "{\"hash\":1}",
            "null",
        ] {
            assert!(serde_json::from_str::<BlockId>(bad).is_err(), "{bad}");
        }
    }
}

/// The answer of `account_getProof`: an account at a height and everything
/// needed to check it offline against the genesis (PROTOCOL.md, "State
/// root").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountProofInfo {
    /// The account.
    pub address: Address,
    /// Balance at `height` (0 for an absent account).
    #[serde(with = "amount_string")]
    pub balance: u64,
    /// Nonce at `height`.
    pub nonce: u64,
    /// The height proven at: the state after that block (0: the genesis).
    pub height: u64,
    /// The root the proof leads to: the header's `state_root`, or at height
    /// 0 the root of the genesis state (which anyone can compute from the
    /// genesis).
    pub state_root: Hash,
    /// The block header at `height` (absent at height 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<Header>,
    /// Its commit certificate (absent at height 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<Commit>,
    /// `0x` hex of borsh(AccountProof): an inclusion proof, or for an absent
    /// account an exclusion proof.
    pub proof: String,
}

/// The answer of `tx_getProof`: a committed transaction, its block's header
/// and certificate, and its inclusion proof against the header's `tx_root`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxProofInfo {
    /// The transaction id.
    pub hash: Hash,
    /// The height of its block.
    pub height: u64,
    /// That block's header.
    pub header: Header,
    /// That block's commit certificate.
    pub commit: Commit,
    /// The inclusion proof (PROTOCOL.md, "Transaction root").
    pub proof: InclusionProof,
}

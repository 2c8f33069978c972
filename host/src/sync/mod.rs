//! Block sync and the catch-up exchange, in one place: the wire types
//! ([`SyncRequest`], [`SyncResponse`]), the serving side ([`serve`]), and
//! the asking side, which is part of the host (`client.rs`).
//!
//! The exchange runs over a request-response transport: in the node, the
//! libp2p protocol `/tally/<genesis hash>/sync/2` ([`protocol_name`]); in
//! the simulator, its network. Each request and each response is one borsh
//! value, decoded strictly and bounded in size ([`decode_request`],
//! [`decode_response`]), so a peer cannot make a node allocate more than
//! the bound or accept trailing bytes. docs/PROTOCOL.md, "Block sync and
//! catch-up", gives every byte.

pub(crate) mod client;

use borsh::{BorshDeserialize, BorshSerialize};
use tally_ledger::{decode_strict, ConsensusMessage, DecodeError, Hash, StoredBlock};

use crate::chain::Chain;

/// Most blocks one answer holds.
pub const MAX_BLOCKS_PER_ANSWER: u32 = 256;

/// Room an answer needs beyond its blocks (the enum tag and the length).
const ANSWER_FRAMING_BYTES: usize = 64;

/// A question to a peer.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum SyncRequest {
    /// What is your committed tip?
    Status,
    /// Committed blocks `from`, `from + 1`, … (at most `max`), each with its
    /// commit certificate.
    Blocks {
        /// First height wanted.
        from: u64,
        /// Most blocks wanted.
        max: u32,
    },
    /// "I have just committed `height`", sent to every peer as a node
    /// commits a block by consensus, so that a peer that missed the
    /// decision learns at once that it is behind (and asks with
    /// [`SyncRequest::Catchup`]). Answered with [`SyncResponse::Status`].
    Decided {
        /// The height committed.
        height: u64,
    },
    /// "I am deciding `height` in `round`; here are my votes of it": sent
    /// to every peer when a node's consensus has not moved for a while, and
    /// to a peer that said it decided a height this node is still deciding.
    /// Gossip would refuse to carry the same bytes twice; this exchange is
    /// point to point and answers in kind.
    Catchup(Catchup),
}

/// The fields of a [`SyncRequest::Catchup`].
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Catchup {
    /// The height the sender is deciding (its tip + 1).
    pub height: u64,
    /// Its round.
    pub round: u32,
    /// The proposal of that round it holds (the first it received), if
    /// any: a peer holding another, or one where it holds none, sends its
    /// own.
    pub proposal: Option<Hash>,
    /// Its votes of that height, and the votes it holds (for the current
    /// and previous round, plus the polka of its valid value).
    pub messages: Vec<ConsensusMessage>,
}

/// A peer's answer.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum SyncResponse {
    /// The peer's committed tip (height 0: genesis).
    Status {
        /// Height of the tip.
        height: u64,
        /// Hash of the tip.
        hash: Hash,
    },
    /// Consecutive committed blocks starting at the requested height; fewer
    /// than asked (possibly none) when the peer has no more or the response
    /// would exceed its size limit.
    Blocks(Vec<StoredBlock>),
    /// The answer to [`SyncRequest::Catchup`] from a peer that has not
    /// committed that height: the votes of the height it holds, and its
    /// proposal of the asker's round if the asker lacks it (none if it is
    /// at another height). A peer that has committed it answers with
    /// [`SyncResponse::Blocks`] instead: the decided block and its
    /// certificate.
    Messages(Vec<ConsensusMessage>),
}

/// The libp2p protocol name of the chain with `genesis_hash`.
pub fn protocol_name(genesis_hash: &Hash) -> String {
    format!("/tally/{}/sync/2", genesis_hash.to_hex())
}

/// Most messages a catch-up request or answer may carry with `validators`
/// validators: a proposal and the polka of a re-proposed value, and two
/// votes per validator in each kind of two rounds.
pub fn max_catchup_messages(validators: usize) -> usize {
    16 + 5 * validators
}

/// Decodes a request strictly, reading at most `max_bytes`.
pub fn decode_request(bytes: &[u8], max_bytes: usize) -> Result<SyncRequest, DecodeError> {
    decode_strict(bytes, max_bytes)
}

/// Decodes an answer strictly, reading at most `max_bytes`.
pub fn decode_response(bytes: &[u8], max_bytes: usize) -> Result<SyncResponse, DecodeError> {
    decode_strict(bytes, max_bytes)
}

/// Answers the requests that need only the store (`Status`, `Blocks`);
/// `None` for the others, which the host answers, and when storage fails
/// (then the request goes unanswered: "no such block" would be a lie).
/// Runs on any thread.
pub fn serve(chain: &Chain, request: &SyncRequest, max_bytes: usize) -> Option<SyncResponse> {
    match request {
        SyncRequest::Status => {
            let tip = chain.tip().ok()?;
            Some(SyncResponse::Status {
                height: tip.height,
                hash: tip.hash,
            })
        }
        SyncRequest::Blocks { from, max } => {
            let max = (*max).min(MAX_BLOCKS_PER_ANSWER);
            blocks(chain, *from, max, max_bytes).map(SyncResponse::Blocks)
        }
        SyncRequest::Decided { .. } | SyncRequest::Catchup(_) => None,
    }
}

/// Committed blocks from `from`, at most `max` of them and at most
/// `max_bytes` encoded in all (but at least one if there is one).
fn blocks(chain: &Chain, from: u64, max: u32, max_bytes: usize) -> Option<Vec<StoredBlock>> {
    let mut blocks = Vec::new();
    let mut bytes = 0usize;
    let first = from.max(1);
    for height in first..first.saturating_add(u64::from(max)) {
        let Some(stored) = chain.store().block(height).ok()? else {
            break;
        };
        // The encoded size, counted without encoding (the transport encodes
        // the answer once).
        let size = borsh::object_length(&stored).unwrap_or(usize::MAX);
        let room = max_bytes.saturating_sub(ANSWER_FRAMING_BYTES);
        if !blocks.is_empty() && bytes.saturating_add(size) > room {
            break;
        }
        bytes = bytes.saturating_add(size);
        blocks.push(stored);
    }
    Some(blocks)
}

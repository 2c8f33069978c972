//! The block-sync protocol: a request-response exchange over its own libp2p
//! protocol, `/tally/<genesis hash>/sync/2`: tips, committed blocks, and the
//! catch-up exchange of a height's consensus messages.
//!
//! Each request and response is one borsh value on its own stream; the
//! reader takes at most the configured number of bytes and decodes strictly,
//! so a peer cannot make a node allocate more than that or accept trailing
//! garbage.

use std::io;

use async_trait::async_trait;
use borsh::{BorshDeserialize, BorshSerialize};
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use tally_ledger::{decode_strict, ConsensusMessage, Hash, StoredBlock};

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
    /// to every peer when a node's consensus has not moved for a while (its
    /// own votes and the votes it holds, which gossip may have lost), and to
    /// a peer that said it decided a height this node is still deciding.
    /// Gossip would refuse to carry the same bytes twice; this exchange is
    /// point to point and answers in kind.
    Catchup {
        /// The height the sender is deciding (its tip + 1).
        height: u64,
        /// Its round.
        round: u32,
        /// The proposal of that round it holds (the first it received), if
        /// any: a peer holding another, or one where it holds none, sends
        /// its own.
        proposal: Option<Hash>,
        /// Its votes of that height, and the votes it holds (at most two per
        /// validator, kind and round, for the current and previous round,
        /// plus the polka of its valid value).
        messages: Vec<ConsensusMessage>,
    },
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
    /// proposal of the asker's round if the asker lacks it (none if it is at
    /// another height). A peer that has committed it answers with
    /// [`SyncResponse::Blocks`] instead: the decided block and its
    /// certificate.
    Messages(Vec<ConsensusMessage>),
}

/// The fields of a [`SyncRequest::Catchup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catchup {
    /// The height the peer is deciding.
    pub height: u64,
    /// Its round.
    pub round: u32,
    /// The proposal of that round it holds.
    pub proposal: Option<Hash>,
    /// Its votes and those it holds.
    pub messages: Vec<ConsensusMessage>,
}

/// Answers sync requests from peers: implemented by the node over its store.
/// `None` means "cannot answer now" (e.g. a storage error): the request is
/// dropped unanswered, which the peer sees as a failed request rather than
/// as a false answer.
pub trait SyncServer: Send + Sync + 'static {
    /// The committed tip.
    fn status(&self) -> Option<SyncResponse>;
    /// Committed blocks from `from`, at most `max` of them and at most
    /// `max_bytes` encoded in all (but at least one if there is one).
    fn blocks(&self, from: u64, max: u32, max_bytes: usize) -> Option<SyncResponse>;
    /// Answers a [`SyncRequest::Decided`] from `from` (see there): by
    /// default with the tip.
    fn decided(&self, from: libp2p::PeerId, height: u64) -> Option<SyncResponse> {
        let _ = (from, height);
        self.status()
    }
    /// Answers a [`SyncRequest::Catchup`] from `from` (see there).
    fn catchup(&self, from: libp2p::PeerId, request: Catchup) -> Option<SyncResponse> {
        let _ = (from, request);
        Some(SyncResponse::Messages(Vec::new()))
    }
}

/// Reads and writes sync messages as bounded borsh values.
#[derive(Debug, Clone)]
pub struct SyncCodec {
    /// Largest request read (a catch-up request may carry a proposal).
    pub max_request_bytes: usize,
    /// Largest response read.
    pub max_response_bytes: usize,
}

impl SyncCodec {
    /// The protocol name for the chain with `genesis_hash`.
    pub fn protocol(genesis_hash: &Hash) -> Result<StreamProtocol, String> {
        StreamProtocol::try_from_owned(format!("/tally/{}/sync/2", genesis_hash.to_hex()))
            .map_err(|e| e.to_string())
    }
}

async fn read_bounded<T, V>(io: &mut T, max: usize) -> io::Result<V>
where
    T: AsyncRead + Unpin + Send,
    V: BorshDeserialize,
{
    let mut bytes = Vec::new();
    // One byte past the limit tells "too large" from "exactly the limit".
    io.take(max as u64 + 1).read_to_end(&mut bytes).await?;
    if bytes.is_empty() {
        // The other side closed without answering: a busy or rate-limited
        // peer does that, so it is a failed request, not a false answer.
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed without an answer",
        ));
    }
    decode_strict(&bytes, max).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_value<T, V>(io: &mut T, value: &V) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
    V: BorshSerialize,
{
    let bytes = borsh::to_vec(value)?;
    io.write_all(&bytes).await?;
    io.close().await
}

#[async_trait]
impl libp2p::request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = SyncRequest;
    type Response = SyncResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_bounded(io, self.max_request_bytes).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_bounded(io, self.max_response_bytes).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: SyncRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_value(io, &request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: SyncResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_value(io, &response).await
    }
}

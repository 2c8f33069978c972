//! The block-sync protocol: a request-response exchange over its own libp2p
//! protocol, `/tally/<genesis hash>/sync/1`.
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
use tally_ledger::{decode_strict, Hash, StoredBlock};

/// Largest encoded request (requests are a few bytes).
pub const MAX_REQUEST_BYTES: usize = 64;

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
}

/// Reads and writes sync messages as bounded borsh values.
#[derive(Debug, Clone)]
pub struct SyncCodec {
    /// Largest response read.
    pub max_response_bytes: usize,
}

impl SyncCodec {
    /// The protocol name for the chain with `genesis_hash`.
    pub fn protocol(genesis_hash: &Hash) -> Result<StreamProtocol, String> {
        StreamProtocol::try_from_owned(format!("/tally/{}/sync/1", genesis_hash.to_hex()))
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
        read_bounded(io, MAX_REQUEST_BYTES).await
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

//! The request-response codec: each request and each answer is one value
//! of bytes on its own stream, which the writer then closes. The reader
//! takes at most the configured number of bytes, so a peer cannot make a
//! node allocate more than that; what the bytes mean is the application's
//! business (it decodes them strictly).

use std::io;

use async_trait::async_trait;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// Reads and writes requests and answers as bounded byte strings.
#[derive(Debug, Clone)]
pub struct BytesCodec {
    /// Largest request read.
    pub max_request_bytes: usize,
    /// Largest answer read.
    pub max_response_bytes: usize,
}

async fn read_bounded<T>(io: &mut T, max: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
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
    if bytes.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("more than {max} bytes"),
        ));
    }
    Ok(bytes)
}

async fn write_bytes<T>(io: &mut T, bytes: &[u8]) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    io.write_all(bytes).await?;
    io.close().await
}

#[async_trait]
impl libp2p::request_response::Codec for BytesCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_bounded(io, self.max_request_bytes).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_bounded(io, self.max_response_bytes).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_bytes(io, &request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_bytes(io, &response).await
    }
}

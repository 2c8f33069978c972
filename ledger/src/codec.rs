//! Strict decoding of canonical borsh bytes.

use borsh::BorshDeserialize;

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is longer than the largest valid encoding.
    #[error("input is {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// Bytes given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a canonical encoding (truncated, trailing bytes,
    /// bad length prefix or an invalid field).
    #[error("malformed encoding: {0}")]
    Malformed(String),
}

/// Decodes `bytes` as exactly one `T`: rejects inputs over `max_bytes`,
/// truncated inputs and trailing bytes.
pub fn decode_strict<T: BorshDeserialize>(
    bytes: &[u8],
    max_bytes: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > max_bytes {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: max_bytes,
        });
    }
    borsh::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
}

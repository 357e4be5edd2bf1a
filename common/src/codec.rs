//! Encoding and decoding of messages to and from frame payloads (postcard).
//!
//! Pure: no I/O. `decode` never panics on any input, rejects trailing bytes, and validates
//! every identifier through the types' own checks.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a payload is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a message of the expected type.
    #[error("malformed message: {0}")]
    Malformed(postcard::Error),
    /// A message was followed by extra bytes.
    #[error("{0} trailing bytes after message")]
    TrailingBytes(usize),
}

/// A message that could not be encoded (none of the protocol's types should ever fail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode message: {0}")]
pub struct EncodeError(postcard::Error);

/// Appends the encoding of `msg` to `out`.
pub fn encode<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    postcard::to_io(msg, &mut *out).map(|_| ()).map_err(EncodeError)
}

/// Decodes one whole payload as a `T`.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    let (msg, rest) = postcard::take_from_bytes(payload).map_err(DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests;

//! Encoding and decoding of messages to and from frame payloads (postcard).
//!
//! Pure: no I/O. `decode` never panics on any input, rejects trailing bytes, and validates
//! every identifier through the types' own checks.

use std::cell::RefCell;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a payload is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a message of the expected type.
    #[error("malformed message: {0}")]
    Malformed(postcard::Error),
    /// A value in the message failed its type's own checks (a name, a path inside a
    /// folder, a folder's tree; issue 23): why, as that type says it.
    #[error("malformed message: {0}")]
    Refused(String),
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

thread_local! {
    /// Why a value being decoded on this thread was refused by its type's checks:
    /// postcard keeps no message of a `serde` custom error, and a user should read which
    /// name or path was refused and why.
    static REFUSED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Notes why a value read from the wire was refused, for `decode`'s error (the first one
/// noted during a decode: the innermost, the cause).
pub(crate) fn note_refusal(why: &dyn std::fmt::Display) {
    REFUSED.with(|r| {
        let mut noted = r.borrow_mut();
        if noted.is_none() {
            *noted = Some(why.to_string());
        }
    });
}

/// Decodes one whole payload as a `T`.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    REFUSED.with(|r| r.borrow_mut().take());
    let decoded = postcard::take_from_bytes(payload);
    let refused = REFUSED.with(|r| r.borrow_mut().take());
    let (msg, rest) = decoded.map_err(|e| match (e, refused) {
        (postcard::Error::SerdeDeCustom, Some(why)) => DecodeError::Refused(why),
        (e, _) => DecodeError::Malformed(e),
    })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests;

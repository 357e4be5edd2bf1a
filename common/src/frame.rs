//! Framing: each message travels as `u32 big-endian payload length | payload`.
//!
//! Invariant: a declared length above `MAX_FRAME_LEN` is rejected before any byte of the
//! payload is read or any buffer is sized from it; the payload buffer then grows only as
//! bytes actually arrive. A frame of length 0 (no message encodes to nothing) is a protocol
//! error: it makes no progress (issue 21).

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, DecodeError, EncodeError};

/// The largest payload accepted: the biggest message is an `UploadFile` or a file's metadata
/// carrying the piece hashes of a `MAX_FILE_LEN` file (`MAX_PIECES` × 20 bytes = 10 MiB),
/// plus generous headroom for names and fields.
pub const MAX_FRAME_LEN: usize = 10 * 1024 * 1024 + 64 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The declared length is over the limit.
    #[error("frame of {len} bytes exceeds the {max} bytes limit")]
    TooLarge { len: usize, max: usize },
    /// The connection closed in the middle of a frame.
    #[error("connection closed mid-frame")]
    Truncated,
    /// A frame with no payload: every message takes at least one byte, so this one only
    /// holds the reader without progress.
    #[error("empty frame (protocol error)")]
    Empty,
    /// The payload is not a valid message.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The message could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The socket failed (this includes timeouts).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The secure channel could not be set up.
    #[error(transparent)]
    Handshake(#[from] crate::secure_channel::HandshakeError),
}

impl FrameError {
    /// Whether the error is a read or write timeout.
    pub fn is_timeout(&self) -> bool {
        match self {
            FrameError::Io(e) => {
                matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
            }
            FrameError::Handshake(e) => e.is_timeout(),
            _ => false,
        }
    }
}

/// Reads one frame's payload. `Ok(None)` is a clean end of stream before a frame started.
pub fn read_frame(reader: &mut impl Read) -> Result<Option<Vec<u8>>, FrameError> {
    read_frame_limited(reader, MAX_FRAME_LEN)
}

/// Like `read_frame`, refusing a declared length above `max` (at most `MAX_FRAME_LEN`).
pub fn read_frame_limited(
    reader: &mut impl Read,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let max = max.min(MAX_FRAME_LEN);
    let mut header = [0u8; 4];
    let mut filled = 0;
    while filled < header.len() {
        match reader.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    // Grow with the data rather than trusting the length: a peer that declares 10 MiB and
    // sends nothing costs us nothing.
    let mut payload = Vec::with_capacity(len.min(64 * 1024));
    let n = reader.take(len as u64).read_to_end(&mut payload)?;
    if n < len {
        return Err(FrameError::Truncated);
    }
    Ok(Some(payload))
}

/// Encodes `msg` as a complete frame (header and payload).
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; 4];
    codec::encode(msg, &mut buf)?;
    let len = buf.len() - 4;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len, max: MAX_FRAME_LEN });
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// Writes `msg` as one frame (not flushed).
pub fn write_frame<T: Serialize>(writer: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    writer.write_all(&encode_frame(msg)?)?;
    Ok(())
}

/// Reads and decodes one message. `Ok(None)` is a clean end of stream.
pub fn read_message<T: DeserializeOwned>(reader: &mut impl Read) -> Result<Option<T>, FrameError> {
    read_message_limited(reader, MAX_FRAME_LEN)
}

/// Like `read_message`, with frames of at most `max` bytes.
pub fn read_message_limited<T: DeserializeOwned>(
    reader: &mut impl Read,
    max: usize,
) -> Result<Option<T>, FrameError> {
    match read_frame_limited(reader, max)? {
        Some(payload) => Ok(Some(codec::decode(&payload)?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &String::from("hi")).unwrap();
        // Pin the format: 4-byte big-endian length, then postcard (varint length + bytes).
        assert_eq!(wire, [0, 0, 0, 3, 2, b'h', b'i']);
        let got: Option<String> = read_message(&mut wire.as_slice()).unwrap();
        assert_eq!(got.as_deref(), Some("hi"));
    }

    #[test]
    fn clean_eof_is_none() {
        assert!(read_frame(&mut [].as_slice()).unwrap().is_none());
    }

    #[test]
    fn eof_mid_header_or_payload_is_truncated() {
        assert!(matches!(read_frame(&mut [0u8, 0].as_slice()), Err(FrameError::Truncated)));
        assert!(matches!(
            read_frame(&mut [0u8, 0, 0, 5, 1, 2].as_slice()),
            Err(FrameError::Truncated)
        ));
    }

    #[test]
    fn an_empty_frame_is_a_protocol_error() {
        // Issue 21: zero-length frames would let a peer hold a reader without progress.
        assert!(matches!(read_frame(&mut [0u8, 0, 0, 0].as_slice()), Err(FrameError::Empty)));
        let got: Result<Option<String>, _> = read_message(&mut [0u8, 0, 0, 0, 0].as_slice());
        assert!(matches!(got, Err(FrameError::Empty)));
    }

    #[test]
    fn oversized_length_is_rejected_before_reading() {
        let huge = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
        match read_frame(&mut huge.as_slice()) {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!((len, max), (MAX_FRAME_LEN + 1, MAX_FRAME_LEN))
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let max = u32::MAX.to_be_bytes();
        assert!(matches!(read_frame(&mut max.as_slice()), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn a_lower_limit_refuses_what_the_full_one_takes() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &vec![7u8; 1000]).unwrap();
        assert!(matches!(
            read_frame_limited(&mut wire.as_slice(), 999),
            Err(FrameError::TooLarge { max: 999, .. })
        ));
        assert!(read_frame_limited(&mut wire.as_slice(), 1003).unwrap().is_some());
        // Never above the hard limit.
        let huge = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
        assert!(matches!(
            read_frame_limited(&mut huge.as_slice(), usize::MAX),
            Err(FrameError::TooLarge { .. })
        ));
    }
}

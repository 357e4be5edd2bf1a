//! Piece buffers: one piece's bytes, aligned for `O_DIRECT` writes.
//!
//! A download reads each piece off the socket into one of these, hashes it there, writes
//! it to disk from it, and then either reuses it or lends it to the seeder as one of the
//! download's newest pieces (`recent_pieces`): a piece is never copied between those steps.

use aligned_vec::{avec, AVec, ConstAlign};

use common::PIECE_SIZE;

/// The alignment of piece buffers: what `O_DIRECT` writes need (a page covers every
/// logical block size in use).
pub const BUF_ALIGN: usize = 4096;

/// A piece buffer, aligned for `O_DIRECT`.
pub type PieceBuf = AVec<u8, ConstAlign<BUF_ALIGN>>;

/// A new buffer of `PIECE_SIZE` bytes.
pub fn piece_buf() -> PieceBuf {
    avec![[BUF_ALIGN] | 0u8; PIECE_SIZE]
}

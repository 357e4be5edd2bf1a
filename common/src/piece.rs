//! Piece math: how a file of a given length splits into 512 KiB pieces.
//!
//! Invariant: the pieces of a `Layout` are contiguous, cover the file exactly, and only the
//! last one may be short (the empty file has no pieces).

use serde::{Deserialize, Serialize};

/// The size of every piece but the last, in bytes.
pub const PIECE_SIZE: usize = 512 * 1024;
/// The most pieces one file may have: its piece hashes (20 bytes each, 10 MiB in all) must
/// fit one frame. This allows files up to 256 GiB.
pub const MAX_PIECES: u64 = 1 << 19;
/// The largest file the system shares, in bytes.
pub const MAX_FILE_LEN: u64 = MAX_PIECES * PIECE_SIZE as u64;

/// The index of a piece within its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PieceIndex(pub u32);

/// A file length that is too large to share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("file of {len} bytes is larger than the {max} bytes limit")]
pub struct TooLarge {
    /// The rejected length.
    pub len: u64,
    /// `MAX_FILE_LEN`.
    pub max: u64,
}

/// How a file of `file_len` bytes splits into pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    file_len: u64,
    n_pieces: u32,
}

impl Layout {
    /// The layout of a file of `file_len` bytes, if it is not too large.
    pub fn new(file_len: u64) -> Result<Layout, TooLarge> {
        if file_len > MAX_FILE_LEN {
            return Err(TooLarge { len: file_len, max: MAX_FILE_LEN });
        }
        let n_pieces = file_len.div_ceil(PIECE_SIZE as u64);
        // MAX_PIECES fits a u32, so this cannot truncate.
        Ok(Layout { file_len, n_pieces: n_pieces as u32 })
    }

    /// The file's length in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// How many pieces the file has (0 for the empty file).
    pub fn n_pieces(&self) -> u32 {
        self.n_pieces
    }

    /// `idx` as a piece of this file, or `None` if it is out of range.
    pub fn piece_index(&self, idx: u32) -> Option<PieceIndex> {
        (idx < self.n_pieces).then_some(PieceIndex(idx))
    }

    /// Every piece index in order.
    pub fn pieces(&self) -> impl DoubleEndedIterator<Item = PieceIndex> + ExactSizeIterator {
        (0..self.n_pieces).map(PieceIndex)
    }

    /// The byte offset where piece `idx` starts.
    pub fn piece_offset(&self, idx: PieceIndex) -> u64 {
        u64::from(idx.0) * PIECE_SIZE as u64
    }

    /// The length of piece `idx`: `PIECE_SIZE`, or less for the last piece. Zero for an index
    /// out of range.
    pub fn piece_len(&self, idx: PieceIndex) -> usize {
        let start = self.piece_offset(idx);
        if idx.0 >= self.n_pieces {
            return 0;
        }
        // At most PIECE_SIZE, so the cast is lossless.
        (self.file_len - start).min(PIECE_SIZE as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn check(file_len: u64, expected: &[usize]) {
        let layout = Layout::new(file_len).unwrap();
        let lens: Vec<usize> = layout.pieces().map(|i| layout.piece_len(i)).collect();
        assert_eq!(lens, expected);
    }

    #[test]
    fn edge_lengths() {
        check(0, &[]);
        check(1, &[1]);
        check(PIECE_SIZE as u64, &[PIECE_SIZE]);
        check(PIECE_SIZE as u64 + 1, &[PIECE_SIZE, 1]);
        check(3 * PIECE_SIZE as u64 - 5, &[PIECE_SIZE, PIECE_SIZE, PIECE_SIZE - 5]);
    }

    #[test]
    fn out_of_range() {
        let layout = Layout::new(10).unwrap();
        assert_eq!(layout.piece_index(0), Some(PieceIndex(0)));
        assert_eq!(layout.piece_index(1), None);
        assert_eq!(layout.piece_len(PieceIndex(7)), 0);
        assert!(Layout::new(MAX_FILE_LEN).is_ok());
        assert_eq!(
            Layout::new(MAX_FILE_LEN + 1),
            Err(TooLarge { len: MAX_FILE_LEN + 1, max: MAX_FILE_LEN })
        );
    }

    proptest! {
        #[test]
        fn pieces_cover_the_file(file_len in 0..=MAX_FILE_LEN) {
            let layout = Layout::new(file_len).unwrap();
            let mut next = 0u64;
            for idx in layout.pieces() {
                prop_assert_eq!(layout.piece_offset(idx), next);
                let len = layout.piece_len(idx);
                prop_assert!((1..=PIECE_SIZE).contains(&len));
                if idx.0 + 1 < layout.n_pieces() {
                    prop_assert_eq!(len, PIECE_SIZE);
                }
                next += len as u64;
            }
            prop_assert_eq!(next, file_len);
        }
    }
}

//! The last pieces a download verified, kept in memory for the seeder to serve.
//!
//! A downloader writes its pieces with `O_DIRECT` (no copy into the page cache), so a
//! piece another peer asks for would otherwise be read back from the disk. In a swarm,
//! the pieces asked for are mostly the newest: rarest-first makes a piece that just
//! arrived the one others want. So while other peers download a file from us, its last
//! `MAX_PIECES` verified pieces stay here and are served from memory.
//!
//! Pure container: the caller decides when keeping is worth its copy (`SharedFile`
//! keeps pieces only while a seeder connection watches the file).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use common::PieceIndex;

/// Pieces kept per file, at most (512 KiB each: 32 MiB).
pub const MAX_PIECES: usize = 64;

/// A bounded set of verified pieces, the oldest dropped first.
#[derive(Debug, Default)]
pub struct RecentPieces {
    pieces: HashMap<u32, Arc<[u8]>>,
    order: VecDeque<u32>,
}

impl RecentPieces {
    /// Keeps a copy of `data`, the verified bytes of `piece`, dropping the oldest piece if
    /// `MAX_PIECES` are kept already.
    pub fn keep(&mut self, piece: PieceIndex, data: &[u8]) {
        if self.pieces.contains_key(&piece.0) {
            return;
        }
        let mut spare = None;
        while self.order.len() >= MAX_PIECES {
            if let Some(oldest) = self.order.pop_front() {
                spare = self.pieces.remove(&oldest);
            }
        }
        // The oldest piece's memory is reused when no seeder still sends from it: a fresh
        // 512 KiB allocation would cost page faults and zeroing for every piece.
        let kept = match spare {
            Some(mut old) if old.len() == data.len() => match Arc::get_mut(&mut old) {
                Some(bytes) => {
                    bytes.copy_from_slice(data);
                    old
                }
                None => Arc::from(data),
            },
            _ => Arc::from(data),
        };
        self.pieces.insert(piece.0, kept);
        self.order.push_back(piece.0);
    }

    /// The bytes of `piece`, if kept.
    pub fn get(&self, piece: PieceIndex) -> Option<Arc<[u8]>> {
        self.pieces.get(&piece.0).cloned()
    }

    /// Drops every piece.
    pub fn clear(&mut self) {
        self.pieces.clear();
        self.order.clear();
    }

    /// How many pieces are kept.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_pieces_up_to_the_bound() {
        let mut recent = RecentPieces::default();
        for n in 0..(MAX_PIECES as u32 + 10) {
            recent.keep(PieceIndex(n), &n.to_be_bytes());
        }
        assert_eq!(recent.len(), MAX_PIECES);
        assert!(recent.get(PieceIndex(9)).is_none(), "the oldest went first");
        let newest = MAX_PIECES as u32 + 9;
        assert_eq!(recent.get(PieceIndex(newest)).as_deref(), Some(&newest.to_be_bytes()[..]));
        assert_eq!(recent.get(PieceIndex(10)).as_deref(), Some(&10u32.to_be_bytes()[..]));
    }

    #[test]
    fn the_oldest_pieces_memory_is_reused_unless_it_is_still_being_sent() {
        let mut recent = RecentPieces::default();
        for n in 0..MAX_PIECES as u32 {
            recent.keep(PieceIndex(n), &[n as u8; 8]);
        }
        let oldest = recent.get(PieceIndex(0)).unwrap().as_ptr();
        recent.keep(PieceIndex(100), &[100; 8]);
        let reused = recent.get(PieceIndex(100)).unwrap();
        assert_eq!(reused.as_ptr(), oldest);
        assert_eq!(&reused[..], &[100; 8]);
        // Piece 1 is being sent (a clone is held): its bytes must not change under it.
        let sending = recent.get(PieceIndex(1)).unwrap();
        recent.keep(PieceIndex(101), &[101; 8]);
        assert_eq!(&sending[..], &[1; 8]);
        assert_eq!(recent.get(PieceIndex(101)).as_deref(), Some(&[101u8; 8][..]));
    }

    #[test]
    fn keeping_a_piece_twice_keeps_one_copy() {
        let mut recent = RecentPieces::default();
        recent.keep(PieceIndex(1), b"one");
        recent.keep(PieceIndex(1), b"one again");
        assert_eq!(recent.len(), 1);
        assert_eq!(recent.get(PieceIndex(1)).as_deref(), Some(&b"one"[..]));
        recent.clear();
        assert!(recent.is_empty());
    }
}

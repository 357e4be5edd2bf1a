//! The last pieces a download verified, kept in memory for the seeder to serve.
//!
//! A downloader writes its pieces with `O_DIRECT` (no copy into the page cache), so a
//! piece another peer asks for would otherwise be read back from the disk. In a swarm,
//! the pieces asked for are mostly the newest: rarest-first makes a piece that just
//! arrived the one others want. So while other peers download a file from us, its last
//! `MAX_PIECES` verified pieces stay here and are served from memory.
//!
//! The pieces are not copied: the buffer a piece was received, hashed and written in is
//! handed over (`adopt`), and the caller gets the oldest piece's buffer back to receive
//! into. Pure container: the caller decides when keeping is worth the memory (`Swarm`
//! keeps pieces only while a seeder connection watches the file).

use std::collections::{HashMap, VecDeque};
use std::ops::Deref;
use std::sync::Arc;

use common::PieceIndex;

/// Pieces kept per file, at most (512 KiB each: 32 MiB).
pub const MAX_PIECES: usize = 64;

/// A kept piece: a buffer whose first `len` bytes are the piece.
#[derive(Debug)]
pub struct Kept<B> {
    buf: B,
    len: usize,
}

impl<B: AsRef<[u8]>> Deref for Kept<B> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf.as_ref()[..self.len]
    }
}

/// A bounded set of verified pieces in buffers of type `B`, the oldest dropped first.
#[derive(Debug)]
pub struct RecentPieces<B> {
    pieces: HashMap<u32, Arc<Kept<B>>>,
    order: VecDeque<u32>,
}

impl<B> Default for RecentPieces<B> {
    fn default() -> Self {
        RecentPieces { pieces: HashMap::new(), order: VecDeque::new() }
    }
}

/// What `adopt` did with a buffer.
#[derive(Debug)]
pub enum Adopted<B> {
    /// Kept; here is the oldest piece's buffer, dropped to make room, for the caller to
    /// reuse.
    Spare(B),
    /// Kept; no buffer is free to give back (fewer than `MAX_PIECES` were kept, or a
    /// seeder still sends from the oldest one).
    Kept,
    /// Not kept (the piece is kept already): the caller's buffer, back.
    Refused(B),
}

impl<B: AsRef<[u8]>> RecentPieces<B> {
    /// Keeps `buf[..len]`, the verified bytes of `piece`, dropping the oldest piece if
    /// `MAX_PIECES` are kept already.
    pub fn adopt(&mut self, piece: PieceIndex, buf: B, len: usize) -> Adopted<B> {
        if self.pieces.contains_key(&piece.0) || len > buf.as_ref().len() {
            return Adopted::Refused(buf);
        }
        let spare = match self.order.len() >= MAX_PIECES {
            true => self.order.pop_front().and_then(|oldest| self.pieces.remove(&oldest)),
            false => None,
        };
        self.pieces.insert(piece.0, Arc::new(Kept { buf, len }));
        self.order.push_back(piece.0);
        // A seeder thread still sending from the oldest piece keeps it alive; it is freed
        // when that thread lets go.
        match spare.and_then(Arc::into_inner) {
            Some(kept) => Adopted::Spare(kept.buf),
            None => Adopted::Kept,
        }
    }

    /// The bytes of `piece`, if kept.
    pub fn get(&self, piece: PieceIndex) -> Option<Arc<Kept<B>>> {
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

    fn buf(n: u32) -> Vec<u8> {
        n.to_be_bytes().to_vec()
    }

    #[test]
    fn keeps_the_newest_pieces_up_to_the_bound() {
        let mut recent = RecentPieces::default();
        for n in 0..(MAX_PIECES as u32 + 10) {
            recent.adopt(PieceIndex(n), buf(n), 4);
        }
        assert_eq!(recent.len(), MAX_PIECES);
        assert!(recent.get(PieceIndex(9)).is_none(), "the oldest went first");
        let newest = MAX_PIECES as u32 + 9;
        assert_eq!(
            recent.get(PieceIndex(newest)).as_deref().map(|k| &k[..]),
            Some(&buf(newest)[..])
        );
        assert_eq!(recent.get(PieceIndex(10)).as_deref().map(|k| &k[..]), Some(&buf(10)[..]));
    }

    #[test]
    fn the_oldest_pieces_buffer_comes_back_unless_it_is_still_being_sent() {
        let mut recent = RecentPieces::default();
        for n in 0..MAX_PIECES as u32 {
            assert!(matches!(recent.adopt(PieceIndex(n), vec![n as u8; 8], 8), Adopted::Kept));
        }
        let oldest = recent.get(PieceIndex(0)).unwrap().as_ptr();
        match recent.adopt(PieceIndex(100), vec![100; 8], 8) {
            Adopted::Spare(spare) => {
                assert_eq!(spare.as_ptr(), oldest, "the very buffer, not a copy");
                assert_eq!(spare, vec![0; 8]);
            }
            other => panic!("expected the oldest buffer back, got {other:?}"),
        }
        // Piece 1 is being sent (a clone is held): its buffer must not be handed out.
        let sending = recent.get(PieceIndex(1)).unwrap();
        assert!(matches!(recent.adopt(PieceIndex(101), vec![101; 8], 8), Adopted::Kept));
        assert_eq!(&sending[..], &[1; 8]);
        assert!(recent.get(PieceIndex(1)).is_none());
        assert_eq!(recent.get(PieceIndex(101)).as_deref().map(|k| &k[..]), Some(&[101u8; 8][..]));
    }

    #[test]
    fn a_piece_is_the_first_len_bytes_of_its_buffer() {
        let mut recent = RecentPieces::default();
        recent.adopt(PieceIndex(7), b"short piece and spare room".to_vec(), 11);
        assert_eq!(recent.get(PieceIndex(7)).as_deref().map(|k| &k[..]), Some(&b"short piece"[..]));
        assert!(matches!(recent.adopt(PieceIndex(8), vec![0; 4], 5), Adopted::Refused(_)));
    }

    #[test]
    fn keeping_a_piece_twice_keeps_one_copy() {
        let mut recent = RecentPieces::default();
        recent.adopt(PieceIndex(1), b"one".to_vec(), 3);
        match recent.adopt(PieceIndex(1), b"one again".to_vec(), 9) {
            Adopted::Refused(back) => assert_eq!(back, b"one again"),
            other => panic!("expected the buffer back, got {other:?}"),
        }
        assert_eq!(recent.len(), 1);
        assert_eq!(recent.get(PieceIndex(1)).as_deref().map(|k| &k[..]), Some(&b"one"[..]));
        recent.clear();
        assert!(recent.is_empty());
    }
}

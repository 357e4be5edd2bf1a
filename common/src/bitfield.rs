//! Which pieces of a file a peer has: one bit per piece, most significant bit first.
//!
//! Invariant: a `Bitfield` of `n` pieces has exactly `ceil(n / 8)` bytes and every bit past
//! `n` is zero, whether it was built here or decoded from the wire.

use serde::{Deserialize, Serialize};

use crate::piece::PieceIndex;

/// A set of piece indices below a fixed piece count.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawBitfield", into = "RawBitfield")]
pub struct Bitfield {
    n_pieces: u32,
    bits: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct RawBitfield {
    n_pieces: u32,
    bits: Vec<u8>,
}

/// A bitfield whose length or padding is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed bitfield")]
pub struct BadBitfield;

impl TryFrom<RawBitfield> for Bitfield {
    type Error = BadBitfield;
    fn try_from(raw: RawBitfield) -> Result<Bitfield, BadBitfield> {
        if raw.bits.len() != byte_len(raw.n_pieces) {
            return Err(BadBitfield);
        }
        let field = Bitfield { n_pieces: raw.n_pieces, bits: raw.bits };
        let padding_clear = match field.bits.last() {
            Some(last) if !field.n_pieces.is_multiple_of(8) => {
                last & (0xff >> (field.n_pieces % 8)) == 0
            }
            _ => true,
        };
        if !padding_clear {
            return Err(BadBitfield);
        }
        Ok(field)
    }
}

impl From<Bitfield> for RawBitfield {
    fn from(field: Bitfield) -> RawBitfield {
        RawBitfield { n_pieces: field.n_pieces, bits: field.bits }
    }
}

fn byte_len(n_pieces: u32) -> usize {
    n_pieces.div_ceil(8) as usize
}

impl Bitfield {
    /// No piece of `n_pieces`.
    pub fn empty(n_pieces: u32) -> Bitfield {
        Bitfield { n_pieces, bits: vec![0; byte_len(n_pieces)] }
    }

    /// Every piece of `n_pieces`.
    pub fn full(n_pieces: u32) -> Bitfield {
        let mut field = Bitfield::empty(n_pieces);
        for idx in 0..n_pieces {
            field.set(PieceIndex(idx));
        }
        field
    }

    /// The number of pieces of the file.
    pub fn n_pieces(&self) -> u32 {
        self.n_pieces
    }

    /// Whether piece `idx` is in the set (false when out of range).
    pub fn has(&self, idx: PieceIndex) -> bool {
        idx.0 < self.n_pieces && self.bits[(idx.0 / 8) as usize] & (0x80 >> (idx.0 % 8)) != 0
    }

    /// Adds piece `idx` (ignored when out of range).
    pub fn set(&mut self, idx: PieceIndex) {
        if idx.0 < self.n_pieces {
            self.bits[(idx.0 / 8) as usize] |= 0x80 >> (idx.0 % 8);
        }
    }

    /// Removes piece `idx` (ignored when out of range).
    pub fn clear(&mut self, idx: PieceIndex) {
        if idx.0 < self.n_pieces {
            self.bits[(idx.0 / 8) as usize] &= !(0x80 >> (idx.0 % 8));
        }
    }

    /// How many pieces are in the set.
    pub fn count(&self) -> u32 {
        self.bits.iter().map(|b| b.count_ones()).sum()
    }

    /// Whether every piece is in the set.
    pub fn is_complete(&self) -> bool {
        self.count() == self.n_pieces
    }

    /// The pieces in the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = PieceIndex> + '_ {
        (0..self.n_pieces).map(PieceIndex).filter(|&idx| self.has(idx))
    }
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.count(), self.n_pieces)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_has_count() {
        let mut field = Bitfield::empty(10);
        assert_eq!(field.count(), 0);
        field.set(PieceIndex(0));
        field.set(PieceIndex(9));
        field.set(PieceIndex(10));
        assert!(field.has(PieceIndex(0)) && field.has(PieceIndex(9)));
        assert!(!field.has(PieceIndex(1)) && !field.has(PieceIndex(10)));
        assert_eq!(field.iter().collect::<Vec<_>>(), [PieceIndex(0), PieceIndex(9)]);
        field.clear(PieceIndex(9));
        field.clear(PieceIndex(10));
        assert_eq!(field.iter().collect::<Vec<_>>(), [PieceIndex(0)]);
        field.set(PieceIndex(9));
        assert!(Bitfield::full(10).is_complete());
        assert!(Bitfield::full(0).is_complete());
    }

    #[test]
    fn decoding_checks_length_and_padding() {
        let decode = |n_pieces, bits: Vec<u8>| {
            let raw = postcard::to_stdvec(&RawBitfield { n_pieces, bits }).unwrap();
            postcard::from_bytes::<Bitfield>(&raw)
        };
        assert!(decode(10, vec![0xff, 0xc0]).is_ok());
        assert!(decode(10, vec![0xff, 0xe0]).is_err(), "padding bit set");
        assert!(decode(10, vec![0xff]).is_err(), "too short");
        assert!(decode(8, vec![0xff, 0]).is_err(), "too long");
    }
}

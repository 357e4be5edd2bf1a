//! SHA1 digests: of a piece, of every piece of a file in parallel on the rayon pool, and the
//! file digest that authenticates a file's size and piece list.
//!
//! The file digest is `SHA1(size as u64 big-endian || piece hash 0 || piece hash 1 || ..)`.
//! A downloader that checks every piece against the piece list, and the piece list against
//! the file digest, has checked the whole file; unlike a plain SHA1 of the bytes it can be
//! computed on every core at once.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::piece::{Layout, TooLarge, PIECE_SIZE};

/// A SHA1 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sha1Digest(pub [u8; 20]);

impl Sha1Digest {
    /// The SHA1 of `data`.
    pub fn of(data: &[u8]) -> Sha1Digest {
        Sha1Digest(Sha1::digest(data).into())
    }
}

impl fmt::Display for Sha1Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Sha1Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha1({self})")
    }
}

/// The digest that names a file's content: its size and its piece hashes.
pub fn file_digest(file_len: u64, pieces: &[Sha1Digest]) -> Sha1Digest {
    let mut hasher = Sha1::new();
    hasher.update(file_len.to_be_bytes());
    for piece in pieces {
        hasher.update(piece.0);
    }
    Sha1Digest(hasher.finalize().into())
}

/// The hashes of a file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHashes {
    /// The file's length when it was hashed.
    pub file_len: u64,
    /// The SHA1 of every piece, in order.
    pub pieces: Vec<Sha1Digest>,
    /// `file_digest(file_len, &pieces)`.
    pub digest: Sha1Digest,
}

/// Why a file could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashFileError {
    /// Reading the file failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The file is too large to share.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// The file changed length while it was read.
    #[error("file changed while it was hashed")]
    Changed,
}

/// Hashes every piece of `file` (of `file_len` bytes) in parallel, each rayon worker reading
/// its pieces with positional reads into one reused buffer, so memory stays at one piece per
/// worker whatever the file's size.
pub fn hash_file(file: &File, file_len: u64) -> Result<FileHashes, HashFileError> {
    let pieces = piece_hashes(file, Layout::new(file_len)?)?;
    let digest = file_digest(file_len, &pieces);
    Ok(FileHashes { file_len, pieces, digest })
}

/// The SHA1 of every piece of `file`, which `layout` splits, hashed in parallel as
/// `hash_file` does (a folder's files too).
pub fn piece_hashes(file: &File, layout: Layout) -> Result<Vec<Sha1Digest>, HashFileError> {
    layout
        .pieces()
        .collect::<Vec<_>>()
        .into_par_iter()
        .map_init(
            || vec![0u8; PIECE_SIZE],
            |buf, idx| {
                let len = layout.piece_len(idx);
                let buf = &mut buf[..len];
                file.read_exact_at(buf, layout.piece_offset(idx)).map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        HashFileError::Changed
                    } else {
                        HashFileError::Io(e)
                    }
                })?;
                Ok(Sha1Digest::of(buf))
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The piece hashes of in-memory data: the reference `hash_file` must agree with.
    fn piece_hashes(data: &[u8]) -> Vec<Sha1Digest> {
        data.par_chunks(PIECE_SIZE).map(Sha1Digest::of).collect()
    }

    #[test]
    fn known_sha1() {
        assert_eq!(Sha1Digest::of(b"abc").to_string(), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn hash_file_matches_in_memory_hashes() {
        let data: Vec<u8> = (0..(2 * PIECE_SIZE + 17)).map(|i| (i * 31 % 251) as u8).collect();
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(&data).unwrap();
        let hashes = hash_file(&tmp, data.len() as u64).unwrap();
        assert_eq!(hashes.pieces, piece_hashes(&data));
        assert_eq!(hashes.pieces.len(), 3);
        assert_eq!(hashes.digest, file_digest(data.len() as u64, &hashes.pieces));
    }

    #[test]
    fn empty_file_has_no_pieces_but_a_digest() {
        let tmp = tempfile::tempfile().unwrap();
        let hashes = hash_file(&tmp, 0).unwrap();
        assert!(hashes.pieces.is_empty());
        assert_eq!(hashes.digest, Sha1Digest::of(&0u64.to_be_bytes()));
    }

    #[test]
    fn file_shorter_than_claimed_is_reported() {
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(b"short").unwrap();
        assert!(matches!(hash_file(&tmp, 100), Err(HashFileError::Changed)));
    }
}

//! How a shared item's pieces map to bytes on disk (issue 23): one file's pieces, or a
//! folder's, where each file of the tree starts a new piece (`FolderLayout`). Pure.
//!
//! Invariant: a piece lies in exactly one file, at one offset; `locate` of a piece out of
//! range is `None` and its length 0.

use common::folder::{FolderLayout, RelPath, TreeError};
use common::message::FileMeta;
use common::piece::TooLarge;
use common::{Layout, PieceIndex, PIECE_SIZE};

/// The pieces of a file or of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemLayout {
    File(Layout),
    Folder(FolderLayout),
}

/// Where a piece's bytes are, relative to the item's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceAt<'a> {
    /// The file inside the folder, or `None` for the item's path itself (a file).
    pub file: Option<&'a RelPath>,
    /// The byte offset in that file.
    pub offset: u64,
    pub len: usize,
}

/// Where `piece` lies in a download's `.part` file (`ItemLayout::part_offset`).
pub fn part_offset(piece: PieceIndex) -> u64 {
    u64::from(piece.0) * PIECE_SIZE as u64
}

/// Why metadata has no layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error(transparent)]
    File(#[from] TooLarge),
    #[error(transparent)]
    Folder(#[from] TreeError),
}

impl ItemLayout {
    /// The layout `meta` describes (a folder's when it has a tree).
    pub fn of(meta: &FileMeta) -> Result<ItemLayout, LayoutError> {
        Ok(match &meta.tree {
            Some(tree) => ItemLayout::Folder(FolderLayout::new(tree)?),
            None => ItemLayout::File(Layout::new(meta.size)?),
        })
    }

    /// The item's pieces in all.
    pub fn n_pieces(&self) -> u32 {
        match self {
            ItemLayout::File(l) => l.n_pieces(),
            ItemLayout::Folder(l) => l.n_pieces(),
        }
    }

    /// The length of `piece` (0 out of range).
    pub fn piece_len(&self, piece: PieceIndex) -> usize {
        match self {
            ItemLayout::File(l) => l.piece_len(piece),
            ItemLayout::Folder(l) => l.piece_len(piece),
        }
    }

    /// Where `piece` lies in a download's `.part` file: a file's pieces at their offsets,
    /// a folder's one after another at `PIECE_SIZE` strides (the `.part` of a folder is
    /// its pieces' store until every one is verified; issue 23).
    pub fn part_offset(&self, piece: PieceIndex) -> u64 {
        part_offset(piece)
    }

    /// The size of a download's `.part` file: the item's size, or a folder's pieces end
    /// to end (the last one short).
    pub fn part_len(&self) -> u64 {
        match self {
            ItemLayout::File(l) => l.file_len(),
            ItemLayout::Folder(l) => match l.n_pieces().checked_sub(1) {
                Some(last) => {
                    self.part_offset(PieceIndex(last)) + self.piece_len(PieceIndex(last)) as u64
                }
                None => 0,
            },
        }
    }

    /// A single file's layout.
    pub fn file(&self) -> Option<&Layout> {
        match self {
            ItemLayout::File(l) => Some(l),
            ItemLayout::Folder(_) => None,
        }
    }

    /// Where `piece` is: in which file of `meta`'s tree (the metadata this layout was made
    /// of), at which offset.
    pub fn locate<'m>(&self, meta: &'m FileMeta, piece: PieceIndex) -> Option<PieceAt<'m>> {
        match self {
            ItemLayout::File(l) => {
                let len = l.piece_len(piece);
                (len > 0).then(|| PieceAt { file: None, offset: l.piece_offset(piece), len })
            }
            ItemLayout::Folder(l) => {
                let (span, inner) = l.locate(piece)?;
                let entry = meta.tree.as_ref()?.entries().get(span.entry)?;
                let len = span.layout.piece_len(inner);
                let offset = span.layout.piece_offset(inner);
                Some(PieceAt { file: Some(&entry.path), offset, len })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::folder::{folder_digest, Entry, EntryKind, Tree};
    use common::Sha1Digest;

    fn folder(files: &[(&str, u64)]) -> FileMeta {
        let entries = files
            .iter()
            .map(|(p, size)| {
                let kind = match *size {
                    u64::MAX => EntryKind::Dir,
                    size => EntryKind::File { size, executable: false },
                };
                Entry { path: RelPath::parse(p).unwrap(), kind }
            })
            .collect();
        let tree = Tree::new(entries).unwrap();
        let n = FolderLayout::new(&tree).unwrap().n_pieces() as usize;
        let pieces = vec![Sha1Digest([0; 20]); n];
        FileMeta {
            name: "f".parse().unwrap(),
            size: tree.total_size(),
            digest: folder_digest(&tree, &pieces),
            pieces,
            tree: Some(tree),
        }
    }

    #[test]
    fn a_folders_pieces_are_found_in_their_files() {
        let p = PIECE_SIZE as u64;
        let meta = folder(&[("a", p + 1), ("d", u64::MAX), ("d/e", 0), ("d/f", 3), ("z", p)]);
        let layout = ItemLayout::of(&meta).unwrap();
        assert_eq!(layout.n_pieces(), 4);
        let at = |i| {
            layout
                .locate(&meta, PieceIndex(i))
                .map(|a| (a.file.unwrap().to_string(), a.offset, a.len))
        };
        assert_eq!(at(0), Some(("a".into(), 0, PIECE_SIZE)));
        assert_eq!(at(1), Some(("a".into(), p, 1)));
        assert_eq!(at(2), Some(("d/f".into(), 0, 3)));
        assert_eq!(at(3), Some(("z".into(), 0, PIECE_SIZE)));
        assert_eq!(at(4), None);
        assert_eq!(layout.piece_len(PieceIndex(4)), 0);
        assert!(layout.file().is_none());
        assert_eq!(layout.part_offset(PieceIndex(3)), 3 * p);
        assert_eq!(layout.part_len(), 4 * p);
        let small = folder(&[("a", 1), ("b", 2)]);
        assert_eq!(ItemLayout::of(&small).unwrap().part_len(), p + 2);
        assert_eq!(ItemLayout::of(&folder(&[("a", 0)])).unwrap().part_len(), 0);
    }

    #[test]
    fn a_files_pieces_are_at_their_offsets() {
        let pieces = vec![Sha1Digest([0; 20]); 2];
        let size = PIECE_SIZE as u64 + 7;
        let meta = FileMeta {
            name: "f".parse().unwrap(),
            size,
            digest: common::hash::file_digest(size, &pieces),
            pieces,
            tree: None,
        };
        let layout = ItemLayout::of(&meta).unwrap();
        let at = layout.locate(&meta, PieceIndex(1)).unwrap();
        assert_eq!((at.file, at.offset, at.len), (None, PIECE_SIZE as u64, 7));
        assert_eq!(layout.part_offset(PieceIndex(1)), at.offset);
        assert_eq!(layout.part_len(), size);
        assert_eq!(layout.locate(&meta, PieceIndex(2)), None);
    }
}

//! How a shared item's pieces map to bytes on disk (issue 23): one file's pieces, or a
//! folder's, where each file of the tree starts a new piece (`FolderLayout`). Pure.
//!
//! Invariant: a piece lies in exactly one file, at one offset; `locate` of a piece out of
//! range is `None` and its length 0.

use common::folder::{FolderLayout, RelPath, Selection, TreeError};
use common::message::FileMeta;
use common::piece::TooLarge;
use common::{Bitfield, Layout, PieceIndex, PIECE_SIZE};

/// What of an item this peer fetches and keeps (issue 23): all of it, or the part of a
/// folder a selective download chose, and the pieces that part is made of (the layout is
/// file-aligned, so a piece belongs to the part or not at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub selection: Selection,
    /// The pieces of the part chosen (every piece for `Selection::Whole`).
    pub wanted: Bitfield,
    /// The bytes of the files chosen.
    pub size: u64,
}

impl Chosen {
    /// All of `meta`, whose layout is `layout`.
    pub fn all(meta: &FileMeta, layout: &ItemLayout) -> Chosen {
        Chosen {
            selection: Selection::Whole,
            wanted: Bitfield::full(layout.n_pieces()),
            size: meta.size,
        }
    }

    /// The part of `meta` (a folder, unless the selection is `Whole`) that `selection`
    /// names; an error if the folder has no such file or directory.
    pub fn of(
        meta: &FileMeta,
        layout: &ItemLayout,
        selection: Selection,
    ) -> Result<Chosen, TreeError> {
        let (Some(tree), ItemLayout::Folder(folder), Selection::Inside { .. }) =
            (&meta.tree, layout, &selection)
        else {
            return match selection {
                Selection::Whole => Ok(Chosen::all(meta, layout)),
                Selection::Inside { path, .. } => Err(TreeError::NotInFolder(path.to_string())),
            };
        };
        let selected = tree.select(&selection)?;
        let mut wanted = Bitfield::empty(folder.n_pieces());
        for range in folder.pieces_of(&selected) {
            for piece in range {
                wanted.set(PieceIndex(piece));
            }
        }
        let size = selected.iter().filter_map(|&i| tree.entries().get(i)?.file_size()).sum();
        Ok(Chosen { selection, wanted, size })
    }

    /// Whether it is the whole item.
    pub fn is_whole(&self) -> bool {
        self.selection == Selection::Whole
    }

    /// How a user names it: `name` for a file, `name/`, `name/path` or `name/sub/` for a
    /// folder or a part of one.
    pub fn shown(&self, meta: &FileMeta) -> String {
        match meta.is_folder() {
            true => self.selection.shown(&meta.name),
            false => meta.name.to_string(),
        }
    }

    /// How many of the pieces in `have` are of the part chosen.
    pub fn count_in(&self, have: &Bitfield) -> u32 {
        have.iter().filter(|&piece| self.wanted.has(piece)).count() as u32
    }
}

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
    fn a_part_chosen_wants_exactly_its_files_pieces() {
        let p = PIECE_SIZE as u64;
        let meta = folder(&[("a", p + 1), ("d", u64::MAX), ("d/e", 0), ("d/f", 3), ("z", p)]);
        let layout = ItemLayout::of(&meta).unwrap();
        let pieces = |c: &Chosen| c.wanted.iter().map(|i| i.0).collect::<Vec<_>>();
        let all = Chosen::all(&meta, &layout);
        assert_eq!((pieces(&all), all.size, all.is_whole()), (vec![0, 1, 2, 3], 2 * p + 4, true));
        let inside =
            |path: &str, dir| Selection::Inside { path: RelPath::parse(path).unwrap(), dir };
        let d = Chosen::of(&meta, &layout, inside("d", true)).unwrap();
        assert_eq!((pieces(&d), d.size, d.shown(&meta)), (vec![2], 3, "f/d/".to_string()));
        let a = Chosen::of(&meta, &layout, inside("a", false)).unwrap();
        assert_eq!((pieces(&a), a.size, a.shown(&meta)), (vec![0, 1], p + 1, "f/a".to_string()));
        let mut have = Bitfield::empty(4);
        have.set(PieceIndex(1));
        have.set(PieceIndex(2));
        assert_eq!((a.count_in(&have), d.count_in(&have), all.count_in(&have)), (1, 1, 2));
        // An empty file: no piece to fetch, nothing to wait for.
        let e = Chosen::of(&meta, &layout, inside("d/e", false)).unwrap();
        assert_eq!((e.wanted.count(), e.size), (0, 0));
        assert!(Chosen::of(&meta, &layout, inside("d", false)).is_err());
        assert!(Chosen::of(&meta, &layout, inside("nope", true)).is_err());
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

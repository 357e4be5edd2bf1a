//! Folders (issue 23): a directory shared as one item, described by its `Tree` of paths.
//!
//! The pure core that sharing, downloading and serving a folder build on:
//! - `RelPath`, a path inside a folder: one to `MAX_DEPTH` components, each a valid
//!   `FileName` (so never empty, `.`, `..`, a separator, a control, invisible or
//!   bidirectional character, nor longer than 255 bytes), at most `MAX_PATH_LEN` bytes in
//!   all. `RelPath::under` joins it to a destination, which it can never leave.
//! - `Tree`, the folder's entries (files with their size and executable bit, and
//!   directories, empty ones included) in canonical order: sorted by path, each one's
//!   parent listed before it as a directory. A tree from the wire is only checked, never
//!   repaired, and bounded (`MAX_ENTRIES`, `MAX_TREE_BYTES`).
//! - `FolderLayout`, the folder's pieces: each file starts a new piece (as in BitTorrent
//!   v2), so a piece belongs to one file, a selective download fetches exactly the pieces
//!   of the chosen files, and a peer that holds some of the files serves whole pieces.
//! - `Selection`, what a `download_file <group> name/<path inside>[/]` asks for.
//! - `folder_digest`, the identity of a folder: its tree and its pieces' hashes.
//!
//! Invariant: every path of a `Tree` is a valid `RelPath`; the entries are strictly
//! increasing and every entry's parent is a directory entry of the tree; the pieces of a
//! `FolderLayout` are contiguous, one file after another in tree order, and cover every
//! byte of every file exactly once.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::hash::Sha1Digest;
use crate::id::{FileName, IdError};
use crate::piece::{Layout, PieceIndex, MAX_PIECES};

/// The most entries (files and directories) a folder holds.
pub const MAX_ENTRIES: usize = 100_000;
/// The deepest a path inside a folder goes, in components.
pub const MAX_DEPTH: usize = 32;
/// The longest path inside a folder, in bytes (`/` separators included; Linux's `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// The most bytes the paths of one folder's entries take in all, so that a folder's
/// metadata stays far below the frame limit beside its piece hashes.
pub const MAX_TREE_BYTES: usize = 4 * 1024 * 1024;

/// Why a path or a tree is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("empty path")]
    EmptyPath,
    #[error("path {0:?} is absolute; paths inside a folder are relative")]
    Absolute(String),
    #[error("path {0:?} has an empty component")]
    EmptyComponent(String),
    #[error("path {path:?}: {why}")]
    BadComponent { path: String, why: IdError },
    #[error("path {0:?} is nested deeper than {MAX_DEPTH} levels")]
    TooDeep(String),
    #[error("a path is longer than {MAX_PATH_LEN} bytes")]
    PathTooLong,
    #[error("the folder has {0} entries, more than the {MAX_ENTRIES} allowed")]
    TooManyEntries(usize),
    #[error("the folder's paths take more than {MAX_TREE_BYTES} bytes")]
    TooManyPathBytes,
    #[error("the folder's entries are out of order or repeated at {0}")]
    NotCanonical(RelPath),
    #[error("{0} is inside {1}, which is not a directory of the folder")]
    NoParent(RelPath, RelPath),
    #[error("the folder has more than {MAX_PIECES} pieces")]
    TooManyPieces,
    #[error("no {0} in the folder")]
    NotInFolder(String),
}

/// A path inside a folder, component by component.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<FileName>", into = "Vec<FileName>")]
pub struct RelPath(Vec<FileName>);

impl RelPath {
    /// Parses `text` typed by a user or read from a directory walk: components separated
    /// by `/`, each put in NFC and checked as a `FileName`.
    pub fn parse(text: &str) -> Result<RelPath, TreeError> {
        if text.is_empty() {
            return Err(TreeError::EmptyPath);
        }
        if text.starts_with('/') {
            return Err(TreeError::Absolute(text.to_string()));
        }
        let mut components = Vec::new();
        for part in text.split('/') {
            if part.is_empty() {
                return Err(TreeError::EmptyComponent(text.to_string()));
            }
            let name = FileName::new(part)
                .map_err(|why| TreeError::BadComponent { path: text.to_string(), why })?;
            components.push(name);
        }
        RelPath::try_from(components)
    }

    /// Its components, outermost first.
    pub fn components(&self) -> &[FileName] {
        &self.0
    }

    /// How many components it has (1 for an entry at the top of the folder).
    pub fn depth(&self) -> usize {
        self.0.len()
    }

    /// The directory it is in, or `None` at the top of the folder.
    pub fn parent(&self) -> Option<RelPath> {
        (self.0.len() > 1).then(|| RelPath(self.0[..self.0.len() - 1].to_vec()))
    }

    /// Whether it is `dir` or inside it.
    pub fn is_within(&self, dir: &RelPath) -> bool {
        self.0.starts_with(&dir.0)
    }

    /// This path under `root`: `root` joined with each component, so always inside `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        let mut path = root.to_path_buf();
        for component in &self.0 {
            path.push(component.as_str());
        }
        path
    }

    /// Its length as text, separators included.
    fn text_len(&self) -> usize {
        self.0.iter().map(|c| c.as_str().len()).sum::<usize>() + self.0.len().saturating_sub(1)
    }
}

/// From the wire or from a walk: checked, never changed.
impl TryFrom<Vec<FileName>> for RelPath {
    type Error = TreeError;
    fn try_from(components: Vec<FileName>) -> Result<RelPath, TreeError> {
        RelPath::checked(components).inspect_err(|e| crate::codec::note_refusal(e))
    }
}

impl RelPath {
    fn checked(components: Vec<FileName>) -> Result<RelPath, TreeError> {
        let path = RelPath(components);
        if path.0.is_empty() {
            return Err(TreeError::EmptyPath);
        }
        if path.0.len() > MAX_DEPTH {
            return Err(TreeError::TooDeep(path.to_string()));
        }
        if path.text_len() > MAX_PATH_LEN {
            return Err(TreeError::PathTooLong);
        }
        Ok(path)
    }
}

impl From<RelPath> for Vec<FileName> {
    fn from(path: RelPath) -> Vec<FileName> {
        path.0
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, component) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            f.write_str(component.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// What an entry of a folder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A directory (its contents are entries of their own).
    Dir,
    /// A regular file of `size` bytes, with its owner's executable bit.
    File { size: u64, executable: bool },
}

/// One file or directory of a folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: RelPath,
    pub kind: EntryKind,
}

impl Entry {
    /// The file's size, or `None` for a directory.
    pub fn file_size(&self) -> Option<u64> {
        match self.kind {
            EntryKind::File { size, .. } => Some(size),
            EntryKind::Dir => None,
        }
    }
}

/// A folder's entries in canonical order (see the module's invariant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Entry>", into = "Vec<Entry>")]
pub struct Tree {
    entries: Vec<Entry>,
}

impl Tree {
    /// The tree of `entries` in any order, as a directory walk finds them: sorted, then
    /// checked.
    pub fn new(mut entries: Vec<Entry>) -> Result<Tree, TreeError> {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Tree::try_from(entries)
    }

    /// Every entry, in canonical order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The number of regular files.
    pub fn file_count(&self) -> usize {
        self.entries.iter().filter(|e| e.file_size().is_some()).count()
    }

    /// The bytes of all its files.
    pub fn total_size(&self) -> u64 {
        self.entries.iter().filter_map(Entry::file_size).sum()
    }

    /// About the bytes it takes to keep (for quotas): every path, and a kind and a size
    /// per entry.
    pub fn metadata_len(&self) -> u64 {
        self.entries.iter().map(|e| e.path.text_len() as u64 + 9).sum()
    }

    /// The index of the entry at `path`, if there is one.
    pub fn find(&self, path: &RelPath) -> Option<usize> {
        self.entries.binary_search_by(|e| e.path.cmp(path)).ok()
    }

    /// The entries `selection` takes, by index: all of them, one file, or a directory
    /// with everything inside it.
    pub fn select(&self, selection: &Selection) -> Result<Vec<usize>, TreeError> {
        let Selection::Inside { path, dir } = selection else {
            return Ok((0..self.entries.len()).collect());
        };
        let found = self.find(path).map(|i| (i, &self.entries[i].kind));
        match (found, dir) {
            (Some((i, EntryKind::File { .. })), false) => Ok(vec![i]),
            (Some((i, EntryKind::Dir)), true) => {
                // Sorted: everything inside `path` follows it, together.
                let inside = self.entries[i..].iter().take_while(|e| e.path.is_within(path));
                Ok((i..i + inside.count()).collect())
            }
            (Some((_, EntryKind::Dir)), false) => {
                Err(TreeError::NotInFolder(format!("file {path} ({path}/ is a directory)")))
            }
            (Some((_, EntryKind::File { .. })), true) => {
                Err(TreeError::NotInFolder(format!("directory {path}/ ({path} is a file)")))
            }
            (None, _) => Err(TreeError::NotInFolder(path.to_string())),
        }
    }
}

/// From the wire: checked as it is (never sorted, so a tree has one encoding).
impl TryFrom<Vec<Entry>> for Tree {
    type Error = TreeError;
    fn try_from(entries: Vec<Entry>) -> Result<Tree, TreeError> {
        Tree::checked(entries).inspect_err(|e| crate::codec::note_refusal(e))
    }
}

impl Tree {
    fn checked(entries: Vec<Entry>) -> Result<Tree, TreeError> {
        if entries.len() > MAX_ENTRIES {
            return Err(TreeError::TooManyEntries(entries.len()));
        }
        let path_bytes: usize = entries.iter().map(|e| e.path.text_len()).sum();
        if path_bytes > MAX_TREE_BYTES {
            return Err(TreeError::TooManyPathBytes);
        }
        let mut dirs: BTreeSet<&RelPath> = BTreeSet::new();
        for (i, entry) in entries.iter().enumerate() {
            if i > 0 && entries[i - 1].path >= entry.path {
                return Err(TreeError::NotCanonical(entry.path.clone()));
            }
            if let Some(parent) = entry.path.parent() {
                if !dirs.contains(&parent) {
                    return Err(TreeError::NoParent(entry.path.clone(), parent));
                }
            }
            if entry.kind == EntryKind::Dir {
                dirs.insert(&entry.path);
            }
        }
        let tree = Tree { entries };
        FolderLayout::new(&tree)?;
        Ok(tree)
    }
}

impl From<Tree> for Vec<Entry> {
    fn from(tree: Tree) -> Vec<Entry> {
        tree.entries
    }
}

/// Where one file's pieces are among the folder's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpan {
    /// Its index among the tree's entries.
    pub entry: usize,
    /// The folder's piece its first piece is.
    pub first_piece: u32,
    /// How the file splits into pieces.
    pub layout: Layout,
}

impl FileSpan {
    /// Its pieces, as indexes among the folder's.
    pub fn pieces(&self) -> Range<u32> {
        self.first_piece..self.first_piece + self.layout.n_pieces()
    }
}

/// How a folder splits into pieces: each file's own pieces, one file after another in the
/// tree's order (empty files and directories have none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderLayout {
    /// Every file of the tree, in its order.
    files: Vec<FileSpan>,
    n_pieces: u32,
}

impl FolderLayout {
    /// The pieces of `tree`'s files, if there are at most `MAX_PIECES`.
    pub fn new(tree: &Tree) -> Result<FolderLayout, TreeError> {
        let mut files = Vec::new();
        let mut next: u64 = 0;
        for (entry, e) in tree.entries.iter().enumerate() {
            let Some(size) = e.file_size() else { continue };
            let layout = Layout::new(size).map_err(|_| TreeError::TooManyPieces)?;
            let first_piece = u32::try_from(next).map_err(|_| TreeError::TooManyPieces)?;
            next += u64::from(layout.n_pieces());
            if next > MAX_PIECES {
                return Err(TreeError::TooManyPieces);
            }
            files.push(FileSpan { entry, first_piece, layout });
        }
        // At most MAX_PIECES, which fits a u32.
        Ok(FolderLayout { files, n_pieces: next as u32 })
    }

    /// The folder's pieces in all.
    pub fn n_pieces(&self) -> u32 {
        self.n_pieces
    }

    /// Every file, in the tree's order.
    pub fn files(&self) -> &[FileSpan] {
        &self.files
    }

    /// The file that folder piece `piece` belongs to, and its index within that file.
    pub fn locate(&self, piece: PieceIndex) -> Option<(&FileSpan, PieceIndex)> {
        if piece.0 >= self.n_pieces {
            return None;
        }
        // The last file starting at or before `piece` that has pieces holds it.
        let at = self.files.partition_point(|f| f.first_piece <= piece.0);
        let span = self.files[..at].iter().rev().find(|f| f.layout.n_pieces() > 0)?;
        Some((span, PieceIndex(piece.0 - span.first_piece)))
    }

    /// The length of folder piece `piece` (0 out of range).
    pub fn piece_len(&self, piece: PieceIndex) -> usize {
        self.locate(piece).map_or(0, |(span, inner)| span.layout.piece_len(inner))
    }

    /// The folder pieces of the entries `selected` (indexes into the tree, as
    /// `Tree::select` gives them), in order.
    pub fn pieces_of(&self, selected: &[usize]) -> Vec<Range<u32>> {
        let selected: BTreeSet<usize> = selected.iter().copied().collect();
        self.files
            .iter()
            .filter(|f| selected.contains(&f.entry) && f.layout.n_pieces() > 0)
            .map(FileSpan::pieces)
            .collect()
    }
}

/// What part of a folder a download asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Selection {
    /// All of it (`name/`).
    Whole,
    /// One file (`name/path`) or one directory with all it holds (`name/path/`).
    Inside { path: RelPath, dir: bool },
}

impl Selection {
    /// How a user names it: `name/`, `name/path/in/it` or `name/sub/`.
    pub fn shown(&self, name: &FileName) -> String {
        match self {
            Selection::Whole => format!("{name}/"),
            Selection::Inside { path, dir: false } => format!("{name}/{path}"),
            Selection::Inside { path, dir: true } => format!("{name}/{path}/"),
        }
    }

    /// The name its download takes on disk: the folder's own (`name/`), or the last
    /// component of the file or subfolder chosen (`album/2024/a.jpg` lands as `a.jpg`,
    /// `album/2024/` as `2024/`).
    pub fn base_name<'a>(&'a self, name: &'a FileName) -> &'a FileName {
        match self {
            Selection::Whole => name,
            // A `RelPath` has at least one component.
            Selection::Inside { path, .. } => path.0.last().unwrap_or(name),
        }
    }

    /// Whether the folder's entry `entry` is part of it.
    pub fn takes(&self, entry: &RelPath) -> bool {
        match self {
            Selection::Whole => true,
            Selection::Inside { path, dir: false } => entry == path,
            Selection::Inside { path, dir: true } => entry.is_within(path),
        }
    }

    /// Where the folder's entry `entry` lies once this selection is on disk at `root`
    /// (the folder's root for `Whole`; the chosen file itself, or the chosen directory):
    /// `None` for an entry outside the selection. Always `root` or inside it.
    pub fn local_path(&self, entry: &RelPath, root: &Path) -> Option<PathBuf> {
        match self {
            Selection::Whole => Some(entry.under(root)),
            Selection::Inside { path, dir: false } => (entry == path).then(|| root.to_path_buf()),
            Selection::Inside { path, dir: true } => {
                let rest = entry.0.strip_prefix(path.0.as_slice())?;
                let mut local = root.to_path_buf();
                for component in rest {
                    local.push(component.as_str());
                }
                Some(local)
            }
        }
    }
}

/// What `download_file`'s file argument names: a file shared on its own (`name`), or a
/// folder or a part of one (`name/`, `name/path`, `name/path/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemRef {
    File(FileName),
    Folder { name: FileName, selection: Selection },
}

impl ItemRef {
    /// Parses a user's `name`, `name/`, `name/path/in/it` or `name/sub/dir/`.
    pub fn parse(text: &str) -> Result<ItemRef, TreeError> {
        let Some((name, rest)) = text.split_once('/') else {
            let name = FileName::new(text)
                .map_err(|why| TreeError::BadComponent { path: text.to_string(), why })?;
            return Ok(ItemRef::File(name));
        };
        if name.is_empty() {
            return Err(TreeError::Absolute(text.to_string()));
        }
        let name = FileName::new(name)
            .map_err(|why| TreeError::BadComponent { path: text.to_string(), why })?;
        if rest.is_empty() {
            return Ok(ItemRef::Folder { name, selection: Selection::Whole });
        }
        let (inside, dir) = match rest.strip_suffix('/') {
            Some(inside) => (inside, true),
            None => (rest, false),
        };
        let path = RelPath::parse(inside).map_err(|e| match e {
            TreeError::Absolute(_) | TreeError::EmptyComponent(_) | TreeError::EmptyPath => {
                TreeError::EmptyComponent(text.to_string())
            }
            other => other,
        })?;
        Ok(ItemRef::Folder { name, selection: Selection::Inside { path, dir } })
    }
}

/// The digest that names a folder: SHA1 over a versioned encoding of its tree (each
/// entry's path, kind, executable bit and size) and then of its pieces' hashes. Two
/// folders with the same digest have the same paths and the same bytes.
pub fn folder_digest(tree: &Tree, pieces: &[Sha1Digest]) -> Sha1Digest {
    let mut hasher = Sha1::new();
    hasher.update(b"p2p-groups folder 1\0");
    hasher.update((tree.entries.len() as u64).to_be_bytes());
    for entry in &tree.entries {
        hasher.update(entry.path.to_string().as_bytes());
        hasher.update([0]);
        let (kind, size) = match entry.kind {
            EntryKind::Dir => (0u8, 0),
            EntryKind::File { size, executable: false } => (1, size),
            EntryKind::File { size, executable: true } => (2, size),
        };
        hasher.update([kind]);
        hasher.update(size.to_be_bytes());
    }
    for piece in pieces {
        hasher.update(piece.0);
    }
    Sha1Digest(hasher.finalize().into())
}

#[cfg(test)]
mod tests;

//! Reads a local directory as a folder to share (issue 23): its `Tree` and its pieces'
//! hashes.
//!
//! The walk (`walkdir`) never follows a symbolic link: links are skipped and listed, as
//! are FIFOs, sockets and devices, so the caller can say so. Every regular file and
//! directory is an entry, empty ones included, with the owner's executable bit. Names are
//! taken as a user's typed text (`RelPath::parse`: put in NFC, checked): a name that is not
//! UTF-8 or that no peer could hold stops the scan with the path to rename.
//!
//! Hashing runs on the rayon pool across files and, within a large file, across its
//! pieces (`hash::piece_hashes`, as for a file shared on its own).

use std::fs::File;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use common::folder::{folder_digest, Entry, EntryKind, FolderLayout, RelPath, Tree, TreeError};
use common::hash::{piece_hashes, HashFileError};
use common::Sha1Digest;

use crate::swarm::FileStamp;

/// A directory read as a folder.
#[derive(Debug)]
pub struct Scanned {
    /// The directory.
    pub root: PathBuf,
    pub tree: Tree,
    /// Where each file of `FolderLayout::new(&tree).files()` is on disk, in that order.
    pub files: Vec<PathBuf>,
    /// What was left out: symbolic links, FIFOs, sockets and devices.
    pub skipped: Vec<Skipped>,
}

/// An entry of the directory that is not shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its path inside the folder, as found.
    pub path: PathBuf,
    pub why: SkipReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    SymbolicLink,
    NotRegular,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self.why {
            SkipReason::SymbolicLink => "a symbolic link (links are not followed)",
            SkipReason::NotRegular => "not a regular file or directory",
        };
        write!(f, "skipped {}: {why}", self.path.display())
    }
}

/// Why a directory cannot be shared as a folder.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is not valid UTF-8; rename it to share the folder", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("{}: {why}; rename it to share the folder", path.display())]
    BadName { path: PathBuf, why: TreeError },
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("{} changed while it was hashed", path.display())]
    Changed { path: PathBuf },
}

/// Reads the directory `root` (its tree, not its contents yet).
pub fn scan(root: &Path) -> Result<Scanned, ScanError> {
    let mut entries = Vec::new();
    let mut locals = Vec::new();
    let mut skipped = Vec::new();
    let walk = walkdir::WalkDir::new(root).min_depth(1).follow_links(false).sort_by_file_name();
    for item in walk {
        let item = item.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            ScanError::Io { path, source: e.into() }
        })?;
        let inside = item.path().strip_prefix(root).unwrap_or(item.path()).to_path_buf();
        let kind = item.file_type();
        if kind.is_symlink() || !(kind.is_dir() || kind.is_file()) {
            let why = match kind.is_symlink() {
                true => SkipReason::SymbolicLink,
                false => SkipReason::NotRegular,
            };
            skipped.push(Skipped { path: inside, why });
            continue;
        }
        let text = inside.to_str().ok_or_else(|| ScanError::NotUtf8 { path: inside.clone() })?;
        let path =
            RelPath::parse(text).map_err(|why| ScanError::BadName { path: inside.clone(), why })?;
        let kind = match kind.is_dir() {
            true => EntryKind::Dir,
            false => {
                let meta = item.metadata().map_err(|e| ScanError::Io {
                    path: item.path().to_path_buf(),
                    source: e.into(),
                })?;
                let executable = meta.permissions().mode() & 0o100 != 0;
                EntryKind::File { size: meta.len(), executable }
            }
        };
        locals.push((path.clone(), item.path().to_path_buf()));
        entries.push(Entry { path, kind });
    }
    let tree = Tree::new(entries)?;
    // In the layout's order: the tree's, files only.
    locals.sort_by(|a, b| a.0.cmp(&b.0));
    let files = locals
        .into_iter()
        .zip(tree.entries())
        .filter(|(_, entry)| entry.file_size().is_some())
        .map(|((_, local), _)| local)
        .collect();
    Ok(Scanned { root: root.to_path_buf(), tree, files, skipped })
}

/// A folder's piece hashes and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderHashes {
    pub pieces: Vec<Sha1Digest>,
    pub digest: Sha1Digest,
    /// Each file's stamp from before it was hashed, by its index among the tree's
    /// entries: the seeder serves its pieces without hashing them again while the file
    /// keeps it (`Stamped::Folder`).
    pub stamps: Vec<(usize, FileStamp)>,
}

/// Hashes every piece of `scanned`'s files, in parallel.
pub fn hash(scanned: &Scanned) -> Result<FolderHashes, ScanError> {
    let layout = FolderLayout::new(&scanned.tree)?;
    let per_file: Vec<(Vec<Sha1Digest>, (usize, FileStamp))> = layout
        .files()
        .par_iter()
        .zip(scanned.files.par_iter())
        .map(|(span, local)| {
            let io_error = |source| ScanError::Io { path: local.clone(), source };
            let file = File::open(local).map_err(io_error)?;
            let stamp = FileStamp::of(&file).map_err(io_error)?;
            if stamp.size() != span.layout.file_len() {
                return Err(ScanError::Changed { path: local.clone() });
            }
            let hashes = piece_hashes(&file, span.layout).map_err(|e| match e {
                HashFileError::Io(source) => ScanError::Io { path: local.clone(), source },
                HashFileError::Changed | HashFileError::TooLarge(_) => {
                    ScanError::Changed { path: local.clone() }
                }
            })?;
            Ok((hashes, (span.entry, stamp)))
        })
        .collect::<Result<_, ScanError>>()?;
    let (per_file, stamps): (Vec<Vec<Sha1Digest>>, Vec<(usize, FileStamp)>) =
        per_file.into_iter().unzip();
    let pieces: Vec<Sha1Digest> = per_file.into_iter().flatten().collect();
    let digest = folder_digest(&scanned.tree, &pieces);
    Ok(FolderHashes { pieces, digest, stamps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::PIECE_SIZE;
    use std::os::unix::fs::symlink;

    fn write(path: &Path, len: usize, seed: u8) -> Vec<u8> {
        let data: Vec<u8> =
            (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        std::fs::write(path, &data).unwrap();
        data
    }

    #[test]
    fn a_directory_becomes_a_tree_with_empties_and_executables_and_no_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("album");
        std::fs::create_dir_all(root.join("2019/empty")).unwrap();
        let a = write(&root.join("2019/a b.jpg"), PIECE_SIZE + 3, 1);
        let run = write(&root.join("run.sh"), 10, 2);
        std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(root.join("zero"), b"").unwrap();
        symlink("/etc/passwd", root.join("out")).unwrap();
        symlink("run.sh", root.join("2019/in")).unwrap();
        let scanned = scan(&root).unwrap();
        let listed: Vec<(String, EntryKind)> =
            scanned.tree.entries().iter().map(|e| (e.path.to_string(), e.kind)).collect();
        let file = |size, executable| EntryKind::File { size, executable };
        assert_eq!(
            listed,
            [
                ("2019".to_string(), EntryKind::Dir),
                ("2019/a b.jpg".to_string(), file(PIECE_SIZE as u64 + 3, false)),
                ("2019/empty".to_string(), EntryKind::Dir),
                ("run.sh".to_string(), file(10, true)),
                ("zero".to_string(), file(0, false)),
            ]
        );
        let skipped: Vec<String> = scanned.skipped.iter().map(ToString::to_string).collect();
        assert_eq!(
            skipped,
            [
                "skipped 2019/in: a symbolic link (links are not followed)",
                "skipped out: a symbolic link (links are not followed)"
            ]
        );
        assert_eq!(
            scanned.files,
            [root.join("2019/a b.jpg"), root.join("run.sh"), root.join("zero")]
        );
        let hashes = hash(&scanned).unwrap();
        let expected = vec![
            Sha1Digest::of(&a[..PIECE_SIZE]),
            Sha1Digest::of(&a[PIECE_SIZE..]),
            Sha1Digest::of(&run),
        ];
        assert_eq!(hashes.pieces, expected);
        assert_eq!(hashes.digest, folder_digest(&scanned.tree, &expected));
    }

    #[test]
    fn names_no_peer_could_hold_stop_the_scan_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tab\there"), b"x").unwrap();
        let e = scan(dir.path()).unwrap_err().to_string();
        assert!(e.starts_with("tab\there: "), "{e}");
        assert!(e.ends_with("rename it to share the folder"), "{e}");
    }

    #[test]
    fn a_file_that_shrinks_before_hashing_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("f"), 100, 0);
        let scanned = scan(dir.path()).unwrap();
        write(&dir.path().join("f"), 50, 0);
        assert!(matches!(hash(&scanned), Err(ScanError::Changed { .. })));
    }
}

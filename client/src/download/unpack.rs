//! The last step of a folder's download (issue 23): its verified pieces, stored end to end
//! in the `.part` file, become the folder's tree of files and directories, first in a
//! staging directory beside the destination (`.<name>.part`), then renamed into place.
//!
//! Invariant: every path written is a `RelPath` of the tree joined with `RelPath::under`
//! to the staging directory this function created itself, so nothing is written outside
//! it; files are created exclusively and never through a link.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use common::folder::{EntryKind, FolderLayout, Tree};
use common::{PieceIndex, PIECE_SIZE};

use super::part_file::{rename_no_replace, sync_parent};
use crate::swarm::item_layout::part_offset;
use crate::swarm::DownloadError;

/// The staging directory of a folder downloaded to `dest`: `.<name>.part` beside it.
pub fn staging_path(dest: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(dest.file_name().unwrap_or_default());
    name.push(".part");
    dest.with_file_name(name)
}

/// Writes `tree`'s directories and files, their bytes read from `part` (the pieces end to
/// end, as `ItemLayout::part_offset` places them), under a fresh staging directory, syncs
/// them, and renames the staging directory to `dest`, which it never replaces. On failure
/// the staging directory is removed, except when only the final rename failed (the
/// verified folder then stays there, and the error says where).
pub fn unpack(
    part: &File,
    tree: &Tree,
    layout: &FolderLayout,
    dest: &Path,
) -> Result<(), DownloadError> {
    let staging = staging_path(dest);
    let shown = |p: &Path| p.display().to_string();
    DirBuilder::new().mode(0o700).create(&staging).map_err(|e| DownloadError::Write {
        piece: 0,
        path: shown(&staging),
        reason: match e.kind() {
            ErrorKind::AlreadyExists => "it already exists; remove it and download again".into(),
            _ => e.to_string(),
        },
    })?;
    if let Err(e) = write_tree(part, tree, layout, &staging) {
        if let Err(rm) = std::fs::remove_dir_all(&staging) {
            log::warn!("cannot remove {}: {rm}", staging.display());
        }
        return Err(e);
    }
    if let Err(e) = rename_no_replace(&staging, dest) {
        return Err(match e.kind() {
            ErrorKind::AlreadyExists => {
                DownloadError::DestinationAppeared { dest: shown(dest), part: shown(&staging) }
            }
            _ => DownloadError::Rename { reason: e.to_string(), part: shown(&staging) },
        });
    }
    sync_parent(dest);
    Ok(())
}

/// Creates every entry of `tree` under `root` (which exists and is empty).
fn write_tree(
    part: &File,
    tree: &Tree,
    layout: &FolderLayout,
    root: &Path,
) -> Result<(), DownloadError> {
    let mut spans = layout.files().iter().peekable();
    let mut buf = vec![0u8; PIECE_SIZE];
    let mut dirs = vec![root.to_path_buf()];
    for (i, entry) in tree.entries().iter().enumerate() {
        let path = entry.path.under(root);
        let failed = |piece: u32, e: std::io::Error| DownloadError::Write {
            piece,
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let EntryKind::File { size, executable } = entry.kind else {
            DirBuilder::new().mode(0o700).create(&path).map_err(|e| failed(0, e))?;
            dirs.push(path);
            continue;
        };
        let mode = if executable { 0o700 } else { 0o600 };
        let out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| failed(0, e))?;
        // The tree's files are the layout's, in the same order.
        let span = spans.next_if(|s| s.entry == i);
        if let Some(span) = span {
            for inner in span.layout.pieces() {
                let piece = PieceIndex(span.first_piece + inner.0);
                let len = span.layout.piece_len(inner);
                let data = &mut buf[..len];
                part.read_exact_at(data, part_offset(piece)).map_err(|e| failed(piece.0, e))?;
                out.write_all_at(data, span.layout.piece_offset(inner))
                    .map_err(|e| failed(piece.0, e))?;
            }
        }
        out.set_len(size).map_err(|e| failed(0, e))?;
        out.sync_all().map_err(|e| failed(0, e))?;
    }
    for dir in dirs.iter().rev() {
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            log::debug!("cannot sync {}: {e}", dir.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::folder::{Entry, RelPath};
    use std::os::unix::fs::PermissionsExt;

    fn tree() -> Tree {
        let entry = |p: &str, kind| Entry { path: RelPath::parse(p).unwrap(), kind };
        Tree::new(vec![
            entry("a", EntryKind::File { size: PIECE_SIZE as u64 + 2, executable: false }),
            entry("e", EntryKind::Dir),
            entry("s", EntryKind::Dir),
            entry("s/x", EntryKind::File { size: 0, executable: true }),
            entry("s/y", EntryKind::File { size: 3, executable: true }),
        ])
        .unwrap()
    }

    /// The pieces of `tree()` end to end, as a download stores them.
    fn part(dir: &Path) -> File {
        let path = dir.join("f.part");
        let mut bytes = vec![7u8; PIECE_SIZE];
        bytes.extend([8, 9]);
        bytes.resize(2 * PIECE_SIZE, 0);
        bytes.extend(b"yyy");
        std::fs::write(&path, bytes).unwrap();
        File::open(path).unwrap()
    }

    #[test]
    fn the_tree_is_written_from_its_pieces_and_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let tree = tree();
        let layout = FolderLayout::new(&tree).unwrap();
        let dest = dir.path().join("f");
        unpack(&part(dir.path()), &tree, &layout, &dest).unwrap();
        let a = std::fs::read(dest.join("a")).unwrap();
        assert_eq!((a.len(), &a[PIECE_SIZE - 1..]), (PIECE_SIZE + 2, &[7, 8, 9][..]));
        assert_eq!(std::fs::read(dest.join("s/y")).unwrap(), b"yyy");
        assert_eq!(std::fs::read(dest.join("s/x")).unwrap(), b"");
        assert!(dest.join("e").is_dir());
        let mode = |p: &str| std::fs::metadata(dest.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode("a"), mode("s/x"), mode("s/y")), (0o600, 0o700, 0o700));
        assert!(!staging_path(&dest).exists());
    }

    #[test]
    fn a_destination_that_appeared_is_not_replaced_and_a_staging_directory_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let tree = tree();
        let layout = FolderLayout::new(&tree).unwrap();
        let dest = dir.path().join("f");
        std::fs::create_dir(&dest).unwrap();
        let err = unpack(&part(dir.path()), &tree, &layout, &dest).unwrap_err();
        assert!(matches!(err, DownloadError::DestinationAppeared { .. }), "{err}");
        // The verified folder waits in the staging directory; the destination is untouched.
        assert_eq!(std::fs::read(staging_path(&dest).join("s/y")).unwrap(), b"yyy");
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
        // Another attempt does not write into a staging directory it did not create.
        std::fs::remove_dir(&dest).unwrap();
        let err = unpack(&part(dir.path()), &tree, &layout, &dest).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert!(!dest.exists());
    }

    #[test]
    fn a_short_part_fails_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let tree = tree();
        let layout = FolderLayout::new(&tree).unwrap();
        let dest = dir.path().join("f");
        let short = dir.path().join("short.part");
        std::fs::write(&short, [1u8; 10]).unwrap();
        let err = unpack(&File::open(short).unwrap(), &tree, &layout, &dest).unwrap_err();
        assert!(matches!(err, DownloadError::Write { .. }), "{err}");
        assert!(!dest.exists() && !staging_path(&dest).exists());
    }
}

//! The last step of a folder's download (issue 23): its verified pieces, stored end to end
//! in the `.part` file, become the folder's tree of files and directories (or the part of
//! it a selective download chose: a directory, or one file), first at a staging path
//! beside the destination (`.<name>.part`), then renamed into place.
//!
//! Invariant: every path written is a `RelPath` of the tree joined with `RelPath::under`
//! to the staging directory this function created itself, so nothing is written outside
//! it; files are created exclusively and never through a link.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use common::folder::{EntryKind, FolderLayout, Selection, Tree};
use common::{PieceIndex, PIECE_SIZE};

use super::part_file::{rename_no_replace, sync_parent};
use crate::swarm::item_layout::part_offset;
use crate::swarm::DownloadError;

/// The most staging names an unpack tries (`.<name>.part`, then `.<name>.1.part`, ...)
/// when the ones before are taken: left by an earlier attempt that a kill or a failed
/// rename interrupted, or made by someone else; never reused, never removed.
const MAX_STAGING_NAMES: u32 = 16;

/// The staging directory (or file) of a folder, or part of one, downloaded to `dest`:
/// `.<name>.part` beside it.
pub fn staging_path(dest: &Path) -> PathBuf {
    staging_path_n(dest, 0)
}

/// The `n`th staging name for `dest`: `.<name>.part`, then `.<name>.<n>.part`.
fn staging_path_n(dest: &Path, n: u32) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(dest.file_name().unwrap_or_default());
    if n > 0 {
        name.push(format!(".{n}"));
    }
    name.push(".part");
    dest.with_file_name(name)
}

/// Writes the part `selection` of `tree` (all of it, a directory of it, or one file),
/// its bytes read from `part` (the pieces end to end, as `ItemLayout::part_offset` places
/// them), at a fresh staging path beside `dest` (a directory, or a file for one file),
/// syncs it, and renames it to `dest`, which it never replaces. On failure the staging
/// path is removed, except when only the final rename failed (the verified folder or file
/// then stays there, and the error says where).
pub fn unpack(
    part: &File,
    tree: &Tree,
    layout: &FolderLayout,
    selection: &Selection,
    dest: &Path,
) -> Result<(), DownloadError> {
    let shown = |p: &Path| p.display().to_string();
    let written = match selection {
        Selection::Inside { path, dir: false } => {
            let i = tree.find(path).ok_or_else(|| DownloadError::Write {
                piece: 0,
                path: shown(&staging_path(dest)),
                reason: format!("no {path} in the folder"),
            })?;
            let kind = &tree.entries()[i].kind;
            let (staging, out) = create_staging(dest, |path| create_file(path, kind))?;
            let written = write_file(part, &out, tree, layout, i, &staging);
            if written.is_err() {
                if let Err(rm) = std::fs::remove_file(&staging) {
                    log::warn!("cannot remove {}: {rm}", staging.display());
                }
            }
            written.map(|()| staging)
        }
        _ => {
            let (staging, ()) =
                create_staging(dest, |path| DirBuilder::new().mode(0o700).create(path))?;
            let written = write_tree(part, tree, layout, selection, &staging);
            if written.is_err() {
                if let Err(rm) = std::fs::remove_dir_all(&staging) {
                    log::warn!("cannot remove {}: {rm}", staging.display());
                }
            }
            written.map(|()| staging)
        }
    };
    let staging = written?;
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

/// Makes the staging path for `dest` with `create` (which fails if the path exists): the
/// first of its names that is free. Those taken are left as they are (an earlier attempt
/// cut short by a kill leaves one: issue 23's crash windows), and the log says so.
fn create_staging<T>(
    dest: &Path,
    create: impl Fn(&Path) -> std::io::Result<T>,
) -> Result<(PathBuf, T), DownloadError> {
    for n in 0..MAX_STAGING_NAMES {
        let staging = staging_path_n(dest, n);
        match create(&staging) {
            Ok(made) => return Ok((staging, made)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                log::warn!("{} already exists; leaving it as it is", staging.display())
            }
            Err(e) => {
                let path = staging.display().to_string();
                return Err(DownloadError::Write { piece: 0, path, reason: e.to_string() });
            }
        }
    }
    Err(DownloadError::Write {
        piece: 0,
        path: staging_path(dest).display().to_string(),
        reason: format!(
            "it and the next {} staging names beside it already exist; remove them and download again",
            MAX_STAGING_NAMES - 1
        ),
    })
}

/// Creates the file of an entry of kind `kind` at `path`, exclusively and never through a
/// link: 0600, or 0700 when executable.
fn create_file(path: &Path, kind: &EntryKind) -> std::io::Result<File> {
    let mode = match kind {
        EntryKind::File { executable: true, .. } => 0o700,
        _ => 0o600,
    };
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Creates the entries of `tree` that `selection` takes under `root` (which exists and is
/// empty; the directory chosen is `root` itself).
fn write_tree(
    part: &File,
    tree: &Tree,
    layout: &FolderLayout,
    selection: &Selection,
    root: &Path,
) -> Result<(), DownloadError> {
    let mut dirs = vec![root.to_path_buf()];
    for (i, entry) in tree.entries().iter().enumerate() {
        let Some(path) = selection.local_path(&entry.path, root) else { continue };
        if path == root {
            continue;
        }
        let failed = |e: std::io::Error| DownloadError::Write {
            piece: 0,
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if entry.kind == EntryKind::Dir {
            DirBuilder::new().mode(0o700).create(&path).map_err(failed)?;
            dirs.push(path);
            continue;
        }
        let out = create_file(&path, &entry.kind).map_err(failed)?;
        write_file(part, &out, tree, layout, i, &path)?;
    }
    for dir in dirs.iter().rev() {
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            log::debug!("cannot sync {}: {e}", dir.display());
        }
    }
    Ok(())
}

/// Writes the bytes of the tree's file `entry` from its pieces in `part` to `out` (at
/// `path`), and syncs it.
fn write_file(
    part: &File,
    out: &File,
    tree: &Tree,
    layout: &FolderLayout,
    entry: usize,
    path: &Path,
) -> Result<(), DownloadError> {
    let failed = |piece: u32, e: std::io::Error| DownloadError::Write {
        piece,
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let size = tree.entries().get(entry).and_then(|e| e.file_size()).unwrap_or(0);
    // The layout's files are the tree's, in the same order.
    let at = layout.files().partition_point(|s| s.entry < entry);
    if let Some(span) = layout.files().get(at).filter(|s| s.entry == entry) {
        let mut buf = vec![0u8; usize::try_from(size).map_or(PIECE_SIZE, |s| s.min(PIECE_SIZE))];
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
    out.sync_all().map_err(|e| failed(0, e))
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
        unpack(&part(dir.path()), &tree, &layout, &Selection::Whole, &dest).unwrap();
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
        let err = unpack(&part(dir.path()), &tree, &layout, &Selection::Whole, &dest).unwrap_err();
        assert!(matches!(err, DownloadError::DestinationAppeared { .. }), "{err}");
        // The verified folder waits in the staging directory; the destination is untouched.
        assert_eq!(std::fs::read(staging_path(&dest).join("s/y")).unwrap(), b"yyy");
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
        // Another attempt (after a kill, or once the destination is free again) does not
        // write into a staging directory it did not create, nor remove it: it takes the
        // next name.
        std::fs::remove_dir(&dest).unwrap();
        std::fs::write(staging_path(&dest).join("s/y"), b"theirs").unwrap();
        unpack(&part(dir.path()), &tree, &layout, &Selection::Whole, &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("s/y")).unwrap(), b"yyy");
        assert_eq!(std::fs::read(staging_path(&dest).join("s/y")).unwrap(), b"theirs");
        assert!(!dir.path().join(".f.1.part").exists());
        // With every name taken, it fails and says so.
        std::fs::remove_dir_all(&dest).unwrap();
        for n in 1..MAX_STAGING_NAMES {
            std::fs::write(staging_path_n(&dest, n), b"").unwrap();
        }
        let err = unpack(&part(dir.path()), &tree, &layout, &Selection::Whole, &dest).unwrap_err();
        assert!(err.to_string().contains("and the next 15 staging names beside it already exist"));
        assert!(!dest.exists());
        // One file chosen takes the next free name too.
        let one = Selection::Inside { path: RelPath::parse("s/y").unwrap(), dir: false };
        let y = dir.path().join("y");
        std::fs::write(staging_path(&y), b"left").unwrap();
        unpack(&part(dir.path()), &tree, &layout, &one, &y).unwrap();
        assert_eq!(std::fs::read(&y).unwrap(), b"yyy");
        assert_eq!(std::fs::read(staging_path(&y)).unwrap(), b"left");
    }

    /// Issue 23: a subfolder lands under its own name, and one file as that file alone.
    #[test]
    fn a_part_chosen_is_written_under_its_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let tree = tree();
        let layout = FolderLayout::new(&tree).unwrap();
        let sub = Selection::Inside { path: RelPath::parse("s").unwrap(), dir: true };
        let dest = dir.path().join("s");
        unpack(&part(dir.path()), &tree, &layout, &sub, &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("y")).unwrap(), b"yyy");
        assert_eq!(std::fs::read(dest.join("x")).unwrap(), b"");
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 2);
        let one = Selection::Inside { path: RelPath::parse("a").unwrap(), dir: false };
        let dest = dir.path().join("a");
        unpack(&part(dir.path()), &tree, &layout, &one, &dest).unwrap();
        let a = std::fs::read(&dest).unwrap();
        assert_eq!((a.len(), &a[PIECE_SIZE - 1..]), (PIECE_SIZE + 2, &[7, 8, 9][..]));
        let y = Selection::Inside { path: RelPath::parse("s/y").unwrap(), dir: false };
        let dest = dir.path().join("y");
        unpack(&part(dir.path()), &tree, &layout, &y, &dest).unwrap();
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!((std::fs::read(&dest).unwrap(), mode), (b"yyy".to_vec(), 0o700));
        // Nothing else appeared: no staging path left, nothing of the rest of the tree.
        let mut names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["a", "f.part", "s", "y"]);
        // An empty file and an empty directory: no piece, and still their place.
        let x = Selection::Inside { path: RelPath::parse("s/x").unwrap(), dir: false };
        unpack(&part(dir.path()), &tree, &layout, &x, &dir.path().join("x")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), b"");
        let e = Selection::Inside { path: RelPath::parse("e").unwrap(), dir: true };
        unpack(&part(dir.path()), &tree, &layout, &e, &dir.path().join("e")).unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("e")).unwrap().count(), 0);
        std::fs::remove_file(dir.path().join("x")).unwrap();
        std::fs::remove_dir(dir.path().join("e")).unwrap();
        // A staging file in the way is someone else's, or left by a kill: left alone, and
        // the file staged under the next name.
        std::fs::write(dir.path().join(".z.part"), b"theirs").unwrap();
        unpack(&part(dir.path()), &tree, &layout, &y, &dir.path().join("z")).unwrap();
        assert_eq!(std::fs::read(dir.path().join(".z.part")).unwrap(), b"theirs");
        assert_eq!(std::fs::read(dir.path().join("z")).unwrap(), b"yyy");
    }

    #[test]
    fn a_short_part_fails_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let tree = tree();
        let layout = FolderLayout::new(&tree).unwrap();
        let dest = dir.path().join("f");
        let short = dir.path().join("short.part");
        std::fs::write(&short, [1u8; 10]).unwrap();
        let err = unpack(&File::open(short).unwrap(), &tree, &layout, &Selection::Whole, &dest)
            .unwrap_err();
        assert!(matches!(err, DownloadError::Write { .. }), "{err}");
        assert!(!dest.exists() && !staging_path(&dest).exists());
    }
}

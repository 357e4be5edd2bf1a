//! What a resumed download finds at its final path: nothing (it goes on), or the item
//! itself, complete and every piece of the part chosen matching its hash (a kill between
//! the rename into place and the save of the download's end left it saved as under way;
//! it is then shared, not fetched again). Anything else there is refused.
//!
//! Invariant: this module only reads; it never writes, truncates, renames or removes
//! anything at the destination, whatever it finds there.

use std::fs::{File, Metadata, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use rayon::prelude::*;

use common::folder::{EntryKind, Selection};
use common::message::FileMeta;
use common::{PieceIndex, Sha1Digest};

use super::StartError;
use crate::swarm::{Chosen, FileStamp, ItemLayout};

/// What is at a resumed download's destination.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing: the download goes on.
    Nothing,
    /// The part chosen of the item, each of its pieces checked; with the stamp of the file
    /// as it was hashed when the item is a single file (as `finish` returns it).
    Complete(Option<FileStamp>),
}

/// Checks what is at `dest`, the final path of a download of the part `chosen` of `meta`
/// (laid out as `layout`). Something there that is not that part, complete (a link, a file
/// of another size, a piece that does not match, a file or directory missing, or not this
/// user's own), is `StartError::NotTheItem`, and is left as it is.
pub fn check(
    dest: &Path,
    meta: &FileMeta,
    layout: &ItemLayout,
    chosen: &Chosen,
) -> Result<Found, StartError> {
    let refuse = |why: String| StartError::NotTheItem {
        path: dest.display().to_string(),
        name: chosen.shown(meta),
        why,
    };
    let root = match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => return Err(refuse(e.to_string())),
        Ok(root) => root,
    };
    if let Some(why) = not_ours(&root) {
        return Err(refuse(why));
    }
    let one_file = match (&meta.tree, &chosen.selection) {
        (None, _) | (Some(_), Selection::Inside { dir: false, .. }) => true,
        (Some(_), _) => false,
    };
    if one_file {
        check_file(dest, &root, meta, layout, chosen).map_err(refuse)
    } else {
        check_tree(dest, &root, meta, layout, chosen).map_err(refuse)?;
        Ok(Found::Complete(None))
    }
}

/// Why `m` (not followed if a link) is not this user's own: a link, another user's, or
/// writable by others (`part_file::reopen_part` asks the same of a `.part`).
fn not_ours(m: &Metadata) -> Option<String> {
    let me = rustix::process::geteuid().as_raw();
    if m.file_type().is_symlink() {
        Some("it is a symbolic link".to_string())
    } else if m.uid() != me {
        Some(format!("it is owned by uid {}, not by this user (uid {me})", m.uid()))
    } else if m.mode() & 0o022 != 0 {
        Some(format!("others may write to it (mode {:o})", m.mode() & 0o7777))
    } else {
        None
    }
}

/// Opens `path` to read, never through a link.
fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// A single file at `dest`: the item's one file, or the file a selective download chose.
fn check_file(
    dest: &Path,
    root: &Metadata,
    meta: &FileMeta,
    layout: &ItemLayout,
    chosen: &Chosen,
) -> Result<Found, String> {
    if !root.is_file() {
        return Err("it is not a regular file".to_string());
    }
    let file = open(dest).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len != chosen.size {
        return Err(format!("it has {len} bytes, not {}", chosen.size));
    }
    // Before the pieces are read: if the file changes meanwhile, the seeder sees another
    // stamp and checks every piece again as it serves it.
    let stamp = FileStamp::of(&file).map_err(|e| e.to_string())?;
    let pieces: Vec<PieceIndex> = chosen.wanted.iter().collect();
    let bad = pieces.into_par_iter().find_any(|&piece| {
        let Some(at) = layout.locate(meta, piece) else { return true };
        !piece_matches(&file, at.offset, at.len, meta, piece)
    });
    if let Some(piece) = bad {
        return Err(format!("piece {} does not match its hash", piece.0));
    }
    Ok(Found::Complete(match meta.tree {
        None => Some(stamp),
        // A folder's file: the seeder checks each piece as it serves it.
        Some(_) => None,
    }))
}

/// A directory at `dest`: the whole folder, or the directory a selective download chose.
/// Every entry of the part chosen must be there, of its kind (and size), never a link;
/// entries that are not in it are not looked at.
fn check_tree(
    dest: &Path,
    root: &Metadata,
    meta: &FileMeta,
    layout: &ItemLayout,
    chosen: &Chosen,
) -> Result<(), String> {
    if !root.is_dir() {
        return Err("it is not a directory".to_string());
    }
    let Some(tree) = &meta.tree else { return Err("the item is not a folder".to_string()) };
    for entry in tree.entries() {
        let Some(path) = chosen.selection.local_path(&entry.path, dest) else { continue };
        let m = std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", entry.path))?;
        let fits = match entry.kind {
            EntryKind::Dir => m.is_dir(),
            EntryKind::File { size, .. } => m.is_file() && m.len() == size,
        };
        if !fits {
            return Err(format!("{} is not as in the folder", entry.path));
        }
    }
    let pieces: Vec<PieceIndex> = chosen.wanted.iter().collect();
    let bad = pieces.into_par_iter().find_any(|&piece| {
        let path = layout
            .locate(meta, piece)
            .and_then(|at| Some((chosen.selection.local_path(at.file?, dest)?, at)));
        let Some((path, at)) = path else { return true };
        !open(&path).is_ok_and(|file| piece_matches(&file, at.offset, at.len, meta, piece))
    });
    match bad {
        Some(piece) => Err(format!("piece {} does not match its hash", piece.0)),
        None => Ok(()),
    }
}

/// Whether the `len` bytes at `offset` in `file` are piece `piece` of `meta`.
fn piece_matches(file: &File, offset: u64, len: usize, meta: &FileMeta, piece: PieceIndex) -> bool {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset).is_ok()
        && meta.pieces.get(piece.0 as usize) == Some(&Sha1Digest::of(&buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::folder::{folder_digest, Entry, RelPath, Tree};
    use common::hash::file_digest;
    use common::{FileName, PIECE_SIZE};
    use std::os::unix::fs::PermissionsExt;

    fn piece_hashes(data: &[u8]) -> Vec<Sha1Digest> {
        data.chunks(PIECE_SIZE).map(Sha1Digest::of).collect()
    }

    fn file_meta(data: &[u8]) -> FileMeta {
        let pieces = piece_hashes(data);
        let size = data.len() as u64;
        FileMeta {
            name: FileName::new("f.bin").unwrap(),
            size,
            digest: file_digest(size, &pieces),
            pieces,
            tree: None,
        }
    }

    fn check_at(dest: &Path, meta: &FileMeta, selection: Selection) -> Result<Found, StartError> {
        let layout = ItemLayout::of(meta).unwrap();
        let chosen = Chosen::of(meta, &layout, selection).unwrap();
        check(dest, meta, &layout, &chosen)
    }

    #[track_caller]
    fn refused(found: Result<Found, StartError>, why: &str) {
        match found {
            Err(e @ StartError::NotTheItem { .. }) => {
                assert!(e.to_string().contains(why), "{e}")
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_complete_file_is_found_and_anything_else_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f.bin");
        let data: Vec<u8> = (0..PIECE_SIZE * 2 + 7).map(|i| (i % 253) as u8).collect();
        let meta = file_meta(&data);
        assert_eq!(check_at(&dest, &meta, Selection::Whole).unwrap(), Found::Nothing);

        std::fs::write(&dest, &data).unwrap();
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).unwrap();
        let stamp = FileStamp::of(&File::open(&dest).unwrap()).unwrap();
        assert_eq!(check_at(&dest, &meta, Selection::Whole).unwrap(), Found::Complete(Some(stamp)));

        // One byte changed in the last piece.
        let mut other = data.clone();
        other[PIECE_SIZE * 2 + 3] ^= 1;
        std::fs::write(&dest, &other).unwrap();
        refused(check_at(&dest, &meta, Selection::Whole), "piece 2 does not match its hash");
        assert_eq!(std::fs::read(&dest).unwrap(), other);
        std::fs::write(&dest, &data[..10]).unwrap();
        refused(check_at(&dest, &meta, Selection::Whole), "it has 10 bytes, not 1048583");

        // Writable by others, a directory, a link to the right bytes: refused.
        std::fs::write(&dest, &data).unwrap();
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o666)).unwrap();
        refused(check_at(&dest, &meta, Selection::Whole), "others may write to it (mode 666)");
        std::fs::remove_file(&dest).unwrap();
        std::fs::create_dir(&dest).unwrap();
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o700)).unwrap();
        refused(check_at(&dest, &meta, Selection::Whole), "it is not a regular file");
        std::fs::remove_dir(&dest).unwrap();
        let real = dir.path().join("real");
        std::fs::write(&real, &data).unwrap();
        std::os::unix::fs::symlink(&real, &dest).unwrap();
        let e = check_at(&dest, &meta, Selection::Whole).unwrap_err();
        let shown = format!(
            "{} already exists and is not f.bin (it is a symbolic link); it is left as it is",
            dest.display()
        );
        assert_eq!(e.to_string(), shown);
        assert!(std::fs::symlink_metadata(&dest).unwrap().file_type().is_symlink());
    }

    fn folder_meta() -> (FileMeta, Vec<(&'static str, Vec<u8>)>) {
        let files = vec![
            ("a.bin", vec![1u8; PIECE_SIZE + 1]),
            ("d/b.txt", b"hello".to_vec()),
            ("d/empty", Vec::new()),
        ];
        let mut entries = vec![Entry { path: RelPath::parse("d").unwrap(), kind: EntryKind::Dir }];
        entries.push(Entry { path: RelPath::parse("e").unwrap(), kind: EntryKind::Dir });
        let mut pieces = Vec::new();
        for (path, data) in &files {
            let kind = EntryKind::File { size: data.len() as u64, executable: false };
            entries.push(Entry { path: RelPath::parse(path).unwrap(), kind });
        }
        let tree = Tree::new(entries).unwrap();
        // Pieces in the tree's order, each file starting a new one.
        for entry in tree.entries() {
            if let Some((_, data)) =
                files.iter().find(|(p, _)| RelPath::parse(p).unwrap() == entry.path)
            {
                pieces.extend(piece_hashes(data));
            }
        }
        let size = tree.total_size();
        let meta = FileMeta {
            name: FileName::new("album").unwrap(),
            size,
            digest: folder_digest(&tree, &pieces),
            pieces,
            tree: Some(tree),
        };
        (meta, files)
    }

    fn write_folder(root: &Path, files: &[(&str, Vec<u8>)]) {
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::create_dir_all(root.join("e")).unwrap();
        for (path, data) in files {
            std::fs::write(root.join(path), data).unwrap();
        }
    }

    #[test]
    fn a_complete_folder_or_part_of_one_is_found_and_anything_else_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, files) = folder_meta();
        let dest = dir.path().join("album");
        write_folder(&dest, &files);
        assert_eq!(check_at(&dest, &meta, Selection::Whole).unwrap(), Found::Complete(None));
        // The directory `d` chosen, at its own destination; and one file of it.
        let d = Selection::Inside { path: RelPath::parse("d").unwrap(), dir: true };
        assert_eq!(check_at(&dest.join("d"), &meta, d.clone()).unwrap(), Found::Complete(None));
        let a = Selection::Inside { path: RelPath::parse("a.bin").unwrap(), dir: false };
        assert_eq!(check_at(&dest.join("a.bin"), &meta, a.clone()).unwrap(), Found::Complete(None));

        // A byte changed, an empty directory or an empty file missing: refused.
        let mut other = files[0].1.clone();
        other[PIECE_SIZE] = 9;
        std::fs::write(dest.join("a.bin"), &other).unwrap();
        refused(check_at(&dest, &meta, Selection::Whole), "piece 1 does not match its hash");
        refused(check_at(&dest.join("a.bin"), &meta, a), "piece 1 does not match its hash");
        assert_eq!(check_at(&dest.join("d"), &meta, d.clone()).unwrap(), Found::Complete(None));
        std::fs::write(dest.join("a.bin"), &files[0].1).unwrap();
        std::fs::remove_dir(dest.join("e")).unwrap();
        refused(check_at(&dest, &meta, Selection::Whole), "e: No such file or directory");
        std::fs::create_dir(dest.join("e")).unwrap();
        std::fs::remove_file(dest.join("d/empty")).unwrap();
        refused(check_at(&dest.join("d"), &meta, d), "d/empty: No such file or directory");
        // A file replaced by a link to the right bytes: refused.
        std::fs::write(dir.path().join("empty"), b"").unwrap();
        std::os::unix::fs::symlink(dir.path().join("empty"), dest.join("d/empty")).unwrap();
        refused(check_at(&dest, &meta, Selection::Whole), "d/empty is not as in the folder");
    }
}

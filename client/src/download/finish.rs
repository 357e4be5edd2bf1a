//! The end of a download whose every piece is verified: the whole-item check, making it
//! durable, and the rename into place that never replaces a file.

use std::fs::File;
use std::io::ErrorKind;
use std::path::Path;
use std::time::Instant;

use common::folder::folder_digest;
use common::hash::file_digest;
use common::message::FileMeta;
use common::Sha1Digest;

use super::part_file::{is_same_file, rename_no_replace, sync_parent};
use super::store::TreeStore;
use crate::swarm::{Chosen, ItemLayout};
use crate::swarm::{DownloadError, FileStamp};

/// Checks the whole file, makes it durable and renames `part` (open as `file`) to `dest`.
/// The check is the file digest over `computed`, the hashes computed from the bytes as they
/// arrived (each piece hashed while still in cache), so it needs no second pass over the
/// file. The rename never replaces a file that appeared at the destination in the meantime:
/// the verified file then stays at its `.part` path, and the error says so. Returns the
/// stamp of the file as synced, every piece of which was hashed (`None` if it cannot be
/// read; the seeder then hashes pieces again as it serves them).
///
/// A folder's download ends in `finish_tree` instead (issue 23).
pub fn finish(
    part: &Path,
    dest: &Path,
    file: &File,
    meta: &FileMeta,
    layout: &ItemLayout,
    chosen: &Chosen,
    computed: &[Option<Sha1Digest>],
) -> Result<Option<FileStamp>, DownloadError> {
    let shown = || part.display().to_string();
    if !verified(meta, chosen, computed) {
        return Err(DownloadError::WholeFileMismatch);
    }
    let len = file
        .metadata()
        .map(|m| m.len())
        .map_err(|e| DownloadError::Stat { path: shown(), reason: e.to_string() })?;
    if len != layout.part_len() {
        return Err(DownloadError::WrongLength { path: shown(), len, size: layout.part_len() });
    }
    let sync_started = Instant::now();
    file.sync_all().map_err(|e| DownloadError::Flush { path: shown(), reason: e.to_string() })?;
    log::info!("{}: fsync took {:.3} s", meta.name, sync_started.elapsed().as_secs_f64());
    // The bytes verified are those of our open file: rename only if the path still names it
    // (not a file or link put there during the download).
    if !is_same_file(part, file).unwrap_or(false) {
        return Err(DownloadError::PartReplaced { path: shown() });
    }
    rename_into_place(part, dest)?;
    Ok(FileStamp::of(file).ok())
}

/// The end of a folder's download, or of a part of one (issue 23), whose pieces are in
/// their files under `store`'s staging path: checked as a file is (a folder's digest is
/// over its tree and the hashes; a part of a folder, which the folder's digest cannot
/// check, by each of its pieces' hashes, computed as it arrived, being the one the
/// metadata lists, that list having been checked against the digest at the start), made
/// durable (every file and directory of the tree on disk before the rename), and renamed
/// to `dest`, which it never replaces.
pub fn finish_tree(
    store: &TreeStore,
    dest: &Path,
    meta: &FileMeta,
    chosen: &Chosen,
    computed: &[Option<Sha1Digest>],
) -> Result<(), DownloadError> {
    let staging = store.path();
    let shown = || staging.display().to_string();
    if !verified(meta, chosen, computed) {
        return Err(DownloadError::WholeFileMismatch);
    }
    let tree = meta.tree.as_ref().ok_or_else(|| DownloadError::Flush {
        path: shown(),
        reason: "a staging tree for an item that is not a folder".into(),
    })?;
    let sync_started = Instant::now();
    store
        .make_durable(tree, &chosen.selection)
        .map_err(|e| DownloadError::Flush { path: shown(), reason: e.to_string() })?;
    log::info!("{}: syncfs took {:.3} s", meta.name, sync_started.elapsed().as_secs_f64());
    // The bytes verified are those under the staging directory this download made: rename
    // only if the path still names it.
    if !store.is_in_place().unwrap_or(false) {
        return Err(DownloadError::PartReplaced { path: shown() });
    }
    rename_into_place(staging, dest)
}

/// Whether the hashes `computed` as the pieces arrived make the item (or the part of it
/// `chosen`) the one `meta` describes.
fn verified(meta: &FileMeta, chosen: &Chosen, computed: &[Option<Sha1Digest>]) -> bool {
    match chosen.is_whole() {
        true => {
            let hashes: Option<Vec<Sha1Digest>> = computed.iter().copied().collect();
            let digest = hashes.map(|hashes| match &meta.tree {
                Some(tree) => folder_digest(tree, &hashes),
                None => file_digest(meta.size, &hashes),
            });
            digest == Some(meta.digest)
        }
        false => chosen.wanted.iter().all(|piece| {
            let i = piece.0 as usize;
            matches!((computed.get(i), meta.pieces.get(i)), (Some(Some(got)), Some(listed)) if got == listed)
        }),
    }
}

/// Renames `staged` (a verified, synced file or tree) to `dest` unless something is there
/// (then left as it is, and the error says where the download stays), and syncs the
/// directory.
fn rename_into_place(staged: &Path, dest: &Path) -> Result<(), DownloadError> {
    let shown = || staged.display().to_string();
    if let Err(e) = rename_no_replace(staged, dest) {
        return Err(match e.kind() {
            ErrorKind::AlreadyExists => DownloadError::DestinationAppeared {
                dest: dest.display().to_string(),
                part: shown(),
            },
            _ => DownloadError::Rename { reason: e.to_string(), part: shown() },
        });
    }
    sync_parent(dest);
    Ok(())
}

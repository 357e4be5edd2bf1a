//! The end of a download whose every piece is verified: the whole-file check, fsync, and
//! the rename into place that never replaces a file.

use std::fs::File;
use std::io::ErrorKind;
use std::path::Path;
use std::time::Instant;

use common::folder::folder_digest;
use common::hash::file_digest;
use common::message::FileMeta;
use common::Sha1Digest;

use super::part_file::{is_same_file, remove_own_part, rename_no_replace, sync_parent};
use super::unpack::unpack;
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
/// A folder (issue 23) is checked the same way (its digest is over its tree and the
/// hashes), then its files are written from the `.part` into a staging directory that is
/// renamed to `dest` (`unpack`), and the `.part` is removed. A part of a folder (`chosen`
/// by a selective download) cannot be checked against the folder's digest: each of its
/// pieces' hashes, computed as it arrived, must be the one the metadata lists (metadata
/// checked against the digest when the download started).
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
    let verified = match chosen.is_whole() {
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
    };
    if !verified {
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
    if let (Some(tree), ItemLayout::Folder(folder)) = (&meta.tree, layout) {
        unpack(file, tree, folder, &chosen.selection, dest)?;
        remove_own_part(part, file);
        // Each piece is checked again as it is served from the folder's files.
        return Ok(None);
    }
    if let Err(e) = rename_no_replace(part, dest) {
        return Err(match e.kind() {
            ErrorKind::AlreadyExists => DownloadError::DestinationAppeared {
                dest: dest.display().to_string(),
                part: shown(),
            },
            _ => DownloadError::Rename { reason: e.to_string(), part: shown() },
        });
    }
    sync_parent(dest);
    Ok(FileStamp::of(file).ok())
}

//! File-system safety of a download's `.part` file: where it goes, creating it without
//! following or taking over anyone else's file, reopening our own on resume, removing it
//! only while it is still ours, and the final rename that never replaces a file.
//!
//! Invariant: a download writes only into a `<dest>.part` it created itself (`O_EXCL`,
//! `O_NOFOLLOW`) or, on resume, the one its saved record names, if that is still a regular
//! file owned by this OS user, writable by no one else, and the very file it created (the
//! device, inode and birth time it recorded: issue 21); it deletes only that file, and its
//! final rename never replaces an existing file.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use common::FileName;

use super::StartError;
use crate::swarm::PartId;

/// The most names a download tries for a fresh `.part` file (`<dest>.part`, then
/// `<dest>.1.part`, ...) when the ones before are taken by files it did not create.
const MAX_PART_NAMES: u32 = 16;

/// The final path for a download: inside `destination` if it is a directory, else
/// `destination` itself, which must not exist yet and whose directory must.
pub fn resolve_destination(destination: &Path, name: &FileName) -> Result<PathBuf, StartError> {
    let dest = if destination.is_dir() {
        destination.join(name.as_str())
    } else {
        destination.to_path_buf()
    };
    // `symlink_metadata`: a dangling symbolic link is a name that exists too.
    if dest.symlink_metadata().is_ok() {
        return Err(StartError::Exists(dest.display().to_string()));
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(StartError::NoDirectory(parent.display().to_string()));
    }
    Ok(dest)
}

/// The final path of a folder's download (issue 23): `<destination>/<name>`, where
/// `destination` must be a directory and nothing may be at that name yet.
pub fn folder_destination(destination: &Path, name: &FileName) -> Result<PathBuf, StartError> {
    if !destination.is_dir() {
        return Err(StartError::NoDirectory(destination.display().to_string()));
    }
    let dest = destination.join(name.as_str());
    if dest.symlink_metadata().is_ok() {
        return Err(StartError::Exists(dest.display().to_string()));
    }
    Ok(dest)
}

/// The temporary file a download writes into, beside its destination.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    dest.with_file_name(name)
}

/// Turns an I/O error on the `.part` file at `temp` into the download's error.
fn unwritable(temp: &Path) -> impl Fn(std::io::Error) -> StartError + Copy + '_ {
    move |e| StartError::Unwritable { path: temp.display().to_string(), reason: e.to_string() }
}

/// Creates the `.part` file of a new download, pre-sized to `size`. It is created
/// exclusively and never through a symbolic link (`O_EXCL | O_NOFOLLOW`): a file or a link
/// already at that path belongs to someone else and is neither followed, truncated nor
/// deleted.
pub fn create_part(temp: &Path, size: u64) -> Result<File, StartError> {
    let unwritable = unwritable(temp);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(temp)
        .map_err(|e| match e.kind() {
            ErrorKind::AlreadyExists => StartError::PartExists(temp.display().to_string()),
            _ => unwritable(e),
        })?;
    if let Err(e) = file.set_len(size) {
        remove_own_part(temp, &file);
        return Err(unwritable(e));
    }
    Ok(file)
}

/// Deletes `path` if it is still the file this download has open as `file` (same device
/// and inode). A `.part` that someone replaced in the meantime is left alone.
pub fn remove_own_part(path: &Path, file: &File) {
    match is_same_file(path, file) {
        Ok(true) => {
            if let Err(e) = std::fs::remove_file(path) {
                log::warn!("cannot remove {}: {e}", path.display());
            }
        }
        Ok(false) => {
            log::warn!("{} is no longer the file this download created; leaving it", path.display())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => log::warn!("cannot check {} before removing it: {e}", path.display()),
    }
}

/// Deletes the `.part` file at `path` of a download found complete at its destination, if
/// it is the very file the download created (`recorded`, its identity). Anything else
/// there, or a `.part` of a download saved without an identity, is left alone.
pub fn remove_recorded_part(path: &Path, recorded: Option<PartId>) {
    let opened = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return,
        Err(e) => {
            log::warn!("cannot check {} before removing it: {e}; leaving it", path.display());
            return;
        }
    };
    match (recorded, PartId::of(&file)) {
        (Some(recorded), Ok(found)) if recorded == found => remove_own_part(path, &file),
        _ => log::warn!(
            "{} is not known to be the file this download created; leaving it",
            path.display()
        ),
    }
}

/// Whether `path` itself (not a link's target) is the open `file`.
pub fn is_same_file(path: &Path, file: &File) -> std::io::Result<bool> {
    let on_disk = std::fs::symlink_metadata(path)?;
    let open = file.metadata()?;
    Ok(on_disk.dev() == open.dev() && on_disk.ino() == open.ino())
}

/// Renames `temp` to `dest` unless `dest` exists, which is then left as it is (the error
/// is `AlreadyExists`). Uses `renameat2(RENAME_NOREPLACE)`; where the file system does not
/// support it, a hard link (which fails if `dest` exists) and then unlinking `temp`.
pub fn rename_no_replace(temp: &Path, dest: &Path) -> std::io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    use rustix::io::Errno;
    match renameat_with(CWD, temp, CWD, dest, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::OPNOTSUPP => {
            log::debug!("no RENAME_NOREPLACE for {} ({e}); linking instead", dest.display());
            std::fs::hard_link(temp, dest)?;
            if let Err(e) = std::fs::remove_file(temp) {
                log::warn!("{} is in place but {} is left: {e}", dest.display(), temp.display());
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// A fresh `.part` file for a download to `dest` that starts over: `<dest>.part` if it is
/// free, else the first free one of `<dest>.1.part`, `<dest>.2.part`, ...; the files
/// already there are someone else's and are left alone.
pub fn create_fresh_part(dest: &Path, size: u64) -> Result<(PathBuf, File), StartError> {
    let mut last = StartError::PartExists(part_path(dest).display().to_string());
    for n in 0..MAX_PART_NAMES {
        let temp = match n {
            0 => part_path(dest),
            n => part_path(&dest.with_file_name(format!(
                "{}.{n}",
                dest.file_name().map(|f| f.to_string_lossy()).unwrap_or_default()
            ))),
        };
        match create_part(&temp, size) {
            Ok(file) => return Ok((temp, file)),
            Err(e @ StartError::PartExists(_)) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Reopens the `.part` file of a resumed download at `temp`, which its own saved record
/// names: never through a link, and only a regular file (the path may have been replaced
/// since), owned by this OS user, writable by no one else, and, when `recorded` says which
/// file the download created, that very file (issue 21: a `.part` that another local user
/// planted in a shared directory is not adopted). Sized to `size` if it is not. Returns it
/// with its identity; `StartError::NotOurs` says why it is refused.
pub fn reopen_part(
    temp: &Path,
    size: u64,
    recorded: Option<PartId>,
) -> Result<(File, PartId), StartError> {
    let unwritable = unwritable(temp);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(temp)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => StartError::NotRegular(temp.display().to_string()),
            _ => unwritable(e),
        })?;
    let metadata = file.metadata().map_err(unwritable)?;
    if !metadata.is_file() {
        return Err(StartError::NotRegular(temp.display().to_string()));
    }
    let found = PartId::of(&file).map_err(unwritable)?;
    let me = rustix::process::geteuid().as_raw();
    let why = if metadata.uid() != me {
        Some(format!("it is owned by uid {}, not by this user (uid {me})", metadata.uid()))
    } else if metadata.mode() & 0o022 != 0 {
        Some(format!("others may write to it (mode {:o})", metadata.mode() & 0o7777))
    } else if recorded.is_some_and(|id| id != found) {
        Some("it is another file than the one this download created".to_string())
    } else {
        None
    };
    if let Some(why) = why {
        return Err(StartError::NotOurs { path: temp.display().to_string(), why });
    }
    if metadata.len() != size {
        file.set_len(size).map_err(unwritable)?;
    }
    Ok((file, found))
}

/// Makes a rename durable by syncing its directory (best effort).
pub fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent() {
        let dir = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            log::debug!("cannot sync {}: {e}", dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_rename_never_replaces_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let (temp, dest) = (dir.path().join("f.part"), dir.path().join("f"));
        std::fs::write(&temp, b"downloaded").unwrap();
        std::fs::write(&dest, b"already there").unwrap();
        let err = rename_no_replace(&temp, &dest).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&dest).unwrap(), b"already there");
        assert_eq!(std::fs::read(&temp).unwrap(), b"downloaded");
        // A dangling link at the destination is a name that exists too.
        std::fs::remove_file(&dest).unwrap();
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dest).unwrap();
        let err = rename_no_replace(&temp, &dest).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert!(!dir.path().join("nowhere").exists());
        std::fs::remove_file(&dest).unwrap();
        rename_no_replace(&temp, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"downloaded");
        assert!(!temp.exists());
    }

    #[test]
    fn a_part_is_created_exclusively_and_removed_only_while_it_is_ours() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join("f.part");
        let file = create_part(&temp, 1000).unwrap();
        assert_eq!(std::fs::metadata(&temp).unwrap().len(), 1000);
        assert!(matches!(create_part(&temp, 10), Err(StartError::PartExists(_))));
        assert_eq!(std::fs::metadata(&temp).unwrap().len(), 1000);
        // Replaced by someone else's file: left alone.
        std::fs::remove_file(&temp).unwrap();
        std::fs::write(&temp, b"theirs").unwrap();
        remove_own_part(&temp, &file);
        assert_eq!(std::fs::read(&temp).unwrap(), b"theirs");
        std::fs::remove_file(&temp).unwrap();
        let file = create_part(&temp, 0).unwrap();
        remove_own_part(&temp, &file);
        assert!(!temp.exists());
    }

    /// A download found complete at its destination removes its `.part` only if it is the
    /// file it recorded creating.
    #[test]
    fn a_part_left_beside_a_complete_download_is_removed_only_if_it_is_the_one_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join("f.part");
        remove_recorded_part(&temp, None);
        let file = create_part(&temp, 10).unwrap();
        let id = PartId::of(&file).unwrap();
        remove_recorded_part(&temp, None);
        assert!(temp.exists());
        let other = dir.path().join("g.part");
        let other_id = PartId::of(&create_part(&other, 10).unwrap()).unwrap();
        remove_recorded_part(&temp, Some(other_id));
        assert!(temp.exists());
        remove_recorded_part(&temp, Some(id));
        assert!(!temp.exists());
    }

    /// Issue 21: a resume adopts only the `.part` this download created: not another file
    /// put at its path, nor one that others may write to.
    #[test]
    fn a_resume_adopts_only_the_part_it_created() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join("f.part");
        let file = create_part(&temp, 100).unwrap();
        let id = PartId::of(&file).unwrap();
        drop(file);
        // Held open to the end, so that no file made later can take its inode.
        let (_held, found) = reopen_part(&temp, 100, Some(id)).unwrap();
        assert_eq!(found, id);
        // Saved by an older client, without an identity: adopted on owner and mode alone.
        assert_eq!(reopen_part(&temp, 100, None).unwrap().1, id);

        // Writable by the group: refused, and left as it is.
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o620)).unwrap();
        let err = reopen_part(&temp, 100, Some(id)).unwrap_err();
        assert!(
            matches!(&err, StartError::NotOurs { why, .. } if why.contains("mode 620")),
            "{err}"
        );
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600)).unwrap();

        // Another file at that path, even of this user and mode 0600: refused.
        std::fs::remove_file(&temp).unwrap();
        let planted = create_part(&temp, 100).unwrap();
        let planted_id = PartId::of(&planted).unwrap();
        assert_ne!(planted_id, id);
        let err = reopen_part(&temp, 100, Some(id)).unwrap_err();
        assert!(
            err.to_string().ends_with(
                "is not the partial file this client created: it is another file than the one this download created"
            ),
            "{err}"
        );

        // Owned by another user (only root can make one here): refused.
        if rustix::process::geteuid().is_root() {
            drop(planted);
            std::fs::remove_file(&temp).unwrap();
            let theirs = create_part(&temp, 100).unwrap();
            let theirs_id = PartId::of(&theirs).unwrap();
            std::os::unix::fs::chown(&temp, Some(12345), None).unwrap();
            let err = reopen_part(&temp, 100, Some(theirs_id)).unwrap_err();
            assert!(
                err.to_string().ends_with("it is owned by uid 12345, not by this user (uid 0)"),
                "{err}"
            );
        }

        // The fresh file of a download that starts over: the next free name.
        let dest = dir.path().join("f");
        let (fresh, _) = create_fresh_part(&dest, 100).unwrap();
        assert_eq!(fresh, dir.path().join("f.1.part"));
        let (again, _) = create_fresh_part(&dest, 100).unwrap();
        assert_eq!(again, dir.path().join("f.2.part"));
        assert_eq!(std::fs::metadata(&temp).unwrap().len(), 100);
    }
}

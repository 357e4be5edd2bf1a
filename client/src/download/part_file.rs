//! File-system safety of a download's `.part` file: where it goes, creating it without
//! following or taking over anyone else's file, reopening our own on resume, removing it
//! only while it is still ours, and the final rename that never replaces a file.
//!
//! Invariant: a download writes only into a `<dest>.part` it created itself (`O_EXCL`,
//! `O_NOFOLLOW`) or, on resume, one its saved record names that is still a regular file;
//! it deletes only that file, and its final rename never replaces an existing file.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use common::FileName;

use super::StartError;

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

/// Reopens the `.part` file of a resumed download at `temp`, which its own saved record
/// names: never through a link, and only a regular file (the path may have been replaced
/// since). Sized to `size` if it is not.
pub fn reopen_part(temp: &Path, size: u64) -> Result<File, StartError> {
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
    if metadata.len() != size {
        file.set_len(size).map_err(unwritable)?;
    }
    Ok(file)
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
}

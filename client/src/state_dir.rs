//! The client's state directory (`shares.bin`, `history.txt`): what a user shares, where,
//! and what they typed, so it is private to its owner.
//!
//! Invariant: after `make_private`, the directory is 0700 and no file directly in it grants
//! any access to group or others; a looser mode found is tightened with a warning.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The access bits of group and others.
const GROUP_OTHER: u32 = 0o077;

/// Creates `dir` (and missing parents) as 0700 if needed, then tightens it to 0700 and the
/// regular files directly in it to owner-only access (0600 for the files this client
/// writes), logging a warning for each mode it had to change. Symbolic links in the
/// directory are not followed.
pub fn make_private(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != 0o700 {
        fs::set_permissions(dir, Permissions::from_mode(0o700))?;
        log::warn!("state directory {} had mode {mode:04o}; set to 0700", dir.display());
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        // `DirEntry::metadata` does not follow a symbolic link.
        let metadata = entry.metadata()?;
        let mode = metadata.permissions().mode() & 0o777;
        if metadata.is_file() && mode & GROUP_OTHER != 0 {
            let path = entry.path();
            let tightened = mode & !GROUP_OTHER;
            fs::set_permissions(&path, Permissions::from_mode(tightened))?;
            log::warn!("{} had mode {mode:04o}; set to {tightened:04o}", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_directory_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/state");
        make_private(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn a_loose_directory_and_its_files_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        let file = dir.join("shares.bin");
        fs::write(&file, b"x").unwrap();
        fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        // A link's target outside the directory is not touched.
        let outside = tmp.path().join("outside");
        fs::write(&outside, b"y").unwrap();
        fs::set_permissions(&outside, Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        make_private(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&outside), 0o644);
    }
}

//! A file of the state directory written whole (`shares.bin`, `session`): readable by its
//! owner only (0600: they tell what a user shares, and hold a session token), synced, and
//! renamed over the old one, so a crash leaves the old file or the new one, never a torn one.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `<path>.tmp` (0600), syncs it and renames it over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

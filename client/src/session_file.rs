//! The session a client keeps across restarts (issue 20): `<state-dir>/session`, mode 0600,
//! written at `login` and removed at `logout`. `exit` and signals leave it, so the next
//! start on this state directory is logged in again without the password. The token is
//! useless elsewhere: the trackers bind a session to the key that opened it, which stays in
//! the same directory (`client.key`).
//!
//! Format: one format byte (1), then postcard of the user, the token and the address the
//! peer announced at login. Golden bytes pin it.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use common::message::SessionToken;
use common::UserId;

/// The format this build reads and writes.
const FORMAT: u8 = 1;

/// A session kept for the next start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSession {
    pub user: UserId,
    pub token: SessionToken,
    /// Where this peer served pieces when it logged in: the trackers tell other peers this
    /// address.
    pub peer_addr: SocketAddr,
}

/// Why the session file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SessionFileError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(
        "{path} is damaged or of another client ({why}); it was moved to {aside}: login again"
    )]
    Damaged { path: String, why: String, aside: String },
}

/// The bytes of `session`.
pub fn encode(session: &SavedSession) -> Vec<u8> {
    let mut bytes = vec![FORMAT];
    // A session of validated ids and fixed-size fields always encodes.
    bytes.extend(postcard::to_stdvec(session).unwrap_or_default());
    bytes
}

/// The session in `bytes`.
pub fn decode(bytes: &[u8]) -> Result<SavedSession, String> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((other, _)) => Err(format!("format {other}, this client reads format {FORMAT}")),
        None => Err("empty".to_string()),
    }
}

/// The session kept at `path`, if any. A damaged file is moved aside (`.damaged`), never
/// deleted, and reported.
pub fn load(path: &Path) -> Result<Option<SavedSession>, SessionFileError> {
    let shown = || path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SessionFileError::Read { path: shown(), source }),
    };
    decode(&bytes).map(Some).map_err(|why| {
        let aside = path.with_extension("damaged");
        let _ = std::fs::rename(path, &aside);
        SessionFileError::Damaged { path: shown(), why, aside: aside.display().to_string() }
    })
}

/// Keeps `session` at `path` (0600; written, synced, renamed into place).
pub fn save(path: &Path, session: &SavedSession) -> std::io::Result<()> {
    crate::private_file::write_atomically(path, &encode(session))
}

/// Forgets the session kept at `path` (there may be none).
pub fn forget(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SavedSession {
        SavedSession {
            user: UserId::new("al").unwrap(),
            token: SessionToken([7; 32]),
            peer_addr: "127.0.0.1:6201".parse().unwrap(),
        }
    }

    #[test]
    fn format_1_golden_bytes() {
        let bytes = encode(&sample());
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        // Format, user, token, then the address (V4, four bytes, port as a varint).
        let expected = format!("01 02616c {} 00 7f000001 b930", "07".repeat(32)).replace(' ', "");
        assert_eq!(hex, expected);
        assert_eq!(decode(&bytes), Ok(sample()));
    }

    #[test]
    fn a_session_is_kept_forgotten_and_a_damaged_file_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session");
        assert!(load(&path).unwrap().is_none());
        save(&path, &sample()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load(&path).unwrap(), Some(sample()));
        forget(&path).unwrap();
        forget(&path).unwrap();
        assert!(load(&path).unwrap().is_none());
        std::fs::write(&path, b"\x09junk").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("format 9, this client reads format 1"), "{err}");
        assert!(dir.path().join("session.damaged").exists());
        assert!(!path.exists());
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(0u8.., 0..128)) {
            let _ = decode(&bytes);
        }
    }
}

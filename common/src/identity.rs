//! Static X25519 identities: every tracker and every client state directory has one key
//! pair, and the public half is what the others authenticate it by (trackers' keys are
//! listed in `tracker_info.txt`; clients' keys are bound to their sessions and tickets).
//!
//! The private key lives in a file of its own, created with mode 0600 and refused when
//! anyone else may read it (as ssh does with its keys).

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::secure_channel;

/// Length of a public or private key.
pub const KEY_LEN: usize = 32;

/// A static public key, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Enough to tell keys apart in logs.
        write!(f, "Key({:02x}{:02x}{:02x}{:02x}..)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// A key that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a key is 64 hex digits, found {0:?}")]
pub struct BadKey(pub String);

impl FromStr for PublicKey {
    type Err = BadKey;

    fn from_str(text: &str) -> Result<PublicKey, BadKey> {
        parse_hex(text)
            .map(PublicKey)
            .filter(|key| !key.is_weak())
            .ok_or_else(|| BadKey(text.to_string()))
    }
}

/// The X25519 points of small order (as libsodium lists them), whose Diffie-Hellman
/// result is known without any private key. The top bit is ignored by X25519.
const WEAK_KEYS: [[u8; KEY_LEN]; 7] = [
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

impl PublicKey {
    /// Whether this is a point of small order: anyone could pass for its holder, so such a
    /// key is never listed, accepted from a peer, or expected of one.
    pub fn is_weak(&self) -> bool {
        let mut key = self.0;
        key[31] &= 0x7f;
        WEAK_KEYS.contains(&key)
    }
}

fn parse_hex(text: &str) -> Option<[u8; KEY_LEN]> {
    if text.len() != 2 * KEY_LEN || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// Why an identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot create key file {path}: {source}")]
    Create { path: String, source: std::io::Error },
    #[error("key file {path} is readable by others (mode {mode:o}); run: chmod 600 {path}")]
    Exposed { path: String, mode: u32 },
    #[error("key file {path} is damaged: {why}")]
    Damaged { path: String, why: String },
    #[error("cannot generate a key pair: {0}")]
    Generate(String),
}

/// A static key pair.
#[derive(Clone)]
pub struct Identity {
    private: [u8; KEY_LEN],
    public: PublicKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("public", &self.public).finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh random key pair.
    pub fn generate() -> Result<Identity, IdentityError> {
        let pair = secure_channel::builder()
            .generate_keypair()
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        let private =
            pair.private.try_into().map_err(|_| IdentityError::Generate("size".into()))?;
        let public = pair.public.try_into().map_err(|_| IdentityError::Generate("size".into()))?;
        Ok(Identity { private, public: PublicKey(public) })
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The private half, for the handshake only.
    pub(crate) fn private(&self) -> &[u8; KEY_LEN] {
        &self.private
    }

    /// Loads the key pair at `path`, or creates one there (mode 0600) if there is none.
    /// Returns whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Identity, bool), IdentityError> {
        let shown = || path.display().to_string();
        match std::fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(IdentityError::Exposed { path: shown(), mode });
                }
                let text = std::fs::read_to_string(path)
                    .map_err(|source| IdentityError::Read { path: shown(), source })?;
                let identity = Identity::parse(&text).ok_or_else(|| IdentityError::Damaged {
                    path: shown(),
                    why: "unreadable".into(),
                })?;
                if !secure_channel::key_pair_matches(&identity) {
                    return Err(IdentityError::Damaged {
                        path: shown(),
                        why: "its public key does not belong to its private key".into(),
                    });
                }
                Ok((identity, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = Identity::generate()?;
                let create = |source| IdentityError::Create { path: shown(), source };
                // O_NOFOLLOW: never created through a symlink someone planted.
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)
                    .map_err(create)?;
                file.write_all(identity.to_text().as_bytes()).map_err(create)?;
                file.sync_all().map_err(create)?;
                Ok((identity, true))
            }
            Err(source) => Err(IdentityError::Read { path: shown(), source }),
        }
    }

    fn to_text(&self) -> String {
        let private: String = self.private.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "# Static X25519 key pair. Keep this file private: whoever has it is this peer.\n\
             private {private}\npublic {}\n",
            self.public
        )
    }

    fn parse(text: &str) -> Option<Identity> {
        let mut private = None;
        let mut public = None;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            match line.split_once(' ')? {
                ("private", hex) => private = Some(parse_hex(hex.trim())?),
                ("public", hex) => public = Some(PublicKey(parse_hex(hex.trim())?)),
                _ => return None,
            }
        }
        Some(Identity { private: private?, public: public? })
    }
}

/// The access bits of group and others.
const GROUP_OTHER: u32 = 0o077;

/// Makes `dir`, the directory that holds a key pair and the secrets beside it (a tracker's
/// data directory, a client's state directory), private: creates it (and missing parents)
/// as 0700 if needed, then tightens it to 0700 and the regular files directly in it to
/// owner-only access, logging a warning for each mode it had to change. Symbolic links in
/// the directory are not followed.
pub fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        log::warn!("directory {} had mode {mode:04o}; set to 0700", dir.display());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // `DirEntry::metadata` does not follow a symbolic link.
        let metadata = entry.metadata()?;
        let mode = metadata.permissions().mode() & 0o777;
        if metadata.is_file() && mode & GROUP_OTHER != 0 {
            let path = entry.path();
            let tightened = mode & !GROUP_OTHER;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(tightened))?;
            log::warn!("{} had mode {mode:04o}; set to {tightened:04o}", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_directory_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/state");
        make_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn a_loose_directory_and_its_files_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.join("shares.bin");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        // A link's target outside the directory is not touched.
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, b"y").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        make_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&outside), 0o644);
    }

    #[test]
    fn keys_print_and_parse_as_hex() {
        let key = PublicKey([0xab; 32]);
        let text = key.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<PublicKey>().unwrap(), key);
        assert!("xyz".parse::<PublicKey>().is_err());
        assert!("ab".repeat(31).parse::<PublicKey>().is_err());
        assert!(format!("{}g", "a".repeat(63)).parse::<PublicKey>().is_err());
        assert_eq!(format!("{key:?}"), "Key(abababab..)");
        // Points of small order are never keys, with or without the ignored top bit.
        assert!("00".repeat(32).parse::<PublicKey>().is_err());
        let weak = format!("ec{}ff", "ff".repeat(30));
        assert!(weak.parse::<PublicKey>().is_err());
        assert!(format!("01{}", "00".repeat(31)).parse::<PublicKey>().is_err());
        assert!(!key.is_weak());
    }

    #[test]
    fn created_once_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer.key");
        let (a, created) = Identity::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, created) = Identity::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(a.public(), b.public());
        assert_eq!(a.private(), b.private());
    }

    #[test]
    fn exposed_or_damaged_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer.key");
        Identity::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let other = Identity::generate().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let public_line = text.lines().find(|l| l.starts_with("public")).unwrap().to_string();
        let swapped = text.replace(&public_line, &format!("public {}", other.public()));
        std::fs::write(&path, swapped).unwrap();
        assert!(matches!(Identity::load_or_create(&path), Err(IdentityError::Damaged { .. })));
    }
}

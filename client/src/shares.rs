//! What this peer shares: complete files it uploaded or downloaded, and the verified pieces
//! of files it is downloading (partial seeding).
//!
//! Invariant: a piece is marked as had only after its SHA1 was verified and it was written.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use common::message::FileMeta;
use common::{Bitfield, GroupId, Layout, PieceIndex, Sha1Digest};

/// One shared file.
pub struct SharedFile {
    pub group: GroupId,
    pub meta: FileMeta,
    pub layout: Layout,
    path: Mutex<PathBuf>,
    have: Mutex<Bitfield>,
}

impl SharedFile {
    /// A share of `meta` stored at `path`, with the pieces in `have`.
    pub fn new(
        group: GroupId,
        meta: FileMeta,
        layout: Layout,
        path: PathBuf,
        have: Bitfield,
    ) -> SharedFile {
        SharedFile { group, meta, layout, path: Mutex::new(path), have: Mutex::new(have) }
    }

    /// Where the bytes are.
    pub fn path(&self) -> PathBuf {
        self.path.lock().clone()
    }

    /// Moves the share to a new path (a finished download renamed into place).
    pub fn set_path(&self, path: PathBuf) {
        *self.path.lock() = path;
    }

    /// The pieces this peer has.
    pub fn have(&self) -> Bitfield {
        self.have.lock().clone()
    }

    /// Whether this peer has `piece`.
    pub fn has(&self, piece: PieceIndex) -> bool {
        self.have.lock().has(piece)
    }

    /// Records a verified, written piece.
    pub fn mark(&self, piece: PieceIndex) {
        self.have.lock().set(piece);
    }
}

/// The registry of shared files, by group and digest.
#[derive(Default)]
pub struct Shares {
    files: RwLock<HashMap<(GroupId, Sha1Digest), Arc<SharedFile>>>,
}

impl Shares {
    /// Adds (or replaces) a share.
    pub fn insert(&self, file: Arc<SharedFile>) {
        self.files.write().insert((file.group.clone(), file.meta.digest), file);
    }

    /// The share of `digest` in `group`.
    pub fn get(&self, group: &GroupId, digest: &Sha1Digest) -> Option<Arc<SharedFile>> {
        self.files.read().get(&(group.clone(), *digest)).cloned()
    }

    /// Removes the share of `digest` in `group`.
    pub fn remove(&self, group: &GroupId, digest: &Sha1Digest) -> Option<Arc<SharedFile>> {
        self.files.write().remove(&(group.clone(), *digest))
    }

    /// Removes the share named `name` in `group`.
    pub fn remove_named(&self, group: &GroupId, name: &str) -> Option<Arc<SharedFile>> {
        let mut files = self.files.write();
        let key = files
            .iter()
            .find(|((g, _), f)| g == group && f.meta.name.as_str() == name)
            .map(|(k, _)| k.clone())?;
        files.remove(&key)
    }

    /// Every share.
    pub fn all(&self) -> Vec<Arc<SharedFile>> {
        self.files.read().values().cloned().collect()
    }
}

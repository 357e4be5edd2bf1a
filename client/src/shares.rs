//! What this peer shares: complete files it uploaded or downloaded, and the verified pieces
//! of files it is downloading (partial seeding); saved in the state directory so that a
//! restarted client shares again and resumes its downloads after login.
//!
//! Invariant: a piece is marked as had only after its SHA1 was verified and it was written.
//! Invariant: the state file is replaced atomically (write, fsync, rename), so a crash
//! leaves either the old or the new state, never a torn one.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use common::message::FileMeta;
use common::{Bitfield, GroupId, Layout, PieceIndex, Sha1Digest, UserId};

use crate::piece_buf::{piece_buf, PieceBuf};
use crate::recent_pieces::{Adopted, Kept, RecentPieces};

/// The state file's format version.
const STATE_VERSION: u32 = 1;
/// Connections told of each new piece of one file at most (the seeder serves at most
/// `MAX_PEER_CONNECTIONS` downloaders; watchers of closed connections are pruned).
const MAX_WATCHERS: usize = 256;

/// A file's identity on disk; any write to the file changes it (ctime cannot be set back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    len: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// The stamp of an open file.
    pub fn of(file: &File) -> std::io::Result<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata()?;
        Ok(FileStamp {
            len: m.len(),
            ino: m.ino(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Which pieces were hashed and found good, and in which state of the file.
struct Checked {
    stamp: Option<FileStamp>,
    pieces: Bitfield,
}

/// One shared file.
pub struct SharedFile {
    pub group: GroupId,
    pub meta: FileMeta,
    pub layout: Layout,
    path: Mutex<PathBuf>,
    have: Mutex<Bitfield>,
    /// Where a download of this file will be renamed to; `None` once complete.
    destination: Mutex<Option<PathBuf>>,
    checked: Mutex<Checked>,
    /// The write ends of the wake-up sockets of the seeder connections that push this
    /// file's new pieces (`watch`): one byte is written to each when a piece is marked.
    watchers: Mutex<Vec<UnixStream>>,
    /// A download's newest verified pieces, while peers download them from us.
    recent: Mutex<RecentPieces<PieceBuf>>,
}

impl SharedFile {
    /// A share of `meta` stored at `path`, with the pieces in `have`; `destination` is the
    /// final path of a download in progress.
    pub fn new(
        group: GroupId,
        meta: FileMeta,
        layout: Layout,
        path: PathBuf,
        have: Bitfield,
        destination: Option<PathBuf>,
    ) -> SharedFile {
        let checked = Checked { stamp: None, pieces: Bitfield::empty(layout.n_pieces()) };
        SharedFile {
            group,
            meta,
            layout,
            path: Mutex::new(path),
            have: Mutex::new(have),
            destination: Mutex::new(destination),
            checked: Mutex::new(checked),
            watchers: Mutex::new(Vec::new()),
            recent: Mutex::new(RecentPieces::default()),
        }
    }

    /// A socket that becomes readable whenever a piece of this file is marked as had, for
    /// a seeder connection that pushes new pieces to its downloader. `None` when the file
    /// has too many watchers already (that downloader learns of new pieces from the
    /// tracker instead) or the socket cannot be made.
    pub fn watch(&self) -> Option<UnixStream> {
        let (reader, writer) = UnixStream::pair().ok()?;
        reader.set_nonblocking(true).ok()?;
        writer.set_nonblocking(true).ok()?;
        let mut watchers = self.watchers.lock();
        if watchers.len() >= MAX_WATCHERS {
            // Drop the watchers whose reader is gone (a spurious wake-up costs the others
            // a look at the bitfield).
            watchers.retain(crate::readiness::wake);
        }
        if watchers.len() >= MAX_WATCHERS {
            return None;
        }
        watchers.push(writer);
        Some(reader)
    }

    /// Records that every piece was hashed and found good while the file had `stamp`.
    pub fn set_all_checked(&self, stamp: FileStamp) {
        *self.checked.lock() =
            Checked { stamp: Some(stamp), pieces: Bitfield::full(self.layout.n_pieces()) };
    }

    /// Reads piece `piece` from `file` (this share's bytes) into `data`, making sure it
    /// matches its hash. Each piece is hashed once per state of the file: when the file
    /// changes on disk (its stamp), every piece is checked again before it is served. The
    /// pieces of a download in progress were verified before this peer wrote them.
    pub fn read_piece(
        &self,
        file: &File,
        piece: PieceIndex,
        data: &mut [u8],
    ) -> Result<(), String> {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(data, self.layout.piece_offset(piece)).map_err(|e| e.to_string())?;
        if self.destination().is_some() {
            return Ok(());
        }
        let stamp = FileStamp::of(file).map_err(|e| e.to_string())?;
        {
            let mut checked = self.checked.lock();
            if checked.stamp != Some(stamp) {
                *checked =
                    Checked { stamp: Some(stamp), pieces: Bitfield::empty(self.layout.n_pieces()) };
            }
            if checked.pieces.has(piece) {
                return Ok(());
            }
        }
        if self.meta.pieces.get(piece.0 as usize) != Some(&Sha1Digest::of(data)) {
            return Err(format!("piece {} does not match its hash", piece.0));
        }
        let mut checked = self.checked.lock();
        if checked.stamp == Some(stamp) {
            checked.pieces.set(piece);
        }
        Ok(())
    }

    /// Where the bytes are.
    pub fn path(&self) -> PathBuf {
        self.path.lock().clone()
    }

    /// The final path of a download in progress.
    pub fn destination(&self) -> Option<PathBuf> {
        self.destination.lock().clone()
    }

    /// A finished download: its bytes are now at `path`.
    pub fn complete_at(&self, path: PathBuf) {
        *self.path.lock() = path;
        *self.destination.lock() = None;
        self.recent.lock().clear();
    }

    /// Offers `buf[..len]`, the verified and written bytes of `piece` of this download in
    /// progress, for the seeder to serve from memory (`recent_pieces`). Kept only if peers
    /// download this file from us now; otherwise it would be memory for no one. Returns the
    /// buffer for the caller to receive its next piece into: `buf` itself if it was not
    /// kept, else the oldest kept piece's, or a new one.
    pub fn offer_recent(&self, piece: PieceIndex, buf: PieceBuf, len: usize) -> PieceBuf {
        if self.destination.lock().is_none() || self.watchers.lock().is_empty() {
            return buf;
        }
        let adopted = self.recent.lock().adopt(piece, buf, len);
        match adopted {
            Adopted::Spare(spare) => spare,
            Adopted::Refused(buf) => buf,
            Adopted::Kept => piece_buf(),
        }
    }

    /// The bytes of `piece` if this download verified it lately (`offer_recent`).
    pub fn recent_piece(&self, piece: PieceIndex) -> Option<Arc<Kept<PieceBuf>>> {
        self.recent.lock().get(piece)
    }

    /// The pieces this peer has.
    pub fn have(&self) -> Bitfield {
        self.have.lock().clone()
    }

    /// Replaces what this peer has (after re-verifying a resumed download).
    pub fn set_have(&self, have: Bitfield) {
        *self.have.lock() = have;
    }

    /// Whether this peer has `piece`.
    pub fn has(&self, piece: PieceIndex) -> bool {
        self.have.lock().has(piece)
    }

    /// Records a verified, written piece.
    pub fn mark(&self, piece: PieceIndex) {
        self.have.lock().set(piece);
        self.watchers.lock().retain(crate::readiness::wake);
    }

    fn saved(&self) -> SavedShare {
        SavedShare {
            group: self.group.clone(),
            meta: self.meta.clone(),
            path: self.path(),
            have: self.have(),
            destination: self.destination(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SavedShare {
    group: GroupId,
    meta: FileMeta,
    path: PathBuf,
    have: Bitfield,
    destination: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, Default)]
struct SavedState {
    version: u32,
    users: BTreeMap<UserId, Vec<SavedShare>>,
}

/// The registry of the logged-in user's shares, by group and digest.
pub struct Shares {
    files: RwLock<HashMap<(GroupId, Sha1Digest), Arc<SharedFile>>>,
    /// Whose shares are loaded, and the other users' saved shares; held while saving.
    saved: Mutex<Saved>,
    state_file: Option<PathBuf>,
}

/// What the state file holds besides the loaded user's shares. The file is read once, at
/// the first login; this process is its only writer, so saving needs no read.
#[derive(Default)]
struct Saved {
    owner: Option<UserId>,
    others: Option<BTreeMap<UserId, Vec<SavedShare>>>,
}

impl Shares {
    /// A registry saved to `state_file` (or never saved, for `None`).
    pub fn new(state_file: Option<PathBuf>) -> Shares {
        Shares { files: RwLock::default(), saved: Mutex::new(Saved::default()), state_file }
    }

    /// Makes `user`'s saved shares the current ones (after a login). Returns them; shares of
    /// another user loaded before are put away (they stay saved).
    pub fn load_user(&self, user: &UserId) -> Vec<Arc<SharedFile>> {
        let mut saved = self.saved.lock();
        if saved.owner.as_ref() == Some(user) {
            return self.all();
        }
        let current: Vec<SavedShare> = self.all().iter().map(|f| f.saved()).collect();
        let Saved { owner, others } = &mut *saved;
        let others = others.get_or_insert_with(|| self.read_state().users);
        if let Some(previous) = owner.take() {
            others.insert(previous, current);
        }
        let mine = others.remove(user).unwrap_or_default();
        let mut files = self.files.write();
        files.clear();
        for s in mine {
            let Ok(layout) = Layout::new(s.meta.size) else { continue };
            if s.have.n_pieces() != layout.n_pieces() {
                continue;
            }
            let file = SharedFile::new(s.group, s.meta, layout, s.path, s.have, s.destination);
            files.insert((file.group.clone(), file.meta.digest), Arc::new(file));
        }
        *owner = Some(user.clone());
        files.values().cloned().collect()
    }

    /// Adds (or replaces) a share and saves.
    pub fn insert(&self, file: Arc<SharedFile>) {
        self.files.write().insert((file.group.clone(), file.meta.digest), file);
        self.save();
    }

    /// The share of `digest` in `group`.
    pub fn get(&self, group: &GroupId, digest: &Sha1Digest) -> Option<Arc<SharedFile>> {
        self.files.read().get(&(group.clone(), *digest)).cloned()
    }

    /// Removes the share of `digest` in `group` and saves.
    pub fn remove(&self, group: &GroupId, digest: &Sha1Digest) -> Option<Arc<SharedFile>> {
        let removed = self.files.write().remove(&(group.clone(), *digest));
        self.save();
        removed
    }

    /// Removes the share named `name` in `group` and saves.
    pub fn remove_named(&self, group: &GroupId, name: &str) -> Option<Arc<SharedFile>> {
        let key = {
            let files = self.files.read();
            files
                .iter()
                .find(|((g, _), f)| g == group && f.meta.name.as_str() == name)
                .map(|(k, _)| k.clone())
        }?;
        self.remove(&key.0, &key.1)
    }

    /// Every share.
    pub fn all(&self) -> Vec<Arc<SharedFile>> {
        self.files.read().values().cloned().collect()
    }

    /// Saves the current user's shares (progress of downloads included). Failures are
    /// logged: sharing goes on, only the memory of it across a restart is at risk.
    pub fn save(&self) {
        let Some(path) = &self.state_file else { return };
        let saved = self.saved.lock();
        let Some(user) = saved.owner.as_ref() else { return };
        let mine: Vec<SavedShare> = self.all().iter().map(|f| f.saved()).collect();
        let mut users: BTreeMap<&UserId, &Vec<SavedShare>> =
            saved.others.iter().flatten().collect();
        users.insert(user, &mine);
        if let Err(e) = write_atomically(path, &SavedStateRef { version: STATE_VERSION, users }) {
            log::error!("cannot save shares to {}: {e}", path.display());
        }
    }

    fn read_state(&self) -> SavedState {
        let Some(path) = &self.state_file else { return SavedState::default() };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return SavedState::default(),
            Err(e) => {
                log::error!("cannot read {}: {e}", path.display());
                return SavedState::default();
            }
        };
        match postcard::from_bytes::<SavedState>(&bytes) {
            Ok(state) if state.version == STATE_VERSION => state,
            Ok(state) => {
                log::error!(
                    "{}: unknown version {}; starting afresh",
                    path.display(),
                    state.version
                );
                SavedState::default()
            }
            Err(e) => {
                let aside = path.with_extension("corrupt");
                log::error!("{} is corrupt ({e}); moved to {}", path.display(), aside.display());
                let _ = std::fs::rename(path, aside);
                SavedState::default()
            }
        }
    }
}

/// `SavedState` by reference, for writing: the same encoding.
#[derive(Serialize)]
struct SavedStateRef<'a> {
    version: u32,
    users: BTreeMap<&'a UserId, &'a Vec<SavedShare>>,
}

/// Writes the state to a temporary file readable by its owner only (0600: it tells what the
/// user shares and where), syncs it and renames it over `path`.
fn write_atomically(path: &Path, state: &SavedStateRef<'_>) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = postcard::to_stdvec(state).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::hash::file_digest;

    fn share(name: &str, have: Bitfield) -> Arc<SharedFile> {
        let pieces = vec![Sha1Digest([1; 20]); have.n_pieces() as usize];
        let size = u64::from(have.n_pieces()) * common::PIECE_SIZE as u64;
        let meta = FileMeta {
            name: name.parse().unwrap(),
            size,
            digest: file_digest(size, &pieces),
            pieces,
        };
        let layout = Layout::new(size).unwrap();
        Arc::new(SharedFile::new(
            GroupId::new("g").unwrap(),
            meta,
            layout,
            PathBuf::from(name),
            have,
            None,
        ))
    }

    #[test]
    fn shares_are_saved_per_user_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("shares.bin");
        let alice = UserId::new("alice").unwrap();
        let bob = UserId::new("bob").unwrap();
        {
            let shares = Shares::new(Some(state.clone()));
            shares.load_user(&alice);
            shares.insert(share("a", Bitfield::full(2)));
            let partial = share("p", Bitfield::empty(3));
            shares.insert(Arc::clone(&partial));
            partial.mark(PieceIndex(1));
            shares.save();
            // Another user on the same client sees none of alice's shares.
            assert!(shares.load_user(&bob).is_empty());
            shares.insert(share("b", Bitfield::full(1)));
        }
        let shares = Shares::new(Some(state));
        let mut loaded: Vec<_> =
            shares.load_user(&alice).iter().map(|f| (f.meta.name.to_string(), f.have())).collect();
        loaded.sort_by(|a, b| a.0.cmp(&b.0));
        let mut p = Bitfield::empty(3);
        p.set(PieceIndex(1));
        assert_eq!(loaded, [("a".to_string(), Bitfield::full(2)), ("p".to_string(), p)]);
        assert_eq!(shares.load_user(&bob).len(), 1);
    }

    #[test]
    fn a_corrupt_state_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("shares.bin");
        std::fs::write(&state, b"\xff\xff garbage").unwrap();
        let shares = Shares::new(Some(state.clone()));
        assert!(shares.load_user(&UserId::new("alice").unwrap()).is_empty());
        assert!(state.with_extension("corrupt").exists());
    }

    #[test]
    fn a_download_keeps_its_newest_pieces_only_while_peers_download_from_it() {
        let n = 4;
        let download = Arc::new(SharedFile::new(
            GroupId::new("g").unwrap(),
            share("f", Bitfield::empty(n)).meta.clone(),
            Layout::new(u64::from(n) * common::PIECE_SIZE as u64).unwrap(),
            PathBuf::from("f.part"),
            Bitfield::empty(n),
            Some(PathBuf::from("f")),
        ));
        let piece = |text: &[u8]| {
            let mut buf = piece_buf();
            buf[..text.len()].copy_from_slice(text);
            buf
        };
        let bytes = |kept: Option<Arc<Kept<PieceBuf>>>| kept.map(|k| k.to_vec());
        // No seeder connection watches it: nothing is kept, the buffer comes back.
        let back = download.offer_recent(PieceIndex(0), piece(b"piece 0"), 7);
        assert_eq!(&back[..7], b"piece 0");
        assert!(download.recent_piece(PieceIndex(0)).is_none());
        // A peer downloads it from us: pieces are kept and served from memory, and the
        // caller gets another buffer to receive into.
        let watcher = download.watch().expect("a watch socket");
        let other = download.offer_recent(PieceIndex(1), piece(b"piece 1"), 7);
        assert_eq!(other.len(), common::PIECE_SIZE);
        assert_eq!(bytes(download.recent_piece(PieceIndex(1))), Some(b"piece 1".to_vec()));
        // Complete: the file is read from disk again.
        download.complete_at(PathBuf::from("f"));
        assert!(download.recent_piece(PieceIndex(1)).is_none());
        download.offer_recent(PieceIndex(2), piece(b"piece 2"), 7);
        assert!(download.recent_piece(PieceIndex(2)).is_none());
        drop(watcher);
        // A complete share never keeps pieces.
        let complete = share("c", Bitfield::full(n));
        let _watcher = complete.watch();
        complete.offer_recent(PieceIndex(0), piece(b"piece 0"), 7);
        assert!(complete.recent_piece(PieceIndex(0)).is_none());
    }
}

//! What this peer shares: the logged-in user's swarms, by group and digest, and the state
//! file that remembers every user's across restarts (`state_file`).
//!
//! One thread, `state-writer`, owns `<state-dir>/shares.bin`: changes only nudge it, and it
//! writes the registry as it is then (write, fsync, rename), so no download coordinator,
//! seeder connection or REPL command ever waits on an fsync, and a burst of changes costs
//! one write. A command that must be durable before it answers (`upload_file`,
//! `stop_share`, ...) waits for a write that began after it (`flush`).
//!
//! Invariant: the state file is replaced atomically (write, fsync, rename), so a crash
//! leaves either the old or the new state, never a torn one.
//! Invariant: only the `state-writer` thread writes the state file; a file of a format
//! this build does not know stops the client at start and is never overwritten.

pub mod state_file;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Mutex, RwLock};

use common::{Bitfield, GroupId, Sha1Digest, UserId};

use crate::swarm::{Changes, Chosen, ItemLayout, Phase, Stamped, Swarm};
use state_file::{SavedShare, SavedUsers};

/// Why the state file cannot be used. `Display` says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(
        "{path}: {source}; a newer client wrote it: run that client, or move the file aside (mv {path} {path}.old) to start this one with no saved shares"
    )]
    UnknownFormat { path: String, source: state_file::DecodeError },
    #[error(
        "{path} is damaged ({why}); it was moved to {aside}, so nothing is lost: start again to begin with no saved shares, or put it back from a copy"
    )]
    Corrupt { path: String, why: String, aside: String },
    #[error("cannot start the state-writer thread: {0}")]
    Thread(std::io::Error),
}

type Key = (GroupId, Sha1Digest);

/// The registry of the logged-in user's swarms.
pub struct Registry {
    inner: Arc<Inner>,
    writer: Mutex<Option<Writer>>,
}

struct Inner {
    swarms: RwLock<HashMap<Key, Arc<Swarm>>>,
    /// Whose swarms are loaded, and the other users' saved shares. Lock order: this, then
    /// `swarms`, then a swarm's.
    saved: Mutex<Saved>,
}

/// What the state file holds besides the loaded user's swarms. The file is read once, at
/// start; this process is its only writer, so saving needs no read.
#[derive(Default)]
struct Saved {
    owner: Option<UserId>,
    others: SavedUsers,
}

/// The handle on the `state-writer` thread.
struct Writer {
    requests: Sender<SaveRequest>,
    thread: JoinHandle<()>,
}

/// What the writer is asked.
enum SaveRequest {
    /// Write the registry as it is when this is taken.
    Nudge,
    /// The same, then say so.
    Flush(Sender<()>),
}

impl Registry {
    /// The registry saved to `state_file` (read now), or never saved, for `None`.
    pub fn open(state_file: Option<PathBuf>) -> Result<Registry, StateFileError> {
        let others = match &state_file {
            Some(path) => read(path)?,
            None => SavedUsers::new(),
        };
        let inner = Arc::new(Inner {
            swarms: RwLock::default(),
            saved: Mutex::new(Saved { owner: None, others }),
        });
        let writer = match state_file {
            Some(path) => Some(Writer::start(Arc::clone(&inner), path)?),
            None => None,
        };
        Ok(Registry { inner, writer: Mutex::new(writer) })
    }

    /// Makes `user`'s saved shares the current ones (after a login), as swarms; a download
    /// under way is `Checking` (its pieces are claimed, not yet re-hashed) and tells its
    /// changes to `changes`. Returns them; swarms of another user loaded before are put
    /// away (they stay saved).
    pub fn load_user(&self, user: &UserId, changes: &Arc<Changes>) -> Vec<Arc<Swarm>> {
        let mut saved = self.inner.saved.lock();
        if saved.owner.as_ref() == Some(user) {
            return self.all();
        }
        let current: Vec<SavedShare> = self.all().iter().filter_map(|s| saved_share(s)).collect();
        if let Some(previous) = saved.owner.take() {
            saved.others.insert(previous, current);
        }
        let mine = saved.others.remove(user).unwrap_or_default();
        let mut swarms = self.inner.swarms.write();
        swarms.clear();
        for s in mine {
            let Ok(layout) = ItemLayout::of(&s.meta) else { continue };
            if s.have.n_pieces() != layout.n_pieces() {
                continue;
            }
            let Ok(chosen) = Chosen::of(&s.meta, &layout, s.selection) else { continue };
            let swarm = match s.destination {
                Some(dest) => {
                    let swarm = Swarm::download(
                        s.group,
                        s.meta,
                        layout,
                        chosen,
                        s.path,
                        dest,
                        s.have,
                        Phase::Checking,
                        Arc::clone(changes),
                    );
                    if s.paused {
                        swarm.pause_after_check();
                    }
                    if let Some(id) = s.part_id {
                        swarm.record_part(id);
                    }
                    swarm.set_stored(s.stored);
                    swarm
                }
                None => {
                    Swarm::seeding_chosen(s.group, s.meta, layout, chosen, s.path, Stamped::Nothing)
                }
            };
            swarms.insert((swarm.group.clone(), swarm.meta.digest), Arc::new(swarm));
        }
        saved.owner = Some(user.clone());
        swarms.values().cloned().collect()
    }

    /// Adds (or replaces) a swarm. Saved by the caller's `save` or `flush`: a command that
    /// waits for its change to be on disk costs one write, not two.
    pub fn insert(&self, swarm: Arc<Swarm>) {
        self.inner.swarms.write().insert((swarm.group.clone(), swarm.meta.digest), swarm);
    }

    /// The swarm of `digest` in `group`.
    pub fn get(&self, group: &GroupId, digest: &Sha1Digest) -> Option<Arc<Swarm>> {
        self.inner.swarms.read().get(&(group.clone(), *digest)).cloned()
    }

    /// Removes the swarm of `digest` in `group`, if it is `swarm` (a newer swarm of the same
    /// file stays). Saved by the caller's `save` or `flush`.
    pub fn remove(&self, swarm: &Arc<Swarm>) -> bool {
        let key = (swarm.group.clone(), swarm.meta.digest);
        let mut swarms = self.inner.swarms.write();
        match swarms.get(&key) {
            Some(s) if Arc::ptr_eq(s, swarm) => swarms.remove(&key).is_some(),
            _ => false,
        }
    }

    /// Removes the swarm named `name` in `group`. Saved by the caller's `save` or `flush`.
    pub fn remove_named(&self, group: &GroupId, name: &str) -> Option<Arc<Swarm>> {
        let mut swarms = self.inner.swarms.write();
        let key = swarms
            .iter()
            .find(|((g, _), s)| g == group && s.meta.name.as_str() == name)
            .map(|(k, _)| k.clone())?;
        swarms.remove(&key)
    }

    /// Removes every swarm of `group`. Saved by the caller's `save` or `flush`.
    pub fn remove_group(&self, group: &GroupId) {
        self.inner.swarms.write().retain(|(g, _), _| g != group);
    }

    /// Every swarm.
    pub fn all(&self) -> Vec<Arc<Swarm>> {
        self.inner.swarms.read().values().cloned().collect()
    }

    /// Asks the writer to save the registry as it is now (progress of downloads
    /// included); returns at once.
    pub fn save(&self) {
        if let Some(writer) = self.writer.lock().as_ref() {
            // A nudge already queued will write this change too.
            let _ = writer.requests.try_send(SaveRequest::Nudge);
        }
    }

    /// Saves the registry as it is now and waits until it is on disk (or the write failed,
    /// which is logged).
    pub fn flush(&self) {
        let (done, saved) = crossbeam_channel::bounded(1);
        let sent = match self.writer.lock().as_ref() {
            Some(writer) => writer.requests.send(SaveRequest::Flush(done)).is_ok(),
            None => false,
        };
        if sent {
            let _ = saved.recv();
        }
    }

    /// Writes the registry a last time and stops the writer (at exit).
    pub fn close(&self) {
        self.flush();
        let Some(writer) = self.writer.lock().take() else { return };
        // Its last sender gone, the writer's loop ends.
        drop(writer.requests);
        let _ = writer.thread.join();
    }
}

impl Writer {
    fn start(inner: Arc<Inner>, path: PathBuf) -> Result<Writer, StateFileError> {
        // One nudge waiting is enough: it writes whatever changed before it is taken.
        let (requests, todo) = crossbeam_channel::bounded::<SaveRequest>(64);
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || write_loop(&inner, &path, &todo))
            .map_err(StateFileError::Thread)?;
        Ok(Writer { requests, thread })
    }
}

/// The `state-writer` thread: for each request (and every one queued behind it), one
/// write of the registry as it is then.
fn write_loop(inner: &Inner, path: &Path, todo: &Receiver<SaveRequest>) {
    while let Ok(first) = todo.recv() {
        let mut waiting: Vec<Sender<()>> = Vec::new();
        for request in std::iter::once(first).chain(todo.try_iter()) {
            if let SaveRequest::Flush(done) = request {
                waiting.push(done);
            }
        }
        if let Err(e) = write_state(inner, path) {
            log::error!("cannot save shares to {}: {e}", path.display());
        }
        for done in waiting {
            let _ = done.send(());
        }
    }
}

/// Writes every user's shares, the loaded user's as its swarms are now.
fn write_state(inner: &Inner, path: &Path) -> std::io::Result<()> {
    let bytes = {
        let saved = inner.saved.lock();
        let Some(owner) = saved.owner.as_ref() else { return Ok(()) };
        let mine: Vec<SavedShare> =
            inner.swarms.read().values().filter_map(|s| saved_share(s)).collect();
        let others = saved.others.iter().map(|(u, s)| (u, s.as_slice()));
        state_file::encode(others.chain([(owner, mine.as_slice())]))
            .map_err(std::io::Error::other)?
    };
    crate::private_file::write_atomically(path, &bytes)
}

/// What the state file keeps of a swarm: a failed download is not kept.
fn saved_share(swarm: &Swarm) -> Option<SavedShare> {
    swarm.inspect(|s| {
        let destination = match s.phase() {
            Phase::Failed(_) | Phase::Cancelled => return None,
            Phase::Seeding => None,
            _ => s.downloading_to().cloned(),
        };
        // A resumed download not yet re-hashed keeps the pieces it claimed.
        let have: Bitfield = s.have().clone();
        Some(SavedShare {
            group: swarm.group.clone(),
            meta: swarm.meta.clone(),
            path: s.path().clone(),
            have,
            destination,
            paused: s.is_paused(),
            part_id: s.part_id(),
            selection: swarm.chosen.selection.clone(),
            stored: s.stored(),
        })
    })
}

/// Every user's saved shares in the state file at `path` (none if there is no file). A
/// corrupt file is moved aside (`.corrupt`, never deleted) and stops the start, saying so;
/// a file of another format is an error that says what to do.
fn read(path: &Path) -> Result<SavedUsers, StateFileError> {
    let shown = || path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SavedUsers::new()),
        Err(source) => return Err(StateFileError::Read { path: shown(), source }),
    };
    match state_file::decode(&bytes) {
        Ok(users) => Ok(users),
        Err(source @ state_file::DecodeError::UnknownFormat { .. }) => {
            Err(StateFileError::UnknownFormat { path: shown(), source })
        }
        Err(e) => {
            let aside = path.with_extension("corrupt");
            if let Err(moved) = std::fs::rename(path, &aside) {
                return Err(StateFileError::Read { path: shown(), source: moved });
            }
            Err(StateFileError::Corrupt {
                path: shown(),
                why: e.to_string(),
                aside: aside.display().to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::PieceIndex;

    use crate::testutil::meta;

    fn seeding(name: &str, n: u32) -> Arc<Swarm> {
        Arc::new(crate::testutil::seeding(name, n))
    }

    fn downloading(name: &str, n: u32, changes: &Arc<Changes>) -> Arc<Swarm> {
        Arc::new(crate::testutil::download(name, n, Arc::clone(changes)))
    }

    fn names(swarms: &[Arc<Swarm>]) -> Vec<(String, Bitfield, Option<PathBuf>)> {
        let mut names: Vec<_> = swarms
            .iter()
            .map(|s| (s.meta.name.to_string(), s.have(), s.downloading_to()))
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        names
    }

    #[test]
    fn shares_are_saved_per_user_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("shares.bin");
        let alice = UserId::new("alice").unwrap();
        let bob = UserId::new("bob").unwrap();
        let changes = Arc::new(Changes::default());
        {
            let registry = Registry::open(Some(state.clone())).unwrap();
            registry.load_user(&alice, &changes);
            registry.insert(seeding("a", 2));
            let partial = downloading("p", 3, &changes);
            registry.insert(Arc::clone(&partial));
            partial.piece_verified(PieceIndex(1), None);
            // Another user on the same client sees none of alice's shares.
            assert!(registry.load_user(&bob, &changes).is_empty());
            registry.insert(seeding("b", 1));
            registry.close();
        }
        let registry = Registry::open(Some(state)).unwrap();
        let mut p = Bitfield::empty(3);
        p.set(PieceIndex(1));
        assert_eq!(
            names(&registry.load_user(&alice, &changes)),
            [
                ("a".to_string(), Bitfield::full(2), None),
                ("p".to_string(), p, Some(PathBuf::from("p")))
            ]
        );
        // A download loaded from the file re-hashes before it fetches.
        let loaded = registry.get(&GroupId::new("g").unwrap(), &meta("p", 3).digest).unwrap();
        assert!(matches!(loaded.phase(), Phase::Checking));
        assert_eq!(registry.load_user(&bob, &changes).len(), 1);
    }

    #[test]
    fn flush_returns_once_the_change_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("shares.bin");
        let registry = Registry::open(Some(state.clone())).unwrap();
        registry.load_user(&UserId::new("alice").unwrap(), &Arc::default());
        registry.insert(seeding("a", 1));
        registry.flush();
        let users = state_file::decode(&std::fs::read(&state).unwrap()).unwrap();
        assert_eq!(users[&UserId::new("alice").unwrap()].len(), 1);
        // A failed download is not saved.
        let changes = Arc::new(Changes::default());
        let failed = downloading("f", 2, &changes);
        registry.insert(Arc::clone(&failed));
        failed.end(Err(crate::swarm::DownloadError::WholeFileMismatch));
        registry.flush();
        let users = state_file::decode(&std::fs::read(&state).unwrap()).unwrap();
        assert_eq!(users[&UserId::new("alice").unwrap()].len(), 1);
        // Removing only removes the swarm it names, not a newer one of the same file.
        assert!(!registry.remove(&seeding("a", 1)));
        assert_eq!(registry.all().len(), 2);
    }

    #[test]
    fn a_corrupt_state_file_stops_the_start_and_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("shares.bin");
        std::fs::write(&state, b"\x01\xff\xff garbage").unwrap();
        let err = Registry::open(Some(state.clone())).err().unwrap().to_string();
        assert!(err.contains("is damaged ("), "{err}");
        assert!(err.contains("start again to begin with no saved shares"), "{err}");
        assert_eq!(
            std::fs::read(state.with_extension("corrupt")).unwrap(),
            b"\x01\xff\xff garbage"
        );
        // The next start begins afresh.
        let registry = Registry::open(Some(state)).unwrap();
        assert!(registry.load_user(&UserId::new("alice").unwrap(), &Arc::default()).is_empty());
    }

    #[test]
    fn a_state_file_of_another_format_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("shares.bin");
        std::fs::write(&state, b"\x07 from a newer client").unwrap();
        let err = Registry::open(Some(state.clone())).err().unwrap();
        let shown = state.display();
        assert_eq!(
            err.to_string(),
            format!(
                "{shown}: it has format 7; this client reads formats 1 to 6; a newer client wrote it: run that client, or move the file aside (mv {shown} {shown}.old) to start this one with no saved shares"
            )
        );
        assert_eq!(std::fs::read(&state).unwrap(), b"\x07 from a newer client");
    }
}

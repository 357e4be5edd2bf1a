//! Downloads: starting and resuming them. Each download is a `Swarm` (its state and
//! statistics) driven by its own coordinator thread (`dl-N`), split by job:
//!
//! - `coordinator`: the `dl-N` loop that owns the `Scheduler` and the workers;
//! - `peer_set`: which peers to connect to, bans and back-off, and when to ask the tracker
//!   for peers (pure policy);
//! - `tracker_calls`: the download's tracker calls on a thread of their own;
//! - `worker`: one thread per peer connection;
//! - `disk_writer`: the client's one thread that writes verified pieces;
//! - `event`: what workers and the disk writer tell the coordinator;
//! - `store`: where a download's verified pieces live: a file's `.part`, or a folder's
//!   staging tree (issue 23);
//! - `finish`: the whole-item check, making it durable, and the rename into place;
//! - `destination`: what a resumed download finds at its final path (the item, complete,
//!   if a kill came between the rename into place and the save of the download's end);
//! - `part_file`: file-system safety of the `.part` file;
//! - `scheduler`: which piece to ask of which peer (pure);
//! - `record`: the views' records of the downloads.
//!
//! `start` asks the tracker for the file on the caller's thread (its refusals are the
//! command's errors), creates the `.part` file (a folder: its staging tree) and hands over
//! to the download's thread.
//! `resume` does everything on the download's thread, re-hashing the pieces it was saved
//! with first, so a login with unfinished downloads returns at once. A resumed download
//! whose destination already holds the item, complete and verified, is complete: it is
//! shared from there, and its `.part` (if still there and the one it created) removed.

pub mod coordinator;
pub mod destination;
pub mod disk_writer;
pub mod event;
pub mod finish;
pub mod greeting;
pub mod part_file;
pub mod path_plan;
pub mod paths;
pub mod peer_set;
pub mod puncher;
pub mod record;
pub mod scheduler;
pub mod store;
pub mod target;
pub mod tracker_calls;
pub mod worker;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rayon::prelude::*;

use common::folder::{folder_digest, Selection, TreeError};
use common::hash::file_digest;
use common::message::{FileMeta, PeerInfo, Reply, Request, Ticket};
use common::{Bitfield, FileName, GroupId, PieceIndex, Sha1Digest};

use crate::rate::RateCap;
use crate::registry::Registry;
use crate::swarm::{Chosen, DownloadError, FileStamp, ItemLayout, PartId, Phase, Stored, Swarm};
use crate::tracker_session::{CallError, TrackerSession};
use coordinator::Coordinator;
use disk_writer::DiskWriter;
use store::DownloadFile;
use store::{Store, TreeStore};

pub use coordinator::MAX_IN_FLIGHT;
pub use peer_set::MAX_PEERS;
pub use record::{DownloadRecord, DownloadState, Downloads};

/// Why a download could not start. `Display` is the text after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("tracker sent inconsistent metadata for {0}")]
    BadMeta(FileName),
    #[error("{name} is a folder; download_file {group} {name}/ fetches it")]
    IsAFolder { group: GroupId, name: FileName },
    #[error("{name} is a file, not a folder; download_file {group} {name} fetches it")]
    NotAFolder { group: GroupId, name: FileName },
    #[error("{name}/: {source}")]
    NotInFolder { name: FileName, source: TreeError },
    #[error("this client already shares or downloads {shown}; stop_share {group} {name} first to fetch another part of it")]
    PartShared { group: GroupId, name: FileName, shown: String },
    #[error("{0} already exists; remove it or choose another destination")]
    Exists(String),
    #[error("{0} already exists and is not a download of this client; remove it or choose another destination")]
    PartExists(String),
    #[error("{0} is not a regular file")]
    NotRegular(String),
    /// On resume: the `.part` file at the saved path is not the one this download created
    /// (issue 21); the download starts over in a fresh file.
    #[error("{path} is not the partial file this client created: {why}")]
    NotOurs { path: String, why: String },
    /// On resume: something is at the destination that is not the item, complete (`why`);
    /// it is left as it is.
    #[error("{path} already exists and is not {name} ({why}); it is left as it is")]
    NotTheItem { path: String, name: String, why: String },
    #[error("directory {0} does not exist; create it first (mkdir) or choose another destination")]
    NoDirectory(String),
    #[error("cannot write {path}: {reason}")]
    Unwritable { path: String, reason: String },
    #[error("already downloading {name} to {path}")]
    AlreadyRunning { name: FileName, path: String },
    #[error("unexpected reply from tracker: {0}")]
    UnexpectedReply(String),
    /// Cancelled by the user while it was being checked.
    #[error("cancelled")]
    Cancelled,
}

/// What a download needs from the rest of the client.
#[derive(Clone)]
pub struct Context {
    /// This peer's key pair: seeders check that tickets are shown by their holder.
    pub identity: Arc<common::Identity>,
    pub tracker: Arc<TrackerSession>,
    pub registry: Arc<Registry>,
    pub downloads: Arc<Downloads>,
    /// How long a download waits for a peer that has its missing pieces before it fails.
    pub stall_timeout: Duration,
    /// Writes verified pieces to disk.
    pub writer: DiskWriter,
    /// The download cap, all downloads together (`limit_rate down`).
    pub download_cap: Arc<RateCap>,
    /// The seeder's upload cap (`limit_rate up`), kept here for the operations.
    pub upload_cap: Arc<RateCap>,
    /// The reversed connections workers wait for (issue 19), which the seeder hands over.
    pub reversals: Arc<crate::reversal::Reversals>,
    /// This peer's listen address and what it knows of its router mapping: whether a
    /// reversal is worth asking for (`reach::reversal_may_work`).
    pub reach: (std::net::SocketAddr, crate::advertiser::Reachability),
    /// The background hole punches of every download (issue 19): a share of the tracker's
    /// calls budget.
    pub upgrades: Arc<parking_lot::Mutex<path_plan::UpgradeBudget>>,
}

/// What a download's thread starts fetching with: where its pieces go, the peers and a
/// ticket.
type Prepared = (Store, Vec<PeerInfo>, Ticket);

/// What a download's thread does once prepared.
enum Ready {
    /// Fetches the pieces it lacks.
    Fetch(Box<Prepared>),
    /// Nothing: the item is complete at its destination (a resume found it there), with
    /// the stamp `finish` would have given.
    Complete(Option<FileStamp>),
}

/// Starts downloading `name` of `group` to `destination` (a directory or a file path) in
/// the background. Returns the final path. `folder`: what the user asked of a folder
/// (issue 23): all of it (`name/`), fetched into `<destination>/<name>/`; one file of it
/// (`name/path/to/f`), fetched to `<destination>/f` (or to `destination`, a new file
/// path, as a file shared alone); one directory of it (`name/path/to/d/`), fetched into
/// `<destination>/d/`. Only the pieces of the part chosen are fetched.
pub fn start(
    ctx: &Context,
    group: GroupId,
    name: FileName,
    folder: Option<&Selection>,
    destination: &Path,
) -> Result<PathBuf, StartError> {
    let (meta, peers, ticket) = get_file(ctx, &group, &name)?;
    let selection = match (meta.is_folder(), folder) {
        (false, None) => Selection::Whole,
        (true, Some(selection)) => selection.clone(),
        (true, None) => return Err(StartError::IsAFolder { group, name }),
        (false, Some(_)) => return Err(StartError::NotAFolder { group, name }),
    };
    let layout = ItemLayout::of(&meta).map_err(|_| StartError::BadMeta(name.clone()))?;
    if !consistent(&meta, &layout) || meta.name != name {
        return Err(StartError::BadMeta(name));
    }
    let chosen = Chosen::of(&meta, &layout, selection)
        .map_err(|source| StartError::NotInFolder { name: name.clone(), source })?;
    // One swarm per folder and group: a part of it beside another part, or beside all of
    // it, would be two swarms under one digest.
    if let Some(existing) = ctx.registry.get(&group, &meta.digest) {
        if !chosen.is_whole() || !existing.chosen.is_whole() {
            return Err(StartError::PartShared { group, name, shown: existing.shown_name() });
        }
    }
    let dest = match &chosen.selection {
        Selection::Whole if meta.is_folder() => part_file::folder_destination(destination, &name)?,
        Selection::Whole => part_file::resolve_destination(destination, &name)?,
        selection @ Selection::Inside { dir: true, .. } => {
            part_file::folder_destination(destination, selection.base_name(&name))?
        }
        selection @ Selection::Inside { dir: false, .. } => {
            part_file::resolve_destination(destination, selection.base_name(&name))?
        }
    };
    if ctx.downloads.running_to(&dest) {
        return Err(StartError::AlreadyRunning { name, path: dest.display().to_string() });
    }
    let (store, path, id) = match &meta.tree {
        Some(tree) => create_tree(tree, &chosen.selection, &dest)?,
        None => create_part(&dest, layout.part_len())?,
    };
    let have = Bitfield::empty(layout.n_pieces());
    let changes = Arc::clone(ctx.downloads.changes());
    let phase = Phase::Fetching;
    let swarm =
        Swarm::download(group, meta, layout, chosen, path, dest.clone(), have, phase, changes);
    // Saved with the share: a resume adopts only this very file (or staging directory).
    swarm.record_part(id);
    let swarm = Arc::new(swarm);
    ctx.registry.insert(Arc::clone(&swarm));
    // Saved before the command answers: after a crash, the `.part` is known to be ours.
    ctx.registry.flush();
    launch(ctx, swarm, move |_, _| Ok(Ready::Fetch(Box::new((store, peers, ticket)))));
    Ok(dest)
}

/// Resumes a download saved by an earlier run, on its own thread: re-verifies the pieces it
/// had (on the rayon pool) rather than trusting them, then fetches the rest. A resume that
/// cannot even start shows up as a failed download.
pub fn resume(ctx: &Context, swarm: Arc<Swarm>) {
    let Some(dest) = swarm.downloading_to() else { return };
    if ctx.downloads.running_to(&dest) {
        return;
    }
    launch(ctx, swarm, prepare_resume);
}

/// Registers the download and starts its thread, which `prepare`s it (a failure there
/// fails the download) and runs its coordinator.
fn launch(
    ctx: &Context,
    swarm: Arc<Swarm>,
    prepare: impl FnOnce(&Context, &Swarm) -> Result<Ready, StartError> + Send + 'static,
) {
    let (idx, control) = ctx.downloads.add(Arc::clone(&swarm));
    let (thread_ctx, thread_swarm) = (ctx.clone(), Arc::clone(&swarm));
    let spawned = thread::Builder::new().name(format!("dl-{idx}")).spawn(move || {
        let (ctx, swarm) = (thread_ctx, thread_swarm);
        match prepare(&ctx, &swarm) {
            Ok(Ready::Fetch(prepared)) => {
                let (store, peers, ticket) = *prepared;
                Coordinator::new(ctx, idx, swarm, ticket, store, control).run(peers);
            }
            Ok(Ready::Complete(stamp)) => {
                log::info!(
                    "download of {} complete: found at {}, every piece verified",
                    swarm.meta.name,
                    swarm.downloading_to().unwrap_or_default().display()
                );
                ctx.downloads.end(&swarm, Ok(stamp));
                ctx.registry.save();
                if let Err(e) = ctx.tracker.call(completion_request(&swarm)) {
                    log::warn!("cannot share {} after its download: {e}", swarm.meta.name);
                }
            }
            Err(StartError::Cancelled) => {
                ctx.registry.remove(&swarm);
                ctx.registry.save();
                ctx.downloads.changes().notify();
            }
            Err(e) => {
                log::warn!("cannot resume {}: {e}", swarm.meta.name);
                ctx.registry.remove(&swarm);
                ctx.registry.save();
                ctx.downloads.end(&swarm, Err(DownloadError::Resume(e.to_string())));
            }
        }
    });
    if let Err(e) = spawned {
        ctx.registry.remove(&swarm);
        ctx.registry.save();
        ctx.downloads.end(&swarm, Err(DownloadError::Thread(e.to_string())));
    }
}

/// The tracker call that shares a download once complete. A selective download holds part
/// of a folder: it announces its pieces, as while it downloaded, rather than share the
/// folder as a whole.
pub fn completion_request(swarm: &Swarm) -> Request {
    match swarm.chosen.is_whole() {
        true => Request::UploadFile { group: swarm.group.clone(), file: swarm.meta.clone() },
        false => Request::AnnouncePieces {
            group: swarm.group.clone(),
            digest: swarm.meta.digest,
            have: swarm.have(),
        },
    }
}

/// Prepares a resumed download: complete if its destination already holds the item
/// (`destination::check`; a kill came after the rename into place, before its end was
/// saved), which it then is; else reopens its `.part` file (a folder: its staging tree),
/// re-hashes the pieces it claims, and asks the tracker for peers. A folder saved with its
/// pieces in a `.part` (state file format 5) moves them into a staging tree first.
fn prepare_resume(ctx: &Context, swarm: &Swarm) -> Result<Ready, StartError> {
    let (recorded, stored) = swarm.inspect(|s| (s.part_id(), s.stored()));
    // (A download cancelled already has no destination: it goes on below to the check of
    // its phase, which removes its `.part`.)
    if let Some(dest) = swarm.downloading_to() {
        let found = destination::check(&dest, &swarm.meta, &swarm.layout, &swarm.chosen)?;
        if let destination::Found::Complete(stamp) = found {
            // A folder's `.part` of format 5 was removed after the rename: it may still be
            // there. (A staging tree is what was renamed.)
            if stored == Stored::Part {
                part_file::remove_recorded_part(&swarm.path(), recorded);
            }
            swarm.checked(swarm.chosen.wanted.clone());
            if matches!(swarm.phase(), Phase::Cancelled) {
                return Err(StartError::Cancelled);
            }
            return Ok(Ready::Complete(stamp));
        }
    }
    let store = match (&swarm.meta.tree, stored) {
        (Some(tree), Stored::Tree) => {
            match TreeStore::reopen(&swarm.path(), tree, &swarm.chosen.selection, recorded) {
                Ok((store, id)) => {
                    swarm.record_part(id);
                    Store::Tree(store)
                }
                Err(refused @ StartError::NotOurs { .. }) => start_over(ctx, swarm, &refused)?,
                Err(e) => return Err(e),
            }
        }
        (tree, _) => {
            let part_len = swarm.layout.part_len();
            match part_file::reopen_part(&swarm.path(), part_len, recorded) {
                Ok((file, id)) => {
                    // A download saved before identities were recorded adopts its file now.
                    swarm.record_part(id);
                    match tree {
                        Some(tree) => restage(ctx, swarm, tree, file)?,
                        None => Store::Part(DownloadFile::open(&swarm.path(), file)),
                    }
                }
                Err(refused @ StartError::NotOurs { .. }) => start_over(ctx, swarm, &refused)?,
                Err(e) => return Err(e),
            }
        }
    };
    let claimed: Vec<PieceIndex> = swarm.have().iter().collect();
    let verified: Vec<PieceIndex> = claimed
        .into_par_iter()
        .filter(|&piece| {
            let mut buf = vec![0u8; swarm.layout.piece_len(piece)];
            store.read_piece(swarm, piece, &mut buf).is_ok()
                && swarm.meta.pieces.get(piece.0 as usize) == Some(&Sha1Digest::of(&buf))
        })
        .collect();
    let mut have = Bitfield::empty(swarm.layout.n_pieces());
    for piece in verified {
        have.set(piece);
    }
    log::info!("resuming {} with {} verified pieces", swarm.meta.name, have.count());
    swarm.checked(have);
    if matches!(swarm.phase(), Phase::Cancelled) {
        store.remove(&swarm.path());
        return Err(StartError::Cancelled);
    }
    ctx.registry.save();
    let (meta, peers, ticket) = get_file(ctx, &swarm.group, &swarm.meta.name)?;
    if meta.digest != swarm.meta.digest {
        return Err(StartError::BadMeta(swarm.meta.name.clone()));
    }
    Ok(Ready::Fetch(Box::new((store, peers, ticket))))
}

/// Moves a folder's download saved with its pieces end to end in the `.part` file `part`
/// (state file format 5, before staging trees; issue 23) into a fresh staging tree: the
/// pieces it claims are copied to their files (the re-hash that follows checks them
/// there), the record names the tree from then on (saved before the `.part` is removed),
/// and the `.part` is removed.
fn restage(
    ctx: &Context,
    swarm: &Swarm,
    tree: &common::folder::Tree,
    part: File,
) -> Result<Store, StartError> {
    let dest = swarm.downloading_to().ok_or(StartError::Cancelled)?;
    let (store, staging, id) = create_tree(tree, &swarm.chosen.selection, &dest)?;
    let part_path = swarm.path();
    let claimed: Vec<PieceIndex> = swarm.have().iter().collect();
    let moved: usize = claimed
        .into_par_iter()
        .filter(|&piece| {
            let mut buf = vec![0u8; swarm.layout.piece_len(piece)];
            part.read_exact_at(&mut buf, swarm.layout.part_offset(piece)).is_ok()
                && store.write_piece(swarm, piece, &buf).is_ok()
        })
        .count();
    log::info!(
        "{} was saved with its pieces in {}; {moved} of them moved to the staging directory {}",
        swarm.shown_name(),
        part_path.display(),
        staging.display()
    );
    swarm.restaged(staging, id);
    ctx.registry.flush();
    part_file::remove_own_part(&part_path, &part);
    Ok(store)
}

/// Creates the `.part` file of a download to `dest`, of `len` bytes, and records what it
/// is.
fn create_part(dest: &Path, len: u64) -> Result<(Store, PathBuf, PartId), StartError> {
    let part = part_file::part_path(dest);
    let file = part_file::create_part(&part, len)?;
    match PartId::of(&file) {
        Ok(id) => Ok((Store::Part(DownloadFile::open(&part, file)), part, id)),
        Err(e) => {
            part_file::remove_own_part(&part, &file);
            Err(StartError::Unwritable { path: part.display().to_string(), reason: e.to_string() })
        }
    }
}

/// Creates the staging tree of the part `selection` of a folder downloaded to `dest`
/// (issue 23), and records what it is.
fn create_tree(
    tree: &common::folder::Tree,
    selection: &common::folder::Selection,
    dest: &Path,
) -> Result<(Store, PathBuf, PartId), StartError> {
    let store = TreeStore::create(tree, selection, dest)?;
    let path = store.path().to_path_buf();
    match store.id() {
        Ok(id) => Ok((Store::Tree(store), path, id)),
        Err(e) => {
            store.remove();
            Err(StartError::Unwritable { path: path.display().to_string(), reason: e.to_string() })
        }
    }
}

/// Whether `meta` is self-consistent (the tracker checked it; a downloader trusts only
/// what it checks): the piece count is its layout's, and the digest that of its size, or
/// of its tree, and its pieces.
fn consistent(meta: &FileMeta, layout: &ItemLayout) -> bool {
    let digest = match &meta.tree {
        Some(tree) => {
            meta.size == tree.total_size() && folder_digest(tree, &meta.pieces) == meta.digest
        }
        None => file_digest(meta.size, &meta.pieces) == meta.digest,
    };
    digest && meta.pieces.len() == layout.n_pieces() as usize
}

/// A resumed download whose `.part` file (or staging tree) is not the one it created
/// (`refused` says why) starts over in a fresh one, leaving that one alone, and says so:
/// in the log, and on its `show_downloads` line.
fn start_over(ctx: &Context, swarm: &Swarm, refused: &StartError) -> Result<Store, StartError> {
    let dest = swarm.downloading_to().ok_or(StartError::Cancelled)?;
    let (store, path, id) = match &swarm.meta.tree {
        Some(tree) => create_tree(tree, &swarm.chosen.selection, &dest)?,
        None => {
            let (part, file) = part_file::create_fresh_part(&dest, swarm.layout.part_len())?;
            match PartId::of(&file) {
                Ok(id) => (Store::Part(DownloadFile::open(&part, file)), part, id),
                Err(e) => {
                    part_file::remove_own_part(&part, &file);
                    let path = part.display().to_string();
                    return Err(StartError::Unwritable { path, reason: e.to_string() });
                }
            }
        }
    };
    log::warn!(
        "download of {} starts over in {}: {refused}; that one is left as it is",
        swarm.meta.name,
        path.display()
    );
    swarm.start_over(path, id, refused.to_string());
    if swarm.meta.is_folder() {
        swarm.set_stored(Stored::Tree);
    }
    ctx.registry.save();
    Ok(store)
}

fn get_file(
    ctx: &Context,
    group: &GroupId,
    name: &FileName,
) -> Result<(FileMeta, Vec<PeerInfo>, Ticket), StartError> {
    match ctx.tracker.call(Request::GetFile { group: group.clone(), name: name.clone() })? {
        Reply::FileInfo { meta, peers, ticket } => Ok((meta, peers, *ticket)),
        other => Err(StartError::UnexpectedReply(format!("{other:?}"))),
    }
}

//! One shared item and everything this peer knows and does about it: a `Swarm` (issue 22).
//!
//! A swarm is the one owner of a shared file's state: where its bytes are, which pieces this
//! peer has, which were checked in which state of the file on disk, the seeder's handout of
//! pieces to its downloaders, the newest verified pieces kept in memory for them, the seeder
//! connections waiting for news, and, for a download, its lifecycle and statistics. All of
//! it sits behind one lock, so that every change is one step that no reader sees half done
//! (a completed download's path, phase and kept pieces change together). Views (the REPL,
//! the dashboard, the state file) ask the swarm; none keeps a copy.
//!
//! The lifecycle is `Phase`: a download is `Checking` (a resumed one re-hashes what it was
//! saved with), then `Fetching`, then `Finishing` (whole-file check, fsync, rename), then
//! `Seeding`, or `Failed`. A file shared from where it is starts as `Seeding`.
//!
//! Invariant: a piece is marked as had only after its SHA1 was verified and it was written.
//! Invariant: the lock is never held across disk or socket I/O, nor while hashing.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use serde::{Deserialize, Serialize};

use common::message::FileMeta;
use common::{Bitfield, GroupId, PieceIndex, PublicKey, Sha1Digest, UserId};

pub mod handout;
pub mod item_layout;

use crate::piece_buf::{piece_buf, PieceBuf};
use crate::recent_pieces::{Adopted, Kept, RecentPieces};
use handout::{Choice, Handout};
pub use item_layout::{Chosen, ItemLayout};

/// Seeder connections told of each new piece of one swarm at most (the seeder serves at
/// most `MAX_PEER_CONNECTIONS` downloaders; watchers of closed connections are pruned).
const MAX_WATCHERS: usize = 256;

/// Where a swarm is in its life.
#[derive(Debug, Clone)]
pub enum Phase {
    /// A resumed download re-hashing the pieces it was saved with, before it fetches.
    Checking,
    /// A download fetching pieces (and serving those it verified).
    Fetching,
    /// A download paused by the user: connected to no peer, still serving its pieces.
    Paused,
    /// Every piece verified: the whole file is checked, synced and renamed into place.
    Finishing,
    /// Complete: served from its path.
    Seeding,
    /// The download failed; the swarm is no longer shared.
    Failed(DownloadError),
    /// The user cancelled the download; its `.part` file is (being) removed.
    Cancelled,
}

impl Phase {
    /// Whether a download is not over yet: it may still become a complete file (paused
    /// included).
    pub fn is_unfinished(&self) -> bool {
        matches!(self, Phase::Checking | Phase::Fetching | Phase::Paused | Phase::Finishing)
    }

    /// Whether a download is at work now (not paused, not over): what `wait_downloads`
    /// waits for.
    pub fn is_active(&self) -> bool {
        matches!(self, Phase::Checking | Phase::Fetching | Phase::Finishing)
    }
}

/// Why a download cannot be paused, resumed or cancelled now. `Display` is the text after
/// `error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("the download of {name} is complete; stop_share {group} {name} stops sharing it")]
    Complete { group: GroupId, name: common::FileName },
    #[error("the download of {name} failed; download_file starts it again")]
    Failed { name: common::FileName },
    #[error("the download of {name} is being checked and renamed into place; it is nearly done")]
    Finishing { name: common::FileName },
}

/// What a pause or resume did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toggled {
    Done,
    /// It was so already.
    AlreadySo,
}

/// Why a download failed. `Display` is the reason `show_downloads` gives after `[F]`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DownloadError {
    #[error("no peer could provide the missing pieces for {secs} s ({missing} of {total} pieces missing; {cause})")]
    Stalled { secs: u64, missing: u32, total: u32, cause: StallCause },
    /// Issue 19: every holder listed failed every way (direct, reversed, relayed).
    #[error("no holder of {name} can be reached: {why}")]
    Unreachable { name: String, why: String },
    #[error("cannot write piece {piece} to {path}: {reason}")]
    Write { piece: u32, path: String, reason: String },
    #[error("whole-file check failed after download")]
    WholeFileMismatch,
    #[error("cannot stat {path}: {reason}")]
    Stat { path: String, reason: String },
    #[error("{path} is {len} bytes, expected {size}")]
    WrongLength { path: String, len: u64, size: u64 },
    #[error("cannot flush {path}: {reason}")]
    Flush { path: String, reason: String },
    #[error("{path} was replaced during the download")]
    PartReplaced { path: String },
    #[error("{dest} appeared during the download and was not replaced; the downloaded file is at {part}")]
    DestinationAppeared { dest: String, part: String },
    #[error("cannot rename into place: {reason}; the downloaded file is at {part}")]
    Rename { reason: String, part: String },
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error("cannot start thread: {0}")]
    Thread(String),
}

impl DownloadError {
    /// Whether the `.part` file stays: a complete, verified file that could not be renamed
    /// into place is the user's to keep.
    pub fn keeps_part(&self) -> bool {
        matches!(self, DownloadError::DestinationAppeared { .. } | DownloadError::Rename { .. })
    }
}

/// Why no piece is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StallCause {
    #[error("no connected peer has them")]
    NoPeerHasThem,
    #[error("peers stopped sending")]
    PeersStopped,
}

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

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.len
    }
}

/// What of an item was hashed, as it was on disk, when it was shared (`Swarm::seeding`):
/// the seeder does not hash those pieces again while their file keeps that stamp.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Stamped {
    /// Nothing: each piece is hashed as it is first served in each state of its file.
    #[default]
    Nothing,
    /// The one file: every piece hashed while it had this stamp.
    File(FileStamp),
    /// A folder's files, by their index among the tree's entries: every piece of each
    /// hashed while the file had its stamp (issue 23).
    Folder(Vec<(usize, FileStamp)>),
}

/// The identity of the `.part` file a download created: its device, inode and birth time,
/// saved in the state file when the file is created, so that a resume writes only into
/// that very file (issue 21: not into one another local user planted at its path, nor into
/// another file made there since, which may have been given the same inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartId {
    pub dev: u64,
    pub ino: u64,
    /// When the file was created (seconds and nanoseconds), where the file system says.
    pub born: Option<(i64, u32)>,
}

impl PartId {
    /// The identity of an open file.
    pub fn of(file: &File) -> std::io::Result<PartId> {
        use rustix::fs::{statx, AtFlags, StatxFlags};
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata()?;
        let born = statx(file, "", AtFlags::EMPTY_PATH, StatxFlags::BTIME)
            .ok()
            .filter(|s| StatxFlags::from_bits_retain(s.stx_mask).contains(StatxFlags::BTIME))
            .map(|s| (s.stx_btime.tv_sec, s.stx_btime.tv_nsec));
        Ok(PartId { dev: m.dev(), ino: m.ino(), born })
    }
}

/// Why a piece could not be read for a downloader.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("piece {0} does not match its hash")]
    Mismatch(u32),
}

/// Where the seeder reads a piece (`Swarm::piece_source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PieceSource {
    /// In the swarm's one file: a shared file, or a download's `.part`.
    OneFile,
    /// In the file `rel` beneath `root` (a complete folder's root, or a folder download's
    /// staging directory; `rel` empty: `root` is the one file chosen), at `offset`.
    InFolder { root: PathBuf, rel: PathBuf, offset: u64 },
}

/// How a download keeps its verified pieces (`download::store`), as its record saves it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stored {
    /// End to end in the `.part` file at its path: a file's, and a folder's saved before
    /// issue 23's staging trees (state file format 5 and older).
    #[default]
    Part,
    /// In their files under the staging directory (or file) at its path: a folder's.
    Tree,
}

/// What the seeder sends for a request (`Swarm::pick`).
#[derive(Debug)]
pub enum Pick {
    /// This piece (the one asked for, or another that nobody was handed yet), from memory
    /// when the download verified it lately.
    Send { piece: PieceIndex, recent: Option<Arc<Kept<PieceBuf>>> },
    /// Fetch it from another peer, which was handed it.
    Elsewhere,
    /// This peer does not have it.
    NoPiece,
}

/// A download's statistics: what `show_downloads` and the dashboard show besides the
/// pieces (the swarm's `have`).
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The final path of the download.
    pub dest: PathBuf,
    pub started: Instant,
    pub finished: Option<Instant>,
    /// Bytes fetched in this session (not counting pieces resumed from disk).
    pub bytes_fetched: u64,
    /// Pieces found verified on disk when the download resumed.
    pub n_resumed: u32,
    /// Pieces received from each peer.
    pub from_peer: BTreeMap<SocketAddr, u32>,
    /// The user logged in on each peer the tracker listed, as it said.
    pub peer_users: BTreeMap<SocketAddr, UserId>,
    /// The peers connected now.
    pub connected: Vec<SocketAddr>,
    /// How each peer connected in this session was reached (the last connection's way).
    pub paths: BTreeMap<SocketAddr, crate::reach::SourcePath>,
    /// Where each piece came from, one byte a piece: `PIECE_MISSING`, `PIECE_RESUMED`, or
    /// `k` for a piece received from `sources[k - 1]` (the dashboard's piece map).
    pub piece_source: Vec<u8>,
    /// The peers of `piece_source`, in the order they first delivered a piece.
    pub sources: Vec<SocketAddr>,
    /// When each piece arrived, in milliseconds after `started` (`PIECE_NOT_TIMED` for a
    /// piece not received in this session): the dashboard's throughput chart.
    pub piece_ms: Vec<u32>,
    /// How many pieces of the file each peer has, as last heard (the tracker's list, then
    /// what a connected peer announced): the dashboard's peers.
    pub peer_have: BTreeMap<SocketAddr, u32>,
    /// Why a resumed download started over in a fresh `.part` file: the one at its path
    /// was not the file it created.
    pub started_over: Option<String>,
}

/// `Transfer::piece_ms` of a piece not received in this session.
pub const PIECE_NOT_TIMED: u32 = u32::MAX;
/// `Transfer::piece_source` of a piece not yet had.
pub const PIECE_MISSING: u8 = 0;
/// `Transfer::piece_source` of a piece found verified on disk when the download resumed.
pub const PIECE_RESUMED: u8 = u8::MAX;
/// `Transfer::piece_source` of a piece from a peer beyond the first 253 that delivered some.
pub const PIECE_OTHER_PEER: u8 = u8::MAX - 1;

impl Transfer {
    /// The statistics of a download to `dest` that starts with the pieces in `have`.
    fn new(dest: PathBuf, have: &Bitfield) -> Transfer {
        let n = have.n_pieces();
        Transfer {
            dest,
            started: Instant::now(),
            finished: None,
            bytes_fetched: 0,
            n_resumed: have.count(),
            from_peer: BTreeMap::new(),
            peer_users: BTreeMap::new(),
            connected: Vec::new(),
            paths: BTreeMap::new(),
            piece_source: (0..n)
                .map(|i| if have.has(PieceIndex(i)) { PIECE_RESUMED } else { PIECE_MISSING })
                .collect(),
            sources: Vec::new(),
            piece_ms: vec![PIECE_NOT_TIMED; n as usize],
            peer_have: BTreeMap::new(),
            started_over: None,
        }
    }

    /// Records that `piece` arrived from `addr`, now, for the piece map and the chart.
    fn note_piece_source(&mut self, piece: usize, addr: SocketAddr) {
        let k = match self.sources.iter().position(|a| *a == addr) {
            Some(i) => i + 1,
            None if self.sources.len() + 1 < usize::from(PIECE_OTHER_PEER) => {
                self.sources.push(addr);
                self.sources.len()
            }
            None => usize::from(PIECE_OTHER_PEER),
        };
        if let Some(slot) = self.piece_source.get_mut(piece) {
            *slot = u8::try_from(k).unwrap_or(PIECE_OTHER_PEER);
        }
        let ms = u32::try_from(self.started.elapsed().as_millis()).unwrap_or(PIECE_NOT_TIMED - 1);
        if let Some(slot) = self.piece_ms.get_mut(piece) {
            *slot = ms;
        }
    }
}

/// Which pieces were hashed and found good, and in which state of the file they lie in.
#[derive(Debug)]
struct Checked {
    /// The state of the one file (a file's, or a download's `.part`).
    stamp: Option<FileStamp>,
    /// A folder's: the state of each of its files (by entry index) its checked pieces were
    /// hashed in (issue 23). At most one entry per file of the tree, whose size is bounded
    /// (`common::folder::Tree`).
    files: HashMap<usize, FileStamp>,
    pieces: Bitfield,
}

impl Checked {
    /// Every one of `n` pieces hashed and found good while the file had `stamp`; none
    /// without a stamp (the seeder then hashes each piece as it first serves it).
    fn hashed_at(stamp: Option<FileStamp>, n: u32) -> Checked {
        let files = HashMap::new();
        match stamp {
            Some(stamp) => Checked { stamp: Some(stamp), files, pieces: Bitfield::full(n) },
            None => Checked { stamp: None, files, pieces: Bitfield::empty(n) },
        }
    }

    /// What `stamped` says was hashed of an item of layout `layout`.
    fn of(stamped: Stamped, layout: &ItemLayout) -> Checked {
        let n = layout.n_pieces();
        match (stamped, layout) {
            (Stamped::File(stamp), ItemLayout::File(_)) => Checked::hashed_at(Some(stamp), n),
            (Stamped::Folder(stamps), ItemLayout::Folder(folder)) => {
                let mut checked = Checked::hashed_at(None, n);
                let spans = folder.files();
                for (entry, stamp) in stamps {
                    let Ok(i) = spans.binary_search_by_key(&entry, |span| span.entry) else {
                        continue;
                    };
                    for piece in spans[i].pieces() {
                        checked.pieces.set(PieceIndex(piece));
                    }
                    checked.files.insert(entry, stamp);
                }
                checked
            }
            _ => Checked::hashed_at(None, n),
        }
    }

    /// Whether `piece` was hashed and found good in the state `stamp` of its file; when
    /// the file is in another state now, forgets what was checked in the old one first.
    fn is_checked(
        &mut self,
        piece: PieceIndex,
        file: Option<(usize, &Range<u32>)>,
        stamp: FileStamp,
    ) -> bool {
        match file {
            None => {
                if self.stamp != Some(stamp) {
                    self.stamp = Some(stamp);
                    self.pieces = Bitfield::empty(self.pieces.n_pieces());
                }
            }
            Some((entry, pieces)) => {
                if self.files.get(&entry) != Some(&stamp) {
                    self.files.insert(entry, stamp);
                    for p in pieces.clone() {
                        self.pieces.clear(PieceIndex(p));
                    }
                }
            }
        }
        self.pieces.has(piece)
    }

    /// Notes that `piece` matched its hash, read while its file had `stamp` (unless the
    /// file was seen in another state meanwhile).
    fn note_checked(&mut self, piece: PieceIndex, file: Option<usize>, stamp: FileStamp) {
        let current = match file {
            None => self.stamp,
            Some(entry) => self.files.get(&entry).copied(),
        };
        if current == Some(stamp) {
            self.pieces.set(piece);
        }
    }
}

/// What a swarm's lock guards. Read through `Swarm::inspect`; changed only by `Swarm`'s
/// methods.
#[derive(Debug)]
pub struct SwarmState {
    phase: Phase,
    /// Where the bytes are: the `.part` file while downloading, the file once complete.
    path: PathBuf,
    have: Bitfield,
    checked: Checked,
    /// The write ends of the wake-up sockets of the seeder connections that push this
    /// swarm's new pieces (`watch`): one byte is written to each when a piece is marked.
    watchers: Vec<UnixStream>,
    /// A download's newest verified pieces, while peers download them from us.
    recent: RecentPieces<PieceBuf>,
    /// Which pieces went to which of the seeder's downloaders, by key (super-seeding).
    handout: Handout<PublicKey>,
    /// A download's statistics; `None` for a file shared from where it is.
    transfer: Option<Transfer>,
    /// A download to pause as soon as its check ends (paused while `Checking`, or saved
    /// paused).
    pause_after_check: bool,
    /// The identity of a download's `.part` file (or staging directory), once it is known
    /// (recorded at its creation; saved by a client older than issue 21 without it).
    part_id: Option<PartId>,
    /// How a download keeps its pieces at `path`.
    stored: Stored,
}

impl SwarmState {
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Where the bytes are.
    pub fn path(&self) -> &PathBuf {
        &self.path
    }

    /// The pieces this peer has.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// A download's statistics.
    pub fn transfer(&self) -> Option<&Transfer> {
        self.transfer.as_ref()
    }

    /// The identity of a download's `.part` file, if recorded.
    pub fn part_id(&self) -> Option<PartId> {
        self.part_id
    }

    /// How a download keeps its pieces at its path.
    pub fn stored(&self) -> Stored {
        self.stored
    }

    /// Whether the download is paused, or will be once its check ends.
    pub fn is_paused(&self) -> bool {
        matches!(self.phase, Phase::Paused) || self.pause_after_check
    }

    /// The final path of a download not over yet.
    pub fn downloading_to(&self) -> Option<&PathBuf> {
        match self.phase.is_unfinished() {
            true => self.transfer.as_ref().map(|t| &t.dest),
            false => None,
        }
    }
}

/// One shared item: its metadata and its state behind one lock.
#[derive(Debug)]
pub struct Swarm {
    pub group: GroupId,
    pub meta: FileMeta,
    pub layout: ItemLayout,
    /// What of the item this peer fetches and keeps: all of it, or the part of a folder a
    /// selective download chose (issue 23); it never changes.
    pub chosen: Chosen,
    state: Mutex<SwarmState>,
    /// Told of every change the download views show (downloads only).
    changes: Option<Arc<Changes>>,
}

impl Swarm {
    /// A complete file or folder at `path`, shared from there. `stamped`: what was hashed
    /// and found good, in which state of its file on disk.
    pub fn seeding(
        group: GroupId,
        meta: FileMeta,
        layout: ItemLayout,
        path: PathBuf,
        stamped: Stamped,
    ) -> Swarm {
        let chosen = Chosen::all(&meta, &layout);
        Swarm::seeding_chosen(group, meta, layout, chosen, path, stamped)
    }

    /// The part `chosen` of an item, complete at `path` (the file, the folder's root, or
    /// the file or directory a selective download chose) and shared from there: it has,
    /// and serves, the pieces of that part only.
    pub fn seeding_chosen(
        group: GroupId,
        meta: FileMeta,
        layout: ItemLayout,
        chosen: Chosen,
        path: PathBuf,
        stamped: Stamped,
    ) -> Swarm {
        let checked = Checked::of(stamped, &layout);
        let have = chosen.wanted.clone();
        Swarm::with(group, meta, layout, chosen, path, have, Phase::Seeding, checked, None)
    }

    /// A download of `chosen` into `part`, to be renamed to `dest`, with the pieces in
    /// `have` (claimed: a resumed download is `Checking` until `checked` confirmed them).
    /// Its changes are told to `changes`.
    #[allow(clippy::too_many_arguments)]
    pub fn download(
        group: GroupId,
        meta: FileMeta,
        layout: ItemLayout,
        chosen: Chosen,
        part: PathBuf,
        dest: PathBuf,
        have: Bitfield,
        phase: Phase,
        changes: Arc<Changes>,
    ) -> Swarm {
        let n = layout.n_pieces();
        let checked = Checked::hashed_at(None, n);
        let transfer = Transfer::new(dest, &have);
        let download = Some((transfer, changes));
        Swarm::with(group, meta, layout, chosen, part, have, phase, checked, download)
    }

    #[allow(clippy::too_many_arguments)]
    fn with(
        group: GroupId,
        meta: FileMeta,
        layout: ItemLayout,
        chosen: Chosen,
        path: PathBuf,
        have: Bitfield,
        phase: Phase,
        checked: Checked,
        download: Option<(Transfer, Arc<Changes>)>,
    ) -> Swarm {
        let (transfer, changes) = download.unzip();
        let state = SwarmState {
            phase,
            path,
            have,
            checked,
            watchers: Vec::new(),
            recent: RecentPieces::default(),
            handout: Handout::new(layout.n_pieces()),
            transfer,
            pause_after_check: false,
            part_id: None,
            // A folder's download stages its files (issue 23); a record of an older format
            // says otherwise (`set_stored`).
            stored: match meta.is_folder() {
                true => Stored::Tree,
                false => Stored::Part,
            },
        };
        Swarm { group, meta, layout, chosen, state: Mutex::new(state), changes }
    }

    /// Reads the state under the lock (keep `f` short: no I/O).
    pub fn inspect<R>(&self, f: impl FnOnce(&SwarmState) -> R) -> R {
        f(&self.state.lock())
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        self.state.lock().phase.clone()
    }

    /// Where the bytes are.
    pub fn path(&self) -> PathBuf {
        self.state.lock().path.clone()
    }

    /// The final path of a download still under way.
    pub fn downloading_to(&self) -> Option<PathBuf> {
        self.state.lock().downloading_to().cloned()
    }

    /// The pieces this peer has.
    pub fn have(&self) -> Bitfield {
        self.state.lock().have.clone()
    }

    /// How a user names what this swarm holds: `name`, `name/`, `name/path` or
    /// `name/sub/` (issue 23).
    pub fn shown_name(&self) -> String {
        self.chosen.shown(&self.meta)
    }

    /// Changes the state and tells the views, after the lock is released.
    fn change<R>(&self, f: impl FnOnce(&mut SwarmState) -> R) -> R {
        let result = f(&mut self.state.lock());
        if let Some(changes) = &self.changes {
            changes.notify();
        }
        result
    }

    /// The download's `.part` file is the one identified by `id` (created by it, or
    /// adopted on resume).
    pub fn record_part(&self, id: PartId) {
        self.state.lock().part_id = Some(id);
    }

    /// How the download's record said it keeps its pieces (a folder's saved before
    /// staging trees keeps them in its `.part`).
    pub fn set_stored(&self, stored: Stored) {
        self.state.lock().stored = stored;
    }

    /// A folder's download saved with its pieces in a `.part` file (format 5) keeps them
    /// from now on in the staging tree at `staging`, identified by `id` (issue 23).
    pub fn restaged(&self, staging: PathBuf, id: PartId) {
        self.change(|s| {
            s.path = staging;
            s.part_id = Some(id);
            s.stored = Stored::Tree;
        });
    }

    /// A resumed download found at its path a `.part` file (or staging directory) it did
    /// not create (`why`): it starts over, with no piece, in the fresh one at `part`
    /// identified by `id`.
    pub fn start_over(&self, part: PathBuf, id: PartId, why: String) {
        self.change(|s| {
            let empty = Bitfield::empty(self.layout.n_pieces());
            if let Some(t) = &mut s.transfer {
                *t = Transfer::new(t.dest.clone(), &empty);
                t.started_over = Some(why);
            }
            s.path = part;
            s.part_id = Some(id);
            s.have = empty;
            s.checked = Checked::hashed_at(None, self.layout.n_pieces());
        });
    }

    /// A resumed download's re-hash is done: these are the pieces it has; it fetches the
    /// rest, or waits paused if it was paused.
    pub fn checked(&self, have: Bitfield) {
        self.change(|s| {
            if let Some(t) = &mut s.transfer {
                let started_over = t.started_over.take();
                *t = Transfer::new(t.dest.clone(), &have);
                t.started_over = started_over;
            }
            s.have = have;
            if matches!(s.phase, Phase::Checking) {
                s.phase = match std::mem::take(&mut s.pause_after_check) {
                    true => Phase::Paused,
                    false => Phase::Fetching,
                };
            }
        });
    }

    /// Pauses the download (the coordinator, told next, lets its peers go).
    pub fn pause(&self) -> Result<Toggled, ControlError> {
        self.change(|s| match s.phase {
            Phase::Fetching => {
                s.phase = Phase::Paused;
                Ok(Toggled::Done)
            }
            Phase::Checking if !s.pause_after_check => {
                s.pause_after_check = true;
                Ok(Toggled::Done)
            }
            Phase::Checking | Phase::Paused | Phase::Cancelled => Ok(Toggled::AlreadySo),
            _ => Err(self.cannot_control(&s.phase)),
        })
    }

    /// Goes on with a paused download (the coordinator, told next, asks for peers).
    pub fn unpause(&self) -> Result<Toggled, ControlError> {
        self.change(|s| match s.phase {
            Phase::Paused => {
                s.phase = Phase::Fetching;
                Ok(Toggled::Done)
            }
            Phase::Checking if s.pause_after_check => {
                s.pause_after_check = false;
                Ok(Toggled::Done)
            }
            Phase::Checking | Phase::Fetching | Phase::Cancelled => Ok(Toggled::AlreadySo),
            _ => Err(self.cannot_control(&s.phase)),
        })
    }

    /// Marks the download cancelled (the coordinator, told next, removes its `.part` file):
    /// from now on it is no download of any view. Fails once it is complete, failed, or
    /// being renamed into place.
    pub fn cancel(&self) -> Result<(), ControlError> {
        self.change(|s| match s.phase {
            Phase::Checking | Phase::Fetching | Phase::Paused | Phase::Cancelled => {
                s.phase = Phase::Cancelled;
                s.pause_after_check = false;
                Ok(())
            }
            _ => Err(self.cannot_control(&s.phase)),
        })
    }

    /// Restores a download saved paused: it stays paused once its check ends.
    pub(crate) fn pause_after_check(&self) {
        self.state.lock().pause_after_check = true;
    }

    fn cannot_control(&self, phase: &Phase) -> ControlError {
        let name = self.meta.name.clone();
        match phase {
            Phase::Seeding => ControlError::Complete { group: self.group.clone(), name },
            Phase::Finishing => ControlError::Finishing { name },
            _ => ControlError::Failed { name },
        }
    }

    /// Records a verified, written piece of a download, received from `from`: it is had,
    /// served and pushed to the seeder's connections from now on.
    pub fn piece_verified(&self, piece: PieceIndex, from: Option<SocketAddr>) {
        let len = self.layout.piece_len(piece) as u64;
        self.change(|s| {
            if s.have.has(piece) {
                return;
            }
            s.have.set(piece);
            s.watchers.retain(crate::readiness::wake);
            if let Some(t) = &mut s.transfer {
                t.bytes_fetched += len;
                if let Some(addr) = from {
                    *t.from_peer.entry(addr).or_default() += 1;
                    t.note_piece_source(piece.0 as usize, addr);
                }
            }
        });
    }

    /// What the tracker's list said of its peers: who is logged in on each, and how many
    /// pieces each has (a peer's pieces only grow: the larger of this and what it said).
    pub fn note_listed_peers(&self, listed: impl IntoIterator<Item = (SocketAddr, UserId, u32)>) {
        self.change(|s| {
            let Some(t) = &mut s.transfer else { return };
            for (addr, user, n) in listed {
                t.peer_users.insert(addr, user);
                let had = t.peer_have.entry(addr).or_default();
                *had = (*had).max(n);
            }
        });
    }

    /// A connected peer has `n` pieces now.
    pub fn note_peer_have(&self, addr: SocketAddr, n: u32) {
        self.change(|s| {
            if let Some(t) = &mut s.transfer {
                t.peer_have.insert(addr, n);
            }
        });
    }

    /// The peers a download is connected to now.
    pub fn set_connected(&self, connected: Vec<(SocketAddr, crate::reach::SourcePath)>) {
        let mut addrs: Vec<SocketAddr> = connected.iter().map(|(a, _)| *a).collect();
        addrs.sort();
        self.change(|s| {
            if let Some(t) = &mut s.transfer {
                t.connected = addrs;
                t.paths.extend(connected);
            }
        });
    }

    /// Every piece is verified: the download checks, syncs and renames the file. Returns
    /// `false` (and changes nothing) if it was cancelled meanwhile.
    pub fn finishing(&self) -> bool {
        self.change(|s| {
            if matches!(s.phase, Phase::Cancelled) {
                return false;
            }
            s.phase = Phase::Finishing;
            true
        })
    }

    /// Ends a download: complete at its destination (`Ok`, with the stamp of the file every
    /// piece of which was hashed as it arrived), or failed. In one step: a reader sees the
    /// old path with the old phase or the new path with the new one. Called by
    /// `Downloads::end`, which tells the views (this takes no views' lock: `end` holds it).
    pub(crate) fn end(&self, outcome: Result<Option<FileStamp>, DownloadError>) {
        let s = &mut *self.state.lock();
        {
            if let Some(t) = &mut s.transfer {
                t.finished = Some(Instant::now());
                t.connected.clear();
            }
            s.recent.clear();
            match outcome {
                Ok(stamp) => {
                    if let Some(dest) = s.transfer.as_ref().map(|t| t.dest.clone()) {
                        s.path = dest;
                    }
                    s.checked = Checked::hashed_at(stamp, self.layout.n_pieces());
                    s.phase = Phase::Seeding;
                }
                Err(e) => s.phase = Phase::Failed(e),
            }
        }
    }

    /// A socket that becomes readable whenever a piece of this swarm is marked as had, for
    /// a seeder connection that pushes new pieces to its downloader. `None` when the swarm
    /// has too many watchers already (that downloader learns of new pieces from the
    /// tracker instead) or the socket cannot be made.
    pub fn watch(&self) -> Option<UnixStream> {
        let (reader, writer) = UnixStream::pair().ok()?;
        reader.set_nonblocking(true).ok()?;
        writer.set_nonblocking(true).ok()?;
        let mut s = self.state.lock();
        if s.watchers.len() >= MAX_WATCHERS {
            // Drop the watchers whose reader is gone (a spurious wake-up costs the others
            // a look at the bitfield).
            s.watchers.retain(crate::readiness::wake);
        }
        if s.watchers.len() >= MAX_WATCHERS {
            return None;
        }
        s.watchers.push(writer);
        Some(reader)
    }

    /// A seat in the handout for a connection of the downloader with key `downloader`: its
    /// connections share what it was handed (issue 19: one moving from a relay to a punched
    /// hole has two for a moment). Given back when dropped; the downloader leaves the
    /// handout with its last connection.
    pub fn take_seat(&self, downloader: PublicKey) -> Seat<'_> {
        self.state.lock().handout.join(downloader);
        Seat { swarm: self, downloader }
    }

    /// What to send the downloader in `seat` that asked for `asked`: the piece, another
    /// one nobody was handed yet (super-seeding), or neither.
    pub fn pick(&self, seat: &Seat<'_>, asked: PieceIndex) -> Pick {
        let mut s = self.state.lock();
        if self.layout.piece_len(asked) == 0 || !s.have.has(asked) {
            return Pick::NoPiece;
        }
        let complete = matches!(s.phase, Phase::Seeding);
        let piece = match s.handout.choose(seat.downloader, asked, complete) {
            Choice::Serve => asked,
            Choice::Instead(piece) => piece,
            Choice::Elsewhere => return Pick::Elsewhere,
        };
        let len = self.layout.piece_len(piece);
        let recent = s.recent.get(piece).filter(|data| data.len() == len);
        Pick::Send { piece, recent }
    }

    /// Where piece `piece` is read now (issue 23): a folder's (complete, or downloading
    /// into its staging tree) in one of its files (`Selection::local_path` beneath its
    /// path: the folder's root, the part a selective download chose, or the staging
    /// directory, so never outside it); a file's, and a download's kept in a `.part`, in
    /// the swarm's one file (`read_piece`). `None` for a piece out of range or not of the
    /// part chosen.
    pub fn piece_source(&self, piece: PieceIndex) -> Option<PieceSource> {
        let s = self.state.lock();
        if self.meta.is_folder() && (matches!(s.phase, Phase::Seeding) || s.stored == Stored::Tree)
        {
            let at = self.layout.locate(&self.meta, piece)?;
            let rel = self.chosen.selection.local_path(at.file?, std::path::Path::new(""))?;
            return Some(PieceSource::InFolder { root: s.path.clone(), rel, offset: at.offset });
        }
        (self.layout.piece_len(piece) > 0).then_some(PieceSource::OneFile)
    }

    /// Checks `data`, piece `piece` of a folder as read from `file`, one of its files
    /// (`piece_source`), against its hash: once per state of that file on disk (its stamp,
    /// taken after the read), as a file's pieces are (`read_piece`), so that a file changed
    /// since its pieces were checked has each of them checked again before it is served.
    pub fn check_folder_piece(
        &self,
        piece: PieceIndex,
        file: &File,
        data: &[u8],
    ) -> Result<(), ReadError> {
        let ItemLayout::Folder(layout) = &self.layout else {
            return Err(ReadError::Mismatch(piece.0));
        };
        let (span, _) = layout.locate(piece).ok_or(ReadError::Mismatch(piece.0))?;
        let (entry, pieces) = (span.entry, span.pieces());
        // Outside the lock: a system call.
        let stamp = FileStamp::of(file)?;
        if self.state.lock().checked.is_checked(piece, Some((entry, &pieces)), stamp) {
            return Ok(());
        }
        if self.meta.pieces.get(piece.0 as usize) != Some(&Sha1Digest::of(data)) {
            return Err(ReadError::Mismatch(piece.0));
        }
        self.state.lock().checked.note_checked(piece, Some(entry), stamp);
        Ok(())
    }

    /// Reads piece `piece` from `file` (this swarm's bytes) into `data`, making sure it
    /// matches its hash. Each piece is hashed once per state of the file: when the file
    /// changes on disk (its stamp), every piece is checked again before it is served. The
    /// pieces of a download in progress were verified before this peer wrote them.
    pub fn read_piece(
        &self,
        file: &File,
        piece: PieceIndex,
        data: &mut [u8],
    ) -> Result<(), ReadError> {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(data, self.layout.part_offset(piece))?;
        if !matches!(self.state.lock().phase, Phase::Seeding) {
            return Ok(());
        }
        // Outside the lock: a system call.
        let stamp = FileStamp::of(file)?;
        if self.state.lock().checked.is_checked(piece, None, stamp) {
            return Ok(());
        }
        if self.meta.pieces.get(piece.0 as usize) != Some(&Sha1Digest::of(data)) {
            return Err(ReadError::Mismatch(piece.0));
        }
        self.state.lock().checked.note_checked(piece, None, stamp);
        Ok(())
    }

    /// Offers `buf[..len]`, the verified and written bytes of `piece` of this download in
    /// progress, for the seeder to serve from memory (`recent_pieces`). Kept only if peers
    /// download this swarm from us now; otherwise it would be memory for no one. Returns the
    /// buffer for the caller to receive its next piece into: `buf` itself if it was not
    /// kept, else the oldest kept piece's, or a new one.
    pub fn offer_recent(&self, piece: PieceIndex, buf: PieceBuf, len: usize) -> PieceBuf {
        let adopted = {
            let mut s = self.state.lock();
            if !s.phase.is_unfinished() || s.watchers.is_empty() {
                return buf;
            }
            s.recent.adopt(piece, buf, len)
        };
        match adopted {
            Adopted::Spare(spare) => spare,
            Adopted::Refused(buf) => buf,
            Adopted::Kept => piece_buf(),
        }
    }
}

/// A downloader connection's place in its swarm's handout, shared with the downloader's other
/// connections.
pub struct Seat<'a> {
    swarm: &'a Swarm,
    downloader: PublicKey,
}

impl Seat<'_> {
    /// `piece` was sent whole.
    pub fn delivered(&self, piece: PieceIndex) {
        self.swarm.state.lock().handout.delivered(self.downloader, piece);
    }
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        self.swarm.state.lock().handout.leave(self.downloader);
    }
}

/// Where the download views learn that something changed: a condition variable over the
/// views' own flag. Lock order: this before any swarm's lock (a swarm tells it after
/// releasing its own).
#[derive(Debug, Default)]
pub struct Changes {
    hub: Mutex<Hub>,
    changed: Condvar,
}

/// What the download views keep under `Changes`' lock.
#[derive(Debug, Default)]
pub struct Hub {
    /// While set, finished downloads are not announced (progress bars are on the screen).
    pub muted: bool,
}

impl Changes {
    /// Wakes every waiter. The lock is taken first, so a waiter is either still before
    /// its check or already waiting.
    pub fn notify(&self) {
        drop(self.hub.lock());
        self.changed.notify_all();
    }

    /// The views' lock.
    pub fn lock(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock()
    }

    /// Waits (releasing `hub`) until a change, a `notify`, or `timeout`.
    pub fn wait(&self, hub: &mut MutexGuard<'_, Hub>, timeout: Option<Duration>) {
        match timeout {
            Some(timeout) => {
                let _ = self.changed.wait_for(hub, timeout);
            }
            None => self.changed.wait(hub),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::meta;

    fn download(n: u32) -> Swarm {
        crate::testutil::download("f", n, Arc::default())
    }

    fn piece(text: &[u8]) -> PieceBuf {
        let mut buf = piece_buf();
        buf[..text.len()].copy_from_slice(text);
        buf
    }

    fn recent(swarm: &Swarm, piece: u32) -> Option<Vec<u8>> {
        swarm.inspect(|s| s.recent.get(PieceIndex(piece)).map(|k| k.to_vec()))
    }

    #[test]
    fn a_download_keeps_its_newest_pieces_only_while_peers_download_from_it() {
        let n = 4;
        let swarm = download(n);
        // No seeder connection watches it: nothing is kept, the buffer comes back.
        let back = swarm.offer_recent(PieceIndex(0), piece(b"piece 0"), 7);
        assert_eq!(&back[..7], b"piece 0");
        assert!(recent(&swarm, 0).is_none());
        // A peer downloads it from us: pieces are kept and served from memory, and the
        // caller gets another buffer to receive into.
        let watcher = swarm.watch().expect("a watch socket");
        let other = swarm.offer_recent(PieceIndex(1), piece(b"piece 1"), 7);
        assert_eq!(other.len(), common::PIECE_SIZE);
        assert_eq!(recent(&swarm, 1), Some(b"piece 1".to_vec()));
        // Complete: the file is read from disk again.
        swarm.end(Ok(None));
        assert!(recent(&swarm, 1).is_none());
        swarm.offer_recent(PieceIndex(2), piece(b"piece 2"), 7);
        assert!(recent(&swarm, 2).is_none());
        drop(watcher);
        // A complete share never keeps pieces.
        let meta = meta("c", n);
        let layout = ItemLayout::of(&meta).unwrap();
        let complete = Swarm::seeding(
            GroupId::new("g").unwrap(),
            meta,
            layout,
            PathBuf::from("c"),
            Stamped::Nothing,
        );
        let _watcher = complete.watch();
        complete.offer_recent(PieceIndex(0), piece(b"piece 0"), 7);
        assert!(recent(&complete, 0).is_none());
    }

    #[test]
    fn completion_moves_path_phase_and_statistics_in_one_step() {
        let swarm = download(2);
        let from: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        swarm.piece_verified(PieceIndex(0), Some(from));
        swarm.piece_verified(PieceIndex(0), Some(from));
        swarm.piece_verified(PieceIndex(1), Some(from));
        swarm.inspect(|s| {
            assert_eq!(s.path(), &PathBuf::from("f.part"));
            assert_eq!(s.downloading_to(), Some(&PathBuf::from("f")));
            let t = s.transfer().unwrap();
            // A piece verified twice (endgame) counts once.
            assert_eq!(t.from_peer.get(&from), Some(&2));
            assert_eq!(t.bytes_fetched, 2 * common::PIECE_SIZE as u64);
            assert_eq!(t.piece_source, [1, 1]);
        });
        swarm.finishing();
        assert!(swarm.phase().is_active());
        swarm.end(Ok(None));
        swarm.inspect(|s| {
            assert!(matches!(s.phase(), Phase::Seeding));
            assert_eq!(s.path(), &PathBuf::from("f"));
            assert_eq!(s.downloading_to(), None);
            assert!(s.transfer().unwrap().finished.is_some());
        });
    }

    #[test]
    fn a_failed_download_says_why_and_whether_its_part_stays() {
        let swarm = download(1);
        let error = DownloadError::Stalled {
            secs: 60,
            missing: 1,
            total: 1,
            cause: StallCause::NoPeerHasThem,
        };
        assert_eq!(
            error.to_string(),
            "no peer could provide the missing pieces for 60 s (1 of 1 pieces missing; no connected peer has them)"
        );
        assert!(!error.keeps_part());
        swarm.end(Err(error));
        assert!(matches!(swarm.phase(), Phase::Failed(DownloadError::Stalled { .. })));
        let renamed = DownloadError::Rename { reason: "EXDEV".into(), part: "f.part".into() };
        assert!(renamed.keeps_part());
    }

    #[test]
    fn pause_resume_and_cancel_follow_the_lifecycle() {
        let swarm = download(2);
        assert_eq!(swarm.pause(), Ok(Toggled::Done));
        assert_eq!(swarm.pause(), Ok(Toggled::AlreadySo));
        assert!(matches!(swarm.phase(), Phase::Paused));
        // Paused: not at work, not over, still downloading to its destination.
        assert!(!swarm.phase().is_active() && swarm.phase().is_unfinished());
        assert_eq!(swarm.downloading_to(), Some(PathBuf::from("f")));
        assert_eq!(swarm.unpause(), Ok(Toggled::Done));
        assert_eq!(swarm.unpause(), Ok(Toggled::AlreadySo));
        assert!(matches!(swarm.phase(), Phase::Fetching));
        // Paused while its resume re-hashes: it waits paused once the check ends.
        let checking = download(2);
        checking.state.lock().phase = Phase::Checking;
        assert_eq!(checking.pause(), Ok(Toggled::Done));
        assert!(checking.inspect(|s| s.is_paused()));
        checking.checked(Bitfield::empty(2));
        assert!(matches!(checking.phase(), Phase::Paused));
        // Cancelled: over, and no longer downloading anywhere; pausing it says so.
        assert_eq!(checking.cancel(), Ok(()));
        assert!(!checking.phase().is_unfinished());
        assert_eq!(checking.downloading_to(), None);
        assert_eq!(checking.pause(), Ok(Toggled::AlreadySo));
        assert!(!checking.finishing());
        // Complete: nothing to pause or cancel.
        swarm.end(Ok(None));
        assert!(matches!(swarm.pause(), Err(ControlError::Complete { .. })));
        assert_eq!(
            swarm.cancel().unwrap_err().to_string(),
            "the download of f is complete; stop_share g f stops sharing it"
        );
    }

    #[test]
    fn the_seeder_picks_only_pieces_it_has_and_hands_each_out_once() {
        let swarm = download(3);
        let a = swarm.take_seat(PublicKey([1; 32]));
        assert!(matches!(swarm.pick(&a, PieceIndex(0)), Pick::NoPiece));
        assert!(matches!(swarm.pick(&a, PieceIndex(9)), Pick::NoPiece));
        swarm.piece_verified(PieceIndex(0), None);
        assert!(matches!(
            swarm.pick(&a, PieceIndex(0)),
            Pick::Send { piece: PieceIndex(0), recent: None }
        ));
        a.delivered(PieceIndex(0));
        drop(a);
        swarm.inspect(|s| assert!(s.handout.is_empty()));
    }

    /// Issue 19: a downloader moving from a relay to a punched hole has two connections
    /// for a moment; they share its seat, so what it was handed stays its own and is not
    /// handed out again when the first closes.
    #[test]
    fn a_downloader_on_two_connections_has_one_seat_and_keeps_what_it_was_handed() {
        let swarm = download(2);
        swarm.piece_verified(PieceIndex(0), None);
        swarm.piece_verified(PieceIndex(1), None);
        swarm.end(Ok(None));
        let (mover, other) = (PublicKey([1; 32]), PublicKey([2; 32]));
        let relayed = swarm.take_seat(mover);
        let other = swarm.take_seat(other);
        let sent = swarm.pick(&relayed, PieceIndex(0));
        assert!(matches!(sent, Pick::Send { piece: PieceIndex(0), .. }));
        relayed.delivered(PieceIndex(0));
        let punched = swarm.take_seat(mover);
        drop(relayed);
        // Piece 0 is still the mover's: the other, asking for it, gets piece 1 instead,
        // which nobody has.
        let instead = swarm.pick(&other, PieceIndex(0));
        assert!(matches!(instead, Pick::Send { piece: PieceIndex(1), .. }));
        drop(punched);
        drop(other);
        swarm.inspect(|s| assert!(s.handout.is_empty()));
    }

    /// Reads piece `piece` of a shared folder as the seeder does, and checks it.
    fn serve(swarm: &Swarm, piece: u32) -> Result<Vec<u8>, ReadError> {
        use std::os::unix::fs::FileExt;
        let piece = PieceIndex(piece);
        let Some(PieceSource::InFolder { root, rel, offset }) = swarm.piece_source(piece) else {
            panic!("piece {} of a folder is in one of its files", piece.0);
        };
        let file = crate::download::store::open_to_read(&root, &rel, &mut None)?;
        let mut data = vec![0u8; swarm.layout.piece_len(piece)];
        file.read_exact_at(&mut data, offset)?;
        swarm.check_folder_piece(piece, &file, &data)?;
        Ok(data)
    }

    /// Issue 23: a shared folder's files are stamped as they are hashed, so the seeder
    /// does not hash their pieces again, until a file changes on disk: then each of its
    /// pieces is checked again before it is served, and one that went bad is not.
    #[test]
    fn a_folders_pieces_are_hashed_once_per_state_of_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("album");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/x"), b"the x file").unwrap();
        let big: Vec<u8> = (0..common::PIECE_SIZE + 10).map(|i| i as u8).collect();
        std::fs::write(root.join("b"), &big).unwrap();
        let scanned = crate::folder_scan::scan(&root).unwrap();
        let hashes = crate::folder_scan::hash(&scanned).unwrap();
        let meta = FileMeta {
            name: "album".parse().unwrap(),
            size: scanned.tree.total_size(),
            digest: hashes.digest,
            pieces: hashes.pieces,
            tree: Some(scanned.tree),
        };
        let layout = ItemLayout::of(&meta).unwrap();
        let group = GroupId::new("g").unwrap();
        let stamped = Stamped::Folder(hashes.stamps);
        let swarm =
            Swarm::seeding(group.clone(), meta.clone(), layout.clone(), root.clone(), stamped);
        let unstamped = Swarm::seeding(group, meta, layout, root.clone(), Stamped::Nothing);
        assert_eq!(serve(&swarm, 0).unwrap(), b"the x file");
        assert_eq!(serve(&swarm, 2).unwrap(), &big[common::PIECE_SIZE..]);
        let x = File::open(root.join("a/x")).unwrap();
        // Checked in this state of the file: not hashed again (bytes that are not the
        // file's would pass, were they read from it), where a swarm without stamps hashes.
        assert!(swarm.check_folder_piece(PieceIndex(0), &x, b"not the x").is_ok());
        assert!(matches!(
            unstamped.check_folder_piece(PieceIndex(0), &x, b"not the x"),
            Err(ReadError::Mismatch(0))
        ));
        // Changed on disk, same size: the new bytes are checked, and refused. (Its times
        // are set apart: a change within one tick of the clock may keep them, as for a
        // file shared on its own.)
        let rewrite = |text: &[u8], secs: u64| {
            std::fs::write(root.join("a/x"), text).unwrap();
            let at = std::time::UNIX_EPOCH + Duration::from_secs(secs);
            File::options().write(true).open(root.join("a/x")).unwrap().set_modified(at).unwrap();
        };
        rewrite(b"THE X FILE", 1_000);
        assert!(matches!(serve(&swarm, 0), Err(ReadError::Mismatch(0))));
        // The other file keeps its state: served without a new hash.
        let b = File::open(root.join("b")).unwrap();
        assert!(swarm.check_folder_piece(PieceIndex(1), &b, b"not b").is_ok());
        // Put back: hashed again in its new state, then served.
        rewrite(b"the x file", 2_000);
        assert_eq!(serve(&swarm, 0).unwrap(), b"the x file");
        assert_eq!(serve(&unstamped, 0).unwrap(), b"the x file");
    }
}

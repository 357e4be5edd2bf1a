//! Downloads: starting and resuming them, and the coordinator thread (`dl-N`) of each.
//!
//! The coordinator owns the `Scheduler`. It starts one worker thread per peer, feeds each a
//! bounded `crossbeam-channel` of jobs, and reacts to the workers' events (ready, verified,
//! bad hash, no piece, gone) and to a one-second tick, on which it announces its verified
//! pieces to the tracker (partial seeding) and, every few ticks, asks the tracker for peers
//! again. Workers pass on the pieces their peers announce (`Have`) and the pieces a seeder
//! said to fetch elsewhere; the scheduler prefers other peers to such a loaded seeder and
//! lets its deferrals expire every tick. A verified piece is shared at once (and pushed
//! by this peer's seeder to its downloaders). When every piece is verified it checks the
//! file digest over the hashes computed on arrival, fsyncs, renames the file into place and
//! becomes a complete sharer. `record` keeps what `show_downloads` shows.
//!
//! Invariant: a download writes only into a `<dest>.part` it created itself (`O_EXCL`,
//! `O_NOFOLLOW`) or, on resume, one its saved record names that is still a regular file;
//! it deletes only that file, and its final rename never replaces an existing file.

pub mod record;
pub mod scheduler;
pub mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, tick, Receiver, Sender};
use parking_lot::Mutex;

use common::hash::file_digest;
use common::message::{FileMeta, PeerInfo, Reply, Request, Ticket};
use common::{Bitfield, FileName, GroupId, Layout, PieceIndex, PublicKey, Sha1Digest};
use rayon::prelude::*;
use std::os::unix::fs::FileExt;

use crate::shares::{FileStamp, SharedFile, Shares};
use crate::tracker_session::{CallError, TrackerSession};
use scheduler::{PeerId, Scheduler};
use worker::{Event, HaveNews, Inbox, Job, Target};

/// Pieces asked of one peer at a time.
pub const MAX_IN_FLIGHT: usize = 4;
/// A peer that sends this many pieces with a bad hash is dropped.
const MAX_BAD_PIECES: u32 = 3;
/// Ask the tracker for peers every this many ticks: every tick, so that the leechers of a
/// flash crowd find each other (the tracker lists a partial sharer once it announced a
/// piece) within a second or two (issue 12).
const REFRESH_TICKS: u32 = 1;
/// A seeder's "fetch elsewhere" holds for one to two periods of this many ticks; then the
/// piece is asked of it again (and sent, if a holder received it whole meanwhile).
const DEFER_TICKS: u32 = 2;
/// A download's progress (the pieces it has) is saved this often at most while it runs,
/// and at its end. Each save is a write, an fsync and a rename of the state file; an fsync
/// a second per download stalled every write to the disk for a third of a second in a
/// flash crowd (issue 12). A resume re-hashes the pieces it was saved with anyway, so what
/// a crash loses is at most this long of pieces to fetch again.
const SAVE_PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Wait this long before connecting again to a peer whose connection failed.
const RECONNECT_AFTER: Duration = Duration::from_secs(3);
/// Peers one download connects to at most (one thread each).
pub const MAX_PEERS: usize = 32;

pub use record::{DownloadRecord, DownloadState, Downloads};

/// Why a download could not start. `Display` is the text after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("tracker sent inconsistent metadata for {0}")]
    BadMeta(FileName),
    #[error("{0} already exists; remove it or choose another destination")]
    Exists(String),
    #[error("{0} already exists and is not a download of this client; remove it or choose another destination")]
    PartExists(String),
    #[error("{0} is not a regular file")]
    NotRegular(String),
    #[error("directory {0} does not exist; create it first (mkdir) or choose another destination")]
    NoDirectory(String),
    #[error("cannot write {path}: {reason}")]
    Unwritable { path: String, reason: String },
    #[error("already downloading {name} to {path}")]
    AlreadyRunning { name: FileName, path: String },
    #[error("unexpected reply from tracker: {0}")]
    UnexpectedReply(String),
}

/// What a download needs from the rest of the client.
#[derive(Clone)]
pub struct Context {
    /// This peer's key pair: seeders check that tickets are shown by their holder.
    pub identity: Arc<common::Identity>,
    pub tracker: Arc<TrackerSession>,
    pub shares: Arc<Shares>,
    pub downloads: Arc<Downloads>,
    /// How long a download waits for a peer that has its missing pieces before it fails.
    pub stall_timeout: Duration,
    /// Writes verified pieces to disk.
    pub writer: worker::DiskWriter,
}

/// Starts downloading `name` of `group` to `destination` (a directory or a file path) in
/// the background. Returns the final path.
pub fn start(
    ctx: &Context,
    group: GroupId,
    name: FileName,
    destination: &Path,
) -> Result<PathBuf, StartError> {
    let (meta, peers, ticket) = get_file(ctx, &group, &name)?;
    let layout = Layout::new(meta.size).map_err(|_| StartError::BadMeta(name.clone()))?;
    if meta.pieces.len() != layout.n_pieces() as usize
        || file_digest(meta.size, &meta.pieces) != meta.digest
        || meta.name != name
    {
        return Err(StartError::BadMeta(name));
    }
    let dest = resolve_destination(destination, &name)?;
    if is_running(ctx, &dest) {
        return Err(StartError::AlreadyRunning { name, path: dest.display().to_string() });
    }
    let temp = part_path(&dest);
    let file = create_part(&temp, meta.size)?;
    let have = Bitfield::empty(layout.n_pieces());
    let share = Arc::new(SharedFile::new(group, meta, layout, temp, have, Some(dest.clone())));
    ctx.shares.insert(Arc::clone(&share));
    let file = worker::DownloadFile::open(&share.path(), file);
    launch(ctx, share, file, peers, ticket);
    Ok(dest)
}

/// Resumes a download saved by an earlier run: re-verifies the pieces it had (on the rayon
/// pool) rather than trusting them, then fetches the rest. A resume that cannot even start
/// shows up as a failed download.
pub fn resume(ctx: &Context, share: Arc<SharedFile>) {
    let Some(dest) = share.destination() else { return };
    if is_running(ctx, &dest) {
        return;
    }
    match prepare_resume(ctx, &share) {
        Ok((file, peers, ticket)) => {
            log::info!(
                "resuming {} with {} verified pieces",
                share.meta.name,
                share.have().count()
            );
            let file = worker::DownloadFile::open(&share.path(), file);
            launch(ctx, share, file, peers, ticket);
        }
        Err(e) => {
            log::warn!("cannot resume {}: {e}", share.meta.name);
            ctx.shares.remove(&share.group, &share.meta.digest);
            let idx = ctx.downloads.add(record(&share, dest));
            ctx.downloads.update(idx, |r| {
                r.state = DownloadState::Failed(format!("cannot resume: {e}"));
                r.finished = Some(Instant::now());
            });
        }
    }
}

fn prepare_resume(
    ctx: &Context,
    share: &SharedFile,
) -> Result<(File, Vec<PeerInfo>, Ticket), StartError> {
    let temp = share.path();
    let unwritable = unwritable(&temp);
    // Only our own saved record leads here, but the file at that path may have been
    // replaced since: never follow a link, and write only into a regular file.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temp)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => StartError::NotRegular(temp.display().to_string()),
            _ => unwritable(e),
        })?;
    let metadata = file.metadata().map_err(unwritable)?;
    if !metadata.is_file() {
        return Err(StartError::NotRegular(temp.display().to_string()));
    }
    if metadata.len() != share.meta.size {
        file.set_len(share.meta.size).map_err(unwritable)?;
    }
    let claimed: Vec<PieceIndex> = share.have().iter().collect();
    let verified: Vec<PieceIndex> = claimed
        .into_par_iter()
        .filter(|&piece| {
            let mut buf = vec![0u8; share.layout.piece_len(piece)];
            file.read_exact_at(&mut buf, share.layout.piece_offset(piece)).is_ok()
                && share.meta.pieces.get(piece.0 as usize) == Some(&Sha1Digest::of(&buf))
        })
        .collect();
    let mut have = Bitfield::empty(share.layout.n_pieces());
    for piece in verified {
        have.set(piece);
    }
    share.set_have(have);
    ctx.shares.save();
    let (meta, peers, ticket) = get_file(ctx, &share.group, &share.meta.name)?;
    if meta.digest != share.meta.digest {
        return Err(StartError::BadMeta(share.meta.name.clone()));
    }
    Ok((file, peers, ticket))
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

fn is_running(ctx: &Context, dest: &Path) -> bool {
    ctx.downloads.snapshot().iter().any(|r| r.dest == dest && r.state == DownloadState::Running)
}

fn record(share: &SharedFile, dest: PathBuf) -> DownloadRecord {
    DownloadRecord {
        group: share.group.clone(),
        name: share.meta.name.clone(),
        dest,
        state: DownloadState::Running,
        size: share.meta.size,
        n_pieces: share.layout.n_pieces(),
        n_have: share.have().count(),
        n_peers: 0,
        started: Instant::now(),
        finished: None,
        bytes_fetched: 0,
        n_resumed: share.have().count(),
        from_peer: BTreeMap::new(),
        peer_users: BTreeMap::new(),
        connected: Vec::new(),
        piece_source: (0..share.layout.n_pieces())
            .map(|i| match share.has(PieceIndex(i)) {
                true => record::PIECE_RESUMED,
                false => record::PIECE_MISSING,
            })
            .collect(),
        sources: Vec::new(),
        piece_ms: vec![record::PIECE_NOT_TIMED; share.layout.n_pieces() as usize],
        peer_have: BTreeMap::new(),
    }
}

/// Registers the download and starts its coordinator thread.
fn launch(
    ctx: &Context,
    share: Arc<SharedFile>,
    file: worker::DownloadFile,
    peers: Vec<PeerInfo>,
    ticket: Ticket,
) {
    let dest = share.destination().unwrap_or_else(|| share.path());
    let idx = ctx.downloads.add(record(&share, dest.clone()));
    let coordinator = Coordinator::new(ctx.clone(), idx, share, ticket, file, dest);
    let spawned =
        thread::Builder::new().name(format!("dl-{idx}")).spawn(move || coordinator.run(peers));
    if let Err(e) = spawned {
        ctx.downloads
            .update(idx, |r| r.state = DownloadState::Failed(format!("cannot start thread: {e}")));
    }
}

/// The final path for a download: inside `destination` if it is a directory, else
/// `destination` itself, which must not exist yet and whose directory must.
fn resolve_destination(destination: &Path, name: &FileName) -> Result<PathBuf, StartError> {
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
fn create_part(temp: &Path, size: u64) -> Result<File, StartError> {
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
fn remove_own_part(path: &Path, file: &File) {
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
fn is_same_file(path: &Path, file: &File) -> std::io::Result<bool> {
    let on_disk = std::fs::symlink_metadata(path)?;
    let open = file.metadata()?;
    Ok(on_disk.dev() == open.dev() && on_disk.ino() == open.ino())
}

/// Renames `temp` to `dest` unless `dest` exists, which is then left as it is (the error
/// is `AlreadyExists`). Uses `renameat2(RENAME_NOREPLACE)`; where the file system does not
/// support it, a hard link (which fails if `dest` exists) and then unlinking `temp`.
fn rename_no_replace(temp: &Path, dest: &Path) -> std::io::Result<()> {
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

/// Why a download failed, and whether its `.part` file is kept (a complete, verified file
/// that could not be renamed into place) or removed.
struct Failure {
    reason: String,
    keep_part: bool,
}

impl From<String> for Failure {
    fn from(reason: String) -> Failure {
        Failure { reason, keep_part: false }
    }
}

struct WorkerHandle {
    addr: SocketAddr,
    key: PublicKey,
    jobs: Sender<Job>,
    /// Written after each job, so that a worker waiting on its peer takes it.
    wake: UnixStream,
    /// The pieces its peer announced, not yet taken.
    news: Arc<Mutex<HaveNews>>,
    socket: Arc<Mutex<Option<TcpStream>>>,
    thread: thread::JoinHandle<()>,
}

struct Coordinator {
    ctx: Context,
    idx: usize,
    group: GroupId,
    meta: FileMeta,
    target: Arc<Target>,
    share: Arc<SharedFile>,
    temp: PathBuf,
    dest: PathBuf,
    scheduler: Scheduler,
    workers: HashMap<PeerId, WorkerHandle>,
    next_peer: u32,
    /// Peers whose connection ended, and when.
    failed: HashMap<SocketAddr, Instant>,
    /// Peers dropped for sending bad data; never used again by this download.
    banned: HashSet<SocketAddr>,
    bad_pieces: HashMap<SocketAddr, u32>,
    events_tx: Sender<Event>,
    events: Receiver<Event>,
    stalled_since: Option<Instant>,
    announced: u32,
    /// When this download's progress was last saved (`SAVE_PROGRESS_EVERY`).
    progress_saved: Instant,
    /// The SHA1 computed from the bytes of every piece we have (received, or re-verified
    /// on resume): the whole-file check is the file digest over these.
    computed: Vec<Option<Sha1Digest>>,
    /// Calls to the tracker, made off this thread.
    calls: TrackerCalls,
    /// A peer refresh was posted and has not been answered yet.
    refresh_pending: bool,
}

/// A call the coordinator posts for its tracker thread.
enum TrackerJob {
    /// `AnnouncePieces`, when this peer has `n_have` pieces.
    Announce { request: Request, n_have: u32 },
    /// `GetFile`: new peers and a fresh ticket.
    Refresh(Request),
    /// `UploadFile` of the finished download (nobody waits for the answer).
    Complete(Request),
}

/// The answer to a posted call.
enum TrackerNews {
    Announced { n_have: u32 },
    Refreshed(Result<Reply, CallError>),
}

/// A download's calls to the tracker, made on a thread of their own (`dl-tracker-N`): the
/// coordinator never waits on a tracker, which may take seconds to fail over, so pieces
/// keep flowing meanwhile. Calls queue (a few at most; the coordinator skips a tick's
/// call when they are full) and answers come back on `news`.
struct TrackerCalls {
    jobs: Option<Sender<TrackerJob>>,
    news: Receiver<TrackerNews>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TrackerCalls {
    fn start(tracker: Arc<TrackerSession>, name: String, idx: usize) -> TrackerCalls {
        let (jobs, todo) = crossbeam_channel::bounded::<TrackerJob>(4);
        let (tell, news) = crossbeam_channel::bounded::<TrackerNews>(4);
        let file = name.clone();
        let thread = thread::Builder::new().name(format!("dl-tracker-{idx}")).spawn(move || {
            for job in todo {
                let told = match job {
                    TrackerJob::Announce { request, n_have } => match tracker.call(request) {
                        Ok(_) => tell.send(TrackerNews::Announced { n_have }),
                        Err(e) => {
                            log::warn!("cannot announce pieces of {file}: {e}");
                            Ok(())
                        }
                    },
                    TrackerJob::Refresh(request) => {
                        tell.send(TrackerNews::Refreshed(tracker.call(request)))
                    }
                    TrackerJob::Complete(request) => {
                        if let Err(e) = tracker.call(request) {
                            log::warn!("cannot announce the finished {file} as shared: {e}");
                        }
                        Ok(())
                    }
                };
                // The coordinator is gone: nobody wants the rest.
                if told.is_err() {
                    break;
                }
            }
        });
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(e) => {
                log::error!("cannot start a tracker thread for {name}: {e}");
                None
            }
        };
        TrackerCalls { jobs: Some(jobs), news, thread }
    }

    /// Posts `job` unless the queue is full; returns whether it was posted.
    fn post(&self, job: TrackerJob) -> bool {
        self.jobs.as_ref().is_some_and(|jobs| jobs.try_send(job).is_ok())
    }

    /// Lets the queued calls finish, then ends the thread.
    fn finish(&mut self) {
        drop(self.jobs.take());
        // Unblock a thread that waits to hand over an answer nobody will read.
        while self.news.try_recv().is_ok() {}
        if let Some(thread) = self.thread.take() {
            // Drain answers while it finishes, so that it never blocks on `tell`.
            while !thread.is_finished() {
                let _ = self.news.recv_timeout(Duration::from_millis(50));
            }
            let _ = thread.join();
        }
    }
}

impl Coordinator {
    fn new(
        ctx: Context,
        idx: usize,
        share: Arc<SharedFile>,
        ticket: Ticket,
        file: worker::DownloadFile,
        dest: PathBuf,
    ) -> Coordinator {
        let meta = share.meta.clone();
        let have = share.have();
        let pieces = meta.pieces.clone();
        let target = Arc::new(Target {
            identity: Arc::clone(&ctx.identity),
            digest: meta.digest,
            ticket: Mutex::new(ticket),
            layout: share.layout,
            hashes: Arc::new(meta.pieces.clone()),
            file,
            writer: ctx.writer.clone(),
            share: Arc::clone(&share),
        });
        // Unbounded in type, bounded by construction: a worker sends one event per request
        // it made (at most 2 in flight), per connection change, and at most one `Have`
        // waiting, whatever its peer sends; and there are at most `MAX_PEERS` workers. (A
        // bounded channel here could deadlock: the coordinator also feeds the workers.)
        let (events_tx, events) = crossbeam_channel::unbounded();
        let calls = TrackerCalls::start(Arc::clone(&ctx.tracker), meta.name.to_string(), idx);
        Coordinator {
            calls,
            refresh_pending: false,
            ctx,
            idx,
            group: share.group.clone(),
            meta,
            target,
            temp: share.path(),
            share,
            dest,
            scheduler: Scheduler::new(&have, MAX_IN_FLIGHT, fastrand::u64(..)),
            workers: HashMap::new(),
            next_peer: 0,
            failed: HashMap::new(),
            banned: HashSet::new(),
            bad_pieces: HashMap::new(),
            events_tx,
            events,
            stalled_since: None,
            announced: have.count(),
            progress_saved: Instant::now(),
            // Resumed pieces were re-hashed from disk and matched before they were marked.
            computed: (0..have.n_pieces())
                .map(|i| have.has(PieceIndex(i)).then(|| pieces[i as usize]))
                .collect(),
        }
    }

    fn run(mut self, peers: Vec<PeerInfo>) {
        let started = Instant::now();
        let result = self.fetch(peers).map_err(Failure::from).and_then(|()| {
            let fetched = started.elapsed();
            self.finish()?;
            log::info!(
                "{}: pieces fetched in {:.3} s, checked and renamed in {:.3} s",
                self.meta.name,
                fetched.as_secs_f64(),
                (started.elapsed() - fetched).as_secs_f64()
            );
            Ok(())
        });
        self.stop_workers();
        match result {
            Ok(()) => {
                log::info!("download of {} complete: {}", self.meta.name, self.dest.display());
                self.ctx.downloads.update(self.idx, |r| {
                    r.state = DownloadState::Complete;
                    r.finished = Some(Instant::now());
                });
            }
            Err(Failure { reason, keep_part }) => {
                log::warn!("download of {} failed: {reason}", self.meta.name);
                self.ctx.shares.remove(&self.group, &self.meta.digest);
                if !keep_part {
                    remove_own_part(&self.temp, &self.target.file.buffered);
                }
                self.ctx.downloads.update(self.idx, |r| {
                    r.state = DownloadState::Failed(reason);
                    r.finished = Some(Instant::now());
                });
            }
        }
        // After the outcome is visible: the last calls may wait for a tracker.
        self.calls.finish();
    }

    /// Fetches every piece. Errors are the reason the download failed.
    fn fetch(&mut self, peers: Vec<PeerInfo>) -> Result<(), String> {
        self.add_peers(peers);
        let ticker = tick(Duration::from_secs(1));
        let mut ticks = 0u32;
        loop {
            self.dispatch();
            if self.scheduler.is_complete() {
                return Ok(());
            }
            self.check_stall()?;
            select! {
                recv(self.events) -> event => {
                    // The coordinator holds a sender, so the channel never disconnects.
                    if let Ok(event) = event {
                        self.handle(event)?;
                    }
                }
                recv(self.calls.news) -> news => {
                    if let Ok(news) = news {
                        self.hear(news);
                    }
                }
                recv(ticker) -> _ => {
                    ticks += 1;
                    if ticks.is_multiple_of(DEFER_TICKS) {
                        self.scheduler.expire_deferrals();
                    }
                    self.announce();
                    if ticks.is_multiple_of(REFRESH_TICKS) && !self.refresh_pending {
                        let request = Request::GetFile {
                            group: self.group.clone(),
                            name: self.meta.name.clone(),
                        };
                        self.refresh_pending = self.calls.post(TrackerJob::Refresh(request));
                    }
                }
            }
        }
    }

    fn dispatch(&mut self) {
        for (peer, piece) in self.scheduler.assign() {
            let sent = self
                .workers
                .get(&peer)
                .map(|w| w.jobs.try_send(Job { piece }).is_ok() && crate::readiness::wake(&w.wake))
                .unwrap_or(false);
            if !sent {
                self.scheduler.fail(piece, peer);
            }
        }
        let in_flight: usize = self.scheduler.peers().map(|p| self.scheduler.load(p)).sum();
        if in_flight > 0 {
            self.stalled_since = None;
        } else if self.stalled_since.is_none() {
            self.stalled_since = Some(Instant::now());
        }
    }

    fn check_stall(&self) -> Result<(), String> {
        let Some(since) = self.stalled_since else { return Ok(()) };
        if since.elapsed() < self.ctx.stall_timeout {
            return Ok(());
        }
        let total = self.target.layout.n_pieces();
        let missing = total - self.scheduler.n_have();
        let why = if self.scheduler.has_unavailable_piece() {
            "no connected peer has them"
        } else {
            "peers stopped sending"
        };
        Err(format!(
            "no peer could provide the missing pieces for {} s ({missing} of {total} pieces missing; {why})",
            self.ctx.stall_timeout.as_secs()
        ))
    }

    fn handle(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Ready { peer, have } => {
                self.scheduler.set_peer_have(peer, have);
                self.record_peer_have(peer);
            }
            Event::Verified { peer, piece, hash, bytes_per_sec } => {
                self.scheduler.record_throughput(peer, bytes_per_sec);
                if self.scheduler.complete(piece) {
                    if let Some(slot) = self.computed.get_mut(piece.0 as usize) {
                        *slot = Some(hash);
                    }
                    self.share.mark(piece);
                    let addr = self.workers.get(&peer).map(|w| w.addr);
                    let len = self.target.layout.piece_len(piece) as u64;
                    let n_have = self.scheduler.n_have();
                    log::trace!(
                        "piece={} from={addr:?}: verified and written ({n_have} had)",
                        piece.0
                    );
                    self.ctx.downloads.update(self.idx, |r| {
                        r.n_have = n_have;
                        r.bytes_fetched += len;
                        if let Some(addr) = addr {
                            *r.from_peer.entry(addr).or_default() += 1;
                            r.note_piece_source(piece.0 as usize, addr);
                        }
                    });
                }
            }
            Event::BadHash { peer, piece } => {
                self.scheduler.fail(piece, peer);
                if let Some(addr) = self.workers.get(&peer).map(|w| w.addr) {
                    let strikes = self.bad_pieces.entry(addr).or_default();
                    *strikes += 1;
                    log::warn!("peer={addr} piece={}: hash mismatch ({strikes} so far)", piece.0);
                    if *strikes >= MAX_BAD_PIECES {
                        log::warn!("peer={addr}: dropped after {MAX_BAD_PIECES} bad pieces");
                        self.banned.insert(addr);
                        self.drop_worker(peer);
                    }
                }
            }
            Event::Have { peer } => {
                if let Some(w) = self.workers.get(&peer) {
                    let news = w.news.lock().take();
                    self.scheduler.add_have(peer, &news);
                    self.record_peer_have(peer);
                }
            }
            Event::Elsewhere { peer, piece } => self.scheduler.defer(piece, peer),
            Event::NoPiece { peer, piece } => {
                self.scheduler.fail(piece, peer);
                // Its copy may have gone bad; forget what it claimed and let it reconnect.
                self.drop_worker(peer);
            }
            Event::WriteFailed { piece, reason } => {
                return Err(format!(
                    "cannot write piece {} to {}: {reason}",
                    piece.0,
                    self.temp.display()
                ));
            }
            Event::Gone { peer, reason } => {
                if let Some(w) = self.workers.get(&peer) {
                    log::info!("peer={}: connection ended: {reason}", w.addr);
                    self.failed.insert(w.addr, Instant::now());
                }
                self.remove_worker(peer);
            }
        }
        Ok(())
    }

    /// Connects to peers not yet connected (and not banned or recently failed), one
    /// connection per address and per key whatever the list repeats, and at most
    /// `MAX_PEERS` in all: a peer list is not trusted to be small or distinct.
    fn add_peers(&mut self, peers: Vec<PeerInfo>) {
        let named: Vec<(SocketAddr, common::UserId)> =
            peers.iter().map(|p| (p.addr, p.user.clone())).collect();
        let n_all = self.target.layout.n_pieces();
        let listed_have: Vec<(SocketAddr, u32)> =
            peers.iter().map(|p| (p.addr, p.have.as_ref().map_or(n_all, |h| h.count()))).collect();
        self.ctx.downloads.update(self.idx, |r| {
            r.peer_users.extend(named);
            // A peer's pieces only grow: the larger of the list's and what it announced.
            for (addr, n) in listed_have {
                let had = r.peer_have.entry(addr).or_default();
                *had = (*had).max(n);
            }
        });
        let mut connected: HashSet<SocketAddr> = self.workers.values().map(|w| w.addr).collect();
        let mut keys: HashSet<PublicKey> = self.workers.values().map(|w| w.key).collect();
        let n_pieces = self.target.layout.n_pieces();
        // What the peers not connected have, for rarity over the whole swarm.
        let mut swarm = vec![0u32; n_pieces as usize];
        for info in &peers {
            if connected.contains(&info.addr) {
                continue;
            }
            match &info.have {
                None => swarm.iter_mut().for_each(|n| *n = n.saturating_add(1)),
                Some(have) if have.n_pieces() == n_pieces => {
                    for piece in have.iter() {
                        swarm[piece.0 as usize] = swarm[piece.0 as usize].saturating_add(1);
                    }
                }
                Some(_) => {}
            }
        }
        self.scheduler.set_swarm_availability(swarm);
        for info in peers {
            if connected.contains(&info.addr) || self.banned.contains(&info.addr) {
                // Pieces are only ever added (they are pushed meanwhile): merge.
                if let Some(peer) = self.peer_at(info.addr) {
                    let have = info.have.unwrap_or_else(|| Bitfield::full(n_pieces));
                    self.scheduler.add_have(peer, &have);
                }
                continue;
            }
            if keys.contains(&info.key)
                || self.workers.len() >= MAX_PEERS
                || self.failed.get(&info.addr).is_some_and(|at| at.elapsed() < RECONNECT_AFTER)
            {
                continue;
            }
            connected.insert(info.addr);
            keys.insert(info.key);
            self.spawn_worker(info.addr, info.key);
        }
        self.record_connected();
    }

    /// Tells the record how many pieces `peer` has now.
    fn record_peer_have(&self, peer: PeerId) {
        let (Some(w), Some(n)) = (self.workers.get(&peer), self.scheduler.peer_n_have(peer)) else {
            return;
        };
        let addr = w.addr;
        self.ctx.downloads.update(self.idx, |r| {
            r.peer_have.insert(addr, n);
        });
    }

    /// Tells the record which peers are connected now.
    fn record_connected(&self) {
        let mut connected: Vec<SocketAddr> = self.workers.values().map(|w| w.addr).collect();
        connected.sort();
        self.ctx.downloads.update(self.idx, |r| {
            r.n_peers = connected.len();
            r.connected = connected;
        });
    }

    fn peer_at(&self, addr: SocketAddr) -> Option<PeerId> {
        self.workers.iter().find(|(_, w)| w.addr == addr).map(|(id, _)| *id)
    }

    fn spawn_worker(&mut self, addr: SocketAddr, key: PublicKey) {
        let peer = PeerId(self.next_peer);
        self.next_peer += 1;
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(MAX_IN_FLIGHT);
        let (wake, wake_rx) = match UnixStream::pair().and_then(|(a, b)| {
            a.set_nonblocking(true)?;
            b.set_nonblocking(true)?;
            Ok((a, b))
        }) {
            Ok(pair) => pair,
            Err(e) => {
                log::error!("cannot make a worker's wake-up socket: {e}");
                return;
            }
        };
        let news = Arc::new(HaveNews::new(self.target.layout.n_pieces()));
        let inbox = Inbox { jobs: jobs_rx, wake: wake_rx, news: Arc::clone(&news) };
        let socket: Arc<Mutex<Option<TcpStream>>> = Arc::new(Mutex::new(None));
        let socket_slot = Arc::clone(&socket);
        let target = Arc::clone(&self.target);
        let events = self.events_tx.clone();
        let spawned =
            thread::Builder::new().name(format!("dl-worker-{}", peer.0)).spawn(move || {
                worker::run(peer, addr, key, target, inbox, events, |s| {
                    *socket_slot.lock() = Some(s)
                });
            });
        match spawned {
            Ok(thread) => {
                self.workers.insert(
                    peer,
                    WorkerHandle { addr, key, jobs: jobs_tx, wake, news, socket, thread },
                );
            }
            Err(e) => log::error!("cannot start a worker thread: {e}"),
        }
    }

    /// Cuts a worker's connection; its `Gone` event then removes it.
    fn drop_worker(&mut self, peer: PeerId) {
        self.scheduler.release_peer(peer);
        if let Some(w) = self.workers.get(&peer) {
            if let Some(s) = w.socket.lock().as_ref() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    fn remove_worker(&mut self, peer: PeerId) {
        self.scheduler.release_peer(peer);
        if let Some(w) = self.workers.remove(&peer) {
            // Both ends gone: the worker, idle or not, sees that it is to stop.
            drop(w.jobs);
            drop(w.wake);
            let _ = w.thread.join();
        }
        self.record_connected();
    }

    fn stop_workers(&mut self) {
        for (_, w) in self.workers.drain() {
            drop(w.jobs);
            drop(w.wake);
            if let Some(s) = w.socket.lock().as_ref() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            let _ = w.thread.join();
        }
    }

    /// Saves the progress and tells the tracker which pieces this peer has now, if that
    /// changed.
    fn announce(&mut self) {
        let n_have = self.scheduler.n_have();
        if n_have == self.announced {
            return;
        }
        if self.progress_saved.elapsed() >= SAVE_PROGRESS_EVERY {
            self.ctx.shares.save();
            self.progress_saved = Instant::now();
        }
        let request = Request::AnnouncePieces {
            group: self.group.clone(),
            digest: self.meta.digest,
            have: self.share.have(),
        };
        // Skipped when calls are queued: the next tick announces again.
        self.calls.post(TrackerJob::Announce { request, n_have });
    }

    /// Takes in the answer to a call posted earlier.
    fn hear(&mut self, news: TrackerNews) {
        match news {
            TrackerNews::Announced { n_have } => self.announced = self.announced.max(n_have),
            TrackerNews::Refreshed(answer) => {
                self.refresh_pending = false;
                self.refreshed(answer);
            }
        }
    }

    /// The tracker's answer to a peer refresh.
    fn refreshed(&mut self, answer: Result<Reply, CallError>) {
        match answer {
            Ok(Reply::FileInfo { meta, peers, ticket }) if meta.digest == self.meta.digest => {
                // Workers renew their seeders' copy with it before the old one expires.
                *self.target.ticket.lock() = *ticket;
                self.add_peers(peers)
            }
            Ok(_) => {
                log::warn!("{} changed at the tracker; keeping the peers we have", self.meta.name)
            }
            Err(e) => log::warn!("cannot refresh peers of {}: {e}", self.meta.name),
        }
    }

    /// Checks the whole file, makes it durable, renames it into place and shares it as
    /// complete. The check is the file digest over the hashes computed from the bytes as
    /// they arrived (each piece hashed while still in cache), so it needs no second pass
    /// over the file. The rename never replaces a file that appeared at the destination in
    /// the meantime: the verified file then stays at its `.part` path, and the error says so.
    fn finish(&mut self) -> Result<(), Failure> {
        self.stop_workers();
        let computed: Option<Vec<Sha1Digest>> = self.computed.iter().copied().collect();
        let whole = computed.map(|hashes| file_digest(self.meta.size, &hashes));
        if whole != Some(self.meta.digest) {
            return Err("whole-file check failed after download".to_string().into());
        }
        let file = &self.target.file.buffered;
        let len = file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| format!("cannot stat {}: {e}", self.temp.display()))?;
        if len != self.meta.size {
            let reason =
                format!("{} is {len} bytes, expected {}", self.temp.display(), self.meta.size);
            return Err(reason.into());
        }
        let sync_started = Instant::now();
        file.sync_all().map_err(|e| format!("cannot flush {}: {e}", self.temp.display()))?;
        log::info!("{}: fsync took {:.3} s", self.meta.name, sync_started.elapsed().as_secs_f64());
        // The bytes verified are those of our open file: rename only if the path still
        // names it (not a file or link put there during the download).
        if !is_same_file(&self.temp, file).unwrap_or(false) {
            let reason = format!("{} was replaced during the download", self.temp.display());
            return Err(reason.into());
        }
        if let Err(e) = rename_no_replace(&self.temp, &self.dest) {
            let reason = if e.kind() == ErrorKind::AlreadyExists {
                format!(
                    "{} appeared during the download and was not replaced; the downloaded file is at {}",
                    self.dest.display(),
                    self.temp.display()
                )
            } else {
                format!(
                    "cannot rename into place: {e}; the downloaded file is at {}",
                    self.temp.display()
                )
            };
            return Err(Failure { reason, keep_part: true });
        }
        sync_parent(&self.dest);
        self.share.complete_at(self.dest.clone());
        // Every piece was hashed as it arrived and the file is synced as it is now.
        if let Ok(stamp) = FileStamp::of(file) {
            self.share.set_all_checked(stamp);
        }
        self.ctx.shares.save();
        let request = Request::UploadFile { group: self.group.clone(), file: self.meta.clone() };
        if !self.calls.post(TrackerJob::Complete(request.clone())) {
            // The queue is full of older calls: wait for room rather than not announce.
            if let Some(jobs) = &self.calls.jobs {
                let _ = jobs.send(TrackerJob::Complete(request));
            }
        }
        Ok(())
    }
}

/// Makes a rename durable by syncing its directory (best effort).
fn sync_parent(path: &Path) {
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

//! The download views' side of the swarms: `Downloads`, the downloads of this session in
//! the order they started, and `DownloadRecord`, a copy of one download's swarm as
//! `show_downloads`, `wait_downloads`, the progress bars and the dashboard show it, and
//! the lines they print. A record is made when a view asks (`Downloads::snapshot`), from
//! each swarm under its own lock; nothing is written here while pieces arrive.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use common::{FileName, GroupId, UserId};

use crate::interrupt::Interrupt;
use crate::swarm::{Changes, DownloadError, FileStamp, Phase, Swarm, Toggled};

/// The state of a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadState {
    Running,
    Paused,
    Complete,
    Failed(String),
}

/// What `show_downloads` shows of one download.
#[derive(Debug, Clone)]
pub struct DownloadRecord {
    /// Its number in this session (`Downloads`), for views that follow one download.
    pub id: usize,
    pub group: GroupId,
    pub name: FileName,
    /// How a user names what it fetches: `name`, `name/`, `name/path` or `name/sub/`
    /// (issue 23).
    pub item: String,
    pub dest: PathBuf,
    pub state: DownloadState,
    /// The bytes it fetches (a selective download's: the part chosen).
    pub size: u64,
    /// The pieces it fetches (a selective download's: the part chosen's), and how many of
    /// them it has.
    pub n_pieces: u32,
    pub n_have: u32,
    pub n_peers: usize,
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
    /// How each peer connected in this session was reached.
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
    /// Why a resumed download started over in a fresh `.part` file (issue 21).
    pub started_over: Option<String>,
    /// A folder's download (issue 23): the first `MAX_FILE_ROWS` files of the part it
    /// fetches, in the tree's order, each with its progress (the dashboard's file tree).
    pub files: Vec<FileProgress>,
    /// The files of the part it fetches in all (0 for a file's download).
    pub n_files: usize,
    /// The length of every piece shorter than `PIECE_SIZE`, by index: a file's last piece,
    /// and a folder's files' last pieces (issue 23), for the bytes behind a rate.
    pub short_pieces: BTreeMap<u32, u32>,
}

/// The pieces of `layout` shorter than `PIECE_SIZE`, with their lengths.
fn short_pieces(layout: &crate::swarm::ItemLayout) -> BTreeMap<u32, u32> {
    use crate::swarm::ItemLayout;
    let last_of = |first: u32, l: &common::Layout| {
        let last = l.n_pieces().checked_sub(1)?;
        let len = l.piece_len(common::PieceIndex(last));
        (len < common::PIECE_SIZE).then_some((first + last, len as u32))
    };
    match layout {
        ItemLayout::File(l) => last_of(0, l).into_iter().collect(),
        ItemLayout::Folder(f) => {
            f.files().iter().filter_map(|span| last_of(span.first_piece, &span.layout)).collect()
        }
    }
}

/// The files of a folder's download a record lists at most (a folder may have 100,000).
pub const MAX_FILE_ROWS: usize = 1000;

/// One file of a folder's download and how much of it is here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProgress {
    /// Its path inside the folder.
    pub path: String,
    pub size: u64,
    pub n_pieces: u32,
    pub n_have: u32,
}

/// The files of `swarm`'s part of a folder (none for a file), with the pieces had of each
/// (`have`): at most `MAX_FILE_ROWS` of them, and how many there are.
fn file_progress(swarm: &Swarm, have: &common::Bitfield) -> (Vec<FileProgress>, usize) {
    let (Some(tree), crate::swarm::ItemLayout::Folder(layout)) = (&swarm.meta.tree, &swarm.layout)
    else {
        return (Vec::new(), 0);
    };
    let mut rows = Vec::new();
    let mut n_files = 0;
    for span in layout.files() {
        let Some(entry) = tree.entries().get(span.entry) else { continue };
        if !swarm.chosen.selection.takes(&entry.path) {
            continue;
        }
        n_files += 1;
        if rows.len() < MAX_FILE_ROWS {
            rows.push(FileProgress {
                path: entry.path.to_string(),
                size: entry.file_size().unwrap_or(0),
                n_pieces: span.layout.n_pieces(),
                n_have: span.pieces().filter(|&p| have.has(common::PieceIndex(p))).count() as u32,
            });
        }
    }
    (rows, n_files)
}

pub use crate::swarm::{PIECE_MISSING, PIECE_NOT_TIMED, PIECE_OTHER_PEER, PIECE_RESUMED};

/// The window of `DownloadRecord::recent_rate`.
pub const RECENT: std::time::Duration = std::time::Duration::from_secs(5);

impl DownloadRecord {
    /// The record of `swarm`'s download (number `id` of the session) as it is now; `None`
    /// for a swarm that is not a download, or a cancelled one.
    pub fn of(id: usize, swarm: &Swarm) -> Option<DownloadRecord> {
        swarm.inspect(|s| {
            let t = s.transfer()?;
            let (files, n_files) = file_progress(swarm, s.have());
            let state = match s.phase() {
                // Paused while its resume re-hashes: paused once the check ends.
                Phase::Paused => DownloadState::Paused,
                Phase::Checking if s.is_paused() => DownloadState::Paused,
                Phase::Checking | Phase::Fetching | Phase::Finishing => DownloadState::Running,
                Phase::Seeding => DownloadState::Complete,
                Phase::Failed(e) => DownloadState::Failed(e.to_string()),
                Phase::Cancelled => return None,
            };
            Some(DownloadRecord {
                id,
                group: swarm.group.clone(),
                name: swarm.meta.name.clone(),
                item: swarm.shown_name(),
                dest: t.dest.clone(),
                state,
                size: swarm.chosen.size,
                n_pieces: swarm.chosen.wanted.count(),
                n_have: swarm.chosen.count_in(s.have()),
                n_peers: t.connected.len(),
                started: t.started,
                finished: t.finished,
                bytes_fetched: t.bytes_fetched,
                n_resumed: t.n_resumed,
                from_peer: t.from_peer.clone(),
                peer_users: t.peer_users.clone(),
                connected: t.connected.clone(),
                paths: t.paths.clone(),
                piece_source: t.piece_source.clone(),
                sources: t.sources.clone(),
                piece_ms: t.piece_ms.clone(),
                peer_have: t.peer_have.clone(),
                started_over: t.started_over.clone(),
                files,
                n_files,
                short_pieces: short_pieces(&swarm.layout),
            })
        })
    }

    /// The bytes per second received over the last `RECENT` (or since the start, if it is
    /// younger), from when each piece arrived: what an ETA should rest on, not the average
    /// since the start.
    pub fn recent_rate(&self) -> f64 {
        let end = self.finished.unwrap_or_else(Instant::now).duration_since(self.started);
        let end_ms = u64::try_from(end.as_millis()).unwrap_or(u64::MAX);
        let window_ms = end_ms.min(RECENT.as_millis() as u64).max(1);
        let from = end_ms.saturating_sub(window_ms);
        // Piece indexes are the item's (a folder's, for part of one: issue 23), so each
        // piece's length comes from the layout, never from the size of the part.
        let bytes: u64 = self
            .piece_ms
            .iter()
            .enumerate()
            .filter(|(_, &ms)| ms != PIECE_NOT_TIMED && u64::from(ms) >= from)
            .map(|(i, _)| {
                let i = u32::try_from(i).unwrap_or(u32::MAX);
                self.short_pieces.get(&i).map_or(common::PIECE_SIZE as u64, |&len| len.into())
            })
            .sum();
        bytes as f64 * 1000.0 / window_ms as f64
    }

    /// What is left of a running download at the recent rate: `Some` time, or `None` when
    /// nothing arrived lately (stalled: no peer sends) or it is not running.
    pub fn eta(&self) -> Option<std::time::Duration> {
        let rate = self.recent_rate();
        let done = (u64::from(self.n_have) * common::PIECE_SIZE as u64).min(self.size);
        (self.state == DownloadState::Running && rate > 0.0)
            .then(|| std::time::Duration::from_secs_f64((self.size - done) as f64 / rate))
    }

    /// Seconds from the start to the end, or to now while it runs.
    pub fn seconds(&self) -> f64 {
        self.finished.unwrap_or_else(Instant::now).duration_since(self.started).as_secs_f64()
    }

    /// The `show_downloads` line, with exact sizes (as on a pipe).
    pub fn line(&self) -> String {
        self.line_for(false)
    }

    /// The `show_downloads` line; at a terminal (`on_terminal`) sizes read as `8.4 MB`.
    pub fn line_for(&self, on_terminal: bool) -> String {
        let elapsed =
            self.finished.unwrap_or_else(Instant::now).duration_since(self.started).as_secs_f64();
        let mb_per_sec =
            if elapsed > 0.0 { self.bytes_fetched as f64 / elapsed / 1e6 } else { 0.0 };
        match &self.state {
            DownloadState::Running => {
                let percent = if self.n_pieces == 0 {
                    100.0
                } else {
                    100.0 * self.n_have as f64 / self.n_pieces as f64
                };
                let peers = if self.n_peers == 1 { "peer" } else { "peers" };
                format!(
                    "[D] [{}] {} {percent:.0}% ({}/{} pieces) {mb_per_sec:.1} MB/s from {} {peers}{}",
                    self.group,
                    self.item,
                    self.n_have,
                    self.n_pieces,
                    self.n_peers,
                    self.started_over_note()
                )
            }
            DownloadState::Paused => {
                let percent = match self.n_pieces {
                    0 => 100.0,
                    n => 100.0 * f64::from(self.n_have) / f64::from(n),
                };
                format!(
                    "[P] [{}] {} {percent:.0}% ({}/{} pieces) paused{}",
                    self.group,
                    self.item,
                    self.n_have,
                    self.n_pieces,
                    self.started_over_note()
                )
            }
            DownloadState::Complete => {
                let resumed = if self.n_resumed > 0 {
                    format!("{} pieces resumed; ", self.n_resumed)
                } else {
                    String::new()
                };
                format!(
                    "[C] [{}] {} -> {} ({} in {elapsed:.2} s, {mb_per_sec:.1} MB/s; {resumed}pieces from {})",
                    self.group,
                    self.item,
                    self.dest.display(),
                    crate::size::shown(self.size, on_terminal),
                    self.peer_counts()
                )
            }
            DownloadState::Failed(reason) => {
                format!("[F] [{}] {}: {reason}", self.group, self.item)
            }
        }
    }
}

impl DownloadRecord {
    /// The `show_downloads --json` line: one JSON object with every field, for scripts.
    /// `state` is `downloading`, `complete` or `failed` (with a `reason`); `seconds` runs
    /// until the download ends; `from_peers` maps each peer address to its piece count, and
    /// `peer_users` each address (of those and of the peers connected now) to its user,
    /// and `paths` to how it was reached (`direct`; issue 19).
    pub fn json(&self) -> String {
        self.json_value().to_string()
    }

    /// `json` as a value, for views that add to it (the dashboard).
    pub fn json_value(&self) -> serde_json::Value {
        let seconds = self.seconds();
        let (state, reason) = match &self.state {
            DownloadState::Running => ("downloading", None),
            DownloadState::Paused => ("paused", None),
            DownloadState::Complete => ("complete", None),
            DownloadState::Failed(reason) => ("failed", Some(reason.as_str())),
        };
        let from_peers: BTreeMap<String, u32> =
            self.from_peer.iter().map(|(addr, n)| (addr.to_string(), *n)).collect();
        let source =
            |addr: &SocketAddr| self.from_peer.contains_key(addr) || self.connected.contains(addr);
        let peer_users: BTreeMap<String, String> = self
            .peer_users
            .iter()
            .filter(|(addr, _)| source(addr))
            .map(|(addr, user)| (addr.to_string(), user.to_string()))
            .collect();
        let paths: BTreeMap<String, &str> = self
            .paths
            .iter()
            .filter(|(addr, _)| source(addr))
            .map(|(addr, path)| (addr.to_string(), path.as_str()))
            .collect();
        serde_json::json!({
            "state": state,
            "group": self.group.to_string(),
            "file": self.name.to_string(),
            "item": self.item,
            "destination": self.dest.display().to_string(),
            "size": self.size,
            "pieces": self.n_pieces,
            "pieces_have": self.n_have,
            "pieces_resumed": self.n_resumed,
            "peers": self.n_peers,
            "bytes_fetched": self.bytes_fetched,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "from_peers": from_peers,
            "peer_users": peer_users,
            "paths": paths,
            "reason": reason,
            "started_over": self.started_over,
        })
    }

    /// `; started over: <why>` for a download that started over in a fresh `.part` file.
    fn started_over_note(&self) -> String {
        match &self.started_over {
            Some(why) => format!("; started over: {why}"),
            None => String::new(),
        }
    }
}

impl DownloadRecord {
    /// A peer as people read it: `user@addr` (just `addr` if the tracker did not say).
    pub fn peer_name(&self, addr: &SocketAddr) -> String {
        match self.peer_users.get(addr) {
            Some(user) => format!("{user}@{addr}"),
            None => addr.to_string(),
        }
    }

    /// `alice@127.0.0.1:6201=690 bob@127.0.0.1:6202=679`: the pieces from each peer.
    fn peer_counts(&self) -> String {
        if self.from_peer.is_empty() {
            return "none".to_string();
        }
        let counts = self.from_peer.iter().map(|(addr, n)| format!("{}={n}", self.peer_name(addr)));
        counts.collect::<Vec<_>>().join(" ")
    }
}

/// Called with the record of a download that just finished (complete or failed).
pub type FinishHook = Box<dyn Fn(&DownloadRecord) + Send + Sync>;

/// What a download's coordinator is told by the views.
#[derive(Debug)]
pub enum Control {
    /// The swarm was paused or resumed: look at its phase.
    Look,
    /// The swarm was cancelled: remove the `.part` file and stop; then say so on `done`.
    Cancel { done: crossbeam_channel::Sender<()> },
}

/// One download of the session.
struct Entry {
    swarm: Arc<Swarm>,
    /// To its coordinator (bounded: a full queue already has a `Look` waiting).
    control: crossbeam_channel::Sender<Control>,
}

/// Why a download cannot be found or controlled. `Display` is the text after `error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FindError {
    #[error("no download of {name} in group {group} in this session; show_downloads lists them")]
    NoDownload { group: GroupId, name: FileName },
    #[error(transparent)]
    Control(#[from] crate::swarm::ControlError),
    #[error("the download of {name} did not stop within {secs} s; it stops when its thread ends")]
    Slow { name: FileName, secs: u64 },
}

/// The downloads of this session, in the order they started; a download's number is its
/// place here.
#[derive(Default)]
pub struct Downloads {
    entries: Mutex<Vec<Entry>>,
    /// Told by every download's swarm of each change; its lock orders the ends of
    /// downloads with `mute`/`unmute`.
    changes: Arc<Changes>,
    on_finish: Mutex<Option<FinishHook>>,
}

/// How long `cancel` waits for the download's thread to remove its file.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Downloads {
    /// Where downloads' swarms tell their changes.
    pub fn changes(&self) -> &Arc<Changes> {
        &self.changes
    }

    /// Adds a download; returns its number and where its coordinator hears from the views.
    pub fn add(&self, swarm: Arc<Swarm>) -> (usize, crossbeam_channel::Receiver<Control>) {
        let (control, heard) = crossbeam_channel::bounded(4);
        let mut entries = self.entries.lock();
        entries.push(Entry { swarm, control });
        let id = entries.len() - 1;
        drop(entries);
        self.changes.notify();
        (id, heard)
    }

    /// Whether a download not over yet (paused included) goes to `dest`.
    pub fn running_to(&self, dest: &std::path::Path) -> bool {
        self.entries.lock().iter().any(|e| e.swarm.downloading_to().as_deref() == Some(dest))
    }

    /// The newest download of `name` in `group` that is not over, else the newest at all
    /// (not cancelled).
    fn find(
        &self,
        group: &GroupId,
        name: &FileName,
    ) -> Result<(Arc<Swarm>, crossbeam_channel::Sender<Control>), FindError> {
        let entries = self.entries.lock();
        let of_it = || {
            entries.iter().rev().filter(|e| {
                &e.swarm.group == group
                    && &e.swarm.meta.name == name
                    && !matches!(e.swarm.phase(), Phase::Cancelled)
            })
        };
        of_it()
            .find(|e| e.swarm.phase().is_unfinished())
            .or_else(|| of_it().next())
            .map(|e| (Arc::clone(&e.swarm), e.control.clone()))
            .ok_or_else(|| FindError::NoDownload { group: group.clone(), name: name.clone() })
    }

    /// Pauses the download of `name` in `group`: it lets its peers go and keeps (and
    /// serves) its pieces.
    pub fn pause(&self, group: &GroupId, name: &FileName) -> Result<Toggled, FindError> {
        let (swarm, control) = self.find(group, name)?;
        let toggled = swarm.pause()?;
        let _ = control.try_send(Control::Look);
        Ok(toggled)
    }

    /// Goes on with the paused download of `name` in `group`.
    pub fn resume(&self, group: &GroupId, name: &FileName) -> Result<Toggled, FindError> {
        let (swarm, control) = self.find(group, name)?;
        let toggled = swarm.unpause()?;
        let _ = control.try_send(Control::Look);
        Ok(toggled)
    }

    /// Cancels the download of `name` in `group` and waits (a few seconds at most) until
    /// its thread removed its `.part` file; it is then no download of any view.
    pub fn cancel(&self, group: &GroupId, name: &FileName) -> Result<(), FindError> {
        let (swarm, control) = self.find(group, name)?;
        swarm.cancel()?;
        let (done, stopped) = crossbeam_channel::bounded(1);
        // Waits for room: a full queue holds only `Look`s, which the coordinator takes.
        let _ = control.send_timeout(Control::Cancel { done }, CANCEL_WAIT);
        self.changes.notify();
        match stopped.recv_timeout(CANCEL_WAIT) {
            // Done, or the thread had ended already (nothing left to remove).
            Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Ok(()),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                Err(FindError::Slow { name: name.clone(), secs: CANCEL_WAIT.as_secs() })
            }
        }
    }

    /// Ends `swarm`'s download (complete, with the stamp of its verified file, or failed),
    /// wakes the views, and calls the finish hook (outside every lock) unless muted.
    pub fn end(&self, swarm: &Swarm, outcome: Result<Option<FileStamp>, DownloadError>) {
        let announce = {
            let hub = self.changes.lock();
            // Under the views' lock: `unmute` snapshots and unmutes under it, so a
            // download that ends is either in that snapshot or announced by the hook, not
            // both.
            swarm.end(outcome);
            !hub.muted
        };
        self.changes.notify();
        if !announce {
            return;
        }
        let id = self.entries.lock().iter().position(|e| std::ptr::eq(&*e.swarm, swarm));
        if let (Some(hook), Some(record)) =
            (self.on_finish.lock().as_ref(), id.and_then(|id| DownloadRecord::of(id, swarm)))
        {
            hook(&record);
        }
    }

    /// Holds the finish hook back until `unmute`.
    pub fn mute(&self) {
        self.changes.lock().muted = true;
    }

    /// Lets the finish hook run again, and returns every record as of that moment: the
    /// downloads that ended while muted are there, and only there.
    pub fn unmute(&self) -> Vec<DownloadRecord> {
        let mut hub = self.changes.lock();
        hub.muted = false;
        self.snapshot()
    }

    /// Waits until a download changes, an interrupt wakes it, or `timeout` passes.
    pub fn wait_change(&self, timeout: std::time::Duration) {
        let mut hub = self.changes.lock();
        self.changes.wait(&mut hub, Some(timeout));
    }

    /// Calls `hook` each time a download finishes, from then on (`None`: no more).
    pub fn set_on_finish(&self, hook: Option<FinishHook>) {
        *self.on_finish.lock() = hook;
    }

    /// The record of every download (cancelled ones left out), as of now.
    pub fn snapshot(&self) -> Vec<DownloadRecord> {
        let swarms: Vec<Arc<Swarm>> =
            self.entries.lock().iter().map(|e| Arc::clone(&e.swarm)).collect();
        swarms.iter().enumerate().filter_map(|(id, s)| DownloadRecord::of(id, s)).collect()
    }

    /// Blocks until no download is at work (paused ones do not count), then returns the
    /// records; `None` if `interrupt` fires first (`wake` must be called on each
    /// interrupt).
    pub fn wait_idle(&self, interrupt: &Interrupt) -> Option<Vec<DownloadRecord>> {
        let mut hub = self.changes.lock();
        loop {
            // Under the views' lock: a swarm tells of a change after it made it, taking
            // this lock, so no change between this look and the wait is missed.
            let active = self.entries.lock().iter().any(|e| e.swarm.phase().is_active());
            if !active {
                return Some(self.snapshot());
            }
            if interrupt.is_fired() {
                return None;
            }
            self.changes.wait(&mut hub, None);
        }
    }

    /// Wakes `wait_idle` to look at its interrupt again.
    pub fn wake(&self) {
        self.changes.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record(piece_ms: Vec<u32>, n_have: u32) -> DownloadRecord {
        let n = piece_ms.len() as u32;
        let now = Instant::now();
        DownloadRecord {
            id: 0,
            group: GroupId::new("g").unwrap(),
            name: "f".parse().unwrap(),
            item: "f".into(),
            dest: PathBuf::from("f"),
            state: DownloadState::Running,
            size: u64::from(n) * common::PIECE_SIZE as u64,
            n_pieces: n,
            n_have,
            n_peers: 1,
            started: now.checked_sub(Duration::from_secs(10)).unwrap_or(now),
            finished: Some(now),
            bytes_fetched: 0,
            n_resumed: 0,
            from_peer: BTreeMap::new(),
            peer_users: BTreeMap::new(),
            connected: Vec::new(),
            paths: BTreeMap::new(),
            piece_source: vec![PIECE_MISSING; n as usize],
            sources: Vec::new(),
            piece_ms,
            peer_have: BTreeMap::new(),
            files: Vec::new(),
            n_files: 0,
            short_pieces: BTreeMap::new(),
            started_over: None,
        }
    }

    /// Issue 23: a download of part of a folder counts that part's pieces and bytes, and
    /// lists that part's files with the pieces had of each.
    #[test]
    fn a_folders_part_lists_its_files_with_their_progress() {
        use crate::swarm::{Chosen, ItemLayout, Phase};
        use common::folder::{folder_digest, Entry, EntryKind, RelPath, Selection, Tree};
        use common::{Bitfield, PieceIndex, Sha1Digest, PIECE_SIZE};
        let entry = |p: &str, kind| Entry { path: RelPath::parse(p).unwrap(), kind };
        let file = |size| EntryKind::File { size, executable: false };
        let p = PIECE_SIZE as u64;
        let tree = Tree::new(vec![
            entry("a", file(p + 1)),
            entry("d", EntryKind::Dir),
            entry("d/e", file(0)),
            entry("d/f", file(2 * p)),
        ])
        .unwrap();
        let pieces = vec![Sha1Digest([1; 20]); 4];
        let meta = common::message::FileMeta {
            name: "album".parse().unwrap(),
            size: tree.total_size(),
            digest: folder_digest(&tree, &pieces),
            pieces,
            tree: Some(tree),
        };
        let layout = ItemLayout::of(&meta).unwrap();
        let d = Selection::Inside { path: RelPath::parse("d").unwrap(), dir: true };
        let chosen = Chosen::of(&meta, &layout, d).unwrap();
        let swarm = Swarm::download(
            GroupId::new("g").unwrap(),
            meta,
            layout,
            chosen,
            PathBuf::from("d.part"),
            PathBuf::from("d"),
            Bitfield::empty(4),
            Phase::Fetching,
            Arc::default(),
        );
        let from: std::net::SocketAddr = "127.0.0.1:7000".parse().unwrap();
        swarm.piece_verified(PieceIndex(3), Some(from));
        swarm.piece_verified(PieceIndex(0), None);
        let r = DownloadRecord::of(0, &swarm).unwrap();
        assert_eq!((r.item.as_str(), r.n_pieces, r.n_have, r.size), ("album/d/", 2, 1, 2 * p));
        let row = |path: &str, size, n_pieces, n_have| FileProgress {
            path: path.into(),
            size,
            n_pieces,
            n_have,
        };
        assert_eq!(r.files, [row("d/e", 0, 0, 0), row("d/f", 2 * p, 2, 1)]);
        assert_eq!(r.n_files, 2);
        // Every file's short last piece (issue 23: the rate once summed the wrong lengths,
        // and panicked on a part smaller than its pieces).
        assert_eq!(r.short_pieces, BTreeMap::from([(1, 1)]));
        assert!(r.recent_rate() > 0.0);
        assert!(r.line().starts_with("[D] [g] album/d/ 50% (1/2 pieces) "), "{}", r.line());
    }

    /// Issue 21: a download that started over in a fresh `.part` says why, on its line and
    /// in its JSON.
    #[test]
    fn a_download_that_started_over_says_why() {
        let mut r = record(vec![PIECE_NOT_TIMED; 4], 0);
        assert!(!r.line().contains("started over"), "{}", r.line());
        assert_eq!(r.json_value()["started_over"], serde_json::Value::Null);
        r.started_over = Some("f.part is not the partial file this client created: x".into());
        assert!(r.line().starts_with("[D] [g] f 0% (0/4 pieces)"), "{}", r.line());
        assert!(
            r.line()
                .ends_with("; started over: f.part is not the partial file this client created: x"),
            "{}",
            r.line()
        );
        assert_eq!(
            r.json_value()["started_over"],
            "f.part is not the partial file this client created: x"
        );
    }

    #[test]
    fn the_eta_rests_on_the_last_seconds_and_says_when_nothing_comes() {
        // Ten seconds in: one piece early, two in the last five seconds, one to go.
        let r = record(vec![1000, 9000, 9500, PIECE_NOT_TIMED], 3);
        let rate = r.recent_rate();
        let expected = 2.0 * common::PIECE_SIZE as f64 / 5.0;
        assert!((rate - expected).abs() / expected < 0.01, "{rate} vs {expected}");
        let eta = r.eta().unwrap().as_secs_f64();
        assert!((eta - 2.5).abs() < 0.05, "{eta}");
        // Nothing in the last five seconds: stalled, no ETA.
        let stalled = record(vec![1000, 2000, PIECE_NOT_TIMED, PIECE_NOT_TIMED], 2);
        assert_eq!(stalled.recent_rate(), 0.0);
        assert_eq!(stalled.eta(), None);
        // At its very start: no time has passed, nothing arrived, no panic.
        let mut fresh = record(vec![PIECE_NOT_TIMED; 2], 0);
        fresh.started = Instant::now();
        fresh.finished = Some(fresh.started);
        assert_eq!(fresh.recent_rate(), 0.0);
    }
}

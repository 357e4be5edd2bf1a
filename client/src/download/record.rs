//! The records behind `show_downloads` and `wait_downloads`: one per download of this
//! session, updated by its coordinator, and the lines they print.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use common::{FileName, GroupId, UserId};

use crate::interrupt::Interrupt;

/// The state of a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadState {
    Running,
    Complete,
    Failed(String),
}

/// What `show_downloads` shows of one download.
#[derive(Debug, Clone)]
pub struct DownloadRecord {
    pub group: GroupId,
    pub name: FileName,
    pub dest: PathBuf,
    pub state: DownloadState,
    pub size: u64,
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
}

/// `piece_ms` of a piece not received in this session.
pub const PIECE_NOT_TIMED: u32 = u32::MAX;

/// `piece_source` of a piece not yet had.
pub const PIECE_MISSING: u8 = 0;
/// `piece_source` of a piece found verified on disk when the download resumed.
pub const PIECE_RESUMED: u8 = u8::MAX;
/// `piece_source` of a piece from a peer beyond the first 253 that delivered some.
pub const PIECE_OTHER_PEER: u8 = u8::MAX - 1;

impl DownloadRecord {
    /// Records that `piece` arrived from `addr`, now, for the piece map and the chart.
    pub fn note_piece_source(&mut self, piece: usize, addr: SocketAddr) {
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

    /// Seconds from the start to the end, or to now while it runs.
    pub fn seconds(&self) -> f64 {
        self.finished.unwrap_or_else(Instant::now).duration_since(self.started).as_secs_f64()
    }

    /// The `show_downloads` line, with exact sizes (as on a pipe).
    pub fn line(&self) -> String {
        self.line_for(false)
    }

    /// The `show_downloads` line; at a terminal (`on_terminal`) sizes read as `8.0 MiB`.
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
                    "[D] [{}] {} {percent:.0}% ({}/{} pieces) {mb_per_sec:.1} MB/s from {} {peers}",
                    self.group, self.name, self.n_have, self.n_pieces, self.n_peers
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
                    self.name,
                    self.dest.display(),
                    crate::size::shown(self.size, on_terminal),
                    self.peer_counts()
                )
            }
            DownloadState::Failed(reason) => {
                format!("[F] [{}] {}: {reason}", self.group, self.name)
            }
        }
    }
}

impl DownloadRecord {
    /// The `show_downloads --json` line: one JSON object with every field, for scripts.
    /// `state` is `downloading`, `complete` or `failed` (with a `reason`); `seconds` runs
    /// until the download ends; `from_peers` maps each peer address to its piece count, and
    /// `peer_users` each address (of those and of the peers connected now) to its user.
    pub fn json(&self) -> String {
        self.json_value().to_string()
    }

    /// `json` as a value, for views that add to it (the dashboard).
    pub fn json_value(&self) -> serde_json::Value {
        let seconds = self.seconds();
        let (state, reason) = match &self.state {
            DownloadState::Running => ("downloading", None),
            DownloadState::Complete => ("complete", None),
            DownloadState::Failed(reason) => ("failed", Some(reason.as_str())),
        };
        let from_peers: BTreeMap<String, u32> =
            self.from_peer.iter().map(|(addr, n)| (addr.to_string(), *n)).collect();
        let peer_users: BTreeMap<String, String> = self
            .peer_users
            .iter()
            .filter(|(addr, _)| self.from_peer.contains_key(addr) || self.connected.contains(addr))
            .map(|(addr, user)| (addr.to_string(), user.to_string()))
            .collect();
        serde_json::json!({
            "state": state,
            "group": self.group.to_string(),
            "file": self.name.to_string(),
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
            "reason": reason,
        })
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

/// Every download of this session.
#[derive(Default)]
pub struct Downloads {
    records: Mutex<Vec<DownloadRecord>>,
    changed: Condvar,
    on_finish: Mutex<Option<FinishHook>>,
    /// While set, the finish hook is not called (the progress bars are on the screen).
    muted: AtomicBool,
}

impl Downloads {
    /// Adds a running download; returns its index.
    pub(super) fn add(&self, record: DownloadRecord) -> usize {
        let mut records = self.records.lock();
        records.push(record);
        records.len() - 1
    }

    /// Changes the record at `idx`, wakes `wait_idle`, and calls the finish hook (outside
    /// the lock) if the download just finished.
    pub(super) fn update(&self, idx: usize, f: impl FnOnce(&mut DownloadRecord)) {
        let finished = {
            let mut records = self.records.lock();
            // Read under the lock: `unmute` snapshots and unmutes under it, so a download
            // that ends is either in that snapshot or announced by the hook, not both.
            let muted = self.muted.load(Ordering::SeqCst);
            records.get_mut(idx).and_then(|record| {
                let was_running = record.state == DownloadState::Running;
                f(record);
                (was_running && record.state != DownloadState::Running && !muted)
                    .then(|| record.clone())
            })
        };
        self.changed.notify_all();
        if let Some(record) = finished {
            if let Some(hook) = self.on_finish.lock().as_ref() {
                hook(&record);
            }
        }
    }

    /// Holds the finish hook back until `unmute`.
    pub fn mute(&self) {
        let _records = self.records.lock();
        self.muted.store(true, Ordering::SeqCst);
    }

    /// Lets the finish hook run again, and returns every record as of that moment: the
    /// downloads that ended while muted are there, and only there.
    pub fn unmute(&self) -> Vec<DownloadRecord> {
        let records = self.records.lock();
        self.muted.store(false, Ordering::SeqCst);
        records.clone()
    }

    /// Waits until a record changes, an interrupt wakes it, or `timeout` passes.
    pub fn wait_change(&self, timeout: std::time::Duration) {
        let mut records = self.records.lock();
        let _ = self.changed.wait_for(&mut records, timeout);
    }

    /// Calls `hook` each time a download finishes, from then on (`None`: no more).
    pub fn set_on_finish(&self, hook: Option<FinishHook>) {
        *self.on_finish.lock() = hook;
    }

    /// A copy of every record.
    pub fn snapshot(&self) -> Vec<DownloadRecord> {
        self.records.lock().clone()
    }

    /// Blocks until no download is running, then returns the records; `None` if
    /// `interrupt` fires first (`wake` must be called on each interrupt).
    pub fn wait_idle(&self, interrupt: &Interrupt) -> Option<Vec<DownloadRecord>> {
        let mut records = self.records.lock();
        while records.iter().any(|r| r.state == DownloadState::Running) {
            if interrupt.is_fired() {
                return None;
            }
            self.changed.wait(&mut records);
        }
        Some(records.clone())
    }

    /// Wakes `wait_idle` to look at its interrupt again. The lock is taken first, so a
    /// waiter is either still before its check or already waiting.
    pub fn wake(&self) {
        drop(self.records.lock());
        self.changed.notify_all();
    }
}

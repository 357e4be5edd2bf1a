//! Durable state in SQLite: the operation log (entries numbered by epoch and sequence
//! number), periodic snapshots of the whole state, and the current replication view.
//!
//! Invariant: an entry is acknowledged only after `append` returned, i.e. after its row was
//! committed with `synchronous=FULL`; opening the store replays the newest snapshot and every
//! logged entry after it, so a restart after SIGKILL sees every acknowledged change.
//! Invariant: log rows are consecutive; `append` refuses a gap.
//! Invariant: the data directory is 0700 and its files (the database and SQLite's -wal and
//! -shm files, which take the database's mode) 0600: they hold password hashes, session
//! tokens and the ticket secret.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use common::message::{Reply, RequestId};
use common::replica_message::{EntryId, View, WireEntry};

use crate::state::{Op, TrackerState};

/// Snapshot the state after this many entries; log rows older than the previous snapshot
/// are then pruned, so at least this many stay behind the newest snapshot for a lagging
/// replica to catch up from.
pub const SNAPSHOT_EVERY: u64 = 4096;

/// The on-disk format version; a data directory of another version is refused.
const FORMAT_VERSION: i64 = 3;

/// One log entry: an operation, the client request it came from, and the reply it gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub op: Op,
    /// The client request that caused it, so a retried request is answered from the log.
    pub origin: Option<RequestId>,
    pub reply: Reply,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("cannot set up data directory {path}: {source}")]
    CreateDir { path: String, source: std::io::Error },
    #[error("corrupt {what} at seq {seq}: {source}")]
    Corrupt { what: &'static str, seq: u64, source: postcard::Error },
    #[error("data directory has format version {found}, this build reads {FORMAT_VERSION}")]
    Format { found: i64 },
    #[error("logged entry {seq} does not apply: {reason}")]
    Replay { seq: u64, reason: String },
    #[error("entry {got} does not follow the last entry {last}")]
    Gap { last: u64, got: u64 },
    #[error("cannot encode: {0}")]
    Encode(postcard::Error),
}

/// What opening a store recovered.
pub struct Recovered {
    pub state: TrackerState,
    pub last: Option<EntryId>,
    pub view: Option<View>,
}

/// The open database.
pub struct Store {
    db: Connection,
    last: Option<EntryId>,
    snapshot_seq: u64,
}

impl Store {
    /// Opens (or creates) the store in `dir` and rebuilds the state it holds.
    pub fn open(dir: &Path) -> Result<(Store, Recovered), StoreError> {
        let db_path = dir.join("tracker.sqlite3");
        common::identity::make_private_dir(dir)
            .and_then(|()| {
                // Created 0600 here, not by SQLite (0644 less the umask).
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(&db_path)
            })
            .map_err(|source| StoreError::CreateDir { path: dir.display().to_string(), source })?;
        let db = Connection::open(&db_path)?;
        // WAL + FULL: a commit is on disk (fsync'd) before `append` returns.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS oplog (
                 seq INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, entry BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS snapshot (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 seq INTEGER NOT NULL, epoch INTEGER NOT NULL, state BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS view (id INTEGER PRIMARY KEY CHECK (id = 1), view BLOB NOT NULL);",
        )?;
        let format: Option<i64> = db
            .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| r.get(0))
            .optional()?;
        match format {
            None => {
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('format', ?1)",
                    [FORMAT_VERSION],
                )?;
            }
            Some(FORMAT_VERSION) => {}
            Some(found) => return Err(StoreError::Format { found }),
        }

        let snapshot: Option<(u64, u64, Vec<u8>)> = db
            .query_row("SELECT seq, epoch, state FROM snapshot WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let (mut last, mut state) =
            match snapshot {
                Some((seq, epoch, bytes)) => {
                    let state = postcard::from_bytes(&bytes)
                        .map_err(|source| StoreError::Corrupt { what: "snapshot", seq, source })?;
                    (Some(EntryId { epoch, seq }), state)
                }
                None => (None, TrackerState::default()),
            };
        let snapshot_seq = last.map_or(0, |l| l.seq);
        {
            let mut stmt =
                db.prepare("SELECT seq, epoch, entry FROM oplog WHERE seq > ?1 ORDER BY seq")?;
            let mut rows = stmt.query([snapshot_seq])?;
            while let Some(row) = rows.next()? {
                let seq: u64 = row.get(0)?;
                let epoch: u64 = row.get(1)?;
                let bytes: Vec<u8> = row.get(2)?;
                let entry: LogEntry = postcard::from_bytes(&bytes)
                    .map_err(|source| StoreError::Corrupt { what: "entry", seq, source })?;
                state
                    .apply_entry(&entry)
                    .map_err(|e| StoreError::Replay { seq, reason: e.to_string() })?;
                last = Some(EntryId { epoch, seq });
            }
        }
        let view: Option<View> = db
            .query_row("SELECT view FROM view WHERE id = 1", [], |r| r.get::<_, Vec<u8>>(0))
            .optional()?
            .map(|bytes| postcard::from_bytes(&bytes))
            .transpose()
            .map_err(|source| StoreError::Corrupt { what: "view", seq: 0, source })?;
        log::info!(
            "store: opened {} at {last:?} (snapshot at {snapshot_seq}), view {view:?}",
            dir.display()
        );
        Ok((Store { db, last, snapshot_seq }, Recovered { state, last, view }))
    }

    /// The id of the last committed entry.
    pub fn last(&self) -> Option<EntryId> {
        self.last
    }

    /// The sequence number the next entry gets.
    pub fn next_seq(&self) -> u64 {
        self.last.map_or(1, |l| l.seq + 1)
    }

    /// Durably appends an entry with id `id`, which must directly follow the last one.
    pub fn append(&mut self, id: EntryId, entry: &LogEntry) -> Result<(), StoreError> {
        let bytes = postcard::to_stdvec(entry).map_err(StoreError::Encode)?;
        self.append_encoded(id, &bytes)
    }

    /// Like `append`, for an entry already encoded (as received from the primary).
    pub fn append_encoded(&mut self, id: EntryId, bytes: &[u8]) -> Result<(), StoreError> {
        if id.seq != self.next_seq() {
            return Err(StoreError::Gap { last: self.next_seq() - 1, got: id.seq });
        }
        self.db.execute(
            "INSERT INTO oplog (seq, epoch, entry) VALUES (?1, ?2, ?3)",
            params![id.seq, id.epoch, bytes],
        )?;
        self.last = Some(id);
        Ok(())
    }

    /// The entry with sequence number `seq` as logged (id and encoded content), if it is
    /// still in the log (not pruned behind a snapshot).
    pub fn entry_at(&self, seq: u64) -> Result<Option<(EntryId, Vec<u8>)>, StoreError> {
        Ok(self
            .db
            .query_row("SELECT epoch, entry FROM oplog WHERE seq = ?1", [seq], |r| {
                Ok((EntryId { epoch: r.get(0)?, seq }, r.get(1)?))
            })
            .optional()?)
    }

    /// The id of the entry with sequence number `seq`, if the log (or the snapshot) knows it.
    pub fn entry_id_at(&self, seq: u64) -> Result<Option<EntryId>, StoreError> {
        let epoch: Option<u64> = self
            .db
            .query_row("SELECT epoch FROM oplog WHERE seq = ?1", [seq], |r| r.get(0))
            .optional()?;
        if let Some(epoch) = epoch {
            return Ok(Some(EntryId { epoch, seq }));
        }
        let snap: Option<(u64, u64)> = self
            .db
            .query_row("SELECT seq, epoch FROM snapshot WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        Ok(snap.filter(|(s, _)| *s == seq).map(|(seq, epoch)| EntryId { epoch, seq }))
    }

    /// Up to `limit` entries after `seq`, or `None` if some of them were pruned.
    pub fn entries_after(
        &self,
        seq: u64,
        limit: usize,
    ) -> Result<Option<Vec<WireEntry>>, StoreError> {
        let last = self.last.map_or(0, |l| l.seq);
        if seq >= last {
            return Ok(Some(Vec::new()));
        }
        let mut stmt = self
            .db
            .prepare("SELECT seq, epoch, entry FROM oplog WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let rows = stmt.query_map(params![seq, limit as u64], |r| {
            Ok(WireEntry { id: EntryId { seq: r.get(0)?, epoch: r.get(1)? }, payload: r.get(2)? })
        })?;
        let entries = rows.collect::<Result<Vec<_>, _>>()?;
        if entries.first().map(|e| e.id.seq) != Some(seq + 1) {
            return Ok(None);
        }
        Ok(Some(entries))
    }

    /// Replaces everything with `state` as of entry `last` (a snapshot from the primary).
    pub fn install_snapshot(
        &mut self,
        last: EntryId,
        state: &TrackerState,
    ) -> Result<(), StoreError> {
        let bytes = postcard::to_stdvec(state).map_err(StoreError::Encode)?;
        let tx = self.db.transaction()?;
        tx.execute("DELETE FROM oplog", [])?;
        tx.execute(
            "INSERT INTO snapshot (id, seq, epoch, state) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, epoch = excluded.epoch, state = excluded.state",
            params![last.seq, last.epoch, bytes],
        )?;
        tx.commit()?;
        self.last = Some(last);
        self.snapshot_seq = last.seq;
        Ok(())
    }

    /// Persists the view (before the tracker acts on it).
    pub fn save_view(&mut self, view: &View) -> Result<(), StoreError> {
        let bytes = postcard::to_stdvec(view).map_err(StoreError::Encode)?;
        self.db.execute(
            "INSERT INTO view (id, view) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET view = excluded.view",
            [bytes],
        )?;
        Ok(())
    }

    /// Whether a snapshot is due.
    pub fn wants_snapshot(&self) -> bool {
        self.last.map_or(0, |l| l.seq) - self.snapshot_seq >= SNAPSHOT_EVERY
    }

    /// Saves `state` (as of the last entry) as the snapshot and prunes log rows no longer
    /// needed.
    pub fn snapshot(&mut self, state: &TrackerState) -> Result<(), StoreError> {
        let Some(last) = self.last else { return Ok(()) };
        let bytes = postcard::to_stdvec(state).map_err(StoreError::Encode)?;
        let tx = self.db.transaction()?;
        tx.execute(
            "INSERT INTO snapshot (id, seq, epoch, state) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, epoch = excluded.epoch, state = excluded.state",
            params![last.seq, last.epoch, bytes],
        )?;
        tx.execute("DELETE FROM oplog WHERE seq <= ?1", [self.snapshot_seq])?;
        tx.commit()?;
        log::info!("store: snapshot at seq {} ({} bytes)", last.seq, bytes.len());
        self.snapshot_seq = last.seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, Permissions};
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::credential::Credential;
    use common::{GroupId, Password, UserId};

    fn entry(op: Op) -> LogEntry {
        LogEntry { op, origin: None, reply: Reply::Done }
    }

    fn create_user(n: usize) -> LogEntry {
        entry(Op::CreateUser {
            user: UserId::new(format!("u{n}")).unwrap(),
            credential: Credential::derive(&Password::new("pw").unwrap(), 1).unwrap(),
        })
    }

    fn append(store: &mut Store, state: &mut TrackerState, e: &LogEntry) {
        state.apply_entry(e).unwrap();
        let id = EntryId { epoch: 1, seq: store.next_seq() };
        store.append(id, e).unwrap();
    }

    #[test]
    fn the_data_directory_and_its_files_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join("tracker.sqlite3-wal"), b"").unwrap();
        fs::set_permissions(dir.join("tracker.sqlite3-wal"), Permissions::from_mode(0o644))
            .unwrap();
        let (mut store, rec) = Store::open(&dir).unwrap();
        let mut state = rec.state;
        append(&mut store, &mut state, &create_user(1));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            names.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
        names.sort();
        assert_eq!(names, ["tracker.sqlite3", "tracker.sqlite3-shm", "tracker.sqlite3-wal"]);
    }

    #[test]
    fn reopen_replays_the_log_and_the_view() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, rec) = Store::open(dir.path()).unwrap();
        let mut state = rec.state;
        append(&mut store, &mut state, &create_user(1));
        let group = entry(Op::CreateGroup {
            group: GroupId::new("g").unwrap(),
            owner: UserId::new("u1").unwrap(),
        });
        append(&mut store, &mut state, &group);
        store.save_view(&View { epoch: 3, primary: 2, members: vec![1, 2] }).unwrap();
        drop(store);
        let (store, rec) = Store::open(dir.path()).unwrap();
        assert_eq!(store.last(), Some(EntryId { epoch: 1, seq: 2 }));
        assert_eq!(rec.state, state);
        assert_eq!(rec.view, Some(View { epoch: 3, primary: 2, members: vec![1, 2] }));
    }

    #[test]
    fn gaps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        let err = store.append(EntryId { epoch: 1, seq: 2 }, &create_user(1)).unwrap_err();
        assert!(matches!(err, StoreError::Gap { last: 0, got: 2 }));
    }

    #[test]
    fn snapshot_and_tail_rebuild_the_same_state_and_serve_catch_up() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, rec) = Store::open(dir.path()).unwrap();
        let mut state = rec.state;
        let n = SNAPSHOT_EVERY as usize * 2 + 10;
        for i in 0..n {
            append(&mut store, &mut state, &create_user(i));
            if store.wants_snapshot() {
                store.snapshot(&state).unwrap();
            }
        }
        // Recent entries can be shipped; pruned ones cannot.
        let tail = store.entries_after(n as u64 - 5, 100).unwrap().unwrap();
        assert_eq!(
            tail.iter().map(|e| e.id.seq).collect::<Vec<_>>(),
            (n as u64 - 4..=n as u64).collect::<Vec<_>>()
        );
        assert!(store.entries_after(1, 100).unwrap().is_none());
        assert_eq!(store.entry_id_at(n as u64).unwrap(), Some(EntryId { epoch: 1, seq: n as u64 }));
        drop(store);
        let (store, rec) = Store::open(dir.path()).unwrap();
        assert_eq!(store.last().map(|l| l.seq), Some(n as u64));
        assert_eq!(rec.state, state);
    }

    #[test]
    fn installing_a_snapshot_replaces_everything() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, rec) = Store::open(dir.path()).unwrap();
        let mut state = rec.state;
        append(&mut store, &mut state, &create_user(1));
        let mut other = TrackerState::default();
        other.apply_entry(&create_user(7)).unwrap();
        store.install_snapshot(EntryId { epoch: 5, seq: 40 }, &other).unwrap();
        assert_eq!(store.next_seq(), 41);
        drop(store);
        let (store, rec) = Store::open(dir.path()).unwrap();
        assert_eq!(store.last(), Some(EntryId { epoch: 5, seq: 40 }));
        assert_eq!(rec.state, other);
    }
}

//! The Raft log of a tracker on SQLite: raft-rs's `Storage`, and the writes its driver makes
//! while handling a `Ready` (issue 9, first step: the storage, not yet driven).
//!
//! Layout (format version `RAFT_FORMAT`, checked at open):
//! - `raft_log(idx, term, kind, data, context)`: the entries after the snapshot;
//! - `raft_meta`: the hard state (term, vote, commit), the configuration, and the snapshot:
//!   its last index and term, its configuration and the application state as of it.
//!
//! Every write is one SQLite transaction (`synchronous=FULL`), so each `persist` of a
//! `Ready` costs one fsync however many entries it carries. Reads are served from a copy in
//! memory (the entries since the last compaction), so `Storage` never waits for the disk.
//!
//! Invariant: the entries are contiguous, and the first one follows the snapshot:
//! `first_index() == snapshot.index + 1`; `term(snapshot.index)` is always known.

use std::collections::VecDeque;
use std::path::Path;

use parking_lot::{Mutex, RwLock};
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// The on-disk format of these tables; another one is refused, never misread.
const RAFT_FORMAT: i64 = 1;

/// Why the Raft log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RaftStoreError {
    #[error("raft log: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("raft log has format version {found}, this build reads {RAFT_FORMAT}")]
    Format { found: i64 },
    #[error("raft log: damaged record: {0}")]
    Damaged(String),
    #[error("raft log: entries must follow index {last}, got {got}")]
    Gap { last: u64, got: u64 },
    #[error("raft log: entries from {got} would overwrite the snapshot at {snapshot}")]
    BeforeSnapshot { snapshot: u64, got: u64 },
    #[error("raft log: cannot compact to {to}: only {first}..={last} is in the log")]
    CompactOutOfRange { to: u64, first: u64, last: u64 },
    #[error("cannot set up data directory {path}: {source}")]
    CreateDir { path: String, source: std::io::Error },
    #[error(
        "{path} holds a tracker database of the pre-Raft format (primary-backup op log), \
         which this build does not read; start this tracker with an empty --data-dir \
         (the others' data directories must be emptied too), or keep running the build \
         that wrote it"
    )]
    PreRaft { path: String },
}

/// The database file in a tracker's data directory.
pub const DATABASE: &str = "tracker.sqlite3";

/// A configuration as stored: raft-rs's `ConfState` fields, versioned by `RAFT_FORMAT`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StoredConf {
    voters: Vec<u64>,
    learners: Vec<u64>,
    voters_outgoing: Vec<u64>,
    learners_next: Vec<u64>,
    auto_leave: bool,
}

impl From<&ConfState> for StoredConf {
    fn from(cs: &ConfState) -> StoredConf {
        StoredConf {
            voters: cs.voters.clone(),
            learners: cs.learners.clone(),
            voters_outgoing: cs.voters_outgoing.clone(),
            learners_next: cs.learners_next.clone(),
            auto_leave: cs.auto_leave,
        }
    }
}

impl From<StoredConf> for ConfState {
    fn from(c: StoredConf) -> ConfState {
        ConfState {
            voters: c.voters,
            learners: c.learners,
            voters_outgoing: c.voters_outgoing,
            learners_next: c.learners_next,
            auto_leave: c.auto_leave,
            ..Default::default()
        }
    }
}

/// What is kept in memory.
#[derive(Debug, Clone, Default)]
struct Core {
    hard: HardState,
    conf: ConfState,
    snapshot_index: u64,
    snapshot_term: u64,
    snapshot_conf: ConfState,
    snapshot_data: Vec<u8>,
    entries: VecDeque<Entry>,
}

impl Core {
    fn first_index(&self) -> u64 {
        self.snapshot_index + 1
    }

    fn last_index(&self) -> u64 {
        self.entries.back().map_or(self.snapshot_index, |e| e.index)
    }
}

/// The Raft log, hard state and snapshot of one tracker.
pub struct RaftStore {
    db: Mutex<Connection>,
    core: RwLock<Core>,
}

impl RaftStore {
    /// Opens (or creates) the store of a tracker's data directory `dir`, making the
    /// directory private (0700, files 0600: the state holds password hashes, session ids
    /// and the ticket secret). A database of the pre-Raft format is refused, never misread.
    pub fn open_dir(dir: &Path) -> Result<RaftStore, RaftStoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(DATABASE);
        common::identity::make_private_dir(dir)
            .and_then(|()| {
                // Created 0600 here, not by SQLite (0644 less the umask).
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(&path)
            })
            .map_err(|source| RaftStoreError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
        {
            let db = Connection::open(&path)?;
            let old: Option<String> = db
                .query_row(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'oplog'",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            if old.is_some() {
                return Err(RaftStoreError::PreRaft { path: path.display().to_string() });
            }
        }
        RaftStore::open(&path)
    }

    /// Opens (or creates) the Raft tables in the SQLite database at `path`.
    pub fn open(path: &Path) -> Result<RaftStore, RaftStoreError> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS raft_log (
                 idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, kind INTEGER NOT NULL,
                 data BLOB NOT NULL, context BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS generation (
                 id INTEGER PRIMARY KEY CHECK (id = 1), generation INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS raft_meta (
                 id INTEGER PRIMARY KEY CHECK (id = 1), format INTEGER NOT NULL,
                 term INTEGER NOT NULL, vote INTEGER NOT NULL, [commit] INTEGER NOT NULL,
                 conf BLOB NOT NULL,
                 snap_index INTEGER NOT NULL, snap_term INTEGER NOT NULL,
                 snap_conf BLOB NOT NULL, snap_data BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS raft_snapshot (
                 id INTEGER PRIMARY KEY CHECK (id = 1), data BLOB NOT NULL);",
        )?;
        let empty_conf = encode_conf(&ConfState::default())?;
        db.execute(
            "INSERT OR IGNORE INTO raft_meta VALUES (1, ?1, 0, 0, 0, ?2, 0, 0, ?2, x'')",
            params![RAFT_FORMAT, empty_conf],
        )?;
        // The snapshot's state lives in a row of its own: SQLite rewrites a whole row on
        // every update, and `raft_meta` is updated at every commit (the hard state), so a
        // snapshot kept there made each write copy the whole state. Stores written before
        // move theirs here once (`raft_meta.snap_data` stays empty).
        db.execute_batch(
            "BEGIN;
             INSERT OR IGNORE INTO raft_snapshot (id, data) VALUES (1, x'');
             UPDATE raft_snapshot SET data = (SELECT snap_data FROM raft_meta WHERE id = 1)
                 WHERE id = 1 AND (SELECT length(snap_data) FROM raft_meta WHERE id = 1) > 0;
             UPDATE raft_meta SET snap_data = x'' WHERE length(snap_data) > 0;
             COMMIT;",
        )?;
        let core = load(&db)?;
        Ok(RaftStore { db: Mutex::new(db), core: RwLock::new(core) })
    }

    /// Makes a `Ready`'s new entries and hard state durable, in one transaction: entries
    /// from the first new index on replace what the log had there.
    pub fn persist(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), RaftStoreError> {
        let mut core = self.core.write();
        if let Some(first) = entries.first() {
            if first.index <= core.snapshot_index {
                return Err(RaftStoreError::BeforeSnapshot {
                    snapshot: core.snapshot_index,
                    got: first.index,
                });
            }
            if first.index > core.last_index() + 1 {
                return Err(RaftStoreError::Gap { last: core.last_index(), got: first.index });
            }
            if let Some(w) = entries.windows(2).find(|w| w[1].index != w[0].index + 1) {
                return Err(RaftStoreError::Gap { last: w[0].index, got: w[1].index });
            }
        }
        let mut db = self.db.lock();
        let tx = db.transaction()?;
        if let Some(first) = entries.first() {
            tx.execute("DELETE FROM raft_log WHERE idx >= ?1", [first.index])?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO raft_log (idx, term, kind, data, context) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for e in entries {
                insert.execute(params![
                    e.index,
                    e.term,
                    e.entry_type as i64,
                    &e.data[..],
                    &e.context[..]
                ])?;
            }
        }
        if let Some(hs) = hard_state {
            tx.execute(
                "UPDATE raft_meta SET term = ?1, vote = ?2, [commit] = ?3 WHERE id = 1",
                params![hs.term, hs.vote, hs.commit],
            )?;
        }
        tx.commit()?;
        if let Some(first) = entries.first() {
            let keep = (first.index - core.first_index()) as usize;
            core.entries.truncate(keep);
            core.entries.extend(entries.iter().cloned());
        }
        if let Some(hs) = hard_state {
            core.hard = hs.clone();
        }
        Ok(())
    }

    /// Durably records the generation of the store (before acting on it). Called by the
    /// Raft thread, the one owner of this store.
    pub fn save_generation(&self, generation: u64) -> Result<(), RaftStoreError> {
        self.db.lock().execute(
            "INSERT INTO generation (id, generation) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET generation = excluded.generation",
            [generation],
        )?;
        Ok(())
    }

    /// How many times this group was forced to a single tracker (see `cluster`).
    pub fn generation(&self) -> Result<u64, RaftStoreError> {
        Ok(self
            .db
            .lock()
            .query_row("SELECT generation FROM generation WHERE id = 1", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    /// Whether this store has never been part of a group (no configuration, no log).
    pub fn is_blank(&self) -> bool {
        let core = self.core.read();
        core.conf.voters.is_empty()
            && core.conf.learners.is_empty()
            && core.snapshot_index == 0
            && core.entries.is_empty()
    }

    /// Records a new configuration (a conf change was applied).
    pub fn set_conf_state(&self, conf: &ConfState) -> Result<(), RaftStoreError> {
        let mut core = self.core.write();
        self.db
            .lock()
            .execute("UPDATE raft_meta SET conf = ?1 WHERE id = 1", [encode_conf(conf)?])?;
        core.conf = conf.clone();
        Ok(())
    }

    /// Replaces the log with a snapshot received from the leader: the entries go, the
    /// snapshot's state and configuration become ours.
    pub fn apply_snapshot(&self, snapshot: &Snapshot) -> Result<(), RaftStoreError> {
        let meta = snapshot.get_metadata();
        let mut core = self.core.write();
        if meta.index < core.snapshot_index {
            return Err(RaftStoreError::BeforeSnapshot {
                snapshot: core.snapshot_index,
                got: meta.index,
            });
        }
        let conf = encode_conf(meta.get_conf_state())?;
        let term = core.hard.term.max(meta.term);
        let mut db = self.db.lock();
        let tx = db.transaction()?;
        tx.execute("DELETE FROM raft_log", [])?;
        tx.execute(
            "UPDATE raft_meta SET term = ?1, [commit] = ?2, conf = ?3, snap_index = ?2,
                 snap_term = ?4, snap_conf = ?3 WHERE id = 1",
            params![term, meta.index, conf, meta.term],
        )?;
        tx.execute("UPDATE raft_snapshot SET data = ?1 WHERE id = 1", [&snapshot.data[..]])?;
        tx.commit()?;
        core.entries.clear();
        core.snapshot_index = meta.index;
        core.snapshot_term = meta.term;
        core.snapshot_conf = meta.get_conf_state().clone();
        core.snapshot_data = snapshot.data.to_vec();
        core.conf = meta.get_conf_state().clone();
        core.hard.term = term;
        core.hard.commit = meta.index;
        Ok(())
    }

    /// Takes a snapshot at `applied` (an applied index still in the log) holding `state`,
    /// the application's state as of that entry, and drops the entries it covers.
    pub fn compact(&self, applied: u64, state: Vec<u8>) -> Result<(), RaftStoreError> {
        let conf = self.conf_state();
        self.compact_as_of(applied, &conf, state)
    }

    /// `compact` with the configuration in force at `applied` (the snapshot was taken
    /// then, and stored after the state was encoded: the configuration may have changed
    /// since).
    pub fn compact_as_of(
        &self,
        applied: u64,
        conf: &ConfState,
        state: Vec<u8>,
    ) -> Result<(), RaftStoreError> {
        let mut core = self.core.write();
        let (first, last) = (core.first_index(), core.last_index());
        if applied < first || applied > last {
            return Err(RaftStoreError::CompactOutOfRange { to: applied, first, last });
        }
        let term = core.entries[(applied - first) as usize].term;
        let conf = conf.clone();
        let mut db = self.db.lock();
        let tx = db.transaction()?;
        tx.execute("DELETE FROM raft_log WHERE idx <= ?1", [applied])?;
        tx.execute(
            "UPDATE raft_meta SET snap_index = ?1, snap_term = ?2, snap_conf = ?3 WHERE id = 1",
            params![applied, term, encode_conf(&conf)?],
        )?;
        tx.execute("UPDATE raft_snapshot SET data = ?1 WHERE id = 1", [&state])?;
        tx.commit()?;
        core.entries.drain(..(applied - first + 1) as usize);
        core.snapshot_index = applied;
        core.snapshot_term = term;
        core.snapshot_conf = conf;
        core.snapshot_data = state;
        Ok(())
    }

    /// The configuration in force (as last set).
    pub fn conf_state(&self) -> ConfState {
        self.core.read().conf.clone()
    }

    /// The hard state last persisted.
    pub fn hard_state(&self) -> HardState {
        self.core.read().hard.clone()
    }
}

fn encode_conf(conf: &ConfState) -> Result<Vec<u8>, RaftStoreError> {
    postcard::to_stdvec(&StoredConf::from(conf)).map_err(|e| RaftStoreError::Damaged(e.to_string()))
}

fn decode_conf(bytes: &[u8]) -> Result<ConfState, RaftStoreError> {
    postcard::from_bytes::<StoredConf>(bytes)
        .map(ConfState::from)
        .map_err(|e| RaftStoreError::Damaged(format!("configuration: {e}")))
}

fn load(db: &Connection) -> Result<Core, RaftStoreError> {
    type Meta = (i64, u64, u64, u64, Vec<u8>, u64, u64, Vec<u8>, Vec<u8>);
    let meta: Option<Meta> = db
        .query_row(
            "SELECT format, term, vote, [commit], conf, snap_index, snap_term, snap_conf,
                 (SELECT data FROM raft_snapshot WHERE id = 1) FROM raft_meta WHERE id = 1",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            },
        )
        .optional()?;
    let Some((format, term, vote, commit, conf, snap_index, snap_term, snap_conf, snap_data)) =
        meta
    else {
        return Err(RaftStoreError::Damaged("no metadata row".into()));
    };
    if format != RAFT_FORMAT {
        return Err(RaftStoreError::Format { found: format });
    }
    let hard = HardState { term, vote, commit, ..Default::default() };
    let mut core = Core {
        hard,
        conf: decode_conf(&conf)?,
        snapshot_index: snap_index,
        snapshot_term: snap_term,
        snapshot_conf: decode_conf(&snap_conf)?,
        snapshot_data: snap_data,
        entries: VecDeque::new(),
    };
    let mut stmt =
        db.prepare("SELECT idx, term, kind, data, context FROM raft_log ORDER BY idx")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, u64>(0)?,
            r.get::<_, u64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Vec<u8>>(3)?,
            r.get::<_, Vec<u8>>(4)?,
        ))
    })?;
    for row in rows {
        let (index, term, kind, data, context) = row?;
        let expected = core.last_index() + 1;
        if index != expected {
            return Err(RaftStoreError::Damaged(format!("entry {index} where {expected} was due")));
        }
        let entry_type = match kind {
            0 => EntryType::EntryNormal,
            1 => EntryType::EntryConfChange,
            2 => EntryType::EntryConfChangeV2,
            other => return Err(RaftStoreError::Damaged(format!("entry kind {other}"))),
        };
        core.entries.push_back(Entry {
            index,
            term,
            entry_type,
            data: data.into(),
            context: context.into(),
            ..Default::default()
        });
    }
    Ok(core)
}

fn storage_error(e: RaftStoreError) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl Storage for RaftStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let core = self.core.read();
        Ok(RaftState::new(core.hard.clone(), core.conf.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let core = self.core.read();
        if low < core.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > core.last_index() + 1 || low > high {
            // raft-rs never asks this; an error is safer than its reference's panic.
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let offset = core.first_index();
        let mut entries: Vec<Entry> = core
            .entries
            .range((low - offset) as usize..(high - offset) as usize)
            .cloned()
            .collect();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let core = self.core.read();
        if idx == core.snapshot_index {
            return Ok(core.snapshot_term);
        }
        if idx < core.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > core.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(core.entries[(idx - core.first_index()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.core.read().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.core.read().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let core = self.core.read();
        if core.snapshot_index < request_index {
            // The driver takes a newer one (`compact`) and raft-rs asks again.
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        let mut meta = SnapshotMetadata {
            index: core.snapshot_index,
            term: core.snapshot_term,
            ..Default::default()
        };
        meta.set_conf_state(core.snapshot_conf.clone());
        let mut snapshot =
            Snapshot { data: core.snapshot_data.clone().into(), ..Default::default() };
        snapshot.set_metadata(meta);
        Ok(snapshot)
    }
}

impl From<RaftStoreError> for raft::Error {
    fn from(e: RaftStoreError) -> raft::Error {
        storage_error(e)
    }
}

#[cfg(test)]
mod tests;

//! Durable state in SQLite: an operation log plus periodic snapshots of the whole state.
//!
//! Invariant: an op is acknowledged only after `append` returned, i.e. after its log row was
//! committed with `synchronous=FULL`; opening the store replays the newest snapshot and every
//! logged op after it, so a restart after SIGKILL sees every acknowledged change.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::state::{Op, TrackerState};

/// Snapshot the state after this many ops; older log rows are then pruned, keeping at
/// least this many behind the snapshot (room for a lagging replica to catch up from).
pub const SNAPSHOT_EVERY: u64 = 4096;

/// The on-disk format version; a data directory of another version is refused.
const FORMAT_VERSION: i64 = 1;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("cannot create data directory {path}: {source}")]
    CreateDir { path: String, source: std::io::Error },
    #[error("corrupt {what} at seq {seq}: {source}")]
    Corrupt { what: &'static str, seq: u64, source: postcard::Error },
    #[error("data directory has format version {found}, this build reads {FORMAT_VERSION}")]
    Format { found: i64 },
    #[error("logged op {seq} does not apply: {reason}")]
    Replay { seq: u64, reason: String },
    #[error("cannot encode: {0}")]
    Encode(postcard::Error),
}

/// The open database.
pub struct Store {
    db: Connection,
    last_seq: u64,
    snapshot_seq: u64,
}

impl Store {
    /// Opens (or creates) the store in `dir` and rebuilds the state it holds.
    pub fn open(dir: &Path) -> Result<(Store, TrackerState), StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::CreateDir { path: dir.display().to_string(), source })?;
        let db = Connection::open(dir.join("tracker.sqlite3"))?;
        // WAL + FULL: a commit is on disk (fsync'd) before `append` returns.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS oplog (seq INTEGER PRIMARY KEY, op BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS snapshot (
                 id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, state BLOB NOT NULL);",
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

        let snapshot: Option<(u64, Vec<u8>)> = db
            .query_row("SELECT seq, state FROM snapshot WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let (snapshot_seq, mut state) =
            match snapshot {
                Some((seq, bytes)) => {
                    let state = postcard::from_bytes(&bytes)
                        .map_err(|source| StoreError::Corrupt { what: "snapshot", seq, source })?;
                    (seq, state)
                }
                None => (0, TrackerState::default()),
            };
        let mut last_seq = snapshot_seq;
        {
            let mut stmt = db.prepare("SELECT seq, op FROM oplog WHERE seq > ?1 ORDER BY seq")?;
            let mut rows = stmt.query([snapshot_seq])?;
            while let Some(row) = rows.next()? {
                let seq: u64 = row.get(0)?;
                let bytes: Vec<u8> = row.get(1)?;
                let op: Op = postcard::from_bytes(&bytes)
                    .map_err(|source| StoreError::Corrupt { what: "op", seq, source })?;
                state.apply(&op).map_err(|e| StoreError::Replay { seq, reason: e.to_string() })?;
                last_seq = seq;
            }
        }
        log::info!(
            "store: opened {} at seq {last_seq} (snapshot at {snapshot_seq})",
            dir.display()
        );
        Ok((Store { db, last_seq, snapshot_seq }, state))
    }

    /// The sequence number of the last committed op.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Durably appends `op` as the next op; returns its sequence number.
    pub fn append(&mut self, op: &Op) -> Result<u64, StoreError> {
        let bytes = postcard::to_stdvec(op).map_err(StoreError::Encode)?;
        let seq = self.last_seq + 1;
        self.db.execute("INSERT INTO oplog (seq, op) VALUES (?1, ?2)", params![seq, bytes])?;
        self.last_seq = seq;
        Ok(seq)
    }

    /// Whether a snapshot is due.
    pub fn wants_snapshot(&self) -> bool {
        self.last_seq - self.snapshot_seq >= SNAPSHOT_EVERY
    }

    /// Saves `state` (as of `last_seq`) as the snapshot and prunes log rows no longer needed.
    pub fn snapshot(&mut self, state: &TrackerState) -> Result<(), StoreError> {
        let bytes = postcard::to_stdvec(state).map_err(StoreError::Encode)?;
        let seq = self.last_seq;
        let tx = self.db.transaction()?;
        tx.execute(
            "INSERT INTO snapshot (id, seq, state) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, state = excluded.state",
            params![seq, bytes],
        )?;
        tx.execute("DELETE FROM oplog WHERE seq <= ?1", [seq.saturating_sub(SNAPSHOT_EVERY)])?;
        tx.commit()?;
        self.snapshot_seq = seq;
        log::info!("store: snapshot at seq {seq} ({} bytes)", bytes.len());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::Credential;
    use common::{GroupId, Password, UserId};

    fn create_user(n: usize) -> Op {
        Op::CreateUser {
            user: UserId::new(format!("u{n}")).unwrap(),
            credential: Credential::derive(&Password::new("pw").unwrap(), 1).unwrap(),
        }
    }

    #[test]
    fn reopen_replays_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut state) = Store::open(dir.path()).unwrap();
        for op in [
            create_user(1),
            Op::CreateGroup {
                group: GroupId::new("g").unwrap(),
                owner: UserId::new("u1").unwrap(),
            },
        ] {
            state.apply(&op).unwrap();
            store.append(&op).unwrap();
        }
        drop(store);
        let (store, reopened) = Store::open(dir.path()).unwrap();
        assert_eq!(store.last_seq(), 2);
        assert_eq!(reopened, state);
    }

    #[test]
    fn snapshot_and_tail_rebuild_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut state) = Store::open(dir.path()).unwrap();
        let n = SNAPSHOT_EVERY as usize * 2 + 10;
        for i in 0..n {
            let op = create_user(i);
            state.apply(&op).unwrap();
            store.append(&op).unwrap();
            if store.wants_snapshot() {
                store.snapshot(&state).unwrap();
            }
        }
        drop(store);
        let (store, reopened) = Store::open(dir.path()).unwrap();
        assert_eq!(store.last_seq(), n as u64);
        assert_eq!(reopened, state);
        let kept: u64 = store.db.query_row("SELECT COUNT(*) FROM oplog", [], |r| r.get(0)).unwrap();
        assert!(kept < n as u64 && kept >= SNAPSHOT_EVERY, "kept {kept} log rows");
    }
}

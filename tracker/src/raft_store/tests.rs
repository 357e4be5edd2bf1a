//! `RaftStore` against an in-memory reference: random sequences of the driver's writes,
//! with reopens (a restart) in between, must leave every `Storage` answer equal to the
//! reference's.

use proptest::prelude::*;

use super::*;

fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
    Entry { index, term, data: data.to_vec().into(), ..Default::default() }
}

fn conf(voters: &[u64]) -> ConfState {
    ConfState { voters: voters.to_vec(), ..Default::default() }
}

/// The reference: the same rules, in plain memory.
#[derive(Debug, Clone, Default)]
struct Model {
    hard: (u64, u64, u64),
    conf: Vec<u64>,
    snapshot: (u64, u64, Vec<u64>, Vec<u8>),
    entries: Vec<(u64, u64, Vec<u8>)>,
}

impl Model {
    fn first(&self) -> u64 {
        self.snapshot.0 + 1
    }
    fn last(&self) -> u64 {
        self.entries.last().map_or(self.snapshot.0, |e| e.0)
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Append `n` entries starting `back` entries before the end (overwriting them).
    Append {
        back: u8,
        n: u8,
        term: u64,
    },
    HardState {
        term: u64,
        vote: u64,
        commit: u64,
    },
    SetConf {
        voters: Vec<u64>,
    },
    /// Compact at the entry `at` (modulo the log's length).
    Compact {
        at: u8,
    },
    /// A snapshot from the leader, `ahead` entries past our last one.
    Snapshot {
        ahead: u8,
        term: u64,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), 1u8..6, 1u64..9).prop_map(|(back, n, term)| Op::Append { back, n, term }),
        2 => (0u64..9, 0u64..4, 0u64..40).prop_map(|(term, vote, commit)| Op::HardState { term, vote, commit }),
        1 => prop::collection::vec(1u64..6, 1..4).prop_map(|voters| Op::SetConf { voters }),
        1 => any::<u8>().prop_map(|at| Op::Compact { at }),
        1 => (0u8..4, 1u64..9).prop_map(|(ahead, term)| Op::Snapshot { ahead, term }),
        1 => Just(Op::Reopen),
    ]
}

fn apply(store: &mut RaftStore, model: &mut Model, op: &Op, path: &Path, step: usize) {
    match op {
        Op::Append { back, n, term } => {
            let len = model.entries.len() as u64;
            let start = model.last() + 1 - u64::from(*back) % (len + 1);
            let data = |i: u64| format!("{step}:{i}").into_bytes();
            let new: Vec<Entry> =
                (start..start + u64::from(*n)).map(|i| entry(i, *term, &data(i))).collect();
            store.persist(&new, None).unwrap();
            model.entries.retain(|e| e.0 < start);
            model.entries.extend((start..start + u64::from(*n)).map(|i| (i, *term, data(i))));
        }
        Op::HardState { term, vote, commit } => {
            let hs = HardState { term: *term, vote: *vote, commit: *commit, ..Default::default() };
            store.persist(&[], Some(&hs)).unwrap();
            model.hard = (*term, *vote, *commit);
        }
        Op::SetConf { voters } => {
            store.set_conf_state(&conf(voters)).unwrap();
            model.conf = voters.clone();
        }
        Op::Compact { at } => {
            if model.entries.is_empty() {
                assert!(store.compact(model.first(), vec![]).is_err());
                return;
            }
            let i = usize::from(*at) % model.entries.len();
            let (index, term, _) = model.entries[i].clone();
            let state = format!("state@{index}").into_bytes();
            store.compact(index, state.clone()).unwrap();
            model.snapshot = (index, term, model.conf.clone(), state);
            model.entries.drain(..=i);
        }
        Op::Snapshot { ahead, term } => {
            let index = model.last() + u64::from(*ahead);
            let mut meta = SnapshotMetadata { index, term: *term, ..Default::default() };
            meta.set_conf_state(conf(&[1, 2, 3]));
            let mut snapshot = Snapshot {
                data: format!("leader@{index}").into_bytes().into(),
                ..Default::default()
            };
            snapshot.set_metadata(meta);
            store.apply_snapshot(&snapshot).unwrap();
            model.entries.clear();
            model.snapshot = (index, *term, vec![1, 2, 3], format!("leader@{index}").into_bytes());
            model.conf = vec![1, 2, 3];
            model.hard.0 = model.hard.0.max(*term);
            model.hard.2 = index;
        }
        Op::Reopen => {
            let _ = std::mem::replace(store, RaftStore::open(path).unwrap());
        }
    }
}

fn check(store: &RaftStore, model: &Model) {
    assert_eq!(store.first_index().unwrap(), model.first());
    assert_eq!(store.last_index().unwrap(), model.last());
    let state = store.initial_state().unwrap();
    let hs = &state.hard_state;
    assert_eq!((hs.term, hs.vote, hs.commit), model.hard);
    assert_eq!(state.conf_state.voters, model.conf);
    assert_eq!(store.term(model.snapshot.0).unwrap(), model.snapshot.1);
    for e in &model.entries {
        assert_eq!(store.term(e.0).unwrap(), e.1);
    }
    assert!(store.term(model.last() + 1).is_err());
    if model.snapshot.0 > 0 {
        assert!(matches!(
            store.term(model.snapshot.0 - 1),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
    }
    let got = store
        .entries(model.first(), model.last() + 1, None, GetEntriesContext::empty(false))
        .unwrap();
    let got: Vec<(u64, u64, Vec<u8>)> =
        got.iter().map(|e| (e.index, e.term, e.data.to_vec())).collect();
    assert_eq!(got, model.entries);
    if !model.entries.is_empty() {
        // A size limit of 0 still returns one entry.
        let one = store
            .entries(model.first(), model.last() + 1, Some(0), GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(one.len(), 1);
    }
    let snapshot = store.snapshot(0, 0).unwrap();
    let meta = snapshot.get_metadata();
    assert_eq!((meta.index, meta.term), (model.snapshot.0, model.snapshot.1));
    assert_eq!(meta.get_conf_state().voters, model.snapshot.2);
    assert_eq!(snapshot.data.to_vec(), model.snapshot.3);
    assert!(matches!(
        store.snapshot(model.snapshot.0 + 1, 0),
        Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn matches_the_reference_across_restarts(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.sqlite3");
        let mut store = RaftStore::open(&path).unwrap();
        let mut model = Model::default();
        check(&store, &model);
        for (step, op) in ops.iter().enumerate() {
            apply(&mut store, &mut model, op, &path, step);
            check(&store, &model);
        }
        // Whatever happened, a restart sees the same.
        let reopened = RaftStore::open(&path).unwrap();
        check(&reopened, &model);
    }
}

#[test]
fn bad_writes_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = RaftStore::open(&dir.path().join("raft.sqlite3")).unwrap();
    store.persist(&[entry(1, 1, b"a"), entry(2, 1, b"b")], None).unwrap();
    assert!(matches!(
        store.persist(&[entry(4, 1, b"d")], None),
        Err(RaftStoreError::Gap { last: 2, got: 4 })
    ));
    assert!(matches!(
        store.persist(&[entry(3, 1, b"c"), entry(5, 1, b"e")], None),
        Err(RaftStoreError::Gap { last: 3, got: 5 })
    ));
    store.compact(2, b"s".to_vec()).unwrap();
    assert!(matches!(
        store.persist(&[entry(2, 2, b"x")], None),
        Err(RaftStoreError::BeforeSnapshot { snapshot: 2, got: 2 })
    ));
    assert!(store.compact(3, vec![]).is_err());
    assert_eq!(store.last_index().unwrap(), 2);
    // Out-of-range reads are errors, never panics.
    let ctx = || GetEntriesContext::empty(false);
    assert!(store.entries(1, 3, None, ctx()).is_err());
    assert!(store.entries(3, 9, None, ctx()).is_err());
}

#[test]
fn another_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.sqlite3");
    drop(RaftStore::open(&path).unwrap());
    let db = Connection::open(&path).unwrap();
    db.execute("UPDATE raft_meta SET format = 99", []).unwrap();
    drop(db);
    assert!(matches!(RaftStore::open(&path), Err(RaftStoreError::Format { found: 99 })));
}

#[test]
fn a_data_directory_of_the_pre_raft_format_is_refused_with_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let db = Connection::open(dir.path().join(DATABASE)).unwrap();
    db.execute_batch("CREATE TABLE oplog (seq INTEGER PRIMARY KEY, epoch INTEGER, entry BLOB);")
        .unwrap();
    drop(db);
    let err = RaftStore::open_dir(dir.path()).err().expect("refused");
    assert!(matches!(err, RaftStoreError::PreRaft { .. }), "{err}");
    assert!(err.to_string().contains("empty --data-dir"), "{err}");
    // A fresh directory opens, private.
    let fresh = dir.path().join("fresh");
    RaftStore::open_dir(&fresh).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&fresh.join(DATABASE)), 0o600);
}

#[test]
fn the_snapshot_lives_in_a_row_of_its_own_and_older_stores_are_moved() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.sqlite3");
    let store = RaftStore::open(&path).unwrap();
    store.persist(&[entry(1, 1, b"a"), entry(2, 1, b"b")], None).unwrap();
    store.compact(2, b"state".to_vec()).unwrap();
    drop(store);
    let db = Connection::open(&path).unwrap();
    let in_meta: Vec<u8> =
        db.query_row("SELECT snap_data FROM raft_meta", [], |r| r.get(0)).unwrap();
    assert!(in_meta.is_empty(), "the row updated at every commit stays small");
    // A store written before: the snapshot in raft_meta, no raft_snapshot table.
    db.execute_batch("UPDATE raft_meta SET snap_data = x'6f6c64'; DROP TABLE raft_snapshot;")
        .unwrap();
    drop(db);
    let store = RaftStore::open(&path).unwrap();
    assert_eq!(store.snapshot(2, 0).unwrap().data.to_vec(), b"old".to_vec());
    drop(store);
    let db = Connection::open(&path).unwrap();
    let in_meta: Vec<u8> =
        db.query_row("SELECT snap_data FROM raft_meta", [], |r| r.get(0)).unwrap();
    assert!(in_meta.is_empty(), "moved once");
}

#[test]
fn the_generation_is_saved_through_the_store_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.sqlite3");
    {
        let store = RaftStore::open(&path).unwrap();
        assert_eq!(store.generation().unwrap(), 0);
        store.save_generation(3).unwrap();
        store.save_generation(4).unwrap();
        assert_eq!(store.generation().unwrap(), 4);
    }
    assert_eq!(RaftStore::open(&path).unwrap().generation().unwrap(), 4);
}

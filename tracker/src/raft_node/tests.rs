//! Three nodes in one process, joined by an in-memory network that can cut links: the
//! Jepsen shape in miniature. Every proposal's outcome is recorded; after healing, every
//! acknowledged entry must be applied on every node, in the same order, once, and no term
//! may have had two leaders.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use super::*;

/// Links between nodes; a cut drops messages both ways.
#[derive(Default)]
struct Network {
    nodes: Mutex<BTreeMap<u64, Sender<Message>>>,
    cut: Mutex<HashSet<(u64, u64)>>,
}

impl Network {
    fn isolate(&self, id: u64, others: &[u64]) {
        let mut cut = self.cut.lock();
        for &o in others {
            cut.insert((id, o));
            cut.insert((o, id));
        }
    }

    fn heal(&self) {
        self.cut.lock().clear();
    }
}

struct Link {
    net: Arc<Network>,
}

impl Transport for Link {
    fn send(&self, msg: Message) {
        if self.net.cut.lock().contains(&(msg.from, msg.to)) {
            return;
        }
        if let Some(to) = self.net.nodes.lock().get(&msg.to) {
            let _ = to.try_send(msg);
        }
    }
}

/// What a node applied: (index, data) in order.
type Applied = Vec<(u64, Vec<u8>)>;

/// Records what a node applied.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Applied>>);

impl Apply for Log {
    type Output = ();
    fn entry(&mut self, index: u64, data: &[u8]) -> Result<(), String> {
        self.0.lock().push((index, data.to_vec()));
        Ok(())
    }
    fn snapshot(&mut self, _: u64, data: &[u8]) -> Result<(), String> {
        *self.0.lock() = postcard::from_bytes(data).map_err(|e| e.to_string())?;
        Ok(())
    }
    fn freeze(&self) -> crate::raft_node::Frozen {
        let copy = self.0.lock().clone();
        Box::new(move || postcard::to_stdvec(&copy).unwrap_or_default())
    }
}

struct Group {
    _dir: tempfile::TempDir,
    net: Arc<Network>,
    nodes: BTreeMap<u64, Arc<RaftNode<()>>>,
    logs: BTreeMap<u64, Log>,
    /// (term, leader) pairs ever observed.
    leaders: Mutex<HashSet<(u64, u64)>>,
}

impl Group {
    fn start(n: u64) -> Group {
        let dir = tempfile::tempdir().unwrap();
        let net = Arc::new(Network::default());
        let voters: Vec<u64> = (1..=n).collect();
        let mut nodes = BTreeMap::new();
        let mut logs = BTreeMap::new();
        for id in 1..=n {
            let store = RaftStore::open(&dir.path().join(format!("{id}.sqlite3"))).unwrap();
            let log = Log::default();
            let node = Arc::new(
                RaftNode::start(
                    id,
                    &voters,
                    store,
                    Box::new(log.clone()),
                    Box::new(Link { net: Arc::clone(&net) }),
                    NodeOptions::default(),
                )
                .unwrap(),
            );
            // Deliver the network's messages to the node.
            let (tx, rx) = bounded::<Message>(INBOX);
            net.nodes.lock().insert(id, tx);
            let weak = Arc::downgrade(&node);
            std::thread::spawn(move || {
                for msg in rx {
                    match weak.upgrade() {
                        Some(node) => node.step(msg),
                        None => return,
                    }
                }
            });
            nodes.insert(id, node);
            logs.insert(id, log);
        }
        Group { _dir: dir, net, nodes, logs, leaders: Mutex::default() }
    }

    fn observe(&self) -> Vec<NodeStatus> {
        let statuses: Vec<NodeStatus> = self.nodes.values().map(|n| n.status()).collect();
        for s in &statuses {
            if s.role == StateRole::Leader {
                self.leaders.lock().insert((s.term, s.id));
            }
        }
        statuses
    }

    /// Waits until a leader is seen among `among`, newer than `after_term`.
    fn wait_leader(&self, among: &[u64], after_term: u64) -> NodeStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let leader = self.observe().into_iter().find(|s| {
                s.role == StateRole::Leader && among.contains(&s.id) && s.term > after_term
            });
            if let Some(leader) = leader {
                return leader;
            }
            assert!(Instant::now() < deadline, "no leader among {among:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn propose(&self, on: u64, data: &str) -> Result<u64, ProposeError> {
        let answer = self.nodes[&on].propose(data.as_bytes().to_vec());
        answer.recv_timeout(Duration::from_secs(5)).unwrap_or(Err(ProposeError::Busy)).map(|a| a.0)
    }

    fn wait_applied(&self, index: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.observe().iter().any(|s| s.applied < index) {
            assert!(Instant::now() < deadline, "not applied everywhere: {:?}", self.observe());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_group_elects_one_leader_commits_and_survives_an_isolated_leader() {
    let group = Group::start(3);
    let first = group.wait_leader(&[1, 2, 3], 0);
    let mut acknowledged: Vec<(u64, String)> = Vec::new();
    for i in 0..30 {
        let data = format!("a{i}");
        let index = group.propose(first.id, &data).expect("the leader commits");
        acknowledged.push((index, data));
    }
    // A follower refuses proposals and names the leader.
    let follower = (1..=3).find(|id| *id != first.id).unwrap();
    assert_eq!(
        group.propose(follower, "x"),
        Err(ProposeError::NotLeader { leader: Some(first.id) })
    );

    // Cut the leader off: it cannot commit; the other two elect a new leader that can.
    let others: Vec<u64> = (1..=3).filter(|id| *id != first.id).collect();
    group.net.isolate(first.id, &others);
    let stranded = group.nodes[&first.id].propose(b"lost?".to_vec());
    let second = group.wait_leader(&others, first.term);
    for i in 0..20 {
        let data = format!("b{i}");
        let index = group.propose(second.id, &data).expect("the new leader commits");
        acknowledged.push((index, data));
    }
    // The stranded proposal is never acknowledged while cut off (the old leader steps
    // down when CheckQuorum finds no majority).
    let outcome = stranded.recv_timeout(Duration::from_secs(10)).unwrap_or(Err(ProposeError::Busy));
    assert_eq!(
        outcome,
        Err(ProposeError::LeaderChanged),
        "an isolated leader acknowledged a write"
    );

    group.net.heal();
    let last = acknowledged.iter().map(|a| a.0).max().unwrap();
    group.wait_applied(last);
    let logs: Vec<Applied> = group.logs.values().map(|l| l.0.lock().clone()).collect();
    for log in &logs[1..] {
        let n = log.len().min(logs[0].len());
        assert_eq!(log[..n], logs[0][..n], "nodes applied different entries");
    }
    for (index, data) in &acknowledged {
        let found: Vec<_> = logs[0].iter().filter(|(_, d)| d == data.as_bytes()).collect();
        assert_eq!(found.len(), 1, "acknowledged {data} applied {} times", found.len());
        assert_eq!(found[0].0, *index);
    }
    let leaders = group.leaders.lock().clone();
    let terms: HashSet<u64> = leaders.iter().map(|(t, _)| *t).collect();
    assert_eq!(terms.len(), leaders.len(), "two leaders in one term: {leaders:?}");
}

#[test]
fn a_restarted_node_rebuilds_its_state_from_snapshot_and_log_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("1.sqlite3");
    // A node alone (a group of one) commits, compacts, commits more, and stops.
    let log = Log::default();
    {
        let store = RaftStore::open(&path).unwrap();
        let node = lone_leader(store, &log, "a group of one elects itself");
        for i in 0..5 {
            let answer = node.propose(format!("e{i}").into_bytes());
            answer.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        }
    }
    // Compact by hand at the last applied entry, as the driver does after COMPACT_AFTER.
    {
        let store = RaftStore::open(&path).unwrap();
        let last = store.last_index().unwrap();
        store.compact(last, log.state()).unwrap();
    }
    let rebuilt = Log::default();
    let store = RaftStore::open(&path).unwrap();
    let node = lone_leader(store, &rebuilt, "the node leads again after a restart");
    let answer = node.propose(b"after".to_vec());
    let (index, ()) = answer.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    let before: Vec<Vec<u8>> = log.0.lock().iter().map(|(_, d)| d.clone()).collect();
    let after: Vec<Vec<u8>> = rebuilt.0.lock().iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(after[..before.len()], before[..], "the snapshot restored what was applied");
    assert_eq!(after.last().map(Vec::as_slice), Some(&b"after"[..]));
    assert!(index > 5);
}

/// A node alone that commits past `COMPACT_AFTER` entries takes a snapshot (encoded on its
/// `snap-N` thread, stored by the Raft thread), and records the generation through the
/// Raft thread (issue 22): both are in the store after it stops, and a restart rebuilds
/// the same log.
#[test]
fn the_driver_snapshots_off_its_thread_and_records_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("1.sqlite3");
    let log = Log::default();
    {
        let store = RaftStore::open(&path).unwrap();
        let node = lone_leader(store, &log, "a group of one elects itself");
        // In batches (each one Ready, one fsync), well past a snapshot's worth.
        let n = COMPACT_AFTER + 500;
        for batch in 0..n.div_ceil(500) {
            let answers: Vec<_> = (0..500)
                .map(|i| node.propose(format!("e{}", batch * 500 + i).into_bytes()))
                .collect();
            for answer in answers {
                answer.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
            }
        }
        node.save_generation(7).recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        // The snapshot is stored once its encoding comes back; a few more entries make
        // sure the driver went round its loop since.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = node.propose(b"more".to_vec());
            answer.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
            let store = RaftStore::open(&path).unwrap();
            if store.first_index().unwrap() > COMPACT_AFTER {
                break;
            }
            assert!(Instant::now() < deadline, "no snapshot was stored");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let store = RaftStore::open(&path).unwrap();
    assert_eq!(store.generation().unwrap(), 7);
    let snapshot = store.snapshot(0, 0).unwrap();
    let in_snapshot: Applied = postcard::from_bytes(&snapshot.data).unwrap();
    assert_eq!(in_snapshot.len() as u64, snapshot.get_metadata().index - 1, "one empty entry");
    assert_eq!(in_snapshot[..], log.0.lock()[..in_snapshot.len()], "the state as of its index");
}

/// A group of one on `store`, applying to `log`, once it leads (`what` says why it must).
fn lone_leader(store: RaftStore, log: &Log, what: &str) -> RaftNode<()> {
    let options = NodeOptions::default();
    let node =
        RaftNode::start(1, &[1], store, Box::new(log.clone()), Box::new(Nowhere), options).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.status().role != StateRole::Leader {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    node
}

/// A transport for a group of one.
struct Nowhere;

impl Transport for Nowhere {
    fn send(&self, _: Message) {}
}

#[test]
fn a_read_through_any_node_sees_acknowledged_writes_and_an_isolated_leader_cannot_read() {
    let group = Group::start(3);
    let leader = group.wait_leader(&[1, 2, 3], 0);
    let follower = (1..=3).find(|id| *id != leader.id).unwrap();
    for i in 0..10 {
        let data = format!("w{i}");
        let index = group.propose(leader.id, &data).expect("the leader commits");
        // The write was acknowledged: a read through the follower now sees it.
        let read = group.nodes[&follower].read_barrier();
        assert_eq!(read.recv_timeout(Duration::from_secs(5)).unwrap(), Ok(()));
        let applied = group.logs[&follower].0.lock().clone();
        assert!(applied.iter().any(|(at, d)| *at == index && d == data.as_bytes()));
    }
    // A leader cut off from the others cannot confirm that it still leads: no read.
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader.id).collect();
    group.net.isolate(leader.id, &others);
    let read = group.nodes[&leader.id].read_barrier();
    let outcome = read.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(outcome.is_err(), "an isolated leader served a read: {outcome:?}");
}

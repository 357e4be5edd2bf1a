//! Several trackers: replication, failover, catch-up, fencing (issue 4), through the real
//! binaries.

use std::net::TcpStream;

use common::connection::Connection;
use common::message::{ClientMessage, PROTOCOL_VERSION};
use common::replica_message::{EntryId, ReplicaReply, ReplicaRequest, View, WireEntry};

use crate::support::{assert_same_file, raw_timeouts, write_random, ClientProc, Cluster, TIMEOUT};

#[track_caller]
fn assert_same_digests(trackers: &mut [&mut crate::support::TrackerProc]) {
    let digests: Vec<String> = trackers.iter_mut().map(|t| t.digest()).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "digests differ: {digests:?}");
}

fn check_visible_everywhere(n: usize) {
    let cluster = Cluster::new(n);
    let mut trackers = cluster.start_all();
    let mut clients: Vec<ClientProc> =
        (1..=n as u32).map(|id| cluster.client_via(&format!("c{id}"), &[id])).collect();
    clients[0].sign_up("alice");
    clients[0].ok("create_group g", "created group g");
    // Every other tracker answers reads from its own replica, and forwards writes.
    for (i, c) in clients.iter_mut().enumerate().skip(1) {
        c.ok("login alice pw-alice", "logged in as alice");
        let expected: Vec<String> =
            std::iter::once("g".to_string()).chain((1..i).map(|k| format!("g{k}"))).collect();
        assert_eq!(c.run("list_groups"), expected, "via tracker {}", i + 1);
        c.ok(&format!("create_group g{i}"), &format!("created group g{i}"));
    }
    assert_eq!(clients[0].run("list_groups").len(), n);
    let mut refs: Vec<&mut crate::support::TrackerProc> = trackers.iter_mut().collect();
    assert_same_digests(&mut refs);
}

#[test]
fn changes_through_one_of_two_trackers_are_visible_through_the_other() {
    check_visible_everywhere(2);
}

#[test]
fn changes_through_one_of_three_trackers_are_visible_through_all() {
    check_visible_everywhere(3);
}

/// Several clients write in a burst; tracker `victim` is killed after `after` acknowledged
/// writes. Every acknowledged write must be on the survivors, and on the victim after it
/// restarts and catches up.
fn burst_with_a_kill(n: usize, victim: usize, after: usize) {
    let cluster = Cluster::new(n);
    let mut trackers: Vec<Option<crate::support::TrackerProc>> =
        cluster.start_all().into_iter().map(Some).collect();
    let mut writers: Vec<ClientProc> = (0..3).map(|i| cluster.client(&format!("w{i}"))).collect();
    for (i, w) in writers.iter_mut().enumerate() {
        w.sign_up(&format!("w{i}"));
    }
    let acked = std::sync::Mutex::new(Vec::new());
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        for (i, w) in writers.iter_mut().enumerate() {
            let (acked, kill_tx) = (&acked, kill_tx.clone());
            scope.spawn(move || {
                for k in 0..15 {
                    let group = format!("b{i}x{k}");
                    let line = w.run1(&format!("create_group {group}"));
                    assert_eq!(line, format!("created group {group}"), "write failed");
                    let mut acked = acked.lock().unwrap();
                    acked.push(group);
                    if acked.len() == after {
                        let _ = kill_tx.send(());
                    }
                }
            });
        }
        kill_rx.recv_timeout(TIMEOUT).unwrap();
        trackers[victim - 1].take().unwrap().kill();
    });
    let acked = acked.into_inner().unwrap();
    assert_eq!(acked.len(), 45);
    let groups = writers[0].run("list_groups");
    for g in &acked {
        assert!(groups.contains(g), "acknowledged {g} lost");
    }
    // The victim comes back, catches up, and holds the same state.
    let back = cluster.start_tracker(victim as u32);
    back.wait_serving();
    trackers[victim - 1] = Some(back);
    let mut refs: Vec<&mut crate::support::TrackerProc> = trackers.iter_mut().flatten().collect();
    assert_same_digests(&mut refs);
}

#[test]
fn killing_the_primary_during_a_burst_loses_no_acknowledged_write() {
    burst_with_a_kill(2, 1, 5);
}

#[test]
fn killing_a_backup_during_a_burst_loses_no_acknowledged_write() {
    burst_with_a_kill(2, 2, 20);
}

#[test]
fn killing_the_primary_of_three_loses_no_acknowledged_write() {
    burst_with_a_kill(3, 1, 12);
}

#[test]
fn a_restarted_tracker_catches_up_then_serves_alone() {
    let cluster = Cluster::new(2);
    let mut trackers = cluster.start_all();
    let mut c = cluster.client("c");
    c.sign_up("alice");
    c.ok("create_group before", "created group before");
    let mut t1 = trackers.remove(0);
    t1.kill();
    // Changes while tracker 1 is down; the session survives the failover.
    for i in 0..30 {
        c.ok(&format!("create_group while{i}"), &format!("created group while{i}"));
    }
    let t1 = cluster.start_tracker(1);
    let joined = t1.wait_serving();
    assert!(joined.contains("backup"), "{joined}");
    let mut t2 = trackers.remove(0);
    t2.kill();
    // Tracker 1 alone has everything, including what was written while it was down.
    let groups = c.run("list_groups");
    assert_eq!(
        groups.len(),
        31,
        "{groups:?}\n{}\n------\n{}",
        cluster.tracker_log(1),
        cluster.tracker_log(2)
    );
    c.ok("create_group after", "created group after");
    let mut fresh = cluster.client("fresh");
    fresh.ok("login alice pw-alice", "logged in as alice");
    drop(t1);
}

#[test]
fn a_download_in_progress_survives_the_failover_of_its_tracker() {
    let cluster = Cluster::new(2);
    let mut trackers = cluster.start_all();
    let mut seed = cluster.client_with("seed", &["--max-upload-rate", "3000000"]);
    let mut leech = cluster.client("leech");
    seed.sign_up("seed");
    leech.sign_up("leech");
    seed.ok("create_group g", "created group g");
    leech.ok("join_group g", "requested to join group g");
    seed.ok("accept_request g leech", "accepted leech into group g");
    let original = cluster.path("f.bin");
    write_random(&original, 6 * 1024 * 1024, 31);
    seed.run1(&format!("upload_file {} g", original.display()));
    let out = cluster.path("out.bin");
    leech.run1(&format!("download_file g f.bin {}", out.display()));
    trackers.remove(0).kill();
    let done = leech.wait_downloads();
    assert!(done[0].starts_with("[C] [g] f.bin"), "{done:?}");
    assert_same_file(&original, &out);
    // The completed download was announced to the surviving tracker.
    seed.run1_until("list_files g", ", 2 sharers,");
}

/// A replication connection to the tracker at `addr` (which must prove `key`) as tracker
/// `from`, proving `identity`.
fn replica_conn(
    addr: std::net::SocketAddr,
    key: &common::PublicKey,
    identity: &common::Identity,
    from: u32,
) -> Connection<ReplicaReply, ClientMessage> {
    let stream = TcpStream::connect(addr).unwrap();
    let mut conn = Connection::connect(stream, identity, key, raw_timeouts()).unwrap();
    conn.send(&ClientMessage::ReplicaHello { version: PROTOCOL_VERSION, from }).unwrap();
    conn
}

/// Issue 8: a process without a tracker's key cannot speak for a tracker; a tracker's own
/// (stolen) key cannot speak for another one, nor make a forged epoch stick.
#[test]
fn forged_replication_traffic_changes_nothing() {
    let cluster = Cluster::new(2);
    let mut trackers = cluster.start_all();
    let mut c = cluster.client("c");
    c.sign_up("alice");
    c.ok("create_group g", "created group g");
    let before: Vec<String> = trackers.iter_mut().map(|t| t.status()).collect();
    let keys = [cluster.tracker_key(1), cluster.tracker_key(2)];
    let forged_append = |view: &View| ReplicaRequest::Append {
        view: view.clone(),
        entries: vec![WireEntry { id: EntryId { epoch: 999, seq: 1000 }, payload: vec![1, 2, 3] }],
    };

    // An outsider's key claiming to be tracker 1 (and 2): the connection is closed at once.
    let outsider = common::Identity::generate().unwrap();
    for (target, claimed) in [(1usize, 1u32), (0, 2)] {
        let conn = replica_conn(trackers[target].addr, &keys[target], &outsider, claimed);
        let mut conn = conn.retype::<ReplicaReply, ReplicaRequest>();
        let view = View { epoch: 999, primary: claimed, members: vec![1, 2] };
        let _ = conn.send(&forged_append(&view));
        assert!(!matches!(conn.recv(), Ok(Some(_))), "an outsider was answered");
        let _ = conn.send(&ReplicaRequest::Join { from: claimed });
        assert!(!matches!(conn.recv(), Ok(Some(_))), "an outsider was answered");
    }

    // Tracker 2's own key, claiming to be tracker 1: closed too.
    let two = cluster.tracker_identity(2);
    let mut conn =
        replica_conn(trackers[0].addr, &keys[0], &two, 1).retype::<ReplicaReply, ReplicaRequest>();
    let _ = conn.send(&ReplicaRequest::Status);
    assert!(!matches!(conn.recv(), Ok(Some(_))), "tracker 2 was taken for tracker 1");

    // Tracker 2's key, honest about who it is, but speaking for a view that tracker 1
    // leads, or for a joiner it is not: refused.
    let mut conn =
        replica_conn(trackers[0].addr, &keys[0], &two, 2).retype::<ReplicaReply, ReplicaRequest>();
    let view = View { epoch: 999, primary: 1, members: vec![1, 2] };
    conn.send(&forged_append(&view)).unwrap();
    assert!(matches!(conn.recv().unwrap(), Some(ReplicaReply::Refused { .. })));
    conn.send(&ReplicaRequest::Join { from: 3 }).unwrap();
    assert!(matches!(conn.recv().unwrap(), Some(ReplicaReply::Refused { .. })));

    // Tracker 1's stolen key, with a far higher epoch naming itself: the real tracker 1
    // does not confirm that view, so tracker 2 refuses it.
    let one = cluster.tracker_identity(1);
    let mut conn =
        replica_conn(trackers[1].addr, &keys[1], &one, 1).retype::<ReplicaReply, ReplicaRequest>();
    let view = View { epoch: 999, primary: 1, members: vec![1, 2] };
    conn.send(&forged_append(&view)).unwrap();
    assert!(matches!(conn.recv().unwrap(), Some(ReplicaReply::Refused { .. })));
    conn.send(&ReplicaRequest::Ping { view }).unwrap();
    assert!(matches!(conn.recv().unwrap(), Some(ReplicaReply::Refused { .. })));

    // Garbage inside an authenticated replication channel closes only that connection.
    let mut garbage = replica_conn(trackers[1].addr, &keys[1], &one, 1);
    garbage
        .send_with_payload(&ClientMessage::Hello { version: 0 }, &[0, 0, 0, 3, 0xff, 0xfe, 0xfd])
        .unwrap();
    assert!(!matches!(garbage.recv(), Ok(Some(_))));

    let after: Vec<String> = trackers.iter_mut().map(|t| t.status()).collect();
    assert_eq!(before, after);
    c.ok("create_group h", "created group h");
    let mut refs: Vec<&mut crate::support::TrackerProc> = trackers.iter_mut().collect();
    assert_same_digests(&mut refs);
}

//! Several trackers under Raft (issue 9): replication, failover, catch-up, a lone tracker
//! refusing writes, and forged tracker traffic, through the real binaries.

use std::net::TcpStream;

use common::connection::Connection;
use common::message::{ClientMessage, PROTOCOL_VERSION};
use common::replica_message::{ReplicaReply, ReplicaRequest};

use crate::support::{
    assert_same_file, raw_timeouts, wait_converged, wait_leader, write_random, ClientProc, Cluster,
    RawSession, TrackerProc, TIMEOUT,
};

fn check_visible_everywhere(n: usize) {
    let cluster = Cluster::new(n);
    let mut trackers = cluster.start_all();
    let mut clients: Vec<ClientProc> =
        (1..=n as u32).map(|id| cluster.client_via(&format!("c{id}"), &[id])).collect();
    clients[0].sign_up("alice");
    clients[0].ok("create_group g", "created group g");
    // Every other tracker answers reads from its own replica (after a read barrier: a
    // write acknowledged anywhere is seen), and forwards writes to the leader.
    for (i, c) in clients.iter_mut().enumerate().skip(1) {
        c.ok("login alice pw-alice", "logged in as alice");
        let expected: Vec<String> =
            std::iter::once("g".to_string()).chain((1..i).map(|k| format!("g{k}"))).collect();
        assert_eq!(c.run("list_groups"), expected, "via tracker {}", i + 1);
        c.ok(&format!("create_group g{i}"), &format!("created group g{i}"));
    }
    assert_eq!(clients[0].run("list_groups").len(), n);
    let mut refs: Vec<&mut TrackerProc> = trackers.iter_mut().collect();
    wait_converged(&mut refs);
}

#[test]
fn changes_through_one_of_two_trackers_are_visible_through_the_other() {
    check_visible_everywhere(2);
}

#[test]
fn changes_through_one_of_three_trackers_are_visible_through_all() {
    check_visible_everywhere(3);
}

/// Several clients write in a burst to a group of three; the leader (or a follower) is
/// killed after `after` acknowledged writes. Every acknowledged write must be on the
/// survivors, and on the victim after it restarts and catches up.
fn burst_with_a_kill(kill_leader: bool, after: usize) {
    let cluster = Cluster::new(3);
    let mut trackers: Vec<Option<TrackerProc>> =
        cluster.start_all().into_iter().map(Some).collect();
    let leader = {
        let mut refs: Vec<&mut TrackerProc> = trackers.iter_mut().flatten().collect();
        wait_leader(&mut refs)
    };
    let victim = if kill_leader { leader } else { (leader + 1) % 3 };
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
        trackers[victim].take().unwrap().kill();
    });
    let acked = acked.into_inner().unwrap();
    assert_eq!(acked.len(), 45);
    let groups = writers[0].run("list_groups");
    for g in &acked {
        assert!(groups.contains(g), "acknowledged {g} lost");
    }
    // The victim comes back, catches up, and holds the same state.
    let back = cluster.start_tracker(victim as u32 + 1);
    back.wait_serving();
    trackers[victim] = Some(back);
    let mut refs: Vec<&mut TrackerProc> = trackers.iter_mut().flatten().collect();
    wait_converged(&mut refs);
}

#[test]
fn killing_the_leader_during_a_burst_loses_no_acknowledged_write() {
    burst_with_a_kill(true, 12);
}

#[test]
fn killing_a_follower_during_a_burst_loses_no_acknowledged_write() {
    burst_with_a_kill(false, 20);
}

/// A tracker that missed writes catches up when it returns, and then counts toward the
/// majority: with another tracker gone, it and the third serve everything.
#[test]
fn a_restarted_tracker_catches_up_and_then_makes_the_majority() {
    let cluster = Cluster::new(3);
    let mut trackers: Vec<Option<TrackerProc>> =
        cluster.start_all().into_iter().map(Some).collect();
    let mut c = cluster.client("c");
    c.sign_up("alice");
    c.ok("create_group before", "created group before");
    trackers[0].take().unwrap().kill();
    // Changes while tracker 1 is down; the session survives any failover.
    for i in 0..30 {
        c.ok(&format!("create_group while{i}"), &format!("created group while{i}"));
    }
    let back = cluster.start_tracker(1);
    back.wait_serving();
    trackers[0] = Some(back);
    {
        let mut refs: Vec<&mut TrackerProc> = trackers.iter_mut().flatten().collect();
        wait_converged(&mut refs);
    }
    // Tracker 2 goes: 1 and 3 are the majority, and tracker 1 has everything.
    trackers[1].take().unwrap().kill();
    let mut via_one = cluster.client_via("via1", &[1]);
    via_one.ok("login alice pw-alice", "logged in as alice");
    let groups = via_one.run("list_groups");
    assert_eq!(groups.len(), 31, "{groups:?}");
    via_one.ok("create_group after", "created group after");
}

/// A follower that missed more writes than the leader keeps in its log (it compacts after
/// 4096) is caught up by a snapshot, and then holds the same state.
#[test]
fn a_follower_that_missed_thousands_of_writes_catches_up_by_snapshot() {
    let cluster = Cluster::new(3).with_load_limits();
    let mut trackers = cluster.start_all();
    let follower = {
        let mut refs: Vec<&mut TrackerProc> = trackers.iter_mut().collect();
        (wait_leader(&mut refs) + 1) % 3
    };
    trackers[follower].kill();
    // 20 MiB of state first (issue 13: state of any size replicates, in 1 MiB parts):
    // 80 files of 6.4 GiB declared, whose metadata holds 13,107 piece hashes each.
    let leader_idx = (follower + 2) % 3;
    let leader_proc = &trackers[leader_idx];
    let mut uploader = RawSession::connect(&cluster, leader_proc);
    let password = common::Password::new("pw-big").unwrap();
    let big = common::UserId::new("big").unwrap();
    let created = uploader.call(common::message::Request::CreateUser { user: big, password });
    assert_eq!(created, Ok(common::message::Reply::Done));
    uploader.login("big", "127.0.0.1:9".parse().unwrap());
    let g = common::GroupId::new("big").unwrap();
    let reply = uploader.call(common::message::Request::CreateGroup { group: g.clone() });
    assert_eq!(reply, Ok(common::message::Reply::Done));
    for n in 0..80u8 {
        let size = 13_107 * common::PIECE_SIZE as u64;
        let pieces: Vec<common::Sha1Digest> = (0..13_107u32)
            .map(|i| {
                let mut d = [n; 20];
                d[..4].copy_from_slice(&i.to_be_bytes());
                common::Sha1Digest(d)
            })
            .collect();
        let meta = common::message::FileMeta {
            name: common::FileName::new(format!("big{n}")).unwrap(),
            size,
            digest: common::hash::file_digest(size, &pieces),
            pieces,
            tree: None,
        };
        // Retried with the same request id while the leader is busy or changing, as a
        // client would (a loaded machine may delay heartbeats past an election timeout).
        let id = common::message::RequestId { client: 0xb16, seq: u64::from(n) };
        let upload = common::message::Request::UploadFile { group: g.clone(), file: meta };
        let deadline = std::time::Instant::now() + TIMEOUT;
        let reply = loop {
            match uploader.call_as(id, upload.clone()) {
                Err(common::message::TrackerError::Unavailable(why)) => {
                    assert!(std::time::Instant::now() < deadline, "{why}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => break other,
            }
        };
        assert_eq!(reply, Ok(common::message::Reply::Uploaded { new_file: true }));
    }
    std::thread::scope(|scope| {
        for w in 0..2 {
            let mut writer = cluster.client(&format!("w{w}"));
            scope.spawn(move || {
                writer.sign_up(&format!("w{w}"));
                for batch in 0..6 {
                    let commands: Vec<String> =
                        (0..500).map(|k| format!("create_group w{w}b{batch}k{k}")).collect();
                    let out = writer.run_many(&commands);
                    let created = out.iter().filter(|l| l.starts_with("created group")).count();
                    assert_eq!(created, 500, "{:?}", out.iter().find(|l| l.starts_with("error")));
                }
            });
        }
    });
    trackers[follower] = cluster.start_tracker(follower as u32 + 1);
    trackers[follower].wait_serving();
    let mut refs: Vec<&mut TrackerProc> = trackers.iter_mut().collect();
    wait_converged(&mut refs);
    let log = cluster.tracker_log(follower as u32 + 1);
    assert!(log.contains("replaced by the snapshot"), "no snapshot was installed");
}

/// With no majority, writes and reads are refused with an error that says so (a read is not
/// called a refused write: issue 20), and nothing hangs.
#[test]
fn a_tracker_without_a_majority_refuses_writes_and_says_why() {
    let cluster = Cluster::new(3);
    let mut trackers = cluster.start_all();
    let mut c = cluster.client_via("c", &[1]);
    c.sign_up("alice");
    trackers.remove(2).kill();
    trackers.remove(1).kill();
    let line = c.run1("create_group g");
    assert!(line.starts_with("error: "), "{line}");
    assert!(
        line.contains("no majority: tracker 1 reaches 1 of 3 trackers and 2 are needed"),
        "{line}"
    );
    let read = c.run1("list_groups");
    assert!(
        read.contains("nothing can be read or changed until enough trackers are back"),
        "{read}"
    );
    assert!(!read.contains("writes"), "{read}");
    let status = trackers[0].status();
    assert!(status.contains("reach=1/3"), "{status}");
    assert!(!status.contains(": primary "), "{status}");
}

/// The operator's way out when a majority is gone for good: `force-serve` makes the
/// survivor serve alone; a tracker brought back empty with `--join` is added back and
/// catches up; one that comes back with its old data stops itself instead of forming a
/// group of its own.
#[test]
fn force_serve_lets_a_survivor_serve_and_the_others_come_back_only_empty() {
    let cluster = Cluster::new(3);
    let mut trackers: Vec<Option<TrackerProc>> =
        cluster.start_all().into_iter().map(Some).collect();
    let mut c = cluster.client_via("c", &[1]);
    c.sign_up("alice");
    c.ok("create_group before", "created group before");
    trackers[1].take().unwrap().kill();
    trackers[2].take().unwrap().kill();
    let one = trackers[0].as_mut().unwrap();
    let refused = c.run1("create_group stuck");
    assert!(refused.contains("no majority"), "{refused}");
    let forced = one.command("force-serve", "forced to serve alone");
    assert!(forced.contains("generation 1") && forced.contains("--join"), "{forced}");
    c.ok("create_group alone", "created group alone");
    let status = one.status();
    assert!(status.contains(": primary view=") && status.contains("[1]"), "{status}");

    // Tracker 2 comes back empty (its key kept) with --join: it is added back.
    let two_dir = cluster.dir.path().join("tracker-2");
    for entry in std::fs::read_dir(&two_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "tracker.key" {
            std::fs::remove_file(path).unwrap();
        }
    }
    let two = cluster.try_start_tracker(2, &["--join"]).unwrap();
    two.wait_line("serving as backup of 1");
    trackers[1] = Some(two);
    {
        let mut refs: Vec<&mut TrackerProc> = trackers.iter_mut().flatten().collect();
        wait_converged(&mut refs);
    }
    // Once it is a voter again, 1 and 2 are a majority: tracker 2 serves what was written.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !trackers[0].as_mut().unwrap().status().contains("[1, 2]") {
        assert!(std::time::Instant::now() < deadline, "tracker 2 never became a voter");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut via_two = cluster.client_via("via2", &[2]);
    via_two.ok("login alice pw-alice", "logged in as alice");
    // "stuck" was refused, but may have reached tracker 1's log before the refusal: forcing
    // commits what the survivor's log holds (its outcome was never known, not a failure).
    let groups = via_two.run("list_groups");
    assert!(groups.contains(&"alone".to_string()), "{groups:?}");
    assert!(groups.contains(&"before".to_string()), "{groups:?}");
    assert!(groups.len() <= 3, "{groups:?}");

    // Tracker 3 comes back with its old data: it hears the newer generation and stops.
    let mut three = cluster.start_tracker(3);
    assert!(!three.wait_exit().success());
    let log = cluster.tracker_log(3);
    assert!(log.contains("was forced to serve alone") && log.contains("--join"), "{log}");
    c.ok("create_group after", "created group after");
}

/// A witness votes and keeps the log but serves no client: with the leader gone, the
/// witness and the other tracker are the majority, and the other tracker leads.
#[test]
fn a_witness_makes_the_majority_but_never_serves_clients() {
    let cluster = Cluster::new(3);
    let mut trackers: Vec<Option<TrackerProc>> = vec![
        Some(cluster.start_tracker(1)),
        Some(cluster.start_tracker(2)),
        Some(cluster.try_start_tracker(3, &["--witness"]).unwrap()),
    ];
    for t in trackers.iter().flatten() {
        t.wait_serving();
    }
    let mut raw = crate::support::RawSession::connect(&cluster, trackers[2].as_ref().unwrap());
    match raw.call(common::message::Request::ListGroups { after: None }) {
        Err(common::message::TrackerError::Unavailable(why)) => {
            assert!(why.contains("tracker 3 is a witness"), "{why}")
        }
        other => panic!("a witness answered a client: {other:?}"),
    }
    let mut c = cluster.client_via("c", &[3, 1, 2]);
    c.sign_up("alice");
    c.ok("create_group before", "created group before");
    // The leader goes, whichever of 1 and 2 it is: the other one leads, with the witness.
    // (If the witness is elected, it hands the lead over at once.)
    let deadline = std::time::Instant::now() + TIMEOUT;
    let leader = loop {
        let mut refs: Vec<&mut TrackerProc> = trackers.iter_mut().flatten().collect();
        let leader = wait_leader(&mut refs);
        if leader != 2 {
            break leader;
        }
        assert!(std::time::Instant::now() < deadline, "the witness kept the lead");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    trackers[leader].take().unwrap().kill();
    c.ok("create_group after", "created group after");
    // Left: the other tracker (leading) and the witness.
    let mut refs: Vec<&mut TrackerProc> = trackers.iter_mut().flatten().collect();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while wait_leader(&mut refs) != 0 {
        assert!(std::time::Instant::now() < deadline, "the witness kept the lead");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    wait_converged(&mut refs);
    let status = refs[1].status();
    assert!(status.starts_with("tracker 3: witness "), "{status}");
}

#[test]
fn a_download_in_progress_survives_the_failover_of_its_tracker() {
    let cluster = Cluster::new(3);
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
    // The leader goes (every client's tracker is tracker 1, or the leader forwards to).
    let leader = {
        let mut refs: Vec<&mut TrackerProc> = trackers.iter_mut().collect();
        wait_leader(&mut refs)
    };
    trackers.remove(leader).kill();
    let done = leech.wait_downloads();
    assert!(done[0].starts_with("[C] [g] f.bin"), "{done:?}");
    assert_same_file(&original, &out);
    // The completed download was announced to the surviving trackers.
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
/// key cannot speak for another one, and what it sends that is not a Raft message of its
/// own closes only its link.
#[test]
fn forged_replication_traffic_changes_nothing() {
    let cluster = Cluster::new(2);
    let mut trackers = cluster.start_all();
    let mut c = cluster.client("c");
    c.sign_up("alice");
    c.ok("create_group g", "created group g");
    let before = {
        let mut refs: Vec<&mut TrackerProc> = trackers.iter_mut().collect();
        wait_converged(&mut refs)
    };
    let keys = [cluster.tracker_key(1), cluster.tracker_key(2)];
    let raft_garbage = ReplicaRequest::Raft {
        generation: 0,
        part: vec![0x08, 0xff, 0xff, 0x7f, 1, 2, 3],
        last: true,
    };

    // An outsider's key claiming to be tracker 1 (and 2): the connection is closed at once.
    let outsider = common::Identity::generate().unwrap();
    for (target, claimed) in [(1usize, 1u32), (0, 2)] {
        let conn = replica_conn(trackers[target].addr, &keys[target], &outsider, claimed);
        let mut conn = conn.retype::<ReplicaReply, ReplicaRequest>();
        let _ = conn.send(&raft_garbage);
        assert!(!matches!(conn.recv(), Ok(Some(_))), "an outsider was answered");
    }

    // Tracker 2's own key, claiming to be tracker 1: closed too.
    let two = cluster.tracker_identity(2);
    let mut conn =
        replica_conn(trackers[0].addr, &keys[0], &two, 1).retype::<ReplicaReply, ReplicaRequest>();
    let _ = conn.send(&raft_garbage);
    assert!(!matches!(conn.recv(), Ok(Some(_))), "tracker 2 was taken for tracker 1");

    // Tracker 2's key, honest about who it is, sending what is not a Raft message: its
    // link is closed, and nothing changes.
    let mut conn =
        replica_conn(trackers[0].addr, &keys[0], &two, 2).retype::<ReplicaReply, ReplicaRequest>();
    conn.send(&raft_garbage).unwrap();
    assert!(!matches!(conn.recv(), Ok(Some(_))));
    let one = cluster.tracker_identity(1);

    // Garbage inside an authenticated tracker channel closes only that connection.
    let mut garbage = replica_conn(trackers[1].addr, &keys[1], &one, 1);
    garbage
        .send_with_payload(&ClientMessage::Hello { version: 0 }, &[0, 0, 0, 3, 0xff, 0xfe, 0xfd])
        .unwrap();
    assert!(!matches!(garbage.recv(), Ok(Some(_))));

    let after = {
        let mut refs: Vec<&mut TrackerProc> = trackers.iter_mut().collect();
        wait_converged(&mut refs)
    };
    assert_eq!(before, after);
    c.ok("create_group h", "created group h");
    let mut refs: Vec<&mut TrackerProc> = trackers.iter_mut().collect();
    wait_converged(&mut refs);
}

/// Issue 19: `tracker_info.txt` names trackers by host name (`localhost:PORT` here),
/// resolved at each connect: they replicate with each other, serve clients, and a client
/// fails over between them by name.
#[test]
fn trackers_named_by_host_name_replicate_serve_and_fail_over() {
    let cluster = Cluster::new(3);
    let text = std::fs::read_to_string(&cluster.info).unwrap();
    std::fs::write(&cluster.info, text.replace("127.0.0.1:", "localhost:")).unwrap();
    let mut trackers = cluster.start_all();
    let listed = std::fs::read_to_string(&cluster.info).unwrap();
    assert_eq!(listed.matches("localhost:").count(), 3, "{listed}");
    let mut c = cluster.client("c");
    c.sign_up("alice");
    c.ok("create_group g", "created group g");
    let mut refs: Vec<&mut TrackerProc> = trackers.iter_mut().collect();
    wait_converged(&mut refs);
    // The first listed tracker goes: the client moves to the next name.
    trackers.remove(0).kill();
    c.ok("create_group h", "created group h");
    assert_eq!(c.run("list_groups"), ["g", "h"]);
}

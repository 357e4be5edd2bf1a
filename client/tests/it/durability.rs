//! The tracker keeps every acknowledged change across SIGKILL and restart.

use crate::support::Cluster;

#[test]
fn kill_9_and_restart_loses_nothing_acknowledged() {
    let (cluster, mut tracker) = Cluster::with_one_tracker();
    let mut alice = cluster.client("alice");
    let mut bob = cluster.client("bob");
    alice.sign_up("alice");
    bob.sign_up("bob");
    alice.ok("create_group g", "created group g");
    alice.ok("create_group h", "created group h");
    bob.ok("join_group g", "requested to join group g");
    bob.ok("join_group h", "requested to join group h");
    alice.ok("accept_request g bob", "accepted bob into group g");
    let f = cluster.dir.path().join("f.txt");
    std::fs::write(&f, b"payload").unwrap();
    alice.ok(
        &format!("upload_file {} g", f.display()),
        "uploaded f.txt to group g (7 bytes, 1 piece)",
    );
    // A burst of acknowledged writes right before the crash.
    for i in 0..50 {
        alice.ok(&format!("create_group burst{i}"), &format!("created group burst{i}"));
    }

    tracker.kill();
    let _tracker = cluster.start_tracker(1);

    // Sessions survive: neither client logs in again, each reconnects by itself.
    assert_eq!(bob.run("list_my_groups"), ["g"]);
    assert_eq!(alice.run("list_requests h"), ["bob"]);
    let files = bob.run("list_files g");
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("f.txt 7 bytes, 1 sharer"), "{files:?}");
    let groups = alice.run("list_groups");
    assert_eq!(groups.len(), 52, "{groups:?}");
    for i in 0..50 {
        assert!(groups.contains(&format!("burst{i}")), "burst{i} lost");
    }
    // Passwords survive too, and a fresh client can log in.
    let mut carol = cluster.client("carol");
    carol.err("login alice wrong", "wrong password");
    carol.ok("login bob pw-bob", "logged in as bob");
    carol.err(
        "create_user alice x",
        "user alice already exists; login alice <passwd> if it is yours",
    );
}

#[test]
fn quit_on_stdin_stops_the_tracker_cleanly_and_state_survives() {
    let (cluster, tracker) = Cluster::with_one_tracker();
    let mut alice = cluster.client("alice");
    alice.sign_up("alice");
    alice.ok("create_group g", "created group g");
    let status = tracker.quit();
    assert!(status.success(), "{status:?}");
    let _tracker = cluster.start_tracker(1);
    assert_eq!(alice.run("list_my_groups"), ["g"]);
}

//! Issue 19, peers behind routers: a tracker tells each client the address it sees it
//! from, peers register every address they may be reached at, and downloaders try them all.

use crate::support::{write_random, ClientProc, Cluster};

/// A seeder listening on the wildcard address logs in with an address no one can dial
/// (`0.0.0.0:PORT`); it is reached at the address it registered, the IP the tracker sees it
/// from with its listen port.
#[test]
fn a_seeder_on_the_wildcard_address_is_reached_where_the_tracker_sees_it() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut seed =
        ClientProc::start_at(None, "0.0.0.0:0", &cluster.info, &cluster.path("seed"), &[], &[]);
    let port = seed.listen.port();
    seed.sign_up("seed");
    seed.ok("create_group g", "created group g");
    seed.wait_log(&format!("reachable at [127.0.0.1:{port}]"));
    let mut leech = cluster.client("leech");
    leech.sign_up("leech");
    leech.ok("join_group g", "requested to join group g");
    seed.ok("accept_request g leech", "accepted leech into group g");
    let original = cluster.path("f.bin");
    write_random(&original, 700_000, 19);
    let line = seed.run1(&format!("upload_file '{}' g", original.display()));
    assert!(line.starts_with("uploaded "), "{line}");
    let out = cluster.path("out.bin");
    leech.run1(&format!("download_file g f.bin {}", out.display()));
    let done = leech.wait_downloads_json();
    assert!(done[0].is_complete("f.bin"), "{done:?}");
    // Named by the address it logged in with, reached at the one it registered.
    assert_eq!(done[0].from_peers.get(&format!("0.0.0.0:{port}")), Some(&2), "{done:?}");
    leech.wait_log(&format!("peer=0.0.0.0:{port}: reached at 127.0.0.1:{port}"));
    crate::support::assert_same_file(&original, &out);
}

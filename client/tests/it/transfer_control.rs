//! Issue 20: control of running transfers through the REPL: `pause`, `resume` and `cancel`
//! of a download, and `limit_rate up|down`, which takes effect at once, also for transfers
//! already waiting for their share of a cap.

use std::path::Path;

use crate::support::{assert_same_file, write_random, ClientProc, Cluster, Download, TIMEOUT};

fn upload(c: &mut ClientProc, path: &Path) {
    let line = c.run1(&format!("upload_file '{}' g", path.display()));
    assert!(line.starts_with("uploaded ") || line.starts_with("sharing "), "{line}");
}

/// Polls `show_downloads --json` until its newest download satisfies `ready`.
#[track_caller]
fn wait_for(c: &mut ClientProc, ready: impl Fn(&Download) -> bool) -> Download {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(d) = c.downloads().into_iter().last().filter(|d| ready(d)) {
            return d;
        }
        assert!(std::time::Instant::now() < deadline, "not yet: {:?}", c.downloads());
    }
}

#[test]
fn a_paused_download_keeps_and_serves_its_pieces_stays_paused_across_a_restart_and_resumes() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech", "other"], &[]);
    // Only the seeder is slow: 0.5 MB/s, so 16 pieces take 16 s and a pause lands midway.
    cluster.restart_with(&mut c[0], "seed", &["--max-upload-rate", "500000"]);
    let original = cluster.path("f.bin");
    write_random(&original, 8 * 1024 * 1024, 31);
    upload(&mut c[0], &original);
    let out = cluster.path("out.bin");
    c[1].run1(&format!("download_file g f.bin {}", out.display()));
    wait_for(&mut c[1], |d| d.pieces_have >= 2);

    c[1].ok("pause g f.bin", "paused f.bin in group g");
    c[1].ok("pause g f.bin", "f.bin in group g is paused already");
    let line = c[1].run1("show_downloads");
    assert!(line.starts_with("[P] [g] f.bin "), "{line}");
    assert!(line.ends_with(" paused"), "{line}");
    // Paused is not at work: wait_downloads does not wait for it.
    let paused = c[1].wait_downloads_json();
    assert_eq!(paused[0].state, "paused", "{paused:?}");
    assert!(c[1].run("show_downloads --active").is_empty());
    let have = paused[0].pieces_have;
    assert!((2..16).contains(&have), "{paused:?}");
    // Its pieces are still served: another member gets some of the file from it.
    let other_out = cluster.path("other.bin");
    c[2].run1(&format!("download_file g f.bin {}", other_out.display()));
    let other = c[2].wait_downloads_json();
    assert!(other[0].is_complete("f.bin"), "{other:?}");
    let from_paused = other[0].from_peers.get(&c[1].listen.to_string()).copied().unwrap_or(0);
    assert!(from_paused >= 1, "nothing from the paused leecher: {other:?}");
    assert_same_file(&original, &other_out);
    // Still paused, with the pieces it had.
    let still = c[1].downloads();
    assert_eq!((still[0].state.as_str(), still[0].pieces_have), ("paused", have), "{still:?}");

    // Kept across a restart: after login it is paused again, with its pieces checked.
    c[1].kill();
    assert!(!out.exists());
    let mut leech = cluster.client("leech");
    leech.resumed("leech");
    let again = wait_for(&mut leech, |d| d.state == "paused");
    assert!(again.pieces_resumed >= 1, "{again:?}");

    leech.ok("resume g f.bin", "resumed f.bin in group g");
    leech.ok("resume g f.bin", "f.bin in group g is not paused");
    let done = leech.wait_downloads_json();
    assert!(done[0].is_complete("f.bin"), "{done:?}");
    assert_same_file(&original, &out);
    // Nothing left to control: the errors say what to do instead.
    leech.err(
        "pause g f.bin",
        "the download of f.bin is complete; stop_share g f.bin stops sharing it",
    );
    leech.err(
        "cancel g nope.bin",
        "no download of nope.bin in group g in this session; show_downloads lists them",
    );
    drop(c);
}

#[test]
fn a_cancelled_download_removes_its_part_file_and_leaves_the_list() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &["--max-upload-rate", "500000"]);
    let original = cluster.path("f.bin");
    write_random(&original, 8 * 1024 * 1024, 32);
    upload(&mut c[0], &original);
    let out = cluster.path("out.bin");
    let part = cluster.path("out.bin.part");
    c[1].run1(&format!("download_file g f.bin {}", out.display()));
    wait_for(&mut c[1], |d| d.pieces_have >= 1);
    assert!(part.exists());

    c[1].ok("cancel g f.bin", "cancelled f.bin in group g; its partial file is removed");
    assert!(!part.exists(), "the .part is still there");
    assert!(!out.exists());
    assert!(c[1].run("show_downloads").is_empty());
    assert!(c[1].run("list_shares").is_empty());
    // The same destination is free again; a paused download can be cancelled too.
    c[1].run1(&format!("download_file g f.bin {}", out.display()));
    c[1].ok("pause g f.bin", "paused f.bin in group g");
    c[1].ok("cancel g f.bin", "cancelled f.bin in group g; its partial file is removed");
    assert!(!part.exists());
    // A restart does not bring it back.
    c[1].kill();
    let mut leech = cluster.client("leech");
    leech.resumed("leech");
    assert!(leech.run("show_downloads").is_empty());
    assert!(!part.exists() && !out.exists());
}

#[test]
fn limit_rate_changes_caps_at_once_even_for_transfers_already_waiting() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &[]);
    c[1].ok("limit_rate", "upload unlimited, download unlimited");
    c[1].err(
        "limit_rate down fast",
        "'fast' is not a rate: give bytes per second, like 500K, 10M or 1G (10^3, 10^6, 10^9), or off",
    );
    c[1].err(
        "limit_rate sideways 1M",
        "limit_rate takes up or down, not 'sideways'; usage: limit_rate [up|down] [<rate>]",
    );
    c[0].ok("limit_rate up 2.5M", "upload 2.5 MB/s, download unlimited");

    // A download cap of 1 kB/s: after its first pieces, each request waits minutes.
    c[1].ok("limit_rate down 1K", "upload unlimited, download 1.0 kB/s");
    let original = cluster.path("f.bin");
    write_random(&original, 4 * 1024 * 1024, 33);
    upload(&mut c[0], &original);
    let out = cluster.path("out.bin");
    c[1].run1(&format!("download_file g f.bin {}", out.display()));
    let slow = wait_for(&mut c[1], |d| d.pieces_have >= 1);
    assert!(slow.pieces_have < 8, "{slow:?}");
    // Lifted: the requests already waiting go at once, and it completes.
    c[1].ok("limit_rate down off", "upload unlimited, download unlimited");
    let done = c[1].wait_downloads_json();
    assert!(done[0].is_complete("f.bin"), "{done:?}");
    assert_same_file(&original, &out);

    // The same for the seeder's upload cap.
    c[0].ok("limit_rate up 1k", "upload 1.0 kB/s, download unlimited");
    let out2 = cluster.path("out2.bin");
    // The completed download is announced to the tracker just after it is reported
    // complete: wait for the tracker to list it before stopping to share it.
    c[1].run1_until("list_files g", ", 2 sharers, ");
    c[1].ok("stop_share g f.bin", "stopped sharing f.bin in group g");
    c[1].run1(&format!("download_file g f.bin {}", out2.display()));
    wait_for(&mut c[1], |d| d.state == "downloading" && d.pieces_have >= 1);
    c[0].ok("limit_rate up off", "upload unlimited, download unlimited");
    let done = c[1].wait_downloads_json();
    assert!(done.iter().filter(|d| d.is_complete("f.bin")).count() == 2, "{done:?}");
    assert_same_file(&original, &out2);
}

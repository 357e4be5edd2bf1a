//! Peer-to-peer downloads through the real binaries: several peers at once, edge sizes,
//! errors, dead and lying seeders, hostile connections on the peer port.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;

use common::connection::Connection;
use common::message::{FileMeta, Reply, Request};
use common::peer_message::{PeerReply, PeerRequest, Refusal, PEER_PROTOCOL_VERSION};
use common::{Bitfield, GroupId, PieceIndex};

use crate::support::{
    assert_same_file, peer_connect, write_random, ClientProc, Cluster, Download, RawSession,
    TrackerProc, TIMEOUT,
};

fn upload(c: &mut ClientProc, path: &Path) {
    let line = c.run1(&format!("upload_file '{}' g", path.display()));
    assert!(line.starts_with("uploaded ") || line.starts_with("sharing "), "{line}");
}

/// Issue 19: a group works over IPv6 alone. The tracker listens on `[::1]:PORT` (its line
/// of `tracker_info.txt`), the clients on `[::1]:0`: they log in, share, and fetch from two
/// seeders at once, each reached directly at its IPv6 address.
#[test]
fn issue_19_a_swarm_runs_over_ipv6() {
    let Some(cluster) = Cluster::on_ipv6_loopback(1) else {
        eprintln!("skipped: this host has no IPv6 loopback (::1)");
        return;
    };
    let _tracker = cluster.start_tracker(1);
    let listed = std::fs::read_to_string(&cluster.info).unwrap();
    assert!(listed.contains(&format!("{} ", cluster.addrs[0])), "{listed}");
    assert!(cluster.addrs[0].is_ipv6(), "{listed}");
    let mut c = cluster.members(&["s1", "s2", "leech"], &["--max-upload-rate", "4000000"]);
    let original = cluster.path("v6.bin");
    write_random(&original, 3 * 512 * 1024 + 77, 61);
    for (i, seeder) in c.iter_mut().take(2).enumerate() {
        assert!(seeder.listen.is_ipv6(), "{}", seeder.listen);
        let copy = cluster.path(&format!("copy{i}"));
        std::fs::create_dir(&copy).unwrap();
        std::fs::copy(&original, copy.join("v6.bin")).unwrap();
        upload(seeder, &copy.join("v6.bin"));
    }
    let out = cluster.path("out.bin");
    c[2].run1(&format!("download_file g v6.bin {}", out.display()));
    let done = c[2].wait_downloads_json();
    assert!(done[0].is_complete("v6.bin"), "{done:?}");
    assert_same_file(&original, &out);
    assert_eq!(done[0].from_peers.values().sum::<u32>(), 4, "{done:?}");
    // Every source is one of the seeders, at its [::1] address, reached directly.
    let seeders = [c[0].listen.to_string(), c[1].listen.to_string()];
    assert!(!done[0].paths.is_empty(), "{done:?}");
    for (addr, path) in &done[0].paths {
        assert!(seeders.contains(addr), "{addr} is not a seeder's address: {done:?}");
        assert_eq!(path, "direct", "{done:?}");
    }
}

#[test]
fn downloads_from_several_peers_at_once() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    // Each seeder serves at most 4 MB/s, so one peer alone would take well over a second
    // and the scheduler spreads the pieces.
    let mut c = cluster.members(&["s1", "s2", "s3", "leech"], &["--max-upload-rate", "4000000"]);
    let original = cluster.path("big.bin");
    write_random(&original, 6 * 1024 * 1024 + 123, 1);
    for (i, seeder) in c.iter_mut().take(3).enumerate() {
        let copy = cluster.path(&format!("copy{i}"));
        std::fs::create_dir(&copy).unwrap();
        std::fs::copy(&original, copy.join("big.bin")).unwrap();
        upload(seeder, &copy.join("big.bin"));
    }
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    c[3].ok(
        &format!("download_file g big.bin {}", out.display()),
        &format!("downloading big.bin from group g to {}", out.join("big.bin").display()),
    );
    let done = c[3].wait_downloads_json();
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(done[0].is_complete("big.bin"), "{done:?}");
    let counts = &done[0].from_peers;
    assert_eq!(counts.values().sum::<u32>(), 13, "{done:?}");
    assert!(counts.len() >= 2, "pieces came from one peer only: {done:?}");
    // Each peer is named by its user (issue 10), in JSON and in the `[C]` line.
    let users: Vec<&str> = done[0].peer_users.values().map(String::as_str).collect();
    assert!(users.iter().all(|u| ["s1", "s2", "s3"].contains(u)), "{done:?}");
    let line = c[3].run1("show_downloads");
    for (addr, user) in &done[0].peer_users {
        assert!(line.contains(&format!(" {user}@{addr}=")), "{line}");
    }
    assert_same_file(&original, &out.join("big.bin"));
    assert!(!out.join("big.bin.part").exists());
    // The leecher now shares the file too.
    c[0].run1_until("list_files g", ", 4 sharers, ");
}

#[test]
fn empty_tiny_one_piece_and_short_last_piece_files() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &[]);
    let sizes = [
        ("empty.bin", 0),
        ("one.bin", 1),
        ("piece.bin", 512 * 1024),
        ("short.bin", 512 * 1024 + 1),
    ];
    for (i, (name, size)) in sizes.iter().enumerate() {
        write_random(&cluster.path(name), *size, i as u64);
        upload(&mut c[0], &cluster.path(name));
    }
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    for (name, _) in sizes {
        c[1].run1(&format!("download_file g {name} {}", out.display()));
    }
    let done = c[1].wait_downloads();
    assert_eq!(done.len(), 4, "{done:?}");
    for ((name, _), line) in sizes.iter().zip(&done) {
        assert!(line.starts_with(&format!("[C] [g] {name} -> ")), "{line}");
        assert_same_file(&cluster.path(name), &out.join(name));
    }
    // show_downloads prints the same lines once nothing runs.
    assert_eq!(c[1].run("show_downloads"), done);
}

#[test]
fn download_errors_leave_nothing_behind() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &[]);
    let mut outsider = cluster.client("outsider");
    outsider.sign_up("outsider");
    write_random(&cluster.path("f.bin"), 1000, 7);
    upload(&mut c[0], &cluster.path("f.bin"));
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    let o = out.display();

    outsider.err(
        &format!("download_file g f.bin {o}"),
        "not a member of group g; join_group g asks its owner to let you in",
    );
    c[1].err(
        &format!("download_file g nope.bin {o}"),
        "no file nope.bin in group g; list_files g lists the files shared there",
    );
    c[1].err(
        &format!("download_file nope f.bin {o}"),
        "unknown group nope; list_groups lists the groups",
    );
    c[1].err(
        "download_file g f.bin /nonexistent/dir/f.bin",
        "directory /nonexistent/dir does not exist; create it first (mkdir) or choose another destination",
    );
    let line = c[1].run1("download_file g f.bin /proc/f.bin");
    assert!(line.starts_with("error: cannot write /proc/f.bin.part"), "{line}");
    std::fs::write(out.join("f.bin"), b"mine").unwrap();
    c[1].err(
        &format!("download_file g f.bin {o}"),
        &format!(
            "{} already exists; remove it or choose another destination",
            out.join("f.bin").display()
        ),
    );
    assert_eq!(std::fs::read(out.join("f.bin")).unwrap(), b"mine");
    let line = c[1].run1(&format!("download_file g ../f.bin {o}"));
    assert!(line.starts_with("error: invalid argument '../f.bin'"), "{line}");
    assert!(c[1].run("show_downloads").is_empty());
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
}

/// Each of `leechers` (the members after the seeder) starts to download `f.bin` of group
/// `g` to `out<i>.bin`, `i` from 1.
fn download_to_outs(cluster: &Cluster, leechers: &mut [ClientProc]) {
    for (i, leech) in leechers.iter_mut().enumerate() {
        let out = cluster.path(&format!("out{}.bin", i + 1));
        leech.run1(&format!("download_file g f.bin {}", out.display()));
    }
}

/// Runs `show_downloads --json` until its first download satisfies `ready`.
fn wait_for_progress(c: &mut ClientProc, ready: impl Fn(&Download) -> bool) -> Download {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(d) = c.downloads().into_iter().next().filter(|d| ready(d)) {
            return d;
        }
        assert!(std::time::Instant::now() < deadline, "no progress: {:?}", c.downloads());
    }
}

#[test]
fn a_seeder_killed_mid_download_does_not_stop_it() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["s1", "s2", "leech"], &["--max-upload-rate", "2000000"]);
    let original = cluster.path("f.bin");
    write_random(&original, 8 * 1024 * 1024, 3);
    upload(&mut c[0], &original);
    let copy = cluster.path("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(&original, copy.join("f.bin")).unwrap();
    upload(&mut c[1], &copy.join("f.bin"));
    let out = cluster.path("out.bin");
    c[2].run1(&format!("download_file g f.bin {}", out.display()));
    let d = wait_for_progress(&mut c[2], |d| d.state == "downloading" && d.pieces_have >= 2);
    assert!(d.pieces_have < 16, "finished before the kill: {d:?}");
    c[0].kill();
    let done = c[2].wait_downloads();
    assert!(done[0].starts_with("[C] [g] f.bin"), "{done:?}");
    assert_same_file(&original, &out);
}

fn corrupt(path: &Path, offset: u64) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset)).unwrap();
    f.write_all(b"CORRUPTED").unwrap();
}

#[test]
fn a_corrupted_copy_is_not_served_and_the_good_one_is_used() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["good", "bad", "leech"], &[]);
    let original = cluster.path("f.bin");
    write_random(&original, 4 * 1024 * 1024, 5);
    upload(&mut c[0], &original);
    let copy = cluster.path("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(&original, copy.join("f.bin")).unwrap();
    upload(&mut c[1], &copy.join("f.bin"));
    for piece in 0..8 {
        corrupt(&copy.join("f.bin"), piece * 512 * 1024 + 100);
    }
    let out = cluster.path("out.bin");
    c[2].run1(&format!("download_file g f.bin {}", out.display()));
    let done = c[2].wait_downloads();
    assert!(done[0].starts_with("[C] [g] f.bin"), "{done:?}");
    assert_same_file(&original, &out);
}

#[test]
fn with_no_good_copy_the_download_fails_and_leaves_no_file() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["bad", "leech"], &["--stall-timeout", "2"]);
    let original = cluster.path("f.bin");
    write_random(&original, 2 * 1024 * 1024, 6);
    upload(&mut c[0], &original);
    corrupt(&original, 512 * 1024 + 7);
    let out = cluster.path("out.bin");
    c[1].run1(&format!("download_file g f.bin {}", out.display()));
    let done = c[1].wait_downloads();
    assert!(done[0].starts_with("[F] [g] f.bin: "), "{done:?}");
    assert!(!out.exists());
    assert!(!cluster.path("out.bin.part").exists());
}

/// A peer at a fresh address proving `identity` (the key its owner logged in with, which
/// the tracker lists for it): it greets each downloader with `have`, then `serve`s the
/// connection.
pub(crate) fn spawn_fake_peer(
    identity: common::Identity,
    have: Bitfield,
    serve: impl Fn(&mut Connection<PeerRequest, PeerReply>) + Send + Sync + 'static,
) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = std::sync::Arc::new(serve);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(s) = stream else { return };
            let (identity, have, serve) =
                (identity.clone(), have.clone(), std::sync::Arc::clone(&serve));
            std::thread::spawn(move || {
                let Ok(mut conn) = Connection::<PeerRequest, PeerReply>::accept(
                    s,
                    &identity,
                    crate::support::raw_timeouts(),
                ) else {
                    return;
                };
                let Ok(Some(PeerRequest::Hello { .. })) = conn.recv() else { return };
                if conn.send(&PeerReply::Welcome { have }).is_ok() {
                    serve(&mut conn);
                }
            });
        }
    });
    addr
}

/// A peer that answers every piece request with garbage.
fn spawn_lying_peer(identity: common::Identity) -> std::net::SocketAddr {
    spawn_fake_peer(identity, Bitfield::full(8), |conn| {
        while let Ok(Some(request)) = conn.recv() {
            let PeerRequest::GetPiece { piece } = request else { continue };
            let len = 512 * 1024;
            let garbage = vec![0xAB; len as usize];
            if conn.send_with_payload(&PeerReply::Piece { piece, len }, &garbage).is_err() {
                return;
            }
        }
    })
}

/// A peer that floods its downloader with what nobody asked for: a `Bitfield` and then
/// `Have`s naming every piece, as fast as it can. Counts the frames it got out before the
/// downloader closed the connection.
fn spawn_flooding_peer(
    identity: common::Identity,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> std::net::SocketAddr {
    spawn_fake_peer(identity, Bitfield::empty(8), move |conn| {
        let pieces: Vec<common::PieceIndex> = (0..8).map(common::PieceIndex).collect();
        let flood = [PeerReply::Bitfield { have: Bitfield::full(8) }, PeerReply::Have { pieces }];
        for n in 0..1_000_000u64 {
            if conn.send(&flood[(n % 2) as usize]).is_err() {
                return;
            }
            sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    })
}

/// mallory (a member) logs in with the peer address `peer` gives for its key, and
/// announces the file at `path` as `f.bin` in group g, which already lists it.
fn announce_from(
    cluster: &Cluster,
    tracker: &TrackerProc,
    path: &Path,
    peer: impl FnOnce(common::Identity) -> std::net::SocketAddr,
) -> RawSession {
    let mut mallory = RawSession::connect(cluster, tracker);
    mallory.login("mallory", peer(mallory.identity.clone()));
    let file = file_meta(path, "f.bin");
    let group = GroupId::new("g").unwrap();
    assert_eq!(
        mallory.call(Request::UploadFile { group, file }),
        Ok(Reply::Uploaded { new_file: false })
    );
    mallory
}

/// The metadata `upload_file` would announce for the file at `path` under `name`.
fn file_meta(path: &std::path::Path, name: &str) -> FileMeta {
    let file = std::fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len();
    let h = common::hash::hash_file(&file, len).unwrap();
    FileMeta {
        name: name.parse().unwrap(),
        size: h.file_len,
        digest: h.digest,
        pieces: h.pieces,
        tree: None,
    }
}

#[test]
fn a_peer_sending_bad_pieces_is_dropped_and_the_file_is_intact() {
    let (cluster, tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["good", "leech", "mallory"], &["--max-upload-rate", "4000000"]);
    let original = cluster.path("f.bin");
    write_random(&original, 4 * 1024 * 1024, 8);
    upload(&mut c[0], &original);
    // mallory announces the same file from a peer address that serves garbage.
    let _mallory = announce_from(&cluster, &tracker, &original, spawn_lying_peer);

    let out = cluster.path("out.bin");
    c[1].run1(&format!("download_file g f.bin {}", out.display()));
    let done = c[1].wait_downloads_json();
    assert!(done[0].is_complete("f.bin"), "{done:?}");
    let counts: Vec<u32> = done[0].from_peers.values().copied().collect();
    assert_eq!(counts, [8], "only the good peer delivered: {done:?}");
    assert_same_file(&original, &out);
}

#[test]
fn the_peer_port_refuses_garbage_bad_tickets_and_bad_requests_and_keeps_serving() {
    let (cluster, tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &[]);
    let original = cluster.path("f.bin");
    write_random(&original, 600 * 1024, 9);
    upload(&mut c[0], &original);
    let seed = c[0].listen;
    let connect = || {
        let s = TcpStream::connect(seed).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s
    };
    let closed = |s: &mut TcpStream| {
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf.is_empty()
    };

    // Not even a handshake: garbage, an oversized length, and a plaintext hello.
    let mut garbage = connect();
    garbage.write_all(b"\x00\x00\x00\x05hello, is this BitTorrent?").unwrap();
    assert!(closed(&mut garbage));
    let mut huge = connect();
    huge.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert!(closed(&mut huge));

    // A real ticket, obtained by the member leech through the tracker, with the seeder's
    // key from the peer list.
    let mut raw = RawSession::connect(&cluster, &tracker);
    raw.login("leech", "127.0.0.1:9".parse().unwrap());
    let request =
        Request::GetFile { group: GroupId::new("g").unwrap(), name: "f.bin".parse().unwrap() };
    let Ok(Reply::FileInfo { meta, ticket, peers }) = raw.call(request) else {
        panic!("get_file failed")
    };
    let seed_key = peers.iter().find(|p| p.addr == seed).expect("seeder listed").key;
    let hello = |ticket: common::message::Ticket| PeerRequest::Hello {
        version: PEER_PROTOCOL_VERSION,
        digest: ticket.digest,
        ticket,
    };

    let mut forged = peer_connect(seed, &seed_key, &raw.identity);
    let mut bad_ticket = (*ticket).clone();
    bad_ticket.expires += 1;
    forged.send(&hello(bad_ticket)).unwrap();
    let reply = forged.recv().unwrap();
    assert!(
        matches!(reply, Some(PeerReply::Refused { reason: Refusal::BadTicket(_) })),
        "{reply:?}"
    );

    let mut unknown = peer_connect(seed, &seed_key, &raw.identity);
    let mut other = (*ticket).clone();
    other.digest = common::Sha1Digest([1; 20]);
    unknown.send(&hello(other)).unwrap();
    assert_eq!(unknown.recv().unwrap(), Some(PeerReply::Refused { reason: Refusal::UnknownFile }));

    let mut good = peer_connect(seed, &seed_key, &raw.identity);
    good.send(&hello((*ticket).clone())).unwrap();
    assert_eq!(good.recv().unwrap(), Some(PeerReply::Welcome { have: Bitfield::full(2) }));
    good.send(&PeerRequest::GetPiece { piece: PieceIndex(99) }).unwrap();
    assert_eq!(good.recv().unwrap(), Some(PeerReply::NoPiece { piece: PieceIndex(99) }));
    good.send(&PeerRequest::GetPiece { piece: PieceIndex(1) }).unwrap();
    assert_eq!(
        good.recv().unwrap(),
        Some(PeerReply::Piece { piece: PieceIndex(1), len: 600 * 1024 - 512 * 1024 })
    );
    let _ = meta;

    // After all that, a normal download still works.
    let out = cluster.path("out.bin");
    c[1].run1(&format!("download_file g f.bin {}", out.display()));
    assert!(c[1].wait_downloads()[0].starts_with("[C]"));
    assert_same_file(&original, &out);
}

#[test]
fn a_leecher_killed_mid_download_resumes_without_fetching_again() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &["--max-upload-rate", "500000"]);
    let original = cluster.path("f.bin");
    write_random(&original, 8 * 1024 * 1024, 11);
    upload(&mut c[0], &original);
    let out = cluster.path("out.bin");
    c[1].run1(&format!("download_file g f.bin {}", out.display()));
    // At 0.5 MB/s, 12 pieces take at least 12.6 s, so progress has been saved at least
    // once (it is saved every 10 s while pieces come).
    wait_for_progress(&mut c[1], |d| d.state == "downloading" && d.pieces_have >= 12);
    c[1].kill();
    assert!(!out.exists());

    let mut leech = cluster.client("leech");
    leech.resumed("leech");
    let done = leech.wait_downloads_json();
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(done[0].is_complete("f.bin"), "{done:?}");
    let resumed = done[0].pieces_resumed;
    assert!(resumed >= 1, "{done:?}");
    let fetched: u32 = done[0].from_peers.values().sum();
    assert_eq!(resumed + fetched, 16, "fetched again: {done:?}");
    // The human line says the same.
    let line = leech.run1("show_downloads");
    assert!(line.contains(&format!("; {resumed} pieces resumed; pieces from ")), "{line}");
    assert_same_file(&original, &out);
}

/// Issue 21: on resume, a `.part` the client did not create is not adopted: neither
/// another file put at its path (another content, this user's, mode 0600) nor its own made
/// writable by others. Each download starts over in a fresh file, says why, and leaves
/// that file as it is.
#[test]
fn a_resumed_download_does_not_adopt_a_part_it_did_not_create() {
    use std::os::unix::fs::PermissionsExt;
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &["--max-upload-rate", "500000"]);
    let (a, b) = (cluster.path("a.bin"), cluster.path("b.bin"));
    write_random(&a, 1024 * 1024 + 5, 31);
    write_random(&b, 1024 * 1024 + 7, 32);
    upload(&mut c[0], &a);
    upload(&mut c[0], &b);
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    // Each download is saved, with its `.part`'s identity, before the command answers.
    c[1].run1(&format!("download_file g a.bin {}", out.display()));
    c[1].run1(&format!("download_file g b.bin {}", out.display()));
    c[1].kill();

    let (part_a, part_b) = (out.join("a.bin.part"), out.join("b.bin.part"));
    std::fs::remove_file(&part_a).unwrap();
    let planted = vec![0x5a; 1024 * 1024 + 5];
    std::fs::write(&part_a, &planted).unwrap();
    std::fs::set_permissions(&part_a, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&part_b, std::fs::Permissions::from_mode(0o666)).unwrap();
    let b_before = std::fs::read(&part_b).unwrap();

    let mut leech = cluster.client("leech");
    leech.resumed("leech");
    let mut done = leech.wait_downloads_json();
    done.sort_by(|x, y| x.file.cmp(&y.file));
    assert_eq!(done.len(), 2, "{done:?}");
    for d in &done {
        assert_eq!((d.state.as_str(), d.pieces_resumed), ("complete", 0), "{d:?}");
    }
    let why = |d: &Download| d.started_over.clone().unwrap_or_default();
    assert!(why(&done[0]).starts_with(&format!("{} is not the partial file", part_a.display())));
    assert!(why(&done[0]).ends_with("it is another file than the one this download created"));
    assert!(why(&done[1]).ends_with("others may write to it (mode 666)"), "{done:?}");
    let lines = leech.run("show_downloads");
    assert!(lines.iter().all(|l| l.starts_with("[C]")), "{lines:?}");
    leech.wait_log("download of a.bin starts over in");
    leech.wait_log("download of b.bin starts over in");
    assert_same_file(&a, &out.join("a.bin"));
    assert_same_file(&b, &out.join("b.bin"));
    // The files that were not adopted are left as they were.
    assert_eq!(std::fs::read(&part_a).unwrap(), planted);
    assert_eq!(std::fs::read(&part_b).unwrap(), b_before);
    assert!(!out.join("a.bin.1.part").exists() && !out.join("b.bin.1.part").exists());
}

/// A kill between a download's rename into place and the save of its end leaves it saved
/// as under way, its `.part` gone and the complete file at its destination. The restart
/// (that state made exactly: the state file as saved while the downloads were under way,
/// put back after they completed) checks what is at the destination: the file that is the
/// item, every piece matching, is complete and shared; one that is not is neither adopted
/// nor touched, and its download fails saying so.
#[test]
fn a_download_killed_after_its_rename_into_place_is_complete_after_the_restart() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech", "newcomer"], &["--max-upload-rate", "500000"]);
    let (a, b) = (cluster.path("a.bin"), cluster.path("b.bin"));
    write_random(&a, 1024 * 1024 + 5, 41);
    write_random(&b, 700_000, 42);
    upload(&mut c[0], &a);
    upload(&mut c[0], &b);
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    // Each download is saved, as under way, before the command answers.
    c[1].run1(&format!("download_file g a.bin {}", out.display()));
    c[1].run1(&format!("download_file g b.bin {}", out.display()));
    c[1].kill();
    let shares = cluster.path("leech/shares.bin");
    let under_way = std::fs::read(&shares).unwrap();

    let mut leech = cluster.client("leech");
    leech.resumed("leech");
    let done = leech.wait_downloads_json();
    assert!(done.iter().all(|d| d.state == "complete"), "{done:?}");
    leech.kill();
    std::fs::write(&shares, &under_way).unwrap();
    assert!(!out.join("a.bin.part").exists() && !out.join("b.bin.part").exists());
    // b.bin is changed at its destination before the restart.
    let mut changed = std::fs::read(out.join("b.bin")).unwrap();
    changed[600_000] ^= 0xff;
    std::fs::write(out.join("b.bin"), &changed).unwrap();

    let mut leech = cluster.client("leech");
    leech.resumed("leech");
    let mut done = leech.wait_downloads_json();
    done.sort_by(|x, y| x.file.cmp(&y.file));
    assert_eq!(done.len(), 2, "{done:?}");
    assert!(done[0].is_complete("a.bin"), "{done:?}");
    assert_eq!((done[0].pieces_resumed, done[0].from_peers.len()), (3, 0), "{done:?}");
    assert_eq!(done[1].state, "failed", "{done:?}");
    let lines = leech.run("show_downloads");
    let b_dest = out.join("b.bin").display().to_string();
    let why = format!(
        "{b_dest} already exists and is not b.bin (piece 1 does not match its hash); it is left as it is"
    );
    assert!(lines.iter().any(|l| l.starts_with("[F]") && l.contains(&why)), "{lines:?}");
    assert_same_file(&a, &out.join("a.bin"));
    assert_eq!(std::fs::read(out.join("b.bin")).unwrap(), changed);
    leech.wait_log("download of a.bin complete: found at");

    // a.bin is shared from there: with the seeder gone, a newcomer gets it from leech.
    c[0].kill();
    let got = cluster.path("got.bin");
    c[2].run1(&format!("download_file g a.bin {}", got.display()));
    let done = c[2].wait_downloads_json();
    assert!(done[0].is_complete("a.bin"), "{done:?}");
    assert_same_file(&a, &got);
}

#[test]
fn a_restarted_seeder_shares_again_after_login_but_not_what_it_stopped() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &[]);
    write_random(&cluster.path("a.bin"), 700_000, 12);
    write_random(&cluster.path("b.bin"), 10, 13);
    upload(&mut c[0], &cluster.path("a.bin"));
    upload(&mut c[0], &cluster.path("b.bin"));
    c[0].ok("stop_share g b.bin", "stopped sharing b.bin in group g");
    c[0].kill();

    let mut seed = cluster.client("seed");
    seed.resumed("seed");
    let files = c[1].run("list_files g");
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("a.bin 700000 bytes"), "{files:?}");
    let out = cluster.path("out.bin");
    c[1].run1(&format!("download_file g a.bin {}", out.display()));
    assert!(c[1].wait_downloads()[0].starts_with("[C]"));
    assert_same_file(&cluster.path("a.bin"), &out);
}

#[test]
fn leechers_of_one_slow_seeder_trade_pieces_among_themselves() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "l1", "l2", "l3"], &[]);
    // Only the seeder is slow: restart it with a 1 MB/s upload cap.
    cluster.restart_with(&mut c[0], "seed", &["--max-upload-rate", "1000000"]);
    let original = cluster.path("f.bin");
    write_random(&original, 6 * 1024 * 1024, 21);
    upload(&mut c[0], &original);
    let seed = c[0].listen.to_string();
    download_to_outs(&cluster, &mut c[1..]);
    let mut from_leechers = 0;
    for (i, leech) in c.iter_mut().enumerate().skip(1) {
        let done = leech.wait_downloads_json();
        assert!(done[0].is_complete("f.bin"), "{done:?}");
        assert_same_file(&original, &cluster.path(&format!("out{i}.bin")));
        from_leechers += done[0]
            .from_peers
            .iter()
            .filter(|(addr, _)| **addr != seed)
            .map(|(_, n)| n)
            .sum::<u32>();
    }
    // 3 leechers need 36 pieces; the seeder alone would send all of them.
    assert!(from_leechers > 0, "no piece went from leecher to leecher");
}

/// Issue 19: a leecher is listed to the other downloaders of its file at once, before its
/// first piece, so that a flash crowd's leechers are connected to each other when their
/// first pieces verify (each heard of at once, by `Have`), not a tick and a refresh later.
#[test]
fn a_fresh_leecher_is_a_source_to_the_others_before_its_first_piece() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "l1", "l2"], &[]);
    // The seeder sends 4 KB/s: after the first piece (sent at once, the cap paces what
    // follows it), the next takes two minutes, so one leecher at most has a piece while
    // the test runs.
    cluster.restart_with(&mut c[0], "seed", &["--max-upload-rate", "4000"]);
    let original = cluster.path("f.bin");
    write_random(&original, 3 * 512 * 1024, 23);
    upload(&mut c[0], &original);
    download_to_outs(&cluster, &mut c[1..]);
    // Each is a source of the other: so the one without a piece was listed without one.
    let (l1, l2) = (c[1].listen.to_string(), c[2].listen.to_string());
    let at_l2 = wait_for_progress(&mut c[2], |d| d.paths.contains_key(&l1));
    let at_l1 = wait_for_progress(&mut c[1], |d| d.paths.contains_key(&l2));
    let had = c[1].downloads()[0].pieces_have + c[2].downloads()[0].pieces_have;
    assert!(had <= 1, "{had} pieces: {at_l1:?} {at_l2:?}");
}

/// Issue 12: a seeder that hands out pieces to a flash crowd sends each piece about once,
/// and the leechers trade the rest. Counts pieces; times nothing.
#[test]
fn issue_12_a_flash_crowd_gets_about_one_copy_from_the_seeder() {
    const LEECHERS: usize = 6;
    const PIECES: u32 = 32;
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let names = ["seed", "l1", "l2", "l3", "l4", "l5", "l6"];
    let mut c = cluster.members(&names, &[]);
    // Only the seeder is slow, so that it cannot keep up with six leechers.
    cluster.restart_with(&mut c[0], "seed", &["--max-upload-rate", "4000000"]);
    let original = cluster.path("f.bin");
    write_random(&original, PIECES as usize * 512 * 1024, 120);
    upload(&mut c[0], &original);
    let seed = format!("{}=", c[0].listen);
    download_to_outs(&cluster, &mut c[1..]);
    let mut from_seeder = 0;
    for (i, leech) in c.iter_mut().enumerate().skip(1) {
        let done = leech.wait_downloads();
        assert!(done[0].starts_with("[C] [g] f.bin"), "{done:?}");
        assert_same_file(&original, &cluster.path(&format!("out{i}.bin")));
        let list = done[0].split("pieces from ").nth(1).unwrap().trim_end_matches(')').to_string();
        from_seeder += list
            .split(' ')
            .filter(|kv| kv.starts_with(&seed))
            .filter_map(|kv| kv.split('=').nth(1))
            .map(|n| n.parse::<u32>().unwrap())
            .sum::<u32>();
    }
    assert_eq!(c.len(), LEECHERS + 1);
    // At most 1.3 copies of the file from the seeder (6 leechers would take 6 without
    // trading).
    assert!(
        from_seeder * 10 <= PIECES * 13,
        "the seeder served {from_seeder} pieces of a {PIECES}-piece file to {LEECHERS} leechers"
    );
}

#[test]
fn a_silent_peer_is_no_longer_listed() {
    let cluster = Cluster::new(1);
    let _tracker =
        cluster.try_start_tracker(1, &["--peer-timeout", "8"]).expect("tracker did not start");
    let mut c = cluster.members(&["seed", "other"], &[]);
    write_random(&cluster.path("f.bin"), 100, 22);
    upload(&mut c[0], &cluster.path("f.bin"));
    assert_eq!(c[1].run("list_files g").len(), 1);
    c[0].kill();
    // The seeder no longer heartbeats; within the peer timeout its file disappears.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !c[1].run("list_files g").is_empty() {
        assert!(std::time::Instant::now() < deadline, "still listed");
    }
}

/// Issue 9 (clients through failover): tracker traffic never stalls the piece path. With
/// the tracker frozen (SIGSTOP, as a paused process or a failover in progress looks to a
/// client), a running download completes, and no tracker call of it has given up yet.
#[test]
fn a_download_keeps_going_while_its_tracker_is_frozen() {
    let (cluster, tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &["--max-upload-rate", "4000000"]);
    let original = cluster.path("f.bin");
    write_random(&original, 8 * 1024 * 1024, 41);
    upload(&mut c[0], &original);
    let out = cluster.path("out.bin");
    c[1].run1(&format!("download_file g f.bin {}", out.display()));
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &tracker.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    // Freeze the tracker once pieces flow (the seeder has checked the ticket with it).
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let d = c[1].downloads().remove(0);
        if d.pieces_have > 0 || d.state == "complete" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no piece arrived: {d:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    signal("-STOP");
    let done = c[1].wait_downloads();
    let log = std::fs::read_to_string(cluster.path("leech.log")).unwrap_or_default();
    signal("-CONT");
    assert!(done[0].starts_with("[C] [g] f.bin"), "{done:?}");
    assert_same_file(&original, &out);
    assert!(
        !log.contains("cannot announce pieces") && !log.contains("cannot refresh peers"),
        "the download waited for the frozen tracker:\n{log}"
    );
}

/// Issue 13 (downloader bounds): a peer list that names one address many times (a member
/// logged in 40 times, each session announcing the same address) costs the downloader one
/// connection there, not forty threads.
#[test]
fn a_peer_list_repeating_one_address_costs_one_connection() {
    // The tracker would end all but 16 of mallory's sessions (see
    // `a_user_s_sessions_are_capped`): allow more, to test the downloader's own bound.
    let (cluster, tracker) = Cluster::with_one_tracker_args(&["--max-sessions-per-user", "64"]);
    let mut c = cluster.members(&["seed", "leech", "mallory"], &["--max-upload-rate", "4000000"]);
    let original = cluster.path("f.bin");
    write_random(&original, 4 * 1024 * 1024, 43);
    upload(&mut c[0], &original);
    let meta = file_meta(&original, "f.bin");
    // A tarpit at mallory's address: it counts connections and never answers.
    let tarpit = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tarpit.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let accepted = std::sync::Arc::clone(&accepted);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in tarpit.incoming().flatten() {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(stream);
            }
        });
    }
    let sessions: Vec<RawSession> = (0..40)
        .map(|_| {
            let mut m = RawSession::connect(&cluster, &tracker);
            m.login("mallory", addr);
            let group = GroupId::new("g").unwrap();
            let shared = m.call(Request::UploadFile { group, file: meta.clone() });
            assert_eq!(shared, Ok(Reply::Uploaded { new_file: false }));
            m
        })
        .collect();
    let out = cluster.path("out.bin");
    c[1].run1(&format!("download_file g f.bin {}", out.display()));
    let done = c[1].wait_downloads();
    assert!(done[0].starts_with("[C] [g] f.bin"), "{done:?}");
    let n = accepted.load(std::sync::atomic::Ordering::SeqCst);
    // One connection, and perhaps a retry of it (every 3 s), never one per listing.
    assert!(n <= 3, "{n} connections to one address listed 40 times");
    drop(sessions);
}

#[test]
fn a_peer_flooding_what_nobody_asked_for_is_dropped_and_the_download_completes() {
    let (cluster, tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["good", "leech", "mallory"], &["--max-upload-rate", "4000000"]);
    let original = cluster.path("f.bin");
    write_random(&original, 4 * 1024 * 1024, 21);
    upload(&mut c[0], &original);
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = std::sync::Arc::clone(&sent);
    let _mallory = announce_from(&cluster, &tracker, &original, move |identity| {
        spawn_flooding_peer(identity, counter)
    });
    let out = cluster.path("out.bin");
    c[1].run1(&format!("download_file g f.bin {}", out.display()));
    let done = c[1].wait_downloads_json();
    assert!(done[0].is_complete("f.bin"), "{done:?}");
    assert_same_file(&original, &out);
    // The downloader closed each flooding connection at the first unasked reply: a
    // handful of frames per connection got out, never the million it tried.
    let got_out = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(got_out < 500_000, "{got_out} unasked frames were taken");
}

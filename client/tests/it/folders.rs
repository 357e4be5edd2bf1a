//! Folders (issue 23): a directory shared as one item with `upload_file`, listed as
//! `name/` by `list_files`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{wait_leader, ClientProc, Cluster, Download, TrackerProc};

/// alice and bob, members of group g (owned by alice).
fn member_pair(cluster: &Cluster) -> (ClientProc, ClientProc) {
    let mut clients = cluster.members(&["alice", "bob"], &[]);
    let bob = clients.pop().unwrap();
    (clients.pop().unwrap(), bob)
}

/// Bytes that differ from piece to piece and file to file.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// An awkward tree at `root`: sizes on and just past a piece boundary, spaces and non-ASCII
/// names, an empty file and an empty directory, an executable, and a link pointing outside.
/// 5 files, 1,048,601 bytes, 5 pieces.
pub fn awkward_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deep")).unwrap();
    std::fs::create_dir(root.join("empty dir")).unwrap();
    std::fs::write(root.join("a b.bin"), bytes(512 * 1024, 1)).unwrap();
    std::fs::write(root.join("ünï cödé.txt"), bytes(512 * 1024 + 1, 2)).unwrap();
    std::fs::write(root.join("empty.txt"), b"").unwrap();
    std::fs::write(root.join("sub/run.sh"), b"#!/bin/sh\necho hello\n").unwrap();
    std::fs::set_permissions(root.join("sub/run.sh"), std::fs::Permissions::from_mode(0o755))
        .unwrap();
    std::fs::write(root.join("sub/deep/x.bin"), b"xyz").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
}

#[test]
fn a_folder_is_shared_and_listed_with_its_links_skipped() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let (mut alice, mut bob) = member_pair(&cluster);
    let root = cluster.dir.path().join("album");
    awkward_tree(&root);
    let shown = root.display().to_string();
    let out = alice.run(&format!("upload_file '{shown}' g"));
    assert_eq!(
        out,
        [
            "uploaded album/ to group g (1048601 bytes in 5 files, 5 pieces)",
            "skipped link: a symbolic link (links are not followed)",
        ]
    );
    let listed = bob.run1("list_files g");
    assert!(listed.starts_with("album/ 1048601 bytes in 5 files, 1 sharer, digest "), "{listed}");
    // The same folder from bob makes him one more sharer.
    let copy = cluster.dir.path().join("copy/album");
    awkward_tree(&copy);
    let out = bob.run(&format!("upload_file {} g", copy.display()));
    assert_eq!(out[0], "sharing album/ in group g (same content already there)");
    assert!(bob.run1("list_files g").contains(", 2 sharers, "));
}

/// Every entry under `root`, as (path, kind, owner's executable bit, bytes), sorted; links
/// are left out (they are not shared).
fn listing(root: &Path) -> Vec<(String, &'static str, bool, Vec<u8>)> {
    let mut out = Vec::new();
    for item in walk(root) {
        let meta = std::fs::symlink_metadata(&item).unwrap();
        let rel = item.strip_prefix(root).unwrap().display().to_string();
        if meta.is_dir() {
            out.push((rel, "dir", false, Vec::new()));
        } else if meta.is_file() {
            let exec = meta.permissions().mode() & 0o100 != 0;
            out.push((rel, "file", exec, std::fs::read(&item).unwrap()));
        }
    }
    out.sort();
    out
}

/// The names in `dir`, in the file system's order.
fn names_in(dir: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect()
}

/// Asserts that `out/name` is a copy of the tree at `from`, and that nothing else is left
/// in `out` beside it: no `.part` file, no staging directory.
#[track_caller]
fn assert_landed_alone(out: &Path, name: &str, from: &Path) {
    assert_eq!(listing(&out.join(name)), listing(from));
    assert_eq!(names_in(out), [name]);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all = Vec::new();
    for item in std::fs::read_dir(dir).unwrap() {
        let path = item.unwrap().path();
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            all.extend(walk(&path));
        }
        all.push(path);
    }
    all
}

/// Issue 23: a folder downloaded whole from two seeders at once is the same tree, byte for
/// byte, with the same executable bits, its empty file and empty directory, and no link;
/// it appears under its final name only when complete, and the downloader then shares it.
#[test]
fn a_folder_is_downloaded_whole_from_two_seeders() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    // Each seeder serves at most 4 MB/s, so the pieces spread over both.
    let mut c = cluster.members(&["s1", "s2", "leech"], &["--max-upload-rate", "4000000"]);
    let mut roots = Vec::new();
    for (i, seeder) in c.iter_mut().take(2).enumerate() {
        let root = cluster.path(&format!("copy{i}/album"));
        awkward_tree(&root);
        std::fs::write(root.join("sub/big.bin"), bytes(4 * 1024 * 1024 + 5, 3)).unwrap();
        let out = seeder.run(&format!("upload_file {} g", root.display()));
        let expected = match i {
            0 => "uploaded album/ to group g (5242910 bytes in 6 files, 14 pieces)",
            _ => "sharing album/ in group g (same content already there)",
        };
        assert_eq!(out[0], expected);
        roots.push(root);
    }
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    c[2].err("download_file g album", "album is a folder; download_file g album/ fetches it");
    c[2].ok(
        &format!("download_file g album/ {}", out.display()),
        &format!("downloading album/ from group g to {}", out.join("album").display()),
    );
    let done = c[2].wait_downloads_json();
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(done[0].is_complete("album"), "{done:?}");
    let counts = &done[0].from_peers;
    assert_eq!(counts.values().sum::<u32>(), 14, "{done:?}");
    assert!(counts.len() >= 2, "pieces came from one peer only: {done:?}");
    let got = listing(&out.join("album"));
    assert_eq!(got, listing(&roots[0]));
    assert!(got.iter().any(|(p, kind, ..)| p == "empty dir" && *kind == "dir"));
    assert!(got.iter().any(|(p, _, exec, _)| p == "sub/run.sh" && *exec));
    assert!(!out.join("album/link").exists() && out.join("album/link").symlink_metadata().is_err());
    // Nothing else is left beside it: no `.part` file, no staging directory.
    assert_eq!(names_in(&out), ["album"]);
    // The downloader shares it now: a third peer can get it from there alone.
    c[2].run1_until("list_files g", ", 3 sharers, ");
}

/// Issue 23: what the folder syntax cannot fetch is refused with a clear error.
#[test]
fn folder_downloads_that_cannot_be_done_are_refused() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let (mut alice, mut bob) = member_pair(&cluster);
    let root = cluster.path("album");
    awkward_tree(&root);
    alice.run(&format!("upload_file {} g", root.display()));
    let f = cluster.path("f.txt");
    std::fs::write(&f, b"x").unwrap();
    alice.run(&format!("upload_file {} g", f.display()));
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    let to = out.display();
    bob.err(
        &format!("download_file g f.txt/ {to}"),
        "f.txt is a file, not a folder; download_file g f.txt fetches it",
    );
    bob.err(&format!("download_file g album/nope/ {to}"), "album/: no nope in the folder");
    bob.err(
        &format!("download_file g album/sub {to}"),
        "album/: no file sub (sub/ is a directory) in the folder",
    );
    bob.err(
        &format!("download_file g album/empty.txt/ {to}"),
        "album/: no directory empty.txt/ (empty.txt is a file) in the folder",
    );
    let line = bob.run1(&format!("download_file g album/../x {to}"));
    assert!(line.starts_with("error: invalid path 'album/../x': "), "{line}");
    std::fs::create_dir(out.join("album")).unwrap();
    bob.err(
        &format!("download_file g album/ {to}"),
        &format!(
            "{} already exists; remove it or choose another destination",
            out.join("album").display()
        ),
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
}

/// Issue 23, hostile metadata: a tracker refuses a folder whose size, piece count or digest
/// is not its tree's, as it refuses an inconsistent file (a tree with `..` cannot even be
/// decoded: `common`'s codec tests).
#[test]
fn the_tracker_refuses_inconsistent_folder_metadata() {
    use common::folder::{folder_digest, Entry, EntryKind, RelPath, Tree};
    use common::message::{FileMeta, Reply, Request, TrackerError};
    use common::{FileName, GroupId, Sha1Digest};
    let (cluster, tracker) = Cluster::with_one_tracker();
    let mut c = cluster.client("c");
    c.sign_up("alice");
    c.ok("create_group g", "created group g");
    let mut alice = crate::support::RawSession::connect(&cluster, &tracker);
    alice.login("alice", "127.0.0.1:9".parse().unwrap());
    let entry = |path: &str, kind| Entry { path: RelPath::parse(path).unwrap(), kind };
    let tree = Tree::new(vec![
        entry("a", EntryKind::File { size: 512 * 1024 + 1, executable: false }),
        entry("d", EntryKind::Dir),
    ])
    .unwrap();
    let pieces = vec![Sha1Digest([1; 20]), Sha1Digest([2; 20])];
    let good = FileMeta {
        name: FileName::new("d").unwrap(),
        size: tree.total_size(),
        digest: folder_digest(&tree, &pieces),
        pieces,
        tree: Some(tree),
    };
    let share = |meta| Request::UploadFile { group: GroupId::new("g").unwrap(), file: meta };
    let mut bad = Vec::new();
    let mut m = good.clone();
    m.size -= 1;
    bad.push(m);
    let mut m = good.clone();
    m.pieces.pop();
    bad.push(m);
    let mut m = good.clone();
    m.digest = common::hash::file_digest(m.size, &m.pieces);
    bad.push(m);
    let mut m = good.clone();
    m.pieces[1] = Sha1Digest([3; 20]);
    bad.push(m);
    for meta in bad {
        let answer = alice.call(share(meta.clone()));
        assert!(matches!(answer, Err(TrackerError::BadFileMeta(_))), "{meta:?}: {answer:?}");
    }
    assert!(c.run("list_files g").is_empty());
    assert_eq!(alice.call(share(good)), Ok(Reply::Uploaded { new_file: true }));
}

/// The killed leech of `cluster`, started again, resumes its one download, the folder
/// `album`, and completes it: a copy of `root` lands alone in `out`.
fn leech_restarted_completes(cluster: &Cluster, out: &Path, root: &Path) {
    let mut leech = cluster.client("leech");
    leech.resumed("leech");
    let done = leech.wait_downloads_json();
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(done[0].is_complete("album"), "{done:?}");
    assert_landed_alone(out, "album", root);
}

/// Issue 23: a folder's download is saved with its tree before `download_file` answers, so
/// a downloader killed at once resumes it after a restart and completes it.
#[test]
fn a_killed_folder_download_resumes_after_a_restart() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &["--max-upload-rate", "1000000"]);
    let root = cluster.path("album");
    awkward_tree(&root);
    c[0].run(&format!("upload_file {} g", root.display()));
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    c[1].run1(&format!("download_file g album/ {}", out.display()));
    c[1].kill();
    assert!(!out.join("album").exists());

    leech_restarted_completes(&cluster, &out, &root);
}

/// Issue 23: one subfolder, then one file, of a folder two seeders share: only their
/// pieces are fetched, from both seeders at once; the subfolder lands as `out/sub/` and the
/// file as `out/<its name>`, each only once complete, with nothing else beside them.
#[test]
fn a_subfolder_and_a_file_of_a_folder_are_downloaded_alone_from_two_seeders() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["s1", "s2", "leech", "other"], &["--max-upload-rate", "4000000"]);
    let mut roots = Vec::new();
    for seeder in c.iter_mut().take(2) {
        let root = cluster.path(&format!("copy{}/album", roots.len()));
        awkward_tree(&root);
        std::fs::write(root.join("sub/big.bin"), bytes(4 * 1024 * 1024 + 5, 3)).unwrap();
        seeder.run(&format!("upload_file {} g", root.display()));
        roots.push(root);
    }
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    c[2].ok(
        &format!("download_file g album/sub/ {}", out.display()),
        &format!("downloading album/sub/ from group g to {}", out.join("sub").display()),
    );
    let done = c[2].wait_downloads_json();
    assert!(done[0].is_complete("album"), "{done:?}");
    // sub/big.bin (9 pieces), sub/run.sh and sub/deep/x.bin (1 each): 11 of the 14.
    let counts = &done[0].from_peers;
    assert_eq!((counts.values().sum::<u32>(), done[0].pieces_have), (11, 11), "{done:?}");
    assert!(counts.len() >= 2, "pieces came from one peer only: {done:?}");
    assert_landed_alone(&out, "sub", &roots[0].join("sub"));
    let line = c[2].run1("show_downloads");
    assert!(line.starts_with("[C] [g] album/sub/ -> "), "{line}");
    let shares = c[2].run1("list_shares");
    assert!(shares.starts_with("[g] album/sub/: 11/11 pieces, 4194333 bytes, from "), "{shares}");
    // One folder, one part at a time.
    c[2].err(
        &format!("download_file g album/empty.txt {}", out.display()),
        "this client already shares or downloads album/sub/; stop_share g album first to fetch another part of it",
    );
    c[2].ok("stop_share g album/sub/", "stopped sharing album in group g");
    assert!(c[2].run("list_shares").is_empty());

    let name = "ünï cödé.txt";
    c[3].ok(
        &format!("download_file g 'album/{name}' {}", out.display()),
        &format!("downloading album/{name} from group g to {}", out.join(name).display()),
    );
    let done = c[3].wait_downloads_json();
    assert!(done[0].is_complete("album"), "{done:?}");
    assert_eq!(done[0].pieces_have, 2, "{done:?}");
    assert_eq!(std::fs::read(out.join(name)).unwrap(), std::fs::read(roots[0].join(name)).unwrap());
    let mut beside: Vec<_> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
    beside.sort();
    assert_eq!(beside, ["sub", name]);
}

/// Issue 23: a peer that downloaded only a subfolder serves that part of the folder to
/// others, under the folder's digest, once the seeders of the whole folder are gone, and
/// again after a restart.
/// seed, part and late, members of g: seed shares `awkward_tree` as album, and part holds
/// `album/sub/` alone (fetched whole when this returns).
fn album_and_a_part_holder(cluster: &Cluster) -> Vec<ClientProc> {
    let mut c = cluster.members(&["seed", "part", "late"], &[]);
    let root = cluster.path("album");
    awkward_tree(&root);
    c[0].run(&format!("upload_file {} g", root.display()));
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    c[1].run1(&format!("download_file g album/sub/ {}", out.display()));
    assert!(c[1].wait_downloads_json()[0].is_complete("album"));
    c
}

/// Asserts that `done`, late's download of `album/sub/deep/` into `late`, came whole from
/// part alone.
#[track_caller]
fn assert_fetched_from_the_part_holder(done: &[Download], late: &Path) {
    assert!(done[0].is_complete("album"), "{done:?}");
    assert_eq!(done[0].peer_users.values().collect::<Vec<_>>(), ["part"], "{done:?}");
    assert_eq!(std::fs::read(late.join("deep/x.bin")).unwrap(), b"xyz");
}

#[test]
fn a_peer_holding_part_of_a_folder_serves_what_it_has() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = album_and_a_part_holder(&cluster);
    c[0].kill();
    // Restarted, it shares that part again (saved with the part chosen, announced again).
    // A clean exit: the completion is saved by the state writer a moment after the
    // download ends, so a kill at once could find it still saved as a download.
    assert!(c[1].close_stdin().success());
    let mut part = cluster.client("part");
    part.resumed("part");
    let shares = part.run1("list_shares");
    assert!(shares.starts_with("[g] album/sub/: 2/2 pieces, 24 bytes, from "), "{shares}");
    let late = cluster.path("late-out");
    std::fs::create_dir(&late).unwrap();
    c[2].run1(&format!("download_file g album/sub/deep/ {}", late.display()));
    assert_fetched_from_the_part_holder(&c[2].wait_downloads_json(), &late);
}

/// Issue 23: a selective download is saved with the part it chose before
/// `download_file` answers, so a downloader killed at once resumes that part after a
/// restart, and only that part appears.
#[test]
fn a_killed_selective_download_resumes_after_a_restart() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &["--max-upload-rate", "1000000"]);
    let root = cluster.path("album");
    awkward_tree(&root);
    std::fs::write(root.join("sub/big.bin"), bytes(2 * 1024 * 1024, 4)).unwrap();
    c[0].run(&format!("upload_file {} g", root.display()));
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    c[1].run1(&format!("download_file g album/sub/ {}", out.display()));
    c[1].kill();
    assert!(!out.join("sub").exists());

    let mut leech = cluster.client("leech");
    leech.resumed("leech");
    let done = leech.wait_downloads_json();
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(done[0].is_complete("album"), "{done:?}");
    assert_eq!(done[0].pieces_have, 6, "{done:?}");
    assert_landed_alone(&out, "sub", &root.join("sub"));
    assert!(leech.run1("show_downloads").starts_with("[C] [g] album/sub/ -> "));
}

/// Issue 23, hostile peer: mallory shares the same folder from a peer that answers every
/// piece with bytes of the right length but the wrong content; each such piece is refused
/// and fetched from the honest seeder, and the part chosen is intact.
#[test]
fn a_peer_serving_wrong_bytes_for_a_folders_pieces_is_refused() {
    use common::folder::FolderLayout;
    use common::message::{Reply, Request};
    use common::peer_message::{PeerReply, PeerRequest};
    use common::{Bitfield, GroupId};
    let (cluster, tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["good", "leech", "mallory"], &["--max-upload-rate", "4000000"]);
    let root = cluster.path("album");
    awkward_tree(&root);
    std::fs::write(root.join("sub/big.bin"), bytes(2 * 1024 * 1024, 5)).unwrap();
    c[0].run(&format!("upload_file {} g", root.display()));
    let mut mallory = crate::support::RawSession::connect(&cluster, &tracker);
    let identity = mallory.identity.clone();
    let lying = crate::downloads::spawn_fake_peer(identity, Bitfield::full(9), |conn| {
        while let Ok(Some(request)) = conn.recv() {
            let PeerRequest::GetPiece { piece } = request else { continue };
            // Pieces 0 to 8: a b.bin, sub/big.bin (4), sub/deep/x.bin, sub/run.sh,
            // ünï cödé.txt (2); the right length, every byte wrong.
            let len: u32 = match piece.0 {
                5 => 3,
                6 => 21,
                8 => 1,
                _ => 512 * 1024,
            };
            let garbage = vec![0xAB; len as usize];
            if conn.send_with_payload(&PeerReply::Piece { piece, len }, &garbage).is_err() {
                return;
            }
        }
    });
    mallory.login("mallory", lying);
    let group = GroupId::new("g").unwrap();
    let Ok(Reply::FileInfo { meta, .. }) =
        mallory.call(Request::GetFile { group: group.clone(), name: "album".parse().unwrap() })
    else {
        panic!("no album")
    };
    assert_eq!(FolderLayout::new(meta.tree.as_ref().unwrap()).unwrap().n_pieces(), 9);
    let shared = mallory.call(Request::UploadFile { group, file: meta });
    assert_eq!(shared, Ok(Reply::Uploaded { new_file: false }));

    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    c[1].run1(&format!("download_file g album/sub/ {}", out.display()));
    let done = c[1].wait_downloads_json();
    assert!(done[0].is_complete("album"), "{done:?}");
    let lying = lying.to_string();
    assert!(!done[0].from_peers.contains_key(&lying), "mallory delivered: {done:?}");
    assert_eq!(done[0].from_peers.values().sum::<u32>(), 6, "{done:?}");
    assert_eq!(listing(&out.join("sub")), listing(&root.join("sub")));
    let log = c[1].log_text();
    assert!(log.contains(&format!("peer={lying} piece=")), "no mismatch logged: {log}");
}

/// Issue 23: a selective download is paused, resumed and cancelled as a file's is, named
/// as `download_file` took it or by the folder's name; a cancel leaves nothing.
#[test]
fn a_selective_download_is_paused_resumed_and_cancelled() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &["--max-upload-rate", "1000000"]);
    let root = cluster.path("album");
    awkward_tree(&root);
    std::fs::write(root.join("sub/big.bin"), bytes(8 * 1024 * 1024, 6)).unwrap();
    c[0].run(&format!("upload_file {} g", root.display()));
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    c[1].run1(&format!("download_file g album/sub/ {}", out.display()));
    c[1].ok("pause g album/sub/", "paused album in group g");
    let line = c[1].run1("show_downloads");
    assert!(line.starts_with("[P] [g] album/sub/ "), "{line}");
    assert!(line.contains("/18 pieces) paused"), "{line}");
    c[1].ok("resume g album", "resumed album in group g");
    assert!(c[1].run1("show_downloads").starts_with("[D] [g] album/sub/ "));
    c[1].ok("cancel g album/sub/", "cancelled album in group g; its partial file is removed");
    assert!(c[1].run("show_downloads").is_empty());
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}

/// A message's payload given as raw bytes: postcard writes a tuple of `u8`s byte for byte,
/// so a fake tracker can send what no honest one encodes.
struct Raw(Vec<u8>);

impl serde::Serialize for Raw {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = s.serialize_tuple(self.0.len())?;
        for b in &self.0 {
            tuple.serialize_element(b)?;
        }
        tuple.end()
    }
}

/// The folder `album` a fake tracker describes before `patch`: a directory `zz` holding a
/// file `zzzz` of 3 bytes.
fn placeholder_album() -> common::message::FileMeta {
    use common::folder::{folder_digest, Entry, EntryKind, RelPath, Tree};
    let entry = |p: &str, kind| Entry { path: RelPath::parse(p).unwrap(), kind };
    let tree = Tree::new(vec![
        entry("zz", EntryKind::Dir),
        entry("zz/zzzz", EntryKind::File { size: 3, executable: false }),
    ])
    .unwrap();
    let pieces = vec![common::Sha1Digest([5; 20])];
    common::message::FileMeta {
        name: "album".parse().unwrap(),
        size: 3,
        digest: folder_digest(&tree, &pieces),
        pieces,
        tree: Some(tree),
    }
}

/// A tracker with a key of its own at a fresh address, answering a client as an honest
/// one would (`Welcome`, `Done`, `LoggedIn`, `Alive`), except `GetFile`, whose answer
/// (the placeholder album, no peer) it sends as the bytes `patch` makes of its encoding.
fn spawn_fake_tracker(patch: fn(Vec<u8>) -> Vec<u8>) -> (std::net::SocketAddr, common::PublicKey) {
    use common::connection::Connection;
    use common::message::{ClientMessage, Reply, Request, Ticket, TrackerMessage};
    let identity = common::Identity::generate().unwrap();
    let key = identity.public();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let identity = identity.clone();
            std::thread::spawn(move || {
                let timeouts = crate::support::raw_timeouts();
                let Ok(mut conn) = Connection::<ClientMessage, TrackerMessage>::accept(
                    stream, &identity, timeouts,
                ) else {
                    return;
                };
                let observed = conn.peer_addr();
                let Ok(Some(ClientMessage::Hello { version })) = conn.recv() else { return };
                let welcome = TrackerMessage::Welcome { version, tracker_id: 1, observed };
                if conn.send(&welcome).is_err() {
                    return;
                }
                let client = conn.remote_key();
                let mut conn = conn.retype::<ClientMessage, Raw>();
                while let Ok(Some(message)) = conn.recv() {
                    let ClientMessage::Request { id, request, .. } = message else { continue };
                    let reply = match request {
                        Request::Login { .. } => Reply::LoggedIn,
                        Request::Heartbeat { .. } => Reply::Alive { memberships: None },
                        Request::GetFile { group, .. } => {
                            let meta = placeholder_album();
                            let ticket = Ticket {
                                holder: client,
                                user: "al".parse().unwrap(),
                                group,
                                digest: meta.digest,
                                expires: u64::MAX / 2,
                                mac: [0; 20],
                            };
                            Reply::FileInfo { meta, peers: Vec::new(), ticket: Box::new(ticket) }
                        }
                        _ => Reply::Done,
                    };
                    let is_file = matches!(reply, Reply::FileInfo { .. });
                    let mut bytes = Vec::new();
                    let response = TrackerMessage::Response { id, result: Ok(reply) };
                    common::codec::encode(&response, &mut bytes).unwrap();
                    let bytes = if is_file { patch(bytes) } else { bytes };
                    if conn.send(&Raw(bytes)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, key)
}

/// `bytes` with the first `from` replaced by `to`.
fn replaced(bytes: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes.windows(from.len()).position(|w| w == from).expect("placeholder not found");
    [&bytes[..at], to, &bytes[at + from.len()..]].concat()
}

/// Issue 23, hostile metadata from a fake tracker: a folder whose tree holds `..`, an
/// absolute path, an empty component, a control character, deep nesting, or more entries
/// than a folder may have is refused as the client reads it, with an error that says
/// where it came from, and nothing is written, inside the destination or beside it.
#[test]
fn a_fake_trackers_hostile_folder_trees_are_refused_and_nothing_is_written() {
    use common::folder::{Entry, EntryKind, RelPath};
    fn dotdot(b: Vec<u8>) -> Vec<u8> {
        replaced(b, b"\x02zz\x00", b"\x02..\x00")
    }
    fn absolute(b: Vec<u8>) -> Vec<u8> {
        replaced(b, b"\x04zzzz", b"\x04/etc")
    }
    fn empty_component(b: Vec<u8>) -> Vec<u8> {
        replaced(b, b"\x02\x02zz\x04zzzz", b"\x02\x00\x04zzzz")
    }
    fn control(b: Vec<u8>) -> Vec<u8> {
        replaced(b, b"\x04zzzz", b"\x04z\x1bzz")
    }
    fn deep(b: Vec<u8>) -> Vec<u8> {
        // `zz/zzzz` becomes 40 levels of `zzzz`.
        let mut deep = vec![40u8];
        (0..40).for_each(|_| deep.extend(b"\x04zzzz"));
        replaced(b, b"\x02\x02zz\x04zzzz", &deep)
    }
    fn absurd(b: Vec<u8>) -> Vec<u8> {
        // The tree (2 entries) becomes 100,001 files, each a valid path.
        let tree = placeholder_album().tree.unwrap();
        let many: Vec<Entry> = (0..100_001)
            .map(|i| Entry {
                path: RelPath::parse(&format!("f{i:06}")).unwrap(),
                kind: EntryKind::File { size: 0, executable: false },
            })
            .collect();
        replaced(b, &postcard::to_allocvec(&tree).unwrap(), &postcard::to_allocvec(&many).unwrap())
    }
    let dir = tempfile::tempdir().unwrap();
    type Patch = fn(Vec<u8>) -> Vec<u8>;
    let patches: [(&str, Patch, &str); 6] = [
        ("dotdot", dotdot, "file name must not be '.', '..' or contain '/' or '\\'"),
        ("absolute", absolute, "file name must not be '.', '..' or contain '/' or '\\'"),
        ("empty", empty_component, "file name is empty"),
        ("control", control, "file name contains whitespace or a control character (U+001B)"),
        ("deep", deep, "is nested deeper than 32 levels"),
        ("absurd", absurd, "the folder has 100001 entries, more than the 100000 allowed"),
    ];
    for (what, patch, why) in patches {
        let (addr, key) = spawn_fake_tracker(patch);
        let info = dir.path().join(format!("{what}-trackers.txt"));
        std::fs::write(&info, format!("{addr} {key}\n")).unwrap();
        let mut c = crate::support::ClientProc::start(&info, &dir.path().join(what), &[]);
        c.sign_up("al");
        let place = dir.path().join(format!("{what}-place"));
        std::fs::create_dir_all(place.join("out")).unwrap();
        let line = c.run1(&format!("download_file g album/ {}", place.join("out").display()));
        let expected = format!(
            "error: the tracker at {addr} sent an answer this client cannot read (malformed message: "
        );
        assert!(line.starts_with(&expected), "{what}: {line}");
        assert!(line.contains(why), "{what}: {line}");
        assert!(line.ends_with("nothing was done with it"), "{what}: {line}");
        assert!(c.run("show_downloads").is_empty(), "{what}");
        assert_eq!(names_in(&place), ["out"], "{what}");
        assert_eq!(std::fs::read_dir(place.join("out")).unwrap().count(), 0, "{what}");
    }
    // The unpatched answer is read: the same fake tracker's honest bytes start a download
    // (which no peer can serve).
    let (addr, key) = spawn_fake_tracker(|b| b);
    let info = dir.path().join("honest-trackers.txt");
    std::fs::write(&info, format!("{addr} {key}\n")).unwrap();
    let mut c = crate::support::ClientProc::start(&info, &dir.path().join("honest"), &[]);
    c.sign_up("al");
    let out = dir.path().join("honest-out");
    std::fs::create_dir(&out).unwrap();
    c.ok(
        &format!("download_file g album/ {}", out.display()),
        &format!("downloading album/ from group g to {}", out.join("album").display()),
    );
}

/// A kill between the rename of a folder into place and the save of its download's end
/// (the state made exactly: the state file saved while it was under way, put back after it
/// completed): the restart finds the folder complete, every piece matching, and shares it
/// rather than failing.
#[test]
fn a_folder_killed_after_its_rename_into_place_is_complete_after_the_restart() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["alice", "bob"], &["--max-upload-rate", "500000"]);
    let root = cluster.path("album");
    awkward_tree(&root);
    c[0].run(&format!("upload_file {} g", root.display()));
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    c[1].run1(&format!("download_file g album/ {}", out.display()));
    c[1].kill();
    let shares = cluster.path("bob/shares.bin");
    let under_way = std::fs::read(&shares).unwrap();
    let mut bob = cluster.client("bob");
    bob.resumed("bob");
    assert!(bob.wait_downloads_json()[0].is_complete("album"));
    bob.kill();
    std::fs::write(&shares, &under_way).unwrap();

    let mut bob = cluster.client("bob");
    bob.resumed("bob");
    let done = bob.wait_downloads_json();
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(done[0].is_complete("album"), "{done:?}");
    assert_eq!((done[0].pieces_resumed, done[0].from_peers.len()), (5, 0), "{done:?}");
    assert_landed_alone(&out, "album", &root);
    bob.wait_log("download of album complete: found at");
    // Shared again: alice sees bob as a second sharer.
    c[0].run1_until("list_files g", ", 2 sharers, ");
}

/// A folder's download stages its files in `.<name>.part/`, made when it starts. After a
/// kill, a directory that is not the one it made (someone else's, made at that name since)
/// is neither written into nor removed: the restart stages afresh under the next name,
/// says so, and completes.
#[test]
fn a_staging_directory_that_is_not_the_downloads_own_is_left_alone() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["alice", "bob"], &["--max-upload-rate", "500000"]);
    let root = cluster.path("album");
    awkward_tree(&root);
    c[0].run(&format!("upload_file {} g", root.display()));
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    c[1].run1(&format!("download_file g album/ {}", out.display()));
    c[1].kill();
    let left = out.join(".album.part");
    assert!(left.is_dir());
    std::fs::remove_dir_all(&left).unwrap();
    std::fs::create_dir_all(left.join("sub")).unwrap();
    std::fs::write(left.join("a b.bin"), b"half written").unwrap();

    let mut bob = cluster.client("bob");
    bob.resumed("bob");
    let done = bob.wait_downloads_json();
    assert!(done[0].is_complete("album"), "{done:?}");
    let why = done[0].started_over.as_deref().unwrap_or_default();
    assert!(why.contains("is not the partial file this client created"), "{done:?}");
    assert_eq!(listing(&out.join("album")), listing(&root));
    assert_eq!(std::fs::read(left.join("a b.bin")).unwrap(), b"half written");
    let mut beside: Vec<_> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
    beside.sort();
    assert_eq!(beside, [".album.part", "album"]);
}

/// Issue 23: a peer holding part of a folder is found again after the leader changes. The
/// leader keeps which pieces a part's holder has as soft state, which a new leader starts
/// without; the holder registers them again with its addresses (every
/// `SOFT_STATE_REFRESH`, 30 s), so a downloader of that part, whose only other source is
/// gone, still gets it from the holder, before its stall timeout (60 s).
#[test]
fn a_part_holder_is_found_again_after_the_leader_changes() {
    let cluster = Cluster::new(3);
    let mut trackers: Vec<Option<TrackerProc>> =
        cluster.start_all().into_iter().map(Some).collect();
    let leader = wait_leader(&mut trackers.iter_mut().flatten().collect::<Vec<_>>());
    let mut c = album_and_a_part_holder(&cluster);
    // The whole folder's only seeder and the leader go; a new leader is elected.
    c[0].kill();
    trackers[leader].take().unwrap().kill();
    wait_leader(&mut trackers.iter_mut().flatten().collect::<Vec<_>>());
    let late = cluster.path("late-out");
    std::fs::create_dir(&late).unwrap();
    c[2].run1(&format!("download_file g album/sub/deep/ {}", late.display()));
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let now = c[2].downloads();
        if now[0].state != "downloading" {
            break now;
        }
        assert!(Instant::now() < deadline, "still downloading: {now:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_fetched_from_the_part_holder(&done, &late);
}

/// Issue 23: a folder's verified pieces are written straight into their files in its
/// staging directory `.<name>.part/` (0700, every directory of the tree made when the
/// download starts, each file when its first piece is written, the empty ones at the end)
/// as they arrive: mid-download the files there hold the verified bytes of the pieces had,
/// no `.part` file of the pieces end to end is ever made, and at the end that directory is
/// what is renamed into place.
#[test]
fn a_folders_pieces_go_straight_into_its_staging_tree() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &["--max-upload-rate", "1000000"]);
    let root = cluster.path("album");
    awkward_tree(&root);
    std::fs::write(root.join("sub/big.bin"), bytes(8 * 1024 * 1024, 6)).unwrap();
    c[0].run(&format!("upload_file {} g", root.display()));
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    c[1].run1(&format!("download_file g album/ {}", out.display()));
    let deadline = std::time::Instant::now() + crate::support::TIMEOUT;
    let had = loop {
        let d = c[1].downloads().into_iter().next().unwrap();
        if d.pieces_have >= 2 {
            break d.pieces_have;
        }
        assert!(std::time::Instant::now() < deadline, "no progress: {d:?}");
    };
    c[1].ok("pause g album/", "paused album in group g");
    let staging = out.join(".album.part");
    let mode = std::fs::metadata(&staging).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(names_in(&out), [".album.part"]);
    // Every directory of the tree is there, the empty file not yet; each file staged no
    // longer than its source, and at least the pieces had hold the source's bytes.
    let piece = 512 * 1024;
    let mut verified = 0;
    for (path, kind, _, source) in listing(&root) {
        let staged = staging.join(&path);
        if kind != "file" {
            assert!(staged.is_dir(), "{path} is not staged");
            continue;
        }
        if source.is_empty() {
            assert!(staged.symlink_metadata().is_err(), "{path} is staged before the end");
        }
        let Ok(got) = std::fs::read(&staged) else { continue };
        assert!(got.len() <= source.len(), "{path}");
        for (i, chunk) in source.chunks(piece).enumerate() {
            let at = i * piece;
            verified += usize::from(got.get(at..at + chunk.len()) == Some(chunk));
        }
    }
    assert!(verified >= had as usize, "{verified} pieces staged, {had} had");
    c[1].ok("resume g album/", "resumed album in group g");
    let done = c[1].wait_downloads_json();
    assert!(done[0].is_complete("album"), "{done:?}");
    assert_landed_alone(&out, "album", &root);
}

/// Issue 23: a folder's download killed half done, some of its files made in the staging
/// directory and the others not yet (nor its empty file), resumes after a restart into the
/// same staging directory and completes: every file, the empty file and the empty
/// directory included, and nothing left beside it.
#[test]
fn a_half_done_folder_download_resumes_after_a_kill() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &["--max-upload-rate", "1000000"]);
    let root = cluster.path("album");
    awkward_tree(&root);
    for i in 0..8 {
        std::fs::write(root.join(format!("sub/p{i}.bin")), bytes(512 * 1024, i)).unwrap();
    }
    c[0].run(&format!("upload_file {} g", root.display()));
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    c[1].run1(&format!("download_file g album/ {}", out.display()));
    let deadline = std::time::Instant::now() + crate::support::TIMEOUT;
    loop {
        let d = c[1].downloads().into_iter().next().unwrap();
        if d.pieces_have >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no progress: {d:?}");
    }
    c[1].kill();
    let staging = out.join(".album.part");
    let staged = walk(&staging).into_iter().filter(|p| p.is_file()).count();
    assert!((1..12).contains(&staged), "{staged} of the 12 files with bytes staged");
    assert!(!staging.join("empty.txt").exists() && !out.join("album").exists());

    leech_restarted_completes(&cluster, &out, &root);
}

/// Issue 23: a folder's download saved by a client of state file format 5 kept its pieces
/// end to end in `<dest>.part`. This client resumes it by moving the pieces it had into a
/// staging tree (re-hashed there, none fetched again), removes that `.part`, fetches the
/// rest and completes. The state is made exactly as such a client left it: the format-5
/// bytes (format 6's without the last field) and its `.part` of the pieces had.
#[test]
fn a_folder_download_saved_with_a_part_file_by_format_5_resumes() {
    use client::registry::state_file;
    use common::folder::FolderLayout;
    use common::{Bitfield, PieceIndex, PIECE_SIZE};
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &["--max-upload-rate", "500000"]);
    let root = cluster.path("album");
    awkward_tree(&root);
    c[0].run(&format!("upload_file {} g", root.display()));
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    c[1].run1(&format!("download_file g album/ {}", out.display()));
    c[1].kill();

    let shares = cluster.path("leech/shares.bin");
    let mut users = state_file::decode(&std::fs::read(&shares).unwrap()).unwrap();
    let share = &mut users.values_mut().next().unwrap()[0];
    assert_eq!(share.stored, client::swarm::Stored::Tree);
    std::fs::remove_dir_all(&share.path).unwrap();
    let tree = share.meta.tree.clone().unwrap();
    let layout = FolderLayout::new(&tree).unwrap();
    let n = layout.n_pieces();
    let mut part = Vec::new();
    for span in layout.files() {
        let path = tree.entries()[span.entry].path.to_string();
        for chunk in std::fs::read(root.join(path)).unwrap().chunks(PIECE_SIZE) {
            part.resize((part.len()).div_ceil(PIECE_SIZE) * PIECE_SIZE, 0);
            part.extend_from_slice(chunk);
        }
    }
    let part_path = out.join("album.part");
    std::fs::write(&part_path, &part).unwrap();
    std::fs::set_permissions(&part_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut have = Bitfield::empty(n);
    (0..n - 1).for_each(|i| have.set(PieceIndex(i)));
    share.path = part_path.clone();
    share.stored = client::swarm::Stored::Part;
    share.part_id = None;
    share.have = have;
    let format_6 = state_file::encode(users.iter().map(|(u, s)| (u, s.as_slice()))).unwrap();
    // Format 5: the format number, then each share without its last field (`stored`, one
    // byte here, the file's last).
    assert_eq!((format_6[0], format_6.last()), (6, Some(&0)));
    let format_5 = [&[5], &format_6[1..format_6.len() - 1]].concat();
    std::fs::write(&shares, format_5).unwrap();

    let mut leech = cluster.client("leech");
    leech.resumed("leech");
    let done = leech.wait_downloads_json();
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(done[0].is_complete("album"), "{done:?}");
    assert_eq!(done[0].pieces_resumed, n - 1, "{done:?}");
    assert_landed_alone(&out, "album", &root);
}

/// Issue 23: a seeder checks a shared folder's files once per state on disk (stamped as
/// they were hashed), not on every read, and still never serves a small file changed in
/// place after it was shared (same size): `bad`, the only source at first, stops sharing
/// the folder at its first such piece, and the leech gets every file from `good`.
#[test]
fn a_folders_small_files_changed_after_sharing_are_not_served() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["good", "bad", "leech"], &[]);
    let make = |root: &Path| {
        for i in 0..60usize {
            let dir = root.join(format!("d{}", i % 6));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("f{i}")), bytes(1000 + 37 * i, i as u8)).unwrap();
        }
    };
    let (good, bad) = (cluster.path("good/small"), cluster.path("bad/small"));
    make(&good);
    make(&bad);
    let out = c[1].run1(&format!("upload_file {} g", bad.display()));
    assert!(out.starts_with("uploaded small/ to group g ("), "{out}");
    // Every file of bad's copy changes, keeping its size (its times set apart, as a change
    // within a tick of the clock may keep them).
    for i in 0..60usize {
        let path = bad.join(format!("d{}/f{i}", i % 6));
        std::fs::write(&path, bytes(1000 + 37 * i, !(i as u8))).unwrap();
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_000);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(at).unwrap();
    }
    let out_dir = cluster.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    c[2].run1(&format!("download_file g small/ {}", out_dir.display()));
    c[1].wait_log("changed or vanished on disk");
    c[0].run1(&format!("upload_file {} g", good.display()));
    let done = c[2].wait_downloads_json();
    assert!(done[0].is_complete("small"), "{done:?}");
    assert_eq!(done[0].from_peers.values().sum::<u32>(), 60, "{done:?}");
    assert_eq!(done[0].from_peers.len(), 1, "pieces came from bad: {done:?}");
    assert_eq!(listing(&out_dir.join("small")), listing(&good));
}

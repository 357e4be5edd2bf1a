//! File metadata: upload_file, list_files, stop_share, and the sharing rules.

use crate::support::{ClientProc, Cluster};

/// alice and bob, members of group g (owned by alice).
fn member_pair(cluster: &Cluster) -> (ClientProc, ClientProc) {
    let mut clients = cluster.members(&["alice", "bob"], &[]);
    let bob = clients.pop().unwrap();
    (clients.pop().unwrap(), bob)
}

#[test]
fn upload_list_and_stop_share() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let (mut alice, mut bob) = member_pair(&cluster);
    let dir = cluster.dir.path();
    let data: Vec<u8> = (0..(512 * 1024 + 100)).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.join("a.bin"), &data).unwrap();
    std::fs::create_dir(dir.join("copy")).unwrap();
    std::fs::write(dir.join("copy/a.bin"), &data).unwrap();
    std::fs::write(dir.join("other.bin"), b"different").unwrap();
    std::fs::create_dir(dir.join("other")).unwrap();
    std::fs::write(dir.join("other/a.bin"), b"different").unwrap();
    std::fs::write(dir.join("my file.txt"), b"").unwrap();

    let a = dir.join("a.bin").display().to_string();
    alice.ok(&format!("upload_file {a} g"), "uploaded a.bin to group g (524388 bytes, 2 pieces)");
    let listed = bob.run1("list_files g");
    assert!(listed.starts_with("a.bin 524388 bytes, 1 sharer, digest "), "{listed}");

    // The same content again from bob adds a sharer; different content under the name is
    // refused.
    let copy = dir.join("copy/a.bin").display().to_string();
    bob.ok(
        &format!("upload_file {copy} g"),
        "sharing a.bin in group g (same content already there)",
    );
    assert!(bob.run1("list_files g").contains(", 2 sharers, "));
    let other = dir.join("other/a.bin").display().to_string();
    bob.err(
        &format!("upload_file {other} g"),
        "group g already has a different file named a.bin; rename your file to share it there",
    );

    // Quoted paths with spaces work; an empty file is a file too.
    let spaced = dir.join("my file.txt").display().to_string();
    alice.ok(
        &format!("upload_file '{spaced}' g"),
        "uploaded my file.txt to group g (0 bytes, 0 pieces)",
    );
    assert_eq!(bob.run("list_files g").len(), 2);

    alice.ok("stop_share g a.bin", "stopped sharing a.bin in group g");
    alice.err(
        "stop_share g a.bin",
        "you are not sharing a.bin in group g; list_shares lists what this peer shares",
    );
    alice.err(
        "stop_share g nope.bin",
        "no file nope.bin in group g; list_files g lists the files shared there",
    );
    bob.ok("stop_share g a.bin", "stopped sharing a.bin in group g");
    // Nobody shares a.bin any more, so it is no longer listed.
    let files = bob.run("list_files g");
    assert_eq!(files.len(), 1);
    assert!(files[0].starts_with("'my file.txt' 0 bytes"), "{files:?}");
}

#[test]
fn upload_errors() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let (mut alice, _bob) = member_pair(&cluster);
    let mut carol = cluster.client("carol");
    carol.sign_up("carol");
    let dir = cluster.dir.path();
    let missing = dir.join("missing.bin").display().to_string();
    alice.err(
        &format!("upload_file {missing} g"),
        &format!("cannot read {missing}: no such file or directory"),
    );
    // A directory is a folder (issue 23, `folders.rs`); a device is neither.
    alice.err("upload_file /dev/null g", "/dev/null is not a regular file");
    std::fs::write(dir.join("f.txt"), b"x").unwrap();
    let f = dir.join("f.txt").display().to_string();
    alice.err(&format!("upload_file {f} nope"), "unknown group nope; list_groups lists the groups");
    carol.err(
        &format!("upload_file {f} g"),
        "not a member of group g; join_group g asks its owner to let you in",
    );
    carol.err("list_files g", "not a member of group g; join_group g asks its owner to let you in");
}

#[test]
fn logout_pauses_shares_until_login_and_leaving_a_group_ends_them() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let (mut alice, mut bob) = member_pair(&cluster);
    let f = cluster.dir.path().join("f.txt");
    std::fs::write(&f, b"hello").unwrap();
    let f = f.display().to_string();
    alice.ok(&format!("upload_file {f} g"), "uploaded f.txt to group g (5 bytes, 1 piece)");
    assert_eq!(bob.run("list_files g").len(), 1);
    alice.ok("logout", "logged out");
    assert!(bob.run("list_files g").is_empty());

    bob.ok(&format!("upload_file {f} g"), "uploaded f.txt to group g (5 bytes, 1 piece)");
    bob.ok("leave_group g", "left group g");
    alice.ok("login alice pw-alice", "logged in as alice");
    // bob's share ended with his membership; alice's login resumed hers.
    let files = alice.run("list_files g");
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("f.txt 5 bytes, 1 sharer,"), "{files:?}");
}

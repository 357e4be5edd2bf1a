//! Accounts, sessions and the REPL's handling of bad input.

use crate::support::Cluster;

#[test]
fn create_login_logout() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.client("c");
    c.ok("create_user alice s3cret", "created user alice");
    c.err(
        "create_user alice other",
        "user alice already exists; login alice <passwd> if it is yours",
    );
    c.err("login alice nope", "wrong password");
    c.err("login bob s3cret", "unknown user bob; create_user bob <passwd> makes the account");
    c.ok("login alice s3cret", "logged in as alice");
    c.err("login alice s3cret", "already logged in as alice; logout first");
    c.ok("logout", "logged out");
    c.err("logout", "not logged in; login <user_id> <passwd> first (create_user makes an account)");
    c.ok("login alice s3cret", "logged in as alice");
}

#[test]
fn commands_before_login_fail() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.client("c");
    for cmd in [
        "create_group g",
        "join_group g",
        "leave_group g",
        "list_requests g",
        "accept_request g u",
        "reject_request g u",
        "list_groups",
        "list_my_groups",
        "list_files g",
        "upload_file /etc/hostname g",
        "stop_share g f",
        "logout",
    ] {
        c.err(cmd, "not logged in; login <user_id> <passwd> first (create_user makes an account)");
    }
}

#[test]
fn unknown_commands_and_wrong_arity_name_the_word() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.client("c");
    c.err("frobnicate now", "unknown command 'frobnicate' (type help for the list)");
    c.err("login alice", "wrong number of arguments for login; usage: login <user_id> <passwd>");
    c.err(
        "accept_request g",
        "wrong number of arguments for accept_request; usage: accept_request <group_id> <user_id>",
    );
    c.err("list_groups now", "wrong number of arguments for list_groups; usage: list_groups");
    c.err(
        "create_user 'al ice' pw",
        "invalid argument 'al ice': user id contains whitespace or a control character (U+0020)",
    );
    let long = "u".repeat(65);
    c.err(
        &format!("create_user {long} pw"),
        &format!("invalid argument '{long}': user id is longer than 64 bytes"),
    );
    c.err(
        "create_group g\u{1}",
        "invalid argument 'g\\u{1}': group id contains whitespace or a control character (U+0001)",
    );
    c.err("join_group 'g", "unbalanced quotes");
    // Blank lines and comments print nothing; the client is still serving afterwards.
    assert_eq!(c.run("   "), Vec::<String>::new());
    assert_eq!(c.run("# a comment"), Vec::<String>::new());
    c.ok("create_user alice pw", "created user alice");
}

/// Issue 21: a name cannot pass for another. An invisible or bidirectional character is
/// refused with one `error: ` line naming its code point, and the two spellings of an
/// accented name (precomposed, or a letter and a combining accent) are one name.
#[test]
fn invisible_characters_are_refused_and_two_spellings_are_one_name() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.client("c");
    let invisible = "an invisible or bidirectional formatting character";
    c.err(
        "create_user bob\u{200b} pw",
        &format!("invalid argument 'bob\\u{{200b}}': user id contains U+200B, {invisible}"),
    );
    c.sign_up("alice");
    c.err(
        "create_group \"g\u{200b}1\"",
        &format!("invalid argument 'g\\u{{200b}}1': group id contains U+200B, {invisible}"),
    );
    c.err(
        "list_files g\u{2066}1",
        &format!("invalid argument 'g\\u{{2066}}1': group id contains U+2066, {invisible}"),
    );
    c.ok("create_group caf\u{e9}", "created group caf\u{e9}");
    c.err(
        "create_group cafe\u{301}",
        "group caf\u{e9} already exists; join_group caf\u{e9} asks to join it",
    );
    assert_eq!(c.run("list_groups"), ["caf\u{e9}"]);
    assert_eq!(c.run("list_my_groups"), ["caf\u{e9}"]);
}

#[test]
fn pipe_mode_prints_no_prompt_and_end_of_input_keeps_the_session() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.client("c");
    c.sign_up("alice");
    c.ok("create_group g", "created group g");
    c.send_line("list_my_groups");
    let status = c.close_stdin();
    assert!(status.success(), "{status:?}");
    assert_eq!(c.remaining_output(), vec!["g".to_string()]);

    // The end of input is an `exit`: the session stays for the next start on this state
    // directory, and another client may log in as alice too.
    let mut again = cluster.client("c");
    again.resumed("alice");
    assert_eq!(again.run("list_my_groups"), ["g"]);
    let mut c2 = cluster.client("c2");
    c2.ok("login alice pw-alice", "logged in as alice");
}

/// Issue 20: a restarted client is logged in again without its password, and shares
/// again; `logout` ends the session for good; a session the trackers ended, or one
/// announced from an address the peer no longer has, is said to need a login.
#[test]
fn a_restarted_client_resumes_its_session_until_logout() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["alice", "bob"], &[]);
    let original = cluster.path("f.bin");
    crate::support::write_random(&original, 700_000, 51);
    c[0].run1(&format!("upload_file {} g", original.display()));
    c[0].kill();

    // Killed: back, logged in, and seeding again (bob downloads from it).
    let mut alice = cluster.client("alice");
    alice.resumed("alice");
    let out = cluster.path("out.bin");
    c[1].run1(&format!("download_file g f.bin {}", out.display()));
    let done = c[1].wait_downloads_json();
    assert!(done[0].is_complete("f.bin"), "{done:?}");
    crate::support::assert_same_file(&original, &out);

    // Logged out: the next start is not logged in.
    alice.ok("logout", "logged out");
    assert!(alice.close_stdin().success());
    let mut alice = cluster.client("alice");
    alice.err(
        "list_my_groups",
        "not logged in; login <user_id> <passwd> first (create_user makes an account)",
    );
    alice.ok("login alice pw-alice", "logged in as alice");
    assert!(alice.close_stdin().success());

    // Ended elsewhere (logout --all): said, and forgotten.
    c[1].send_line("exit");
    assert!(c[1].close_stdin().success());
    let mut elsewhere = cluster.client("elsewhere");
    elsewhere.ok("login alice pw-alice", "logged in as alice");
    elsewhere.ok("logout --all", "logged out everywhere");
    let mut alice = cluster.client("alice");
    // Said at start, before the first command's own answer.
    let out = alice.run("list_my_groups");
    assert_eq!(
        out[0],
        "error: the session of alice ended at the trackers (logged out elsewhere, or silent too long); login alice <passwd> to log in again"
    );
    assert!(out[1].starts_with("error: not logged in"), "{out:?}");
    assert!(!cluster.path("alice").join("session").exists());
    alice.ok("login alice pw-alice", "logged in as alice");
    let port = alice.listen.port();
    alice.kill();

    // The port of last time taken: the session moves to the new port (issue 20).
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let mut alice = cluster.client("alice");
    assert_ne!(alice.listen.port(), port);
    let out = alice.run("list_my_groups");
    assert_eq!(out, ["logged in as alice (resumed)", "g"], "{out:?}");
    alice.ok("logout", "logged out");
    drop(squatter);
    alice.ok("login alice pw-alice", "logged in as alice");
    // bob's session, kept by `exit`, is back too.
    let mut bob = cluster.client("bob");
    bob.resumed("bob");
}

#[test]
fn exit_ends_the_client() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.client("c");
    c.sign_up("alice");
    c.send_line("exit");
    let status = c.close_stdin();
    assert!(status.success());
    assert!(c.remaining_output().is_empty());
}

#[test]
fn help_lists_every_command() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.client("c");
    let help = c.run("help");
    for cmd in [
        "create_user",
        "login",
        "list_requests",
        "upload_file",
        "download_file",
        "stop_share",
        "exit",
    ] {
        assert!(help.iter().any(|l| l.starts_with(cmd)), "{cmd} missing from {help:?}");
    }
}

#[test]
fn no_reachable_tracker_is_a_clear_error() {
    let cluster = Cluster::new(2);
    let mut c = cluster.client("c");
    let line = c.run1("create_user alice pw");
    assert!(line.starts_with("error: no tracker reachable ("), "{line}");
    assert!(
        line.contains(&cluster.addrs[0].to_string())
            && line.contains(&cluster.addrs[1].to_string())
    );
    // Never started, so no key is listed: the client says so rather than talk to them.
    assert!(line.contains("no key on line 2 of"), "{line}");
}

/// Issue 20: a key in `tracker_info.txt` that the tracker at that address does not prove is
/// named as such, with the line to fix, not as "no tracker reachable ... start the trackers".
#[test]
fn a_wrong_key_in_tracker_info_is_named_with_its_line() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let info = cluster.path("wrong-key.txt");
    let wrong = common::PublicKey([7; 32]);
    std::fs::write(&info, format!("# the trackers\n{} {wrong}\n", cluster.addrs[0])).unwrap();
    let mut c = crate::support::ClientProc::start(&info, &cluster.path("c"), &[]);
    let line = c.run1("create_user alice pw");
    assert_eq!(
        line,
        format!(
            "error: the tracker at {} refused the secure handshake for the key on line 2 of {}: most likely that key is not the tracker's (put on that line the key the tracker wrote into its own tracker_info.txt at its first start); a tracker too busy to take connections refuses them too",
            cluster.addrs[0],
            info.display()
        )
    );
}

#[test]
fn client_uses_the_next_tracker_when_the_first_is_down() {
    let cluster = Cluster::new(3);
    // Tracker 1 has run once (its key is listed) and is down; 2 and 3 are a majority.
    cluster.start_tracker(1).kill();
    let _others = [cluster.start_tracker(2), cluster.start_tracker(3)];
    let mut c = cluster.client("c");
    c.sign_up("alice");
    c.ok("create_group g", "created group g");
}

#[test]
fn a_lone_tracker_whose_peers_never_started_says_what_it_waits_for() {
    // Trackers 1 and 3 never ran here: their keys are not listed, so tracker 2 cannot
    // reach them, and alone it is no majority.
    let cluster = Cluster::new(3);
    let _second = cluster.start_tracker(2);
    let mut c = cluster.client("c");
    let line = c.run1("create_user alice pw");
    assert!(line.starts_with("error: "), "{line}");
    assert!(line.contains("no majority: tracker 2 reaches 1 of 3 trackers"), "{line}");
}

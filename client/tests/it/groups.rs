//! Groups: creation, join requests, ownership, leaving.

use crate::support::Cluster;

#[test]
fn join_accept_reject_and_lists() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut alice = cluster.client("alice");
    let mut bob = cluster.client("bob");
    let mut carol = cluster.client("carol");
    alice.sign_up("alice");
    bob.sign_up("bob");
    carol.sign_up("carol");

    alice.ok("create_group g1", "created group g1");
    alice.ok("create_group g2", "created group g2");
    bob.err("create_group g1", "group g1 already exists; join_group g1 asks to join it");
    assert_eq!(bob.run("list_groups"), ["g1", "g2"]);
    assert!(bob.run("list_my_groups").is_empty());

    bob.ok("join_group g1", "requested to join group g1");
    bob.err(
        "join_group g1",
        "a request to join group g1 is already pending; its owner has yet to accept it",
    );
    bob.err("join_group nope", "unknown group nope; list_groups lists the groups");
    carol.ok("join_group g1", "requested to join group g1");
    alice.err("join_group g1", "already a member of group g1");

    assert_eq!(alice.run("list_requests g1"), ["bob", "carol"]);
    bob.err("list_requests g1", "only the owner of group g1 can do that");
    bob.err("accept_request g1 bob", "only the owner of group g1 can do that");
    alice.err(
        "accept_request g1 dave",
        "dave has not asked to join group g1; list_requests g1 lists who asked",
    );
    alice.err("accept_request nope bob", "unknown group nope; list_groups lists the groups");

    alice.ok("accept_request g1 bob", "accepted bob into group g1");
    alice.ok("reject_request g1 carol", "rejected carol's request to join group g1");
    alice.err(
        "reject_request g1 carol",
        "carol has not asked to join group g1; list_requests g1 lists who asked",
    );
    assert!(alice.run("list_requests g1").is_empty());

    assert_eq!(bob.run("list_my_groups"), ["g1"]);
    assert!(carol.run("list_my_groups").is_empty());
    carol.err(
        "list_files g1",
        "not a member of group g1; join_group g1 asks its owner to let you in",
    );
    assert!(bob.run("list_files g1").is_empty());
}

#[test]
fn owner_leaving_hands_the_group_to_the_longest_standing_member() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut alice = cluster.client("alice");
    let mut bob = cluster.client("bob");
    let mut carol = cluster.client("carol");
    alice.sign_up("alice");
    bob.sign_up("bob");
    carol.sign_up("carol");
    alice.ok("create_group g", "created group g");
    for (c, name) in [(&mut bob, "bob"), (&mut carol, "carol")] {
        c.ok("join_group g", "requested to join group g");
        alice.ok(&format!("accept_request g {name}"), &format!("accepted {name} into group g"));
    }
    alice.ok("leave_group g", "left group g");
    alice
        .err("leave_group g", "not a member of group g; join_group g asks its owner to let you in");
    // bob joined before carol, so bob owns the group now.
    assert!(bob.run("list_requests g").is_empty());
    carol.err("list_requests g", "only the owner of group g can do that");
    bob.ok("leave_group g", "left group g");
    carol.ok("leave_group g", "left group g");
    assert!(carol.run("list_groups").is_empty());
}

/// Issue 21: an owner removes a member; the member's shares in the group end, and the
/// refusals say what went wrong.
#[test]
fn an_owner_removes_a_member_whose_shares_end() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["alice", "bob", "carol"], &[]);
    let file = cluster.path("b.bin");
    std::fs::write(&file, b"bob's file").unwrap();
    let line = c[1].run1(&format!("upload_file {} g", file.display()));
    assert!(line.starts_with("uploaded b.bin to group g"), "{line}");
    assert_eq!(c[2].run("list_files g").len(), 1);
    // bob's client has seen its membership (a heartbeat, every 5 s), so it can tell when
    // it ends.
    c[1].wait_log("heartbeat: memberships now [(\"g\", Member)]");

    c[1].err("remove_member g carol", "only the owner of group g can do that");
    c[0].err(
        "remove_member g alice",
        "you own group g and cannot remove yourself; leave_group g hands it to the \
         longest-standing member",
    );
    c[0].err("remove_member g dave", "dave is not a member of group g");
    c[0].err("remove_member nope bob", "unknown group nope; list_groups lists the groups");
    c[0].err(
        "remove_member g",
        "wrong number of arguments for remove_member; usage: remove_member <group_id> <user_id>",
    );
    c[0].ok("remove_member g bob", "removed bob from group g");
    c[0].err("remove_member g bob", "bob is not a member of group g");

    assert!(c[1].run("list_my_groups").is_empty());
    c[1].err("list_files g", "not a member of group g; join_group g asks its owner to let you in");
    // bob's share ended with his membership; carol is still in.
    assert!(c[2].run("list_files g").is_empty());
    assert_eq!(c[2].run("list_my_groups"), ["g"]);
    // bob's client hears it with its next heartbeat (every 5 s), and shares it no more.
    let deadline = std::time::Instant::now() + crate::support::TIMEOUT;
    while !c[1].run("list_shares").is_empty() {
        assert!(std::time::Instant::now() < deadline, "bob's client still shares in g");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // bob may ask again, and be let in again.
    c[1].ok("join_group g", "requested to join group g");
    c[0].ok("accept_request g bob", "accepted bob into group g");
    assert_eq!(c[1].run("list_my_groups"), ["g"]);
}

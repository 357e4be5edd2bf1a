use super::*;
use common::hash::{file_digest, Sha1Digest};
use common::Password;

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}
fn group(s: &str) -> GroupId {
    GroupId::new(s).unwrap()
}
fn token(n: u8) -> SessionId {
    SessionId([n; 32])
}
/// The key session `n` logged in with.
fn key(n: u8) -> PublicKey {
    PublicKey([n; 32])
}
fn meta(name: &str, content: u8) -> FileMeta {
    let pieces = vec![Sha1Digest([content; 20])];
    FileMeta {
        name: FileName::new(name).unwrap(),
        size: 10,
        digest: file_digest(10, &pieces),
        pieces,
        tree: None,
    }
}

/// A state with users alice (session 1), bob (session 2) and carol (session 3), and group g
/// owned by alice.
/// A folder `d`: `d/a` (one piece and a byte), `d/e/` (empty), `d/x` (empty, executable).
fn folder_meta() -> FileMeta {
    use common::folder::{Entry, EntryKind, RelPath, Tree};
    let entry = |path: &str, kind| Entry { path: RelPath::parse(path).unwrap(), kind };
    let tree = Tree::new(vec![
        entry("a", EntryKind::File { size: 512 * 1024 + 1, executable: false }),
        entry("e", EntryKind::Dir),
        entry("x", EntryKind::File { size: 0, executable: true }),
    ])
    .unwrap();
    let pieces = vec![Sha1Digest([1; 20]), Sha1Digest([2; 20])];
    FileMeta {
        name: FileName::new("d").unwrap(),
        size: tree.total_size(),
        digest: common::folder::folder_digest(&tree, &pieces),
        pieces,
        tree: Some(tree),
    }
}

fn fixture() -> TrackerState {
    let mut st = TrackerState::default();
    let cred = Credential::derive(&Password::new("pw").unwrap(), 1).unwrap();
    for (n, name) in [(1, "alice"), (2, "bob"), (3, "carol")] {
        st.apply(&Op::CreateUser { user: user(name), credential: cred.clone() }).unwrap();
        let peer_addr = format!("127.0.0.1:{}", 7000 + u16::from(n)).parse().unwrap();
        let op = Op::OpenSession { session: token(n), user: user(name), peer_addr, key: key(n) };
        st.apply(&op).unwrap();
    }
    st.apply(&Op::CreateGroup { group: group("g"), owner: user("alice") }).unwrap();
    st
}

fn join(st: &mut TrackerState, name: &str) {
    st.apply(&Op::RequestJoin { group: group("g"), user: user(name) }).unwrap();
    st.apply(&Op::AcceptRequest { owner: user("alice"), group: group("g"), user: user(name) })
        .unwrap();
}

#[track_caller]
fn check_read(
    st: &TrackerState,
    session: u8,
    request: Request,
    expected: Result<Reply, TrackerError>,
) {
    assert_eq!(st.read(Some(token(session)), &request, &|_| true), Some(expected));
}

#[track_caller]
fn check_memberships(st: &TrackerState, name: &str, expected: &[(&str, GroupRole)]) {
    let got = st.memberships(&user(name));
    let want: Vec<(GroupId, GroupRole)> = expected.iter().map(|(g, r)| (group(g), *r)).collect();
    assert_eq!(got.groups, want, "{name}");
    assert_eq!(got, Memberships::new(want, got.requests.clone()), "{name}: version");
    // The index `apply` keeps is the one `decode` rebuilds from the groups.
    assert_eq!(st.groups_of, index_groups(&st.groups));
    // The quota counts read the index: they must be what a scan of every group finds.
    let u = user(name);
    assert_eq!(st.groups_owned(&u), st.groups.values().filter(|g| g.owner == u).count());
    assert_eq!(
        st.requests_pending(&u),
        st.groups.values().filter(|g| g.requests.contains(&u)).count()
    );
    // So does `list_my_groups`, for the fixture's users (sessions 1 to 3).
    if let Some(n) = ["alice", "bob", "carol"].iter().position(|n| *n == name) {
        let scan: Vec<GroupId> = st
            .groups
            .iter()
            .filter(|(_, g)| g.members.contains(&u))
            .map(|(id, _)| id.clone())
            .collect();
        let request = Request::ListMyGroups { after: None };
        let got = st.read(Some(token(n as u8 + 1)), &request, &|_| true);
        assert_eq!(got, Some(Ok(Reply::Groups { groups: scan, more: false })), "{name}");
    }
}

/// Issue 10: heartbeats tell each user their groups and roles, from an index kept by
/// `apply`, so a client can say when a group passed to its user, a request was decided,
/// or a group is gone.
#[test]
fn memberships_follow_requests_ownership_and_removal() {
    use GroupRole::*;
    let mut st = fixture();
    check_memberships(&st, "alice", &[("g", Owner)]);
    check_memberships(&st, "bob", &[]);
    st.apply(&Op::RequestJoin { group: group("g"), user: user("bob") }).unwrap();
    st.apply(&Op::RequestJoin { group: group("g"), user: user("carol") }).unwrap();
    check_memberships(&st, "bob", &[("g", Requested)]);
    // The owner's heartbeats list the requests waiting for a decision, in their order.
    let requests = |name: &str| st.memberships(&user(name)).requests;
    assert_eq!(requests("alice"), [(group("g"), user("bob")), (group("g"), user("carol"))]);
    assert_eq!(requests("bob"), []);
    let before = st.memberships(&user("alice")).version;
    st.apply(&Op::AcceptRequest { owner: user("alice"), group: group("g"), user: user("bob") })
        .unwrap();
    check_memberships(&st, "bob", &[("g", Member)]);
    // A decided request is gone from the owner's list, and so the version moved.
    assert_eq!(st.memberships(&user("alice")).requests, [(group("g"), user("carol"))]);
    assert_ne!(st.memberships(&user("alice")).version, before);
    st.apply(&Op::CreateGroup { group: group("h"), owner: user("carol") }).unwrap();
    st.apply(&Op::RequestJoin { group: group("h"), user: user("bob") }).unwrap();
    st.apply(&Op::RejectRequest { owner: user("carol"), group: group("h"), user: user("bob") })
        .unwrap();
    check_memberships(&st, "bob", &[("g", Member)]);
    check_memberships(&st, "carol", &[("g", Requested), ("h", Owner)]);
    st.apply(&Op::LeaveGroup { group: group("g"), user: user("alice") }).unwrap();
    check_memberships(&st, "alice", &[]);
    check_memberships(&st, "bob", &[("g", Owner)]);
    // The last member leaves: the group is gone for its requesters too.
    st.apply(&Op::LeaveGroup { group: group("g"), user: user("bob") }).unwrap();
    check_memberships(&st, "bob", &[]);
    check_memberships(&st, "carol", &[("h", Owner)]);
    let decoded = TrackerState::decode(&st.encode()).unwrap();
    assert_eq!(decoded, st);
}

/// An owner's heartbeat lists at most `MAX_LISTED_REQUESTS` requests, whatever the
/// number pending: a flood of requests cannot grow the replies without bound.
#[test]
fn an_owners_listed_requests_are_bounded() {
    let mut st = fixture();
    let credential = Credential::derive(&Password::new("pw").unwrap(), 1).unwrap();
    for i in 0..MAX_LISTED_REQUESTS + 5 {
        let name = user(&format!("u{i}"));
        st.apply(&Op::CreateUser { user: name.clone(), credential: credential.clone() }).unwrap();
        st.apply(&Op::RequestJoin { group: group("g"), user: name }).unwrap();
    }
    let listed = st.memberships(&user("alice")).requests;
    assert_eq!(listed.len(), MAX_LISTED_REQUESTS);
    assert_eq!(listed[0], (group("g"), user("u0")));
}

#[test]
fn duplicate_user_and_group_are_refused() {
    let mut st = fixture();
    let cred = Credential::derive(&Password::new("x").unwrap(), 1).unwrap();
    assert_eq!(
        st.apply(&Op::CreateUser { user: user("alice"), credential: cred }),
        Err(TrackerError::UserExists(user("alice")))
    );
    assert_eq!(
        st.apply(&Op::CreateGroup { group: group("g"), owner: user("bob") }),
        Err(TrackerError::GroupExists(group("g")))
    );
}

#[test]
fn join_accept_reject_flow() {
    let mut st = fixture();
    st.apply(&Op::RequestJoin { group: group("g"), user: user("bob") }).unwrap();
    assert_eq!(
        st.apply(&Op::RequestJoin { group: group("g"), user: user("bob") }),
        Err(TrackerError::AlreadyRequested(group("g")))
    );
    st.apply(&Op::RequestJoin { group: group("g"), user: user("carol") }).unwrap();
    check_read(
        &st,
        1,
        Request::ListRequests { group: group("g"), after: None },
        Ok(Reply::Users { users: vec![user("bob"), user("carol")], more: false }),
    );
    check_read(
        &st,
        2,
        Request::ListRequests { group: group("g"), after: None },
        Err(TrackerError::NotOwner(group("g"))),
    );
    assert_eq!(
        st.apply(&Op::AcceptRequest { owner: user("bob"), group: group("g"), user: user("bob") }),
        Err(TrackerError::NotOwner(group("g")))
    );
    st.apply(&Op::AcceptRequest { owner: user("alice"), group: group("g"), user: user("bob") })
        .unwrap();
    st.apply(&Op::RejectRequest { owner: user("alice"), group: group("g"), user: user("carol") })
        .unwrap();
    assert_eq!(
        st.apply(&Op::AcceptRequest {
            owner: user("alice"),
            group: group("g"),
            user: user("carol")
        }),
        Err(TrackerError::NoSuchRequest { group: group("g"), user: user("carol") })
    );
    assert_eq!(
        st.apply(&Op::RequestJoin { group: group("g"), user: user("bob") }),
        Err(TrackerError::AlreadyMember(group("g")))
    );
    check_read(
        &st,
        2,
        Request::ListMyGroups { after: None },
        Ok(Reply::Groups { groups: vec![group("g")], more: false }),
    );
    check_read(
        &st,
        3,
        Request::ListMyGroups { after: None },
        Ok(Reply::Groups { groups: vec![], more: false }),
    );
    check_read(
        &st,
        3,
        Request::ListGroups { after: None },
        Ok(Reply::Groups { groups: vec![group("g")], more: false }),
    );
}

#[test]
fn only_members_list_files_and_upload() {
    let mut st = fixture();
    join(&mut st, "bob");
    assert_eq!(
        st.apply(&Op::ShareFile { session: token(1), group: group("g"), meta: meta("f", 1) }),
        Ok(Reply::Uploaded { new_file: true })
    );
    assert_eq!(
        st.apply(&Op::ShareFile { session: token(2), group: group("g"), meta: meta("f", 1) }),
        Ok(Reply::Uploaded { new_file: false })
    );
    assert_eq!(
        st.apply(&Op::ShareFile { session: token(2), group: group("g"), meta: meta("f", 2) }),
        Err(TrackerError::NameTaken { group: group("g"), name: FileName::new("f").unwrap() })
    );
    assert_eq!(
        st.apply(&Op::ShareFile { session: token(3), group: group("g"), meta: meta("h", 2) }),
        Err(TrackerError::NotMember(group("g")))
    );
    check_read(
        &st,
        3,
        Request::ListFiles { group: group("g"), after: None },
        Err(TrackerError::NotMember(group("g"))),
    );
    let Some(Ok(Reply::Files { files, .. })) =
        st.read(Some(token(2)), &Request::ListFiles { group: group("g"), after: None }, &|_| true)
    else {
        panic!("list_files failed")
    };
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].n_sharers, 2);
}

#[test]
fn inconsistent_metadata_is_refused() {
    let mut st = fixture();
    let mut bad = meta("f", 1);
    bad.size = 10 * 1024 * 1024;
    assert!(matches!(
        st.apply(&Op::ShareFile { session: token(1), group: group("g"), meta: bad }),
        Err(TrackerError::BadFileMeta(_))
    ));
    let mut bad = meta("f", 1);
    bad.digest = Sha1Digest([0; 20]);
    assert!(matches!(
        st.apply(&Op::ShareFile { session: token(1), group: group("g"), meta: bad }),
        Err(TrackerError::BadFileMeta(_))
    ));
}

/// Issue 23: a folder's size, piece count and digest must be its tree's; the folder is
/// then listed with its file count.
#[test]
fn inconsistent_folder_metadata_is_refused() {
    let mut st = fixture();
    let share = |st: &mut TrackerState, meta| {
        st.apply(&Op::ShareFile { session: token(1), group: group("g"), meta })
    };
    let mut bad = folder_meta();
    bad.size += 1;
    assert!(matches!(share(&mut st, bad), Err(TrackerError::BadFileMeta(_))));
    let mut bad = folder_meta();
    bad.pieces.push(Sha1Digest([3; 20]));
    assert!(matches!(share(&mut st, bad), Err(TrackerError::BadFileMeta(_))));
    // The digest of the same pieces as a file is not the folder's.
    let mut bad = folder_meta();
    bad.digest = file_digest(bad.size, &bad.pieces);
    assert!(matches!(share(&mut st, bad), Err(TrackerError::BadFileMeta(_))));
    // Another tree with the same pieces: the digest no longer matches.
    let mut bad = folder_meta();
    let mut entries = bad.tree.take().unwrap().entries().to_vec();
    entries.pop();
    bad.tree = Some(common::folder::Tree::new(entries).unwrap());
    bad.size = bad.tree.as_ref().unwrap().total_size();
    assert!(matches!(share(&mut st, bad), Err(TrackerError::BadFileMeta(_))));
    assert_eq!(share(&mut st, folder_meta()), Ok(Reply::Uploaded { new_file: true }));
    let Some(Ok(Reply::Files { files, .. })) =
        st.read(Some(token(1)), &Request::ListFiles { group: group("g"), after: None }, &|_| true)
    else {
        panic!("list_files failed")
    };
    assert_eq!(files[0].n_files, Some(2));
    assert_eq!(files[0].size, 512 * 1024 + 1);
}

#[test]
fn file_disappears_when_its_last_sharer_stops_or_logs_out() {
    let mut st = fixture();
    join(&mut st, "bob");
    st.apply(&Op::ShareFile { session: token(1), group: group("g"), meta: meta("f", 1) }).unwrap();
    st.apply(&Op::ShareFile { session: token(2), group: group("g"), meta: meta("f", 1) }).unwrap();
    st.apply(&Op::StopShare {
        session: token(1),
        group: group("g"),
        name: FileName::new("f").unwrap(),
    })
    .unwrap();
    assert_eq!(
        st.apply(&Op::StopShare {
            session: token(1),
            group: group("g"),
            name: FileName::new("f").unwrap()
        }),
        Err(TrackerError::NotSharing { group: group("g"), name: FileName::new("f").unwrap() })
    );
    st.apply(&Op::CloseSession { session: token(2) }).unwrap();
    check_read(
        &st,
        1,
        Request::ListFiles { group: group("g"), after: None },
        Ok(Reply::Files { files: vec![], more: false }),
    );
    assert_eq!(st.session_user(Some(token(2))), Err(TrackerError::NotLoggedIn));
    // Different content under the freed name is accepted now.
    assert_eq!(
        st.apply(&Op::ShareFile { session: token(1), group: group("g"), meta: meta("f", 9) }),
        Ok(Reply::Uploaded { new_file: true })
    );
}

#[test]
fn owner_leaving_passes_the_group_to_the_longest_standing_member() {
    let mut st = fixture();
    join(&mut st, "carol");
    join(&mut st, "bob");
    st.apply(&Op::ShareFile { session: token(1), group: group("g"), meta: meta("f", 1) }).unwrap();
    st.apply(&Op::LeaveGroup { group: group("g"), user: user("alice") }).unwrap();
    check_read(
        &st,
        3,
        Request::ListRequests { group: group("g"), after: None },
        Ok(Reply::Users { users: vec![], more: false }),
    );
    // alice's share ended with her membership.
    check_read(
        &st,
        3,
        Request::ListFiles { group: group("g"), after: None },
        Ok(Reply::Files { files: vec![], more: false }),
    );
    st.apply(&Op::LeaveGroup { group: group("g"), user: user("carol") }).unwrap();
    st.apply(&Op::LeaveGroup { group: group("g"), user: user("bob") }).unwrap();
    check_read(
        &st,
        1,
        Request::ListGroups { after: None },
        Ok(Reply::Groups { groups: vec![], more: false }),
    );
    assert_eq!(
        st.apply(&Op::LeaveGroup { group: group("g"), user: user("bob") }),
        Err(TrackerError::UnknownGroup(group("g")))
    );
}

/// Issue 21: an owner removes a member; the member's shares in the group end, and so do
/// their tickets for it (checked by `verify_ticket`).
#[test]
fn an_owner_removes_a_member_whose_shares_and_tickets_end() {
    use GroupRole::*;
    let mut st = fixture();
    st.apply(&Op::InitSecret { secret: TicketSecret([1; 32]) }).unwrap();
    join(&mut st, "bob");
    join(&mut st, "carol");
    st.apply(&Op::ShareFile { session: token(2), group: group("g"), meta: meta("b", 1) }).unwrap();
    st.apply(&Op::ShareFile { session: token(3), group: group("g"), meta: meta("c", 2) }).unwrap();
    let digest = meta("c", 2).digest;
    let ticket = st.mint_ticket(key(2), user("bob"), group("g"), digest, 100).unwrap();
    assert_eq!(st.verify_ticket(&ticket, 50), Ok(()));
    let remove = |owner: &str, member: &str| Op::RemoveMember {
        owner: user(owner),
        group: group("g"),
        user: user(member),
    };
    assert_eq!(st.apply(&remove("bob", "carol")), Err(TrackerError::NotOwner(group("g"))));
    assert_eq!(
        st.apply(&remove("alice", "alice")),
        Err(TrackerError::OwnerCannotRemoveSelf(group("g")))
    );
    assert_eq!(
        st.apply(&Op::RemoveMember { owner: user("alice"), group: group("h"), user: user("bob") }),
        Err(TrackerError::UnknownGroup(group("h")))
    );
    assert_eq!(st.apply(&remove("alice", "bob")), Ok(Reply::Done));
    assert_eq!(
        st.apply(&remove("alice", "bob")),
        Err(TrackerError::NoSuchMember { group: group("g"), user: user("bob") })
    );
    check_memberships(&st, "bob", &[]);
    check_memberships(&st, "alice", &[("g", Owner)]);
    check_memberships(&st, "carol", &[("g", Member)]);
    // bob's share ended; carol's did not.
    let files =
        st.read(Some(token(3)), &Request::ListFiles { group: group("g"), after: None }, &|_| true);
    let Some(Ok(Reply::Files { files, .. })) = files else { panic!("{files:?}") };
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["c"]);
    assert_eq!(
        st.verify_ticket(&ticket, 50),
        Err(TrackerError::BadTicket("holder is no longer a member".into()))
    );
    assert!(matches!(
        st.file_for_member(&user("bob"), &group("g"), &FileName::new("c").unwrap()),
        Err(TrackerError::NotMember(_))
    ));
    let decoded = TrackerState::decode(&st.encode()).unwrap();
    assert_eq!(decoded, st);
}

#[test]
fn requests_without_a_session_are_refused() {
    let st = fixture();
    assert_eq!(
        st.read(None, &Request::ListGroups { after: None }, &|_| true),
        Some(Err(TrackerError::NotLoggedIn))
    );
    assert_eq!(
        st.read(Some(token(99)), &Request::ListMyGroups { after: None }, &|_| true),
        Some(Err(TrackerError::NotLoggedIn))
    );
    assert_eq!(st.read(Some(token(1)), &Request::Logout, &|_| true), None);
}

#[test]
fn tickets_are_authenticated_expire_and_follow_membership() {
    let mut st = fixture();
    let digest = Sha1Digest([7; 20]);
    assert!(st.mint_ticket(key(1), user("alice"), group("g"), digest, 100).is_none(), "no secret");
    st.apply(&Op::InitSecret { secret: TicketSecret([1; 32]) }).unwrap();
    // A second secret does not replace the first (tickets already issued stay valid).
    st.apply(&Op::InitSecret { secret: TicketSecret([2; 32]) }).unwrap();
    // Ops and states are logged at debug level: the secret never shows.
    let logged = format!("{:?} {st:?}", Op::InitSecret { secret: TicketSecret([0xab; 32]) });
    assert!(!logged.contains("171") && !logged.contains("ab, ab"), "{logged}");
    join(&mut st, "bob");
    let ticket = st.mint_ticket(key(2), user("bob"), group("g"), digest, 100).unwrap();
    assert_eq!(st.verify_ticket(&ticket, 50), Ok(()));
    assert_eq!(st.verify_ticket(&ticket, 101), Err(TrackerError::BadTicket("expired".into())));
    let mut forged = ticket.clone();
    forged.user = user("carol");
    assert_eq!(
        st.verify_ticket(&forged, 50),
        Err(TrackerError::BadTicket("forged or altered".into()))
    );
    let mut stolen = ticket.clone();
    stolen.holder = key(3);
    assert_eq!(
        st.verify_ticket(&stolen, 50),
        Err(TrackerError::BadTicket("forged or altered".into()))
    );
    let mut later = ticket.clone();
    later.expires = 1_000;
    assert_eq!(
        st.verify_ticket(&later, 50),
        Err(TrackerError::BadTicket("forged or altered".into()))
    );
    // A ticket of a login that ended is dead, even for a member.
    let other_login = st.mint_ticket(key(9), user("bob"), group("g"), digest, 100).unwrap();
    assert_eq!(
        st.verify_ticket(&other_login, 50),
        Err(TrackerError::BadTicket("holder is no longer logged in".into()))
    );
    st.apply(&Op::LeaveGroup { group: group("g"), user: user("bob") }).unwrap();
    assert_eq!(
        st.verify_ticket(&ticket, 50),
        Err(TrackerError::BadTicket("holder is no longer a member".into()))
    );
    join(&mut st, "bob");
    st.apply(&Op::CloseSession { session: token(2) }).unwrap();
    assert_eq!(
        st.verify_ticket(&ticket, 50),
        Err(TrackerError::BadTicket("holder is no longer logged in".into()))
    );
}

#[test]
fn list_files_hides_files_whose_sharers_are_all_gone() {
    let mut st = fixture();
    join(&mut st, "bob");
    st.apply(&Op::ShareFile { session: token(1), group: group("g"), meta: meta("f", 1) }).unwrap();
    let request = Request::ListFiles { group: group("g"), after: None };
    assert_eq!(
        st.read(Some(token(2)), &request, &|s| *s != token(1)),
        Some(Ok(Reply::Files { files: vec![], more: false }))
    );
}

/// The bytes of entries and a state as written by the current formats (`ENTRY_FORMAT`,
/// `STATE_FORMAT`), and by formats 1 and 2, which are still read. If an encoding changes (a reordered enum variant, a new field), these
/// fail: bump the format and say in the change how existing data directories are handled.
mod golden {
    use super::*;

    fn fixed_credential() -> Credential {
        let mut bytes = vec![1u8; 16];
        bytes.extend([0xe8, 0x07]); // 1000 iterations, varint
        bytes.extend([2u8; 20]);
        postcard::from_bytes(&bytes).unwrap()
    }

    /// The entries of the golden tests, their origins with `fingerprint` (none in format 1).
    fn entries_with(fingerprint: Option<[u8; 32]>) -> Vec<LogEntry> {
        let origin = |seq| Some(Origin { id: RequestId { client: 77, seq }, fingerprint });
        vec![
            LogEntry { op: Op::InitSecret { secret: TicketSecret([7; 32]) }, origin: None },
            LogEntry {
                op: Op::CreateUser { user: user("alice"), credential: fixed_credential() },
                origin: origin(1),
            },
            LogEntry {
                op: Op::OpenSession {
                    session: token(1),
                    user: user("alice"),
                    peer_addr: "127.0.0.1:9".parse().unwrap(),
                    key: key(1),
                },
                origin: origin(2),
            },
            LogEntry {
                op: Op::CreateGroup { group: group("g"), owner: user("alice") },
                origin: origin(3),
            },
            LogEntry {
                op: Op::ShareFile { session: token(1), group: group("g"), meta: meta("f", 5) },
                origin: origin(4),
            },
            // Format 3 only (formats 1 and 2 had no folders).
            LogEntry {
                op: Op::ShareFile { session: token(1), group: group("g"), meta: folder_meta() },
                origin: Some(Origin { id: RequestId { client: 78, seq: 1 }, fingerprint }),
            },
        ]
    }

    fn entries() -> Vec<LogEntry> {
        entries_with(Some([9; 32]))
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn format_1_entries_and_states_are_still_read() {
        let mut state = TrackerState::default();
        for (bytes, expected) in GOLDEN_ENTRIES_1.iter().zip(entries_with(None)) {
            let entry = LogEntry::decode(&unhex(bytes)).unwrap();
            assert_eq!(entry, expected);
            state.apply_entry(&entry).unwrap();
        }
        assert_eq!(TrackerState::decode(&unhex(GOLDEN_STATE_1)), Ok(state.clone()));
        // A retry recorded by format 1 is still recognised, by its id alone.
        let id = RequestId { client: 77, seq: 4 };
        let retry = Origin { id, fingerprint: Some([1; 32]) };
        assert_eq!(state.replied(&retry), Some(Reply::Uploaded { new_file: true }));
    }

    #[test]
    fn format_2_entries_and_states_are_still_read() {
        let mut state = TrackerState::default();
        for (bytes, expected) in GOLDEN_ENTRIES_2.iter().zip(entries()) {
            let entry = LogEntry::decode(&unhex(bytes)).unwrap();
            assert_eq!(entry, expected);
            state.apply_entry(&entry).unwrap();
        }
        assert_eq!(TrackerState::decode(&unhex(GOLDEN_STATE_2)), Ok(state));
        // An op of format 2 is read only whole: a cut or lengthened one is damaged.
        let share = unhex(GOLDEN_ENTRIES_2[4]);
        assert!(matches!(
            LogEntry::decode(&share[..share.len() - 40]),
            Err(DecodeError::Damaged(_))
        ));
        let mut longer = share.clone();
        longer.push(0);
        assert!(matches!(LogEntry::decode(&longer), Err(DecodeError::Damaged(_))));
    }

    #[test]
    fn a_retry_is_recognised_only_with_the_same_fingerprint() {
        let mut state = TrackerState::default();
        for e in entries() {
            state.apply_entry(&e).unwrap();
        }
        let id = RequestId { client: 77, seq: 4 };
        let same = Origin { id, fingerprint: Some([9; 32]) };
        assert_eq!(state.replied(&same), Some(Reply::Uploaded { new_file: true }));
        assert_eq!(state.replied(&Origin { id, fingerprint: Some([8; 32]) }), None);
        assert_eq!(state.replied(&Origin { id, fingerprint: None }), None);
    }

    #[test]
    fn entries_and_states_keep_their_bytes() {
        let mut state = TrackerState::default();
        let encoded: Vec<String> = entries()
            .iter()
            .map(|e| {
                state.apply_entry(e).unwrap();
                hex(&e.encode())
            })
            .collect();
        for e in &entries() {
            assert_eq!(LogEntry::decode(&e.encode()).as_ref(), Ok(e));
        }
        assert_eq!(TrackerState::decode(&state.encode()), Ok(state.clone()));
        assert_eq!(encoded, GOLDEN_ENTRIES);
        assert_eq!(hex(&state.encode()), GOLDEN_STATE);
    }

    #[test]
    fn another_format_is_refused_not_misread() {
        let mut bytes = entries()[1].encode();
        bytes[0] = ENTRY_FORMAT + 1;
        assert_eq!(
            LogEntry::decode(&bytes),
            Err(DecodeError::Format { found: ENTRY_FORMAT + 1, expected: ENTRY_FORMAT })
        );
        assert_eq!(LogEntry::decode(&[]), Err(DecodeError::Empty));
        let state = TrackerState::default().encode();
        assert!(LogEntry::decode(&state).is_err());
        let mut trailing = entries()[0].encode();
        trailing.push(0);
        assert!(matches!(LogEntry::decode(&trailing), Err(DecodeError::Damaged(_))));
    }

    /// As written by format 2 (no folders).
    const GOLDEN_ENTRIES_2: [&str; 5] = [
        "0200070707070707070707070707070707070707070707070707070707070707070700",
        "020105616c69636501010101010101010101010101010101e8070202020202020202020202020202020202020202014d01010909090909090909090909090909090909090909090909090909090909090909",
        "0202010101010101010101010101010101010101010101010101010101010101010105616c696365007f000001090101010101010101010101010101010101010101010101010101010101010101014d02010909090909090909090909090909090909090909090909090909090909090909",
        "0204016705616c696365014d03010909090909090909090909090909090909090909090909090909090909090909",
        "02090101010101010101010101010101010101010101010101010101010101010101016701660acb063d858626beedea66c7edb63c5c86d4464751010505050505050505050505050505050505050505014d04010909090909090909090909090909090909090909090909090909090909090909",
    ];
    const GOLDEN_STATE_2: &str = concat!(
        "02010707070707070707070707070707070707070707070707070707070707070707014d4d040109",
        "0909090909090909090909090909090909090909090909090909090909090905010105616c696365",
        "01010101010101010101010101010101e80702020202020202020202020202020202020202020101",
        "6705616c6963650105616c6963650001010101010101010101010101010101010101010101010101",
        "010101010101010105616c696365007f000001090101010101010101010101010101010101010101",
        "01010101010101010101010101016701016601660acb063d858626beedea66c7edb63c5c86d44647",
        "51010505050505050505050505050505050505050505010101010101010101010101010101010101",
        "010101010101010101010101010101",
    );

    const GOLDEN_ENTRIES: [&str; 6] = [
        "0300070707070707070707070707070707070707070707070707070707070707070700",
        "030105616c69636501010101010101010101010101010101e8070202020202020202020202020202020202020202014d01010909090909090909090909090909090909090909090909090909090909090909",
        "0302010101010101010101010101010101010101010101010101010101010101010105616c696365007f000001090101010101010101010101010101010101010101010101010101010101010101014d02010909090909090909090909090909090909090909090909090909090909090909",
        "0304016705616c696365014d03010909090909090909090909090909090909090909090909090909090909090909",
        "03090101010101010101010101010101010101010101010101010101010101010101016701660acb063d858626beedea66c7edb63c5c86d446475101050505050505050505050505050505050505050500014d04010909090909090909090909090909090909090909090909090909090909090909",
        "0309010101010101010101010101010101010101010101010101010101010101010101670164818020f3d676ba975678b4dacc6d160f1c24b673ab6db902010101010101010101010101010101010101010102020202020202020202020202020202020202020103010161018180200001016500010178010001014e01010909090909090909090909090909090909090909090909090909090909090909",
    ];
    const GOLDEN_STATE: &str = concat!(
        "03010707070707070707070707070707070707070707070707070707070707070707024d4d040109",
        "0909090909090909090909090909090909090909090909090909090909090905014e4e0101090909",
        "090909090909090909090909090909090909090909090909090909090905010105616c6963650101",
        "0101010101010101010101010101e807020202020202020202020202020202020202020201016705",
        "616c6963650105616c69636500010101010101010101010101010101010101010101010101010101",
        "01010101010105616c696365007f0000010901010101010101010101010101010101010101010101",
        "010101010101010101010101670201640164818020f3d676ba975678b4dacc6d160f1c24b673ab6d",
        "b9020101010101010101010101010101010101010101020202020202020202020202020202020202",
        "02020103010161018180200001016500010178010001010101010101010101010101010101010101",
        "010101010101010101010101010101016601660acb063d858626beedea66c7edb63c5c86d4464751",
        "01050505050505050505050505050505050505050500010101010101010101010101010101010101",
        "010101010101010101010101010101",
    );

    /// As written by format 1.
    const GOLDEN_ENTRIES_1: [&str; 5] = [
        "0100070707070707070707070707070707070707070707070707070707070707070700",
        "010105616c69636501010101010101010101010101010101e8070202020202020202020202020202020202020202014d01",
        "0102010101010101010101010101010101010101010101010101010101010101010105616c696365007f000001090101010101010101010101010101010101010101010101010101010101010101014d02",
        "0104016705616c696365014d03",
        "01090101010101010101010101010101010101010101010101010101010101010101016701660acb063d858626beedea66c7edb63c5c86d4464751010505050505050505050505050505050505050505014d04",
    ];
    const GOLDEN_STATE_1: &str = concat!(
        "01010707070707070707070707070707070707070707070707070707070707070707014d04050101",
        "05616c69636501010101010101010101010101010101e80702020202020202020202020202020202",
        "0202020201016705616c6963650105616c6963650001010101010101010101010101010101010101",
        "010101010101010101010101010105616c696365007f000001090101010101010101010101010101",
        "01010101010101010101010101010101010101016701016601660acb063d858626beedea66c7edb6",
        "3c5c86d4464751010505050505050505050505050505050505050505010101010101010101010101",
        "010101010101010101010101010101010101010101",
    );
}

/// The session indexes `apply` keeps are the ones `decode` rebuilds, through every way a
/// session opens and ends, and a user's sessions are found without a scan of all.
#[test]
fn the_session_indexes_follow_every_open_and_close() {
    let mut st = fixture();
    let check = |st: &TrackerState| {
        let rebuilt = TrackerState::decode(&st.encode()).unwrap();
        assert_eq!(rebuilt.sessions_by_user, st.sessions_by_user);
        assert_eq!(rebuilt.keys, st.keys);
    };
    check(&st);
    let open = |n: u8, name: &str, k: u8| Op::OpenSession {
        session: token(n),
        user: user(name),
        peer_addr: "127.0.0.1:7100".parse().unwrap(),
        key: key(k),
    };
    st.apply(&open(4, "alice", 9)).unwrap();
    st.apply(&open(5, "alice", 1)).unwrap();
    check(&st);
    assert_eq!(st.sessions_of(&user("alice")).collect::<Vec<_>>(), [token(1), token(4), token(5)]);
    assert!(st.key_has_session_of(&key(9), &user("alice")));
    assert!(!st.key_has_session_of(&key(9), &user("bob")));
    st.apply(&Op::CloseSession { session: token(4) }).unwrap();
    check(&st);
    assert!(!st.key_has_session_of(&key(9), &user("alice")));
    st.apply(&Op::CloseUserSessions { user: user("alice") }).unwrap();
    check(&st);
    assert_eq!(st.sessions_of(&user("alice")).count(), 0);
    assert_eq!(st.sessions_of(&user("bob")).collect::<Vec<_>>(), [token(2)]);
}

/// Issue 20: a session moved to a new address keeps everything else; an unknown one is
/// refused.
#[test]
fn a_session_moves_to_a_new_address() {
    let mut st = fixture();
    let to: SocketAddr = "127.0.0.1:7999".parse().unwrap();
    st.apply(&Op::MoveSession { session: token(1), peer_addr: to }).unwrap();
    assert_eq!(st.session_peer(&token(1)), Some((&user("alice"), to, key(1))));
    let unknown = Op::MoveSession { session: token(9), peer_addr: to };
    assert_eq!(st.apply(&unknown), Err(TrackerError::NotLoggedIn));
}

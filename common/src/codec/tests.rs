use proptest::prelude::*;

use super::*;
use crate::bitfield::Bitfield;
use crate::hash::Sha1Digest;
use crate::id::{FileName, GroupId, Password, UserId};
use crate::identity::PublicKey;
use crate::message::*;
use crate::peer_message::*;
use crate::piece::PieceIndex;
use crate::replica_message::*;

fn user() -> impl Strategy<Value = UserId> {
    "[a-zA-Z0-9_.-]{1,64}".prop_map(|s| UserId::new(s).unwrap())
}
fn group() -> impl Strategy<Value = GroupId> {
    "[a-zA-Z0-9_é-]{1,20}".prop_map(|s| GroupId::new(s).unwrap())
}
fn file_name() -> impl Strategy<Value = FileName> {
    "[a-z0-9_-][a-z0-9_.-]{0,40}".prop_filter_map("path-like", |s| FileName::new(s).ok())
}
fn password() -> impl Strategy<Value = Password> {
    "[!-~]{1,128}".prop_map(|s| Password::new(s).unwrap())
}
fn digest() -> impl Strategy<Value = Sha1Digest> {
    any::<[u8; 20]>().prop_map(Sha1Digest)
}
fn file_meta() -> impl Strategy<Value = FileMeta> {
    (file_name(), any::<u64>(), digest(), prop::collection::vec(digest(), 0..8)).prop_map(
        |(name, size, digest, pieces)| FileMeta { name, size, digest, pieces, tree: None },
    )
}

fn bitfield() -> impl Strategy<Value = Bitfield> {
    (0u32..40, prop::collection::vec(any::<u32>(), 0..10)).prop_map(|(n, set)| {
        let mut field = Bitfield::empty(n);
        for i in set {
            field.set(PieceIndex(i % n.max(1)));
        }
        field
    })
}
fn key() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_map(PublicKey)
}

fn token() -> impl Strategy<Value = SessionToken> {
    any::<[u8; 32]>().prop_map(SessionToken)
}

fn ticket() -> impl Strategy<Value = Ticket> {
    (key(), user(), group(), digest(), any::<u64>(), any::<[u8; 20]>()).prop_map(
        |(holder, user, group, digest, expires, mac)| Ticket {
            holder,
            user,
            group,
            digest,
            expires,
            mac,
        },
    )
}

fn socket_addr() -> impl Strategy<Value = std::net::SocketAddr> {
    // serde carries neither the flow info nor the scope id of an IPv6 address.
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| (ip, port).into()),
        (any::<[u16; 8]>(), any::<u16>()).prop_map(|(ip, port)| (ip, port).into()),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (user(), password()).prop_map(|(user, password)| Request::CreateUser { user, password }),
        (user(), password(), socket_addr(), token()).prop_map(
            |(user, password, peer_addr, session)| Request::Login {
                user,
                password,
                peer_addr,
                session
            }
        ),
        Just(Request::Logout),
        group().prop_map(|group| Request::CreateGroup { group }),
        group().prop_map(|group| Request::JoinGroup { group }),
        group().prop_map(|group| Request::LeaveGroup { group }),
        (group(), prop::option::of(user()))
            .prop_map(|(group, after)| Request::ListRequests { group, after }),
        (group(), user()).prop_map(|(group, user)| Request::AcceptRequest { group, user }),
        (group(), user()).prop_map(|(group, user)| Request::RejectRequest { group, user }),
        prop::option::of(group()).prop_map(|after| Request::ListGroups { after }),
        prop::option::of(group()).prop_map(|after| Request::ListMyGroups { after }),
        (group(), prop::option::of(file_name()))
            .prop_map(|(group, after)| Request::ListFiles { group, after }),
        (group(), file_meta()).prop_map(|(group, file)| Request::UploadFile { group, file }),
        (group(), file_name()).prop_map(|(group, name)| Request::StopShare { group, name }),
        (group(), file_name()).prop_map(|(group, name)| Request::GetFile { group, name }),
        (group(), digest(), bitfield()).prop_map(|(group, digest, have)| Request::AnnouncePieces {
            group,
            digest,
            have
        }),
        ticket().prop_map(|ticket| Request::CheckTicket { ticket }),
        proptest::option::of(any::<u64>()).prop_map(|known| Request::Heartbeat { known }),
        Just(Request::StateDigest),
        Just(Request::LogoutEverywhere),
        Just(Request::Status),
        proptest::collection::vec(socket_addr(), 0..5)
            .prop_map(|addrs| Request::Reachable { addrs }),
        socket_addr().prop_map(|peer_addr| Request::MoveSession { peer_addr }),
        (group(), user()).prop_map(|(group, user)| Request::RemoveMember { group, user }),
        Just(Request::AwaitCalls),
        (ticket(), key(), any::<u64>()).prop_map(|(ticket, seeder, nonce)| Request::Reverse {
            ticket,
            seeder,
            nonce
        }),
        (ticket(), key(), any::<u64>()).prop_map(|(ticket, seeder, nonce)| Request::Relay {
            ticket,
            seeder,
            nonce
        }),
        (ticket(), key(), any::<u64>(), any::<u16>()).prop_map(|(ticket, seeder, nonce, port)| {
            Request::Punch { ticket, seeder, nonce, port }
        }),
    ]
}

fn peer_call() -> impl Strategy<Value = PeerCall> {
    (
        key(),
        user(),
        proptest::collection::vec(socket_addr(), 0..5),
        group(),
        digest(),
        any::<u64>(),
        any::<Option<u32>>(),
        any::<bool>(),
    )
        .prop_map(|(from, user, addrs, group, digest, nonce, relay, punch)| PeerCall {
            from,
            user,
            addrs,
            group,
            digest,
            nonce,
            relay,
            punch,
        })
}

fn request_id() -> impl Strategy<Value = RequestId> {
    (any::<u64>(), any::<u64>()).prop_map(|(client, seq)| RequestId { client, seq })
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        any::<u16>().prop_map(|version| ClientMessage::Hello { version }),
        token().prop_map(|session| ClientMessage::Resume { session }),
        (request_id(), proptest::option::of(token()), request())
            .prop_map(|(id, session, request)| ClientMessage::Request { id, session, request }),
        (any::<u16>(), any::<u32>())
            .prop_map(|(version, from)| ClientMessage::ReplicaHello { version, from }),
        (any::<u16>(), token(), any::<u64>())
            .prop_map(|(version, session, nonce)| ClientMessage::Relay { version, session, nonce }),
        Just(ClientMessage::RelayGo),
    ]
}

fn tracker_error() -> impl Strategy<Value = TrackerError> {
    prop_oneof![
        user().prop_map(TrackerError::UserExists),
        user().prop_map(TrackerError::UnknownUser),
        Just(TrackerError::WrongPassword),
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(tracker, reached, voters)| {
            TrackerError::NoMajority { tracker, reached, voters }
        }),
        Just(TrackerError::NotLoggedIn),
        group().prop_map(TrackerError::GroupExists),
        group().prop_map(TrackerError::UnknownGroup),
        group().prop_map(TrackerError::NotMember),
        group().prop_map(TrackerError::NotOwner),
        group().prop_map(TrackerError::AlreadyMember),
        group().prop_map(TrackerError::AlreadyRequested),
        (group(), user()).prop_map(|(group, user)| TrackerError::NoSuchRequest { group, user }),
        (group(), file_name()).prop_map(|(group, name)| TrackerError::NameTaken { group, name }),
        (group(), file_name()).prop_map(|(group, name)| TrackerError::NoSuchFile { group, name }),
        (group(), file_name()).prop_map(|(group, name)| TrackerError::NotSharing { group, name }),
        ".{0,40}".prop_map(TrackerError::BadFileMeta),
        ".{0,40}".prop_map(TrackerError::BadTicket),
        ".{0,40}".prop_map(TrackerError::Unavailable),
        ".{0,40}".prop_map(TrackerError::Busy),
        (".{0,40}", any::<u64>()).prop_map(|(what, retry_after_secs)| {
            TrackerError::TooManyAttempts { what, retry_after_secs }
        }),
        ".{0,40}".prop_map(TrackerError::QuotaExceeded),
        (group(), user()).prop_map(|(group, user)| TrackerError::NoSuchMember { group, user }),
        group().prop_map(TrackerError::OwnerCannotRemoveSelf),
        ".{0,40}".prop_map(TrackerError::CannotReverse),
        Just(TrackerError::RelayOff),
        Just(TrackerError::NotWaiting),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    let summary = (file_name(), any::<u64>(), digest(), any::<u32>(), any::<Option<u32>>())
        .prop_map(|(name, size, digest, n_sharers, n_files)| FileSummary {
            name,
            size,
            digest,
            n_sharers,
            n_files,
        });
    prop_oneof![
        Just(Reply::Done),
        Just(Reply::LoggedIn),
        (prop::collection::vec(group(), 0..5), any::<bool>())
            .prop_map(|(groups, more)| Reply::Groups { groups, more }),
        (prop::collection::vec(user(), 0..5), any::<bool>())
            .prop_map(|(users, more)| Reply::Users { users, more }),
        (prop::collection::vec(summary, 0..5), any::<bool>())
            .prop_map(|(files, more)| Reply::Files { files, more }),
        any::<bool>().prop_map(|new_file| Reply::Uploaded { new_file }),
        (file_meta(), prop::collection::vec(peer_info(), 0..4), ticket()).prop_map(
            |(meta, peers, ticket)| Reply::FileInfo { meta, peers, ticket: Box::new(ticket) }
        ),
        Just(Reply::TicketOk),
        (any::<u64>(), digest()).prop_map(|(seq, digest)| Reply::StateDigest { seq, digest }),
        proptest::option::of((
            prop::collection::vec((group(), group_role()), 0..4),
            prop::collection::vec((group(), user()), 0..4),
        ))
        .prop_map(|m| Reply::Alive {
            memberships: m.map(|(groups, requests)| Memberships::new(groups, requests)),
        }),
        tracker_status().prop_map(|status| Reply::Status { status }),
        prop::collection::vec(peer_call(), 0..3).prop_map(|calls| Reply::Calls { calls }),
        any::<u32>().prop_map(|tracker| Reply::RelayAt { tracker }),
    ]
}

fn tracker_status() -> impl Strategy<Value = TrackerStatus> {
    let role = prop_oneof![
        Just(TrackerRole::Primary),
        any::<u32>().prop_map(|leader| TrackerRole::Backup { leader }),
        Just(TrackerRole::Candidate),
        Just(TrackerRole::Leaderless),
        Just(TrackerRole::Witness),
    ];
    (any::<u32>(), role, any::<u64>(), prop::collection::vec(any::<u32>(), 0..5), any::<u32>())
        .prop_map(|(id, role, term, voters, reach)| TrackerStatus {
            id,
            role,
            term,
            voters,
            reach,
            commit: term.wrapping_mul(3),
            applied: term,
        })
}

fn group_role() -> impl Strategy<Value = GroupRole> {
    prop_oneof![Just(GroupRole::Owner), Just(GroupRole::Member), Just(GroupRole::Requested)]
}

fn peer_info() -> impl Strategy<Value = PeerInfo> {
    (
        user(),
        socket_addr(),
        key(),
        proptest::option::of(bitfield()),
        proptest::collection::vec(socket_addr(), 0..5),
    )
        .prop_map(|(user, addr, key, have, addrs)| PeerInfo { user, addr, key, have, addrs })
}

fn peer_request() -> impl Strategy<Value = PeerRequest> {
    prop_oneof![
        (any::<u16>(), digest(), ticket())
            .prop_map(|(version, digest, ticket)| PeerRequest::Hello { version, digest, ticket }),
        Just(PeerRequest::GetBitfield),
        any::<u32>().prop_map(|i| PeerRequest::GetPiece { piece: PieceIndex(i) }),
        ticket().prop_map(|ticket| PeerRequest::Renew { ticket }),
        (any::<u16>(), digest(), any::<u64>()).prop_map(|(version, digest, nonce)| {
            PeerRequest::Reversed { version, digest, nonce }
        }),
    ]
}

fn peer_reply() -> impl Strategy<Value = PeerReply> {
    let refusal = prop_oneof![
        any::<u16>().prop_map(Refusal::Version),
        Just(Refusal::UnknownFile),
        ".{0,20}".prop_map(Refusal::BadTicket),
        Just(Refusal::Busy),
        Just(Refusal::Expired),
    ];
    prop_oneof![
        bitfield().prop_map(|have| PeerReply::Welcome { have }),
        refusal.prop_map(|reason| PeerReply::Refused { reason }),
        bitfield().prop_map(|have| PeerReply::Bitfield { have }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(i, len)| PeerReply::Piece { piece: PieceIndex(i), len }),
        any::<u32>().prop_map(|i| PeerReply::NoPiece { piece: PieceIndex(i) }),
        prop::collection::vec(any::<u32>(), 0..16)
            .prop_map(|v| PeerReply::Have { pieces: v.into_iter().map(PieceIndex).collect() }),
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(a, i, len)| PeerReply::Instead {
            asked: PieceIndex(a),
            piece: PieceIndex(i),
            len
        }),
        any::<u32>().prop_map(|i| PeerReply::Elsewhere { piece: PieceIndex(i) }),
    ]
}

fn replica_request() -> impl Strategy<Value = ReplicaRequest> {
    prop_oneof![
        (any::<u64>(), prop::collection::vec(any::<u8>(), 0..64), any::<bool>())
            .prop_map(|(generation, part, last)| ReplicaRequest::Raft { generation, part, last }),
        (request_id(), proptest::option::of(token()), key(), request()).prop_map(
            |(id, session, client, request)| ReplicaRequest::Forward {
                id,
                session,
                client,
                request
            }
        ),
        (key(), peer_call()).prop_map(|(callee, call)| ReplicaRequest::Call { callee, call }),
    ]
}

fn replica_reply() -> impl Strategy<Value = ReplicaReply> {
    prop_oneof![reply().prop_map(Ok), tracker_error().prop_map(Err)]
        .prop_map(|result| ReplicaReply::Forwarded { result })
}

fn tracker_message() -> impl Strategy<Value = TrackerMessage> {
    prop_oneof![
        (any::<u16>(), any::<u32>(), socket_addr()).prop_map(|(version, tracker_id, observed)| {
            TrackerMessage::Welcome { version, tracker_id, observed }
        }),
        any::<u16>().prop_map(|version| TrackerMessage::Refused { version }),
        (request_id(), prop_oneof![reply().prop_map(Ok), tracker_error().prop_map(Err)])
            .prop_map(|(id, result)| TrackerMessage::Response { id, result }),
        Just(TrackerMessage::RelayReady),
        tracker_error().prop_map(|reason| TrackerMessage::RelayRefused { reason }),
    ]
}

#[track_caller]
fn round_trip<T>(msg: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let mut buf = Vec::new();
    encode(msg, &mut buf).unwrap();
    assert_eq!(&decode::<T>(&buf).unwrap(), msg);
    // A trailing byte is refused.
    buf.push(0);
    assert_eq!(decode::<T>(&buf), Err(DecodeError::TrailingBytes(1)));
}

proptest! {
    #[test]
    fn client_messages_round_trip(msg in client_message()) {
        round_trip(&msg);
    }

    #[test]
    fn tracker_messages_round_trip(msg in tracker_message()) {
        round_trip(&msg);
    }

    #[test]
    fn replica_requests_round_trip(msg in replica_request()) {
        round_trip(&msg);
    }

    #[test]
    fn replica_replies_round_trip(msg in replica_reply()) {
        round_trip(&msg);
    }

    #[test]
    fn peer_requests_round_trip(msg in peer_request()) {
        round_trip(&msg);
    }

    #[test]
    fn peer_replies_round_trip(msg in peer_reply()) {
        round_trip(&msg);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<ClientMessage>(&bytes);
        let _ = decode::<TrackerMessage>(&bytes);
        let _ = decode::<PeerRequest>(&bytes);
        let _ = decode::<PeerReply>(&bytes);
        let _ = decode::<ReplicaRequest>(&bytes);
        let _ = decode::<ReplicaReply>(&bytes);
    }

    #[test]
    fn truncated_messages_are_errors(msg in client_message(), cut in any::<prop::sample::Index>()) {
        let mut buf = Vec::new();
        encode(&msg, &mut buf).unwrap();
        let cut = cut.index(buf.len());
        prop_assert!(decode::<ClientMessage>(&buf[..cut]).is_err());
    }
}

#[test]
fn invalid_ids_on_the_wire_are_rejected() {
    // A CreateUser whose user id holds a space, built by hand: tag 1 (Request), the id,
    // no session, tag 0 (CreateUser), then the strings.
    let mut bad = Vec::new();
    encode(
        &ClientMessage::Request {
            id: RequestId { client: 1, seq: 1 },
            session: None,
            request: Request::CreateUser {
                user: UserId::new("ab").unwrap(),
                password: Password::new("pw").unwrap(),
            },
        },
        &mut bad,
    )
    .unwrap();
    let at = bad.windows(2).position(|w| w == b"ab").unwrap();
    bad[at + 1] = b' ';
    // The error says which check refused it (issue 23), not only that serde failed.
    let err = decode::<ClientMessage>(&bad).unwrap_err();
    assert!(matches!(&err, DecodeError::Refused(why) if why.contains("whitespace")), "{err}");
    // Garbage that no type's check sees is malformed as postcard says.
    assert!(matches!(decode::<ClientMessage>(&[0xff; 4]), Err(DecodeError::Malformed(_))));
}

/// Issue 23: a folder's tree whose path holds `..` cannot be decoded, and the error says
/// why; nor can a tree out of canonical order (checked as it is, never repaired).
#[test]
fn hostile_folder_trees_on_the_wire_are_rejected_saying_why() {
    use crate::folder::{folder_digest, Entry, EntryKind, RelPath, Tree};
    let entry = |p: &str, kind| Entry { path: RelPath::parse(p).unwrap(), kind };
    let tree = Tree::new(vec![
        entry("yy", EntryKind::Dir),
        entry("zz", EntryKind::File { size: 1, executable: false }),
    ])
    .unwrap();
    let pieces = vec![Sha1Digest([1; 20])];
    let meta = FileMeta {
        name: FileName::new("d").unwrap(),
        size: 1,
        digest: folder_digest(&tree, &pieces),
        pieces,
        tree: Some(tree),
    };
    let mut good = Vec::new();
    encode(&meta, &mut good).unwrap();
    let patched = |from: &[u8], to: &[u8]| {
        let at = good.windows(from.len()).position(|w| w == from).unwrap();
        [&good[..at], to, &good[at + from.len()..]].concat()
    };
    let err = decode::<FileMeta>(&patched(b"\x02zz", b"\x02..")).unwrap_err();
    assert!(matches!(&err, DecodeError::Refused(why) if why.contains("'..'")), "{err}");
    let err = decode::<FileMeta>(&patched(b"\x02yy", b"\x02zz")).unwrap_err();
    assert!(matches!(&err, DecodeError::Refused(why) if why.contains("out of order")), "{err}");
    assert_eq!(decode::<FileMeta>(&good), Ok(meta));
}

/// Pinned encodings of representative messages of every direction. If one changes (a
/// reordered variant, a new field), peers of the previous build would misread it: bump
/// `PROTOCOL_VERSION` (or `PEER_PROTOCOL_VERSION`) and update these.
#[test]
fn wire_encodings_keep_their_bytes() {
    fn hex<T: serde::Serialize>(msg: &T) -> String {
        let mut bytes = Vec::new();
        crate::codec::encode(msg, &mut bytes).unwrap();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
    let id = RequestId { client: 7, seq: 9 };
    let group = GroupId::new("g").unwrap();
    let cases: Vec<(String, &str)> = vec![
        (hex(&ClientMessage::Hello { version: PROTOCOL_VERSION }), "000a"),
        (
            hex(&ClientMessage::Request {
                id,
                session: Some(SessionToken([1; 32])),
                request: Request::CreateGroup { group: group.clone() },
            }),
            "010709010101010101010101010101010101010101010101010101010101010101010101030167",
        ),
        (
            hex(&TrackerMessage::Response {
                id,
                result: Err(TrackerError::GroupExists(group.clone())),
            }),
            "02070901040167",
        ),
        (
            hex(&ReplicaRequest::Raft { generation: 1, part: vec![1, 2], last: true }),
            "000102010201",
        ),
        (hex(&PeerRequest::GetPiece { piece: PieceIndex(3) }), "0203"),
        (hex(&PEER_PROTOCOL_VERSION), "03"),
        (hex(&PeerReply::Have { pieces: vec![PieceIndex(1), PieceIndex(300)] }), "050201ac02"),
        (
            hex(&PeerReply::Instead { asked: PieceIndex(3), piece: PieceIndex(4), len: 5 }),
            "06030405",
        ),
        (hex(&PeerReply::Elsewhere { piece: PieceIndex(3) }), "0703"),
        // Version 4: heartbeats carry the memberships version the client knows, and their
        // replies the memberships when it changed; peers carry their user. Version 6: the
        // memberships list the pending requests to join the user's own groups.
        (hex(&Request::Heartbeat { known: Some(5) }), "120105"),
        (
            hex(&Reply::Alive {
                memberships: Some(Memberships::new(
                    vec![(group.clone(), GroupRole::Member)],
                    vec![(group.clone(), UserId::new("al").unwrap())],
                )),
            }),
            "0901fcbcf6cf85e2d6c2210101670101016702616c",
        ),
        (
            hex(&PeerInfo {
                user: UserId::new("al").unwrap(),
                addr: "127.0.0.1:7".parse().unwrap(),
                key: PublicKey([2; 32]),
                have: None,
                addrs: Vec::new(),
            }),
            "02616c007f0000010702020202020202020202020202020202020202020202020202020202020202020000",
        ),
        // Version 6 (issue 19): the tracker tells a client the address it sees, and a peer
        // registers every address it may be reached at; appended, so the others stay.
        (
            hex(&TrackerMessage::Welcome {
                version: 6,
                tracker_id: 1,
                observed: "127.0.0.1:7".parse().unwrap(),
            }),
            "000601007f00000107",
        ),
        (
            hex(&Request::Reachable { addrs: vec!["127.0.0.1:7".parse().unwrap()] }),
            "1501007f00000107",
        ),
        // Version 8 (issue 19): long polls for calls, reversals, relays; appended.
        (hex(&Request::AwaitCalls), "18"),
        (
            hex(&ClientMessage::Relay { version: 8, session: SessionToken([1; 32]), nonce: 2 }),
            "0408010101010101010101010101010101010101010101010101010101010101010102",
        ),
        (hex(&TrackerMessage::RelayReady), "03"),
        // Version 9 (issue 19): hole punching, appended (`Request::Punch` is variant 27);
        // version 10 appended the port it punches from to its fields.
        (
            hex(&Request::Punch {
                ticket: Ticket {
                    holder: PublicKey([1; 32]),
                    user: UserId::new("u").unwrap(),
                    group: group.clone(),
                    digest: Sha1Digest([2; 20]),
                    expires: 3,
                    mac: [4; 20],
                },
                seeder: PublicKey([5; 32]),
                nonce: 6,
                port: 7,
            })[..2]
                .to_string(),
            "1b",
        ),
        (
            hex(&PeerRequest::Reversed { version: 3, digest: Sha1Digest([4; 20]), nonce: 5 }),
            "0403040404040404040404040404040404040404040405",
        ),
    ];
    for (got, want) in &cases {
        assert_eq!(got, want);
    }
}

/// Issue 23: a folder's tree from the wire is checked as it is decoded: a path with `..`
/// (here `xx` turned into `..` in the bytes) makes the whole message undecodable.
#[test]
fn a_tree_with_a_dot_dot_path_is_not_decoded() {
    use crate::folder::{folder_digest, Entry, EntryKind, RelPath, Tree};
    let tree = Tree::new(vec![
        Entry { path: RelPath::parse("xx").unwrap(), kind: EntryKind::Dir },
        Entry {
            path: RelPath::parse("xx/f").unwrap(),
            kind: EntryKind::File { size: 0, executable: false },
        },
    ])
    .unwrap();
    let meta = FileMeta {
        name: FileName::new("d").unwrap(),
        size: 0,
        digest: folder_digest(&tree, &[]),
        pieces: Vec::new(),
        tree: Some(tree),
    };
    let msg = ClientMessage::Request {
        id: RequestId { client: 1, seq: 1 },
        session: None,
        request: Request::UploadFile { group: GroupId::new("g").unwrap(), file: meta },
    };
    let mut bytes = Vec::new();
    encode(&msg, &mut bytes).unwrap();
    assert_eq!(decode::<ClientMessage>(&bytes).unwrap(), msg);
    let mut hostile = bytes.clone();
    let mut n = 0;
    for at in 0..hostile.len() - 1 {
        if &hostile[at..at + 2] == b"xx" {
            hostile[at..at + 2].copy_from_slice(b"..");
            n += 1;
        }
    }
    assert_eq!(n, 2);
    assert!(decode::<ClientMessage>(&hostile).is_err());
}

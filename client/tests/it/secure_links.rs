//! Issue 8, secure links: what an attacker on the same network, or a malicious group
//! member, could do with the cleartext, unauthenticated protocol, tried against the real
//! binaries. Each test failed on the code before the secure channel.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::message::{Reply, Request, TrackerError};
use common::peer_message::{PeerReply, PeerRequest, Refusal, PEER_PROTOCOL_VERSION};
use common::{GroupId, PieceIndex};

use crate::support::{peer_connect, write_random, Cluster, RawSession, TIMEOUT};

/// A TCP relay to `target` that keeps every byte it passes, both ways.
struct RecordingProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl RecordingProxy {
    fn start(target: SocketAddr) -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { return };
                let Ok(outbound) = TcpStream::connect(target) else { continue };
                for (mut from, mut to) in [
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                    (outbound, inbound),
                ] {
                    let log = Arc::clone(&log);
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            log.lock().unwrap().extend_from_slice(&buf[..n]);
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        RecordingProxy { addr, seen }
    }

    fn seen(&self) -> Vec<u8> {
        self.seen.lock().unwrap().clone()
    }
}

#[track_caller]
fn assert_absent(haystack: &[u8], needle: &[u8], what: &str) {
    assert!(!needle.is_empty());
    assert!(
        !haystack.windows(needle.len()).any(|w| w == needle),
        "{what} seen in {} recorded bytes",
        haystack.len()
    );
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn get_file(raw: &mut RawSession) -> Result<Reply, TrackerError> {
    raw.call(Request::GetFile { group: GroupId::new("g").unwrap(), name: "f.bin".parse().unwrap() })
}

#[test]
fn a_recording_proxy_sees_no_password_token_ticket_or_file_byte() {
    let (cluster, tracker) = Cluster::with_one_tracker();
    let key = cluster.tracker_key(1);
    let to_tracker = RecordingProxy::start(tracker.addr);
    // A client whose only tracker is the proxy (listed with the real tracker's key).
    let info = cluster.path("via-proxy.txt");
    std::fs::write(&info, format!("{} {key}\n", to_tracker.addr)).unwrap();
    let mut seed = crate::support::ClientProc::start(&info, &cluster.path("seed"), &[]);
    seed.ok("create_user seed hunter2-secret", "created user seed");
    seed.ok("login seed hunter2-secret", "logged in as seed");
    seed.ok("create_group g", "created group g");
    let original = cluster.path("f.bin");
    write_random(&original, 700 * 1024, 77);
    let line = seed.run1(&format!("upload_file {} g", original.display()));
    assert!(line.starts_with("uploaded "), "{line}");

    // A member downloads a piece through a second proxy, in front of the seeder.
    let mut leech = cluster.client("leech");
    leech.sign_up("leech");
    leech.ok("join_group g", "requested to join group g");
    seed.ok("accept_request g leech", "accepted leech into group g");
    let mut raw =
        RawSession::connect_as(to_tracker.addr, &key, common::Identity::generate().unwrap());
    raw.login("leech", "127.0.0.1:9".parse().unwrap());
    let Ok(Reply::FileInfo { meta, peers, ticket }) = get_file(&mut raw) else { panic!() };
    let seeder = peers.iter().find(|p| p.have.is_none()).expect("seeder listed");
    let to_seeder = RecordingProxy::start(seeder.addr);
    let mut conn = peer_connect(to_seeder.addr, &seeder.key, &raw.identity);
    conn.send(&PeerRequest::Hello {
        version: PEER_PROTOCOL_VERSION,
        digest: meta.digest,
        ticket: (*ticket).clone(),
    })
    .unwrap();
    assert!(matches!(conn.recv().unwrap(), Some(PeerReply::Welcome { .. })));
    conn.send(&PeerRequest::GetPiece { piece: PieceIndex(0) }).unwrap();
    let Some(PeerReply::Piece { len, .. }) = conn.recv().unwrap() else { panic!() };
    let mut piece = vec![0u8; len as usize];
    conn.recv_payload(&mut piece).unwrap();
    let bytes = std::fs::read(&original).unwrap();
    assert_eq!(piece, bytes[..len as usize]);
    drop(conn);

    let tracker_bytes = to_tracker.seen();
    let peer_bytes = to_seeder.seen();
    assert!(tracker_bytes.len() > 1000 && peer_bytes.len() > 512 * 1024);
    for recorded in [&tracker_bytes, &peer_bytes] {
        assert_absent(recorded, b"hunter2-secret", "a password");
        assert_absent(recorded, &raw.token().unwrap().0, "a session token");
        assert_absent(recorded, &ticket.mac, "a ticket's MAC");
        assert_absent(recorded, b"leech", "a user name");
        for chunk in bytes.chunks(4096).step_by(16) {
            assert_absent(recorded, &chunk[..64], "file content");
        }
    }
}

#[test]
fn a_process_at_a_trackers_address_without_its_key_gets_nothing() {
    let cluster = Cluster::new(3);
    let mut trackers = cluster.start_all();
    let mut c = cluster.client_via("c", &[2, 1]);
    c.sign_up("alice");
    // Tracker 2 dies; an impostor takes its address, with a key of its own, and records
    // what clients and the other tracker send it.
    trackers[1].kill();
    let impostor = TcpListener::bind(cluster.addrs[1]).unwrap();
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let handshakes_done = Arc::new(Mutex::new(0usize));
    {
        let (recorded, done) = (Arc::clone(&recorded), Arc::clone(&handshakes_done));
        std::thread::spawn(move || {
            let identity = common::Identity::generate().unwrap();
            for stream in impostor.incoming() {
                let Ok(stream) = stream else { return };
                // Keep what arrives (peek leaves it for the handshake), then answer as a
                // real responder would: it cannot work without the listed key.
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let mut first = [0u8; 512];
                if let Ok(n) = stream.peek(&mut first) {
                    recorded.lock().unwrap().extend_from_slice(&first[..n]);
                }
                let deadline = Instant::now() + Duration::from_millis(500);
                if common::secure_channel::respond(stream, &identity, deadline).is_ok() {
                    *done.lock().unwrap() += 1;
                }
            }
        });
    }
    let line = c.run1("create_user bob pw-bob-very-secret");
    assert_eq!(line, "created user bob", "the client used tracker 1");
    c.ok("logout", "logged out");
    c.ok("login bob pw-bob-very-secret", "logged in as bob");
    let deadline = Instant::now() + TIMEOUT;
    // Tracker 1 tried tracker 2 (dropped from the view, or asked to rejoin): wait for
    // at least one connection from it or from the client.
    while recorded.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "nobody connected to the impostor");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(*handshakes_done.lock().unwrap(), 0, "a handshake with the impostor succeeded");
    let bytes = recorded.lock().unwrap().clone();
    assert_absent(&bytes, b"pw-bob-very-secret", "a password");
    assert_absent(&bytes, b"bob", "a user name");
}

#[test]
fn a_stolen_session_token_is_useless_from_another_key() {
    let (cluster, tracker) = Cluster::with_one_tracker();
    let mut c = cluster.client("c");
    c.sign_up("alice");
    let mut victim = RawSession::connect(&cluster, &tracker);
    victim.login("alice", "127.0.0.1:9".parse().unwrap());
    assert_eq!(
        victim.call(Request::ListMyGroups { after: None }),
        Ok(Reply::Groups { groups: vec![], more: false })
    );
    let mut thief = RawSession::connect(&cluster, &tracker);
    thief.use_token(victim.token().unwrap());
    assert_eq!(thief.call(Request::ListMyGroups { after: None }), Err(TrackerError::NotLoggedIn));
    assert_eq!(
        thief.call(Request::CreateGroup { group: GroupId::new("stolen").unwrap() }),
        Err(TrackerError::NotLoggedIn)
    );
    assert_eq!(thief.call(Request::Logout), Err(TrackerError::NotLoggedIn));
    // Not even the state digest (whose sequence number tells how busy the tracker is).
    assert_eq!(thief.call(Request::StateDigest), Err(TrackerError::NotLoggedIn));
    assert!(matches!(victim.call(Request::StateDigest), Ok(Reply::StateDigest { .. })));
    // The victim's session is untouched.
    assert_eq!(
        victim.call(Request::ListMyGroups { after: None }),
        Ok(Reply::Groups { groups: vec![], more: false })
    );
}

#[test]
fn stolen_and_modified_tickets_are_refused_by_seeders() {
    let (cluster, tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "member", "other"], &[]);
    c[2].ok("create_group secret", "created group secret");
    let original = cluster.path("f.bin");
    write_random(&original, 600 * 1024, 5);
    c[0].run1(&format!("upload_file {} g", original.display()));
    // A file in group `secret`, which member is not in, shared by `other`.
    let hidden = cluster.path("h.bin");
    write_random(&hidden, 600 * 1024, 6);
    let line = c[2].run1(&format!("upload_file {} secret", hidden.display()));
    assert!(line.starts_with("uploaded "), "{line}");

    let mut member = RawSession::connect(&cluster, &tracker);
    member.login("member", "127.0.0.1:9".parse().unwrap());
    let Ok(Reply::FileInfo { meta, peers, ticket }) = get_file(&mut member) else { panic!() };
    let seed = peers.iter().find(|p| p.have.is_none()).unwrap().clone();
    let hello = |ticket: common::message::Ticket, digest| PeerRequest::Hello {
        version: PEER_PROTOCOL_VERSION,
        digest,
        ticket,
    };

    // The genuine holder is welcome (and the ticket is now in the seeder's cache).
    let mut genuine = peer_connect(seed.addr, &seed.key, &member.identity);
    genuine.send(&hello((*ticket).clone(), meta.digest)).unwrap();
    assert!(matches!(genuine.recv().unwrap(), Some(PeerReply::Welcome { .. })));

    // The same ticket shown from another key.
    let thief = common::Identity::generate().unwrap();
    let mut stolen = peer_connect(seed.addr, &seed.key, &thief);
    stolen.send(&hello((*ticket).clone(), meta.digest)).unwrap();
    assert!(
        matches!(
            stolen.recv().unwrap(),
            Some(PeerReply::Refused { reason: Refusal::BadTicket(_) })
        ),
        "a stolen ticket was accepted"
    );

    // The cached ticket with its group and digest swapped for the hidden file's, shown by
    // its holder to the hidden file's seeder (another member of `secret`).
    let mut other = RawSession::connect(&cluster, &tracker);
    other.login("other", "127.0.0.1:9".parse().unwrap());
    let request =
        Request::GetFile { group: GroupId::new("secret").unwrap(), name: "h.bin".parse().unwrap() };
    let answer = other.call(request);
    let Ok(Reply::FileInfo { meta: hidden_meta, peers: hidden_peers, .. }) = answer else {
        panic!("{answer:?}")
    };
    let hidden_seed = hidden_peers.iter().find(|p| p.have.is_none()).unwrap();
    let mut swapped = (*ticket).clone();
    swapped.group = GroupId::new("secret").unwrap();
    swapped.digest = hidden_meta.digest;
    let mut modified = peer_connect(hidden_seed.addr, &hidden_seed.key, &member.identity);
    modified.send(&hello(swapped, hidden_meta.digest)).unwrap();
    assert!(
        matches!(
            modified.recv().unwrap(),
            Some(PeerReply::Refused { reason: Refusal::BadTicket(_) })
        ),
        "a modified ticket was accepted"
    );
}

#[test]
fn a_member_who_left_is_refused_within_one_ticket_lifetime() {
    let cluster = Cluster::new(1);
    let tracker = cluster.try_start_tracker(1, &["--ticket-lifetime", "3"]).unwrap();
    let mut c = cluster.members(&["seed", "member"], &[]);
    let original = cluster.path("f.bin");
    write_random(&original, 600 * 1024, 7);
    c[0].run1(&format!("upload_file {} g", original.display()));
    let mut member = RawSession::connect(&cluster, &tracker);
    member.login("member", "127.0.0.1:9".parse().unwrap());
    let Ok(Reply::FileInfo { meta, peers, ticket }) = get_file(&mut member) else { panic!() };
    assert!(ticket.expires <= unix_now() + 3);
    let seed = peers.iter().find(|p| p.have.is_none()).unwrap().clone();
    let mut conn = peer_connect(seed.addr, &seed.key, &member.identity);
    conn.send(&PeerRequest::Hello {
        version: PEER_PROTOCOL_VERSION,
        digest: meta.digest,
        ticket: (*ticket).clone(),
    })
    .unwrap();
    assert!(matches!(conn.recv().unwrap(), Some(PeerReply::Welcome { .. })));

    member.call(Request::LeaveGroup { group: GroupId::new("g").unwrap() }).unwrap();
    assert_eq!(get_file(&mut member), Err(TrackerError::NotMember(GroupId::new("g").unwrap())));
    // The seeder's clock ends the connection at the ticket's expiry, telling why, without
    // waiting for the next request (issue 21).
    assert_eq!(conn.recv().unwrap(), Some(PeerReply::Refused { reason: Refusal::Expired }));
    assert!(unix_now() > ticket.expires, "refused before the ticket expired");
    assert!(unix_now() <= ticket.expires + 2, "refused late");
    let mut again = peer_connect(seed.addr, &seed.key, &member.identity);
    again
        .send(&PeerRequest::Hello {
            version: PEER_PROTOCOL_VERSION,
            digest: meta.digest,
            ticket: (*ticket).clone(),
        })
        .unwrap();
    assert_eq!(again.recv().unwrap(), Some(PeerReply::Refused { reason: Refusal::Expired }));
}

/// Issue 21: an owner removes a member in the middle of a download. The member's ticket
/// stops working at every seeder within the ticket lifetime (4 s here; README "Security"),
/// even for a downloader that keeps asking with it, while another member's download goes
/// on and completes.
#[test]
fn a_removed_members_download_stops_within_the_ticket_lifetime_while_another_goes_on() {
    const LIFETIME: u64 = 4;
    let cluster = Cluster::new(1);
    let tracker = cluster.try_start_tracker(1, &["--ticket-lifetime", "4"]).unwrap();
    // The owner serves at 1 MB/s, so both downloads take longer than the ticket lives.
    let mut c = cluster.members(&["owner", "bob", "carol"], &["--max-upload-rate", "1000000"]);
    let original = cluster.path("f.bin");
    write_random(&original, 12 * 1024 * 1024, 21);
    c[0].run1(&format!("upload_file {} g", original.display()));
    let out = cluster.path("carol.bin");
    c[2].run1(&format!("download_file g f.bin {}", out.display()));

    // bob downloads through a raw connection, which keeps asking whatever it is told.
    let mut bob = RawSession::connect(&cluster, &tracker);
    bob.login("bob", "127.0.0.1:9".parse().unwrap());
    let Ok(Reply::FileInfo { meta, peers, ticket }) = get_file(&mut bob) else { panic!() };
    let seed = peers.iter().find(|p| p.have.is_none()).expect("the owner is listed").clone();
    let mut conn = peer_connect(seed.addr, &seed.key, &bob.identity);
    let hello = PeerRequest::Hello {
        version: PEER_PROTOCOL_VERSION,
        digest: meta.digest,
        ticket: (*ticket).clone(),
    };
    conn.send(&hello).unwrap();
    assert!(matches!(conn.recv().unwrap(), Some(PeerReply::Welcome { .. })));
    let n_pieces = meta.pieces.len() as u32;
    let mut buf = vec![0u8; common::PIECE_SIZE];
    let mut next = 0u32;
    // One request: whether a piece came (`None`: refused, with the reason).
    let mut fetch = |conn: &mut common::connection::Connection<PeerReply, PeerRequest>| {
        next = (next + 1) % n_pieces;
        conn.send(&PeerRequest::GetPiece { piece: PieceIndex(next) }).unwrap();
        match conn.recv().unwrap() {
            Some(PeerReply::Piece { len, .. } | PeerReply::Instead { len, .. }) => {
                conn.recv_payload(&mut buf[..len as usize]).unwrap();
                Ok(true)
            }
            // Handed to carol (super-seeding): ask for another, at a polite pace.
            Some(PeerReply::Elsewhere { .. } | PeerReply::NoPiece { .. }) => {
                std::thread::sleep(Duration::from_millis(50));
                Ok(false)
            }
            Some(PeerReply::Refused { reason }) => Err(reason),
            other => panic!("unexpected {other:?}"),
        }
    };
    let mut got = 0;
    while got < 2 {
        got += u32::from(fetch(&mut conn).expect("served while a member"));
    }

    c[0].ok("remove_member g bob", "removed bob from group g");
    let removed_at = Instant::now();
    assert_eq!(get_file(&mut bob), Err(TrackerError::NotMember(GroupId::new("g").unwrap())));
    // bob keeps asking with the ticket it holds: served until it expires, then refused.
    let reason = loop {
        let asked_at = unix_now();
        match fetch(&mut conn) {
            Ok(_) => assert!(
                asked_at <= ticket.expires,
                "a piece was served on a ticket that had expired at {}",
                ticket.expires
            ),
            Err(reason) => break reason,
        }
        assert!(removed_at.elapsed() < Duration::from_secs(LIFETIME + 3), "still served");
    };
    assert_eq!(reason, Refusal::Expired);
    let cut_after = removed_at.elapsed();
    assert!(cut_after <= Duration::from_secs(LIFETIME + 2), "refused after {cut_after:?}");
    let mut again = peer_connect(seed.addr, &seed.key, &bob.identity);
    again.send(&hello).unwrap();
    assert_eq!(again.recv().unwrap(), Some(PeerReply::Refused { reason: Refusal::Expired }));

    // carol, a member all along, was downloading meanwhile and completes.
    let now = c[2].downloads();
    assert!(now[0].state == "downloading" || now[0].state == "complete", "{now:?}");
    let done = c[2].wait_downloads();
    assert!(done[0].starts_with("[C] [g] f.bin"), "{done:?}");
    crate::support::assert_same_file(&original, &out);
}

#[test]
fn a_long_download_renews_its_tickets() {
    // Tickets of 3 s, a download of about 8 s: it finishes only if renewal works.
    let cluster = Cluster::new(1);
    let _tracker = cluster.try_start_tracker(1, &["--ticket-lifetime", "3"]).unwrap();
    let mut c = cluster.members(&["seed", "leech"], &["--max-upload-rate", "1000000"]);
    let original = cluster.path("f.bin");
    write_random(&original, 8 * 1024 * 1024, 8);
    c[0].run1(&format!("upload_file {} g", original.display()));
    let out = cluster.path("out.bin");
    c[1].run1(&format!("download_file g f.bin {}", out.display()));
    let done = c[1].wait_downloads();
    assert!(done[0].starts_with("[C] [g] f.bin"), "{done:?}");
    crate::support::assert_same_file(&original, &out);
}

#[test]
fn a_tracker_whose_line_lists_another_key_refuses_to_start_naming_the_line() {
    let cluster = Cluster::new(2);
    let other = common::Identity::generate().unwrap().public();
    let text = std::fs::read_to_string(&cluster.info).unwrap();
    let wrong = text
        .replace(&format!("{}\n", cluster.addrs[1]), &format!("{} {other}\n", cluster.addrs[1]));
    std::fs::write(&cluster.info, &wrong).unwrap();
    assert!(cluster.try_start_tracker(2, &[]).is_none(), "started with a wrong key listed");
    let log = cluster.tracker_log(2);
    assert!(log.contains("line 3 lists key") && log.contains(&other.to_string()), "{log}");
    assert!(log.contains("put ") && log.contains("on line 3"), "{log}");
    // The file is left as it was.
    assert_eq!(std::fs::read_to_string(&cluster.info).unwrap(), wrong);
}

#[test]
fn a_tracker_with_every_client_slot_taken_still_answers_the_others() {
    let cluster = Cluster::new(3);
    let one = cluster.try_start_tracker(1, &["--max-connections", "2"]).unwrap();
    let mut two = cluster.try_start_tracker(2, &["--max-connections", "2"]).unwrap();
    let mut three = cluster.try_start_tracker(3, &["--max-connections", "2"]).unwrap();
    one.wait_serving();
    two.wait_serving();
    three.wait_serving();
    // Two idle clients fill tracker 1's client slots, and a stranger on another address
    // opens many connections and never finishes a handshake.
    let idle: Vec<RawSession> = (0..2).map(|_| RawSession::connect(&cluster, &one)).collect();
    let stranger = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let stalled: Vec<TcpStream> =
        (0..100).map(|_| crate::support::connect_from(stranger, one.addr)).collect();
    // Tracker 2 restarts: it takes part again only through new connections (to tracker 1
    // among others).
    two.kill();
    let mut two = cluster.try_start_tracker(2, &["--max-connections", "2"]).unwrap();
    two.wait_serving();
    // A client that can use only tracker 2, whose writes tracker 2 forwards to the leader.
    let mut c = cluster.client_via("c", &[2]);
    c.sign_up("alice");
    c.ok("create_group g", "created group g");
    let mut one = one;
    crate::support::wait_converged(&mut [&mut one, &mut two, &mut three]);
    let log = cluster.tracker_log(1);
    // The stranger's silent connections held at most its share: each newcomer of its
    // took the place of one (issue 21), and the trackers' links were never kept out.
    assert!(log.contains("closing a silent or stalled handshake for a newcomer"), "{log}");
    drop((idle, stalled));
}

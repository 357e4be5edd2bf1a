//! Issue 13: the tracker under hostile load. Each test plays one attack against the real
//! binaries and checks that legitimate users are still served.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::message::{Reply, Request, RequestId, TrackerError};
use common::{GroupId, Password, UserId};

use crate::support::*;

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

fn group(name: &str) -> GroupId {
    GroupId::new(name).unwrap()
}

/// Creates `name` (password `pw-<name>`) through a raw session.
fn create_user(raw: &mut RawSession, name: &str) {
    let password = Password::new(format!("pw-{name}")).unwrap();
    assert_eq!(raw.call(Request::CreateUser { user: user(name), password }), Ok(Reply::Done));
}

/// One tracker, elected and serving (raw sessions do not retry while it elects itself).
fn one_tracker(args: &[&str]) -> (Cluster, TrackerProc) {
    let (cluster, tracker) = Cluster::with_one_tracker_args(args);
    tracker.wait_serving();
    (cluster, tracker)
}

/// A heartbeat: whether the session is alive.
fn alive(raw: &mut RawSession) -> Result<(), TrackerError> {
    raw.call(Request::Heartbeat { known: None }).map(|_| ())
}

fn wrong_login(raw: &mut RawSession, name: &str) -> Result<Reply, TrackerError> {
    let token = common::message::SessionToken([7; 32]);
    let password = Password::new("not-the-password").unwrap();
    let peer_addr = "127.0.0.1:9".parse().unwrap();
    raw.call(Request::Login { user: user(name), password, peer_addr, session: token })
}

#[test]
fn password_guessing_is_throttled_per_address_and_the_user_still_logs_in() {
    let (cluster, tracker) = one_tracker(&[]);
    let mut alice = RawSession::connect(&cluster, &tracker);
    create_user(&mut alice, "alice");
    let mut guesser = RawSession::connect_from(&cluster, &tracker, Ipv4Addr::new(127, 0, 0, 2));
    // Ten free failures (the default), then the address waits.
    for n in 0..10 {
        assert_eq!(wrong_login(&mut guesser, "alice"), Err(TrackerError::WrongPassword), "{n}");
    }
    assert_eq!(wrong_login(&mut guesser, "alice"), Err(TrackerError::WrongPassword));
    let asked = Instant::now();
    let refused = wrong_login(&mut guesser, "alice");
    assert!(
        matches!(&refused, Err(TrackerError::TooManyAttempts { what, .. })
            if what == "failed logins from this address"),
        "{refused:?}"
    );
    // The refusal was held for the wait it names (1 s, the first backoff), so that a
    // guesser retrying at once does not cost the tracker a core.
    assert!(asked.elapsed() >= Duration::from_secs(1), "{:?}", asked.elapsed());
    // Once that wait is over one more attempt is checked (bob does not exist, which counts
    // as a failure too), and the next waits twice as long, whichever user it names.
    let checked = wrong_login(&mut guesser, "bob");
    assert!(!matches!(checked, Err(TrackerError::TooManyAttempts { .. })), "{checked:?}");
    let refused = wrong_login(&mut guesser, "carol");
    assert!(
        matches!(refused, Err(TrackerError::TooManyAttempts { retry_after_secs: 2, .. })),
        "{refused:?}"
    );
    // Alice, from her own address, is not held up.
    alice.login("alice", "127.0.0.1:9".parse().unwrap());
    assert_eq!(alice.call(Request::ListMyGroups { after: None }).map(|_| ()), Ok(()));
}

#[test]
fn a_flood_of_logins_is_answered_busy_at_once_never_left_to_time_out() {
    // One hashing thread and a slow hash: the queue (4) fills at once.
    let (cluster, tracker) = one_tracker(&["--kdf-threads", "1", "--kdf-iterations", "50000"]);
    let names: Vec<String> = (0..10).map(|n| format!("u{n}")).collect();
    let mut setup = RawSession::connect(&cluster, &tracker);
    for name in &names {
        // Creations queue too: retry the busy ones.
        let password = Password::new(format!("pw-{name}")).unwrap();
        let create = Request::CreateUser { user: user(name), password };
        while setup.call(create.clone()) != Ok(Reply::Done) {}
    }
    let mut sessions: Vec<RawSession> =
        names.iter().map(|_| RawSession::connect(&cluster, &tracker)).collect();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(names.len()));
    let answers: Vec<(Result<Reply, TrackerError>, std::time::Duration)> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = sessions
                .iter_mut()
                .zip(&names)
                .map(|(raw, name)| {
                    let barrier = std::sync::Arc::clone(&barrier);
                    scope.spawn(move || {
                        // 32 random bytes (a fresh public key is as random as any).
                        let token = common::message::SessionToken(
                            common::Identity::generate().unwrap().public().0,
                        );
                        let request = Request::Login {
                            user: user(name),
                            password: Password::new(format!("pw-{name}")).unwrap(),
                            peer_addr: "127.0.0.1:9".parse().unwrap(),
                            session: token,
                        };
                        barrier.wait();
                        let started = Instant::now();
                        (raw.call(request), started.elapsed())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
    let busy = answers.iter().filter(|(r, _)| matches!(r, Err(TrackerError::Busy(_)))).count();
    let logged_in = answers.iter().filter(|(r, _)| *r == Ok(Reply::LoggedIn)).count();
    assert_eq!(busy + logged_in, names.len(), "{answers:?}");
    assert!(busy >= 1, "10 logins at once on 1 thread with a queue of 4: {answers:?}");
    assert!(logged_in >= 1, "{answers:?}");
    // The refusals came at once, not after the queued hashes.
    let slowest_login = answers.iter().filter(|(r, _)| r.is_ok()).map(|(_, d)| *d).max();
    let slowest_busy = answers.iter().filter(|(r, _)| r.is_err()).map(|(_, d)| *d).max();
    assert!(slowest_busy < slowest_login, "{answers:?}");
}

#[test]
fn a_retry_is_recognised_only_from_the_same_key_with_the_same_content() {
    let (cluster, tracker) = one_tracker(&[]);
    let mut alice = RawSession::connect(&cluster, &tracker);
    create_user(&mut alice, "alice");
    alice.login("alice", "127.0.0.1:9".parse().unwrap());
    let id = RequestId { client: 42, seq: 1 };
    assert_eq!(alice.call_as(id, Request::CreateGroup { group: group("a") }), Ok(Reply::Done));
    // The same id again is a retry: answered from the record, not applied twice.
    assert_eq!(alice.call_as(id, Request::CreateGroup { group: group("a") }), Ok(Reply::Done));
    // The same id with other content is a new request.
    assert_eq!(alice.call_as(id, Request::CreateGroup { group: group("b") }), Ok(Reply::Done));
    // Another key replaying alice's id gets its own answer, not alice's.
    let mut mallory = RawSession::connect(&cluster, &tracker);
    create_user(&mut mallory, "mallory");
    mallory.login("mallory", "127.0.0.1:9".parse().unwrap());
    assert_eq!(
        mallory.call_as(id, Request::CreateGroup { group: group("b") }),
        Err(TrackerError::GroupExists(group("b")))
    );
    let mine = alice.call(Request::ListMyGroups { after: None });
    assert_eq!(mine, Ok(Reply::Groups { groups: vec![group("a"), group("b")], more: false }));
}

#[test]
fn logout_all_ends_every_session_of_the_user() {
    let (cluster, tracker) = one_tracker(&[]);
    let mut phone = RawSession::connect(&cluster, &tracker);
    create_user(&mut phone, "alice");
    phone.login("alice", "127.0.0.1:9".parse().unwrap());
    let mut laptop = RawSession::connect(&cluster, &tracker);
    laptop.login("alice", "127.0.0.1:10".parse().unwrap());
    let mut c = cluster.client("bob");
    c.sign_up("bob");
    assert_eq!(laptop.call(Request::LogoutEverywhere), Ok(Reply::Done));
    assert_eq!(phone.call(Request::ListMyGroups { after: None }), Err(TrackerError::NotLoggedIn));
    assert_eq!(laptop.call(Request::ListMyGroups { after: None }), Err(TrackerError::NotLoggedIn));
    // Other users' sessions are untouched; the REPL says it too.
    c.ok("logout --all", "logged out everywhere");
    c.ok("login bob pw-bob", "logged in as bob");
    assert_eq!(c.run("list_my_groups"), Vec::<String>::new());
}

#[test]
fn idle_sessions_end_and_live_ones_do_not() {
    let (cluster, tracker) = one_tracker(&["--session-idle-timeout", "2"]);
    let mut idle = RawSession::connect(&cluster, &tracker);
    create_user(&mut idle, "alice");
    idle.login("alice", "127.0.0.1:9".parse().unwrap());
    // This one sends heartbeats by hand, more often than the timeout.
    let mut live = RawSession::connect(&cluster, &tracker);
    live.login("alice", "127.0.0.1:10".parse().unwrap());
    // Any request of the idle session would keep it alive: watch the tracker's log
    // instead, while the live one keeps sending heartbeats.
    let deadline = Instant::now() + TIMEOUT;
    while !cluster.tracker_log(1).contains("silent for longer than the session idle timeout") {
        assert_eq!(alive(&mut live), Ok(()), "the live session ended");
        assert!(Instant::now() < deadline, "the idle session never ended");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The line is logged as the close is proposed: it is applied a moment later (a
    // heartbeat now cannot undo it).
    while alive(&mut idle).is_ok() {
        assert!(Instant::now() < deadline, "the idle session's close never applied");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(alive(&mut idle), Err(TrackerError::NotLoggedIn));
    assert_eq!(alive(&mut live), Ok(()));
}

#[test]
fn a_users_sessions_are_capped_and_a_silent_one_makes_room() {
    let (cluster, tracker) = one_tracker(&["--max-sessions-per-user", "2", "--peer-timeout", "1"]);
    let mut first = RawSession::connect(&cluster, &tracker);
    create_user(&mut first, "alice");
    first.login("alice", "127.0.0.1:9".parse().unwrap());
    let mut second = RawSession::connect(&cluster, &tracker);
    second.login("alice", "127.0.0.1:10".parse().unwrap());
    // Both live: a third login is refused, naming the option.
    let mut third = RawSession::connect(&cluster, &tracker);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        // Keep the second one live; the first goes silent and is no longer live after 1 s.
        assert_eq!(alive(&mut second), Ok(()));
        match third.try_login("alice", "127.0.0.1:11".parse().unwrap()) {
            Ok(()) => break,
            Err(TrackerError::QuotaExceeded(why)) => {
                assert!(why.contains("--max-sessions-per-user"), "{why}");
            }
            Err(other) => panic!("unexpected {other}"),
        }
        assert!(Instant::now() < deadline, "the silent session never made room");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The silent session made room; the live one is still there.
    assert_eq!(alive(&mut first), Err(TrackerError::NotLoggedIn));
    assert_eq!(alive(&mut second), Ok(()));
    assert_eq!(alive(&mut third), Ok(()));
}

#[test]
fn quotas_refuse_with_the_option_to_change_them() {
    let (cluster, _tracker) =
        one_tracker(&["--max-groups-per-user", "2", "--max-requests-per-user", "1"]);
    let mut c = cluster.client("alice");
    c.sign_up("alice");
    c.ok("create_group g1", "created group g1");
    c.ok("create_group g2", "created group g2");
    c.err(
        "create_group g3",
        "limit reached: alice already owns 2 groups (tracker option --max-groups-per-user)",
    );
    let mut b = cluster.client("bob");
    b.sign_up("bob");
    b.ok("join_group g1", "requested to join group g1");
    b.err(
        "join_group g2",
        "limit reached: bob already has 1 join requests pending (tracker option \
         --max-requests-per-user)",
    );
    // Nothing else is affected.
    c.ok("accept_request g1 bob", "accepted bob into group g1");
    b.ok("join_group g2", "requested to join group g2");
}

#[test]
fn long_lists_come_in_pages_and_every_item_arrives() {
    const GROUPS: usize = 2500;
    let (cluster, tracker) =
        one_tracker(&["--max-groups-per-user", "100000", "--max-writes-per-second", "100000"]);
    let mut raw = RawSession::connect(&cluster, &tracker);
    create_user(&mut raw, "alice");
    raw.login("alice", "127.0.0.1:9".parse().unwrap());
    // A few sessions at once, so that the writes share fsyncs.
    std::thread::scope(|scope| {
        for part in 0..8 {
            let mut s = RawSession::connect(&cluster, &tracker);
            s.login("alice", "127.0.0.1:9".parse().unwrap());
            scope.spawn(move || {
                for n in (part..GROUPS).step_by(8) {
                    let g = group(&format!("g{n:05}"));
                    assert_eq!(s.call(Request::CreateGroup { group: g }), Ok(Reply::Done));
                }
            });
        }
    });
    let first = raw.call(Request::ListGroups { after: None });
    let Ok(Reply::Groups { groups, more: true }) = first else { panic!("{first:?}") };
    assert_eq!(groups.len(), common::message::MAX_PAGE_ITEMS);
    let mut c = cluster.client("bob");
    c.sign_up("bob");
    let lines = c.run("list_groups");
    let expected: Vec<String> = (0..GROUPS).map(|n| format!("g{n:05}")).collect();
    assert_eq!(lines, expected);
}

#[test]
fn announcements_must_match_the_files_piece_count() {
    let (cluster, tracker) = one_tracker(&[]);
    let mut c = cluster.members(&["seed", "mallory"], &[]);
    let original = cluster.path("f.bin");
    std::fs::write(&original, vec![7u8; 3 * 512 * 1024]).unwrap();
    c[0].ok(
        &format!("upload_file {} g", original.display()),
        "uploaded f.bin to group g (1572864 bytes, 3 pieces)",
    );
    let mut raw = RawSession::connect(&cluster, &tracker);
    raw.login("mallory", "127.0.0.1:9".parse().unwrap());
    let digest = common::hash::file_digest(
        3 * 512 * 1024,
        &(0..3).map(|_| common::Sha1Digest::of(&vec![7u8; 512 * 1024])).collect::<Vec<_>>(),
    );
    let huge = common::Bitfield::empty(5_000_000);
    let refused = raw.call(Request::AnnouncePieces { group: group("g"), digest, have: huge });
    assert!(matches!(refused, Err(TrackerError::BadFileMeta(_))), "{refused:?}");
    let right = common::Bitfield::empty(3);
    let ok = raw.call(Request::AnnouncePieces { group: group("g"), digest, have: right });
    assert_eq!(ok, Ok(Reply::Done));
}

#[test]
fn strangers_holding_a_seeders_connections_do_not_stop_its_downloads() {
    let (cluster, _tracker) = one_tracker(&[]);
    let mut c = cluster.members(&["seed", "leech"], &[]);
    let original = cluster.path("f.bin");
    write_random(&original, 2 * 1024 * 1024, 13);
    c[0].run1(&format!("upload_file '{}' g", original.display()));
    // A stranger (no ticket) keeps opening connections to the seeder's port from one
    // address, holding the last 200, sending nothing: every slot it can take, it takes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seeder = c[0].listen;
    let attacker = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut held = std::collections::VecDeque::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                held.push_back(connect_from(Ipv4Addr::new(127, 0, 0, 2), seeder));
                if held.len() > 200 {
                    held.pop_front();
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    let out = cluster.path("out.bin");
    c[1].run1(&format!("download_file g f.bin {}", out.display()));
    let done = c[1].wait_downloads();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    attacker.join().unwrap();
    assert!(done[0].starts_with("[C] [g] f.bin"), "{done:?}");
    assert_same_file(&original, &out);
}

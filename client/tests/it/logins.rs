//! Issue 21: device-trusted logins and account creation under attack. Each test plays one
//! attack of the issue on the real tracker binary and checks both that it fails and that
//! real users are still served.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::message::{Reply, Request, SessionToken, TrackerError};
use common::{Identity, Password, UserId};

use crate::support::*;

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

fn create(raw: &mut RawSession, name: &str) {
    let password = Password::new(format!("pw-{name}")).unwrap();
    assert_eq!(raw.call(Request::CreateUser { user: user(name), password }), Ok(Reply::Done));
}

fn login_with(raw: &mut RawSession, name: &str, password: &str) -> Result<Reply, TrackerError> {
    let token = SessionToken(Identity::generate().unwrap().public().0);
    let password = Password::new(password).unwrap();
    let peer_addr = "127.0.0.1:9".parse().unwrap();
    raw.call(Request::Login { user: user(name), password, peer_addr, session: token })
}

fn one_tracker(args: &[&str]) -> (Cluster, TrackerProc) {
    let (cluster, tracker) = Cluster::with_one_tracker_args(args);
    tracker.wait_serving();
    (cluster, tracker)
}

#[test]
fn a_login_to_ones_own_account_does_not_reset_the_guessing_throttle() {
    let (cluster, tracker) = one_tracker(&[]);
    let mut setup = RawSession::connect(&cluster, &tracker);
    create(&mut setup, "victim");
    create(&mut setup, "mallory");
    let from = Ipv4Addr::new(127, 0, 0, 2);
    let mut mallory = RawSession::connect_from(&cluster, &tracker, from);
    let (mut checked, mut refused) = (0, 0);
    for n in 0..14 {
        match login_with(&mut mallory, "victim", "guess") {
            Err(TrackerError::WrongPassword) => checked += 1,
            Err(TrackerError::TooManyAttempts { .. }) => refused += 1,
            other => panic!("{other:?}"),
        }
        if n % 2 == 0 {
            // Its own account, with its own (now known) key: never held back by its guesses.
            assert_eq!(login_with(&mut mallory, "mallory", "pw-mallory"), Ok(Reply::LoggedIn));
        }
    }
    println!("guesses checked {checked}, refused {refused}");
    // Ten free guesses, then a doubling wait (which the held refusals make it sit out):
    // before issue 21, each own login reset the count and every guess was checked.
    assert!(checked <= 12 && refused >= 2, "checked {checked}, refused {refused}");
    // The victim, from elsewhere, logs in.
    let mut victim = RawSession::connect(&cluster, &tracker);
    victim.login("victim", "127.0.0.1:9".parse().unwrap());
}

#[test]
fn guessers_on_a_shared_address_do_not_lock_out_a_device_that_logged_in_there() {
    let (cluster, tracker) = one_tracker(&[]);
    let mut setup = RawSession::connect(&cluster, &tracker);
    create(&mut setup, "victim");
    create(&mut setup, "alice");
    let shared = Ipv4Addr::new(127, 0, 0, 2);
    // Alice's client logged in from the shared address before.
    let device = Identity::generate().unwrap();
    let mut alice = RawSession::connect_from_as(&cluster, &tracker, shared, device.clone());
    alice.login("alice", "127.0.0.1:9".parse().unwrap());
    drop(alice);
    // 32 clients on the same address guess victim's password (and alice's).
    let (addr, key) = (tracker.addr, cluster.tracker_key(1));
    std::thread::scope(|scope| {
        for n in 0..32 {
            let key = &key;
            scope.spawn(move || {
                let name = if n % 2 == 0 { "victim" } else { "alice" };
                // Admission lets 8 handshakes from one address run at once: retry.
                loop {
                    let fresh = Identity::generate().unwrap();
                    let connected = std::panic::catch_unwind(|| {
                        RawSession::connect_at_from(addr, key, shared, fresh)
                    });
                    if let Ok(mut guesser) = connected {
                        let answer = login_with(&mut guesser, name, "guess");
                        println!("guesser {n}: {answer:?}");
                        assert!(answer.is_err(), "{answer:?}");
                        break;
                    }
                }
            });
        }
    });
    // (A new device there may have to wait out the address's backoff, which depends on
    // how long the guessers' held refusals took: not asserted.)
    // Alice's device comes back from there: in at once, without a wait.
    let started = Instant::now();
    let mut alice = RawSession::connect_from_as(&cluster, &tracker, shared, device);
    alice.login("alice", "127.0.0.1:9".parse().unwrap());
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    // And victim, from a clean address.
    let mut victim = RawSession::connect(&cluster, &tracker);
    victim.login("victim", "127.0.0.1:9".parse().unwrap());
}

#[test]
fn a_flood_of_right_passwords_is_throttled_and_a_known_device_goes_first() {
    // One hashing thread and slow hashes, so that the queue matters.
    let (cluster, tracker) = one_tracker(&["--kdf-threads", "1", "--kdf-iterations", "5000"]);
    let mut setup = RawSession::connect(&cluster, &tracker);
    for name in ["alice", "mallory"] {
        let create = Request::CreateUser {
            user: user(name),
            password: Password::new(format!("pw-{name}")).unwrap(),
        };
        while setup.call(create.clone()) != Ok(Reply::Done) {}
    }
    let device = Identity::generate().unwrap();
    let mut alice = RawSession::connect_as(tracker.addr, &cluster.tracker_key(1), device.clone());
    alice.login("alice", "127.0.0.1:9".parse().unwrap());
    drop(alice);
    // Eight connections at a time with fresh keys flood mallory's right password from another address.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (addr, key) = (tracker.addr, cluster.tracker_key(1));
    let (logged_in, limited, busy) = std::thread::scope(|scope| {
        let flood: Vec<_> = (0..8)
            .map(|_| {
                let (key, stop) = (&key, &stop);
                scope.spawn(move || {
                    let from = Ipv4Addr::new(127, 0, 0, 2);
                    let (mut ok, mut limited, mut busy) = (0, 0, 0);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let fresh = Identity::generate().unwrap();
                        let connected = std::panic::catch_unwind(|| {
                            RawSession::connect_at_from(addr, key, from, fresh)
                        });
                        // Admission may refuse some of the flood's connections.
                        let Ok(mut raw) = connected else { continue };
                        match login_with(&mut raw, "mallory", "pw-mallory") {
                            Ok(_) | Err(TrackerError::QuotaExceeded(_)) => ok += 1,
                            Err(TrackerError::TooManyAttempts { .. }) => limited += 1,
                            Err(TrackerError::Busy(_)) => busy += 1,
                            Err(other) => panic!("{other:?}"),
                        }
                    }
                    (ok, limited, busy)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        // Alice's device logs in meanwhile, three times.
        for _ in 0..3 {
            let started = Instant::now();
            let mut alice =
                RawSession::connect_as(tracker.addr, &cluster.tracker_key(1), device.clone());
            loop {
                match alice.try_login("alice", "127.0.0.1:9".parse().unwrap()) {
                    Ok(()) => break,
                    Err(TrackerError::Busy(_)) => continue,
                    Err(other) => panic!("{other:?}"),
                }
            }
            println!("alice's login during the flood took {:?}", started.elapsed());
            assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        }
        std::thread::sleep(Duration::from_secs(4));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        flood
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
    });
    println!("flood: {logged_in} logged in, {limited} rate-limited, {busy} busy");
    // At most the user's burst (60), a token every 0.4 s over about 6 s, and the logins
    // in flight when the bucket emptied (8 connections).
    assert!(logged_in <= 60 + 16 + 8, "{logged_in} right logins in 6 s");
    assert!(limited >= 1, "the flood was never rate-limited");
}

#[test]
fn create_user_cannot_enumerate_user_ids() {
    let (cluster, tracker) = one_tracker(&["--signups-per-ip-per-hour", "10"]);
    let mut setup = RawSession::connect(&cluster, &tracker);
    create(&mut setup, "alice");
    let prober = Ipv4Addr::new(127, 0, 0, 2);
    let mut raw = RawSession::connect_from(&cluster, &tracker, prober);
    let probe = |raw: &mut RawSession, name: &str| {
        let password = Password::new("whatever").unwrap();
        raw.call(Request::CreateUser { user: user(name), password })
    };
    // Ten attempts an hour from one address, whether the names exist or not.
    let mut answers = Vec::new();
    for n in 0..10 {
        answers.push(probe(&mut raw, if n % 2 == 0 { "alice" } else { "nobody" }));
    }
    assert_eq!(answers.iter().filter(|a| a.is_ok()).count(), 1, "{answers:?}");
    // Then an existing name and a new one get the same refusal.
    let (existing, new) = (probe(&mut raw, "alice"), probe(&mut raw, "someone-new"));
    let what = |a: &Result<Reply, TrackerError>| match a {
        Err(TrackerError::TooManyAttempts { what, .. }) => what.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(what(&existing), what(&new));
    // Another address still signs up.
    let mut other = RawSession::connect(&cluster, &tracker);
    create(&mut other, "bob");
}

//! Issue 21, "seeders that cannot be starved": each test plays one attack on a seeder of the
//! real binaries, checks that the attack fails, and that a real member's download completes
//! while it runs.
//!
//! The attacker speaks Noise itself (`Noisy`), so that it can send what no client sends:
//! records without data, and frames trickled a byte a record.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::message::{FileMeta, Reply, Request, Ticket};
use common::peer_message::{PeerReply, PeerRequest, PEER_PROTOCOL_VERSION};
use common::{GroupId, Identity, Password, PublicKey, UserId};

use crate::support::*;

#[path = "../../examples/support/noisy.rs"]
mod noisy;
use noisy::Noisy;

/// The attacker's address: another host, as the seeder sees it (real clients are on
/// 127.0.0.1).
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Whether the seeder closed `conn` (what it sent before is read and dropped).
fn is_closed(conn: &mut Noisy) -> bool {
    let stream = &mut conn.stream;
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// A key pair whose private half the attacker can use itself: written by `common` to
/// `path`, read back.
fn key_pair(path: &Path) -> (Identity, Vec<u8>) {
    let (identity, _) = Identity::load_or_create(path).unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let hex = text.lines().find_map(|l| l.strip_prefix("private ")).unwrap().trim();
    let private = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    (identity, private)
}

fn group() -> GroupId {
    GroupId::new("g").unwrap()
}

/// The file's metadata, its seeder (address and key) and a fresh ticket, as `raw` sees it.
fn ticket_for(raw: &mut RawSession) -> (FileMeta, SocketAddr, PublicKey, Ticket) {
    let request = Request::GetFile { group: group(), name: "f.bin".parse().unwrap() };
    let Ok(Reply::FileInfo { meta, peers, ticket }) = raw.call(request) else { panic!() };
    let seed = peers.iter().find(|p| p.have.is_none()).expect("seeder listed");
    (meta, seed.addr, seed.key, (*ticket).clone())
}

/// A seeder `seed` of `f.bin` (4 MiB) in group `g`, and a member `leech` that has not
/// downloaded it yet.
fn seeder_and_leech(cluster: &Cluster) -> (Vec<ClientProc>, std::path::PathBuf) {
    let mut c = cluster.members(&["seed", "leech"], &[]);
    let original = cluster.path("f.bin");
    write_random(&original, 4 * 1024 * 1024, 21);
    let line = c[0].run1(&format!("upload_file '{}' g", original.display()));
    assert!(line.starts_with("uploaded "), "{line}");
    (c, original)
}

/// The real member's download, which must complete.
fn real_download(leech: &mut ClientProc, cluster: &Cluster, original: &Path) {
    let out = cluster.path("out.bin");
    leech.run1(&format!("download_file g f.bin {}", out.display()));
    let done = leech.wait_downloads();
    assert!(done[0].starts_with("[C] [g] f.bin"), "{done:?}");
    assert_same_file(original, &out);
}

/// Attack A: a member with 16 sessions (16 keys) opens 4 connections each from one address
/// and keeps them alive with empty records or a frame trickled a byte at a time, then
/// leaves the group. Empty records end their connection at once; one address holds at most
/// its share of the serving slots; a real member downloads meanwhile; and every slot is
/// given back by the clock once the tickets expire, though the attacker keeps sending.
#[test]
fn a_members_slots_held_by_empty_records_or_trickled_bytes_end_with_its_tickets() {
    let lifetime = 6;
    let (cluster, tracker) =
        Cluster::with_one_tracker_args(&["--ticket-lifetime", &lifetime.to_string()]);
    tracker.wait_serving();
    let (mut c, original) = seeder_and_leech(&cluster);
    // Mallory joins from the attacker's address, with 16 sessions of 16 keys.
    let mut sessions: Vec<(RawSession, Vec<u8>)> = Vec::new();
    for n in 0..16 {
        let (identity, private) = key_pair(&cluster.path(&format!("mallory-{n}.key")));
        let mut raw = RawSession::connect_from_as(&cluster, &tracker, ATTACKER, identity);
        if n == 0 {
            let password = Password::new("pw-mallory").unwrap();
            let create = Request::CreateUser { user: UserId::new("mallory").unwrap(), password };
            assert_eq!(raw.call(create), Ok(Reply::Done));
            raw.login("mallory", "127.0.0.1:9".parse().unwrap());
            assert_eq!(raw.call(Request::JoinGroup { group: group() }), Ok(Reply::Done));
            c[0].ok("accept_request g mallory", "accepted mallory into group g");
        } else {
            raw.login("mallory", "127.0.0.1:9".parse().unwrap());
        }
        sessions.push((raw, private));
    }
    // Four connections a key, as many as the seeder admits.
    let mut held: Vec<Noisy> = Vec::new();
    let mut expires = 0;
    for (raw, private) in &mut sessions {
        let (meta, addr, key, ticket) = ticket_for(raw);
        expires = expires.max(ticket.expires);
        for _ in 0..4 {
            let Some(mut conn) = Noisy::over(connect_from(ATTACKER, addr), &key, private) else {
                continue;
            };
            let hello = PeerRequest::Hello {
                version: PEER_PROTOCOL_VERSION,
                digest: meta.digest,
                ticket: ticket.clone(),
            };
            conn.send(&hello).unwrap();
            if let Some(PeerReply::Welcome { .. }) = conn.recv() {
                held.push(conn);
            }
        }
    }
    println!("the attacker's address holds {} serving slots", held.len());
    assert_eq!(held.len(), 32, "one address holds at most half of the 64 serving slots");
    // Keep-alives: half send empty records, half trickle a frame's bytes, every 100 ms.
    let (mut empty, mut trickle): (Vec<Noisy>, Vec<Noisy>) = (Vec::new(), Vec::new());
    for (n, conn) in held.into_iter().enumerate() {
        match n % 2 {
            0 => empty.push(conn),
            _ => trickle.push(conn),
        }
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attacker = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            // A frame of 1000 bytes declared, then a byte a record: 100 s to complete.
            let header = 1000u32.to_be_bytes();
            let started = Instant::now();
            let (mut empty_closed, mut trickle_closed) = (None, None);
            let mut tick = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for conn in &mut empty {
                    let _ = conn.record(&[]);
                }
                for conn in &mut trickle {
                    let _ = conn.record(&[header.get(tick).copied().unwrap_or(0)]);
                }
                tick += 1;
                if empty_closed.is_none() && empty.iter_mut().all(is_closed) {
                    empty_closed = Some(started.elapsed());
                }
                if trickle_closed.is_none() && trickle.iter_mut().all(is_closed) {
                    trickle_closed = Some(started.elapsed());
                }
                if empty_closed.is_some() && trickle_closed.is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (empty_closed, trickle_closed)
        })
    };
    // The real member downloads meanwhile.
    real_download(&mut c[1], &cluster, &original);
    // Mallory leaves; the attacker keeps sending.
    let left = Instant::now();
    assert_eq!(sessions[0].0.call(Request::LeaveGroup { group: group() }), Ok(Reply::Done));
    // Wait for the tickets' expiry, plus a second of slack, plus the bound on the check.
    let bound =
        Duration::from_secs(expires.saturating_sub(unix_now()) + 1) + Duration::from_secs(3);
    while !attacker.is_finished() && left.elapsed() < bound {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (empty_closed, trickle_closed) = attacker.join().unwrap();
    println!(
        "closed: empty records after {empty_closed:?}, trickled bytes after {trickle_closed:?}"
    );
    let empty_closed = empty_closed.expect("connections sending empty records still open");
    assert!(empty_closed < Duration::from_secs(2), "{empty_closed:?}");
    assert!(trickle_closed.is_some(), "trickling connections kept their slots past expiry");
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Attack B: a member (who may have left since) knows a file's group and digest, and shows
/// the seeder made-up tickets as fast as it can from one address. The tracker refuses each,
/// and each costs the attacker's address, not the seeder's budget: two real members'
/// downloads complete while it runs, and the attacker's tickets are mostly refused unasked.
#[test]
fn made_up_tickets_from_one_address_do_not_spend_the_checks_real_downloads_need() {
    let (cluster, tracker) = Cluster::with_one_tracker_args(&[]);
    tracker.wait_serving();
    let mut c = cluster.members(&["seed", "leech", "other"], &[]);
    let original = cluster.path("f.bin");
    write_random(&original, 4 * 1024 * 1024, 22);
    let line = c[0].run1(&format!("upload_file '{}' g", original.display()));
    assert!(line.starts_with("uploaded "), "{line}");
    // Mallory, a member, learns the file's digest and its seeder.
    let mut mallory = RawSession::connect_from(&cluster, &tracker, ATTACKER);
    let password = Password::new("pw-mallory").unwrap();
    let create = Request::CreateUser { user: UserId::new("mallory").unwrap(), password };
    assert_eq!(mallory.call(create), Ok(Reply::Done));
    mallory.login("mallory", "127.0.0.1:9".parse().unwrap());
    assert_eq!(mallory.call(Request::JoinGroup { group: group() }), Ok(Reply::Done));
    c[0].ok("accept_request g mallory", "accepted mallory into group g");
    let (meta, addr, key, ticket) = ticket_for(&mut mallory);
    // Four threads of made-up tickets (a fresh MAC each) from the attacker's address.
    const FLOOD_THREADS: u64 = 4;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..FLOOD_THREADS)
        .map(|t| {
            let (stop, identity) = (std::sync::Arc::clone(&stop), mallory.identity.clone());
            let mut made_up = ticket.clone();
            std::thread::spawn(move || {
                let (mut checked, mut busy, mut n) = (0u32, 0u32, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    made_up.mac[..8].copy_from_slice(&(t << 40 | n).to_be_bytes());
                    let stream = connect_from(ATTACKER, addr);
                    let Ok(mut conn) =
                        common::connection::Connection::<PeerReply, PeerRequest>::connect(
                            stream,
                            &identity,
                            &key,
                            raw_timeouts(),
                        )
                    else {
                        continue;
                    };
                    let hello = PeerRequest::Hello {
                        version: PEER_PROTOCOL_VERSION,
                        digest: meta.digest,
                        ticket: made_up.clone(),
                    };
                    if conn.send(&hello).is_err() {
                        continue;
                    }
                    match conn.recv() {
                        Ok(Some(PeerReply::Refused {
                            reason: common::peer_message::Refusal::Busy,
                        })) => busy += 1,
                        Ok(Some(PeerReply::Refused { .. })) => checked += 1,
                        Ok(Some(PeerReply::Welcome { .. })) => {
                            panic!("a made-up ticket was accepted")
                        }
                        _ => {}
                    }
                }
                (checked, busy)
            })
        })
        .collect();
    // Let the flood get going: wait until the seeder says it refuses tickets as busy (the
    // first junk line of that kind from the flood's address).
    let started = Instant::now();
    c[0].wait_log("refused: peer is busy");
    // Two real members download meanwhile, at once.
    let outs = [cluster.path("out-1.bin"), cluster.path("out-2.bin")];
    for (leech, out) in c[1..].iter_mut().zip(&outs) {
        leech.run1(&format!("download_file g f.bin {}", out.display()));
    }
    for (leech, out) in c[1..].iter_mut().zip(&outs) {
        let done = leech.wait_downloads();
        assert!(done[0].starts_with("[C] [g] f.bin"), "{done:?}");
        assert_same_file(&original, out);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let took = started.elapsed();
    let (checked, busy) = flood
        .into_iter()
        .map(|t| t.join().unwrap())
        .fold((0, 0), |(c, b), (c2, b2)| (c + c2, b + b2));
    println!("in {took:?}: {checked} made-up tickets asked about, {busy} refused as busy");
    // Its address's budget: three refusals (1 + 8 each of its 32), then one every 4.5 s.
    // A refusal is charged when the tracker's answer lands, so the questions the flood's
    // threads have in flight at that moment (one each) are asked too: the bound counts
    // them, and one more as a margin.
    let allowed = 3 + FLOOD_THREADS as u32 + 1 + (took.as_secs_f64() / 4.5) as u32;
    assert!(checked <= allowed, "{checked} made-up tickets were asked about in {took:?}");
    assert!(busy > checked, "the flood did not run ({busy} busy)");
}

/// Attack C: five addresses keep renewing silent TCP connections to a seeder (no
/// handshake), as many as it takes from each: the first alone takes half of the pending
/// pool, the four others the rest. A real member's download still completes: its
/// connection takes the place of one of the heaviest address's.
#[test]
fn silent_connections_from_five_addresses_do_not_keep_a_members_download_out() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let (cluster, tracker) = Cluster::with_one_tracker_args(&[]);
    tracker.wait_serving();
    let (mut c, original) = seeder_and_leech(&cluster);
    let seeder = c[0].listen;
    let stop = Arc::new(AtomicBool::new(false));
    let held: Vec<Arc<AtomicUsize>> = (0..5).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let attack = |n: usize| {
        let (stop, count) = (Arc::clone(&stop), Arc::clone(&held[n]));
        std::thread::spawn(move || {
            // Every connection the seeder keeps is held; one it closed is replaced at once,
            // so any slot that frees up is taken again.
            let from = Ipv4Addr::new(127, 0, 3, 2 + n as u8);
            let mut mine: Vec<TcpStream> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                mine.retain(|s| {
                    s.set_nonblocking(true).unwrap();
                    let open = matches!(s.peek(&mut [0u8; 1]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
                    s.set_nonblocking(false).unwrap();
                    open
                });
                count.store(mine.len(), Ordering::Relaxed);
                if mine.len() < 64 {
                    mine.push(connect_from(from, seeder));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let wait_held = |n: usize, at_least: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while held[n].load(Ordering::Relaxed) < at_least {
            assert!(Instant::now() < deadline, "attacker {n} holds too few");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let mut attackers = vec![attack(0)];
    wait_held(0, 32);
    attackers.extend((1..5).map(attack));
    (1..5).for_each(|n| wait_held(n, 8));
    let total: usize = held.iter().map(|h| h.load(Ordering::Relaxed)).sum();
    println!("the attackers hold {total} connections");
    // Sooner than the pending deadline (10 s), when the attackers' own would be ended.
    let started = Instant::now();
    real_download(&mut c[1], &cluster, &original);
    let took = started.elapsed();
    println!("the member's download took {took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.join().unwrap();
    }
}

/// The clock that ends a connection at its ticket's expiry must not end a real download's:
/// a worker waiting (here on its download cap) renews its ticket while it waits, not only
/// when it asks for a piece. Tickets of 3 s, a download of about 8 s.
#[test]
fn a_download_waiting_on_its_cap_renews_its_ticket_before_the_seeders_clock_ends_it() {
    let (cluster, tracker) = Cluster::with_one_tracker_args(&["--ticket-lifetime", "3"]);
    tracker.wait_serving();
    let mut c = cluster.members(&["seed", "leech"], &[]);
    let original = cluster.path("f.bin");
    write_random(&original, 2 * 1024 * 1024, 23);
    let line = c[0].run1(&format!("upload_file '{}' g", original.display()));
    assert!(line.starts_with("uploaded "), "{line}");
    c[1].ok("limit_rate down 250K", "upload unlimited, download 250.0 kB/s");
    real_download(&mut c[1], &cluster, &original);
    let log = std::fs::read_to_string(cluster.path("seed.log")).unwrap();
    let expired: Vec<&str> = log.lines().filter(|l| l.contains("ticket expired")).collect();
    assert!(expired.is_empty(), "the seeder ended the download's connection: {expired:?}");
}

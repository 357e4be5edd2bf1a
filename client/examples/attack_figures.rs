//! Issue 21's figures: a real user's service while one attack runs, for
//! `scripts/bench-trackers.sh` part (i).
//!
//! The real user (`--user`) logs in from 127.0.0.1 every `--probe-every` seconds on a
//! fresh connection (retrying `Busy` and refused connections as the client does, the waits
//! included in its time), calls `list_groups` `--lists` times, each timed, and logs out.
//! Its logins come from `--devices` client keys in turn, each of which logged in once
//! before the attack (known devices), so that no device logs in more often than the
//! tracker's per-device rate (10 at once, then one every 6 s) lets a real client. Meanwhile one
//! attack runs (`--attack`):
//!
//! - `slots`: throw-away keys from 127.0.0.2 open as many connections as they can and
//!   hold them (up to 1,024), a newcomer replacing the oldest;
//! - `silent`: 8 addresses (127.0.0.2..9) each hold 8 silent TCP connections, each renewed
//!   before it is 0.8 s old or as soon as it is closed;
//! - `correct-flood`: `--threads` connections from 127.0.0.2 log in to `--flooder` with its
//!   right password, over and over, a fresh key each time;
//! - `shared-guess`: `--threads` clients guess `--victim`'s password from 127.0.0.1, the
//!   real user's own address;
//! - `seeder`: against the seeder of `--file` in `--group`, as member `--flooder`: 16
//!   sessions (16 keys) hold 4 serving connections each from 127.0.0.2 with empty records
//!   and bytes trickled a record at a time (renewed when closed); 4 threads show made-up
//!   tickets for the file from 127.0.0.3; 5 addresses (127.0.0.4..8) hold up to 64 silent
//!   TCP connections each, renewed when closed. The script times a real member's
//!   download meanwhile.
//!
//! An attacker's refused attempt is retried after 5 ms, as a remote attacker's round trip
//! would space them (the generator shares the machine's cores with the trackers). Prints
//! `attack_started=1` once the attack is going, then, after `--seconds`, `key=value`
//! lines: probes, login_p50_ms, login_p99_ms, login_max_ms, list_p50_ms, list_p99_ms,
//! list_max_ms, login_connect_p50_ms and login_connect_p99_ms (the part of a login before
//! its `Login` request: TCP, handshake, hello), probe_failures, login_retried (logins that needed another try), and the attack's own counts (attack_*).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/noisy.rs"]
mod noisy;
#[path = "support/raw_tracker.rs"]
mod raw_tracker;
use noisy::Noisy;
use raw_tracker::{
    call, listed_tracker, login_request, random_token, tcp_from, timeouts, tracker_conn,
    TrackerConn,
};

use clap::{Parser, ValueEnum};

use common::connection::Connection;
use common::message::{Reply, Request, RequestId, SessionToken, Ticket, TrackerError};
use common::peer_message::{PeerReply, PeerRequest, Refusal, PEER_PROTOCOL_VERSION};
use common::{FileName, GroupId, Identity, Password, PublicKey, Sha1Digest, UserId};

/// A real user's login and list_groups latency while one attack of issue 21 runs.
#[derive(Debug, Parser)]
#[command(name = "attack_figures")]
struct Args {
    /// The trackers (`IP:PORT KEY` a line).
    tracker_info: PathBuf,
    /// Which attack runs.
    #[arg(long, value_enum)]
    attack: Attack,
    /// Which tracker the attack and the real user use (its line number).
    #[arg(long, default_value_t = 1)]
    tracker: u32,
    /// The real user (who must exist).
    #[arg(long)]
    user: String,
    #[arg(long)]
    password: String,
    /// How long the attack goes on after its start, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Attacking threads of `slots`, `correct-flood` and `shared-guess`.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=512))]
    threads: u32,
    /// Seconds between the real user's logins.
    #[arg(long, default_value_t = 0.5)]
    probe_every: f64,
    /// The real user's devices (client keys, each known from a login before the attack),
    /// which log in in turn: a device may log in 10 times at once, then once every 6 s.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    devices: u32,
    /// `list_groups` calls after each of the real user's logins.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    lists: u32,
    /// The user `shared-guess` guesses at.
    #[arg(long, default_value = "victim")]
    victim: String,
    /// The attacker's own account (`correct-flood`; for `seeder`, a member of `--group`).
    #[arg(long, default_value = "mallory")]
    flooder: String,
    #[arg(long, default_value = "pw-mallory")]
    flooder_password: String,
    /// The group and file whose seeder `seeder` attacks.
    #[arg(long, default_value = "g")]
    group: String,
    #[arg(long, default_value = "f.bin")]
    file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Attack {
    Slots,
    Silent,
    CorrectFlood,
    SharedGuess,
    Seeder,
}

/// What the attack's threads count (names printed as attack_NAME).
#[derive(Default)]
struct Counts {
    opened: AtomicU64,
    refused: AtomicU64,
    logged_in: AtomicU64,
    wrong_password: AtomicU64,
    too_many_attempts: AtomicU64,
    busy: AtomicU64,
    welcomed: AtomicU64,
    closed: AtomicU64,
    tickets_refused: AtomicU64,
    tickets_busy: AtomicU64,
    other: AtomicU64,
}

impl Counts {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn print(&self) {
        let all = [
            ("opened", &self.opened),
            ("refused", &self.refused),
            ("logged_in", &self.logged_in),
            ("wrong_password", &self.wrong_password),
            ("too_many_attempts", &self.too_many_attempts),
            ("busy", &self.busy),
            ("welcomed", &self.welcomed),
            ("closed", &self.closed),
            ("tickets_refused", &self.tickets_refused),
            ("tickets_busy", &self.tickets_busy),
            ("other", &self.other),
        ];
        for (name, counter) in all {
            println!("attack_{name}={}", counter.load(Ordering::Relaxed));
        }
    }
}

/// Whether the other end closed `stream` (what it sent is left unread).
fn is_closed(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let closed = !matches!(stream.peek(&mut [0u8; 1]),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    let _ = stream.set_nonblocking(false);
    closed
}

/// Request ids unique to this process's callers.
fn next_id(client: u64, seq: &mut u64) -> RequestId {
    *seq += 1;
    RequestId { client, seq: *seq }
}

/// The tracker the attack and the real user use.
#[derive(Clone, Copy)]
struct Target {
    addr: SocketAddr,
    key: PublicKey,
}

/// The real user: client keys (known devices after their first login), used in turn,
/// and the password.
struct RealUser {
    target: Target,
    devices: Vec<Identity>,
    next: usize,
    /// Logins that needed a second try (a refused connection, `Busy`).
    retried: u64,
    /// The part of each login spent before the `Login` request (TCP, handshake, hello), ms.
    connect_ms: Vec<f64>,
    user: UserId,
    password: Password,
    seq: u64,
}

impl RealUser {
    /// Logs in on a fresh connection as the client does: a refused connection or `Busy` is
    /// retried after a pause, for up to 30 s. Returns the connection and session.
    fn login(&mut self) -> Result<(TrackerConn, SessionToken), String> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        let mut last = String::new();
        let Some(me) = self.devices.get(self.next % self.devices.len().max(1)).cloned() else {
            return Err("no device".into());
        };
        self.next += 1;
        let mut first = true;
        while started.elapsed() < Duration::from_secs(30) {
            if !first {
                self.retried += 1;
            }
            first = false;
            let connecting = Instant::now();
            match tracker_conn(Ipv4Addr::LOCALHOST, self.target.addr, &self.target.key, &me) {
                Ok(mut conn) => {
                    let connect_ms = connecting.elapsed().as_secs_f64() * 1000.0;
                    let token = random_token();
                    let id = next_id(u64::MAX, &mut self.seq);
                    match call(
                        &mut conn,
                        id,
                        None,
                        login_request(&self.user, &self.password, token),
                    ) {
                        Ok(Ok(Reply::LoggedIn)) => {
                            self.connect_ms.push(connect_ms);
                            return Ok((conn, token));
                        }
                        Ok(Err(TrackerError::Busy(why))) => last = format!("busy: {why}"),
                        Ok(other) => return Err(format!("login: {other:?}")),
                        Err(why) => last = why,
                    }
                }
                Err(why) => last = why,
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        Err(format!("no login in 30 s: {last}"))
    }

    /// One probe: the login's time and each list_groups call's time, in ms.
    fn probe(&mut self, lists: u32) -> Result<(f64, Vec<f64>), String> {
        let started = Instant::now();
        let (mut conn, token) = self.login()?;
        let login_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut list_ms = Vec::new();
        for _ in 0..lists {
            let started = Instant::now();
            let id = next_id(u64::MAX, &mut self.seq);
            match call(&mut conn, id, Some(token), Request::ListGroups { after: None })? {
                Ok(Reply::Groups { .. }) => {}
                other => return Err(format!("list_groups: {other:?}")),
            }
            list_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let id = next_id(u64::MAX, &mut self.seq);
        let _ = call(&mut conn, id, Some(token), Request::Logout);
        Ok((login_ms, list_ms))
    }
}

/// What the attack threads share.
#[derive(Clone)]
struct Shared {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    target: Target,
}

impl Shared {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
}

/// An attacker's pause after a refusal (a remote round trip).
fn pause() {
    std::thread::sleep(Duration::from_millis(5));
}

/// `slots`: throw-away keys from one address, as many connections as they get, held.
fn slots(shared: &Shared, threads: u32) -> Vec<std::thread::JoinHandle<()>> {
    let per_thread = (1024 / threads as usize).max(1);
    (0..threads)
        .map(|_| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let from = Ipv4Addr::new(127, 0, 0, 2);
                let mut held: VecDeque<TrackerConn> = VecDeque::new();
                while shared.running() {
                    let Ok(me) = Identity::generate() else { continue };
                    match tracker_conn(from, shared.target.addr, &shared.target.key, &me) {
                        Ok(conn) => {
                            Counts::add(&shared.counts.opened);
                            held.push_back(conn);
                            if held.len() > per_thread {
                                held.pop_front();
                            }
                        }
                        Err(_) => {
                            Counts::add(&shared.counts.refused);
                            pause();
                        }
                    }
                }
            })
        })
        .collect()
}

/// Silent TCP connections from `from`: up to `count`, renewed when closed or, with
/// `renew`, older than that.
fn silent_from(
    shared: Shared,
    from: Ipv4Addr,
    to: SocketAddr,
    count: usize,
    renew: Option<Duration>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut held: Vec<(TcpStream, Instant)> = Vec::new();
        while shared.running() {
            let before = held.len();
            held.retain(|(stream, since)| {
                !is_closed(stream) && renew.is_none_or(|limit| since.elapsed() < limit)
            });
            for _ in held.len()..before {
                Counts::add(&shared.counts.closed);
            }
            while held.len() < count && shared.running() {
                match tcp_from(from, to) {
                    Ok(stream) => {
                        Counts::add(&shared.counts.opened);
                        held.push((stream, Instant::now()));
                    }
                    Err(_) => {
                        Counts::add(&shared.counts.refused);
                        break;
                    }
                }
            }
            pause();
        }
    })
}

/// `correct-flood` and `shared-guess`: logins, right or wrong, as fast as answered.
fn logins(
    shared: &Shared,
    threads: u32,
    from: Ipv4Addr,
    user: &UserId,
    password: &Password,
    fresh_keys: bool,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..threads)
        .map(|n| {
            let (shared, user, password) = (shared.clone(), user.clone(), password.clone());
            std::thread::spawn(move || {
                let mut seq = 0u64;
                let client = u64::from(n) << 32;
                let mut me = Identity::generate().ok();
                while shared.running() {
                    if fresh_keys || me.is_none() {
                        me = Identity::generate().ok();
                    }
                    let Some(key) = me.as_ref() else { continue };
                    let Ok(mut conn) =
                        tracker_conn(from, shared.target.addr, &shared.target.key, key)
                    else {
                        Counts::add(&shared.counts.refused);
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    Counts::add(&shared.counts.opened);
                    while shared.running() {
                        let id = next_id(client, &mut seq);
                        let request = login_request(&user, &password, random_token());
                        let counts = &shared.counts;
                        match call(&mut conn, id, None, request) {
                            Ok(Ok(Reply::LoggedIn)) => Counts::add(&counts.logged_in),
                            Ok(Err(TrackerError::WrongPassword)) => {
                                Counts::add(&counts.wrong_password)
                            }
                            Ok(Err(TrackerError::TooManyAttempts { .. })) => {
                                Counts::add(&counts.too_many_attempts);
                                pause();
                            }
                            Ok(Err(TrackerError::Busy(_))) => {
                                Counts::add(&counts.busy);
                                pause();
                            }
                            Ok(_) => {
                                Counts::add(&counts.other);
                                pause();
                            }
                            Err(_) => {
                                Counts::add(&counts.closed);
                                break;
                            }
                        }
                        if fresh_keys {
                            break;
                        }
                    }
                }
            })
        })
        .collect()
}

/// A key pair whose private half the attacker can use itself: written by `common` to a
/// temporary file, read back, the file removed.
fn key_pair(n: usize) -> Option<(Identity, Vec<u8>)> {
    let path = std::env::temp_dir().join(format!("attack_figures-{}-{n}.key", std::process::id()));
    let loaded = Identity::load_or_create(&path);
    let text = std::fs::read_to_string(&path);
    let _ = std::fs::remove_file(&path);
    let (identity, _) = loaded.ok()?;
    let text = text.ok()?;
    let hex = text.lines().find_map(|l| l.strip_prefix("private "))?.trim();
    let private = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect::<Option<Vec<u8>>>()?;
    Some((identity, private))
}

/// A member's session at the tracker from `from` as `me`.
struct Member {
    conn: TrackerConn,
    token: SessionToken,
    seq: u64,
    client: u64,
}

impl Member {
    fn login(
        target: Target,
        from: Ipv4Addr,
        me: &Identity,
        user: &UserId,
        password: &Password,
        client: u64,
    ) -> Result<Member, String> {
        let started = Instant::now();
        let mut seq = 0;
        loop {
            let mut conn = tracker_conn(from, target.addr, &target.key, me)?;
            let token = random_token();
            let id = next_id(client, &mut seq);
            match call(&mut conn, id, None, login_request(user, password, token))? {
                Ok(Reply::LoggedIn) => return Ok(Member { conn, token, seq, client }),
                Ok(other) => return Err(format!("login: {other:?}")),
                Err(why) if started.elapsed() > Duration::from_secs(30) => {
                    return Err(format!("login: {why}"))
                }
                // Throttled or busy: wait, as a patient attacker would.
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// A fresh ticket for (group, file): the file's digest, its seeder and the ticket.
    fn ticket(
        &mut self,
        group: &GroupId,
        file: &FileName,
    ) -> Result<(Sha1Digest, SocketAddr, PublicKey, Ticket), String> {
        let id = next_id(self.client, &mut self.seq);
        let request = Request::GetFile { group: group.clone(), name: file.clone() };
        match call(&mut self.conn, id, Some(self.token), request)? {
            Ok(Reply::FileInfo { meta, peers, ticket }) => {
                let seed = peers.iter().find(|p| p.have.is_none()).ok_or("no seeder listed")?;
                Ok((meta.digest, seed.addr, seed.key, *ticket))
            }
            other => Err(format!("get_file: {other:?}")),
        }
    }
}

/// `seeder`: the three seeder attacks at once. Returns the threads, once every session
/// is logged in.
fn seeder(
    shared: &Shared,
    member: &UserId,
    password: &Password,
    group: &GroupId,
    file: &FileName,
) -> Result<Vec<std::thread::JoinHandle<()>>, String> {
    let slots_from = Ipv4Addr::new(127, 0, 0, 2);
    let mut members = Vec::new();
    for n in 0..16 {
        let (me, private) = key_pair(n).ok_or("cannot make a key pair")?;
        let client = (n as u64 + 1) << 40;
        let mut session = Member::login(shared.target, slots_from, &me, member, password, client)?;
        let first = session.ticket(group, file)?;
        members.push((session, me, private, first));
    }
    // The made-up tickets come with the first session's key and ticket.
    let (me, (digest, seed_addr, seed_key, ticket)) =
        members.first().map(|m| (m.1.clone(), m.3.clone())).ok_or("no member")?;
    let mut threads = Vec::new();
    // (a) Serving slots held with empty records and trickled bytes, 4 a key.
    for (n, (mut session, _, private, first)) in members.into_iter().enumerate() {
        let (shared, group, file) = (shared.clone(), group.clone(), file.clone());
        let mut latest = Some(first);
        threads.push(std::thread::spawn(move || {
            let header = 1000u32.to_be_bytes();
            let mut held: Vec<(Noisy, usize)> = Vec::new();
            while shared.running() {
                if held.len() < 4 {
                    let ticket = match latest.take() {
                        Some(t) => Ok(t),
                        None => session.ticket(&group, &file),
                    };
                    if let Ok((digest, addr, key, ticket)) = ticket {
                        while held.len() < 4 && shared.running() {
                            let opened = tcp_from(slots_from, addr).ok();
                            let Some(mut conn) =
                                opened.and_then(|s| Noisy::over(s, &key, &private))
                            else {
                                Counts::add(&shared.counts.refused);
                                break;
                            };
                            let version = PEER_PROTOCOL_VERSION;
                            let hello =
                                PeerRequest::Hello { version, digest, ticket: ticket.clone() };
                            match conn.send(&hello).and_then(|()| conn.recv()) {
                                Some(PeerReply::Welcome { .. }) => {
                                    Counts::add(&shared.counts.welcomed);
                                    held.push((conn, 0));
                                }
                                _ => {
                                    Counts::add(&shared.counts.refused);
                                    break;
                                }
                            }
                        }
                    }
                }
                // Half send empty records, half a byte of a 1000-byte frame, every 100 ms.
                let before = held.len();
                held.retain_mut(|(conn, tick)| {
                    *tick += 1;
                    let sent = if n % 2 == 0 {
                        conn.record(&[])
                    } else {
                        conn.record(&[header.get(*tick - 1).copied().unwrap_or(0)])
                    };
                    sent.is_some() && !is_closed(&conn.stream)
                });
                for _ in held.len()..before {
                    Counts::add(&shared.counts.closed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }
    // (b) Made-up tickets for the known (group, digest), from another address.
    let ticket_from = Ipv4Addr::new(127, 0, 0, 3);
    for t in 0..4u64 {
        let (shared, me, key, ticket) = (shared.clone(), me.clone(), seed_key, ticket.clone());
        let addr = seed_addr;
        threads.push(std::thread::spawn(move || {
            let mut made_up = ticket;
            let mut n = 0u64;
            while shared.running() {
                n += 1;
                if let Some(mac) = made_up.mac.get_mut(..8) {
                    mac.copy_from_slice(&(t << 40 | n).to_be_bytes());
                }
                let Ok(stream) = tcp_from(ticket_from, addr) else {
                    Counts::add(&shared.counts.refused);
                    pause();
                    continue;
                };
                let Ok(mut conn) =
                    Connection::<PeerReply, PeerRequest>::connect(stream, &me, &key, timeouts())
                else {
                    Counts::add(&shared.counts.refused);
                    pause();
                    continue;
                };
                let hello = PeerRequest::Hello {
                    version: PEER_PROTOCOL_VERSION,
                    digest,
                    ticket: made_up.clone(),
                };
                if conn.send(&hello).is_err() {
                    continue;
                }
                match conn.recv() {
                    Ok(Some(PeerReply::Refused { reason: Refusal::Busy })) => {
                        Counts::add(&shared.counts.tickets_busy)
                    }
                    Ok(Some(PeerReply::Refused { .. })) => {
                        Counts::add(&shared.counts.tickets_refused)
                    }
                    Ok(Some(PeerReply::Welcome { .. })) => Counts::add(&shared.counts.other),
                    _ => Counts::add(&shared.counts.closed),
                }
            }
        }));
    }
    // (c) Silent TCP connections to the seeder from five addresses, renewed when closed.
    for n in 0..5u8 {
        let from = Ipv4Addr::new(127, 0, 0, 4 + n);
        threads.push(silent_from(shared.clone(), from, seed_addr, 64, None));
    }
    Ok(threads)
}

/// The p-th percentile of sorted `v` (0 if empty).
fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let at = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[at.min(v.len() - 1)]
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (addr, key) = match listed_tracker(&args.tracker_info, args.tracker) {
        Ok(listed) => listed,
        Err(e) => {
            eprintln!("attack_figures: {e}");
            return ExitCode::FAILURE;
        }
    };
    let names = (
        UserId::new(&args.user),
        Password::new(&args.password),
        UserId::new(&args.victim),
        UserId::new(&args.flooder),
        Password::new(&args.flooder_password),
        GroupId::new(&args.group),
        FileName::new(&args.file),
    );
    let (Ok(user), Ok(password), Ok(victim), Ok(flooder), Ok(flooder_pw), Ok(group), Ok(file)) =
        names
    else {
        eprintln!("attack_figures: invalid user, password, group or file name");
        return ExitCode::from(2);
    };
    let devices: Result<Vec<Identity>, _> =
        (0..args.devices).map(|_| Identity::generate()).collect();
    let (Ok(devices), Ok(wrong)) = (devices, Password::new("certainly-not-the-password")) else {
        eprintln!("attack_figures: cannot make a key pair");
        return ExitCode::FAILURE;
    };
    let target = Target { addr, key };
    let mut real = RealUser {
        target,
        devices,
        next: 0,
        retried: 0,
        connect_ms: Vec::new(),
        user,
        password,
        seq: 0,
    };
    // Each of the real user's devices logs in once before the attack: a known device.
    for _ in 0..args.devices {
        if let Err(why) = real.probe(1) {
            eprintln!("attack_figures: the real user's first login failed: {why}");
            return ExitCode::FAILURE;
        }
    }
    real.retried = 0;
    real.connect_ms.clear();
    let shared = Shared {
        stop: Arc::new(AtomicBool::new(false)),
        counts: Arc::new(Counts::default()),
        target,
    };
    let attackers = match args.attack {
        Attack::Slots => slots(&shared, args.threads),
        Attack::Silent => (0..8u8)
            .map(|n| {
                let from = Ipv4Addr::new(127, 0, 0, 2 + n);
                silent_from(shared.clone(), from, addr, 8, Some(Duration::from_millis(800)))
            })
            .collect(),
        Attack::CorrectFlood => {
            let from = Ipv4Addr::new(127, 0, 0, 2);
            logins(&shared, args.threads, from, &flooder, &flooder_pw, true)
        }
        Attack::SharedGuess => {
            logins(&shared, args.threads, Ipv4Addr::LOCALHOST, &victim, &wrong, false)
        }
        Attack::Seeder => match seeder(&shared, &flooder, &flooder_pw, &group, &file) {
            Ok(threads) => threads,
            Err(why) => {
                eprintln!("attack_figures: the seeder attack could not start: {why}");
                shared.stop.store(true, Ordering::Relaxed);
                return ExitCode::FAILURE;
            }
        },
    };
    // The attack warms up (fills the slots and queues) before the first probe.
    std::thread::sleep(Duration::from_secs(1));
    println!("attack_started=1");
    let until = Instant::now() + Duration::from_secs_f64(args.seconds.max(1.0));
    let (mut login_ms, mut list_ms) = (Vec::new(), Vec::new());
    let mut failures = 0u64;
    while Instant::now() < until {
        let started = Instant::now();
        match real.probe(args.lists) {
            Ok((login, lists)) => {
                login_ms.push(login);
                list_ms.extend(lists);
            }
            Err(why) => {
                failures += 1;
                eprintln!("attack_figures: the real user's probe failed: {why}");
            }
        }
        std::thread::sleep(
            Duration::from_secs_f64(args.probe_every).saturating_sub(started.elapsed()),
        );
    }
    shared.stop.store(true, Ordering::Relaxed);
    for a in attackers {
        let _ = a.join();
    }
    login_ms.sort_by(f64::total_cmp);
    list_ms.sort_by(f64::total_cmp);
    println!("attack={:?}", args.attack);
    println!("probes={}", login_ms.len());
    println!("login_p50_ms={:.1}", pct(&login_ms, 50.0));
    println!("login_p99_ms={:.1}", pct(&login_ms, 99.0));
    println!("login_max_ms={:.1}", pct(&login_ms, 100.0));
    real.connect_ms.sort_by(f64::total_cmp);
    println!("login_connect_p50_ms={:.1}", pct(&real.connect_ms, 50.0));
    println!("login_connect_p99_ms={:.1}", pct(&real.connect_ms, 99.0));
    println!("lists={}", list_ms.len());
    println!("list_p50_ms={:.1}", pct(&list_ms, 50.0));
    println!("list_p99_ms={:.1}", pct(&list_ms, 99.0));
    println!("list_max_ms={:.1}", pct(&list_ms, 100.0));
    println!("probe_failures={failures}");
    println!("login_retried={}", real.retried);
    shared.counts.print();
    if failures > 0 || login_ms.is_empty() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

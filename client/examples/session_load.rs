//! Many live sessions on the trackers, for the capacity figures of `scripts/bench-trackers.sh`
//! (issue 13): N sessions, each on its own connection, send a heartbeat every 5 s and list
//! their groups every 30 s, as idle clients do, while a probe measures the latency of
//! reads (`list_my_groups`) and writes (`create_group`). Optionally, every session then
//! drops its connection and reconnects (a storm, as after a tracker restart: every worker
//! reconnects its sessions one after another, so `--workers` handshakes are in flight at
//! once), resuming its session without logging in again.
//!
//! Sessions are spread over the listed trackers (round robin) and come from the loopback
//! addresses 127.0.0.2 onwards (as many hosts would; the trackers cap handshakes per
//! address). A few worker threads each drive a share of the sessions in turn, so the
//! generator needs no thread per session.
//!
//! Prints `key=value` lines: sessions, setup_s, heartbeats, heartbeat_p99_ms, read_p50_ms,
//! read_p99_ms, write_p50_ms, write_p99_ms, errors, and with `--storm` storm_s and
//! storm_failures; with `--tracker-pid`, each tracker's rss_kib, threads and fds at the
//! end of the steady state.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::Parser;
use parking_lot::Mutex;

use common::connection::{Connection, Timeouts};
use common::message::{
    ClientMessage, Reply, Request, RequestId, SessionToken, TrackerMessage, PROTOCOL_VERSION,
};
use common::tracker_info::TrackerInfo;
use common::{GroupId, Identity, Password, PublicKey, UserId};

/// Idle sessions with heartbeats, and the read and write latency meanwhile.
#[derive(Debug, Parser)]
#[command(name = "session_load")]
struct Args {
    /// The trackers (`IP:PORT KEY` a line).
    tracker_info: PathBuf,
    /// Sessions to open and keep.
    #[arg(long, default_value_t = 2000)]
    sessions: u32,
    /// How long the steady state lasts, in seconds.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Worker threads driving the sessions.
    #[arg(long, default_value_t = 32)]
    workers: u32,
    /// Prefix of the users this run creates.
    #[arg(long, default_value = "cap")]
    prefix: String,
    /// After the steady state, every session reconnects at once.
    #[arg(long)]
    storm: bool,
    /// A tracker's process id, to report its memory, threads and descriptors (repeat).
    #[arg(long = "tracker-pid")]
    tracker_pids: Vec<u32>,
    /// Number the sessions from N (several generators on one cluster, each under its own
    /// open-files limit, use distinct ranges).
    #[arg(long, value_name = "N", default_value_t = 0)]
    offset: u32,
    /// Run no probe (another generator measures).
    #[arg(long)]
    no_probe: bool,
}

type Conn = Connection<TrackerMessage, ClientMessage>;

/// One idle client.
struct Session {
    conn: Option<Conn>,
    identity: Arc<Identity>,
    from: Ipv4Addr,
    tracker: (SocketAddr, PublicKey),
    token: SessionToken,
    client: u64,
    seq: u64,
    next_heartbeat: Instant,
    next_list: Instant,
    /// The memberships version the tracker last sent (heartbeats carry it, as clients'
    /// do, so that replies stay small).
    known: Option<u64>,
}

#[derive(Default)]
struct Stats {
    heartbeat_us: Mutex<Vec<u64>>,
    read_us: Mutex<Vec<u64>>,
    write_us: Mutex<Vec<u64>>,
    errors: AtomicU64,
    printed: AtomicU64,
}

impl Stats {
    fn error(&self, what: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.printed.fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("session_load: {what}");
        }
    }
}

fn timeouts() -> Timeouts {
    Timeouts {
        handshake: Duration::from_secs(10),
        read: Duration::from_secs(30),
        write: Duration::from_secs(10),
    }
}

fn connect(from: Ipv4Addr, to: SocketAddr, key: &PublicKey, me: &Identity) -> Result<Conn, String> {
    use rustix::net::{AddressFamily, SocketType};
    let socket = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None)
        .map_err(|e| format!("socket: {e}"))?;
    rustix::net::bind(&socket, &SocketAddr::from((from, 0))).map_err(|e| format!("bind: {e}"))?;
    rustix::net::connect(&socket, &to).map_err(|e| format!("connect: {e}"))?;
    let mut conn = Connection::connect(TcpStream::from(socket), me, key, timeouts())
        .map_err(|e| format!("handshake: {e}"))?;
    conn.send(&ClientMessage::Hello { version: PROTOCOL_VERSION }).map_err(|e| e.to_string())?;
    match conn.recv().map_err(|e| e.to_string())? {
        Some(TrackerMessage::Welcome { .. }) => Ok(conn),
        other => Err(format!("no welcome: {other:?}")),
    }
}

impl Session {
    fn call(&mut self, session: Option<SessionToken>, request: Request) -> Result<Reply, String> {
        let conn = self.conn.as_mut().ok_or("not connected")?;
        self.seq += 1;
        let id = RequestId { client: self.client, seq: self.seq };
        conn.send(&ClientMessage::Request { id, session, request }).map_err(|e| e.to_string())?;
        match conn.recv().map_err(|e| e.to_string())? {
            Some(TrackerMessage::Response { id: got, result }) if got == id => {
                result.map_err(|e| e.to_string())
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }

    /// Signs up (or finds the user there) and logs in, retrying while trackers are busy.
    fn open(&mut self, user: &UserId) -> Result<(), String> {
        let password = Password::new("bench").map_err(|e| e.to_string())?;
        let (from, (addr, key)) = (self.from, self.tracker);
        self.conn = Some(connect(from, addr, &key, &self.identity)?);
        let create = Request::CreateUser { user: user.clone(), password: password.clone() };
        let login = Request::Login {
            user: user.clone(),
            password,
            peer_addr: SocketAddr::from(([127, 0, 0, 1], 9)),
            session: self.token,
        };
        for request in [create, login] {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match self.call(None, request.clone()) {
                    Ok(_) => break,
                    Err(e) if e.contains("already exists") => break,
                    Err(e) if e.contains("busy") && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// A heartbeat, as a client sends it every 5 s.
    fn heartbeat(&mut self) -> Result<Reply, String> {
        let reply = self.call(Some(self.token), Request::Heartbeat { known: self.known })?;
        if let Reply::Alive { memberships: Some(m) } = &reply {
            self.known = Some(m.version);
        }
        Ok(reply)
    }

    /// A new connection, on which the session is resumed (no password hashing).
    fn reconnect(&mut self) -> Result<(), String> {
        let (from, (addr, key)) = (self.from, self.tracker);
        let mut conn = connect(from, addr, &key, &self.identity)?;
        conn.send(&ClientMessage::Resume { session: self.token }).map_err(|e| e.to_string())?;
        self.conn = Some(conn);
        self.heartbeat().map(|_| ())
    }
}

/// The time since `started` in µs; a sample over `SLOW_MS` is also printed to stderr with
/// the wall-clock time it began, to line it up with the trackers' logs.
fn slow(what: &str, started: Instant) -> u64 {
    let took = started.elapsed();
    if took > Duration::from_millis(SLOW_MS) {
        let began = std::time::SystemTime::now() - took;
        let since_epoch = began.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        eprintln!(
            "session_load: slow {what}: {:.1} ms, began at {}.{:03} (Unix time)",
            took.as_secs_f64() * 1000.0,
            since_epoch.as_secs(),
            since_epoch.subsec_millis()
        );
    }
    took.as_micros() as u64
}

/// The time after `due` for something done every `period`, done at `now`: a whole period
/// from now if the generator fell a period behind (it sends late, never in a burst).
fn next_time(due: Instant, period: Duration, now: Instant) -> Instant {
    match due + period {
        next if next > now => next,
        _ => now + period,
    }
}

/// How often each session sends a heartbeat, as the client does.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// How often each session lists its groups.
const LIST_EVERY: Duration = Duration::from_secs(30);

/// Probe samples slower than this are printed (`slow`).
const SLOW_MS: u64 = 20;

fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn sorted(samples: &Mutex<Vec<u64>>) -> Vec<u64> {
    let mut v = samples.lock().clone();
    v.sort_unstable();
    v
}

/// Resident memory (KiB), threads and open descriptors of a process.
type ProcessFigures = (u64, u64, usize);

/// `ProcessFigures` of process `pid`, from /proc.
fn process_figures(pid: u32) -> Option<ProcessFigures> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((field("VmRSS:")?, field("Threads:")?, fds))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let info = match TrackerInfo::load(&args.tracker_info) {
        Ok(info) => info,
        Err(e) => {
            eprintln!("session_load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let trackers: Vec<(SocketAddr, PublicKey)> = info
        .trackers()
        .filter_map(|(id, _)| {
            let addr = info.resolve(id).ok()?.into_iter().next()?;
            info.key(id).map(|key| (addr, key))
        })
        .collect();
    if trackers.is_empty() {
        eprintln!("session_load: no tracker with a key in {}", args.tracker_info.display());
        return ExitCode::FAILURE;
    }
    let stats = Arc::new(Stats::default());
    let workers = args.workers.clamp(1, args.sessions.max(1));
    let opened = Arc::new(Barrier::new(workers as usize + 1));
    let steady_done = Arc::new(Barrier::new(workers as usize + 1));
    let stormed = Arc::new(Barrier::new(workers as usize + 1));
    let storm_failures = Arc::new(AtomicU64::new(0));
    let until = Arc::new(Mutex::new(None::<Instant>));
    let started = Instant::now();
    let mut threads = Vec::new();
    for w in 0..workers {
        let mine: Vec<u32> =
            (0..args.sessions).filter(|i| i % workers == w).map(|i| i + args.offset).collect();
        let (stats, trackers, prefix) = (Arc::clone(&stats), trackers.clone(), args.prefix.clone());
        let barriers = [Arc::clone(&opened), Arc::clone(&steady_done), Arc::clone(&stormed)];
        let (until, storm, storm_failures) =
            (Arc::clone(&until), args.storm, Arc::clone(&storm_failures));
        threads.push(std::thread::spawn(move || {
            let [opened, steady_done, stormed] = barriers;
            let mut sessions = Vec::new();
            for i in mine {
                let Ok(identity) = Identity::generate() else { continue };
                let mut token = [0u8; 32];
                let _ = getrandom::fill(&mut token);
                let now = Instant::now();
                let mut s = Session {
                    conn: None,
                    identity: Arc::new(identity),
                    from: Ipv4Addr::new(127, 0, 0, 2 + (i % 250) as u8),
                    tracker: trackers[i as usize % trackers.len()],
                    token: SessionToken(token),
                    client: (u64::from(i) << 32) | 0xcafe,
                    seq: 0,
                    // Set when the steady state starts.
                    next_heartbeat: now,
                    next_list: now,
                    known: None,
                };
                let user = match UserId::new(format!("{prefix}{i}")) {
                    Ok(user) => user,
                    Err(e) => {
                        stats.error(&format!("{e} (shorten --prefix)"));
                        continue;
                    }
                };
                match s.open(&user) {
                    Ok(()) => sessions.push(s),
                    Err(e) => stats.error(&format!("session {i}: {e}")),
                }
            }
            opened.wait();
            let end = loop {
                if let Some(end) = *until.lock() {
                    break end;
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            // The schedule starts with the steady state: sessions opened early in a long
            // setup must not all catch up on the heartbeats they skipped (a burst no real
            // client makes: it heartbeats from its login on).
            let steady = Instant::now();
            for (n, s) in sessions.iter_mut().enumerate() {
                let i = n as u64 * u64::from(workers) + u64::from(w);
                s.next_heartbeat = steady + Duration::from_millis(i * 5000 / 4096 % 5000);
                s.next_list = steady + Duration::from_millis(i * 30_000 / 4096 % 30_000);
            }
            while Instant::now() < end {
                let mut soonest = end;
                for s in &mut sessions {
                    let now = Instant::now();
                    if now >= s.next_heartbeat {
                        match s.heartbeat() {
                            Ok(_) => {
                                stats.heartbeat_us.lock().push(now.elapsed().as_micros() as u64)
                            }
                            Err(e) => stats.error(&format!("heartbeat: {e}")),
                        }
                        s.next_heartbeat = next_time(s.next_heartbeat, HEARTBEAT_EVERY, now);
                    }
                    if now >= s.next_list {
                        let token = s.token;
                        if let Err(e) = s.call(Some(token), Request::ListMyGroups { after: None }) {
                            stats.error(&format!("list: {e}"));
                        }
                        s.next_list = next_time(s.next_list, LIST_EVERY, now);
                    }
                    soonest = soonest.min(s.next_heartbeat).min(s.next_list);
                }
                let now = Instant::now();
                if soonest > now {
                    std::thread::sleep((soonest - now).min(Duration::from_millis(50)));
                }
            }
            steady_done.wait();
            if storm {
                // Everyone drops at once, then reconnects as fast as it can.
                for s in &mut sessions {
                    s.conn = None;
                }
                for s in &mut sessions {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    loop {
                        match s.reconnect() {
                            Ok(()) => break,
                            Err(_) if Instant::now() < deadline => {
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            Err(e) => {
                                storm_failures.fetch_add(1, Ordering::Relaxed);
                                stats.error(&format!("storm: {e}"));
                                break;
                            }
                        }
                    }
                }
            }
            stormed.wait();
            drop(sessions);
        }));
    }
    opened.wait();
    let setup_s = started.elapsed().as_secs_f64();
    let end = Instant::now() + Duration::from_secs_f64(args.seconds.max(1.0));
    *until.lock() = Some(end);
    // The probe: one session of its own, a read and a write every 100 ms.
    let no_probe = args.no_probe;
    let probe = {
        let stats = Arc::clone(&stats);
        let tracker = trackers[0];
        let prefix = args.prefix.clone();
        std::thread::spawn(move || {
            if no_probe {
                std::thread::sleep(end.saturating_duration_since(Instant::now()));
                return;
            }
            let Ok(identity) = Identity::generate() else { return };
            let mut s = Session {
                conn: None,
                identity: Arc::new(identity),
                from: Ipv4Addr::LOCALHOST,
                tracker,
                token: SessionToken([9; 32]),
                client: 0xbeef,
                seq: 0,
                next_heartbeat: Instant::now(),
                next_list: Instant::now(),
                known: None,
            };
            let Ok(user) = UserId::new(format!("{prefix}probe")) else { return };
            if let Err(e) = s.open(&user) {
                stats.error(&format!("probe: {e}"));
                return;
            }
            let mut n = 0u64;
            while Instant::now() < end {
                let t = Instant::now();
                match s.call(Some(s.token), Request::ListMyGroups { after: None }) {
                    Ok(_) => stats.read_us.lock().push(slow("read", t)),
                    Err(e) => stats.error(&format!("probe read: {e}")),
                }
                n += 1;
                let Ok(group) = GroupId::new(format!("{prefix}p{n}")) else { break };
                let t = Instant::now();
                match s.call(Some(s.token), Request::CreateGroup { group }) {
                    Ok(_) => stats.write_us.lock().push(slow("write", t)),
                    Err(e) if e.contains("limit reached") => {}
                    Err(e) => stats.error(&format!("probe write: {e}")),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let _ = probe.join();
    let figures: Vec<(u32, Option<ProcessFigures>)> =
        args.tracker_pids.iter().map(|pid| (*pid, process_figures(*pid))).collect();
    steady_done.wait();
    let storm_started = Instant::now();
    stormed.wait();
    let storm_s = storm_started.elapsed().as_secs_f64();
    for t in threads {
        let _ = t.join();
    }
    let (hb, reads, writes) =
        (sorted(&stats.heartbeat_us), sorted(&stats.read_us), sorted(&stats.write_us));
    println!("sessions={}", args.sessions);
    println!("setup_s={setup_s:.1}");
    println!("heartbeats={}", hb.len());
    println!("heartbeat_p99_ms={:.2}", percentile_ms(&hb, 99.0));
    println!("read_p50_ms={:.2}", percentile_ms(&reads, 50.0));
    println!("read_p99_ms={:.2}", percentile_ms(&reads, 99.0));
    println!("write_p50_ms={:.2}", percentile_ms(&writes, 50.0));
    println!("write_p99_ms={:.2}", percentile_ms(&writes, 99.0));
    for (pid, f) in figures {
        if let Some((rss, threads, fds)) = f {
            println!("tracker_{pid}_rss_kib={rss}");
            println!("tracker_{pid}_threads={threads}");
            println!("tracker_{pid}_fds={fds}");
        }
    }
    if args.storm {
        println!("storm_s={storm_s:.2}");
        println!("storm_failures={}", storm_failures.load(Ordering::Relaxed));
    }
    println!("errors={}", stats.errors.load(Ordering::Relaxed));
    ExitCode::SUCCESS
}

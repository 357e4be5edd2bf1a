//! A load on the trackers for `scripts/bench-trackers.sh`: N sessions (one thread each,
//! each logged in as its own user through its own `TrackerLink`) issue `CreateGroup`
//! writes with unique names (`--op write`) or `ListMyGroups` reads, each behind a
//! ReadIndex barrier (`--op read`), for D seconds, or until W are acknowledged in all.
//!
//! Prints `key=value` lines on stdout: op, clients, ops, ops_per_s (and for writes the
//! same as writes and writes_per_s), seconds, p50_ms, p95_ms, p99_ms, max_ms, max_gap_ms
//! (the longest time without any acknowledged call, once the load runs) and errors. Every
//! failed call counts as an error; the first few are printed on stderr.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;

use client::tracker_link::{LinkError, TrackerLink};
use common::message::{Reply, Request, SessionToken, TrackerError};
use common::tracker_info::TrackerInfoFile;
use common::{GroupId, Identity, Password, UserId};

/// Errors printed on stderr at most (all are counted).
const MAX_PRINTED_ERRORS: usize = 5;

/// Concurrent `CreateGroup` writes (or `ListMyGroups` reads) against the trackers of
/// TRACKER_INFO, with their throughput and latency percentiles.
#[derive(Debug, Parser)]
#[command(name = "tracker_load")]
struct Args {
    /// The trackers, as the client reads them (`IP:PORT KEY` a line).
    tracker_info: PathBuf,

    /// Concurrent sessions, one thread and one user each.
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    clients: u32,

    /// How long the writes go on, in seconds (after every session logged in).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    seconds: f64,

    /// Stop once this many calls were acknowledged in all (even before SECS).
    #[arg(long, value_name = "N")]
    writes: Option<u64>,

    /// What each session calls: `write` (`CreateGroup`) or `read` (`ListMyGroups`).
    #[arg(long, value_enum, default_value_t = Op::Write)]
    op: Op,

    /// Prefix of the users and groups this run creates (unique per run on one cluster).
    #[arg(long, value_name = "WORD", default_value = "load")]
    prefix: String,

    /// Write the Unix time (seconds, with nanoseconds) of every acknowledged write to FILE,
    /// one a line, ascending.
    #[arg(long, value_name = "FILE")]
    acks: Option<PathBuf>,
}

/// The call a load makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Op {
    /// `CreateGroup` with a unique name: a Raft commit each.
    Write,
    /// `ListMyGroups`: a pure read, answered after a ReadIndex barrier.
    Read,
}

/// What every session thread shares.
struct Run {
    args: Args,
    trackers: Arc<TrackerInfoFile>,
    /// Writes started in all (a write is started only while this stays within `--writes`).
    started: AtomicU64,
    /// Held while a session connects and logs in: the tracker caps handshakes per IP
    /// address (all of ours share one), and a refused handshake would send the session to
    /// the next tracker of the list instead of the one measured.
    connecting: parking_lot::Mutex<()>,
    errors: AtomicU64,
    printed: AtomicUsize,
}

/// One session's results.
#[derive(Default)]
struct Outcome {
    /// Latency of each acknowledged write, in microseconds.
    latencies_us: Vec<u64>,
    /// When each write was acknowledged.
    acked_at: Vec<SystemTime>,
    /// When the session stopped writing.
    ended: Option<Instant>,
}

fn main() -> ExitCode {
    env_logger::init();
    let args = Args::parse();
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        eprintln!("tracker_load: --seconds must be a positive number");
        return ExitCode::from(2);
    }
    let trackers = match TrackerInfoFile::load(&args.tracker_info) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("tracker_load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let n_clients = args.clients as usize;
    let run = Arc::new(Run {
        args,
        trackers,
        started: AtomicU64::new(0),
        connecting: parking_lot::Mutex::new(()),
        errors: AtomicU64::new(0),
        printed: AtomicUsize::new(0),
    });
    // Everyone logs in first (`ready`); then one shared start time (`go`).
    let ready = Arc::new(Barrier::new(n_clients + 1));
    let go = Arc::new(Barrier::new(n_clients + 1));
    let start = Arc::new(parking_lot::Mutex::new(None::<Instant>));
    let mut threads = Vec::with_capacity(n_clients);
    for client_idx in 0..n_clients {
        let (run, start) = (Arc::clone(&run), Arc::clone(&start));
        let barriers = [Arc::clone(&ready), Arc::clone(&go)];
        let spawned = std::thread::Builder::new()
            .name(format!("load-{client_idx}"))
            .spawn(move || session(&run, client_idx, &barriers, &start));
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                eprintln!("tracker_load: cannot start thread {client_idx}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ready.wait();
    let t0 = Instant::now();
    let started_at = SystemTime::now();
    *start.lock() = Some(t0);
    go.wait();

    let mut outcome = Outcome::default();
    for handle in threads {
        match handle.join() {
            Ok(mut one) => {
                outcome.latencies_us.append(&mut one.latencies_us);
                outcome.acked_at.append(&mut one.acked_at);
                outcome.ended = outcome.ended.max(one.ended);
            }
            Err(_) => {
                eprintln!("tracker_load: a session thread panicked");
                run.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let seconds = outcome.ended.unwrap_or_else(Instant::now).duration_since(t0).as_secs_f64();
    outcome.latencies_us.sort_unstable();
    outcome.acked_at.sort_unstable();
    let ops = outcome.latencies_us.len();
    let pct = |p: f64| percentile_ms(&outcome.latencies_us, p);
    let max_gap = max_gap_ms(started_at, &outcome.acked_at);
    let per_s = ops as f64 / seconds.max(1e-9);
    println!("op={}", if run.args.op == Op::Write { "write" } else { "read" });
    println!("clients={n_clients}");
    println!("ops={ops}");
    println!("ops_per_s={per_s:.1}");
    if run.args.op == Op::Write {
        println!("writes={ops}");
        println!("writes_per_s={per_s:.1}");
    }
    println!("seconds={seconds:.3}");
    println!("p50_ms={:.2}", pct(50.0));
    println!("p95_ms={:.2}", pct(95.0));
    println!("p99_ms={:.2}", pct(99.0));
    println!("max_ms={:.2}", pct(100.0));
    println!("max_gap_ms={max_gap:.1}");
    println!("errors={}", run.errors.load(Ordering::Relaxed));
    if let Some(path) = &run.args.acks {
        if let Err(e) = write_acks(path, &outcome.acked_at) {
            eprintln!("tracker_load: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// One session: creates and logs in its user, waits for the others, then writes until the
/// time or the write budget is up.
fn session(
    run: &Run,
    client_idx: usize,
    [ready, go]: &[Arc<Barrier>; 2],
    start: &parking_lot::Mutex<Option<Instant>>,
) -> Outcome {
    let login = {
        let _one_at_a_time = run.connecting.lock();
        log_in(run, client_idx)
    };
    ready.wait();
    go.wait();
    let mut outcome = Outcome::default();
    let (mut link, token) = match login {
        Ok(login) => login,
        Err(why) => {
            run.error(&format!("client {client_idx}: {why}"));
            outcome.ended = Some(Instant::now());
            return outcome;
        }
    };
    let t0 = start.lock().unwrap_or_else(Instant::now);
    let deadline = t0 + Duration::from_secs_f64(run.args.seconds);
    let budget = run.args.writes.unwrap_or(u64::MAX);
    let mut write_idx = 0u64;
    while Instant::now() < deadline && run.started.fetch_add(1, Ordering::Relaxed) < budget {
        let name = format!("{}-{client_idx}-{write_idx}", run.args.prefix);
        write_idx += 1;
        let group = match GroupId::new(name) {
            Ok(group) => group,
            Err(e) => {
                run.error(&format!("client {client_idx}: {e} (shorten --prefix)"));
                break;
            }
        };
        let request = match run.args.op {
            Op::Write => Request::CreateGroup { group },
            Op::Read => Request::ListMyGroups { after: None },
        };
        let sent = Instant::now();
        match link.call(Some(token), request, None) {
            Ok(_) => {
                outcome.latencies_us.push(sent.elapsed().as_micros() as u64);
                outcome.acked_at.push(SystemTime::now());
            }
            Err(e) => run.error(&format!("client {client_idx}: {:?}: {e}", run.args.op)),
        }
    }
    outcome.ended = Some(Instant::now());
    outcome
}

/// A link logged in as user `PREFIX-uN` (created if it does not exist yet).
fn log_in(run: &Run, client_idx: usize) -> Result<(TrackerLink, SessionToken), String> {
    let identity = Identity::generate().map_err(|e| format!("no key pair: {e}"))?;
    let mut link = TrackerLink::new(Arc::clone(&run.trackers), Arc::new(identity));
    let user = UserId::new(format!("{}-u{client_idx}", run.args.prefix))
        .map_err(|e| format!("{e} (shorten --prefix)"))?;
    let password = Password::new("bench").map_err(|e| e.to_string())?;
    let create = Request::CreateUser { user: user.clone(), password: password.clone() };
    match link.call(None, create, None) {
        Ok(_) | Err(LinkError::Tracker(TrackerError::UserExists(_))) => {}
        Err(e) => return Err(format!("create_user: {e}")),
    }
    let mut token = [0u8; 32];
    getrandom::fill(&mut token).map_err(|e| format!("no randomness: {e}"))?;
    let session = SessionToken(token);
    // Where this client would serve pieces: it serves none here.
    let peer_addr = SocketAddr::from(([127, 0, 0, 1], 9));
    match link.call(None, Request::Login { user, password, peer_addr, session }, None) {
        Ok(Reply::LoggedIn) => Ok((link, session)),
        Ok(other) => Err(format!("login: unexpected reply {other:?}")),
        Err(e) => Err(format!("login: {e}")),
    }
}

impl Run {
    /// Counts an error and prints the first few.
    fn error(&self, what: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.printed.fetch_add(1, Ordering::Relaxed) < MAX_PRINTED_ERRORS {
            eprintln!("tracker_load: {what}");
        }
    }
}

/// The nearest-rank percentile `p` of sorted microseconds, in milliseconds (0 if none).
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted_us.len()) - 1;
    sorted_us[idx] as f64 / 1000.0
}

/// The longest stretch, from `started` on, without an acknowledged write (the last write
/// to the end of the run does not count: the run just stopped).
fn max_gap_ms(started: SystemTime, acked_at: &[SystemTime]) -> f64 {
    let mut previous = started;
    let mut max = Duration::ZERO;
    for at in acked_at {
        max = max.max(at.duration_since(previous).unwrap_or_default());
        previous = *at;
    }
    max.as_secs_f64() * 1000.0
}

fn write_acks(path: &std::path::Path, acked_at: &[SystemTime]) -> std::io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    for at in acked_at {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        writeln!(out, "{}.{:09}", since.as_secs(), since.subsec_nanos())?;
    }
    out.flush()
}

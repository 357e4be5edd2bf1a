//! Password guessing against a tracker while a real user logs in, for
//! `scripts/bench-trackers.sh` (issue 13: "a real user's login stays under 0.5 s while 64
//! attackers hammer wrong passwords").
//!
//! ATTACKERS threads each loop `login VICTIM <wrong password>` on a connection of their
//! own, from the loopback addresses 127.0.0.2 onwards (`--addresses` of them, so that
//! per-address limits see several hosts). A refused attempt is retried after 5 ms, as a
//! remote attacker's round trip would space them (without it the attack generator, on
//! the same 2 cores, would measure itself); with `--reconnect`, each guess comes on a new
//! connection. Meanwhile the real user logs in from
//! 127.0.0.1 every `--probe-every` seconds on a fresh connection (retrying `Busy` as the
//! client does, the wait included in its time), and logs out.
//!
//! Prints `key=value` lines: probes, probe_p50_ms, probe_p99_ms, probe_max_ms,
//! probe_failures, and the attackers' answers: wrong_password, too_many_attempts, busy,
//! other.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/raw_tracker.rs"]
mod raw_tracker;
use raw_tracker::{call, listed_tracker, login_request, random_token, tracker_conn, TrackerConn};

use clap::Parser;

use common::message::{Reply, Request, RequestId, TrackerError};
use common::{Identity, Password, PublicKey, UserId};

/// Password guessing against one tracker, with a real user's login latency meanwhile.
#[derive(Debug, Parser)]
#[command(name = "login_attack")]
struct Args {
    /// The trackers (`IP:PORT KEY` a line).
    tracker_info: PathBuf,
    /// Which tracker to attack (its line number).
    #[arg(long, default_value_t = 1)]
    tracker: u32,
    /// Concurrent guessers.
    #[arg(long, default_value_t = 64)]
    attackers: u32,
    /// Loopback addresses the guessers come from (127.0.0.2, ...).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=250))]
    addresses: u32,
    /// The user the guessers attack.
    #[arg(long)]
    victim: String,
    /// The real user (who must exist, with password `--password`).
    #[arg(long)]
    user: String,
    #[arg(long)]
    password: String,
    /// How long the attack goes on, in seconds.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Every guess on a new connection (the guessers pay for a handshake each, and so does
    /// the tracker), instead of one connection per guesser.
    #[arg(long)]
    reconnect: bool,
    /// Seconds between the real user's logins.
    #[arg(long, default_value_t = 1.0)]
    probe_every: f64,
}

#[derive(Default)]
struct Counts {
    wrong: AtomicU64,
    too_many: AtomicU64,
    busy: AtomicU64,
    other: AtomicU64,
}

/// A connection to `to` (which must prove `key`) from `from`, with a fresh key, after the
/// hello.
fn connect(from: Ipv4Addr, to: SocketAddr, key: &PublicKey) -> Result<TrackerConn, String> {
    let identity = Identity::generate().map_err(|e| e.to_string())?;
    tracker_conn(from, to, key, &identity)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (addr, key) = match listed_tracker(&args.tracker_info, args.tracker) {
        Ok(listed) => listed,
        Err(e) => {
            eprintln!("login_attack: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (Ok(victim), Ok(user), Ok(password), Ok(wrong)) = (
        UserId::new(&args.victim),
        UserId::new(&args.user),
        Password::new(&args.password),
        Password::new("certainly-not-the-password"),
    ) else {
        eprintln!("login_attack: invalid user name or password");
        return ExitCode::from(2);
    };
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let mut attackers = Vec::new();
    for n in 0..args.attackers {
        let from = Ipv4Addr::new(127, 0, 0, 2 + (n % args.addresses) as u8);
        let (stop, counts, victim, wrong) =
            (Arc::clone(&stop), Arc::clone(&counts), victim.clone(), wrong.clone());
        let reconnect = args.reconnect;
        attackers.push(std::thread::spawn(move || {
            let mut seq = 0u64;
            let client = u64::from(n) << 32;
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut conn) = connect(from, addr, &key) else {
                    counts.other.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let id = RequestId { client, seq };
                    let request = login_request(&victim, &wrong, random_token());
                    let refused = match call(&mut conn, id, None, request) {
                        Ok(Err(TrackerError::WrongPassword)) => {
                            counts.wrong.fetch_add(1, Ordering::Relaxed);
                            false
                        }
                        Ok(Err(TrackerError::TooManyAttempts { .. })) => {
                            counts.too_many.fetch_add(1, Ordering::Relaxed);
                            true
                        }
                        Ok(Err(TrackerError::Busy(_))) => {
                            counts.busy.fetch_add(1, Ordering::Relaxed);
                            true
                        }
                        Ok(_) => {
                            counts.other.fetch_add(1, Ordering::Relaxed);
                            true
                        }
                        Err(_) => {
                            counts.other.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    };
                    if refused {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    if reconnect {
                        break;
                    }
                }
            }
        }));
    }
    // The attack warms up (fills the queues) before the first probe.
    std::thread::sleep(Duration::from_secs_f64(args.probe_every.max(0.1)));
    let until = Instant::now() + Duration::from_secs_f64(args.seconds.max(1.0));
    let mut latencies: Vec<f64> = Vec::new();
    let mut failures = 0u64;
    let mut seq = 0u64;
    while Instant::now() < until {
        let started = Instant::now();
        let outcome = connect(Ipv4Addr::LOCALHOST, addr, &key).and_then(|mut conn| {
            seq += 1;
            let token = random_token();
            let id = RequestId { client: u64::MAX, seq };
            // As the client does: `Busy` is retried shortly (the time counts).
            let mut pause = Duration::from_millis(100);
            loop {
                match call(&mut conn, id, None, login_request(&user, &password, token))? {
                    Ok(Reply::LoggedIn) => break,
                    Err(TrackerError::Busy(_)) if started.elapsed() < Duration::from_secs(60) => {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                    other => return Err(format!("login: {other:?}")),
                }
            }
            let elapsed = started.elapsed();
            seq += 1;
            let id = RequestId { client: u64::MAX, seq };
            let _ = call(&mut conn, id, Some(token), Request::Logout);
            Ok(elapsed)
        });
        match outcome {
            Ok(elapsed) => latencies.push(elapsed.as_secs_f64() * 1000.0),
            Err(why) => {
                failures += 1;
                eprintln!("login_attack: the real user's login failed: {why}");
            }
        }
        std::thread::sleep(
            Duration::from_secs_f64(args.probe_every).saturating_sub(started.elapsed()),
        );
    }
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        let _ = a.join();
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let at = ((p / 100.0) * (latencies.len() - 1) as f64).round() as usize;
        latencies[at.min(latencies.len() - 1)]
    };
    println!("probes={}", latencies.len());
    println!("probe_p50_ms={:.1}", pct(50.0));
    println!("probe_p99_ms={:.1}", pct(99.0));
    println!("probe_max_ms={:.1}", pct(100.0));
    println!("probe_failures={failures}");
    println!("wrong_password={}", counts.wrong.load(Ordering::Relaxed));
    println!("too_many_attempts={}", counts.too_many.load(Ordering::Relaxed));
    println!("busy={}", counts.busy.load(Ordering::Relaxed));
    println!("other={}", counts.other.load(Ordering::Relaxed));
    if failures > 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

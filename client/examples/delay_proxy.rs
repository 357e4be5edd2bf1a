//! A userspace TCP delay proxy for `scripts/bench-trackers.sh`: accepts on `--listen`,
//! connects each connection to `--to`, and forwards both directions, each chunk held back
//! by the one-way delay. A queue per direction carries chunks with their release times, so
//! many chunks are in flight at once (throughput is not one chunk per delay) and order is
//! kept.
//!
//! Loss is emulated the way TCP shows it to the application: with `--loss-pct P`, each
//! chunk has a P% chance of an extra stall of one retransmission timeout (`--rto-ms`), and
//! everything behind it in that direction waits too (head-of-line blocking).
//!
//! Buffers are bounded (`QUEUE` chunks of at most `CHUNK` bytes per direction): a reader
//! blocks when its queue is full, which pushes back on the sender through TCP.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Parser;

/// The largest chunk read at once.
const CHUNK: usize = 16 * 1024;
/// Chunks queued per direction at most.
const QUEUE: usize = 1024;
/// How long connecting to `--to` may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a blocked reader or writer checks whether its connection is closing.
const POLL: Duration = Duration::from_millis(200);
/// How long a write may block (the receiver does not read) before the connection is cut.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Forwards TCP connections from LISTEN to TO, delaying each direction.
#[derive(Debug, Clone, Parser)]
#[command(name = "delay_proxy")]
struct Args {
    /// Where to accept connections.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,

    /// Where to forward them.
    #[arg(long, value_name = "ADDR")]
    to: SocketAddr,

    /// One-way delay added to each direction, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 50)]
    delay_ms: u64,

    /// Chance per chunk, in percent, of a retransmission stall (emulated loss).
    #[arg(long, value_name = "PCT", default_value_t = 0.0)]
    loss_pct: f64,

    /// The stall a lost chunk costs, in milliseconds (a TCP retransmission timeout).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    rto_ms: u64,
}

/// A chunk and when it may go out.
struct Delayed {
    release: Instant,
    data: Vec<u8>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(0.0..=100.0).contains(&args.loss_pct) {
        eprintln!("delay_proxy: --loss-pct must be within 0..=100");
        return ExitCode::from(2);
    }
    let listener = match TcpListener::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("delay_proxy: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!("delay_proxy listening on {} to {}", args.listen, args.to);
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    for (conn_idx, incoming) in listener.incoming().enumerate() {
        connections.retain(|c| !c.is_finished());
        let client = match incoming {
            Ok(c) => c,
            Err(e) => {
                eprintln!("delay_proxy: accept: {e}");
                continue;
            }
        };
        let args = args.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("proxy-{conn_idx}"))
            .spawn(move || relay(client, &args));
        match spawned {
            Ok(handle) => connections.push(handle),
            Err(e) => eprintln!("delay_proxy: cannot start a connection thread: {e}"),
        }
    }
    for connection in connections {
        let _ = connection.join();
    }
    ExitCode::SUCCESS
}

/// Forwards one accepted connection until both directions ended.
fn relay(client: TcpStream, args: &Args) {
    let server = match TcpStream::connect_timeout(&args.to, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("delay_proxy: cannot connect to {}: {e}", args.to);
            return;
        }
    };
    let streams = [&client, &server].map(|s| {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(POLL))?;
        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
        s.try_clone()
    });
    let [Ok(client_dup), Ok(server_dup)] = streams else {
        eprintln!("delay_proxy: cannot set up a connection to {}", args.to);
        return;
    };
    // Set when either side fails: then both directions stop.
    let broken = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let directions = [(client, server_dup), (server, client_dup)];
        for (from, to) in directions {
            let (queue, chunks) = sync_channel::<Delayed>(QUEUE);
            let broken = &broken;
            scope.spawn(move || read_side(from, queue, args, broken));
            scope.spawn(move || write_side(to, chunks, broken));
        }
    });
}

/// Reads chunks from `from` and queues each with its release time; ends at end of input
/// (dropping the queue tells the writer) or when the connection breaks.
fn read_side(mut from: TcpStream, queue: SyncSender<Delayed>, args: &Args, broken: &AtomicBool) {
    let delay = Duration::from_millis(args.delay_ms);
    let rto = Duration::from_millis(args.rto_ms);
    let mut last_release = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    while !broken.load(Ordering::Relaxed) {
        let n = match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut release = Instant::now() + delay;
        if args.loss_pct > 0.0 && fastrand::f64() * 100.0 < args.loss_pct {
            release += rto;
        }
        // Never before the chunk ahead of it: TCP delivers in order.
        release = release.max(last_release);
        last_release = release;
        if queue.send(Delayed { release, data: buf[..n].to_vec() }).is_err() {
            break;
        }
    }
    broken.store(true, Ordering::Relaxed);
    let _ = from.shutdown(Shutdown::Both);
}

/// Writes each queued chunk to `to` at its release time; passes end of input on.
fn write_side(mut to: TcpStream, chunks: Receiver<Delayed>, broken: &AtomicBool) {
    loop {
        let chunk = match chunks.recv_timeout(POLL) {
            Ok(chunk) => chunk,
            Err(RecvTimeoutError::Timeout) if !broken.load(Ordering::Relaxed) => continue,
            Err(RecvTimeoutError::Timeout) => break,
            Err(RecvTimeoutError::Disconnected) => {
                // The reader saw end of input: pass it on once everything before it is out.
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
        };
        let wait = chunk.release.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        if to.write_all(&chunk.data).is_err() {
            break;
        }
    }
    broken.store(true, Ordering::Relaxed);
    let _ = to.shutdown(Shutdown::Both);
}

//! How a worker reaches its source (issue 19), in the order that saves time:
//!
//! 1. its addresses (`dial`: overlapping attempts, the first that connects);
//! 2. when this peer may be reachable (`reach::reversal_may_work`), a reversal: the source
//!    asked through a tracker to connect to this peer, awaited `REVERSAL_WAIT`;
//! 3. else, or when the source did not connect back, a hole punch (`Puncher`) and the
//!    tracker's relay at once: the first connection whose handshake completes (this peer the
//!    initiator on both) is greeted and kept, the other given up (its thread stopped and
//!    joined, its socket shut). When the relay wins, the puncher goes on, and the worker
//!    moves to the hole it punches later (`worker`).
//!
//! Every wait ends when the coordinator lets the worker go (its job channel closes).

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, TryRecvError};

use common::connection::{Connection, Timeouts};
use common::frame::FrameError;
use common::message::{Reply, Request, TrackerError};
use common::peer_message::{PeerReply, PeerRequest};
use common::PublicKey;

use super::greeting::{greet, Greeted};
use super::puncher::{PunchNews, Puncher};
use super::target::Target;
use crate::interrupt::Interrupt;
use crate::reach::SourcePath;
use crate::tracker_link::LinkError;
use crate::tracker_session::CallError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(20);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a worker waits for a peer it asked to connect back (issue 19): its long poll
/// takes the call at once, then it dials and runs the handshake.
const REVERSAL_WAIT: Duration = Duration::from_secs(3);

/// A connection to a source, greeted, and how it was reached.
pub struct Opened {
    pub greeted: Greeted,
    pub path: SourcePath,
    /// For a relayed source: the hole punches still tried, the worker's way to a direct
    /// path.
    pub puncher: Option<Puncher>,
}

/// Why no connection was opened.
pub enum Failure {
    /// No way to the peer worked: why, for the user.
    Unreachable(String),
    Frame(FrameError),
}

impl From<FrameError> for Failure {
    fn from(e: FrameError) -> Failure {
        Failure::Frame(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::Frame(e.into())
    }
}

fn timeouts() -> Timeouts {
    Timeouts { handshake: CONNECT_TIMEOUT, read: READ_TIMEOUT, write: WRITE_TIMEOUT }
}

/// A greeted connection to the peer listed at `addr` (worker `n`), which must prove `key`,
/// by the first path that works (see the module's comment). `stopped` closes when the
/// worker is to stop.
pub fn open<J>(
    n: u32,
    (addr, dial): (SocketAddr, &[SocketAddr]),
    key: &PublicKey,
    target: &Arc<Target>,
    stopped: &Receiver<J>,
) -> Result<Opened, Failure> {
    let own_public = target.tracker.observed().map(|a| a.ip());
    let timeout_for = |a| crate::reach::connect_timeout(a, dial, own_public, CONNECT_TIMEOUT);
    let direct = match crate::dial::connect_any(dial, timeout_for) {
        Ok((stream, reached)) => {
            if reached != addr {
                log::info!("peer={addr}: reached at {reached}");
            }
            let conn = Connection::connect(stream, &target.identity, key, timeouts())?;
            let greeted = greet(conn, target)?;
            return Ok(Opened { greeted, path: SourcePath::Direct, puncher: None });
        }
        Err(e) => format!("no address answered ({e})"),
    };
    let (listen, reachability) = &target.reach;
    let before = match crate::reach::reversal_may_work(*listen, own_public, reachability.mapped()) {
        true => match reverse(key, target, stopped) {
            Ok(mut conn) => {
                log::info!("peer={addr}: reached by reversal (it connected to this peer)");
                conn.set_deadline(None)?;
                conn.set_read_timeout(READ_TIMEOUT)?;
                conn.set_max_frame(common::frame::MAX_FRAME_LEN);
                let greeted = greet(conn, target)?;
                return Ok(Opened { greeted, path: SourcePath::Reversed, puncher: None });
            }
            // The peer got the call and did not connect: a hole or a relay may join them.
            Err(NoReversal::NoConnection(why)) => format!("{direct}, {why}"),
            // A punch or a relay would be refused alike (the peer does not wait for calls,
            // the calls budget is spent, ...): not asked.
            Err(NoReversal::Refused(why)) => {
                let why = format!("{direct}, and {why}");
                log::info!("peer={addr}: {why}");
                return Err(Failure::Unreachable(why));
            }
        },
        // Behind a router that maps nothing: the peer could not connect back.
        false => format!("{direct}, and this peer is behind a router too"),
    };
    log::info!("peer={addr}: {before}; punching a hole and asking for a relay at once");
    punch_or_relay(n, (addr, dial), key, target, stopped, &before)
}

/// The hole punch and the relay at once (see the module's comment).
fn punch_or_relay<J>(
    n: u32,
    (addr, dial): (SocketAddr, &[SocketAddr]),
    key: &PublicKey,
    target: &Arc<Target>,
    stopped: &Receiver<J>,
    before: &str,
) -> Result<Opened, Failure> {
    let targets: Vec<SocketAddr> =
        dial.iter().copied().filter(|a| !crate::reach::is_local(a.ip())).collect();
    let puncher = Puncher::start(*key, targets, Arc::clone(target), format!("dl-punch-{n}"))?;
    let punch_news = puncher.news().clone();
    let relay_cancel = Interrupt::default();
    let (relay_tx, relay_done) = crossbeam_channel::bounded(1);
    let outcome = std::thread::scope(|scope| {
        let relaying =
            std::thread::Builder::new().name(format!("dl-relay-{n}")).spawn_scoped(scope, || {
                let _ = relay_tx.send(relay(key, target, &relay_cancel));
            });
        if let Err(e) = relaying {
            let _ = relay_tx.send(Err(NoRelay::Other(format!("no relay thread: {e}"))));
        }
        let mut punch_failed: Option<String> = None;
        let mut relay_failed: Option<NoRelay> = None;
        let outcome = loop {
            crossbeam_channel::select! {
                recv(relay_done) -> relayed => match relayed {
                    Ok(Ok(conn)) => break Race::Relayed(Box::new(conn)),
                    Ok(Err(no)) => relay_failed = Some(no),
                    Err(_) => relay_failed = Some(NoRelay::Other("no relay".into())),
                },
                recv(punch_news) -> news => match news {
                    Ok(PunchNews::Punched(greeted)) => break Race::Punched(greeted),
                    Ok(PunchNews::Failed { why, .. }) => punch_failed = Some(why),
                    Err(_) => punch_failed = Some("the punch stopped".into()),
                },
                recv(stopped) -> _ => break Race::Lost(Failure::Frame(stopped_waiting())),
            }
            if let (Some(punch), Some(relay)) = (&punch_failed, &relay_failed) {
                break Race::Lost(unreachable(addr, before, punch, relay));
            }
        };
        // Whatever lost stops now; the scope joins the relay's thread.
        if !matches!(outcome, Race::Relayed(_)) {
            relay_cancel.fire();
        }
        outcome
    });
    match outcome {
        Race::Relayed(conn) => {
            log::info!("peer={addr}: reached through a tracker's relay");
            let greeted = greet(*conn, target)?;
            Ok(Opened { greeted, path: SourcePath::Relayed, puncher: Some(puncher) })
        }
        Race::Punched(greeted) => {
            log::info!("peer={addr}: reached by a hole punched through both routers");
            Ok(Opened { greeted: *greeted, path: SourcePath::Punched, puncher: None })
        }
        Race::Lost(failure) => Err(failure),
    }
}

/// How the race between a hole punch and a relay ended.
enum Race {
    /// The relay's connection completed its handshake first.
    Relayed(Box<Connection<PeerReply, PeerRequest>>),
    /// A hole was punched first (its connection greeted).
    Punched(Box<Greeted>),
    /// Both failed, or the worker was let go.
    Lost(Failure),
}

/// The worker was let go while it waited for a path.
fn stopped_waiting() -> FrameError {
    FrameError::Io(std::io::Error::new(std::io::ErrorKind::Interrupted, "stopped waiting"))
}

/// Why a source could be reached no way, for the user.
fn unreachable(addr: SocketAddr, before: &str, punch: &str, relay: &NoRelay) -> Failure {
    match relay {
        NoRelay::Off => {
            log::info!("peer={addr}: {before}, {punch}, and relaying is off");
            Failure::Unreachable("both behind NAT and relaying is off".to_string())
        }
        NoRelay::Other(why) => {
            let why = format!("{before}, {punch}, and {why}");
            log::info!("peer={addr}: {why}");
            Failure::Unreachable(why)
        }
    }
}

/// Why no relay was joined.
enum NoRelay {
    /// The tracker where the peer waits relays nothing.
    Off,
    Other(String),
}

/// Asks the tracker for a relay to the peer that proves `key`, joins it and runs the secure
/// channel through it (this peer the initiator). `cancel` gives up.
fn relay(
    key: &PublicKey,
    target: &Target,
    cancel: &Interrupt,
) -> Result<Connection<PeerReply, PeerRequest>, NoRelay> {
    let other = |why: String| NoRelay::Other(format!("no relay: {why}"));
    let nonce = Target::nonce().map_err(other)?;
    let ticket = target.ticket.lock().clone();
    let request = Request::Relay { ticket, seeder: *key, nonce };
    let tracker = match target.path_call(request, Some(cancel)) {
        Ok(Reply::RelayAt { tracker }) => tracker,
        Ok(reply) => return Err(other(format!("the tracker answered {reply:?}"))),
        Err(CallError::Link(LinkError::Tracker(TrackerError::RelayOff))) => {
            return Err(NoRelay::Off)
        }
        Err(e) => return Err(other(e.to_string())),
    };
    // The relay's socket is shut down when the relay is given up.
    let on_socket = |socket: TcpStream| {
        let shut = socket.try_clone();
        cancel.on_fire(move || {
            if let Ok(s) = &shut {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        });
        if cancel.is_fired() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    };
    let stream = target
        .tracker
        .join_relay(tracker, nonce, false, &on_socket)
        .map_err(|e| other(e.to_string()))?;
    Connection::connect(stream, &target.identity, key, timeouts())
        .map_err(|e| other(format!("joined, but no handshake: {e}")))
}

/// Asks the tracker to have the peer that proves `key` connect to this one, and waits for
/// that connection (`REVERSAL_WAIT` at most).
fn reverse<J>(
    key: &PublicKey,
    target: &Target,
    stopped: &Receiver<J>,
) -> Result<Connection<PeerReply, PeerRequest>, NoReversal> {
    let digest = target.swarm.meta.digest;
    let awaiting = target
        .reversals
        .expect(*key, digest)
        .ok_or_else(|| NoReversal::Refused("too many reversed connections awaited".to_string()))?;
    let ticket = target.ticket.lock().clone();
    let request = Request::Reverse { ticket, seeder: *key, nonce: awaiting.nonce };
    match target.path_call(request, None) {
        Ok(Reply::Done) => {}
        Ok(other) => {
            return Err(NoReversal::Refused(format!("the tracker answered a reversal {other:?}")))
        }
        Err(e) => return Err(NoReversal::Refused(format!("no reversal: {e}"))),
    }
    if matches!(stopped.try_recv(), Err(TryRecvError::Disconnected)) {
        return Err(NoReversal::Refused("stopped waiting".to_string()));
    }
    // No job comes before the connection is ready: the job channel only closes, when
    // the coordinator lets this worker go.
    crossbeam_channel::select! {
        recv(awaiting.arrived) -> conn => conn.map_err(|_| {
            NoReversal::NoConnection("no reversed connection".to_string())
        }),
        recv(stopped) -> _ => Err(NoReversal::Refused("stopped waiting".to_string())),
        default(REVERSAL_WAIT) => Err(NoReversal::NoConnection(format!(
            "the peer did not connect back within {} s",
            REVERSAL_WAIT.as_secs()
        ))),
    }
}

/// Why no reversed connection came.
enum NoReversal {
    /// The tracker passed the call on; the peer did not connect (this peer is not
    /// reachable for it either).
    NoConnection(String),
    /// The tracker did not pass the call on, or this worker stopped waiting.
    Refused(String),
}

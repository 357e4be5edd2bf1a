//! One connection to one peer for one download (`dl-worker-N` thread).
//!
//! It takes `Job`s from its bounded channel, keeps up to `PIPELINE` requests on the wire,
//! reads each piece into one of its own buffers and hands it to the rayon pool, which checks
//! the SHA1 and passes a good piece to the client's disk writer (`disk_writer`); the writer
//! reports to the coordinator. Memory per peer is `BUFFERS` pieces, whatever the file's
//! size.
//!
//! Issue 12: while it has nothing on the wire it waits on its socket and on a wake-up the
//! coordinator writes with each job (`readiness`), so it takes in the pieces its peer
//! pushes (`Have`) at any time. Those are merged into one bounded `HaveNews` per worker,
//! with at most one `Event::Have` waiting for the coordinator, whatever the peer sends.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use common::connection::{Connection, Timeouts};
use common::frame::FrameError;
use common::message::{Reply, Request, Ticket, TrackerError};
use common::peer_message::{PeerReply, PeerRequest, MAX_HAVE_BATCH, PEER_PROTOCOL_VERSION};
use common::{Bitfield, Identity, PieceIndex, PublicKey, Sha1Digest};
use parking_lot::Mutex;

use super::disk_writer::{DiskWriter, PieceWrite};
pub use super::event::Event;
use super::scheduler::PeerId;
use super::store::Store;
use crate::piece_buf::{piece_buf, PieceBuf};
use crate::rate::RateCap;
use crate::reach::SourcePath;
use crate::readiness;
use crate::swarm::Swarm;
use crate::tracker_link::LinkError;
use crate::tracker_session::CallError;

/// Requests kept on the wire per peer.
pub const PIPELINE: usize = 2;
/// Piece buffers per peer: the pipeline plus one being hashed and written.
const BUFFERS: usize = PIPELINE + 1;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a connection with nothing on the wire looks whether its ticket is due for
/// renewal: a seeder closes a connection whose ticket expired by its clock (issue 21), so
/// a worker waiting for a job or a pushed piece renews too, not only when it asks.
const RENEWAL_CHECK: Duration = Duration::from_secs(1);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a worker waits for a peer it asked to connect back (issue 19): its long poll
/// takes the call at once, then it dials and runs the handshake.
const REVERSAL_WAIT: Duration = Duration::from_secs(3);

/// A piece to fetch.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub piece: PieceIndex,
}

/// The pieces a peer announced that its coordinator has not taken yet. Bounded: one bit per
/// piece, and one `Event::Have` waiting at most.
#[derive(Debug)]
pub struct HaveNews {
    pieces: Bitfield,
    /// An `Event::Have` was sent and not yet answered by `take`.
    signalled: bool,
}

impl HaveNews {
    /// No news about a file of `n_pieces` pieces.
    pub fn new(n_pieces: u32) -> Mutex<HaveNews> {
        Mutex::new(HaveNews { pieces: Bitfield::empty(n_pieces), signalled: false })
    }

    /// Takes the news (for the coordinator, on `Event::Have`).
    pub fn take(&mut self) -> Bitfield {
        self.signalled = false;
        let empty = Bitfield::empty(self.pieces.n_pieces());
        std::mem::replace(&mut self.pieces, empty)
    }
}

/// What a worker needs to know of its download.
pub struct Target {
    /// This peer's key pair, proven to every seeder (tickets are bound to it).
    pub identity: Arc<Identity>,
    /// The newest ticket from the tracker (the coordinator replaces it at every refresh);
    /// workers pass it on to their seeder before the one it holds expires.
    pub ticket: Mutex<Ticket>,
    /// Where the verified pieces go (the `.part` file or the staging tree), shared with
    /// the disk writer's queue.
    pub store: Arc<Store>,
    pub writer: DiskWriter,
    /// The download's swarm: its metadata (piece hashes, layout), and where the newest
    /// verified pieces are kept for our seeder.
    pub swarm: Arc<Swarm>,
    /// The download cap, all downloads together: each request waits for its piece's
    /// share of it.
    pub cap: Arc<RateCap>,
    /// The tracker session, through which a worker asks an unreachable peer to connect
    /// back (issue 19).
    pub tracker: Arc<crate::tracker_session::TrackerSession>,
    /// Where reversed connections arrive.
    pub reversals: Arc<crate::reversal::Reversals>,
    /// This peer's listen address and router mapping (whether a reversal may work).
    pub reach: (SocketAddr, crate::advertiser::Reachability),
}

/// Connects to the peer listed at `addr`, at the first of `dial` that answers (its
/// addresses in order of preference, issue 19), which must prove `key`, and serves jobs
/// until the job channel closes or the peer fails. `on_connect` receives a clone of the
/// socket so the coordinator can cut it short.
pub fn run(
    peer: PeerId,
    (addr, dial): (SocketAddr, Vec<SocketAddr>),
    key: PublicKey,
    target: Arc<Target>,
    inbox: Inbox,
    events: Sender<Event>,
    on_connect: impl Fn(TcpStream),
) {
    let opened =
        open((addr, &dial), &key, &target, (&inbox, &on_connect)).and_then(|(conn, path)| {
            on_connect(conn.socket().try_clone()?);
            Ok((conn, path))
        });
    let reason = match opened {
        Ok((conn, path)) => match work(peer, conn, path, &target, &inbox, &events) {
            Ok(()) => "done".to_string(),
            Err(e) => e.to_string(),
        },
        Err(Failure::Unreachable(why)) => {
            let reason = format!("cannot be reached: {why}");
            let _ = events.send(Event::Unreachable { peer, why });
            reason
        }
        Err(Failure::Frame(e)) => e.to_string(),
    };
    let _ = events.send(Event::Gone { peer, reason });
}

/// What a worker receives from its coordinator.
pub struct Inbox {
    /// Pieces to fetch (bounded); closed when the worker should stop.
    pub jobs: Receiver<Job>,
    /// Readable when a job was sent, at its end when the coordinator dropped the worker.
    pub wake: UnixStream,
    /// Where the pieces the peer announces go.
    pub news: Arc<Mutex<HaveNews>>,
}

/// Why a worker ended.
enum Failure {
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

fn work(
    peer: PeerId,
    mut conn: Connection<PeerReply, PeerRequest>,
    path: SourcePath,
    target: &Arc<Target>,
    inbox: &Inbox,
    events: &Sender<Event>,
) -> Result<(), FrameError> {
    let jobs = &inbox.jobs;
    let ticket = target.ticket.lock().clone();
    let mut ticket_expires = ticket.expires;
    conn.send(&PeerRequest::Hello {
        version: PEER_PROTOCOL_VERSION,
        digest: target.swarm.meta.digest,
        ticket,
    })?;
    match conn.recv()? {
        Some(PeerReply::Welcome { have }) => {
            if events.send(Event::Ready { peer, have, path }).is_err() {
                return Ok(());
            }
        }
        Some(PeerReply::Refused { reason }) => return Err(protocol(format!("refused: {reason}"))),
        Some(other) => return Err(protocol(format!("unexpected handshake reply {other:?}"))),
        None => return Err(FrameError::Truncated),
    }

    let (free_tx, free_rx) = crossbeam_channel::bounded::<PieceBuf>(BUFFERS);
    for _ in 0..BUFFERS {
        let _ = free_tx.send(piece_buf());
    }
    let mut outstanding: VecDeque<(PieceIndex, Instant)> = VecDeque::new();
    // A job taken that the download cap did not let go yet.
    let mut held: Option<PieceIndex> = None;
    let mut closed = false;
    let n_pieces = target.swarm.layout.n_pieces();
    loop {
        if let Some(fresh) = renewal(&target.ticket, ticket_expires) {
            ticket_expires = fresh.expires;
            conn.send(&PeerRequest::Renew { ticket: fresh })?;
        }
        // Keep the pipeline full, as far as the download cap lets this piece go now.
        let mut cap_wait = None;
        while !closed && outstanding.len() < PIPELINE {
            let piece = match held.take() {
                Some(piece) => piece,
                None => match jobs.try_recv() {
                    Ok(Job { piece }) => piece,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                },
            };
            // The download cap: a request that does not fit now is held, and the replies
            // to those on the wire are read meanwhile.
            if let Err(wait) = target.cap.try_take(target.swarm.layout.piece_len(piece)) {
                held = Some(piece);
                cap_wait = Some(wait);
                break;
            }
            if let Some(fresh) = renewal(&target.ticket, ticket_expires) {
                ticket_expires = fresh.expires;
                conn.send(&PeerRequest::Renew { ticket: fresh })?;
            }
            conn.send(&PeerRequest::GetPiece { piece })?;
            outstanding.push_back((piece, Instant::now()));
        }
        if outstanding.is_empty() {
            if closed {
                return Ok(());
            }
            // Nothing on the wire: wait for a job, for what the peer pushes, or until the
            // held request fits under the cap.
            let timeout = cap_wait.map_or(READ_TIMEOUT, |w| w.min(READ_TIMEOUT)).min(RENEWAL_CHECK);
            let ready =
                readiness::wait(conn.socket(), conn.has_buffered(), Some(&inbox.wake), timeout)?;
            if ready.closed {
                closed = true;
            }
            if !ready.socket {
                continue;
            }
        }
        let reply = conn.recv()?;
        let expected = outstanding.front().copied();
        match (reply, expected) {
            (Some(PeerReply::Have { pieces }), _) => {
                if pieces.len() > MAX_HAVE_BATCH || pieces.iter().any(|p| p.0 >= n_pieces) {
                    return Err(protocol(format!(
                        "announced {} pieces, some unknown",
                        pieces.len()
                    )));
                }
                let mut news = inbox.news.lock();
                for piece in pieces {
                    news.pieces.set(piece);
                }
                if !news.signalled {
                    news.signalled = true;
                    if events.send(Event::Have { peer }).is_err() {
                        return Ok(());
                    }
                }
            }
            (Some(PeerReply::Piece { piece, len }), Some((asked, at))) if piece == asked => {
                outstanding.pop_front();
                take_piece(&mut conn, target, &free_tx, &free_rx, events, peer, piece, len, at)?;
            }
            (Some(PeerReply::Instead { asked, piece, len }), Some((expected, at)))
                if asked == expected && piece.0 < n_pieces =>
            {
                outstanding.pop_front();
                let _ = events.send(Event::Elsewhere { peer, piece: asked });
                take_piece(&mut conn, target, &free_tx, &free_rx, events, peer, piece, len, at)?;
            }
            (Some(PeerReply::Elsewhere { piece }), Some((asked, _))) if piece == asked => {
                outstanding.pop_front();
                let _ = events.send(Event::Elsewhere { peer, piece });
            }
            (Some(PeerReply::NoPiece { piece }), Some((asked, _))) if piece == asked => {
                outstanding.pop_front();
                let _ = events.send(Event::NoPiece { peer, piece });
            }
            (Some(PeerReply::Refused { reason }), _) => {
                return Err(protocol(format!("refused: {reason}")));
            }
            (Some(other), _) => {
                return Err(protocol(format!("unasked or unexpected reply {other:?}")))
            }
            (None, _) => return Err(FrameError::Truncated),
        }
    }
}

/// A secure connection to the peer listed at `addr`, which must prove `key`: dialed at
/// the first of `dial` that answers, or else (issue 19: it may be behind a NAT) reversed,
/// the peer asked through a tracker to connect to this one.
///
/// The waits for a reversed connection or a relay end when the coordinator lets the worker
/// go (its job channel closes; the relay's socket, handed to `on_socket`, is shut down).
fn open(
    (addr, dial): (SocketAddr, &[SocketAddr]),
    key: &PublicKey,
    target: &Target,
    (inbox, on_socket): (&Inbox, &dyn Fn(TcpStream)),
) -> Result<(Connection<PeerReply, PeerRequest>, SourcePath), Failure> {
    let direct = match crate::dial::connect_any(dial, CONNECT_TIMEOUT) {
        Ok((stream, reached)) => {
            if reached != addr {
                log::info!("peer={addr}: reached at {reached}");
            }
            let timeouts =
                Timeouts { handshake: CONNECT_TIMEOUT, read: READ_TIMEOUT, write: WRITE_TIMEOUT };
            let conn = Connection::connect(stream, &target.identity, key, timeouts)?;
            return Ok((conn, SourcePath::Direct));
        }
        Err(e) => e,
    };
    let (listen, reachability) = &target.reach;
    let observed = target.tracker.observed().map(|a| a.ip());
    let reversal = match crate::reach::reversal_may_work(*listen, observed, reachability.mapped()) {
        true => reverse(key, target, &inbox.jobs),
        // Behind a router that maps nothing: the peer could not connect back, but both may
        // connect to each other at once through their routers.
        false => match punch(key, dial, target, &inbox.jobs) {
            Ok(stream) => {
                let timeouts = Timeouts {
                    handshake: CONNECT_TIMEOUT,
                    read: READ_TIMEOUT,
                    write: WRITE_TIMEOUT,
                };
                let conn = Connection::connect(stream, &target.identity, key, timeouts)?;
                log::info!("peer={addr}: reached by a hole punched through both routers");
                return Ok((conn, SourcePath::Punched));
            }
            Err(why) => Err(NoReversal::NoConnection(format!(
                "this peer is behind a router too, and {why}"
            ))),
        },
    };
    let reversed = match reversal {
        Ok(mut conn) => {
            log::info!("peer={addr}: reached by reversal (it connected to this peer)");
            conn.set_deadline(None)?;
            conn.set_read_timeout(READ_TIMEOUT)?;
            conn.set_max_frame(common::frame::MAX_FRAME_LEN);
            return Ok((conn, SourcePath::Reversed));
        }
        // The peer got the call and did not connect: a relay may join the two.
        Err(NoReversal::NoConnection(why)) => why,
        // A relay would be refused alike (the peer does not wait for calls, the calls
        // budget is spent, ...): not asked.
        Err(NoReversal::Refused(why)) => {
            let why = format!("no address answered ({direct}), and {why}");
            log::info!("peer={addr}: {why}");
            return Err(Failure::Unreachable(why));
        }
    };
    match relay(key, target, on_socket) {
        Ok(stream) => {
            let timeouts =
                Timeouts { handshake: CONNECT_TIMEOUT, read: READ_TIMEOUT, write: WRITE_TIMEOUT };
            let conn = Connection::connect(stream, &target.identity, key, timeouts)?;
            log::info!("peer={addr}: reached through a tracker's relay");
            Ok((conn, SourcePath::Relayed))
        }
        Err(NoRelay::Off) => {
            log::info!(
                "peer={addr}: no address answered ({direct}), {reversed}, and relaying is off"
            );
            Err(Failure::Unreachable("both behind NAT and relaying is off".to_string()))
        }
        Err(NoRelay::Other(why)) => {
            let why = format!("no address answered ({direct}), {reversed}, and {why}");
            log::info!("peer={addr}: {why}");
            Err(Failure::Unreachable(why))
        }
    }
}

/// Why no relay was joined.
enum NoRelay {
    /// The tracker where the peer waits relays nothing.
    Off,
    Other(String),
}

/// Asks the tracker for a relay to the peer that proves `key` and joins it: the socket
/// through which this peer then runs its secure channel with that peer, end to end.
fn relay(
    key: &PublicKey,
    target: &Target,
    on_socket: &dyn Fn(TcpStream),
) -> Result<TcpStream, NoRelay> {
    let other = |why: String| NoRelay::Other(format!("no relay: {why}"));
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| other(e.to_string()))?;
    let nonce = u64::from_le_bytes(bytes);
    let ticket = target.ticket.lock().clone();
    let tracker = match path_call(target, Request::Relay { ticket, seeder: *key, nonce }) {
        Ok(Reply::RelayAt { tracker }) => tracker,
        Ok(reply) => return Err(other(format!("the tracker answered {reply:?}"))),
        Err(CallError::Link(LinkError::Tracker(TrackerError::RelayOff))) => {
            return Err(NoRelay::Off)
        }
        Err(e) => return Err(other(e.to_string())),
    };
    target.tracker.join_relay(tracker, nonce, false, on_socket).map_err(|e| other(e.to_string()))
}

/// Asks the tracker to have the peer that proves `key` connect to this one, and waits for
/// that connection (`REVERSAL_WAIT` at most).
fn reverse(
    key: &PublicKey,
    target: &Target,
    jobs: &Receiver<Job>,
) -> Result<Connection<PeerReply, PeerRequest>, NoReversal> {
    let digest = target.swarm.meta.digest;
    let awaiting = target
        .reversals
        .expect(*key, digest)
        .ok_or_else(|| NoReversal::Refused("too many reversed connections awaited".to_string()))?;
    let ticket = target.ticket.lock().clone();
    let request = Request::Reverse { ticket, seeder: *key, nonce: awaiting.nonce };
    match path_call(target, request) {
        Ok(Reply::Done) => {}
        Ok(other) => {
            return Err(NoReversal::Refused(format!("the tracker answered a reversal {other:?}")))
        }
        Err(e) => return Err(NoReversal::Refused(format!("no reversal: {e}"))),
    }
    // No job comes before the connection is ready: the job channel only closes, when
    // the coordinator lets this worker go.
    crossbeam_channel::select! {
        recv(awaiting.arrived) -> conn => conn.map_err(|_| {
            NoReversal::NoConnection("no reversed connection".to_string())
        }),
        recv(jobs) -> _ => Err(NoReversal::Refused("stopped waiting".to_string())),
        default(REVERSAL_WAIT) => Err(NoReversal::NoConnection(format!(
            "the peer did not connect back within {} s",
            REVERSAL_WAIT.as_secs()
        ))),
    }
}

/// Asks the tracker to have the peer that proves `key` punch a hole to this one while this
/// one punches to the peer's public addresses (of `dial`), from the listening port; the
/// connection either end's `connect` or this peer's listener got (`PUNCH_FOR` at most).
fn punch(
    key: &PublicKey,
    dial: &[SocketAddr],
    target: &Target,
    jobs: &Receiver<Job>,
) -> Result<TcpStream, String> {
    let targets: Vec<SocketAddr> =
        dial.iter().copied().filter(|a| !crate::reach::is_local(a.ip())).collect();
    if targets.is_empty() {
        return Err("the peer registered no public address to punch to".to_string());
    }
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
    let nonce = u64::from_le_bytes(bytes);
    // Awaited before the call: the peer's SYN may be here before the tracker's answer.
    let awaiting = target.reversals.expect_punch(&targets);
    let ticket = target.ticket.lock().clone();
    match path_call(target, Request::Punch { ticket, seeder: *key, nonce }) {
        Ok(Reply::Done) => {}
        Ok(other) => return Err(format!("the tracker answered a punch {other:?}")),
        Err(e) => return Err(format!("no hole punching: {e}")),
    }
    // No job comes before the connection is ready: the channel only closes, when the
    // coordinator lets this worker go.
    if matches!(jobs.try_recv(), Err(TryRecvError::Disconnected)) {
        return Err("stopped".to_string());
    }
    let deadline = Instant::now() + crate::punch::PUNCH_FOR;
    let listen = target.reach.0;
    match crate::punch::punch(listen, &targets, deadline, Some(&awaiting.arrived)) {
        Ok((stream, _)) => Ok(stream),
        Err(e) => {
            Err(format!("no hole punched within {} s ({e})", crate::punch::PUNCH_FOR.as_secs()))
        }
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

/// A call about a path to a peer (reversal, relay) on a tracker link of its own: a worker
/// waiting on a tracker that fails over must not hold a link of the session's pool, which
/// the seeder's ticket checks and the downloads' announcements share.
fn path_call(target: &Target, request: Request) -> Result<Reply, CallError> {
    let session = target.tracker.login().map(|l| l.session).ok_or(CallError::NotLoggedIn)?;
    Ok(target.tracker.own_link().call(Some(session), request, None)?)
}

/// Reads the `len` bytes of `piece` that follow its reply into a free buffer and hands
/// them to the rayon pool, which checks the hash and passes a good piece to the writer.
#[allow(clippy::too_many_arguments)]
fn take_piece(
    conn: &mut Connection<PeerReply, PeerRequest>,
    target: &Arc<Target>,
    free_tx: &Sender<PieceBuf>,
    free_rx: &Receiver<PieceBuf>,
    events: &Sender<Event>,
    peer: PeerId,
    piece: PieceIndex,
    len: u32,
    asked: Instant,
) -> Result<(), FrameError> {
    let want = target.swarm.layout.piece_len(piece);
    if want == 0 || len as usize != want {
        return Err(protocol(format!("sent piece {} with {len} bytes", piece.0)));
    }
    let mut buf = free_rx.recv().map_err(|_| protocol("buffer pool closed".into()))?;
    conn.recv_payload(&mut buf[..want])?;
    let secs = asked.elapsed().as_secs_f64().max(1e-6);
    let bytes_per_sec = want as f64 / secs;
    let target = Arc::clone(target);
    let events = events.clone();
    let free_tx = free_tx.clone();
    rayon::spawn(move || {
        let hash = Sha1Digest::of(&buf[..want]);
        if target.swarm.meta.pieces.get(piece.0 as usize) != Some(&hash) {
            let _ = events.send(Event::BadHash { peer, piece });
            let _ = free_tx.send(buf);
            return;
        }
        let write = PieceWrite {
            store: Arc::clone(&target.store),
            swarm: Arc::clone(&target.swarm),
            piece,
            buf,
            done: Event::Verified { peer, piece, hash, bytes_per_sec },
            events,
            free: free_tx,
        };
        if let Err(unsent) = target.writer.tx.send(write) {
            let w = unsent.into_inner();
            let reason = "disk writer stopped".to_string();
            let _ = w.events.send(Event::WriteFailed { piece, reason });
        }
    });
    Ok(())
}

/// The ticket to send the seeder, if the one it holds (expiring at `held_expires`) has used
/// a third of its life and the coordinator has a newer one: the margin covers requests
/// still queued at the seeder.
fn renewal(latest: &Mutex<Ticket>, held_expires: u64) -> Option<Ticket> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let latest = latest.lock();
    let left = held_expires.saturating_sub(now);
    let fresh_life = latest.expires.saturating_sub(now);
    (latest.expires > held_expires && left <= fresh_life * 2 / 3).then(|| latest.clone())
}

fn protocol(detail: String) -> FrameError {
    FrameError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, detail))
}

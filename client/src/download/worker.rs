//! One connection to one peer for one download (`dl-worker-N` thread).
//!
//! It opens the connection by the first path that works (`paths`), then takes `Job`s from
//! its bounded channel, keeps up to `Target::pipeline` requests on the wire, reads each piece into
//! one of its own buffers and hands it to the rayon pool, which checks the SHA1 and passes a
//! good piece to the client's disk writer (`disk_writer`); the writer reports to the
//! coordinator. A piece that is a whole small file of a folder is checked and written on
//! the worker's own thread instead, once its next requests are on the wire (issue 23: for
//! a few KiB, the two hand-offs cost more than the work). Memory per peer is `BUFFERS`
//! pieces, whatever the file's size.
//!
//! Issue 12: while it has nothing on the wire it waits on its socket and on a wake-up the
//! coordinator writes with each job (`readiness`), so it takes in the pieces its peer
//! pushes (`Have`) at any time. Those are merged into one bounded `HaveNews` per worker,
//! with at most one `Event::Have` waiting for the coordinator, whatever the peer sends.
//!
//! Issue 19: a relayed source keeps being punched to (`puncher`); once a hole is punched,
//! the worker asks nothing more through the relay, takes the replies to what it asked
//! (or, if the relay breaks meanwhile, asks those pieces again on the punched connection),
//! then moves to the punched connection and closes the relayed one: no piece is lost or
//! counted twice.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use common::connection::Connection;
use common::frame::FrameError;
use common::message::Ticket;
use common::peer_message::{PeerReply, PeerRequest, MAX_HAVE_BATCH};
use common::{Bitfield, PieceIndex, PublicKey, Sha1Digest};
use parking_lot::Mutex;

use super::disk_writer::{self, PieceWrite};
pub use super::event::Event;
use super::greeting::{protocol, Greeted};
use super::paths::{Failure, Opened};
use super::puncher::{PunchNews, Puncher};
use super::scheduler::PeerId;
pub use super::target::Target;
use crate::piece_buf::{piece_buf, PieceBuf};
use crate::reach::SourcePath;
use crate::readiness;

/// Requests kept on the wire per peer (for a file; `Target::pipeline` says how many).
pub const PIPELINE: usize = 2;
/// Piece buffers per peer: a file's pipeline plus one being hashed and written. A deeper
/// pipeline of small pieces (`Target::pipeline`) needs no more: a request holds no buffer,
/// a piece takes one as it arrives, and a small one gives it back once written here.
const BUFFERS: usize = PIPELINE + 1;
const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a connection with nothing on the wire looks whether its ticket is due for
/// renewal: a seeder closes a connection whose ticket expired by its clock (issue 21), so
/// a worker waiting for a job or a pushed piece renews too, not only when it asks.
const RENEWAL_CHECK: Duration = Duration::from_secs(1);

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

/// Connects to the peer listed at `addr`, at the first of `dial` that answers (its
/// addresses in order of preference, issue 19), which must prove `key`, and serves jobs
/// until the job channel closes or the peer fails. `on_connect` receives a clone of the
/// socket (each time the worker moves to another) so the coordinator can cut it short.
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
        super::paths::open(peer.0, (addr, &dial), &key, &target, &inbox.jobs).and_then(|o| {
            on_connect(o.greeted.conn.socket().try_clone()?);
            Ok(o)
        });
    let reason = match opened {
        Ok(opened) => {
            let worker = Worker { peer, addr, target: &target, inbox: &inbox, events: &events };
            match worker.work(opened, &on_connect) {
                Ok(()) => "done".to_string(),
                Err(e) => e.to_string(),
            }
        }
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

/// A worker once connected: whom it serves, and what it tells.
struct Worker<'a> {
    peer: PeerId,
    addr: SocketAddr,
    target: &'a Arc<Target>,
    inbox: &'a Inbox,
    events: &'a Sender<Event>,
}

impl Worker<'_> {
    fn work(&self, opened: Opened, on_connect: &dyn Fn(TcpStream)) -> Result<(), FrameError> {
        let (peer, target, inbox, events) = (self.peer, self.target, self.inbox, self.events);
        let jobs = &inbox.jobs;
        let Opened { greeted, path, mut puncher } = opened;
        let Greeted { mut conn, have, mut ticket_expires } = greeted;
        if events.send(Event::Ready { peer, have, path }).is_err() {
            return Ok(());
        }

        let (free_tx, free_rx) = crossbeam_channel::bounded::<PieceBuf>(BUFFERS);
        for _ in 0..BUFFERS {
            let _ = free_tx.send(piece_buf());
        }
        let mut outstanding: VecDeque<(PieceIndex, Instant)> = VecDeque::new();
        // A job taken that the download cap did not let go yet.
        let mut held: Option<PieceIndex> = None;
        // A punched connection to move to once nothing is outstanding on this one.
        let mut moving: Option<Greeted> = None;
        // Pieces asked on a relayed connection that broke while moving: asked again first.
        let mut again: VecDeque<PieceIndex> = VecDeque::new();
        let mut closed = false;
        let n_pieces = target.swarm.layout.n_pieces();
        // A piece read whole, to verify and write here once the pipeline is full again.
        let mut arrived: Option<Arrived> = None;
        loop {
            if moving.is_none() {
                moving = self.punched(&mut puncher);
            }
            if moving.is_some() && outstanding.is_empty() {
                if let Some(next) = moving.take() {
                    // The relayed connection closes as it is dropped.
                    conn = next.conn;
                    ticket_expires = next.ticket_expires;
                    on_connect(conn.socket().try_clone()?);
                    self.note_have(&next.have)?;
                    let path = SourcePath::Punched;
                    log::info!(
                        "peer={}: moved from the relay to a hole punched through both routers",
                        self.addr
                    );
                    if events.send(Event::Moved { peer, path }).is_err() {
                        return Ok(());
                    }
                }
            }
            // (A connection about to be left renews nothing: its successor has the newest.)
            if let Some(fresh) =
                renewal(&target.ticket, ticket_expires).filter(|_| moving.is_none())
            {
                ticket_expires = fresh.expires;
                conn.send(&PeerRequest::Renew { ticket: fresh })?;
            }
            // Keep the pipeline full, as far as the download cap lets this piece go now,
            // unless the worker is about to move.
            let mut cap_wait = None;
            while !closed && moving.is_none() && outstanding.len() < target.pipeline {
                // Asked before, on the relayed connection: its share of the cap was taken.
                if let Some(piece) = again.pop_front() {
                    conn.send(&PeerRequest::GetPiece { piece })?;
                    outstanding.push_back((piece, Instant::now()));
                    continue;
                }
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
            // The seeder has the next requests while this one is checked and written.
            if let Some(piece) = arrived.take() {
                verify_and_write(target, (free_tx.clone(), events.clone()), peer, piece);
                continue;
            }
            if outstanding.is_empty() {
                if closed {
                    return Ok(());
                }
                if moving.is_some() {
                    continue;
                }
                // Nothing on the wire: wait for a job, for what the peer pushes, or until the
                // held request fits under the cap.
                let timeout =
                    cap_wait.map_or(READ_TIMEOUT, |w| w.min(READ_TIMEOUT)).min(RENEWAL_CHECK);
                let ready = readiness::wait(
                    conn.socket(),
                    conn.has_buffered(),
                    Some(&inbox.wake),
                    timeout,
                )?;
                if ready.closed {
                    closed = true;
                }
                if !ready.socket {
                    continue;
                }
            }
            let taken =
                self.take_reply(&mut conn, &mut outstanding, (&free_tx, &free_rx), n_pieces);
            match taken {
                Ok(Flow::Go(next)) => arrived = next,
                Ok(Flow::Stop) => return Ok(()),
                // The relayed connection broke while the worker was moving: what it asked
                // there is asked again on the punched one.
                Err(e) if moving.is_some() => {
                    log::info!(
                        "peer={}: the relayed connection broke while moving: {e}",
                        self.addr
                    );
                    again.extend(outstanding.drain(..).map(|(piece, _)| piece));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A punched connection the puncher has for this worker, if it has one now (a relayed
    /// source's puncher; it is dropped once it has nothing more to try).
    fn punched(&self, puncher: &mut Option<Puncher>) -> Option<Greeted> {
        let news = puncher.as_ref()?.news().try_recv();
        match news {
            Ok(PunchNews::Punched(greeted)) => {
                *puncher = None;
                Some(*greeted)
            }
            Ok(PunchNews::Failed { why, again }) => {
                log::debug!("peer={}: still relayed: {why}", self.addr);
                if !again {
                    log::info!("peer={}: stays relayed: {why}", self.addr);
                    *puncher = None;
                }
                None
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                *puncher = None;
                None
            }
        }
    }

    /// Tells the coordinator of pieces the peer has (`have`), through its `HaveNews`.
    fn note_have(&self, have: &Bitfield) -> Result<(), FrameError> {
        let mut news = self.inbox.news.lock();
        for piece in have.iter() {
            news.pieces.set(piece);
        }
        if !news.signalled {
            news.signalled = true;
            if self.events.send(Event::Have { peer: self.peer }).is_err() {
                return Err(protocol("the download ended".into()));
            }
        }
        Ok(())
    }

    /// Reads one reply from the peer and acts on it. A piece leaves `outstanding` only once
    /// its bytes were read whole.
    fn take_reply(
        &self,
        conn: &mut Connection<PeerReply, PeerRequest>,
        outstanding: &mut VecDeque<(PieceIndex, Instant)>,
        (free_tx, free_rx): (&Sender<PieceBuf>, &Receiver<PieceBuf>),
        n_pieces: u32,
    ) -> Result<Flow, FrameError> {
        let (peer, target, events) = (self.peer, self.target, self.events);
        let reply = conn.recv()?;
        let expected = outstanding.front().copied();
        let mut arrived = None;
        match (reply, expected) {
            (Some(PeerReply::Have { pieces }), _) => {
                if pieces.len() > MAX_HAVE_BATCH || pieces.iter().any(|p| p.0 >= n_pieces) {
                    return Err(protocol(format!(
                        "announced {} pieces, some unknown",
                        pieces.len()
                    )));
                }
                let mut news = self.inbox.news.lock();
                for piece in pieces {
                    news.pieces.set(piece);
                }
                if !news.signalled {
                    news.signalled = true;
                    if events.send(Event::Have { peer }).is_err() {
                        return Ok(Flow::Stop);
                    }
                }
            }
            (Some(PeerReply::Piece { piece, len }), Some((asked, at))) if piece == asked => {
                arrived =
                    take_piece(conn, target, (free_tx, free_rx), events, peer, (piece, len), at)?;
                outstanding.pop_front();
            }
            (Some(PeerReply::Instead { asked, piece, len }), Some((expected, at)))
                if asked == expected && piece.0 < n_pieces =>
            {
                arrived =
                    take_piece(conn, target, (free_tx, free_rx), events, peer, (piece, len), at)?;
                outstanding.pop_front();
                let _ = events.send(Event::Elsewhere { peer, piece: asked });
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
        Ok(Flow::Go(arrived))
    }
}

/// Whether a worker goes on after a reply.
enum Flow {
    /// Going on, with a piece read whole to verify and write on this thread, if any.
    Go(Option<Arrived>),
    /// The download ended (its coordinator is gone).
    Stop,
}

/// A piece read whole off the connection, to verify and write.
struct Arrived {
    piece: PieceIndex,
    buf: PieceBuf,
    bytes_per_sec: f64,
}

/// Reads the `len` bytes of `piece` that follow its reply into a free buffer. A piece that
/// is a whole small file of a folder (`Store::writes_alone`) is returned, to be verified
/// and written on this thread: for a piece of a few KiB, a hop to the rayon pool and
/// another to the disk writer cost more than the work, and the workers of a download's
/// peers then write small files side by side (issue 23). Any other piece is handed to the
/// rayon pool, which checks the hash and passes a good piece to the writer.
fn take_piece(
    conn: &mut Connection<PeerReply, PeerRequest>,
    target: &Arc<Target>,
    (free_tx, free_rx): (&Sender<PieceBuf>, &Receiver<PieceBuf>),
    events: &Sender<Event>,
    peer: PeerId,
    (piece, len): (PieceIndex, u32),
    asked: Instant,
) -> Result<Option<Arrived>, FrameError> {
    let want = target.swarm.layout.piece_len(piece);
    if want == 0 || len as usize != want {
        return Err(protocol(format!("sent piece {} with {len} bytes", piece.0)));
    }
    let mut buf = free_rx.recv().map_err(|_| protocol("buffer pool closed".into()))?;
    conn.recv_payload(&mut buf[..want])?;
    let secs = asked.elapsed().as_secs_f64().max(1e-6);
    let arrived = Arrived { piece, buf, bytes_per_sec: want as f64 / secs };
    if target.store.writes_alone(&target.swarm, piece) {
        return Ok(Some(arrived));
    }
    let target = Arc::clone(target);
    let sinks = (free_tx.clone(), events.clone());
    rayon::spawn(move || verify_and_write(&target, sinks, peer, arrived));
    Ok(None)
}

/// Checks a piece read whole against its hash; writes a good one on this thread if it is
/// a whole small file of a folder, else passes it to the disk writer. Tells the
/// coordinator (`BadHash`, or `Verified` once written) and gives the buffer back to `free`.
fn verify_and_write(
    target: &Arc<Target>,
    (free, events): (Sender<PieceBuf>, Sender<Event>),
    peer: PeerId,
    arrived: Arrived,
) {
    let Arrived { piece, buf, bytes_per_sec } = arrived;
    let want = target.swarm.layout.piece_len(piece);
    let hash = Sha1Digest::of(&buf[..want]);
    if target.swarm.meta.pieces.get(piece.0 as usize) != Some(&hash) {
        let _ = events.send(Event::BadHash { peer, piece });
        let _ = free.send(buf);
        return;
    }
    let write = PieceWrite {
        store: Arc::clone(&target.store),
        swarm: Arc::clone(&target.swarm),
        piece,
        buf,
        done: Event::Verified { peer, piece, hash, bytes_per_sec },
        events,
        free,
    };
    if target.store.writes_alone(&target.swarm, piece) {
        disk_writer::write(write);
        return;
    }
    if let Err(unsent) = target.writer.tx.send(write) {
        let w = unsent.into_inner();
        let reason = "disk writer stopped".to_string();
        let _ = w.events.send(Event::WriteFailed { piece, reason });
    }
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

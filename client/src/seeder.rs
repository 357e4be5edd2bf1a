//! The peer's server: serves verified pieces of shared files to other members.
//!
//! One accept thread (`seeder`) and one thread per downloader connection (`seed-N`), capped.
//! Every connection is a secure channel on which the seeder proves this peer's key and the
//! downloader proves its own. The downloader must present a tracker-issued ticket for the
//! file's group, bound to the key it proved; the seeder asks its tracker to check it and
//! caches the answer (keyed on the whole ticket) until the ticket expires. Nothing is served
//! on an expired ticket: downloaders renew theirs while they run (`Renew`). The clock, not the
//! next read, ends a connection whose ticket expired unrenewed or that asked for no piece
//! for `IDLE_TIMEOUT` (`close_at`, issue 21). Every piece is
//! read from disk and checked against its SHA1 (once per state of the file on disk) before
//! it is sent, so a file changed on disk after it was shared is noticed and no longer served.
//!
//! Issue 12: a connection for a file this peer is still downloading pushes `Have` to its
//! downloader as pieces verify (it waits on the socket and on the swarm's wake-up at once,
//! `readiness`). Which piece a request gets is the swarm's choice (`Swarm::pick`, by
//! `swarm::handout`: super-seeding): with two
//! or more downloaders of a complete file, each piece goes out once before any repeats.

use std::collections::HashMap;
use std::fs::File;
use std::net::{IpAddr, Shutdown as SocketShutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use common::connection::{Connection, Timeouts};
use common::frame::FrameError;
use common::junk::JunkLog;
use common::message::{PeerCall, Reply, Request, Ticket, TrackerError};
use common::peer_message::{
    PeerReply, PeerRequest, Refusal, MAX_HAVE_BATCH, PEER_PROTOCOL_VERSION,
};
use common::{Bitfield, Identity, PieceIndex, PublicKey, Sha1Digest, PIECE_SIZE};

use crate::interrupt::Interrupt;
use crate::rate::RateCap;
use crate::readiness;
use crate::registry::Registry;
use crate::reversal::{CallGate, Reversals};
use crate::swarm::{Pick, PieceSource, ReadError, Swarm};
use crate::tracker_link::LinkError;
use crate::tracker_session::{CallError, TrackerSession};

pub mod admission;
pub mod served;
pub mod slots;
pub mod tickets;

use admission::{Pending, SeederAdmission, ADMISSION_DEADLINE};
use served::Served;
use slots::UploadSlots;
use tickets::{TicketBook, Verdict};

/// Downloader connections served at once, at most (see `admission`).
pub const MAX_PEER_CONNECTIONS: usize = admission::MAX_ADMITTED;
/// The largest frame taken before a connection's ticket is accepted (a `Hello` with its
/// ticket is a few hundred bytes).
const MAX_HELLO_FRAME: usize = 4096;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A serving connection that asked for no piece this long is closed (renewals and
/// bitfield requests do not count: they cost the peer nothing).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Questions to the tracker about new tickets: this many a second, with bursts of twice
/// as many. Enough for hundreds of downloaders renewing; a flood of made-up tickets is
/// answered `Busy` instead of starving this peer's own tracker link.
const TICKET_CHECKS_PER_SEC: f64 = 20.0;

/// How long a reversed connection (issue 19) may take to connect, each address.
const REVERSE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after a failed long poll for calls, before the next.
const CALLS_RETRY: Duration = Duration::from_secs(2);

/// The running seeder.
pub struct Seeder {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
    /// The `calls` thread (issue 19), its stop signal, and what cuts its long poll short.
    calls: Option<(JoinHandle<()>, crossbeam_channel::Sender<()>, Arc<Interrupt>)>,
}

/// The connections being served: handles to shut them down, the admission pools, and
/// their threads, shared by the accept loop and the `calls` thread (reversed ones).
#[derive(Default)]
struct Conns {
    live: Mutex<HashMap<u64, Live>>,
    admission: Arc<SeederAdmission>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next_id: AtomicU64,
}

/// How a connection to serve came to be.
enum Opened {
    /// Accepted on the listening socket.
    Accepted(TcpStream),
    /// To be dialed on a downloader's call (issue 19: connection reversal).
    Reversed(PeerCall),
    /// To be joined at a tracker's relay on a downloader's call (issue 19), at this
    /// tracker.
    Relayed(PeerCall, u32),
    /// To be punched through both routers on a downloader's call (issue 19): served as an
    /// accepted connection (the downloader runs the handshake as initiator).
    Punched(PeerCall),
}

struct Context {
    identity: Arc<Identity>,
    registry: Arc<Registry>,
    /// The upload cap, shared by every connection (`limit_rate up` changes it).
    upload: Arc<RateCap>,
    /// How many pieces go out at once, all connections together (issue 19).
    slots: UploadSlots,
    tracker: Arc<TrackerSession>,
    /// Tickets the tracker confirmed or refused, and the budget of questions about new
    /// ones.
    tickets: Mutex<TicketBook>,
    /// What went to whom (the dashboard's peers).
    served: Arc<Served>,
    /// Junk connections and refusals, logged per address and interval (issue 21).
    junk: JunkLog,
    /// The reversed connections this peer's downloads wait for (issue 19).
    reversals: Arc<Reversals>,
    /// The listening socket's address: hole punches connect from it.
    listen: SocketAddr,
    conns: Conns,
}

impl Seeder {
    /// Starts serving on `listener`, sending no faster than `upload` allows (all
    /// connections together; `limit_rate up` changes it); every piece sent is counted in
    /// `served`.
    pub fn start(
        listener: TcpListener,
        identity: Arc<Identity>,
        registry: Arc<Registry>,
        tracker: Arc<TrackerSession>,
        upload: Arc<RateCap>,
        served: Arc<Served>,
        reversals: Arc<Reversals>,
    ) -> std::io::Result<Seeder> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(Context {
            identity,
            registry,
            upload,
            slots: UploadSlots::default(),
            tracker,
            tickets: Mutex::new(TicketBook::new(TICKET_CHECKS_PER_SEC, Instant::now())),
            served,
            junk: JunkLog::start("seeder: "),
            reversals,
            listen: addr,
            conns: Conns::default(),
        });
        let stop_flag = Arc::clone(&stop);
        let (stop_calls, calls_stopped) = crossbeam_channel::bounded::<()>(0);
        let interrupt = Arc::new(Interrupt::default());
        let calls = thread::Builder::new().name("calls".into()).spawn({
            let (ctx, stop, interrupt) =
                (Arc::clone(&ctx), Arc::clone(&stop), Arc::clone(&interrupt));
            move || await_calls(&ctx, &stop, &calls_stopped, &interrupt)
        })?;
        let thread = thread::Builder::new()
            .name("seeder".into())
            .spawn(move || accept_loop(listener, ctx, stop_flag))?;
        Ok(Seeder { stop, addr, thread: Some(thread), calls: Some((calls, stop_calls, interrupt)) })
    }

    /// Stops accepting, closes every connection and joins every thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some((calls, stop_calls, interrupt)) = self.calls.take() {
            drop(stop_calls);
            interrupt.fire();
            let _ = calls.join();
        }
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A live connection: a handle to shut it down, and whether it still waits for admission
/// (since when).
struct Live {
    handle: TcpStream,
    pending_since: Option<Instant>,
}

fn accept_loop(listener: TcpListener, ctx: Arc<Context>, stop: Arc<AtomicBool>) {
    // Ends connections still without an accepted ticket after `ADMISSION_DEADLINE`,
    // however slowly they dribble their handshake or hello.
    let reaper = {
        let (ctx, stop) = (Arc::clone(&ctx), Arc::clone(&stop));
        thread::Builder::new().name("seed-reaper".into()).spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(500));
                for conn in ctx.conns.live.lock().values() {
                    if conn.pending_since.is_some_and(|t| t.elapsed() > ADMISSION_DEADLINE) {
                        let _ = conn.handle.shutdown(SocketShutdown::Both);
                    }
                }
            }
        })
    };
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                log::warn!("seeder: accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else { continue };
        spawn_conn(&ctx, peer, Opened::Accepted(stream));
    }
    for conn in ctx.conns.live.lock().values() {
        let _ = conn.handle.shutdown(SocketShutdown::Both);
    }
    let threads = std::mem::take(&mut *ctx.conns.threads.lock());
    for t in threads {
        let _ = t.join();
    }
    if let Ok(reaper) = reaper {
        let _ = reaper.join();
    }
    ctx.junk.close();
}

/// Admits a connection to the pending pool (from `peer`) and serves it on a `seed-N`
/// thread of its own: an accepted one, or one to dial on a downloader's call.
fn spawn_conn(ctx: &Arc<Context>, peer: SocketAddr, opened: Opened) {
    let conns = &ctx.conns;
    conns.threads.lock().retain(|t| !t.is_finished());
    let id = conns.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let pending = match conns.admission.start(id, peer.ip(), Instant::now()) {
        Ok((pending, evicted)) => {
            // Another connection, pending longer, gave its place: end it.
            if let Some(conn) = evicted.and_then(|old| conns.live.lock().remove(&old)) {
                let _ = conn.handle.shutdown(SocketShutdown::Both);
            }
            pending
        }
        Err(why) => {
            ctx.junk.note(peer, format_args!("refused: {why}"));
            return;
        }
    };
    // An accepted connection can be shut down at once; a dialed one once it connected.
    if let Opened::Accepted(stream) = &opened {
        let Ok(handle) = stream.try_clone() else { return };
        conns.live.lock().insert(id, Live { handle, pending_since: Some(Instant::now()) });
    }
    let ctx_for_thread = Arc::clone(ctx);
    let spawned = thread::Builder::new().name(format!("seed-{id}")).spawn(move || {
        let ctx = ctx_for_thread;
        let admitted = || {
            if let Some(conn) = ctx.conns.live.lock().get_mut(&id) {
                conn.pending_since = None;
            }
        };
        match opened {
            Opened::Accepted(stream) => serve(stream, &ctx, pending, admitted),
            Opened::Reversed(call) => {
                let Some(stream) = dial_back(&ctx, &call) else { return };
                if let Ok(handle) = stream.try_clone() {
                    let live = Live { handle, pending_since: Some(Instant::now()) };
                    ctx.conns.live.lock().insert(id, live);
                }
                serve_reversed(stream, &ctx, &call, pending, admitted);
            }
            Opened::Relayed(call, tracker) => {
                // The downloader runs the secure channel's handshake through the relay, as
                // on a connection it dialed: served as an accepted one.
                let register = |handle: TcpStream| {
                    let live = Live { handle, pending_since: Some(Instant::now()) };
                    ctx.conns.live.lock().insert(id, live);
                };
                let stream = match ctx.tracker.join_relay(tracker, call.nonce, true, &register) {
                    Ok(stream) => stream,
                    Err(e) => {
                        log::info!("seeder: relay for {} at tracker {tracker}: {e}", call.user);
                        return;
                    }
                };
                log::info!("seeder: relaying to {} through tracker {tracker}", call.user);
                serve(stream, &ctx, pending, admitted);
            }
            Opened::Punched(call) => {
                let deadline = Instant::now() + crate::punch::PUNCH_FOR;
                let stream = match crate::punch::punch(
                    ctx.listen,
                    &call.addrs,
                    deadline,
                    None,
                    None,
                    None,
                ) {
                    Ok((stream, reached)) => {
                        log::info!("seeder: punched through to {} at {reached}", call.user);
                        stream
                    }
                    Err(e) => {
                        log::info!("seeder: no hole punched to {}: {e}", call.user);
                        return;
                    }
                };
                if let Ok(handle) = stream.try_clone() {
                    let live = Live { handle, pending_since: Some(Instant::now()) };
                    ctx.conns.live.lock().insert(id, live);
                }
                serve(stream, &ctx, pending, admitted);
            }
        }
        ctx.conns.live.lock().remove(&id);
    });
    match spawned {
        Ok(t) => conns.threads.lock().push(t),
        Err(e) => {
            log::error!("seeder: cannot spawn thread: {e}");
            conns.live.lock().remove(&id);
        }
    }
}

/// The `calls` thread (issue 19): while logged in, keeps one long poll for reversal calls
/// open on a tracker (on a link of its own), and follows each call that names a file this
/// peer serves, within `CallGate`'s bounds, by dialing the downloader back.
fn await_calls(
    ctx: &Arc<Context>,
    stop: &AtomicBool,
    stopped: &crossbeam_channel::Receiver<()>,
    interrupt: &Interrupt,
) {
    let mut link = ctx.tracker.own_link();
    let mut gate = CallGate::new(Instant::now());
    let pause = |how_long| {
        !matches!(
            stopped.recv_timeout(how_long),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        )
    };
    while !stop.load(Ordering::SeqCst) {
        let Some(login) = ctx.tracker.login() else {
            // A login is seen within a quarter of a second: a download may ask for a
            // reversal right after it.
            if !pause(Duration::from_millis(250)) {
                return;
            }
            continue;
        };
        let calls = match link.call(Some(login.session), Request::AwaitCalls, Some(interrupt)) {
            Ok(Reply::Calls { calls }) => calls,
            Err(LinkError::Interrupted) => return,
            Ok(other) => {
                log::warn!("seeder: calls: unexpected answer {other:?}");
                if !pause(CALLS_RETRY) {
                    return;
                }
                continue;
            }
            Err(e) => {
                log::debug!("seeder: calls: {e}");
                if !pause(CALLS_RETRY) {
                    return;
                }
                continue;
            }
        };
        for call in calls.into_iter().take(common::message::MAX_CALLS_PER_REPLY) {
            if ctx.registry.get(&call.group, &call.digest).is_none() {
                log::info!("seeder: call from {}: not a file this peer serves", call.user);
                continue;
            }
            if !gate.allow(call.from, Instant::now()) {
                log::info!("seeder: call from {}: over its share of calls", call.user);
                continue;
            }
            let addrs = common::peer_addr::sanitize(call.addrs.iter().copied());
            let Some(first) = addrs.first().copied() else { continue };
            // Counted under the downloader's address, whichever way it comes.
            match call.relay {
                // Only to the public addresses the tracker lists (never one the call names).
                None if call.punch => {
                    let addrs: Vec<SocketAddr> =
                        addrs.into_iter().filter(|a| !crate::reach::is_local(a.ip())).collect();
                    let Some(first) = addrs.first().copied() else { continue };
                    log::info!("seeder: {} asks for a hole punch to {addrs:?}", call.user);
                    spawn_conn(ctx, first, Opened::Punched(PeerCall { addrs, ..call }));
                }
                Some(tracker) => {
                    log::info!("seeder: {} asks for a relay at tracker {tracker}", call.user);
                    spawn_conn(ctx, first, Opened::Relayed(call, tracker));
                }
                None => {
                    log::info!("seeder: {} asks to be called back at {addrs:?}", call.user);
                    spawn_conn(ctx, first, Opened::Reversed(PeerCall { addrs, ..call }));
                }
            }
        }
    }
}

/// Dials a downloader back on its call (issue 19), at its registered addresses.
fn dial_back(ctx: &Context, call: &PeerCall) -> Option<TcpStream> {
    match crate::dial::connect_any(&call.addrs, |_| REVERSE_CONNECT_TIMEOUT) {
        Ok((stream, reached)) => {
            log::info!("seeder: called {} back at {reached}", call.user);
            Some(stream)
        }
        Err(e) => {
            log::info!("seeder: cannot call {} back: {e}", call.user);
            let _ = ctx;
            None
        }
    }
}

/// Serves a connection this peer dialed on a downloader's call: the handshake as
/// initiator, checking the key the call named, then `Reversed` with the call's nonce, then
/// the peer protocol as on an accepted connection (the downloader's `Hello` first).
fn serve_reversed(
    stream: TcpStream,
    ctx: &Context,
    call: &PeerCall,
    pending: Pending,
    admitted: impl FnOnce(),
) {
    let Ok(peer_addr) = stream.peer_addr() else { return };
    let admit_by = Instant::now() + ADMISSION_DEADLINE;
    let timeouts =
        Timeouts { handshake: HANDSHAKE_TIMEOUT, read: HANDSHAKE_TIMEOUT, write: WRITE_TIMEOUT };
    let opened =
        Connection::<PeerReply, PeerRequest>::connect(stream, &ctx.identity, &call.from, timeouts)
            .and_then(|mut conn| {
                let reversed = PeerRequest::Reversed {
                    version: PEER_PROTOCOL_VERSION,
                    digest: call.digest,
                    nonce: call.nonce,
                };
                conn.send(&reversed)?;
                Ok(conn.retype::<PeerRequest, PeerReply>())
            });
    let mut conn = match opened {
        Ok(conn) => conn,
        Err(e) => {
            ctx.junk.note(peer_addr, format_args!("reversed handshake failed: {e}"));
            return;
        }
    };
    conn.set_max_frame(MAX_HELLO_FRAME);
    if let Err(e) = conn.set_deadline(Some(admit_by)) {
        log::info!("seeder: peer={peer_addr}: {e}");
        return;
    }
    let first = conn.recv();
    finish_serving(&mut conn, ctx, pending, admitted, first);
}

fn serve(stream: TcpStream, ctx: &Context, pending: Pending, admitted: impl FnOnce()) {
    let Ok(peer_addr) = stream.peer_addr() else { return };
    let peer = peer_addr.to_string();
    let admit_by = Instant::now() + ADMISSION_DEADLINE;
    let timeouts =
        Timeouts { handshake: HANDSHAKE_TIMEOUT, read: HANDSHAKE_TIMEOUT, write: WRITE_TIMEOUT };
    let mut conn: Connection<PeerRequest, PeerReply> =
        match Connection::accept(stream, &ctx.identity, timeouts) {
            Ok(conn) => conn,
            Err(e) => {
                ctx.junk.note(peer_addr, format_args!("handshake failed: {e}"));
                return;
            }
        };
    // Small frames until the hello's ticket is accepted, and that hello by the deadline
    // however slowly it comes (the reaper would end the connection then anyway).
    conn.set_max_frame(MAX_HELLO_FRAME);
    if let Err(e) = conn.set_deadline(Some(admit_by)) {
        log::info!("seeder: peer={peer}: {e}");
        return;
    }
    let first = conn.recv();
    // Issue 19: a seeder this peer's download asked to call back; its worker takes it.
    if let Ok(Some(PeerRequest::Reversed { version, digest, nonce })) = first {
        if version != PEER_PROTOCOL_VERSION {
            ctx.junk.note(peer_addr, format_args!("reversed connection of version {version}"));
            return;
        }
        match ctx.reversals.arrive(conn, digest, nonce) {
            Ok(()) => log::info!("seeder: peer={peer}: reversed connection handed to its download"),
            Err(why) => ctx.junk.note(peer_addr, format_args!("{why}")),
        }
        return;
    }
    finish_serving(&mut conn, ctx, pending, admitted, first);
}

/// Serves a connection whose first frame was `first`, and logs how it ended.
fn finish_serving(
    conn: &mut Connection<PeerRequest, PeerReply>,
    ctx: &Context,
    pending: Pending,
    admitted: impl FnOnce(),
    first: Result<Option<PeerRequest>, FrameError>,
) {
    let peer = conn.peer_addr();
    match serve_conn(conn, ctx, pending, admitted, first) {
        Ok(()) => log::debug!("seeder: peer={peer}: done"),
        Err(e) if e.is_timeout() => log::debug!("seeder: peer={peer}: idle, closing"),
        Err(e) => ctx.junk.note(peer, format_args!("closing connection: {e}")),
    }
}

fn serve_conn(
    conn: &mut Connection<PeerRequest, PeerReply>,
    ctx: &Context,
    pending: Pending,
    admitted: impl FnOnce(),
    first: Result<Option<PeerRequest>, FrameError>,
) -> Result<(), FrameError> {
    let holder = conn.remote_key();
    let (swarm, mut ticket, _slot) = match first? {
        None => return Ok(()),
        Some(PeerRequest::Hello { version, digest, ticket }) => {
            let from = conn.peer_addr().ip();
            let admitted_swarm =
                admit(ctx, version, &digest, &ticket, &holder, from).and_then(|swarm| {
                    let slot = pending.admit(holder).map_err(|why| {
                        log::info!("seeder: peer={}: {why}", conn.peer_addr());
                        Refusal::Busy
                    })?;
                    Ok((swarm, slot))
                });
            match admitted_swarm {
                Ok((swarm, slot)) => {
                    admitted();
                    conn.set_max_frame(common::frame::MAX_FRAME_LEN);
                    // A piece's write returns once it is nearly all sent (`slots`).
                    let socket = socket2::SockRef::from(conn.socket());
                    if let Err(e) = socket.set_tcp_notsent_lowat(slots::LOW_WATER) {
                        log::debug!("seeder: peer={}: TCP_NOTSENT_LOWAT: {e}", conn.peer_addr());
                    }
                    (swarm, ticket, slot)
                }
                Err(reason) => {
                    ctx.junk.note(conn.peer_addr(), format_args!("refused: {reason}"));
                    conn.send(&PeerReply::Refused { reason })?;
                    return Ok(());
                }
            }
        }
        Some(other) => {
            ctx.junk.note(conn.peer_addr(), format_args!("expected hello, got {other:?}"));
            return Ok(());
        }
    };
    // A file still downloading gets new pieces: watch it, and tell them as they come.
    let wake = if swarm.downloading_to().is_some() { swarm.watch() } else { None };
    let mut told = swarm.have();
    conn.send(&PeerReply::Welcome { have: told.clone() })?;
    let seat = swarm.take_seat(holder);
    let mut wake = wake;
    let mut file: Option<File> = None;
    // A folder's directory, held open between the pieces of its files (issue 23).
    let mut dir: Option<(PathBuf, File)> = None;
    let mut buf = vec![0u8; PIECE_SIZE];
    let mut last_asked = Instant::now();
    loop {
        // Issue 21: the clock closes the connection, whatever the peer sends meanwhile:
        // once its ticket expired unrenewed, or once it asked for no piece for
        // `IDLE_TIMEOUT`. Every wait and every read is bounded by the nearer of the two.
        let now = Instant::now();
        let (deadline, why) = match close_at(last_asked, ticket.expires, now, SystemTime::now()) {
            Ok(at) => at,
            Err(why) => return close(conn, why),
        };
        conn.set_deadline(Some(deadline))?;
        let left = deadline.saturating_duration_since(now);
        let ready = readiness::wait(conn.socket(), conn.has_buffered(), wake.as_ref(), left)?;
        if ready.closed {
            wake = None;
        }
        if ready.woken {
            tell_new_pieces(conn, &swarm, &mut told)?;
        }
        if !ready.socket {
            continue;
        }
        let request = match conn.recv() {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(e) if e.is_timeout() && Instant::now() >= deadline => return close(conn, why),
            Err(e) => return Err(e),
        };
        if matches!(request, PeerRequest::GetPiece { .. }) {
            last_asked = Instant::now();
        }
        if !matches!(request, PeerRequest::Renew { .. }) && ticket.expires < unix_now() {
            log::info!("seeder: peer={}: ticket expired", conn.peer_addr());
            conn.send(&PeerReply::Refused { reason: Refusal::Expired })?;
            return Ok(());
        }
        match request {
            PeerRequest::Renew { ticket: fresh } => {
                let same_file = fresh.group == ticket.group && fresh.user == ticket.user;
                let checked = match same_file {
                    true => {
                        let from = conn.peer_addr().ip();
                        admit(ctx, PEER_PROTOCOL_VERSION, &swarm.meta.digest, &fresh, &holder, from)
                    }
                    false => Err(Refusal::BadTicket("ticket is for another file or user".into())),
                };
                if let Err(reason) = checked {
                    log::info!("seeder: peer={}: renewal refused: {reason}", conn.peer_addr());
                    conn.send(&PeerReply::Refused { reason })?;
                    return Ok(());
                }
                ticket = fresh;
            }
            PeerRequest::GetBitfield => conn.send(&PeerReply::Bitfield { have: swarm.have() })?,
            PeerRequest::GetPiece { piece: asked } => {
                // The swarm says what to send: the piece, another nobody was handed yet
                // (super-seeding), or neither.
                let (piece, recent) = match swarm.pick(&seat, asked) {
                    Pick::Send { piece, recent } => (piece, recent),
                    Pick::Elsewhere => {
                        conn.send(&PeerReply::Elsewhere { piece: asked })?;
                        continue;
                    }
                    Pick::NoPiece => {
                        conn.send(&PeerReply::NoPiece { piece: asked })?;
                        continue;
                    }
                };
                let len = swarm.layout.piece_len(piece);
                // A piece our download verified lately is served from memory: it was
                // written past the page cache, and peers ask mostly for the newest.
                let read = match &recent {
                    Some(data) => Ok(&data[..]),
                    None => read_verified(&swarm, (&mut file, &mut dir), piece, &mut buf[..len])
                        .map(|()| &buf[..len]),
                };
                match read {
                    Ok(data) => {
                        // A complete file's pieces go a few at a time, each whole
                        // sooner (`slots`); the connection closes on time however long
                        // the queue.
                        let lease = match swarm.downloading_to() {
                            Some(_) => None,
                            None => match ctx.slots.acquire(deadline) {
                                Some(lease) => Some(lease),
                                None => return close(conn, why),
                            },
                        };
                        ctx.upload.wait(len);
                        let reply = match piece == asked {
                            true => PeerReply::Piece { piece, len: len as u32 },
                            false => PeerReply::Instead { asked, piece, len: len as u32 },
                        };
                        conn.send_with_payload(&reply, data)?;
                        drop(lease);
                        seat.delivered(piece);
                        log::trace!("seeder: peer={}: sent piece {}", conn.peer_addr(), piece.0);
                        let from = conn.peer_addr().ip();
                        let name = &swarm.meta.name;
                        ctx.served.note(&ticket.user, &swarm.group, name, from, len as u64);
                    }
                    Err(reason) => {
                        log::warn!(
                            "file {} ({}) changed or vanished on disk ({reason}); no longer sharing it",
                            swarm.meta.name,
                            swarm.path().display()
                        );
                        withdraw(ctx, &swarm);
                        conn.send(&PeerReply::NoPiece { piece: asked })?;
                        return Ok(());
                    }
                }
            }
            PeerRequest::Hello { .. } => {
                ctx.junk.note(conn.peer_addr(), "second hello");
                return Ok(());
            }
            PeerRequest::Reversed { .. } => {
                ctx.junk.note(conn.peer_addr(), "reversed frame after hello");
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Pushes to the downloader the pieces verified since it was last told (`told`), in
/// batches of at most `MAX_HAVE_BATCH`.
fn tell_new_pieces(
    conn: &mut Connection<PeerRequest, PeerReply>,
    swarm: &Swarm,
    told: &mut Bitfield,
) -> Result<(), FrameError> {
    let have = swarm.have();
    let news: Vec<PieceIndex> = have.iter().filter(|&p| !told.has(p)).collect();
    for batch in news.chunks(MAX_HAVE_BATCH) {
        conn.send(&PeerReply::Have { pieces: batch.to_vec() })?;
    }
    *told = have;
    Ok(())
}

/// Checks a downloader's ticket: version, that we share the file, that the ticket is
/// shown by the key it was issued to (`holder`, proven in the handshake), and that the
/// tracker vouches for it (asked once per ticket).
fn admit(
    ctx: &Context,
    version: u16,
    digest: &Sha1Digest,
    ticket: &Ticket,
    holder: &PublicKey,
    from: IpAddr,
) -> Result<Arc<Swarm>, Refusal> {
    let from = admission::source(from);
    if version != PEER_PROTOCOL_VERSION {
        return Err(Refusal::Version(PEER_PROTOCOL_VERSION));
    }
    if &ticket.digest != digest {
        return Err(Refusal::BadTicket("ticket is for another file".into()));
    }
    if &ticket.holder != holder {
        return Err(Refusal::BadTicket("ticket was issued to another peer".into()));
    }
    let swarm = ctx.registry.get(&ticket.group, digest).ok_or(Refusal::UnknownFile)?;
    let now = unix_now();
    let verdict = ctx.tickets.lock().judge(ticket, from, now, Instant::now());
    match verdict {
        Verdict::Known => return Ok(swarm),
        Verdict::Expired => return Err(Refusal::Expired),
        Verdict::Forged => return Err(Refusal::BadTicket("forged or altered".into())),
        // Logged by the caller, with the junk of its address.
        Verdict::Busy | Verdict::SourceBusy => return Err(Refusal::Busy),
        Verdict::Ask => {}
    }
    match ctx.tracker.call(Request::CheckTicket { ticket: ticket.clone() }) {
        Ok(_) => {
            ctx.tickets.lock().approve(ticket.clone(), now);
            Ok(swarm)
        }
        Err(CallError::NotLoggedIn) => Err(Refusal::UnknownFile),
        Err(e) => {
            // Only the tracker's verdict is final; a tracker that could not answer is not.
            if let CallError::Link(LinkError::Tracker(TrackerError::BadTicket(_))) = &e {
                ctx.tickets.lock().refuse(ticket.clone(), from, Instant::now());
            }
            Err(Refusal::BadTicket(e.to_string()))
        }
    }
}

/// Why a serving connection is closed by the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// Its ticket expired and was not renewed.
    Expired,
    /// It asked for no piece for `IDLE_TIMEOUT`.
    Idle,
}

impl std::fmt::Display for Closing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Closing::Expired => "ticket expired",
            Closing::Idle => "idle (no piece asked for)",
        })
    }
}

/// Closes a serving connection the clock ended: a downloader whose ticket expired is told
/// so (`Refused`), if that can be written at once.
fn close(conn: &mut Connection<PeerRequest, PeerReply>, why: Closing) -> Result<(), FrameError> {
    log::info!("seeder: peer={}: {why}, closing", conn.peer_addr());
    if why == Closing::Expired {
        let _ = conn.socket().set_write_timeout(Some(Duration::from_secs(1)));
        let _ = conn.send(&PeerReply::Refused { reason: Refusal::Expired });
    }
    Ok(())
}

/// When a serving connection is to be closed, and why: the nearer of the moment its
/// ticket (valid through the second `expires`, Unix time) runs out and `IDLE_TIMEOUT` after
/// its last piece request; `Err` if that moment has come. `now` and `wall` are the same
/// instant on the monotonic clock and the wall clock.
fn close_at(
    last_asked: Instant,
    expires: u64,
    now: Instant,
    wall: SystemTime,
) -> Result<(Instant, Closing), Closing> {
    let ends = UNIX_EPOCH.checked_add(Duration::from_secs(expires.saturating_add(1)));
    let ticket_left =
        ends.map_or(Duration::MAX, |ends| ends.duration_since(wall).unwrap_or(Duration::ZERO));
    let idle_left = (last_asked + IDLE_TIMEOUT).saturating_duration_since(now);
    let (left, why) = match ticket_left <= idle_left {
        true => (ticket_left, Closing::Expired),
        false => (idle_left, Closing::Idle),
    };
    match left.is_zero() {
        true => Err(why),
        false => Ok((now + left, why)),
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Reads piece `piece` of `swarm` into `data`, checked against its hash (once per state
/// of its file on disk). `file` is the swarm's one file and `dir` a folder's directory,
/// each held open between pieces.
fn read_verified(
    swarm: &Swarm,
    (file, dir): (&mut Option<File>, &mut Option<(PathBuf, File)>),
    piece: common::PieceIndex,
    data: &mut [u8],
) -> Result<(), ReadError> {
    use std::os::unix::fs::FileExt;
    match swarm.piece_source(piece) {
        Some(PieceSource::InFolder { root, rel, offset }) => {
            // Never through a link put in the folder since it was shared, never outside it.
            let opened = crate::download::store::open_to_read(&root, &rel, dir)?;
            opened.read_exact_at(data, offset)?;
            swarm.check_folder_piece(piece, &opened, data)
        }
        Some(PieceSource::OneFile) => {
            let f = match file {
                Some(f) => f,
                None => file.insert(File::open(swarm.path())?),
            };
            swarm.read_piece(f, piece, data)
        }
        None => Err(ReadError::Mismatch(piece.0)),
    }
}

/// Stops sharing a file whose bytes went bad, locally and at the tracker.
fn withdraw(ctx: &Context, swarm: &Arc<Swarm>) {
    ctx.registry.remove(swarm);
    ctx.registry.save();
    let request = Request::StopShare { group: swarm.group.clone(), name: swarm.meta.name.clone() };
    if let Err(e) = ctx.tracker.call(request) {
        log::warn!("cannot tell the tracker to stop sharing {}: {e}", swarm.meta.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_closed_at_its_tickets_expiry_or_when_idle_whichever_comes_first() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1000);
        // A ticket valid through second 1009 ends at 1010: 10 s from now, before idling.
        assert_eq!(
            close_at(now, 1009, now, wall),
            Ok((now + Duration::from_secs(10), Closing::Expired))
        );
        // A long ticket: idling ends it, counted from the last piece asked for.
        let asked = now - Duration::from_secs(50);
        assert_eq!(
            close_at(asked, 2000, now, wall),
            Ok((now + Duration::from_secs(10), Closing::Idle))
        );
        // Either moment past: closed now.
        assert_eq!(close_at(now, 999, now, wall), Err(Closing::Expired));
        assert_eq!(close_at(now - IDLE_TIMEOUT, 2000, now, wall), Err(Closing::Idle));
        // A wall clock before the epoch, or a ticket at the end of time, never panics.
        assert!(close_at(now, u64::MAX, now, UNIX_EPOCH).is_ok());
    }
}

//! The accept loop: one named OS thread per connection, a cap on live connections, and a
//! shutdown that wakes `accept` and stops accepting.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::junk::JunkLog;

use crate::admission::{Admission, AdmissionLimits};
use crate::service::Service;
use crate::session::{self, Limits};

/// Asks a running server to stop, from any thread (a signal handler, stdin, a test).
pub struct Shutdown {
    requested: AtomicBool,
    wake_addr: SocketAddr,
}

impl Shutdown {
    /// A handle for the server listening on `wake_addr`.
    pub fn new(wake_addr: SocketAddr) -> Shutdown {
        Shutdown { requested: AtomicBool::new(false), wake_addr }
    }

    /// Requests the stop and wakes the accept loop with a connection to itself.
    pub fn trigger(&self) {
        self.requested.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.wake_addr, Duration::from_secs(1));
    }

    /// Whether a stop was requested.
    pub fn is_triggered(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

/// The accept queue asked of the kernel (which caps it at `net.core.somaxconn`): deep
/// enough that thousands of clients reconnecting at once after a failover are queued, not
/// dropped and left to retry a second later.
pub const ACCEPT_BACKLOG: i32 = 8192;

/// Binds a listening socket on `addr` with `ACCEPT_BACKLOG`.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(ACCEPT_BACKLOG)?;
    Ok(socket.into())
}

/// How long the accept loop waits for a handshake slot to free before it
/// accepts anyway (and closes what cannot be admitted).
const HANDSHAKE_ROOM_PATIENCE: Duration = Duration::from_millis(250);

/// The stack of a connection thread: a request is decoded and answered in a few frames
/// of calls, and 20,000 connections must fit in memory and in the address space.
pub const CONNECTION_STACK: usize = 128 * 1024;

/// Serves connections on an already-bound `listener` until `shutdown` is triggered.
///
/// Each connection holds one file descriptor (its socket) and one thread. At shutdown the
/// loop stops accepting and returns: connection threads are not joined (the process exits
/// and the kernel closes their sockets, which clients see at once); none of them holds
/// state that needs saving, as only the Raft node writes to disk.
pub fn run(
    listener: TcpListener,
    service: Arc<Service>,
    limits: Limits,
    tracker_id: u32,
    shutdown: Arc<Shutdown>,
) -> io::Result<()> {
    let admission = Admission::new(AdmissionLimits { max_clients: limits.max_connections });
    // Refusals and junk are logged per source address and interval, not one by one.
    let junk = Arc::new(JunkLog::start(""));
    let live = Arc::new(AtomicUsize::new(0));
    let mut next_id = 0u64;
    loop {
        // A connection accepted now would only be closed: leave it queued a moment (not
        // long: a tracker's connection may be queued behind it).
        admission.wait_for_handshake_room(HANDSHAKE_ROOM_PATIENCE);
        let accepted = listener.accept();
        if shutdown.is_triggered() {
            break;
        }
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually out of file descriptors: back off briefly instead of spinning.
                log::warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // A clone of the socket, to shut it down if a newcomer takes its place.
        let handshake = match admission.start_handshake(peer.ip(), stream.try_clone().ok()) {
            Ok(slot) => slot,
            Err(why) => {
                refuse(stream);
                junk.note(peer, format_args!("refused: {why}"));
                continue;
            }
        };
        if live.load(Ordering::SeqCst) >= admission.max_live() {
            refuse(stream);
            junk.note(peer, format_args!("refused, {} connections open", admission.max_live()));
            continue;
        }
        next_id += 1;
        let service = Arc::clone(&service);
        let admission = admission.clone();
        let junk = Arc::clone(&junk);
        let counted = LiveConnection::new(&live);
        let spawned = thread::Builder::new()
            .name(format!("conn-{next_id}"))
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                let _counted = counted;
                session::serve(stream, &service, limits, tracker_id, &admission, handshake, &junk);
            });
        if let Err(e) = spawned {
            log::error!("cannot spawn connection thread: {e}");
        }
    }
    junk.close();
    log::info!("shutting down: {} connections open", live.load(Ordering::SeqCst));
    Ok(())
}

/// Closes a connection refused in the accept loop with a reset: nothing was read or
/// written on it, and a flood of refusals leaves no sockets waiting in `TIME_WAIT`.
fn refuse(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
}

/// Counts a connection thread while it lives.
struct LiveConnection(Arc<AtomicUsize>);

impl LiveConnection {
    fn new(live: &Arc<AtomicUsize>) -> LiveConnection {
        live.fetch_add(1, Ordering::SeqCst);
        LiveConnection(Arc::clone(live))
    }
}

impl Drop for LiveConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

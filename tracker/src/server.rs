//! The accept loop: one named OS thread per connection, a cap on live connections, and a
//! clean shutdown that wakes `accept`, closes every live socket and joins every thread.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown as SocketShutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::Mutex;

use crate::admission::{Admission, AdmissionLimits};
use crate::service::Service;
use crate::session;

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Live client connections beyond this are closed (see `admission`).
    pub max_connections: usize,
    /// How long a new connection may take to finish its handshake and say hello.
    pub handshake_timeout: Duration,
    /// How long a connection may stay silent before it is closed.
    pub idle_timeout: Duration,
    /// How long a reply may take to be written.
    pub write_timeout: Duration,
}

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

/// Serves connections on an already-bound `listener` until `shutdown` is triggered.
pub fn run(
    listener: TcpListener,
    service: Arc<Service>,
    limits: Limits,
    tracker_id: u32,
    shutdown: Arc<Shutdown>,
) -> io::Result<()> {
    let tracker_ips = service.settings.trackers.current().trackers().map(|(_, a)| a.ip()).collect();
    let admission =
        Admission::new(AdmissionLimits { max_clients: limits.max_connections, tracker_ips });
    let live: Arc<Mutex<HashMap<u64, TcpStream>>> = Arc::new(Mutex::new(HashMap::new()));
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id = 0u64;
    for stream in listener.incoming() {
        if shutdown.is_triggered() {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // Usually out of file descriptors: back off briefly instead of spinning.
                log::warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        reap_finished(&mut threads);
        let Ok(peer) = stream.peer_addr() else { continue };
        let handshake = match admission.start_handshake(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                log::warn!("peer={peer}: refused: {why}");
                continue;
            }
        };
        if live.lock().len() >= admission.max_live() {
            log::warn!("peer={peer}: refused, {} connections open", admission.max_live());
            continue;
        }
        next_id += 1;
        let conn_id = next_id;
        let handle = match stream.try_clone() {
            Ok(handle) => handle,
            Err(e) => {
                log::warn!("cannot clone socket: {e}");
                continue;
            }
        };
        live.lock().insert(conn_id, handle);
        let service = Arc::clone(&service);
        let admission = admission.clone();
        let live_for_thread = Arc::clone(&live);
        let spawned = thread::Builder::new()
            .name(format!("conn-{conn_id}"))
            .stack_size(256 * 1024)
            .spawn(move || {
                session::serve(stream, &service, limits, tracker_id, &admission, handshake);
                live_for_thread.lock().remove(&conn_id);
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                log::error!("cannot spawn connection thread: {e}");
                live.lock().remove(&conn_id);
            }
        }
    }
    log::info!("shutting down: closing {} connections", live.lock().len());
    for stream in live.lock().values() {
        let _ = stream.shutdown(SocketShutdown::Both);
    }
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

fn reap_finished(threads: &mut Vec<JoinHandle<()>>) {
    let (done, running): (Vec<_>, Vec<_>) = threads.drain(..).partition(|t| t.is_finished());
    *threads = running;
    for thread in done {
        let _ = thread.join();
    }
}

//! One connection: the secure channel's handshake (the peer proves a key), the version
//! hello, then request → service → response until the peer leaves, goes idle for too long,
//! or breaks the protocol (which closes only this connection).
//!
//! A peer that proved the key `tracker_info.txt` lists for tracker N takes a tracker slot
//! and may open a replication connection as tracker N (`ReplicaHello`); any other key is a
//! client and takes a client slot (`admission`), and must log in or resume a session within
//! `LOGIN_DEADLINE`.

use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use common::connection::{Connection, Timeouts};
use common::frame::FrameError;
use common::junk::JunkLog;
use common::message::{
    ClientMessage, Reply, Request, TrackerMessage, PRE_LOGIN_FRAME_LEN, PROTOCOL_VERSION,
};
use common::PublicKey;

use crate::admission::{Admission, HandshakeSlot, Proven, Slot, LOGIN_DEADLINE};
use crate::cluster;
use crate::service::Service;

/// Per-connection limits (set by `server`, kept by each connection).
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

/// Serves one connection to its end: the handshake (holding `handshake`), then a client or
/// tracker slot from `admission` for as long as the connection lasts.
/// Waits up to `timeout` for the first bytes of `stream` (left unread).
fn first_bytes(stream: &TcpStream, timeout: std::time::Duration) -> std::io::Result<()> {
    stream.set_read_timeout(Some(timeout))?;
    match stream.peek(&mut [0u8; 1])? {
        0 => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before a byte")),
        _ => Ok(()),
    }
}

pub fn serve(
    stream: TcpStream,
    service: &Service,
    limits: Limits,
    tracker_id: u32,
    admission: &Admission,
    mut handshake: HandshakeSlot,
    junk: &JunkLog,
) {
    let Ok(peer_addr) = stream.peer_addr() else { return };
    let peer = peer_addr.to_string();
    let timeouts = Timeouts {
        handshake: limits.handshake_timeout,
        read: limits.handshake_timeout,
        write: limits.write_timeout,
    };
    // Until its first bytes arrive, a newcomer from the same address may take this slot.
    if let Err(why) = first_bytes(&stream, limits.handshake_timeout) {
        log::info!("peer={peer}: no handshake: {why}");
        return;
    }
    handshake.heard();
    let conn: Connection<ClientMessage, TrackerMessage> =
        match Connection::accept(stream, &service.settings.identity, timeouts) {
            Ok(conn) => conn,
            Err(e) => {
                junk.note(peer_addr, format_args!("handshake failed: {e}"));
                return;
            }
        };
    let key = conn.remote_key();
    let trackers = &service.settings.trackers;
    let listed = trackers.current();
    let tracker = listed.tracker_with_key(&key).or_else(|| {
        // A tracker started a moment ago may have just written its key.
        listed.missing_keys().then(|| trackers.current_fresh().tracker_with_key(&key))?
    });
    let proven = match tracker {
        Some(_) => Proven::Tracker,
        None if service.key_has_session(&key) => Proven::ClientWithSession,
        None => Proven::Client,
    };
    let mut slot = match admission.admit(handshake, key, proven) {
        Ok(slot) => slot,
        Err(why) => {
            junk.note(peer_addr, format_args!("refused: {why}"));
            return;
        }
    };
    let from = peer_addr.ip();
    let served = serve_conn(conn, service, limits, tracker_id, key, from, tracker, &mut slot, junk);
    if let Err(e) = served {
        if e.is_timeout() {
            log::info!("peer={peer}: closing idle connection");
        } else {
            junk.note(peer_addr, format_args!("closing connection: {e}"));
        }
    } else {
        log::debug!("peer={peer}: connection closed");
    }
}

#[allow(clippy::too_many_arguments)]
fn serve_conn(
    mut conn: Connection<ClientMessage, TrackerMessage>,
    service: &Service,
    limits: Limits,
    tracker_id: u32,
    key: PublicKey,
    from: IpAddr,
    tracker: Option<u32>,
    slot: &mut Slot,
    junk: &JunkLog,
) -> Result<(), FrameError> {
    // Until it is in a session, a client connection has `LOGIN_DEADLINE` (from its
    // handshake) to get one.
    let deadline = Instant::now() + LOGIN_DEADLINE;
    match conn.recv()? {
        None => return Ok(()),
        Some(ClientMessage::ReplicaHello { version, from })
            if version == PROTOCOL_VERSION && tracker == Some(from) =>
        {
            conn.set_read_timeout(limits.idle_timeout)?;
            return cluster::serve(conn.retype(), &service.cluster, service, from);
        }
        Some(ClientMessage::ReplicaHello { from, .. }) if tracker != Some(from) => {
            let listed = match tracker {
                Some(t) => format!("listed for tracker {t}"),
                None => "listed for no tracker".to_string(),
            };
            let why = format!("claims to be tracker {from} but proved key {key} ({listed})");
            junk.note(conn.peer_addr(), why);
            return Ok(());
        }
        Some(ClientMessage::ReplicaHello { version, from }) => {
            log::warn!(
                "tracker {from} speaks protocol version {version}, we speak {PROTOCOL_VERSION}"
            );
            return Ok(());
        }
        Some(ClientMessage::Hello { version }) if version == PROTOCOL_VERSION => {
            let observed = conn.peer_addr();
            conn.send(&TrackerMessage::Welcome {
                version: PROTOCOL_VERSION,
                tracker_id,
                observed,
            })?;
            // Small frames only until this connection has a session.
            conn.set_max_frame(PRE_LOGIN_FRAME_LEN);
        }
        Some(ClientMessage::Relay { version, session, nonce }) if version == PROTOCOL_VERSION => {
            // Issue 19: one end of a relay, in a session of the key it proved here.
            if !service.has_session(&session, &key) {
                let reason = common::message::TrackerError::NotLoggedIn;
                return conn.send(&TrackerMessage::RelayRefused { reason });
            }
            // Counted by the relay's limits once joined, not against its key's
            // connections: a seeder serves many relayed downloaders at once.
            return service.relays.join(conn, key, nonce, || slot.relayed());
        }
        Some(ClientMessage::Hello { version } | ClientMessage::Relay { version, .. }) => {
            let why = format!("protocol version {version}, we speak {PROTOCOL_VERSION}");
            junk.note(conn.peer_addr(), why);
            conn.send(&TrackerMessage::Refused { version: PROTOCOL_VERSION })?;
            return Ok(());
        }
        Some(other) => {
            junk.note(conn.peer_addr(), format_args!("expected hello, got {other:?}"));
            return Ok(());
        }
    }
    conn.set_read_timeout(limits.idle_timeout)?;
    let mut short_timeout = false;
    loop {
        if !slot.in_session() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                log::info!("peer={}: no session within {LOGIN_DEADLINE:?}", conn.peer_addr());
                return Ok(());
            };
            conn.set_read_timeout(left.min(limits.idle_timeout).max(Duration::from_millis(1)))?;
            short_timeout = true;
        } else if short_timeout {
            conn.set_read_timeout(limits.idle_timeout)?;
            short_timeout = false;
        }
        let msg = match conn.recv() {
            Ok(Some(msg)) => msg,
            Ok(None) => return Ok(()),
            Err(e) if e.is_timeout() && !slot.in_session() && Instant::now() >= deadline => {
                log::info!("peer={}: no session within {LOGIN_DEADLINE:?}", conn.peer_addr());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        match msg {
            ClientMessage::Request { id, session, request } => {
                let level = crate::service::log_level(&request);
                let who = match log::log_enabled!(level) {
                    true => service.who(session.as_ref(), conn.peer_addr()),
                    false => String::new(),
                };
                log::log!(level, "< {who} #{} {request:?}", id.seq);
                let signing_in = match &request {
                    Request::Login { user, .. } | Request::CreateUser { user, .. } => {
                        Some(user.clone())
                    }
                    _ => None,
                };
                let logging_in = match &request {
                    Request::Login { session, .. } => Some(session.id()),
                    _ => None,
                };
                let signing_up = matches!(request, Request::CreateUser { .. });
                let handling = Instant::now();
                let result = service.handle(id, session, key, from, request);
                log::log!(level, "> {who} #{} {result:?} in {:?}", id.seq, handling.elapsed());
                match &result {
                    Ok(Reply::LoggedIn) => {
                        if let Some(session) = logging_in {
                            enter_session(&mut conn, slot, session);
                        }
                    }
                    Ok(_) if signing_up => slot.used(),
                    Ok(_) => {}
                    Err(refused) => {
                        let hold = service.refusal_hold(from, signing_in.as_ref(), refused);
                        if !hold.is_zero() {
                            // Only this connection's thread waits; it holds no lock.
                            log::trace!("holding a refusal to {from} for {hold:?}");
                            std::thread::sleep(hold);
                        }
                    }
                }
                conn.send(&TrackerMessage::Response { id, result })?;
            }
            ClientMessage::Resume { session } => {
                if service.has_session(&session, &key) {
                    enter_session(&mut conn, slot, session.id());
                }
            }
            ClientMessage::Hello { .. } | ClientMessage::ReplicaHello { .. } => {
                junk.note(conn.peer_addr(), "second hello");
                return Ok(());
            }
            ClientMessage::Relay { .. } | ClientMessage::RelayGo => {
                junk.note(conn.peer_addr(), "relay message after hello");
                return Ok(());
            }
        }
    }
}

/// The connection is now in `session`: no login deadline, and large frames if the session
/// has not used its share of them (`admission::MAX_LARGE_PER_SESSION`).
fn enter_session(
    conn: &mut Connection<ClientMessage, TrackerMessage>,
    slot: &mut Slot,
    session: common::message::SessionId,
) {
    match slot.enter_session(session) {
        Ok(true) => conn.set_max_frame(usize::MAX),
        Ok(false) => {
            log::info!("peer={}: small frames only (its session has its share)", conn.peer_addr());
        }
        // Its socket is shut down: the next read ends the connection.
        Err(why) => log::info!("peer={}: {why}", conn.peer_addr()),
    }
}

//! What the attack generators (`login_attack`, `attack_figures`) share: a tracker listed in
//! `tracker_info.txt`, TCP connections from a chosen loopback address, the secure channel
//! and hello, one request and its answer, and a login request. Included by each with
//! `#[path]`; each uses a part of it.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::connection::{Connection, Timeouts};
use common::message::{
    ClientMessage, Reply, Request, RequestId, SessionToken, TrackerError, TrackerMessage,
    PROTOCOL_VERSION,
};
use common::tracker_info::TrackerInfo;
use common::{Identity, Password, PublicKey, UserId};

/// A secure connection to a tracker, client side.
pub type TrackerConn = Connection<TrackerMessage, ClientMessage>;

/// The timeouts of a generator's connections: a tracker under attack answers late, not
/// never.
pub fn timeouts() -> Timeouts {
    Timeouts {
        handshake: Duration::from_secs(10),
        read: Duration::from_secs(60),
        write: Duration::from_secs(10),
    }
}

/// Tracker `id` of the `tracker_info.txt` at `path`: its first address and its key.
pub fn listed_tracker(path: &Path, id: u32) -> Result<(SocketAddr, PublicKey), String> {
    let info = TrackerInfo::load(path).map_err(|e| e.to_string())?;
    match (info.resolve(id).ok().and_then(|a| a.first().copied()), info.key(id)) {
        (Some(addr), Some(key)) => Ok((addr, key)),
        _ => Err(format!("tracker {id} is not listed with a key")),
    }
}

/// A TCP connection to `to` from the loopback address `from`.
pub fn tcp_from(from: Ipv4Addr, to: SocketAddr) -> Result<TcpStream, String> {
    use rustix::net::{AddressFamily, SocketType};
    let socket = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None)
        .map_err(|e| e.to_string())?;
    rustix::net::bind(&socket, &SocketAddr::from((from, 0))).map_err(|e| e.to_string())?;
    // Loopback only: the connect is answered (or refused) at once.
    rustix::net::connect(&socket, &to).map_err(|e| e.to_string())?;
    Ok(TcpStream::from(socket))
}

/// A connection to the tracker `to` (which must prove `key`) from `from` as `me`, after
/// the hello.
pub fn tracker_conn(
    from: Ipv4Addr,
    to: SocketAddr,
    key: &PublicKey,
    me: &Identity,
) -> Result<TrackerConn, String> {
    let stream = tcp_from(from, to)?;
    let mut conn = Connection::connect(stream, me, key, timeouts()).map_err(|e| e.to_string())?;
    conn.send(&ClientMessage::Hello { version: PROTOCOL_VERSION }).map_err(|e| e.to_string())?;
    match conn.recv().map_err(|e| e.to_string())? {
        Some(TrackerMessage::Welcome { .. }) => Ok(conn),
        other => Err(format!("no welcome: {other:?}")),
    }
}

/// One request and its answer; `Err` if the connection failed.
pub fn call(
    conn: &mut TrackerConn,
    id: RequestId,
    session: Option<SessionToken>,
    request: Request,
) -> Result<Result<Reply, TrackerError>, String> {
    conn.send(&ClientMessage::Request { id, session, request }).map_err(|e| e.to_string())?;
    match conn.recv().map_err(|e| e.to_string())? {
        Some(TrackerMessage::Response { id: got, result }) if got == id => Ok(result),
        other => Err(format!("unexpected {other:?}")),
    }
}

/// A session token nobody else has.
pub fn random_token() -> SessionToken {
    SessionToken(Identity::generate().map(|i| i.public().0).unwrap_or([1; 32]))
}

/// `user`'s login with `password` into the session `token`.
pub fn login_request(user: &UserId, password: &Password, token: SessionToken) -> Request {
    Request::Login {
        user: user.clone(),
        password: password.clone(),
        peer_addr: SocketAddr::from(([127, 0, 0, 1], 9)),
        session: token,
    }
}

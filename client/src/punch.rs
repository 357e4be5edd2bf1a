//! TCP hole punching (issue 19): when a downloader and a seeder are both behind routers, a
//! tracker has them connect to each other at the same moment (a simultaneous open), each
//! from its listening port to the other's public address with its listen port. A router
//! that keeps a connection's source port (nft `masquerade` without `random`, most home
//! routers) then lets the other's SYN in as the answer to its own.
//!
//! The listener and every punching socket are bound to the listen address with
//! `SO_REUSEADDR` and `SO_REUSEPORT`. An attempt's first SYN leaves with a small TTL
//! (`OPENING_TTL`): it opens this peer's own router and dies before the other's, which
//! would otherwise answer it with a reset and keep the port the other side needs (nft
//! masquerade then picks another). The same socket's retransmitted SYN (a second later, at
//! the usual TTL) meets the other's in flight, through two routers that each expect it,
//! with the sequence number both routers recorded. A router on the way may answer the
//! opening SYN with an ICMP "time exceeded", which ends the attempt: the next starts 20 to
//! 80 ms later, until one is not answered (routers limit those messages: Linux sends 6 to a
//! host, then one a second). All end by the deadline the caller gives (about 2 s).
//! (`IP_MINTTL` 2 on the socket would have it ignore those messages, and punch at the
//! first attempt, but needs an `unsafe` `setsockopt`, which this workspace forbids.)
//!
//! The connection may come out of either end's `connect` or of either end's listener (when
//! one side's SYN finds no attempt of the other waiting): so the roles never depend on it.
//! The downloader always runs the handshake as initiator, on a connection its punching
//! port's listener accepted from the address it punches to as on one it connected; the
//! seeder serves whatever it gets as an accepted connection.
//!
//! The downloader punches from a port of its own (`punch_port`), not its listening port,
//! and names it in its call: two peers that fetch from each other need a connection each
//! way, and two punched between both listening ports would be the same four-tuple (the
//! second attempt fails with `EADDRNOTAVAIL`). A listener on that port, sharing it with
//! the attempts, takes the seeder's SYN when it finds no attempt waiting.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use socket2::{Domain, SockAddr, Socket, Type};

use crate::interrupt::Interrupt;

/// How long a whole punch may take, on both sides.
pub const PUNCH_FOR: Duration = Duration::from_secs(2);
/// The TTL of an attempt's first SYN: past this peer's router, not as far as the other's.
const OPENING_TTL: u32 = 2;
/// How often the attempts and the listener's hand-over are looked at.
const TICK: Duration = Duration::from_millis(10);
/// Connections a punch port's listener takes a tick, at most.
const OWN_ACCEPTS_PER_TICK: usize = 8;

/// A socket bound to `local` with `SO_REUSEADDR` and `SO_REUSEPORT`, as the listener and
/// every punching socket are, so that they share the port.
fn shared_socket(local: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(local), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&SockAddr::from(local))?;
    Ok(socket)
}

/// The peer's listener at `addr` (port 0: any free port), sharing its port with the
/// punching sockets. The port is first bound without sharing, so that a port another
/// program (or another client of this user) listens on is refused as before.
pub fn listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let bound = {
        let probe = TcpListener::bind(addr)?;
        probe.local_addr()?
    };
    let socket = shared_socket(bound)?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// A port to punch from, apart from the listening port (see the module's comment): a
/// non-blocking `listener` on a free port of the listen address's IP, sharing its port
/// with the punching sockets.
pub fn punch_port(listen: SocketAddr) -> io::Result<TcpListener> {
    let own = listener(SocketAddr::new(listen.ip(), 0))?;
    own.set_nonblocking(true)?;
    Ok(own)
}

struct Attempt {
    socket: Socket,
    target: SocketAddr,
}

/// Connects from `local` (the listen address) to the first of `targets` that answers,
/// attempts repeated with jitter until `deadline`; or takes the connection this peer's
/// listener accepted from one of them (`arrived`, the downloader's side, or `own`, a
/// `punch_port` listener, polled here; connections to it from elsewhere are closed). Returns the
/// stream (blocking, no timeouts set) and whom it joins. Gives up at once when `cancel`
/// fires (its worker stopped, or another path won).
pub fn punch(
    local: SocketAddr,
    targets: &[SocketAddr],
    deadline: Instant,
    arrived: Option<&Receiver<TcpStream>>,
    own: Option<&TcpListener>,
    cancel: Option<&Interrupt>,
) -> io::Result<(TcpStream, SocketAddr)> {
    let start = Instant::now();
    let mut attempts: Vec<Attempt> = Vec::new();
    // When each target's next attempt starts.
    let mut next: Vec<Instant> = vec![start; targets.len()];
    let mut last_error = io::Error::new(io::ErrorKind::TimedOut, "no punched connection");
    loop {
        if let Some(stream) = arrived.and_then(|rx| rx.try_recv().ok()) {
            let from = stream.peer_addr()?;
            stream.set_nonblocking(false)?;
            return Ok((stream, from));
        }
        // A few a tick at most: a flood of strangers at this port cannot hold the loop
        // past its deadline.
        for _ in 0..OWN_ACCEPTS_PER_TICK {
            let Some(Ok((stream, from))) = own.map(TcpListener::accept) else { break };
            if targets.contains(&from) {
                stream.set_nonblocking(false)?;
                return Ok((stream, from));
            }
            log::debug!("punch {local}: closed a connection from {from}, not punched to");
        }
        if cancel.is_some_and(Interrupt::is_fired) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "punch given up"));
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(last_error);
        }
        for (i, target) in targets.iter().enumerate() {
            if now < next[i] || attempts.iter().any(|a| a.target == *target) {
                continue;
            }
            match start_attempt(local, *target) {
                Ok(socket) => attempts.push(Attempt { socket, target: *target }),
                Err(e) => {
                    log::debug!("punch {local} -> {target}: {e}");
                    last_error = e;
                }
            }
            // The next one once this one failed, with jitter.
            next[i] = now + Duration::from_millis(fastrand::u64(20..80));
        }
        let mut i = 0;
        while i < attempts.len() {
            let attempt = &attempts[i];
            match attempt.socket.take_error() {
                Ok(None) if connected(&attempt.socket) => {
                    let attempt = attempts.swap_remove(i);
                    let stream: TcpStream = attempt.socket.into();
                    stream.set_nonblocking(false)?;
                    return Ok((stream, attempt.target));
                }
                Ok(None) => i += 1,
                Ok(Some(e)) | Err(e) => {
                    log::debug!("punch {local} -> {}: {e}", attempt.target);
                    last_error = e;
                    attempts.swap_remove(i);
                }
            }
        }
        std::thread::sleep(TICK.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// Whether a non-blocking connect completed.
fn connected(socket: &Socket) -> bool {
    socket.peer_addr().is_ok()
}

/// Starts a non-blocking connect from `local` to `target`, its SYN sent with
/// `OPENING_TTL` (its retransmissions and answers then go all the way).
fn start_attempt(local: SocketAddr, target: SocketAddr) -> io::Result<Socket> {
    let socket = shared_socket(local)?;
    socket.set_nonblocking(true)?;
    let normal = match target {
        SocketAddr::V4(_) => {
            let normal = socket.ttl_v4()?;
            socket.set_ttl_v4(OPENING_TTL)?;
            Some(normal)
        }
        // IPv6: no NAT to punch through in the usual case; every SYN goes all the way.
        SocketAddr::V6(_) => None,
    };
    match socket.connect(&SockAddr::from(target)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    if let Some(normal) = normal {
        socket.set_ttl_v4(normal)?;
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_punch_to_a_listener_connects_from_the_shared_listen_port() {
        let mine = listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let local = mine.local_addr().unwrap();
        let theirs = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = theirs.local_addr().unwrap();
        let deadline = Instant::now() + PUNCH_FOR;
        let (stream, reached) = punch(local, &[target], deadline, None, None, None).unwrap();
        assert_eq!(reached, target);
        assert_eq!(stream.local_addr().unwrap(), local);
        let (_, from) = theirs.accept().unwrap();
        assert_eq!(from, local);
    }

    #[test]
    fn a_second_connection_between_two_listening_ports_needs_a_port_of_its_own() {
        let mine = listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let local = mine.local_addr().unwrap();
        let theirs = listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let target = theirs.local_addr().unwrap();
        let deadline = || Instant::now() + Duration::from_millis(500);
        let (_first, _) = punch(local, &[target], deadline(), None, None, None).unwrap();
        // The same four-tuple again: no second connection.
        assert!(punch(local, &[target], deadline(), None, None, None).is_err());
        let own = punch_port(local).unwrap();
        let from = own.local_addr().unwrap();
        assert_ne!(from.port(), local.port());
        let (second, _) = punch(from, &[target], deadline(), None, Some(&own), None).unwrap();
        assert_eq!(second.local_addr().unwrap(), from);
    }

    #[test]
    fn a_punch_port_takes_a_connection_from_a_target_only() {
        let own = punch_port("127.0.0.1:0".parse().unwrap()).unwrap();
        let from = own.local_addr().unwrap();
        let stranger = TcpStream::connect(from).unwrap();
        // The peer punched to, which connects to the punch port (its SYN found no attempt).
        let peer = shared_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let peer_addr = peer.local_addr().unwrap().as_socket().unwrap();
        peer.connect(&SockAddr::from(from)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        // Punching to a port where nothing listens: only the listener can give the stream.
        let (stream, reached) =
            punch(from, &[peer_addr], deadline, None, Some(&own), None).unwrap();
        assert_eq!(reached, peer_addr);
        assert_eq!(stream.peer_addr().unwrap(), peer_addr);
        drop(stranger);
    }

    #[test]
    fn strangers_flooding_a_punch_port_do_not_hold_the_punch_past_its_deadline() {
        let own = punch_port("127.0.0.1:0".parse().unwrap()).unwrap();
        let from = own.local_addr().unwrap();
        let nobody = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flood = {
            let flooding = std::sync::Arc::clone(&flooding);
            std::thread::spawn(move || {
                while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = TcpStream::connect(from);
                }
            })
        };
        let deadline = Instant::now() + Duration::from_millis(300);
        assert!(punch(from, &[nobody], deadline, None, Some(&own), None).is_err());
        let late = Instant::now().saturating_duration_since(deadline);
        flooding.store(false, std::sync::atomic::Ordering::Relaxed);
        flood.join().unwrap();
        // Ended at its deadline, give or take a tick and a few accepts.
        assert!(late < Duration::from_secs(2), "{late:?} late");
    }

    #[test]
    fn a_punch_to_nobody_gives_up_by_its_deadline() {
        let local = listener("127.0.0.1:0".parse().unwrap()).unwrap().local_addr().unwrap();
        let nobody = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_millis(500);
        assert!(punch(local, &[nobody], deadline, None, None, None).is_err());
        assert!(Instant::now() < deadline + Duration::from_millis(200));
    }

    #[test]
    fn a_punch_given_up_ends_at_once() {
        let local = listener("127.0.0.1:0".parse().unwrap()).unwrap().local_addr().unwrap();
        let nobody = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let cancel = Interrupt::default();
        cancel.fire();
        let far = Instant::now() + Duration::from_secs(3600);
        let given_up = punch(local, &[nobody], far, None, None, Some(&cancel)).unwrap_err();
        assert_eq!(given_up.kind(), io::ErrorKind::Interrupted);
    }

    #[test]
    fn the_listener_refuses_a_port_another_listens_on() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(listener(taken.local_addr().unwrap()).is_err());
    }
}

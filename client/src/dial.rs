//! Connecting to a peer that may be reached at several addresses (issue 19): the attempts
//! overlap, each started `STAGGER` after the one before (at once when the one before
//! failed), each bounded by its own timeout (`timeout_for` the address: another network's
//! private address gets a short one, see `reach::connect_timeout`), and the first
//! connection made wins; the others are closed. One thread, non-blocking sockets and
//! `poll`.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{AddressFamily, SocketFlags, SocketType};

/// How long an attempt runs alone before the next address is tried beside it.
pub const STAGGER: Duration = Duration::from_millis(250);

/// Connects to the first of `addrs` (in their order of preference) that accepts within
/// `timeout_for` it of its own attempt; returns the stream (blocking) and the address it
/// reached. The error is the last attempt's when none connects.
pub fn connect_any(
    addrs: &[SocketAddr],
    timeout_for: impl Fn(SocketAddr) -> Duration,
) -> io::Result<(TcpStream, SocketAddr)> {
    let mut pending: Vec<(OwnedFd, SocketAddr, Instant)> = Vec::new();
    let mut last_error: Option<io::Error> = None;
    let mut next = 0;
    let mut next_start = Instant::now();
    loop {
        let now = Instant::now();
        while next < addrs.len() && (now >= next_start || pending.is_empty()) {
            let addr = addrs[next];
            next += 1;
            next_start = now + STAGGER;
            match start(addr) {
                Ok(Started::Connected(fd)) => return finish(fd, addr),
                Ok(Started::Pending(fd)) => pending.push((fd, addr, now + timeout_for(addr))),
                Err(e) => {
                    log::debug!("dial {addr}: {e}");
                    last_error = Some(e);
                }
            }
        }
        pending.retain(|(_, addr, deadline)| {
            let alive = now < *deadline;
            if !alive {
                log::debug!("dial {addr}: timed out");
                last_error = Some(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {addr} timed out"),
                ));
            }
            alive
        });
        if pending.is_empty() {
            if next < addrs.len() {
                continue;
            }
            return Err(last_error.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to connect to")
            }));
        }
        let mut wake_at = pending.iter().map(|(_, _, d)| *d).min().unwrap_or(now);
        if next < addrs.len() {
            wake_at = wake_at.min(next_start);
        }
        let wait = wake_at.saturating_duration_since(now);
        let spec = Timespec {
            tv_sec: wait.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(wait.subsec_nanos()),
        };
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> =
                pending.iter().map(|(fd, _, _)| PollFd::new(fd, PollFlags::OUT)).collect();
            match poll(&mut fds, Some(&spec)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            fds.iter().map(|fd| !fd.revents().is_empty()).collect()
        };
        let mut i = 0;
        let mut ready = ready.into_iter();
        while i < pending.len() {
            if !ready.next().unwrap_or(false) {
                i += 1;
                continue;
            }
            let (fd, addr, _) = pending.remove(i);
            match rustix::net::sockopt::socket_error(&fd) {
                Ok(Ok(())) => return finish(fd, addr),
                Ok(Err(e)) | Err(e) => {
                    log::debug!("dial {addr}: {e}");
                    last_error = Some(e.into());
                }
            }
        }
    }
}

enum Started {
    Connected(OwnedFd),
    Pending(OwnedFd),
}

fn start(addr: SocketAddr) -> io::Result<Started> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    match rustix::net::connect(&fd, &addr) {
        Ok(()) => Ok(Started::Connected(fd)),
        Err(rustix::io::Errno::INPROGRESS) => Ok(Started::Pending(fd)),
        Err(e) => Err(e.into()),
    }
}

fn finish(fd: OwnedFd, addr: SocketAddr) -> io::Result<(TcpStream, SocketAddr)> {
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok((stream, addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A port on 127.0.0.1 where nothing listens (bound, then closed: refused at once).
    fn closed_port() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    #[test]
    fn the_first_address_that_accepts_wins() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let good = listener.local_addr().unwrap();
        let bad = closed_port();
        let (stream, reached) = connect_any(&[bad, good], |_| Duration::from_secs(5)).unwrap();
        assert_eq!(reached, good);
        assert_eq!(stream.peer_addr().unwrap(), good);
        let (_, from) = listener.accept().unwrap();
        assert_eq!(from, stream.local_addr().unwrap());
    }

    #[test]
    fn no_address_that_accepts_is_an_error() {
        let refused = connect_any(&[closed_port()], |_| Duration::from_secs(5)).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        let none = connect_any(&[], |_| Duration::from_secs(5)).unwrap_err();
        assert_eq!(none.kind(), io::ErrorKind::AddrNotAvailable);
    }
    #[test]
    fn each_address_waits_its_own_timeout() {
        // A listener whose accept queue is full (backlog 0: one connection, never
        // accepted) drops further SYNs: a dial to it hangs until its timeout.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        socket.listen(0).unwrap();
        let full = socket.local_addr().unwrap().as_socket().unwrap();
        let _queued = connect_any(&[full], |_| Duration::from_secs(5)).unwrap();
        let started = Instant::now();
        let short = Duration::from_millis(200);
        let waits = |a: SocketAddr| if a == full { short } else { Duration::from_secs(30) };
        let err = connect_any(&[full], waits).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // Given up at its own timeout, not at a default: well before the 30 s.
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }
}

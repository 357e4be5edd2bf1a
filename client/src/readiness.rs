//! Waiting on a connection and on news from another thread at once (issue 12).
//!
//! A seeder connection pushes new pieces while it waits for requests, and a download worker
//! reads pushed pieces while it waits for jobs; both threads block in `poll` on their socket
//! and on a wake-up socket (one end of a `UnixStream` pair, written by whoever has news).
//! Nothing here reads the connection: the caller does, after `wait` said it is readable.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};

/// What `wait` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The connection has something to read (a message, or its end).
    pub socket: bool,
    /// The wake-up socket was written to (its bytes are drained).
    pub woken: bool,
    /// The wake-up socket's writer is gone: no more news will come.
    pub closed: bool,
}

/// Waits up to `timeout` until `socket` is readable or `wake` (if any) was written to or
/// closed. `buffered`: the connection already holds bytes read ahead, so it is readable now.
pub fn wait(
    socket: &std::net::TcpStream,
    buffered: bool,
    wake: Option<&UnixStream>,
    timeout: Duration,
) -> std::io::Result<Readiness> {
    let mut ready = Readiness { socket: buffered, woken: false, closed: false };
    let timeout = if buffered { Duration::ZERO } else { timeout };
    let spec = Timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let flags = PollFlags::IN | PollFlags::HUP | PollFlags::ERR;
    let mut fds = vec![PollFd::new(socket, flags)];
    if let Some(wake) = wake {
        fds.push(PollFd::new(wake, flags));
    }
    match poll(&mut fds, Some(&spec)) {
        Ok(_) => {}
        Err(rustix::io::Errno::INTR) => return Ok(ready),
        Err(e) => return Err(e.into()),
    }
    ready.socket |= !fds[0].revents().is_empty();
    let wake_ready = fds.get(1).is_some_and(|fd| !fd.revents().is_empty());
    if let (true, Some(wake)) = (wake_ready, wake) {
        ready.woken = true;
        ready.closed = drain(wake);
    }
    Ok(ready)
}

/// Reads every wake-up byte waiting; returns whether the writer is gone.
fn drain(wake: &UnixStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match (&*wake).read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// Writes one wake-up byte (a full socket already holds an unread one). Returns false when
/// the reader is gone.
pub fn wake(writer: &UnixStream) -> bool {
    use std::io::Write;
    // One byte is written whole or not at all.
    match (&*writer).write(&[1]) {
        Ok(1) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_up_or_a_message_ends_the_wait() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let (reader, writer) = UnixStream::pair().unwrap();
        reader.set_nonblocking(true).unwrap();
        writer.set_nonblocking(true).unwrap();
        let none = wait(&server, false, Some(&reader), Duration::from_millis(10)).unwrap();
        assert_eq!(none, Readiness { socket: false, woken: false, closed: false });
        assert!(wake(&writer) && wake(&writer));
        let woken = wait(&server, false, Some(&reader), Duration::from_secs(5)).unwrap();
        assert_eq!(woken, Readiness { socket: false, woken: true, closed: false });
        std::io::Write::write_all(&mut client, b"x").unwrap();
        let socket = wait(&server, false, Some(&reader), Duration::from_secs(5)).unwrap();
        assert!(socket.socket && !socket.woken);
        drop(writer);
        let closed = wait(&server, true, Some(&reader), Duration::from_secs(5)).unwrap();
        assert!(closed.closed);
    }
}

//! A framed, typed, encrypted connection over a `TcpStream`, with timeouts.
//!
//! Every connection starts with the secure channel's handshake (`secure_channel`): the side
//! that connects names the key it expects, the side that accepts learns the key its peer
//! proved. After that, frames travel sealed in records; nothing above this module sees
//! ciphertext or keys other than the peer's public one.
//!
//! Invariant: every socket wrapped here has a read and a write timeout, and the handshake
//! has a deadline for the whole exchange. A record without data or a frame without payload
//! ends the connection (`recv` fails), so no peer holds a reader without making progress;
//! a caller that must not wait past a moment (`set_deadline`) is woken by the clock, not by
//! the peer's next byte.

use std::io::{Read, Write};
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::frame::{self, FrameError};
use crate::identity::{Identity, PublicKey};
use crate::secure_channel::{self, SecureStream};

/// The timeouts of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The whole handshake must finish within this.
    pub handshake: Duration,
    /// How long a read may wait for data.
    pub read: Duration,
    /// How long a write may take.
    pub write: Duration,
}

/// A connection that receives `In` messages and sends `Out` messages.
pub struct Connection<In, Out> {
    stream: SecureStream,
    peer: SocketAddr,
    /// The largest frame `recv` takes.
    max_frame: usize,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In: DeserializeOwned, Out: Serialize> Connection<In, Out> {
    /// Opens the secure channel on a connected `stream`, checking that the peer holds the
    /// private half of `remote`.
    pub fn connect(
        stream: TcpStream,
        identity: &Identity,
        remote: &PublicKey,
        timeouts: Timeouts,
    ) -> Result<Self, FrameError> {
        let peer = prepare(&stream)?;
        let deadline = Instant::now() + timeouts.handshake;
        let secure = secure_channel::initiate(stream, identity, remote, deadline)?;
        Connection::established(secure, peer, timeouts)
    }

    /// Accepts the secure channel on an accepted `stream`; `remote_key` tells who the peer
    /// proved to be.
    pub fn accept(
        stream: TcpStream,
        identity: &Identity,
        timeouts: Timeouts,
    ) -> Result<Self, FrameError> {
        let peer = prepare(&stream)?;
        let deadline = Instant::now() + timeouts.handshake;
        let secure = secure_channel::respond(stream, identity, deadline)?;
        Connection::established(secure, peer, timeouts)
    }

    fn established(
        secure: SecureStream,
        peer: SocketAddr,
        timeouts: Timeouts,
    ) -> Result<Self, FrameError> {
        secure.socket().set_read_timeout(Some(timeouts.read))?;
        secure.socket().set_write_timeout(Some(timeouts.write))?;
        Ok(Connection {
            stream: secure,
            peer,
            max_frame: frame::MAX_FRAME_LEN,
            _types: PhantomData,
        })
    }

    /// The remote address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The static key the peer proved in the handshake.
    pub fn remote_key(&self) -> PublicKey {
        *self.stream.remote_key()
    }

    /// The underlying socket (for a caller that shuts the connection down from another
    /// thread, such as a client's interrupted command).
    pub fn socket(&self) -> &TcpStream {
        self.stream.socket()
    }

    /// Changes the read timeout.
    pub fn set_read_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        self.stream.socket().set_read_timeout(Some(timeout))
    }

    /// Every `recv` (and `recv_payload`) from now on fails with a timeout once `deadline`
    /// has passed, even while the peer keeps sending bytes that complete no message;
    /// `None` lifts it. Within the deadline, the read timeout still bounds each wait.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) -> std::io::Result<()> {
        self.stream.set_deadline(deadline)
    }

    /// Whether bytes already read from the socket wait to be taken: a caller that waits on
    /// the socket itself (with `poll`) must take those first.
    pub fn has_buffered(&self) -> bool {
        self.stream.has_buffered()
    }

    /// Waits up to `timeout` for something to read (a message, or the end of the stream),
    /// without reading it: a caller can give up waiting between polls and the connection
    /// stays whole. Returns whether something arrived.
    pub fn wait_readable(&self, timeout: Duration) -> std::io::Result<bool> {
        if self.stream.has_buffered() {
            return Ok(true);
        }
        let socket = self.stream.socket();
        let usual = socket.read_timeout()?;
        socket.set_read_timeout(Some(timeout))?;
        let arrived = match socket.peek(&mut [0u8; 1]) {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        };
        socket.set_read_timeout(usual)?;
        arrived
    }

    /// Receives one message; `Ok(None)` when the peer closed the connection cleanly.
    pub fn recv(&mut self) -> Result<Option<In>, FrameError> {
        frame::read_message_limited(&mut self.stream, self.max_frame)
    }

    /// Takes frames of at most `max` bytes from now on (never above `MAX_FRAME_LEN`).
    pub fn set_max_frame(&mut self, max: usize) {
        self.max_frame = max.min(frame::MAX_FRAME_LEN);
    }

    /// Sends one message and flushes it.
    pub fn send(&mut self, msg: &Out) -> Result<(), FrameError> {
        frame::write_frame(&mut self.stream, msg)?;
        self.stream.flush()?;
        Ok(())
    }

    /// Sends one message followed by `payload` as raw bytes (outside the frame), and
    /// flushes. The message must tell the receiver how many raw bytes follow.
    pub fn send_with_payload(&mut self, msg: &Out, payload: &[u8]) -> Result<(), FrameError> {
        frame::write_frame(&mut self.stream, msg)?;
        self.stream.write_all(payload)?;
        self.stream.flush()?;
        Ok(())
    }

    /// Reads exactly `buf.len()` raw bytes that followed a message.
    pub fn recv_payload(&mut self, buf: &mut [u8]) -> Result<(), FrameError> {
        self.stream.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                FrameError::Truncated
            } else {
                FrameError::Io(e)
            }
        })
    }

    /// The socket under the channel, for a protocol switch to bytes this connection does
    /// not seal (issue 19: relays), once every message was read and written; `None` if
    /// bytes wait in its buffers. Its timeouts are the connection's.
    pub fn into_socket(self) -> Option<TcpStream> {
        self.stream.into_socket()
    }

    /// The same connection (buffers included) speaking other message types, for a protocol
    /// switch after the first message.
    pub fn retype<In2, Out2>(self) -> Connection<In2, Out2> {
        Connection {
            stream: self.stream,
            peer: self.peer,
            max_frame: self.max_frame,
            _types: PhantomData,
        }
    }
}

/// Disables Nagle's algorithm (every message is written whole and flushed, so batching
/// only adds latency) and returns the peer's address.
fn prepare(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    stream.set_nodelay(true)?;
    stream.peer_addr()
}

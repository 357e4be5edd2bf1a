//! A framed, typed, buffered connection over a `TcpStream` with timeouts.
//!
//! Invariant: every socket wrapped here has a read and a write timeout.

use std::io::{BufReader, BufWriter, Read, Write};
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::frame::{self, FrameError};

/// A connection that receives `In` messages and sends `Out` messages.
pub struct Connection<In, Out> {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    peer: SocketAddr,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In: DeserializeOwned, Out: Serialize> Connection<In, Out> {
    /// Wraps `stream`, setting its read and write timeouts and disabling Nagle's algorithm
    /// (every message is written whole and flushed, so batching only adds latency).
    pub fn new(
        stream: TcpStream,
        read_timeout: Duration,
        write_timeout: Duration,
    ) -> std::io::Result<Self> {
        stream.set_read_timeout(Some(read_timeout))?;
        stream.set_write_timeout(Some(write_timeout))?;
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        let reader = BufReader::new(stream.try_clone()?);
        let writer = BufWriter::new(stream);
        Ok(Connection { reader, writer, peer, _types: PhantomData })
    }

    /// The remote address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Changes the read timeout (for example a short one for a handshake).
    pub fn set_read_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        self.writer.get_ref().set_read_timeout(Some(timeout))
    }

    /// Receives one message; `Ok(None)` when the peer closed the connection cleanly.
    pub fn recv(&mut self) -> Result<Option<In>, FrameError> {
        frame::read_message(&mut self.reader)
    }

    /// Sends one message and flushes it.
    pub fn send(&mut self, msg: &Out) -> Result<(), FrameError> {
        frame::write_frame(&mut self.writer, msg)?;
        self.writer.flush()?;
        Ok(())
    }

    /// Sends one message followed by `payload` as raw bytes (outside the frame), and
    /// flushes. The message must tell the receiver how many raw bytes follow.
    pub fn send_with_payload(&mut self, msg: &Out, payload: &[u8]) -> Result<(), FrameError> {
        frame::write_frame(&mut self.writer, msg)?;
        self.writer.write_all(payload)?;
        self.writer.flush()?;
        Ok(())
    }

    /// Reads exactly `buf.len()` raw bytes that followed a message.
    pub fn recv_payload(&mut self, buf: &mut [u8]) -> Result<(), FrameError> {
        self.reader.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                FrameError::Truncated
            } else {
                FrameError::Io(e)
            }
        })
    }

    /// The same connection (buffers included) speaking other message types, for a protocol
    /// switch after the first message.
    pub fn retype<In2, Out2>(self) -> Connection<In2, Out2> {
        Connection {
            reader: self.reader,
            writer: self.writer,
            peer: self.peer,
            _types: PhantomData,
        }
    }
}

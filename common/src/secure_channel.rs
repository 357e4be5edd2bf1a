//! The secure channel under every connection: a Noise handshake that authenticates static
//! keys, then an encrypted, authenticated byte stream.
//!
//! Pattern `Noise_IK_25519_AESGCM_SHA256` on every link (client ↔ tracker, tracker ↔ tracker,
//! peer ↔ peer): the initiator always knows whom it calls (a tracker's key from
//! `tracker_info.txt`, a seeder's key from the tracker's peer list) and sends its own static
//! key encrypted in the first message, so both sides are authenticated after one round trip
//! and the initiator's identity is hidden from eavesdroppers. AES-GCM (through ring, with
//! AES-NI) measured faster here than ChaCha20-Poly1305 (see `scripts/bench.sh`).
//!
//! Wire format: each handshake message and each transport record is `u16 BE length |
//! bytes`. A record carries at most `MAX_RECORD_PLAINTEXT` bytes; a frame of any size is
//! split over as many records as it needs, so `frame` and `MAX_FRAME_LEN` are unchanged
//! above this layer. Only `connection` uses this module.
//!
//! Issue 21: a record must carry data. An empty record (which no sender here ever seals) is a
//! protocol error, not a keep-alive: it would let a peer keep a reader waiting forever
//! without ever completing a message. A reader may also be given a deadline
//! (`set_deadline`), checked before every read from the socket, so that bytes trickled in
//! one at a time never stretch a wait past it.
//!
//! Invariant: the handshake finishes within its deadline or fails; no byte of application
//! data is sent before the remote static key is proven; every record read carries at least
//! one byte of plaintext.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use snow::params::NoiseParams;
use snow::TransportState;

use crate::identity::{Identity, PublicKey, KEY_LEN};

/// The Noise protocol name of every link.
pub const NOISE_PATTERN: &str = "Noise_IK_25519_AESGCM_SHA256";
/// Binds the handshake to this system and version: a peer of anything else fails it.
const PROLOGUE: &[u8] = b"p2p-groups secure channel v1";
/// The largest Noise message.
const MAX_RECORD: usize = 65_535;
/// The AEAD tag that ends every record.
const TAG_LEN: usize = 16;
/// Plaintext bytes per record.
pub const MAX_RECORD_PLAINTEXT: usize = MAX_RECORD - TAG_LEN;
/// The largest handshake message accepted (IK's are 96 and 48 bytes with empty payloads).
const MAX_HANDSHAKE_MSG: usize = 256;
/// Records sealed before they are written in one system call.
const SEND_BATCH: usize = 4;
/// The most a stream buffers of either direction: a batch of whole records.
const MAX_BUFFER: usize = SEND_BATCH * (2 + MAX_RECORD);
/// What a new stream's receive buffer holds: a connection that only ever carries small
/// messages (a tracker's clients, by the thousand) never needs more; a bulk transfer
/// grows it to `MAX_BUFFER`.
const FIRST_BUFFER: usize = 8 * 1024;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The socket failed or the deadline passed.
    #[error("handshake: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection during the handshake.
    #[error("handshake: connection closed")]
    Closed,
    /// A handshake message was too long.
    #[error("handshake: message of {0} bytes")]
    TooLong(usize),
    /// The cryptography failed: the peer does not hold the key we expected, or is not
    /// speaking this protocol.
    #[error("handshake failed: the peer did not prove the expected key ({0})")]
    Crypto(String),
}

impl HandshakeError {
    /// Whether the deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, HandshakeError::Io(e)
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }
}

fn params() -> NoiseParams {
    // A constant that parses; covered by the tests.
    NOISE_PATTERN.parse().unwrap_or_else(|_| unreachable!("NOISE_PATTERN parses"))
}

/// A Noise builder: ring's AES-GCM, SHA-256 and randomness, curve25519-dalek's X25519
/// (ring has no resolver for it).
pub(crate) fn builder() -> snow::Builder<'static> {
    snow::Builder::new(params())
}

fn crypto(e: snow::Error) -> HandshakeError {
    HandshakeError::Crypto(e.to_string())
}

/// The bench-only plaintext build runs only when asked for by name, so that a build made
/// with `--all-features` can never carry anyone's bytes in the clear by accident.
fn plaintext_allowed() -> Result<(), HandshakeError> {
    if cfg!(feature = "bench-plaintext") && std::env::var_os("P2P_BENCH_PLAINTEXT").is_none() {
        return Err(HandshakeError::Crypto(
            "this build does not encrypt (feature bench-plaintext, for benchmarks only); \
             it runs only with P2P_BENCH_PLAINTEXT=1"
                .into(),
        ));
    }
    Ok(())
}

/// Runs the initiator's side on `stream`: proves `identity` and checks that the peer holds
/// the private half of `remote`.
pub fn initiate(
    mut stream: TcpStream,
    identity: &Identity,
    remote: &PublicKey,
    deadline: Instant,
) -> Result<SecureStream, HandshakeError> {
    plaintext_allowed()?;
    if remote.is_weak() {
        return Err(HandshakeError::Crypto("a key of small order".into()));
    }
    let mut hs = builder()
        .prologue(PROLOGUE)
        .and_then(|b| b.local_private_key(identity.private()))
        .and_then(|b| b.remote_public_key(&remote.0))
        .and_then(|b| b.build_initiator())
        .map_err(crypto)?;
    let mut msg = [0u8; MAX_HANDSHAKE_MSG];
    let mut payload = [0u8; MAX_HANDSHAKE_MSG];
    let n = hs.write_message(&[], &mut msg).map_err(crypto)?;
    send_handshake(&mut stream, &msg[..n], deadline)?;
    let n = recv_handshake(&mut stream, &mut msg, deadline)?;
    hs.read_message(&msg[..n], &mut payload).map_err(crypto)?;
    let transport = hs.into_transport_mode().map_err(crypto)?;
    SecureStream::new(stream, transport, *remote)
}

/// Runs the responder's side on `stream`: proves `identity`; the peer's proven key is
/// `SecureStream::remote_key`.
pub fn respond(
    mut stream: TcpStream,
    identity: &Identity,
    deadline: Instant,
) -> Result<SecureStream, HandshakeError> {
    plaintext_allowed()?;
    let mut hs = builder()
        .prologue(PROLOGUE)
        .and_then(|b| b.local_private_key(identity.private()))
        .and_then(|b| b.build_responder())
        .map_err(crypto)?;
    let mut msg = [0u8; MAX_HANDSHAKE_MSG];
    let mut payload = [0u8; MAX_HANDSHAKE_MSG];
    let n = recv_handshake(&mut stream, &mut msg, deadline)?;
    hs.read_message(&msg[..n], &mut payload).map_err(crypto)?;
    let remote = hs
        .get_remote_static()
        .and_then(|k| <[u8; KEY_LEN]>::try_from(k).ok())
        .map(PublicKey)
        .filter(|key| !key.is_weak())
        .ok_or_else(|| HandshakeError::Crypto("no static key, or one of small order".into()))?;
    let n = hs.write_message(&[], &mut msg).map_err(crypto)?;
    send_handshake(&mut stream, &msg[..n], deadline)?;
    let transport = hs.into_transport_mode().map_err(crypto)?;
    SecureStream::new(stream, transport, remote)
}

/// Whether `identity`'s public key belongs to its private key: a handshake with itself.
pub(crate) fn key_pair_matches(identity: &Identity) -> bool {
    let attempt = || -> Result<(), snow::Error> {
        let mut i = builder()
            .local_private_key(identity.private())?
            .remote_public_key(&identity.public().0)?
            .build_initiator()?;
        let mut r = builder().local_private_key(identity.private())?.build_responder()?;
        let (mut msg, mut payload) = ([0u8; MAX_HANDSHAKE_MSG], [0u8; MAX_HANDSHAKE_MSG]);
        let n = i.write_message(&[], &mut msg)?;
        r.read_message(&msg[..n], &mut payload)?;
        let n = r.write_message(&[], &mut msg)?;
        i.read_message(&msg[..n], &mut payload)?;
        Ok(())
    };
    attempt().is_ok()
}

/// Whether `e` is a socket's read or write timeout (`WouldBlock` on Linux, `TimedOut`
/// elsewhere).
fn is_wait_over(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Sets the socket's read and write timeouts to what is left before `deadline`.
fn until(stream: &TcpStream, deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
    }
    stream.set_read_timeout(Some(left))?;
    stream.set_write_timeout(Some(left))
}

fn send_handshake(stream: &mut TcpStream, msg: &[u8], deadline: Instant) -> io::Result<()> {
    until(stream, deadline)?;
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    stream.write_all(&out)?;
    stream.flush()
}

fn recv_handshake(
    stream: &mut TcpStream,
    buf: &mut [u8; MAX_HANDSHAKE_MSG],
    deadline: Instant,
) -> Result<usize, HandshakeError> {
    let mut len = [0u8; 2];
    read_exact_until(stream, &mut len, deadline)?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_HANDSHAKE_MSG {
        return Err(HandshakeError::TooLong(len));
    }
    read_exact_until(stream, &mut buf[..len], deadline)?;
    Ok(len)
}

/// `read_exact`, with the deadline applied to the whole read rather than to each call.
fn read_exact_until(
    stream: &mut TcpStream,
    mut buf: &mut [u8],
    deadline: Instant,
) -> Result<(), HandshakeError> {
    while !buf.is_empty() {
        until(stream, deadline)?;
        match stream.read(buf) {
            Ok(0) => return Err(HandshakeError::Closed),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// An established channel: `Read` yields the peer's plaintext, `Write` seals what is
/// written into records, sent on `flush` (or once a batch of records is full).
pub struct SecureStream {
    stream: TcpStream,
    transport: TransportState,
    remote: PublicKey,
    /// Received bytes, `recv_start..recv_end` not yet consumed (records and their headers);
    /// grows from `FIRST_BUFFER` to `MAX_BUFFER` as records and reads need.
    recv: Vec<u8>,
    recv_start: usize,
    recv_end: usize,
    /// Plaintext of the last record opened, `plain_start..plain_end` not yet read (grown
    /// to the largest record opened here, rounded up to a power of two).
    plain: Vec<u8>,
    plain_start: usize,
    plain_end: usize,
    /// Plaintext written but not yet sealed (less than one record).
    pending: Vec<u8>,
    /// Sealed records not yet written, `..sealed_len` (grows to `MAX_BUFFER` as needed).
    sealed: Vec<u8>,
    sealed_len: usize,
    /// When reads must have finished, and the socket's read timeout to restore after.
    deadline: Option<(Instant, Option<Duration>)>,
}

impl SecureStream {
    fn new(
        stream: TcpStream,
        transport: TransportState,
        remote: PublicKey,
    ) -> Result<SecureStream, HandshakeError> {
        Ok(SecureStream {
            stream,
            transport,
            remote,
            recv: vec![0u8; FIRST_BUFFER],
            recv_start: 0,
            recv_end: 0,
            plain: Vec::new(),
            plain_start: 0,
            plain_end: 0,
            pending: Vec::new(),
            sealed: Vec::new(),
            sealed_len: 0,
            deadline: None,
        })
    }

    /// Every read from now on fails with `TimedOut` once `deadline` has passed, however
    /// the bytes arrive (the clock is checked before each read from the socket, and the
    /// socket's wait is cut to what is left); `None` goes back to the socket's own read
    /// timeout.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        let usual = match self.deadline.take() {
            Some((_, usual)) => usual,
            None => self.stream.read_timeout()?,
        };
        match deadline {
            Some(at) => self.deadline = Some((at, usual)),
            None => self.stream.set_read_timeout(usual)?,
        }
        Ok(())
    }

    /// Cuts the socket's read timeout to what is left before the deadline, or fails once
    /// it has passed.
    fn before_read(&mut self) -> io::Result<()> {
        let Some((at, usual)) = self.deadline else { return Ok(()) };
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        let wait = usual.map_or(left, |usual| usual.min(left));
        self.stream.set_read_timeout(Some(wait))
    }

    /// Whether a deadline is set and has passed.
    fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|(at, _)| Instant::now() >= at)
    }

    /// The static key the peer proved in the handshake.
    pub fn remote_key(&self) -> &PublicKey {
        &self.remote
    }

    /// The underlying socket (for timeouts and addresses).
    pub fn socket(&self) -> &TcpStream {
        &self.stream
    }

    /// The socket, to carry bytes this channel does not seal any more (issue 19: a relay
    /// splices two peers' own channels through it); `None` when bytes received or written
    /// wait here, which the switch would lose or misplace.
    pub fn into_socket(self) -> Option<TcpStream> {
        let idle = !self.has_buffered() && self.pending.is_empty() && self.sealed_len == 0;
        idle.then_some(self.stream)
    }

    /// Whether received bytes wait here, not yet read (so the socket may be silent while a
    /// message is already available).
    pub fn has_buffered(&self) -> bool {
        self.plain_end > self.plain_start || self.recv_end > self.recv_start
    }

    /// The next whole record in `recv` as `(offset, len)`, reading from the socket as
    /// needed; `None` at a clean end of stream between records.
    fn next_record(&mut self) -> io::Result<Option<(usize, usize)>> {
        loop {
            let avail = self.recv_end - self.recv_start;
            if avail >= 2 {
                let at = self.recv_start;
                let len = usize::from(u16::from_be_bytes([self.recv[at], self.recv[at + 1]]));
                if avail >= 2 + len {
                    self.recv_start += 2 + len;
                    return Ok(Some((at + 2, len)));
                }
            }
            // Room for the whole of the record begun (or a header): move what is left to
            // the front, and grow the buffer if that is not enough.
            let needed = match avail >= 2 {
                true => {
                    let at = self.recv_start;
                    2 + usize::from(u16::from_be_bytes([self.recv[at], self.recv[at + 1]]))
                }
                false => 2,
            };
            if self.recv_start == self.recv_end {
                (self.recv_start, self.recv_end) = (0, 0);
            } else if self.recv.len() - self.recv_start < needed
                || self.recv.len() - self.recv_end < FIRST_BUFFER / 2
            {
                self.recv.copy_within(self.recv_start..self.recv_end, 0);
                self.recv_end -= self.recv_start;
                self.recv_start = 0;
            }
            if self.recv.len() < needed {
                self.recv.resize(needed.next_power_of_two().min(MAX_BUFFER), 0);
            }
            self.before_read()?;
            let n = loop {
                match self.stream.read(&mut self.recv[self.recv_end..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // A socket timeout is `WouldBlock` on Linux: one cut short by the
                    // deadline is the deadline passing, as `set_deadline` promises.
                    Err(e) if is_wait_over(&e) && self.deadline_passed() => {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
                    }
                    other => break other?,
                }
            };
            if n == 0 {
                if self.recv_start == self.recv_end {
                    return Ok(None);
                }
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed mid-record"));
            }
            self.recv_end += n;
            if self.recv_end == self.recv.len() && self.recv.len() < MAX_BUFFER {
                // A read filled it: a bulk transfer, which larger reads serve better.
                self.recv.resize((2 * self.recv.len()).min(MAX_BUFFER), 0);
            }
        }
    }

    /// Seals `plaintext` (at most one record's worth) into `sealed`.
    fn seal(&mut self, plaintext: &[u8]) -> io::Result<()> {
        let record = 2 + plaintext.len() + TAG_LEN;
        if self.sealed_len + record > MAX_BUFFER {
            self.write_sealed()?;
        }
        let at = self.sealed_len;
        if self.sealed.len() < at + record {
            self.sealed.resize((at + record).next_power_of_two().min(MAX_BUFFER), 0);
        }
        let out = &mut self.sealed[at + 2..at + 2 + plaintext.len() + TAG_LEN];
        let n = seal_record(&mut self.transport, plaintext, out)?;
        self.sealed[at..at + 2].copy_from_slice(&(n as u16).to_be_bytes());
        self.sealed_len += 2 + n;
        Ok(())
    }

    fn seal_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let sealed = self.seal(&pending);
        self.pending = pending;
        self.pending.clear();
        sealed
    }

    fn write_sealed(&mut self) -> io::Result<()> {
        let len = std::mem::take(&mut self.sealed_len);
        self.stream.write_all(&self.sealed[..len])
    }
}

impl Read for SecureStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.plain_start < self.plain_end {
                let n = buf.len().min(self.plain_end - self.plain_start);
                buf[..n].copy_from_slice(&self.plain[self.plain_start..self.plain_start + n]);
                self.plain_start += n;
                return Ok(n);
            }
            let Some((at, len)) = self.next_record()? else { return Ok(0) };
            if len < TAG_LEN {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "record too short"));
            }
            let record = &self.recv[at..at + len];
            if buf.len() >= len {
                // Open straight into the caller's buffer: pieces skip a copy. (ring opens in
                // place, so the buffer must hold the tag too, or it allocates.)
                let n = open_record(&mut self.transport, record, buf)?;
                if n == 0 {
                    return Err(empty_record());
                }
                return Ok(n);
            } else {
                // Room for the tag as well: ring opens in place. Sized by the records seen,
                // not the largest possible: a connection of small messages (a tracker's
                // idle clients, by the thousand) keeps a few hundred bytes here, not 64 KiB.
                if self.plain.len() < len {
                    self.plain.resize(len.next_power_of_two().min(MAX_RECORD), 0);
                }
                let n =
                    open_record(&mut self.transport, &self.recv[at..at + len], &mut self.plain)?;
                if n == 0 {
                    return Err(empty_record());
                }
                (self.plain_start, self.plain_end) = (0, n);
            }
        }
    }
}

impl Write for SecureStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.pending.is_empty() && data.len() >= MAX_RECORD_PLAINTEXT {
            // Whole records straight from the caller's buffer.
            self.seal(&data[..MAX_RECORD_PLAINTEXT])?;
            return Ok(MAX_RECORD_PLAINTEXT);
        }
        let n = data.len().min(MAX_RECORD_PLAINTEXT - self.pending.len());
        self.pending.extend_from_slice(&data[..n]);
        if self.pending.len() == MAX_RECORD_PLAINTEXT {
            self.seal_pending()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.seal_pending()?;
        self.write_sealed()?;
        self.stream.flush()
    }
}

/// A record that carries nothing: a peer holding a reader without making progress
/// (issue 21). Nothing here seals one.
fn empty_record() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "empty record (protocol error)")
}

fn bad_record() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "record failed authentication")
}

#[cfg(not(feature = "bench-plaintext"))]
fn seal_record(t: &mut TransportState, plaintext: &[u8], out: &mut [u8]) -> io::Result<usize> {
    t.write_message(plaintext, out).map_err(|e| io::Error::other(e.to_string()))
}

#[cfg(not(feature = "bench-plaintext"))]
fn open_record(t: &mut TransportState, record: &[u8], out: &mut [u8]) -> io::Result<usize> {
    t.read_message(record, out).map_err(|_| bad_record())
}

// The bench-only baseline: the same records and copies, no cryptography.
#[cfg(feature = "bench-plaintext")]
fn seal_record(_: &mut TransportState, plaintext: &[u8], out: &mut [u8]) -> io::Result<usize> {
    out[..plaintext.len()].copy_from_slice(plaintext);
    out[plaintext.len()..plaintext.len() + TAG_LEN].fill(0);
    Ok(plaintext.len() + TAG_LEN)
}

#[cfg(feature = "bench-plaintext")]
fn open_record(_: &mut TransportState, record: &[u8], out: &mut [u8]) -> io::Result<usize> {
    let n = record.len().checked_sub(TAG_LEN).ok_or_else(bad_record)?;
    out[..n].copy_from_slice(&record[..n]);
    Ok(n)
}

#[cfg(test)]
mod tests;

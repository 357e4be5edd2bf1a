//! Raft messages between trackers, over the secure tracker channel.
//!
//! Each tracker keeps one outgoing Raft stream to every other voter, fed by a `raft-send-N`
//! thread from a bounded queue: a slow or unreachable tracker costs dropped messages (Raft
//! resends), never a blocked Raft thread. A message is raft-rs's protobuf encoding, cut into
//! `RAFT_PART_MAX` parts; the receiving end (`Reassembly`) bounds what it buffers and
//! decodes only what a tracker that proved its listed key sent, and only a message that
//! names that tracker as its sender.
//!
//! Connections to other trackers leave from this tracker's own listed IP address, so that
//! the tracker-to-tracker links are the pairs of listed addresses (which is also what lets a
//! test cut them with a firewall rule while clients still reach every tracker).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;
use protobuf::Message as _;
use raft::eraftpb::Message;

use common::connection::{Connection, Timeouts};
use common::frame::FrameError;
use common::message::{ClientMessage, TrackerMessage, PROTOCOL_VERSION};
use common::replica_message::{ReplicaReply, ReplicaRequest, RAFT_PART_MAX};
use common::tracker_info::TrackerInfoFile;
use common::Identity;

use crate::raft_node::Transport;

/// How long connecting to another tracker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(800);
/// Handshake, reads and writes on a tracker link.
const LINK_TIMEOUT: Duration = Duration::from_secs(2);
/// Messages queued for one tracker at most (beyond: dropped, Raft resends).
const QUEUE: usize = 1024;
/// After a failed connection, messages to that tracker are dropped for this long.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// The largest Raft message accepted (a snapshot of the whole state, in parts).
pub const MAX_RAFT_MESSAGE: usize = 512 * 1024 * 1024;

/// When each other tracker was last heard from (any Raft message), for the "how many
/// voters are up" of errors and `status`.
#[derive(Default)]
pub struct Contacts {
    heard: Mutex<HashMap<u64, Instant>>,
}

impl Contacts {
    pub fn heard(&self, id: u64) {
        self.heard.lock().insert(id, Instant::now());
    }

    /// How many of `others` were heard from within `within`.
    pub fn reachable(&self, others: &[u64], within: Duration) -> usize {
        let heard = self.heard.lock();
        others.iter().filter(|id| heard.get(id).is_some_and(|at| at.elapsed() < within)).count()
    }
}

/// A connection to tracker `to` as tracker `from`: from `from`'s listed IP address, to
/// `to`'s listed address (the first that answers, for a host name), which must prove `to`'s
/// listed key.
pub fn connect_tracker(
    trackers: &TrackerInfoFile,
    identity: &Identity,
    from: u32,
    to: u32,
    timeout: Duration,
) -> Result<Connection<ReplicaReply, ReplicaRequest>, FrameError> {
    let info = trackers.current();
    let addrs = info.resolve(to).map_err(protocol)?;
    let key = info.key(to).ok_or_else(|| {
        protocol(format!("no key for tracker {to} in {} yet", trackers.path().display()))
    })?;
    // Our own listed address, to leave from (a host name: not resolved for this).
    let own = info.addr(from).and_then(|a| a.ip());
    let mut stream = Err(std::io::Error::other(format!("tracker {to}: no address")));
    for addr in addrs {
        stream = connect_from(own, addr);
        if stream.is_ok() {
            break;
        }
    }
    let stream = stream?;
    let timeouts = Timeouts { handshake: timeout, read: timeout, write: timeout };
    let mut hello: Connection<TrackerMessage, ClientMessage> =
        Connection::connect(stream, identity, &key, timeouts)?;
    hello.send(&ClientMessage::ReplicaHello { version: PROTOCOL_VERSION, from })?;
    Ok(hello.retype())
}

/// A TCP connection to `to`, leaving from the IP address of `own` (this tracker's listed
/// address) unless that is a wildcard.
fn connect_from(own: Option<SocketAddr>, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if let Some(own) = own.filter(|a| !a.ip().is_unspecified() && a.is_ipv4() == to.is_ipv4()) {
        // Behind a proxy or a port forward the listed address may not be ours: then the
        // system picks the source address.
        if let Err(e) = socket.bind(&SocketAddr::new(own.ip(), 0).into()) {
            log::debug!("cannot leave from {}: {e}", own.ip());
        }
    }
    socket.connect_timeout(&to.into(), CONNECT_TIMEOUT)?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket.into())
}

fn protocol(detail: String) -> FrameError {
    FrameError::Io(std::io::Error::other(detail))
}

/// The outgoing Raft streams of one tracker.
pub struct PeerLinks {
    queues: HashMap<u64, Sender<Message>>,
}

/// This tracker's generation (see `ReplicaRequest::Raft`), shared by its links.
pub type Generation = Arc<std::sync::atomic::AtomicU64>;

impl PeerLinks {
    /// Starts a sender thread to each of `others`.
    pub fn start(
        id: u32,
        others: &[u64],
        trackers: Arc<TrackerInfoFile>,
        identity: Arc<Identity>,
        generation: Generation,
    ) -> std::io::Result<PeerLinks> {
        let mut queues = HashMap::new();
        for &to in others {
            let (queue, messages) = bounded(QUEUE);
            let sender = LinkSender {
                from: id,
                to,
                trackers: Arc::clone(&trackers),
                identity: Arc::clone(&identity),
                generation: Arc::clone(&generation),
            };
            std::thread::Builder::new()
                .name(format!("raft-send-{to}"))
                .spawn(move || sender.run(messages))?;
            queues.insert(to, queue);
        }
        Ok(PeerLinks { queues })
    }
}

impl Transport for PeerLinks {
    fn send(&self, msg: Message) {
        if let Some(queue) = self.queues.get(&msg.to) {
            // Full: the tracker is slow or gone; Raft resends what matters.
            let _ = queue.try_send(msg);
        }
    }
}

/// One `raft-send-N` thread: connects lazily, reconnects after a failure, and ends when the
/// Raft node drops its transport.
struct LinkSender {
    from: u32,
    to: u64,
    trackers: Arc<TrackerInfoFile>,
    identity: Arc<Identity>,
    generation: Generation,
}

impl LinkSender {
    fn run(self, messages: Receiver<Message>) {
        let mut link: Option<Connection<ReplicaReply, ReplicaRequest>> = None;
        let mut paused_until: Option<Instant> = None;
        let mut warned = false;
        for msg in messages.iter() {
            if paused_until.is_some_and(|until| Instant::now() < until) {
                continue;
            }
            if link.is_none() {
                let Ok(to) = u32::try_from(self.to) else { return };
                match connect_tracker(&self.trackers, &self.identity, self.from, to, LINK_TIMEOUT) {
                    Ok(conn) => {
                        log::info!("raft link to tracker {to} up");
                        warned = false;
                        link = Some(conn);
                    }
                    Err(e) => {
                        if !warned {
                            log::warn!("cannot reach tracker {to}: {e}");
                            warned = true;
                        }
                        paused_until = Some(Instant::now() + RECONNECT_PAUSE);
                        continue;
                    }
                }
            }
            let Some(conn) = link.as_mut() else { continue };
            let generation = self.generation.load(std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = send_message(conn, generation, &msg) {
                log::info!("raft link to tracker {} lost: {e}", self.to);
                link = None;
            }
        }
    }
}

/// Sends one Raft message in parts.
fn send_message(
    conn: &mut Connection<ReplicaReply, ReplicaRequest>,
    generation: u64,
    msg: &Message,
) -> Result<(), FrameError> {
    let bytes = msg.write_to_bytes().map_err(|e| protocol(format!("cannot encode: {e}")))?;
    let mut parts = bytes.chunks(RAFT_PART_MAX).peekable();
    if parts.peek().is_none() {
        return conn.send(&ReplicaRequest::Raft { generation, part: Vec::new(), last: true });
    }
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        conn.send(&ReplicaRequest::Raft { generation, part: part.to_vec(), last })?;
    }
    Ok(())
}

/// Why a received Raft message was refused (the connection is then closed).
#[derive(Debug, thiserror::Error)]
pub enum ReassemblyError {
    #[error("a raft message over {MAX_RAFT_MESSAGE} bytes")]
    TooLarge,
    #[error("an undecodable raft message: {0}")]
    Undecodable(String),
    #[error("a raft message from {claimed} to {to} on tracker {from}'s link to tracker {me}")]
    Misaddressed { claimed: u64, to: u64, from: u64, me: u64 },
}

/// Rebuilds the Raft messages arriving on one link from tracker `from` to tracker `me`.
pub struct Reassembly {
    from: u64,
    me: u64,
    buffer: Vec<u8>,
}

impl Reassembly {
    pub fn new(from: u64, me: u64) -> Reassembly {
        Reassembly { from, me, buffer: Vec::new() }
    }

    /// Takes one part; returns the message it completes, if any.
    pub fn part(&mut self, part: &[u8], last: bool) -> Result<Option<Message>, ReassemblyError> {
        if self.buffer.len() + part.len() > MAX_RAFT_MESSAGE {
            return Err(ReassemblyError::TooLarge);
        }
        self.buffer.extend_from_slice(part);
        if !last {
            return Ok(None);
        }
        let bytes = std::mem::take(&mut self.buffer);
        let msg = Message::parse_from_bytes(&bytes)
            .map_err(|e| ReassemblyError::Undecodable(e.to_string()))?;
        if msg.from != self.from || msg.to != self.me {
            return Err(ReassemblyError::Misaddressed {
                claimed: msg.from,
                to: msg.to,
                from: self.from,
                me: self.me,
            });
        }
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{Entry, MessageType};

    fn message(from: u64, to: u64, data: usize) -> Message {
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgAppend);
        msg.from = from;
        msg.to = to;
        msg.term = 7;
        let entry = Entry { index: 3, term: 7, data: vec![9; data].into(), ..Default::default() };
        msg.entries = vec![entry].into();
        msg
    }

    #[test]
    fn a_message_in_many_parts_is_rebuilt_and_must_name_its_link() {
        let msg = message(2, 1, 3 * RAFT_PART_MAX + 5);
        let bytes = msg.write_to_bytes().unwrap();
        let parts: Vec<&[u8]> = bytes.chunks(RAFT_PART_MAX).collect();
        assert_eq!(parts.len(), 4);
        let mut link = Reassembly::new(2, 1);
        for (i, part) in parts.iter().enumerate() {
            let done = link.part(part, i == parts.len() - 1).unwrap();
            assert_eq!(done.is_some(), i == parts.len() - 1);
            if let Some(got) = done {
                assert_eq!(got, msg);
            }
        }
        // Tracker 3's link cannot carry a message that claims to come from tracker 2.
        let mut other = Reassembly::new(3, 1);
        assert!(matches!(other.part(&bytes, true), Err(ReassemblyError::Misaddressed { .. })));
        // Nor one meant for another tracker.
        let mut wrong_to = Reassembly::new(2, 3);
        assert!(matches!(wrong_to.part(&bytes, true), Err(ReassemblyError::Misaddressed { .. })));
        assert!(matches!(
            Reassembly::new(2, 1).part(b"\xff\xff\xff", true),
            Err(ReassemblyError::Undecodable(_))
        ));
    }

    #[test]
    fn a_message_beyond_the_bound_is_refused_before_it_is_buffered() {
        let mut link = Reassembly::new(2, 1);
        let part = vec![0u8; RAFT_PART_MAX];
        let mut refused = false;
        for _ in 0..(MAX_RAFT_MESSAGE / RAFT_PART_MAX + 1) {
            if let Err(e) = link.part(&part, false) {
                assert!(matches!(e, ReassemblyError::TooLarge));
                refused = true;
                break;
            }
        }
        assert!(refused);
        assert!(link.buffer.len() <= MAX_RAFT_MESSAGE);
    }
}

//! The client's connection to the trackers: connects to the first reachable tracker of
//! `tracker_info.txt`, and when a connection breaks, reconnects (first reachable again) and
//! resends the same request with the same `RequestId`, so the tracker can recognise a retry.
//!
//! Every connection is a secure channel on which the tracker proved the key that
//! `tracker_info.txt` lists for it; a tracker without a listed key (yet) is treated as
//! unreachable, so no password, token or ticket ever goes to an unauthenticated tracker.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::connection::{Connection, Timeouts};
use common::frame::FrameError;
use common::message::{
    ClientMessage, Reply, Request, RequestId, SessionToken, TrackerError, TrackerMessage,
    PROTOCOL_VERSION,
};
use common::secure_channel::HandshakeError;
use common::tracker_info::TrackerInfoFile;
use common::Identity;

use crate::interrupt::Interrupt;
use crate::notice::Notices;
use failover::{AfterRound, Failover, Outcome, NO_MAJORITY_WAIT};

pub mod failover;
use crate::tracker_view::TrackerView;

/// How long to wait for a TCP connection to a tracker.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a tracker may take to answer a request: longer than a tracker itself waits
/// for a commit (8 s) or for a request it forwarded to the leader (10 s), so that a live
/// tracker always answers first; a paused or cut-off one costs this much, then the next
/// tracker is tried.
const REPLY_TIMEOUT: Duration = Duration::from_secs(12);
/// How long a `login` or `create_user` may take to be answered: the tracker derives a key
/// from the password (a deliberately slow hash) and may queue it behind others.
const KDF_REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the secure channel's handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may take to be written.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an end of a relay waits for the tracker's `RelayReady` (the tracker waits 10 s
/// for the other end).
const RELAY_JOIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a request got no answer from any tracker, or was refused.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The tracker answered with an error.
    #[error("{0}")]
    Tracker(#[from] TrackerError),
    /// No tracker could be reached (or every one broke the connection); the message says
    /// which trackers to start (`info` is the path of `tracker_info.txt`, which lists `n`).
    #[error(
        "no tracker reachable ({}); start the trackers listed in {info} (tracker {info} N, for N from 1 to {n})",
        list(.tried)
    )]
    NoTracker { tried: Vec<(String, String)>, info: String, n: usize },
    /// No tracker could be used, and some took the connection but not the secure handshake
    /// for the key their line of `tracker_info.txt` lists (a tracker closes a handshake it
    /// cannot decrypt): that line is what to fix, most likely (issue 20).
    #[error(
        "{} refused the secure handshake for the key on {} of {info}: most likely that key is not the tracker's (put on {} the key the tracker wrote into its own tracker_info.txt at its first start); a tracker too busy to take connections refuses them too{}",
        wrong_list(.wrong), lines(.wrong), if .wrong.len() == 1 { "that line" } else { "those lines" },
        other_trackers(.others)
    )]
    WrongKey { wrong: Vec<(usize, SocketAddr)>, others: Vec<(String, String)>, info: String },
    /// Ctrl-C came before an answer (the tracker may still carry the request out).
    #[error("interrupted before the tracker answered")]
    Interrupted,
    /// The tracker answered with bytes that are no message of this protocol (issue 23: a
    /// folder's tree with `..`, an absolute path, a control character, or more entries than
    /// a folder may have is refused as it is decoded). Nothing is done with that answer.
    #[error("the tracker at {addr} sent an answer this client cannot read ({reason}): it runs another version, or is not an honest tracker; nothing was done with it")]
    Unreadable { addr: SocketAddr, reason: String },
    /// A relay could not be joined (issue 19).
    #[error("{0}")]
    Relay(String),
}

fn wrong_list(wrong: &[(usize, SocketAddr)]) -> String {
    let addrs: Vec<String> =
        wrong.iter().map(|(_, addr)| format!("the tracker at {addr}")).collect();
    addrs.join(" and ")
}

fn lines(wrong: &[(usize, SocketAddr)]) -> String {
    let lines: Vec<String> = wrong.iter().map(|(line, _)| line.to_string()).collect();
    match lines.len() {
        1 => format!("line {}", lines[0]),
        _ => format!("lines {}", lines.join(", ")),
    }
}

fn other_trackers(others: &[(String, String)]) -> String {
    match others.is_empty() {
        true => String::new(),
        false => format!(" (the others: {})", list(others)),
    }
}

/// `where: why; ...`: each tracker address (or host name) tried, and what went wrong.
fn list(tried: &[(String, String)]) -> String {
    if tried.is_empty() {
        return "none tried".to_string();
    }
    tried.iter().map(|(addr, why)| format!("{addr}: {why}")).collect::<Vec<_>>().join("; ")
}

type TrackerConn = Connection<TrackerMessage, ClientMessage>;

/// A request/response channel to whichever tracker is reachable.
pub struct TrackerLink {
    trackers: Arc<TrackerInfoFile>,
    identity: Arc<Identity>,
    conn: Option<(SocketAddr, TrackerConn)>,
    /// The session announced on `conn` (`ClientMessage::Resume`): the tracker takes large
    /// frames only from a connection in a session.
    resumed: Option<SessionToken>,
    client_id: u64,
    next_seq: u64,
    /// Where this link reports what it finds at the trackers (the dashboard's panel).
    view: Option<Arc<TrackerView>>,
    /// The trackers (line, address) whose last handshake did not prove their listed key.
    wrong_keys: Vec<(usize, SocketAddr)>,
    /// Where a person's command (one with an `Interrupt`) that waits for a majority of
    /// trackers says so.
    notices: Option<Arc<Notices>>,
    /// The address the last tracker connected to saw this client come from (issue 19).
    observed: Option<SocketAddr>,
}

impl TrackerLink {
    /// A link that connects lazily, on the first request, as `identity`.
    pub fn new(trackers: Arc<TrackerInfoFile>, identity: Arc<Identity>) -> TrackerLink {
        let mut id = [0u8; 8];
        // Without randomness the id is merely less unique; the time still separates clients.
        if getrandom::fill(&mut id).is_err() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            id = (now.as_nanos() as u64 ^ u64::from(std::process::id())).to_le_bytes();
        }
        TrackerLink {
            trackers,
            identity,
            conn: None,
            resumed: None,
            client_id: u64::from_le_bytes(id),
            next_seq: 1,
            view: None,
            wrong_keys: Vec::new(),
            notices: None,
            observed: None,
        }
    }

    /// This link, reporting to `view` what it finds at each tracker.
    pub fn with_view(mut self, view: Arc<TrackerView>) -> TrackerLink {
        self.view = Some(view);
        self
    }

    /// This link, telling `notices` when a person's command waits for a majority.
    pub fn with_notices(mut self, notices: Arc<Notices>) -> TrackerLink {
        self.notices = Some(notices);
        self
    }

    /// The address the last tracker this link connected to saw it come from: behind a NAT,
    /// the router's public address.
    pub fn observed(&self) -> Option<SocketAddr> {
        self.observed
    }

    /// The tracker this link is connected to, if any.
    pub fn tracker_addr(&self) -> Option<SocketAddr> {
        self.conn.as_ref().map(|(addr, _)| *addr)
    }

    /// Sends `request` and waits for its reply, failing over between trackers: a broken
    /// connection moves to the first reachable tracker, and a tracker that cannot serve now
    /// (catching up, or its primary just died) is skipped, retrying the same request id for
    /// up to `FAILOVER_BUDGET`. With an `interrupt` (the REPL's calls), Ctrl-C gives up at
    /// once with `LinkError::Interrupted`, dropping the connection, whose next frame might
    /// be the abandoned reply.
    pub fn call(
        &mut self,
        session: Option<SessionToken>,
        request: Request,
        interrupt: Option<&Interrupt>,
    ) -> Result<Reply, LinkError> {
        let interrupted = || interrupt.is_some_and(Interrupt::is_fired);
        let id = RequestId { client: self.client_id, seq: self.next_seq };
        self.next_seq += 1;
        // Password hashing queues behind other logins on a busy tracker: give it longer.
        let reply_timeout = match request {
            Request::Login { .. } | Request::CreateUser { .. } => KDF_REPLY_TIMEOUT,
            // A long poll (issue 19): the tracker answers it within `AWAIT_CALLS_FOR`.
            Request::AwaitCalls => common::message::AWAIT_CALLS_FOR + REPLY_TIMEOUT,
            _ => REPLY_TIMEOUT,
        };
        let msg = ClientMessage::Request { id, session, request };
        let mut failover = Failover::new(Instant::now(), self.trackers.current().len());
        let mut tried = Vec::new();
        // The last tracker's refusal for want of a majority (cleared by any other answer),
        // and whether the user was told that the command waits for one.
        let mut no_majority: Option<TrackerError> = None;
        let mut told_waiting = false;
        loop {
            if interrupted() {
                return Err(LinkError::Interrupted);
            }
            if self.conn.is_none() {
                self.connect(&mut tried, failover.skipped(), interrupt);
            }
            let Some((addr, conn)) = self.conn.as_mut() else {
                if interrupted() {
                    return Err(LinkError::Interrupted);
                }
                // Every tracker of this round failed over, was busy or unreachable.
                let mut jitter = [0u8; 1];
                let _ = getrandom::fill(&mut jitter);
                match failover.round_over(Instant::now(), jitter[0]) {
                    AfterRound::Pause(pause) => std::thread::sleep(pause),
                    AfterRound::NoTracker => return Err(self.no_tracker(tried)),
                    AfterRound::Unavailable(_) if no_majority.is_some() => {
                        return Err(LinkError::Tracker(
                            no_majority
                                .unwrap_or(TrackerError::Unavailable("no majority".to_string())),
                        ));
                    }
                    AfterRound::Unavailable(reason) => {
                        return Err(LinkError::Tracker(TrackerError::Unavailable(match reason {
                            Some(reason) => format!("no tracker can serve now: {reason}"),
                            None => "no tracker can serve now".to_string(),
                        })))
                    }
                }
                continue;
            };
            let addr = *addr;
            if let Err(e) = conn.set_read_timeout(reply_timeout) {
                log::debug!("cannot set the reply timeout: {e}");
            }
            let resume = session.filter(|s| self.resumed != Some(*s));
            let watch = interrupt.map(|i| i.watch_socket(conn.socket()));
            let outcome = match resume {
                Some(session) => conn
                    .send(&ClientMessage::Resume { session })
                    .and_then(|()| exchange(conn, &msg, id)),
                None => exchange(conn, &msg, id),
            };
            drop(watch);
            if interrupted() {
                self.conn = None;
                return Err(LinkError::Interrupted);
            }
            if resume.is_some() && outcome.is_ok() {
                self.resumed = resume;
            }
            let failed = match outcome {
                Ok(Err(TrackerError::Busy(reason))) => Outcome::Busy(reason),
                Ok(Err(TrackerError::Unavailable(reason))) => {
                    no_majority = None;
                    Outcome::Unavailable(reason)
                }
                Ok(Err(e @ TrackerError::NoMajority { .. })) => {
                    if interrupt.is_some() && !told_waiting {
                        told_waiting = true;
                        self.tell_waiting(&e);
                    }
                    let reason = e.to_string();
                    no_majority = Some(e);
                    Outcome::NoMajority(reason)
                }
                Ok(result) => return result.map_err(LinkError::Tracker),
                Err(FrameError::Decode(e)) => {
                    // Not a failure to reach it: asking again, or another tracker of the
                    // same state, would get the same answer.
                    log::warn!("tracker={addr}: unreadable answer ({e})");
                    self.conn = None;
                    return Err(LinkError::Unreadable { addr, reason: e.to_string() });
                }
                Err(e) => {
                    log::warn!("tracker={addr}: request failed ({e}); reconnecting");
                    if let Some(view) = &self.view {
                        view.lost(addr, &e.to_string());
                    }
                    Outcome::Broken
                }
            };
            if !failover.failed(addr, failed.clone(), Instant::now()) {
                return Err(match failed {
                    Outcome::Busy(reason) => LinkError::Tracker(TrackerError::Busy(reason)),
                    Outcome::Unavailable(reason) => {
                        LinkError::Tracker(TrackerError::Unavailable(reason))
                    }
                    Outcome::NoMajority(reason) => LinkError::Tracker(
                        no_majority.take().unwrap_or(TrackerError::Unavailable(reason)),
                    ),
                    Outcome::Broken => self.no_tracker(tried),
                });
            }
            match &failed {
                Outcome::Busy(reason) => {
                    log::info!("tracker={addr}: busy ({reason}); trying again shortly")
                }
                Outcome::Unavailable(reason) | Outcome::NoMajority(reason) => {
                    log::info!("tracker={addr}: cannot serve now ({reason}); trying another");
                    if let Some(view) = &self.view {
                        view.cannot_serve(addr, reason);
                    }
                }
                Outcome::Broken => {}
            }
            self.conn = None;
        }
    }

    /// Tells the user that their command waits for a majority of trackers (`refusal`, a
    /// `NoMajority`), and for how long at most.
    fn tell_waiting(&self, refusal: &TrackerError) {
        let TrackerError::NoMajority { tracker, reached, voters } = refusal else { return };
        let line = format!(
            "waiting for a majority of trackers: tracker {tracker} reaches {reached} of \
             {voters} and {} are needed (giving up in {} s; Ctrl-C stops waiting)",
            voters / 2 + 1,
            NO_MAJORITY_WAIT.as_secs()
        );
        log::info!("{line}");
        if let Some(notices) = &self.notices {
            notices.send(line);
        }
    }

    fn no_tracker(&self, tried: Vec<(String, String)>) -> LinkError {
        let info = self.trackers.path().display().to_string();
        let wrong = self.wrong_keys.clone();
        if !wrong.is_empty() {
            let others: Vec<(String, String)> = tried
                .into_iter()
                .filter(|(a, _)| !wrong.iter().any(|(_, w)| w.to_string() == *a))
                .collect();
            return LinkError::WrongKey { wrong, others, info };
        }
        LinkError::NoTracker { tried, info, n: self.trackers.current().len() }
    }

    /// Connects to the first tracker that proves its listed key and answers the hello.
    fn connect(
        &mut self,
        tried: &mut Vec<(String, String)>,
        busy: &[SocketAddr],
        interrupt: Option<&Interrupt>,
    ) {
        let info = self.trackers.current();
        let ids: Vec<u32> = info.trackers().map(|(id, _)| id).collect();
        for tracker_id in ids {
            // A host name is resolved at each connect; every address it has is tried.
            let addrs = match info.resolve(tracker_id) {
                Ok(addrs) => addrs,
                Err(why) => {
                    log::info!("tracker {tracker_id} unusable: {why}");
                    let listed = info.addr(tracker_id).map(|a| a.to_string()).unwrap_or_default();
                    tried.retain(|(a, _)| *a != listed);
                    tried.push((listed, why));
                    continue;
                }
            };
            for addr in addrs.into_iter().filter(|a| !busy.contains(a)) {
                if interrupt.is_some_and(Interrupt::is_fired) {
                    return;
                }
                if self.try_tracker(&info, tracker_id, addr, tried, interrupt) {
                    return;
                }
            }
        }
    }

    /// Tries tracker `tracker_id` at `addr`; whether it is now this link's connection.
    fn try_tracker(
        &mut self,
        info: &common::tracker_info::TrackerInfo,
        tracker_id: u32,
        addr: SocketAddr,
        tried: &mut Vec<(String, String)>,
        interrupt: Option<&Interrupt>,
    ) -> bool {
        let line = info.line(tracker_id).unwrap_or(0);
        self.wrong_keys.retain(|(_, a)| *a != addr);
        let result = match info.key(tracker_id) {
            Some(key) => handshake(addr, &self.identity, &key, interrupt).map_err(|e| match e {
                FrameError::Handshake(e @ (HandshakeError::Crypto(_) | HandshakeError::Closed)) => {
                    self.wrong_keys.push((line, addr));
                    format!(
                        "did not prove the key on line {line} of {} ({e})",
                        self.trackers.path().display()
                    )
                }
                other => other.to_string(),
            }),
            None => Err(format!(
                "no key on line {line} of {} yet (a tracker writes it at its first start)",
                self.trackers.path().display()
            )),
        };
        match result {
            Ok((conn, observed)) => {
                self.observed = Some(observed);
                log::info!("connected to tracker {tracker_id} at {addr}");
                if let Some(view) = &self.view {
                    view.connected(tracker_id, addr);
                }
                self.conn = Some((addr, conn));
                self.resumed = None;
                true
            }
            Err(why) => {
                log::info!("tracker {tracker_id} at {addr} unusable: {why}");
                if let Some(view) = &self.view {
                    view.unusable(tracker_id, addr, &why);
                }
                tried.retain(|(a, _)| *a != addr.to_string());
                tried.push((addr.to_string(), why));
                false
            }
        }
    }
}

fn handshake(
    addr: SocketAddr,
    identity: &Identity,
    key: &common::PublicKey,
    interrupt: Option<&Interrupt>,
) -> Result<(TrackerConn, SocketAddr), FrameError> {
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    let _watch = interrupt.map(|i| i.watch_socket(&stream));
    let timeouts =
        Timeouts { handshake: HANDSHAKE_TIMEOUT, read: REPLY_TIMEOUT, write: WRITE_TIMEOUT };
    let mut conn = Connection::connect(stream, identity, key, timeouts)?;
    conn.send(&ClientMessage::Hello { version: PROTOCOL_VERSION })?;
    match conn.recv()? {
        Some(TrackerMessage::Welcome { observed, .. }) => Ok((conn, observed)),
        Some(TrackerMessage::Refused { version }) => Err(protocol(format!(
            "tracker speaks protocol version {version}, this client {PROTOCOL_VERSION}: \
             run clients and trackers of the same release (upgrade the older side)"
        ))),
        Some(other) => Err(protocol(format!("unexpected handshake reply {other:?}"))),
        None => Err(FrameError::Truncated),
    }
}

/// Joins relay `nonce` at tracker `tracker_id` (issue 19): a secure channel to it proving
/// this peer's key, `ClientMessage::Relay` in `session`, then its `RelayReady` (the seeder's
/// end, `seeder_side`, acknowledges it with `RelayGo`). Returns the socket, over which the
/// two peers then run their own secure channel through the relay. `on_socket` gets a clone
/// of the socket as soon as it connects (a caller shuts it down to give up waiting).
pub fn join_relay(
    trackers: &TrackerInfoFile,
    identity: &Identity,
    tracker_id: u32,
    (session, nonce): (SessionToken, u64),
    (seeder_side, on_socket): (bool, &dyn Fn(TcpStream)),
) -> Result<TcpStream, FrameError> {
    let info = trackers.current();
    let unusable = |why: String| FrameError::Io(std::io::Error::other(why));
    let key =
        info.key(tracker_id).ok_or_else(|| unusable(format!("no key for tracker {tracker_id}")))?;
    let addrs = info.resolve(tracker_id).map_err(unusable)?;
    let mut last = unusable(format!("tracker {tracker_id} has no address"));
    for addr in addrs {
        let stream = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => stream,
            Err(e) => {
                last = e.into();
                continue;
            }
        };
        on_socket(stream.try_clone()?);
        let timeouts = Timeouts {
            handshake: HANDSHAKE_TIMEOUT,
            read: RELAY_JOIN_TIMEOUT,
            write: WRITE_TIMEOUT,
        };
        let mut conn: TrackerConn = Connection::connect(stream, identity, &key, timeouts)?;
        conn.send(&ClientMessage::Relay { version: PROTOCOL_VERSION, session, nonce })?;
        match conn.recv()? {
            Some(TrackerMessage::RelayReady) => {}
            Some(TrackerMessage::RelayRefused { reason }) => {
                return Err(unusable(format!("relay refused: {reason}")))
            }
            Some(other) => return Err(protocol(format!("unexpected relay reply {other:?}"))),
            None => return Err(FrameError::Truncated),
        }
        if seeder_side {
            conn.send(&ClientMessage::RelayGo)?;
        }
        return conn
            .into_socket()
            .ok_or_else(|| protocol("the tracker sent more after RelayReady".to_string()));
    }
    Err(last)
}

fn exchange(
    conn: &mut TrackerConn,
    msg: &ClientMessage,
    id: RequestId,
) -> Result<Result<Reply, TrackerError>, FrameError> {
    conn.send(msg)?;
    match conn.recv()? {
        Some(TrackerMessage::Response { id: got, result }) if got == id => Ok(result),
        Some(other) => Err(protocol(format!("unexpected reply {other:?}"))),
        None => Err(FrameError::Truncated),
    }
}

fn protocol(detail: String) -> FrameError {
    FrameError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, detail))
}

//! Who gets a connection slot, and when (issue 21: an anonymous flood cannot exhaust it).
//!
//! A connection first holds a *handshake* slot: at most `MAX_HANDSHAKES_PER_IP` per source
//! address (IPv6 by /64) and `MAX_HANDSHAKES` in all, shared fairly (`pool`): a newcomer
//! takes the place of a handshake of its own address that is still silent (no byte sent
//! yet) or stale, or of the heaviest address's oldest, or of a silent one, when the pool is
//! full. Silent connections therefore hold nothing against a real client, which speaks at
//! once. Every address is treated alike, local ones included:
//! trackers are recognised by the key they prove, never by where they connect from.
//!
//! Once the handshake has proven a key, a listed tracker's key takes one of the
//! `TRACKER_SLOTS` kept for trackers (a tracker whose client slots are all taken still
//! answers its peers). Any other key is a client, at most `MAX_CONNECTIONS_PER_KEY` at once:
//! - a key that holds a session in the replicated state may take any client slot, and when
//!   they are all taken, the place of an anonymous connection (a user coming back after a
//!   failover or a blip always gets in, unless sessions hold every slot);
//! - any other key takes an *anonymous* slot: at most `MAX_ANONYMOUS_PER_IP` per address,
//!   and all but the `max_clients / SESSION_RESERVE_DIVISOR` slots kept for sessions,
//!   shared fairly like handshakes; it must log in or resume a session within
//!   `LOGIN_DEADLINE` (the connection is closed otherwise).
//!
//! A connection in a session counts against that session: at most `MAX_LARGE_PER_SESSION`
//! of a session's connections take large frames.
//!
//! Every slot is released when its guard is dropped; a connection whose place was taken is
//! shut down (its thread sees its socket close and ends).
//!
//! Before all that, in the accept loop, a source address that *wasted* too many handshakes
//! lately (refused after them, failed, or closed without a session or an account: `waste`)
//! has its connections closed at once, before a thread or any cryptography is spent on
//! them: `WASTED_HANDSHAKES_BURST` at once, then `WASTED_HANDSHAKES_PER_SECOND`.

mod pool;
mod waste;

use std::collections::HashMap;
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use common::message::SessionId;
use common::PublicKey;

use pool::{Full, Pool};
use waste::Waste;

/// Connections kept for the other trackers beyond the client slots: for each of up to
/// four others, its Raft stream and its forwarding connections
/// (`cluster::MAX_FORWARD_CONNECTIONS`).
pub const TRACKER_SLOTS: usize = 64;
/// Handshakes in progress from one address (IPv6: one /64).
pub const MAX_HANDSHAKES_PER_IP: usize = 8;
/// Handshakes in progress in all.
pub const MAX_HANDSHAKES: usize = 64;
/// A handshake this old may lose its slot to a newcomer (a Noise `IK` exchange takes a
/// round trip; one that has not finished by now is stalled).
pub const STALE_HANDSHAKE: Duration = Duration::from_secs(1);
/// Client connections not (yet) in a session from one address (IPv6: one /64).
pub const MAX_ANONYMOUS_PER_IP: usize = 64;
/// An anonymous connection this old may lose its slot to a newcomer.
pub const STALE_ANONYMOUS: Duration = Duration::from_secs(3);
/// How long a client connection may go without a session (a login or a `Resume`).
pub const LOGIN_DEADLINE: Duration = Duration::from_secs(10);
/// One slot in this many of `--max-connections` is kept for keys with a session.
pub const SESSION_RESERVE_DIVISOR: usize = 8;
/// Handshakes one address (IPv6: one /64) may waste at once (`waste`): more than a
/// capacity run's clients behind one address (80 sessions each) waste in a reconnect storm.
pub const WASTED_HANDSHAKES_BURST: u32 = 128;
/// Wasted handshakes an address is allowed per second beyond its burst.
pub const WASTED_HANDSHAKES_PER_SECOND: u32 = 16;
/// Addresses whose wasted handshakes are tracked at once.
pub const MAX_WASTE_TRACKED: usize = 65_536;
/// Connections of one client key at once: a client holds at most 4 call links, 2 for
/// calls about paths to peers and a long poll for calls (issue 19) at a tracker, and a
/// moment more while it opens a relay (which, once joined, counts against the relay's own
/// limits, `Slot::relayed`).
pub const MAX_CONNECTIONS_PER_KEY: usize = 12;
/// Connections of one session that take large frames (uploads of file metadata).
pub const MAX_LARGE_PER_SESSION: usize = 4;

/// File descriptors a live connection holds (its socket), and one more while its
/// handshake runs (the secure channel takes a handle of its own).
pub const FDS_PER_CONNECTION: u64 = 1;
/// File descriptors kept for everything else: the listener, the database and its journal,
/// links to the other trackers, logs.
pub const RESERVED_FDS: u64 = 128;

/// Raises this process's open-files limit to its hard limit (connections are files), and
/// returns the limit now in force, if known.
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return limit.maximum.or(Some(u64::MAX)),
            Err(e) => log::warn!("cannot raise the open-files limit to {:?}: {e}", limit.maximum),
        }
    }
    limit.current.or(Some(u64::MAX))
}

/// The client connections a process with `open_files` file descriptors can hold beside the
/// handshakes and the trackers' slots: `configured`, or fewer if the descriptors would run
/// out first.
pub fn connection_cap(configured: usize, open_files: Option<u64>) -> usize {
    let Some(open_files) = open_files else { return configured };
    let in_handshakes =
        (MAX_HANDSHAKES as u64 + MAX_HANDSHAKES_PER_IP as u64) * (FDS_PER_CONNECTION + 1);
    let for_trackers = TRACKER_SLOTS as u64 * FDS_PER_CONNECTION;
    let spare = open_files.saturating_sub(RESERVED_FDS + in_handshakes + for_trackers);
    let fits = usize::try_from(spare / FDS_PER_CONNECTION).unwrap_or(usize::MAX);
    configured.min(fits)
}

/// The address a connection counts under (IPv6 by its /64), as every per-address limit
/// of trackers and seeders counts it.
pub use common::peer_addr::source;

/// The limits of an `Admission`.
#[derive(Debug, Clone)]
pub struct AdmissionLimits {
    /// Client connections (after the handshake).
    pub max_clients: usize,
}

/// What a key proved in its handshake entitles it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proven {
    /// A key `tracker_info.txt` lists.
    Tracker,
    /// A client key that holds a session in the replicated state.
    ClientWithSession,
    /// Any other key.
    Client,
}

#[derive(Debug)]
struct Counts {
    handshakes: Pool,
    anonymous: Pool,
    /// Client connections that are not anonymous (a key with a session, or in one).
    in_sessions: usize,
    trackers: usize,
    per_key: HashMap<PublicKey, usize>,
    /// Per session: its connections, and those taking large frames.
    per_session: HashMap<SessionId, (usize, usize)>,
    /// The sockets of handshakes and anonymous connections, to shut one down when a
    /// newcomer takes its place.
    sockets: HashMap<u64, TcpStream>,
    /// Wasted handshakes per source address.
    waste: Waste,
    next_id: u64,
}

/// The slot bookkeeping of one server, shared by the accept loop and the connections.
#[derive(Debug, Clone)]
pub struct Admission {
    limits: Arc<AdmissionLimits>,
    counts: Arc<Mutex<Counts>>,
    /// Signalled when a handshake slot frees.
    freed: Arc<Condvar>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Too many handshakes in progress from this address.
    PerIp,
    /// Too many handshakes in progress in all.
    Handshakes,
    /// Too many anonymous connections from this address.
    AnonymousPerIp,
    /// Every client slot is taken.
    Clients,
    /// Every tracker slot is taken.
    Trackers,
    /// Too many connections of this key.
    PerKey,
    /// A newcomer took this connection's place.
    Evicted,
    /// This address wasted too many handshakes lately (refused before the handshake).
    Wasteful,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::PerIp => "too many handshakes in progress from this address",
            Refused::Handshakes => "too many handshakes in progress",
            Refused::AnonymousPerIp => "too many connections without a session from this address",
            Refused::Clients => "every client slot is taken",
            Refused::Trackers => "every tracker slot is taken",
            Refused::PerKey => "too many connections of this key",
            Refused::Evicted => "its place went to a newer connection",
            Refused::Wasteful => "too many handshakes from this address came to nothing lately",
        })
    }
}

/// A handshake slot, released on drop.
#[derive(Debug)]
pub struct HandshakeSlot {
    admission: Admission,
    id: u64,
    source: IpAddr,
    /// Whether the connection sent a byte (a silent one wastes no cryptography).
    heard: bool,
    /// Traded for a client or tracker slot (which now owns the id's records).
    traded: bool,
}

/// What a connection's slot counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tracker,
    Anonymous,
    /// A client key with a session, in `session` once it logged in or resumed (and taking
    /// large frames if `large`).
    InSession {
        session: Option<SessionId>,
        large: bool,
    },
}

/// A client or tracker slot, released on drop.
#[derive(Debug)]
pub struct Slot {
    admission: Admission,
    id: u64,
    key: PublicKey,
    source: IpAddr,
    kind: Kind,
    /// Whether it counts against its key's `MAX_CONNECTIONS_PER_KEY`.
    keyed: bool,
    /// An anonymous connection that did something (created an account): not wasted.
    used: bool,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Admission {
        let anonymous = limits.max_clients - limits.max_clients / SESSION_RESERVE_DIVISOR;
        let counts = Counts {
            handshakes: Pool::new(MAX_HANDSHAKES, MAX_HANDSHAKES_PER_IP, STALE_HANDSHAKE)
                .evicting_silent(),
            anonymous: Pool::new(anonymous, MAX_ANONYMOUS_PER_IP, STALE_ANONYMOUS),
            in_sessions: 0,
            trackers: 0,
            per_key: HashMap::new(),
            per_session: HashMap::new(),
            sockets: HashMap::new(),
            waste: Waste::new(
                WASTED_HANDSHAKES_BURST,
                WASTED_HANDSHAKES_PER_SECOND,
                MAX_WASTE_TRACKED,
            ),
            next_id: 0,
        };
        Admission {
            limits: Arc::new(limits),
            counts: Arc::new(Mutex::new(counts)),
            freed: Arc::default(),
        }
    }

    /// A handshake slot for a connection from `ip` (whose socket `socket` is shut down if
    /// a newcomer takes its place), or why there is none (`Wasteful` first: the address
    /// spent its budget of wasted handshakes).
    pub fn start_handshake(
        &self,
        ip: IpAddr,
        socket: Option<TcpStream>,
    ) -> Result<HandshakeSlot, Refused> {
        let source = source(ip);
        let now = Instant::now();
        let evicted = {
            let mut counts = self.counts.lock();
            if !counts.waste.allows(source, now) {
                return Err(Refused::Wasteful);
            }
            counts.next_id += 1;
            let id = counts.next_id;
            let evicted = match counts.handshakes.admit(id, source, now) {
                Ok(evicted) => evicted.and_then(|old| counts.sockets.remove(&old)),
                Err(Full::Source) => return Err(Refused::PerIp),
                Err(Full::Pool) => return Err(Refused::Handshakes),
            };
            if let Some(socket) = socket {
                counts.sockets.insert(id, socket);
            }
            (id, evicted)
        };
        let (id, evicted) = evicted;
        shut(evicted, "silent or stalled handshake");
        Ok(HandshakeSlot { admission: self.clone(), id, source, heard: false, traded: false })
    }

    /// Waits (up to `patience`) until a handshake from an address that holds none could
    /// start: while none could, new connections are better left in the kernel's accept
    /// queue (a storm of reconnecting clients waits there a moment) than accepted and
    /// closed.
    pub fn wait_for_handshake_room(&self, patience: Duration) {
        let deadline = Instant::now() + patience;
        let mut counts = self.counts.lock();
        while !counts.handshakes.has_room_for_a_stranger(Instant::now()) {
            let until = counts.handshakes.next_stale().map_or(deadline, |t| t.min(deadline));
            if self.freed.wait_until(&mut counts, until).timed_out() && Instant::now() >= deadline {
                return;
            }
        }
    }

    /// Trades a finished handshake, whose peer proved `key`, for a tracker slot, or a
    /// client slot (anonymous, or kept for sessions). A client refused here wasted its
    /// handshake.
    pub fn admit(
        &self,
        handshake: HandshakeSlot,
        key: PublicKey,
        proven: Proven,
    ) -> Result<Slot, Refused> {
        let source = handshake.source;
        let admitted = self.admit_proven(handshake, key, proven);
        if matches!(admitted, Err(why) if why != Refused::Trackers) {
            self.counts.lock().waste.spend(source, Instant::now());
        }
        admitted
    }

    fn admit_proven(
        &self,
        mut handshake: HandshakeSlot,
        key: PublicKey,
        proven: Proven,
    ) -> Result<Slot, Refused> {
        let (id, source) = (handshake.id, handshake.source);
        handshake.traded = true;
        let mut counts = self.counts.lock();
        let socket = counts.sockets.remove(&id);
        if !counts.handshakes.remove(id) {
            // A newcomer took its place (its socket was shut down).
            return Err(Refused::Evicted);
        }
        self.freed.notify_one();
        let kind = match proven {
            Proven::Tracker => {
                if counts.trackers >= TRACKER_SLOTS {
                    return Err(Refused::Trackers);
                }
                counts.trackers += 1;
                Kind::Tracker
            }
            Proven::ClientWithSession | Proven::Client => {
                if counts.per_key.get(&key).copied().unwrap_or(0) >= MAX_CONNECTIONS_PER_KEY {
                    return Err(Refused::PerKey);
                }
                let max = self.limits.max_clients;
                let kind = if proven == Proven::ClientWithSession {
                    let mut evicted = None;
                    if counts.in_sessions + counts.anonymous.len() >= max {
                        // Every slot is taken: an anonymous connection makes room.
                        let Some(old) = counts.anonymous.oldest_of_heaviest() else {
                            return Err(Refused::Clients);
                        };
                        counts.anonymous.remove(old);
                        evicted = counts.sockets.remove(&old);
                    }
                    counts.in_sessions += 1;
                    drop(counts);
                    shut(evicted, "anonymous connection, for a session's");
                    counts = self.counts.lock();
                    Kind::InSession { session: None, large: false }
                } else {
                    let reserve = max / SESSION_RESERVE_DIVISOR;
                    let room = (max - reserve).min(max.saturating_sub(counts.in_sessions));
                    counts.anonymous.set_cap(room);
                    let evicted = match counts.anonymous.admit(id, source, Instant::now()) {
                        Ok(evicted) => evicted.and_then(|old| counts.sockets.remove(&old)),
                        Err(Full::Source) => return Err(Refused::AnonymousPerIp),
                        Err(Full::Pool) => return Err(Refused::Clients),
                    };
                    if let Some(socket) = socket {
                        counts.sockets.insert(id, socket);
                    }
                    drop(counts);
                    shut(evicted, "anonymous connection");
                    counts = self.counts.lock();
                    Kind::Anonymous
                };
                *counts.per_key.entry(key).or_default() += 1;
                kind
            }
        };
        let keyed = kind != Kind::Tracker;
        Ok(Slot { admission: self.clone(), id, key, source, kind, keyed, used: false })
    }

    /// The most connections this admission can hold at once.
    pub fn max_live(&self) -> usize {
        self.limits.max_clients + TRACKER_SLOTS + 2 * MAX_HANDSHAKES
    }
}

/// Shuts down the socket of a connection whose place a newcomer took.
fn shut(socket: Option<TcpStream>, what: &str) {
    if let Some(socket) = socket {
        if let Ok(peer) = socket.peer_addr() {
            log::info!("peer={peer}: closing a {what} for a newcomer");
        }
        let _ = socket.shutdown(std::net::Shutdown::Both);
    }
}

impl Slot {
    /// Whether this connection is in a session (or a tracker's): no login deadline.
    pub fn in_session(&self) -> bool {
        match self.kind {
            Kind::Tracker => true,
            Kind::Anonymous => false,
            Kind::InSession { session, .. } => session.is_some(),
        }
    }

    /// This anonymous connection did something (an account was created on it): its
    /// handshake is not counted as wasted when it closes without a session.
    pub fn used(&mut self) {
        self.used = true;
    }

    /// This connection is now in `session` (a login on it, or a `Resume`): it leaves the
    /// anonymous slots, and counts against the session. Returns whether it may take large
    /// frames (at most `MAX_LARGE_PER_SESSION` of a session's connections), or `Evicted`
    /// if its place went to a newcomer before.
    pub fn enter_session(&mut self, session: SessionId) -> Result<bool, Refused> {
        let mut counts = self.admission.counts.lock();
        match self.kind {
            Kind::Tracker => return Ok(true),
            Kind::Anonymous => {
                if !counts.anonymous.remove(self.id) {
                    return Err(Refused::Evicted);
                }
                counts.sockets.remove(&self.id);
                counts.in_sessions += 1;
            }
            Kind::InSession { session: Some(old), large } if old != session => {
                leave_session(&mut counts, old, large);
            }
            Kind::InSession { session: Some(_), large } => return Ok(large),
            Kind::InSession { session: None, .. } => {}
        }
        let (n, n_large) = counts.per_session.entry(session).or_default();
        *n += 1;
        let large = *n_large < MAX_LARGE_PER_SESSION;
        if large {
            *n_large += 1;
        }
        self.kind = Kind::InSession { session: Some(session), large };
        Ok(large)
    }
}

impl Slot {
    /// This connection is now an end of a relay (issue 19): it stops counting against its
    /// key's `MAX_CONNECTIONS_PER_KEY`, as the relay's own limits (relayed connections in
    /// all and per user) bound those; it keeps its client slot.
    pub fn relayed(&mut self) {
        if std::mem::take(&mut self.keyed) {
            unkey(&mut self.admission.counts.lock(), &self.key);
        }
    }
}

fn leave_session(counts: &mut Counts, session: SessionId, large: bool) {
    if let Some((n, n_large)) = counts.per_session.get_mut(&session) {
        *n -= 1;
        if large {
            *n_large -= 1;
        }
        if *n == 0 {
            counts.per_session.remove(&session);
        }
    }
}

impl HandshakeSlot {
    /// The connection sent its first bytes: no newcomer takes its place before it is stale.
    pub fn heard(&mut self) {
        self.heard = true;
        self.admission.counts.lock().handshakes.heard(self.id);
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        if self.traded {
            return;
        }
        let mut counts = self.admission.counts.lock();
        if self.heard {
            // Its handshake failed (or its place went to a newcomer).
            counts.waste.spend(self.source, Instant::now());
        }
        counts.handshakes.remove(self.id);
        counts.sockets.remove(&self.id);
        self.admission.freed.notify_one();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.admission.counts.lock();
        match self.kind {
            Kind::Tracker => {
                counts.trackers -= 1;
                return;
            }
            Kind::Anonymous => {
                counts.anonymous.remove(self.id);
                counts.sockets.remove(&self.id);
                if !self.used {
                    // No session, no account: its handshake came to nothing.
                    counts.waste.spend(self.source, Instant::now());
                }
            }
            Kind::InSession { session, large } => {
                counts.in_sessions -= 1;
                if let Some(session) = session {
                    leave_session(&mut counts, session, large);
                }
            }
        }
        if self.keyed {
            unkey(&mut counts, &self.key);
        }
    }
}

/// One connection of `key` fewer.
fn unkey(counts: &mut Counts, key: &PublicKey) {
    if let Some(n) = counts.per_key.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.per_key.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn key(n: u8) -> PublicKey {
        PublicKey([n; 32])
    }

    fn admission(max_clients: usize) -> Admission {
        Admission::new(AdmissionLimits { max_clients })
    }

    fn client(a: &Admission, from: u8, k: u8, proven: Proven) -> Result<Slot, Refused> {
        a.admit(a.start_handshake(ip(from), None).unwrap(), key(k), proven)
    }

    /// A handshake slot from `from` whose connection already spoke.
    fn speaking(a: &Admission, from: IpAddr) -> Result<HandshakeSlot, Refused> {
        let mut slot = a.start_handshake(from, None)?;
        slot.heard();
        Ok(slot)
    }

    #[test]
    fn handshakes_are_capped_per_address_and_shared_fairly_by_every_address() {
        let a = admission(10);
        let mine: Vec<_> =
            (0..MAX_HANDSHAKES_PER_IP).map(|_| speaking(&a, ip(2)).unwrap()).collect();
        assert_eq!(a.start_handshake(ip(2), None).unwrap_err(), Refused::PerIp);
        let mut others = Vec::new();
        for i in 0..MAX_HANDSHAKES - MAX_HANDSHAKES_PER_IP {
            let from = IpAddr::from([10, 1, (i / 200) as u8, (i % 200) as u8]);
            others.push(speaking(&a, from).unwrap());
        }
        // Full, and fairly shared but for ip 2, which holds 8: a newcomer takes one of its.
        let newcomer = a.start_handshake(ip(3), None).unwrap();
        let mut mine = mine;
        let oldest = mine.remove(0);
        assert_eq!(a.admit(oldest, key(1), Proven::Client).unwrap_err(), Refused::Evicted);
        drop((newcomer, others));
        assert_eq!(a.counts.lock().handshakes.len(), MAX_HANDSHAKES_PER_IP - 1);
    }

    /// Issue 21: silent connections renewed within every second kept an address's (here,
    /// 127.0.0.1's) handshakes out; now each newcomer takes a silent one's place.
    #[test]
    fn silent_handshakes_give_their_place_to_newcomers() {
        let a = admission(10);
        let local = IpAddr::from([127, 0, 0, 1]);
        let mut silent: Vec<_> =
            (0..MAX_HANDSHAKES_PER_IP).map(|_| a.start_handshake(local, None).unwrap()).collect();
        let newcomer = speaking(&a, local).unwrap();
        let oldest = silent.remove(0);
        assert_eq!(a.admit(oldest, key(1), Proven::Client).unwrap_err(), Refused::Evicted);
        assert!(a.admit(newcomer, key(2), Proven::Client).is_ok());
        drop(silent);
    }

    #[test]
    fn an_ipv6_address_counts_by_its_64() {
        let a = admission(10);
        let held: Vec<_> = (0..MAX_HANDSHAKES_PER_IP)
            .map(|n| speaking(&a, format!("2001:db8::{n}").parse().unwrap()).unwrap())
            .collect();
        assert_eq!(
            a.start_handshake("2001:db8::ffff".parse().unwrap(), None).unwrap_err(),
            Refused::PerIp
        );
        assert!(a.start_handshake("2001:db8:0:1::1".parse().unwrap(), None).is_ok());
        drop(held);
    }

    #[test]
    fn the_accept_loop_waits_for_a_free_handshake_slot_but_not_for_ever() {
        let a = admission(10);
        let mut held: Vec<_> = (0..MAX_HANDSHAKES)
            .map(|i| speaking(&a, IpAddr::from([10, 2, (i / 200) as u8, (i % 200) as u8])))
            .collect::<Result<_, _>>()
            .unwrap();
        let started = Instant::now();
        a.wait_for_handshake_room(Duration::from_millis(100));
        assert!(started.elapsed() >= Duration::from_millis(100), "gave up early");
        let one = held.pop().unwrap();
        let freer = std::thread::spawn(move || drop(one));
        a.wait_for_handshake_room(Duration::from_secs(60));
        freer.join().unwrap();
        assert!(a.start_handshake(ip(3), None).is_ok());
    }

    #[test]
    fn anonymous_connections_leave_room_for_sessions_and_make_room_for_them() {
        let a = admission(8); // 7 anonymous slots, 1 kept for sessions
        let anonymous: Vec<_> = (0..7).map(|n| client(&a, n, n, Proven::Client).unwrap()).collect();
        assert_eq!(client(&a, 7, 7, Proven::Client).unwrap_err(), Refused::Clients);
        // The kept slot, then the place of an anonymous connection.
        let s1 = client(&a, 7, 20, Proven::ClientWithSession).unwrap();
        let s2 = client(&a, 7, 21, Proven::ClientWithSession).unwrap();
        assert_eq!(a.counts.lock().anonymous.len(), 6);
        assert_eq!(a.counts.lock().in_sessions, 2);
        drop((anonymous, s1, s2));
        let counts = a.counts.lock();
        assert_eq!((counts.anonymous.len(), counts.in_sessions), (0, 0));
        assert!(counts.per_key.is_empty() && counts.sockets.is_empty());
    }

    #[test]
    fn one_address_gets_its_share_of_anonymous_slots_and_one_key_a_few_connections() {
        let a = admission(1024);
        let mine: Vec<_> = (0..MAX_ANONYMOUS_PER_IP)
            .map(|n| client(&a, 2, n as u8, Proven::Client).unwrap())
            .collect();
        assert_eq!(client(&a, 2, 200, Proven::Client).unwrap_err(), Refused::AnonymousPerIp);
        assert!(client(&a, 3, 200, Proven::Client).is_ok(), "another address gets in");
        drop(mine);
        let same_key: Vec<_> = (0..MAX_CONNECTIONS_PER_KEY)
            .map(|n| client(&a, n as u8, 9, Proven::ClientWithSession).unwrap())
            .collect();
        assert_eq!(client(&a, 99, 9, Proven::ClientWithSession).unwrap_err(), Refused::PerKey);
        drop(same_key);
    }

    #[test]
    fn relay_ends_leave_their_keys_count_and_only_once() {
        let a = admission(1024);
        let mut same_key: Vec<_> = (0..MAX_CONNECTIONS_PER_KEY)
            .map(|n| client(&a, n as u8, 9, Proven::ClientWithSession).unwrap())
            .collect();
        assert_eq!(client(&a, 99, 9, Proven::ClientWithSession).unwrap_err(), Refused::PerKey);
        // Two become relay ends: two more connections of the key get in.
        same_key[0].relayed();
        same_key[1].relayed();
        same_key[1].relayed();
        let more: Vec<_> =
            (0..2).map(|_| client(&a, 99, 9, Proven::ClientWithSession).unwrap()).collect();
        assert_eq!(client(&a, 99, 9, Proven::ClientWithSession).unwrap_err(), Refused::PerKey);
        // A relay end ending frees no slot of the key's (it held none).
        drop(same_key.remove(0));
        assert_eq!(client(&a, 99, 9, Proven::ClientWithSession).unwrap_err(), Refused::PerKey);
        drop((same_key, more));
        assert!(a.counts.lock().per_key.is_empty());
        assert_eq!(a.counts.lock().in_sessions, 0);
    }

    #[test]
    fn a_session_takes_large_frames_on_a_few_connections_only() {
        let a = admission(64);
        let session = SessionId([5; 32]);
        let mut slots: Vec<_> = (0..6).map(|n| client(&a, n, 1, Proven::Client).unwrap()).collect();
        let large: Vec<bool> =
            slots.iter_mut().map(|s| s.enter_session(session).unwrap()).collect();
        assert_eq!(large.iter().filter(|l| **l).count(), MAX_LARGE_PER_SESSION);
        assert!(slots.iter().all(Slot::in_session));
        drop(slots.remove(0));
        let mut again = client(&a, 9, 2, Proven::ClientWithSession).unwrap();
        assert!(!again.in_session());
        assert!(again.enter_session(session).unwrap(), "a large share freed");
        drop((slots, again));
        assert!(a.counts.lock().per_session.is_empty());
    }

    #[test]
    fn client_slots_full_leave_tracker_slots_open() {
        let a = admission(2);
        let c1 = client(&a, 2, 2, Proven::Client).unwrap();
        let _c2 = client(&a, 3, 3, Proven::Client).unwrap();
        assert_eq!(client(&a, 4, 4, Proven::Client).unwrap_err(), Refused::Clients);
        let trackers: Vec<_> =
            (0..TRACKER_SLOTS).map(|_| client(&a, 1, 1, Proven::Tracker).unwrap()).collect();
        assert_eq!(client(&a, 1, 1, Proven::Tracker).unwrap_err(), Refused::Trackers);
        drop(c1);
        assert!(client(&a, 4, 4, Proven::Client).is_ok());
        drop(trackers);
        assert_eq!(a.counts.lock().handshakes.len(), 0);
        assert_eq!(a.counts.lock().trackers, 0);
    }

    /// Issue 21: one address's throw-away keys, each refused after its handshake, cost a
    /// thread and an X25519 exchange each; past its budget, that address is refused before
    /// either, and no other address is.
    #[test]
    fn an_address_that_wastes_its_handshakes_is_refused_before_the_next_and_no_other() {
        let a = admission(1024);
        let held: Vec<_> = (0..MAX_ANONYMOUS_PER_IP)
            .map(|n| client(&a, 2, n as u8, Proven::Client).unwrap())
            .collect();
        let mut refused_after = 0u32;
        let mut refused_before = 0;
        let started = Instant::now();
        for n in 0..2 * WASTED_HANDSHAKES_BURST {
            match a.start_handshake(ip(2), None) {
                Ok(mut handshake) => {
                    handshake.heard();
                    let k = PublicKey([(n % 250) as u8 + 1; 32]);
                    assert_eq!(
                        a.admit(handshake, k, Proven::Client).unwrap_err(),
                        Refused::AnonymousPerIp
                    );
                    refused_after += 1;
                }
                Err(why) => {
                    assert_eq!(why, Refused::Wasteful);
                    refused_before += 1;
                }
            }
        }
        // The burst, and what refilled while the loop ran.
        let refilled = started.elapsed().as_secs_f64() * f64::from(WASTED_HANDSHAKES_PER_SECOND);
        let most = f64::from(WASTED_HANDSHAKES_BURST) + refilled.ceil();
        assert!(refused_after >= WASTED_HANDSHAKES_BURST, "{refused_after}");
        assert!(f64::from(refused_after) <= most, "{refused_after} > {most}");
        assert!(refused_before > 0);
        // Another address is not held, and neither is a key with a session elsewhere.
        assert!(client(&a, 3, 200, Proven::Client).is_ok());
        assert!(client(&a, 4, 201, Proven::ClientWithSession).is_ok());
        drop(held);
    }

    /// What counts as wasted: a handshake that spoke and failed, an anonymous connection
    /// closed without a session or an account; not a silent connection, one that logged in
    /// or created an account, a key with a session, or a tracker.
    #[test]
    fn only_handshakes_that_came_to_nothing_are_counted_as_wasted() {
        /// Whether `from` spent any of its budget, as of `at`, a moment before the spending
        /// (so that nothing refilled since: deterministic).
        fn spent(a: &Admission, from: u8, at: Instant) -> bool {
            let counts = a.counts.lock();
            !counts.waste.allows_all(source(ip(from)), at, WASTED_HANDSHAKES_BURST)
        }
        let a = admission(64);
        let at = Instant::now();
        drop(a.start_handshake(ip(1), None).unwrap());
        assert!(!spent(&a, 1, at), "a silent connection is not counted");
        drop(speaking(&a, ip(2)).unwrap());
        assert!(spent(&a, 2, at), "a failed handshake is");
        drop(client(&a, 3, 3, Proven::Client).unwrap());
        assert!(spent(&a, 3, at), "an anonymous connection closed without a session is");
        let mut in_session = client(&a, 4, 4, Proven::Client).unwrap();
        in_session.enter_session(SessionId([4; 32])).unwrap();
        drop(in_session);
        assert!(!spent(&a, 4, at), "a connection that logged in is not");
        let mut signed_up = client(&a, 5, 5, Proven::Client).unwrap();
        signed_up.used();
        drop(signed_up);
        assert!(!spent(&a, 5, at), "one that created an account is not");
        drop(client(&a, 6, 6, Proven::ClientWithSession).unwrap());
        drop(client(&a, 7, 7, Proven::Tracker).unwrap());
        assert!(!spent(&a, 6, at) && !spent(&a, 7, at), "a session's key or a tracker's is not");
    }

    #[test]
    fn the_connection_cap_follows_the_open_files_limit() {
        assert_eq!(connection_cap(1024, None), 1024);
        assert_eq!(connection_cap(1024, Some(1_048_576)), 1024);
        // Under a common default of 1024 descriptors, the cap leaves room for the rest.
        let cap = connection_cap(1024, Some(1024));
        assert!(cap > 600 && cap < 1024, "{cap}");
        let used = RESERVED_FDS
            + (MAX_HANDSHAKES + MAX_HANDSHAKES_PER_IP) as u64 * (FDS_PER_CONNECTION + 1)
            + (TRACKER_SLOTS + cap) as u64 * FDS_PER_CONNECTION;
        assert!(used <= 1024);
        assert_eq!(connection_cap(1024, Some(10)), 0);
    }
}

//! The one place where client requests become answers: `Service::handle` routes each
//! request (`route`), then `reads` answers it from the state, `writes` turns it into an
//! `Op` committed through Raft (see `cluster`) and answers with what applying it gave, and
//! `sessions` keeps sessions, presence and the login throttle; `status` describes this
//! tracker's place in the cluster.
//!
//! On a follower, pure reads of replicated state are answered locally after a ReadIndex
//! barrier (so they see every write acknowledged before them, wherever it was made);
//! writes and requests that need soft state (liveness, partial availability, kept by the
//! leader) are forwarded to the leader. The leader reads behind the same barrier, so a
//! deposed leader that does not know it yet cannot answer from an old state.
//! Locks: the state lock is held only for in-memory work, never across a commit or a
//! network call. Lock order: state, presence.

mod reads;
mod route;
mod sessions;
mod status;
mod writes;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use common::message::{
    PeerCall, Reply, Request, RequestId, SessionId, SessionToken, Ticket, TrackerError,
    TrackerStatus, AWAIT_CALLS_FOR,
};
use common::tracker_info::TrackerInfoFile;
use common::{Identity, PublicKey, UserId};

use crate::calls::{Calls, CALLS_PER_MINUTE};
use crate::cluster::{Cluster, ReplicaRequests, Role};
use crate::login_throttle::ThrottleLimits;
use crate::presence::Presence;
use crate::quota::{QuotaLimits, Quotas};
use crate::relay::{RelayLimits, RelayRefusal, Relays};
use crate::state::{LogEntry, TrackerState};

use reads::Reads;
pub use route::log_level;
use route::Route;
use sessions::{SessionSettings, Sessions};
use writes::Writes;

/// Tuning of a service.
#[derive(Debug, Clone)]
pub struct Settings {
    pub id: u32,
    pub trackers: Arc<TrackerInfoFile>,
    /// This tracker's static key pair.
    pub identity: Arc<Identity>,
    pub kdf_iterations: u32,
    pub peer_timeout: Duration,
    /// How long a ticket issued with a file's peers stays valid (downloaders renew it).
    pub ticket_lifetime: Duration,
    /// A session silent for this long is ended by the leader.
    pub session_idle_timeout: Duration,
    /// Password-hashing threads.
    pub kdf_threads: usize,
    /// Limits on password guessing and account creation.
    pub throttle: ThrottleLimits,
    /// Per-user and per-group limits.
    pub quotas: QuotaLimits,
    /// Relaying between peers that cannot reach each other (issue 19).
    pub relay: RelayLimits,
}

/// The tracker's request handler, shared by every connection thread.
pub struct Service {
    pub(crate) settings: Settings,
    pub(crate) cluster: Arc<Cluster>,
    reads: Reads,
    writes: Writes,
    sessions: Sessions,
    /// The peers waiting for reversal calls here, and the callers' budgets (issue 19).
    calls: Calls,
    /// The relays this tracker expects and runs (issue 19).
    pub(crate) relays: Relays,
}

impl Service {
    /// A service over the state and presence its cluster's state machine applies to.
    pub fn new(
        settings: Settings,
        state: Arc<RwLock<TrackerState>>,
        presence: Arc<Mutex<Presence>>,
        cluster: Cluster,
    ) -> std::io::Result<Service> {
        let cluster = Arc::new(cluster);
        let session_settings = SessionSettings {
            kdf_iterations: settings.kdf_iterations,
            kdf_threads: settings.kdf_threads,
            peer_timeout: settings.peer_timeout,
            idle_timeout: settings.session_idle_timeout,
            per_user: settings.quotas.sessions_per_user,
            throttle: settings.throttle,
        };
        let sessions = Sessions::new(
            session_settings,
            Arc::clone(&state),
            Arc::clone(&presence),
            Arc::clone(&cluster),
        )?;
        let reads = Reads::new(
            Arc::clone(&state),
            presence,
            Arc::clone(&cluster),
            settings.ticket_lifetime,
        );
        let writes = Writes::new(state, Arc::clone(&cluster), Quotas::new(settings.quotas));
        let relays = Relays::new(settings.relay);
        Ok(Service { settings, cluster, reads, writes, sessions, calls: Calls::default(), relays })
    }

    /// Handles one client request and returns what to answer. `client` is the static key
    /// the client proved on its channel (a session is only ever used with the key it was
    /// opened with), `from` the address it connects from.
    pub fn handle(
        &self,
        id: RequestId,
        token: Option<SessionToken>,
        client: PublicKey,
        from: IpAddr,
        request: Request,
    ) -> Result<Reply, TrackerError> {
        match route::route(self.cluster.witness, self.cluster.role(), &request) {
            Route::Witness => Err(TrackerError::Unavailable(format!(
                "tracker {} is a witness: it votes but serves no clients",
                self.settings.id
            ))),
            Route::Status => {
                // Answered whatever the role, at once: it matters most without a majority.
                match token.is_some_and(|t| self.sessions.has_session(&t, &client)) {
                    true => Ok(Reply::Status { status: self.status() }),
                    false => Err(TrackerError::NotLoggedIn),
                }
            }
            Route::AwaitCalls => {
                // Held here whatever the role: a long poll must not hold a forwarding
                // connection to the leader, which passes each call to where its peer waits.
                if !token.is_some_and(|t| self.sessions.has_session(&t, &client)) {
                    return Err(TrackerError::NotLoggedIn);
                }
                match self.calls.wait(client, AWAIT_CALLS_FOR) {
                    Ok(calls) => Ok(Reply::Calls { calls }),
                    Err(_) => Err(TrackerError::Busy("too many peers wait for calls".into())),
                }
            }
            Route::Here => self.serve_here(id, token, client, from, request),
            Route::FollowerHeartbeat { leader } => {
                let known = match &request {
                    Request::Heartbeat { known } => *known,
                    _ => None,
                };
                match self.sessions.heard_from(token, client) {
                    Some(session) => self.reads.alive(Some(session), known),
                    // Not applied here yet (a login a moment ago), or not a session: the
                    // leader knows.
                    None => self.cluster.forward(leader, id, token, client, request),
                }
            }
            Route::PrepareHere => {
                self.cluster.read_barrier()?;
                self.writes.write(&self.sessions, id, token.map(|t| t.id()), client, from, request)
            }
            Route::Forward { leader } => self.cluster.forward(leader, id, token, client, request),
            Route::NoLeader => Err(self.cluster.no_leader()),
        }
    }

    /// Answers a request on this tracker (the leader, or a follower for a pure read).
    fn serve_here(
        &self,
        id: RequestId,
        token: Option<SessionToken>,
        client: PublicKey,
        from: IpAddr,
        request: Request,
    ) -> Result<Reply, TrackerError> {
        if route::reads_replicated_state(&request) {
            self.cluster.read_barrier()?;
        }
        let now = Instant::now();
        let session = token.map(|t| t.id());
        if let Some(session) = session {
            self.sessions.bind(id, session, client, now)?;
        }
        match request {
            Request::Heartbeat { known } => return self.reads.alive(session, known),
            Request::GetFile { group, name } => {
                return self.reads.get_file(session, client, group, name, now)
            }
            Request::AnnouncePieces { group, digest, have } => {
                return self.sessions.announce(session, group, digest, have)
            }
            Request::Reachable { addrs } => return self.sessions.reachable(session, addrs),
            Request::CheckTicket { ticket } => return self.reads.check_ticket(session, &ticket),
            Request::StateDigest => return self.reads.state_digest(session),
            Request::Reverse { ticket, seeder, nonce } => {
                return self.call_peer(
                    session,
                    client,
                    &ticket,
                    seeder,
                    (nonce, CallKind::Reverse),
                    now,
                )
            }
            Request::Relay { ticket, seeder, nonce } => {
                return self.call_peer(
                    session,
                    client,
                    &ticket,
                    seeder,
                    (nonce, CallKind::Relay),
                    now,
                )
            }
            Request::Punch { ticket, seeder, nonce, port } => {
                return self.call_peer(
                    session,
                    client,
                    &ticket,
                    seeder,
                    (nonce, CallKind::Punch { port }),
                    now,
                )
            }
            Request::AwaitCalls => {
                // Routed to `Route::AwaitCalls` by every tracker: never forwarded.
                return Err(TrackerError::Unavailable("calls are awaited where sent".into()));
            }
            _ => {}
        }
        if let Some(result) = self.reads.query(session, &request, now) {
            return result;
        }
        self.writes.write(&self.sessions, id, session, client, from, request)
    }

    /// Connection reversal, a relay or a hole punch (issue 19), on the leader: checks the
    /// call (`reversal_call`) after spending one of the caller's calls (the three share one
    /// budget), then has the tracker where the seeder waits (this one or another) pass it
    /// on, and for a relay expect both ends. A punch call carries only the caller's
    /// registered public addresses (its observed address with its listen port, a mapping),
    /// with the port it punches from if it named one (`peer_addr::punch_targets`): the
    /// seeder punches to no other IP.
    fn call_peer(
        &self,
        session: Option<SessionId>,
        client: PublicKey,
        ticket: &Ticket,
        seeder: PublicKey,
        (nonce, kind): (u64, CallKind),
        now: Instant,
    ) -> Result<Reply, TrackerError> {
        if !self.calls.allow(client) {
            return Err(TrackerError::CannotReverse(format!(
                "more than {CALLS_PER_MINUTE} reversals a minute asked"
            )));
        }
        let mut call = self.reads.reversal_call(session, client, ticket, &seeder, nonce, now)?;
        call.relay = (kind == CallKind::Relay).then_some(self.settings.id);
        if let CallKind::Punch { port } = kind {
            call.punch = true;
            call.addrs = common::peer_addr::punch_targets(&call.addrs, port);
            if call.addrs.is_empty() {
                return Err(TrackerError::CannotReverse(
                    "the caller registered no public address to punch to".to_string(),
                ));
            }
        }
        let mut refusal = match self.deliver_here(seeder, call.clone()) {
            Ok(reply) => return Ok(reply),
            Err(e) => e,
        };
        for tracker in self.cluster.other_trackers() {
            match self.cluster.pass_call(tracker, seeder, call.clone()) {
                Ok(reply @ (Reply::Done | Reply::RelayAt { .. })) => return Ok(reply),
                Ok(other) => log::warn!("tracker {tracker} answered a call with {other:?}"),
                // The tracker where the seeder waits says why it cannot relay.
                Err(e @ (TrackerError::CannotReverse(_) | TrackerError::RelayOff))
                    if !is_not_here(&e) =>
                {
                    refusal = e
                }
                Err(e) => log::debug!("tracker {tracker} took no call for {seeder}: {e}"),
            }
        }
        if is_not_here(&refusal) {
            refusal = TrackerError::NotWaiting;
        }
        Err(refusal)
    }

    /// Passes `call` to the peer that proved `callee` if it waits for calls here; for a
    /// relay, this tracker then expects both ends and answers where to join it.
    fn deliver_here(&self, callee: PublicKey, call: PeerCall) -> Result<Reply, TrackerError> {
        if !self.calls.is_waiting(&callee) {
            return Err(TrackerError::CannotReverse(NOT_HERE.to_string()));
        }
        let reply = match call.relay {
            None => Reply::Done,
            Some(_) => {
                self.relays.expect(call.nonce, call.from, callee, call.user.clone()).map_err(
                    |e| match e {
                        RelayRefusal::Off => TrackerError::RelayOff,
                        other => TrackerError::CannotReverse(other.to_string()),
                    },
                )?;
                Reply::RelayAt { tracker: self.settings.id }
            }
        };
        let call = PeerCall { relay: call.relay.map(|_| self.settings.id), ..call };
        match self.calls.deliver(&callee, call) {
            true => Ok(reply),
            false => Err(TrackerError::CannotReverse(NOT_HERE.to_string())),
        }
    }

    fn only_leader(&self, from: u32) -> Result<(), TrackerError> {
        if self.cluster.role() == Role::Primary {
            return Ok(());
        }
        log::info!("tracker {from} forwarded a request, but this tracker does not lead");
        Err(TrackerError::Unavailable(format!(
            "tracker {} does not lead any more",
            self.settings.id
        )))
    }

    /// On a follower: reports to the leader the sessions whose heartbeats it answered since
    /// the last report (every second, on the `presence` thread).
    pub fn report_presence(&self) {
        self.sessions.report_presence();
    }

    /// On the leader: ends the sessions silent for longer than the idle timeout (on the
    /// `presence` thread).
    pub fn expire_idle_sessions(&self) {
        self.sessions.expire_idle();
    }

    /// Who a request comes from, for logs: `user@addr` (the address its peer serves on)
    /// for a session, `?@conn` (where it came from) without one.
    pub fn who(&self, token: Option<&SessionToken>, conn: impl std::fmt::Display) -> String {
        self.sessions.who(token, conn)
    }

    /// How long the connection should wait before it sends `refused` to `from`, the answer
    /// to a login or signup for `user` if it was one (`LoginThrottle::refusal_hold`).
    pub fn refusal_hold(
        &self,
        from: IpAddr,
        user: Option<&UserId>,
        refused: &TrackerError,
    ) -> Duration {
        self.sessions.refusal_hold(from, user, refused)
    }

    /// Whether `token` is a live session opened with `client`'s key (as far as this
    /// tracker has applied: for the frame limit of a connection, not for access).
    pub fn has_session(&self, token: &SessionToken, client: &PublicKey) -> bool {
        self.sessions.has_session(token, client)
    }

    /// Whether `key` holds a session (as far as this tracker has applied: for admission).
    pub fn key_has_session(&self, key: &PublicKey) -> bool {
        self.sessions.key_has_session(key)
    }

    /// One line describing this tracker's place in the cluster (for `status` on stdin):
    /// `tracker N: ROLE view=TERM:[MEMBERS] last=TERM:INDEX ... digest=HEX`.
    pub fn status_line(&self) -> String {
        let (applied, digest) = self.reads.digest();
        status::status_line(self.settings.id, &self.cluster, applied, digest)
    }

    /// This tracker's place in the cluster, for `Request::Status`.
    pub fn status(&self) -> TrackerStatus {
        status::status(self.settings.id, &self.cluster)
    }

    /// On becoming the leader: soft state starts afresh (every session counts as live for
    /// one peer timeout, while clients' heartbeats find their way here), and a new
    /// deployment gets its ticket secret.
    pub fn on_lead(&self) {
        self.sessions.restart_presence();
        if let Err(e) = self.writes.ensure_secret() {
            log::error!("cannot create the ticket secret: {e}");
        }
    }
}

/// Why a tracker did not pass a call on: its peer waits for calls elsewhere.
const NOT_HERE: &str = "the peer does not wait here";

/// What a downloader's call asks the seeder for (issue 19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    /// Connect out to the caller (connection reversal).
    Reverse,
    /// Join a relay at the tracker where the seeder waits.
    Relay,
    /// Connect to the caller from the listening port while it connects to the seeder, from
    /// `port` (0: its listening port).
    Punch { port: u16 },
}

fn is_not_here(e: &TrackerError) -> bool {
    matches!(e, TrackerError::CannotReverse(why) if why == NOT_HERE)
}

/// What the leader does with the requests followers send it. Only the leader takes them:
/// during an election two trackers must not bounce a request between them.
impl ReplicaRequests for Service {
    /// A request forwarded by tracker `from` on behalf of a client (which proved `client`
    /// to it).
    fn forwarded(
        &self,
        from: u32,
        id: RequestId,
        token: Option<SessionToken>,
        client: PublicKey,
        request: Request,
    ) -> Result<Reply, TrackerError> {
        self.only_leader(from)?;
        let level = log_level(&request);
        if log::log_enabled!(level) {
            let who = self.who(token.as_ref(), format_args!("tracker {from}"));
            log::log!(level, "< {who} #{} {request:?}", id.seq);
        }
        // The client's address is the follower's: nothing forwarded hashes a password.
        let follower = self.settings.trackers.current().resolve(from).ok();
        let follower = follower.and_then(|addrs| addrs.first().map(|a| a.ip()));
        let from_ip = follower.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        self.serve_here(id, token, client, from_ip, request)
    }

    /// Commits an entry a follower built (a login or an account whose password it hashed).
    fn proposed(&self, from: u32, entry: &[u8]) -> Result<Reply, TrackerError> {
        self.only_leader(from)?;
        let entry = LogEntry::decode(entry).map_err(|e| {
            log::warn!("tracker {from} proposed an entry this build cannot read: {e}");
            TrackerError::Unavailable(format!("tracker {from} proposed an unreadable entry"))
        })?;
        self.writes.commit_here(&self.sessions, entry)
    }

    /// On any tracker: the leader passes on a call for a peer that may wait here.
    fn call(&self, from: u32, callee: PublicKey, call: PeerCall) -> Result<Reply, TrackerError> {
        let reply = self.deliver_here(callee, call);
        if let Err(e) = &reply {
            log::debug!("tracker {from} passed a call for {callee}: {e}");
        }
        reply
    }

    /// On the leader: tracker `from` answered heartbeats of `sessions` lately.
    fn presence(&self, from: u32, sessions: &[SessionId]) -> Result<Reply, TrackerError> {
        self.only_leader(from)?;
        Ok(self.sessions.heard_by_follower(sessions))
    }
}

//! The one place where client requests become operations: reads are answered from the
//! state, writes become an `Op`, are committed through Raft (see `cluster`), applied on
//! every tracker by the state machine, and answered with what applying them gave.
//!
//! On a follower, pure reads of replicated state are answered locally after a ReadIndex
//! barrier (so they see every write acknowledged before them, wherever it was made);
//! writes and requests that need soft state (liveness, partial availability, kept by the
//! leader) are forwarded to the leader. The leader reads behind the same barrier, so a
//! deposed leader that does not know it yet cannot answer from an old state.
//! Locks: the state lock is held only for in-memory work, never across a commit or a
//! network call. Lock order: state, presence.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use common::message::{
    PeerInfo, Reply, Request, RequestId, SessionId, SessionToken, TrackerError, TrackerRole,
    TrackerStatus,
};
use common::replica_message::MAX_PRESENCE_REPORT;
use common::tracker_info::TrackerInfoFile;
use common::{FileName, GroupId, Identity, Layout, PublicKey, Sha1Digest, UserId};
use raft::StateRole;
use std::sync::Arc;

use crate::cluster::{Cluster, ReplicaRequests, Role};
use crate::kdf_pool::{KdfPool, Priority};
use crate::login_throttle::{LoginThrottle, ThrottleLimits};
use crate::presence::Presence;
use crate::quota::{QuotaLimits, Quotas};
use crate::state::{LogEntry, Op, Origin, TicketSecret, TrackerState};

/// How many clients' last failed writes are remembered to answer a retried request.
const MAX_REMEMBERED_CLIENTS: usize = 65_536;

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
}

/// Sessions ended per sweep of idle ones, at most (the rest wait for the next sweep).
const MAX_EXPIRED_PER_SWEEP: usize = 1000;

/// The tracker's request handler, shared by every connection thread.
pub struct Service {
    pub(crate) settings: Settings,
    /// The replicated state, as applied by the state machine.
    pub(crate) state: Arc<RwLock<TrackerState>>,
    pub(crate) cluster: Cluster,
    /// Soft state, kept by the leader.
    presence: Arc<Mutex<Presence>>,
    /// The last failed write of each client (successful ones are in the state), so a
    /// request resent after a lost reply gets the same answer.
    last_failures: Mutex<HashMap<u64, (Origin, TrackerError)>>,
    /// On a follower: the sessions whose heartbeats it answered since its last report to
    /// the leader (only sessions of the state, so bounded by them).
    heard: Mutex<HashSet<SessionId>>,
    /// Password hashing, off the connection threads.
    kdf: KdfPool,
    throttle: LoginThrottle,
    quotas: Quotas,
}

impl Service {
    /// A service over the state and presence its cluster's state machine applies to.
    pub fn new(
        settings: Settings,
        state: Arc<RwLock<TrackerState>>,
        presence: Arc<Mutex<Presence>>,
        cluster: Cluster,
    ) -> std::io::Result<Service> {
        let throttle = LoginThrottle::new(settings.throttle);
        let quotas = Quotas::new(settings.quotas);
        let kdf = KdfPool::new(settings.kdf_threads)?;
        Ok(Service {
            settings,
            state,
            cluster,
            presence,
            last_failures: Mutex::new(HashMap::new()),
            heard: Mutex::new(HashSet::new()),
            kdf,
            throttle,
            quotas,
        })
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
        if self.cluster.witness {
            return Err(TrackerError::Unavailable(format!(
                "tracker {} is a witness: it votes but serves no clients",
                self.settings.id
            )));
        }
        if let Request::Status = request {
            // Answered here whatever the role, at once: it matters most without a majority.
            let session = token.map(|t| t.id());
            let bound = session.is_some_and(|s| self.state.read().session_key(&s) == Some(client));
            return match bound {
                true => Ok(Reply::Status { status: self.status() }),
                false => Err(TrackerError::NotLoggedIn),
            };
        }
        match self.cluster.role() {
            Role::Primary => self.serve_here(id, token, client, from, request),
            Role::Backup { .. } if answers_locally(&request) => {
                self.serve_here(id, token, client, from, request)
            }
            Role::Backup { leader } if matches!(request, Request::Heartbeat { .. }) => {
                // Answered here (memberships from this replica: a change shows at most a
                // heartbeat later) and reported to the leader in bulk every second: tens of
                // thousands of idle clients cost the leader a message a second per
                // follower, not one per heartbeat.
                let known = match &request {
                    Request::Heartbeat { known } => *known,
                    _ => None,
                };
                let session = token
                    .map(|t| t.id())
                    .filter(|s| self.state.read().session_key(s) == Some(client));
                let Some(session) = session else {
                    // Not applied here yet (a login a moment ago), or not a session: the
                    // leader knows.
                    return self.cluster.forward(leader, id, token, client, request);
                };
                self.heard.lock().insert(session);
                self.alive(Some(session), known)
            }
            Role::Backup { .. } if hashes_a_password(&request) => {
                // The password is hashed here, where the client's address is known (for the
                // throttle), and the hashing of a flood of logins is spread over every
                // tracker; the leader gets the entry to commit.
                self.cluster.read_barrier()?;
                self.write(id, token.map(|t| t.id()), client, from, request)
            }
            Role::Backup { leader } => self.cluster.forward(leader, id, token, client, request),
            Role::Leaderless => Err(self.cluster.no_leader()),
        }
    }

    /// Handles a request forwarded by tracker `from` on behalf of a client (which proved
    /// `client` to it). Only the leader takes them: during an election two trackers must
    /// not bounce a request between them.
    fn handle_forwarded(
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
        let follower = self.settings.trackers.current().addr(from).map(|a| a.ip());
        let from_ip = follower.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        self.serve_here(id, token, client, from_ip, request)
    }

    /// Commits an entry a follower built (a login or an account whose password it hashed).
    fn handle_proposed(&self, from: u32, entry: &[u8]) -> Result<Reply, TrackerError> {
        self.only_leader(from)?;
        let entry = LogEntry::decode(entry).map_err(|e| {
            log::warn!("tracker {from} proposed an entry this build cannot read: {e}");
            TrackerError::Unavailable(format!("tracker {from} proposed an unreadable entry"))
        })?;
        self.commit_here(entry)
    }

    /// The answer to a heartbeat of `session`: its user's memberships if their version is
    /// not `known`. O(the caller's groups): the state keeps an index of each user's groups.
    fn alive(&self, session: Option<SessionId>, known: Option<u64>) -> Result<Reply, TrackerError> {
        let state = self.state.read();
        let memberships = state.memberships(&state.session_user(session)?);
        let changed = known != Some(memberships.version);
        Ok(Reply::Alive { memberships: changed.then_some(memberships) })
    }

    /// On the leader: tracker `from` answered heartbeats of `sessions` lately.
    fn handle_presence(&self, from: u32, sessions: &[SessionId]) -> Result<Reply, TrackerError> {
        self.only_leader(from)?;
        let now = Instant::now();
        let state = self.state.read();
        let mut presence = self.presence.lock();
        for session in sessions.iter().filter(|s| state.session_key(s).is_some()) {
            presence.touch(*session, now);
        }
        Ok(Reply::Done)
    }

    /// On a follower: reports to the leader the sessions whose heartbeats it answered since
    /// the last report. Run every second; a lost report costs nothing lasting (the next
    /// heartbeats come within 5 s, and a session stays live for `--peer-timeout`).
    pub fn report_presence(&self) {
        let Role::Backup { leader } = self.cluster.role() else {
            self.heard.lock().clear();
            return;
        };
        let heard: Vec<SessionId> = self.heard.lock().drain().collect();
        for chunk in heard.chunks(MAX_PRESENCE_REPORT) {
            if let Err(e) = self.cluster.report_presence(leader, chunk.to_vec()) {
                log::info!(
                    "cannot report {} sessions' heartbeats to tracker {leader}: {e}",
                    chunk.len()
                );
                return;
            }
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

    /// Answers a request on this tracker (the leader, or a follower for a pure read).
    fn serve_here(
        &self,
        id: RequestId,
        token: Option<SessionToken>,
        client: PublicKey,
        from: IpAddr,
        request: Request,
    ) -> Result<Reply, TrackerError> {
        if reads_replicated_state(&request) {
            self.cluster.read_barrier()?;
        }
        let now = Instant::now();
        let session = token.map(|t| t.id());
        if let Some(session) = session {
            match self.state.read().session_key(&session) {
                Some(key) if key == client => self.presence.lock().touch(session, now),
                Some(_) => {
                    log::warn!("request {id:?}: {session:?} presented from another key");
                    return Err(TrackerError::NotLoggedIn);
                }
                None => {}
            }
        }
        match request {
            Request::Heartbeat { known } => return self.alive(session, known),
            Request::GetFile { group, name } => {
                return self.get_file(session, client, group, name, now)
            }
            Request::AnnouncePieces { group, digest, have } => {
                let state = self.state.read();
                let user = state.session_user(session)?;
                let n_pieces = state.member_file_pieces(&user, &group, &digest)?;
                if have.n_pieces() != n_pieces {
                    return Err(TrackerError::BadFileMeta(format!(
                        "{} pieces announced for a file of {n_pieces}",
                        have.n_pieces()
                    )));
                }
                if let Some(token) = session {
                    self.presence.lock().announce(group, digest, token, have);
                }
                return Ok(Reply::Done);
            }
            Request::CheckTicket { ticket } => {
                let state = self.state.read();
                state.session_user(session)?;
                return state.verify_ticket(&ticket, unix_now()).map(|()| Reply::TicketOk);
            }
            Request::StateDigest => {
                // Its sequence number tells how busy the tracker is: members only.
                self.state.read().session_user(session)?;
                let (seq, digest) = self.digest();
                return Ok(Reply::StateDigest { seq, digest });
            }
            _ => {}
        }
        {
            let state = self.state.read();
            let presence = self.presence.lock();
            if let Some(result) = state.read(session, &request, &|s| presence.is_live(s, now)) {
                return result;
            }
        }
        self.write(id, session, client, from, request)
    }

    /// A write: answered from the record if it is a retry of one already applied (maybe
    /// on another tracker), else turned into an entry and committed.
    fn write(
        &self,
        id: RequestId,
        session: Option<SessionId>,
        client: PublicKey,
        from: IpAddr,
        request: Request,
    ) -> Result<Reply, TrackerError> {
        let origin = Origin { id, fingerprint: Some(request.fingerprint(&client)) };
        if let Some(reply) = self.state.read().replied(&origin) {
            log::debug!("request {id:?}: answering a retry from the log");
            return Ok(reply);
        }
        if let Some((recorded, err)) = self.last_failures.lock().get(&id.client) {
            if recorded == &origin {
                return Err(err.clone());
            }
        }
        let result = self
            .to_op(session, client, from, request)
            .and_then(|op| self.submit(LogEntry { op, origin: Some(origin) }));
        if let Err(err) = &result {
            // Refusals that depend on the moment are not answers to remember.
            let lasting = !matches!(
                err,
                TrackerError::Unavailable(_)
                    | TrackerError::Busy(_)
                    | TrackerError::TooManyAttempts { .. }
                    | TrackerError::QuotaExceeded(_)
            );
            if lasting {
                let mut failures = self.last_failures.lock();
                if failures.len() >= MAX_REMEMBERED_CLIENTS {
                    failures.clear();
                }
                failures.insert(id.client, (origin, err.clone()));
            }
        }
        result
    }

    /// Commits `entry` here if this tracker leads, or has the leader commit it.
    fn submit(&self, entry: LogEntry) -> Result<Reply, TrackerError> {
        match self.cluster.role() {
            Role::Primary => self.commit_here(entry),
            Role::Backup { leader } => self.cluster.propose_at(leader, &entry),
            Role::Leaderless => Err(self.cluster.no_leader()),
        }
    }

    /// On the leader: checks `entry` against the state and the quotas, makes room for a
    /// new session, and commits it. Refused at once when it cannot apply now; applied (or
    /// refused) in log order otherwise.
    fn commit_here(&self, entry: LogEntry) -> Result<Reply, TrackerError> {
        {
            let state = self.state.read();
            if let Some(reply) = entry.origin.and_then(|origin| state.replied(&origin)) {
                return Ok(reply);
            }
            state.check(&entry.op)?;
            self.quotas.check(&state, &entry.op, Instant::now())?;
        }
        if let Op::OpenSession { user, .. } = &entry.op {
            self.make_room_for_session(user)?;
        }
        self.cluster.commit(&entry)
    }

    /// Before a login of `user` who has every session the quota allows: ends the one
    /// silent the longest if it is not live, or refuses the login.
    fn make_room_for_session(&self, user: &UserId) -> Result<(), TrackerError> {
        let limit = self.quotas.limits().sessions_per_user.max(1);
        let now = Instant::now();
        let stale = {
            let state = self.state.read();
            let presence = self.presence.lock();
            let sessions: Vec<SessionId> = state.sessions_of(user).collect();
            if sessions.len() < limit {
                return Ok(());
            }
            let excess = sessions.len() + 1 - limit;
            let mut idle: Vec<(Duration, SessionId)> = sessions
                .into_iter()
                .filter(|s| !presence.is_live(s, now))
                .map(|s| (presence.silent_for(&s, now), s))
                .collect();
            if idle.len() < excess {
                return Err(TrackerError::QuotaExceeded(format!(
                    "{user} already has {limit} live sessions (tracker option \
                     --max-sessions-per-user); log out of one, or `logout --all`"
                )));
            }
            idle.sort_by_key(|(silent, _)| std::cmp::Reverse(*silent));
            idle.into_iter().take(excess).map(|(_, s)| s).collect::<Vec<_>>()
        };
        for session in stale {
            log::info!("{user}: ending {session:?}, silent the longest, for a new login");
            self.cluster.commit(&LogEntry { op: Op::CloseSession { session }, origin: None })?;
        }
        Ok(())
    }

    /// On the leader: ends the sessions silent for longer than the idle timeout (at most
    /// `MAX_EXPIRED_PER_SWEEP` at a time), and forgets the presence of ended ones. Run
    /// every few seconds.
    pub fn expire_idle_sessions(&self) {
        if self.cluster.role() != Role::Primary {
            return;
        }
        let now = Instant::now();
        let idle: Vec<SessionId> = {
            let state = self.state.read();
            let mut presence = self.presence.lock();
            presence.keep_only(|s| state.session_key(s).is_some());
            state
                .session_ids()
                .filter(|s| presence.silent_for(s, now) > self.settings.session_idle_timeout)
                .take(MAX_EXPIRED_PER_SWEEP)
                .copied()
                .collect()
        };
        for session in idle {
            log::info!("ending {session:?}: silent for longer than the session idle timeout");
            let entry = LogEntry { op: Op::CloseSession { session }, origin: None };
            if let Err(e) = self.cluster.commit(&entry) {
                log::info!("cannot end idle sessions now: {e}");
                return;
            }
        }
    }

    /// Who a request comes from, for logs: `user@addr` (the address its peer serves on)
    /// for a session, `?@conn` (where it came from) without one.
    pub fn who(&self, token: Option<&SessionToken>, conn: impl std::fmt::Display) -> String {
        let state = self.state.read();
        match token.and_then(|t| state.session_peer(&t.id())) {
            Some((user, addr, _)) => format!("{user}@{addr}"),
            None => format!("?@{conn}"),
        }
    }

    /// How long the connection should wait before it sends `refused` to `from`, the answer
    /// to a login or signup for `user` if it was one (`LoginThrottle::refusal_hold`).
    pub fn refusal_hold(
        &self,
        from: IpAddr,
        user: Option<&UserId>,
        refused: &TrackerError,
    ) -> std::time::Duration {
        self.throttle.refusal_hold(from, user, refused, Instant::now())
    }

    /// Whether `token` is a live session opened with `client`'s key (as far as this
    /// tracker has applied: for the frame limit of a connection, not for access).
    pub fn has_session(&self, token: &SessionToken, client: &PublicKey) -> bool {
        self.state.read().session_key(&token.id()) == Some(*client)
    }

    /// The last applied entry's index and the SHA1 of the state.
    pub fn digest(&self) -> (u64, Sha1Digest) {
        // A copy under the lock; the encoding and hashing happen after, so writers wait
        // only for the copy.
        let (applied, state) = {
            let state = self.state.read();
            (self.cluster.status().applied, state.clone())
        };
        (applied, Sha1Digest::of(&state.encode()))
    }

    /// One line describing this tracker's place in the cluster (for `status` on stdin):
    /// `tracker N: ROLE view=TERM:[MEMBERS] last=TERM:INDEX ... digest=HEX`.
    pub fn status_line(&self) -> String {
        let (applied, digest) = self.digest();
        let status = self.cluster.status();
        let reach = self.cluster.voters_up();
        format!(
            "tracker {}: {} view={}:{:?} last={}:{} commit={} applied={applied} \
             reach={}/{} generation={} digest={digest}",
            self.settings.id,
            self.role(),
            status.term,
            status.voters(),
            status.last_term,
            status.last_index,
            status.commit,
            reach.0,
            reach.1,
            self.cluster.generation(),
        )
    }

    /// This tracker's place in the cluster, for `Request::Status`.
    pub fn status(&self) -> TrackerStatus {
        let status = self.cluster.status();
        let (up, _) = self.cluster.voters_up();
        TrackerStatus {
            id: self.settings.id,
            role: self.role(),
            term: status.term,
            voters: status.voters().iter().filter_map(|v| u32::try_from(*v).ok()).collect(),
            reach: u32::try_from(up).unwrap_or(u32::MAX),
            commit: status.commit,
            applied: status.applied,
        }
    }

    /// This tracker's role, as `status` names it.
    fn role(&self) -> TrackerRole {
        match (self.cluster.role(), self.cluster.status().role) {
            (Role::Primary, _) => TrackerRole::Primary,
            (Role::Backup { .. }, _) if self.cluster.witness => TrackerRole::Witness,
            (Role::Backup { leader }, _) => TrackerRole::Backup { leader },
            (Role::Leaderless, StateRole::Candidate | StateRole::PreCandidate) => {
                TrackerRole::Candidate
            }
            (Role::Leaderless, _) => TrackerRole::Leaderless,
        }
    }

    /// On becoming the leader: soft state starts afresh (every session counts as live for
    /// one peer timeout, while clients' heartbeats find their way here), and a new
    /// deployment gets its ticket secret.
    pub fn on_lead(&self) {
        *self.presence.lock() = Presence::new(Instant::now(), self.settings.peer_timeout);
        if let Err(e) = self.ensure_secret() {
            log::error!("cannot create the ticket secret: {e}");
        }
    }

    /// Commits a fresh ticket secret if the state has none (the first leader of a new
    /// deployment).
    pub fn ensure_secret(&self) -> Result<(), TrackerError> {
        if self.state.read().has_secret() {
            return Ok(());
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| unavailable("no randomness", e))?;
        let entry = LogEntry { op: Op::InitSecret { secret: TicketSecret(secret) }, origin: None };
        self.cluster.commit(&entry).map(|_| ())
    }

    /// A file's metadata, its live peers other than the caller (with the keys they must
    /// prove), and a ticket for them bound to the caller's key.
    fn get_file(
        &self,
        session: Option<SessionId>,
        client: PublicKey,
        group: GroupId,
        name: FileName,
        now: Instant,
    ) -> Result<Reply, TrackerError> {
        let state = self.state.read();
        let user = state.session_user(session)?;
        let (meta, sharers) = state.file_for_member(&user, &group, &name)?;
        let presence = self.presence.lock();
        let wanted = |s: &SessionId| Some(*s) != session && presence.is_live(s, now);
        let complete: Vec<SessionId> = sharers.filter(|s| wanted(s)).copied().collect();
        let mut peers: Vec<PeerInfo> = complete
            .iter()
            .filter_map(|s| state.session_peer(s))
            .map(|(user, addr, key)| PeerInfo { user: user.clone(), addr, key, have: None })
            .collect();
        let n_pieces = Layout::new(meta.size).map(|l| l.n_pieces()).unwrap_or(0);
        for (s, have) in presence.partial_holders(&group, &meta.digest) {
            if wanted(&s) && !complete.contains(&s) && have.n_pieces() == n_pieces {
                if let Some((user, addr, key)) = state.session_peer(&s) {
                    peers.push(PeerInfo { user: user.clone(), addr, key, have: Some(have) });
                }
            }
        }
        let expires = unix_now() + self.settings.ticket_lifetime.as_secs();
        let ticket = state
            .mint_ticket(client, user, group, meta.digest, expires)
            .ok_or_else(|| TrackerError::Unavailable("no ticket secret yet".to_string()))?;
        Ok(Reply::FileInfo { meta: meta.clone(), peers, ticket: Box::new(ticket) })
    }

    /// Builds the op for a write request: resolves the session and does the work that must
    /// not happen under a lock (key derivation, password checks, randomness).
    fn to_op(
        &self,
        session: Option<SessionId>,
        client: PublicKey,
        from: IpAddr,
        request: Request,
    ) -> Result<Op, TrackerError> {
        let user = || self.state.read().session_user(session);
        let session_token = || session.ok_or(TrackerError::NotLoggedIn);
        let op = match request {
            Request::CreateUser { user, password } => {
                if self.state.read().has_user(&user) {
                    return Err(TrackerError::UserExists(user));
                }
                self.throttle.admit_signup(from, Instant::now())?;
                let priority = self.kdf_priority(from, &user);
                let credential =
                    self.kdf.derive(priority, password, self.settings.kdf_iterations)?;
                Op::CreateUser { user, credential }
            }
            Request::Login { user, password, peer_addr, session: token } => {
                self.throttle.admit_login(from, &user, Instant::now())?;
                let credential = match self.state.read().credential(&user) {
                    Ok(credential) => credential,
                    Err(unknown) => {
                        // Guessing user names counts as guessing passwords.
                        self.throttle.login_failed(from, &user, Instant::now());
                        return Err(unknown);
                    }
                };
                if !self.kdf.verify(self.kdf_priority(from, &user), credential, password)? {
                    self.throttle.login_failed(from, &user, Instant::now());
                    return Err(TrackerError::WrongPassword);
                }
                self.throttle.login_succeeded(from);
                // Only the token's hash is stored, logged and replicated.
                Op::OpenSession { session: token.id(), user, peer_addr, key: client }
            }
            Request::Logout => Op::CloseSession { session: session_token()? },
            Request::LogoutEverywhere => Op::CloseUserSessions { user: user()? },
            Request::CreateGroup { group } => Op::CreateGroup { group, owner: user()? },
            Request::JoinGroup { group } => Op::RequestJoin { group, user: user()? },
            Request::LeaveGroup { group } => Op::LeaveGroup { group, user: user()? },
            Request::AcceptRequest { group, user: joiner } => {
                Op::AcceptRequest { owner: user()?, group, user: joiner }
            }
            Request::RejectRequest { group, user: joiner } => {
                Op::RejectRequest { owner: user()?, group, user: joiner }
            }
            Request::UploadFile { group, file } => {
                user()?;
                Op::ShareFile { session: session_token()?, group, meta: file }
            }
            Request::StopShare { group, name } => {
                user()?;
                Op::StopShare { session: session_token()?, group, name }
            }
            Request::ListGroups { .. }
            | Request::ListMyGroups { .. }
            | Request::ListRequests { .. }
            | Request::ListFiles { .. }
            | Request::GetFile { .. }
            | Request::AnnouncePieces { .. }
            | Request::CheckTicket { .. }
            | Request::StateDigest
            | Request::Status
            | Request::Heartbeat { .. } => {
                // Answered above; reaching here is a bug, not bad input.
                return Err(TrackerError::Unavailable(
                    "internal error: read routed as write".to_string(),
                ));
            }
        };
        Ok(op)
    }
}

impl ReplicaRequests for Service {
    fn forwarded(
        &self,
        from: u32,
        id: RequestId,
        token: Option<SessionToken>,
        client: PublicKey,
        request: Request,
    ) -> Result<Reply, TrackerError> {
        self.handle_forwarded(from, id, token, client, request)
    }

    fn proposed(&self, from: u32, entry: &[u8]) -> Result<Reply, TrackerError> {
        self.handle_proposed(from, entry)
    }

    fn presence(&self, from: u32, sessions: &[SessionId]) -> Result<Reply, TrackerError> {
        self.handle_presence(from, sessions)
    }
}

impl Service {
    /// Hashes for addresses, or users, that failed lately wait behind everyone else's.
    fn kdf_priority(&self, from: IpAddr, user: &UserId) -> Priority {
        match self.throttle.is_suspect(from, user, Instant::now()) {
            true => Priority::Suspect,
            false => Priority::Clean,
        }
    }
}

/// The level at which requests are logged: trace for what every client sends every few
/// seconds (heartbeats, a downloader's piece announcements and ticket checks), so that
/// debug stays readable; debug for the rest.
pub fn log_level(request: &Request) -> log::Level {
    match request {
        Request::Heartbeat { .. }
        | Request::AnnouncePieces { .. }
        | Request::CheckTicket { .. }
        | Request::Status => log::Level::Trace,
        _ => log::Level::Debug,
    }
}

/// Whether a follower answers `request` itself (pure reads of replicated state; the rest
/// needs the leader's soft state or is a write).
fn answers_locally(request: &Request) -> bool {
    matches!(
        request,
        Request::ListGroups { .. }
            | Request::ListMyGroups { .. }
            | Request::ListRequests { .. }
            | Request::CheckTicket { .. }
            | Request::StateDigest
    )
}

/// Whether `request` hashes a password (and so is prepared by the tracker the client is
/// connected to, not forwarded).
fn hashes_a_password(request: &Request) -> bool {
    matches!(request, Request::CreateUser { .. } | Request::Login { .. })
}

/// Whether answering `request` reads replicated state, and so waits for a read barrier
/// (heartbeats and piece announcements only touch soft state; writes go through the log).
fn reads_replicated_state(request: &Request) -> bool {
    answers_locally(request)
        || matches!(request, Request::ListFiles { .. } | Request::GetFile { .. })
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(crate) fn unavailable(what: &str, err: impl std::fmt::Display) -> TrackerError {
    log::error!("{what}: {err}");
    TrackerError::Unavailable(what.to_string())
}

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

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use common::message::{PeerInfo, Reply, Request, RequestId, SessionId, SessionToken, TrackerError};
use common::tracker_info::TrackerInfoFile;
use common::{FileName, GroupId, Identity, Layout, PublicKey, Sha1Digest};
use raft::StateRole;
use std::sync::Arc;

use crate::cluster::{Cluster, Role};
use crate::credential::Credential;
use crate::presence::Presence;
use crate::state::{LogEntry, Op, TicketSecret, TrackerState};

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
}

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
    last_failures: Mutex<HashMap<u64, (u64, TrackerError)>>,
}

impl Service {
    /// A service over the state and presence its cluster's state machine applies to.
    pub fn new(
        settings: Settings,
        state: Arc<RwLock<TrackerState>>,
        presence: Arc<Mutex<Presence>>,
        cluster: Cluster,
    ) -> Service {
        Service { settings, state, cluster, presence, last_failures: Mutex::new(HashMap::new()) }
    }

    /// Handles one client request and returns what to answer. `client` is the static key
    /// the client proved on its channel: a session is only ever used with the key it was
    /// opened with.
    pub fn handle(
        &self,
        id: RequestId,
        token: Option<SessionToken>,
        client: PublicKey,
        request: Request,
    ) -> Result<Reply, TrackerError> {
        if self.cluster.witness {
            return Err(TrackerError::Unavailable(format!(
                "tracker {} is a witness: it votes but serves no clients",
                self.settings.id
            )));
        }
        match self.cluster.role() {
            Role::Primary => self.serve_here(id, token, client, request),
            Role::Backup { .. } if answers_locally(&request) => {
                self.serve_here(id, token, client, request)
            }
            Role::Backup { leader } => self.cluster.forward(leader, id, token, client, request),
            Role::Leaderless => Err(self.cluster.no_leader()),
        }
    }

    /// Handles a request forwarded by tracker `from` on behalf of a client (which proved
    /// `client` to it). Only the leader takes them: during an election two trackers must
    /// not bounce a request between them.
    pub fn handle_forwarded(
        &self,
        from: u32,
        id: RequestId,
        token: Option<SessionToken>,
        client: PublicKey,
        request: Request,
    ) -> Result<Reply, TrackerError> {
        match self.cluster.role() {
            Role::Primary => {
                let level = log_level(&request);
                if log::log_enabled!(level) {
                    let who = self.who(token.as_ref(), format_args!("tracker {from}"));
                    log::log!(level, "< {who} #{} {request:?}", id.seq);
                }
                self.serve_here(id, token, client, request)
            }
            _ => {
                log::info!("tracker {from} forwarded {id:?}, but this tracker does not lead");
                Err(TrackerError::Unavailable(format!(
                    "tracker {} does not lead any more",
                    self.settings.id
                )))
            }
        }
    }

    /// Answers a request on this tracker (the leader, or a follower for a pure read).
    fn serve_here(
        &self,
        id: RequestId,
        token: Option<SessionToken>,
        client: PublicKey,
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
            Request::Heartbeat { known } => {
                // O(the caller's groups): the state keeps an index of each user's groups.
                let state = self.state.read();
                let memberships = state.memberships(&state.session_user(session)?);
                let changed = known != Some(memberships.version);
                return Ok(Reply::Alive { memberships: changed.then_some(memberships) });
            }
            Request::GetFile { group, name } => {
                return self.get_file(session, client, group, name, now)
            }
            Request::AnnouncePieces { group, digest, have } => {
                let state = self.state.read();
                let user = state.session_user(session)?;
                state.check_member_file(&user, &group, &digest)?;
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
        // A write. Was it already applied (a retry after a lost reply, maybe on another
        // tracker)?
        if let Some(reply) = self.state.read().replied(&id) {
            log::debug!("request {id:?}: answering a retry from the log");
            return Ok(reply);
        }
        if let Some((seq, err)) = self.last_failures.lock().get(&id.client) {
            if *seq == id.seq {
                return Err(err.clone());
            }
        }
        let result = self.to_op(session, client, request).and_then(|op| {
            // Refused at once when it cannot apply now; applied (or refused) in log order
            // otherwise. The retry check is made again under the same lock as `check`: the
            // first copy of a retried request may have been applied since the check above
            // (a login then looked like a reuse of its own token).
            {
                let state = self.state.read();
                if let Some(reply) = state.replied(&id) {
                    return Ok(reply);
                }
                state.check(&op)?;
            }
            self.cluster.commit(&LogEntry { op, origin: Some(id) })
        });
        if let Err(err) = &result {
            if !matches!(err, TrackerError::Unavailable(_)) {
                let mut failures = self.last_failures.lock();
                if failures.len() >= MAX_REMEMBERED_CLIENTS {
                    failures.clear();
                }
                failures.insert(id.client, (id.seq, err.clone()));
            }
        }
        result
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
        let role = match (self.cluster.role(), status.role) {
            (Role::Primary, _) => "primary".to_string(),
            (Role::Backup { .. }, _) if self.cluster.witness => "witness".to_string(),
            (Role::Backup { leader }, _) => format!("backup of {leader}"),
            (Role::Leaderless, StateRole::Candidate | StateRole::PreCandidate) => {
                "candidate".to_string()
            }
            (Role::Leaderless, _) => "leaderless".to_string(),
        };
        format!(
            "tracker {}: {role} view={}:{:?} last={}:{} commit={} applied={applied} \
             reach={}/{} generation={} digest={digest}",
            self.settings.id,
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
        request: Request,
    ) -> Result<Op, TrackerError> {
        let user = || self.state.read().session_user(session);
        let session_token = || session.ok_or(TrackerError::NotLoggedIn);
        let op = match request {
            Request::CreateUser { user, password } => {
                if self.state.read().has_user(&user) {
                    return Err(TrackerError::UserExists(user));
                }
                let credential = Credential::derive(&password, self.settings.kdf_iterations)
                    .map_err(|e| unavailable("no randomness", e))?;
                Op::CreateUser { user, credential }
            }
            Request::Login { user, password, peer_addr, session: token } => {
                let credential = self.state.read().credential(&user)?;
                if !credential.verify(&password) {
                    return Err(TrackerError::WrongPassword);
                }
                // Only the token's hash is stored, logged and replicated.
                Op::OpenSession { session: token.id(), user, peer_addr, key: client }
            }
            Request::Logout => Op::CloseSession { session: session_token()? },
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
            Request::ListGroups
            | Request::ListMyGroups
            | Request::ListRequests { .. }
            | Request::ListFiles { .. }
            | Request::GetFile { .. }
            | Request::AnnouncePieces { .. }
            | Request::CheckTicket { .. }
            | Request::StateDigest
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

/// The level at which requests are logged: trace for what every client sends every few
/// seconds (heartbeats, a downloader's piece announcements and ticket checks), so that
/// debug stays readable; debug for the rest.
pub fn log_level(request: &Request) -> log::Level {
    match request {
        Request::Heartbeat { .. }
        | Request::AnnouncePieces { .. }
        | Request::CheckTicket { .. } => log::Level::Trace,
        _ => log::Level::Debug,
    }
}

/// Whether a follower answers `request` itself (pure reads of replicated state; the rest
/// needs the leader's soft state or is a write).
fn answers_locally(request: &Request) -> bool {
    matches!(
        request,
        Request::ListGroups
            | Request::ListMyGroups
            | Request::ListRequests { .. }
            | Request::CheckTicket { .. }
            | Request::StateDigest
    )
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

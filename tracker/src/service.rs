//! The one place where client requests become operations: reads are answered from the state,
//! writes are turned into an `Op`, checked, logged, replicated to every other member of the
//! view, then applied and answered.
//!
//! On a backup, requests that change state or need soft state (liveness, partial
//! availability) are forwarded to the primary; pure reads are answered locally.
//! Invariant: the store lock serializes writers and is held across the local log write and
//! the shipping to backups (and by backups while they apply what they receive); the state
//! lock is held only for in-memory work, so reads never wait for disk or network.
//! Lock order: store, links, cluster, state, presence.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use common::message::{PeerInfo, Reply, Request, RequestId, SessionId, SessionToken, TrackerError};
use common::replica_message::EntryId;
use common::tracker_info::TrackerInfoFile;
use common::{FileName, GroupId, Identity, Layout, PublicKey, Sha1Digest};
use std::sync::Arc;

use crate::credential::Credential;
use crate::presence::Presence;
use crate::replication::{Cluster, Forwarder, Role};
use crate::state::{Op, TicketSecret, TrackerState};
use crate::store::{LogEntry, Store};

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
    pub(crate) state: RwLock<TrackerState>,
    pub(crate) store: Mutex<Store>,
    pub(crate) cluster: Cluster,
    /// Soft state, kept by the primary.
    presence: Mutex<Presence>,
    forwarder: Forwarder,
    /// The last failed write of each client (successful ones are in the state), so a
    /// request resent after a lost reply gets the same answer.
    last_failures: Mutex<HashMap<u64, (u64, TrackerError)>>,
}

impl Service {
    /// A service over an opened store and what it recovered.
    pub fn new(settings: Settings, store: Store, state: TrackerState, cluster: Cluster) -> Service {
        let presence = Presence::new(Instant::now(), settings.peer_timeout);
        Service {
            forwarder: Forwarder::new(
                settings.id,
                Arc::clone(&settings.trackers),
                Arc::clone(&settings.identity),
            ),
            settings,
            state: RwLock::new(state),
            store: Mutex::new(store),
            cluster,
            presence: Mutex::new(presence),
            last_failures: Mutex::new(HashMap::new()),
        }
    }

    /// Handles one client request and returns what to answer. `client` is the static key
    /// the client proved on its channel (to this tracker, or to the backup that forwarded
    /// the request): a session is only ever used with the key it was opened with.
    pub fn handle(
        &self,
        id: RequestId,
        token: Option<SessionToken>,
        client: PublicKey,
        request: Request,
    ) -> Result<Reply, TrackerError> {
        match self.cluster.role() {
            Role::Joining => return Err(TrackerError::Unavailable(self.cluster.waiting())),
            Role::Backup { primary } if !answers_locally(&request) => {
                return self.forwarder.forward(primary, id, token, client, request);
            }
            _ => {}
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
            Request::Heartbeat => {
                return self.state.read().session_user(session).map(|_| Reply::Done)
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
        let result = self.to_op(session, client, request).and_then(|op| self.commit(op, Some(id)));
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

    /// The last applied entry's sequence number and the SHA1 of the state.
    pub fn digest(&self) -> (u64, Sha1Digest) {
        // A consistent copy under the locks; the encoding and hashing happen after, so
        // writers wait only for the copy.
        let (seq, state) = {
            let store = self.store.lock();
            let state = self.state.read().clone();
            (store.last().map_or(0, |l| l.seq), state)
        };
        let bytes = postcard::to_stdvec(&state).unwrap_or_default();
        (seq, Sha1Digest::of(&bytes))
    }

    /// One line describing this tracker's place in the cluster (for `status` on stdin).
    pub fn status_line(&self) -> String {
        let (seq, digest) = self.digest();
        let last = self.cluster.last();
        format!(
            "tracker {}: {} view={} last={} seq={seq} digest={digest}",
            self.settings.id,
            self.cluster.role(),
            self.cluster
                .view()
                .map_or("none".to_string(), |v| format!("{}:{:?}", v.epoch, v.members)),
            last.map_or("none".to_string(), |l| format!("{}:{}", l.epoch, l.seq)),
        )
    }

    /// Commits a fresh ticket secret if the state has none (the first primary of a new
    /// deployment).
    pub fn ensure_secret(&self) -> Result<(), TrackerError> {
        if self.state.read().has_secret() {
            return Ok(());
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| unavailable("no randomness", e))?;
        self.commit(Op::InitSecret { secret: TicketSecret(secret) }, None).map(|_| ())
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
            .map(|(_, addr, key)| PeerInfo { addr, key, have: None })
            .collect();
        let n_pieces = Layout::new(meta.size).map(|l| l.n_pieces()).unwrap_or(0);
        for (s, have) in presence.partial_holders(&group, &meta.digest) {
            if wanted(&s) && !complete.contains(&s) && have.n_pieces() == n_pieces {
                if let Some((_, addr, key)) = state.session_peer(&s) {
                    peers.push(PeerInfo { addr, key, have: Some(have) });
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
            | Request::Heartbeat => {
                // Answered above; reaching here is a bug, not bad input.
                return Err(TrackerError::Unavailable(
                    "internal error: read routed as write".to_string(),
                ));
            }
        };
        Ok(op)
    }

    /// On the primary: checks `op`, logs it, ships it to every backup (in ascending id
    /// order) and applies it once every member of the view has it durably.
    fn commit(&self, op: Op, origin: Option<RequestId>) -> Result<Reply, TrackerError> {
        let mut store = self.store.lock();
        let view = match (self.cluster.role(), self.cluster.view()) {
            (Role::Primary, Some(view)) => view,
            _ => return Err(TrackerError::Unavailable("tracker is not the primary".to_string())),
        };
        let reply = self.state.read().check(&op)?;
        let entry = LogEntry { op, origin, reply };
        let id = EntryId { epoch: view.epoch, seq: store.next_seq() };
        let bytes =
            postcard::to_stdvec(&entry).map_err(|e| unavailable("cannot encode entry", e))?;
        store.append_encoded(id, &bytes).map_err(|e| unavailable("storage failure", e))?;
        self.cluster.note_last(Some(id));
        log::debug!("entry {id:?}: {:?}", entry.op);
        self.cluster.ship(&mut store, &view, id, bytes)?;
        let result = self.state.write().apply_entry(&entry);
        match &entry.op {
            Op::CloseSession { session } => self.presence.lock().forget(session),
            Op::OpenSession { session, .. } if result.is_ok() => {
                self.presence.lock().touch(*session, Instant::now())
            }
            _ => {}
        }
        self.maybe_snapshot(&mut store);
        result
    }

    /// Takes a snapshot if one is due.
    pub(crate) fn maybe_snapshot(&self, store: &mut Store) {
        if store.wants_snapshot() {
            let snapshot = self.state.read().clone();
            if let Err(e) = store.snapshot(&snapshot) {
                // The log still holds everything; a failed snapshot only costs replay time.
                log::error!("store: snapshot failed: {e}");
            }
        }
    }
}

/// Whether a backup answers `request` itself (pure reads of replicated state).
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

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(crate) fn unavailable(what: &str, err: impl std::fmt::Display) -> TrackerError {
    log::error!("{what}: {err}");
    TrackerError::Unavailable(what.to_string())
}

//! The one place where client requests become operations: reads are answered from the state,
//! writes are turned into an `Op`, checked, committed to the store, then applied.
//!
//! Invariant: the store lock serializes writers and is the only lock held across disk I/O;
//! the state lock is held only for in-memory work, so reads never wait for a disk write.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use common::message::{PeerInfo, Reply, Request, RequestId, SessionToken, TrackerError};
use common::{FileName, GroupId, Layout};

use crate::credential::Credential;
use crate::presence::Presence;
use crate::state::{Op, TrackerState};
use crate::store::Store;

/// How long a ticket issued with a file's peers stays valid.
pub const TICKET_TTL: Duration = Duration::from_secs(3600);

/// How many clients' last write results are remembered to answer a retried request.
const MAX_REMEMBERED_CLIENTS: usize = 65_536;

/// The outcome of a client's last write: its request sequence number and its result.
type LastWrite = (u64, Result<Reply, TrackerError>);

/// The tracker's request handler, shared by every connection thread.
pub struct Service {
    state: RwLock<TrackerState>,
    store: Mutex<Store>,
    /// Soft state; lock order: `state` before `presence`.
    presence: Mutex<Presence>,
    kdf_iterations: u32,
    /// The last write of each client, so a request resent after a lost reply is not applied
    /// twice.
    last_writes: Mutex<HashMap<u64, LastWrite>>,
}

impl Service {
    /// A service over an opened store and the state it rebuilt.
    pub fn new(
        store: Store,
        state: TrackerState,
        kdf_iterations: u32,
        peer_timeout: Duration,
    ) -> Service {
        Service {
            state: RwLock::new(state),
            store: Mutex::new(store),
            presence: Mutex::new(Presence::new(Instant::now(), peer_timeout)),
            kdf_iterations,
            last_writes: Mutex::new(HashMap::new()),
        }
    }

    /// Handles one request and returns what to answer.
    pub fn handle(
        &self,
        id: RequestId,
        session: Option<SessionToken>,
        request: Request,
    ) -> Result<Reply, TrackerError> {
        let now = Instant::now();
        if let Some(token) = session {
            if self.state.read().session_peer(&token).is_some() {
                self.presence.lock().touch(token, now);
            }
        }
        match request {
            Request::Heartbeat => {
                return self.state.read().session_user(session).map(|_| Reply::Done)
            }
            Request::GetFile { group, name } => return self.get_file(session, group, name, now),
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
            _ => {}
        }
        {
            let state = self.state.read();
            let presence = self.presence.lock();
            if let Some(result) = state.read(session, &request, &|s| presence.is_live(s, now)) {
                return result;
            }
        }
        if let Some((seq, result)) = self.last_writes.lock().get(&id.client) {
            if *seq == id.seq {
                log::debug!("request {id:?}: answering a retry from memory");
                return result.clone();
            }
        }
        let result = self.to_op(session, request).and_then(|op| self.commit(op));
        let mut last_writes = self.last_writes.lock();
        if last_writes.len() >= MAX_REMEMBERED_CLIENTS {
            last_writes.clear();
        }
        last_writes.insert(id.client, (id.seq, result.clone()));
        result
    }

    /// Commits a fresh ticket secret if the state has none (a brand-new deployment).
    pub fn ensure_secret(&self) -> Result<(), TrackerError> {
        if self.state.read().has_secret() {
            return Ok(());
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| unavailable("no randomness", e))?;
        self.commit(Op::InitSecret { secret }).map(|_| ())
    }

    /// A file's metadata, its live peers other than the caller, and a ticket for them.
    fn get_file(
        &self,
        session: Option<SessionToken>,
        group: GroupId,
        name: FileName,
        now: Instant,
    ) -> Result<Reply, TrackerError> {
        let state = self.state.read();
        let user = state.session_user(session)?;
        let (meta, sharers) = state.file_for_member(&user, &group, &name)?;
        let presence = self.presence.lock();
        let wanted = |s: &SessionToken| Some(*s) != session && presence.is_live(s, now);
        let complete: Vec<SessionToken> = sharers.filter(|s| wanted(s)).copied().collect();
        let mut peers: Vec<PeerInfo> = complete
            .iter()
            .filter_map(|s| state.session_peer(s))
            .map(|(_, addr)| PeerInfo { addr, have: None })
            .collect();
        let n_pieces = Layout::new(meta.size).map(|l| l.n_pieces()).unwrap_or(0);
        for (s, have) in presence.partial_holders(&group, &meta.digest) {
            if wanted(&s) && !complete.contains(&s) && have.n_pieces() == n_pieces {
                if let Some((_, addr)) = state.session_peer(&s) {
                    peers.push(PeerInfo { addr, have: Some(have) });
                }
            }
        }
        let expires = unix_now() + TICKET_TTL.as_secs();
        let ticket = state
            .mint_ticket(user, group, meta.digest, expires)
            .ok_or_else(|| TrackerError::Unavailable("no ticket secret yet".to_string()))?;
        Ok(Reply::FileInfo { meta: meta.clone(), peers, ticket: Box::new(ticket) })
    }

    /// Builds the op for a write request: resolves the session and does the work that must
    /// not happen under a lock (key derivation, password checks, randomness).
    fn to_op(&self, session: Option<SessionToken>, request: Request) -> Result<Op, TrackerError> {
        let user = || self.state.read().session_user(session);
        let op = match request {
            Request::CreateUser { user, password } => {
                if self.state.read().has_user(&user) {
                    return Err(TrackerError::UserExists(user));
                }
                let credential = Credential::derive(&password, self.kdf_iterations)
                    .map_err(|e| unavailable("no randomness", e))?;
                Op::CreateUser { user, credential }
            }
            Request::Login { user, password, peer_addr } => {
                let credential = self.state.read().credential(&user)?;
                if !credential.verify(&password) {
                    return Err(TrackerError::WrongPassword);
                }
                let mut token = [0u8; 16];
                getrandom::fill(&mut token).map_err(|e| unavailable("no randomness", e))?;
                Op::OpenSession { session: SessionToken(token), user, peer_addr }
            }
            Request::Logout => {
                Op::CloseSession { session: session.ok_or(TrackerError::NotLoggedIn)? }
            }
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
                Op::ShareFile {
                    session: session.ok_or(TrackerError::NotLoggedIn)?,
                    group,
                    meta: file,
                }
            }
            Request::StopShare { group, name } => {
                user()?;
                Op::StopShare { session: session.ok_or(TrackerError::NotLoggedIn)?, group, name }
            }
            Request::ListGroups
            | Request::ListMyGroups
            | Request::ListRequests { .. }
            | Request::ListFiles { .. }
            | Request::GetFile { .. }
            | Request::AnnouncePieces { .. }
            | Request::CheckTicket { .. }
            | Request::Heartbeat => {
                // `TrackerState::read` answers these; reaching here is a bug, not bad input.
                return Err(TrackerError::Unavailable(
                    "internal error: read routed as write".to_string(),
                ));
            }
        };
        Ok(op)
    }

    /// Checks, durably logs, then applies `op`.
    fn commit(&self, op: Op) -> Result<Reply, TrackerError> {
        let mut store = self.store.lock();
        self.state.read().check(&op)?;
        let seq = store.append(&op).map_err(|e| unavailable("storage failure", e))?;
        log::debug!("seq={seq} op={op:?}");
        let result = self.state.write().apply(&op);
        match &op {
            Op::CloseSession { session } => self.presence.lock().forget(session),
            Op::OpenSession { session, .. } if result.is_ok() => {
                self.presence.lock().touch(*session, Instant::now())
            }
            _ => {}
        }
        if store.wants_snapshot() {
            let snapshot = self.state.read().clone();
            if let Err(e) = store.snapshot(&snapshot) {
                // The log still holds everything; a failed snapshot only costs replay time.
                log::error!("store: snapshot failed: {e}");
            }
        }
        result
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn unavailable(what: &str, err: impl std::fmt::Display) -> TrackerError {
    log::error!("{what}: {err}");
    TrackerError::Unavailable(what.to_string())
}

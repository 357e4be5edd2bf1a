//! Writes: a request becomes an `Op` (`to_op`, the slow or random work outside any lock),
//! a `LogEntry` with the request's origin, checked against the state and the quotas by the
//! leader and committed through Raft (or built here and committed by the leader), and a
//! retried request is answered from the state or from its last failure.
//!
//! Locks: the state lock only for in-memory checks, never across a commit;
//! `last_failures` alone.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use common::message::{Reply, Request, RequestId, SessionId, TrackerError};
use common::PublicKey;

use super::sessions::Sessions;
use crate::cluster::{Cluster, Role};
use crate::quota::Quotas;
use crate::state::{LogEntry, Op, Origin, TicketSecret, TrackerState};

/// How many clients' last failed writes are remembered to answer a retried request.
const MAX_REMEMBERED_CLIENTS: usize = 65_536;

/// The write side of the service.
pub struct Writes {
    state: Arc<RwLock<TrackerState>>,
    cluster: Arc<Cluster>,
    quotas: Quotas,
    /// The last failed write of each client (successful ones are in the state), so a
    /// request resent after a lost reply gets the same answer.
    last_failures: Mutex<HashMap<u64, (Origin, TrackerError)>>,
}

impl Writes {
    pub fn new(state: Arc<RwLock<TrackerState>>, cluster: Arc<Cluster>, quotas: Quotas) -> Writes {
        Writes { state, cluster, quotas, last_failures: Mutex::new(HashMap::new()) }
    }

    /// A write: answered from the record if it is a retry of one already applied (maybe
    /// on another tracker), else turned into an entry and committed.
    pub fn write(
        &self,
        sessions: &Sessions,
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
            .to_op(sessions, session, client, from, request)
            .and_then(|op| self.submit(sessions, LogEntry { op, origin: Some(origin) }));
        if let Err(err) = &result {
            // Refusals that depend on the moment are not answers to remember.
            let lasting = !matches!(
                err,
                TrackerError::Unavailable(_)
                    | TrackerError::NoMajority { .. }
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
    fn submit(&self, sessions: &Sessions, entry: LogEntry) -> Result<Reply, TrackerError> {
        match self.cluster.role() {
            Role::Primary => self.commit_here(sessions, entry),
            Role::Backup { leader } => self.cluster.propose_at(leader, &entry),
            Role::Leaderless => Err(self.cluster.no_leader()),
        }
    }

    /// On the leader: checks `entry` against the state and the quotas, makes room for a
    /// new session, and commits it. Refused at once when it cannot apply now; applied (or
    /// refused) in log order otherwise.
    pub fn commit_here(&self, sessions: &Sessions, entry: LogEntry) -> Result<Reply, TrackerError> {
        {
            let state = self.state.read();
            if let Some(reply) = entry.origin.and_then(|origin| state.replied(&origin)) {
                return Ok(reply);
            }
            state.check(&entry.op)?;
            self.quotas.check(&state, &entry.op, Instant::now())?;
        }
        let Op::OpenSession { user, .. } = &entry.op else { return self.cluster.commit(&entry) };
        let started = Instant::now();
        sessions.make_room_for(user)?;
        let room = started.elapsed();
        let committed = self.cluster.commit(&entry);
        log::debug!(
            "session of {user}: room made in {room:?}, committed in {:?}",
            started.elapsed()
        );
        committed
    }

    /// Commits a fresh ticket secret if the state has none (the first leader of a new
    /// deployment).
    pub fn ensure_secret(&self) -> Result<(), TrackerError> {
        if self.state.read().has_secret() {
            return Ok(());
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| {
            log::error!("no randomness: {e}");
            TrackerError::Unavailable("no randomness".to_string())
        })?;
        let entry = LogEntry { op: Op::InitSecret { secret: TicketSecret(secret) }, origin: None };
        self.cluster.commit(&entry).map(|_| ())
    }

    /// Builds the op for a write request: resolves the session and does the work that must
    /// not happen under a lock (key derivation, password checks, randomness).
    fn to_op(
        &self,
        sessions: &Sessions,
        session: Option<SessionId>,
        client: PublicKey,
        from: IpAddr,
        request: Request,
    ) -> Result<Op, TrackerError> {
        let user = || self.state.read().session_user(session);
        let session_token = || session.ok_or(TrackerError::NotLoggedIn);
        let op = match request {
            Request::CreateUser { user, password } => sessions.sign_up(from, user, password)?,
            Request::Login { user, password, peer_addr, session: token } => {
                sessions.log_in(from, client, user, password, peer_addr, token)?
            }
            Request::Logout => Op::CloseSession { session: session_token()? },
            Request::LogoutEverywhere => Op::CloseUserSessions { user: user()? },
            Request::MoveSession { peer_addr } => {
                Op::MoveSession { session: session_token()?, peer_addr }
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
            Request::RemoveMember { group, user: member } => {
                Op::RemoveMember { owner: user()?, group, user: member }
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
            | Request::Reachable { .. }
            | Request::CheckTicket { .. }
            | Request::StateDigest
            | Request::Status
            | Request::AwaitCalls
            | Request::Reverse { .. }
            | Request::Relay { .. }
            | Request::Punch { .. }
            | Request::Heartbeat { .. } => {
                // Answered before; reaching here is a bug, not bad input.
                return Err(TrackerError::Unavailable(
                    "internal error: read routed as write".to_string(),
                ));
            }
        };
        Ok(op)
    }
}

//! The one place where client requests become operations: reads are answered from the state,
//! writes are turned into an `Op`, checked, committed to the store, then applied.
//!
//! Invariant: the store lock serializes writers and is the only lock held across disk I/O;
//! the state lock is held only for in-memory work, so reads never wait for a disk write.

use std::collections::HashMap;

use parking_lot::{Mutex, RwLock};

use common::message::{Reply, Request, RequestId, SessionToken, TrackerError};

use crate::credential::Credential;
use crate::state::{Op, TrackerState};
use crate::store::Store;

/// How many clients' last write results are remembered to answer a retried request.
const MAX_REMEMBERED_CLIENTS: usize = 65_536;

/// The outcome of a client's last write: its request sequence number and its result.
type LastWrite = (u64, Result<Reply, TrackerError>);

/// The tracker's request handler, shared by every connection thread.
pub struct Service {
    state: RwLock<TrackerState>,
    store: Mutex<Store>,
    kdf_iterations: u32,
    /// The last write of each client, so a request resent after a lost reply is not applied
    /// twice.
    last_writes: Mutex<HashMap<u64, LastWrite>>,
}

impl Service {
    /// A service over an opened store and the state it rebuilt.
    pub fn new(store: Store, state: TrackerState, kdf_iterations: u32) -> Service {
        Service {
            state: RwLock::new(state),
            store: Mutex::new(store),
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
        if let Some(result) = self.state.read().read(session, &request) {
            return result;
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
            | Request::ListFiles { .. } => {
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

fn unavailable(what: &str, err: impl std::fmt::Display) -> TrackerError {
    log::error!("{what}: {err}");
    TrackerError::Unavailable(what.to_string())
}

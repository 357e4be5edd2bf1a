//! Sessions and their throttles: account creation and login (the password hashed on the
//! `kdf_pool`, after the `login_throttle`), the binding of a session to the key it was
//! opened with, presence (heartbeats heard, a follower's reports, piece announcements),
//! the room a login past `--max-sessions-per-user` makes, and the leader's ending of idle
//! sessions.
//!
//! Locks: the state lock is held only for in-memory work, never across a commit or a
//! network call. Lock order: state, presence; `heard` alone.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use common::message::{Reply, RequestId, SessionId, SessionToken, TrackerError};
use common::replica_message::MAX_PRESENCE_REPORT;
use common::{Bitfield, GroupId, Password, PublicKey, Sha1Digest, UserId};

use crate::cluster::{Cluster, Role};
use crate::kdf_pool::{KdfPool, Priority};
use crate::login_throttle::{Attempt, LoginThrottle, ThrottleLimits};
use crate::presence::Presence;
use crate::state::{LogEntry, Op, TrackerState};

/// Sessions ended per sweep of idle ones, at most (the rest wait for the next sweep).
const MAX_EXPIRED_PER_SWEEP: usize = 1000;

/// How sessions are opened, kept and ended.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    pub kdf_iterations: u32,
    /// Password-hashing threads.
    pub kdf_threads: usize,
    pub peer_timeout: Duration,
    /// A session silent for this long is ended by the leader.
    pub idle_timeout: Duration,
    /// Sessions one user may have (`--max-sessions-per-user`).
    pub per_user: usize,
    pub throttle: ThrottleLimits,
}

/// Sessions, presence and the login throttle, shared by every connection thread.
pub struct Sessions {
    settings: SessionSettings,
    state: Arc<RwLock<TrackerState>>,
    cluster: Arc<Cluster>,
    /// Soft state, kept by the leader.
    presence: Arc<Mutex<Presence>>,
    /// On a follower: the sessions whose heartbeats it answered since its last report to
    /// the leader (only sessions of the state, so bounded by them).
    heard: Mutex<HashSet<SessionId>>,
    /// Password hashing, off the connection threads.
    kdf: KdfPool,
    throttle: LoginThrottle,
}

impl Sessions {
    pub fn new(
        settings: SessionSettings,
        state: Arc<RwLock<TrackerState>>,
        presence: Arc<Mutex<Presence>>,
        cluster: Arc<Cluster>,
    ) -> std::io::Result<Sessions> {
        Ok(Sessions {
            state,
            cluster,
            presence,
            heard: Mutex::new(HashSet::new()),
            kdf: KdfPool::new(settings.kdf_threads)?,
            throttle: LoginThrottle::new(settings.throttle),
            settings,
        })
    }

    /// Checks that `session`, if it is one of the state, is used with the key it was opened
    /// with, and notes it was heard from.
    pub fn bind(
        &self,
        id: RequestId,
        session: SessionId,
        client: PublicKey,
        now: Instant,
    ) -> Result<(), TrackerError> {
        match self.state.read().session_key(&session) {
            Some(key) if key == client => self.presence.lock().touch(session, now),
            Some(_) => {
                log::warn!("request {id:?}: {session:?} presented from another key");
                return Err(TrackerError::NotLoggedIn);
            }
            None => {}
        }
        Ok(())
    }

    /// On a follower: the session of a heartbeat if this tracker knows it (bound to
    /// `client`), noted for the next report to the leader.
    pub fn heard_from(&self, token: Option<SessionToken>, client: PublicKey) -> Option<SessionId> {
        let session =
            token.map(|t| t.id()).filter(|s| self.state.read().session_key(s) == Some(client))?;
        self.heard.lock().insert(session);
        Some(session)
    }

    /// On the leader: a follower answered heartbeats of `sessions` lately.
    pub fn heard_by_follower(&self, sessions: &[SessionId]) -> Reply {
        let now = Instant::now();
        let state = self.state.read();
        let mut presence = self.presence.lock();
        for session in sessions.iter().filter(|s| state.session_key(s).is_some()) {
            presence.touch(*session, now);
        }
        Reply::Done
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

    /// Records where the caller's peer may be reached besides its login address (issue 19).
    pub fn reachable(
        &self,
        session: Option<SessionId>,
        addrs: Vec<std::net::SocketAddr>,
    ) -> Result<Reply, TrackerError> {
        self.state.read().session_user(session)?;
        if let Some(token) = session {
            self.presence.lock().set_reachable(token, addrs);
        }
        Ok(Reply::Done)
    }

    /// Records which pieces of a file the caller has while it downloads it (the count
    /// must be the file's).
    pub fn announce(
        &self,
        session: Option<SessionId>,
        group: GroupId,
        digest: Sha1Digest,
        have: Bitfield,
    ) -> Result<Reply, TrackerError> {
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
        Ok(Reply::Done)
    }

    /// The op of a new account: the password hashed, once the throttle admits `from`. An
    /// existing name answers within the same budget of attempts as a new one, so that
    /// probing names costs what signing up does.
    pub fn sign_up(
        &self,
        from: IpAddr,
        user: UserId,
        password: Password,
    ) -> Result<Op, TrackerError> {
        self.throttle.admit_signup(from, Instant::now())?;
        if self.state.read().has_user(&user) {
            self.throttle.signup_attempted(from, Instant::now());
            return Err(TrackerError::UserExists(user));
        }
        let priority = self.kdf_priority(from, &user);
        // A `Busy` answer is not counted: the client retries it.
        let credential = self.kdf.derive(priority, password, self.settings.kdf_iterations)?;
        self.throttle.signup_attempted(from, Instant::now());
        Ok(Op::CreateUser { user, credential })
    }

    /// The op of a login: the password checked, once the throttle admits the attempt (a
    /// known device of the user is held back only by its own failures, and hashed first).
    pub fn log_in(
        &self,
        from: IpAddr,
        client: PublicKey,
        user: UserId,
        password: Password,
        peer_addr: SocketAddr,
        token: SessionToken,
    ) -> Result<Op, TrackerError> {
        let now = Instant::now();
        let known = self.throttle.is_known(&client, &user, now)
            || self.state.read().key_has_session_of(&client, &user);
        let attempt = Attempt { ip: from, key: client, user: &user, known };
        self.throttle.admit_login(attempt, now)?;
        let credential = match self.state.read().credential(&user) {
            Ok(credential) => credential,
            Err(unknown) => {
                // Guessing user names counts as guessing passwords.
                self.throttle.login_failed(attempt, Instant::now());
                return Err(unknown);
            }
        };
        let priority = match known {
            true => Priority::Known,
            false => self.kdf_priority(from, &user),
        };
        let checking = Instant::now();
        let right = self.kdf.verify(priority, credential, password)?;
        log::debug!(
            "login of {user} from {from} ({priority:?}): admitted in {:?}, password checked in {:?}",
            checking.duration_since(now),
            checking.elapsed()
        );
        if !right {
            self.throttle.login_failed(attempt, Instant::now());
            return Err(TrackerError::WrongPassword);
        }
        self.throttle.login_succeeded(attempt, Instant::now());
        // Only the token's hash is stored, logged and replicated.
        Ok(Op::OpenSession { session: token.id(), user, peer_addr, key: client })
    }

    /// Before a login of `user` who has every session the quota allows: ends the one
    /// silent the longest if it is not live, or refuses the login.
    pub fn make_room_for(&self, user: &UserId) -> Result<(), TrackerError> {
        let limit = self.settings.per_user.max(1);
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
    pub fn expire_idle(&self) {
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
                .filter(|s| presence.silent_for(s, now) > self.settings.idle_timeout)
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

    /// On becoming the leader: soft state starts afresh (every session counts as live for
    /// one peer timeout, while clients' heartbeats find their way here).
    pub fn restart_presence(&self) {
        *self.presence.lock() = Presence::new(Instant::now(), self.settings.peer_timeout);
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
    ) -> Duration {
        self.throttle.refusal_hold(from, user, refused, Instant::now())
    }

    /// Whether `token` is a live session opened with `client`'s key (as far as this
    /// tracker has applied: for the frame limit of a connection, not for access).
    pub fn has_session(&self, token: &SessionToken, client: &PublicKey) -> bool {
        self.state.read().session_key(&token.id()) == Some(*client)
    }

    /// Whether `key` holds a session (as far as this tracker has applied).
    pub fn key_has_session(&self, key: &PublicKey) -> bool {
        self.state.read().key_has_session(key)
    }

    /// Hashes for addresses, or users, that failed lately wait behind everyone else's.
    fn kdf_priority(&self, from: IpAddr, user: &UserId) -> Priority {
        match self.throttle.is_suspect(from, user, Instant::now()) {
            true => Priority::Suspect,
            false => Priority::Clean,
        }
    }
}

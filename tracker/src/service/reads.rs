//! Reads: answers from the replicated state (and, on the leader, the soft state), once
//! the caller waited for its read barrier: lists, heartbeats' memberships, a file's peers
//! with a ticket, ticket checks and the state's digest.
//!
//! Locks: state then presence, for in-memory work only.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use common::message::{PeerCall, PeerInfo, Reply, Request, SessionId, Ticket, TrackerError};
use common::{FileName, GroupId, PublicKey, Sha1Digest};

use crate::cluster::Cluster;
use crate::presence::Presence;
use crate::state::TrackerState;

/// The read side of the service.
pub struct Reads {
    state: Arc<RwLock<TrackerState>>,
    presence: Arc<Mutex<Presence>>,
    cluster: Arc<Cluster>,
    /// How long a ticket issued with a file's peers stays valid.
    ticket_lifetime: std::time::Duration,
}

impl Reads {
    pub fn new(
        state: Arc<RwLock<TrackerState>>,
        presence: Arc<Mutex<Presence>>,
        cluster: Arc<Cluster>,
        ticket_lifetime: std::time::Duration,
    ) -> Reads {
        Reads { state, presence, cluster, ticket_lifetime }
    }

    /// The answer to a pure read of the state (`None`: `request` is not one).
    pub fn query(
        &self,
        session: Option<SessionId>,
        request: &Request,
        now: Instant,
    ) -> Option<Result<Reply, TrackerError>> {
        let state = self.state.read();
        let presence = self.presence.lock();
        state.read(session, request, &|s| presence.is_live(s, now))
    }

    /// The answer to a heartbeat of `session`: its user's memberships if their version is
    /// not `known`. O(the caller's groups): the state keeps an index of each user's groups.
    pub fn alive(
        &self,
        session: Option<SessionId>,
        known: Option<u64>,
    ) -> Result<Reply, TrackerError> {
        let state = self.state.read();
        let memberships = state.memberships(&state.session_user(session)?);
        let changed = known != Some(memberships.version);
        Ok(Reply::Alive { memberships: changed.then_some(memberships) })
    }

    /// Whether `ticket` is valid now (for a caller in a session).
    pub fn check_ticket(
        &self,
        session: Option<SessionId>,
        ticket: &Ticket,
    ) -> Result<Reply, TrackerError> {
        let state = self.state.read();
        state.session_user(session)?;
        state.verify_ticket(ticket, unix_now()).map(|()| Reply::TicketOk)
    }

    /// The state's digest, for a caller in a session (its sequence number tells how busy
    /// the tracker is: members only).
    pub fn state_digest(&self, session: Option<SessionId>) -> Result<Reply, TrackerError> {
        self.state.read().session_user(session)?;
        let (seq, digest) = self.digest();
        Ok(Reply::StateDigest { seq, digest })
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

    /// A file's metadata, its live peers other than the caller (with the keys they must
    /// prove), and a ticket for them bound to the caller's key.
    pub fn get_file(
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
            .filter_map(|s| Some((s, state.session_peer(s)?)))
            .map(|(s, (user, addr, key))| PeerInfo {
                user: user.clone(),
                addr,
                key,
                have: None,
                addrs: presence.reachable(s),
            })
            .collect();
        // The metadata's own piece count (checked when it was shared): a folder's pieces
        // are its files', not those of one file of its size (issue 23).
        let n_pieces = u32::try_from(meta.pieces.len()).unwrap_or(0);
        for (s, have) in presence.partial_holders(&group, &meta.digest) {
            if wanted(&s) && !complete.contains(&s) && have.n_pieces() == n_pieces {
                if let Some((user, addr, key)) = state.session_peer(&s) {
                    let addrs = presence.reachable(&s);
                    peers.push(PeerInfo { user: user.clone(), addr, key, have: Some(have), addrs });
                }
            }
        }
        let expires = unix_now() + self.ticket_lifetime.as_secs();
        let ticket = state
            .mint_ticket(client, user, group, meta.digest, expires)
            .ok_or_else(|| TrackerError::Unavailable("no ticket secret yet".to_string()))?;
        Ok(Reply::FileInfo { meta: meta.clone(), peers, ticket: Box::new(ticket) })
    }
}

impl Reads {
    /// The call to pass to the peer that proved `seeder` for a reversal `client` asks for
    /// (issue 19): the caller's own valid ticket names the file, `seeder` must be a live
    /// sharer of it (whole or in part), and the call carries where the caller registered
    /// it listens, never an address it names in the request.
    pub fn reversal_call(
        &self,
        session: Option<SessionId>,
        client: PublicKey,
        ticket: &Ticket,
        seeder: &PublicKey,
        nonce: u64,
        now: Instant,
    ) -> Result<PeerCall, TrackerError> {
        let state = self.state.read();
        let user = state.session_user(session)?;
        state.verify_ticket(ticket, unix_now())?;
        if ticket.holder != client || ticket.user != user {
            return Err(TrackerError::BadTicket("not the caller's own ticket".to_string()));
        }
        let presence = self.presence.lock();
        let partial = presence.partial_holders(&ticket.group, &ticket.digest);
        let shares = state
            .sharers_of(&ticket.group, &ticket.digest)
            .copied()
            .chain(partial.into_iter().map(|(s, _)| s))
            .any(|s| presence.is_live(&s, now) && state.session_key(&s) == Some(*seeder));
        if !shares {
            return Err(TrackerError::CannotReverse(
                "that peer does not share the file".to_string(),
            ));
        }
        let caller = session.ok_or(TrackerError::NotLoggedIn)?;
        let login_addr = state.session_peer(&caller).map(|(_, addr, _)| addr);
        let addrs =
            common::peer_addr::sanitize(presence.reachable(&caller).into_iter().chain(login_addr));
        Ok(PeerCall {
            from: client,
            user,
            addrs,
            group: ticket.group.clone(),
            digest: ticket.digest,
            nonce,
            relay: None,
            punch: false,
        })
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

//! The trackers as one Raft group: this tracker's `RaftNode` (see `raft_node`), its links
//! to the others (`raft_transport`), the serving side of tracker connections, and the
//! forwarding of clients' requests from a follower to the leader.
//!
//! Roles: the Raft leader is the **primary** (it commits writes and keeps soft state); a
//! follower is a **backup of M**: it answers pure reads itself after a ReadIndex barrier
//! (linearizable) and forwards everything else to leader M. With no leader (no majority
//! reachable, or an election running) requests are refused with `Unavailable`, naming how
//! many voters this tracker reaches, and clients try another tracker.
//!
//! `force-serve` (an operator's command on stdin) makes a tracker that lost its majority
//! for good the only voter, so that it serves alone. It bumps the group's *generation*,
//! which every Raft message carries: a tracker that hears a newer generation than its own
//! stops (its data predates the forcing; it must come back empty with `--join`, and the
//! leader then adds it as a learner and, once caught up, as a voter), and messages of an
//! older generation are dropped. What the others committed that the forced tracker never
//! received is lost: that is the price of serving without a majority.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use parking_lot::Mutex;
use raft::StateRole;

use common::connection::Connection;
use common::frame::FrameError;
use common::message::{Reply, Request, RequestId, SessionId, SessionToken, TrackerError};
use common::replica_message::{ReplicaReply, ReplicaRequest};
use common::tracker_info::TrackerInfoFile;
use common::{Identity, PublicKey};

use crate::raft_node::{
    NodeOptions, NodeStatus, ProposeError, RaftNode, RaftNodeError, ELECTION_TICKS, TICK,
};
use crate::raft_store::RaftStore;
use crate::raft_transport::{self, Contacts, Generation, PeerLinks, Reassembly};
use crate::state::LogEntry;
use crate::state_machine::StateMachine;

/// How long a write may wait to be committed before the client is told to retry (it is
/// then answered from the log if it did commit).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a read may wait for its barrier.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a forwarded request may take at the leader (a key derivation, a commit);
/// clients wait 12 s for an answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a follower waiting for a forwarded answer checks that its leader still leads.
const FORWARD_POLL: Duration = Duration::from_millis(100);
/// Idle forwarding connections kept to the leader.
const MAX_IDLE_FORWARD_CONNECTIONS: usize = 8;
/// Requests a follower forwards to the leader at once, at most (the rest wait their turn).
pub const MAX_FORWARD_CONNECTIONS: usize = 12;

/// This tracker's place in the group, as its Raft node last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Leads: commits writes, keeps soft state.
    Primary,
    /// Follows leader `leader`.
    Backup { leader: u32 },
    /// Knows no leader (an election runs, or no majority is reachable).
    Leaderless,
}

/// The Raft group as this tracker takes part in it.
pub struct Cluster {
    pub id: u32,
    /// Votes and keeps the log, but serves no client directly.
    pub witness: bool,
    node: RaftNode<Result<Reply, TrackerError>>,
    contacts: Arc<Contacts>,
    forwarder: Forwarder,
    /// See the module documentation.
    generation: Generation,
    /// A blank tracker started with `--join` takes the generation of the first tracker
    /// that talks to it.
    adoptable: AtomicBool,
    /// Why this tracker must stop (a newer generation was heard).
    fenced: Mutex<Option<String>>,
}

impl Cluster {
    /// Starts this tracker's Raft node over `store`, applying to `machine`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        id: u32,
        witness: bool,
        join: bool,
        store: RaftStore,
        machine: StateMachine,
        trackers: Arc<TrackerInfoFile>,
        identity: Arc<Identity>,
    ) -> Result<Cluster, RaftNodeError> {
        let voters: Vec<u64> = trackers.current().trackers().map(|(t, _)| u64::from(t)).collect();
        let others: Vec<u64> = voters.iter().copied().filter(|v| *v != u64::from(id)).collect();
        let generation: Generation = Arc::new(store.generation()?.into());
        let adoptable = AtomicBool::new(join && store.is_blank());
        let links = PeerLinks::start(
            id,
            &others,
            Arc::clone(&trackers),
            Arc::clone(&identity),
            Arc::clone(&generation),
        )?;
        let options = NodeOptions { witness, join, known: voters.clone() };
        let node = RaftNode::start(
            u64::from(id),
            &voters,
            store,
            Box::new(machine),
            Box::new(links),
            options,
        )?;
        Ok(Cluster {
            id,
            witness,
            node,
            contacts: Arc::new(Contacts::default()),
            forwarder: Forwarder::new(id, trackers, identity),
            generation,
            adoptable,
            fenced: Mutex::new(None),
        })
    }

    /// The Raft node's status.
    pub fn status(&self) -> NodeStatus {
        self.node.status()
    }

    /// This tracker's role.
    pub fn role(&self) -> Role {
        let status = self.node.status();
        match (status.role, u32::try_from(status.leader)) {
            (StateRole::Leader, _) => Role::Primary,
            (_, Ok(leader)) if leader != 0 => Role::Backup { leader },
            _ => Role::Leaderless,
        }
    }

    /// Commits `entry` (on the leader) and returns what applying it answered.
    pub fn commit(&self, entry: &LogEntry) -> Result<Reply, TrackerError> {
        let answer = self.node.propose(entry.encode());
        match answer.recv_timeout(COMMIT_TIMEOUT) {
            Ok(Ok((_, result))) => result,
            Ok(Err(ProposeError::NotLeader { leader: Some(l) })) => Err(TrackerError::Unavailable(
                format!("tracker {} no longer leads ({l} does)", self.id),
            )),
            Ok(Err(ProposeError::NotLeader { leader: None })) => Err(self.no_leader()),
            Ok(Err(why @ (ProposeError::LeaderChanged | ProposeError::ReadTimeout))) => {
                // The entry may still commit under the new leader: a retry of the same
                // request is answered from the log, never applied twice.
                Err(TrackerError::Unavailable(format!("{why}; retrying")))
            }
            Ok(Err(why @ (ProposeError::Busy | ProposeError::Stopped))) => {
                Err(TrackerError::Unavailable(format!("tracker {}: {why}", self.id)))
            }
            Err(_) => Err(TrackerError::Unavailable(
                "the change was not confirmed in time; retrying".to_string(),
            )),
        }
    }

    /// Waits until this tracker's state holds every write acknowledged before the call.
    pub fn read_barrier(&self) -> Result<(), TrackerError> {
        match self.node.read_barrier().recv_timeout(READ_TIMEOUT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(ProposeError::NotLeader { .. })) => Err(self.no_leader()),
            Ok(Err(ProposeError::ReadTimeout)) | Err(_) => Err(self.no_leader()),
            Ok(Err(why)) => Err(TrackerError::Unavailable(format!("tracker {}: {why}", self.id))),
        }
    }

    /// The refusal while no leader is known: how many voters this tracker reaches, and
    /// whether they are a majority (then an election runs).
    pub fn no_leader(&self) -> TrackerError {
        let (up, n) = self.voters_up();
        if up > n / 2 {
            return TrackerError::Unavailable(format!(
                "tracker {} is electing a leader ({up} of {n} trackers reachable)",
                self.id
            ));
        }
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        TrackerError::NoMajority { tracker: self.id, reached: count(up), voters: count(n) }
    }

    /// "tracker N is electing a leader ..." or "no majority: ..." (for the log).
    pub fn describe_quorum(&self) -> String {
        match self.no_leader() {
            TrackerError::Unavailable(why) => why,
            other => other.to_string(),
        }
    }

    /// How many voters of the configuration in force this tracker heard from lately
    /// (itself included, if it votes), and how many there are.
    pub fn voters_up(&self) -> (usize, usize) {
        let status = self.node.status();
        let me = u64::from(self.id);
        let others: Vec<u64> = status.voters().iter().copied().filter(|v| *v != me).collect();
        let recent = TICK * (2 * ELECTION_TICKS as u32);
        let itself = usize::from(status.voters().contains(&me));
        (itself + self.contacts.reachable(&others, recent), status.voters().len())
    }

    /// Sends a client's request to leader `leader` and returns its answer.
    pub fn forward(
        &self,
        leader: u32,
        id: RequestId,
        session: Option<SessionToken>,
        client: PublicKey,
        request: Request,
    ) -> Result<Reply, TrackerError> {
        let still_leader = || self.role() == Role::Backup { leader };
        let msg = ReplicaRequest::Forward { id, session, client, request };
        self.forwarder.forward(leader, &msg, still_leader)
    }

    /// The other trackers `tracker_info.txt` lists.
    pub fn other_trackers(&self) -> Vec<u32> {
        let info = self.forwarder.trackers.current();
        info.trackers().map(|(id, _)| id).filter(|id| *id != self.id).collect()
    }

    /// Has tracker `to` pass `call` to the peer that proved `callee`, if it waits there
    /// (issue 19: connection reversal). `Done` when it did.
    pub fn pass_call(
        &self,
        to: u32,
        callee: PublicKey,
        call: common::message::PeerCall,
    ) -> Result<Reply, TrackerError> {
        let msg = ReplicaRequest::Call { callee, call };
        self.forwarder.forward(to, &msg, || true)
    }

    /// Tells leader `leader` which sessions this follower heard from (their heartbeats).
    pub fn report_presence(
        &self,
        leader: u32,
        sessions: Vec<SessionId>,
    ) -> Result<Reply, TrackerError> {
        let still_leader = || self.role() == Role::Backup { leader };
        let msg = ReplicaRequest::Presence { sessions };
        self.forwarder.forward(leader, &msg, still_leader)
    }

    /// Has leader `leader` commit `entry` (built here from a client's request) and returns
    /// what applying it answered.
    pub fn propose_at(&self, leader: u32, entry: &LogEntry) -> Result<Reply, TrackerError> {
        let still_leader = || self.role() == Role::Backup { leader };
        let msg = ReplicaRequest::Propose { entry: entry.encode() };
        self.forwarder.forward(leader, &msg, still_leader)
    }

    /// Notes a role change; returns the line to print if the leader this tracker knows of
    /// changed.
    pub fn note_role(&self, previous: &mut Option<(Role, u64)>) -> Option<String> {
        let status = self.node.status();
        let now = (self.role(), status.term);
        if previous.map(|p| p.0) == Some(now.0) {
            return None;
        }
        let first = previous.is_none();
        *previous = Some(now);
        let what = match (now.0, self.witness) {
            (Role::Primary, _) => "primary".to_string(),
            (Role::Backup { leader }, true) => format!("witness (leader {leader})"),
            (Role::Backup { leader }, false) => format!("backup of {leader}"),
            (Role::Leaderless, _) if first => {
                log::info!("tracker {}: waiting for a leader", self.id);
                return None;
            }
            (Role::Leaderless, _) => {
                let why = self.describe_quorum();
                log::warn!("tracker {}: no leader (term {}): {why}", self.id, now.1);
                return None;
            }
        };
        Some(format!("tracker {} serving as {what} (term {})", self.id, now.1))
    }

    /// Why this tracker must stop, if it must: its Raft node stopped (a storage failure),
    /// or a newer generation was heard.
    pub fn stopped(&self) -> Option<String> {
        if let Some(why) = self.fenced.lock().clone() {
            return Some(why);
        }
        (!self.node.is_running()).then(|| "the raft node stopped (see the log)".to_string())
    }

    /// The generation (see the module documentation).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The operator's `force-serve`: this tracker becomes the only voter of a new
    /// generation and leads. Returns what to tell the operator.
    pub fn force_serve(&self) -> Result<String, String> {
        if self.role() == Role::Primary {
            return Err(format!("tracker {} already leads; nothing to force", self.id));
        }
        if self.witness {
            return Err(format!("tracker {} is a witness and cannot serve alone", self.id));
        }
        let generation = self.generation() + 1;
        self.save_generation(generation)?;
        self.generation.store(generation, Ordering::Relaxed);
        match self.node.force_alone().recv_timeout(READ_TIMEOUT) {
            Ok(Ok(())) => Ok(format!(
                "tracker {}: forced to serve alone (generation {generation}). Changes the other \
                 trackers committed without this one are lost. Before starting any of them \
                 again, empty its data directory (keep tracker.key) and start it with --join: \
                 this tracker adds it back once it has caught up.",
                self.id
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the raft node did not answer".to_string()),
        }
    }

    /// Durably records `generation` before this tracker acts on it, through the Raft
    /// thread (which owns the store).
    fn save_generation(&self, generation: u64) -> Result<(), String> {
        match self.node.save_generation(generation).recv_timeout(READ_TIMEOUT) {
            Ok(saved) => saved,
            Err(_) => Err("the raft node did not record the generation in time".to_string()),
        }
    }

    /// Checks the generation of a Raft message from tracker `from`: whether to take it.
    fn admit_generation(&self, from: u32, theirs: u64) -> bool {
        let ours = self.generation();
        if theirs == ours {
            return true;
        }
        if theirs > ours && self.adoptable.swap(false, Ordering::Relaxed) {
            if let Err(e) = self.save_generation(theirs) {
                log::error!("cannot record generation {theirs}: {e}");
                self.adoptable.store(true, Ordering::Relaxed);
                return false;
            }
            self.generation.store(theirs, Ordering::Relaxed);
            log::info!("tracker {}: joined generation {theirs} (from tracker {from})", self.id);
            return true;
        }
        if theirs > ours {
            let why = format!(
                "tracker {from} was forced to serve alone (generation {theirs}, ours {ours}): \
                 this tracker's data predates that and must not be used; empty its data \
                 directory (keep tracker.key) and start it again with --join"
            );
            log::error!("{why}");
            *self.fenced.lock() = Some(why);
        } else {
            log::warn!(
                "tracker {from} runs the abandoned generation {theirs} (ours {ours}); \
                 ignoring it until it is restarted empty with --join"
            );
        }
        false
    }
}

/// What the leader does with the requests other trackers send on their links: the
/// service implements it, so that this module carries them without knowing the service.
pub trait ReplicaRequests {
    /// A client's request that tracker `from` forwarded, with the key the client proved.
    fn forwarded(
        &self,
        from: u32,
        id: RequestId,
        token: Option<SessionToken>,
        client: PublicKey,
        request: Request,
    ) -> Result<Reply, TrackerError>;
    /// An entry tracker `from` built (a login or an account whose password it hashed).
    fn proposed(&self, from: u32, entry: &[u8]) -> Result<Reply, TrackerError>;
    /// Sessions whose heartbeats tracker `from` answered lately.
    fn presence(&self, from: u32, sessions: &[SessionId]) -> Result<Reply, TrackerError>;
    /// A reversal call the leader (`from`) passes on for `callee`, if it waits here.
    fn call(
        &self,
        from: u32,
        callee: PublicKey,
        call: common::message::PeerCall,
    ) -> Result<Reply, TrackerError>;
}

/// Serves a connection opened by tracker `from` (which proved its listed key): Raft
/// messages go to the node, forwarded client requests to `requests`.
pub fn serve(
    mut conn: Connection<ReplicaRequest, ReplicaReply>,
    cluster: &Cluster,
    requests: &dyn ReplicaRequests,
    from: u32,
) -> Result<(), FrameError> {
    let mut reassembly = Reassembly::new(u64::from(from), u64::from(cluster.id));
    while let Some(request) = conn.recv()? {
        match request {
            ReplicaRequest::Raft { generation, .. }
                if !cluster.admit_generation(from, generation) =>
            {
                return Ok(());
            }
            ReplicaRequest::Raft { part, last, .. } => match reassembly.part(&part, last) {
                Ok(Some(msg)) => {
                    cluster.contacts.heard(u64::from(from));
                    cluster.node.step(msg);
                }
                Ok(None) => {}
                Err(e) => {
                    log::warn!("tracker {from}: {e}; closing its link");
                    return Ok(());
                }
            },
            ReplicaRequest::Forward { id, session, client, request } => {
                let result = requests.forwarded(from, id, session, client, request);
                conn.send(&ReplicaReply::Forwarded { result })?;
            }
            ReplicaRequest::Propose { entry } => {
                let result = requests.proposed(from, &entry);
                conn.send(&ReplicaReply::Forwarded { result })?;
            }
            ReplicaRequest::Presence { sessions } => {
                let result = requests.presence(from, &sessions);
                conn.send(&ReplicaReply::Forwarded { result })?;
            }
            ReplicaRequest::Call { callee, call } => {
                let result = requests.call(from, callee, call);
                conn.send(&ReplicaReply::Forwarded { result })?;
            }
        }
    }
    Ok(())
}

/// Watches the node: hands `announce` a `serving as` line when the leader changes, and
/// runs `on_lead` each time this tracker becomes the leader; stops when `stop` closes, or
/// with the reason the tracker must stop (see `Cluster::stopped`).
pub fn watch(
    cluster: &Cluster,
    stop: Receiver<()>,
    announce: impl Fn(&str),
    on_lead: impl Fn(),
) -> Result<(), String> {
    let mut previous = None;
    let ticker = crossbeam_channel::tick(TICK);
    loop {
        crossbeam_channel::select! {
            recv(stop) -> _ => return Ok(()),
            recv(ticker) -> _ => {}
        }
        if let Some(why) = cluster.stopped() {
            return Err(why);
        }
        let was_primary = matches!(previous, Some((Role::Primary, _)));
        if let Some(line) = cluster.note_role(&mut previous) {
            log::info!("{line}");
            announce(&line);
        }
        if !was_primary && matches!(previous, Some((Role::Primary, _))) {
            on_lead();
        }
    }
}

/// A follower's connections to the leader for forwarding client requests (with the key
/// each client proved, which only a tracker may vouch for): a small pool, so that one slow
/// forwarded request (a key derivation) does not hold up the others.
pub struct Forwarder {
    id: u32,
    trackers: Arc<TrackerInfoFile>,
    identity: Arc<Identity>,
    idle: Mutex<Vec<(u32, Connection<ReplicaReply, ReplicaRequest>)>>,
    /// Forwards in flight (each on a connection of its own), at most
    /// `MAX_FORWARD_CONNECTIONS`: the leader keeps only `TRACKER_SLOTS` for trackers.
    in_flight: Mutex<usize>,
    slot_freed: parking_lot::Condvar,
}

/// A forward in flight, counted until dropped.
struct ForwardSlot<'a>(&'a Forwarder);

impl Drop for ForwardSlot<'_> {
    fn drop(&mut self) {
        *self.0.in_flight.lock() -= 1;
        self.0.slot_freed.notify_one();
    }
}

impl Forwarder {
    pub fn new(id: u32, trackers: Arc<TrackerInfoFile>, identity: Arc<Identity>) -> Forwarder {
        Forwarder {
            id,
            trackers,
            identity,
            idle: Mutex::new(Vec::new()),
            in_flight: Mutex::new(0),
            slot_freed: parking_lot::Condvar::new(),
        }
    }

    /// Waits (up to `FORWARD_TIMEOUT`) for one of the `MAX_FORWARD_CONNECTIONS`.
    fn slot(&self) -> Option<ForwardSlot<'_>> {
        let deadline = std::time::Instant::now() + FORWARD_TIMEOUT;
        let mut in_flight = self.in_flight.lock();
        while *in_flight >= MAX_FORWARD_CONNECTIONS {
            if self.slot_freed.wait_until(&mut in_flight, deadline).timed_out() {
                return None;
            }
        }
        *in_flight += 1;
        Some(ForwardSlot(self))
    }

    /// Sends a client's request to the leader and returns its answer. While waiting, it
    /// gives up as soon as `still_leader` says `leader` is no longer this tracker's leader
    /// (cut off, paused, deposed), so that the client tries another tracker within about
    /// an election timeout rather than after `FORWARD_TIMEOUT`.
    pub fn forward(
        &self,
        leader: u32,
        msg: &ReplicaRequest,
        still_leader: impl Fn() -> bool,
    ) -> Result<Reply, TrackerError> {
        let unreachable =
            || TrackerError::Unavailable(format!("leader tracker {leader} unreachable"));
        let Some(_slot) = self.slot() else {
            return Err(TrackerError::Busy(format!(
                "tracker {} has {MAX_FORWARD_CONNECTIONS} requests waiting on the leader",
                self.id
            )));
        };
        for _ in 0..2 {
            let pooled = {
                let mut idle = self.idle.lock();
                idle.retain(|(l, _)| *l == leader);
                idle.pop()
            };
            let mut conn = match pooled {
                Some((_, conn)) => conn,
                None => raft_transport::connect_tracker(
                    &self.trackers,
                    &self.identity,
                    self.id,
                    leader,
                    FORWARD_TIMEOUT,
                )
                .map_err(|e| {
                    log::warn!("tracker {}: cannot reach leader {leader}: {e}", self.id);
                    unreachable()
                })?,
            };
            if let Err(e) = conn.send(msg) {
                // A pooled connection may have been closed by the leader: try a fresh one.
                log::info!("forwarding to tracker {leader} failed: {e}");
                continue;
            }
            let sent = std::time::Instant::now();
            loop {
                match conn.wait_readable(FORWARD_POLL) {
                    Ok(true) => break,
                    Ok(false) if still_leader() && sent.elapsed() < FORWARD_TIMEOUT => {}
                    Ok(false) => {
                        log::info!("tracker {leader} stopped answering; giving up");
                        return Err(TrackerError::Unavailable(format!(
                            "leader tracker {leader} stopped answering; retrying"
                        )));
                    }
                    Err(e) => {
                        log::info!("forwarding to tracker {leader} failed: {e}");
                        break;
                    }
                }
            }
            let answer = conn.recv();
            match answer {
                Ok(Some(ReplicaReply::Forwarded { result })) => {
                    let mut idle = self.idle.lock();
                    if idle.len() < MAX_IDLE_FORWARD_CONNECTIONS {
                        idle.push((leader, conn));
                    }
                    return result;
                }
                // A pooled connection may have been closed by the leader: try a fresh one.
                other => log::info!("forwarding to tracker {leader} failed: {other:?}"),
            }
        }
        Err(unreachable())
    }
}

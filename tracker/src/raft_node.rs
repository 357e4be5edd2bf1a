//! The Raft driver (issue 9, step 2): one thread (`raft-N`) owns a raft-rs `RawNode` over a
//! `RaftStore`, ticks it, and drives every `Ready` in the order raft-rs prescribes: send
//! the leader's messages, install a snapshot, apply committed entries, persist new entries
//! and the hard state (one transaction), send the messages that had to wait for that, then
//! advance. Proposals and messages from the other nodes reach the thread over one bounded
//! crossbeam channel, so the thread is the only one that touches the `RawNode`.
//!
//! The effect of an entry is not decided here: `Apply` receives each committed entry (and
//! snapshots), in log order, exactly once per start. A proposal's caller learns the index
//! its entry was committed at, or why it was not (this node does not lead, or lost the
//! lead before the entry committed: the entry may still commit later under the new leader,
//! as in every Raft client protocol).
//!
//! PreVote and CheckQuorum are on: a partitioned node cannot disrupt the others with a
//! higher term, and a leader that loses its majority steps down within an election timeout.
//!
//! Reads are linearizable through ReadIndex (`read_barrier`): the leader confirms with a
//! majority that it still leads, and the caller waits until this node has applied up to the
//! leader's commit index at that moment. No clock is trusted. Concurrent reads share one
//! ReadIndex round (`read_rounds`): one round is in flight at a time, and the reads that
//! arrive meanwhile wait for the next, which starts when it ends.
//!
//! A witness (`RaftNode::start` with `witness`) votes and keeps the log; when it is elected
//! it hands the lead to the most up-to-date other voter at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, select, tick, Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType,
    Snapshot,
};
use raft::{Config, RawNode, SnapshotStatus, StateRole, Storage};

use crate::answer::{answer, Answer, Reply};
use crate::raft_store::{RaftStore, RaftStoreError};
use crate::read_rounds::{ReadRounds, Start};

/// One tick of the Raft clock.
pub const TICK: Duration = Duration::from_millis(50);
/// Ticks without a leader's word before a follower campaigns (raft-rs randomizes it up to
/// twice this): 0.5 to 1 s.
pub const ELECTION_TICKS: usize = 10;
/// Ticks between a leader's heartbeats.
const HEARTBEAT_TICKS: usize = 2;
/// Inputs waiting for the driver thread at most.
const INBOX: usize = 4096;
/// Applied entries kept in the log before a snapshot replaces them.
pub const COMPACT_AFTER: u64 = 4096;

/// Readies handled in one go at most (see `Driver::drive`).
const MAX_READY_PER_DRIVE: usize = 4;

/// A read round that waited this long for the leader's confirmation gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// What a committed entry does: the application's state machine.
pub trait Apply: Send {
    /// What applying an entry answers its proposer.
    type Output: Send + 'static;
    /// Applies the entry at `index` (entries come in log order, each once per start). An
    /// error (an entry this build cannot read) stops the node: applying less than the
    /// others would make its state diverge.
    fn entry(&mut self, index: u64, data: &[u8]) -> Result<Self::Output, String>;
    /// Replaces the state with a snapshot's, as of `index` (an error stops the node).
    fn snapshot(&mut self, index: u64, data: &[u8]) -> Result<(), String>;
    /// The state as of the last applied entry, for a snapshot: taken here (on the Raft
    /// thread; a copy, not an encoding), encoded by the returned work on the `snap-N`
    /// thread while this one goes on applying.
    fn freeze(&self) -> Frozen;
    /// The state as of the last applied entry, encoded at once.
    fn state(&self) -> Vec<u8> {
        (self.freeze())()
    }
}

/// A copy of the application's state that encodes itself, off the Raft thread.
pub type Frozen = Box<dyn FnOnce() -> Vec<u8> + Send>;

/// How messages reach the other nodes (best effort: Raft retries).
pub trait Transport: Send {
    fn send(&self, msg: Message);
}

/// Why a node could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum RaftNodeError {
    #[error(transparent)]
    Store(#[from] RaftStoreError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("cannot start the raft thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("cannot apply {what} at index {index}: {reason}")]
    Apply { what: &'static str, index: u64, reason: String },
}

/// Why a proposal did not commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("this tracker does not lead (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("the leader changed before the change was committed")]
    LeaderChanged,
    #[error("too many changes waiting")]
    Busy,
    #[error("no leader confirmed the read in time")]
    ReadTimeout,
    #[error("the raft node stopped")]
    Stopped,
}

/// A node's place in its group, as last seen by its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: u64,
    pub role: StateRole,
    pub term: u64,
    /// The leader this node knows of (0: none).
    pub leader: u64,
    pub commit: u64,
    pub applied: u64,
    /// The term and index of the last entry in this node's log.
    pub last_term: u64,
    pub last_index: u64,
    /// The voters of the configuration.
    pub voters: [u64; MAX_VOTERS],
    pub n_voters: usize,
}

impl NodeStatus {
    /// The voters of the configuration, ascending.
    pub fn voters(&self) -> &[u64] {
        &self.voters[..self.n_voters]
    }
}

/// Voters a status can name (the trackers of `tracker_info.txt` are few).
pub const MAX_VOTERS: usize = 16;

/// What a proposal's caller hears: the entry's index and what applying it answered.
pub type Proposed<O> = Result<(u64, O), ProposeError>;

enum Input<O> {
    Propose { data: Vec<u8>, reply: Reply<Proposed<O>> },
    Read { reply: Reply<Result<(), ProposeError>> },
    Message(Box<Message>),
    ForceAlone { reply: Sender<Result<(), String>> },
    SaveGeneration { generation: u64, reply: Sender<Result<(), String>> },
}

/// A snapshot to encode on the `snap-N` thread: the applied index it is as of, the
/// configuration then, and the frozen state.
type SnapshotJob = (u64, ConfState, Frozen);
/// An encoded snapshot back from the `snap-N` thread.
type Encoded = (u64, ConfState, Vec<u8>);

/// A running Raft node; dropping it stops the driver thread.
pub struct RaftNode<O: Send + 'static> {
    inbox: Option<Sender<Input<O>>>,
    status: Arc<Mutex<NodeStatus>>,
    thread: Option<JoinHandle<()>>,
}

/// How a node takes part.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// A voter that never keeps the lead (see the module documentation).
    pub witness: bool,
    /// With an empty store: start with no configuration and wait to be added by a leader
    /// (a tracker brought back after `force_alone`), instead of bootstrapping one.
    pub join: bool,
    /// Every node that should be in the group: a leader adds those missing as learners,
    /// and makes each a voter once it has caught up.
    pub known: Vec<u64>,
}

impl<O: Send + 'static> RaftNode<O> {
    /// Starts node `id` of a group of `voters` on `store` (a fresh store is initialized with
    /// that configuration; an existing one keeps its own).
    pub fn start(
        id: u64,
        voters: &[u64],
        store: RaftStore,
        apply: Box<dyn Apply<Output = O>>,
        transport: Box<dyn Transport>,
        options: NodeOptions,
    ) -> Result<RaftNode<O>, RaftNodeError> {
        let state = store.initial_state()?;
        let mut conf_voters = state.conf_state.voters.clone();
        let fresh = conf_voters.is_empty() && state.conf_state.learners.is_empty();
        if fresh && !options.join {
            let conf = raft::eraftpb::ConfState { voters: voters.to_vec(), ..Default::default() };
            store.set_conf_state(&conf)?;
            conf_voters = voters.to_vec();
        }
        // The state machine starts from the snapshot, if any: raft-rs then hands over the
        // committed entries after it.
        let snapshot = store.snapshot(0, 0)?;
        let snapshot_index = snapshot.get_metadata().index;
        // The saved commit index may lag behind the snapshot (`drive` saves it only along
        // with entries, a term or a vote); raft-rs refuses to start below the snapshot, and
        // a snapshot holds only committed entries.
        let mut hard_state = store.hard_state();
        if hard_state.commit < snapshot_index {
            hard_state.commit = snapshot_index;
            store.persist(&[], Some(&hard_state))?;
        }
        let mut apply = apply;
        if snapshot_index > 0 {
            apply.snapshot(snapshot_index, &snapshot.data).map_err(|reason| {
                RaftNodeError::Apply { what: "the snapshot", index: snapshot_index, reason }
            })?;
        }
        let config = Config {
            id,
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            pre_vote: true,
            check_quorum: true,
            // The state machine is rebuilt at every start, from the snapshot and the log
            // (the application keeps no state of its own across starts).
            applied: snapshot_index,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        let logger = slog::Logger::root(LogDrain, slog::o!("raft" => id));
        let mut node = RawNode::new(&config, store, &logger)?;
        if conf_voters == [id] && !options.witness && options.known.iter().all(|k| *k == id) {
            // Nobody to wait for: lead at once rather than after an election timeout.
            node.campaign()?;
        }
        let status = Arc::new(Mutex::new(NodeStatus {
            id,
            role: StateRole::Follower,
            term: 0,
            leader: 0,
            commit: 0,
            applied: 0,
            last_term: 0,
            last_index: 0,
            voters: [0; MAX_VOTERS],
            n_voters: 0,
        }));
        let (inbox, inputs) = bounded(INBOX);
        let mut nonce = [0u8; 8];
        // Tells this run's proposals from a previous leader's (whose entries may commit
        // under this one); a clock will do where randomness fails.
        if getrandom::fill(&mut nonce).is_err() {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            nonce = now.map(|d| d.as_nanos() as u64).unwrap_or(0).to_be_bytes();
        }
        let (snapshot_jobs, jobs) = bounded::<SnapshotJob>(1);
        let (encoded_tx, encoded) = bounded::<Encoded>(1);
        let snapshotter =
            std::thread::Builder::new().name(format!("snap-{id}")).spawn(move || {
                // Encodes one snapshot at a time; stops when the driver drops its sender.
                for (index, conf, frozen) in jobs {
                    if encoded_tx.send((index, conf, frozen())).is_err() {
                        break;
                    }
                }
            })?;
        let driver = Driver {
            node,
            snapshot_jobs: Some(snapshot_jobs),
            snapshotter: Some(snapshotter),
            snapshot_in_flight: false,
            apply,
            transport,
            status: Arc::clone(&status),
            pending: HashMap::new(),
            nonce,
            next_proposal: 1,
            applied: snapshot_index,
            reads: ReadRounds::default(),
            reads_confirmed: Vec::new(),
            witness: options.witness,
            leader_seen: 0,
            known: options.known,
            compact_soon: false,
            snapshots_sent: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("raft-{id}"))
            .spawn(move || driver.run(inputs, encoded))?;
        Ok(RaftNode { inbox: Some(inbox), status, thread: Some(thread) })
    }

    /// Proposes `data`; the answer arrives (`Answer`: a waiter parks at once) once the entry is
    /// committed and applied here (its index and what applying it answered), or as soon
    /// as it cannot be.
    pub fn propose(&self, data: Vec<u8>) -> Answer<Proposed<O>> {
        let (reply, answer) = answer();
        self.send_input(Input::Propose { data, reply: reply.clone() }, |why| {
            reply.send(Err(why));
        });
        answer
    }

    /// A linearizable read point: answers once this node has applied everything committed
    /// before the call (as confirmed by a leader that a majority still follows), so that
    /// reading its state then sees every write acknowledged before the call.
    pub fn read_barrier(&self) -> Answer<Result<(), ProposeError>> {
        let (reply, answer) = answer();
        self.send_input(Input::Read { reply: reply.clone() }, |why| {
            reply.send(Err(why));
        });
        answer
    }

    /// Makes this node the only voter, without the consent of the others, and lets it
    /// lead: the operator's way out when a majority is gone for good. What the others
    /// committed that this node never received is lost, and they must not come back with
    /// their old logs (see `cluster`). Answers once the configuration is changed.
    pub fn force_alone(&self) -> Receiver<Result<(), String>> {
        let (reply, answer) = bounded(1);
        self.send_input(Input::ForceAlone { reply: reply.clone() }, |why| {
            let _ = reply.send(Err(why.to_string()));
        });
        answer
    }

    /// Durably records the group's generation (see `cluster`) in this node's store, on the
    /// Raft thread (the one owner of the store's connection). Answers once it is on disk.
    pub fn save_generation(&self, generation: u64) -> Receiver<Result<(), String>> {
        let (reply, answer) = bounded(1);
        self.send_input(Input::SaveGeneration { generation, reply: reply.clone() }, |why| {
            let _ = reply.send(Err(why.to_string()));
        });
        answer
    }

    fn send_input(&self, input: Input<O>, refuse: impl FnOnce(ProposeError)) {
        match self.inbox.as_ref().map(|inbox| inbox.try_send(input)) {
            Some(Ok(())) => {}
            Some(Err(TrySendError::Full(_))) => refuse(ProposeError::Busy),
            Some(Err(TrySendError::Disconnected(_))) | None => refuse(ProposeError::Stopped),
        }
    }

    /// Hands the driver a message from another node (dropped when the inbox is full: Raft
    /// retries).
    pub fn step(&self, msg: Message) {
        if let Some(inbox) = &self.inbox {
            let _ = inbox.try_send(Input::Message(Box::new(msg)));
        }
    }

    /// This node's role, term, leader, commit and applied index.
    pub fn status(&self) -> NodeStatus {
        *self.status.lock()
    }

    /// Whether the driver thread still runs (it stops when the log cannot be written or
    /// an entry cannot be applied).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl<O: Send + 'static> Drop for RaftNode<O> {
    fn drop(&mut self) {
        drop(self.inbox.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Driver<O> {
    node: RawNode<RaftStore>,
    /// Snapshots to encode, to the `snap-N` thread (dropped at exit, which stops it).
    snapshot_jobs: Option<Sender<SnapshotJob>>,
    snapshotter: Option<JoinHandle<()>>,
    /// A snapshot is being encoded (one at a time).
    snapshot_in_flight: bool,
    apply: Box<dyn Apply<Output = O>>,
    transport: Box<dyn Transport>,
    status: Arc<Mutex<NodeStatus>>,
    /// Proposals waiting for their entry, by the number carried in the entry's context
    /// (after this run's nonce).
    pending: HashMap<u64, Reply<Proposed<O>>>,
    nonce: [u8; 8],
    next_proposal: u64,
    applied: u64,
    /// Reads waiting for the leader's confirmation: one ReadIndex round in flight, the
    /// reads that arrived during it waiting for the next.
    reads: ReadRounds<Reply<Result<(), ProposeError>>>,
    /// Confirmed reads waiting for this node to apply up to their index.
    reads_confirmed: Vec<(u64, Reply<Result<(), ProposeError>>)>,
    witness: bool,
    /// The leader the last status named (reads asked of another leader are failed).
    leader_seen: u64,
    /// Every node that should be in the group (see `NodeOptions::known`).
    known: Vec<u64>,
    /// Take a snapshot as soon as an entry after the last one is applied: after the
    /// configuration changed, so that a node added later starts from a snapshot whose
    /// configuration names it (raft-rs ignores one that does not).
    compact_soon: bool,
    /// Followers sent a snapshot in this `Ready` (reported to raft-rs after it).
    snapshots_sent: Vec<u64>,
}

impl<O: Send + 'static> Driver<O> {
    fn run(mut self, inputs: Receiver<Input<O>>, encoded: Receiver<Encoded>) {
        let ticker = tick(TICK);
        loop {
            select! {
                recv(encoded) -> snapshot => {
                    if let Ok((index, conf, data)) = snapshot {
                        if let Err(e) = self.store_snapshot(index, &conf, data) {
                            log::error!("raft {}: {e}; stopping this node", self.node.raft.id);
                            break;
                        }
                    }
                }
                recv(inputs) -> input => match input {
                    Ok(input) => {
                        self.take(input);
                        // Batch: everything already waiting goes into the same Ready.
                        while let Ok(more) = inputs.try_recv() {
                            self.take(more);
                        }
                    }
                    Err(_) => break,
                },
                recv(ticker) -> _ => {
                    self.node.tick();
                    self.expire_reads();
                    self.grow();
                }
            }
            if let Err(e) = self.drive() {
                // The log cannot be written: this node must stop taking part rather than
                // acknowledge what is not durable.
                log::error!("raft {}: {e}; stopping this node", self.node.raft.id);
                break;
            }
        }
        self.fail_pending(ProposeError::Stopped);
        drop(self.snapshot_jobs.take());
        if let Some(snapshotter) = self.snapshotter.take() {
            let _ = snapshotter.join();
        }
    }

    fn take(&mut self, input: Input<O>) {
        match input {
            Input::Propose { data, reply } => {
                if self.node.raft.state != StateRole::Leader {
                    let leader = Some(self.node.raft.leader_id).filter(|l| *l != 0);
                    reply.send(Err(ProposeError::NotLeader { leader }));
                    return;
                }
                let id = self.next_proposal;
                self.next_proposal += 1;
                match self.node.propose(self.context(id), data) {
                    Ok(()) => {
                        self.pending.insert(id, reply);
                    }
                    Err(_) => {
                        reply.send(Err(ProposeError::LeaderChanged));
                    }
                }
            }
            Input::Read { reply } => {
                if self.node.raft.leader_id == 0 {
                    reply.send(Err(ProposeError::NotLeader { leader: None }));
                    return;
                }
                if let Some(start) = self.reads.arrive(reply, std::time::Instant::now()) {
                    self.ask_read_index(start);
                }
            }
            Input::Message(msg) => {
                if let Err(e) = self.node.step(*msg) {
                    log::debug!("raft {}: message refused: {e}", self.node.raft.id);
                }
            }
            Input::ForceAlone { reply } => {
                let _ = reply.send(self.force_alone().map_err(|e| e.to_string()));
            }
            Input::SaveGeneration { generation, reply } => {
                let saved = self.node.store().save_generation(generation);
                let _ = reply.send(saved.map_err(|e| e.to_string()));
            }
        }
    }

    /// Removes every other voter from the configuration, here only, and campaigns (a
    /// group of one wins at once).
    fn force_alone(&mut self) -> Result<(), RaftNodeError> {
        let me = self.node.raft.id;
        let mut conf = None;
        for other in self.voters().into_iter().filter(|v| *v != me) {
            let cc = ConfChange {
                change_type: ConfChangeType::RemoveNode,
                node_id: other,
                ..Default::default()
            };
            conf = Some(self.node.apply_conf_change(&cc)?);
        }
        if let Some(conf) = conf {
            self.node.store().set_conf_state(&conf)?;
        }
        log::warn!("raft {me}: forced to be the only voter");
        self.compact_soon = true;
        self.node.campaign()?;
        Ok(())
    }

    /// Applies a committed configuration change (encoded as `C`).
    fn apply_conf_change<C: raft_proto::ConfChangeI + protobuf::Message>(
        &mut self,
        index: u64,
        data: &[u8],
    ) -> Result<(), RaftNodeError> {
        let cc = C::parse_from_bytes(data).map_err(|e| RaftNodeError::Apply {
            what: "the conf change",
            index,
            reason: e.to_string(),
        })?;
        let conf = self.node.apply_conf_change(&cc)?;
        self.node.store().set_conf_state(&conf)?;
        let id = self.node.raft.id;
        log::info!("raft {id}: configuration now {:?} (learners {:?})", conf.voters, conf.learners);
        self.compact_soon = true;
        Ok(())
    }

    /// The voters of the configuration in force, ascending.
    fn voters(&self) -> Vec<u64> {
        let mut voters = self.node.raft.prs().conf().to_conf_state().voters;
        voters.sort_unstable();
        voters
    }

    /// A leader brings in the known nodes missing from the configuration: as a learner
    /// first (it does not count toward a majority while it catches up), then as a voter
    /// once its log matches the commit index. One change at a time.
    fn grow(&mut self) {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader || raft.has_pending_conf() || self.witness {
            return;
        }
        let conf = raft.prs().conf().to_conf_state();
        let missing = self
            .known
            .iter()
            .copied()
            .find(|k| !conf.voters.contains(k) && !conf.learners.contains(k));
        let caught_up =
            conf.learners.iter().copied().find(|l| {
                raft.prs().get(*l).is_some_and(|pr| pr.matched >= raft.raft_log.committed)
            });
        let change = match (missing, caught_up) {
            (Some(id), _) => (ConfChangeType::AddLearnerNode, id),
            (None, Some(id)) => (ConfChangeType::AddNode, id),
            (None, None) => return,
        };
        log::info!("raft {}: proposing {:?} of {}", raft.id, change.0, change.1);
        let cc = ConfChange { change_type: change.0, node_id: change.1, ..Default::default() };
        if let Err(e) = self.node.propose_conf_change(Vec::new(), cc) {
            log::warn!("raft {}: cannot propose a configuration change: {e}", self.node.raft.id);
        }
    }

    /// The context of this run's proposal or read number `id`.
    fn context(&self, id: u64) -> Vec<u8> {
        let mut context = self.nonce.to_vec();
        context.extend_from_slice(&id.to_be_bytes());
        context
    }

    /// The number in a context made by `context` in this run.
    fn ours(&self, context: &[u8]) -> Option<u64> {
        let (nonce, id) = context.split_at_checked(8)?;
        (nonce == self.nonce).then_some(())?;
        Some(u64::from_be_bytes(id.try_into().ok()?))
    }

    /// Starts ReadIndex round `id` (its read state comes back with the round's context).
    fn ask_read_index(&mut self, Start(id): Start) {
        self.node.read_index(self.context(id));
    }

    /// Fails the read round in flight with `why`, and starts the next (if a leader is known
    /// to ask; else its readers fail too).
    fn fail_read_round(&mut self, why: ProposeError) {
        let leader_known = self.node.raft.leader_id != 0;
        let (failed, next) = self.reads.fail(leader_known, std::time::Instant::now());
        for reply in failed {
            reply.send(Err(why.clone()));
        }
        if let Some(start) = next {
            self.ask_read_index(start);
        }
    }

    /// A read round whose confirmation never came (no leader, or the leader lost its
    /// majority).
    fn expire_reads(&mut self) {
        if self.reads.expired(std::time::Instant::now(), READ_TIMEOUT) {
            self.fail_read_round(ProposeError::ReadTimeout);
        }
    }

    /// Answers confirmed reads this node has applied far enough for.
    fn release_reads(&mut self) {
        let applied = self.applied;
        self.reads_confirmed.retain(|(index, reply)| {
            let waiting = *index > applied;
            if !waiting {
                reply.send(Ok(()));
            }
            waiting
        });
    }

    /// Handles what the node has ready, then what that changed (a lost lead, a new
    /// leader, a read round to start), as long as that makes more ready (a few times at
    /// most: the next input or tick comes soon anyway), and publishes the status.
    fn drive(&mut self) -> Result<(), RaftNodeError> {
        for _ in 0..MAX_READY_PER_DRIVE {
            if self.node.has_ready() {
                self.handle_ready()?;
            }
            self.after_ready();
            if !self.node.has_ready() {
                break;
            }
        }
        self.publish_status();
        Ok(())
    }

    fn handle_ready(&mut self) -> Result<(), RaftNodeError> {
        let mut ready = self.node.ready();
        self.send(ready.take_messages());
        let mut next_round = None;
        for read in ready.take_read_states() {
            let Some(id) = self.ours(&read.request_ctx) else { continue };
            if let Some((readers, next)) = self.reads.confirmed(id, std::time::Instant::now()) {
                self.reads_confirmed.extend(readers.into_iter().map(|r| (read.index, r)));
                next_round = next.or(next_round);
            }
        }
        if !ready.snapshot().is_empty() {
            self.install(ready.snapshot().clone())?;
        }
        self.commit(ready.take_committed_entries())?;
        // The commit index is volatile in Raft (raft-rs: a `LightReady`'s "is not
        // required to save it to stable storage"): a hard state that only moves it
        // is not worth an fsync of its own, which would double the fsyncs per write
        // on every node. It rides along with the next entries, term or vote (and
        // `start` raises it to the snapshot's index if it lags behind that).
        let hard_state = ready.hs().filter(|hs| {
            let stored = self.node.store().hard_state();
            !ready.entries().is_empty() || hs.term != stored.term || hs.vote != stored.vote
        });
        let hard_state = hard_state.cloned();
        if !ready.entries().is_empty() || hard_state.is_some() {
            self.node.store().persist(ready.entries(), hard_state.as_ref())?;
        }
        self.send(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        self.send(light.take_messages());
        self.commit(light.take_committed_entries())?;
        self.node.advance_apply();
        // raft-rs keeps a follower it sent a snapshot to paused until told how the
        // send went. The transport is best effort, so report it sent: the follower
        // is probed, and gets another snapshot if this one was lost (without this, a
        // follower that died before acknowledging a snapshot was never caught up).
        for to in std::mem::take(&mut self.snapshots_sent) {
            self.node.report_snapshot(to, SnapshotStatus::Finish);
        }
        self.release_reads();
        self.maybe_compact()?;
        // Asked once this Ready is done with: its message goes out with the next one.
        if let Some(start) = next_round {
            self.ask_read_index(start);
        }
        Ok(())
    }

    /// What a Ready (or a tick, or a message) changed that callers must hear.
    fn after_ready(&mut self) {
        // A leader that stepped down (in a tick, a message or this Ready) cannot tell
        // whether its pending entries will commit: their callers hear so now.
        if self.node.raft.state != StateRole::Leader && !self.pending.is_empty() {
            self.fail_pending(ProposeError::LeaderChanged);
        }
        if self.node.raft.leader_id != self.leader_seen {
            // The read round asked of the old leader may never be confirmed; the reads
            // waiting for the next round ask the new one.
            self.leader_seen = self.node.raft.leader_id;
            self.fail_read_round(ProposeError::LeaderChanged);
        }
        if self.witness && self.node.raft.state == StateRole::Leader {
            self.hand_over_lead();
        }
    }

    fn publish_status(&mut self) {
        let raft = &self.node.raft;
        let conf_voters = self.voters();
        let n_voters = conf_voters.len().min(MAX_VOTERS);
        let mut voters = [0; MAX_VOTERS];
        voters[..n_voters].copy_from_slice(&conf_voters[..n_voters]);
        *self.status.lock() = NodeStatus {
            id: raft.id,
            role: raft.state,
            term: raft.term,
            leader: raft.leader_id,
            commit: raft.raft_log.committed,
            applied: self.applied,
            last_term: raft.raft_log.last_term(),
            last_index: raft.raft_log.last_index(),
            voters,
            n_voters,
        };
    }

    /// A witness that was elected passes the lead to the voter whose log matches furthest
    /// (once it has committed in its term: raft-rs transfers only then).
    fn hand_over_lead(&mut self) {
        let raft = &self.node.raft;
        if raft.lead_transferee.is_some() {
            return;
        }
        let me = raft.id;
        let best = raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != me)
            .max_by_key(|(id, pr)| (pr.matched, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id);
        if let Some(to) = best {
            log::info!("raft {me}: a witness does not lead; handing over to {to}");
            self.node.transfer_leader(to);
        }
    }

    fn send(&mut self, messages: Vec<Message>) {
        for msg in messages {
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                self.snapshots_sent.push(msg.to);
            }
            self.transport.send(msg);
        }
    }

    fn install(&mut self, snapshot: Snapshot) -> Result<(), RaftNodeError> {
        self.node.store().apply_snapshot(&snapshot)?;
        let index = snapshot.get_metadata().index;
        self.apply.snapshot(index, &snapshot.data).map_err(|reason| RaftNodeError::Apply {
            what: "a snapshot",
            index,
            reason,
        })?;
        self.applied = index;
        Ok(())
    }

    fn commit(&mut self, entries: Vec<Entry>) -> Result<(), RaftNodeError> {
        for entry in entries {
            if entry.index <= self.applied {
                continue;
            }
            self.applied = entry.index;
            match entry.entry_type {
                EntryType::EntryNormal => {}
                EntryType::EntryConfChange => {
                    self.apply_conf_change::<ConfChange>(entry.index, &entry.data)?;
                    continue;
                }
                EntryType::EntryConfChangeV2 => {
                    self.apply_conf_change::<ConfChangeV2>(entry.index, &entry.data)?;
                    continue;
                }
            }
            if entry.data.is_empty() {
                // A new leader's empty entry.
                continue;
            }
            let index = entry.index;
            let output = self
                .apply
                .entry(index, &entry.data)
                .map_err(|reason| RaftNodeError::Apply { what: "the entry", index, reason })?;
            if let Some(reply) = self.ours(&entry.context).and_then(|id| self.pending.remove(&id)) {
                reply.send(Ok((entry.index, output)));
            }
        }
        Ok(())
    }

    /// Takes a snapshot every `COMPACT_AFTER` applied entries (or soon after a
    /// configuration change): the state is frozen here, encoded on the `snap-N` thread,
    /// and stored when it comes back (`store_snapshot`), so a large state never holds up
    /// this thread for its encoding.
    fn maybe_compact(&mut self) -> Result<(), RaftNodeError> {
        if self.snapshot_in_flight {
            return Ok(());
        }
        let first = self.node.store().first_index()?;
        let forced = self.compact_soon && self.applied >= first;
        if forced {
            self.compact_soon = false;
        }
        if forced || self.applied >= first + COMPACT_AFTER {
            let conf = self.node.store().conf_state();
            let job = (self.applied, conf, self.apply.freeze());
            let Some(jobs) = &self.snapshot_jobs else { return Ok(()) };
            match jobs.try_send(job) {
                Ok(()) => self.snapshot_in_flight = true,
                // The encoder is gone (it cannot be busy: one job at a time): encode here.
                Err(e) => {
                    let (index, conf, frozen) = e.into_inner();
                    self.node.store().compact_as_of(index, &conf, frozen())?;
                }
            }
        }
        Ok(())
    }

    /// Stores a snapshot encoded by the `snap-N` thread: it replaces the log up to its
    /// index, unless a newer snapshot (one received from the leader) replaced it meanwhile.
    fn store_snapshot(
        &mut self,
        index: u64,
        conf: &ConfState,
        data: Vec<u8>,
    ) -> Result<(), RaftNodeError> {
        self.snapshot_in_flight = false;
        if index < self.node.store().first_index()? {
            return Ok(());
        }
        self.node.store().compact_as_of(index, conf, data)?;
        Ok(())
    }

    fn fail_pending(&mut self, why: ProposeError) {
        for (_, reply) in self.pending.drain() {
            reply.send(Err(why.clone()));
        }
    }
}

/// raft-rs logs through slog; this forwards its records to `log` (target `raft`).
struct LogDrain;

impl slog::Drain for LogDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let level = match record.level() {
            slog::Level::Critical | slog::Level::Error => log::Level::Error,
            slog::Level::Warning => log::Level::Warn,
            slog::Level::Info => log::Level::Info,
            slog::Level::Debug => log::Level::Debug,
            slog::Level::Trace => log::Level::Trace,
        };
        log::log!(target: "raft", level, "{}", record.msg());
        Ok(())
    }
}

#[cfg(test)]
mod tests;

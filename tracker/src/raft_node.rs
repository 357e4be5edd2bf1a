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

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, select, tick, Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use raft::eraftpb::{Entry, EntryType, Message, Snapshot};
use raft::{Config, RawNode, StateRole, Storage};

use crate::raft_store::{RaftStore, RaftStoreError};

/// One tick of the Raft clock.
pub const TICK: Duration = Duration::from_millis(100);
/// Ticks without a leader's word before a follower campaigns (raft-rs randomizes it up to
/// twice this): 1 to 2 s.
const ELECTION_TICKS: usize = 10;
/// Ticks between a leader's heartbeats.
const HEARTBEAT_TICKS: usize = 2;
/// Inputs waiting for the driver thread at most.
const INBOX: usize = 4096;
/// Applied entries kept in the log before a snapshot replaces them.
pub const COMPACT_AFTER: u64 = 4096;

/// What a committed entry does: the application's state machine.
pub trait Apply: Send {
    /// Applies the entry at `index` (entries come in log order, each once per start).
    fn entry(&mut self, index: u64, data: &[u8]);
    /// Replaces the state with a snapshot's, as of `index`.
    fn snapshot(&mut self, index: u64, data: &[u8]);
    /// The state as of the last applied entry, for a snapshot.
    fn state(&self) -> Vec<u8>;
}

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
}

enum Input {
    Propose { data: Vec<u8>, reply: Sender<Result<u64, ProposeError>> },
    Message(Box<Message>),
}

/// A running Raft node; dropping it stops the driver thread.
pub struct RaftNode {
    inbox: Option<Sender<Input>>,
    status: Arc<Mutex<NodeStatus>>,
    thread: Option<JoinHandle<()>>,
}

impl RaftNode {
    /// Starts node `id` of a group of `voters` on `store` (a fresh store is initialized with
    /// that configuration; an existing one keeps its own).
    pub fn start(
        id: u64,
        voters: &[u64],
        store: RaftStore,
        apply: Box<dyn Apply>,
        transport: Box<dyn Transport>,
    ) -> Result<RaftNode, RaftNodeError> {
        let state = store.initial_state()?;
        if state.conf_state.voters.is_empty() {
            let conf = raft::eraftpb::ConfState { voters: voters.to_vec(), ..Default::default() };
            store.set_conf_state(&conf)?;
        }
        // The state machine starts from the snapshot, if any: raft-rs then hands over the
        // committed entries after it.
        let snapshot = store.snapshot(0, 0)?;
        let snapshot_index = snapshot.get_metadata().index;
        let mut apply = apply;
        if snapshot_index > 0 {
            apply.snapshot(snapshot_index, &snapshot.data);
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
        let node = RawNode::new(&config, store, &logger)?;
        let status = Arc::new(Mutex::new(NodeStatus {
            id,
            role: StateRole::Follower,
            term: 0,
            leader: 0,
            commit: 0,
            applied: 0,
        }));
        let (inbox, inputs) = bounded(INBOX);
        let driver = Driver {
            node,
            apply,
            transport,
            status: Arc::clone(&status),
            pending: HashMap::new(),
            next_proposal: 1,
            applied: snapshot_index,
        };
        let thread = std::thread::Builder::new()
            .name(format!("raft-{id}"))
            .spawn(move || driver.run(inputs))?;
        Ok(RaftNode { inbox: Some(inbox), status, thread: Some(thread) })
    }

    /// Proposes `data`; the answer arrives on the returned channel once the entry is
    /// committed and applied here (its index), or as soon as it cannot be.
    pub fn propose(&self, data: Vec<u8>) -> Receiver<Result<u64, ProposeError>> {
        let (reply, answer) = bounded(1);
        let input = Input::Propose { data, reply: reply.clone() };
        let refused = match self.inbox.as_ref().map(|inbox| inbox.try_send(input)) {
            Some(Ok(())) => None,
            Some(Err(TrySendError::Full(_))) => Some(ProposeError::Busy),
            Some(Err(TrySendError::Disconnected(_))) | None => Some(ProposeError::Stopped),
        };
        if let Some(why) = refused {
            let _ = reply.send(Err(why));
        }
        answer
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
}

impl Drop for RaftNode {
    fn drop(&mut self) {
        drop(self.inbox.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Driver {
    node: RawNode<RaftStore>,
    apply: Box<dyn Apply>,
    transport: Box<dyn Transport>,
    status: Arc<Mutex<NodeStatus>>,
    /// Proposals waiting for their entry, by the id carried in the entry's context.
    pending: HashMap<u64, Sender<Result<u64, ProposeError>>>,
    next_proposal: u64,
    applied: u64,
}

impl Driver {
    fn run(mut self, inputs: Receiver<Input>) {
        let ticker = tick(TICK);
        loop {
            select! {
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
    }

    fn take(&mut self, input: Input) {
        match input {
            Input::Propose { data, reply } => {
                if self.node.raft.state != StateRole::Leader {
                    let leader = Some(self.node.raft.leader_id).filter(|l| *l != 0);
                    let _ = reply.send(Err(ProposeError::NotLeader { leader }));
                    return;
                }
                let id = self.next_proposal;
                self.next_proposal += 1;
                match self.node.propose(id.to_be_bytes().to_vec(), data) {
                    Ok(()) => {
                        self.pending.insert(id, reply);
                    }
                    Err(_) => {
                        let _ = reply.send(Err(ProposeError::LeaderChanged));
                    }
                }
            }
            Input::Message(msg) => {
                if let Err(e) = self.node.step(*msg) {
                    log::debug!("raft {}: message refused: {e}", self.node.raft.id);
                }
            }
        }
    }

    fn drive(&mut self) -> Result<(), RaftNodeError> {
        if self.node.has_ready() {
            let mut ready = self.node.ready();
            self.send(ready.take_messages());
            if !ready.snapshot().is_empty() {
                self.install(ready.snapshot().clone())?;
            }
            self.commit(ready.take_committed_entries());
            let hard_state = ready.hs().cloned();
            self.node.store().persist(ready.entries(), hard_state.as_ref())?;
            self.send(ready.take_persisted_messages());
            let mut light = self.node.advance(ready);
            if let Some(commit) = light.commit_index() {
                let mut hs = self.node.store().hard_state();
                hs.commit = commit;
                self.node.store().persist(&[], Some(&hs))?;
            }
            self.send(light.take_messages());
            self.commit(light.take_committed_entries());
            self.node.advance_apply();
            self.maybe_compact()?;
        }
        // A leader that stepped down (in a tick, a message or this Ready) cannot tell
        // whether its pending entries will commit: their callers hear so now.
        if self.node.raft.state != StateRole::Leader && !self.pending.is_empty() {
            self.fail_pending(ProposeError::LeaderChanged);
        }
        let raft = &self.node.raft;
        *self.status.lock() = NodeStatus {
            id: raft.id,
            role: raft.state,
            term: raft.term,
            leader: raft.leader_id,
            commit: raft.raft_log.committed,
            applied: self.applied,
        };
        Ok(())
    }

    fn send(&self, messages: Vec<Message>) {
        for msg in messages {
            self.transport.send(msg);
        }
    }

    fn install(&mut self, snapshot: Snapshot) -> Result<(), RaftStoreError> {
        self.node.store().apply_snapshot(&snapshot)?;
        let index = snapshot.get_metadata().index;
        self.apply.snapshot(index, &snapshot.data);
        self.applied = index;
        Ok(())
    }

    fn commit(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            if entry.index <= self.applied {
                continue;
            }
            self.applied = entry.index;
            if entry.entry_type != EntryType::EntryNormal {
                // Membership is fixed by tracker_info.txt; no conf changes are proposed.
                continue;
            }
            if !entry.data.is_empty() {
                self.apply.entry(entry.index, &entry.data);
            }
            let proposal = <[u8; 8]>::try_from(&entry.context[..]).ok().map(u64::from_be_bytes);
            if let Some(reply) = proposal.and_then(|id| self.pending.remove(&id)) {
                let _ = reply.send(Ok(entry.index));
            }
        }
    }

    fn maybe_compact(&mut self) -> Result<(), RaftNodeError> {
        let first = self.node.store().first_index()?;
        if self.applied >= first + COMPACT_AFTER {
            self.node.store().compact(self.applied, self.apply.state())?;
        }
        Ok(())
    }

    fn fail_pending(&mut self, why: ProposeError) {
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(why.clone()));
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

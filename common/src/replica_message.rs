//! The tracker ↔ tracker protocol: one typed enum per direction.
//!
//! A tracker opens a secure channel to another, proving the key `tracker_info.txt` lists
//! for it, and sends `ClientMessage::ReplicaHello`; from then on the opener sends
//! `ReplicaRequest`s. Two kinds of connection use it:
//! - a **Raft stream** (one per ordered pair of trackers) carries Raft messages one way,
//!   with no reply: Raft itself retries what is lost;
//! - a **forwarding** connection carries a client's request from a follower to the leader
//!   (`Forward`), or an entry the follower built (`Propose`), and its answer back
//!   (`ReplicaReply::Forwarded`); the leader opens the same kind of connection to pass a
//!   reversal call to the tracker where its peer waits (`Call`).
//!
//! Raft messages are raft-rs's protobuf encoding, cut into parts of at most
//! `RAFT_PART_MAX` bytes (a snapshot may be far larger than one frame); the receiver
//! reassembles them up to a bound and decodes only what an authenticated tracker sent.

use serde::{Deserialize, Serialize};

use crate::identity::PublicKey;
use crate::message::{PeerCall, Reply, Request, RequestId, SessionId, SessionToken, TrackerError};

/// The largest part of a Raft message in one frame.
pub const RAFT_PART_MAX: usize = 1024 * 1024;

/// Sent by the tracker that opened the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaRequest {
    /// A part of one encoded Raft message; `last` ends the message. No reply.
    /// `generation` counts the times an operator forced a tracker to serve alone: trackers
    /// of different generations never take each other's messages.
    Raft { generation: u64, part: Vec<u8>, last: bool },
    /// From a follower to the leader: a client's request, with the key that client proved
    /// to the follower (sessions are bound to it).
    Forward { id: RequestId, session: Option<SessionToken>, client: PublicKey, request: Request },
    /// From a follower to the leader: an entry to commit, which the follower built from a
    /// client's request (a login or a new account, whose password it hashed). Answered
    /// with `ReplicaReply::Forwarded`.
    Propose { entry: Vec<u8> },
    /// From a follower to the leader, every second: the sessions whose heartbeats it
    /// answered since its last report (at most `MAX_PRESENCE_REPORT`). Answered with
    /// `ReplicaReply::Forwarded`.
    Presence { sessions: Vec<SessionId> },
    /// From the leader to any tracker (issue 19, connection reversal): pass `call` to the
    /// peer that proved `callee`, if it waits for calls here (`Request::AwaitCalls`).
    /// Answered with `ReplicaReply::Forwarded`: `Done` when it was passed on.
    Call { callee: PublicKey, call: PeerCall },
}

/// The most sessions one `Presence` report names (32 bytes each, well within a frame).
pub const MAX_PRESENCE_REPORT: usize = 65_536;

/// The answer to a `ReplicaRequest::Forward`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaReply {
    Forwarded { result: Result<Reply, TrackerError> },
}

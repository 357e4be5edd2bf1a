//! The tracker ↔ tracker (replication) protocol: one typed enum per direction.
//!
//! A tracker opens a secure channel to another, proving the key `tracker_info.txt` lists
//! for it, and sends `ClientMessage::ReplicaHello`; from then on
//! the opener sends `ReplicaRequest`s and the other answers each with one `ReplicaReply`.
//! The primary of a view opens one such connection to every other member and ships log
//! entries over it; a tracker that (re)starts opens one to ask for its view and to join.
//! Every message that acts on state carries the sender's view, so that a tracker acting on
//! an old view is refused (`Stale`) instead of obeyed.

use serde::{Deserialize, Serialize};

use crate::identity::PublicKey;
use crate::message::{Reply, Request, RequestId, SessionToken, TrackerError};

/// Which trackers are in service, and which of them leads.
///
/// Invariant: `members` is sorted, without duplicates, never empty, and holds `primary`.
/// A tracker that joins becomes a backup; when the primary leaves, the lowest-id backup
/// (the first one every entry is shipped to) succeeds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// Increases with every change of membership; persisted before it is acted on.
    pub epoch: u64,
    /// The tracker that orders and ships every write.
    pub primary: u32,
    /// Tracker ids (line numbers of `tracker_info.txt`).
    pub members: Vec<u32>,
}

impl View {
    /// The view of a single tracker.
    pub fn solo(epoch: u64, id: u32) -> View {
        View { epoch, primary: id, members: vec![id] }
    }

    /// The primary.
    pub fn primary(&self) -> u32 {
        self.primary
    }

    /// Whether tracker `id` is a member.
    pub fn contains(&self, id: u32) -> bool {
        self.members.contains(&id)
    }

    /// The backups, in the order entries are shipped to them (ascending id).
    pub fn backups(&self) -> impl Iterator<Item = u32> + '_ {
        self.members.iter().copied().filter(move |&m| m != self.primary)
    }

    /// The next view without the trackers in `gone`; if the primary is among them, the
    /// lowest-id remaining member leads. `None` if nobody would remain.
    pub fn without(&self, gone: &[u32]) -> Option<View> {
        let members: Vec<u32> =
            self.members.iter().copied().filter(|m| !gone.contains(m)).collect();
        let primary = if gone.contains(&self.primary) { *members.first()? } else { self.primary };
        Some(View { epoch: self.epoch + 1, primary, members })
    }

    /// The next view with tracker `id` added as a backup.
    pub fn with(&self, id: u32) -> View {
        let mut members = self.members.clone();
        if !members.contains(&id) {
            members.push(id);
            members.sort_unstable();
        }
        View { epoch: self.epoch + 1, primary: self.primary, members }
    }

    /// Whether the invariant holds (for views decoded from the wire).
    pub fn is_well_formed(&self) -> bool {
        !self.members.is_empty()
            && self.members.windows(2).all(|w| w[0] < w[1])
            && self.contains(self.primary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joiners_are_backups_and_the_lowest_backup_succeeds() {
        let v = View::solo(1, 2).with(1).with(3);
        assert_eq!(v, View { epoch: 3, primary: 2, members: vec![1, 2, 3] });
        assert_eq!(v.backups().collect::<Vec<_>>(), [1, 3]);
        assert_eq!(v.without(&[2]), Some(View { epoch: 4, primary: 1, members: vec![1, 3] }));
        assert_eq!(v.without(&[3]), Some(View { epoch: 4, primary: 2, members: vec![1, 2] }));
        assert_eq!(View::solo(1, 1).without(&[1]), None);
        assert!(v.is_well_formed());
        assert!(!View { epoch: 1, primary: 5, members: vec![1] }.is_well_formed());
        assert!(!View { epoch: 1, primary: 1, members: vec![2, 1] }.is_well_formed());
    }
}

/// Names one log entry: the epoch in which its primary created it, and its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryId {
    pub epoch: u64,
    pub seq: u64,
}

/// One log entry as shipped: its id and its encoded content (the tracker's own format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    pub id: EntryId,
    pub payload: Vec<u8>,
}

/// Sent by the tracker that opened the replication connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaRequest {
    /// Your view, your last entry, and whether you serve clients.
    Status,
    /// From the primary of `view`: adopt the view and append these consecutive entries.
    Append { view: View, entries: Vec<WireEntry> },
    /// From the primary of `view`: replace your state with this snapshot, whose last entry
    /// is `last`.
    Snapshot { view: View, last: EntryId, state: Vec<u8> },
    /// From the primary of `view`: keep-alive (adopt the view if it is newer).
    Ping { view: View },
    /// To the primary, from a tracker that is not in its view: bring me in.
    Join { from: u32 },
    /// From a backup to its primary: a client's request, with the key that client proved
    /// to the backup (sessions are bound to it).
    Forward { id: RequestId, session: Option<SessionToken>, client: PublicKey, request: Request },
}

/// The answer to a `ReplicaRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaReply {
    /// The answer to `Status`.
    Status { view: Option<View>, last: Option<EntryId>, serving: bool },
    /// Entries (or the snapshot) are durable up to `last`.
    Ack { last: Option<EntryId> },
    /// The sender's view is older than this tracker's.
    Stale { view: View },
    /// The request cannot be carried out (the primary retries or gives up on this member).
    Refused { reason: String },
    /// The answer to `Forward`.
    Forwarded { result: Result<Reply, TrackerError> },
}

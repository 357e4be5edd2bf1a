//! The tracker's state machine under Raft: each committed entry (a `LogEntry`) applied to
//! the `TrackerState`, in log order, on every tracker; snapshots are the encoded state.
//!
//! Presence (soft state) follows sessions opened and closed here, so that a session that
//! logs out stops being listed at once and a new one is live from its login.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use common::message::{Reply, TrackerError};

use crate::presence::Presence;
use crate::raft_node::{Apply, Frozen};
use crate::state::{LogEntry, Op, TrackerState};

/// Applies committed entries to the shared state.
pub struct StateMachine {
    pub state: Arc<RwLock<TrackerState>>,
    pub presence: Arc<Mutex<Presence>>,
}

impl Apply for StateMachine {
    type Output = Result<Reply, TrackerError>;

    fn entry(&mut self, index: u64, data: &[u8]) -> Result<Self::Output, String> {
        let entry = LogEntry::decode(data).map_err(|e| format!("entry {index}: {e}"))?;
        let result = self.state.write().apply_entry(&entry);
        match &entry.op {
            Op::CloseSession { session } => self.presence.lock().forget(session),
            Op::CloseUserSessions { .. } => {
                let state = self.state.read();
                self.presence.lock().keep_only(|s| state.session_key(s).is_some());
            }
            Op::OpenSession { session, .. } if result.is_ok() => {
                self.presence.lock().touch(*session, Instant::now())
            }
            _ => {}
        }
        log::debug!("applied entry {index}: {:?} -> {result:?}", entry.op);
        Ok(result)
    }

    fn snapshot(&mut self, index: u64, data: &[u8]) -> Result<(), String> {
        let state = TrackerState::decode(data).map_err(|e| format!("snapshot {index}: {e}"))?;
        *self.state.write() = state;
        log::info!("state replaced by the snapshot at index {index}");
        Ok(())
    }

    fn freeze(&self) -> Frozen {
        // A copy under the read lock (only this, the Raft, thread writes the state, so the
        // lock holds up no writer); the encoding happens on the `snap-N` thread.
        let copy = self.state.read().clone();
        Box::new(move || copy.encode())
    }
}

//! What a download's workers know of it (`Target`), shared by its coordinator, its workers
//! and their punchers.

use std::net::SocketAddr;
use std::sync::Arc;

use common::message::{Reply, Request, Ticket};
use common::Identity;
use parking_lot::Mutex;

use super::disk_writer::DiskWriter;
use super::path_plan::UpgradeBudget;
use super::store::Store;
use crate::interrupt::Interrupt;
use crate::rate::RateCap;
use crate::swarm::Swarm;
use crate::tracker_session::CallError;

/// What a worker needs to know of its download.
pub struct Target {
    /// This peer's key pair, proven to every seeder (tickets are bound to it).
    pub identity: Arc<Identity>,
    /// The newest ticket from the tracker (the coordinator replaces it at every refresh);
    /// workers pass it on to their seeder before the one it holds expires.
    pub ticket: Mutex<Ticket>,
    /// Where the verified pieces go (the `.part` file or the staging tree), shared with
    /// the disk writer's queue.
    pub store: Arc<Store>,
    pub writer: DiskWriter,
    /// The download's swarm: its metadata (piece hashes, layout), and where the newest
    /// verified pieces are kept for our seeder.
    pub swarm: Arc<Swarm>,
    /// The download cap, all downloads together: each request waits for its piece's
    /// share of it.
    pub cap: Arc<RateCap>,
    /// The tracker session, through which a worker asks an unreachable peer to connect
    /// back (issue 19).
    pub tracker: Arc<crate::tracker_session::TrackerSession>,
    /// Where reversed connections arrive.
    pub reversals: Arc<crate::reversal::Reversals>,
    /// This peer's listen address and router mapping (whether a reversal may work).
    pub reach: (SocketAddr, crate::advertiser::Reachability),
    /// The background hole punches of every download (issue 19).
    pub upgrades: Arc<Mutex<UpgradeBudget>>,
    /// Requests a worker keeps on the wire: half of what the scheduler asks of one peer at
    /// a time (`coordinator::in_flight_per_peer`), so the next are queued as these return.
    pub pipeline: usize,
}

impl Target {
    /// A call about a path to a peer (reversal, punch, relay) on a link of the tracker
    /// session's path pool (`TrackerSession::path_call`): a worker waiting on a tracker that
    /// fails over must not hold a link of the session's pool, which the seeder's ticket
    /// checks and the downloads' announcements share. `interrupt` cuts it short.
    pub fn path_call(
        &self,
        request: Request,
        interrupt: Option<&Interrupt>,
    ) -> Result<Reply, CallError> {
        self.tracker.path_call(request, interrupt)
    }

    /// A random nonce naming a call.
    pub fn nonce() -> Result<u64, String> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
        Ok(u64::from_le_bytes(bytes))
    }
}

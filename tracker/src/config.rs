//! Command-line configuration of the tracker.

use std::path::PathBuf;

use clap::Parser;

use crate::credential::DEFAULT_ITERATIONS;

/// A tracker of the group file-sharing system: keeps users, groups, join requests and file
/// metadata durably, and serves clients.
#[derive(Debug, Clone, Parser)]
#[command(name = "tracker", version)]
pub struct Config {
    /// The trackers of the deployment, one `IP:PORT [KEY]` a line; this tracker writes its
    /// public key into its own line at first start if the line has none.
    pub tracker_info: PathBuf,

    /// Which tracker this is: its line number in TRACKER_INFO (1-based); it listens there.
    pub tracker_id: u32,

    /// Listen on ADDR instead of this tracker's line of TRACKER_INFO, for a tracker
    /// reached through a port forward or a proxy (the others still connect to the listed
    /// address).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,

    /// Where the durable state lives [default: ./tracker-<TRACKER_ID>-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Live connections beyond this many are refused.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_connections: usize,

    /// Close a client connection silent for this many seconds (clients reconnect by
    /// themselves).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub idle_timeout: u64,

    /// A client not heard from for this many seconds (they send a heartbeat every 5) is no
    /// longer listed as a peer.
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    pub peer_timeout: u64,

    /// Tickets (a downloader's proof of membership, shown to seeders) expire after this many
    /// seconds; downloaders renew theirs while they run. A member who leaves a group or
    /// logs out can fetch nothing more from any seeder once this has passed.
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(2..))]
    pub ticket_lifetime: u64,

    /// Take part as a witness: vote in elections and keep the log (so that two trackers
    /// plus a witness survive the loss of any one of the three), but serve no client and
    /// never stay leader.
    #[arg(long)]
    pub witness: bool,

    /// With an empty data directory, wait to be added by the leader instead of starting a
    /// new group: how a tracker comes back after another one was forced to serve alone
    /// (`force-serve` on its stdin).
    #[arg(long)]
    pub join: bool,

    /// PBKDF2-HMAC-SHA1 iterations for new passwords (existing ones keep theirs).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_ITERATIONS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub kdf_iterations: u32,
}

impl Config {
    /// The data directory, explicit or derived from the tracker id.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("tracker-{}-data", self.tracker_id)))
    }
}

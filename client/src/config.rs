//! Command-line configuration of the client.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// A peer of the group file-sharing system: a REPL for accounts, groups and files, and at the
/// same time a server of pieces to other peers. Reads commands from stdin (type help).
#[derive(Debug, Clone, Parser)]
#[command(name = "client", version)]
pub struct Config {
    /// Where this peer serves pieces to other peers, as IP:PORT (port 0 picks a free port).
    pub listen: SocketAddr,

    /// The trackers, one IP:PORT a line; the first reachable one is used.
    pub tracker_info: PathBuf,

    /// Where this peer keeps its state (shares, partial downloads, history)
    /// [default: ./client-<IP>-<PORT>-state].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// A download fails when no peer can provide its missing pieces for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub stall_timeout: u64,

    /// Serve pieces to other peers at most this fast, in bytes per second (all
    /// connections together) [default: unlimited].
    #[arg(long, value_name = "BYTES_PER_SEC")]
    pub max_upload_rate: Option<u64>,
}

impl Config {
    /// The state directory, explicit or derived from the listen address.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| {
            PathBuf::from(format!("client-{}-{}-state", self.listen.ip(), self.listen.port()))
        })
    }
}

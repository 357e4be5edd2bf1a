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

    /// Where this peer keeps its state (shares, partial downloads, history, the log on a
    /// terminal); one client at a time [default: ./client-<IP>-<PORT>-state, with the port
    /// actually bound].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// A download fails when no peer can provide its missing pieces for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub stall_timeout: u64,

    /// Serve pieces to other peers at most this fast, in bytes per second (all
    /// connections together) [default: unlimited]. The REPL's `limit_rate up` changes it
    /// while the client runs.
    #[arg(long, value_name = "BYTES_PER_SEC")]
    pub max_upload_rate: Option<u64>,

    /// Download at most this fast, in bytes per second (all downloads together)
    /// [default: unlimited]. The REPL's `limit_rate down` changes it while the client runs.
    #[arg(long, value_name = "BYTES_PER_SEC")]
    pub max_download_rate: Option<u64>,

    /// Serve the dashboard (a web page over this client's operations) on IP:PORT, such as
    /// 127.0.0.1:8080 (port 0 picks one). Its URL, with a random access token, is printed
    /// at start and by the REPL command `web`. Keep it on loopback unless you mean otherwise.
    #[arg(long, value_name = "IP:PORT")]
    pub web: Option<SocketAddr>,
}

impl Config {
    /// The state directory: explicit, or derived from the address the peer actually listens
    /// on (`listen_addr`, whose port is the one chosen for a port 0), so that two clients
    /// started with port 0 never share one (issue 10).
    pub fn state_dir(&self, listen_addr: SocketAddr) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| default_state_dir(listen_addr))
    }
}

/// `client-<IP>-<PORT>-state`, in the working directory.
pub fn default_state_dir(listen_addr: SocketAddr) -> PathBuf {
    PathBuf::from(format!("client-{}-{}-state", listen_addr.ip(), listen_addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_state_dir_names_the_bound_port() {
        let config = Config::parse_from(["client", "127.0.0.1:0", "tracker_info.txt"]);
        let bound: SocketAddr = "127.0.0.1:40579".parse().unwrap();
        assert_eq!(config.state_dir(bound), PathBuf::from("client-127.0.0.1-40579-state"));
        let config = Config::parse_from([
            "client",
            "127.0.0.1:0",
            "tracker_info.txt",
            "--state-dir",
            "/tmp/s",
        ]);
        assert_eq!(config.state_dir(bound), PathBuf::from("/tmp/s"));
    }
}

//! Command-line configuration of the client.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// A peer of the group file-sharing system: a REPL for accounts, groups and files, and at the
/// same time a server of pieces to other peers. Reads commands from stdin (type help).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "client",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("P2P_COMMIT"), ")")
)]
pub struct Config {
    /// Where this peer serves pieces to other peers, as IP:PORT (port 0: the port this
    /// state directory's client had last time, if free, else a free one).
    #[arg(required_unless_present_any = ["completions", "attach"])]
    pub listen: Option<SocketAddr>,

    /// The trackers, one IP:PORT a line; the first reachable one is used.
    #[arg(required_unless_present_any = ["completions", "attach"])]
    pub tracker_info: Option<PathBuf>,

    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell) and exit:
    /// `source <(client --completions bash)`.
    #[arg(long, value_name = "SHELL", exclusive = true)]
    pub completions: Option<clap_complete::Shell>,

    /// The profile: which state this client runs with, in
    /// `$XDG_STATE_HOME/p2p-groups/<NAME>` (or `~/.local/state/p2p-groups/<NAME>`). Two
    /// clients on one machine need two profiles.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub profile: String,

    /// Where this peer keeps its state (key, shares, partial downloads, history, the log on
    /// a terminal), instead of the profile's directory; one client at a time.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Open a REPL on the client running on this profile (or --state-dir), through its
    /// control socket; `exit` leaves it running. No address is given then.
    #[arg(long, conflicts_with_all = ["listen", "tracker_info", "serve", "web"])]
    pub attach: bool,

    /// With --attach: run this one command line, print its output, and exit 0 (1 when it
    /// printed an `error: ` line; 2 when no client runs there).
    #[arg(short = 'c', value_name = "COMMAND", requires = "attach")]
    pub command: Option<String>,

    /// Run as a service: no REPL, standard input never read, the log on stderr; serve and
    /// download until SIGTERM or SIGINT, then stop cleanly. The session a REPL (or the
    /// dashboard) logged in with is resumed at start.
    #[arg(long)]
    pub serve: bool,

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

    /// Do not ask the home router (UPnP-IGD, PCP or NAT-PMP) to forward a public port to
    /// this peer. By default a peer listening on a non-loopback address asks, in the
    /// background, and registers the public address it is granted; the mapping is removed
    /// at exit.
    #[arg(long)]
    pub no_port_mapping: bool,
}

/// Why the state directory cannot be named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateDirError {
    #[error(
        "profile name '{0}' is not usable: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
    )]
    BadProfile(String),
    #[error("neither XDG_STATE_HOME nor HOME is set: choose a directory with --state-dir")]
    NoHome,
}

impl Config {
    /// The state directory: `--state-dir`, or the profile's.
    pub fn state_dir(&self) -> Result<PathBuf, StateDirError> {
        if let Some(dir) = &self.state_dir {
            return Ok(dir.clone());
        }
        let state_home = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty());
        profile_dir(&self.profile, state_home.map(PathBuf::from), home_dir())
    }
}

/// The user's home directory (`$HOME`, if set and not empty): for `~` in paths and the
/// default state and download directories.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

/// `<state home>/p2p-groups/<profile>`, where the state home is `xdg_state_home` (if
/// absolute, as the XDG spec says) or `<home>/.local/state`.
pub fn profile_dir(
    profile: &str,
    xdg_state_home: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Result<PathBuf, StateDirError> {
    let usable = !profile.is_empty()
        && profile.len() <= 64
        && !profile.starts_with('.')
        && profile.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !usable {
        return Err(StateDirError::BadProfile(profile.to_string()));
    }
    let base = match (xdg_state_home.filter(|p| p.is_absolute()), home) {
        (Some(state_home), _) => state_home,
        (None, Some(home)) => home.join(".local").join("state"),
        (None, None) => return Err(StateDirError::NoHome),
    };
    Ok(base.join("p2p-groups").join(profile))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_dir_is_the_profiles_unless_given() {
        let config = Config::parse_from(["client", "127.0.0.1:0", "tracker_info.txt"]);
        assert_eq!(config.profile, "default");
        // Completions need no address; anything else does.
        let config = Config::try_parse_from(["client", "--completions", "bash"]).unwrap();
        assert_eq!(config.completions, Some(clap_complete::Shell::Bash));
        assert!(Config::try_parse_from(["client", "127.0.0.1:0"]).is_err());
        assert!(Config::try_parse_from(["client", "--completions", "bash", "127.0.0.1:0"]).is_err());
        let config = Config::parse_from([
            "client",
            "127.0.0.1:0",
            "tracker_info.txt",
            "--state-dir",
            "/tmp/s",
        ]);
        assert_eq!(config.state_dir(), Ok(PathBuf::from("/tmp/s")));
        let home = Some(PathBuf::from("/home/al"));
        assert_eq!(
            profile_dir("default", None, home.clone()),
            Ok(PathBuf::from("/home/al/.local/state/p2p-groups/default"))
        );
        assert_eq!(
            profile_dir("work", Some(PathBuf::from("/x/state")), home.clone()),
            Ok(PathBuf::from("/x/state/p2p-groups/work"))
        );
        // A relative XDG_STATE_HOME is ignored, as the XDG spec says.
        assert_eq!(
            profile_dir("w", Some(PathBuf::from("rel")), home.clone()),
            Ok(PathBuf::from("/home/al/.local/state/p2p-groups/w"))
        );
        assert_eq!(profile_dir("w", None, None), Err(StateDirError::NoHome));
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(
                matches!(profile_dir(bad, None, home.clone()), Err(StateDirError::BadProfile(_))),
                "{bad}"
            );
        }
    }
}

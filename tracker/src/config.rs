//! Command-line configuration of the tracker.

use std::path::PathBuf;

use clap::Parser;

use crate::credential::DEFAULT_ITERATIONS;
use crate::login_throttle::ThrottleLimits;
use crate::quota::QuotaLimits;
use crate::relay::RelayLimits;

/// A tracker of the group file-sharing system: keeps users, groups, join requests and file
/// metadata durably, and serves clients.
#[derive(Debug, Clone, Parser)]
// An option given twice takes its last value (scripts add to a default command line).
#[command(
    name = "tracker",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("P2P_COMMIT"), ")"),
    args_override_self = true
)]
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
    /// seconds (2 to 3600: seeders refuse a longer-lived ticket as forged); downloaders
    /// renew theirs every third of it (at most every 15 s). A member who leaves a group, is
    /// removed from it or logs out can fetch nothing more from any seeder once this has
    /// passed.
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(2..=common::message::MAX_TICKET_LIFETIME_SECS))]
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

    /// End a session not heard from for this many seconds (a running client is heard
    /// every 5 s; a client that stopped without `logout` leaves its session behind).
    #[arg(long, value_name = "SECS", default_value_t = 86_400, help_heading = "Limits",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub session_idle_timeout: u64,

    /// Threads that hash passwords (logins, new accounts) [default: one per core]. Up to
    /// four hashes per thread wait; beyond that clients are told to retry shortly.
    #[arg(long, value_name = "N", help_heading = "Limits",
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub kdf_threads: Option<u64>,

    /// Failed logins from one address before each further one doubles a wait (1 s to
    /// 5 min) during which that address's logins are refused unchecked; 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 10, help_heading = "Limits")]
    pub login_failures_per_ip: u32,

    /// Failed logins for one user before each further one doubles a wait (1 s to 30 s)
    /// for addresses that have failed lately; 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 20, help_heading = "Limits")]
    pub login_failures_per_user: u32,

    /// Accounts one address may create per hour; 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 30, help_heading = "Limits")]
    pub signups_per_ip_per_hour: u32,

    /// Groups one user may own.
    #[arg(long, value_name = "N", default_value_t = 100, help_heading = "Limits")]
    pub max_groups_per_user: usize,

    /// Join requests one user may have pending.
    #[arg(long, value_name = "N", default_value_t = 100, help_heading = "Limits")]
    pub max_requests_per_user: usize,

    /// Files one group may list.
    #[arg(long, value_name = "N", default_value_t = 10_000, help_heading = "Limits")]
    pub max_files_per_group: usize,

    /// MiB of file metadata (20 bytes per 512 KiB piece) one user may share in all.
    #[arg(long, value_name = "MIB", default_value_t = 64, help_heading = "Limits")]
    pub max_metadata_per_user: u64,

    /// Sessions one user may have; a new login ends the longest silent one that is not
    /// live, or is refused.
    #[arg(long, value_name = "N", default_value_t = 16, help_heading = "Limits",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sessions_per_user: u64,

    /// Changes one user may make per second on average (ten times as many in a burst).
    #[arg(long, value_name = "N", default_value_t = 100, help_heading = "Limits",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_writes_per_second: u32,

    /// Relay nothing (issue 19): peers that reach each other neither directly nor by a
    /// reversed connection cannot exchange pieces through this tracker.
    #[arg(long, help_heading = "Relay")]
    pub no_relay: bool,

    /// Connections relayed at once, in all.
    #[arg(long, value_name = "N", default_value_t = 64, help_heading = "Relay")]
    pub max_relayed: usize,

    /// Connections relayed at once for one downloading user.
    #[arg(long, value_name = "N", default_value_t = 8, help_heading = "Relay")]
    pub max_relayed_per_user: usize,

    /// Megabits a second relayed, in all.
    #[arg(long, value_name = "MBIT", default_value_t = 100, help_heading = "Relay",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub relay_rate: u64,

    /// Megabits a second relayed for one downloading user (counted against that user
    /// whatever it fetches through this tracker).
    #[arg(long, value_name = "MBIT", default_value_t = 40, help_heading = "Relay",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub relay_user_rate: u64,

    /// End a relayed connection silent both ways for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, help_heading = "Relay",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub relay_idle_timeout: u64,
}

impl Config {
    /// The limits on password guessing and account creation.
    pub fn throttle_limits(&self) -> ThrottleLimits {
        ThrottleLimits {
            failures_per_ip: self.login_failures_per_ip,
            failures_per_user: self.login_failures_per_user,
            signups_per_ip_per_hour: self.signups_per_ip_per_hour,
            ..ThrottleLimits::default()
        }
    }

    /// What this tracker relays (issue 19).
    pub fn relay_limits(&self) -> RelayLimits {
        let bytes_per_sec = |mbit: u64| mbit as f64 * 1_000_000.0 / 8.0;
        RelayLimits {
            enabled: !self.no_relay,
            max_relayed: self.max_relayed,
            max_per_user: self.max_relayed_per_user,
            rate: bytes_per_sec(self.relay_rate),
            user_rate: bytes_per_sec(self.relay_user_rate),
            idle: std::time::Duration::from_secs(self.relay_idle_timeout),
        }
    }

    /// The per-user and per-group limits.
    pub fn quota_limits(&self) -> QuotaLimits {
        QuotaLimits {
            groups_per_user: self.max_groups_per_user,
            requests_per_user: self.max_requests_per_user,
            files_per_group: self.max_files_per_group,
            metadata_per_user: self.max_metadata_per_user.saturating_mul(1024 * 1024),
            sessions_per_user: usize::try_from(self.max_sessions_per_user).unwrap_or(usize::MAX),
            writes_per_second: self.max_writes_per_second,
            write_burst: self.max_writes_per_second.saturating_mul(10),
        }
    }

    /// The data directory, explicit or derived from the tracker id.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("tracker-{}-data", self.tracker_id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ticket every seeder would refuse as forged is never issued: the tracker does not
    /// start with a lifetime past `MAX_TICKET_LIFETIME_SECS`.
    #[test]
    fn the_ticket_lifetime_stays_within_what_seeders_accept() {
        let parse = |secs: &str| {
            Config::try_parse_from(["tracker", "t.txt", "1", "--ticket-lifetime", secs])
                .map(|c| c.ticket_lifetime)
        };
        assert_eq!(parse("3600").unwrap(), common::message::MAX_TICKET_LIFETIME_SECS);
        assert_eq!(parse("2").unwrap(), 2);
        assert!(parse("3601").unwrap_err().to_string().contains("not in 2..=3600"));
        assert!(parse("1").is_err());
    }
}

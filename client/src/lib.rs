//! The client: a REPL for accounts, groups and files (`repl`, `command`, `peer`), talking to
//! the trackers through `tracker_link`.

pub mod command;
pub mod config;
pub mod peer;
pub mod repl;
pub mod tracker_link;

use std::io::Write;
use std::net::TcpListener;

use common::tracker_info::{TrackerInfo, TrackerInfoError};

pub use config::Config;
use peer::Peer;
use tracker_link::TrackerLink;

/// Why the client could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    TrackerInfo(#[from] TrackerInfoError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot create state directory {path}: {source}")]
    StateDir { path: String, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs the client until `exit` or the end of its input.
pub fn run(config: Config) -> Result<(), RunError> {
    let trackers = TrackerInfo::load(&config.tracker_info)?;
    let state_dir = config.state_dir();
    std::fs::create_dir_all(&state_dir)
        .map_err(|source| RunError::StateDir { path: state_dir.display().to_string(), source })?;
    let listener = TcpListener::bind(config.listen)
        .map_err(|source| RunError::Bind { addr: config.listen, source })?;
    let listen_addr = listener.local_addr()?;
    log::info!("listening on {listen_addr}");
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {listen_addr}")?;
    stdout.flush()?;

    let mut peer = Peer::new(TrackerLink::new(trackers), listen_addr);
    repl::run(&mut peer, &state_dir.join("history.txt"))?;
    Ok(())
}

//! The tracker: durable users, groups, join requests and file metadata, served to clients
//! over the framed protocol of `common`.
//!
//! `config` parses the command line; `state` is the pure data model and `state_machine`
//! applies committed entries to it; `raft_store`, `raft_node`, `raft_transport` and
//! `cluster` replicate them (Raft); `service` turns requests into entries; `server` accepts
//! connections and `session` serves one.

pub mod admission;
pub mod answer;
pub mod calls;
pub mod cluster;
pub mod config;
pub mod credential;
pub mod kdf_pool;
pub mod login_throttle;
pub mod presence;
pub mod quota;
pub mod raft_node;
pub mod raft_store;
pub mod raft_transport;
pub mod read_rounds;
pub mod relay;
pub mod server;
pub mod service;
pub mod session;
pub mod state;
pub mod state_machine;

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use common::identity::IdentityError;
use common::tracker_info::{self, RecordKeyError, TrackerInfoError, TrackerInfoFile};
use common::Identity;

use cluster::Cluster;
pub use config::Config;
use presence::Presence;
use raft_node::RaftNodeError;
use raft_store::{RaftStore, RaftStoreError};
use server::Shutdown;
use service::{Service, Settings};
use session::Limits;
use state::TrackerState;
use state_machine::StateMachine;

/// How often a follower tells the leader which sessions it heard from.
const PRESENCE_REPORT_EVERY: Duration = Duration::from_secs(1);

/// How often the leader looks for idle sessions to end, at most (a quarter of the idle
/// timeout when that is shorter).
const SESSION_SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Why the tracker could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    TrackerInfo(#[from] TrackerInfoError),
    #[error("tracker id {id} is not in the tracker list ({count} trackers listed)")]
    NoSuchTracker { id: u32, count: usize },
    #[error("cannot open data directory: {0}")]
    Store(#[from] RaftStoreError),
    #[error("{0}")]
    Raft(#[from] RaftNodeError),
    #[error("stopping: {0}")]
    Stopped(String),
    #[error("{0}")]
    Identity(#[from] IdentityError),
    #[error("{0}")]
    RecordKey(#[from] Box<RecordKeyError>),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot resolve this tracker's listed address {addr}: {reason}; use an address, or --listen")]
    Resolve { addr: String, reason: String },
    #[error("cannot install signal handler: {0}")]
    Signal(#[from] ctrlc::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Listens on this tracker's listed address: for a host name, on the first address it
/// resolves to that this machine can bind.
fn listen_on_listed(listed: &tracker_info::TrackerAddr) -> Result<std::net::TcpListener, RunError> {
    let addrs = listed.resolve().map_err(|source| RunError::Resolve {
        addr: listed.to_string(),
        reason: source.to_string(),
    })?;
    let mut last = None;
    for addr in addrs {
        match server::listen(addr) {
            Ok(listener) => return Ok(listener),
            Err(source) => {
                log::info!("cannot listen on {addr} (listed as {listed}): {source}");
                last = Some(RunError::Bind { addr, source });
            }
        }
    }
    Err(last.unwrap_or_else(|| RunError::Resolve {
        addr: listed.to_string(),
        reason: "it resolves to no address".to_string(),
    }))
}

/// Runs the tracker until it is asked to stop (SIGINT, SIGTERM, or `quit` on stdin).
pub fn run(config: Config) -> Result<(), RunError> {
    let info = tracker_info::TrackerInfo::load(&config.tracker_info)?;
    let addr = info
        .addr(config.tracker_id)
        .ok_or(RunError::NoSuchTracker { id: config.tracker_id, count: info.len() })?;
    let data_dir = config.data_dir();
    // Opening the store makes the data directory private, before the key goes there.
    let store = RaftStore::open_dir(&data_dir)?;
    let key_file = data_dir.join("tracker.key");
    let (identity, created) = Identity::load_or_create(&key_file)?;
    if created {
        log::info!("created this tracker's key pair in {}", key_file.display());
    }
    // Our line of tracker_info.txt gets our key if it has none; a different key there
    // stops us, naming the line and the fix.
    if tracker_info::record_key(
        &config.tracker_info,
        config.tracker_id,
        &identity.public(),
        &key_file,
    )
    .map_err(Box::new)?
    {
        log::info!(
            "wrote this tracker's key into line {} of {}",
            info.line(config.tracker_id).unwrap_or(0),
            config.tracker_info.display()
        );
    }
    let trackers = Arc::new(TrackerInfoFile::load(&config.tracker_info)?);
    let identity = Arc::new(identity);
    // Behind a port forward or a proxy, the listed address is where others reach us, and
    // `--listen` where we listen.
    let listener = match config.listen {
        Some(addr) => server::listen(addr).map_err(|source| RunError::Bind { addr, source })?,
        None => listen_on_listed(&addr)?,
    };
    let local = listener.local_addr()?;
    let settings = Settings {
        id: config.tracker_id,
        trackers: Arc::clone(&trackers),
        identity: Arc::clone(&identity),
        kdf_iterations: config.kdf_iterations,
        peer_timeout: Duration::from_secs(config.peer_timeout.max(1)),
        ticket_lifetime: Duration::from_secs(config.ticket_lifetime.max(2)),
        session_idle_timeout: Duration::from_secs(config.session_idle_timeout),
        kdf_threads: config
            .kdf_threads
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or_else(kdf_pool::KdfPool::threads_per_core),
        throttle: config.throttle_limits(),
        quotas: config.quota_limits(),
        relay: config.relay_limits(),
    };
    let state = Arc::new(RwLock::new(TrackerState::default()));
    let peer_timeout = settings.peer_timeout;
    let presence = Arc::new(Mutex::new(Presence::new(Instant::now(), peer_timeout)));
    let machine = StateMachine { state: Arc::clone(&state), presence: Arc::clone(&presence) };
    let cluster = Cluster::start(
        config.tracker_id,
        config.witness,
        config.join,
        store,
        machine,
        Arc::clone(&trackers),
        Arc::clone(&identity),
    )?;
    let service = Arc::new(Service::new(settings, state, presence, cluster)?);
    let shutdown = Arc::new(Shutdown::new(local));

    let on_signal = Arc::clone(&shutdown);
    ctrlc::set_handler(move || on_signal.trigger())?;
    watch_stdin(Arc::clone(&shutdown), Arc::clone(&service))?;
    // The watcher stops when `stop_watch` is dropped; if the Raft node stops, so does the
    // tracker.
    let (stop_watch, watch_stopped) = crossbeam_channel::bounded::<()>(0);
    // Followers report the heartbeats they answered, every second; the leader ends idle
    // sessions. A commit or a report may wait seconds, so not on the watcher.
    {
        let service = Arc::clone(&service);
        let stop = watch_stopped.clone();
        let sweep_every = (Duration::from_secs(config.session_idle_timeout) / 4)
            .clamp(Duration::from_millis(500), SESSION_SWEEP_EVERY);
        std::thread::Builder::new().name("presence".into()).spawn(move || {
            let mut next_sweep = Instant::now() + sweep_every;
            loop {
                crossbeam_channel::select! {
                    recv(stop) -> _ => break,
                    default(PRESENCE_REPORT_EVERY.min(sweep_every)) => {}
                }
                service.report_presence();
                if Instant::now() >= next_sweep {
                    service.expire_idle_sessions();
                    next_sweep = Instant::now() + sweep_every;
                }
            }
        })?;
    }
    let watcher = {
        let service = Arc::clone(&service);
        let shutdown = Arc::clone(&shutdown);
        std::thread::Builder::new().name("cluster".into()).spawn(move || {
            let outcome =
                cluster::watch(&service.cluster, watch_stopped, print_line, || service.on_lead());
            if outcome.is_err() {
                shutdown.trigger();
            }
            outcome
        })?
    };

    let open_files = admission::raise_open_files_limit();
    let max_connections = admission::connection_cap(config.max_connections, open_files);
    if max_connections < config.max_connections {
        log::warn!(
            "--max-connections {} lowered to {max_connections}: the open-files limit is {} \
             (raise it with `ulimit -Hn`)",
            config.max_connections,
            open_files.unwrap_or(0)
        );
    }
    let limits = Limits {
        max_connections,
        handshake_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(config.idle_timeout.max(1)),
        write_timeout: Duration::from_secs(10),
    };
    log::info!("tracker {} listening on {local}", config.tracker_id);
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "tracker {} listening on {local}", config.tracker_id)?;
    stdout.flush()?;
    drop(stdout);
    let served = server::run(listener, service, limits, config.tracker_id, shutdown);
    drop(stop_watch);
    let outcome =
        watcher.join().unwrap_or_else(|_| Err("the cluster watcher panicked".to_string()));
    served?;
    outcome.map_err(RunError::Stopped)?;
    log::info!("tracker {} stopped", config.tracker_id);
    Ok(())
}

/// Stops the tracker on a `quit` or `exit` line on stdin, and prints the tracker's place in
/// the cluster on `status`. At end of input it keeps running. This thread is left blocked in
/// `poll` or `read` at exit: a blocking stdin read cannot be cancelled, and it holds nothing
/// that needs cleaning up.
///
/// A terminal is read only while this tracker's process group is its foreground group
/// (issue 10): a background job (`tracker ... &`) that reads its terminal is stopped by
/// SIGTTIN. So on a terminal the thread first waits in `poll` (which never stops a
/// background job) for a line, then reads it only if `tcgetpgrp` names this process
/// group; a line typed for the foreground job (the shell, a client) is left to it, looking
/// again every `NOT_OURS_PAUSE` until it is taken, as no event says so. A tracker
/// brought to the foreground later (`fg`) reads its lines again. Pipes, files and
/// `/dev/null` are read as they come.
fn watch_stdin(shutdown: Arc<Shutdown>, service: Arc<Service>) -> std::io::Result<()> {
    use std::io::IsTerminal;
    use std::os::fd::AsFd;

    const NOT_OURS_PAUSE: Duration = Duration::from_millis(200);

    /// Waits until the terminal `fd` has input for this process group (or has hung up, which
    /// the read then reports). `false` if the terminal cannot be polled.
    fn wait_for_own_line(fd: std::os::fd::BorrowedFd<'_>) -> bool {
        use rustix::event::{PollFd, PollFlags};
        loop {
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    log::warn!("stdin: cannot poll the terminal ({e}); no longer reading it");
                    return false;
                }
            }
            let hung_up = fds[0].revents().intersects(PollFlags::HUP | PollFlags::ERR);
            let foreground = rustix::termios::tcgetpgrp(fd)
                .is_ok_and(|group| group == rustix::process::getpgrp());
            if hung_up || foreground {
                return true;
            }
            std::thread::sleep(NOT_OURS_PAUSE);
        }
    }

    std::thread::Builder::new().name("stdin".to_string()).spawn(move || {
        let stdin = std::io::stdin();
        let on_terminal = stdin.is_terminal();
        let mut line = String::new();
        loop {
            if on_terminal && !wait_for_own_line(stdin.as_fd()) {
                break;
            }
            line.clear();
            match stdin.lock().read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            match line.trim() {
                "quit" | "exit" => {
                    shutdown.trigger();
                    break;
                }
                "status" => print_line(&service.status_line()),
                "force-serve" => match service.cluster.force_serve() {
                    Ok(done) => {
                        log::warn!("{done}");
                        print_line(&done);
                    }
                    Err(why) => print_line(&format!("force-serve refused: {why}")),
                },
                "" => {}
                other => log::warn!(
                    "stdin: unknown command {other:?} (status, force-serve, quit or exit)"
                ),
            }
        }
    })?;
    Ok(())
}

/// Prints one line on stdout for operators and scripts, flushed at once.
pub(crate) fn print_line(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

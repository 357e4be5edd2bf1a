//! The client: a REPL for accounts, groups and files (`repl`, `command`, `console`) and,
//! with `--web`, a dashboard (`web`), two views over one typed API (`peer`), talking to the
//! trackers through `tracker_link`.

pub mod advertiser;
pub mod attach;
pub mod command;
pub mod completion;
pub mod config;
pub mod config_file;
pub mod console;
pub mod dial;
pub mod download;
pub mod folder_scan;
pub mod interrupt;
pub mod log_file;
pub mod membership;
pub mod notice;
pub mod peer;
pub mod piece_buf;
pub mod port_map;
pub mod private_file;
pub mod progress;
pub mod punch;
pub mod rate;
pub mod reach;
pub mod readiness;
pub mod recent_pieces;
pub mod registry;
pub mod repl;
pub mod reversal;
pub mod seeder;
pub mod session_file;
pub mod size;
pub mod swarm;
#[cfg(test)]
mod testutil;
pub mod tracker_link;
pub mod tracker_session;
pub mod tracker_view;
pub mod web;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::identity::IdentityError;
use common::message::{Request, TrackerError};
use common::tracker_info::{TrackerInfoError, TrackerInfoFile};
use common::GroupId;
use common::Identity;
use completion::{Fetcher, Known};
use interrupt::Interrupt;
use membership::{Change, Watch};
use notice::Notices;
use tracker_session::CallError;

pub use config::Config;
use console::Console;
use peer::Peer;
use registry::Registry;
use seeder::Seeder;
use tracker_session::{TrackerSession, HEARTBEAT_EVERY};

/// Why the client could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    TrackerInfo(#[from] TrackerInfoError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot serve the dashboard on {addr}: {source}")]
    WebBind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot set up state directory {path}: {source}")]
    StateDir { path: String, source: std::io::Error },
    #[error(
        "state directory {path} is in use by another client; stop that client, or start this one with another --profile NAME (or --state-dir DIR)"
    )]
    StateDirInUse { path: String },
    #[error("{0}")]
    NoStateDir(#[from] config::StateDirError),
    #[error("{0}")]
    ConfigFile(#[from] config_file::ConfigFileError),
    #[error("usage: client <IP>:<PORT> <tracker_info.txt> [options] (client --help tells more)")]
    Usage,
    #[error("{0}")]
    Identity(#[from] IdentityError),
    #[error("{0}")]
    StateFile(#[from] registry::StateFileError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs the client until `exit` or the end of its input.
pub fn run(config: Config) -> Result<(), RunError> {
    // Both are given unless `--completions` was, which `main` answers before this.
    let (Some(listen), Some(tracker_info)) = (config.listen, config.tracker_info.as_ref()) else {
        return Err(RunError::Usage);
    };
    let trackers = Arc::new(TrackerInfoFile::load(tracker_info)?);
    let state_dir = config.state_dir()?;
    common::identity::make_private_dir(&state_dir)
        .map_err(|source| RunError::StateDir { path: state_dir.display().to_string(), source })?;
    // Held until the process ends: the kernel releases the lock with the descriptor.
    let _lock = lock_state_dir(&state_dir)?;
    // The profile's settings; the command line wins over them.
    let settings = config_file::ConfigFile::load(&state_dir.join("config.toml"))?;
    let listener = bind_listener(listen, &state_dir)?;
    let listen_addr = listener.local_addr()?;
    // This peer's identity: trackers bind its sessions to it, seeders its tickets.
    let (identity, _) = Identity::load_or_create(&state_dir.join("client.key"))?;
    let identity = Arc::new(identity);
    let mut stdout = std::io::stdout();
    if log_file::wanted() && !config.serve {
        let log_path = state_dir.join("client.log");
        match log_file::open(&log_path) {
            Ok(()) => writeln!(stdout, "log: {}", log_path.display())?,
            Err(e) => log::warn!("cannot open {}: {e}; logging to stderr", log_path.display()),
        }
    }
    log::info!("listening on {listen_addr}");
    writeln!(stdout, "listening on {listen_addr}")?;
    stdout.flush()?;

    let notices = Arc::new(Notices::default());
    let tracker =
        Arc::new(TrackerSession::new(trackers, Arc::clone(&identity), Arc::clone(&notices)));
    let registry = Arc::new(Registry::open(Some(state_dir.join("shares.bin")))?);
    let served = Arc::new(seeder::served::Served::default());
    let upload_cap =
        Arc::new(rate::RateCap::new(config.max_upload_rate.or(settings.max_upload_rate)));
    let download_cap =
        Arc::new(rate::RateCap::new(config.max_download_rate.or(settings.max_download_rate)));
    let web = config.web.or(settings.web);
    // Issue 19: the reversed connections this peer's downloads wait for, which its seeder's
    // accept loop hands them.
    let reversals = Arc::new(reversal::Reversals::default());
    let seeder = Seeder::start(
        listener,
        Arc::clone(&identity),
        Arc::clone(&registry),
        Arc::clone(&tracker),
        Arc::clone(&upload_cap),
        Arc::clone(&served),
        Arc::clone(&reversals),
    )?;
    // Issue 19: the addresses this peer may be reached at, registered with the trackers,
    // and the router's port mapping, asked for in the background.
    // With them, the pieces of each folder part this peer holds (issue 23), which the
    // leader keeps as soft state too.
    let parts: advertiser::SoftState = {
        let registry = Arc::clone(&registry);
        Box::new(move || {
            let held = registry.all().into_iter().filter(|share| {
                !share.chosen.is_whole() && matches!(share.phase(), swarm::Phase::Seeding)
            });
            held.map(|part| download::completion_request(&part)).collect()
        })
    };
    let (advertiser, reachability) =
        advertiser::Advertiser::start(Arc::clone(&tracker), listen_addr, parts)?;
    let port_mapper = match !config.no_port_mapping && settings.port_mapping.unwrap_or(true) {
        true => port_map::PortMapper::start(listen_addr, reachability.clone())?,
        false => None,
    };
    // The disk writer lives as long as the process: downloads still running at exit are
    // abandoned with it (they resume at the next login).
    let (writer, _writer_thread) = download::disk_writer::DiskWriter::start()?;
    let downloads: Arc<download::record::Downloads> = Arc::default();
    let interrupt = Arc::new(Interrupt::default());
    interrupt.on_fire({
        let downloads = Arc::clone(&downloads);
        move || downloads.wake()
    });
    // A service stops on SIGINT as on SIGTERM (`wait_for_stop`); a REPL's Ctrl-C interrupts
    // the command running.
    let stop_signals = match config.serve {
        true => Some(signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
        ])?),
        false => {
            Interrupt::install(&interrupt)?;
            None
        }
    };
    let ctx = download::Context {
        identity,
        writer,
        tracker: Arc::clone(&tracker),
        registry: Arc::clone(&registry),
        downloads,
        stall_timeout: Duration::from_secs(config.stall_timeout),
        download_cap,
        upload_cap,
        reversals,
        reach: (listen_addr, reachability),
        upgrades: Arc::new(parking_lot::Mutex::new(download::path_plan::UpgradeBudget::new(
            std::time::Instant::now(),
        ))),
    };

    let known = Arc::new(Known::default());
    let watch = Arc::new(parking_lot::Mutex::new(Watch::default()));
    // Heartbeats until the sender is dropped at the end of `run`.
    let (stop_heartbeat, heartbeat_stopped) = crossbeam_channel::bounded::<()>(0);
    let with_web = web.is_some();
    let heartbeat = std::thread::Builder::new().name("heartbeat".into()).spawn({
        let (tracker, known, watch, notices) =
            (Arc::clone(&tracker), Arc::clone(&known), Arc::clone(&watch), Arc::clone(&notices));
        let registry = Arc::clone(&registry);
        move || {
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                heartbeat_stopped.recv_timeout(HEARTBEAT_EVERY)
            {
                heartbeat_once(&tracker, &registry, &watch, &known, &notices);
                // The dashboard's trackers panel shows the roles: one more small read.
                if with_web {
                    tracker.refresh_status();
                }
            }
        }
    })?;
    let fetcher = Fetcher::start(Arc::clone(&known), Arc::clone(&tracker))?;

    let session_path = state_dir.join("session");
    let home = config::home_dir();
    let download_dir = config_file::default_download_dir(
        settings.download_dir(home.as_deref()),
        std::env::var_os("XDG_DOWNLOAD_DIR").map(std::path::PathBuf::from),
        home.as_deref(),
    );
    let peer = Arc::new(Peer::new(
        ctx,
        listen_addr,
        known,
        watch,
        served,
        Some(session_path.clone()),
        download_dir,
    ));
    // Each download that ends is a notice (its `show_downloads` line) for whoever shows
    // them: the terminal's REPL and attached ones.
    peer.on_download_finished(Some(Box::new({
        let notices = Arc::clone(&notices);
        move |record| notices.send(record.line_for(true))
    })));
    let mut console = Console::new(Arc::clone(&peer), interrupt);
    let dashboard = match web {
        Some(addr) => {
            let dashboard = web::Dashboard::start(addr, Arc::clone(&peer))
                .map_err(|source| RunError::WebBind { addr, source })?;
            writeln!(stdout, "dashboard at {}", dashboard.url())?;
            stdout.flush()?;
            console.set_web_url(Some(dashboard.url()));
            Some(dashboard)
        }
        None => None,
    };
    // The session the last run kept: logged in again, as the user left it.
    let resumed = session_file::load(&session_path).map_err(|e| e.to_string()).and_then(|saved| {
        let Some(saved) = saved else { return Ok(None) };
        let user = saved.user.clone();
        peer.resume_session(saved).map(|()| Some(user)).map_err(|e| e.to_string())
    });
    match resumed {
        Ok(Some(user)) => writeln!(stdout, "logged in as {user} (resumed)")?,
        Ok(None) => {}
        Err(e) => writeln!(stdout, "error: {e}")?,
    }
    stdout.flush()?;
    // Attached REPLs (`client --attach`): the same `Peer`, through a Unix socket.
    // Without it (a state directory whose path is too long for a Unix socket, 107 bytes),
    // the client runs on: only `--attach` is missing, which says so.
    let control =
        match attach::ControlSocket::start(&state_dir, Arc::clone(&peer), Arc::clone(&notices)) {
            Ok(control) => Some(control),
            Err(e) => {
                log::warn!(
                    "no control socket in {} ({e}): --attach cannot reach this client",
                    state_dir.display()
                );
                None
            }
        };
    let result = match stop_signals {
        Some(mut signals) => {
            // Service mode: no REPL; serve until told to stop.
            if let Some(signal) = signals.forever().next() {
                log::info!("stopping on signal {signal}");
            }
            Ok(())
        }
        None => repl::run(&mut console, &state_dir.join("history.txt"), &notices),
    };
    if let Some(control) = control {
        control.stop();
    }
    if let Some(dashboard) = dashboard {
        dashboard.stop();
    }
    fetcher.stop();
    if let Some(port_mapper) = port_mapper {
        port_mapper.stop();
    }
    advertiser.stop();
    drop(stop_heartbeat);
    let _ = heartbeat.join();
    seeder.stop();
    // The last progress of running downloads, and whatever else changed, on disk.
    registry.close();
    result?;
    Ok(())
}

/// One heartbeat: tells the tracker this session is alive, and, when the user's
/// memberships changed since the last one, tells the user what changed (a notice above the
/// prompt, on a terminal) and completion which groups there are; a group the user is no
/// longer in (left elsewhere, or removed by its owner) is no longer shared from here, as
/// after `leave_group` (the trackers ended those shares already).
fn heartbeat_once(
    tracker: &TrackerSession,
    registry: &Registry,
    watch: &parking_lot::Mutex<Watch>,
    known: &Known,
    notices: &Notices,
) {
    let session = tracker.login().map(|l| l.session);
    let (known_version, sent) = watch.lock().begin(session);
    let Some(memberships) = tracker.heartbeat(known_version) else { return };
    log::debug!("heartbeat: memberships now {:?}", memberships.groups);
    known.add_groups(memberships.groups.iter().map(|(g, _)| g.clone()));
    let changes = {
        let mut watch = watch.lock();
        // A logout or another login while the heartbeat was out: its news is stale.
        if tracker.login().map(|l| l.session) != session {
            return;
        }
        watch.update(memberships, sent)
    };
    for change in changes {
        let line = match change {
            Change::NowOwner(group) => {
                format!("notice: you now own group {group} (its owner left)")
            }
            Change::Accepted(group) => {
                format!("notice: your request to join group {group} was accepted")
            }
            Change::RequestGone(group) => match group_exists(tracker, &group) {
                Some(false) => {
                    known.remove_group(&group);
                    format!("notice: group {group}, which you asked to join, was removed")
                }
                _ => format!("notice: your request to join group {group} was rejected"),
            },
            Change::MembershipGone(group) => {
                registry.remove_group(&group);
                registry.save();
                match group_exists(tracker, &group) {
                    Some(false) => {
                        known.remove_group(&group);
                        format!(
                            "notice: group {group} was removed (you left it in another session)"
                        )
                    }
                    _ => format!(
                        "notice: you are no longer a member of group {group} (you left it in \
                         another session, or its owner removed you)"
                    ),
                }
            }
            Change::JoinRequest { group, user } => {
                format!("notice: {user} asks to join group {group}; accept_request {group} {user}")
            }
        };
        log::info!("{line}");
        notices.send(line);
    }
}

/// Whether `group` still exists, asked of the tracker as cheaply as it answers (a
/// `list_files` that a non-member gets refused: `unknown group` or `not a member`);
/// `None` if it cannot tell.
fn group_exists(tracker: &TrackerSession, group: &GroupId) -> Option<bool> {
    match tracker.call(Request::ListFiles { group: group.clone(), after: None }) {
        Err(CallError::Link(tracker_link::LinkError::Tracker(TrackerError::UnknownGroup(_)))) => {
            Some(false)
        }
        Ok(_)
        | Err(CallError::Link(tracker_link::LinkError::Tracker(TrackerError::NotMember(_)))) => {
            Some(true)
        }
        Err(e) => {
            log::info!("cannot tell whether group {group} exists: {e}");
            None
        }
    }
}

/// Binds the peer's port. A port 0 means the port this state directory's client
/// listened on last time (`<state-dir>/listen`), if it is free, so that a restarted peer
/// keeps its address; else a free port. The address bound is recorded for the next start.
fn bind_listener(wanted: SocketAddr, state_dir: &Path) -> Result<TcpListener, RunError> {
    let record = state_dir.join("listen");
    let last: Option<SocketAddr> = std::fs::read_to_string(&record)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .filter(|last: &SocketAddr| wanted.port() == 0 && last.ip() == wanted.ip());
    // Shared with the punching sockets (issue 19: hole punching connects from this port).
    let bind = crate::punch::listener;
    let listener = match last.map(bind) {
        Some(Ok(listener)) => listener,
        Some(Err(e)) => {
            log::info!("the port of last time is not free ({e}); listening on another");
            bind(wanted).map_err(|source| RunError::Bind { addr: wanted, source })?
        }
        None => bind(wanted).map_err(|source| RunError::Bind { addr: wanted, source })?,
    };
    let bound = listener.local_addr()?;
    if let Err(e) = std::fs::write(&record, format!("{bound}\n")) {
        log::warn!("cannot record {bound} in {}: {e}", record.display());
    }
    Ok(listener)
}

/// Takes the lock that makes `state_dir` this client's alone: two clients on one state
/// directory would overwrite each other's shares and history (issue 10). The lock is an
/// `flock` on `<state_dir>/lock`, so it ends with the process, however it ends.
fn lock_state_dir(state_dir: &std::path::Path) -> Result<std::fs::File, RunError> {
    use rustix::fs::FlockOperation;
    let path = state_dir.join("lock");
    let shown = || state_dir.display().to_string();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| RunError::StateDir { path: shown(), source })?;
    match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(RunError::StateDirInUse { path: shown() }),
        Err(e) => Err(RunError::StateDir { path: shown(), source: e.into() }),
    }
}

//! The local peer: the commands the REPL runs, against the tracker session, the shares and
//! the downloads.
//!
//! `Peer::execute` turns one `Command` into the lines to print, or one `CommandError` whose
//! `Display` is the text after `error: `.

use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use common::hash::{hash_file, HashFileError};
use common::message::{FileMeta, Reply, Request};
use common::{Bitfield, FileName, GroupId, Layout, UserId};

use crate::command::{self, Command, COMMANDS};
use crate::completion::Known;
use crate::download::record::{DownloadRecord, DownloadState};
use crate::download::{self, StartError};
use crate::interrupt::Interrupt;
use crate::membership::Watch;
use crate::progress;
use crate::shares::{FileStamp, SharedFile};
use crate::size;
use crate::tracker_link::LinkError;
use crate::tracker_session::{CallError, Login, TrackerSession};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Download(#[from] StartError),
    #[error("already logged in as {0}; logout first")]
    AlreadyLoggedIn(UserId),
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0} is not a regular file")]
    NotAFile(String),
    #[error("{path} has no usable file name: {reason}")]
    BadFileName { path: String, reason: String },
    #[error("unexpected reply from tracker: {0}")]
    UnexpectedReply(String),
    #[error("interrupted; downloads go on in the background (show_downloads lists them)")]
    WaitInterrupted,
}

impl CommandError {
    /// What to do about it, when the error alone does not say (issue 10: errors name the
    /// fix): appended to the `error: ` line after `; `.
    pub fn fix(&self) -> Option<String> {
        use common::message::TrackerError as E;
        let tracker_error = match self {
            CommandError::Link(LinkError::Tracker(e))
            | CommandError::Call(CallError::Link(LinkError::Tracker(e)))
            | CommandError::Download(StartError::Call(CallError::Link(LinkError::Tracker(e)))) => e,
            CommandError::Call(CallError::NotLoggedIn)
            | CommandError::Download(StartError::Call(CallError::NotLoggedIn)) => {
                return Some(LOGIN_FIRST.to_string())
            }
            _ => return None,
        };
        Some(match tracker_error {
            E::NotLoggedIn => LOGIN_FIRST.to_string(),
            E::UnknownUser(user) => format!("create_user {user} <passwd> makes the account"),
            E::UserExists(user) => format!("login {user} <passwd> if it is yours"),
            E::GroupExists(group) => format!("join_group {group} asks to join it"),
            E::UnknownGroup(_) => "list_groups lists the groups".to_string(),
            E::NotMember(group) => format!("join_group {group} asks its owner to let you in"),
            E::AlreadyRequested(_) => "its owner has yet to accept it".to_string(),
            E::NoSuchFile { group, .. } => {
                format!("list_files {group} lists the files shared there")
            }
            E::NotSharing { .. } => "list_shares lists what this peer shares".to_string(),
            E::NoSuchRequest { group, .. } => {
                format!("list_requests {group} lists who asked")
            }
            E::NameTaken { .. } => "rename your file to share it there".to_string(),
            _ => return None,
        })
    }
}

/// The fix for `not logged in`.
const LOGIN_FIRST: &str = "login <user_id> <passwd> first (create_user makes an account)";

/// What the REPL should do after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Exit,
}

/// The local peer.
pub struct Peer {
    ctx: download::Context,
    listen_addr: SocketAddr,
    interrupt: Arc<Interrupt>,
    /// What completion offers: fed with what the commands list.
    known: Arc<Known>,
    /// The memberships the heartbeats watch: told of this client's own `leave_group`.
    watch: Arc<Mutex<Watch>>,
    /// At a terminal: `wait_downloads` draws progress bars, and sizes read as `8.0 MiB`.
    on_terminal: bool,
    /// The download the last `download_file` started, to follow at a terminal.
    to_follow: Option<usize>,
}

impl Peer {
    /// A peer that serves pieces on `listen_addr`; Ctrl-C fires `interrupt`. What its
    /// commands list feeds `known`; its own `leave_group` is told to `watch`.
    pub fn new(
        ctx: download::Context,
        listen_addr: SocketAddr,
        interrupt: Arc<Interrupt>,
        known: Arc<Known>,
        watch: Arc<Mutex<Watch>>,
    ) -> Peer {
        Peer { ctx, listen_addr, interrupt, known, watch, on_terminal: false, to_follow: None }
    }

    /// What completion offers (for the line editor).
    pub fn known(&self) -> Arc<Known> {
        Arc::clone(&self.known)
    }

    /// At a terminal (`true`), `wait_downloads` (without `--json`) draws live progress
    /// bars while it waits, and sizes are shown as `8.0 MiB` instead of exact bytes.
    pub fn set_terminal(&mut self, on_terminal: bool) {
        self.on_terminal = on_terminal;
    }

    /// The user logged in, if any.
    pub fn user(&self) -> Option<UserId> {
        self.ctx.tracker.login().map(|l| l.user)
    }

    /// Runs one command, appending its output lines to `out`. Ctrl-C while it runs makes
    /// its waits give up; one that came before it is forgotten.
    pub fn execute(&mut self, command: Command, out: &mut String) -> Result<Flow, CommandError> {
        self.interrupt.reset();
        match command {
            Command::Help { topic: None } => {
                for info in COMMANDS {
                    let _ = writeln!(out, "{}", info.usage);
                }
            }
            Command::Help { topic: Some(info) } => {
                let _ = writeln!(out, "{}", info.usage);
                let _ = writeln!(out, "  {}", info.summary);
            }
            Command::ListShares => {
                self.require_login()?;
                let mut shares = self.ctx.shares.all();
                shares.sort_by(|a, b| (&a.group, &a.meta.name).cmp(&(&b.group, &b.meta.name)));
                for share in shares {
                    let _ = writeln!(out, "{}", share_line(&share, self.on_terminal));
                }
            }
            Command::Exit => {
                self.logout_quietly();
                return Ok(Flow::Exit);
            }
            Command::CreateUser { user, password } => {
                self.ctx.tracker.call_anonymous(
                    Request::CreateUser { user: user.clone(), password },
                    Some(&self.interrupt),
                )?;
                let _ = writeln!(out, "created user {user}");
            }
            Command::Login { user, password } => {
                if let Some(login) = self.ctx.tracker.login() {
                    return Err(CommandError::AlreadyLoggedIn(login.user));
                }
                let session = TrackerSession::new_token()?;
                let request = Request::Login {
                    user: user.clone(),
                    password,
                    peer_addr: self.listen_addr,
                    session,
                };
                match self.ctx.tracker.call_anonymous(request, Some(&self.interrupt))? {
                    Reply::LoggedIn => {
                        self.ctx.tracker.set_login(Some(Login { user: user.clone(), session }));
                        let _ = writeln!(out, "logged in as {user}");
                        self.watch_memberships(session);
                        self.resume_shares(&user);
                    }
                    other => return Err(unexpected(other)),
                }
            }
            Command::Logout { everywhere } => {
                self.call(if everywhere { Request::LogoutEverywhere } else { Request::Logout })?;
                self.ctx.tracker.set_login(None);
                let _ = writeln!(out, "logged out{}", if everywhere { " everywhere" } else { "" });
            }
            Command::CreateGroup { group } => {
                self.call(Request::CreateGroup { group: group.clone() })?;
                self.known.add_groups([group.clone()]);
                let _ = writeln!(out, "created group {group}");
            }
            Command::JoinGroup { group } => {
                self.call(Request::JoinGroup { group: group.clone() })?;
                self.known.add_groups([group.clone()]);
                self.watch.lock().requested_here(group.clone());
                let _ = writeln!(out, "requested to join group {group}");
            }
            Command::LeaveGroup { group } => {
                self.call(Request::LeaveGroup { group: group.clone() })?;
                self.watch.lock().left_here(group.clone());
                for share in self.ctx.shares.all() {
                    if share.group == group {
                        self.ctx.shares.remove(&share.group, &share.meta.digest);
                    }
                }
                let _ = writeln!(out, "left group {group}");
            }
            Command::ListRequests { group } => {
                for user in self.ctx.tracker.list_requests(&group, Some(&self.interrupt))? {
                    let _ = writeln!(out, "{user}");
                }
            }
            Command::AcceptRequest { group, user } => {
                self.call(Request::AcceptRequest { group: group.clone(), user: user.clone() })?;
                let _ = writeln!(out, "accepted {user} into group {group}");
            }
            Command::RejectRequest { group, user } => {
                self.call(Request::RejectRequest { group: group.clone(), user: user.clone() })?;
                let _ = writeln!(out, "rejected {user}'s request to join group {group}");
            }
            Command::ListGroups | Command::ListMyGroups => {
                let mine = command == Command::ListMyGroups;
                let groups = self.ctx.tracker.list_groups(mine, Some(&self.interrupt))?;
                for group in &groups {
                    let _ = writeln!(out, "{group}");
                }
                match mine {
                    false => self.known.set_groups(groups),
                    true => self.known.add_groups(groups),
                }
            }
            Command::ListFiles { group } => {
                let files = self.ctx.tracker.list_files(&group, Some(&self.interrupt))?;
                self.known.set_files(group, files.iter().map(|f| f.name.clone()));
                for f in files {
                    let sharers = if f.n_sharers == 1 { "sharer" } else { "sharers" };
                    // Quoted like a shell word when it holds spaces, so the name can be
                    // pasted back into download_file and the line still splits cleanly.
                    let name = shlex::try_quote(f.name.as_str())
                        .map_or_else(|_| f.name.to_string(), |q| q.into_owned());
                    let _ = writeln!(
                        out,
                        "{name} {}, {} {sharers}, digest {}",
                        size::shown(f.size, self.on_terminal),
                        f.n_sharers,
                        f.digest
                    );
                }
            }
            Command::UploadFile { path, group } => {
                if self.ctx.tracker.login().is_none() {
                    return Err(CallError::NotLoggedIn.into());
                }
                let path = command::expand_home(&path, home_dir().as_deref());
                let (meta, stamp) = describe_file(&path)?;
                let (name, size, n_pieces) = (meta.name.clone(), meta.size, meta.pieces.len());
                match self.call(Request::UploadFile { group: group.clone(), file: meta.clone() })? {
                    Reply::Uploaded { new_file } => {
                        self.share_complete(group.clone(), meta, &path, stamp);
                        self.known.add_file(group.clone(), name.clone());
                        if new_file {
                            let pieces = if n_pieces == 1 { "piece" } else { "pieces" };
                            let _ = writeln!(
                                out,
                                "uploaded {name} to group {group} ({}, {n_pieces} {pieces})",
                                size::shown(size, self.on_terminal)
                            );
                        } else {
                            let _ = writeln!(
                                out,
                                "sharing {name} in group {group} (same content already there)"
                            );
                        }
                    }
                    other => return Err(unexpected(other)),
                }
            }
            Command::StopShare { group, name } => {
                self.call(Request::StopShare { group: group.clone(), name: name.clone() })?;
                self.ctx.shares.remove_named(&group, name.as_str());
                let _ = writeln!(out, "stopped sharing {name} in group {group}");
            }
            Command::DownloadFile { group, name, destination } => {
                let destination = command::expand_home(&destination, home_dir().as_deref());
                let dest = download::start(&self.ctx, group.clone(), name.clone(), &destination)?;
                let _ =
                    writeln!(out, "downloading {name} from group {group} to {}", dest.display());
                if self.on_terminal {
                    let records = self.ctx.downloads.snapshot();
                    self.to_follow = records.iter().rposition(|r| r.dest == dest);
                }
            }
            Command::ShowDownloads { json, active } => {
                self.require_login()?;
                let records = self.ctx.downloads.snapshot();
                let shown = records.iter().filter(|r| !active || r.state == DownloadState::Running);
                for record in shown {
                    let _ = writeln!(out, "{}", self.download_line(record, json));
                }
            }
            Command::WaitDownloads { json } => {
                self.require_login()?;
                log::debug!("wait_downloads: waiting (Ctrl-C interrupts)");
                let records = match self.on_terminal && !json {
                    true => progress::wait_idle(&self.ctx.downloads, &self.interrupt),
                    false => self.ctx.downloads.wait_idle(&self.interrupt),
                };
                for record in records.ok_or(CommandError::WaitInterrupted)? {
                    let _ = writeln!(out, "{}", self.download_line(&record, json));
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// At a terminal, after `download_file` printed its line: draws the live bars until
    /// that download ends (or Ctrl-C leaves it to the background), and returns the lines
    /// to print then. `None` when there is nothing to follow.
    pub fn follow_download(&mut self) -> Option<Vec<String>> {
        let idx = self.to_follow.take()?;
        log::debug!("download_file: following download {idx} (Ctrl-C leaves it)");
        Some(progress::follow(&self.ctx.downloads, idx, &self.interrupt))
    }

    /// Calls `hook` each time a download of this peer finishes (`None`: no more).
    pub fn on_download_finished(&self, hook: Option<download::record::FinishHook>) {
        self.ctx.downloads.set_on_finish(hook);
    }

    /// Ends the session if there is one, ignoring failures (used on exit).
    pub fn logout_quietly(&mut self) {
        if self.ctx.tracker.login().is_some() {
            if let Err(e) = self.ctx.tracker.call(Request::Logout) {
                log::warn!("logout on exit failed: {e}");
            }
            self.ctx.tracker.set_login(None);
        }
    }

    /// What `show_downloads`/`wait_downloads` print of `record`.
    fn download_line(&self, record: &DownloadRecord, json: bool) -> String {
        match json {
            true => record.json(),
            false => record.line_for(self.on_terminal),
        }
    }

    /// Learns the user's memberships at login, so that the heartbeats tell of what changes
    /// from then on (and not only from the first heartbeat, seconds later).
    fn watch_memberships(&self, session: common::message::SessionToken) {
        let (known, sent) = self.watch.lock().begin(Some(session));
        if let Some(memberships) = self.ctx.tracker.heartbeat(known) {
            self.known.add_groups(memberships.groups.iter().map(|(g, _)| g.clone()));
            self.watch.lock().update(memberships, sent);
        }
    }

    /// A tracker call in the session that Ctrl-C interrupts.
    fn call(&self, request: Request) -> Result<Reply, CallError> {
        self.ctx.tracker.call_until(request, Some(&self.interrupt))
    }

    fn require_login(&self) -> Result<(), CommandError> {
        match self.ctx.tracker.login() {
            Some(_) => Ok(()),
            None => Err(CallError::NotLoggedIn.into()),
        }
    }

    fn share_complete(&self, group: GroupId, meta: FileMeta, path: &Path, stamp: FileStamp) {
        let Ok(layout) = Layout::new(meta.size) else { return };
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let have = Bitfield::full(layout.n_pieces());
        let share = SharedFile::new(group, meta, layout, path, have, None);
        // Every piece was just hashed, as the file was when it was opened.
        share.set_all_checked(stamp);
        self.ctx.shares.insert(Arc::new(share));
    }

    /// After a login, shares again what this user shared (from this run or a saved one)
    /// and resumes unfinished downloads.
    fn resume_shares(&self, user: &UserId) {
        for share in self.ctx.shares.load_user(user) {
            if share.destination().is_some() {
                download::resume(&self.ctx, share);
                continue;
            }
            let path = share.path();
            let intact =
                std::fs::metadata(&path).map(|m| m.is_file() && m.len() == share.meta.size);
            if !matches!(intact, Ok(true)) {
                log::warn!("{} is gone or changed size; no longer sharing it", path.display());
                self.ctx.shares.remove(&share.group, &share.meta.digest);
                continue;
            }
            let request =
                Request::UploadFile { group: share.group.clone(), file: share.meta.clone() };
            if let Err(e) = self.ctx.tracker.call(request) {
                log::warn!("cannot share {} again: {e}", share.meta.name);
            }
        }
    }
}

/// The `list_shares` line of `share`: group, name (shell-quoted when it has spaces), the
/// pieces this peer has, size, and where the bytes are or will be.
fn share_line(share: &SharedFile, on_terminal: bool) -> String {
    let have = share.have();
    let name = shlex::try_quote(share.meta.name.as_str())
        .map_or_else(|_| share.meta.name.to_string(), |q| q.into_owned());
    let place = match share.destination() {
        Some(dest) => format!("downloading to {}", dest.display()),
        None => format!("from {}", share.path().display()),
    };
    format!(
        "[{}] {name}: {}/{} pieces, {}, {place}",
        share.group,
        have.count(),
        have.n_pieces(),
        size::shown(share.meta.size, on_terminal)
    )
}

/// The user's home directory, for `~` in paths.
fn home_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(std::path::PathBuf::from)
}

fn unexpected(reply: Reply) -> CommandError {
    CommandError::UnexpectedReply(format!("{reply:?}"))
}

/// Hashes the file at `path` and describes it for the tracker; also returns the file's stamp
/// from before it was hashed.
fn describe_file(path: &Path) -> Result<(FileMeta, FileStamp), CommandError> {
    let shown = path.display().to_string();
    let file_error =
        |e: io::Error| CommandError::File { path: shown.clone(), reason: io_reason(&e) };
    let file = File::open(path).map_err(file_error)?;
    let metadata = file.metadata().map_err(file_error)?;
    if !metadata.is_file() {
        return Err(CommandError::NotAFile(shown));
    }
    let stamp = FileStamp::of(&file).map_err(file_error)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| CommandError::BadFileName {
            path: shown.clone(),
            reason: "not UTF-8".to_string(),
        })
        .and_then(|n| {
            FileName::new(n).map_err(|e| CommandError::BadFileName {
                path: shown.clone(),
                reason: e.to_string(),
            })
        })?;
    let hashes = hash_file(&file, metadata.len()).map_err(|e| match e {
        HashFileError::Io(e) => file_error(e),
        other => CommandError::File { path: shown.clone(), reason: other.to_string() },
    })?;
    Ok((
        FileMeta { name, size: hashes.file_len, digest: hashes.digest, pieces: hashes.pieces },
        stamp,
    ))
}

/// An I/O error as a short lowercase reason, without the "(os error N)" suffix.
fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        io::ErrorKind::IsADirectory => "is a directory".to_string(),
        _ => e.to_string(),
    }
}

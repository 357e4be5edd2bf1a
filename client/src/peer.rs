//! The local peer's operations: the one typed API over the tracker session, the shares and
//! the downloads that every view calls (the REPL through `console`, the dashboard through
//! `web`), so that no command has a second implementation.
//!
//! Every operation takes `&self` (views on several threads share one `Arc<Peer>`) and
//! returns typed values or one `CommandError`, whose `Display` is the text after `error: `.
//! Operations that wait on a tracker take an optional `Interrupt` (the REPL's Ctrl-C).

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use common::folder::Selection;
use common::hash::{hash_file, HashFileError};
use common::message::{FileMeta, FileSummary, Reply, Request, TrackerError, TrackerStatus};
use common::{FileName, GroupId, Password, UserId};

use crate::command::{self, Direction};
use crate::completion::Known;
use crate::download::record::{DownloadRecord, Downloads, FindError};
use crate::download::{self, StartError};
use crate::folder_scan::{self, ScanError};
use crate::interrupt::Interrupt;
use crate::membership::Watch;
use crate::seeder::served::{Served, ServedRow};
use crate::session_file::{self, SavedSession};
use crate::swarm::{FileStamp, ItemLayout, Phase, Stamped, Swarm, Toggled};
use crate::tracker_link::LinkError;
use crate::tracker_session::{CallError, Login, TrackerSession};
use crate::tracker_view::{Seen, TrackerEvent};

/// Why an operation failed.
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
    #[error("cannot share the folder {path}: {reason}")]
    Folder { path: String, reason: String },
    #[error("{path} has no usable file name: {reason}")]
    BadFileName { path: String, reason: String },
    #[error("unexpected reply from tracker: {0}")]
    UnexpectedReply(String),
    #[error("interrupted; downloads go on in the background (show_downloads lists them)")]
    WaitInterrupted,
    #[error("no dashboard: start the client with --web 127.0.0.1:PORT")]
    NoDashboard,
    #[error("no download directory: give a destination, or set download_dir in config.toml (HOME is not set)")]
    NoDownloadDir,
    #[error(transparent)]
    Transfer(#[from] FindError),
    #[error("the session of {user} ended at the trackers (logged out elsewhere, or silent too long); login {user} <passwd> to log in again")]
    SessionEnded { user: UserId },
    #[error("cannot resume the session of {user} now ({reason}); it is kept for the next start, or login {user} <passwd>")]
    SessionNotResumed { user: UserId, reason: String },
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
            E::OwnerCannotRemoveSelf(group) => {
                format!("leave_group {group} hands it to the longest-standing member")
            }
            _ => return None,
        })
    }
}

/// The fix for `not logged in`.
const LOGIN_FIRST: &str = "login <user_id> <passwd> first (create_user makes an account)";

/// What `upload_file` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub name: FileName,
    pub group: GroupId,
    pub size: u64,
    pub n_pieces: usize,
    /// `false`: the group had this content under this name already; this peer is one more
    /// sharer.
    pub new_file: bool,
    /// For a folder (issue 23): how many files it holds.
    pub n_files: Option<usize>,
    /// For a folder: what was left out (links, FIFOs, sockets, devices), one line each.
    pub skipped: Vec<String>,
}

/// Who is logged in, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: Option<UserId>,
    /// The tracker that answered this client's last call.
    pub tracker: Option<SocketAddr>,
    /// Where this peer serves pieces.
    pub listen: SocketAddr,
}

/// The local peer.
pub struct Peer {
    ctx: download::Context,
    listen_addr: SocketAddr,
    /// Held while a login or logout runs, so that two views cannot log in at once (the
    /// second would replace the first's session). Guards no data; nothing else takes it.
    session_change: Mutex<()>,
    /// What completion offers: fed with what the operations list, whichever view asked.
    known: Arc<Known>,
    /// The memberships the heartbeats watch: told of this client's own `join_group` and
    /// `leave_group`, so that only others' doings become notices.
    watch: Arc<Mutex<Watch>>,
    /// What this peer's seeder served, to whom.
    served: Arc<Served>,
    /// Where the session is kept for the next start (`None`: not kept).
    session_file: Option<PathBuf>,
    /// Where `download_file` without a destination puts files.
    download_dir: Option<PathBuf>,
}

/// The trackers as this client sees them (the dashboard's trackers panel).
#[derive(Debug, Clone)]
pub struct TrackersSeen {
    /// What `tracker_info.txt` lists: line number, address, whether its key is listed.
    pub listed: Vec<(u32, common::tracker_info::TrackerAddr, bool)>,
    /// The tracker that answered this client's last call.
    pub last: Option<SocketAddr>,
    /// The tracker this client's links connected to last, unless it failed since.
    pub serving: Option<SocketAddr>,
    /// Each tracker's state as this client's links last found it.
    pub seen: Vec<(SocketAddr, Seen)>,
    /// Failovers and other changes, oldest first.
    pub events: Vec<TrackerEvent>,
    /// The last `Status` a tracker gave of its place in the cluster, and when.
    pub status: Option<(std::time::SystemTime, TrackerStatus)>,
}

impl Peer {
    /// A peer that serves pieces on `listen_addr`. What its operations list feeds `known`;
    /// its own `join_group` and `leave_group` are told to `watch`.
    pub fn new(
        ctx: download::Context,
        listen_addr: SocketAddr,
        known: Arc<Known>,
        watch: Arc<Mutex<Watch>>,
        served: Arc<Served>,
        session_file: Option<PathBuf>,
        download_dir: Option<PathBuf>,
    ) -> Peer {
        Peer {
            ctx,
            listen_addr,
            session_change: Mutex::new(()),
            known,
            watch,
            served,
            session_file,
            download_dir,
        }
    }

    /// What this peer served, by downloader and file.
    pub fn served(&self) -> Vec<ServedRow> {
        self.served.snapshot()
    }

    /// The trackers as this client sees them.
    pub fn trackers(&self) -> TrackersSeen {
        let view = self.ctx.tracker.view().snapshot();
        TrackersSeen {
            listed: self.ctx.tracker.listed(),
            last: self.ctx.tracker.last_tracker(),
            serving: view.serving,
            seen: view.trackers,
            events: view.events,
            status: view.status,
        }
    }

    /// What completion offers (for the line editor).
    pub fn known(&self) -> Arc<Known> {
        Arc::clone(&self.known)
    }

    /// The user logged in, if any.
    pub fn user(&self) -> Option<UserId> {
        self.ctx.tracker.login().map(|l| l.user)
    }

    /// Who is logged in, on which tracker, and where this peer serves pieces.
    pub fn account(&self) -> Account {
        Account {
            user: self.user(),
            tracker: self.ctx.tracker.last_tracker(),
            listen: self.listen_addr,
        }
    }

    /// Every download of this session, for views that wait on them.
    pub fn downloads(&self) -> &Downloads {
        &self.ctx.downloads
    }

    /// `create_user`.
    pub fn create_user(
        &self,
        user: &UserId,
        password: Password,
        interrupt: Option<&Interrupt>,
    ) -> Result<(), CommandError> {
        self.ctx
            .tracker
            .call_anonymous(Request::CreateUser { user: user.clone(), password }, interrupt)?;
        Ok(())
    }

    /// `login`; then shares again what the user shared and resumes unfinished downloads.
    pub fn login(
        &self,
        user: &UserId,
        password: Password,
        interrupt: Option<&Interrupt>,
    ) -> Result<(), CommandError> {
        let _changing = self.session_change.lock();
        if let Some(login) = self.ctx.tracker.login() {
            return Err(CommandError::AlreadyLoggedIn(login.user));
        }
        let session = TrackerSession::new_token()?;
        let request =
            Request::Login { user: user.clone(), password, peer_addr: self.listen_addr, session };
        match self.ctx.tracker.call_anonymous(request, interrupt)? {
            Reply::LoggedIn => {
                self.ctx.tracker.set_login(Some(Login { user: user.clone(), session }));
                self.keep_session(user, session);
                self.ctx.reach.1.nudge();
                self.watch_memberships(session);
                self.resume_shares(user);
                Ok(())
            }
            other => Err(unexpected(other)),
        }
    }

    /// `logout` (`everywhere`: `logout --all`).
    pub fn logout(
        &self,
        everywhere: bool,
        interrupt: Option<&Interrupt>,
    ) -> Result<(), CommandError> {
        let _changing = self.session_change.lock();
        self.call(if everywhere { Request::LogoutEverywhere } else { Request::Logout }, interrupt)?;
        self.ctx.tracker.set_login(None);
        self.forget_session();
        Ok(())
    }

    /// At start: logs in again with the session kept by the last run (`exit` and signals
    /// keep it), without the password, and shares and downloads as after a `login`. A
    /// session announced from another address (its port was taken meanwhile) is moved to
    /// this one; a session the trackers ended is forgotten; one that cannot be checked now
    /// (no tracker reachable) is kept.
    pub fn resume_session(&self, saved: SavedSession) -> Result<(), CommandError> {
        let _changing = self.session_change.lock();
        let SavedSession { user, token, peer_addr } = saved;
        self.ctx.tracker.set_login(Some(Login { user: user.clone(), session: token }));
        // A session announced from a port taken meanwhile moves to this one (issue 20);
        // either request says whether the trackers still hold it.
        let moved = peer_addr != self.listen_addr;
        let check = match moved {
            true => Request::MoveSession { peer_addr: self.listen_addr },
            false => Request::Heartbeat { known: None },
        };
        match self.ctx.tracker.call(check) {
            Ok(Reply::Alive { .. } | Reply::Done) => {
                if moved {
                    log::info!(
                        "the session of {user} moved from {peer_addr} to {} (that port was taken)",
                        self.listen_addr
                    );
                    self.keep_session(&user, token);
                }
                self.ctx.reach.1.nudge();
                self.watch_memberships(token);
                self.resume_shares(&user);
                Ok(())
            }
            Err(CallError::Link(LinkError::Tracker(TrackerError::NotLoggedIn))) => {
                self.ctx.tracker.set_login(None);
                self.forget_session();
                Err(CommandError::SessionEnded { user })
            }
            Ok(other) => {
                self.ctx.tracker.set_login(None);
                Err(CommandError::SessionNotResumed { user, reason: format!("{other:?}") })
            }
            Err(e) => {
                self.ctx.tracker.set_login(None);
                Err(CommandError::SessionNotResumed { user, reason: e.to_string() })
            }
        }
    }

    /// Keeps the session for the next start (a failure only costs the next start a login).
    fn keep_session(&self, user: &UserId, token: common::message::SessionToken) {
        let Some(path) = &self.session_file else { return };
        let saved = SavedSession { user: user.clone(), token, peer_addr: self.listen_addr };
        if let Err(e) = session_file::save(path, &saved) {
            log::warn!("cannot keep the session in {}: {e}", path.display());
        }
    }

    /// Forgets the kept session.
    fn forget_session(&self) {
        let Some(path) = &self.session_file else { return };
        if let Err(e) = session_file::forget(path) {
            log::warn!("cannot remove {}: {e}", path.display());
        }
    }

    /// `create_group`.
    pub fn create_group(
        &self,
        group: &GroupId,
        interrupt: Option<&Interrupt>,
    ) -> Result<(), CommandError> {
        self.call(Request::CreateGroup { group: group.clone() }, interrupt)?;
        self.known.add_groups([group.clone()]);
        Ok(())
    }

    /// `join_group`: a pending request to the owner.
    pub fn join_group(
        &self,
        group: &GroupId,
        interrupt: Option<&Interrupt>,
    ) -> Result<(), CommandError> {
        self.call(Request::JoinGroup { group: group.clone() }, interrupt)?;
        self.known.add_groups([group.clone()]);
        self.watch.lock().requested_here(group.clone());
        Ok(())
    }

    /// `leave_group`; this peer's shares in the group end.
    pub fn leave_group(
        &self,
        group: &GroupId,
        interrupt: Option<&Interrupt>,
    ) -> Result<(), CommandError> {
        self.call(Request::LeaveGroup { group: group.clone() }, interrupt)?;
        self.watch.lock().left_here(group.clone());
        self.ctx.registry.remove_group(group);
        self.ctx.registry.flush();
        Ok(())
    }

    /// The requests to join the user's groups that wait for the user's decision, as the
    /// heartbeats last listed them (no tracker call; the dashboard's notices).
    pub fn pending_requests(&self) -> Vec<(GroupId, UserId)> {
        self.watch.lock().pending_requests()
    }

    /// `list_requests` (owner only), in user id order.
    pub fn list_requests(
        &self,
        group: &GroupId,
        interrupt: Option<&Interrupt>,
    ) -> Result<Vec<UserId>, CommandError> {
        Ok(self.ctx.tracker.list_requests(group, interrupt)?)
    }

    /// `accept_request` (owner only).
    pub fn accept_request(
        &self,
        group: &GroupId,
        user: &UserId,
        interrupt: Option<&Interrupt>,
    ) -> Result<(), CommandError> {
        self.call(Request::AcceptRequest { group: group.clone(), user: user.clone() }, interrupt)?;
        self.watch.lock().decided_here(group, user);
        Ok(())
    }

    /// `reject_request` (owner only).
    pub fn reject_request(
        &self,
        group: &GroupId,
        user: &UserId,
        interrupt: Option<&Interrupt>,
    ) -> Result<(), CommandError> {
        self.call(Request::RejectRequest { group: group.clone(), user: user.clone() }, interrupt)?;
        self.watch.lock().decided_here(group, user);
        Ok(())
    }

    /// `remove_member` (owner only): the member's shares in the group end at the trackers,
    /// and their tickets for it within the ticket lifetime.
    pub fn remove_member(
        &self,
        group: &GroupId,
        user: &UserId,
        interrupt: Option<&Interrupt>,
    ) -> Result<(), CommandError> {
        self.call(Request::RemoveMember { group: group.clone(), user: user.clone() }, interrupt)?;
        Ok(())
    }

    /// `list_groups`, or with `mine` `list_my_groups`.
    pub fn list_groups(
        &self,
        mine: bool,
        interrupt: Option<&Interrupt>,
    ) -> Result<Vec<GroupId>, CommandError> {
        let groups = self.ctx.tracker.list_groups(mine, interrupt)?;
        match mine {
            false => self.known.set_groups(groups.clone()),
            true => self.known.add_groups(groups.clone()),
        }
        Ok(groups)
    }

    /// `list_files` (members only).
    pub fn list_files(
        &self,
        group: &GroupId,
        interrupt: Option<&Interrupt>,
    ) -> Result<Vec<FileSummary>, CommandError> {
        let files = self.ctx.tracker.list_files(group, interrupt)?;
        self.known.set_files(group.clone(), files.iter().map(|f| f.name.clone()));
        Ok(files)
    }

    /// `upload_file`: hashes the file at `path` (a leading `~` is the home directory),
    /// announces it to `group` and shares it.
    pub fn upload_file(
        &self,
        path: &Path,
        group: &GroupId,
        interrupt: Option<&Interrupt>,
    ) -> Result<Uploaded, CommandError> {
        self.require_login()?;
        let path = command::expand_home(path, crate::config::home_dir().as_deref());
        let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        let (meta, stamped, skipped) = match is_dir {
            true => {
                let (meta, stamps, skipped) = describe_folder(&path)?;
                (meta, Stamped::Folder(stamps), skipped)
            }
            false => {
                let (meta, stamp) = describe_file(&path)?;
                (meta, Stamped::File(stamp), Vec::new())
            }
        };
        let (name, size, n_pieces) = (meta.name.clone(), meta.size, meta.pieces.len());
        let n_files = meta.tree.as_ref().map(|t| t.file_count());
        match self
            .call(Request::UploadFile { group: group.clone(), file: meta.clone() }, interrupt)?
        {
            Reply::Uploaded { new_file } => {
                self.share_complete(group.clone(), meta, &path, stamped);
                self.known.add_file(group.clone(), name.clone());
                let group = group.clone();
                Ok(Uploaded { name, group, size, n_pieces, new_file, n_files, skipped })
            }
            other => Err(unexpected(other)),
        }
    }

    /// `stop_share`.
    pub fn stop_share(
        &self,
        group: &GroupId,
        name: &FileName,
        interrupt: Option<&Interrupt>,
    ) -> Result<(), CommandError> {
        let part = self.ctx.registry.all().into_iter().find(|s| {
            &s.group == group
                && &s.meta.name == name
                && !s.chosen.is_whole()
                && matches!(s.phase(), Phase::Seeding)
        });
        match part {
            // Part of a folder (issue 23): the tracker knows it by the pieces it
            // announced, not as a sharer; it announces none now.
            Some(part) => {
                let have = common::Bitfield::empty(part.layout.n_pieces());
                let digest = part.meta.digest;
                self.call(
                    Request::AnnouncePieces { group: group.clone(), digest, have },
                    interrupt,
                )?;
            }
            None => {
                let request = Request::StopShare { group: group.clone(), name: name.clone() };
                self.call(request, interrupt)?;
            }
        }
        self.ctx.registry.remove_named(group, name.as_str());
        self.ctx.registry.flush();
        Ok(())
    }

    /// `download_file`: starts the download in the background (a leading `~` in
    /// `destination` is the home directory; without one, the download directory, made if
    /// missing) and returns its final path.
    pub fn download_file(
        &self,
        group: &GroupId,
        name: &FileName,
        folder: Option<&Selection>,
        destination: Option<&Path>,
    ) -> Result<PathBuf, CommandError> {
        let destination = match destination {
            Some(dest) => command::expand_home(dest, crate::config::home_dir().as_deref()),
            None => {
                let dir = self.download_dir.clone().ok_or(CommandError::NoDownloadDir)?;
                std::fs::create_dir_all(&dir).map_err(|e| CommandError::File {
                    path: dir.display().to_string(),
                    reason: io_reason(&e),
                })?;
                dir
            }
        };
        Ok(download::start(&self.ctx, group.clone(), name.clone(), folder, &destination)?)
    }

    /// `list_shares`: what this peer shares, sorted by group then name.
    pub fn list_shares(&self) -> Result<Vec<Arc<Swarm>>, CommandError> {
        self.require_login()?;
        let mut shares = self.ctx.registry.all();
        shares.sort_by(|a, b| (&a.group, &a.meta.name).cmp(&(&b.group, &b.meta.name)));
        Ok(shares)
    }

    /// `show_downloads`: every download of this session.
    pub fn show_downloads(&self) -> Result<Vec<DownloadRecord>, CommandError> {
        self.require_login()?;
        Ok(self.ctx.downloads.snapshot())
    }

    /// `pause`: the download of `name` in `group` stops fetching; it keeps, and still
    /// serves, the pieces it has.
    pub fn pause(&self, group: &GroupId, name: &FileName) -> Result<Toggled, CommandError> {
        self.require_login()?;
        let toggled = self.ctx.downloads.pause(group, name)?;
        self.ctx.registry.flush();
        Ok(toggled)
    }

    /// `resume`: a paused download goes on.
    pub fn resume(&self, group: &GroupId, name: &FileName) -> Result<Toggled, CommandError> {
        self.require_login()?;
        let toggled = self.ctx.downloads.resume(group, name)?;
        self.ctx.registry.flush();
        Ok(toggled)
    }

    /// `cancel`: the download stops and its partial file is removed; it is no longer
    /// listed.
    pub fn cancel(&self, group: &GroupId, name: &FileName) -> Result<(), CommandError> {
        self.require_login()?;
        self.ctx.downloads.cancel(group, name)?;
        self.ctx.registry.flush();
        Ok(())
    }

    /// `limit_rate up|down <rate>`: changes a cap at once (`None`: no cap).
    pub fn limit_rate(
        &self,
        direction: Direction,
        bytes_per_sec: Option<u64>,
    ) -> Result<(), CommandError> {
        match direction {
            Direction::Up => self.ctx.upload_cap.set(bytes_per_sec),
            Direction::Down => self.ctx.download_cap.set(bytes_per_sec),
        }
        Ok(())
    }

    /// The upload and download caps now, in bytes per second (`None`: unlimited).
    pub fn rate_limits(&self) -> (Option<u64>, Option<u64>) {
        (self.ctx.upload_cap.get(), self.ctx.download_cap.get())
    }

    /// Calls `hook` each time a download of this peer finishes (`None`: no more).
    pub fn on_download_finished(&self, hook: Option<download::record::FinishHook>) {
        self.ctx.downloads.set_on_finish(hook);
    }

    /// Fails unless a user is logged in.
    pub fn require_login(&self) -> Result<(), CommandError> {
        match self.ctx.tracker.login() {
            Some(_) => Ok(()),
            None => Err(CallError::NotLoggedIn.into()),
        }
    }

    /// Learns the user's memberships at login, so that the heartbeats tell of what changes
    /// from then on (and not only from the first heartbeat, seconds later).
    fn watch_memberships(&self, session: common::message::SessionToken) {
        let (known, sent) = self.watch.lock().begin(Some(session));
        if let Some(memberships) = self.ctx.tracker.heartbeat(known) {
            self.known.add_groups(memberships.groups.iter().map(|(g, _)| g.clone()));
            self.watch.lock().start(memberships, sent);
        }
    }

    /// A tracker call in the session.
    fn call(&self, request: Request, interrupt: Option<&Interrupt>) -> Result<Reply, CallError> {
        self.ctx.tracker.call_until(request, interrupt)
    }

    /// Shares a complete file or folder from `path`. `stamped`: every piece of the file,
    /// or of each of the folder's files, was just hashed, as the file was when it was
    /// opened.
    fn share_complete(&self, group: GroupId, meta: FileMeta, path: &Path, stamped: Stamped) {
        let Ok(layout) = ItemLayout::of(&meta) else { return };
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let swarm = Swarm::seeding(group, meta, layout, path, stamped);
        self.ctx.registry.insert(Arc::new(swarm));
        self.ctx.registry.flush();
    }

    /// After a login, shares again what this user shared (from this run or a saved one)
    /// and resumes unfinished downloads.
    fn resume_shares(&self, user: &UserId) {
        for share in self.ctx.registry.load_user(user, self.ctx.downloads.changes()) {
            if share.downloading_to().is_some() {
                download::resume(&self.ctx, share);
                continue;
            }
            let path = share.path();
            let one_file = matches!(share.chosen.selection, Selection::Inside { dir: false, .. });
            let intact = std::fs::metadata(&path).map(|m| match share.meta.is_folder() {
                // Each piece is checked as it is served.
                true if one_file => m.is_file() && m.len() == share.chosen.size,
                true => m.is_dir(),
                false => m.is_file() && m.len() == share.meta.size,
            });
            if !matches!(intact, Ok(true)) {
                log::warn!("{} is gone or changed size; no longer sharing it", path.display());
                self.ctx.registry.remove(&share);
                self.ctx.registry.save();
                continue;
            }
            // Part of a folder (issue 23): its pieces, as a download announces them.
            let request = match share.chosen.is_whole() {
                true => {
                    Request::UploadFile { group: share.group.clone(), file: share.meta.clone() }
                }
                false => Request::AnnouncePieces {
                    group: share.group.clone(),
                    digest: share.meta.digest,
                    have: share.have(),
                },
            };
            if let Err(e) = self.ctx.tracker.call(request) {
                log::warn!("cannot share {} again: {e}", share.meta.name);
            }
        }
    }
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
    let name = base_name(path)?;
    let hashes = hash_file(&file, metadata.len()).map_err(|e| match e {
        HashFileError::Io(e) => file_error(e),
        other => CommandError::File { path: shown.clone(), reason: other.to_string() },
    })?;
    Ok((
        FileMeta {
            name,
            size: hashes.file_len,
            digest: hashes.digest,
            pieces: hashes.pieces,
            tree: None,
        },
        stamp,
    ))
}

/// The name `path`'s last component is shared under (a file's or a folder's).
fn base_name(path: &Path) -> Result<FileName, CommandError> {
    let bad =
        |reason: String| CommandError::BadFileName { path: path.display().to_string(), reason };
    let text = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| bad("not UTF-8".into()))?;
    FileName::new(text).map_err(|e| bad(e.to_string()))
}

/// Room left in a frame for the request around a folder's metadata (ids, group, session).
const FRAME_HEADROOM: usize = 4096;

/// Scans and hashes the directory at `path` (issue 23) and describes it as a folder named
/// after it; also returns each file's stamp from before it was hashed (by entry index) and
/// a line for each entry left out.
#[allow(clippy::type_complexity)]
fn describe_folder(
    path: &Path,
) -> Result<(FileMeta, Vec<(usize, FileStamp)>, Vec<String>), CommandError> {
    let shown = path.display().to_string();
    let name = base_name(path)?;
    let folder_error =
        |e: ScanError| CommandError::Folder { path: shown.clone(), reason: e.to_string() };
    let scanned = folder_scan::scan(path).map_err(folder_error)?;
    let hashes = folder_scan::hash(&scanned).map_err(folder_error)?;
    let skipped = scanned.skipped.iter().map(ToString::to_string).collect();
    let meta = FileMeta {
        name,
        size: scanned.tree.total_size(),
        digest: hashes.digest,
        pieces: hashes.pieces,
        tree: Some(scanned.tree),
    };
    // A tree near its bounds with many pieces can describe more than one message carries
    // (the tree's 4 MiB of paths besides 10 MiB of piece hashes): say so rather than fail
    // at the tracker.
    if let Err(len) = fits_in_a_message(&meta) {
        let reason = format!(
            "its description takes {len} bytes, more than a message carries ({} bytes); share its subfolders one by one",
            common::frame::MAX_FRAME_LEN - FRAME_HEADROOM
        );
        return Err(CommandError::Folder { path: shown, reason });
    }
    Ok((meta, hashes.stamps, skipped))
}

/// Whether `meta` fits in an `UploadFile` frame; else its encoded length.
fn fits_in_a_message(meta: &FileMeta) -> Result<(), usize> {
    let mut encoded = Vec::new();
    match common::codec::encode(meta, &mut encoded) {
        Ok(()) if encoded.len() + FRAME_HEADROOM <= common::frame::MAX_FRAME_LEN => Ok(()),
        _ => Err(encoded.len()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use common::folder::{Entry, EntryKind, RelPath, Tree};
    use common::Sha1Digest;

    /// Issue 23: a folder whose tree and piece hashes together exceed a frame is caught
    /// before it is sent; one within bounds passes.
    #[test]
    fn a_folder_too_large_to_describe_in_one_message_is_refused() {
        let entries = (0..100_000)
            .map(|i| Entry {
                path: RelPath::parse(&format!("{i:0>38}")).unwrap(),
                kind: EntryKind::File { size: 0, executable: false },
            })
            .collect();
        let tree = Tree::new(entries).unwrap();
        let mut meta = FileMeta {
            name: "big".parse().unwrap(),
            size: 0,
            digest: Sha1Digest([0; 20]),
            pieces: Vec::new(),
            tree: Some(tree),
        };
        assert_eq!(fits_in_a_message(&meta), Ok(()));
        meta.pieces = vec![Sha1Digest([1; 20]); 400_000];
        let len = fits_in_a_message(&meta).unwrap_err();
        assert!(len > common::frame::MAX_FRAME_LEN, "{len}");
    }
}

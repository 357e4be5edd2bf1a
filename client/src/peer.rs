//! The local peer: its tracker session and the commands the REPL runs against it.
//!
//! `Peer::execute` turns one `Command` into the lines to print, or one `CommandError` whose
//! `Display` is the text after `error: `.

use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::Path;

use common::hash::{hash_file, HashFileError};
use common::message::{FileMeta, Reply, Request, SessionToken};
use common::{FileName, UserId};

use crate::command::{Command, USAGES};
use crate::tracker_link::{LinkError, TrackerLink};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("not logged in")]
    NotLoggedIn,
    #[error("already logged in as {0}; logout first")]
    AlreadyLoggedIn(UserId),
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0} is not a regular file")]
    NotAFile(String),
    #[error("{path} has no usable file name: {reason}")]
    BadFileName { path: String, reason: String },
    #[error("{0} is not available in this version")]
    Unsupported(&'static str),
    #[error("unexpected reply from tracker: {0}")]
    UnexpectedReply(String),
}

/// What the REPL should do after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Exit,
}

struct Login {
    user: UserId,
    session: SessionToken,
}

/// The local peer.
pub struct Peer {
    link: TrackerLink,
    listen_addr: SocketAddr,
    login: Option<Login>,
}

impl Peer {
    /// A peer that serves pieces on `listen_addr` and talks to the trackers over `link`.
    pub fn new(link: TrackerLink, listen_addr: SocketAddr) -> Peer {
        Peer { link, listen_addr, login: None }
    }

    /// The user logged in, if any.
    pub fn user(&self) -> Option<&UserId> {
        self.login.as_ref().map(|l| &l.user)
    }

    /// Runs one command, appending its output lines to `out`.
    pub fn execute(&mut self, command: Command, out: &mut String) -> Result<Flow, CommandError> {
        match command {
            Command::Help => {
                for (_, usage) in USAGES {
                    let _ = writeln!(out, "{usage}");
                }
            }
            Command::Exit => {
                self.logout_quietly();
                return Ok(Flow::Exit);
            }
            Command::CreateUser { user, password } => {
                self.link.call(None, Request::CreateUser { user: user.clone(), password })?;
                let _ = writeln!(out, "created user {user}");
            }
            Command::Login { user, password } => {
                if let Some(login) = &self.login {
                    return Err(CommandError::AlreadyLoggedIn(login.user.clone()));
                }
                let request =
                    Request::Login { user: user.clone(), password, peer_addr: self.listen_addr };
                match self.link.call(None, request)? {
                    Reply::LoggedIn { session } => {
                        let _ = writeln!(out, "logged in as {user}");
                        self.login = Some(Login { user, session });
                    }
                    other => return Err(unexpected(other)),
                }
            }
            Command::Logout => {
                let session = self.session()?;
                self.link.call(Some(session), Request::Logout)?;
                self.login = None;
                let _ = writeln!(out, "logged out");
            }
            Command::CreateGroup { group } => {
                self.call(Request::CreateGroup { group: group.clone() })?;
                let _ = writeln!(out, "created group {group}");
            }
            Command::JoinGroup { group } => {
                self.call(Request::JoinGroup { group: group.clone() })?;
                let _ = writeln!(out, "requested to join group {group}");
            }
            Command::LeaveGroup { group } => {
                self.call(Request::LeaveGroup { group: group.clone() })?;
                let _ = writeln!(out, "left group {group}");
            }
            Command::ListRequests { group } => match self.call(Request::ListRequests { group })? {
                Reply::Users(users) => users.iter().for_each(|u| {
                    let _ = writeln!(out, "{u}");
                }),
                other => return Err(unexpected(other)),
            },
            Command::AcceptRequest { group, user } => {
                self.call(Request::AcceptRequest { group: group.clone(), user: user.clone() })?;
                let _ = writeln!(out, "accepted {user} into group {group}");
            }
            Command::RejectRequest { group, user } => {
                self.call(Request::RejectRequest { group: group.clone(), user: user.clone() })?;
                let _ = writeln!(out, "rejected {user}'s request to join group {group}");
            }
            Command::ListGroups | Command::ListMyGroups => {
                let request = if command == Command::ListGroups {
                    Request::ListGroups
                } else {
                    Request::ListMyGroups
                };
                match self.call(request)? {
                    Reply::Groups(groups) => groups.iter().for_each(|g| {
                        let _ = writeln!(out, "{g}");
                    }),
                    other => return Err(unexpected(other)),
                }
            }
            Command::ListFiles { group } => match self.call(Request::ListFiles { group })? {
                Reply::Files(files) => {
                    for f in files {
                        let sharers = if f.n_sharers == 1 { "sharer" } else { "sharers" };
                        // Quoted like a shell word when it holds spaces, so the name can be
                        // pasted back into download_file and the line still splits cleanly.
                        let name = shlex::try_quote(f.name.as_str())
                            .map_or_else(|_| f.name.to_string(), |q| q.into_owned());
                        let _ = writeln!(
                            out,
                            "{name} {} bytes, {} {sharers}, digest {}",
                            f.size, f.n_sharers, f.digest
                        );
                    }
                }
                other => return Err(unexpected(other)),
            },
            Command::UploadFile { path, group } => {
                self.session()?;
                let meta = describe_file(&path)?;
                let (name, size, n_pieces) = (meta.name.clone(), meta.size, meta.pieces.len());
                match self.call(Request::UploadFile { group: group.clone(), file: meta })? {
                    Reply::Uploaded { new_file: true } => {
                        let _ = writeln!(
                            out,
                            "uploaded {name} to group {group} ({size} bytes, {n_pieces} {})",
                            if n_pieces == 1 { "piece" } else { "pieces" }
                        );
                    }
                    Reply::Uploaded { new_file: false } => {
                        let _ = writeln!(
                            out,
                            "sharing {name} in group {group} (same content already there)"
                        );
                    }
                    other => return Err(unexpected(other)),
                }
            }
            Command::StopShare { group, name } => {
                self.call(Request::StopShare { group: group.clone(), name: name.clone() })?;
                let _ = writeln!(out, "stopped sharing {name} in group {group}");
            }
            Command::DownloadFile { .. } => return Err(CommandError::Unsupported("download_file")),
            Command::ShowDownloads | Command::WaitDownloads => {
                // No download has been started in this session.
                self.session()?;
            }
        }
        Ok(Flow::Continue)
    }

    /// Ends the session if there is one, ignoring failures (used on exit).
    pub fn logout_quietly(&mut self) {
        if let Some(login) = self.login.take() {
            if let Err(e) = self.link.call(Some(login.session), Request::Logout) {
                log::warn!("logout on exit failed: {e}");
            }
        }
    }

    fn session(&self) -> Result<SessionToken, CommandError> {
        self.login.as_ref().map(|l| l.session).ok_or(CommandError::NotLoggedIn)
    }

    fn call(&mut self, request: Request) -> Result<Reply, CommandError> {
        let session = self.session()?;
        Ok(self.link.call(Some(session), request)?)
    }
}

fn unexpected(reply: Reply) -> CommandError {
    CommandError::UnexpectedReply(format!("{reply:?}"))
}

/// Hashes the file at `path` and describes it for the tracker.
fn describe_file(path: &Path) -> Result<FileMeta, CommandError> {
    let shown = path.display().to_string();
    let file_error =
        |e: io::Error| CommandError::File { path: shown.clone(), reason: io_reason(&e) };
    let file = File::open(path).map_err(file_error)?;
    let metadata = file.metadata().map_err(file_error)?;
    if !metadata.is_file() {
        return Err(CommandError::NotAFile(shown));
    }
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
    Ok(FileMeta { name, size: hashes.file_len, digest: hashes.digest, pieces: hashes.pieces })
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

//! The REPL's view of the peer: runs one `Command` through `Peer`'s operations and writes
//! the lines SPEC and the README promise (exact bytes on a pipe, `8.4 MB` at a terminal).
//!
//! Only text is made here; what a command does is `Peer`'s, shared with the dashboard.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::command::{Command, COMMANDS};
use crate::download::record::{DownloadRecord, DownloadState};
use crate::interrupt::Interrupt;
use crate::peer::{CommandError, Peer};
use crate::progress;
use crate::rate;
use crate::size;
use crate::swarm::{Swarm, Toggled};

/// What the REPL should do after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Exit,
}

/// The REPL's side of the peer: the shared operations, Ctrl-C, and how to print.
pub struct Console {
    peer: Arc<Peer>,
    interrupt: Arc<Interrupt>,
    /// At a terminal: `wait_downloads` draws progress bars, and sizes read as `8.4 MB`.
    on_terminal: bool,
    /// The dashboard's address, if it runs (for `web`).
    web_url: Option<String>,
    /// The download the last `download_file` started, to follow at a terminal.
    to_follow: Option<usize>,
}

impl Console {
    /// A console over `peer`; Ctrl-C fires `interrupt`.
    pub fn new(peer: Arc<Peer>, interrupt: Arc<Interrupt>) -> Console {
        Console { peer, interrupt, on_terminal: false, web_url: None, to_follow: None }
    }

    /// At a terminal (`true`), `wait_downloads` (without `--json`) draws live progress
    /// bars while it waits, and sizes are shown as `8.4 MB` instead of exact bytes.
    pub fn set_terminal(&mut self, on_terminal: bool) {
        self.on_terminal = on_terminal;
    }

    /// The dashboard's URL (with its access token), which `web` prints.
    pub fn set_web_url(&mut self, url: Option<String>) {
        self.web_url = url;
    }

    /// The peer this console drives.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Runs one command, appending its output lines to `out`. Ctrl-C while it runs makes
    /// its waits give up; one that came before it is forgotten.
    pub fn execute(&mut self, command: Command, out: &mut String) -> Result<Flow, CommandError> {
        self.interrupt.reset();
        let peer = &self.peer;
        let i = Some(&*self.interrupt);
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
            Command::Web => match &self.web_url {
                Some(url) => {
                    let _ = writeln!(out, "{url}");
                }
                None => return Err(CommandError::NoDashboard),
            },
            Command::ListShares => {
                for share in peer.list_shares()? {
                    let _ = writeln!(out, "{}", share_line(&share, self.on_terminal));
                }
            }
            // The session stays for the next start (`logout` ends it).
            Command::Exit => return Ok(Flow::Exit),
            Command::CreateUser { user, password } => {
                peer.create_user(&user, password, i)?;
                let _ = writeln!(out, "created user {user}");
            }
            Command::Login { user, password } => {
                peer.login(&user, password, i)?;
                let _ = writeln!(out, "logged in as {user}");
            }
            Command::Logout { everywhere } => {
                peer.logout(everywhere, i)?;
                let _ = writeln!(out, "logged out{}", if everywhere { " everywhere" } else { "" });
            }
            Command::CreateGroup { group } => {
                peer.create_group(&group, i)?;
                let _ = writeln!(out, "created group {group}");
            }
            Command::JoinGroup { group } => {
                peer.join_group(&group, i)?;
                let _ = writeln!(out, "requested to join group {group}");
            }
            Command::LeaveGroup { group } => {
                peer.leave_group(&group, i)?;
                let _ = writeln!(out, "left group {group}");
            }
            Command::ListRequests { group } => {
                for user in peer.list_requests(&group, i)? {
                    let _ = writeln!(out, "{user}");
                }
            }
            Command::AcceptRequest { group, user } => {
                peer.accept_request(&group, &user, i)?;
                let _ = writeln!(out, "accepted {user} into group {group}");
            }
            Command::RejectRequest { group, user } => {
                peer.reject_request(&group, &user, i)?;
                let _ = writeln!(out, "rejected {user}'s request to join group {group}");
            }
            Command::RemoveMember { group, user } => {
                peer.remove_member(&group, &user, i)?;
                let _ = writeln!(out, "removed {user} from group {group}");
            }
            Command::ListGroups | Command::ListMyGroups => {
                for group in peer.list_groups(command == Command::ListMyGroups, i)? {
                    let _ = writeln!(out, "{group}");
                }
            }
            Command::ListFiles { group } => {
                for f in peer.list_files(&group, i)? {
                    let sharers = if f.n_sharers == 1 { "sharer" } else { "sharers" };
                    let size = size::shown(f.size, self.on_terminal);
                    // A folder (issue 23): `name/`, its size and how many files it holds.
                    let (name, size) = match f.n_files {
                        Some(n) => {
                            let files = if n == 1 { "file" } else { "files" };
                            (quoted(&format!("{}/", f.name)), format!("{size} in {n} {files}"))
                        }
                        None => (quoted(f.name.as_str()), size),
                    };
                    let _ = writeln!(
                        out,
                        "{name} {size}, {} {sharers}, digest {}",
                        f.n_sharers, f.digest
                    );
                }
            }
            Command::UploadFile { path, group } => {
                let up = peer.upload_file(&path, &group, i)?;
                let size = size::shown(up.size, self.on_terminal);
                // A folder (issue 23) is `name/`, with its file count.
                let (name, size) = match up.n_files {
                    Some(n) => {
                        let files = if n == 1 { "file" } else { "files" };
                        (format!("{}/", up.name), format!("{size} in {n} {files}"))
                    }
                    None => (up.name.to_string(), size),
                };
                if up.new_file {
                    let pieces = if up.n_pieces == 1 { "piece" } else { "pieces" };
                    let _ = writeln!(
                        out,
                        "uploaded {name} to group {group} ({size}, {} {pieces})",
                        up.n_pieces
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "sharing {name} in group {group} (same content already there)"
                    );
                }
                for line in &up.skipped {
                    let _ = writeln!(out, "{line}");
                }
            }
            Command::StopShare { group, name } => {
                peer.stop_share(&group, &name, i)?;
                let _ = writeln!(out, "stopped sharing {name} in group {group}");
            }
            Command::Pause { group, name } => {
                let line = match peer.pause(&group, &name)? {
                    Toggled::Done => format!("paused {name} in group {group}"),
                    Toggled::AlreadySo => format!("{name} in group {group} is paused already"),
                };
                let _ = writeln!(out, "{line}");
            }
            Command::Resume { group, name } => {
                let line = match peer.resume(&group, &name)? {
                    Toggled::Done => format!("resumed {name} in group {group}"),
                    Toggled::AlreadySo => format!("{name} in group {group} is not paused"),
                };
                let _ = writeln!(out, "{line}");
            }
            Command::Cancel { group, name } => {
                peer.cancel(&group, &name)?;
                let _ =
                    writeln!(out, "cancelled {name} in group {group}; its partial file is removed");
            }
            Command::LimitRate { change } => {
                if let Some((direction, rate)) = change {
                    peer.limit_rate(direction, rate)?;
                }
                let (up, down) = peer.rate_limits();
                let shown = |r: Option<u64>| r.map_or("unlimited".to_string(), rate::shown);
                let _ = writeln!(out, "upload {}, download {}", shown(up), shown(down));
            }
            Command::DownloadFile { group, name, folder, destination } => {
                let dest =
                    peer.download_file(&group, &name, folder.as_ref(), destination.as_deref())?;
                let shown = match &folder {
                    Some(selection) => selection.shown(&name),
                    None => name.to_string(),
                };
                let _ =
                    writeln!(out, "downloading {shown} from group {group} to {}", dest.display());
                if self.on_terminal {
                    let records = peer.downloads().snapshot();
                    self.to_follow = records.iter().rfind(|r| r.dest == dest).map(|r| r.id);
                }
            }
            Command::ShowDownloads { json, active } => {
                let records = peer.show_downloads()?;
                let shown = records.iter().filter(|r| !active || r.state == DownloadState::Running);
                for record in shown {
                    let _ = writeln!(out, "{}", self.download_line(record, json));
                }
            }
            Command::WaitDownloads { json } => {
                peer.require_login()?;
                log::debug!("wait_downloads: waiting (Ctrl-C interrupts)");
                let records = match self.on_terminal && !json {
                    true => progress::wait_idle(peer.downloads(), &self.interrupt),
                    false => peer.downloads().wait_idle(&self.interrupt),
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
        Some(progress::follow(self.peer.downloads(), idx, &self.interrupt))
    }

    /// What `show_downloads`/`wait_downloads` print of `record`.
    fn download_line(&self, record: &DownloadRecord, json: bool) -> String {
        match json {
            true => record.json(),
            false => record.line_for(self.on_terminal),
        }
    }
}

/// `name` quoted like a shell word when it holds spaces, so that it can be pasted back
/// into a command and the line still splits cleanly.
fn quoted(name: &str) -> String {
    shlex::try_quote(name).map_or_else(|_| name.to_string(), |q| q.into_owned())
}

/// The `list_shares` line of `share`: group, name (shell-quoted when it has spaces), the
/// pieces this peer has, size, and where the bytes are or will be.
fn share_line(share: &Swarm, on_terminal: bool) -> String {
    let (have, place) = share.inspect(|s| {
        let place = match s.downloading_to() {
            Some(dest) => format!("downloading to {}", dest.display()),
            None => format!("from {}", s.path().display()),
        };
        (s.have().clone(), place)
    });
    format!(
        "[{}] {}: {}/{} pieces, {}, {place}",
        share.group,
        quoted(&share.shown_name()),
        share.chosen.count_in(&have),
        share.chosen.wanted.count(),
        size::shown(share.chosen.size, on_terminal)
    )
}

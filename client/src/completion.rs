//! Tab completion at the terminal prompt (issue 10): command names (and the command after
//! `help`), paths where a command takes one (`upload_file`'s file, `download_file`'s
//! destination; `~` expands), group ids where a command takes a group, and the file names
//! of a group (as `list_files <group>` lists them) for `download_file`, `stop_share`,
//! `pause`, `resume` and `cancel`.
//!
//! Group ids and file names come from `Known`: what the REPL's own commands and the
//! heartbeats already fetched. When that is older than `FRESH_FOR`, a Tab asks the
//! `complete` thread to fetch it again and waits at most `FETCH_WAIT` for the answer, so
//! the prompt never stalls on a slow tracker; a late answer serves the next Tab.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use parking_lot::Mutex;
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use common::{FileName, GroupId};

use crate::command::COMMANDS;
use crate::interrupt::Interrupt;
use crate::tracker_session::TrackerSession;

/// What is known for this long is used as it is; older, a Tab fetches it again.
pub const FRESH_FOR: Duration = Duration::from_secs(10);
/// How long a Tab waits for a fetch before completing from what is known.
pub const FETCH_WAIT: Duration = Duration::from_millis(300);

/// The group ids and file names known to the REPL, for completion.
#[derive(Default)]
pub struct Known {
    inner: Mutex<KnownLists>,
    fetches: Mutex<Option<Sender<FetchRequest>>>,
}

#[derive(Default)]
struct KnownLists {
    groups: BTreeSet<GroupId>,
    /// When every group was last listed (or asked for).
    groups_at: Option<Instant>,
    /// Each group's files, and when they were listed (or asked for).
    files: BTreeMap<GroupId, (BTreeSet<FileName>, Instant)>,
}

/// A fetch for the `complete` thread, and where to say it is done.
type FetchRequest = (Fetch, Sender<()>);

/// A list to fetch from the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fetch {
    Groups,
    Files(GroupId),
}

impl Known {
    /// Every group, as `list_groups` just listed them.
    pub fn set_groups(&self, groups: impl IntoIterator<Item = GroupId>) {
        let mut inner = self.inner.lock();
        inner.groups = groups.into_iter().collect();
        inner.groups_at = Some(Instant::now());
    }

    /// Groups seen to exist (in `list_my_groups`, a heartbeat, a command that worked).
    pub fn add_groups(&self, groups: impl IntoIterator<Item = GroupId>) {
        self.inner.lock().groups.extend(groups);
    }

    /// A group seen to be gone.
    pub fn remove_group(&self, group: &GroupId) {
        let mut inner = self.inner.lock();
        inner.groups.remove(group);
        inner.files.remove(group);
    }

    /// The files of `group`, as `list_files` just listed them.
    pub fn set_files(&self, group: GroupId, files: impl IntoIterator<Item = FileName>) {
        self.inner.lock().files.insert(group, (files.into_iter().collect(), Instant::now()));
    }

    /// A file seen in `group` (uploaded by this peer).
    pub fn add_file(&self, group: GroupId, file: FileName) {
        let mut inner = self.inner.lock();
        let entry = inner.files.entry(group).or_insert_with(|| (BTreeSet::new(), Instant::now()));
        entry.0.insert(file);
    }

    /// The known groups starting with `prefix`, fetching them first if they are stale.
    pub fn groups(&self, prefix: &str) -> Vec<String> {
        if self.inner.lock().groups_at.is_none_or(|at| at.elapsed() > FRESH_FOR) {
            self.fetch(Fetch::Groups);
        }
        let inner = self.inner.lock();
        inner.groups.iter().map(|g| g.to_string()).filter(|g| g.starts_with(prefix)).collect()
    }

    /// The known files of `group` starting with `prefix`, fetching them first if stale.
    pub fn files(&self, group: &GroupId, prefix: &str) -> Vec<String> {
        let stale =
            self.inner.lock().files.get(group).is_none_or(|(_, at)| at.elapsed() > FRESH_FOR);
        if stale {
            self.fetch(Fetch::Files(group.clone()));
        }
        let inner = self.inner.lock();
        let Some((files, _)) = inner.files.get(group) else { return Vec::new() };
        files.iter().map(|f| f.to_string()).filter(|f| f.starts_with(prefix)).collect()
    }

    /// Asks the `complete` thread for `what` and waits for it at most `FETCH_WAIT`; when
    /// that thread is busy, completes from what is known.
    fn fetch(&self, what: Fetch) {
        let Some(fetches) = self.fetches.lock().clone() else { return };
        {
            // Asked for now, so a tracker that does not answer is not asked on every Tab.
            let mut inner = self.inner.lock();
            let now = Instant::now();
            match &what {
                Fetch::Groups => inner.groups_at = Some(now),
                Fetch::Files(group) => {
                    inner.files.entry(group.clone()).or_insert_with(|| (BTreeSet::new(), now)).1 =
                        now
                }
            }
        }
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        match fetches.try_send((what, done_tx)) {
            Ok(()) => {
                let _ = done_rx.recv_timeout(FETCH_WAIT);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The `complete` thread: fetches group and file lists for Tab, one at a time, until
/// stopped.
pub struct Fetcher {
    thread: Option<JoinHandle<()>>,
    interrupt: Arc<Interrupt>,
    known: Arc<Known>,
}

impl Fetcher {
    /// Starts fetching for `known` through `tracker` (only while logged in).
    pub fn start(known: Arc<Known>, tracker: Arc<TrackerSession>) -> std::io::Result<Fetcher> {
        let (fetch_tx, fetch_rx) = crossbeam_channel::bounded::<FetchRequest>(1);
        let interrupt = Arc::new(Interrupt::default());
        let thread = std::thread::Builder::new().name("complete".into()).spawn({
            let (known, interrupt) = (Arc::clone(&known), Arc::clone(&interrupt));
            move || {
                for (what, done) in fetch_rx {
                    if tracker.login().is_none() {
                        continue;
                    }
                    let interrupt = Some(interrupt.as_ref());
                    match &what {
                        Fetch::Groups => match tracker.list_groups(false, interrupt) {
                            Ok(groups) => known.set_groups(groups),
                            Err(e) => log::debug!("completion: {what:?}: {e}"),
                        },
                        Fetch::Files(group) => match tracker.list_files(group, interrupt) {
                            Ok(files) => {
                                known.set_files(group.clone(), files.into_iter().map(|f| f.name))
                            }
                            Err(e) => log::debug!("completion: {what:?}: {e}"),
                        },
                    }
                    let _ = done.send(());
                }
            }
        })?;
        *known.fetches.lock() = Some(fetch_tx);
        Ok(Fetcher { thread: Some(thread), interrupt, known })
    }

    /// Ends a fetch in flight and the thread.
    pub fn stop(mut self) {
        self.known.fetches.lock().take();
        self.interrupt.fire();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the word under the cursor is, judged from the words before it.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot<'a> {
    /// A command name starting with the prefix (the first word, or the word after `help`).
    Command(&'a str),
    /// A path.
    Path,
    /// A group id starting with the prefix.
    Group(&'a str),
    /// The name of a file of the group (the word given) starting with the prefix.
    File { group: &'a str, prefix: &'a str },
    /// Nothing this completer knows.
    Other,
}

/// The slot of the word that ends at the end of `before` (the line up to the cursor), and
/// where that word starts.
pub fn slot(before: &str) -> (usize, Slot<'_>) {
    let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
    let words: Vec<&str> = before[..start].split_whitespace().collect();
    let prefix = &before[start..];
    let slot = match words.as_slice() {
        [] | ["help"] => Slot::Command(prefix),
        ["upload_file"] | ["download_file", _, _] => Slot::Path,
        ["join_group" | "leave_group" | "list_requests" | "list_files"]
        | ["accept_request" | "reject_request" | "remove_member" | "download_file" | "stop_share"]
        | ["pause" | "resume" | "cancel"]
        | ["upload_file", _] => Slot::Group(prefix),
        ["download_file" | "stop_share" | "pause" | "resume" | "cancel", group] => {
            Slot::File { group, prefix }
        }
        _ => Slot::Other,
    };
    (start, slot)
}

/// The REPL's rustyline helper: completion only.
pub struct ReplHelper {
    files: FilenameCompleter,
    known: Arc<Known>,
}

impl ReplHelper {
    /// A helper completing group ids and file names from `known`.
    pub fn new(known: Arc<Known>) -> ReplHelper {
        ReplHelper { files: FilenameCompleter::new(), known }
    }
}

/// Completion pairs for `words`, each followed by a space.
fn pairs(words: impl IntoIterator<Item = String>) -> Vec<Pair> {
    words.into_iter().map(|w| Pair { replacement: format!("{w} "), display: w }).collect()
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = line.get(..pos).unwrap_or(line);
        match slot(before) {
            (start, Slot::Command(prefix)) => {
                let names = COMMANDS.iter().filter(|c| c.name.starts_with(prefix));
                Ok((start, pairs(names.map(|c| c.name.to_string()))))
            }
            (_, Slot::Path) => self.files.complete(line, pos, ctx),
            (start, Slot::Group(prefix)) => Ok((start, pairs(self.known.groups(prefix)))),
            (start, Slot::File { group, prefix }) => match group.parse::<GroupId>() {
                Ok(group) => {
                    // Names with spaces are quoted, as list_files prints them.
                    let names = self.known.files(&group, prefix).into_iter().map(|name| {
                        shlex::try_quote(&name).map_or_else(|_| name.clone(), |q| q.into_owned())
                    });
                    Ok((start, pairs(names)))
                }
                Err(_) => Ok((pos, Vec::new())),
            },
            (_, Slot::Other) => Ok((pos, Vec::new())),
        }
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Highlighter for ReplHelper {}

impl Validator for ReplHelper {}

impl Helper for ReplHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(before: &str, expected: (usize, Slot<'_>)) {
        assert_eq!(slot(before), expected, "{before:?}");
    }

    #[test]
    fn the_word_under_the_cursor_is_a_command_a_path_or_other() {
        check("", (0, Slot::Command("")));
        check("list_sh", (0, Slot::Command("list_sh")));
        check("help lo", (5, Slot::Command("lo")));
        check("upload_file ~/Doc", (12, Slot::Path));
        check("upload_file a.txt ", (18, Slot::Group("")));
        check("download_file g f.bin ", (22, Slot::Path));
        check("download_file g ", (16, Slot::File { group: "g", prefix: "" }));
        check("download_file g1 bi", (17, Slot::File { group: "g1", prefix: "bi" }));
        check("stop_share g1 ", (14, Slot::File { group: "g1", prefix: "" }));
        check("pause g1 fi", (9, Slot::File { group: "g1", prefix: "fi" }));
        check("cancel ", (7, Slot::Group("")));
        check("download_file ", (14, Slot::Group("")));
        check("join_group te", (11, Slot::Group("te")));
        check("upload_file a.txt t", (18, Slot::Group("t")));
        check("accept_request g ", (17, Slot::Other));
        check("create_group ", (13, Slot::Other));
        check("login al", (6, Slot::Other));
    }
}

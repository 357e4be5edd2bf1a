//! REPL text → typed commands, in one place.
//!
//! Pure. A line is split like a shell would (so `"my file.txt"` is one argument), blank lines
//! and `#` comments are no command, and every identifier is validated here, so the rest of
//! the client only ever sees well-formed commands.

use std::path::{Path, PathBuf};

use common::folder::{ItemRef, Selection, TreeError};
use common::{FileName, GroupId, IdError, Password, UserId};

use crate::rate::{parse_rate, RateError};

/// A command typed at the REPL. `Help { topic }` is `help`, or `help <command>` for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    CreateUser {
        user: UserId,
        password: Password,
    },
    Login {
        user: UserId,
        password: Password,
    },
    /// `logout`, or with `everywhere` (`logout --all`) every session of the user.
    Logout {
        everywhere: bool,
    },
    CreateGroup {
        group: GroupId,
    },
    JoinGroup {
        group: GroupId,
    },
    LeaveGroup {
        group: GroupId,
    },
    ListRequests {
        group: GroupId,
    },
    AcceptRequest {
        group: GroupId,
        user: UserId,
    },
    RejectRequest {
        group: GroupId,
        user: UserId,
    },
    RemoveMember {
        group: GroupId,
        user: UserId,
    },
    ListGroups,
    ListMyGroups,
    ListFiles {
        group: GroupId,
    },
    UploadFile {
        path: PathBuf,
        group: GroupId,
    },
    /// `download_file`; without a destination, into the download directory. `folder`:
    /// the argument named a folder (`name/`) or a part of one (`name/path`, `name/sub/`).
    DownloadFile {
        group: GroupId,
        name: FileName,
        folder: Option<Selection>,
        destination: Option<PathBuf>,
    },
    ShowDownloads {
        json: bool,
        active: bool,
    },
    WaitDownloads {
        json: bool,
    },
    StopShare {
        group: GroupId,
        name: FileName,
    },
    ListShares,
    /// `pause`: a download stops fetching, keeps (and serves) its pieces.
    Pause {
        group: GroupId,
        name: FileName,
    },
    /// `resume`: a paused download goes on.
    Resume {
        group: GroupId,
        name: FileName,
    },
    /// `cancel`: a download stops and its partial file is removed.
    Cancel {
        group: GroupId,
        name: FileName,
    },
    /// `limit_rate up|down <rate>` (`None`: no cap), or without arguments the caps now.
    LimitRate {
        change: Option<(Direction, Option<u64>)>,
    },
    /// `web`: the dashboard's URL.
    Web,
    Help {
        topic: Option<&'static CommandInfo>,
    },
    Exit,
}

/// Which of this peer's rate caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Serving pieces to other peers, all connections together.
    Up,
    /// Downloading, all downloads together.
    Down,
}

/// What `help` says of a command.
#[derive(Debug, PartialEq, Eq)]
pub struct CommandInfo {
    pub name: &'static str,
    pub usage: &'static str,
    /// One sentence, for `help <command>`.
    pub summary: &'static str,
}

/// Why a line is not a command. `Display` is the text after `error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown command '{word}'{} (type help for the list)", did_you_mean(.suggestion))]
    Unknown { word: String, suggestion: Option<&'static str> },
    #[error("wrong number of arguments for {name}; usage: {usage}")]
    Arity { name: &'static str, usage: &'static str },
    #[error("unknown option '{option}' for {name}; usage: {usage}")]
    UnknownOption { name: &'static str, option: String, usage: &'static str },
    #[error("unbalanced quotes")]
    Quotes,
    #[error("invalid argument '{arg}': {source}")]
    Invalid { arg: String, source: IdError },
    #[error("invalid path '{arg}': {source}")]
    BadPath { arg: String, source: TreeError },
    #[error("{0}")]
    Rate(#[from] RateError),
    #[error("limit_rate takes up or down, not '{0}'; usage: limit_rate [up|down] [<rate>]")]
    Direction(String),
}

/// Every command, in the order `help` lists them.
pub const COMMANDS: &[CommandInfo] = &[
    info("create_user", "create_user <user_id> <passwd>", "Creates an account; fails if the id exists."),
    info("login", "login <user_id> <passwd>", "Starts a session; this peer then shares again what the user shared and resumes unfinished downloads."),
    info(
        "logout",
        "logout [--all]",
        "Ends the session (with --all, every session of this user, on every device); this \
         peer stops sharing until the next login.",
    ),
    info("create_group", "create_group <group_id>", "Creates a group, owned by you, with you as its member."),
    info("join_group", "join_group <group_id>", "Asks the group's owner to let you in."),
    info("leave_group", "leave_group <group_id>", "Leaves the group and ends your shares in it; an owner's group passes to the longest-standing member."),
    info("list_requests", "list_requests <group_id>", "Owner only: the users asking to join, one a line."),
    info("accept_request", "accept_request <group_id> <user_id>", "Owner only: lets the user into the group."),
    info("reject_request", "reject_request <group_id> <user_id>", "Owner only: turns the user's request down."),
    info("remove_member", "remove_member <group_id> <user_id>", "Owner only: removes the member from the group and ends their shares in it; their tickets stop working within the trackers' ticket lifetime (30 s by default)."),
    info("list_groups", "list_groups", "Every group, one a line."),
    info("list_my_groups", "list_my_groups", "The groups you belong to, one a line."),
    info("list_files", "list_files <group_id>", "Members only: the files some peer shares in the group, with size, sharers and digest."),
    info("upload_file", "upload_file <file_path> <group_id>", "Hashes the file and shares it in the group under its base name (~ is your home directory)."),
    info("download_file", "download_file <group_id> <file_name> [<destination_path>]", "Starts downloading in the background to a directory or a new file path (~ is your home directory); without one, into the download directory (download_dir in config.toml, else $XDG_DOWNLOAD_DIR, else ~/Downloads). A folder: name/ fetches all of it into <destination>/name/; name/path/f fetches only that file, to <destination>/f; name/path/d/ only that subfolder, into <destination>/d/."),
    info("show_downloads", "show_downloads [--json] [--active]", "One line per download of this session: [D] downloading, [P] paused, [C] complete, [F] failed; with --json, one JSON object a line; with --active, only those still downloading."),
    info("wait_downloads", "wait_downloads [--json]", "Waits until no download is running (Ctrl-C stops waiting), then prints what show_downloads prints."),
    info("stop_share", "stop_share <group_id> <file_name>", "Stops sharing the file in the group; upload_file of it shares it again."),
    info("list_shares", "list_shares", "What this peer shares, per group: each file with the pieces it has and where they are."),
    info("pause", "pause <group_id> <file_name>", "Pauses a download: it stops fetching, and keeps and still serves the pieces it has."),
    info("resume", "resume <group_id> <file_name>", "Goes on with a paused download."),
    info("cancel", "cancel <group_id> <file_name>", "Stops a download and removes its partial file; it leaves show_downloads."),
    info(
        "limit_rate",
        "limit_rate [up|down] [<rate>]",
        "Caps this peer's upload (up) or download (down) at once: <rate> is bytes per second \
         with an optional K, M or G (10^3, 10^6, 10^9), or off; without arguments, shows \
         both caps.",
    ),
    info("web", "web", "Prints the dashboard's URL with its access token (the client runs one when started with --web)."),
    info("help", "help [<command>]", "Lists the commands, or tells what one does."),
    info("exit", "exit", "Quits (as does Ctrl-D); the session stays for the next start on this state directory (logout ends it)."),
];

const fn info(name: &'static str, usage: &'static str, summary: &'static str) -> CommandInfo {
    CommandInfo { name, usage, summary }
}

/// Parses one line. `Ok(None)` for a blank line or a comment.
pub fn parse(line: &str) -> Result<Option<Command>, ParseError> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let words = shlex::split(trimmed).ok_or(ParseError::Quotes)?;
    let Some((word, args)) = words.split_first() else { return Ok(None) };
    let Some(&CommandInfo { name, usage, .. }) = COMMANDS.iter().find(|c| c.name == word) else {
        return Err(ParseError::Unknown { word: word.clone(), suggestion: suggest(word) });
    };
    // Optional arguments are written `[<arg>]` in the usage.
    let max_args = usage.split_whitespace().count() - 1;
    let min_args = usage.split_whitespace().filter(|w| w.starts_with('<')).count();
    if args.len() < min_args || args.len() > max_args {
        return Err(ParseError::Arity { name, usage });
    }
    let a = |i: usize| args[i].as_str();
    let command = match name {
        "create_user" => Command::CreateUser { user: id(a(0))?, password: id(a(1))? },
        "login" => Command::Login { user: id(a(0))?, password: id(a(1))? },
        "logout" => {
            let [everywhere] = flags(name, usage, args, ["--all"])?;
            Command::Logout { everywhere }
        }
        "create_group" => Command::CreateGroup { group: id(a(0))? },
        "join_group" => Command::JoinGroup { group: id(a(0))? },
        "leave_group" => Command::LeaveGroup { group: id(a(0))? },
        "list_requests" => Command::ListRequests { group: id(a(0))? },
        "accept_request" => Command::AcceptRequest { group: id(a(0))?, user: id(a(1))? },
        "reject_request" => Command::RejectRequest { group: id(a(0))?, user: id(a(1))? },
        "remove_member" => Command::RemoveMember { group: id(a(0))?, user: id(a(1))? },
        "list_groups" => Command::ListGroups,
        "list_my_groups" => Command::ListMyGroups,
        "list_files" => Command::ListFiles { group: id(a(0))? },
        "upload_file" => Command::UploadFile { path: PathBuf::from(a(0)), group: id(a(1))? },
        "download_file" => {
            let (name, folder) = match ItemRef::parse(a(1)) {
                Ok(ItemRef::File(name)) => (name, None),
                Ok(ItemRef::Folder { name, selection }) => (name, Some(selection)),
                // Not a folder's name before a `/`: a plain name's error, as before folders.
                Err(_) if a(1).split('/').next().is_none_or(|n| FileName::new(n).is_err()) => {
                    (id(a(1))?, None)
                }
                Err(source) => {
                    return Err(ParseError::BadPath {
                        arg: a(1).escape_debug().to_string(),
                        source,
                    })
                }
            };
            Command::DownloadFile {
                group: id(a(0))?,
                name,
                folder,
                destination: args.get(2).map(PathBuf::from),
            }
        }
        "show_downloads" => {
            let [json, active] = flags(name, usage, args, ["--json", "--active"])?;
            Command::ShowDownloads { json, active }
        }
        "wait_downloads" => {
            let [json] = flags(name, usage, args, ["--json"])?;
            Command::WaitDownloads { json }
        }
        "stop_share" => Command::StopShare { group: id(a(0))?, name: item_name(a(1))? },
        "list_shares" => Command::ListShares,
        "pause" => Command::Pause { group: id(a(0))?, name: item_name(a(1))? },
        "resume" => Command::Resume { group: id(a(0))?, name: item_name(a(1))? },
        "cancel" => Command::Cancel { group: id(a(0))?, name: item_name(a(1))? },
        "limit_rate" => match args.len() {
            0 => Command::LimitRate { change: None },
            1 => return Err(ParseError::Arity { name, usage }),
            _ => {
                let direction = match a(0) {
                    "up" => Direction::Up,
                    "down" => Direction::Down,
                    other => return Err(ParseError::Direction(other.to_string())),
                };
                Command::LimitRate { change: Some((direction, parse_rate(a(1))?)) }
            }
        },
        "web" => Command::Web,
        "help" => match args.first() {
            None => Command::Help { topic: None },
            Some(topic) => match COMMANDS.iter().find(|c| c.name == topic) {
                Some(info) => Command::Help { topic: Some(info) },
                None => {
                    return Err(ParseError::Unknown {
                        word: topic.clone(),
                        suggestion: suggest(topic),
                    })
                }
            },
        },
        _ => Command::Exit,
    };
    Ok(Some(command))
}

/// Whether `word`, typed as a command, is `name` or may have been meant as it: the same but
/// for case, suggested as it (`suggest`), at most two edits from it, or `name` with more
/// glued on (`login:alice`). The REPL keeps a line whose command may mean `login` or
/// `create_user` out of its history (issue 21), so this errs towards yes.
pub fn may_mean(word: &str, name: &str) -> bool {
    let word = word.to_lowercase();
    word.starts_with(name)
        || strsim::damerau_levenshtein(&word, name) <= 2
        || suggest(&word) == Some(name)
}

/// The command a mistyped `word` most likely meant, whatever its case: one at most two
/// edits away (a swap of two neighbours is one edit), or else the only one that starts
/// with it.
fn suggest(word: &str) -> Option<&'static str> {
    let word = word.to_lowercase();
    let word = word.as_str();
    let closest = COMMANDS
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c.name), c.name))
        .filter(|&(distance, _)| distance <= 2)
        .min_by_key(|&(distance, _)| distance);
    if let Some((_, name)) = closest {
        return Some(name);
    }
    let mut starting = COMMANDS.iter().filter(|c| word.len() >= 3 && c.name.starts_with(word));
    match (starting.next(), starting.next()) {
        (Some(only), None) => Some(only.name),
        _ => None,
    }
}

/// Which of the options `known` are among `args`, in the order of `known`; any other
/// argument is an unknown option.
fn flags<const N: usize>(
    name: &'static str,
    usage: &'static str,
    args: &[String],
    known: [&str; N],
) -> Result<[bool; N], ParseError> {
    let mut set = [false; N];
    for arg in args {
        match known.iter().position(|k| k == arg) {
            Some(i) => set[i] = true,
            None => {
                return Err(ParseError::UnknownOption { name, option: arg.clone(), usage });
            }
        }
    }
    Ok(set)
}

fn did_you_mean(suggestion: &Option<&'static str>) -> String {
    match suggestion {
        Some(name) => format!("; did you mean '{name}'?"),
        None => String::new(),
    }
}

/// `path` with a leading `~` or `~/` replaced by `home` (as a shell would, though quoting
/// does not stop it); `~user` and every other path are left as they are.
pub fn expand_home(path: &Path, home: Option<&Path>) -> PathBuf {
    let Some(home) = home else { return path.to_path_buf() };
    match path.strip_prefix("~") {
        Ok(rest) if rest.as_os_str().is_empty() => home.to_path_buf(),
        Ok(rest) => home.join(rest),
        Err(_) => path.to_path_buf(),
    }
}

fn id<T: std::str::FromStr<Err = IdError>>(arg: &str) -> Result<T, ParseError> {
    arg.parse()
        .map_err(|source| ParseError::Invalid { arg: arg.escape_debug().to_string(), source })
}

/// The shared item a download argument names: `name`, or a folder's as `download_file`
/// took it (`name/`, `name/path`, `name/sub/`; issue 23), since a folder has one download
/// at a time.
fn item_name(arg: &str) -> Result<FileName, ParseError> {
    match ItemRef::parse(arg) {
        Ok(ItemRef::File(name)) | Ok(ItemRef::Folder { name, .. }) => Ok(name),
        Err(_) => id(arg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::folder::RelPath;

    #[track_caller]
    fn check(line: &str, expected: Result<Option<Command>, ParseError>) {
        assert_eq!(parse(line), expected);
    }

    fn g(s: &str) -> GroupId {
        GroupId::new(s).unwrap()
    }

    #[test]
    fn blank_and_comments_are_no_command() {
        check("", Ok(None));
        check("   \t ", Ok(None));
        check("# create_user a b", Ok(None));
    }

    #[test]
    fn parses_commands() {
        check(
            "create_user alice pw",
            Ok(Some(Command::CreateUser {
                user: UserId::new("alice").unwrap(),
                password: Password::new("pw").unwrap(),
            })),
        );
        check("  list_groups  ", Ok(Some(Command::ListGroups)));
        check(
            "upload_file 'my file.txt' g1",
            Ok(Some(Command::UploadFile { path: PathBuf::from("my file.txt"), group: g("g1") })),
        );
        check(
            "download_file g1 a.bin /tmp/out",
            Ok(Some(Command::DownloadFile {
                group: g("g1"),
                name: FileName::new("a.bin").unwrap(),
                folder: None,
                destination: Some(PathBuf::from("/tmp/out")),
            })),
        );
        check(
            "download_file g1 a.bin",
            Ok(Some(Command::DownloadFile {
                group: g("g1"),
                name: FileName::new("a.bin").unwrap(),
                folder: None,
                destination: None,
            })),
        );
        // Issue 23: a folder, a file in one, a subfolder.
        let folder = |arg: &str| match parse(&format!("download_file g1 {arg}")) {
            Ok(Some(Command::DownloadFile { name, folder, .. })) => (name.to_string(), folder),
            other => panic!("{other:?}"),
        };
        assert_eq!(folder("album/"), ("album".into(), Some(Selection::Whole)));
        let inside =
            |p: &str, dir| Some(Selection::Inside { path: RelPath::parse(p).unwrap(), dir });
        assert_eq!(folder("'album/2019/a b.jpg'"), ("album".into(), inside("2019/a b.jpg", false)));
        assert_eq!(folder("album/2019/"), ("album".into(), inside("2019", true)));
        for bad in ["album/../x", "album//x", "album/./x"] {
            let err = parse(&format!("download_file g1 {bad}")).unwrap_err();
            assert!(matches!(err, ParseError::BadPath { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn errors_name_the_word_and_usage() {
        check(
            "frobnicate x",
            Err(ParseError::Unknown { word: "frobnicate".into(), suggestion: None }),
        );
        check(
            "login alice",
            Err(ParseError::Arity { name: "login", usage: "login <user_id> <passwd>" }),
        );
        check(
            "list_groups extra",
            Err(ParseError::Arity { name: "list_groups", usage: "list_groups" }),
        );
        check("join_group 'g1", Err(ParseError::Quotes));
        assert_eq!(
            parse("login alice pw x").unwrap_err().to_string(),
            "wrong number of arguments for login; usage: login <user_id> <passwd>"
        );
    }

    #[test]
    fn near_misses_get_a_suggestion_and_others_none() {
        let error = |line: &str| parse(line).unwrap_err().to_string();
        assert_eq!(
            error("lgoin a b"),
            "unknown command 'lgoin'; did you mean 'login'? (type help for the list)"
        );
        assert_eq!(
            error("list_group"),
            "unknown command 'list_group'; did you mean 'list_groups'? (type help for the list)"
        );
        assert_eq!(
            error("upload x g"),
            "unknown command 'upload'; did you mean 'upload_file'? (type help for the list)"
        );
        // The test harness's marker must stay a plain unknown command.
        assert_eq!(error("__sync__"), "unknown command '__sync__' (type help for the list)");
        assert_eq!(error("list"), "unknown command 'list' (type help for the list)");
        assert_eq!(
            error("help lgoin"),
            "unknown command 'lgoin'; did you mean 'login'? (type help for the list)"
        );
        // Case does not hide a near miss (issue 21).
        assert_eq!(
            error("LOGIN a b"),
            "unknown command 'LOGIN'; did you mean 'login'? (type help for the list)"
        );
        assert_eq!(
            error("Create_Usr a b"),
            "unknown command 'Create_Usr'; did you mean 'create_user'? (type help for the list)"
        );
    }

    #[test]
    fn words_that_may_mean_a_command_are_told_apart_from_others() {
        for word in
            ["login", "LOGIN", "Login", "logni", "lgoin", "logi", "log", "loginx", "login:a"]
        {
            assert!(may_mean(word, "login"), "{word}");
        }
        for word in ["create_user", "CREATE_USER", "createuser", "create-user", "create_u"] {
            assert!(may_mean(word, "create_user"), "{word}");
        }
        for word in ["logout", "list_groups", "lo", "create_group", "creat", "help"] {
            assert!(!may_mean(word, "login") && !may_mean(word, "create_user"), "{word}");
        }
    }

    #[test]
    fn transfer_control_commands() {
        let error = |line: &str| parse(line).unwrap_err().to_string();
        let (g, f) = (GroupId::new("g").unwrap(), FileName::new("my file").unwrap());
        check("pause g 'my file'", Ok(Some(Command::Pause { group: g.clone(), name: f.clone() })));
        check(
            "resume g 'my file'",
            Ok(Some(Command::Resume { group: g.clone(), name: f.clone() })),
        );
        check("cancel g 'my file'", Ok(Some(Command::Cancel { group: g.clone(), name: f })));
        // Issue 23: a folder's download as download_file named it.
        let album: FileName = "album".parse().unwrap();
        for arg in ["album/", "album/2024/", "album/2024/a.jpg"] {
            let line = format!("pause g {arg}");
            check(&line, Ok(Some(Command::Pause { group: g.clone(), name: album.clone() })));
        }
        assert!(matches!(parse("cancel g album/../x"), Err(ParseError::Invalid { .. })));
        check("limit_rate", Ok(Some(Command::LimitRate { change: None })));
        check(
            "limit_rate up 10M",
            Ok(Some(Command::LimitRate { change: Some((Direction::Up, Some(10_000_000))) })),
        );
        check(
            "limit_rate down off",
            Ok(Some(Command::LimitRate { change: Some((Direction::Down, None)) })),
        );
        assert_eq!(
            error("limit_rate sideways 1M"),
            "limit_rate takes up or down, not 'sideways'; usage: limit_rate [up|down] [<rate>]"
        );
        assert_eq!(
            error("limit_rate up fast"),
            "'fast' is not a rate: give bytes per second, like 500K, 10M or 1G (10^3, 10^6, 10^9), or off"
        );
        assert_eq!(
            error("limit_rate up"),
            "wrong number of arguments for limit_rate; usage: limit_rate [up|down] [<rate>]"
        );
        assert_eq!(
            error("pause g"),
            "wrong number of arguments for pause; usage: pause <group_id> <file_name>"
        );
    }

    #[test]
    fn help_takes_an_optional_command() {
        check("help", Ok(Some(Command::Help { topic: None })));
        let Ok(Some(Command::Help { topic: Some(info) })) = parse("help login") else {
            panic!("help login")
        };
        assert_eq!(info.usage, "login <user_id> <passwd>");
        check("help a b", Err(ParseError::Arity { name: "help", usage: "help [<command>]" }));
        check("list_shares", Ok(Some(Command::ListShares)));
        check("show_downloads", Ok(Some(Command::ShowDownloads { json: false, active: false })));
        check(
            "show_downloads --active --json",
            Ok(Some(Command::ShowDownloads { json: true, active: true })),
        );
        check("wait_downloads --json", Ok(Some(Command::WaitDownloads { json: true })));
        assert_eq!(
            parse("show_downloads --jsn").unwrap_err().to_string(),
            "unknown option '--jsn' for show_downloads; usage: show_downloads [--json] [--active]"
        );
    }

    #[test]
    fn a_leading_tilde_is_the_home_directory() {
        let home = Some(Path::new("/home/zed"));
        let check = |path: &str, expected: &str| {
            assert_eq!(expand_home(Path::new(path), home), PathBuf::from(expected), "{path}");
        };
        check("~", "/home/zed");
        check("~/", "/home/zed/");
        check("~/a/b.txt", "/home/zed/a/b.txt");
        check("~bob/x", "~bob/x");
        check("a/~/x", "a/~/x");
        check("/tmp/x", "/tmp/x");
        assert_eq!(expand_home(Path::new("~/x"), None), PathBuf::from("~/x"));
    }

    #[test]
    fn invalid_ids_are_refused() {
        let long = "u".repeat(65);
        assert!(matches!(
            parse(&format!("create_user {long} pw")),
            Err(ParseError::Invalid { .. })
        ));
        assert!(matches!(parse("create_group 'a b'"), Err(ParseError::Invalid { .. })));
        assert!(matches!(parse("create_group a\u{1}b"), Err(ParseError::Invalid { .. })));
        assert!(matches!(parse("download_file g ../x out"), Err(ParseError::Invalid { .. })));
        // Issue 23: after a folder's name, a path into it, checked as one.
        assert!(matches!(parse("download_file g d/../x out"), Err(ParseError::BadPath { .. })));
    }
}

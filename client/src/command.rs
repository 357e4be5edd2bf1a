//! REPL text → typed commands, in one place.
//!
//! Pure. A line is split like a shell would (so `"my file.txt"` is one argument), blank lines
//! and `#` comments are no command, and every identifier is validated here, so the rest of
//! the client only ever sees well-formed commands.

use std::path::PathBuf;

use common::{FileName, GroupId, IdError, Password, UserId};

/// A command typed at the REPL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    CreateUser { user: UserId, password: Password },
    Login { user: UserId, password: Password },
    Logout,
    CreateGroup { group: GroupId },
    JoinGroup { group: GroupId },
    LeaveGroup { group: GroupId },
    ListRequests { group: GroupId },
    AcceptRequest { group: GroupId, user: UserId },
    RejectRequest { group: GroupId, user: UserId },
    ListGroups,
    ListMyGroups,
    ListFiles { group: GroupId },
    UploadFile { path: PathBuf, group: GroupId },
    DownloadFile { group: GroupId, name: FileName, destination: PathBuf },
    ShowDownloads,
    WaitDownloads,
    StopShare { group: GroupId, name: FileName },
    Help,
    Exit,
}

/// Why a line is not a command. `Display` is the text after `error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown command '{0}' (type help for the list)")]
    Unknown(String),
    #[error("wrong number of arguments for {name}; usage: {usage}")]
    Arity { name: &'static str, usage: &'static str },
    #[error("unbalanced quotes")]
    Quotes,
    #[error("invalid argument '{arg}': {source}")]
    Invalid { arg: String, source: IdError },
}

/// Every command with its usage, in the order `help` lists them.
pub const USAGES: &[(&str, &str)] = &[
    ("create_user", "create_user <user_id> <passwd>"),
    ("login", "login <user_id> <passwd>"),
    ("logout", "logout"),
    ("create_group", "create_group <group_id>"),
    ("join_group", "join_group <group_id>"),
    ("leave_group", "leave_group <group_id>"),
    ("list_requests", "list_requests <group_id>"),
    ("accept_request", "accept_request <group_id> <user_id>"),
    ("reject_request", "reject_request <group_id> <user_id>"),
    ("list_groups", "list_groups"),
    ("list_my_groups", "list_my_groups"),
    ("list_files", "list_files <group_id>"),
    ("upload_file", "upload_file <file_path> <group_id>"),
    ("download_file", "download_file <group_id> <file_name> <destination_path>"),
    ("show_downloads", "show_downloads"),
    ("wait_downloads", "wait_downloads"),
    ("stop_share", "stop_share <group_id> <file_name>"),
    ("help", "help"),
    ("exit", "exit"),
];

/// Parses one line. `Ok(None)` for a blank line or a comment.
pub fn parse(line: &str) -> Result<Option<Command>, ParseError> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let words = shlex::split(trimmed).ok_or(ParseError::Quotes)?;
    let Some((word, args)) = words.split_first() else { return Ok(None) };
    let Some(&(name, usage)) = USAGES.iter().find(|(name, _)| name == word) else {
        return Err(ParseError::Unknown(word.clone()));
    };
    let arity = usage.split_whitespace().count() - 1;
    if args.len() != arity {
        return Err(ParseError::Arity { name, usage });
    }
    let a = |i: usize| args[i].as_str();
    let command = match name {
        "create_user" => Command::CreateUser { user: id(a(0))?, password: id(a(1))? },
        "login" => Command::Login { user: id(a(0))?, password: id(a(1))? },
        "logout" => Command::Logout,
        "create_group" => Command::CreateGroup { group: id(a(0))? },
        "join_group" => Command::JoinGroup { group: id(a(0))? },
        "leave_group" => Command::LeaveGroup { group: id(a(0))? },
        "list_requests" => Command::ListRequests { group: id(a(0))? },
        "accept_request" => Command::AcceptRequest { group: id(a(0))?, user: id(a(1))? },
        "reject_request" => Command::RejectRequest { group: id(a(0))?, user: id(a(1))? },
        "list_groups" => Command::ListGroups,
        "list_my_groups" => Command::ListMyGroups,
        "list_files" => Command::ListFiles { group: id(a(0))? },
        "upload_file" => Command::UploadFile { path: PathBuf::from(a(0)), group: id(a(1))? },
        "download_file" => Command::DownloadFile {
            group: id(a(0))?,
            name: id(a(1))?,
            destination: PathBuf::from(a(2)),
        },
        "show_downloads" => Command::ShowDownloads,
        "wait_downloads" => Command::WaitDownloads,
        "stop_share" => Command::StopShare { group: id(a(0))?, name: id(a(1))? },
        "help" => Command::Help,
        _ => Command::Exit,
    };
    Ok(Some(command))
}

fn id<T: std::str::FromStr<Err = IdError>>(arg: &str) -> Result<T, ParseError> {
    arg.parse()
        .map_err(|source| ParseError::Invalid { arg: arg.escape_debug().to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

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
                destination: PathBuf::from("/tmp/out"),
            })),
        );
    }

    #[test]
    fn errors_name_the_word_and_usage() {
        check("frobnicate x", Err(ParseError::Unknown("frobnicate".into())));
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
    fn invalid_ids_are_refused() {
        let long = "u".repeat(65);
        assert!(matches!(
            parse(&format!("create_user {long} pw")),
            Err(ParseError::Invalid { .. })
        ));
        assert!(matches!(parse("create_group 'a b'"), Err(ParseError::Invalid { .. })));
        assert!(matches!(parse("create_group a\u{1}b"), Err(ParseError::Invalid { .. })));
        assert!(matches!(parse("download_file g ../x out"), Err(ParseError::Invalid { .. })));
    }
}

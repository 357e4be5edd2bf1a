//! The read-eval-print loop. On a terminal: a prompt, line editing and history (rustyline).
//! Otherwise (pipe, file, FIFO): plain lines, no prompt and no escape codes; each command's
//! whole output is written and flushed before the next line is read. End of input is `exit`.
//!
//! Invariant: a line that carries a password (`create_user`, `login`) never enters the
//! history, so it is never written to `history.txt`.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustyline::error::ReadlineError;

use crate::command;
use crate::completion::ReplHelper;
use crate::console::{Console, Flow};
use crate::notice::{Notices, Subscription};

/// The line editor on a terminal, completing with `ReplHelper`.
type Editor = rustyline::Editor<ReplHelper, rustyline::history::DefaultHistory>;

/// The longest line read from a non-terminal input; longer lines are refused.
pub const MAX_LINE_LEN: usize = 64 * 1024;

/// What Ctrl-C at the prompt prints: it only clears the line.
pub const CTRL_C_HINT: &str =
    "(Ctrl-C clears the line and interrupts a command; type exit or press Ctrl-D to quit)";

/// Commands whose arguments include a password.
const SECRET_COMMANDS: &[&str] = &["create_user", "login"];

/// Runs the REPL on stdin/stdout until `exit` or end of input. On a terminal, `notices`
/// print above the prompt meanwhile.
pub fn run(console: &mut Console, history: &Path, notices: &Arc<Notices>) -> io::Result<()> {
    if io::stdin().is_terminal() {
        run_terminal(console, history, notices)
    } else {
        run_lines(console, &mut io::stdin().lock(), &mut io::stdout())
    }
}

/// Runs commands read line by line from `input`, writing results to `out`.
pub fn run_lines(
    console: &mut Console,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = input.take(MAX_LINE_LEN as u64 + 1).read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        let flow = if buf.len() > MAX_LINE_LEN && !buf.ends_with(b"\n") {
            skip_rest_of_line(input)?;
            respond(out, format!("error: line longer than {MAX_LINE_LEN} bytes\n"))?;
            Flow::Continue
        } else {
            match std::str::from_utf8(&buf) {
                Ok(line) => execute_line(console, line, out)?,
                Err(_) => {
                    respond(out, "error: input is not valid UTF-8\n".to_string())?;
                    Flow::Continue
                }
            }
        };
        if flow == Flow::Exit {
            return Ok(());
        }
    }
    Ok(())
}

fn skip_rest_of_line(input: &mut impl BufRead) -> io::Result<()> {
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                input.consume(i + 1);
                return Ok(());
            }
            None => {
                let len = chunk.len();
                input.consume(len);
            }
        }
    }
}

fn run_terminal(console: &mut Console, history: &Path, notices: &Arc<Notices>) -> io::Result<()> {
    let mut editor: Editor =
        rustyline::Editor::with_config(rustyline::Config::default()).map_err(io::Error::other)?;
    editor.set_helper(Some(ReplHelper::new(console.peer().known())));
    let printer = start_notices(&mut editor, notices);
    console.set_terminal(true);
    // A missing history file is normal on first use.
    let _ = editor.load_history(history);
    forget_passwords(&mut editor, history);
    let mut stdout = io::stdout();
    loop {
        let prompt = match console.peer().user() {
            Some(user) => format!("{user}> "),
            None => "> ".to_string(),
        };
        match editor.readline(&prompt) {
            Ok(line) => {
                if keep_in_history(&line) {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if execute_line(console, &line, &mut stdout)? == Flow::Exit {
                    break;
                }
            }
            // Ctrl-C at the prompt clears the line, as in a shell; it never quits.
            Err(ReadlineError::Interrupted) => {
                respond(&mut stdout, format!("{CTRL_C_HINT}\n"))?;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(io::Error::other(e)),
        }
    }
    if let Err(e) = editor.save_history(history) {
        log::warn!("cannot save history to {}: {e}", history.display());
    }
    // Dropping the subscription drops the notices' sender, which ends their thread.
    if let Some((subscription, printer)) = printer {
        drop(subscription);
        let _ = printer.join();
    }
    Ok(())
}

/// On a terminal, notices print at once, above the prompt and the line being typed
/// (rustyline's external printer), or between a command's lines while one runs (issue 10):
/// each download that finishes prints its `show_downloads` line, and the heartbeat tells
/// of changes in the user's groups. A thread of its own prints them, so neither a download
/// nor a heartbeat ever waits on the terminal; it ends when the subscription is dropped.
fn start_notices(
    editor: &mut Editor,
    notices: &Arc<Notices>,
) -> Option<(Subscription, std::thread::JoinHandle<()>)> {
    use rustyline::ExternalPrinter as _;
    let mut printer = match editor.create_external_printer() {
        Ok(printer) => printer,
        Err(e) => {
            log::info!("no notices: {e}");
            return None;
        }
    };
    let subscription = notices.subscribe()?;
    let receiver = subscription.receiver.clone();
    let thread = std::thread::Builder::new().name("notices".into()).spawn(move || {
        for notice in receiver {
            if let Err(e) = printer.print(format!("{notice}\n")) {
                log::warn!("cannot print a notice: {e}");
            }
        }
    });
    match thread {
        Ok(handle) => Some((subscription, handle)),
        Err(e) => {
            log::warn!("no notices: {e}");
            None
        }
    }
}

/// Whether `line` may be kept in the REPL history: not blank, and not a command that
/// carries a password, nor one that may have been meant as such (issue 21: `LOGIN alice
/// pw`, `logni alice pw`, `login\u{a0}alice pw` must not reach the history file either).
/// The command word is found as `command::parse` finds it (shell-like splitting), then cut
/// at any Unicode whitespace; a line that does not split (unbalanced quotes) is judged by
/// its first word with quotes removed. `command::may_mean` errs towards dropping a line.
pub fn keep_in_history(line: &str) -> bool {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return false;
    }
    let first = match shlex::split(trimmed) {
        Some(words) => words.into_iter().next().unwrap_or_default(),
        None => trimmed.chars().filter(|c| !matches!(c, '"' | '\'' | '\\')).collect(),
    };
    let word = first.split(char::is_whitespace).next().unwrap_or_default();
    !SECRET_COMMANDS.iter().any(|secret| command::may_mean(word, secret))
}

/// Drops history lines that carry passwords, such as those an older version kept, from
/// the editor and from the file at once.
fn forget_passwords(editor: &mut Editor, history: &Path) {
    let loaded: Vec<String> = editor.history().iter().cloned().collect();
    let kept: Vec<String> = loaded.iter().filter(|l| keep_in_history(l)).cloned().collect();
    if kept.len() == loaded.len() {
        return;
    }
    let _ = editor.clear_history();
    for line in &kept {
        let _ = editor.add_history_entry(line.as_str());
    }
    let rewritten = match kept.is_empty() {
        true => std::fs::remove_file(history).map_err(io::Error::other),
        false => editor.save_history(history).map_err(io::Error::other),
    };
    match rewritten {
        Ok(()) => log::info!(
            "removed {} lines with passwords from the history",
            loaded.len() - kept.len()
        ),
        Err(e) => log::warn!("cannot rewrite history {}: {e}", history.display()),
    }
}

/// Parses and runs one line, then writes its whole output and flushes it.
/// Parses and runs one line on `console`, writing its output (or its one `error: ` line) to
/// `out`: the REPL's and an attached session's (`attach`) one way of running a command.
pub(crate) fn execute_line(
    console: &mut Console,
    line: &str,
    out: &mut impl Write,
) -> io::Result<Flow> {
    let mut text = String::new();
    let flow = match command::parse(line) {
        Ok(None) => Flow::Continue,
        Ok(Some(cmd)) => match console.execute(cmd, &mut text) {
            Ok(flow) => flow,
            Err(e) => {
                text = match e.fix() {
                    Some(fix) => format!("error: {e}; {fix}\n"),
                    None => format!("error: {e}\n"),
                };
                Flow::Continue
            }
        },
        Err(e) => {
            text = format!("error: {e}\n");
            Flow::Continue
        }
    };
    respond(out, text)?;
    // At a terminal, `download_file` then follows its download with a live bar.
    if let Some(lines) = console.follow_download() {
        respond(out, lines.iter().map(|l| format!("{l}\n")).collect())?;
    }
    Ok(flow)
}

fn respond(out: &mut impl Write, text: String) -> io::Result<()> {
    out.write_all(text.as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(line: &str, expected: bool) {
        assert_eq!(keep_in_history(line), expected, "{line:?}");
    }

    #[test]
    fn lines_with_passwords_are_not_kept() {
        check("login alice secret", false);
        check("create_user alice secret", false);
        check("   login   alice secret  ", false);
        check("'login' alice secret", false);
        check("\"create_user\" alice 'my secret'", false);
        check("login alice \"unbalanced", false);
        check("\"login alice unbalanced", false);
        check("login", false);
    }

    /// Issue 21: a mistyped password command, in any case or spacing, is dropped too.
    #[test]
    fn lines_that_may_mean_a_password_command_are_not_kept() {
        for line in [
            "LOGIN alice pw",
            "Login alice pw",
            "logni alice pw",
            "lgoin alice pw",
            "logi alice pw",
            "loginx alice pw",
            "login:alice pw",
            "\tlogin\talice  pw",
            "login\u{a0}alice pw",
            "\u{3000}login alice pw",
            "lgoin\u{a0}alice pw",
            "CREATE_USER alice pw",
            "createuser alice pw",
            "create-user alice pw",
            "create_usr alice pw",
            "Create_User 'alice' \"pw",
        ] {
            check(line, false);
        }
    }

    #[test]
    fn other_lines_are_kept_and_blank_ones_are_not() {
        check("list_groups", true);
        check("join_group g", true);
        check("download_file g login /tmp", true);
        check("logout", true);
        check("create_group g", true);
        check("logout --all", true);
        check("# login alice pw", true);
        check("", false);
        check("   ", false);
    }
}

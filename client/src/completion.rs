//! Tab completion at the terminal prompt (issue 10): command names (and the command after
//! `help`), and paths where a command takes one (`upload_file`'s file, `download_file`'s
//! destination; `~` expands). Group ids and file names would need tracker calls on each
//! Tab, and are not completed.

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use crate::command::COMMANDS;

/// What the word under the cursor is, judged from the words before it.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot<'a> {
    /// A command name starting with the prefix (the first word, or the word after `help`).
    Command(&'a str),
    /// A path.
    Path,
    /// Nothing this completer knows.
    Other,
}

/// The slot of the word that ends at the end of `before` (the line up to the cursor), and
/// where that word starts.
pub fn slot(before: &str) -> (usize, Slot<'_>) {
    let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
    let mut words = before[..start].split_whitespace();
    let (command, n_before) = (words.next(), before[..start].split_whitespace().count());
    let slot = match (command, n_before) {
        (None, _) | (Some("help"), 1) => Slot::Command(&before[start..]),
        (Some("upload_file"), 1) | (Some("download_file"), 3) => Slot::Path,
        _ => Slot::Other,
    };
    (start, slot)
}

/// The REPL's rustyline helper: completion only.
#[derive(Default)]
pub struct ReplHelper {
    files: FilenameCompleter,
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
                let pairs = names
                    .map(|c| Pair {
                        display: c.name.to_string(),
                        replacement: format!("{} ", c.name),
                    })
                    .collect();
                Ok((start, pairs))
            }
            (_, Slot::Path) => self.files.complete(line, pos, ctx),
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
        check("upload_file a.txt ", (18, Slot::Other));
        check("download_file g f.bin ", (22, Slot::Path));
        check("download_file g ", (16, Slot::Other));
        check("login al", (6, Slot::Other));
    }
}

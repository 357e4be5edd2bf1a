//! Where the log goes when a person types at the prompt: a file in the state directory, so
//! that no log line breaks the line being edited (issue 10). Elsewhere (a pipe, a file, or
//! stderr redirected) the log stays on stderr.
//!
//! The logger is set up before the state directory is known (its name holds the port bound
//! later), so `LogFile` writes to stderr until `open` names the file.

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::path::Path;

use parking_lot::Mutex;

/// The file `LogFile` writes to, once opened.
static FILE: Mutex<Option<File>> = Mutex::new(None);

/// Whether the log should go to a file: stdin and stderr are both a terminal, where the
/// REPL's prompt is.
pub fn wanted() -> bool {
    io::stdin().is_terminal() && io::stderr().is_terminal()
}

/// From now on, appends the log to `path` (created private to its owner).
pub fn open(path: &Path) -> io::Result<()> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    *FILE.lock() = Some(file);
    Ok(())
}

/// The logger's target: the opened file, or stderr until there is one.
pub struct LogFile;

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match FILE.lock().as_mut() {
            Some(file) => file.write(buf),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match FILE.lock().as_mut() {
            Some(file) => file.flush(),
            None => io::stderr().flush(),
        }
    }
}

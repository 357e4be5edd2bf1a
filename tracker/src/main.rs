//! `tracker <tracker_info.txt> <tracker_id> [options]`: see `tracker --help`.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Everything this process creates (the database and SQLite's -wal and -shm files) is
    // private to its owner: it holds password hashes, session tokens and the ticket secret.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // On a terminal, stdout already says what the info log would repeat (`listening on`,
    // `serving as`), and each line would show twice (issue 10): there the log defaults to
    // warnings. `RUST_LOG` still sets any level.
    let on_terminal = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let default_level = if on_terminal { "warn" } else { "info" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .init();
    let config = tracker::Config::parse();
    match tracker::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tracker: {err}");
            ExitCode::FAILURE
        }
    }
}

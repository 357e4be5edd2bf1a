//! `tracker <tracker_info.txt> <tracker_id> [options]`: see `tracker --help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Everything this process creates (the database and SQLite's -wal and -shm files) is
    // private to its owner: it holds password hashes, session tokens and the ticket secret.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = tracker::Config::parse();
    match tracker::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tracker: {err}");
            ExitCode::FAILURE
        }
    }
}

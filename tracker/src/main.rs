//! `tracker <tracker_info.txt> <tracker_id> [options]`: see `tracker --help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
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

//! `client <IP>:<PORT> <tracker_info.txt> [options]`: see `client --help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let config = client::Config::parse();
    match client::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("client: {err}");
            ExitCode::FAILURE
        }
    }
}

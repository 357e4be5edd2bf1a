//! `client <IP>:<PORT> <tracker_info.txt> [options]`: see `client --help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Everything this process creates (state files, downloads) is private to its owner.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let config = client::Config::parse();
    if config.attach {
        let code = match config.state_dir() {
            Ok(dir) => client::attach::run(&dir, config.command.as_deref()),
            Err(e) => {
                eprintln!("error: {e}");
                client::attach::NO_CLIENT
            }
        };
        return ExitCode::from(code as u8);
    }
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"));
    logger.format_timestamp_millis();
    // A service logs to stderr (its service manager's journal); only a REPL at a terminal
    // moves the log out of the way of its prompt.
    if client::log_file::wanted() && !config.serve {
        // At the prompt, logs go to a file in the state directory (named once it is known).
        logger.target(env_logger::Target::Pipe(Box::new(client::log_file::LogFile)));
    }
    without_line_editor(&mut logger).init();
    if let Some(shell) = config.completions {
        use clap::CommandFactory;
        let mut command = client::Config::command();
        clap_complete::generate(shell, &mut command, "client", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    match client::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, as clap's argument errors and the REPL's failures read.
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Turns off the line editor's log target at every level, whatever `RUST_LOG` says: at
/// debug level rustyline logs every key typed, passwords included. Every rustyline record
/// has the target `rustyline`, and a directive added after `RUST_LOG` was parsed replaces
/// one for the same target.
fn without_line_editor(builder: &mut env_logger::Builder) -> &mut env_logger::Builder {
    builder.filter_module("rustyline", log::LevelFilter::Off)
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::{Level, Log, Metadata};

    fn enabled(logger: &env_logger::Logger, target: &str, level: Level) -> bool {
        logger.enabled(&Metadata::builder().target(target).level(level).build())
    }

    #[test]
    fn the_line_editor_is_silent_at_every_level_and_the_rest_follows_rust_log() {
        for rust_log in ["trace", "debug", "rustyline=trace", "trace,rustyline=trace"] {
            let logger =
                without_line_editor(env_logger::Builder::new().parse_filters(rust_log)).build();
            for level in [Level::Error, Level::Warn, Level::Info, Level::Debug, Level::Trace] {
                assert!(!enabled(&logger, "rustyline", level), "{rust_log}: {level}");
            }
        }
        let logger = without_line_editor(env_logger::Builder::new().parse_filters("debug")).build();
        assert!(enabled(&logger, "client::download", Level::Debug));
        assert!(!enabled(&logger, "client::download", Level::Trace));
        let logger = without_line_editor(env_logger::Builder::new().parse_filters("warn")).build();
        assert!(enabled(&logger, "client::peer", Level::Warn));
        assert!(!enabled(&logger, "client::peer", Level::Info));
    }
}

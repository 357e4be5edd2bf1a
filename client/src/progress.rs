//! Live progress on a terminal (issue 10): one indicatif bar per running download, with
//! bytes done and total, speed, ETA and the peers by name (`user@addr`), redrawn in place
//! on stderr while `wait_downloads` waits, or while `download_file` follows the download it
//! started (until it ends, or Ctrl-C leaves it to the background). The prompt is not on
//! the screen meanwhile, so the bars never break a half-typed line. Then the bars are
//! cleared and the usual lines printed, so what stays on the screen is what a pipe would
//! get.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use common::PIECE_SIZE;

use crate::download::record::{DownloadRecord, DownloadState, Downloads};
use crate::interrupt::Interrupt;

/// How often the bars are redrawn when nothing else happens (speed and ETA move on).
const TICK: Duration = Duration::from_millis(250);

/// Like `Downloads::wait_idle`, drawing a bar per running download meanwhile; `None` if
/// `interrupt` fires first. Download notices are held back while the bars are drawn.
pub fn wait_idle(downloads: &Downloads, interrupt: &Interrupt) -> Option<Vec<DownloadRecord>> {
    let done =
        |records: &[DownloadRecord]| !records.iter().any(|r| r.state == DownloadState::Running);
    let (records, finished) = watch(downloads, interrupt, done);
    finished.then_some(records)
}

/// What `download_file` does on a terminal: draws the bars until the download numbered
/// `id` ends, then returns the lines of every download that ended meanwhile (their notices
/// were held back); if `interrupt` fires first, says that the download goes on.
pub fn follow(downloads: &Downloads, id: usize, interrupt: &Interrupt) -> Vec<String> {
    // Whether each download known now runs; a download started meanwhile counts as running.
    let running_before: std::collections::HashMap<usize, bool> =
        downloads.snapshot().iter().map(|r| (r.id, r.state == DownloadState::Running)).collect();
    let done = |records: &[DownloadRecord]| {
        records.iter().find(|r| r.id == id).is_none_or(|r| r.state != DownloadState::Running)
    };
    let (records, ended) = watch(downloads, interrupt, done);
    let mut lines: Vec<String> = records
        .iter()
        .filter(|r| {
            r.state != DownloadState::Running && running_before.get(&r.id).copied().unwrap_or(true)
        })
        .map(|r| r.line_for(true))
        .collect();
    if !ended {
        lines.push(IN_BACKGROUND.to_string());
    }
    lines
}

/// What `download_file` says when Ctrl-C stops it following its download.
pub const IN_BACKGROUND: &str = "(the download goes on in the background; show_downloads or wait_downloads follow it, and its line shows here when it ends)";

/// Draws a bar per running download until `done` holds of the records (`true`) or
/// `interrupt` fires (`false`), and returns the records as of the end. Download notices
/// are held back meanwhile: the downloads that ended then are in the records returned.
fn watch(
    downloads: &Downloads,
    interrupt: &Interrupt,
    done: impl Fn(&[DownloadRecord]) -> bool,
) -> (Vec<DownloadRecord>, bool) {
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {prefix}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut bars: std::collections::HashMap<usize, ProgressBar> = std::collections::HashMap::new();
    // Keys typed meanwhile (and the ^C of Ctrl-C) would be echoed into the bars and move
    // the cursor under indicatif; they are not echoed, and wait for the next prompt.
    let no_echo = NoEcho::start();
    downloads.mute();
    let finished = loop {
        let records = downloads.snapshot();
        for record in &records {
            match (&record.state, bars.get(&record.id)) {
                (DownloadState::Running, None) => {
                    let bar = multi.add(ProgressBar::new(record.size).with_style(style.clone()));
                    bar.set_position(bytes_done(record));
                    bar.reset_eta();
                    bar.set_message(message(record));
                    bar.set_prefix(pace(record));
                    bars.insert(record.id, bar);
                }
                (DownloadState::Running, Some(bar)) => {
                    bar.set_position(bytes_done(record));
                    bar.set_message(message(record));
                    bar.set_prefix(pace(record));
                }
                (_, Some(bar)) if !bar.is_finished() => bar.finish_and_clear(),
                _ => {}
            }
        }
        if done(&records) {
            break true;
        }
        if interrupt.is_fired() {
            break false;
        }
        downloads.wait_change(TICK);
    };
    for bar in bars.into_values() {
        bar.finish_and_clear();
    }
    let _ = multi.clear();
    drop(no_echo);
    (downloads.unmute(), finished)
}

/// Echo off on the terminal (stdin) while it lives; restored on drop. Nothing on a
/// non-terminal.
struct NoEcho {
    saved: Option<rustix::termios::Termios>,
}

impl NoEcho {
    fn start() -> NoEcho {
        use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else { return NoEcho { saved: None } };
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO | LocalModes::ECHOCTL);
        match tcsetattr(&stdin, OptionalActions::Now, &quiet) {
            Ok(()) => NoEcho { saved: Some(saved) },
            Err(e) => {
                log::debug!("cannot turn echo off: {e}");
                NoEcho { saved: None }
            }
        }
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let stdin = std::io::stdin();
            let _ =
                rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, saved);
        }
    }
}

/// The bytes of the pieces this download has (the last piece may be short).
fn bytes_done(record: &DownloadRecord) -> u64 {
    (u64::from(record.n_have) * PIECE_SIZE as u64).min(record.size)
}

/// `12.3 MB/s ETA 8s`, from the rate of the last few seconds (issue 20: not the average
/// since the start), or `stalled (no peer sends)` when nothing arrived lately.
pub fn pace(record: &DownloadRecord) -> String {
    match record.eta() {
        Some(eta) => format!(
            "{}/s ETA {}",
            indicatif::DecimalBytes(record.recent_rate() as u64),
            indicatif::HumanDuration(eta)
        ),
        // Nothing yet in its first seconds: it is still connecting.
        None if record.seconds() < crate::download::record::RECENT.as_secs_f64() => {
            "connecting".to_string()
        }
        None => "stalled (no peer sends)".to_string(),
    }
}

/// `[g1] big.iso (2 peers: alice@127.0.0.1:6201 bob@127.0.0.1:6202)`: at most
/// `NAMED_PEERS` named, then how many more.
pub fn message(record: &DownloadRecord) -> String {
    const NAMED_PEERS: usize = 3;
    let peers = if record.n_peers == 1 { "peer" } else { "peers" };
    let mut names: Vec<String> =
        record.connected.iter().take(NAMED_PEERS).map(|addr| record.peer_name(addr)).collect();
    if record.connected.len() > NAMED_PEERS {
        names.push(format!("+{}", record.connected.len() - NAMED_PEERS));
    }
    match names.is_empty() {
        true => format!("[{}] {} ({} {peers})", record.group, record.name, record.n_peers),
        false => format!(
            "[{}] {} ({} {peers}: {})",
            record.group,
            record.name,
            record.n_peers,
            names.join(" ")
        ),
    }
}

//! Live progress for `wait_downloads` on a terminal (issue 10): one indicatif bar per
//! running download, with bytes done and total, speed, ETA and peers, redrawn in place on
//! stderr until no download runs. Then the bars are cleared and `wait_downloads` prints
//! its usual lines, so what stays on the screen is what a pipe would get.

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
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut bars: Vec<Option<ProgressBar>> = Vec::new();
    downloads.mute_notices(true);
    let result = loop {
        let records = downloads.snapshot();
        bars.resize(records.len(), None);
        for (record, slot) in records.iter().zip(bars.iter_mut()) {
            match (&record.state, slot.as_ref()) {
                (DownloadState::Running, None) => {
                    let bar = multi.add(ProgressBar::new(record.size).with_style(style.clone()));
                    bar.set_position(bytes_done(record));
                    bar.reset_eta();
                    bar.set_message(message(record));
                    *slot = Some(bar);
                }
                (DownloadState::Running, Some(bar)) => {
                    bar.set_position(bytes_done(record));
                    bar.set_message(message(record));
                }
                (_, Some(bar)) if !bar.is_finished() => bar.finish_and_clear(),
                _ => {}
            }
        }
        if !records.iter().any(|r| r.state == DownloadState::Running) {
            break Some(records);
        }
        if interrupt.is_fired() {
            break None;
        }
        downloads.wait_change(TICK);
    };
    for bar in bars.into_iter().flatten() {
        bar.finish_and_clear();
    }
    let _ = multi.clear();
    downloads.mute_notices(false);
    result
}

/// The bytes of the pieces this download has (the last piece may be short).
fn bytes_done(record: &DownloadRecord) -> u64 {
    (u64::from(record.n_have) * PIECE_SIZE as u64).min(record.size)
}

fn message(record: &DownloadRecord) -> String {
    let peers = if record.n_peers == 1 { "peer" } else { "peers" };
    format!("[{}] {} ({} {peers})", record.group, record.name, record.n_peers)
}

//! Junk connections (bad handshakes, wrong versions, refused admissions, broken frames),
//! counted per source address instead of logged one by one (issue 21): a flood of them
//! from one address costs one warning line per interval, not one per connection.
//!
//! `JunkTally` is the pure part (the clock is passed in): an address's first junk
//! connection of each kind (its reason without the numbers in it, so `frame of 70000
//! bytes` and `frame of 80000 bytes` are one kind) is reported at once, with its reason; the others are counted, and reported in one line
//! when the address's interval ends (`412 junk connections from 127.0.0.2 in the last
//! 10 s (last: <reason>)`); a quiet interval forgets the address.
//! `JunkLog` is its reporter: it logs those lines at `warn`, and its `junk-log` thread
//! waits for the intervals to end, so that the count of a flood that stopped is reported
//! too.
//!
//! Invariant: the tally holds at most `MAX_SOURCES` addresses plus one "other addresses"
//! entry, each with at most `MAX_KINDS` kinds and one reason of at most `MAX_REASON` bytes,
//! so the junk itself cannot grow it; per interval it reports at most `MAX_KINDS + 1` lines
//! per entry, and one for an address whose junk goes on.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long an address's junk is counted before its line is logged.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Addresses counted one by one, at most; junk from more is counted together.
pub const MAX_SOURCES: usize = 1024;
/// The longest reason kept (a longer one is cut, at a character boundary).
pub const MAX_REASON: usize = 200;
/// Kinds of junk reported at once per address, at most, until it is quiet for an interval.
pub const MAX_KINDS: usize = 8;
/// The longest kind kept.
const MAX_KIND: usize = 48;

/// Where junk came from: one address, or any of the addresses beyond `MAX_SOURCES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    Addr(IpAddr),
    Others,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Addr(ip) => write!(f, "{ip}"),
            Source::Others => f.write_str("other addresses"),
        }
    }
}

/// One source's current interval.
#[derive(Debug)]
struct Window {
    start: Instant,
    /// Junk connections in this interval.
    count: u64,
    /// How many of them were already logged (the first one of a new source).
    logged: u64,
    /// The reason of the latest one.
    last: String,
    /// The kinds of junk already reported at once (kept from one interval to the next,
    /// until the source is quiet for an interval).
    kinds: Vec<String>,
}

/// Junk connections counted per source address, per interval.
#[derive(Debug)]
pub struct JunkTally {
    interval: Duration,
    max_sources: usize,
    windows: HashMap<Source, Window>,
}

impl JunkTally {
    /// A tally with intervals of `interval` that counts `max_sources` addresses one by one.
    pub fn new(interval: Duration, max_sources: usize) -> JunkTally {
        JunkTally { interval, max_sources, windows: HashMap::new() }
    }

    /// One junk connection from `peer` at `now`, for `reason`. Returns the line to log at
    /// once: the first of its source since that source was last quiet for an interval.
    pub fn note(&mut self, peer: SocketAddr, reason: &str, now: Instant) -> Option<String> {
        let own = Source::Addr(peer.ip());
        let source = match self.windows.contains_key(&own) {
            true => own,
            false if self.n_addresses() < self.max_sources => own,
            false => Source::Others,
        };
        let last = match source {
            Source::Addr(_) => cut(reason),
            Source::Others => cut(&format!("{peer}: {reason}")),
        };
        let kind = kind_of(reason);
        let line = format!("junk connection from {peer}: {last}");
        let Some(window) = self.windows.get_mut(&source) else {
            let window = Window { start: now, count: 1, logged: 1, last, kinds: vec![kind] };
            self.windows.insert(source, window);
            return Some(line);
        };
        window.count += 1;
        window.last = last;
        if window.kinds.len() >= MAX_KINDS || window.kinds.contains(&kind) {
            return None;
        }
        // A new kind of junk from a known source: shown once, as the first was.
        window.kinds.push(kind);
        window.logged += 1;
        Some(line)
    }

    /// The lines of the intervals that ended by `now`: each source's count of junk not
    /// logged yet, if any (its next interval starts now); a source with none is forgotten.
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let interval = self.interval;
        let mut lines = Vec::new();
        self.windows.retain(|source, w| {
            if now.saturating_duration_since(w.start) < interval {
                return true;
            }
            if w.count <= w.logged {
                return false;
            }
            lines.push(summary(*source, w, interval));
            w.start = now;
            w.count = 0;
            w.logged = 0;
            true
        });
        lines
    }

    /// When the next interval ends, if any source is counted.
    pub fn next_due(&self) -> Option<Instant> {
        self.windows.values().map(|w| w.start + self.interval).min()
    }

    /// The lines of every interval not over yet at `now` (at shutdown), and forgets all.
    pub fn drain(&mut self, now: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        for (source, w) in self.windows.drain() {
            if w.count > w.logged {
                // At least a second: "in the last 0 s" would read as a mistake.
                let elapsed = now.saturating_duration_since(w.start).max(Duration::from_secs(1));
                lines.push(summary(source, &w, elapsed));
            }
        }
        lines
    }

    /// How many sources are counted now (for tests of the bound).
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no source is counted now.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    fn n_addresses(&self) -> usize {
        self.windows.len() - usize::from(self.windows.contains_key(&Source::Others))
    }
}

/// `412 junk connections from 127.0.0.2 in the last 10 s (last: <reason>)`.
fn summary(source: Source, w: &Window, over: Duration) -> String {
    let plural = if w.count == 1 { "" } else { "s" };
    let secs = over.as_secs_f64().ceil();
    format!(
        "{} junk connection{plural} from {source} in the last {secs} s (last: {})",
        w.count, w.last
    )
}

/// The kind of a junk connection: its reason without its digits, at most `MAX_KIND` bytes.
fn kind_of(reason: &str) -> String {
    let mut kind = String::new();
    for c in reason.chars().filter(|c| !c.is_ascii_digit()) {
        if kind.len() + c.len_utf8() > MAX_KIND {
            break;
        }
        kind.push(c);
    }
    kind
}

/// `reason`, at most `MAX_REASON` bytes of it.
fn cut(reason: &str) -> String {
    if reason.len() <= MAX_REASON {
        return reason.to_string();
    }
    let mut end = MAX_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &reason[..end])
}

/// A `JunkTally` that logs its lines at `warn` (prefixed with `prefix`, such as `seeder: `),
/// with a `junk-log` thread that logs each interval's line when it ends. `close` (or the
/// drop) logs what is still counted and joins the thread.
pub struct JunkLog {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    prefix: &'static str,
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    tally: JunkTally,
    stop: bool,
}

impl JunkLog {
    /// Starts the reporter, with `INTERVAL` and `MAX_SOURCES`.
    pub fn start(prefix: &'static str) -> JunkLog {
        JunkLog::with(prefix, JunkTally::new(INTERVAL, MAX_SOURCES))
    }

    /// Starts the reporter of `tally`.
    pub fn with(prefix: &'static str, tally: JunkTally) -> JunkLog {
        let shared = Arc::new(Shared {
            prefix,
            state: Mutex::new(State { tally, stop: false }),
            wake: Condvar::new(),
        });
        let for_thread = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("junk-log".into())
            .spawn(move || report_loop(&for_thread))
            .map_err(|e| {
                // Without the thread, an interval's line is logged with the next junk.
                log::warn!("cannot start the junk-log thread: {e}");
            })
            .ok();
        JunkLog { shared, thread: Mutex::new(thread) }
    }

    /// One junk connection from `peer`, for `reason`.
    pub fn note(&self, peer: SocketAddr, reason: impl fmt::Display) {
        let now = Instant::now();
        let (first, due) = {
            let mut state = self.shared.lock();
            let first = state.tally.note(peer, &reason.to_string(), now);
            (first, state.tally.due(now))
        };
        if first.is_some() {
            // A new source: its interval's end is the thread's next wake-up.
            self.shared.wake.notify_one();
        }
        for line in first.into_iter().chain(due) {
            log::warn!("{}{line}", self.shared.prefix);
        }
    }

    /// Logs what is still counted and stops the thread.
    pub fn close(&self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for JunkLog {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `junk-log` thread: logs each interval's line when it ends, and what is left at stop.
fn report_loop(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        let now = Instant::now();
        if state.stop {
            let lines = state.tally.drain(now);
            drop(state);
            for line in lines {
                log::warn!("{}{line}", shared.prefix);
            }
            return;
        }
        let lines = state.tally.due(now);
        if !lines.is_empty() {
            drop(state);
            for line in lines {
                log::warn!("{}{line}", shared.prefix);
            }
            state = shared.lock();
            continue;
        }
        state = match state.tally.next_due() {
            Some(at) => {
                let wait = at.saturating_duration_since(now);
                shared.wake.wait_timeout(state, wait).unwrap_or_else(PoisonError::into_inner).0
            }
            None => shared.wake.wait(state).unwrap_or_else(PoisonError::into_inner),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(i: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, i], 40000 + u16::from(i)))
    }

    #[test]
    fn a_flood_from_one_address_is_one_line_at_once_then_one_per_interval() {
        let t0 = Instant::now();
        let secs = |s: u64| t0 + Duration::from_secs(s);
        let mut tally = JunkTally::new(INTERVAL, MAX_SOURCES);
        assert_eq!(
            tally.note(from(2), "handshake failed: bad 0", t0).as_deref(),
            Some("junk connection from 127.0.0.2:40002: handshake failed: bad 0")
        );
        for i in 1..412 {
            let at = t0 + Duration::from_millis(i * 20);
            assert_eq!(tally.note(from(2), &format!("handshake failed: bad {i}"), at), None);
        }
        assert!(tally.due(secs(9)).is_empty());
        assert_eq!(tally.next_due(), Some(secs(10)));
        assert_eq!(
            tally.due(secs(10)),
            ["412 junk connections from 127.0.0.2 in the last 10 s (last: handshake failed: bad 411)"]
        );
        // The flood goes on: one line per interval, nothing at once.
        assert_eq!(tally.note(from(2), "handshake failed: bad 412", secs(11)), None);
        assert!(tally.due(secs(19)).is_empty());
        assert_eq!(
            tally.due(secs(20)),
            ["1 junk connection from 127.0.0.2 in the last 10 s (last: handshake failed: bad 412)"]
        );
        // A quiet interval forgets the address: its next junk is reported at once.
        assert!(tally.due(secs(30)).is_empty());
        assert!(tally.is_empty());
        assert!(tally.note(from(2), "later", secs(31)).is_some());
        // One junk connection alone is reported once, at once.
        assert!(tally.due(secs(41)).is_empty());
        assert!(tally.is_empty());
    }

    #[test]
    fn each_kind_of_junk_is_shown_once_then_counted() {
        let t0 = Instant::now();
        let mut tally = JunkTally::new(INTERVAL, MAX_SOURCES);
        assert!(tally.note(from(2), "handshake failed: bad", t0).is_some());
        assert!(tally.note(from(2), "handshake failed: bad", t0).is_none());
        assert_eq!(
            tally.note(from(2), "closing connection: frame of 70000 bytes", t0).as_deref(),
            Some("junk connection from 127.0.0.2:40002: closing connection: frame of 70000 bytes")
        );
        assert!(tally.note(from(2), "closing connection: frame of 80000 bytes", t0).is_none());
        assert_eq!(
            tally.due(t0 + INTERVAL),
            ["4 junk connections from 127.0.0.2 in the last 10 s (last: closing connection: frame of 80000 bytes)"]
        );
        // Kinds already shown stay shown while the junk goes on.
        assert!(tally.note(from(2), "handshake failed: bad", t0 + INTERVAL).is_none());
        // At most `MAX_KINDS` kinds are shown at once.
        let shown = (b'a'..=b'z')
            .filter(|c| tally.note(from(2), &format!("kind {}", char::from(*c)), t0).is_some());
        assert_eq!(shown.count(), MAX_KINDS - 2);
    }

    #[test]
    fn addresses_are_counted_apart_and_beyond_the_bound_together() {
        let t0 = Instant::now();
        let mut tally = JunkTally::new(INTERVAL, 2);
        assert!(tally.note(from(1), "a", t0).is_some());
        assert!(tally.note(from(2), "b", t0).is_some());
        assert_eq!(
            tally.note(from(3), "c", t0).as_deref(),
            Some("junk connection from 127.0.0.3:40003: 127.0.0.3:40003: c")
        );
        assert_eq!(tally.note(from(4), "c", t0), None);
        assert_eq!(tally.note(from(1), "a", t0), None);
        assert_eq!(tally.len(), 3);
        let mut lines = tally.due(t0 + INTERVAL);
        lines.sort();
        assert_eq!(
            lines,
            [
                "2 junk connections from 127.0.0.1 in the last 10 s (last: a)",
                "2 junk connections from other addresses in the last 10 s (last: 127.0.0.4:40004: c)",
            ]
        );
    }

    #[test]
    fn the_table_and_the_lines_stay_bounded_whatever_the_flood() {
        let t0 = Instant::now();
        let mut tally = JunkTally::new(INTERVAL, 64);
        let mut lines = 0;
        for i in 0..100_000u32 {
            let at = t0 + Duration::from_millis(u64::from(i));
            let [_, a, b, c] = i.to_be_bytes();
            let peer = SocketAddr::from(([10, a, b, c], 1));
            lines += usize::from(tally.note(peer, &"x".repeat(1000), at).is_some());
            lines += tally.due(at).len();
            assert!(tally.len() <= 65);
        }
        // 100 s of floods from 100,000 addresses: at most two lines per entry per interval.
        assert!(lines <= 2 * 65 * 11, "{lines} lines");
        let longest = tally.windows.values().map(|w| w.last.len()).max().unwrap();
        assert!(longest <= MAX_REASON + 3 + 22, "{longest}");
    }

    #[test]
    fn what_is_still_counted_is_reported_at_shutdown() {
        let t0 = Instant::now();
        let mut tally = JunkTally::new(INTERVAL, MAX_SOURCES);
        tally.note(from(2), "refused: 1", t0);
        tally.note(from(2), "refused: 2", t0);
        tally.note(from(3), "alone", t0);
        assert_eq!(
            tally.drain(t0 + Duration::from_millis(2500)),
            ["2 junk connections from 127.0.0.2 in the last 3 s (last: refused: 2)"]
        );
        assert!(tally.is_empty());
    }

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        let long = "é".repeat(150);
        let kept = cut(&long);
        assert!(kept.len() <= MAX_REASON + 3 && kept.ends_with("..."), "{kept}");
        assert_eq!(cut("short"), "short");
    }

    #[test]
    fn the_log_reports_and_stops() {
        let log = JunkLog::with("test: ", JunkTally::new(Duration::from_millis(10), 4));
        for _ in 0..100 {
            log.note(from(2), "junk");
        }
        log.close();
        assert!(log.shared.lock().tally.is_empty());
    }
}

//! What this client has seen of the trackers: each one's state as its links last found it
//! (serving this client, unusable, unable to serve, connection lost), the last `Status` a
//! tracker gave of its place in the cluster, and the failover events, for the dashboard's
//! trackers panel. Every `TrackerLink` of the session reports
//! here; nothing here does I/O.
//!
//! Invariant: at most `MAX_TRACKERS` trackers and `MAX_EVENTS` events are kept; an event is
//! recorded only when a tracker's state changes, so a busy client does not flood it.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::SystemTime;

use parking_lot::Mutex;

use common::message::TrackerStatus;

/// Trackers remembered at most (a `tracker_info.txt` lists a handful).
pub const MAX_TRACKERS: usize = 256;
/// Events remembered at most; the oldest go first.
pub const MAX_EVENTS: usize = 64;

/// The trackers as this client sees them.
#[derive(Default)]
pub struct TrackerView {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    trackers: BTreeMap<SocketAddr, Seen>,
    /// The tracker the last connection went to, while nothing went wrong with it.
    serving: Option<SocketAddr>,
    /// The tracker that served before something went wrong with it.
    was: Option<SocketAddr>,
    events: VecDeque<TrackerEvent>,
    /// The last `Status` a tracker gave, and when.
    status: Option<(SystemTime, TrackerStatus)>,
}

/// What `TrackerView::snapshot` returns.
#[derive(Debug, Clone)]
pub struct ViewSnapshot {
    /// The tracker the last connection went to, unless something went wrong with it since.
    pub serving: Option<SocketAddr>,
    /// Every tracker seen, by address.
    pub trackers: Vec<(SocketAddr, Seen)>,
    /// The events, oldest first.
    pub events: Vec<TrackerEvent>,
    /// The last `Status` a tracker gave, and when.
    pub status: Option<(SystemTime, TrackerStatus)>,
}

/// One tracker's state as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its line in `tracker_info.txt`, when known.
    pub id: Option<u32>,
    pub state: SeenState,
    /// Since when it is in this state.
    pub since: SystemTime,
}

/// What a link last found at a tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeenState {
    /// A link connected to it (it proved its key and answered the hello).
    Connected,
    /// No link could use it: unreachable, no key listed, or the wrong key.
    Unusable(String),
    /// It answered that it cannot serve now (no majority, catching up, leader gone).
    CannotServe(String),
    /// A request on it failed (the connection broke or timed out).
    Lost(String),
}

/// A change seen, at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerEvent {
    pub at: SystemTime,
    pub text: String,
}

impl SeenState {
    /// A word for the state, for views (`connected`, `unusable`, `cannot serve`, `lost`).
    pub fn word(&self) -> &'static str {
        match self {
            SeenState::Connected => "connected",
            SeenState::Unusable(_) => "unusable",
            SeenState::CannotServe(_) => "cannot serve",
            SeenState::Lost(_) => "lost",
        }
    }

    /// Why, for the states that have a reason.
    pub fn reason(&self) -> Option<&str> {
        match self {
            SeenState::Connected => None,
            SeenState::Unusable(why) | SeenState::CannotServe(why) | SeenState::Lost(why) => {
                Some(why)
            }
        }
    }
}

impl TrackerView {
    /// A link connected to tracker `id` at `addr`.
    pub fn connected(&self, id: u32, addr: SocketAddr) {
        let mut inner = self.inner.lock();
        let news = inner.serving != Some(addr);
        let before = inner.serving.or(inner.was);
        inner.serving = Some(addr);
        inner.was = None;
        inner.set(addr, Some(id), SeenState::Connected);
        if news {
            let text = match before {
                Some(old) if old != addr => {
                    format!("now served by tracker {id} at {addr} (was {})", inner.name(old))
                }
                _ => format!("served by tracker {id} at {addr}"),
            };
            inner.push(text);
        }
    }

    /// No link could use tracker `id` at `addr`, because of `why`.
    pub fn unusable(&self, id: u32, addr: SocketAddr, why: &str) {
        self.change(addr, Some(id), SeenState::Unusable(why.to_string()));
    }

    /// The tracker at `addr` answered that it cannot serve now.
    pub fn cannot_serve(&self, addr: SocketAddr, why: &str) {
        self.change(addr, None, SeenState::CannotServe(why.to_string()));
    }

    /// A request to the tracker at `addr` failed.
    pub fn lost(&self, addr: SocketAddr, why: &str) {
        self.change(addr, None, SeenState::Lost(why.to_string()));
    }

    /// A tracker told its place in the cluster; a change of its role is an event.
    pub fn set_status(&self, status: TrackerStatus) {
        let mut inner = self.inner.lock();
        let changed = inner.status.as_ref().is_none_or(|(_, old)| {
            (old.id, old.role, old.term) != (status.id, status.role, status.term)
        });
        if changed {
            let text = format!(
                "tracker {} says: {} in term {}, voters {:?}, reaching {}",
                status.id, status.role, status.term, status.voters, status.reach
            );
            inner.push(text);
        }
        inner.status = Some((SystemTime::now(), status));
    }

    /// What was seen, now.
    pub fn snapshot(&self) -> ViewSnapshot {
        let inner = self.inner.lock();
        ViewSnapshot {
            serving: inner.serving,
            trackers: inner.trackers.iter().map(|(a, s)| (*a, s.clone())).collect(),
            events: inner.events.iter().cloned().collect(),
            status: inner.status.clone(),
        }
    }

    /// Records `state` for `addr`, with an event when it is news.
    fn change(&self, addr: SocketAddr, id: Option<u32>, state: SeenState) {
        let mut inner = self.inner.lock();
        if inner.trackers.get(&addr).is_some_and(|s| s.state == state) {
            return;
        }
        inner.set(addr, id, state.clone());
        let text = format!(
            "{}: {} ({})",
            inner.name(addr),
            state.word(),
            state.reason().unwrap_or_default()
        );
        if inner.serving == Some(addr) {
            inner.was = inner.serving.take();
        }
        inner.push(text);
    }
}

impl Inner {
    /// `tracker N at ADDR`, or `tracker at ADDR` when its line is not known.
    fn name(&self, addr: SocketAddr) -> String {
        match self.trackers.get(&addr).and_then(|s| s.id) {
            Some(id) => format!("tracker {id} at {addr}"),
            None => format!("tracker at {addr}"),
        }
    }

    fn set(&mut self, addr: SocketAddr, id: Option<u32>, state: SeenState) {
        if !self.trackers.contains_key(&addr) && self.trackers.len() >= MAX_TRACKERS {
            return;
        }
        let since = match self.trackers.get(&addr) {
            Some(seen) if seen.state == state => seen.since,
            _ => SystemTime::now(),
        };
        let id = id.or_else(|| self.trackers.get(&addr).and_then(|s| s.id));
        self.trackers.insert(addr, Seen { id, state, since });
    }

    fn push(&mut self, text: String) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(TrackerEvent { at: SystemTime::now(), text });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(view: &TrackerView) -> Vec<String> {
        view.snapshot().events.into_iter().map(|e| e.text).collect()
    }

    #[test]
    fn a_failover_is_one_event_per_change_and_the_log_is_bounded() {
        let view = TrackerView::default();
        let (a, b): (SocketAddr, SocketAddr) =
            ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        view.connected(1, a);
        view.connected(1, a);
        view.lost(a, "connection reset");
        view.lost(a, "connection reset");
        view.unusable(1, a, "connection refused");
        view.connected(2, b);
        assert_eq!(
            texts(&view),
            [
                "served by tracker 1 at 127.0.0.1:1",
                "tracker 1 at 127.0.0.1:1: lost (connection reset)",
                "tracker 1 at 127.0.0.1:1: unusable (connection refused)",
                "now served by tracker 2 at 127.0.0.1:2 (was tracker 1 at 127.0.0.1:1)",
            ]
        );
        let seen = view.snapshot();
        assert_eq!(seen.serving, Some(b));
        assert_eq!(seen.trackers.len(), 2);
        for i in 0..2 * MAX_EVENTS {
            view.cannot_serve(a, &format!("no majority {i}"));
        }
        assert_eq!(view.snapshot().events.len(), MAX_EVENTS);
    }
}

//! Which peers a download connects to, and when it asks the tracker for more: pure policy,
//! no I/O, the clock passed in (issue 22).
//!
//! `PeerPolicy`: a peer that sends `MAX_BAD_PIECES` pieces with a bad hash is banned for the
//! download; a peer whose connection failed is tried again after `RECONNECT_AFTER`; a peer
//! list is not trusted to be small or distinct, so a download connects once per address and
//! once per key, and to `MAX_PEERS` at most.
//!
//! `RefreshSchedule`: the tracker is asked for peers (and a fresh ticket) every
//! `MIN_REFRESH` while its answers bring news (a flash crowd, where leechers must find each
//! other within a second or two), then less and less often, doubling up to `MAX_REFRESH`
//! or a third of the ticket's life, whichever is shorter (so the fresh ticket reaches the
//! seeders long before the one they hold expires, however short the trackers make tickets
//! live: their lifetime is how long a removed member can still fetch), and at once again
//! when something happens that the tracker may help with: a connection lost, or pieces no
//! connected peer has.
//!
//! Invariant: a banned address is never connected again by this download; no address or
//! key is connected twice at once; at most `MAX_PEERS` connections.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::PublicKey;

/// Peers one download connects to at most (one thread each).
pub const MAX_PEERS: usize = 32;
/// A peer that sends this many pieces with a bad hash is dropped for the download.
pub const MAX_BAD_PIECES: u32 = 3;
/// Wait this long before connecting again to a peer whose connection failed.
pub const RECONNECT_AFTER: Duration = Duration::from_secs(3);
/// The shortest time between two asks for peers.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// The longest, for tickets that live 45 s or more; shorter-lived tickets are renewed every
/// third of their life (`RefreshSchedule::ticket_life`), so the ticket the answer carries
/// reaches the seeders long before the one they hold expires.
pub const MAX_REFRESH: Duration = Duration::from_secs(15);

/// What to do with a peer that sent a piece with a bad hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strike {
    /// Keep it; it sent this many bad pieces so far.
    Warned(u32),
    /// Drop it, for good.
    Banned,
}

/// Bans and back-off of one download's peers.
#[derive(Debug, Default)]
pub struct PeerPolicy {
    /// Peers whose connection ended, and when (only those within `RECONNECT_AFTER`).
    failed: HashMap<SocketAddr, Instant>,
    /// Peers dropped for sending bad data; never used again by this download.
    banned: HashSet<SocketAddr>,
    strikes: HashMap<SocketAddr, u32>,
}

impl PeerPolicy {
    /// `addr` sent a piece that did not match its hash.
    pub fn bad_piece(&mut self, addr: SocketAddr) -> Strike {
        let strikes = self.strikes.entry(addr).or_default();
        *strikes += 1;
        if *strikes >= MAX_BAD_PIECES {
            self.strikes.remove(&addr);
            self.banned.insert(addr);
            return Strike::Banned;
        }
        Strike::Warned(*strikes)
    }

    /// Whether `addr` is banned.
    pub fn is_banned(&self, addr: SocketAddr) -> bool {
        self.banned.contains(&addr)
    }

    /// `addr`'s connection ended at `now`.
    pub fn connection_ended(&mut self, addr: SocketAddr, now: Instant) {
        self.failed.insert(addr, now);
    }

    /// Which of the `listed` peers to connect to now, in list order, given the ones
    /// `connected` already: not banned, not failed within `RECONNECT_AFTER`, no address or
    /// key twice, and `MAX_PEERS` connections at most in all.
    pub fn choose(
        &mut self,
        listed: &[(SocketAddr, PublicKey)],
        connected: &[(SocketAddr, PublicKey)],
        now: Instant,
    ) -> Vec<usize> {
        self.failed.retain(|_, at| now.saturating_duration_since(*at) < RECONNECT_AFTER);
        let mut addrs: HashSet<SocketAddr> = connected.iter().map(|(a, _)| *a).collect();
        let mut keys: HashSet<PublicKey> = connected.iter().map(|(_, k)| *k).collect();
        let mut n = connected.len();
        let mut chosen = Vec::new();
        for (i, (addr, key)) in listed.iter().enumerate() {
            if n >= MAX_PEERS {
                break;
            }
            if addrs.contains(addr)
                || keys.contains(key)
                || self.banned.contains(addr)
                || self.failed.contains_key(addr)
            {
                continue;
            }
            addrs.insert(*addr);
            keys.insert(*key);
            n += 1;
            chosen.push(i);
        }
        chosen
    }
}

/// When a download asks the tracker for peers next.
#[derive(Debug, Clone)]
pub struct RefreshSchedule {
    interval: Duration,
    /// The longest interval: `MAX_REFRESH`, or a third of the ticket's life if shorter.
    longest: Duration,
    next: Instant,
    /// An ask is out, not yet answered.
    pending: bool,
    /// An event asked for a refresh while one was out: ask again once it is answered.
    hurried: bool,
}

impl RefreshSchedule {
    /// A schedule whose first ask is due `MIN_REFRESH` after `now` (the download starts
    /// with a fresh list).
    pub fn new(now: Instant) -> RefreshSchedule {
        RefreshSchedule {
            interval: MIN_REFRESH,
            longest: MAX_REFRESH,
            next: now + MIN_REFRESH,
            pending: false,
            hurried: false,
        }
    }

    /// Whether to ask now; if so, the ask counts as sent.
    pub fn take_due(&mut self, now: Instant) -> bool {
        if self.pending || now < self.next {
            return false;
        }
        self.pending = true;
        true
    }

    /// The ask could not be sent (the call queue was full): try again at the next look.
    pub fn not_sent(&mut self) {
        self.pending = false;
    }

    /// The tracker answered at `now`; `news`: the answer brought peers or pieces not known
    /// before. News keeps the pace at `MIN_REFRESH`; none halves it, down to
    /// `MAX_REFRESH`.
    pub fn answered(&mut self, now: Instant, news: bool) {
        self.pending = false;
        self.interval = match news {
            true => MIN_REFRESH,
            false => (self.interval * 2).min(self.longest),
        };
        self.next = match std::mem::take(&mut self.hurried) {
            true => now + MIN_REFRESH,
            false => now + self.interval,
        };
    }

    /// The download got a ticket that lives `life` from `now`: the next ask is due within a
    /// third of it (at least `MIN_REFRESH` apart), so the seeders get the next ticket while
    /// two thirds of this one's life are left.
    pub fn ticket_life(&mut self, now: Instant, life: Duration) {
        self.longest = (life / 3).clamp(MIN_REFRESH, MAX_REFRESH);
        self.interval = self.interval.min(self.longest);
        if !self.pending {
            self.next = self.next.min(now + self.longest);
        }
    }

    /// Something happened that the tracker may help with: ask within `MIN_REFRESH`, at the
    /// pace of news again.
    pub fn hurry(&mut self, now: Instant) {
        self.interval = MIN_REFRESH;
        if self.pending {
            self.hurried = true;
        } else {
            self.next = self.next.min(now + MIN_REFRESH);
        }
    }

    /// Ask at once (a resumed download): at the pace of news again.
    pub fn ask_now(&mut self, now: Instant) {
        self.interval = MIN_REFRESH;
        match self.pending {
            true => self.hurried = true,
            false => self.next = now,
        }
    }

    /// The pace now: the time from one answer to the next ask.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// When the next ask is due.
    pub fn next(&self) -> Instant {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, i], 7000))
    }

    fn key(i: u8) -> PublicKey {
        PublicKey([i; 32])
    }

    #[test]
    fn three_bad_pieces_ban_a_peer_for_good() {
        let mut policy = PeerPolicy::default();
        let now = Instant::now();
        assert_eq!(policy.bad_piece(addr(1)), Strike::Warned(1));
        assert_eq!(policy.bad_piece(addr(1)), Strike::Warned(2));
        assert_eq!(policy.bad_piece(addr(2)), Strike::Warned(1));
        assert_eq!(policy.bad_piece(addr(1)), Strike::Banned);
        assert!(policy.is_banned(addr(1)));
        let listed = [(addr(1), key(1)), (addr(2), key(2))];
        assert_eq!(policy.choose(&listed, &[], now + Duration::from_secs(3600)), [1]);
    }

    #[test]
    fn a_failed_peer_is_tried_again_after_the_back_off() {
        let mut policy = PeerPolicy::default();
        let now = Instant::now();
        policy.connection_ended(addr(1), now);
        let listed = [(addr(1), key(1))];
        assert!(policy.choose(&listed, &[], now + Duration::from_secs(2)).is_empty());
        assert_eq!(policy.choose(&listed, &[], now + RECONNECT_AFTER), [0]);
    }

    #[test]
    fn the_refresh_backs_off_without_news_and_hurries_on_events() {
        let t0 = Instant::now();
        let mut schedule = RefreshSchedule::new(t0);
        assert!(!schedule.take_due(t0));
        let mut now = t0 + MIN_REFRESH;
        let mut intervals = Vec::new();
        for _ in 0..6 {
            assert!(schedule.take_due(now));
            assert!(!schedule.take_due(now), "one ask out at a time");
            schedule.answered(now, false);
            intervals.push(schedule.interval().as_secs());
            now = schedule.next();
        }
        assert_eq!(intervals, [2, 4, 8, 15, 15, 15]);
        // News brings the pace back.
        assert!(schedule.take_due(now));
        schedule.answered(now, true);
        assert_eq!(schedule.interval(), MIN_REFRESH);
        // A lost connection: asked within a second, even when the pace was slow.
        for _ in 0..4 {
            now = schedule.next();
            assert!(schedule.take_due(now));
            schedule.answered(now, false);
        }
        schedule.hurry(now);
        assert!(schedule.next() <= now + MIN_REFRESH);
        // An event while an ask is out: asked again a second after its answer.
        assert!(schedule.take_due(schedule.next()));
        let answered_at = schedule.next() + Duration::from_millis(300);
        schedule.hurry(answered_at);
        schedule.answered(answered_at, false);
        assert_eq!(schedule.next(), answered_at + MIN_REFRESH);
    }

    /// Issue 21: tickets that live shorter than 45 s are renewed every third of their life
    /// (at least a second apart), so a tracker may make them short: their lifetime bounds
    /// how long a removed member can still fetch.
    #[test]
    fn short_lived_tickets_are_renewed_every_third_of_their_life() {
        let t0 = Instant::now();
        let mut schedule = RefreshSchedule::new(t0);
        schedule.ticket_life(t0, Duration::from_secs(6));
        let mut now = t0 + MIN_REFRESH;
        let mut intervals = Vec::new();
        for _ in 0..4 {
            assert!(schedule.take_due(now));
            schedule.answered(now, false);
            intervals.push(schedule.interval().as_secs());
            now = schedule.next();
        }
        assert_eq!(intervals, [2, 2, 2, 2]);
        // A very short life: never more often than `MIN_REFRESH`.
        schedule.ticket_life(now, Duration::from_secs(2));
        assert_eq!(schedule.interval(), MIN_REFRESH);
        // A long one: `MAX_REFRESH` at most.
        schedule.ticket_life(now, Duration::from_secs(3600));
        for _ in 0..6 {
            now = schedule.next();
            assert!(schedule.take_due(now));
            schedule.answered(now, false);
        }
        assert_eq!(schedule.interval(), MAX_REFRESH);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Bad(u8),
        Ended(u8),
        Wait(u64),
        Choose(Vec<(u8, u8)>),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..12).prop_map(Step::Bad),
            (0u8..12).prop_map(Step::Ended),
            (0u64..5000).prop_map(Step::Wait),
            proptest::collection::vec((0u8..12, 0u8..12), 0..40).prop_map(Step::Choose),
        ]
    }

    proptest! {
        /// Against a model: whatever the lists and events, a choice never repeats an
        /// address or a key (also against those connected), never takes a banned address
        /// or one failed within the back-off, and never exceeds `MAX_PEERS`.
        #[test]
        fn choices_keep_the_invariants(steps in proptest::collection::vec(step(), 0..60)) {
            let mut policy = PeerPolicy::default();
            let mut now = Instant::now();
            let mut banned: HashSet<SocketAddr> = HashSet::new();
            let mut strikes: HashMap<SocketAddr, u32> = HashMap::new();
            let mut ended: HashMap<SocketAddr, Instant> = HashMap::new();
            let mut connected: Vec<(SocketAddr, PublicKey)> = Vec::new();
            for step in steps {
                match step {
                    Step::Bad(i) => {
                        let n = strikes.entry(addr(i)).or_default();
                        *n += 1;
                        let strike = policy.bad_piece(addr(i));
                        if *n >= MAX_BAD_PIECES {
                            banned.insert(addr(i));
                            strikes.remove(&addr(i));
                            prop_assert_eq!(strike, Strike::Banned);
                            connected.retain(|(a, _)| *a != addr(i));
                        }
                    }
                    Step::Ended(i) => {
                        policy.connection_ended(addr(i), now);
                        ended.insert(addr(i), now);
                        connected.retain(|(a, _)| *a != addr(i));
                    }
                    Step::Wait(ms) => now += Duration::from_millis(ms),
                    Step::Choose(list) => {
                        let listed: Vec<_> = list.iter().map(|&(a, k)| (addr(a), key(k))).collect();
                        let chosen = policy.choose(&listed, &connected, now);
                        for &i in &chosen {
                            let (a, k) = listed[i];
                            prop_assert!(!banned.contains(&a));
                            prop_assert!(ended.get(&a).is_none_or(|at| now - *at >= RECONNECT_AFTER));
                            prop_assert!(connected.iter().all(|(ca, ck)| *ca != a && *ck != k));
                            connected.push((a, k));
                        }
                        prop_assert!(connected.len() <= MAX_PEERS);
                    }
                }
            }
        }

        /// The pace stays within its bounds, and at most one ask is out at a time.
        #[test]
        fn the_refresh_pace_stays_in_bounds(events in proptest::collection::vec((0u8..4, 0u64..20_000), 0..80)) {
            let mut now = Instant::now();
            let mut schedule = RefreshSchedule::new(now);
            let mut out = false;
            for (kind, ms) in events {
                now += Duration::from_millis(ms);
                match kind {
                    0 => {
                        let due = schedule.take_due(now);
                        prop_assert!(!(due && out));
                        out |= due;
                    }
                    1 if out => { schedule.answered(now, ms % 2 == 0); out = false; }
                    2 => schedule.hurry(now),
                    _ => {}
                }
                prop_assert!(schedule.interval() >= MIN_REFRESH && schedule.interval() <= MAX_REFRESH);
                prop_assert!(out || schedule.next() <= now + MAX_REFRESH);
            }
        }
    }
}

//! How one request fails over between trackers: pure, the clock and the randomness passed
//! in (issue 22). `TrackerLink::call` does the I/O and asks this what to do after each
//! outcome.
//!
//! - A tracker that breaks the connection, or cannot serve now (catching up, or its leader
//!   just died), is skipped for this round; the request is retried on the next one, with
//!   the same request id, for up to `FAILOVER_BUDGET`.
//! - A tracker that reaches no majority is skipped too (another may be on the majority's
//!   side of a partition), but once `NO_MAJORITY_WAIT` passed with the last tracker that
//!   answered saying so, the request gives up: the user is told at once, and waits a few
//!   seconds, not the whole failover budget (issue 20).
//! - A tracker too busy hashing passwords (`Busy`) is retried for up to `BUSY_BUDGET`,
//!   after pauses doubling from `RETRY_PAUSE` to `MAX_BUSY_PAUSE`, up to half of each
//!   random, so that clients refused together do not come back together.
//! - When every tracker was skipped, the round ends: a pause, then every tracker again.
//! - A tracker that accepts and then breaks every connection ends the request after
//!   `2 n + 2` breaks (`n` trackers).
//!
//! Invariant: a request gives up within `BUSY_BUDGET` plus one pause after it started,
//! whatever the trackers answer (each connection attempt itself has its timeouts).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a request keeps being retried while trackers fail over.
pub const FAILOVER_BUDGET: Duration = Duration::from_secs(15);
/// How long a request keeps being retried while the trackers answer `Busy`.
pub const BUSY_BUDGET: Duration = Duration::from_secs(60);
/// How long a request waits for a majority of trackers to come back.
pub const NO_MAJORITY_WAIT: Duration = Duration::from_secs(5);
/// The pause before trying skipped trackers again.
pub const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// The longest pause between retries of a request the trackers are too busy for.
pub const MAX_BUSY_PAUSE: Duration = Duration::from_secs(3);

/// What a tracker did with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Too busy hashing passwords.
    Busy(String),
    /// Cannot serve now (no leader, catching up).
    Unavailable(String),
    /// Reaches too few trackers to serve anything (the tracker's words).
    NoMajority(String),
    /// The connection broke or timed out.
    Broken,
}

/// What to do after a round in which no tracker could take the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterRound {
    /// Pause this long, then try every tracker again.
    Pause(Duration),
    /// No tracker could be reached at all.
    NoTracker,
    /// Trackers were reached but none could serve within the budget; the last reason.
    Unavailable(Option<String>),
}

/// One request's failover.
#[derive(Debug, Clone)]
pub struct Failover {
    started: Instant,
    deadline: Instant,
    busy_rounds: u32,
    /// Trackers skipped in this round.
    skipped: Vec<SocketAddr>,
    /// Why the last tracker that answered could not serve.
    last_reason: Option<String>,
    /// Whether that was for want of a majority.
    last_no_majority: bool,
    broken: usize,
    n_trackers: usize,
}

impl Failover {
    /// The failover of a request sent at `now` to one of `n_trackers`.
    pub fn new(now: Instant, n_trackers: usize) -> Failover {
        Failover {
            started: now,
            deadline: now + FAILOVER_BUDGET,
            busy_rounds: 0,
            skipped: Vec::new(),
            last_reason: None,
            last_no_majority: false,
            broken: 0,
            n_trackers,
        }
    }

    /// The trackers not to try again in this round.
    pub fn skipped(&self) -> &[SocketAddr] {
        &self.skipped
    }

    /// The tracker at `addr` did not take the request (`outcome`) at `now`: whether to try
    /// another (`true`) or to give the caller the tracker's answer (`false`; for `Broken`,
    /// that no tracker is usable).
    pub fn failed(&mut self, addr: SocketAddr, outcome: Outcome, now: Instant) -> bool {
        match outcome {
            Outcome::Busy(reason) => {
                if now >= self.started + BUSY_BUDGET {
                    return false;
                }
                self.deadline = self.deadline.max(self.started + BUSY_BUDGET);
                self.busy_rounds += 1;
                self.last_reason = Some(format!("busy: {reason}"));
            }
            Outcome::Unavailable(reason) => {
                if now >= self.deadline {
                    return false;
                }
                self.last_reason = Some(reason);
                self.last_no_majority = false;
            }
            Outcome::NoMajority(reason) => {
                if now >= self.deadline.min(self.started + NO_MAJORITY_WAIT) {
                    return false;
                }
                self.last_reason = Some(reason);
                self.last_no_majority = true;
            }
            Outcome::Broken => {
                self.broken += 1;
                if self.broken > 2 * self.n_trackers + 1 {
                    return false;
                }
            }
        }
        // Others first: a tracker that timed out may be paused, and would keep the next
        // handshake waiting too.
        self.skipped.push(addr);
        true
    }

    /// A round found no tracker to take the request, at `now`: pause and start a new round,
    /// or give up. `jitter` (0 to 255, random) spreads the pauses of busy rounds.
    pub fn round_over(&mut self, now: Instant, jitter: u8) -> AfterRound {
        if self.skipped.is_empty() {
            return AfterRound::NoTracker;
        }
        let no_majority_over = self.last_no_majority && now >= self.started + NO_MAJORITY_WAIT;
        if now >= self.deadline || no_majority_over {
            return AfterRound::Unavailable(self.last_reason.clone());
        }
        self.skipped.clear();
        AfterRound::Pause(match self.busy_rounds {
            0 => RETRY_PAUSE,
            rounds => busy_pause(rounds, jitter),
        })
    }
}

/// The pause before the `round`th retry of a request the trackers were too busy for:
/// doubling from `RETRY_PAUSE` up to `MAX_BUSY_PAUSE`, the second half of it scaled by
/// `jitter` / 255.
pub fn busy_pause(round: u32, jitter: u8) -> Duration {
    let base = RETRY_PAUSE.saturating_mul(1 << round.min(5)).min(MAX_BUSY_PAUSE);
    base / 2 + base / 2 * u32::from(jitter) / 255
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 6100 + u16::from(i)))
    }

    #[test]
    fn a_dead_tracker_is_skipped_and_the_next_round_tries_it_again() {
        let now = Instant::now();
        let mut failover = Failover::new(now, 3);
        assert!(failover.failed(addr(1), Outcome::Broken, now));
        assert!(failover.failed(addr(2), Outcome::Unavailable("no majority".into()), now));
        assert_eq!(failover.skipped(), [addr(1), addr(2)]);
        assert_eq!(failover.round_over(now, 0), AfterRound::Pause(RETRY_PAUSE));
        assert!(failover.skipped().is_empty());
        // Past the budget: the last reason is what the user reads.
        let late = now + FAILOVER_BUDGET;
        assert!(!failover.failed(addr(2), Outcome::Unavailable("no majority".into()), late));
        assert!(failover.failed(addr(1), Outcome::Broken, late));
        assert_eq!(
            failover.round_over(late, 0),
            AfterRound::Unavailable(Some("no majority".into()))
        );
    }

    #[test]
    fn without_a_majority_a_request_gives_up_after_a_few_seconds() {
        let now = Instant::now();
        let mut failover = Failover::new(now, 3);
        let no_majority = || Outcome::NoMajority("no majority".into());
        assert!(failover.failed(addr(1), no_majority(), now));
        assert!(failover.failed(addr(2), Outcome::Broken, now));
        assert_eq!(failover.round_over(now, 0), AfterRound::Pause(RETRY_PAUSE));
        let later = now + NO_MAJORITY_WAIT - Duration::from_millis(1);
        assert!(failover.failed(addr(1), no_majority(), later));
        assert_eq!(failover.round_over(later, 0), AfterRound::Pause(RETRY_PAUSE));
        let late = now + NO_MAJORITY_WAIT;
        assert!(!failover.failed(addr(1), no_majority(), late));
        // A round that ends there gives up too, with the tracker's words.
        let mut failover = Failover::new(now, 2);
        assert!(failover.failed(addr(1), no_majority(), now));
        assert_eq!(
            failover.round_over(late, 0),
            AfterRound::Unavailable(Some("no majority".into()))
        );
        // An election on the majority's side keeps the request going.
        let mut failover = Failover::new(now, 2);
        assert!(failover.failed(addr(1), no_majority(), now));
        assert!(failover.failed(addr(2), Outcome::Unavailable("electing".into()), late));
        assert_eq!(failover.round_over(late, 0), AfterRound::Pause(RETRY_PAUSE));
    }

    #[test]
    fn nothing_reachable_is_said_at_once() {
        let now = Instant::now();
        assert_eq!(Failover::new(now, 3).round_over(now, 0), AfterRound::NoTracker);
    }

    #[test]
    fn busy_trackers_are_retried_longer_with_growing_spread_pauses() {
        let now = Instant::now();
        let mut failover = Failover::new(now, 1);
        let mut pauses = Vec::new();
        for _ in 0..7 {
            assert!(failover.failed(addr(1), Outcome::Busy("queue full".into()), now));
            match failover.round_over(now, 255) {
                AfterRound::Pause(p) => pauses.push(p.as_millis()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(pauses, [400, 800, 1600, 3000, 3000, 3000, 3000]);
        assert_eq!(busy_pause(1, 0), Duration::from_millis(200));
        // Busy past the failover budget but within the busy one: still retried.
        let later = now + FAILOVER_BUDGET + Duration::from_secs(1);
        assert!(failover.failed(addr(1), Outcome::Busy("queue full".into()), later));
        assert!(!failover.failed(addr(1), Outcome::Busy("queue full".into()), now + BUSY_BUDGET));
    }

    #[test]
    fn a_tracker_that_breaks_every_connection_ends_the_request() {
        let now = Instant::now();
        let mut failover = Failover::new(now, 2);
        let breaks = (0..10).take_while(|_| failover.failed(addr(1), Outcome::Broken, now)).count();
        assert_eq!(breaks, 5);
    }

    fn outcome() -> impl Strategy<Value = Option<Outcome>> {
        prop_oneof![
            Just(None),
            Just(Some(Outcome::Broken)),
            Just(Some(Outcome::Busy("b".into()))),
            Just(Some(Outcome::Unavailable("u".into()))),
            Just(Some(Outcome::NoMajority("m".into()))),
        ]
    }

    proptest! {
        /// Whatever the trackers answer, a request gives up within the busy budget plus
        /// one pause, every pause is within its bounds, and a round's skipped trackers are
        /// tried again after its pause.
        #[test]
        fn a_request_always_ends_in_time(
            steps in proptest::collection::vec((outcome(), 0u64..3000, 0u8..=255), 1..300),
            n in 1usize..5,
        ) {
            let start = Instant::now();
            let mut now = start;
            let mut failover = Failover::new(start, n);
            for (outcome, ms, jitter) in steps {
                now += Duration::from_millis(ms);
                let retry = match outcome {
                    Some(o) => failover.failed(addr(jitter % 4), o, now),
                    None => true,
                };
                if !retry {
                    break;
                }
                match failover.round_over(now, jitter) {
                    AfterRound::Pause(p) => {
                        prop_assert!(p >= RETRY_PAUSE / 2 && p <= MAX_BUSY_PAUSE);
                        prop_assert!(failover.skipped().is_empty());
                        prop_assert!(now - start < BUSY_BUDGET);
                        now += p;
                    }
                    _ => break,
                }
            }
            prop_assert!(now - start <= BUSY_BUDGET + MAX_BUSY_PAUSE + Duration::from_secs(3));
        }
    }
}

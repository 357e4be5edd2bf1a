//! When a relayed source is punched to again (issue 19), pure: the clock is passed in.
//!
//! A source whose addresses did not answer (and that did not connect back) is punched to
//! and relayed to at once; whichever connection completes its handshake first carries the
//! pieces. A source reached through the relay keeps being punched to in the background
//! (`PunchSchedule`: a few seconds after the first attempt failed, then twice as long each
//! time, at most `MAX_RETRY` apart and `MAX_ATTEMPTS` in all), and moves to the first hole
//! punched. Every attempt is a call through a tracker, which allows each downloader key 60
//! a minute (reversals, punches and relays together): background attempts of all the
//! client's downloads together take at most `UPGRADES_PER_MINUTE` of them
//! (`UpgradeBudget`), so that the calls that open new sources keep most of it.

use std::time::{Duration, Instant};

/// The wait after the first attempt failed.
pub const FIRST_RETRY: Duration = Duration::from_secs(4);
/// The longest wait between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(180);
/// The shortest wait after an attempt the tracker (or this client's budget) refused.
pub const REFUSED_PAUSE: Duration = Duration::from_secs(60);
/// Attempts per source, the first one included (about 20 minutes of trying).
pub const MAX_ATTEMPTS: u32 = 12;
/// Background attempts a minute, all downloads together (a sixth of a tracker's budget).
pub const UPGRADES_PER_MINUTE: f64 = 10.0;
/// Background attempts at once, all downloads together.
pub const UPGRADE_BURST: f64 = 4.0;

/// How a punch attempt ended, without a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PunchOutcome {
    /// Both ends tried, and no connection came within the punch's time.
    NoHole,
    /// No call was passed on (the tracker refused it: over the caller's budget, the peer
    /// not waiting for calls, ...), or this client's upgrade budget was spent.
    Refused,
    /// Nothing to punch to (the peer registered no public address): trying again would not
    /// do better.
    Hopeless,
}

/// When a source is punched to again.
#[derive(Debug, Clone)]
pub struct PunchSchedule {
    /// Attempts started, the one running included.
    attempts: u32,
    /// The last wait given.
    last: Duration,
}

impl Default for PunchSchedule {
    fn default() -> Self {
        Self::new()
    }
}

impl PunchSchedule {
    /// The first attempt is running.
    pub fn new() -> PunchSchedule {
        PunchSchedule { attempts: 1, last: Duration::ZERO }
    }

    /// Attempts started so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The attempt running ended with `outcome`: how long to wait before the next one
    /// (which then counts as started), or `None` when there is to be none.
    pub fn next(&mut self, outcome: PunchOutcome) -> Option<Duration> {
        if outcome == PunchOutcome::Hopeless || self.attempts >= MAX_ATTEMPTS {
            return None;
        }
        let wait = match self.last.is_zero() {
            true => FIRST_RETRY,
            false => (self.last * 2).min(MAX_RETRY),
        };
        let wait = match outcome {
            PunchOutcome::Refused => wait.max(REFUSED_PAUSE),
            _ => wait,
        };
        self.last = wait;
        self.attempts += 1;
        Some(wait)
    }
}

/// The background punch attempts of all of a client's downloads: a token bucket,
/// `UPGRADES_PER_MINUTE` with bursts of `UPGRADE_BURST`.
#[derive(Debug, Clone)]
pub struct UpgradeBudget {
    tokens: f64,
    at: Instant,
}

impl UpgradeBudget {
    pub fn new(now: Instant) -> UpgradeBudget {
        UpgradeBudget { tokens: UPGRADE_BURST, at: now }
    }

    /// Whether one more background attempt may start now (if so, it is counted).
    pub fn allow(&mut self, now: Instant) -> bool {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + secs * UPGRADES_PER_MINUTE / 60.0).min(UPGRADE_BURST);
        self.at = now.max(self.at);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn retries_start_after_a_few_seconds_double_and_stop() {
        let mut schedule = PunchSchedule::new();
        let waits: Vec<u64> = std::iter::from_fn(|| schedule.next(PunchOutcome::NoHole))
            .map(|w| w.as_secs())
            .collect();
        assert_eq!(waits, [4, 8, 16, 32, 64, 128, 180, 180, 180, 180, 180]);
        assert_eq!(schedule.attempts(), MAX_ATTEMPTS);
    }

    #[test]
    fn a_refusal_waits_a_minute_and_nothing_to_punch_to_stops() {
        let mut schedule = PunchSchedule::new();
        assert_eq!(schedule.next(PunchOutcome::Refused), Some(REFUSED_PAUSE));
        assert_eq!(schedule.next(PunchOutcome::NoHole), Some(REFUSED_PAUSE * 2));
        assert_eq!(schedule.next(PunchOutcome::Hopeless), None);
    }

    #[test]
    fn the_budget_lets_a_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut budget = UpgradeBudget::new(t0);
        assert_eq!((0..10).filter(|_| budget.allow(t0)).count(), UPGRADE_BURST as usize);
        assert!(!budget.allow(t0 + Duration::from_secs(5)));
        assert!(budget.allow(t0 + Duration::from_secs(6)));
    }

    fn outcome() -> impl Strategy<Value = PunchOutcome> {
        prop_oneof![
            8 => Just(PunchOutcome::NoHole),
            3 => Just(PunchOutcome::Refused),
            1 => Just(PunchOutcome::Hopeless),
        ]
    }

    proptest! {
        /// Whatever the outcomes: at most `MAX_ATTEMPTS`, waits that never shrink and never
        /// pass `MAX_RETRY`, a refusal followed by a minute at least, and never more than 5
        /// attempts of one source in any minute (the tracker allows 30 per downloader).
        #[test]
        fn the_schedule_is_bounded(outcomes in proptest::collection::vec(outcome(), 1..30)) {
            let mut schedule = PunchSchedule::new();
            let mut starts = vec![Duration::ZERO];
            let mut last = Duration::ZERO;
            for outcome in outcomes {
                let Some(wait) = schedule.next(outcome) else {
                    prop_assert!(
                        outcome == PunchOutcome::Hopeless || schedule.attempts() == MAX_ATTEMPTS
                    );
                    break;
                };
                prop_assert!(wait >= last && wait <= MAX_RETRY);
                if outcome == PunchOutcome::Refused {
                    prop_assert!(wait >= REFUSED_PAUSE);
                }
                last = wait;
                // The attempt itself takes a moment; counted as none, the worst case.
                starts.push(*starts.last().unwrap() + wait);
            }
            prop_assert!(starts.len() as u32 <= MAX_ATTEMPTS);
            prop_assert_eq!(starts.len() as u32, schedule.attempts());
            for (i, t) in starts.iter().enumerate() {
                let in_minute = starts[i..].iter().take_while(|s| **s - *t <= Duration::from_secs(60));
                prop_assert!(in_minute.count() <= 5);
            }
        }

        #[test]
        fn the_budget_never_lets_more_than_burst_plus_rate(
            steps in proptest::collection::vec(0u64..20_000, 1..300),
        ) {
            let t0 = Instant::now();
            let mut budget = UpgradeBudget::new(t0);
            let mut now = t0;
            let mut granted = 0.0;
            for ms in steps {
                now += Duration::from_millis(ms);
                if budget.allow(now) {
                    granted += 1.0;
                }
            }
            let minutes = (now - t0).as_secs_f64() / 60.0;
            prop_assert!(granted <= UPGRADE_BURST + UPGRADES_PER_MINUTE * minutes + 1e-6);
        }
    }
}

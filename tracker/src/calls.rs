//! Connection reversal's meeting point (issue 19): the peers that wait for calls on this
//! tracker (`Request::AwaitCalls`, a long poll on a link of their own), a mailbox of calls
//! for each, and the budget of reversals each caller may ask for (`CallBudget`, pure).
//!
//! Soft state in memory, bounded: at most `MAX_MAILBOXES` keys (a mailbox not polled for
//! `FORGET_AFTER` gives its place), at most `MAX_CALLS_PER_REPLY` calls queued in each, and
//! `MAX_CALLERS` caller budgets. A call is passed on only to a peer waiting now or a moment
//! ago (`PRESENT_FOR`), so a peer that stopped polling is not sent calls it will never read.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use common::message::{PeerCall, MAX_CALLS_PER_REPLY};
use common::PublicKey;

/// Peers with a mailbox here, at most.
pub const MAX_MAILBOXES: usize = 65_536;
/// A mailbox whose peer has not polled for this long is dropped when room is needed.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// A peer between two polls (it polls again at once after each answer) still takes calls
/// for this long after its last poll ended: they wait in its mailbox for the next poll.
const PRESENT_FOR: Duration = Duration::from_secs(3);
/// Reversals one caller may ask for: this many a minute, in bursts of `CALL_BURST`. A
/// downloader joining a flash crowd behind a router asks for a punch and a relay for each
/// of its sources at once (16 sources: 32 calls).
pub const CALLS_PER_MINUTE: f64 = 60.0;
pub const CALL_BURST: f64 = 40.0;
/// Caller budgets kept at most (the fullest, which cost nothing to forget, go first).
pub const MAX_CALLERS: usize = 4096;

/// Why a wait was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// The waiting peers of this tracker and the callers' budgets.
pub struct Calls {
    mailboxes: Mutex<HashMap<PublicKey, Mailbox>>,
    budget: Mutex<CallBudget>,
}

struct Mailbox {
    tx: Sender<PeerCall>,
    rx: Receiver<PeerCall>,
    /// Polls open now.
    waiting: usize,
    /// When a poll last began or ended.
    seen: Instant,
}

impl Default for Calls {
    fn default() -> Calls {
        Calls {
            mailboxes: Mutex::new(HashMap::new()),
            budget: Mutex::new(CallBudget::new(CALLS_PER_MINUTE, CALL_BURST, MAX_CALLERS)),
        }
    }
}

impl Calls {
    /// Waits up to `wait` for calls to the peer that proved `key` (on the calling
    /// connection's thread; no lock is held while waiting), and returns them: none when the
    /// wait ran out, at most `MAX_CALLS_PER_REPLY`.
    pub fn wait(&self, key: PublicKey, wait: Duration) -> Result<Vec<PeerCall>, Full> {
        let rx = {
            let mut mailboxes = self.mailboxes.lock();
            let now = Instant::now();
            if !mailboxes.contains_key(&key) && mailboxes.len() >= MAX_MAILBOXES {
                mailboxes.retain(|_, m| m.waiting > 0 || now - m.seen < FORGET_AFTER);
                if mailboxes.len() >= MAX_MAILBOXES {
                    return Err(Full);
                }
            }
            let mailbox = mailboxes.entry(key).or_insert_with(|| {
                let (tx, rx) = crossbeam_channel::bounded(MAX_CALLS_PER_REPLY);
                Mailbox { tx, rx, waiting: 0, seen: now }
            });
            mailbox.waiting += 1;
            mailbox.seen = now;
            mailbox.rx.clone()
        };
        let mut calls: Vec<PeerCall> = rx.recv_timeout(wait).into_iter().collect();
        calls.extend(rx.try_iter().take(MAX_CALLS_PER_REPLY - calls.len()));
        if let Some(mailbox) = self.mailboxes.lock().get_mut(&key) {
            mailbox.waiting -= 1;
            mailbox.seen = Instant::now();
        }
        Ok(calls)
    }

    /// Puts `call` in the mailbox of the peer that proved `callee`, if it waits for calls
    /// here (now, or a moment ago) and its mailbox has room; whether it did.
    pub fn deliver(&self, callee: &PublicKey, call: PeerCall) -> bool {
        let mailboxes = self.mailboxes.lock();
        let Some(mailbox) = mailboxes.get(callee) else { return false };
        let present = mailbox.waiting > 0 || mailbox.seen.elapsed() < PRESENT_FOR;
        present && mailbox.tx.try_send(call).is_ok()
    }

    /// Whether the peer that proved `key` waits for calls here (now, or a moment ago).
    pub fn is_waiting(&self, key: &PublicKey) -> bool {
        let mailboxes = self.mailboxes.lock();
        mailboxes.get(key).is_some_and(|m| m.waiting > 0 || m.seen.elapsed() < PRESENT_FOR)
    }

    /// Whether the caller that proved `caller` may ask for one more reversal now (and, if
    /// so, spends it).
    pub fn allow(&self, caller: PublicKey) -> bool {
        self.budget.lock().take(caller, Instant::now())
    }
}

/// Per-key token buckets (pure: the clock is passed in): `rate` a minute, bursts of
/// `burst`, at most `max_keys` keys kept; a new key, with the table full, takes the place of
/// the fullest bucket (a full bucket is what a forgotten key gets back anyway).
#[derive(Debug)]
pub struct CallBudget {
    per_sec: f64,
    burst: f64,
    max_keys: usize,
    buckets: HashMap<PublicKey, (f64, Instant)>,
}

impl CallBudget {
    pub fn new(per_minute: f64, burst: f64, max_keys: usize) -> CallBudget {
        CallBudget { per_sec: per_minute / 60.0, burst, max_keys, buckets: HashMap::new() }
    }

    /// Spends one token of `key`'s bucket at `now`; false when it has none.
    pub fn take(&mut self, key: PublicKey, now: Instant) -> bool {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_keys {
            let fullest = self
                .buckets
                .iter()
                .map(|(k, (tokens, at))| (*k, self.refilled(*tokens, *at, now)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(k, _)| k);
            if let Some(fullest) = fullest {
                self.buckets.remove(&fullest);
            }
        }
        let (per_sec, burst) = (self.per_sec, self.burst);
        let (tokens, at) = self.buckets.entry(key).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * per_sec).min(burst);
        *at = now.max(*at);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn refilled(&self, tokens: f64, at: Instant, now: Instant) -> f64 {
        (tokens + now.saturating_duration_since(at).as_secs_f64() * self.per_sec).min(self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::{GroupId, Sha1Digest, UserId};
    use proptest::prelude::*;

    fn call(nonce: u64) -> PeerCall {
        PeerCall {
            from: PublicKey([1; 32]),
            user: UserId::new("leech").unwrap(),
            addrs: vec!["5.0.0.1:7".parse().unwrap()],
            group: GroupId::new("g").unwrap(),
            digest: Sha1Digest::of(b"f"),
            nonce,
            relay: None,
            punch: false,
        }
    }

    #[test]
    fn a_call_reaches_a_waiting_peer_and_no_other() {
        let calls = std::sync::Arc::new(Calls::default());
        let seeder = PublicKey([2; 32]);
        // Nobody waits yet: nothing is passed on.
        assert!(!calls.deliver(&seeder, call(1)));
        let waiter = {
            let calls = std::sync::Arc::clone(&calls);
            std::thread::spawn(move || calls.wait(seeder, Duration::from_secs(30)))
        };
        // Delivered once the wait has begun (retried until then: readiness, no sleep).
        while !calls.deliver(&seeder, call(2)) {
            std::thread::yield_now();
        }
        assert_eq!(waiter.join().unwrap(), Ok(vec![call(2)]));
        assert!(!calls.deliver(&PublicKey([3; 32]), call(3)));
    }

    #[test]
    fn a_wait_without_calls_ends_empty_and_calls_between_polls_wait_for_the_next() {
        let calls = Calls::default();
        let seeder = PublicKey([2; 32]);
        assert_eq!(calls.wait(seeder, Duration::from_millis(10)), Ok(vec![]));
        // Between two polls: kept for the next one, up to the mailbox's size.
        for nonce in 0..20 {
            let taken = calls.deliver(&seeder, call(nonce));
            assert_eq!(taken, (nonce as usize) < MAX_CALLS_PER_REPLY, "call {nonce}");
        }
        let next = calls.wait(seeder, Duration::from_secs(5)).unwrap();
        assert_eq!(next.len(), MAX_CALLS_PER_REPLY);
    }

    #[test]
    fn a_callers_budget_refuses_beyond_its_burst_and_refills() {
        let mut budget = CallBudget::new(30.0, 10.0, 8);
        let (key, t0) = (PublicKey([1; 32]), Instant::now());
        assert_eq!((0..20).filter(|_| budget.take(key, t0)).count(), 10);
        // Two seconds buy one more (30 a minute).
        assert!(budget.take(key, t0 + Duration::from_secs(2)));
        assert!(!budget.take(key, t0 + Duration::from_secs(2)));
        // Another caller has its own.
        assert!(budget.take(PublicKey([2; 32]), t0));
    }

    proptest! {
        #[test]
        fn no_caller_gets_more_than_burst_plus_rate(
            steps in proptest::collection::vec((0u8..12, 0u64..3000), 1..300),
        ) {
            let mut budget = CallBudget::new(30.0, 10.0, 16);
            let t0 = Instant::now();
            let mut now = t0;
            let mut granted: HashMap<u8, u32> = HashMap::new();
            for (key, ms) in steps {
                now += Duration::from_millis(ms);
                if budget.take(PublicKey([key; 32]), now) {
                    *granted.entry(key).or_default() += 1;
                }
            }
            let secs = (now - t0).as_secs_f64();
            for (_, n) in granted {
                prop_assert!(f64::from(n) <= 10.0 + secs / 2.0 + 1e-6);
            }
        }

        #[test]
        fn the_budget_table_stays_bounded(keys in proptest::collection::vec(any::<u8>(), 1..500)) {
            let mut budget = CallBudget::new(30.0, 10.0, 8);
            let now = Instant::now();
            for key in keys {
                budget.take(PublicKey([key; 32]), now);
                prop_assert!(budget.len() <= 8);
            }
        }
    }
}

//! `Waste`, the pure core of the accept loop's cheap refusal (issue 21): per source
//! address, a token bucket of handshakes that were *wasted*, so that one address cannot
//! make the tracker run a thread and a Noise handshake (X25519, at both ends) for each of
//! thousands of connections a second that come to nothing.
//!
//! A wasted handshake is one that spoke and then ended refused (its address at its share
//! of anonymous slots, its key at its cap, every client slot taken, its place taken by a
//! newcomer), or failed, or whose connection closed without a session or an account
//! created (its requests all refused, `busy` included, or none made). Silent connections
//! (not a byte sent) cost no cryptography and are not counted here: the handshake pool
//! gives their places to newcomers. Nothing a tracker's key or a session's key does is
//! counted, and a connection that logs in never is.
//!
//! Each source may waste `burst` handshakes at once, and `per_second` more each second;
//! when its bucket is empty, its connections are closed as soon as they are accepted,
//! before a thread or any cryptography, until the bucket refills. Every source is treated
//! alike, local addresses included (a client behind the same address as a flood shares
//! its budget, as it shares its anonymous slots). A source absent from the table has a
//! full bucket, so a full bucket is forgotten first when the table reaches `max_tracked`
//! sources; past that, an arbitrary entry goes (its source starts again with a full
//! bucket).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// One source's bucket: tokens left as of `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Wasted-handshake budgets by source address (already reduced to its /64 for IPv6).
#[derive(Debug)]
pub struct Waste {
    burst: f64,
    per_second: f64,
    max_tracked: usize,
    buckets: HashMap<IpAddr, Bucket>,
}

impl Waste {
    /// Budgets of `burst` wasted handshakes, refilled at `per_second`, for at most
    /// `max_tracked` sources at once.
    pub fn new(burst: u32, per_second: u32, max_tracked: usize) -> Waste {
        Waste {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_second),
            max_tracked: max_tracked.max(1),
            buckets: HashMap::new(),
        }
    }

    fn tokens(&self, bucket: &Bucket, now: Instant) -> f64 {
        let refilled = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_second;
        (bucket.tokens + refilled).min(self.burst)
    }

    /// Whether `source` may start a handshake now (it has at least one wasted handshake
    /// left in its budget).
    pub fn allows(&self, source: IpAddr, now: Instant) -> bool {
        self.buckets.get(&source).is_none_or(|b| self.tokens(b, now) >= 1.0)
    }

    /// Whether `source` has `n` wasted handshakes left (for tests: nothing spent lately).
    #[cfg(test)]
    pub fn allows_all(&self, source: IpAddr, now: Instant, n: u32) -> bool {
        self.buckets.get(&source).is_none_or(|b| self.tokens(b, now) >= f64::from(n) - 1e-9)
    }

    /// Counts one wasted handshake of `source`.
    pub fn spend(&mut self, source: IpAddr, now: Instant) {
        if let Some(bucket) = self.buckets.get(&source).copied() {
            let tokens = (self.tokens(&bucket, now) - 1.0).max(0.0);
            self.buckets.insert(source, Bucket { tokens, at: now });
            return;
        }
        if self.buckets.len() >= self.max_tracked {
            self.make_room(now);
        }
        self.buckets.insert(source, Bucket { tokens: self.burst - 1.0, at: now });
    }

    /// Forgets full buckets (the same as absent ones); if none is full, an arbitrary one.
    fn make_room(&mut self, now: Instant) {
        let burst = self.burst;
        let per_second = self.per_second;
        self.buckets.retain(|_, b| {
            let refilled = now.saturating_duration_since(b.at).as_secs_f64() * per_second;
            b.tokens + refilled < burst
        });
        if self.buckets.len() >= self.max_tracked {
            if let Some(any) = self.buckets.keys().next().copied() {
                self.buckets.remove(&any);
            }
        }
    }

    /// Sources tracked now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn a_source_wastes_its_burst_then_its_rate_and_no_one_else_is_held() {
        let t0 = Instant::now();
        let mut waste = Waste::new(4, 2, 16);
        for _ in 0..4 {
            assert!(waste.allows(ip(2), t0));
            waste.spend(ip(2), t0);
        }
        assert!(!waste.allows(ip(2), t0), "its burst is spent");
        assert!(waste.allows(ip(3), t0), "another address is not held");
        // Two a second: one more after half a second, none before.
        assert!(!waste.allows(ip(2), t0 + Duration::from_millis(400)));
        assert!(waste.allows(ip(2), t0 + Duration::from_millis(500)));
        waste.spend(ip(2), t0 + Duration::from_millis(500));
        assert!(!waste.allows(ip(2), t0 + Duration::from_millis(600)));
        // Quiet long enough, it has its whole burst again, and no more.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..4 {
            assert!(waste.allows(ip(2), later));
            waste.spend(ip(2), later);
        }
        assert!(!waste.allows(ip(2), later));
    }

    #[test]
    fn full_buckets_are_forgotten_first_when_the_table_is_full() {
        let t0 = Instant::now();
        let mut waste = Waste::new(2, 1, 3);
        // ip 1 empties its bucket; ip 2 and 3 waste one each, and refill by t0 + 2 s.
        waste.spend(ip(1), t0);
        waste.spend(ip(1), t0);
        waste.spend(ip(2), t0);
        waste.spend(ip(3), t0);
        let t1 = t0 + Duration::from_millis(1500);
        waste.spend(ip(4), t1);
        assert_eq!(waste.len(), 2, "the two refilled buckets went, the held one stayed");
        assert!(!waste.allows(ip(1), t0 + Duration::from_millis(900)));
    }

    proptest! {
        /// Whatever the order of events, the table stays within its bound and a source
        /// that never wasted anything is always allowed.
        #[test]
        fn bounded_and_innocent_sources_are_never_held(
            events in proptest::collection::vec((0u32..40, 0u64..300), 1..400),
        ) {
            let max = 16usize;
            let mut waste = Waste::new(5, 3, max);
            let mut at = Instant::now();
            for (source, step_ms) in events {
                at += Duration::from_millis(step_ms);
                prop_assert!(waste.allows(ip(1000), at), "an innocent source is held");
                waste.spend(ip(source), at);
                prop_assert!(waste.len() <= max);
            }
        }

        #[test]
        fn one_source_alone_never_exceeds_burst_plus_rate(
            steps in proptest::collection::vec(0u64..200, 1..500),
        ) {
            let (burst, per_second) = (8u32, 4u32);
            let t0 = Instant::now();
            let mut waste = Waste::new(burst, per_second, 4);
            let mut at = t0;
            let mut spent = 0u32;
            for step_ms in steps {
                at += Duration::from_millis(step_ms);
                while waste.allows(ip(9), at) {
                    waste.spend(ip(9), at);
                    spent += 1;
                }
                let elapsed = at.duration_since(t0).as_secs_f64();
                let bound = f64::from(burst) + elapsed * f64::from(per_second);
                prop_assert!(f64::from(spent) <= bound + 1e-9, "{spent} > {bound}");
            }
        }
    }
}

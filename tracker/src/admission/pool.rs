//! `Pool`, the pure core of admission: slots shared fairly among source addresses, with
//! eviction instead of refusal where that is what keeps a newcomer from being starved.
//!
//! A newcomer is admitted while its address holds fewer than `per_source` members and the
//! pool has room. When its address is at its cap, it takes the place of that address's
//! oldest member if that one is stale (older than `stale_after`: a handshake that should
//! take milliseconds, a connection that should have logged in). When the pool is full, it
//! takes the place of the oldest member of the address holding the most, if that address
//! holds at least two more than the newcomer's, or else of the oldest member of all if it
//! is stale. So neither a few addresses holding many slots, nor many addresses holding
//! silent ones, keep a fresh address out for longer than `stale_after`.
//! Invariant: at most `cap` members in all, and at most `per_source` from one source.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Why a pool refused a newcomer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The newcomer's address holds its share, none of it stale.
    Source,
    /// The pool is full, fairly shared, and none of it stale.
    Pool,
}

/// Members (connection ids) of one kind of slot, by source address.
#[derive(Debug)]
pub struct Pool {
    /// Members at most (may change: see `set_cap`).
    cap: usize,
    per_source: usize,
    stale_after: Duration,
    members: HashMap<u64, (IpAddr, Instant)>,
    by_source: HashMap<IpAddr, BTreeSet<(Instant, u64)>>,
    by_age: BTreeSet<(Instant, u64)>,
}

impl Pool {
    pub fn new(cap: usize, per_source: usize, stale_after: Duration) -> Pool {
        Pool {
            cap,
            per_source,
            stale_after,
            members: HashMap::new(),
            by_source: HashMap::new(),
            by_age: BTreeSet::new(),
        }
    }

    /// Changes the cap (already admitted members stay; evictions make the room).
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    #[cfg(test)]
    pub fn contains(&self, id: u64) -> bool {
        self.members.contains_key(&id)
    }

    /// Members from `source`.
    pub fn count(&self, source: IpAddr) -> usize {
        self.by_source.get(&source).map_or(0, BTreeSet::len)
    }

    /// Whether a newcomer could be admitted now from an address that holds nothing
    /// (for the accept loop, which does not know the next address yet).
    pub fn has_room_for_a_stranger(&self, now: Instant) -> bool {
        self.members.len() < self.cap
            || self.heaviest().is_some_and(|(_, n)| n >= 2)
            || self.by_age.first().is_some_and(|(since, _)| self.is_stale(*since, now))
    }

    /// When the oldest member becomes stale, if there is one.
    pub fn next_stale(&self) -> Option<Instant> {
        self.by_age.first().map(|(since, _)| *since + self.stale_after)
    }

    /// Admits member `id` from `source`, returning the member it replaces, if any.
    pub fn admit(&mut self, id: u64, source: IpAddr, now: Instant) -> Result<Option<u64>, Full> {
        let mine = self.count(source);
        let mut evicted = None;
        if mine >= self.per_source {
            let oldest = self.by_source.get(&source).and_then(|s| s.first().copied());
            match oldest {
                Some((since, old)) if self.is_stale(since, now) => {
                    self.remove(old);
                    evicted = Some(old);
                }
                _ => return Err(Full::Source),
            }
        } else if self.members.len() >= self.cap {
            let mine = self.count(source);
            let heaviest = self.heaviest().filter(|(_, n)| *n >= mine + 2);
            let victim = match heaviest {
                Some((heavy, _)) => self.by_source.get(&heavy).and_then(|s| s.first().copied()),
                None => {
                    self.by_age.first().copied().filter(|(since, _)| self.is_stale(*since, now))
                }
            };
            let Some((_, old)) = victim else { return Err(Full::Pool) };
            self.remove(old);
            evicted = Some(old);
        }
        self.members.insert(id, (source, now));
        self.by_source.entry(source).or_default().insert((now, id));
        self.by_age.insert((now, id));
        Ok(evicted)
    }

    /// The oldest member of the address holding the most, to make room for another kind
    /// of slot.
    pub fn oldest_of_heaviest(&self) -> Option<u64> {
        let (heavy, _) = self.heaviest()?;
        self.by_source.get(&heavy)?.first().map(|(_, id)| *id)
    }

    /// Removes member `id`; `false` if it was not one (left, or evicted).
    pub fn remove(&mut self, id: u64) -> bool {
        let Some((source, since)) = self.members.remove(&id) else { return false };
        if let Some(of_source) = self.by_source.get_mut(&source) {
            of_source.remove(&(since, id));
            if of_source.is_empty() {
                self.by_source.remove(&source);
            }
        }
        self.by_age.remove(&(since, id));
        true
    }

    fn is_stale(&self, since: Instant, now: Instant) -> bool {
        now.saturating_duration_since(since) >= self.stale_after
    }

    /// The address holding the most members, and how many.
    fn heaviest(&self) -> Option<(IpAddr, usize)> {
        self.by_source.iter().map(|(ip, s)| (*ip, s.len())).max_by_key(|(_, n)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    const STALE: Duration = Duration::from_secs(1);

    #[test]
    fn an_address_at_its_cap_replaces_only_its_own_stale_member() {
        let mut pool = Pool::new(100, 2, STALE);
        let t0 = Instant::now();
        assert_eq!(pool.admit(1, ip(1), t0), Ok(None));
        assert_eq!(pool.admit(2, ip(1), t0), Ok(None));
        assert_eq!(pool.admit(3, ip(1), t0), Err(Full::Source));
        assert_eq!(pool.admit(3, ip(2), t0), Ok(None), "another address is not held up");
        assert_eq!(pool.admit(4, ip(1), t0 + STALE), Ok(Some(1)), "the oldest, once stale");
        assert!(!pool.contains(1) && pool.contains(4));
    }

    #[test]
    fn a_full_pool_takes_a_newcomer_from_the_heaviest_address_or_the_stalest() {
        let mut pool = Pool::new(4, 3, STALE);
        let t0 = Instant::now();
        for id in 0..3 {
            pool.admit(id, ip(1), t0).unwrap();
        }
        pool.admit(3, ip(2), t0).unwrap();
        // Full: ip 1 holds 3, a newcomer from ip 3 holds 0: ip 1's oldest goes.
        assert_eq!(pool.admit(10, ip(3), t0), Ok(Some(0)));
        // Now 2, 1, 1: nobody holds two more than ip 4 (0)... ip 1 holds 2: it does.
        assert_eq!(pool.admit(11, ip(4), t0), Ok(Some(1)));
        // 1, 1, 1, 1: fairly shared and fresh: refused; once stale, the oldest goes.
        assert_eq!(pool.admit(12, ip(5), t0), Err(Full::Pool));
        assert_eq!(pool.admit(12, ip(5), t0 + STALE), Ok(Some(2)));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Admit { source: u8, after_ms: u64 },
        Remove { nth: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0u8..6, 0u64..600).prop_map(|(source, after_ms)| Step::Admit { source, after_ms }),
            1 => (0usize..64).prop_map(|nth| Step::Remove { nth }),
        ]
    }

    proptest! {
        /// The caps always hold; a refused newcomer's address holds its share, or the pool
        /// is full with no address holding two more than it and nothing stale; and every
        /// eviction is of a member that was admitted and is now gone.
        #[test]
        fn caps_hold_and_refusals_are_fair(
            cap in 1usize..12, per_source in 1usize..5, steps in proptest::collection::vec(step(), 1..200)
        ) {
            let mut pool = Pool::new(cap, per_source, STALE);
            let mut now = Instant::now();
            let mut live: Vec<u64> = Vec::new();
            for (id, step) in steps.into_iter().enumerate() {
                let id = id as u64;
                match step {
                    Step::Admit { source, after_ms } => {
                        now += Duration::from_millis(after_ms);
                        let source = ip(source);
                        let before: Vec<(IpAddr, usize)> =
                            pool.by_source.iter().map(|(s, m)| (*s, m.len())).collect();
                        let stale = pool.by_age.first().is_some_and(|(t, _)| now - *t >= STALE);
                        let mine = pool.count(source);
                        match pool.admit(id, source, now) {
                            Ok(evicted) => {
                                live.push(id);
                                if let Some(old) = evicted {
                                    prop_assert!(live.contains(&old));
                                    prop_assert!(!pool.contains(old));
                                    live.retain(|l| *l != old);
                                }
                            }
                            Err(Full::Source) => prop_assert!(mine >= per_source),
                            Err(Full::Pool) => {
                                prop_assert!(pool.len() >= cap);
                                prop_assert!(before.iter().all(|(_, n)| *n < mine + 2));
                                prop_assert!(!stale);
                            }
                        }
                    }
                    Step::Remove { nth } => {
                        if !live.is_empty() {
                            let gone = live.remove(nth % live.len());
                            prop_assert!(pool.remove(gone));
                        }
                    }
                }
                prop_assert!(pool.len() <= cap);
                prop_assert_eq!(pool.len(), live.len());
                prop_assert!(pool.by_source.values().all(|s| s.len() <= per_source && !s.is_empty()));
                prop_assert_eq!(pool.by_age.len(), pool.len());
            }
        }
    }
}

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
//!
//! A pool made `evicting_silent` (handshakes) also gives a newcomer the place of a *silent*
//! member, whatever its age: one that has not sent a byte yet (`heard` was not called). A
//! real client sends its first handshake message as soon as it is connected, so it stays
//! silent for a fraction of a round trip; an attacker who holds silent connections, and
//! renews them within every `stale_after`, loses them to each newcomer instead of keeping
//! its address's (or the pool's) handshakes out (issue 21).
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
    /// Whether a silent member may lose its place at any age.
    evict_silent: bool,
    /// Source, admission time, and whether it was heard from.
    members: HashMap<u64, (IpAddr, Instant, bool)>,
    by_source: HashMap<IpAddr, BTreeSet<(Instant, u64)>>,
    by_age: BTreeSet<(Instant, u64)>,
}

impl Pool {
    pub fn new(cap: usize, per_source: usize, stale_after: Duration) -> Pool {
        Pool {
            cap,
            per_source,
            stale_after,
            evict_silent: false,
            members: HashMap::new(),
            by_source: HashMap::new(),
            by_age: BTreeSet::new(),
        }
    }

    /// This pool, giving a newcomer the place of a silent member at any age.
    pub fn evicting_silent(mut self) -> Pool {
        self.evict_silent = true;
        self
    }

    /// Member `id` sent its first bytes: it is no longer silent.
    pub fn heard(&mut self, id: u64) {
        if let Some((_, _, heard)) = self.members.get_mut(&id) {
            *heard = true;
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
            || self.oldest_silent(self.by_age.iter()).is_some()
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
            let own = self.by_source.get(&source);
            let oldest = own.and_then(|s| s.first().copied());
            let victim = own
                .and_then(|s| self.oldest_silent(s.iter()))
                .or(oldest.filter(|(since, _)| self.is_stale(*since, now)));
            match victim {
                Some((_, old)) => {
                    self.remove(old);
                    evicted = Some(old);
                }
                None => return Err(Full::Source),
            }
        } else if self.members.len() >= self.cap {
            let mine = self.count(source);
            let heaviest = self.heaviest().filter(|(_, n)| *n >= mine + 2);
            let victim = match heaviest {
                Some((heavy, _)) => self.by_source.get(&heavy).and_then(|s| s.first().copied()),
                None => self.oldest_silent(self.by_age.iter()).or_else(|| {
                    self.by_age.first().copied().filter(|(since, _)| self.is_stale(*since, now))
                }),
            };
            let Some((_, old)) = victim else { return Err(Full::Pool) };
            self.remove(old);
            evicted = Some(old);
        }
        self.members.insert(id, (source, now, false));
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
        let Some((source, since, _)) = self.members.remove(&id) else { return false };
        if let Some(of_source) = self.by_source.get_mut(&source) {
            of_source.remove(&(since, id));
            if of_source.is_empty() {
                self.by_source.remove(&source);
            }
        }
        self.by_age.remove(&(since, id));
        true
    }

    /// The first silent member of `members` (in age order), if silent members may go.
    fn oldest_silent<'a>(
        &self,
        mut members: impl Iterator<Item = &'a (Instant, u64)>,
    ) -> Option<(Instant, u64)> {
        if !self.evict_silent {
            return None;
        }
        members.find(|(_, id)| self.members.get(id).is_some_and(|m| !m.2)).copied()
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

    #[test]
    fn a_silent_member_gives_its_place_to_a_newcomer_at_any_age() {
        let mut pool = Pool::new(3, 2, STALE).evicting_silent();
        let t0 = Instant::now();
        pool.admit(1, ip(1), t0).unwrap();
        pool.admit(2, ip(1), t0).unwrap();
        pool.heard(1);
        // Its address at its cap: the silent one goes, fresh as it is; the heard one stays.
        assert_eq!(pool.admit(3, ip(1), t0), Ok(Some(2)));
        pool.heard(3);
        assert_eq!(pool.admit(4, ip(1), t0), Err(Full::Source));
        // A full pool, fairly shared: a silent member of another address goes.
        let mut pool = Pool::new(2, 2, STALE).evicting_silent();
        pool.admit(1, ip(1), t0).unwrap();
        pool.heard(1);
        pool.admit(2, ip(2), t0).unwrap();
        assert!(pool.has_room_for_a_stranger(t0));
        assert_eq!(pool.admit(3, ip(3), t0), Ok(Some(2)));
        // A pool that is not `evicting_silent` waits for staleness, as before.
        let mut plain = Pool::new(100, 1, STALE);
        plain.admit(1, ip(1), t0).unwrap();
        assert_eq!(plain.admit(2, ip(1), t0), Err(Full::Source));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Admit { source: u8, after_ms: u64 },
        Remove { nth: usize },
        Heard { nth: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0u8..6, 0u64..600).prop_map(|(source, after_ms)| Step::Admit { source, after_ms }),
            1 => (0usize..64).prop_map(|nth| Step::Remove { nth }),
            1 => (0usize..64).prop_map(|nth| Step::Heard { nth }),
        ]
    }

    proptest! {
        /// The caps always hold; a refused newcomer's address holds its share, or the pool
        /// is full with no address holding two more than it and nothing stale; and every
        /// eviction is of a member that was admitted and is now gone.
        #[test]
        fn caps_hold_and_refusals_are_fair(
            cap in 1usize..12, per_source in 1usize..5, steps in proptest::collection::vec(step(), 1..200),
            evict_silent in any::<bool>(),
        ) {
            let mut pool = Pool::new(cap, per_source, STALE);
            if evict_silent {
                pool = pool.evicting_silent();
            }
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
                        let silent = |pool: &Pool, from: Option<IpAddr>| {
                            pool.members.values().any(|(s, _, heard)| !heard && from.is_none_or(|f| f == *s))
                        };
                        let silent_here = silent(&pool, Some(source));
                        let silent_anywhere = silent(&pool, None);
                        match pool.admit(id, source, now) {
                            Ok(evicted) => {
                                live.push(id);
                                if let Some(old) = evicted {
                                    prop_assert!(live.contains(&old));
                                    prop_assert!(!pool.contains(old));
                                    live.retain(|l| *l != old);
                                }
                            }
                            Err(Full::Source) => {
                                prop_assert!(mine >= per_source);
                                prop_assert!(!(evict_silent && silent_here));
                            }
                            Err(Full::Pool) => {
                                prop_assert!(pool.len() >= cap);
                                prop_assert!(!(evict_silent && silent_anywhere));
                                prop_assert!(before.iter().all(|(_, n)| *n < mine + 2));
                                prop_assert!(!stale);
                            }
                        }
                    }
                    Step::Heard { nth } => {
                        if !live.is_empty() {
                            pool.heard(live[nth % live.len()]);
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

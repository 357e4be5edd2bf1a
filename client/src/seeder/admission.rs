//! Who may hold one of a seeder's connections, and for how long (issue 13: strangers
//! without a ticket must not be able to take every slot).
//!
//! A connection is *pending* from `accept` until its `Hello` carried a ticket the seeder
//! accepted: pending connections have a pool of their own (`MAX_PENDING`), and once that
//! pool is half full an address (IPv6: a /64) may hold at most
//! `MAX_PENDING_PER_IP_WHEN_BUSY` of them (so a flash crowd on one host still gets in at
//! once); the accept loop ends any still pending after `ADMISSION_DEADLINE`. The pool is
//! shared fairly (issue 21: five addresses renewing silent connections filled it): an
//! address at its share replaces its own oldest connection once that one is stale
//! (`STALE_PENDING`), and a newcomer to a full pool replaces the oldest connection of the
//! address holding the most, if that address holds at least two more than the newcomer's,
//! or else the stalest of all; a replaced connection is shut down. An admitted
//! connection takes one of `MAX_ADMITTED` slots, at most `MAX_ADMITTED_PER_KEY` per
//! downloader key (a downloader needs one connection to a seeder per file) and at most
//! `MAX_ADMITTED_PER_ADDRESS` per source address (IPv6: per /64), so that neither one
//! member's many sessions nor one host's many keys take every serving slot (issue 21).
//! Every slot is a guard released on drop.
//!
//! Invariant: at most `MAX_PENDING` pending connections; at most `MAX_ADMITTED` serving
//! slots, `MAX_ADMITTED_PER_KEY` of one key and `MAX_ADMITTED_PER_ADDRESS` of one source;
//! the tables hold only connections, keys and sources that hold a slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use common::PublicKey;

/// Connections between `accept` and an accepted ticket.
pub const MAX_PENDING: usize = 64;
/// Pending connections one address may hold once the pending pool is half full.
pub const MAX_PENDING_PER_IP_WHEN_BUSY: usize = 8;
/// A pending connection this old may lose its place to a newcomer: a downloader's
/// handshake and `Hello` take a round trip, its ticket's check one more to the tracker.
pub const STALE_PENDING: Duration = Duration::from_secs(2);
/// Connections serving pieces.
pub const MAX_ADMITTED: usize = 64;
/// Connections serving pieces to one downloader key.
pub const MAX_ADMITTED_PER_KEY: usize = 4;
/// Connections serving pieces to one source address (IPv6: one /64): half of them, so an
/// attacker needs two addresses, each with 8 member keys, to hold every slot, while a
/// swarm of 33 peers on one host (`scripts/swarm.sh flash --peers 33`) still fits.
pub const MAX_ADMITTED_PER_ADDRESS: usize = MAX_ADMITTED / 2;
/// How long a connection may stay pending: the handshake, the `Hello` and its ticket's
/// check, in all.
pub const ADMISSION_DEADLINE: Duration = Duration::from_secs(10);

/// Why a connection gets no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Pending,
    PendingFromAddress,
    Admitted,
    AdmittedForKey,
    AdmittedFromAddress,
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Full::Pending => "too many connections without a ticket yet",
            Full::PendingFromAddress => "too many connections without a ticket from this address",
            Full::Admitted => "every slot is serving",
            Full::AdmittedForKey => "this downloader already has its connections",
            Full::AdmittedFromAddress => "this address already has its share of the slots",
        })
    }
}

#[derive(Debug, Default)]
struct Counts {
    /// Pending connections by id: their source and since when (at most `MAX_PENDING`,
    /// so scanning them is cheap).
    pending: HashMap<u64, (IpAddr, Instant)>,
    admitted: usize,
    admitted_by_key: HashMap<PublicKey, usize>,
    admitted_by_source: HashMap<IpAddr, usize>,
}

/// The bookkeeping, shared by the accept loop and the connections.
#[derive(Debug, Default)]
pub struct SeederAdmission {
    counts: Mutex<Counts>,
}

/// A pending connection's slot (given back on drop, unless another took its place).
#[derive(Debug)]
pub struct Pending {
    admission: Arc<SeederAdmission>,
    id: u64,
    ip: IpAddr,
}

/// An admitted connection's slot.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<SeederAdmission>,
    key: PublicKey,
    source: IpAddr,
}

/// The address a connection counts under (IPv6 by its /64), as every per-address limit
/// of trackers and seeders counts it.
pub use common::peer_addr::source;

impl SeederAdmission {
    /// A pending slot for connection `id` from `ip` at `now`, and the connection whose
    /// place it took (to be shut down), or why there is none.
    pub fn start(
        self: &Arc<Self>,
        id: u64,
        ip: IpAddr,
        now: Instant,
    ) -> Result<(Pending, Option<u64>), Full> {
        let from = source(ip);
        let mut counts = self.counts.lock();
        let pending = &mut counts.pending;
        let mine = count(pending, from);
        let stale = |since: Instant| now.saturating_duration_since(since) >= STALE_PENDING;
        let victim = if pending.len() >= MAX_PENDING / 2 && mine >= MAX_PENDING_PER_IP_WHEN_BUSY {
            let own = oldest(pending, |s| s == from).filter(|(_, since)| stale(*since));
            Some(own.ok_or(Full::PendingFromAddress)?)
        } else if pending.len() >= MAX_PENDING {
            let heaviest = heaviest(pending).filter(|(_, n)| *n >= mine + 2);
            let replaced = match heaviest {
                Some((heavy, _)) => oldest(pending, |s| s == heavy),
                None => oldest(pending, |_| true).filter(|(_, since)| stale(*since)),
            };
            Some(replaced.ok_or(Full::Pending)?)
        } else {
            None
        };
        let evicted = victim.map(|(old, _)| old);
        if let Some(old) = evicted {
            pending.remove(&old);
        }
        pending.insert(id, (from, now));
        Ok((Pending { admission: Arc::clone(self), id, ip }, evicted))
    }
}

/// Pending connections from `from`.
fn count(pending: &HashMap<u64, (IpAddr, Instant)>, from: IpAddr) -> usize {
    pending.values().filter(|(s, _)| *s == from).count()
}

/// The oldest pending connection from a source `which` accepts, and since when.
fn oldest(
    pending: &HashMap<u64, (IpAddr, Instant)>,
    which: impl Fn(IpAddr) -> bool,
) -> Option<(u64, Instant)> {
    let of_source = pending.iter().filter(|(_, (s, _))| which(*s));
    of_source.min_by_key(|(id, (_, since))| (*since, **id)).map(|(id, (_, since))| (*id, *since))
}

/// The source holding the most pending connections, and how many.
fn heaviest(pending: &HashMap<u64, (IpAddr, Instant)>) -> Option<(IpAddr, usize)> {
    let mut by_source: HashMap<IpAddr, usize> = HashMap::new();
    for (s, _) in pending.values() {
        *by_source.entry(*s).or_default() += 1;
    }
    by_source.into_iter().max_by_key(|(s, n)| (*n, *s))
}

impl Pending {
    /// Trades the pending slot for a serving one, for the downloader that proved `key`.
    pub fn admit(self, key: PublicKey) -> Result<Admitted, Full> {
        let admission = Arc::clone(&self.admission);
        let self_ip = self.ip;
        drop(self);
        let mut counts = admission.counts.lock();
        if counts.admitted >= MAX_ADMITTED {
            return Err(Full::Admitted);
        }
        if counts.admitted_by_key.get(&key).copied().unwrap_or(0) >= MAX_ADMITTED_PER_KEY {
            return Err(Full::AdmittedForKey);
        }
        let source = source(self_ip);
        if counts.admitted_by_source.get(&source).copied().unwrap_or(0) >= MAX_ADMITTED_PER_ADDRESS
        {
            return Err(Full::AdmittedFromAddress);
        }
        counts.admitted += 1;
        *counts.admitted_by_key.entry(key).or_default() += 1;
        *counts.admitted_by_source.entry(source).or_default() += 1;
        drop(counts);
        Ok(Admitted { admission, key, source })
    }
}

/// Gives back one of `key`'s places in `counts`, forgetting a key that holds none.
fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Gone already if a newcomer took its place.
        self.admission.counts.lock().pending.remove(&self.id);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.admission.counts.lock();
        counts.admitted -= 1;
        release(&mut counts.admitted_by_key, &self.key);
        release(&mut counts.admitted_by_source, &self.source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    /// A pending slot for a new connection from `ip`, now (nothing is stale).
    fn start(a: &Arc<SeederAdmission>, ip: IpAddr) -> Result<Pending, Full> {
        static NEXT: AtomicU64 = AtomicU64::new(1_000_000);
        a.start(NEXT.fetch_add(1, Ordering::Relaxed), ip, Instant::now()).map(|(p, _)| p)
    }

    /// Issue 21: the first address took half the pool and four others the rest; a fifth
    /// still gets in, each time in the place of the heaviest address's oldest connection,
    /// until that one holds no more than the others.
    #[test]
    fn a_full_pending_pool_gives_a_newcomer_the_place_of_the_heaviest_addresss_oldest() {
        let a = Arc::new(SeederAdmission::default());
        let t0 = Instant::now();
        let mut held = Vec::new();
        for id in 0..32 {
            held.push(a.start(id, ip(1), t0 + Duration::from_millis(id)).unwrap().0);
        }
        for (n, id) in (32..64).enumerate() {
            held.push(a.start(id, ip(2 + (n / 8) as u8), t0).unwrap().0);
        }
        assert_eq!(a.counts.lock().pending.len(), MAX_PENDING);
        let (_newcomer, evicted) = a.start(100, ip(9), t0).unwrap();
        assert_eq!(evicted, Some(0), "the first address's oldest");
        // Newcomers from fresh addresses keep taking the first address's places until it
        // holds no more than the others (8).
        for n in 0..23u8 {
            let (slot, evicted) = a.start(200 + u64::from(n), ip(100 + n), t0).unwrap();
            assert!(evicted.is_some_and(|id| id < 32), "{evicted:?}");
            held.push(slot);
        }
        assert_eq!(count(&a.counts.lock().pending, ip(1)), MAX_PENDING_PER_IP_WHEN_BUSY);
        assert_eq!(a.counts.lock().pending.len(), MAX_PENDING);
    }

    #[test]
    fn a_full_pool_fairly_shared_gives_way_only_to_staleness() {
        let a = Arc::new(SeederAdmission::default());
        let t0 = Instant::now();
        let _held: Vec<_> = (0..MAX_PENDING as u64)
            .map(|id| a.start(id, ip(id as u8), t0 + Duration::from_millis(id)).unwrap())
            .collect();
        assert_eq!(a.start(100, ip(200), t0).unwrap_err(), Full::Pending);
        let (_late, evicted) = a.start(100, ip(200), t0 + STALE_PENDING).unwrap();
        assert_eq!(evicted, Some(0), "the stalest");
    }

    #[test]
    fn an_address_at_its_share_replaces_only_its_own_stale_connection() {
        let a = Arc::new(SeederAdmission::default());
        let t0 = Instant::now();
        let held: Vec<_> = (0..32).map(|id| a.start(id, ip(1), t0).unwrap()).collect();
        assert_eq!(a.start(40, ip(1), t0).unwrap_err(), Full::PendingFromAddress);
        let (_slot, evicted) = a.start(40, ip(1), t0 + STALE_PENDING).unwrap();
        assert_eq!(evicted, Some(0));
        // The evicted connection's guard, dropped later, frees nothing more.
        drop(held);
        assert_eq!(a.counts.lock().pending.len(), 1);
    }

    proptest! {
        /// Whatever connections come and go, the pool never holds more than
        /// `MAX_PENDING`, and a refused newcomer always had a reason: its address at its
        /// share with nothing stale, or a full pool fairly shared with nothing stale.
        #[test]
        fn the_pending_pool_stays_bounded_and_refuses_only_with_a_reason(
            steps in proptest::collection::vec((0u8..6, 0u64..800, any::<bool>()), 1..300)
        ) {
            let a = Arc::new(SeederAdmission::default());
            let mut now = Instant::now();
            let mut held: Vec<Pending> = Vec::new();
            for (id, (source, ms, leave)) in steps.into_iter().enumerate() {
                now += Duration::from_millis(ms);
                if leave && !held.is_empty() {
                    held.remove(id % held.len());
                    continue;
                }
                let before = a.counts.lock().pending.clone();
                match a.start(id as u64, ip(source), now) {
                    Ok((slot, _)) => held.push(slot),
                    Err(_) => {
                        let stale =
                            |t: &Instant| now.saturating_duration_since(*t) >= STALE_PENDING;
                        let mine = count(&before, ip(source));
                        let own_stale =
                            before.values().any(|(s, t)| *s == ip(source) && stale(t));
                        let at_share = before.len() >= MAX_PENDING / 2
                            && mine >= MAX_PENDING_PER_IP_WHEN_BUSY;
                        let fair_and_fresh = before.len() >= MAX_PENDING
                            && heaviest(&before).is_none_or(|(_, n)| n < mine + 2)
                            && !before.values().any(|(_, t)| stale(t));
                        prop_assert!((at_share && !own_stale) || fair_and_fresh);
                    }
                }
                prop_assert!(a.counts.lock().pending.len() <= MAX_PENDING);
            }
        }
    }

    #[test]
    fn one_address_takes_at_most_half_of_the_pending_pool() {
        let a = Arc::new(SeederAdmission::default());
        let mut mine = Vec::new();
        while let Ok(slot) = start(&a, ip(1)) {
            mine.push(slot);
        }
        assert_eq!(mine.len(), MAX_PENDING / 2);
        // Others still get in, up to their own share once the pool is busy.
        let others: Vec<_> = (0..MAX_PENDING_PER_IP_WHEN_BUSY).map(|_| start(&a, ip(2))).collect();
        assert!(others.iter().all(Result::is_ok));
        assert_eq!(start(&a, ip(2)).unwrap_err(), Full::PendingFromAddress);
        drop(mine);
        assert!(start(&a, ip(2)).is_ok(), "released on drop");
    }

    #[test]
    fn a_quiet_seeder_takes_a_burst_from_one_host() {
        let a = Arc::new(SeederAdmission::default());
        let burst: Vec<_> = (0..MAX_PENDING / 2).map(|_| start(&a, ip(1))).collect();
        assert!(burst.iter().all(Result::is_ok));
    }

    #[test]
    fn one_address_holds_at_most_its_share_of_serving_slots_and_an_ipv6_host_counts_by_64() {
        let a = Arc::new(SeederAdmission::default());
        let key = |n: usize| PublicKey([n as u8; 32]);
        let held: Vec<Admitted> = (0..MAX_ADMITTED_PER_ADDRESS)
            .map(|n| start(&a, ip(1)).unwrap().admit(key(n / MAX_ADMITTED_PER_KEY)).unwrap())
            .collect();
        assert_eq!(
            start(&a, ip(1)).unwrap().admit(key(250)).unwrap_err(),
            Full::AdmittedFromAddress
        );
        assert!(start(&a, ip(2)).unwrap().admit(key(250)).is_ok(), "another address gets in");
        drop(held);
        assert!(start(&a, ip(1)).unwrap().admit(key(251)).is_ok(), "released on drop");
        // Two addresses of one /64 are one source; another /64 is another.
        let v6 = |last: u16, net: u16| IpAddr::from([0x2001, 0xdb8, 0, net, 0, 0, 0, last]);
        let mine: Vec<Admitted> = (0..MAX_ADMITTED_PER_ADDRESS)
            .map(|n| start(&a, v6(n as u16, 1)).unwrap().admit(key(100 + n / 4)).unwrap())
            .collect();
        assert_eq!(
            start(&a, v6(999, 1)).unwrap().admit(key(252)).unwrap_err(),
            Full::AdmittedFromAddress
        );
        assert!(start(&a, v6(999, 2)).unwrap().admit(key(252)).is_ok());
        drop(mine);
        assert!(a.counts.lock().admitted_by_source.len() <= 2, "only holders are kept");
    }

    #[test]
    fn serving_slots_are_capped_in_all_and_per_key() {
        let a = Arc::new(SeederAdmission::default());
        let key = PublicKey([7; 32]);
        let mut held: Vec<Admitted> = (0..MAX_ADMITTED_PER_KEY)
            .map(|n| start(&a, ip(n as u8)).unwrap().admit(key).unwrap())
            .collect();
        assert_eq!(start(&a, ip(1)).unwrap().admit(key).unwrap_err(), Full::AdmittedForKey);
        for n in MAX_ADMITTED_PER_KEY..MAX_ADMITTED {
            let other = PublicKey([n as u8 + 100; 32]);
            held.push(start(&a, ip(10 + (n / 16) as u8)).unwrap().admit(other).unwrap());
        }
        let late = start(&a, ip(3)).unwrap();
        assert_eq!(late.admit(PublicKey([200; 32])).unwrap_err(), Full::Admitted);
        assert!(a.counts.lock().pending.is_empty(), "a refused admission frees its pending slot");
        held.pop();
        assert!(start(&a, ip(3)).unwrap().admit(PublicKey([200; 32])).is_ok());
    }
}

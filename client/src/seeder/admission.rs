//! Who may hold one of a seeder's connections, and for how long (issue 13: strangers
//! without a ticket must not be able to take every slot).
//!
//! A connection is *pending* from `accept` until its `Hello` carried a ticket the seeder
//! accepted: pending connections have a pool of their own (`MAX_PENDING`), and once that
//! pool is half full an address may hold at most `MAX_PENDING_PER_IP_WHEN_BUSY` of them
//! (so one address can take at most half, while a flash crowd on one host still gets in
//! at once); the accept loop ends any still pending after `ADMISSION_DEADLINE`. An admitted
//! connection takes one of `MAX_ADMITTED` slots, at most `MAX_ADMITTED_PER_KEY` per
//! downloader key (a downloader needs one connection to a seeder per file) and at most
//! `MAX_ADMITTED_PER_ADDRESS` per source address (IPv6: per /64), so that neither one
//! member's many sessions nor one host's many keys take every serving slot (issue 21).
//! Every slot is a guard released on drop.
//!
//! Invariant: at most `MAX_ADMITTED` serving slots, `MAX_ADMITTED_PER_KEY` of one key and
//! `MAX_ADMITTED_PER_ADDRESS` of one source; the tables hold only keys and sources that
//! hold a slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use common::PublicKey;

/// Connections between `accept` and an accepted ticket.
pub const MAX_PENDING: usize = 64;
/// Pending connections one address may hold once the pending pool is half full.
pub const MAX_PENDING_PER_IP_WHEN_BUSY: usize = 8;
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
    pending: usize,
    pending_by_ip: HashMap<IpAddr, usize>,
    admitted: usize,
    admitted_by_key: HashMap<PublicKey, usize>,
    admitted_by_source: HashMap<IpAddr, usize>,
}

/// The bookkeeping, shared by the accept loop and the connections.
#[derive(Debug, Default)]
pub struct SeederAdmission {
    counts: Mutex<Counts>,
}

/// A pending connection's slot.
#[derive(Debug)]
pub struct Pending {
    admission: Arc<SeederAdmission>,
    ip: IpAddr,
}

/// An admitted connection's slot.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<SeederAdmission>,
    key: PublicKey,
    source: IpAddr,
}

/// The address a connection counts under: IPv4 as it is, IPv6 by its /64 (which one host
/// usually holds in full).
pub fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl SeederAdmission {
    /// A pending slot for a connection from `ip`, or why there is none.
    pub fn start(self: &Arc<Self>, ip: IpAddr) -> Result<Pending, Full> {
        let mut counts = self.counts.lock();
        if counts.pending >= MAX_PENDING {
            return Err(Full::Pending);
        }
        let mine = counts.pending_by_ip.get(&ip).copied().unwrap_or(0);
        if counts.pending >= MAX_PENDING / 2 && mine >= MAX_PENDING_PER_IP_WHEN_BUSY {
            return Err(Full::PendingFromAddress);
        }
        counts.pending += 1;
        *counts.pending_by_ip.entry(ip).or_default() += 1;
        Ok(Pending { admission: Arc::clone(self), ip })
    }
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
        let mut counts = self.admission.counts.lock();
        counts.pending -= 1;
        release(&mut counts.pending_by_ip, &self.ip);
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

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn one_address_takes_at_most_half_of_the_pending_pool() {
        let a = Arc::new(SeederAdmission::default());
        let mut mine = Vec::new();
        while let Ok(slot) = a.start(ip(1)) {
            mine.push(slot);
        }
        assert_eq!(mine.len(), MAX_PENDING / 2);
        // Others still get in, up to their own share once the pool is busy.
        let others: Vec<_> = (0..MAX_PENDING_PER_IP_WHEN_BUSY).map(|_| a.start(ip(2))).collect();
        assert!(others.iter().all(Result::is_ok));
        assert_eq!(a.start(ip(2)).unwrap_err(), Full::PendingFromAddress);
        drop(mine);
        assert!(a.start(ip(2)).is_ok(), "released on drop");
    }

    #[test]
    fn a_quiet_seeder_takes_a_burst_from_one_host() {
        let a = Arc::new(SeederAdmission::default());
        let burst: Vec<_> = (0..MAX_PENDING / 2).map(|_| a.start(ip(1))).collect();
        assert!(burst.iter().all(Result::is_ok));
    }

    #[test]
    fn one_address_holds_at_most_its_share_of_serving_slots_and_an_ipv6_host_counts_by_64() {
        let a = Arc::new(SeederAdmission::default());
        let key = |n: usize| PublicKey([n as u8; 32]);
        let held: Vec<Admitted> = (0..MAX_ADMITTED_PER_ADDRESS)
            .map(|n| a.start(ip(1)).unwrap().admit(key(n / MAX_ADMITTED_PER_KEY)).unwrap())
            .collect();
        assert_eq!(a.start(ip(1)).unwrap().admit(key(250)).unwrap_err(), Full::AdmittedFromAddress);
        assert!(a.start(ip(2)).unwrap().admit(key(250)).is_ok(), "another address gets in");
        drop(held);
        assert!(a.start(ip(1)).unwrap().admit(key(251)).is_ok(), "released on drop");
        // Two addresses of one /64 are one source; another /64 is another.
        let v6 = |last: u16, net: u16| IpAddr::from([0x2001, 0xdb8, 0, net, 0, 0, 0, last]);
        let mine: Vec<Admitted> = (0..MAX_ADMITTED_PER_ADDRESS)
            .map(|n| a.start(v6(n as u16, 1)).unwrap().admit(key(100 + n / 4)).unwrap())
            .collect();
        assert_eq!(
            a.start(v6(999, 1)).unwrap().admit(key(252)).unwrap_err(),
            Full::AdmittedFromAddress
        );
        assert!(a.start(v6(999, 2)).unwrap().admit(key(252)).is_ok());
        drop(mine);
        assert!(a.counts.lock().admitted_by_source.len() <= 2, "only holders are kept");
    }

    #[test]
    fn serving_slots_are_capped_in_all_and_per_key() {
        let a = Arc::new(SeederAdmission::default());
        let key = PublicKey([7; 32]);
        let mut held: Vec<Admitted> = (0..MAX_ADMITTED_PER_KEY)
            .map(|n| a.start(ip(n as u8)).unwrap().admit(key).unwrap())
            .collect();
        assert_eq!(a.start(ip(1)).unwrap().admit(key).unwrap_err(), Full::AdmittedForKey);
        for n in MAX_ADMITTED_PER_KEY..MAX_ADMITTED {
            let other = PublicKey([n as u8 + 100; 32]);
            held.push(a.start(ip(10 + (n / 16) as u8)).unwrap().admit(other).unwrap());
        }
        let late = a.start(ip(3)).unwrap();
        assert_eq!(late.admit(PublicKey([200; 32])).unwrap_err(), Full::Admitted);
        assert_eq!(a.counts.lock().pending, 0, "a refused admission frees its pending slot");
        held.pop();
        assert!(a.start(ip(3)).unwrap().admit(PublicKey([200; 32])).is_ok());
    }
}

//! Who may hold one of a seeder's connections, and for how long (issue 13: strangers
//! without a ticket must not be able to take every slot).
//!
//! A connection is *pending* from `accept` until its `Hello` carried a ticket the seeder
//! accepted: pending connections have a pool of their own (`MAX_PENDING`), and once that
//! pool is half full an address may hold at most `MAX_PENDING_PER_IP_WHEN_BUSY` of them
//! (so one address can take at most half, while a flash crowd on one host still gets in
//! at once); the accept loop ends any still pending after `ADMISSION_DEADLINE`. An admitted
//! connection takes one of `MAX_ADMITTED` slots, at most `MAX_ADMITTED_PER_KEY` per
//! downloader key (a downloader needs one connection to a seeder per file). Every slot is
//! a guard released on drop.

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
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Full::Pending => "too many connections without a ticket yet",
            Full::PendingFromAddress => "too many connections without a ticket from this address",
            Full::Admitted => "every slot is serving",
            Full::AdmittedForKey => "this downloader already has its connections",
        })
    }
}

#[derive(Debug, Default)]
struct Counts {
    pending: usize,
    pending_by_ip: HashMap<IpAddr, usize>,
    admitted: usize,
    admitted_by_key: HashMap<PublicKey, usize>,
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
        drop(self);
        let mut counts = admission.counts.lock();
        if counts.admitted >= MAX_ADMITTED {
            return Err(Full::Admitted);
        }
        if counts.admitted_by_key.get(&key).copied().unwrap_or(0) >= MAX_ADMITTED_PER_KEY {
            return Err(Full::AdmittedForKey);
        }
        counts.admitted += 1;
        *counts.admitted_by_key.entry(key).or_default() += 1;
        drop(counts);
        Ok(Admitted { admission, key })
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
    fn serving_slots_are_capped_in_all_and_per_key() {
        let a = Arc::new(SeederAdmission::default());
        let key = PublicKey([7; 32]);
        let mut held: Vec<Admitted> = (0..MAX_ADMITTED_PER_KEY)
            .map(|n| a.start(ip(n as u8)).unwrap().admit(key).unwrap())
            .collect();
        assert_eq!(a.start(ip(1)).unwrap().admit(key).unwrap_err(), Full::AdmittedForKey);
        for n in MAX_ADMITTED_PER_KEY..MAX_ADMITTED {
            let other = PublicKey([n as u8 + 100; 32]);
            held.push(a.start(ip(9)).unwrap().admit(other).unwrap());
        }
        let late = a.start(ip(3)).unwrap();
        assert_eq!(late.admit(PublicKey([200; 32])).unwrap_err(), Full::Admitted);
        assert_eq!(a.counts.lock().pending, 0, "a refused admission frees its pending slot");
        held.pop();
        assert!(a.start(ip(3)).unwrap().admit(PublicKey([200; 32])).is_ok());
    }
}

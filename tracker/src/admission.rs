//! Who gets a connection slot, and when.
//!
//! A connection first holds a *handshake* slot: a few per source IP and a bounded number in
//! all, with a separate pool for connections from the IPs `tracker_info.txt` lists, so that
//! strangers stalling their handshakes can neither exhaust threads nor keep the other
//! trackers out. Only once the handshake has proven a key does the connection take a
//! *client* slot (`--max-connections`) or, if the key is a listed tracker's, one of the
//! `TRACKER_SLOTS` kept for trackers: a tracker whose client slots are all taken still
//! answers its peers, and a busy tracker never looks dead to them.
//!
//! Every slot is released when its guard is dropped. While every stranger's handshake slot
//! is taken, the accept loop waits a moment before accepting (`wait_for_handshake_room`):
//! a burst of clients reconnecting at once queues in the kernel's accept queue rather than
//! being accepted and closed.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

/// Connections kept for the other trackers beyond the client slots: for each of up to
/// four others, its Raft stream and its forwarding connections
/// (`cluster::MAX_FORWARD_CONNECTIONS`).
pub const TRACKER_SLOTS: usize = 64;
/// Handshakes in progress from one IP (trackers' IPs excepted).
pub const MAX_HANDSHAKES_PER_IP: usize = 8;
/// Handshakes in progress in all, from IPs that are not trackers'.
pub const MAX_HANDSHAKES: usize = 64;

/// File descriptors a live connection holds (its socket), and one more while its
/// handshake runs (the secure channel takes a handle of its own).
pub const FDS_PER_CONNECTION: u64 = 1;
/// File descriptors kept for everything else: the listener, the database and its journal,
/// links to the other trackers, logs.
pub const RESERVED_FDS: u64 = 128;

/// Raises this process's open-files limit to its hard limit (connections are files), and
/// returns the limit now in force, if known.
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return limit.maximum.or(Some(u64::MAX)),
            Err(e) => log::warn!("cannot raise the open-files limit to {:?}: {e}", limit.maximum),
        }
    }
    limit.current.or(Some(u64::MAX))
}

/// The client connections a process with `open_files` file descriptors can hold beside the
/// handshakes and the trackers' slots: `configured`, or fewer if the descriptors would run
/// out first.
pub fn connection_cap(configured: usize, open_files: Option<u64>) -> usize {
    let Some(open_files) = open_files else { return configured };
    let in_handshakes =
        (MAX_HANDSHAKES as u64 + MAX_HANDSHAKES_PER_IP as u64) * (FDS_PER_CONNECTION + 1);
    let for_trackers = TRACKER_SLOTS as u64 * FDS_PER_CONNECTION;
    let spare = open_files.saturating_sub(RESERVED_FDS + in_handshakes + for_trackers);
    let fits = usize::try_from(spare / FDS_PER_CONNECTION).unwrap_or(usize::MAX);
    configured.min(fits)
}

/// The limits of an `Admission`.
#[derive(Debug, Clone)]
pub struct AdmissionLimits {
    /// Client connections (after the handshake).
    pub max_clients: usize,
    /// The IPs of the listed trackers, whose handshakes have a pool of their own.
    pub tracker_ips: HashSet<IpAddr>,
}

#[derive(Debug, Default)]
struct Counts {
    handshaking: HashMap<IpAddr, usize>,
    /// Handshakes from IPs that are not trackers'.
    handshaking_strangers: usize,
    /// Handshakes from trackers' IPs.
    handshaking_trackers: usize,
    clients: usize,
    trackers: usize,
}

/// The slot bookkeeping of one server, shared by the accept loop and the connections.
#[derive(Debug, Clone)]
pub struct Admission {
    limits: Arc<AdmissionLimits>,
    counts: Arc<Mutex<Counts>>,
    /// Signalled when a stranger's handshake slot frees.
    freed: Arc<Condvar>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Too many handshakes in progress from this IP.
    PerIp,
    /// Too many handshakes in progress in all.
    Handshakes,
    /// Every client slot is taken.
    Clients,
    /// Every tracker slot is taken.
    Trackers,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::PerIp => "too many handshakes in progress from this address",
            Refused::Handshakes => "too many handshakes in progress",
            Refused::Clients => "every client slot is taken",
            Refused::Trackers => "every tracker slot is taken",
        })
    }
}

/// A handshake slot, released on drop.
#[derive(Debug)]
pub struct HandshakeSlot {
    admission: Admission,
    ip: IpAddr,
}

/// A client or tracker slot, released on drop.
#[derive(Debug)]
pub struct Slot {
    admission: Admission,
    tracker: bool,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Admission {
        Admission { limits: Arc::new(limits), counts: Arc::default(), freed: Arc::default() }
    }

    /// A handshake slot for a connection from `ip`, or why there is none.
    pub fn start_handshake(&self, ip: IpAddr) -> Result<HandshakeSlot, Refused> {
        let mut counts = self.counts.lock();
        let from_tracker = self.limits.tracker_ips.contains(&ip);
        if from_tracker {
            if counts.handshaking_trackers >= 2 * TRACKER_SLOTS {
                return Err(Refused::Handshakes);
            }
            counts.handshaking_trackers += 1;
        } else {
            let mine = counts.handshaking.get(&ip).copied().unwrap_or(0);
            if mine >= MAX_HANDSHAKES_PER_IP {
                return Err(Refused::PerIp);
            }
            if counts.handshaking_strangers >= MAX_HANDSHAKES {
                return Err(Refused::Handshakes);
            }
            counts.handshaking_strangers += 1;
        }
        *counts.handshaking.entry(ip).or_default() += 1;
        Ok(HandshakeSlot { admission: self.clone(), ip })
    }

    /// Waits (up to `patience`) until a stranger's handshake could start: while every such
    /// slot is taken, new connections are better left in the kernel's accept queue (a
    /// storm of reconnecting clients waits there a moment) than accepted and closed.
    pub fn wait_for_handshake_room(&self, patience: std::time::Duration) {
        let deadline = std::time::Instant::now() + patience;
        let mut counts = self.counts.lock();
        while counts.handshaking_strangers >= MAX_HANDSHAKES {
            if self.freed.wait_until(&mut counts, deadline).timed_out() {
                return;
            }
        }
    }

    /// Trades a finished handshake for a client slot, or a tracker slot if the proven key
    /// is a listed tracker's.
    pub fn admit(&self, handshake: HandshakeSlot, tracker: bool) -> Result<Slot, Refused> {
        drop(handshake);
        let mut counts = self.counts.lock();
        if tracker {
            if counts.trackers >= TRACKER_SLOTS {
                return Err(Refused::Trackers);
            }
            counts.trackers += 1;
        } else {
            if counts.clients >= self.limits.max_clients {
                return Err(Refused::Clients);
            }
            counts.clients += 1;
        }
        Ok(Slot { admission: self.clone(), tracker })
    }

    /// The most connections this admission can hold at once.
    pub fn max_live(&self) -> usize {
        self.limits.max_clients + TRACKER_SLOTS + MAX_HANDSHAKES + 2 * TRACKER_SLOTS
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut counts = self.admission.counts.lock();
        if self.admission.limits.tracker_ips.contains(&self.ip) {
            counts.handshaking_trackers -= 1;
        } else {
            counts.handshaking_strangers -= 1;
            self.admission.freed.notify_one();
        }
        if let Some(n) = counts.handshaking.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.handshaking.remove(&self.ip);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.admission.counts.lock();
        if self.tracker {
            counts.trackers -= 1;
        } else {
            counts.clients -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn admission(max_clients: usize) -> Admission {
        Admission::new(AdmissionLimits { max_clients, tracker_ips: HashSet::from([ip(1)]) })
    }

    #[test]
    fn handshakes_are_capped_per_ip_and_in_all_but_trackers_ips_have_their_own_pool() {
        let a = admission(10);
        let mine: Vec<_> =
            (0..MAX_HANDSHAKES_PER_IP).map(|_| a.start_handshake(ip(2)).unwrap()).collect();
        assert_eq!(a.start_handshake(ip(2)).unwrap_err(), Refused::PerIp);
        let mut others = Vec::new();
        for i in 0..MAX_HANDSHAKES - MAX_HANDSHAKES_PER_IP {
            others.push(
                a.start_handshake(IpAddr::from([10, 1, (i / 200) as u8, (i % 200) as u8])).unwrap(),
            );
        }
        assert_eq!(a.start_handshake(ip(3)).unwrap_err(), Refused::Handshakes);
        // The trackers' IP still gets in.
        let tracker = a.start_handshake(ip(1)).unwrap();
        drop(mine);
        assert!(a.start_handshake(ip(2)).is_ok(), "released on drop");
        drop(tracker);
    }

    #[test]
    fn the_accept_loop_waits_for_a_free_handshake_slot_but_not_for_ever() {
        let a = admission(10);
        let mut held: Vec<_> = (0..MAX_HANDSHAKES)
            .map(|i| a.start_handshake(IpAddr::from([10, 2, (i / 200) as u8, (i % 200) as u8])))
            .collect::<Result<_, _>>()
            .unwrap();
        let started = std::time::Instant::now();
        a.wait_for_handshake_room(std::time::Duration::from_millis(100));
        assert!(started.elapsed() >= std::time::Duration::from_millis(100), "gave up early");
        let one = held.pop().unwrap();
        let freer = std::thread::spawn(move || drop(one));
        a.wait_for_handshake_room(std::time::Duration::from_secs(60));
        freer.join().unwrap();
        assert!(a.start_handshake(ip(3)).is_ok());
    }

    #[test]
    fn client_slots_full_leave_tracker_slots_open() {
        let a = admission(2);
        let c1 = a.admit(a.start_handshake(ip(2)).unwrap(), false).unwrap();
        let _c2 = a.admit(a.start_handshake(ip(3)).unwrap(), false).unwrap();
        assert_eq!(
            a.admit(a.start_handshake(ip(4)).unwrap(), false).unwrap_err(),
            Refused::Clients
        );
        let trackers: Vec<_> = (0..TRACKER_SLOTS)
            .map(|_| a.admit(a.start_handshake(ip(1)).unwrap(), true).unwrap())
            .collect();
        assert_eq!(
            a.admit(a.start_handshake(ip(1)).unwrap(), true).unwrap_err(),
            Refused::Trackers
        );
        drop(c1);
        assert!(a.admit(a.start_handshake(ip(4)).unwrap(), false).is_ok());
        drop(trackers);
        // Every handshake slot was given back.
        assert_eq!(a.counts.lock().handshaking_strangers, 0);
        assert_eq!(a.counts.lock().handshaking_trackers, 0);
    }

    #[test]
    fn the_connection_cap_follows_the_open_files_limit() {
        assert_eq!(connection_cap(1024, None), 1024);
        assert_eq!(connection_cap(1024, Some(1_048_576)), 1024);
        // Under a common default of 1024 descriptors, the cap leaves room for the rest.
        let cap = connection_cap(1024, Some(1024));
        assert!(cap > 600 && cap < 1024, "{cap}");
        let used = RESERVED_FDS
            + (MAX_HANDSHAKES + MAX_HANDSHAKES_PER_IP) as u64 * (FDS_PER_CONNECTION + 1)
            + (TRACKER_SLOTS + cap) as u64 * FDS_PER_CONNECTION;
        assert!(used <= 1024);
        assert_eq!(connection_cap(1024, Some(10)), 0);
    }
}

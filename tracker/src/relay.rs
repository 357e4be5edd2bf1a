//! Relays through a tracker (issue 19): when a downloader reaches a seeder neither directly
//! nor by reversal (both behind NAT), the leader has the tracker where the seeder waits for
//! calls expect a relay (`Relays::expect`: a nonce, the two keys, the downloader's user);
//! both peers then open a secure channel to that tracker, proving their keys, and send
//! `ClientMessage::Relay` with a session of that key and the nonce. Once both ends are
//! there, the tracker tells the seeder (`RelayReady`, acknowledged by `RelayGo`), then the
//! downloader, and from then on copies the bytes of the two TCP connections to each other
//! unread: the peers run their own secure channel through it, end to end, so the relay
//! sees only their ciphertext and can forge nothing.
//!
//! Invariant: no byte is forwarded before both ends proved their keys to this tracker,
//! showed a live session of those keys, and were named by the leader for this nonce (the
//! downloader a member of the file's group, by its ticket; the seeder a live sharer of it).
//! Bounded: `RelayLimits` (relayed connections in all and per user, bytes a second in all
//! and per user, an idle timeout), rendezvous (`MAX_RENDEZVOUS`, each `RENDEZVOUS_FOR`),
//! and an end waits `JOIN_WAIT` for the other at most. `RelayBook` is the pure bookkeeping.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use common::connection::Connection;
use common::frame::FrameError;
use common::message::{ClientMessage, TrackerError, TrackerMessage};
use common::{PublicKey, UserId};

/// Relays expected at once, at most.
pub const MAX_RENDEZVOUS: usize = 1024;
/// How long a relay the leader asked for waits for its two ends.
pub const RENDEZVOUS_FOR: Duration = Duration::from_secs(15);
/// How long the first end to come waits for the other.
pub const JOIN_WAIT: Duration = Duration::from_secs(10);
/// How long the seeder may take to acknowledge `RelayReady`.
const GO_WAIT: Duration = Duration::from_secs(5);
/// The most bytes copied at once.
const CHUNK: usize = 64 * 1024;
/// How long a write to one end may take before the relay ends.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A tracker's relay options (`--no-relay`, `--max-relayed`, `--max-relayed-per-user`,
/// `--relay-rate`, `--relay-user-rate`, `--relay-idle-timeout`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RelayLimits {
    pub enabled: bool,
    /// Relayed connections at once, in all.
    pub max_relayed: usize,
    /// Relayed connections at once for one downloading user.
    pub max_per_user: usize,
    /// Bytes a second relayed, in all.
    pub rate: f64,
    /// Bytes a second relayed for one downloading user (all its relayed connections).
    pub user_rate: f64,
    /// A relayed connection silent both ways this long ends.
    pub idle: Duration,
}

impl Default for RelayLimits {
    fn default() -> RelayLimits {
        RelayLimits {
            enabled: true,
            max_relayed: 64,
            max_per_user: 8,
            // 100 Mbit/s in all, 40 Mbit/s per user.
            rate: 12_500_000.0,
            user_rate: 5_000_000.0,
            idle: Duration::from_secs(60),
        }
    }
}

/// Why a relay was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayRefusal {
    #[error("relaying is off on this tracker")]
    Off,
    #[error("this tracker relays {0} connections already")]
    Full(usize),
    #[error("{user} has {n} relayed connections already")]
    UserFull { user: UserId, n: usize },
    #[error("this tracker expects {0} relays already")]
    TooManyExpected(usize),
}

/// Relayed connections and their pace (pure: the clock is passed in). Each relayed chunk
/// reserves its share of time at both the total and its user's rate (`reserve`), after the
/// chunks before it, as the seeder's upload cap does.
#[derive(Debug)]
pub struct RelayBook {
    limits: RelayLimits,
    active: usize,
    per_user: HashMap<UserId, UserPace>,
    total_next: Option<Instant>,
}

#[derive(Debug)]
struct UserPace {
    active: usize,
    next: Option<Instant>,
}

impl RelayBook {
    pub fn new(limits: RelayLimits) -> RelayBook {
        RelayBook { limits, active: 0, per_user: HashMap::new(), total_next: None }
    }

    /// Whether one more relayed connection for `user` fits now.
    pub fn check(&self, user: &UserId) -> Result<(), RelayRefusal> {
        if !self.limits.enabled {
            return Err(RelayRefusal::Off);
        }
        if self.active >= self.limits.max_relayed {
            return Err(RelayRefusal::Full(self.active));
        }
        let n = self.per_user.get(user).map_or(0, |p| p.active);
        if n >= self.limits.max_per_user {
            return Err(RelayRefusal::UserFull { user: user.clone(), n });
        }
        Ok(())
    }

    /// Counts one more relayed connection for `user`, if it fits.
    pub fn open(&mut self, user: &UserId) -> Result<(), RelayRefusal> {
        self.check(user)?;
        self.active += 1;
        self.per_user.entry(user.clone()).or_insert(UserPace { active: 0, next: None }).active += 1;
        Ok(())
    }

    /// A relayed connection of `user` ended.
    pub fn close(&mut self, user: &UserId) {
        self.active = self.active.saturating_sub(1);
        if let Some(pace) = self.per_user.get_mut(user) {
            pace.active = pace.active.saturating_sub(1);
            if pace.active == 0 {
                self.per_user.remove(user);
            }
        }
    }

    /// Reserves the time to relay `bytes` for `user` at `now`; returns how long to wait
    /// before sending them.
    pub fn reserve(&mut self, user: &UserId, bytes: usize, now: Instant) -> Duration {
        let (rate, user_rate) = (self.limits.rate.max(1.0), self.limits.user_rate.max(1.0));
        let Some(pace) = self.per_user.get_mut(user) else { return Duration::ZERO };
        // Each rate's share is reserved at its own earliest moment: a user held back by its
        // own rate does not hold the others back at the total's.
        let user_start = pace.next.map_or(now, |next| next.max(now));
        let total_start = self.total_next.map_or(now, |next| next.max(now));
        let start = user_start.max(total_start);
        pace.next = Some(start + Duration::from_secs_f64(bytes as f64 / user_rate));
        self.total_next = Some(total_start + Duration::from_secs_f64(bytes as f64 / rate));
        start - now
    }

    /// Relayed connections now, in all.
    pub fn active(&self) -> usize {
        self.active
    }
}

/// This tracker's relays: those expected, those running.
pub struct Relays {
    book: Mutex<RelayBook>,
    rendezvous: Mutex<HashMap<u64, Rendezvous>>,
    idle: Duration,
}

struct Rendezvous {
    downloader: PublicKey,
    seeder: PublicKey,
    /// The downloading user, whose share of the relay it takes.
    user: UserId,
    until: Instant,
    parked: Option<Parked>,
}

/// The first end to come, waiting for the other.
struct Parked {
    seeder_side: bool,
    conn: Connection<ClientMessage, TrackerMessage>,
    /// Dropped when the relay ends (or is refused), which ends the parked end's wait.
    done: Sender<()>,
}

/// What `join` does with an end.
enum Joined {
    Park(Receiver<()>),
    Pair { other: Box<Parked>, user: UserId },
}

impl Relays {
    pub fn new(limits: RelayLimits) -> Relays {
        Relays {
            book: Mutex::new(RelayBook::new(limits)),
            rendezvous: Mutex::new(HashMap::new()),
            idle: limits.idle,
        }
    }

    /// Expects a relay between the downloader that proved `downloader` (of `user`) and
    /// the seeder that proved `seeder`, named `nonce` (on the leader's word).
    pub fn expect(
        &self,
        nonce: u64,
        downloader: PublicKey,
        seeder: PublicKey,
        user: UserId,
    ) -> Result<(), RelayRefusal> {
        self.book.lock().check(&user)?;
        let mut rendezvous = self.rendezvous.lock();
        let now = Instant::now();
        rendezvous.retain(|_, r| r.until > now || r.parked.is_some());
        if rendezvous.len() >= MAX_RENDEZVOUS {
            return Err(RelayRefusal::TooManyExpected(rendezvous.len()));
        }
        let until = now + RENDEZVOUS_FOR;
        rendezvous.insert(nonce, Rendezvous { downloader, seeder, user, until, parked: None });
        Ok(())
    }

    /// Serves one end of relay `nonce`, which proved `key` and showed a live session of
    /// it, on its connection's thread: parks it until the other comes, or pairs it with
    /// the one waiting and relays between them until either ends.
    pub fn join(
        &self,
        conn: Connection<ClientMessage, TrackerMessage>,
        key: PublicKey,
        nonce: u64,
        on_joined: impl FnOnce(),
    ) -> Result<(), FrameError> {
        let refuse = |conn: &mut Connection<ClientMessage, TrackerMessage>, why: String| {
            conn.send(&TrackerMessage::RelayRefused { reason: TrackerError::CannotReverse(why) })
        };
        let mut conn = Some(conn);
        let joined = {
            let mut rendezvous = self.rendezvous.lock();
            let now = Instant::now();
            let Some(r) = rendezvous.get_mut(&nonce).filter(|r| r.until > now) else {
                drop(rendezvous);
                return refuse(taken(&mut conn)?, "no such relay".to_string());
            };
            let seeder_side = if key == r.seeder {
                true
            } else if key == r.downloader {
                false
            } else {
                drop(rendezvous);
                return refuse(taken(&mut conn)?, "not an end of that relay".to_string());
            };
            match r.parked.take() {
                Some(other) if other.seeder_side != seeder_side => {
                    let user = r.user.clone();
                    rendezvous.remove(&nonce);
                    Joined::Pair { other: Box::new(other), user }
                }
                Some(other) => {
                    r.parked = Some(other);
                    drop(rendezvous);
                    let why = "that end of the relay came already".to_string();
                    return refuse(taken(&mut conn)?, why);
                }
                None => {
                    let (done, ended) = crossbeam_channel::bounded(0);
                    let conn = conn.take().ok_or(FrameError::Truncated)?;
                    r.parked = Some(Parked { seeder_side, conn, done });
                    Joined::Park(ended)
                }
            }
        };
        // An end of a relay expected here: counted by the relay's limits from now on.
        on_joined();
        match joined {
            Joined::Park(ended) => {
                self.wait_for_other(nonce, &ended);
                Ok(())
            }
            Joined::Pair { other, user } => {
                let conn = conn.take().ok_or(FrameError::Truncated)?;
                let (seeder, downloader) = match other.seeder_side {
                    true => (other.conn, conn),
                    false => (conn, other.conn),
                };
                // The parked end's thread waits until this ends.
                let _done = other.done;
                self.relay(seeder, downloader, &user)
            }
        }
    }

    /// The first end waits for the other (`JOIN_WAIT`), then, if paired, for the relay to
    /// end; if not, it takes its connection back and refuses it.
    fn wait_for_other(&self, nonce: u64, ended: &Receiver<()>) {
        if let Err(RecvTimeoutError::Disconnected) = ended.recv_timeout(JOIN_WAIT) {
            return;
        }
        let parked = self.rendezvous.lock().remove(&nonce).and_then(|r| r.parked);
        match parked {
            Some(mut parked) => {
                let why = TrackerError::CannotReverse("the other end did not come".into());
                let _ = parked.conn.send(&TrackerMessage::RelayRefused { reason: why });
            }
            // Paired meanwhile: wait for the relay to end.
            None => while ended.recv().is_ok() {},
        }
    }

    /// Relays between the two ends once the book takes one more for `user`.
    fn relay(
        &self,
        mut seeder: Connection<ClientMessage, TrackerMessage>,
        mut downloader: Connection<ClientMessage, TrackerMessage>,
        user: &UserId,
    ) -> Result<(), FrameError> {
        if let Err(why) = self.book.lock().open(user) {
            let reason = TrackerError::CannotReverse(why.to_string());
            let _ = seeder.send(&TrackerMessage::RelayRefused { reason: reason.clone() });
            return downloader.send(&TrackerMessage::RelayRefused { reason });
        }
        let result = self.start_and_splice(seeder, downloader, user);
        self.book.lock().close(user);
        result
    }

    fn start_and_splice(
        &self,
        mut seeder: Connection<ClientMessage, TrackerMessage>,
        mut downloader: Connection<ClientMessage, TrackerMessage>,
        user: &UserId,
    ) -> Result<(), FrameError> {
        // The seeder first, and its acknowledgement, so that nothing of the downloader's
        // arrives before the seeder has read its last message from this tracker.
        seeder.send(&TrackerMessage::RelayReady)?;
        seeder.set_read_timeout(GO_WAIT)?;
        match seeder.recv()? {
            Some(ClientMessage::RelayGo) => {}
            other => {
                log::info!("relay for {user}: the seeder answered {other:?}");
                return Ok(());
            }
        }
        downloader.send(&TrackerMessage::RelayReady)?;
        let (seeder_addr, downloader_addr) = (seeder.peer_addr(), downloader.peer_addr());
        let (Some(a), Some(b)) = (seeder.into_socket(), downloader.into_socket()) else {
            log::info!("relay for {user}: an end sent more than it should have");
            return Ok(());
        };
        log::info!("relay for {user}: {downloader_addr} <-> {seeder_addr}");
        let started = Instant::now();
        let relayed = splice(&a, &b, &self.book, user, self.idle);
        let secs = started.elapsed().as_secs_f64();
        match relayed {
            Ok(n) => log::info!("relay for {user}: {n} bytes in {secs:.1} s"),
            Err(e) => log::info!("relay for {user}: ended after {secs:.1} s: {e}"),
        }
        Ok(())
    }
}

/// The connection still held (always, until it is parked or paired).
fn taken(
    conn: &mut Option<Connection<ClientMessage, TrackerMessage>>,
) -> Result<&mut Connection<ClientMessage, TrackerMessage>, FrameError> {
    conn.as_mut().ok_or(FrameError::Truncated)
}

/// Copies bytes between `a` and `b`, as `book` paces them for `user`, until both ends
/// closed, either failed, or neither sent anything for `idle`. Returns the bytes copied.
fn splice(
    a: &TcpStream,
    b: &TcpStream,
    book: &Mutex<RelayBook>,
    user: &UserId,
    idle: Duration,
) -> std::io::Result<u64> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    for s in [a, b] {
        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
        s.set_read_timeout(Some(idle))?;
    }
    let mut buf = vec![0u8; CHUNK];
    let mut open = [true, true];
    let mut total = 0u64;
    let spec = Timespec {
        tv_sec: idle.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(idle.subsec_nanos()),
    };
    while open[0] || open[1] {
        let ready: Vec<bool> = {
            let mut fds = Vec::new();
            for (s, o) in [a, b].into_iter().zip(open) {
                if o {
                    fds.push(PollFd::new(s, PollFlags::IN));
                }
            }
            match poll(&mut fds, Some(&spec)) {
                Ok(0) => return Ok(total),
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            let mut it = fds.iter().map(|fd| !fd.revents().is_empty());
            open.iter().map(|o| *o && it.next().unwrap_or(false)).collect()
        };
        for (i, (from, to)) in [(a, b), (b, a)].into_iter().enumerate() {
            if !ready[i] {
                continue;
            }
            let n = match (&*from).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                open[i] = false;
                let _ = to.shutdown(std::net::Shutdown::Write);
                continue;
            }
            let wait = book.lock().reserve(user, n, Instant::now());
            if !wait.is_zero() {
                // Pacing: this thread relays only this pair, and holds no lock.
                std::thread::sleep(wait);
            }
            (&*to).write_all(&buf[..n])?;
            total += n as u64;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn user(name: &str) -> UserId {
        UserId::new(name).unwrap()
    }

    #[test]
    fn relays_are_bounded_in_all_and_per_user_and_off_means_none() {
        let limits = RelayLimits { max_relayed: 3, max_per_user: 2, ..RelayLimits::default() };
        let mut book = RelayBook::new(limits);
        assert_eq!(book.open(&user("a")), Ok(()));
        assert_eq!(book.open(&user("a")), Ok(()));
        assert_eq!(book.open(&user("a")), Err(RelayRefusal::UserFull { user: user("a"), n: 2 }));
        assert_eq!(book.open(&user("b")), Ok(()));
        assert_eq!(book.open(&user("c")), Err(RelayRefusal::Full(3)));
        book.close(&user("a"));
        assert_eq!(book.open(&user("c")), Ok(()));
        let off = RelayBook::new(RelayLimits { enabled: false, ..RelayLimits::default() });
        assert_eq!(off.check(&user("a")), Err(RelayRefusal::Off));
    }

    #[test]
    fn a_users_bytes_are_paced_at_its_rate_and_all_at_the_total() {
        let limits = RelayLimits { rate: 1000.0, user_rate: 100.0, ..RelayLimits::default() };
        let mut book = RelayBook::new(limits);
        let (a, b) = (user("a"), user("b"));
        book.open(&a).unwrap();
        book.open(&b).unwrap();
        let t0 = Instant::now();
        assert_eq!(book.reserve(&a, 100, t0), Duration::ZERO);
        // a's next 100 bytes wait for its second; b waits only for the total's 0.1 s.
        assert_eq!(book.reserve(&a, 100, t0), Duration::from_secs(1));
        assert!(book.reserve(&b, 100, t0) <= Duration::from_secs(1));
    }

    proptest! {
        /// Whatever the chunks and their timing, a user's bytes never go out faster than
        /// its rate (plus its first chunk), nor all together faster than the total.
        #[test]
        fn paced_bytes_stay_within_the_rates(
            chunks in proptest::collection::vec((0u8..3, 1usize..70_000, 0u64..50), 1..200),
        ) {
            let limits =
                RelayLimits { rate: 1_000_000.0, user_rate: 400_000.0, ..RelayLimits::default() };
            let mut book = RelayBook::new(limits);
            let users: Vec<UserId> = (0..3).map(|i| user(&format!("u{i}"))).collect();
            for u in &users {
                book.open(u).unwrap();
            }
            let t0 = Instant::now();
            let mut now = t0;
            let mut sent: Vec<(usize, Instant, usize)> = Vec::new();
            for (who, bytes, ms) in chunks {
                now += Duration::from_millis(ms);
                let at = now + book.reserve(&users[who as usize], bytes, now);
                sent.push((who as usize, at, bytes));
            }
            let last = sent.iter().map(|(_, at, _)| *at).max().unwrap_or(t0);
            let span = (last - t0).as_secs_f64();
            let biggest = 70_000.0;
            let all: usize = sent.iter().map(|(_, _, b)| b).sum();
            prop_assert!(all as f64 <= 1_000_000.0 * span + biggest * 1.01);
            for u in 0..3 {
                let mine: usize = sent.iter().filter(|(w, _, _)| *w == u).map(|(_, _, b)| b).sum();
                prop_assert!(mine as f64 <= 400_000.0 * span + biggest * 1.01);
            }
        }
    }
}

//! Limits on password guessing, on logins and on account creation (issue 21: device-trusted
//! logins, OWASP's "device cookie", where the client's static key is the device).
//!
//! - A **known device** is a key that logged in as a user before (here, or holding a
//!   session of that user in the state): it is never locked out by other addresses' or
//!   other keys' failures. Its own wrong passwords count against itself only (per key and
//!   user), and its hashes go ahead of everyone else's (`kdf_pool::Priority::Known`).
//! - **Failed logins** of unknown devices are counted per (address, user), per address (all
//!   users: password spraying) and per user (all addresses). After a few free failures,
//!   each further one doubles a backoff during which attempts are answered
//!   `TooManyAttempts` without hashing anything. A user's backoff applies only to
//!   addresses that have themselves failed lately: alice on a clean address still logs in.
//! - A **right password** clears only its own (address, user) record: logging in to one's
//!   own account does not erase the guesses one made at another.
//! - **Right logins** are limited per key and per user (token buckets, checked before
//!   hashing): a flood of correct passwords cannot take the hashing threads either.
//! - **Account creations** are limited per address per hour, and so are attempts to create
//!   one with a name that exists (the same budget and the same refusal: probing names
//!   tells nothing more than signing up).
//! - **Refusals are held** on the guesser's connection (`refusal_hold`) for the wait they
//!   name, up to 2 s, before they are sent: a guesser that retries at once costs a
//!   sleeping thread, not a core. Other users' answers are never held.
//!
//! IPv6 addresses count by their /64, which one host usually holds in full. Each table
//! keeps at most `MAX_TRACKED` entries: stale ones go first, then the longest quiet.
//! Kept in memory, per tracker (soft state): a restart forgets the counts and the known
//! devices (a device holding a session stays known through the state), and three trackers
//! give three budgets.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use common::message::TrackerError;
use common::{PublicKey, UserId};

/// Entries kept per table, at most.
pub const MAX_TRACKED: usize = 65_536;
/// The first backoff, doubled by each further failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// A record with no failure for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// The longest a "too many attempts" answer is held before it is sent.
pub const MAX_REFUSAL_HOLD: Duration = Duration::from_secs(2);
/// How long a "busy" answer to an address that failed lately is held.
pub const BUSY_HOLD: Duration = Duration::from_millis(500);
/// The window of `signups_per_ip_per_hour`.
const SIGNUP_WINDOW: Duration = Duration::from_secs(3600);
/// A known device is forgotten after this long without a login.
const KNOWN_FOR: Duration = Duration::from_secs(90 * 24 * 3600);
/// Right logins of one key in a burst, then one per `KEY_LOGIN_EVERY`.
const KEY_LOGIN_BURST: f64 = 10.0;
const KEY_LOGIN_EVERY: Duration = Duration::from_secs(6);
/// Right logins of one user in a burst, then one per `USER_LOGIN_EVERY`.
const USER_LOGIN_BURST: f64 = 60.0;
const USER_LOGIN_EVERY: Duration = Duration::from_millis(400);

/// The limits (command-line options of the tracker).
#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    /// Failed logins from one address before its backoff starts (0: no limit).
    pub failures_per_ip: u32,
    /// Failed logins for one user before its backoff starts (0: no limit).
    pub failures_per_user: u32,
    /// The longest backoff of an address.
    pub max_ip_backoff: Duration,
    /// The longest backoff of a user (short: a user's backoff is also the lever an
    /// attacker has on that user).
    pub max_user_backoff: Duration,
    /// Accounts created from one address per hour (0: no limit).
    pub signups_per_ip_per_hour: u32,
}

impl Default for ThrottleLimits {
    fn default() -> ThrottleLimits {
        ThrottleLimits {
            failures_per_ip: 10,
            failures_per_user: 20,
            max_ip_backoff: Duration::from_secs(300),
            max_user_backoff: Duration::from_secs(30),
            signups_per_ip_per_hour: 30,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    /// Failures (or sign-ups) counted.
    count: u32,
    /// The first counted event, for sign-up windows.
    since: Instant,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// Counters of one kind, bounded.
struct Table<K> {
    records: HashMap<K, Record>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new() -> Table<K> {
        Table { records: HashMap::new() }
    }

    /// How long `key` must still wait, if it must.
    fn blocked(&self, key: &K, now: Instant) -> Option<Duration> {
        let until = self.records.get(key)?.blocked_until?;
        (until > now).then(|| until - now)
    }

    fn has_failed(&self, key: &K, now: Instant) -> bool {
        self.records.get(key).is_some_and(|r| now.duration_since(r.last) < FORGET_AFTER)
    }

    /// The record of `key`, started afresh at `now` if it has none or if `stale` says its
    /// old one no longer counts.
    fn fresh_record(
        &mut self,
        key: K,
        now: Instant,
        stale: impl Fn(&Record) -> bool,
    ) -> &mut Record {
        self.make_room(now);
        let empty = Record { count: 0, since: now, last: now, blocked_until: None };
        let record = self.records.entry(key).or_insert(empty);
        if stale(record) {
            *record = empty;
        }
        record
    }

    /// Counts a failure; past `free` of them, blocks `key` for a doubling backoff.
    fn fail(&mut self, key: K, now: Instant, free: u32, max_backoff: Duration) {
        let record = self.fresh_record(key, now, |r| now.duration_since(r.last) >= FORGET_AFTER);
        record.count = record.count.saturating_add(1);
        record.last = now;
        if free > 0 && record.count > free {
            let doublings = (record.count - free - 1).min(20);
            let backoff = (FIRST_BACKOFF * 2u32.pow(doublings)).min(max_backoff);
            record.blocked_until = Some(now + backoff);
        }
    }

    /// Counts an event in a fixed window; `false` if `key` already had `limit` in it.
    fn count_in_window(&mut self, key: K, now: Instant, limit: u32, window: Duration) -> bool {
        let record = self.fresh_record(key, now, |r| now.duration_since(r.since) >= window);
        if record.count >= limit {
            return false;
        }
        record.count += 1;
        record.last = now;
        true
    }

    fn forget(&mut self, key: &K) {
        self.records.remove(key);
    }

    /// Keeps the table under `MAX_TRACKED`: drops stale records, then the quietest.
    fn make_room(&mut self, now: Instant) {
        if self.records.len() < MAX_TRACKED {
            return;
        }
        self.records.retain(|_, r| {
            now.duration_since(r.last) < FORGET_AFTER || r.blocked_until.is_some_and(|u| u > now)
        });
        while self.records.len() >= MAX_TRACKED {
            let Some(quietest) =
                self.records.iter().min_by_key(|(_, r)| r.last).map(|(k, _)| k.clone())
            else {
                break;
            };
            self.records.remove(&quietest);
        }
    }
}

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets of one kind, bounded (a full bucket is the same as none: dropped first).
struct Buckets<K> {
    burst: f64,
    every: Duration,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(burst: f64, every: Duration) -> Buckets<K> {
        Buckets { burst, every, buckets: HashMap::new() }
    }

    fn tokens(&self, key: &K, now: Instant) -> f64 {
        self.buckets.get(key).map_or(self.burst, |b| {
            let refill =
                now.saturating_duration_since(b.at).as_secs_f64() / self.every.as_secs_f64();
            (b.tokens + refill).min(self.burst)
        })
    }

    /// How long `key` must wait for a token, if it must.
    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        let tokens = self.tokens(key, now);
        (tokens < 1.0).then(|| self.every.mul_f64(1.0 - tokens))
    }

    /// Takes a token (the count may go below zero: a debt that delays the next).
    fn take(&mut self, key: K, now: Instant) {
        let tokens = self.tokens(&key, now) - 1.0;
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(&key) {
            let full = self.burst;
            let every = self.every;
            self.buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() / every.as_secs_f64()
                    < full
            });
            while self.buckets.len() >= MAX_TRACKED {
                let Some(fullest) =
                    self.buckets.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| k.clone())
                else {
                    break;
                };
                self.buckets.remove(&fullest);
            }
        }
        self.buckets.insert(key, Bucket { tokens, at: now });
    }
}

/// The devices (keys) that logged in as each user, bounded: the least recent go first.
struct KnownDevices {
    last_login: HashMap<(PublicKey, UserId), Instant>,
}

impl KnownDevices {
    fn contains(&self, key: &PublicKey, user: &UserId, now: Instant) -> bool {
        // A lookup without cloning the user would need a borrowed key type; names are short.
        self.last_login
            .get(&(*key, user.clone()))
            .is_some_and(|at| now.saturating_duration_since(*at) < KNOWN_FOR)
    }

    fn insert(&mut self, key: PublicKey, user: UserId, now: Instant) {
        if self.last_login.len() >= MAX_TRACKED
            && !self.last_login.contains_key(&(key, user.clone()))
        {
            self.last_login.retain(|_, at| now.saturating_duration_since(*at) < KNOWN_FOR);
            while self.last_login.len() >= MAX_TRACKED {
                let Some(oldest) =
                    self.last_login.iter().min_by_key(|(_, at)| **at).map(|(k, _)| k.clone())
                else {
                    break;
                };
                self.last_login.remove(&oldest);
            }
        }
        self.last_login.insert((key, user), now);
    }
}

/// The address an attempt is counted under: IPv4 as it is, IPv6 by its /64.
fn source(ip: IpAddr) -> IpAddr {
    crate::admission::source(ip)
}

/// The throttle of one tracker.
pub struct LoginThrottle {
    limits: ThrottleLimits,
    ips: Mutex<Table<IpAddr>>,
    users: Mutex<Table<UserId>>,
    /// Failures of unknown devices per (address, user).
    pairs: Mutex<Table<(IpAddr, UserId)>>,
    /// Failures of known devices, per (key, user): theirs alone.
    devices: Mutex<Table<(PublicKey, UserId)>>,
    known: Mutex<KnownDevices>,
    /// Logins attempted per key, and right logins per user.
    key_logins: Mutex<Buckets<PublicKey>>,
    user_logins: Mutex<Buckets<UserId>>,
    signups: Mutex<Table<IpAddr>>,
}

/// Who attempts a login: from where, with which key, as whom.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub ip: IpAddr,
    pub key: PublicKey,
    pub user: &'a UserId,
    /// Whether the key is a known device of the user (`LoginThrottle::is_known`, or it
    /// holds a session of the user in the state).
    pub known: bool,
}

fn too_many(wait: Duration, what: &str) -> TrackerError {
    // Rounded up: retrying after the time said must work.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    TrackerError::TooManyAttempts { what: what.to_string(), retry_after_secs: secs.max(1) }
}

impl LoginThrottle {
    pub fn new(limits: ThrottleLimits) -> LoginThrottle {
        LoginThrottle {
            limits,
            ips: Mutex::new(Table::new()),
            users: Mutex::new(Table::new()),
            pairs: Mutex::new(Table::new()),
            devices: Mutex::new(Table::new()),
            known: Mutex::new(KnownDevices { last_login: HashMap::new() }),
            key_logins: Mutex::new(Buckets::new(KEY_LOGIN_BURST, KEY_LOGIN_EVERY)),
            user_logins: Mutex::new(Buckets::new(USER_LOGIN_BURST, USER_LOGIN_EVERY)),
            signups: Mutex::new(Table::new()),
        }
    }

    /// Whether `key` logged in as `user` on this tracker before (lately enough).
    pub fn is_known(&self, key: &PublicKey, user: &UserId, now: Instant) -> bool {
        self.known.lock().contains(key, user, now)
    }

    /// Whether a login `attempt` may have its password checked now.
    pub fn admit_login(&self, attempt: Attempt, now: Instant) -> Result<(), TrackerError> {
        let Attempt { ip, key, user, known } = attempt;
        let ip = source(ip);
        if let Some(wait) = self.key_logins.lock().wait(&key, now) {
            return Err(too_many(wait, "logins from this device"));
        }
        if let Some(wait) = self.user_logins.lock().wait(user, now) {
            return Err(too_many(wait, "logins of this user"));
        }
        if known {
            // Only its own failures hold a known device back.
            if let Some(wait) = self.devices.lock().blocked(&(key, user.clone()), now) {
                return Err(too_many(wait, "failed logins from this device"));
            }
        } else {
            let ips = self.ips.lock();
            if let Some(wait) = ips.blocked(&ip, now) {
                return Err(too_many(wait, "failed logins from this address"));
            }
            if let Some(wait) = self.pairs.lock().blocked(&(ip, user.clone()), now) {
                return Err(too_many(wait, "failed logins for this user from this address"));
            }
            if ips.has_failed(&ip, now) {
                if let Some(wait) = self.users.lock().blocked(user, now) {
                    return Err(too_many(wait, "failed logins for this user"));
                }
            }
        }
        Ok(())
    }

    /// Whether a login of `user` from `ip` looks like guessing: the address failed lately,
    /// or the user was failed on lately (from anywhere). Its hash waits behind the others.
    pub fn is_suspect(&self, ip: IpAddr, user: &UserId, now: Instant) -> bool {
        self.ips.lock().has_failed(&source(ip), now) || self.users.lock().has_failed(user, now)
    }

    /// Whether `ip` failed a login lately.
    pub fn address_failed(&self, ip: IpAddr, now: Instant) -> bool {
        self.ips.lock().has_failed(&source(ip), now)
    }

    /// How long to hold a refusal of a request from `ip` (a login or signup for `user`, if
    /// it is one) before sending it, so that a guesser who retries at once does not cost
    /// the tracker a request every few microseconds: the wait the refusal names (at most
    /// `MAX_REFUSAL_HOLD`) for "too many attempts", and `BUSY_HOLD` for "busy" to a login
    /// that looks like guessing (`is_suspect`). Nothing for anyone else: a real user's
    /// "busy" is answered at once.
    pub fn refusal_hold(
        &self,
        ip: IpAddr,
        user: Option<&UserId>,
        error: &TrackerError,
        now: Instant,
    ) -> Duration {
        match error {
            TrackerError::TooManyAttempts { retry_after_secs, .. } => {
                Duration::from_secs(*retry_after_secs).min(MAX_REFUSAL_HOLD)
            }
            TrackerError::Busy(_) => {
                let suspect = match user {
                    Some(user) => self.is_suspect(ip, user, now),
                    None => self.address_failed(ip, now),
                };
                if suspect {
                    BUSY_HOLD
                } else {
                    Duration::ZERO
                }
            }
            _ => Duration::ZERO,
        }
    }

    /// Counts a wrong password (or an unknown user) of `attempt`.
    pub fn login_failed(&self, attempt: Attempt, now: Instant) {
        let limits = &self.limits;
        let Attempt { ip, key, user, known } = attempt;
        let ip = source(ip);
        if known {
            // A known device's failures count against itself only: another key, or another
            // address, cannot lock it out, and it cannot lock anyone else out.
            let free = limits.failures_per_ip;
            self.devices.lock().fail((key, user.clone()), now, free, limits.max_ip_backoff);
            return;
        }
        // The same free failures for one user as for all users from an address.
        let free = limits.failures_per_ip;
        self.pairs.lock().fail((ip, user.clone()), now, free, limits.max_ip_backoff);
        self.ips.lock().fail(ip, now, limits.failures_per_ip, limits.max_ip_backoff);
        self.users.lock().fail(
            user.clone(),
            now,
            limits.failures_per_user,
            limits.max_user_backoff,
        );
    }

    /// A right password: `attempt`'s key is now a known device of its user; its own
    /// (address, user) and (key, user) records are forgotten, nothing else (the address's
    /// and the user's failures stay: other users there, or other addresses, may be
    /// guessing); and it counts against the key's and the user's login rates.
    pub fn login_succeeded(&self, attempt: Attempt, now: Instant) {
        let Attempt { ip, key, user, .. } = attempt;
        self.pairs.lock().forget(&(source(ip), user.clone()));
        self.devices.lock().forget(&(key, user.clone()));
        self.known.lock().insert(key, user.clone(), now);
        self.user_logins.lock().take(user.clone(), now);
        self.key_logins.lock().take(key, now);
    }

    /// Whether `ip` may attempt to create an account now (whether the name exists or not:
    /// the same answer either way), or the wait until it may.
    pub fn admit_signup(&self, ip: IpAddr, now: Instant) -> Result<(), TrackerError> {
        let limit = self.limits.signups_per_ip_per_hour;
        if limit == 0 {
            return Ok(());
        }
        let signups = self.signups.lock();
        let Some(record) = signups.records.get(&source(ip)) else { return Ok(()) };
        let elapsed = now.saturating_duration_since(record.since);
        if elapsed >= SIGNUP_WINDOW || record.count < limit {
            return Ok(());
        }
        Err(too_many(SIGNUP_WINDOW - elapsed, "account creations from this address"))
    }

    /// Counts an attempt to create an account from `ip` that was answered (created, or
    /// the name exists), against the address's hourly share.
    pub fn signup_attempted(&self, ip: IpAddr, now: Instant) {
        let limit = self.limits.signups_per_ip_per_hour;
        if limit == 0 {
            return;
        }
        self.signups.lock().count_in_window(source(ip), now, u32::MAX, SIGNUP_WINDOW);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const KEY: PublicKey = PublicKey([1; 32]);

    /// An unknown device's attempt.
    fn at<'a>(ip: IpAddr, user: &'a UserId) -> Attempt<'a> {
        Attempt { ip, key: KEY, user, known: false }
    }

    impl LoginThrottle {
        fn admit(&self, ip: IpAddr, user: &UserId, now: Instant) -> Result<(), TrackerError> {
            self.admit_login(at(ip, user), now)
        }
        fn fail(&self, ip: IpAddr, user: &UserId, now: Instant) {
            self.login_failed(at(ip, user), now)
        }
    }

    fn limits() -> ThrottleLimits {
        ThrottleLimits { failures_per_ip: 3, failures_per_user: 5, ..ThrottleLimits::default() }
    }

    #[test]
    fn an_address_is_blocked_after_its_free_failures_with_a_doubling_backoff() {
        let t = LoginThrottle::new(limits());
        let now = Instant::now();
        let (a, alice) = (ip("10.0.0.1"), user("alice"));
        for _ in 0..3 {
            t.admit(a, &alice, now).unwrap();
            t.fail(a, &alice, now);
        }
        t.admit(a, &alice, now).unwrap();
        t.fail(a, &alice, now);
        // Blocked for 1 s after the 4th failure, and other users from there too.
        assert!(t.admit(a, &user("bob"), now).is_err());
        let later = now + Duration::from_millis(1100);
        t.admit(a, &alice, later).unwrap();
        t.fail(a, &alice, later);
        let Err(TrackerError::TooManyAttempts { retry_after_secs, .. }) = t.admit(a, &alice, later)
        else {
            panic!("expected a backoff")
        };
        assert_eq!(retry_after_secs, 2);
        // A right password (once the wait is over) does not forget the address's failures.
        let much_later = later + Duration::from_secs(3);
        t.login_succeeded(at(a, &alice), much_later);
        t.fail(a, &user("bob"), much_later);
        assert!(t.admit(a, &user("carol"), much_later).is_err());
    }

    #[test]
    fn a_user_under_attack_still_logs_in_from_a_clean_address() {
        let t = LoginThrottle::new(limits());
        let now = Instant::now();
        let alice = user("alice");
        // Six guessers, each under its own address's limit, push alice past hers.
        for n in 1..=6 {
            let guesser = ip(&format!("10.0.1.{n}"));
            t.admit(guesser, &alice, now).unwrap();
            t.fail(guesser, &alice, now);
        }
        assert!(t.admit(ip("10.0.1.1"), &alice, now).is_err(), "guessers wait");
        t.admit(ip("10.0.9.9"), &alice, now).unwrap();
    }

    #[test]
    fn guessing_makes_the_address_and_the_user_suspect_but_no_one_else() {
        let t = LoginThrottle::new(limits());
        let now = Instant::now();
        assert!(!t.is_suspect(ip("10.0.0.1"), &user("alice"), now));
        t.fail(ip("10.0.0.1"), &user("victim"), now);
        assert!(t.is_suspect(ip("10.0.0.1"), &user("alice"), now), "the address");
        assert!(t.is_suspect(ip("10.0.0.2"), &user("victim"), now), "the user");
        assert!(!t.is_suspect(ip("10.0.0.2"), &user("alice"), now));
        assert!(!t.is_suspect(ip("10.0.0.1"), &user("alice"), now + FORGET_AFTER));
    }

    #[test]
    fn refusals_to_guessers_are_held_and_no_one_elses() {
        let t = LoginThrottle::new(limits());
        let now = Instant::now();
        let too_many = |secs| TrackerError::TooManyAttempts {
            what: "failed logins from this address".to_string(),
            retry_after_secs: secs,
        };
        let busy = TrackerError::Busy("queue full".to_string());
        let (alice, victim) = (user("alice"), user("victim"));
        let hold = |from: &str, who: &UserId, error: &TrackerError| {
            t.refusal_hold(ip(from), Some(who), error, now)
        };
        assert_eq!(hold("10.0.0.1", &alice, &too_many(1)), Duration::from_secs(1));
        assert_eq!(hold("10.0.0.1", &alice, &too_many(300)), MAX_REFUSAL_HOLD);
        // "Busy" is held only for a login that looks like guessing.
        assert_eq!(hold("10.0.0.1", &alice, &busy), Duration::ZERO);
        t.fail(ip("10.0.0.1"), &victim, now);
        assert_eq!(hold("10.0.0.1", &alice, &busy), BUSY_HOLD, "from an address that failed");
        assert_eq!(hold("10.0.0.2", &victim, &busy), BUSY_HOLD, "for a user failed on");
        assert_eq!(hold("10.0.0.2", &alice, &busy), Duration::ZERO);
        assert_eq!(t.refusal_hold(ip("10.0.0.2"), None, &busy, now), Duration::ZERO);
        assert_eq!(t.refusal_hold(ip("10.0.0.1"), None, &busy, now), BUSY_HOLD);
        // Other errors are answered at once.
        let wrong = TrackerError::WrongPassword;
        assert_eq!(hold("10.0.0.1", &victim, &wrong), Duration::ZERO);
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        let t = LoginThrottle::new(limits());
        let now = Instant::now();
        for n in 1..=4 {
            t.fail(ip(&format!("2001:db8::{n}")), &user("alice"), now);
        }
        assert!(t.admit(ip("2001:db8::99"), &user("bob"), now).is_err());
        t.admit(ip("2001:db8:0:1::1"), &user("bob"), now).unwrap();
    }

    #[test]
    fn signups_are_limited_per_address_per_hour() {
        let t = LoginThrottle::new(ThrottleLimits { signups_per_ip_per_hour: 2, ..limits() });
        let now = Instant::now();
        let a = ip("10.0.0.1");
        for _ in 0..2 {
            t.admit_signup(a, now).unwrap();
            t.signup_attempted(a, now);
        }
        assert!(t.admit_signup(a, now).is_err());
        t.admit_signup(ip("10.0.0.2"), now).unwrap();
        t.admit_signup(a, now + SIGNUP_WINDOW).unwrap();
    }

    #[test]
    fn tables_stay_bounded() {
        let mut table = Table::new();
        let now = Instant::now();
        for n in 0..(MAX_TRACKED as u32 + 10) {
            table.fail(IpAddr::from(n.to_be_bytes()), now, 3, Duration::from_secs(1));
        }
        assert!(table.records.len() <= MAX_TRACKED);
    }

    #[test]
    fn a_success_clears_only_its_own_address_and_user() {
        // Issue 21: alternating a login to one's own account with guesses at another.
        let t = LoginThrottle::new(ThrottleLimits::default());
        let now = Instant::now();
        let (a, me, victim) = (ip("10.0.0.1"), user("me"), user("victim"));
        let mut guesses = 0;
        for n in 0..300 {
            let now = now + Duration::from_millis(n);
            if t.admit(a, &victim, now).is_ok() {
                guesses += 1;
                t.fail(a, &victim, now);
            }
            let mine = Attempt { ip: a, key: PublicKey([2; 32]), user: &me, known: true };
            if t.admit_login(mine, now).is_ok() {
                t.login_succeeded(mine, now);
            }
        }
        let free = ThrottleLimits::default().failures_per_ip as usize;
        assert!(guesses <= free + 1, "{guesses} guesses");
    }

    #[test]
    fn a_known_device_is_never_locked_out_by_others_failures() {
        let t = LoginThrottle::new(limits());
        let now = Instant::now();
        let (shared, victim, alice) = (ip("10.0.0.1"), user("victim"), user("alice"));
        let phone = PublicKey([3; 32]);
        let mine = Attempt { ip: shared, key: phone, user: &alice, known: false };
        t.login_succeeded(mine, now);
        assert!(t.is_known(&phone, &alice, now));
        // 32 guessers on the same address, then from everywhere, at victim and at alice.
        for n in 0..32u8 {
            for who in [&victim, &alice] {
                let guess =
                    Attempt { ip: shared, key: PublicKey([100 + n; 32]), user: who, known: false };
                t.login_failed(guess, now);
                t.login_failed(Attempt { ip: ip(&format!("10.9.0.{n}")), ..guess }, now);
            }
        }
        assert!(t.admit(shared, &user("bob"), now).is_err(), "a new device waits");
        let known = Attempt { known: t.is_known(&phone, &alice, now), ..mine };
        t.admit_login(known, now).unwrap();
        // Its own failures hold it back, after its free ones.
        for _ in 0..=limits().failures_per_ip {
            t.login_failed(known, now);
        }
        assert!(t.admit_login(known, now).is_err());
    }

    #[test]
    fn right_logins_are_rate_limited_per_key_and_per_user() {
        let t = LoginThrottle::new(ThrottleLimits::default());
        let now = Instant::now();
        let alice = user("alice");
        let mut admitted = 0;
        for _ in 0..100 {
            let a = Attempt { ip: ip("10.0.0.1"), key: KEY, user: &alice, known: true };
            if t.admit_login(a, now).is_ok() {
                admitted += 1;
                t.login_succeeded(a, now);
            }
        }
        assert_eq!(admitted, KEY_LOGIN_BURST as usize);
        // Other keys, same user: up to the user's burst in all.
        for n in 0..100u8 {
            let a =
                Attempt { ip: ip("10.0.0.1"), key: PublicKey([n; 32]), user: &alice, known: false };
            if t.admit_login(a, now).is_ok() {
                admitted += 1;
                t.login_succeeded(a, now);
            }
        }
        assert_eq!(admitted, USER_LOGIN_BURST as usize);
        // The rate refills.
        let later = now + USER_LOGIN_EVERY.max(KEY_LOGIN_EVERY);
        let a =
            Attempt { ip: ip("10.0.0.1"), key: PublicKey([200; 32]), user: &alice, known: false };
        t.admit_login(a, later).unwrap();
    }

    #[test]
    fn probing_existing_names_costs_the_same_budget_as_signing_up() {
        let t = LoginThrottle::new(ThrottleLimits { signups_per_ip_per_hour: 3, ..limits() });
        let now = Instant::now();
        let a = ip("10.0.0.1");
        for _ in 0..3 {
            t.admit_signup(a, now).unwrap();
            t.signup_attempted(a, now);
        }
        assert!(t.admit_signup(a, now).is_err());
        t.admit_signup(a, now + SIGNUP_WINDOW).unwrap();
    }

    #[test]
    fn known_devices_and_buckets_stay_bounded() {
        let t = LoginThrottle::new(ThrottleLimits::default());
        let now = Instant::now();
        let someone = user("someone");
        for n in 0..(MAX_TRACKED as u32 + 10) {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&n.to_be_bytes());
            let a =
                Attempt { ip: ip("10.0.0.1"), key: PublicKey(key), user: &someone, known: false };
            t.known.lock().insert(a.key, someone.clone(), now);
            t.key_logins.lock().take(a.key, now);
        }
        assert!(t.known.lock().last_login.len() <= MAX_TRACKED);
        assert!(t.key_logins.lock().buckets.len() <= MAX_TRACKED);
    }
}

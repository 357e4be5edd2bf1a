//! Limits on password guessing and account creation, per source address and per user.
//!
//! - **Failed logins** are counted per source address (all users) and per user (all
//!   addresses). After a few free failures, each further failure doubles a backoff
//!   during which attempts are answered `TooManyAttempts` without hashing anything.
//! - A user's backoff applies only to addresses that have themselves failed lately: an
//!   attacker guessing alice's password from many addresses slows every one of them, but
//!   alice, on an address that has not failed, still logs in at once. (So a distributed
//!   guesser gets about one try per address, then the user's backoff.)
//! - **Account creations** are limited per address per hour.
//!
//! - **Refusals are held** on the guesser's connection (`refusal_hold`) for the wait they
//!   name, up to 2 s, before they are sent: a guesser that retries at once costs a
//!   sleeping thread, not a core. Other users' answers are never held.
//!
//! IPv6 addresses count by their /64, which one host usually holds in full. Each table
//! keeps at most `MAX_TRACKED` entries: stale ones go first, then the longest quiet.
//! Kept in memory, per tracker: a restart forgets, and three trackers give three budgets.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use common::message::TrackerError;
use common::UserId;

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

/// The address an attempt is counted under: IPv4 as it is, IPv6 by its /64.
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// The throttle of one tracker.
pub struct LoginThrottle {
    limits: ThrottleLimits,
    ips: Mutex<Table<IpAddr>>,
    users: Mutex<Table<UserId>>,
    signups: Mutex<Table<IpAddr>>,
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
            signups: Mutex::new(Table::new()),
        }
    }

    /// Whether a login of `user` from `ip` may have its password checked now.
    pub fn admit_login(&self, ip: IpAddr, user: &UserId, now: Instant) -> Result<(), TrackerError> {
        let ip = source(ip);
        let ips = self.ips.lock();
        if let Some(wait) = ips.blocked(&ip, now) {
            return Err(too_many(wait, "failed logins from this address"));
        }
        if ips.has_failed(&ip, now) {
            if let Some(wait) = self.users.lock().blocked(user, now) {
                return Err(too_many(wait, "failed logins for this user"));
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

    /// Counts a wrong password for `user` from `ip`.
    pub fn login_failed(&self, ip: IpAddr, user: &UserId, now: Instant) {
        let limits = &self.limits;
        self.ips.lock().fail(source(ip), now, limits.failures_per_ip, limits.max_ip_backoff);
        self.users.lock().fail(
            user.clone(),
            now,
            limits.failures_per_user,
            limits.max_user_backoff,
        );
    }

    /// A right password: the address's failures are forgotten (the user's stay, as other
    /// addresses may still be guessing).
    pub fn login_succeeded(&self, ip: IpAddr) {
        self.ips.lock().forget(&source(ip));
    }

    /// Counts an account creation from `ip`, or refuses it if the address had its hourly
    /// share.
    pub fn admit_signup(&self, ip: IpAddr, now: Instant) -> Result<(), TrackerError> {
        let limit = self.limits.signups_per_ip_per_hour;
        if limit == 0 {
            return Ok(());
        }
        let mut signups = self.signups.lock();
        if signups.count_in_window(source(ip), now, limit, SIGNUP_WINDOW) {
            return Ok(());
        }
        let since = signups.records.get(&source(ip)).map_or(now, |r| r.since);
        let wait = SIGNUP_WINDOW.saturating_sub(now.duration_since(since));
        Err(too_many(wait, "account creations from this address"))
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

    fn limits() -> ThrottleLimits {
        ThrottleLimits { failures_per_ip: 3, failures_per_user: 5, ..ThrottleLimits::default() }
    }

    #[test]
    fn an_address_is_blocked_after_its_free_failures_with_a_doubling_backoff() {
        let t = LoginThrottle::new(limits());
        let now = Instant::now();
        let (a, alice) = (ip("10.0.0.1"), user("alice"));
        for _ in 0..3 {
            t.admit_login(a, &alice, now).unwrap();
            t.login_failed(a, &alice, now);
        }
        t.admit_login(a, &alice, now).unwrap();
        t.login_failed(a, &alice, now);
        // Blocked for 1 s after the 4th failure, and other users from there too.
        assert!(t.admit_login(a, &user("bob"), now).is_err());
        let later = now + Duration::from_millis(1100);
        t.admit_login(a, &alice, later).unwrap();
        t.login_failed(a, &alice, later);
        let Err(TrackerError::TooManyAttempts { retry_after_secs, .. }) =
            t.admit_login(a, &alice, later)
        else {
            panic!("expected a backoff")
        };
        assert_eq!(retry_after_secs, 2);
        // A right password forgets the address's failures.
        t.login_succeeded(a);
        t.admit_login(a, &alice, later).unwrap();
    }

    #[test]
    fn a_user_under_attack_still_logs_in_from_a_clean_address() {
        let t = LoginThrottle::new(limits());
        let now = Instant::now();
        let alice = user("alice");
        // Six guessers, each under its own address's limit, push alice past hers.
        for n in 1..=6 {
            let guesser = ip(&format!("10.0.1.{n}"));
            t.admit_login(guesser, &alice, now).unwrap();
            t.login_failed(guesser, &alice, now);
        }
        assert!(t.admit_login(ip("10.0.1.1"), &alice, now).is_err(), "guessers wait");
        t.admit_login(ip("10.0.9.9"), &alice, now).unwrap();
    }

    #[test]
    fn guessing_makes_the_address_and_the_user_suspect_but_no_one_else() {
        let t = LoginThrottle::new(limits());
        let now = Instant::now();
        assert!(!t.is_suspect(ip("10.0.0.1"), &user("alice"), now));
        t.login_failed(ip("10.0.0.1"), &user("victim"), now);
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
        t.login_failed(ip("10.0.0.1"), &victim, now);
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
            t.login_failed(ip(&format!("2001:db8::{n}")), &user("alice"), now);
        }
        assert!(t.admit_login(ip("2001:db8::99"), &user("bob"), now).is_err());
        t.admit_login(ip("2001:db8:0:1::1"), &user("bob"), now).unwrap();
    }

    #[test]
    fn signups_are_limited_per_address_per_hour() {
        let t = LoginThrottle::new(ThrottleLimits { signups_per_ip_per_hour: 2, ..limits() });
        let now = Instant::now();
        let a = ip("10.0.0.1");
        t.admit_signup(a, now).unwrap();
        t.admit_signup(a, now).unwrap();
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
}

//! The seeder's memory of tickets and its budgets: pure, the clocks passed in (issue 22).
//!
//! `TicketBook` decides what to do with a ticket a downloader showed: accept it (the
//! tracker confirmed this very ticket before, and it has not expired), refuse it (expired,
//! claiming an impossible life, or refused by the tracker before), ask the tracker (a new
//! one, if the budgets of questions allow: `TokenBucket`s), or answer busy.
//!
//! Issue 21: made-up tickets cost the address that shows them, not the group. Each source
//! address (IPv6: /64) has its own budget of questions (`SOURCE_CHECKS_PER_SEC`), spent
//! before the seeder's overall one, and each ticket the tracker refuses costs its source
//! `REFUSED_COST` more (a debt it pays back at its own rate): a forger on one address gets
//! about one question every `REFUSED_COST / SOURCE_CHECKS_PER_SEC` seconds, and the
//! overall budget is left to everyone else. Real members' tickets are never refused, so
//! they never pay it. A refusal is charged when the tracker's answer lands: from a full
//! budget, the questions a forger has in flight at that moment (one per connection it
//! holds, so at most `admission::MAX_ADMITTED_PER_ADDRESS`) are asked before the debt
//! shows; after that the debt keeps it to its rate.
//!
//! Invariant: a ticket is accepted unasked only if the tracker confirmed that whole ticket
//! and it has not expired; every memory is bounded (`MAX_APPROVED`, `MAX_REFUSED`,
//! `MAX_SOURCES`).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Instant;

use common::message::Ticket;
/// A ticket that claims to live longer than this is forged: it is refused unasked.
pub use common::message::MAX_TICKET_LIFETIME_SECS;

/// Approved tickets remembered at most (expired ones are dropped first).
pub const MAX_APPROVED: usize = 4096;
/// Refused tickets remembered at most, so that the same forged ticket costs one question.
pub const MAX_REFUSED: usize = 1024;
/// Questions about new tickets one source address may cause a second, in bursts of
/// `SOURCE_CHECKS_BURST`.
pub const SOURCE_CHECKS_PER_SEC: f64 = 2.0;
/// The burst of one source address: as many as the serving slots it may hold
/// (`admission::MAX_ADMITTED_PER_ADDRESS`), so a flash crowd on one host is asked about at
/// once.
pub const SOURCE_CHECKS_BURST: f64 = 32.0;
/// What a ticket the tracker refused costs its source, in questions (it owes them, down to
/// minus a burst, and pays them back at its own rate).
pub const REFUSED_COST: f64 = 8.0;
/// Source addresses whose budgets are kept at most: the one with the most tokens left is
/// forgotten first (forgetting gives a budget back in full: it gains least).
pub const MAX_SOURCES: usize = 4096;

/// What to do with a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The tracker confirmed this ticket before: accept it.
    Known,
    /// It has expired.
    Expired,
    /// Forged or altered: it claims an impossible life, or the tracker refused it before.
    Forged,
    /// A new ticket, and a question to the tracker was budgeted: ask it.
    Ask,
    /// A new ticket, and the seeder's budget of questions is spent for now.
    Busy,
    /// A new ticket, and its source address spent its own budget for now.
    SourceBusy,
}

/// The tickets the tracker confirmed or refused, and the budget of questions about new ones.
#[derive(Debug)]
pub struct TicketBook {
    approved: HashSet<Ticket>,
    refused: HashSet<Ticket>,
    questions: TokenBucket,
    by_source: HashMap<IpAddr, TokenBucket>,
}

impl TicketBook {
    /// A book that asks the tracker at most `questions_per_sec` times a second about new
    /// tickets, in bursts of twice as many.
    pub fn new(questions_per_sec: f64, now: Instant) -> TicketBook {
        TicketBook {
            approved: HashSet::new(),
            refused: HashSet::new(),
            questions: TokenBucket::new(questions_per_sec, 2.0 * questions_per_sec, now),
            by_source: HashMap::new(),
        }
    }

    /// What to do with `ticket`, shown from `source`, at `unix_now` (seconds) and `now`;
    /// `Ask` takes a question from the source's budget and from the seeder's.
    pub fn judge(
        &mut self,
        ticket: &Ticket,
        source: IpAddr,
        unix_now: u64,
        now: Instant,
    ) -> Verdict {
        if ticket.expires < unix_now {
            return Verdict::Expired;
        }
        if self.approved.contains(ticket) {
            return Verdict::Known;
        }
        if ticket.expires > unix_now.saturating_add(MAX_TICKET_LIFETIME_SECS)
            || self.refused.contains(ticket)
        {
            return Verdict::Forged;
        }
        let mine = budget_of(&mut self.by_source, source, now);
        if !mine.has_token(now) {
            return Verdict::SourceBusy;
        }
        if !self.questions.take(now) {
            return Verdict::Busy;
        }
        mine.charge(1.0, now);
        Verdict::Ask
    }

    /// The tracker confirmed `ticket` (at `unix_now`).
    pub fn approve(&mut self, ticket: Ticket, unix_now: u64) {
        self.approved.retain(|t| t.expires >= unix_now);
        if self.approved.len() >= MAX_APPROVED {
            self.approved.clear();
        }
        self.approved.insert(ticket);
    }

    /// The tracker refused `ticket`, shown from `source`: that source pays for it.
    pub fn refuse(&mut self, ticket: Ticket, source: IpAddr, now: Instant) {
        budget_of(&mut self.by_source, source, now).charge(REFUSED_COST, now);
        if self.refused.len() >= MAX_REFUSED {
            self.refused.clear();
        }
        self.refused.insert(ticket);
    }
}

/// The budget of `source` in `budgets`, made (a full one) if it has none, keeping at most
/// `MAX_SOURCES`.
fn budget_of(
    budgets: &mut HashMap<IpAddr, TokenBucket>,
    source: IpAddr,
    now: Instant,
) -> &mut TokenBucket {
    if !budgets.contains_key(&source) && budgets.len() >= MAX_SOURCES {
        // Forgetting a budget gives it back in full: forget the one that gains least.
        let victim = budgets
            .iter_mut()
            .map(|(ip, b)| {
                b.refill(now);
                (*ip, b.tokens)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(ip, _)| ip);
        if let Some(victim) = victim {
            budgets.remove(&victim);
        }
    }
    budgets
        .entry(source)
        .or_insert_with(|| TokenBucket::new(SOURCE_CHECKS_PER_SEC, SOURCE_CHECKS_BURST, now))
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket { rate, burst, tokens: burst, refilled: now }
    }

    /// Takes a token at `now`, if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        if !self.has_token(now) {
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    /// Whether a token is there at `now` (none is taken).
    pub fn has_token(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    /// Takes `cost` tokens at `now`, going into debt if need be (down to minus a burst):
    /// the bucket then gives nothing until it is paid back.
    pub fn charge(&mut self, cost: f64, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens - cost).max(-self.burst);
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled = self.refilled.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::{GroupId, PublicKey, Sha1Digest, UserId};
    use proptest::prelude::*;
    use std::time::Duration;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    fn ticket(expires: u64, mac: u8) -> Ticket {
        Ticket {
            holder: PublicKey([1; 32]),
            user: UserId::new("bob").unwrap(),
            group: GroupId::new("g").unwrap(),
            digest: Sha1Digest([2; 20]),
            expires,
            mac: [mac; 20],
        }
    }

    #[test]
    fn a_confirmed_ticket_is_known_until_it_expires_and_a_refused_one_is_never_asked_again() {
        let now = Instant::now();
        let mut book = TicketBook::new(20.0, now);
        let good = ticket(1060, 1);
        assert_eq!(book.judge(&good, ip(1), 1000, now), Verdict::Ask);
        book.approve(good.clone(), 1000);
        assert_eq!(book.judge(&good, ip(1), 1030, now), Verdict::Known);
        assert_eq!(book.judge(&good, ip(1), 1061, now), Verdict::Expired);
        // The same ticket with another MAC is another ticket.
        let altered = ticket(1060, 9);
        assert_eq!(book.judge(&altered, ip(1), 1000, now), Verdict::Ask);
        book.refuse(altered.clone(), ip(1), now);
        assert_eq!(book.judge(&altered, ip(1), 1000, now), Verdict::Forged);
        // A life no tracker gives is forged, unasked.
        assert_eq!(book.judge(&ticket(1000 + 3601, 3), ip(1), 1000, now), Verdict::Forged);
    }

    #[test]
    fn new_tickets_beyond_the_budget_are_busy_until_it_refills() {
        let now = Instant::now();
        let mut book = TicketBook::new(20.0, now);
        let verdicts: Vec<Verdict> =
            (0..41u8).map(|i| book.judge(&ticket(1060, i), ip(i % 8), 1000, now)).collect();
        assert!(verdicts[..40].iter().all(|v| *v == Verdict::Ask));
        assert_eq!(verdicts[40], Verdict::Busy);
        let later = now + Duration::from_millis(100);
        assert_eq!(book.judge(&ticket(1060, 200), ip(1), 1000, later), Verdict::Ask);
        assert_eq!(book.judge(&ticket(1060, 201), ip(2), 1000, later), Verdict::Ask);
        assert_eq!(book.judge(&ticket(1060, 202), ip(3), 1000, later), Verdict::Busy);
    }

    /// Issue 21: made-up tickets from one address, each refused by the tracker, get that
    /// address a question now and then, and leave the seeder's budget to the others.
    #[test]
    fn made_up_tickets_spend_their_own_addresss_budget_not_the_others() {
        let start = Instant::now();
        let mut book = TicketBook::new(20.0, start);
        let forger = ip(66);
        let mut asked = 0;
        let mut mac = 0u64;
        let mut made_up = || {
            mac += 1;
            let mut t = ticket(1060, 0);
            t.mac[..8].copy_from_slice(&mac.to_be_bytes());
            t
        };
        // A thousand a second for ten seconds.
        for ms in 0..10_000u64 {
            let now = start + Duration::from_millis(ms);
            let forged = made_up();
            match book.judge(&forged, forger, 1000, now) {
                Verdict::Ask => {
                    asked += 1;
                    book.refuse(forged, forger, now);
                }
                verdict => assert_eq!(verdict, Verdict::SourceBusy),
            }
        }
        // Four at first (a refusal costs 8 of its 32), then one every 4.5 s.
        assert!(asked <= 7, "the forger's address asked {asked} times");
        // Meanwhile another address is asked about at once, a whole burst.
        let later = start + Duration::from_secs(10);
        for _ in 0..SOURCE_CHECKS_BURST as usize {
            assert_eq!(book.judge(&made_up(), ip(1), 1000, later), Verdict::Ask);
        }
        assert_eq!(book.judge(&made_up(), ip(1), 1000, later), Verdict::SourceBusy);
    }

    /// However many addresses ask, at most `MAX_SOURCES` budgets are kept, and an address
    /// that spent its budget is not forgotten while fuller ones are there to forget.
    #[test]
    fn the_table_of_budgets_stays_bounded_and_forgets_full_budgets_first() {
        let now = Instant::now();
        let mut book = TicketBook::new(1e9, now);
        let spender = ip(1);
        for _ in 0..SOURCE_CHECKS_BURST as usize {
            assert_eq!(book.judge(&ticket(2000, 0), spender, 1000, now), Verdict::Ask);
        }
        for i in 0..MAX_SOURCES + 600 {
            let source = IpAddr::from((0x0b00_0000 + i as u32).to_be_bytes());
            let _ = book.judge(&ticket(2000, 0), source, 1000, now);
        }
        assert!(book.by_source.len() <= MAX_SOURCES);
        assert_eq!(book.judge(&ticket(2000, 0), spender, 1000, now), Verdict::SourceBusy);
    }

    proptest! {
        /// Whatever a set of addresses does, one address causes at most its burst plus its
        /// rate times the time elapsed in questions, and the table of budgets stays bounded.
        #[test]
        fn an_address_never_asks_more_than_its_budget(
            steps in proptest::collection::vec((0u8..4, 0u64..300, any::<bool>()), 1..300)
        ) {
            let start = Instant::now();
            let mut book = TicketBook::new(1e9, start);
            let mut now = start;
            let mut asked = [0u32; 4];
            for (n, (source, ms, refused)) in steps.into_iter().enumerate() {
                now += Duration::from_millis(ms);
                let mut t = ticket(2000, 0);
                t.mac[..8].copy_from_slice(&(n as u64).to_be_bytes());
                if book.judge(&t, ip(source), 1000, now) == Verdict::Ask {
                    asked[usize::from(source)] += 1;
                    if refused {
                        book.refuse(t, ip(source), now);
                    }
                }
                let allowed =
                    SOURCE_CHECKS_BURST + SOURCE_CHECKS_PER_SEC * (now - start).as_secs_f64();
                prop_assert!(f64::from(asked[usize::from(source)]) <= allowed + 1e-9);
            }
        }


        /// Over any run of takes, a bucket never gives more than its burst plus its rate
        /// times the time elapsed.
        #[test]
        fn a_bucket_never_gives_more_than_burst_plus_rate(steps in proptest::collection::vec(0u64..500, 1..200)) {
            let start = Instant::now();
            let mut bucket = TokenBucket::new(20.0, 40.0, start);
            let mut now = start;
            let mut taken = 0u32;
            for ms in steps {
                now += Duration::from_millis(ms);
                if bucket.take(now) {
                    taken += 1;
                }
                let allowed = 40.0 + 20.0 * (now - start).as_secs_f64();
                prop_assert!(f64::from(taken) <= allowed + 1e-9);
            }
        }

        /// The book's memories stay bounded however many tickets it sees.
        #[test]
        fn the_book_stays_bounded(n in 0usize..6000) {
            let mut book = TicketBook::new(1e9, Instant::now());
            for i in 0..n {
                let mut t = ticket(2000, 0);
                t.mac[..8].copy_from_slice(&(i as u64).to_be_bytes());
                book.approve(t.clone(), 1000);
                book.refuse(t, ip((i % 250) as u8), Instant::now());
            }
            prop_assert!(book.approved.len() <= MAX_APPROVED);
            prop_assert!(book.refused.len() <= MAX_REFUSED);
        }
    }
}

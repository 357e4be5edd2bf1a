//! The seeder's memory of tickets and its budgets: pure, the clocks passed in (issue 22).
//!
//! `TicketBook` decides what to do with a ticket a downloader showed: accept it (the
//! tracker confirmed this very ticket before, and it has not expired), refuse it (expired,
//! claiming an impossible life, or refused by the tracker before), ask the tracker (a new
//! one, if the budget of questions allows: `TokenBucket`), or answer busy. `Pacer` spaces
//! the pieces of all connections to an upload cap.
//!
//! Invariant: a ticket is accepted unasked only if the tracker confirmed that whole ticket
//! and it has not expired; both memories are bounded (`MAX_APPROVED`, `MAX_REFUSED`).

use std::collections::HashSet;
use std::time::Instant;

use common::message::Ticket;

/// Approved tickets remembered at most (expired ones are dropped first).
pub const MAX_APPROVED: usize = 4096;
/// Refused tickets remembered at most, so that the same forged ticket costs one question.
pub const MAX_REFUSED: usize = 1024;
/// A ticket that claims to live longer than this is forged: it is refused unasked.
pub const MAX_TICKET_LIFETIME_SECS: u64 = 3600;

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
    /// A new ticket, and the budget of questions is spent for now.
    Busy,
}

/// The tickets the tracker confirmed or refused, and the budget of questions about new ones.
#[derive(Debug)]
pub struct TicketBook {
    approved: HashSet<Ticket>,
    refused: HashSet<Ticket>,
    questions: TokenBucket,
}

impl TicketBook {
    /// A book that asks the tracker at most `questions_per_sec` times a second about new
    /// tickets, in bursts of twice as many.
    pub fn new(questions_per_sec: f64, now: Instant) -> TicketBook {
        TicketBook {
            approved: HashSet::new(),
            refused: HashSet::new(),
            questions: TokenBucket::new(questions_per_sec, 2.0 * questions_per_sec, now),
        }
    }

    /// What to do with `ticket` at `unix_now` (seconds) and `now`; `Ask` takes a question
    /// from the budget.
    pub fn judge(&mut self, ticket: &Ticket, unix_now: u64, now: Instant) -> Verdict {
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
        match self.questions.take(now) {
            true => Verdict::Ask,
            false => Verdict::Busy,
        }
    }

    /// The tracker confirmed `ticket` (at `unix_now`).
    pub fn approve(&mut self, ticket: Ticket, unix_now: u64) {
        self.approved.retain(|t| t.expires >= unix_now);
        if self.approved.len() >= MAX_APPROVED {
            self.approved.clear();
        }
        self.approved.insert(ticket);
    }

    /// The tracker refused `ticket`.
    pub fn refuse(&mut self, ticket: Ticket) {
        if self.refused.len() >= MAX_REFUSED {
            self.refused.clear();
        }
        self.refused.insert(ticket);
    }
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
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled = self.refilled.max(now);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::{GroupId, PublicKey, Sha1Digest, UserId};
    use proptest::prelude::*;
    use std::time::Duration;

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
        assert_eq!(book.judge(&good, 1000, now), Verdict::Ask);
        book.approve(good.clone(), 1000);
        assert_eq!(book.judge(&good, 1030, now), Verdict::Known);
        assert_eq!(book.judge(&good, 1061, now), Verdict::Expired);
        // The same ticket with another MAC is another ticket.
        let altered = ticket(1060, 9);
        assert_eq!(book.judge(&altered, 1000, now), Verdict::Ask);
        book.refuse(altered.clone());
        assert_eq!(book.judge(&altered, 1000, now), Verdict::Forged);
        // A life no tracker gives is forged, unasked.
        assert_eq!(book.judge(&ticket(1000 + 3601, 3), 1000, now), Verdict::Forged);
    }

    #[test]
    fn new_tickets_beyond_the_budget_are_busy_until_it_refills() {
        let now = Instant::now();
        let mut book = TicketBook::new(20.0, now);
        let verdicts: Vec<Verdict> =
            (0..41).map(|i| book.judge(&ticket(1060, i as u8), 1000, now)).collect();
        assert!(verdicts[..40].iter().all(|v| *v == Verdict::Ask));
        assert_eq!(verdicts[40], Verdict::Busy);
        let later = now + Duration::from_millis(100);
        assert_eq!(book.judge(&ticket(1060, 200), 1000, later), Verdict::Ask);
        assert_eq!(book.judge(&ticket(1060, 201), 1000, later), Verdict::Ask);
        assert_eq!(book.judge(&ticket(1060, 202), 1000, later), Verdict::Busy);
    }

    proptest! {
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
                book.refuse(t);
            }
            prop_assert!(book.approved.len() <= MAX_APPROVED);
            prop_assert!(book.refused.len() <= MAX_REFUSED);
        }
    }
}

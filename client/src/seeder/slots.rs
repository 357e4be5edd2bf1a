//! How many pieces this peer sends at once, all its serving connections together (issue
//! 19: upload slots, as BitTorrent clients unchoke a few peers at a time).
//!
//! A peer whose uplink is the bottleneck and that sends a piece to each of sixteen
//! downloaders at once finishes all sixteen at the same moment, a sixteenth of its rate
//! each: nobody has a verified piece to pass on for sixteen pieces' time. Sending `SLOTS`
//! at a time, in the order asked, the first piece is whole after one piece's time at full
//! rate and its downloader shares it while the next go out; the uplink carries as much.
//! With `TCP_NOTSENT_LOWAT` on the serving sockets (`LOW_WATER`), a piece's write returns
//! once it is nearly all on the wire, not when it is copied into a socket buffer of
//! megabytes, so a slot is held for as long as the piece really takes.
//!
//! The slots are for the pieces of a complete file (a seeder's): its fresh pieces are what
//! a crowd waits for. A downloading peer passes pieces on without them (in one run with
//! its connections in the slots too, the leechers' uplinks of a crowd of 16 carried about
//! 71 MB/s of their 80, against 76 without).
//!
//! A slot held longer than `HOLD_MAX` stops counting: a slow (or hostile, slowly reading)
//! downloader delays the others by at most that much, and the queue always moves, at
//! least `SLOTS` pieces each `HOLD_MAX`. Waiters are admitted first come, first served.
//!
//! `SlotBook` is the pure core (the clock passed in); `UploadSlots` the blocking wrapper
//! the serving threads share.
//!
//! Invariant: at most `SLOTS` leases younger than `HOLD_MAX` at any time; a ticket is
//! admitted only when every ticket taken before it was admitted or gave up.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Pieces sent at once, at most (counting only those sent for less than `HOLD_MAX`).
pub const SLOTS: usize = 2;
/// A slot held this long frees up for the next waiter, though its piece is still going.
pub const HOLD_MAX: Duration = Duration::from_secs(1);
/// `TCP_NOTSENT_LOWAT` of serving sockets: a write returns once at most this much of it
/// is not yet sent.
pub const LOW_WATER: u32 = 128 * 1024;

/// A waiter's place in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// A slot taken (by `SlotBook::try_admit`), until `SlotBook::release`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseId(u64);

/// What a waiter at the queue is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go: the slot is yours.
    Now(LeaseId),
    /// Not yet; look again by this time at the latest (a slot ages out then), or when a
    /// slot is released.
    Wait(Option<Instant>),
}

/// The queue of waiters and the slots held: the pure core.
#[derive(Debug)]
pub struct SlotBook {
    slots: usize,
    hold_max: Duration,
    next: u64,
    waiting: VecDeque<Ticket>,
    /// Leases not released yet, with when they were taken.
    leases: Vec<(LeaseId, Instant)>,
}

impl SlotBook {
    /// A book of `slots` slots (at least 1), each counting for `hold_max` at most.
    pub fn new(slots: usize, hold_max: Duration) -> SlotBook {
        SlotBook {
            slots: slots.max(1),
            hold_max,
            next: 0,
            waiting: VecDeque::new(),
            leases: Vec::new(),
        }
    }

    /// A place at the end of the queue.
    pub fn enqueue(&mut self) -> Ticket {
        let ticket = Ticket(self.next);
        self.next += 1;
        self.waiting.push_back(ticket);
        ticket
    }

    /// Admits `ticket` if it is first in the queue and a slot is free at `now`.
    pub fn try_admit(&mut self, ticket: Ticket, now: Instant) -> Admit {
        // Leases that aged out no longer count; their pieces finish without a slot.
        let hold_max = self.hold_max;
        self.leases.retain(|&(_, at)| now.saturating_duration_since(at) < hold_max);
        let first = self.waiting.front() == Some(&ticket);
        if first && self.leases.len() < self.slots {
            self.waiting.pop_front();
            let lease = LeaseId(self.next);
            self.next += 1;
            self.leases.push((lease, now));
            return Admit::Now(lease);
        }
        let frees_at = match self.leases.len() < self.slots {
            // A slot is free: this waiter follows the one before it, when that one goes.
            true => None,
            false => self.leases.iter().map(|&(_, at)| at + hold_max).min(),
        };
        Admit::Wait(frees_at)
    }

    /// `ticket` leaves the queue without a slot.
    pub fn give_up(&mut self, ticket: Ticket) {
        self.waiting.retain(|&t| t != ticket);
    }

    /// The piece of `lease` is sent: its slot is free.
    pub fn release(&mut self, lease: LeaseId) {
        self.leases.retain(|&(id, _)| id != lease);
    }

    /// How many wait.
    pub fn n_waiting(&self) -> usize {
        self.waiting.len()
    }
}

/// The upload slots every serving connection of this peer shares.
#[derive(Debug)]
pub struct UploadSlots {
    book: Mutex<SlotBook>,
    changed: Condvar,
}

impl Default for UploadSlots {
    fn default() -> UploadSlots {
        UploadSlots::new(SLOTS, HOLD_MAX)
    }
}

/// A slot held; freed when dropped.
pub struct Lease<'a> {
    slots: &'a UploadSlots,
    id: LeaseId,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.slots.book.lock().release(self.id);
        self.slots.changed.notify_all();
    }
}

impl UploadSlots {
    /// `slots` slots, each counting for `hold_max` at most.
    pub fn new(slots: usize, hold_max: Duration) -> UploadSlots {
        UploadSlots { book: Mutex::new(SlotBook::new(slots, hold_max)), changed: Condvar::new() }
    }

    /// Waits for a slot, first come first served, until `deadline` at the latest (`None`
    /// then: the caller's connection is due to close).
    pub fn acquire(&self, deadline: Instant) -> Option<Lease<'_>> {
        let mut book = self.book.lock();
        let ticket = book.enqueue();
        loop {
            let now = Instant::now();
            match book.try_admit(ticket, now) {
                Admit::Now(id) => {
                    drop(book);
                    // The next in the queue may be admitted too.
                    self.changed.notify_all();
                    return Some(Lease { slots: self, id });
                }
                Admit::Wait(frees_at) => {
                    if now >= deadline {
                        book.give_up(ticket);
                        drop(book);
                        self.changed.notify_all();
                        return None;
                    }
                    let until = frees_at.map_or(deadline, |at| at.min(deadline));
                    self.changed.wait_until(&mut book, until);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const HOLD: Duration = Duration::from_secs(1);

    fn admitted(admit: Admit) -> LeaseId {
        match admit {
            Admit::Now(id) => id,
            Admit::Wait(_) => panic!("expected a slot, got {admit:?}"),
        }
    }

    #[test]
    fn two_go_at_once_and_the_third_when_one_is_sent() {
        let t0 = Instant::now();
        let mut book = SlotBook::new(2, HOLD);
        let (a, b, c) = (book.enqueue(), book.enqueue(), book.enqueue());
        let first = admitted(book.try_admit(a, t0));
        admitted(book.try_admit(b, t0));
        // Both slots are held: the third waits until the older ages out at the latest.
        assert_eq!(book.try_admit(c, t0), Admit::Wait(Some(t0 + HOLD)));
        book.release(first);
        admitted(book.try_admit(c, t0 + Duration::from_millis(100)));
        assert_eq!(book.n_waiting(), 0);
    }

    #[test]
    fn waiters_go_in_the_order_they_came_even_when_a_slot_is_free() {
        let t0 = Instant::now();
        let mut book = SlotBook::new(2, HOLD);
        let (a, b) = (book.enqueue(), book.enqueue());
        // The second looks first: a slot is free, but the first is ahead of it.
        assert_eq!(book.try_admit(b, t0), Admit::Wait(None));
        admitted(book.try_admit(a, t0));
        admitted(book.try_admit(b, t0));
    }

    #[test]
    fn a_slot_held_too_long_frees_up_and_one_that_gave_up_holds_no_one_back() {
        let t0 = Instant::now();
        let mut book = SlotBook::new(1, HOLD);
        let (slow, quitter, next) = (book.enqueue(), book.enqueue(), book.enqueue());
        admitted(book.try_admit(slow, t0));
        assert_eq!(book.try_admit(quitter, t0), Admit::Wait(Some(t0 + HOLD)));
        book.give_up(quitter);
        // The slow reader still sends, but its slot counted for `HOLD` only.
        assert_eq!(book.try_admit(next, t0 + HOLD / 2), Admit::Wait(Some(t0 + HOLD)));
        admitted(book.try_admit(next, t0 + HOLD));
    }

    #[test]
    fn threads_never_send_more_than_the_slots_at_once_and_a_deadline_ends_a_wait() {
        let slots = Arc::new(UploadSlots::new(2, Duration::from_secs(30)));
        let sending = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (slots, sending, most) = (slots.clone(), sending.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let deadline = Instant::now() + Duration::from_secs(30);
                        let Some(_lease) = slots.acquire(deadline) else { panic!("no slot") };
                        let now = sending.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        sending.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a sender panicked");
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most} sent at once");
        // Both slots held: a waiter whose deadline passes leaves the queue with nothing.
        let _a = slots.acquire(Instant::now() + Duration::from_secs(1));
        let _b = slots.acquire(Instant::now() + Duration::from_secs(1));
        assert!(slots.acquire(Instant::now() + Duration::from_millis(20)).is_none());
        assert_eq!(slots.book.lock().n_waiting(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue,
        /// Look for the waiter at this position in the queue (modulo its length).
        Admit(usize),
        /// Release the lease at this position (modulo).
        Release(usize),
        GiveUp(usize),
        /// The clock moves this many milliseconds.
        Tick(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Enqueue),
            4 => (0usize..8).prop_map(Op::Admit),
            2 => (0usize..8).prop_map(Op::Release),
            1 => (0usize..8).prop_map(Op::GiveUp),
            2 => (0u64..700).prop_map(Op::Tick),
        ]
    }

    proptest! {
        /// Whatever happens: at most `slots` leases younger than the hold time, and
        /// waiters are admitted in the order they came.
        #[test]
        fn slots_are_never_exceeded_and_order_is_kept(
            slots in 1usize..4,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut book = SlotBook::new(slots, HOLD);
            let mut queue: Vec<Ticket> = Vec::new();
            let mut held: Vec<(LeaseId, Instant)> = Vec::new();
            let mut last_admitted: Option<u64> = None;
            for op in ops {
                match op {
                    Op::Enqueue => queue.push(book.enqueue()),
                    Op::Admit(i) if !queue.is_empty() => {
                        let ticket = queue[i % queue.len()];
                        if let Admit::Now(lease) = book.try_admit(ticket, now) {
                            prop_assert_eq!(ticket, queue[0], "admitted out of turn");
                            if let Some(last) = last_admitted {
                                prop_assert!(ticket.0 > last);
                            }
                            last_admitted = Some(ticket.0);
                            queue.remove(0);
                            held.push((lease, now));
                        }
                    }
                    Op::Release(i) if !held.is_empty() => {
                        let (lease, _) = held.remove(i % held.len());
                        book.release(lease);
                    }
                    Op::GiveUp(i) if !queue.is_empty() => {
                        book.give_up(queue.remove(i % queue.len()));
                    }
                    Op::Tick(ms) => now += Duration::from_millis(ms),
                    _ => {}
                }
                let young = held.iter().filter(|&&(_, at)| now - at < HOLD).count();
                prop_assert!(young <= slots, "{} slots held young, of {}", young, slots);
                prop_assert_eq!(book.n_waiting(), queue.len());
            }
        }
    }
}

//! Linearizable reads batched behind ReadIndex rounds (issue 22): pure bookkeeping, driven
//! by the Raft thread (`raft_node`).
//!
//! At most one ReadIndex round is in flight. A read that arrives while none is starts one;
//! reads that arrive while one is in flight wait for the *next* round, which starts as
//! soon as the current one ends (confirmed or failed). So any number of concurrent reads
//! cost one round each round trip, and every read is served by a round that started after
//! it arrived: the index that round confirms covers every write acknowledged before the
//! read (a round that started earlier might not).
//!
//! Invariant: readers wait only while a round is in flight, and each reader leaves
//! exactly once (with its round's confirmation or failure).

use std::time::{Duration, Instant};

/// The reads waiting for ReadIndex rounds; `R` is how a reader is answered.
#[derive(Debug)]
pub struct ReadRounds<R> {
    /// The number of the last round started (rounds are numbered from 1).
    last_round: u64,
    in_flight: Option<Round<R>>,
    /// Readers that arrived while the round in flight was: the next round's.
    next: Vec<R>,
}

#[derive(Debug)]
struct Round<R> {
    id: u64,
    started: Instant,
    readers: Vec<R>,
}

/// A round to start now: ask the Raft node for a ReadIndex with this number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Start(pub u64);

impl<R> Default for ReadRounds<R> {
    fn default() -> ReadRounds<R> {
        ReadRounds { last_round: 0, in_flight: None, next: Vec::new() }
    }
}

impl<R> ReadRounds<R> {
    /// A reader arrives at `now`: it starts a round if none is in flight, else it waits
    /// for the next one.
    pub fn arrive(&mut self, reader: R, now: Instant) -> Option<Start> {
        if self.in_flight.is_some() {
            self.next.push(reader);
            return None;
        }
        Some(self.start(vec![reader], now))
    }

    /// Round `id` was confirmed: its readers (each to be answered once the node applied
    /// up to the confirmed index), and the next round to start if readers wait for one.
    /// `None` if `id` is not the round in flight (one failed or expired before).
    pub fn confirmed(&mut self, id: u64, now: Instant) -> Option<(Vec<R>, Option<Start>)> {
        if self.in_flight.as_ref().is_none_or(|round| round.id != id) {
            return None;
        }
        let round = self.in_flight.take()?;
        Some((round.readers, self.start_next(now)))
    }

    /// The round in flight failed (the leader changed, or no confirmation came in time):
    /// its readers, to be told so, and the next round to start if readers wait for one
    /// (`start_next` false: no leader to ask; the waiting readers fail too).
    pub fn fail(&mut self, start_next: bool, now: Instant) -> (Vec<R>, Option<Start>) {
        let mut failed = self.in_flight.take().map(|round| round.readers).unwrap_or_default();
        if !start_next {
            failed.append(&mut self.next);
            return (failed, None);
        }
        (failed, self.start_next(now))
    }

    /// Whether the round in flight started more than `timeout` before `now`.
    pub fn expired(&self, now: Instant, timeout: Duration) -> bool {
        self.in_flight.as_ref().is_some_and(|round| now.duration_since(round.started) >= timeout)
    }

    /// Readers waiting, in the round in flight or for the next.
    pub fn len(&self) -> usize {
        self.in_flight.as_ref().map_or(0, |round| round.readers.len()) + self.next.len()
    }

    /// Whether no reader waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn start_next(&mut self, now: Instant) -> Option<Start> {
        if self.next.is_empty() {
            return None;
        }
        let readers = std::mem::take(&mut self.next);
        Some(self.start(readers, now))
    }

    fn start(&mut self, readers: Vec<R>, now: Instant) -> Start {
        self.last_round += 1;
        self.in_flight = Some(Round { id: self.last_round, started: now, readers });
        Start(self.last_round)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn readers_arriving_during_a_round_share_the_next() {
        let now = Instant::now();
        let mut rounds = ReadRounds::default();
        assert_eq!(rounds.arrive('a', now), Some(Start(1)));
        assert_eq!(rounds.arrive('b', now), None);
        assert_eq!(rounds.arrive('c', now), None);
        assert_eq!(rounds.confirmed(1, now), Some((vec!['a'], Some(Start(2)))));
        assert_eq!(rounds.arrive('d', now), None);
        assert_eq!(rounds.confirmed(1, now), None, "a round confirms once");
        assert_eq!(rounds.confirmed(2, now), Some((vec!['b', 'c'], Some(Start(3)))));
        assert_eq!(rounds.confirmed(3, now), Some((vec!['d'], None)));
        assert!(rounds.is_empty());
        assert_eq!(rounds.arrive('e', now), Some(Start(4)));
    }

    #[test]
    fn a_failed_round_fails_its_readers_and_the_next_starts_or_fails_too() {
        let now = Instant::now();
        let mut rounds = ReadRounds::default();
        assert_eq!(rounds.arrive(1, now), Some(Start(1)));
        assert_eq!(rounds.arrive(2, now), None);
        assert!(!rounds.expired(now, Duration::from_secs(3)));
        assert!(rounds.expired(now + Duration::from_secs(3), Duration::from_secs(3)));
        assert_eq!(rounds.fail(true, now), (vec![1], Some(Start(2))));
        assert_eq!(rounds.arrive(3, now), None);
        assert_eq!(rounds.fail(false, now), (vec![2, 3], None));
        assert!(rounds.is_empty());
        assert_eq!(rounds.confirmed(2, now), None);
    }

    #[derive(Debug, Clone)]
    enum Event {
        Arrive,
        ConfirmCurrent,
        ConfirmStale(u64),
        Fail { start_next: bool },
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => Just(Event::Arrive),
            3 => Just(Event::ConfirmCurrent),
            1 => (0u64..8).prop_map(Event::ConfirmStale),
            1 => any::<bool>().prop_map(|start_next| Event::Fail { start_next }),
        ]
    }

    proptest! {
        /// Every reader leaves exactly once; one confirmed serves it only if its round
        /// started at or after its arrival (linearizability); readers wait only while a
        /// round is in flight.
        #[test]
        fn every_read_is_served_once_by_a_round_started_after_it(
            events in proptest::collection::vec(event(), 0..200)
        ) {
            let now = Instant::now();
            let mut rounds = ReadRounds::default();
            let mut arrived: HashMap<u32, usize> = HashMap::new();
            let mut left: HashMap<u32, usize> = HashMap::new();
            let mut started: HashMap<u64, usize> = HashMap::new();
            let mut current: Option<u64> = None;
            let mut next_reader = 0u32;
            for (t, event) in events.into_iter().enumerate() {
                let mut start = None;
                match event {
                    Event::Arrive => {
                        arrived.insert(next_reader, t);
                        start = rounds.arrive(next_reader, now);
                        next_reader += 1;
                    }
                    Event::ConfirmCurrent | Event::ConfirmStale(_) => {
                        let id = match event {
                            Event::ConfirmStale(id) => id,
                            _ => current.unwrap_or(0),
                        };
                        match rounds.confirmed(id, now) {
                            Some((readers, next)) => {
                                prop_assert_eq!(Some(id), current);
                                for r in readers {
                                    prop_assert!(arrived[&r] <= started[&id]);
                                    prop_assert!(left.insert(r, t).is_none());
                                }
                                current = None;
                                start = next;
                            }
                            None => prop_assert_ne!(Some(id), current),
                        }
                    }
                    Event::Fail { start_next } => {
                        let (readers, next) = rounds.fail(start_next, now);
                        for r in readers {
                            prop_assert!(left.insert(r, t).is_none());
                        }
                        current = None;
                        start = next;
                    }
                }
                if let Some(Start(id)) = start {
                    prop_assert!(current.is_none(), "two rounds in flight");
                    prop_assert!(started.insert(id, t).is_none());
                    current = Some(id);
                }
                prop_assert_eq!(rounds.len(), arrived.len() - left.len());
                prop_assert!(rounds.is_empty() || current.is_some(), "readers wait for nothing");
            }
        }
    }
}

//! Notices: lines for the user that come from other threads (a download ended, a group
//! passed to the user, someone asks to join a group the user owns). Whoever shows them
//! subscribes: the terminal's REPL (rustyline's external printer, above the prompt and the
//! half-typed line) and each attached REPL on a terminal (`attach`). With no subscriber
//! (a pipe, a service nobody is attached to) they are dropped, so pipe output stays as
//! SPEC has it; the log has them too.
//!
//! Bounds: at most `MAX_SUBSCRIBERS` subscribers, each with a queue of `QUEUE` notices: a
//! subscriber that does not keep up loses notices, never memory or a sender's time.

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use std::sync::{Arc, Weak};

/// Subscribers at once, at most: the terminal and `attach::MAX_ATTACHED`, with room.
pub const MAX_SUBSCRIBERS: usize = 16;
/// Notices waiting for one subscriber, at most.
const QUEUE: usize = 64;

/// Where notices go: every subscriber's queue.
#[derive(Default)]
pub struct Notices {
    subscribers: Mutex<Subscribers>,
}

#[derive(Default)]
struct Subscribers {
    next_id: u64,
    queues: Vec<(u64, Sender<String>)>,
}

/// A subscription: notices arrive on `receiver` until it is dropped.
pub struct Subscription {
    pub receiver: Receiver<String>,
    id: u64,
    notices: Weak<Notices>,
}

impl Notices {
    /// From now on notices also go to the returned subscription, or `None` when
    /// `MAX_SUBSCRIBERS` are already there.
    pub fn subscribe(self: &Arc<Self>) -> Option<Subscription> {
        let mut subscribers = self.subscribers.lock();
        if subscribers.queues.len() >= MAX_SUBSCRIBERS {
            return None;
        }
        let (sender, receiver) = crossbeam_channel::bounded(QUEUE);
        subscribers.next_id += 1;
        let id = subscribers.next_id;
        subscribers.queues.push((id, sender));
        Some(Subscription { receiver, id, notices: Arc::downgrade(self) })
    }

    /// Shows `line` (without its newline) to every subscriber that has room for it.
    pub fn send(&self, line: String) {
        let mut subscribers = self.subscribers.lock();
        subscribers.queues.retain(|(_, queue)| match queue.try_send(line.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                log::debug!("a notice subscriber is behind; it misses one");
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }

    fn unsubscribe(&self, id: u64) {
        self.subscribers.lock().queues.retain(|(i, _)| *i != id);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(notices) = self.notices.upgrade() {
            notices.unsubscribe(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subscriber_gets_each_notice_until_it_unsubscribes() {
        let notices = Arc::new(Notices::default());
        notices.send("nobody hears this".into());
        let a = notices.subscribe().unwrap();
        let b = notices.subscribe().unwrap();
        notices.send("one".into());
        drop(b);
        notices.send("two".into());
        assert_eq!(a.receiver.try_iter().collect::<Vec<_>>(), ["one", "two"]);
        assert_eq!(notices.subscribers.lock().queues.len(), 1);
    }

    #[test]
    fn subscribers_and_their_queues_are_bounded() {
        let notices = Arc::new(Notices::default());
        let subs: Vec<_> = (0..MAX_SUBSCRIBERS).map(|_| notices.subscribe().unwrap()).collect();
        assert!(notices.subscribe().is_none());
        for i in 0..QUEUE + 10 {
            notices.send(format!("{i}"));
        }
        // A slow subscriber keeps the first QUEUE and misses the rest.
        assert_eq!(subs[0].receiver.len(), QUEUE);
        drop(subs);
        assert!(notices.subscribe().is_some());
    }
}

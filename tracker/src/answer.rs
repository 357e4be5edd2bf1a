//! A one-shot answer from the Raft thread to the thread waiting for it (a proposal's
//! outcome, a read barrier): the waiter parks at once on a condvar.
//!
//! A crossbeam channel's receive first spins and calls `sched_yield` several times before
//! it parks; with a thousand connection threads each waiting for its commit, that was
//! about a fifth of their CPU in the profile of issue 22.
//!
//! Invariant: an answer is delivered at most once; when every `Reply` is dropped without
//! one, the waiter hears `AnswerError::Gone` at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// A new answer: the half that sends it and the half that waits for it.
pub fn answer<T>() -> (Reply<T>, Answer<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { value: None, replies: 1, gone: false }),
        ready: Condvar::new(),
    });
    (Reply(Arc::clone(&shared)), Answer(shared))
}

/// Sends the answer (clones send the same one: the first wins).
pub struct Reply<T>(Arc<Shared<T>>);

/// Waits for the answer.
pub struct Answer<T>(Arc<Shared<T>>);

/// Why no answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("no answer in time")]
    Timeout,
    #[error("no answer will come")]
    Gone,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

struct State<T> {
    value: Option<T>,
    /// `Reply`s alive.
    replies: usize,
    /// An answer was sent (and maybe taken), or every `Reply` is gone.
    gone: bool,
}

impl<T> Reply<T> {
    /// Delivers `value`, unless an answer was delivered already.
    pub fn send(&self, value: T) {
        let mut state = self.0.state.lock();
        if state.gone {
            return;
        }
        state.value = Some(value);
        state.gone = true;
        drop(state);
        self.0.ready.notify_all();
    }
}

impl<T> Clone for Reply<T> {
    fn clone(&self) -> Reply<T> {
        self.0.state.lock().replies += 1;
        Reply(Arc::clone(&self.0))
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        state.replies -= 1;
        if state.replies == 0 && !state.gone {
            state.gone = true;
            drop(state);
            self.0.ready.notify_all();
        }
    }
}

impl<T> Answer<T> {
    /// Waits at most `timeout` for the answer.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, AnswerError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.0.state.lock();
        loop {
            if let Some(value) = state.value.take() {
                return Ok(value);
            }
            if state.gone {
                return Err(AnswerError::Gone);
            }
            if self.0.ready.wait_until(&mut state, deadline).timed_out() {
                return match state.value.take() {
                    Some(value) => Ok(value),
                    None if state.gone => Err(AnswerError::Gone),
                    None => Err(AnswerError::Timeout),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_answer_arrives_once() {
        let (reply, answer) = answer();
        let again = reply.clone();
        reply.send(1);
        again.send(2);
        assert_eq!(answer.recv_timeout(Duration::ZERO), Ok(1));
        assert_eq!(answer.recv_timeout(Duration::ZERO), Err(AnswerError::Gone));
    }

    #[test]
    fn no_answer_times_out_and_dropped_replies_say_gone() {
        let (reply, answer) = answer::<u8>();
        let again = reply.clone();
        assert_eq!(answer.recv_timeout(Duration::from_millis(10)), Err(AnswerError::Timeout));
        drop(reply);
        assert_eq!(answer.recv_timeout(Duration::ZERO), Err(AnswerError::Timeout));
        drop(again);
        assert_eq!(answer.recv_timeout(Duration::from_secs(10)), Err(AnswerError::Gone));
    }

    #[test]
    fn a_waiter_is_woken_by_an_answer_from_another_thread() {
        let (reply, answer) = answer();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            reply.send("done");
        });
        assert_eq!(answer.recv_timeout(Duration::from_secs(10)), Ok("done"));
        sender.join().unwrap();
    }
}

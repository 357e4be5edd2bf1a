//! The password-hashing pool: key derivations (`create_user`) and password checks (`login`)
//! run on a few threads of their own, about one per core, behind a short queue.
//!
//! A derivation costs about 0.1 s of CPU at the default iterations, so a flood of logins
//! could otherwise take every core (and every connection thread would wait on them). When
//! the queue is full the answer is at once `TrackerError::Busy`: the client retries a
//! moment later, and everything else the tracker does keeps its CPU.
//!
//! Three queues: logins of known devices (a key that logged in as that user before,
//! `Priority::Known`) are taken first, then logins from addresses, and for users, with no
//! recent failure (`Priority::Clean`), then the rest: a user logging in while others
//! guess passwords, or flood right ones from new keys, waits for at most the hashes
//! already running, not for their queue. With more than one thread, one of them hashes
//! only known and clean work, so such a user does not even wait for a guess being hashed:
//! guessers get the other threads.
//!
//! Going first in the queue is not enough: under a flood of right passwords from new keys
//! (clean work) every thread may be in the middle of a flood's hash, about 0.15 s on a free
//! core and several times that on a busy one, when a known device's login comes (issue
//! 21: it waited up to 0.8 s there). So one more thread, `kdf-known`, hashes only known
//! devices' work: such a login never waits for another kind's hash, only for the few known
//! devices' ahead of it (each key and each user logs in at a bounded rate). And the other
//! threads run at a lower priority (`HASH_NICE`): a flood's hashes still run on every
//! core, beside `kdf-known`'s, but the known device's gets most of a core.

use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use common::message::TrackerError;
use common::Password;

use crate::credential::Credential;

/// The nice value of the hashing threads but `kdf-known`: under load, a new device's hash
/// (or a flood's) takes the CPU time nothing else needs, and a known device's hash, the
/// connections and Raft go first.
pub const HASH_NICE: i32 = 10;

/// Lowers the calling thread's priority to `HASH_NICE` (on Linux a nice value is per
/// thread); a failure is only logged.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(None, HASH_NICE) {
        log::warn!("cannot lower the priority of a hashing thread: {e}");
    }
}

/// Work waiting for a hashing thread, at most, per thread.
pub const QUEUE_PER_THREAD: usize = 4;

type Job = Box<dyn FnOnce() + Send>;

/// Which queue a hash waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A known device of the user (issue 21): served first.
    Known,
    /// From an address, and for a user, with no recent failed login: served next.
    Clean,
    /// From an address, or for a user, that failed lately.
    Suspect,
}

/// The pool. Dropping it lets its threads finish the queued work and stop.
pub struct KdfPool {
    known: Sender<Job>,
    clean: Sender<Job>,
    suspect: Sender<Job>,
    threads: usize,
}

impl KdfPool {
    /// A pool of `threads` hashing threads (at least one), plus `kdf-known`, with three
    /// queues of `QUEUE_PER_THREAD` jobs per thread.
    pub fn new(threads: usize) -> std::io::Result<KdfPool> {
        let threads = threads.max(1);
        let (known, known_queue) = crossbeam_channel::bounded::<Job>(threads * QUEUE_PER_THREAD);
        let (clean, clean_queue) = crossbeam_channel::bounded::<Job>(threads * QUEUE_PER_THREAD);
        let (suspect, suspect_queue) =
            crossbeam_channel::bounded::<Job>(threads * QUEUE_PER_THREAD);
        for n in 0..threads {
            let (first, next, then): (Receiver<Job>, Receiver<Job>, Receiver<Job>) =
                (known_queue.clone(), clean_queue.clone(), suspect_queue.clone());
            // With more than one thread, the first hashes only known and clean work.
            let clean_only = threads > 1 && n == 0;
            thread::Builder::new().name(format!("kdf-{n}")).spawn(move || {
                lower_priority();
                loop {
                    let job = match first.try_recv().or_else(|_| next.try_recv()) {
                        Ok(job) => Ok(job),
                        Err(_) if clean_only => crossbeam_channel::select! {
                            recv(first) -> job => job,
                            recv(next) -> job => job,
                        },
                        Err(_) => crossbeam_channel::select! {
                            recv(first) -> job => job,
                            recv(next) -> job => job,
                            recv(then) -> job => job,
                        },
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => break, // the pool was dropped
                    }
                }
            })?;
        }
        thread::Builder::new().name("kdf-known".to_string()).spawn(move || {
            // Ends when the pool is dropped (its queue disconnects).
            for job in known_queue.iter() {
                job();
            }
        })?;
        Ok(KdfPool { known, clean, suspect, threads })
    }

    /// One thread per core.
    pub fn threads_per_core() -> usize {
        thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Runs `work` on a hashing thread and waits for its result, or answers `Busy` at once
    /// when its queue is full.
    fn run<T: Send + 'static>(
        &self,
        priority: Priority,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, TrackerError> {
        let (answer, result) = crossbeam_channel::bounded(1);
        let queued = Instant::now();
        let job: Job = Box::new(move || {
            let started = Instant::now();
            let done = work();
            // Where a login's time goes under a flood (issue 21): its wait, then its hash.
            log::debug!(
                "{priority:?} hash: waited {:?} in the queue, took {:?}",
                started.duration_since(queued),
                started.elapsed()
            );
            let _ = answer.send(done);
        });
        let queue = match priority {
            Priority::Known => &self.known,
            Priority::Clean => &self.clean,
            Priority::Suspect => &self.suspect,
        };
        match queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                log::trace!("{priority:?} hash refused: its queue is full");
                return Err(TrackerError::Busy(format!(
                    "{} password checks already queued; retry in a moment",
                    self.threads * QUEUE_PER_THREAD
                )));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(TrackerError::Unavailable("password hashing stopped".to_string()))
            }
        }
        result.recv().map_err(|_| TrackerError::Unavailable("password hashing failed".to_string()))
    }

    /// Whether `password` matches `credential`.
    pub fn verify(
        &self,
        priority: Priority,
        credential: Credential,
        password: Password,
    ) -> Result<bool, TrackerError> {
        self.run(priority, move || credential.verify(&password))
    }

    /// A new credential for `password`.
    pub fn derive(
        &self,
        priority: Priority,
        password: Password,
        iterations: u32,
    ) -> Result<Credential, TrackerError> {
        self.run(priority, move || Credential::derive(&password, iterations))?.map_err(|e| {
            log::error!("no randomness: {e}");
            TrackerError::Unavailable("no randomness".to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    /// Holds the only thread of `pool` with clean work that runs until the barrier is
    /// passed; returns when it runs.
    fn hold_the_thread(
        pool: &Arc<KdfPool>,
    ) -> (Arc<Barrier>, thread::JoinHandle<Result<(), TrackerError>>) {
        let gate = Arc::new(Barrier::new(2));
        let (started, running) = crossbeam_channel::bounded(0);
        let held = {
            let (pool, gate) = (Arc::clone(pool), Arc::clone(&gate));
            thread::spawn(move || {
                pool.run(Priority::Clean, move || {
                    let _ = started.send(());
                    gate.wait();
                })
            })
        };
        running.recv().unwrap();
        (gate, held)
    }

    #[test]
    fn verifies_and_derives() {
        let pool = KdfPool::new(1).unwrap();
        let pw = Password::new("pw").unwrap();
        let cred = pool.derive(Priority::Clean, pw.clone(), 10).unwrap();
        assert!(pool.verify(Priority::Suspect, cred.clone(), pw).unwrap());
        assert!(!pool.verify(Priority::Clean, cred, Password::new("other").unwrap()).unwrap());
    }

    #[test]
    fn a_full_queue_answers_busy_at_once_and_clean_work_goes_first() {
        let pool = Arc::new(KdfPool::new(1).unwrap());
        // Hold the only thread, then fill the suspects' queue.
        let (gate, held) = hold_the_thread(&pool);
        let (order_tx, order) = crossbeam_channel::unbounded();
        let run_as = |priority: Priority, name: &'static str| {
            let (pool, order_tx) = (Arc::clone(&pool), order_tx.clone());
            thread::spawn(move || pool.run(priority, move || order_tx.send(name)))
        };
        let suspects: Vec<_> =
            (0..QUEUE_PER_THREAD).map(|_| run_as(Priority::Suspect, "suspect")).collect();
        // The callers may not all have enqueued yet: wait until the queue is full.
        while pool.suspect.len() < QUEUE_PER_THREAD {
            thread::yield_now();
        }
        assert!(matches!(pool.run(Priority::Suspect, || ()), Err(TrackerError::Busy(_))));
        // The clean queue still takes work, and its work runs before the queued suspects.
        let clean = run_as(Priority::Clean, "clean");
        while pool.clean.is_empty() {
            thread::yield_now();
        }
        gate.wait();
        held.join().unwrap().unwrap();
        clean.join().unwrap().unwrap().unwrap();
        for s in suspects {
            s.join().unwrap().unwrap().unwrap();
        }
        let ran: Vec<&str> = order.try_iter().collect();
        assert_eq!(ran.first(), Some(&"clean"), "{ran:?}");
        assert_eq!(ran.len(), QUEUE_PER_THREAD + 1);
    }

    #[test]
    fn with_two_threads_clean_work_never_waits_for_a_suspect_hash() {
        let pool = Arc::new(KdfPool::new(2).unwrap());
        // Suspect work that does not finish until released: it may take only one thread.
        let (release_tx, release) = crossbeam_channel::unbounded::<()>();
        let (started_tx, started) = crossbeam_channel::unbounded();
        let suspects: Vec<_> = (0..2)
            .map(|_| {
                let (pool, release, started_tx) =
                    (Arc::clone(&pool), release.clone(), started_tx.clone());
                thread::spawn(move || {
                    pool.run(Priority::Suspect, move || {
                        let _ = started_tx.send(());
                        let _ = release.recv();
                    })
                })
            })
            .collect();
        started.recv().unwrap();
        // The other suspect waits in its queue (once its caller has queued it)...
        while pool.suspect.is_empty() {
            thread::yield_now();
        }
        // ...while a clean hash runs.
        pool.run(Priority::Clean, || ()).unwrap();
        assert!(started.is_empty(), "two suspect hashes ran at once on a pool of two");
        assert_eq!(pool.suspect.len(), 1);
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        for s in suspects {
            s.join().unwrap().unwrap();
        }
        assert_eq!(started.len(), 1, "the second suspect ran once the first was done");
    }

    /// Issue 21: a known device's hash neither waits in the queue behind other work nor for
    /// the hash running on every other thread.
    #[test]
    fn a_known_devices_hash_runs_while_every_other_thread_is_busy() {
        let pool = Arc::new(KdfPool::new(1).unwrap());
        let (gate, held) = hold_the_thread(&pool);
        let (order_tx, order) = crossbeam_channel::unbounded();
        let run_as = |priority: Priority, name: &'static str| {
            let (pool, order_tx) = (Arc::clone(&pool), order_tx.clone());
            thread::spawn(move || pool.run(priority, move || order_tx.send(name)))
        };
        let waiting = [run_as(Priority::Suspect, "suspect"), run_as(Priority::Clean, "clean")];
        while pool.suspect.is_empty() || pool.clean.is_empty() {
            thread::yield_now();
        }
        // The only other thread is still held, and clean and suspect work wait for it.
        let known_tx = order_tx.clone();
        pool.run(Priority::Known, move || known_tx.send("known")).unwrap().unwrap();
        assert_eq!((pool.clean.len(), pool.suspect.len()), (1, 1));
        gate.wait();
        held.join().unwrap().unwrap();
        for w in waiting {
            w.join().unwrap().unwrap().unwrap();
        }
        let ran: Vec<&str> = order.try_iter().collect();
        assert_eq!(ran, ["known", "clean", "suspect"]);
    }
}

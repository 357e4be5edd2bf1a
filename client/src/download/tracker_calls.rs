//! A download's calls to the tracker, made on a thread of their own (`dl-tracker-N`): the
//! coordinator never waits on a tracker, which may take seconds to fail over, so pieces
//! keep flowing meanwhile.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use common::message::{Reply, Request};

use crate::tracker_session::{CallError, TrackerSession};

/// A call the coordinator posts for its tracker thread.
pub enum TrackerJob {
    /// `AnnouncePieces`, when this peer has `n_have` pieces.
    Announce { request: Request, n_have: u32 },
    /// `GetFile`: new peers and a fresh ticket.
    Refresh(Request),
    /// `UploadFile` of the finished download, or the last `AnnouncePieces` of a finished
    /// selective one (issue 23: it holds part of a folder); nobody waits for the answer.
    Complete(Request),
}

/// The answer to a posted call.
pub enum TrackerNews {
    Announced { n_have: u32 },
    Refreshed(Result<Reply, CallError>),
}

/// A download's calls to the tracker, made on a thread of their own (`dl-tracker-N`): the
/// coordinator never waits on a tracker, which may take seconds to fail over, so pieces
/// keep flowing meanwhile. Calls queue (a few at most; the coordinator skips a tick's
/// call when they are full) and answers come back on `news`.
pub struct TrackerCalls {
    jobs: Option<Sender<TrackerJob>>,
    pub news: Receiver<TrackerNews>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TrackerCalls {
    pub fn start(tracker: Arc<TrackerSession>, name: String, idx: usize) -> TrackerCalls {
        let (jobs, todo) = crossbeam_channel::bounded::<TrackerJob>(4);
        let (tell, news) = crossbeam_channel::bounded::<TrackerNews>(4);
        let file = name.clone();
        let thread = thread::Builder::new().name(format!("dl-tracker-{idx}")).spawn(move || {
            for job in todo {
                let told = match job {
                    TrackerJob::Announce { request, n_have } => match tracker.call(request) {
                        Ok(_) => tell.send(TrackerNews::Announced { n_have }),
                        Err(e) => {
                            log::warn!("cannot announce pieces of {file}: {e}");
                            Ok(())
                        }
                    },
                    TrackerJob::Refresh(request) => {
                        tell.send(TrackerNews::Refreshed(tracker.call(request)))
                    }
                    TrackerJob::Complete(request) => {
                        if let Err(e) = tracker.call(request) {
                            log::warn!("cannot announce the finished {file} as shared: {e}");
                        }
                        Ok(())
                    }
                };
                // The coordinator is gone: nobody wants the rest.
                if told.is_err() {
                    break;
                }
            }
        });
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(e) => {
                log::error!("cannot start a tracker thread for {name}: {e}");
                None
            }
        };
        TrackerCalls { jobs: Some(jobs), news, thread }
    }

    /// Posts `job` unless the queue is full; returns whether it was posted.
    pub fn post(&self, job: TrackerJob) -> bool {
        self.jobs.as_ref().is_some_and(|jobs| jobs.try_send(job).is_ok())
    }

    /// Posts `job`, waiting for room in the queue.
    pub fn send(&self, job: TrackerJob) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(job);
        }
    }

    /// Lets the queued calls finish, then ends the thread.
    pub fn finish(&mut self) {
        drop(self.jobs.take());
        // Unblock a thread that waits to hand over an answer nobody will read.
        while self.news.try_recv().is_ok() {}
        if let Some(thread) = self.thread.take() {
            // Drain answers while it finishes, so that it never blocks on `tell`.
            while !thread.is_finished() {
                let _ = self.news.recv_timeout(Duration::from_millis(50));
            }
            let _ = thread.join();
        }
    }
}

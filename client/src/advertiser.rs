//! The `advertise` thread (issue 19): registers with the trackers every address this peer
//! may be reached at (`reach::own_addresses`: a router mapping, the public IP a tracker sees
//! it from with its listen port, its listen address), when the login, the observed address
//! or the mapping changes, and again every `SOFT_STATE_REFRESH` (the leader keeps it as soft
//! state, which a new leader starts without). With the addresses go the other soft state's
//! requests it is given (`SoftState`: the pieces of the folder parts this peer holds, issue
//! 23), so that a new leader lists this peer again as a holder of them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use common::message::{Request, SessionToken};

use crate::reach::own_addresses;
use crate::tracker_session::{CallError, TrackerSession};

/// How often the thread looks whether something changed (the observed address is learnt
/// with any tracker call, a login with the REPL's).
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How often what the leader keeps as soft state (the addresses, the pieces of folder parts
/// and of downloads) is registered again although nothing changed.
pub const SOFT_STATE_REFRESH: Duration = Duration::from_secs(30);

/// The requests that register the rest of this peer's soft state, made afresh at each
/// registration (`Request::AnnouncePieces` of each folder part it holds).
pub type SoftState = Box<dyn Fn() -> Vec<Request> + Send>;

/// What other threads tell the advertiser: the router mapping, and that something changed.
#[derive(Clone)]
pub struct Reachability {
    mapped: Arc<Mutex<Option<SocketAddr>>>,
    wake: Sender<()>,
}

impl Reachability {
    /// The router now forwards `mapped` (its public address and port) to this peer, or no
    /// longer forwards anything (`None`).
    pub fn set_mapped(&self, mapped: Option<SocketAddr>) {
        *self.mapped.lock() = mapped;
        self.nudge();
    }

    /// The router mapping in force, if any.
    pub fn mapped(&self) -> Option<SocketAddr> {
        *self.mapped.lock()
    }

    /// Look again now rather than at the next check: after a login (`Peer::login` and
    /// `resume_session` nudge it), so that a peer behind a router is registered at its
    /// public address at once, not up to `CHECK_EVERY` later (a punch to it needs it).
    pub fn nudge(&self) {
        let _ = self.wake.try_send(());
    }
}

/// The running `advertise` thread; `stop` joins it.
pub struct Advertiser {
    stop: Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Advertiser {
    /// Starts the thread for a peer listening on `listen`, which registers `soft_state`'s
    /// requests with its addresses; returns it with the handle that other threads tell
    /// about changes.
    pub fn start(
        tracker: Arc<TrackerSession>,
        listen: SocketAddr,
        soft_state: SoftState,
    ) -> std::io::Result<(Advertiser, Reachability)> {
        let (wake, woken) = crossbeam_channel::bounded(1);
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let reach = Reachability { mapped: Arc::default(), wake };
        let thread = std::thread::Builder::new().name("advertise".into()).spawn({
            let reach = reach.clone();
            move || run(&tracker, listen, &reach, &soft_state, (&woken, &stopped))
        })?;
        Ok((Advertiser { stop, thread }, reach))
    }

    /// Stops the thread and waits for it (a call in flight ends within its timeouts).
    pub fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

fn run(
    tracker: &TrackerSession,
    listen: SocketAddr,
    reach: &Reachability,
    soft_state: &SoftState,
    (woken, stopped): (&Receiver<()>, &Receiver<()>),
) {
    let mut sent: Option<(SessionToken, Vec<SocketAddr>, Instant)> = None;
    loop {
        crossbeam_channel::select! {
            recv(stopped) -> _ => return,
            recv(woken) -> _ => {}
            default(CHECK_EVERY) => {}
        }
        let Some(login) = tracker.login() else {
            sent = None;
            continue;
        };
        let addrs = own_addresses(listen, tracker.observed().map(|a| a.ip()), reach.mapped());
        let due = sent.as_ref().is_none_or(|(session, last, at)| {
            *session != login.session || *last != addrs || at.elapsed() >= SOFT_STATE_REFRESH
        });
        if !due {
            continue;
        }
        match tracker.call(Request::Reachable { addrs: addrs.clone() }) {
            Ok(_) => {
                if sent.as_ref().is_none_or(|(_, last, _)| *last != addrs) {
                    log::info!("reachable at {addrs:?}");
                }
                sent = Some((login.session, addrs, Instant::now()));
                for request in soft_state() {
                    if let Err(e) = tracker.call(request) {
                        log::debug!("cannot register this peer's soft state: {e}");
                    }
                }
            }
            Err(CallError::NotLoggedIn) => sent = None,
            Err(e) => log::debug!("cannot register this peer's addresses: {e}"),
        }
    }
}

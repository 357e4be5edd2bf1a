//! A worker's hole punches to its source (issue 19), on a thread of their own
//! (`dl-punch-N`): the first at once, beside the relay (`paths`); then, while the worker is
//! relayed, again on `PunchSchedule`, each one after the first only within the client's
//! `UpgradeBudget`. A hole punched is greeted (`Hello`, `Welcome`) here and handed to the
//! worker, which moves to it at its next safe point; the thread then ends.
//!
//! Bounded: one thread per worker at most, stopped and joined when its `Puncher` is
//! dropped (the drop fires its interrupt, which cuts short its tracker call, the punch and
//! the handshake).

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use common::connection::{Connection, Timeouts};
use common::message::{Reply, Request};
use common::PublicKey;

use super::greeting::{greet, Greeted};
use super::path_plan::{PunchOutcome, PunchSchedule};
use super::target::Target;
use crate::interrupt::Interrupt;

/// The handshake's and the greeting's time on a punched connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(20);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the punching thread tells its worker.
pub enum PunchNews {
    /// A hole punched, its connection greeted.
    Punched(Box<Greeted>),
    /// An attempt failed (why); `again` says whether another one is scheduled.
    Failed { why: String, again: bool },
}

/// The punching thread of one worker.
pub struct Puncher {
    news: Receiver<PunchNews>,
    /// Dropped to stop the thread's wait between attempts.
    stop: Option<Sender<()>>,
    interrupt: Arc<Interrupt>,
    thread: Option<JoinHandle<()>>,
}

impl Puncher {
    /// Starts punching to the source that proves `key`, at `targets` (its public
    /// addresses), from this peer's listen address.
    pub fn start(
        key: PublicKey,
        targets: Vec<SocketAddr>,
        target: Arc<Target>,
        name: String,
    ) -> std::io::Result<Puncher> {
        let (news_tx, news) = crossbeam_channel::bounded(1);
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let interrupt = Arc::new(Interrupt::default());
        let thread = std::thread::Builder::new().name(name).spawn({
            let interrupt = Arc::clone(&interrupt);
            move || punch_until(key, &targets, &target, &interrupt, (&news_tx, &stopped))
        })?;
        Ok(Puncher { news, stop: Some(stop), interrupt, thread: Some(thread) })
    }

    /// What the thread said (a clone of the receiving end, to wait on beside others).
    pub fn news(&self) -> &Receiver<PunchNews> {
        &self.news
    }
}

impl Drop for Puncher {
    fn drop(&mut self) {
        drop(self.stop.take());
        self.interrupt.fire();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn punch_until(
    key: PublicKey,
    targets: &[SocketAddr],
    target: &Target,
    interrupt: &Interrupt,
    (news, stopped): (&Sender<PunchNews>, &Receiver<()>),
) {
    let mut schedule = PunchSchedule::new();
    let mut background = false;
    loop {
        let tried = match background && !target.upgrades.lock().allow(Instant::now()) {
            true => Err((PunchOutcome::Refused, "over this client's budget of punches".into())),
            false => attempt(key, targets, target, interrupt),
        };
        background = true;
        match tried {
            Ok(greeted) => {
                // Kept until the worker takes it, or stops.
                crossbeam_channel::select! {
                    send(news, PunchNews::Punched(Box::new(greeted))) -> _ => {}
                    recv(stopped) -> _ => {}
                }
                return;
            }
            Err((outcome, why)) => {
                let n = schedule.attempts();
                let next = schedule.next(outcome);
                log::debug!("punch {n} to {targets:?}: {why}; the next in {next:?}");
                let failed = PunchNews::Failed { why, again: next.is_some() };
                // A worker busy with its pieces reads news now and then: the latest
                // failure is enough for it.
                match news.try_send(failed) {
                    Ok(()) | Err(TrySendError::Full(_)) => {}
                    Err(TrySendError::Disconnected(_)) => return,
                }
                let Some(wait) = next else { return };
                match stopped.recv_timeout(wait) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        }
    }
}

/// One hole punch: the call through the tracker, the punch itself, the handshake (this
/// peer the initiator) and the greeting.
fn attempt(
    key: PublicKey,
    targets: &[SocketAddr],
    target: &Target,
    interrupt: &Interrupt,
) -> Result<Greeted, (PunchOutcome, String)> {
    if targets.is_empty() {
        let why = "the peer registered no public address to punch to".to_string();
        return Err((PunchOutcome::Hopeless, why));
    }
    let nonce = Target::nonce().map_err(|e| (PunchOutcome::Refused, e))?;
    // From a port of its own (`punch::punch_port`), bound before the call: the peer's SYN
    // may be here before the tracker's answer.
    let own = crate::punch::punch_port(target.reach.0)
        .map_err(|e| (PunchOutcome::Refused, format!("no port to punch from: {e}")))?;
    let local = own.local_addr().map_err(|e| (PunchOutcome::Refused, e.to_string()))?;
    let ticket = target.ticket.lock().clone();
    let call = Request::Punch { ticket, seeder: key, nonce, port: local.port() };
    match target.path_call(call, Some(interrupt)) {
        Ok(Reply::Done) => {}
        Ok(other) => {
            return Err((PunchOutcome::Refused, format!("the tracker answered a punch {other:?}")))
        }
        Err(e) => return Err((PunchOutcome::Refused, format!("no hole punching: {e}"))),
    }
    let deadline = Instant::now() + crate::punch::PUNCH_FOR;
    let no_hole = |why: String| (PunchOutcome::NoHole, why);
    let (stream, _) =
        crate::punch::punch(local, targets, deadline, None, Some(&own), Some(interrupt)).map_err(
            |e| {
                no_hole(format!(
                    "no hole punched within {} s ({e})",
                    crate::punch::PUNCH_FOR.as_secs()
                ))
            },
        )?;
    let _watch = interrupt.watch_socket(&stream);
    let timeouts =
        Timeouts { handshake: HANDSHAKE_TIMEOUT, read: READ_TIMEOUT, write: WRITE_TIMEOUT };
    let conn = Connection::connect(stream, &target.identity, &key, timeouts)
        .map_err(|e| no_hole(format!("a hole punched, but no handshake: {e}")))?;
    greet(conn, target).map_err(|e| no_hole(format!("a hole punched, but no welcome: {e}")))
}

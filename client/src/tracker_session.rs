//! The client's tracker session, shared by the REPL, the seeder, the downloads and the
//! heartbeat: one `TrackerLink` and the current login.
//!
//! Lock order: `login` is never held while `link` is (the token is copied out first).

use std::time::Duration;

use parking_lot::Mutex;

use common::message::{Reply, Request, SessionToken};
use common::UserId;

use crate::interrupt::Interrupt;
use crate::tracker_link::{LinkError, TrackerLink};

/// How often a logged-in client tells the tracker it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// Why a tracker call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("not logged in")]
    NotLoggedIn,
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// Who is logged in.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: UserId,
    pub session: SessionToken,
}

/// The shared tracker session.
pub struct TrackerSession {
    link: Mutex<TrackerLink>,
    login: Mutex<Option<Login>>,
}

impl TrackerSession {
    pub fn new(link: TrackerLink) -> TrackerSession {
        TrackerSession { link: Mutex::new(link), login: Mutex::new(None) }
    }

    /// The current login, if any.
    pub fn login(&self) -> Option<Login> {
        self.login.lock().clone()
    }

    /// Records a login (after the tracker accepted it).
    pub fn set_login(&self, login: Option<Login>) {
        *self.login.lock() = login;
    }

    /// Sends a request in the current session.
    pub fn call(&self, request: Request) -> Result<Reply, CallError> {
        self.call_until(request, None)
    }

    /// Sends a request in the current session; Ctrl-C on `interrupt` gives up waiting.
    pub fn call_until(
        &self,
        request: Request,
        interrupt: Option<&Interrupt>,
    ) -> Result<Reply, CallError> {
        let session =
            self.login.lock().as_ref().map(|l| l.session).ok_or(CallError::NotLoggedIn)?;
        Ok(self.link.lock().call(Some(session), request, interrupt)?)
    }

    /// A fresh random session token for a `login`.
    pub fn new_token() -> Result<SessionToken, LinkError> {
        let mut token = [0u8; 32];
        getrandom::fill(&mut token).map_err(|e| {
            LinkError::Tracker(common::message::TrackerError::Unavailable(format!(
                "no randomness for a session token: {e}"
            )))
        })?;
        Ok(SessionToken(token))
    }

    /// Sends a request outside any session (`create_user`, `login`); Ctrl-C on
    /// `interrupt` gives up waiting.
    pub fn call_anonymous(
        &self,
        request: Request,
        interrupt: Option<&Interrupt>,
    ) -> Result<Reply, LinkError> {
        self.link.lock().call(None, request, interrupt)
    }

    /// Sends a heartbeat if logged in; failures are only logged (the next one retries).
    pub fn heartbeat(&self) {
        match self.call(Request::Heartbeat) {
            Ok(_) | Err(CallError::NotLoggedIn) => {}
            Err(e) => log::warn!("heartbeat failed: {e}"),
        }
    }
}

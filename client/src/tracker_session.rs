//! The client's tracker session, shared by the REPL, the seeder, the downloads and the
//! heartbeat: a few `TrackerLink`s and the current login.
//!
//! No lock is held across a call: each call takes a link of its own (at most `MAX_LINKS` at
//! once, one kept open while idle), so a call that waits for a tracker to fail over (seconds)
//! never holds up a seeder's ticket check or a download's refresh. Calls about a path to a
//! peer (reversal, punch, relay; issue 19), which a flash crowd makes by the dozen at once,
//! take links of a pool of their own (`PATH_LINKS`), never one of the session's: so a
//! client holds at most `MAX_LINKS + PATH_LINKS` call links, and a long poll for calls, at
//! a tracker at once, within its per-key connection cap.
//! Lock order: `login`, then a pool's links; neither is held during a call.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use common::message::{FileSummary, Memberships, Reply, Request, SessionToken};
use common::tracker_info::TrackerInfoFile;
use common::{GroupId, Identity, UserId};

use crate::interrupt::Interrupt;
use crate::notice::Notices;
use crate::tracker_link::{LinkError, TrackerLink};
use crate::tracker_view::TrackerView;

/// How often a logged-in client tells the tracker it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// Why a tracker call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("not logged in")]
    NotLoggedIn,
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("the tracker answered a list request with something else")]
    UnexpectedReply,
}

/// Who is logged in.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: UserId,
    pub session: SessionToken,
}

/// Calls to the trackers in flight at once, at most (each on its own connection).
const MAX_LINKS: usize = 4;
/// Calls about a path to a peer in flight at once, at most (each a few milliseconds at the
/// tracker; the punch or the relay itself runs after it, on other connections).
const PATH_LINKS: usize = 2;
/// Links kept open while idle, in each pool.
const IDLE_LINKS: usize = 1;
/// How often a caller waiting for a path link looks at its interrupt.
const INTERRUPT_CHECK: Duration = Duration::from_millis(50);

/// The links: idle ones, and how many exist.
struct Links {
    idle: Vec<TrackerLink>,
    open: usize,
}

/// At most `max` links, one kept open while idle.
struct LinkPool {
    links: Mutex<Links>,
    freed: Condvar,
    max: usize,
}

impl LinkPool {
    fn new(max: usize) -> LinkPool {
        LinkPool {
            links: Mutex::new(Links { idle: Vec::new(), open: 0 }),
            freed: Condvar::new(),
            max,
        }
    }

    /// An idle link, a new one (`make`), or the first one freed.
    fn take(&self, make: impl Fn() -> TrackerLink) -> TrackerLink {
        let mut links = self.links.lock();
        loop {
            if let Some(link) = Self::ready(&mut links, self.max, &make) {
                return link;
            }
            self.freed.wait(&mut links);
        }
    }

    /// As `take`, but `None` once `interrupt` fires.
    fn take_until(
        &self,
        make: impl Fn() -> TrackerLink,
        interrupt: Option<&Interrupt>,
    ) -> Option<TrackerLink> {
        let Some(interrupt) = interrupt else { return Some(self.take(make)) };
        let mut links = self.links.lock();
        loop {
            if let Some(link) = Self::ready(&mut links, self.max, &make) {
                return Some(link);
            }
            if interrupt.is_fired() {
                return None;
            }
            self.freed.wait_for(&mut links, INTERRUPT_CHECK);
        }
    }

    /// An idle link, or a new one if fewer than `max` exist.
    fn ready(links: &mut Links, max: usize, make: impl Fn() -> TrackerLink) -> Option<TrackerLink> {
        if let Some(link) = links.idle.pop() {
            return Some(link);
        }
        if links.open < max {
            links.open += 1;
            return Some(make());
        }
        None
    }

    /// Gives `link` back after a call: kept idle, or closed.
    fn give_back(&self, link: TrackerLink) {
        let mut links = self.links.lock();
        if links.idle.len() < IDLE_LINKS {
            links.idle.push(link);
        } else {
            // Closes its connection: one idle connection per pool is enough.
            links.open -= 1;
        }
        drop(links);
        self.freed.notify_one();
    }
}

/// The shared tracker session.
pub struct TrackerSession {
    trackers: Arc<TrackerInfoFile>,
    identity: Arc<Identity>,
    /// The links of calls in the session.
    links: LinkPool,
    /// The links of calls about a path to a peer.
    path_links: LinkPool,
    login: Mutex<Option<Login>>,
    /// The tracker that answered the last call, for the dashboard.
    last_tracker: Mutex<Option<std::net::SocketAddr>>,
    /// The address the last tracker connected to saw this client come from (issue 19).
    observed: Mutex<Option<std::net::SocketAddr>>,
    /// What the links found at the trackers, for the dashboard.
    view: Arc<TrackerView>,
    /// Where a person's command that waits for a majority says so.
    notices: Arc<Notices>,
}

impl TrackerSession {
    /// A session with no login yet; a person's command that waits for a majority of
    /// trackers tells `notices`.
    pub fn new(
        trackers: Arc<TrackerInfoFile>,
        identity: Arc<Identity>,
        notices: Arc<Notices>,
    ) -> TrackerSession {
        TrackerSession {
            trackers,
            identity,
            links: LinkPool::new(MAX_LINKS),
            path_links: LinkPool::new(PATH_LINKS),
            login: Mutex::new(None),
            last_tracker: Mutex::new(None),
            observed: Mutex::new(None),
            view: Arc::new(TrackerView::default()),
            notices,
        }
    }

    /// A new link to the trackers.
    fn new_link(&self) -> TrackerLink {
        TrackerLink::new(Arc::clone(&self.trackers), Arc::clone(&self.identity))
            .with_view(Arc::clone(&self.view))
            .with_notices(Arc::clone(&self.notices))
    }

    /// Runs `call` on a link of its own: an idle one, a new one, or the first one freed.
    fn with_link<T>(&self, call: impl FnOnce(&mut TrackerLink) -> T) -> T {
        let mut link = self.links.take(|| self.new_link());
        let result = call(&mut link);
        self.note(&link);
        self.links.give_back(link);
        result
    }

    /// What a link learnt in its call: the tracker that answered, the address it saw.
    fn note(&self, link: &TrackerLink) {
        if let Some(addr) = link.tracker_addr() {
            *self.last_tracker.lock() = Some(addr);
        }
        if let Some(observed) = link.observed() {
            *self.observed.lock() = Some(observed);
        }
    }

    /// A call about a path to a peer (reversal, punch, relay; issue 19) in the current
    /// session, on a link of the path pool: never one of the session's pool, which the
    /// seeder's ticket checks and the downloads' announcements share, and never more than
    /// `PATH_LINKS` connections however many sources a download opens at once. `interrupt`
    /// cuts it short, the wait for a link included.
    pub fn path_call(
        &self,
        request: Request,
        interrupt: Option<&Interrupt>,
    ) -> Result<Reply, CallError> {
        let session = self.login().map(|l| l.session).ok_or(CallError::NotLoggedIn)?;
        let mut link = self
            .path_links
            .take_until(|| self.new_link(), interrupt)
            .ok_or(CallError::Link(LinkError::Interrupted))?;
        let result = link.call(Some(session), request, interrupt);
        self.note(&link);
        self.path_links.give_back(link);
        Ok(result?)
    }

    /// A link outside the pool, for a caller that keeps it busy for long (the seeder's
    /// long poll for reversal calls, issue 19), so that it never takes a pooled link.
    pub fn own_link(&self) -> TrackerLink {
        TrackerLink::new(Arc::clone(&self.trackers), Arc::clone(&self.identity))
            .with_view(Arc::clone(&self.view))
    }

    /// Joins relay `nonce` at tracker `tracker` in the current session (issue 19; see
    /// `tracker_link::join_relay`); `on_socket` gets a clone of the socket at once, to cut
    /// the wait short.
    pub fn join_relay(
        &self,
        tracker: u32,
        nonce: u64,
        seeder_side: bool,
        on_socket: &dyn Fn(std::net::TcpStream),
    ) -> Result<std::net::TcpStream, CallError> {
        let session = self.login().map(|l| l.session).ok_or(CallError::NotLoggedIn)?;
        crate::tracker_link::join_relay(
            &self.trackers,
            &self.identity,
            tracker,
            (session, nonce),
            (seeder_side, on_socket),
        )
        .map_err(|e| CallError::Link(LinkError::Relay(e.to_string())))
    }

    /// What this session's links found at each tracker, and the failovers.
    pub fn view(&self) -> &TrackerView {
        &self.view
    }

    /// The trackers `tracker_info.txt` lists now: line number, address, and whether their
    /// key is listed.
    pub fn listed(&self) -> Vec<(u32, common::tracker_info::TrackerAddr, bool)> {
        let info = self.trackers.current();
        info.trackers().map(|(id, addr)| (id, addr.clone(), info.key(id).is_some())).collect()
    }

    /// The address a tracker last saw this client come from (its public address, behind a
    /// NAT), once a tracker was reached.
    pub fn observed(&self) -> Option<std::net::SocketAddr> {
        *self.observed.lock()
    }

    /// The tracker that answered the last call, if any did.
    pub fn last_tracker(&self) -> Option<std::net::SocketAddr> {
        *self.last_tracker.lock()
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
        Ok(self.with_link(|link| link.call(Some(session), request, interrupt))?)
    }

    /// Every group (or, with `mine`, the caller's), page after page.
    pub fn list_groups(
        &self,
        mine: bool,
        interrupt: Option<&Interrupt>,
    ) -> Result<Vec<GroupId>, CallError> {
        self.all_pages(
            interrupt,
            |after| match mine {
                true => Request::ListMyGroups { after },
                false => Request::ListGroups { after },
            },
            |reply| match reply {
                Reply::Groups { groups, more } => Some((groups, more)),
                _ => None,
            },
            GroupId::clone,
        )
    }

    /// The pending requests to join `group` (its owner only), page after page.
    pub fn list_requests(
        &self,
        group: &GroupId,
        interrupt: Option<&Interrupt>,
    ) -> Result<Vec<UserId>, CallError> {
        self.all_pages(
            interrupt,
            |after| Request::ListRequests { group: group.clone(), after },
            |reply| match reply {
                Reply::Users { users, more } => Some((users, more)),
                _ => None,
            },
            UserId::clone,
        )
    }

    /// The files of `group` (members only), page after page.
    pub fn list_files(
        &self,
        group: &GroupId,
        interrupt: Option<&Interrupt>,
    ) -> Result<Vec<FileSummary>, CallError> {
        self.all_pages(
            interrupt,
            |after| Request::ListFiles { group: group.clone(), after },
            |reply| match reply {
                Reply::Files { files, more } => Some((files, more)),
                _ => None,
            },
            |f: &FileSummary| f.name.clone(),
        )
    }

    /// Asks for a list page by page (`ask` builds the request for the page after a
    /// cursor, `take` opens its reply, `cursor` names an item) until the last page.
    fn all_pages<T, C>(
        &self,
        interrupt: Option<&Interrupt>,
        ask: impl Fn(Option<C>) -> Request,
        take: impl Fn(Reply) -> Option<(Vec<T>, bool)>,
        cursor: impl Fn(&T) -> C,
    ) -> Result<Vec<T>, CallError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let reply = self.call_until(ask(after), interrupt)?;
            let (page, more) = take(reply).ok_or(CallError::UnexpectedReply)?;
            after = page.last().map(&cursor);
            all.extend(page);
            if !more || after.is_none() {
                return Ok(all);
            }
        }
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
        self.with_link(|link| link.call(None, request, interrupt))
    }

    /// Asks the tracker its place in the cluster (`Status`), for the view; nothing
    /// without a login, and a failure keeps the last answer.
    pub fn refresh_status(&self) {
        match self.call(Request::Status) {
            Ok(Reply::Status { status }) => self.view.set_status(status),
            Ok(other) => log::warn!("status: unexpected reply {other:?}"),
            Err(CallError::NotLoggedIn) => {}
            Err(e) => log::debug!("status: {e}"),
        }
    }

    /// Sends a heartbeat if logged in, saying which version of the user's memberships it
    /// knows (`known`); returns the memberships when the tracker says they changed.
    /// Failures are only logged (the next one retries).
    pub fn heartbeat(&self, known: Option<u64>) -> Option<Memberships> {
        match self.call(Request::Heartbeat { known }) {
            Ok(Reply::Alive { memberships }) => memberships,
            Ok(other) => {
                log::warn!("heartbeat: unexpected reply {other:?}");
                None
            }
            Err(CallError::NotLoggedIn) => None,
            Err(e) => {
                log::warn!("heartbeat failed: {e}");
                None
            }
        }
    }
}

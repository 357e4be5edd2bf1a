//! Replication between trackers: epoch-fenced primary-backup over the durable op log.
//!
//! A `View` (epoch, primary, members) names the trackers in service and the one that leads.
//! The primary logs every entry, ships it to every backup in ascending id order over one
//! `ReplicaLink` each, and applies and acknowledges it only when every member has it
//! durably; so the lowest-id backup always holds every entry any backup holds, and is the
//! successor when the primary goes. Backups forward writes and soft-state requests to the primary and answer
//! pure reads themselves.
//!
//! A `replication` thread keeps the cluster alive: the primary pings every backup every
//! `PING_EVERY` and drops one that fails (new view, persisted first); a backup that has not
//! heard from its primary for `FAIL_AFTER` checks that it is really gone and takes over with
//! the next view; a (re)starting tracker serves nothing until it has caught up from the
//! primary of the newest view (tail of the log, or a snapshot when its log diverged or the
//! tail was pruned) and joined a new view. Every replication message carries the sender's
//! view, and a view older than the receiver's is refused (`Stale`), which fences a primary
//! that was paused and wakes up believing it still leads.
//!
//! Every replication connection is a secure channel on which both trackers proved the keys
//! `tracker_info.txt` lists for them (`session` admits `ReplicaHello` only then), and every
//! message that claims to come from a view's primary or from a joiner must come from that
//! very tracker.
//!
//! Assumptions: trackers crash and stop (no byzantine behaviour), and the network does not
//! partition. With two trackers no protocol can tell a dead peer from an unreachable one;
//! surviving partitions would need a third voter and majority quorums (see ARCHITECTURE.md).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use crossbeam_channel::Receiver;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use common::connection::Connection;
use common::connection::Timeouts;
use common::frame::FrameError;
use common::message::{
    ClientMessage, Reply, Request, RequestId, SessionToken, TrackerError, TrackerMessage,
    PROTOCOL_VERSION,
};
use common::replica_message::{EntryId, ReplicaReply, ReplicaRequest, View, WireEntry};
use common::tracker_info::TrackerInfoFile;
use common::{Identity, PublicKey};

use crate::service::{unavailable, Service};
use crate::state::TrackerState;
use crate::store::{LogEntry, Store};

/// How often the primary pings its backups.
pub const PING_EVERY: Duration = Duration::from_millis(300);
/// A backup that has not heard from its primary for this long checks on it.
pub const FAIL_AFTER: Duration = Duration::from_millis(1500);
/// How often a tracker that is not serving tries to join.
const JOIN_EVERY: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(800);
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Entries per `Append` during catch-up.
const CATCH_UP_BATCH: usize = 512;

/// What this tracker does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not serving: catching up, or waiting for the others.
    Joining,
    Primary,
    Backup {
        primary: u32,
    },
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Joining => f.write_str("joining"),
            Role::Primary => f.write_str("primary"),
            Role::Backup { primary } => write!(f, "backup of {primary}"),
        }
    }
}

struct Inner {
    view: Option<View>,
    role: Role,
    last_heard: Instant,
}

/// This tracker's membership: its view and role, and (as primary) its links to backups.
pub struct Cluster {
    id: u32,
    trackers: Arc<TrackerInfoFile>,
    identity: Arc<Identity>,
    links: Mutex<BTreeMap<u32, ReplicaLink>>,
    inner: Mutex<Inner>,
    last: Mutex<Option<EntryId>>,
    /// While joining: what this tracker waits for, in words for clients and operators.
    waiting: Mutex<String>,
}

impl Cluster {
    /// A tracker that starts out joining, with the view it saved last time and the id of
    /// the last entry in its log.
    pub fn new(
        id: u32,
        trackers: Arc<TrackerInfoFile>,
        identity: Arc<Identity>,
        saved_view: Option<View>,
        last: Option<EntryId>,
    ) -> Cluster {
        let inner = Inner { view: saved_view, role: Role::Joining, last_heard: Instant::now() };
        Cluster {
            id,
            trackers,
            identity,
            links: Mutex::new(BTreeMap::new()),
            inner: Mutex::new(inner),
            last: Mutex::new(last),
            waiting: Mutex::new(format!("tracker {id} is starting")),
        }
    }

    /// What a joining tracker waits for (logged when it changes).
    fn set_waiting(&self, why: String) {
        let mut waiting = self.waiting.lock();
        if *waiting != why {
            log::info!("{why}");
            *waiting = why;
        }
    }

    /// Why this tracker does not serve yet.
    pub fn waiting(&self) -> String {
        self.waiting.lock().clone()
    }

    /// Opens a replication connection to tracker `to`, which must prove the key
    /// `tracker_info.txt` lists for it (a tracker whose key is not there yet is unreachable).
    fn link_to(&self, to: u32) -> Result<ReplicaLink, FrameError> {
        connect_tracker(&self.trackers, &self.identity, self.id, to)
    }

    /// This tracker's role.
    pub fn role(&self) -> Role {
        self.inner.lock().role
    }

    /// This tracker's view.
    pub fn view(&self) -> Option<View> {
        self.inner.lock().view.clone()
    }

    /// Persists `view` and records it with `role`. The caller holds the store lock.
    fn adopt(&self, store: &mut Store, view: View, role: Role) -> Result<(), TrackerError> {
        let changed = self.inner.lock().view.as_ref() != Some(&view);
        if changed {
            store.save_view(&view).map_err(|e| unavailable("cannot persist view", e))?;
        }
        let mut inner = self.inner.lock();
        if changed || inner.role != role {
            log::info!("tracker {}: {role}, view {}:{:?}", self.id, view.epoch, view.members);
            if role != Role::Joining && inner.role == Role::Joining {
                println!(
                    "tracker {} serving as {role} (view {}:{:?})",
                    self.id, view.epoch, view.members
                );
            }
        }
        inner.view = Some(view);
        inner.role = role;
        inner.last_heard = Instant::now();
        Ok(())
    }

    /// Ships one entry to every backup of `view` in ascending id order (primary, under the
    /// store lock). Backups that fail are dropped from the view; a backup that knows a newer
    /// view makes this tracker step down, and the entry is not acknowledged.
    pub(crate) fn ship(
        &self,
        store: &mut Store,
        view: &View,
        id: EntryId,
        payload: Vec<u8>,
    ) -> Result<(), TrackerError> {
        let mut links = self.links.lock();
        let mut failed = Vec::new();
        let request =
            ReplicaRequest::Append { view: view.clone(), entries: vec![WireEntry { id, payload }] };
        for member in view.backups() {
            let result = match links.get_mut(&member) {
                Some(link) => link.call(&request),
                None => Err(FrameError::Truncated),
            };
            match result {
                Ok(ReplicaReply::Ack { .. }) => {}
                Ok(ReplicaReply::Stale { view: newer }) => {
                    drop(links);
                    self.step_down(newer);
                    return Err(TrackerError::Unavailable("another tracker leads now".to_string()));
                }
                Ok(other) => {
                    log::warn!("tracker {member} did not take entry {id:?}: {other:?}");
                    failed.push(member);
                }
                Err(e) => {
                    log::warn!("tracker {member} unreachable while shipping {id:?}: {e}");
                    failed.push(member);
                }
            }
        }
        drop(links);
        if !failed.is_empty() {
            self.drop_members(store, view, &failed)?;
        }
        Ok(())
    }

    /// Moves to the next view without `failed` (primary, under the store lock).
    fn drop_members(
        &self,
        store: &mut Store,
        view: &View,
        failed: &[u32],
    ) -> Result<(), TrackerError> {
        let mut links = self.links.lock();
        for m in failed {
            links.remove(m);
        }
        drop(links);
        let Some(next) = view.without(failed) else { return Ok(()) };
        log::warn!("tracker {}: dropping {failed:?} from the view", self.id);
        self.adopt(store, next, Role::Primary)
    }

    /// Stops acting as primary: another tracker leads a newer view.
    fn step_down(&self, newer: View) {
        log::warn!(
            "tracker {}: view {}:{:?} is newer than ours; stepping down",
            self.id,
            newer.epoch,
            newer.members
        );
        self.links.lock().clear();
        let mut inner = self.inner.lock();
        inner.role = Role::Joining;
    }

    /// Accepts a view from a primary (backup side, under the store lock). A tracker that is
    /// joining stays out of service (it persists the view but serves nothing) until
    /// `activate`: the primary's `Ping` that ends its catch-up.
    fn accept_view(
        &self,
        store: &mut Store,
        view: &View,
        activate: bool,
    ) -> Result<(), ReplicaReply> {
        if !view.is_well_formed() || !view.contains(self.id) || view.primary() == self.id {
            return Err(ReplicaReply::Refused {
                reason: format!("view {view:?} does not make tracker {} a backup", self.id),
            });
        }
        let (current, role) = {
            let inner = self.inner.lock();
            (inner.view.clone(), inner.role)
        };
        if let Some(cur) = &current {
            if view.epoch < cur.epoch
                || (view.epoch == cur.epoch && view != cur && role == Role::Primary)
            {
                return Err(ReplicaReply::Stale { view: cur.clone() });
            }
        }
        if current.as_ref() != Some(view) {
            // Anyone can connect and claim a newer view: only its primary, at its listed
            // address, can confirm it.
            self.confirm_view(view)?;
        }
        if role == Role::Primary {
            self.links.lock().clear();
        }
        let next_role = if role == Role::Joining && !activate {
            Role::Joining
        } else {
            Role::Backup { primary: view.primary() }
        };
        self.adopt(store, view.clone(), next_role)
            .map_err(|e| ReplicaReply::Refused { reason: e.to_string() })
    }

    /// Asks the primary of `view`, at its address in `tracker_info.txt`, whether it leads it.
    fn confirm_view(&self, view: &View) -> Result<(), ReplicaReply> {
        let refused = |why: String| ReplicaReply::Refused {
            reason: format!("view {}:{:?} not confirmed: {why}", view.epoch, view.members),
        };
        let status = self
            .link_to(view.primary())
            .and_then(|mut link| link.call(&ReplicaRequest::Status))
            .map_err(|e| refused(e.to_string()))?;
        match status {
            ReplicaReply::Status { view: Some(theirs), serving: true, .. } if &theirs == view => {
                Ok(())
            }
            other => {
                log::warn!(
                    "tracker {}: refusing unconfirmed view {view:?} (primary says {other:?})",
                    self.id
                );
                Err(refused(format!("primary says {other:?}")))
            }
        }
    }

    /// The id of the last entry in this tracker's log (kept beside the store so that
    /// `Status` never waits for the store lock).
    pub fn last(&self) -> Option<EntryId> {
        *self.last.lock()
    }

    /// Records the id of the last entry after the store changed.
    pub(crate) fn note_last(&self, last: Option<EntryId>) {
        *self.last.lock() = last;
    }
}

/// Connects tracker `from` to tracker `to` as listed in `trackers`.
fn connect_tracker(
    trackers: &TrackerInfoFile,
    identity: &Identity,
    from: u32,
    to: u32,
) -> Result<ReplicaLink, FrameError> {
    let info = trackers.current();
    let addr = info.addr(to).ok_or_else(|| protocol(format!("tracker {to} is not listed")))?;
    let key = info.key(to).ok_or_else(|| {
        protocol(format!("no key for tracker {to} in {} yet", trackers.path().display()))
    })?;
    ReplicaLink::connect(from, identity, addr, &key)
}

/// A replication connection to another tracker (this tracker sends the requests).
pub struct ReplicaLink {
    conn: Connection<ReplicaReply, ReplicaRequest>,
}

impl ReplicaLink {
    /// Connects to the tracker at `addr`, which must prove `key`, as tracker `from` with
    /// `identity`.
    pub fn connect(
        from: u32,
        identity: &Identity,
        addr: SocketAddr,
        key: &PublicKey,
    ) -> Result<ReplicaLink, FrameError> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        let timeouts =
            Timeouts { handshake: REPLY_TIMEOUT, read: REPLY_TIMEOUT, write: REPLY_TIMEOUT };
        let mut hello: Connection<TrackerMessage, ClientMessage> =
            Connection::connect(stream, identity, key, timeouts)?;
        hello.send(&ClientMessage::ReplicaHello { version: PROTOCOL_VERSION, from })?;
        Ok(ReplicaLink { conn: hello.retype() })
    }

    /// Sends one request and waits for its reply.
    pub fn call(&mut self, request: &ReplicaRequest) -> Result<ReplicaReply, FrameError> {
        self.conn.send(request)?;
        self.conn.recv()?.ok_or(FrameError::Truncated)
    }
}

/// Serves a replication connection opened by tracker `from`, which proved its listed key
/// (`ClientMessage::ReplicaHello`). A message that speaks for a view's primary is obeyed
/// only when `from` is that primary, and a `Join` only when `from` is the joiner.
pub fn serve(
    mut conn: Connection<ReplicaRequest, ReplicaReply>,
    svc: &Service,
    from: u32,
) -> Result<(), FrameError> {
    while let Some(request) = conn.recv()? {
        let not_from = |role: &str, claimed: u32| ReplicaReply::Refused {
            reason: format!("tracker {from} cannot speak as {role} {claimed}"),
        };
        let reply = match request {
            ReplicaRequest::Status => {
                // Without the store lock: a primary holding it while it catches this tracker
                // up may be the one asking.
                let last = svc.cluster.last();
                let (view, role) = (svc.cluster.view(), svc.cluster.role());
                ReplicaReply::Status { view, last, serving: role != Role::Joining }
            }
            ReplicaRequest::Append { view, .. }
            | ReplicaRequest::Snapshot { view, .. }
            | ReplicaRequest::Ping { view }
                if view.primary() != from =>
            {
                log::warn!("tracker {from} sent a message of view {view:?} led by another");
                not_from("the primary of view", view.epoch as u32)
            }
            ReplicaRequest::Append { view, entries } => on_append(svc, &view, entries),
            ReplicaRequest::Snapshot { view, last, state } => on_snapshot(svc, &view, last, &state),
            ReplicaRequest::Ping { view } => {
                let mut store = svc.store.lock();
                match svc.cluster.accept_view(&mut store, &view, true) {
                    Ok(()) => ReplicaReply::Ack { last: store.last() },
                    Err(reply) => reply,
                }
            }
            ReplicaRequest::Join { from: joiner } if joiner != from => {
                log::warn!("tracker {from} asked to join as tracker {joiner}");
                not_from("joiner", joiner)
            }
            ReplicaRequest::Join { from: joiner } => on_join(svc, joiner),
            ReplicaRequest::Forward { id, session, client, request } => {
                // Only the primary takes forwarded requests: during a view change two
                // trackers must not bounce a request between them.
                let result = match svc.cluster.role() {
                    Role::Primary => svc.handle(id, session, client, request),
                    role => Err(TrackerError::Unavailable(format!(
                        "tracker {} is {role}, not the primary",
                        svc.cluster.id
                    ))),
                };
                ReplicaReply::Forwarded { result }
            }
        };
        log::debug!("replica {from}: {reply:?}");
        conn.send(&reply)?;
    }
    Ok(())
}

fn on_append(svc: &Service, view: &View, entries: Vec<WireEntry>) -> ReplicaReply {
    let mut store = svc.store.lock();
    if let Err(reply) = svc.cluster.accept_view(&mut store, view, false) {
        return reply;
    }
    for e in entries {
        if e.id.seq < store.next_seq() {
            // An entry we hold already must be the same entry, content included: the id
            // alone does not prove it.
            let same = match store.entry_at(e.id.seq) {
                Ok(Some((have, payload))) => have == e.id && payload == e.payload,
                // Pruned behind our snapshot, whose last entry it must be.
                Ok(None) => matches!(store.entry_id_at(e.id.seq), Ok(Some(have)) if have == e.id),
                Err(_) => false,
            };
            match same {
                true => continue,
                false => {
                    return ReplicaReply::Refused {
                        reason: format!("log diverges at seq {}", e.id.seq),
                    }
                }
            }
        }
        let entry: LogEntry = match postcard::from_bytes(&e.payload) {
            Ok(entry) => entry,
            Err(err) => {
                return ReplicaReply::Refused {
                    reason: format!("undecodable entry {:?}: {err}", e.id),
                }
            }
        };
        if let Err(err) = store.append_encoded(e.id, &e.payload) {
            return ReplicaReply::Refused { reason: err.to_string() };
        }
        if let Err(err) = svc.state.write().apply_entry(&entry) {
            // The primary checked it against the same state; this means a bug, not input.
            log::error!("entry {:?} from the primary does not apply here: {err}", e.id);
        }
    }
    svc.cluster.note_last(store.last());
    svc.maybe_snapshot(&mut store);
    ReplicaReply::Ack { last: store.last() }
}

fn on_snapshot(svc: &Service, view: &View, last: EntryId, bytes: &[u8]) -> ReplicaReply {
    let mut store = svc.store.lock();
    if let Err(reply) = svc.cluster.accept_view(&mut store, view, false) {
        return reply;
    }
    let state: TrackerState = match postcard::from_bytes(bytes) {
        Ok(state) => state,
        Err(err) => {
            return ReplicaReply::Refused { reason: format!("undecodable snapshot: {err}") }
        }
    };
    if let Err(err) = store.install_snapshot(last, &state) {
        return ReplicaReply::Refused { reason: err.to_string() };
    }
    *svc.state.write() = state;
    svc.cluster.note_last(Some(last));
    log::info!("installed a snapshot at {last:?}");
    ReplicaReply::Ack { last: Some(last) }
}

fn on_join(svc: &Service, joiner: u32) -> ReplicaReply {
    let cluster = &svc.cluster;
    let mut store = svc.store.lock();
    let view = match (cluster.role(), cluster.view()) {
        (Role::Primary, Some(view)) => view,
        _ => return ReplicaReply::Refused { reason: "not the primary".to_string() },
    };
    if joiner == cluster.id || cluster.trackers.current().addr(joiner).is_none() {
        return ReplicaReply::Refused {
            reason: format!("tracker {joiner} is not in tracker_info.txt"),
        };
    }
    let next = view.with(joiner);
    if let Err(e) = cluster.adopt(&mut store, next.clone(), Role::Primary) {
        return ReplicaReply::Refused { reason: e.to_string() };
    }
    let caught_up = cluster
        .link_to(joiner)
        .and_then(|mut link| catch_up(svc, &store, &mut link, &next).map(|()| link));
    match caught_up {
        Ok(link) => {
            cluster.links.lock().insert(joiner, link);
            log::info!("tracker {joiner} joined: view {}:{:?}", next.epoch, next.members);
            ReplicaReply::Ack { last: store.last() }
        }
        Err(e) => {
            log::warn!("tracker {joiner} could not catch up: {e}");
            let _ = cluster.drop_members(&mut store, &next, &[joiner]);
            ReplicaReply::Refused { reason: format!("catch-up failed: {e}") }
        }
    }
}

/// Brings the tracker behind `link` up to date with this primary's log and into `view`:
/// the missing tail if its last entry is on our log, a snapshot otherwise. The caller holds
/// the store lock, so nothing is committed meanwhile.
fn catch_up(
    svc: &Service,
    store: &Store,
    link: &mut ReplicaLink,
    view: &View,
) -> Result<(), FrameError> {
    let their_last = match link.call(&ReplicaRequest::Status)? {
        ReplicaReply::Status { last, .. } => last,
        other => return Err(protocol(format!("unexpected status reply {other:?}"))),
    };
    let shared = match their_last {
        None => Some(0),
        Some(last) => match store.entry_id_at(last.seq) {
            Ok(Some(ours)) if ours == last => Some(last.seq),
            _ => None,
        },
    };
    // Start one entry early: the joiner compares the content of the entry it already holds
    // (`on_append`), so two logs that agree on ids but not on content (two deployments
    // started apart) end in a snapshot rather than a silent divergence.
    let mut from = match shared {
        Some(seq) => seq.saturating_sub(1),
        None => return send_snapshot(svc, store, link, view),
    };
    loop {
        let batch =
            store.entries_after(from, CATCH_UP_BATCH).map_err(|e| protocol(e.to_string()))?;
        let entries = match batch {
            None => return send_snapshot(svc, store, link, view),
            Some(entries) => entries,
        };
        let done = entries.is_empty();
        let next = entries.last().map_or(from, |e| e.id.seq);
        match link.call(&ReplicaRequest::Append { view: view.clone(), entries })? {
            ReplicaReply::Ack { .. } => {}
            ReplicaReply::Refused { reason } if reason.starts_with("log diverges") => {
                return send_snapshot(svc, store, link, view)
            }
            other => return Err(protocol(format!("catch-up refused: {other:?}"))),
        }
        if done {
            return activate(link, view);
        }
        from = next;
    }
}

/// Ends a catch-up: the `Ping` tells the caught-up tracker to start serving.
fn activate(link: &mut ReplicaLink, view: &View) -> Result<(), FrameError> {
    match link.call(&ReplicaRequest::Ping { view: view.clone() })? {
        ReplicaReply::Ack { .. } => Ok(()),
        other => Err(protocol(format!("view refused: {other:?}"))),
    }
}

fn send_snapshot(
    svc: &Service,
    store: &Store,
    link: &mut ReplicaLink,
    view: &View,
) -> Result<(), FrameError> {
    let Some(last) = store.last() else {
        // Nothing to send but the view.
        return activate(link, view);
    };
    let state = postcard::to_stdvec(&*svc.state.read()).map_err(|e| protocol(e.to_string()))?;
    log::info!("sending a snapshot at {last:?} ({} bytes)", state.len());
    match link.call(&ReplicaRequest::Snapshot { view: view.clone(), last, state })? {
        ReplicaReply::Ack { .. } => activate(link, view),
        other => Err(protocol(format!("snapshot refused: {other:?}"))),
    }
}

fn protocol(detail: String) -> FrameError {
    FrameError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, detail))
}

/// Runs the cluster's upkeep until `stop` is closed: joining, pinging, failure detection,
/// on a 50 ms tick.
pub fn maintain(svc: Arc<Service>, stop: Receiver<()>) {
    let mut last_join = Instant::now() - JOIN_EVERY;
    let mut last_ping = Instant::now();
    let ticker = crossbeam_channel::tick(Duration::from_millis(50));
    loop {
        crossbeam_channel::select! {
            recv(stop) -> _ => return,
            recv(ticker) -> _ => {}
        }
        match svc.cluster.role() {
            Role::Joining if last_join.elapsed() >= JOIN_EVERY => {
                last_join = Instant::now();
                try_join(&svc);
            }
            Role::Primary if last_ping.elapsed() >= PING_EVERY => {
                last_ping = Instant::now();
                ping_backups(&svc);
            }
            Role::Backup { primary } => {
                let silent = svc.cluster.inner.lock().last_heard.elapsed();
                if silent >= FAIL_AFTER {
                    check_primary(&svc, primary);
                }
            }
            _ => {}
        }
    }
}

fn ping_backups(svc: &Service) {
    let cluster = &svc.cluster;
    let mut store = svc.store.lock();
    let Some(view) = cluster.view().filter(|_| cluster.role() == Role::Primary) else { return };
    let mut failed = Vec::new();
    {
        let mut links = cluster.links.lock();
        for member in view.backups() {
            #[allow(clippy::map_entry)] // the insert needs `links` borrowed only after catch-up
            if !links.contains_key(&member) {
                // A member without a link (we just took over): connect and catch it up.
                let linked = cluster.link_to(member).and_then(|mut link| {
                    catch_up(svc, &store, &mut link, &view)?;
                    Ok(link)
                });
                match linked {
                    Ok(link) => {
                        links.insert(member, link);
                    }
                    Err(e) => {
                        log::warn!("cannot bring tracker {member} up to date: {e}");
                        failed.push(member);
                    }
                }
                continue;
            }
            let reply = links
                .get_mut(&member)
                .map(|link| link.call(&ReplicaRequest::Ping { view: view.clone() }));
            match reply {
                Some(Ok(ReplicaReply::Ack { .. })) => {}
                Some(Ok(ReplicaReply::Stale { view: newer })) => {
                    drop(links);
                    cluster.step_down(newer);
                    return;
                }
                Some(other) => {
                    log::warn!("tracker {member} did not answer a ping: {other:?}");
                    failed.push(member);
                }
                None => failed.push(member),
            }
        }
    }
    if !failed.is_empty() {
        let _ = cluster.drop_members(&mut store, &view, &failed);
    }
}

/// A backup whose primary went silent: if the primary still answers, wait (or rejoin if it
/// dropped us); if not, move to the next view without it.
fn check_primary(svc: &Service, primary: u32) {
    let cluster = &svc.cluster;
    let status = cluster.link_to(primary).and_then(|mut link| link.call(&ReplicaRequest::Status));
    if let Ok(ReplicaReply::Status { view: Some(their), serving: true, .. }) = status {
        let mut inner = cluster.inner.lock();
        if their.contains(cluster.id) {
            inner.last_heard = Instant::now();
        } else {
            log::warn!("tracker {primary} leads without us; rejoining");
            inner.role = Role::Joining;
        }
        return;
    }
    let mut store = svc.store.lock();
    let Some(view) = cluster.view() else { return };
    if cluster.role() != (Role::Backup { primary }) {
        return;
    }
    let Some(next) = view.without(&[primary]) else { return };
    log::warn!(
        "tracker {}: primary {primary} is gone; moving to view {}:{:?}",
        cluster.id,
        next.epoch,
        next.members
    );
    let role = if next.primary() == cluster.id {
        Role::Primary
    } else {
        Role::Backup { primary: next.primary() }
    };
    if cluster.adopt(&mut store, next, role).is_ok() && role == Role::Primary {
        drop(store);
        // The other backups get catch-up and the new view at the next ping.
        ping_backups(svc);
    }
}

/// A tracker that does not serve: find the newest view and join it, or, when every member
/// of the newest view is here and none serves, restart the cluster from the member with the
/// most complete log.
fn try_join(svc: &Service) {
    let cluster = &svc.cluster;
    let my_last = svc.store.lock().last();
    let my_view = cluster.view();
    let mut statuses: BTreeMap<u32, (Option<View>, Option<EntryId>, bool)> = BTreeMap::new();
    let others: Vec<u32> = cluster
        .trackers
        .current()
        .trackers()
        .map(|(t, _)| t)
        .filter(|t| *t != cluster.id)
        .collect();
    for tid in others {
        let status = cluster.link_to(tid).and_then(|mut link| link.call(&ReplicaRequest::Status));
        if let Ok(ReplicaReply::Status { view, last, serving }) = status {
            statuses.insert(tid, (view.filter(View::is_well_formed), last, serving));
        }
    }

    // 1. Join a serving tracker with the newest view, unless ours is newer.
    let serving = statuses
        .iter()
        .filter_map(|(tid, (view, _, serving))| {
            view.as_ref().filter(|_| *serving).map(|v| (*tid, v.clone()))
        })
        .max_by_key(|(_, v)| (v.epoch, std::cmp::Reverse(v.primary)));
    if let Some((tid, view)) = serving {
        if let Some(mine) = my_view.as_ref().filter(|mine| mine.epoch > view.epoch) {
            log::error!(
                "tracker {tid} serves view {} but ours is newer ({}); not joining it (its data may be older)",
                view.epoch,
                mine.epoch
            );
            return;
        }
        let primary = view.primary();
        let joined = cluster
            .link_to(primary)
            .and_then(|mut link| link.call(&ReplicaRequest::Join { from: cluster.id }));
        match joined {
            Ok(ReplicaReply::Ack { .. }) => log::info!("joined tracker {primary}'s view"),
            other => {
                log::info!("join via tracker {primary} not done yet: {other:?}");
                cluster.set_waiting(format!("tracker {} is joining tracker {primary}", cluster.id));
            }
        }
        return;
    }

    // 2. Nobody serves.
    // Equal epochs with different views should not happen; if they do, every tracker must
    // pick the same one (never "its own"): the lower primary id wins.
    let newest = statuses
        .values()
        .filter_map(|(v, _, _)| v.clone())
        .chain(my_view.clone())
        .max_by_key(|v| (v.epoch, std::cmp::Reverse(v.primary)));
    let restart_view = match newest {
        None => {
            // A brand-new deployment: the lowest id present starts it. A lower-id tracker
            // whose key we lack may well be up (on another machine, its key not copied here
            // yet), and starting beside it would make two deployments: wait for its key.
            let info = cluster.trackers.current();
            let keyless: Vec<u32> = info
                .trackers()
                .map(|(t, _)| t)
                .filter(|t| *t < cluster.id && info.key(*t).is_none())
                .collect();
            if !keyless.is_empty() {
                cluster.set_waiting(format!(
                    "tracker {} waits for the key of tracker{} {keyless:?} in {} (start {} once, \
                     or copy its line with the key here)",
                    cluster.id,
                    if keyless.len() > 1 { "s" } else { "" },
                    cluster.trackers.path().display(),
                    if keyless.len() > 1 { "them" } else { "it" },
                ));
                return;
            }
            if let Some(lower) = statuses.keys().find(|&&t| t < cluster.id) {
                cluster.set_waiting(format!("tracker {lower} starts the deployment"));
                return;
            }
            View::solo(1, cluster.id)
        }
        Some(newest) => {
            if !newest.members.iter().all(|m| *m == cluster.id || statuses.contains_key(m)) {
                let missing: Vec<u32> = newest
                    .members
                    .iter()
                    .copied()
                    .filter(|m| *m != cluster.id && !statuses.contains_key(m))
                    .collect();
                cluster.set_waiting(format!(
                    "tracker {} waits for trackers {missing:?} of its last view {}:{:?} to \
                     come back (one of them may hold the newest changes)",
                    cluster.id, newest.epoch, newest.members
                ));
                return;
            }
            // Everyone who may hold acknowledged entries is here: the most complete log leads.
            let last_of =
                |m: u32| if m == cluster.id { my_last } else { statuses.get(&m).and_then(|s| s.1) };
            let leader = newest
                .members
                .iter()
                .copied()
                .max_by(|a, b| last_of(*a).cmp(&last_of(*b)).then(b.cmp(a)))
                .unwrap_or(cluster.id);
            if leader != cluster.id {
                return;
            }
            View::solo(newest.epoch + 1, cluster.id)
        }
    };
    let mut store = svc.store.lock();
    if cluster.adopt(&mut store, restart_view, Role::Primary).is_ok() {
        drop(store);
        if let Err(e) = svc.ensure_secret() {
            log::error!("cannot create the ticket secret: {e}");
        }
    }
}

/// How many idle connections to the primary a backup keeps for forwarding.
const MAX_IDLE_FORWARD_CONNECTIONS: usize = 8;

/// A backup's replication connections to its primary for forwarding client requests (with
/// the key each client proved, which only a tracker may vouch for): a small pool, so that
/// one slow forwarded request (a key derivation) does not hold up the others.
pub struct Forwarder {
    id: u32,
    trackers: Arc<TrackerInfoFile>,
    identity: Arc<Identity>,
    idle: Mutex<Vec<(u32, ReplicaLink)>>,
}

impl Forwarder {
    pub fn new(id: u32, trackers: Arc<TrackerInfoFile>, identity: Arc<Identity>) -> Forwarder {
        Forwarder { id, trackers, identity, idle: Mutex::new(Vec::new()) }
    }

    /// Sends a client's request to the primary and returns its answer.
    pub fn forward(
        &self,
        primary: u32,
        id: RequestId,
        session: Option<SessionToken>,
        client: PublicKey,
        request: Request,
    ) -> Result<Reply, TrackerError> {
        let unreachable =
            || TrackerError::Unavailable(format!("primary tracker {primary} unreachable"));
        let msg = ReplicaRequest::Forward { id, session, client, request };
        for _ in 0..2 {
            let pooled = {
                let mut idle = self.idle.lock();
                idle.retain(|(p, _)| *p == primary);
                idle.pop()
            };
            let mut link = match pooled {
                Some((_, link)) => link,
                None => connect_tracker(&self.trackers, &self.identity, self.id, primary).map_err(
                    |e| {
                        log::warn!("tracker {}: cannot reach primary {primary}: {e}", self.id);
                        unreachable()
                    },
                )?,
            };
            match link.call(&msg) {
                Ok(ReplicaReply::Forwarded { result }) => {
                    let mut idle = self.idle.lock();
                    if idle.len() < MAX_IDLE_FORWARD_CONNECTIONS {
                        idle.push((primary, link));
                    }
                    return result;
                }
                // A pooled connection may have been closed by the primary: try a fresh one.
                other => log::warn!("forwarding to tracker {primary} failed: {other:?}"),
            }
        }
        Err(unreachable())
    }
}

//! A download's coordinator thread (`dl-N`): it owns the `Scheduler`, starts one worker
//! thread per peer (fed a bounded `crossbeam-channel` of jobs), and reacts to the workers'
//! events (ready, verified, bad hash, no piece, gone), to its tracker thread's answers and to
//! a one-second tick, on which it announces its verified pieces (partial seeding), lets a
//! seeder's deferrals expire, and asks the tracker for peers when `RefreshSchedule` says.
//! Bans and back-off are `PeerPolicy`'s decisions. A verified piece is marked in the swarm
//! at once (and pushed by this peer's seeder to its downloaders). When every piece is
//! verified, `finish` checks, syncs and renames the file, and the swarm seeds.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, tick, Receiver, Sender};
use parking_lot::Mutex;

use common::message::{PeerInfo, Reply, Request, Ticket};
use common::{Bitfield, PieceIndex, PublicKey, Sha1Digest};

use super::peer_set::{PeerPolicy, RefreshSchedule, Strike, MAX_BAD_PIECES};
use super::record::Control;
use super::scheduler::{PeerId, Scheduler};
use super::store::Store;
use super::tracker_calls::{TrackerCalls, TrackerJob, TrackerNews};
use super::worker::{self, Event, HaveNews, Inbox, Job, Target};
use super::{finish, Context};
use crate::advertiser::SOFT_STATE_REFRESH;
use crate::reach::SourcePath;
use crate::swarm::{DownloadError, Phase, StallCause, Swarm};
use crate::tracker_session::CallError;

/// Pieces asked of one peer at a time.
pub const MAX_IN_FLIGHT: usize = 4;
/// Small pieces asked of one peer at a time, at most (a folder of small files: issue 23).
pub const MAX_SMALL_IN_FLIGHT: usize = 32;
/// A seeder's "fetch elsewhere" holds for one to two periods of this many ticks; then the
/// piece is asked of it again (and sent, if a holder received it whole meanwhile).
const DEFER_TICKS: u32 = 2;
/// A download's progress (the pieces it has) is saved this often at most while it runs,
/// and at its end. Each save is a write, an fsync and a rename of the state file (by the
/// registry's writer thread); an fsync a second per download stalled every write to the
/// disk for a third of a second in a flash crowd (issue 12). A resume re-hashes the pieces
/// it was saved with anyway, so what a crash loses is at most this long of pieces to fetch
/// again.
const SAVE_PROGRESS_EVERY: Duration = Duration::from_secs(10);

struct WorkerHandle {
    addr: SocketAddr,
    key: PublicKey,
    jobs: Sender<Job>,
    /// Written after each job, so that a worker waiting on its peer takes it.
    wake: UnixStream,
    /// The pieces its peer announced, not yet taken.
    news: Arc<Mutex<HaveNews>>,
    socket: Arc<Mutex<Option<TcpStream>>>,
    thread: thread::JoinHandle<()>,
    /// How it reached its peer (issue 19), once connected.
    path: SourcePath,
    /// Whether it is connected (said `Ready`).
    connected: bool,
}

/// One download's coordinator.
pub struct Coordinator {
    ctx: Context,
    swarm: Arc<Swarm>,
    target: Arc<Target>,
    scheduler: Scheduler,
    /// Pieces asked of one peer at a time (`in_flight_per_peer`).
    in_flight: usize,
    workers: HashMap<PeerId, WorkerHandle>,
    next_peer: u32,
    policy: PeerPolicy,
    refresh: RefreshSchedule,
    /// What the tracker's last list said: each peer and its piece count (news is what
    /// differs).
    listed: HashMap<SocketAddr, u32>,
    events_tx: Sender<Event>,
    events: Receiver<Event>,
    stalled_since: Option<Instant>,
    /// Why the last peer that could not be reached any way could not (issue 19): what a
    /// stalled download with no peer connected says.
    unreachable: Option<String>,
    announced: u32,
    /// When the last announcement was posted: the leader keeps what it says as soft state,
    /// which a new leader starts without, so it is posted again every
    /// `SOFT_STATE_REFRESH` even when nothing changed.
    announced_at: Instant,
    /// When this download's progress was last saved (`SAVE_PROGRESS_EVERY`).
    progress_saved: Instant,
    /// The SHA1 computed from the bytes of every piece we have (received, or re-verified
    /// on resume): the whole-file check is the file digest over these.
    computed: Vec<Option<Sha1Digest>>,
    /// Calls to the tracker, made off this thread.
    calls: TrackerCalls,
    /// What the views tell this download (pause, resume, cancel).
    control: Receiver<Control>,
    /// Paused: no peer connected, no piece asked, no stall counted.
    paused: bool,
    /// Who waits for a cancel to be carried out (answered at the end of `run`).
    cancel_done: Vec<Sender<()>>,
}

/// Why fetching stopped before every piece was had.
enum Stop {
    Failed(DownloadError),
    /// The user cancelled the download.
    Cancelled,
}

impl From<DownloadError> for Stop {
    fn from(e: DownloadError) -> Stop {
        Stop::Failed(e)
    }
}

impl Coordinator {
    /// The coordinator of `swarm`'s download (number `idx`) into `store`, with `ticket`,
    /// told by the views on `control`.
    pub fn new(
        ctx: Context,
        idx: usize,
        swarm: Arc<Swarm>,
        ticket: Ticket,
        store: Store,
        control: Receiver<Control>,
    ) -> Coordinator {
        let have = swarm.have();
        let in_flight = match swarm.meta.is_folder() {
            true => in_flight_per_peer(swarm.chosen.size, swarm.chosen.wanted.count()),
            false => MAX_IN_FLIGHT,
        };
        let mut refresh = RefreshSchedule::new(Instant::now());
        refresh.ticket_life(Instant::now(), ticket_life(&ticket));
        let target = Arc::new(Target {
            identity: Arc::clone(&ctx.identity),
            ticket: Mutex::new(ticket),
            store: Arc::new(store),
            writer: ctx.writer.clone(),
            swarm: Arc::clone(&swarm),
            cap: Arc::clone(&ctx.download_cap),
            tracker: Arc::clone(&ctx.tracker),
            reversals: Arc::clone(&ctx.reversals),
            reach: ctx.reach.clone(),
            upgrades: Arc::clone(&ctx.upgrades),
            pipeline: (in_flight / 2).max(1),
        });
        // Unbounded in type, bounded by construction: a worker sends one event per request
        // it made (at most `in_flight` asked), per connection change, and at most one `Have`
        // waiting, whatever its peer sends; and there are at most `MAX_PEERS` workers. (A
        // bounded channel here could deadlock: the coordinator also feeds the workers.)
        let (events_tx, events) = crossbeam_channel::unbounded();
        let calls = TrackerCalls::start(Arc::clone(&ctx.tracker), swarm.meta.name.to_string(), idx);
        // Resumed pieces were re-hashed from disk and matched before they were marked.
        let computed = (0..have.n_pieces())
            .map(|i| have.has(PieceIndex(i)).then(|| swarm.meta.pieces[i as usize]))
            .collect();
        // A selective download (issue 23) schedules only the part chosen: to the scheduler
        // the other pieces are had already, so it is complete when the part is.
        let mut scheduled = have.clone();
        for i in 0..have.n_pieces() {
            if !swarm.chosen.wanted.has(PieceIndex(i)) {
                scheduled.set(PieceIndex(i));
            }
        }
        Coordinator {
            calls,
            ctx,
            target,
            scheduler: Scheduler::new(&scheduled, in_flight, fastrand::u64(..)),
            in_flight,
            workers: HashMap::new(),
            next_peer: 0,
            policy: PeerPolicy::default(),
            refresh,
            listed: HashMap::new(),
            events_tx,
            events,
            stalled_since: None,
            unreachable: None,
            announced: have.count(),
            announced_at: Instant::now(),
            progress_saved: Instant::now(),
            computed,
            swarm,
            control,
            paused: false,
            cancel_done: Vec::new(),
        }
    }

    /// Fetches, finishes, and ends the download in its swarm.
    pub fn run(mut self, peers: Vec<PeerInfo>) {
        let started = Instant::now();
        let name = self.swarm.meta.name.clone();
        let result = self.fetch(peers).and_then(|()| {
            let fetched = started.elapsed();
            self.stop_workers();
            if !self.swarm.finishing() {
                return Err(Stop::Cancelled);
            }
            let part = self.swarm.path();
            let dest = self.swarm.downloading_to().unwrap_or_else(|| part.clone());
            let (meta, chosen) = (&self.swarm.meta, &self.swarm.chosen);
            let stamp = match &*self.target.store {
                Store::Part(file) => finish::finish(
                    &part,
                    &dest,
                    &file.buffered,
                    meta,
                    &self.swarm.layout,
                    chosen,
                    &self.computed,
                )?,
                Store::Tree(tree) => {
                    finish::finish_tree(tree, &dest, meta, chosen, &self.computed)?;
                    // Each piece is checked again as it is served from the folder's files.
                    None
                }
            };
            log::info!(
                "{name}: pieces fetched in {:.3} s, checked and renamed in {:.3} s",
                fetched.as_secs_f64(),
                (started.elapsed() - fetched).as_secs_f64()
            );
            Ok(stamp)
        });
        self.stop_workers();
        match result {
            Ok(stamp) => {
                let dest = self.swarm.downloading_to().unwrap_or_default();
                log::info!("download of {name} complete: {}", dest.display());
                self.ctx.downloads.end(&self.swarm, Ok(stamp));
                self.ctx.registry.save();
                let request = super::completion_request(&self.swarm);
                if !self.calls.post(TrackerJob::Complete(request.clone())) {
                    // The queue is full of older calls: wait for room rather than not
                    // announce.
                    self.calls.send(TrackerJob::Complete(request));
                }
            }
            Err(Stop::Failed(error)) => {
                log::warn!("download of {name} failed: {error}");
                self.ctx.registry.remove(&self.swarm);
                self.ctx.registry.save();
                if !error.keeps_part() {
                    self.target.store.remove(&self.swarm.path());
                }
                self.ctx.downloads.end(&self.swarm, Err(error));
            }
            Err(Stop::Cancelled) => {
                log::info!("download of {name} cancelled");
                self.ctx.registry.remove(&self.swarm);
                self.ctx.registry.save();
                self.target.store.remove(&self.swarm.path());
                self.ctx.downloads.changes().notify();
            }
        }
        // After the outcome is visible: the last calls may wait for a tracker.
        self.calls.finish();
        // Whoever cancelled waits for the file to be gone (and a cancel that came too late
        // to stop the end hears that this thread is done).
        let queued = self.control.try_iter().filter_map(|message| match message {
            Control::Cancel { done } => Some(done),
            Control::Look => None,
        });
        for done in self.cancel_done.drain(..).chain(queued.collect::<Vec<_>>()) {
            let _ = done.send(());
        }
    }

    /// Fetches every piece (pausing while the user says so). Errors are why it stopped.
    fn fetch(&mut self, peers: Vec<PeerInfo>) -> Result<(), Stop> {
        match self.swarm.phase() {
            Phase::Cancelled => return Err(Stop::Cancelled),
            Phase::Paused => self.paused = true,
            _ => {
                self.add_peers(peers);
                // Listed at once, pieces or not: the other leechers of a flash crowd
                // connect now and hear of each piece as it is verified (`Have`), not a
                // tick and a refresh after.
                self.post_announce(self.scheduler.n_have());
            }
        }
        let ticker = tick(Duration::from_secs(1));
        let mut ticks = 0u32;
        loop {
            if !self.paused {
                self.dispatch();
            }
            if self.scheduler.is_complete() {
                return Ok(());
            }
            if !self.paused {
                self.check_stall()?;
            }
            select! {
                recv(self.events) -> event => {
                    // The coordinator holds a sender, so the channel never disconnects.
                    if let Ok(event) = event {
                        self.handle(event)?;
                    }
                }
                recv(self.calls.news) -> news => {
                    if let Ok(news) = news {
                        self.hear(news);
                    }
                }
                recv(self.control) -> message => match message {
                    Ok(Control::Look) => self.look(),
                    Ok(Control::Cancel { done }) => {
                        // Answered once the file is gone (`run`).
                        self.cancel_done.push(done);
                        return Err(Stop::Cancelled);
                    }
                    // The views are gone (the client is ending): go on until it does.
                    Err(_) => {}
                },
                recv(ticker) -> _ => {
                    ticks += 1;
                    if ticks.is_multiple_of(DEFER_TICKS) {
                        self.scheduler.expire_deferrals();
                    }
                    self.announce();
                    if !self.paused {
                        self.refresh_if_due();
                    }
                }
            }
        }
    }

    /// Follows the swarm's phase after a pause or resume: a paused download lets its peers
    /// go (it keeps, and serves, its pieces); a resumed one asks the tracker for peers, with
    /// a fresh ticket, at once.
    fn look(&mut self) {
        match self.swarm.phase() {
            Phase::Paused if !self.paused => {
                log::info!("download of {} paused", self.swarm.meta.name);
                self.paused = true;
                let peers: Vec<PeerId> = self.workers.keys().copied().collect();
                for peer in peers {
                    self.drop_worker(peer);
                }
            }
            Phase::Fetching if self.paused => {
                log::info!("download of {} resumed", self.swarm.meta.name);
                self.paused = false;
                self.stalled_since = None;
                self.refresh.ask_now(Instant::now());
                self.refresh_if_due();
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        for (peer, piece) in self.scheduler.assign(Instant::now()) {
            let sent = self
                .workers
                .get(&peer)
                .map(|w| w.jobs.try_send(Job { piece }).is_ok() && crate::readiness::wake(&w.wake))
                .unwrap_or(false);
            if !sent {
                self.scheduler.fail(piece, peer);
            }
        }
        let in_flight: usize = self.scheduler.peers().map(|p| self.scheduler.load(p)).sum();
        if in_flight > 0 {
            self.stalled_since = None;
        } else if self.stalled_since.is_none() {
            self.stalled_since = Some(Instant::now());
            // Nothing to ask of anyone connected: the tracker may know someone else.
            self.refresh.hurry(Instant::now());
        }
    }

    fn check_stall(&self) -> Result<(), DownloadError> {
        let Some(since) = self.stalled_since else { return Ok(()) };
        if since.elapsed() < self.ctx.stall_timeout {
            return Ok(());
        }
        if let Some(why) = &self.unreachable {
            if !self.workers.values().any(|w| w.connected) {
                let name = self.swarm.meta.name.to_string();
                return Err(DownloadError::Unreachable { name, why: why.clone() });
            }
        }
        // The pieces not chosen count as had to the scheduler (`new`).
        let missing = self.swarm.layout.n_pieces().saturating_sub(self.scheduler.n_have());
        Err(DownloadError::Stalled {
            secs: self.ctx.stall_timeout.as_secs(),
            missing,
            total: self.swarm.chosen.wanted.count(),
            cause: match self.scheduler.has_unavailable_piece() {
                true => StallCause::NoPeerHasThem,
                false => StallCause::PeersStopped,
            },
        })
    }

    fn handle(&mut self, event: Event) -> Result<(), DownloadError> {
        match event {
            Event::Ready { peer, have, path } => {
                if let Some(w) = self.workers.get_mut(&peer) {
                    w.path = path;
                    w.connected = true;
                }
                self.unreachable = None;
                self.record_connected();
                self.scheduler.set_peer_have(peer, have);
                self.scheduler.set_relayed(peer, path == SourcePath::Relayed);
                self.record_peer_have(peer);
            }
            Event::Moved { peer, path } => {
                if let Some(w) = self.workers.get_mut(&peer) {
                    w.path = path;
                }
                self.scheduler.set_relayed(peer, path == SourcePath::Relayed);
                self.record_connected();
            }
            Event::Verified { peer, piece, hash, bytes_per_sec } => {
                self.scheduler.record_throughput(peer, bytes_per_sec);
                let len = self.swarm.layout.piece_len(piece) as f64;
                self.scheduler.record_piece_time(peer, len / bytes_per_sec.max(1.0));
                let addr = self.workers.get(&peer).map(|w| w.addr);
                if self.scheduler.complete(piece) {
                    if let Some(slot) = self.computed.get_mut(piece.0 as usize) {
                        *slot = Some(hash);
                    }
                    self.swarm.piece_verified(piece, addr);
                    log::trace!(
                        "piece={} from={addr:?}: verified and written ({} had)",
                        piece.0,
                        self.scheduler.n_have()
                    );
                } else {
                    log::trace!("piece={} from={addr:?}: a duplicate, had already", piece.0);
                }
            }
            Event::BadHash { peer, piece } => {
                self.scheduler.fail(piece, peer);
                if let Some(addr) = self.workers.get(&peer).map(|w| w.addr) {
                    match self.policy.bad_piece(addr) {
                        Strike::Warned(n) => {
                            log::warn!("peer={addr} piece={}: hash mismatch ({n} so far)", piece.0)
                        }
                        Strike::Banned => {
                            log::warn!("peer={addr}: dropped after {MAX_BAD_PIECES} bad pieces");
                            self.drop_worker(peer);
                        }
                    }
                }
            }
            Event::Have { peer } => {
                if let Some(w) = self.workers.get(&peer) {
                    let news = w.news.lock().take();
                    self.scheduler.add_have(peer, &news);
                    self.record_peer_have(peer);
                }
            }
            Event::Elsewhere { peer, piece } => self.scheduler.defer(piece, peer),
            Event::NoPiece { peer, piece } => {
                self.scheduler.fail(piece, peer);
                // Its copy may have gone bad; forget what it claimed and let it reconnect.
                self.drop_worker(peer);
            }
            Event::WriteFailed { piece, reason } => {
                return Err(DownloadError::Write {
                    piece: piece.0,
                    path: self.swarm.path().display().to_string(),
                    reason,
                });
            }
            Event::Unreachable { peer, why } => {
                if self.workers.contains_key(&peer) {
                    self.unreachable = Some(why);
                }
            }
            Event::Gone { peer, reason } => {
                if let Some(w) = self.workers.get(&peer) {
                    log::info!("peer={}: connection ended: {reason}", w.addr);
                    self.policy.connection_ended(w.addr, Instant::now());
                    self.refresh.hurry(Instant::now());
                }
                self.remove_worker(peer);
            }
        }
        Ok(())
    }

    /// Takes in a peer list: connects to the peers `PeerPolicy` chooses, merges what the
    /// connected ones have, and notes the swarm's rarity among those not connected.
    /// Returns whether the list brought news (a peer, or pieces, not listed before).
    fn add_peers(&mut self, peers: Vec<PeerInfo>) -> bool {
        let n_pieces = self.swarm.layout.n_pieces();
        let count = |p: &PeerInfo| p.have.as_ref().map_or(n_pieces, |h| h.count());
        let news = peers.iter().any(|p| self.listed.get(&p.addr).is_none_or(|&n| n < count(p)));
        self.listed = peers.iter().map(|p| (p.addr, count(p))).collect();
        self.swarm.note_listed_peers(peers.iter().map(|p| (p.addr, p.user.clone(), count(p))));
        let connected: Vec<(SocketAddr, PublicKey)> =
            self.workers.values().map(|w| (w.addr, w.key)).collect();
        // What the peers not connected have, for rarity over the whole swarm.
        let mut swarm = vec![0u32; n_pieces as usize];
        for info in &peers {
            if connected.iter().any(|(a, _)| *a == info.addr) {
                continue;
            }
            match &info.have {
                None => swarm.iter_mut().for_each(|n| *n = n.saturating_add(1)),
                Some(have) if have.n_pieces() == n_pieces => {
                    for piece in have.iter() {
                        swarm[piece.0 as usize] = swarm[piece.0 as usize].saturating_add(1);
                    }
                }
                Some(_) => {}
            }
        }
        self.scheduler.set_swarm_availability(swarm);
        // Pieces are only ever added (they are pushed meanwhile): merge.
        for info in &peers {
            if let Some(peer) = self.peer_at(info.addr) {
                let have = info.have.clone().unwrap_or_else(|| Bitfield::full(n_pieces));
                self.scheduler.add_have(peer, &have);
            }
        }
        let listed: Vec<(SocketAddr, PublicKey)> = peers.iter().map(|p| (p.addr, p.key)).collect();
        let own_public = self.ctx.tracker.observed().map(|a| a.ip());
        for i in self.policy.choose(&listed, &connected, Instant::now()) {
            let dial = crate::reach::dial_order(peers[i].addr, &peers[i].addrs, own_public);
            self.spawn_worker(listed[i].0, listed[i].1, dial);
        }
        self.record_connected();
        news
    }

    /// Tells the swarm how many pieces `peer` has now.
    fn record_peer_have(&self, peer: PeerId) {
        let (Some(w), Some(n)) = (self.workers.get(&peer), self.scheduler.peer_n_have(peer)) else {
            return;
        };
        self.swarm.note_peer_have(w.addr, n);
    }

    /// Tells the swarm which peers are connected now.
    fn record_connected(&self) {
        self.swarm.set_connected(self.workers.values().map(|w| (w.addr, w.path)).collect());
    }

    fn peer_at(&self, addr: SocketAddr) -> Option<PeerId> {
        self.workers.iter().find(|(_, w)| w.addr == addr).map(|(id, _)| *id)
    }

    /// Starts a worker for the peer listed at `addr`, dialed at `dial` (issue 19).
    fn spawn_worker(&mut self, addr: SocketAddr, key: PublicKey, dial: Vec<SocketAddr>) {
        let peer = PeerId(self.next_peer);
        self.next_peer += 1;
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(self.in_flight);
        let (wake, wake_rx) = match UnixStream::pair().and_then(|(a, b)| {
            a.set_nonblocking(true)?;
            b.set_nonblocking(true)?;
            Ok((a, b))
        }) {
            Ok(pair) => pair,
            Err(e) => {
                log::error!("cannot make a worker's wake-up socket: {e}");
                return;
            }
        };
        let news = Arc::new(HaveNews::new(self.swarm.layout.n_pieces()));
        let inbox = Inbox { jobs: jobs_rx, wake: wake_rx, news: Arc::clone(&news) };
        let socket: Arc<Mutex<Option<TcpStream>>> = Arc::new(Mutex::new(None));
        let socket_slot = Arc::clone(&socket);
        let target = Arc::clone(&self.target);
        let events = self.events_tx.clone();
        let spawned =
            thread::Builder::new().name(format!("dl-worker-{}", peer.0)).spawn(move || {
                worker::run(peer, (addr, dial), key, target, inbox, events, |s| {
                    *socket_slot.lock() = Some(s)
                });
            });
        match spawned {
            Ok(thread) => {
                self.workers.insert(
                    peer,
                    WorkerHandle {
                        addr,
                        key,
                        jobs: jobs_tx,
                        wake,
                        news,
                        socket,
                        thread,
                        path: SourcePath::Direct,
                        connected: false,
                    },
                );
            }
            Err(e) => log::error!("cannot start a worker thread: {e}"),
        }
    }

    /// Cuts a worker's connection; its `Gone` event then removes it.
    fn drop_worker(&mut self, peer: PeerId) {
        self.scheduler.release_peer(peer);
        if let Some(w) = self.workers.get(&peer) {
            if let Some(s) = w.socket.lock().as_ref() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    fn remove_worker(&mut self, peer: PeerId) {
        self.scheduler.release_peer(peer);
        if let Some(w) = self.workers.remove(&peer) {
            // Both ends gone: the worker, idle or not, sees that it is to stop.
            drop(w.jobs);
            drop(w.wake);
            let _ = w.thread.join();
        }
        self.record_connected();
    }

    fn stop_workers(&mut self) {
        for (_, w) in self.workers.drain() {
            drop(w.jobs);
            drop(w.wake);
            if let Some(s) = w.socket.lock().as_ref() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            let _ = w.thread.join();
        }
    }

    /// Saves the progress now and then, and tells the tracker which pieces this peer has
    /// now, if that changed.
    fn announce(&mut self) {
        let n_have = self.scheduler.n_have();
        if n_have == self.announced && self.announced_at.elapsed() < SOFT_STATE_REFRESH {
            return;
        }
        self.post_announce(n_have);
    }

    /// Tells the tracker which pieces this peer has now (`n_have` of them), whatever it
    /// told before; saves the progress now and then.
    fn post_announce(&mut self, n_have: u32) {
        if self.progress_saved.elapsed() >= SAVE_PROGRESS_EVERY {
            self.ctx.registry.save();
            self.progress_saved = Instant::now();
        }
        let request = Request::AnnouncePieces {
            group: self.swarm.group.clone(),
            digest: self.swarm.meta.digest,
            have: self.swarm.have(),
        };
        // Skipped when calls are queued: the next tick announces again.
        if self.calls.post(TrackerJob::Announce { request, n_have }) {
            self.announced_at = Instant::now();
        }
    }

    /// Asks the tracker for peers (and a fresh ticket) if the schedule says it is time.
    fn refresh_if_due(&mut self) {
        if !self.refresh.take_due(Instant::now()) {
            return;
        }
        let request = Request::GetFile {
            group: self.swarm.group.clone(),
            name: self.swarm.meta.name.clone(),
        };
        if !self.calls.post(TrackerJob::Refresh(request)) {
            self.refresh.not_sent();
        }
    }

    /// Takes in the answer to a call posted earlier.
    fn hear(&mut self, news: TrackerNews) {
        match news {
            TrackerNews::Announced { n_have } => self.announced = self.announced.max(n_have),
            TrackerNews::Refreshed(answer) => {
                let news = self.refreshed(answer);
                let now = Instant::now();
                self.refresh.answered(now, news);
            }
        }
    }

    /// The tracker's answer to a peer refresh; whether it brought news.
    fn refreshed(&mut self, answer: Result<Reply, CallError>) -> bool {
        match answer {
            Ok(Reply::FileInfo { meta, peers, ticket })
                if meta.digest == self.swarm.meta.digest =>
            {
                // Workers renew their seeders' copy with it before the old one expires.
                self.refresh.ticket_life(Instant::now(), ticket_life(&ticket));
                *self.target.ticket.lock() = *ticket;
                self.add_peers(peers)
            }
            Ok(_) => {
                log::warn!(
                    "{} changed at the tracker; keeping the peers we have",
                    self.swarm.meta.name
                );
                false
            }
            Err(e) => {
                log::warn!("cannot refresh peers of {}: {e}", self.swarm.meta.name);
                false
            }
        }
    }
}

/// How many pieces of a folder's part of `size` bytes in `n_pieces` pieces are asked of one
/// peer at a time: `MAX_IN_FLIGHT` whole pieces' worth of bytes, counted in pieces of the
/// part's average length, so between `MAX_IN_FLIGHT` (large files: as for a file) and
/// `MAX_SMALL_IN_FLIGHT` (issue 23: each small file is a piece, a request and an answer of
/// a few KiB; with only a few on the wire, the leech and its seeders wait on each other's
/// round trips). Requests in flight hold no buffer: a worker reads a piece into one of its
/// own only as it arrives.
pub fn in_flight_per_peer(size: u64, n_pieces: u32) -> usize {
    let whole = MAX_IN_FLIGHT as u64 * common::PIECE_SIZE as u64;
    let average = (size / u64::from(n_pieces.max(1))).max(1);
    usize::try_from(whole / average).unwrap_or(usize::MAX).clamp(MAX_IN_FLIGHT, MAX_SMALL_IN_FLIGHT)
}

/// How long `ticket` has left to live, by this machine's clock.
fn ticket_life(ticket: &Ticket) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Duration::from_secs(ticket.expires.saturating_sub(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::PIECE_SIZE;
    use proptest::prelude::*;

    #[test]
    fn small_pieces_are_asked_more_at_a_time_large_ones_as_for_a_file() {
        let piece = PIECE_SIZE as u64;
        // Large files: as a file's pieces.
        assert_eq!(in_flight_per_peer(20 * 100 * piece, 20 * 100), MAX_IN_FLIGHT);
        assert_eq!(in_flight_per_peer(20 * 100 * piece - 19, 20 * 100), MAX_IN_FLIGHT);
        // 10,000 files of 33 KiB on average: as many as allowed.
        assert_eq!(in_flight_per_peer(10_000 * 33 * 1024, 10_000), MAX_SMALL_IN_FLIGHT);
        // In between: 4 pieces' worth of bytes.
        assert_eq!(in_flight_per_peer(100 * piece / 2, 100), 8);
        // Nothing to fetch, or empty files only: never zero, never a division by zero.
        assert_eq!(in_flight_per_peer(0, 0), MAX_SMALL_IN_FLIGHT);
    }

    proptest! {
        /// Within bounds, and never fewer for smaller pieces.
        #[test]
        fn in_flight_is_bounded_and_grows_as_pieces_shrink(
            size in 0u64..1 << 40, n in 0u32..2_000_000, more in 1u32..1000
        ) {
            let k = in_flight_per_peer(size, n);
            prop_assert!((MAX_IN_FLIGHT..=MAX_SMALL_IN_FLIGHT).contains(&k));
            prop_assert!(in_flight_per_peer(size, n.saturating_add(more)) >= k);
        }
    }
}

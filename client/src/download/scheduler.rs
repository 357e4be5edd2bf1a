//! Which piece to fetch from which peer.
//!
//! Pure: no I/O, no threads, no clock. Every piece is in exactly one state: `Missing`,
//! `InFlight` (asked of one or more peers; more than one only in the endgame) or `Have`
//! (verified and written). Transitions: `assign` (Missing → InFlight, or one more peer for
//! an InFlight piece in the endgame), `complete` (→ Have), `fail` (drops one peer from an
//! InFlight piece; → Missing when none is left) and `release_peer` (`fail` for all of that
//! peer's pieces). Pieces are handed out rarest first (equally rare pieces in an order
//! shuffled per download, so that leechers of one seeder start on different pieces and can
//! trade them), each to the least-loaded peer that has it: fewest pieces in flight, then
//! best measured throughput, then lowest `PeerId`.
//!
//! Endgame (no piece missing, the last ones in flight): an idle peer is asked for an
//! in-flight piece too, but only when that is likely to bring it sooner, for in a crowd
//! every copy asked twice takes an uplink from a leecher that needs it: when the piece is
//! overdue (in flight for more than twice the time its fastest peer takes for a piece, or
//! `ENDGAME_PATIENCE` when that is not known yet), when the idle peer takes less than
//! half the time the piece has left by that measure, or, for the last `ENDGAME_LAST`
//! pieces, of one more peer at once. The clock is passed in (`assign`).
//!
//! Issue 12: rarity counts the connected peers and the other peers the tracker listed (the
//! swarm), and connected peers' pieces grow as they announce them (`add_have`). A complete
//! peer that said to fetch a piece elsewhere (`defer`) is a *loaded seeder*: it is asked
//! only for pieces no other peer has, and not for a deferred piece until its deferral
//! expires (`expire_deferrals`, one to two periods later), when it is asked again and sends it.
//!
//! Issue 19: a peer reached through a tracker's relay (`set_relayed`) is asked, like a
//! loaded seeder, only for pieces no other peer has: the relay's bandwidth is scarce and
//! shared, and such a peer mostly moves to a punched hole within seconds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{Bitfield, PieceIndex};

/// In the endgame, the last pieces in flight (this many at most) are asked of a second
/// peer at once.
pub const ENDGAME_LAST: usize = 2;
/// In the endgame, a piece in flight from peers whose piece time is not known yet is asked
/// of an idle peer too after this long.
pub const ENDGAME_PATIENCE: Duration = Duration::from_secs(2);

/// A peer of one download (numbered by the download, in the order peers appear).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub u32);

/// The state of one piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PieceState {
    Missing,
    InFlight(BTreeSet<PeerId>),
    Have,
}

#[derive(Debug)]
struct PeerSlot {
    have: Bitfield,
    n_have: u32,
    in_flight: BTreeSet<PieceIndex>,
    /// Bytes per second, smoothed.
    throughput: f64,
    /// Seconds from asking to a whole piece, smoothed (`None`: none came yet).
    piece_secs: Option<f64>,
    /// It said to fetch a piece elsewhere (it hands out pieces to several downloaders).
    loaded: bool,
    /// Reached through a tracker's relay (issue 19): scarce, shared bandwidth.
    relayed: bool,
    /// Pieces it said to fetch elsewhere, this period and the one before.
    deferred: [Bitfield; 2],
}

impl PeerSlot {
    fn is_loaded_seeder(&self) -> bool {
        self.loaded && self.n_have == self.have.n_pieces()
    }

    /// Asked only for pieces no other peer has: a loaded seeder, or a relayed peer.
    fn is_last_resort(&self) -> bool {
        self.relayed || self.is_loaded_seeder()
    }

    fn deferred(&self, piece: PieceIndex) -> bool {
        self.deferred[0].has(piece) || self.deferred[1].has(piece)
    }
}

/// The piece scheduler of one download.
#[derive(Debug)]
pub struct Scheduler {
    pieces: Vec<PieceState>,
    peers: BTreeMap<PeerId, PeerSlot>,
    /// How many connected peers have each piece.
    availability: Vec<u32>,
    /// How many other peers of the swarm (listed by the tracker, not connected) have it.
    swarm: Vec<u32>,
    max_in_flight: usize,
    n_have: u32,
    /// A random rank per piece, to break ties in rarity.
    tiebreak: Vec<u32>,
    /// The missing pieces some connected peer has, in the order they are handed out:
    /// (availability in the swarm, tiebreak, index). Kept up to date so that `assign`
    /// does not sort.
    queue: BTreeSet<(u32, u32, u32)>,
    /// How many pieces are `Missing` (available or not).
    n_missing: u32,
    /// The pieces `InFlight`, for the endgame, with when each was last asked for.
    in_flight: BTreeMap<u32, Instant>,
}

impl Scheduler {
    /// A scheduler for `have.n_pieces()` pieces of which `have` are already verified,
    /// asking each peer for at most `max_in_flight` pieces at a time; `seed` shuffles the
    /// order of equally rare pieces.
    pub fn new(have: &Bitfield, max_in_flight: usize, seed: u64) -> Scheduler {
        let pieces: Vec<PieceState> = (0..have.n_pieces())
            .map(|i| if have.has(PieceIndex(i)) { PieceState::Have } else { PieceState::Missing })
            .collect();
        let availability = vec![0; pieces.len()];
        let swarm = vec![0; pieces.len()];
        let mut tiebreak: Vec<u32> = (0..have.n_pieces()).collect();
        fastrand::Rng::with_seed(seed).shuffle(&mut tiebreak);
        let n_missing = have.n_pieces() - have.count();
        Scheduler {
            pieces,
            peers: BTreeMap::new(),
            availability,
            swarm,
            max_in_flight,
            n_have: have.count(),
            tiebreak,
            queue: BTreeSet::new(),
            n_missing,
            in_flight: BTreeMap::new(),
        }
    }

    fn queue_key(&self, i: usize) -> (u32, u32, u32) {
        (self.availability[i].saturating_add(self.swarm[i]), self.tiebreak[i], i as u32)
    }

    /// Changes how many peers have piece `i`, keeping the queue in order.
    fn set_availability(&mut self, i: usize, n: u32) {
        let queued = self.pieces[i] == PieceState::Missing;
        if queued && self.availability[i] > 0 {
            self.queue.remove(&self.queue_key(i));
        }
        self.availability[i] = n;
        if queued && n > 0 {
            self.queue.insert(self.queue_key(i));
        }
    }

    /// Piece `i` becomes `Missing` again.
    fn requeue(&mut self, i: usize) {
        self.pieces[i] = PieceState::Missing;
        self.in_flight.remove(&(i as u32));
        self.n_missing += 1;
        if self.availability[i] > 0 {
            self.queue.insert(self.queue_key(i));
        }
    }

    /// Piece `i` leaves `Missing` (the caller sets its new state).
    fn unqueue(&mut self, i: usize) {
        if self.pieces[i] == PieceState::Missing {
            self.queue.remove(&self.queue_key(i));
            self.n_missing -= 1;
        }
    }

    /// The state of `piece`.
    pub fn state(&self, piece: PieceIndex) -> Option<&PieceState> {
        self.pieces.get(piece.0 as usize)
    }

    /// How many pieces are verified.
    pub fn n_have(&self) -> u32 {
        self.n_have
    }

    /// Whether every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.n_have as usize == self.pieces.len()
    }

    /// The peers known, in id order.
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    /// How many pieces `peer` has, as far as it told (`None`: not a known peer).
    pub fn peer_n_have(&self, peer: PeerId) -> Option<u32> {
        self.peers.get(&peer).map(|p| p.n_have)
    }

    /// How many pieces `peer` has in flight.
    pub fn load(&self, peer: PeerId) -> usize {
        self.peers.get(&peer).map_or(0, |p| p.in_flight.len())
    }

    /// Adds a peer, or replaces what a known peer has.
    pub fn set_peer_have(&mut self, peer: PeerId, have: Bitfield) {
        if have.n_pieces() as usize != self.pieces.len() {
            return;
        }
        let old: Vec<PieceIndex> =
            self.peers.get(&peer).map(|p| p.have.iter().collect()).unwrap_or_default();
        for idx in old {
            let i = idx.0 as usize;
            self.set_availability(i, self.availability[i] - 1);
        }
        for idx in have.iter() {
            let i = idx.0 as usize;
            self.set_availability(i, self.availability[i] + 1);
        }
        let n = self.pieces.len() as u32;
        let slot = self.peers.entry(peer).or_insert_with(|| PeerSlot {
            have: Bitfield::empty(0),
            n_have: 0,
            in_flight: BTreeSet::new(),
            throughput: 0.0,
            piece_secs: None,
            loaded: false,
            relayed: false,
            deferred: [Bitfield::empty(n), Bitfield::empty(n)],
        });
        slot.n_have = have.count();
        slot.have = have;
    }

    /// Adds the pieces in `news` to what a known peer has (pieces it announced).
    pub fn add_have(&mut self, peer: PeerId, news: &Bitfield) {
        if news.n_pieces() as usize != self.pieces.len() {
            return;
        }
        let Some(slot) = self.peers.get_mut(&peer) else { return };
        let fresh: Vec<PieceIndex> = news.iter().filter(|&p| !slot.have.has(p)).collect();
        for &piece in &fresh {
            slot.have.set(piece);
        }
        slot.n_have += fresh.len() as u32;
        for piece in fresh {
            let i = piece.0 as usize;
            self.set_availability(i, self.availability[i] + 1);
        }
    }

    /// How many peers of the swarm that are not connected have each piece (from the
    /// tracker's list), for rarity. Ignored when the length is wrong.
    pub fn set_swarm_availability(&mut self, counts: Vec<u32>) {
        if counts.len() != self.pieces.len() || counts == self.swarm {
            return;
        }
        self.swarm = counts;
        self.queue = (0..self.pieces.len())
            .filter(|&i| self.pieces[i] == PieceState::Missing && self.availability[i] > 0)
            .map(|i| self.queue_key(i))
            .collect();
    }

    /// `peer` said to fetch `piece` from another peer: it is a loaded seeder, not asked for
    /// that piece again until the deferral expires. The piece goes back to the queue unless
    /// another peer is fetching it.
    pub fn defer(&mut self, piece: PieceIndex, peer: PeerId) {
        self.fail(piece, peer);
        if let Some(slot) = self.peers.get_mut(&peer) {
            slot.loaded = true;
            slot.deferred[0].set(piece);
        }
    }

    /// Ends the older period of deferrals: a piece deferred then may be asked of its
    /// seeder again (which then sends it). Call periodically.
    pub fn expire_deferrals(&mut self) {
        let n = self.pieces.len() as u32;
        for slot in self.peers.values_mut() {
            if slot.deferred[0].count() + slot.deferred[1].count() == 0 {
                continue;
            }
            let current = std::mem::replace(&mut slot.deferred[0], Bitfield::empty(n));
            slot.deferred[1] = current;
        }
    }

    /// Records a measured throughput for `peer` (bytes per second).
    pub fn record_throughput(&mut self, peer: PeerId, bytes_per_sec: f64) {
        if let Some(slot) = self.peers.get_mut(&peer) {
            slot.throughput = if slot.throughput == 0.0 {
                bytes_per_sec
            } else {
                0.7 * slot.throughput + 0.3 * bytes_per_sec
            };
        }
    }

    /// Whether `peer` is reached through a tracker's relay: a relayed peer is asked only for
    /// pieces no other peer has, until its path changes (issue 19).
    pub fn set_relayed(&mut self, peer: PeerId, relayed: bool) {
        if let Some(slot) = self.peers.get_mut(&peer) {
            slot.relayed = relayed;
        }
    }

    /// Records how long a piece took from `peer`, from asking to its last byte.
    pub fn record_piece_time(&mut self, peer: PeerId, secs: f64) {
        if let Some(slot) = self.peers.get_mut(&peer) {
            slot.piece_secs = Some(match slot.piece_secs {
                None => secs,
                Some(before) => 0.7 * before + 0.3 * secs,
            });
        }
    }

    /// Whether some missing piece is had by no known peer.
    pub fn has_unavailable_piece(&self) -> bool {
        self.queue.len() < self.n_missing as usize
    }

    /// Hands out as many pieces as peers have room for: missing pieces rarest first, each to
    /// the least-loaded peer that has it; then, when no piece is missing, in-flight pieces
    /// to idle peers where that is likely to bring them sooner (endgame), so one slow peer
    /// does not hold the file back. `now`: the time (pieces in flight are timed).
    pub fn assign(&mut self, now: Instant) -> Vec<(PeerId, PieceIndex)> {
        use std::ops::Bound::{Excluded, Unbounded};
        let mut out = Vec::new();
        let mut cursor: Option<(u32, u32, u32)> = None;
        loop {
            if !self.peers.values().any(|p| p.in_flight.len() < self.max_in_flight) {
                return out;
            }
            let next = match cursor {
                None => self.queue.iter().next(),
                Some(after) => self.queue.range((Excluded(after), Unbounded)).next(),
            };
            let Some(&key) = next else { break };
            cursor = Some(key);
            let piece = PieceIndex(key.2);
            if let Some(peer) = self.least_loaded(piece, |_| true) {
                self.start(peer, piece, now);
                out.push((peer, piece));
            }
        }
        if self.n_missing > 0 {
            return out;
        }
        // Endgame: idle peers duplicate in-flight pieces, fewest duplicates first.
        let mut in_flight: Vec<(usize, PieceIndex)> = self
            .in_flight
            .keys()
            .filter_map(|&i| match &self.pieces[i as usize] {
                PieceState::InFlight(peers) => Some((peers.len(), PieceIndex(i))),
                _ => None,
            })
            .collect();
        in_flight.sort();
        for (_, piece) in in_flight {
            let asked = match &self.pieces[piece.0 as usize] {
                PieceState::InFlight(peers) => peers.clone(),
                _ => continue,
            };
            if let Some(peer) = self.least_loaded(piece, |p| !asked.contains(&p)) {
                if self.load(peer) == 0 && self.worth_asking_twice(piece, &asked, peer, now) {
                    self.start(peer, piece, now);
                    out.push((peer, piece));
                }
            }
        }
        out
    }

    /// The peer to ask for `piece`: of the peers that have it, have room and did not defer
    /// it, the least loaded; a loaded seeder or a relayed peer only if no other peer has the
    /// piece.
    fn least_loaded(&self, piece: PieceIndex, allowed: impl Fn(PeerId) -> bool) -> Option<PeerId> {
        let others_have = self.peers.values().any(|p| p.have.has(piece) && !p.is_last_resort());
        self.peers
            .iter()
            .filter(|(id, p)| {
                p.in_flight.len() < self.max_in_flight
                    && p.have.has(piece)
                    && !p.deferred(piece)
                    && !(others_have && p.is_last_resort())
                    && allowed(**id)
            })
            .min_by(|(a_id, a), (b_id, b)| {
                a.in_flight
                    .len()
                    .cmp(&b.in_flight.len())
                    .then(b.throughput.total_cmp(&a.throughput))
                    .then(a_id.cmp(b_id))
            })
            .map(|(id, _)| *id)
    }

    /// Whether `peer` is a loaded seeder (complete, and it deferred a piece).
    pub fn is_loaded_seeder(&self, peer: PeerId) -> bool {
        self.peers.get(&peer).is_some_and(PeerSlot::is_loaded_seeder)
    }

    /// Whether idle peer `idle` should be asked for `piece`, in flight from `asked` since
    /// it was last asked for (endgame; see the module's doc).
    fn worth_asking_twice(
        &self,
        piece: PieceIndex,
        asked: &BTreeSet<PeerId>,
        idle: PeerId,
        now: Instant,
    ) -> bool {
        let Some(&since) = self.in_flight.get(&piece.0) else { return false };
        // The very last pieces: one more peer each, at once.
        if self.in_flight.len() <= ENDGAME_LAST && asked.len() < 2 {
            return true;
        }
        let waited = now.saturating_duration_since(since).as_secs_f64();
        let fastest = asked
            .iter()
            .filter_map(|p| self.peers.get(p).and_then(|slot| slot.piece_secs))
            .min_by(f64::total_cmp);
        let Some(takes) = fastest else { return waited > ENDGAME_PATIENCE.as_secs_f64() };
        let overdue = waited > 2.0 * takes;
        let idle_takes = self.peers.get(&idle).and_then(|slot| slot.piece_secs);
        let much_sooner = idle_takes.is_some_and(|t| 2.0 * t < takes - waited);
        overdue || much_sooner
    }

    fn start(&mut self, peer: PeerId, piece: PieceIndex, now: Instant) {
        let i = piece.0 as usize;
        self.unqueue(i);
        self.in_flight.insert(piece.0, now);
        let state = &mut self.pieces[i];
        match state {
            PieceState::InFlight(peers) => {
                peers.insert(peer);
            }
            _ => *state = PieceState::InFlight(BTreeSet::from([peer])),
        }
        if let Some(slot) = self.peers.get_mut(&peer) {
            slot.in_flight.insert(piece);
        }
    }

    /// `piece` was verified and written. Returns false if it already was (a duplicate from
    /// the endgame). Other peers still fetching it are no longer counted as loaded by it.
    pub fn complete(&mut self, piece: PieceIndex) -> bool {
        let i = piece.0 as usize;
        if i >= self.pieces.len() {
            return false;
        }
        self.unqueue(i);
        self.in_flight.remove(&piece.0);
        let previous = std::mem::replace(&mut self.pieces[i], PieceState::Have);
        match previous {
            PieceState::Have => false,
            PieceState::InFlight(peers) => {
                for peer in peers {
                    if let Some(slot) = self.peers.get_mut(&peer) {
                        slot.in_flight.remove(&piece);
                    }
                }
                self.n_have += 1;
                true
            }
            PieceState::Missing => {
                self.n_have += 1;
                true
            }
        }
    }

    /// `peer` did not deliver `piece` (bad hash, refused, gone): it goes back to the queue
    /// unless another peer is still fetching it.
    pub fn fail(&mut self, piece: PieceIndex, peer: PeerId) {
        if let Some(slot) = self.peers.get_mut(&peer) {
            slot.in_flight.remove(&piece);
        }
        let i = piece.0 as usize;
        let Some(PieceState::InFlight(peers)) = self.pieces.get_mut(i) else { return };
        peers.remove(&peer);
        if peers.is_empty() {
            self.requeue(i);
        }
    }

    /// Forgets `peer`, putting every piece it had in flight back in the queue.
    pub fn release_peer(&mut self, peer: PeerId) {
        let Some(slot) = self.peers.get(&peer) else { return };
        let pieces: Vec<PieceIndex> = slot.in_flight.iter().copied().collect();
        for piece in pieces {
            self.fail(piece, peer);
        }
        if let Some(slot) = self.peers.remove(&peer) {
            for idx in slot.have.iter() {
                let i = idx.0 as usize;
                self.set_availability(i, self.availability[i] - 1);
            }
        }
    }
}

#[cfg(test)]
impl Scheduler {
    /// Checks the derived bookkeeping against the piece states (for tests).
    fn assert_consistent(&self) {
        let mut expected_queue = BTreeSet::new();
        for (i, state) in self.pieces.iter().enumerate() {
            let had_by =
                self.peers.values().filter(|p| p.have.has(PieceIndex(i as u32))).count() as u32;
            assert_eq!(self.availability[i], had_by, "availability of piece {i}");
            if *state == PieceState::Missing && had_by > 0 {
                expected_queue.insert(self.queue_key(i));
            }
            assert_eq!(
                self.in_flight.contains_key(&(i as u32)),
                matches!(state, PieceState::InFlight(_)),
                "piece {i}"
            );
        }
        assert_eq!(self.queue, expected_queue);
        let n_missing = self.pieces.iter().filter(|s| **s == PieceState::Missing).count();
        assert_eq!(self.n_missing as usize, n_missing);
    }
}

#[cfg(test)]
mod tests;

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

use std::collections::{BTreeMap, BTreeSet};

use common::{Bitfield, PieceIndex};

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
    in_flight: BTreeSet<PieceIndex>,
    /// Bytes per second, smoothed.
    throughput: f64,
}

/// The piece scheduler of one download.
#[derive(Debug)]
pub struct Scheduler {
    pieces: Vec<PieceState>,
    peers: BTreeMap<PeerId, PeerSlot>,
    /// How many peers have each piece.
    availability: Vec<u32>,
    max_in_flight: usize,
    n_have: u32,
    /// A random rank per piece, to break ties in rarity.
    tiebreak: Vec<u32>,
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
        let mut tiebreak: Vec<u32> = (0..have.n_pieces()).collect();
        fastrand::Rng::with_seed(seed).shuffle(&mut tiebreak);
        Scheduler {
            pieces,
            peers: BTreeMap::new(),
            availability,
            max_in_flight,
            n_have: have.count(),
            tiebreak,
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

    /// How many pieces `peer` has in flight.
    pub fn load(&self, peer: PeerId) -> usize {
        self.peers.get(&peer).map_or(0, |p| p.in_flight.len())
    }

    /// Adds a peer, or replaces what a known peer has.
    pub fn set_peer_have(&mut self, peer: PeerId, have: Bitfield) {
        if have.n_pieces() as usize != self.pieces.len() {
            return;
        }
        if let Some(old) = self.peers.get(&peer) {
            for idx in old.have.iter() {
                self.availability[idx.0 as usize] -= 1;
            }
        }
        for idx in have.iter() {
            self.availability[idx.0 as usize] += 1;
        }
        let slot = self.peers.entry(peer).or_insert_with(|| PeerSlot {
            have: Bitfield::empty(0),
            in_flight: BTreeSet::new(),
            throughput: 0.0,
        });
        slot.have = have;
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

    /// Whether some missing piece is had by no known peer.
    pub fn has_unavailable_piece(&self) -> bool {
        self.pieces
            .iter()
            .zip(&self.availability)
            .any(|(s, &n)| *s == PieceState::Missing && n == 0)
    }

    /// Hands out as many pieces as peers have room for: missing pieces rarest first, each to
    /// the least-loaded peer that has it; then, when no piece is missing, in-flight pieces
    /// to idle peers (endgame), so one slow peer does not hold the file back.
    pub fn assign(&mut self) -> Vec<(PeerId, PieceIndex)> {
        let mut out = Vec::new();
        let mut missing: Vec<PieceIndex> = (0..self.pieces.len() as u32)
            .map(PieceIndex)
            .filter(|idx| {
                self.pieces[idx.0 as usize] == PieceState::Missing
                    && self.availability[idx.0 as usize] > 0
            })
            .collect();
        missing
            .sort_by_key(|idx| (self.availability[idx.0 as usize], self.tiebreak[idx.0 as usize]));
        for piece in missing {
            if !self.peers.values().any(|p| p.in_flight.len() < self.max_in_flight) {
                return out;
            }
            if let Some(peer) = self.least_loaded(piece, |_| true) {
                self.start(peer, piece);
                out.push((peer, piece));
            }
        }
        if self.pieces.contains(&PieceState::Missing) {
            return out;
        }
        // Endgame: idle peers duplicate in-flight pieces, fewest duplicates first.
        let mut in_flight: Vec<(usize, PieceIndex)> = self
            .pieces
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                PieceState::InFlight(peers) => Some((peers.len(), PieceIndex(i as u32))),
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
                if self.load(peer) == 0 {
                    self.start(peer, piece);
                    out.push((peer, piece));
                }
            }
        }
        out
    }

    fn least_loaded(&self, piece: PieceIndex, allowed: impl Fn(PeerId) -> bool) -> Option<PeerId> {
        self.peers
            .iter()
            .filter(|(id, p)| {
                p.in_flight.len() < self.max_in_flight && p.have.has(piece) && allowed(**id)
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

    fn start(&mut self, peer: PeerId, piece: PieceIndex) {
        let state = &mut self.pieces[piece.0 as usize];
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
        let Some(state) = self.pieces.get_mut(piece.0 as usize) else { return false };
        let previous = std::mem::replace(state, PieceState::Have);
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
        let Some(state) = self.pieces.get_mut(piece.0 as usize) else { return };
        if let PieceState::InFlight(peers) = state {
            peers.remove(&peer);
            if peers.is_empty() {
                *state = PieceState::Missing;
            }
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
                self.availability[idx.0 as usize] -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests;

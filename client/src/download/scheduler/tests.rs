use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

/// Any seed: the tests below rely on rarity and load, not on the shuffled order.
const SEED: u64 = 7;

fn field(n: u32, have: &[u32]) -> Bitfield {
    let mut f = Bitfield::empty(n);
    for &i in have {
        f.set(PieceIndex(i));
    }
    f
}

#[test]
fn rarest_first_to_the_least_loaded_peer() {
    let mut s = Scheduler::new(&Bitfield::empty(4), 2, SEED);
    s.set_peer_have(PeerId(1), Bitfield::full(4));
    s.set_peer_have(PeerId(2), field(4, &[0, 1, 2]));
    // Piece 3 is rarest (only peer 1), so it goes first; then 0, 1, 2 (in a shuffled order)
    // alternate between the peers, each to whichever is least loaded.
    let assigned = s.assign();
    assert_eq!(assigned[0], (PeerId(1), PieceIndex(3)));
    let peers: Vec<PeerId> = assigned.iter().map(|(p, _)| *p).collect();
    assert_eq!(peers, [PeerId(1), PeerId(2), PeerId(1), PeerId(2)]);
    let mut rest: Vec<u32> = assigned[1..].iter().map(|(_, i)| i.0).collect();
    rest.sort();
    assert_eq!(rest, [0, 1, 2]);
    assert_eq!(s.assign(), []);
}

#[test]
fn throughput_breaks_ties() {
    let mut s = Scheduler::new(&Bitfield::empty(1), 2, SEED);
    s.set_peer_have(PeerId(1), Bitfield::full(1));
    s.set_peer_have(PeerId(2), Bitfield::full(1));
    s.record_throughput(PeerId(2), 1e9);
    s.record_throughput(PeerId(1), 1e6);
    // The faster peer gets the piece; the idle one then duplicates it (endgame).
    assert_eq!(s.assign(), [(PeerId(2), PieceIndex(0)), (PeerId(1), PieceIndex(0))]);
}

#[test]
fn failed_and_released_pieces_are_requeued() {
    let mut s = Scheduler::new(&Bitfield::empty(2), 4, SEED);
    s.set_peer_have(PeerId(1), Bitfield::full(2));
    assert_eq!(s.assign().len(), 2);
    s.fail(PieceIndex(0), PeerId(1));
    assert_eq!(s.state(PieceIndex(0)), Some(&PieceState::Missing));
    s.release_peer(PeerId(1));
    assert_eq!(s.state(PieceIndex(1)), Some(&PieceState::Missing));
    assert!(s.has_unavailable_piece());
    s.set_peer_have(PeerId(2), Bitfield::full(2));
    let mut again = s.assign();
    again.sort();
    assert_eq!(again, [(PeerId(2), PieceIndex(0)), (PeerId(2), PieceIndex(1))]);
}

#[test]
fn equally_rare_pieces_are_shuffled_per_download() {
    let order = |seed| {
        let mut s = Scheduler::new(&Bitfield::empty(64), 64, seed);
        s.set_peer_have(PeerId(1), Bitfield::full(64));
        s.assign().into_iter().map(|(_, i)| i.0).collect::<Vec<_>>()
    };
    assert_eq!(order(1), order(1));
    assert_ne!(order(1), order(2));
}

#[test]
fn endgame_duplicates_in_flight_pieces_on_idle_peers() {
    let mut s = Scheduler::new(&Bitfield::empty(2), 1, SEED);
    s.set_peer_have(PeerId(1), Bitfield::full(2));
    s.set_peer_have(PeerId(2), Bitfield::full(2));
    assert_eq!(s.assign().len(), 2);
    assert!(s.complete(PieceIndex(0)));
    // Peer 1 (which had piece 0) is idle; piece 1 is still with peer 2.
    assert_eq!(s.assign(), [(PeerId(1), PieceIndex(1))]);
    assert!(s.complete(PieceIndex(1)));
    assert!(!s.complete(PieceIndex(1)), "a duplicate completion is ignored");
    assert!(s.is_complete());
    assert_eq!(s.load(PeerId(1)) + s.load(PeerId(2)), 0);
}

#[test]
fn resumed_pieces_are_not_fetched_again() {
    let mut s = Scheduler::new(&field(3, &[0, 2]), 4, SEED);
    s.set_peer_have(PeerId(1), Bitfield::full(3));
    assert_eq!(s.assign(), [(PeerId(1), PieceIndex(1))]);
}

#[derive(Debug, Clone)]
enum Event {
    AddPeer(u32, Vec<bool>),
    Assign,
    Complete(u32),
    Fail(u32, u32),
    Release(u32),
}

fn event(n: u32) -> impl Strategy<Value = Event> {
    prop_oneof![
        (0..4u32, prop::collection::vec(any::<bool>(), n as usize))
            .prop_map(|(p, h)| Event::AddPeer(p, h)),
        Just(Event::Assign),
        Just(Event::Assign),
        (0..n).prop_map(Event::Complete),
        (0..n, 0..4u32).prop_map(|(i, p)| Event::Fail(i, p)),
        (0..4u32).prop_map(Event::Release),
    ]
}

proptest! {
    /// Random event sequences keep every piece in exactly one state, agree with a simple
    /// reference model, and never exceed a peer's in-flight limit.
    #[test]
    fn invariants_hold(events in prop::collection::vec(event(6), 0..60), seed in any::<u64>()) {
        const N: u32 = 6;
        const MAX: usize = 2;
        let mut s = Scheduler::new(&Bitfield::empty(N), MAX, seed);
        // Reference: piece -> set of peers fetching it, and the set of pieces we have.
        let mut fetching: HashMap<u32, BTreeSet<u32>> = HashMap::new();
        let mut have: BTreeSet<u32> = BTreeSet::new();
        let mut peers: HashMap<u32, Vec<bool>> = HashMap::new();
        for ev in events {
            match ev {
                Event::AddPeer(p, h) => {
                    let f = field(N, &h.iter().enumerate().filter(|(_, b)| **b).map(|(i, _)| i as u32).collect::<Vec<_>>());
                    s.set_peer_have(PeerId(p), f);
                    peers.insert(p, h);
                }
                Event::Assign => {
                    for (peer, piece) in s.assign() {
                        prop_assert!(peers[&peer.0][piece.0 as usize], "assigned a piece the peer lacks");
                        prop_assert!(!have.contains(&piece.0), "assigned a piece we have");
                        prop_assert!(fetching.entry(piece.0).or_default().insert(peer.0), "assigned twice to one peer");
                    }
                }
                Event::Complete(i) => {
                    if fetching.remove(&i).is_some() {
                        prop_assert!(s.complete(PieceIndex(i)));
                        have.insert(i);
                    }
                }
                Event::Fail(i, p) => {
                    s.fail(PieceIndex(i), PeerId(p));
                    if let Some(set) = fetching.get_mut(&i) {
                        set.remove(&p);
                        if set.is_empty() { fetching.remove(&i); }
                    }
                }
                Event::Release(p) => {
                    s.release_peer(PeerId(p));
                    peers.remove(&p);
                    for set in fetching.values_mut() { set.remove(&p); }
                    fetching.retain(|_, set| !set.is_empty());
                }
            }
            for i in 0..N {
                let expected = if have.contains(&i) {
                    PieceState::Have
                } else if let Some(set) = fetching.get(&i) {
                    PieceState::InFlight(set.iter().map(|p| PeerId(*p)).collect())
                } else {
                    PieceState::Missing
                };
                prop_assert_eq!(s.state(PieceIndex(i)), Some(&expected));
            }
            for peer in s.peers() {
                prop_assert!(s.load(peer) <= MAX);
            }
            s.assert_consistent();
            prop_assert_eq!(s.n_have() as usize, have.len());
        }
    }
}

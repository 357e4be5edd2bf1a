use std::collections::HashMap;
use std::sync::LazyLock;

use proptest::prelude::*;

use super::*;

/// Any seed: the tests below rely on rarity and load, not on the shuffled order.
const SEED: u64 = 7;

/// A fixed moment for tests that do not look at the endgame's clock.
static T0: LazyLock<Instant> = LazyLock::new(Instant::now);

/// `secs` seconds after `T0`.
fn at(secs: f64) -> Instant {
    *T0 + Duration::from_secs_f64(secs)
}

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
    let assigned = s.assign(at(0.0));
    assert_eq!(assigned[0], (PeerId(1), PieceIndex(3)));
    let peers: Vec<PeerId> = assigned.iter().map(|(p, _)| *p).collect();
    assert_eq!(peers, [PeerId(1), PeerId(2), PeerId(1), PeerId(2)]);
    let mut rest: Vec<u32> = assigned[1..].iter().map(|(_, i)| i.0).collect();
    rest.sort();
    assert_eq!(rest, [0, 1, 2]);
    assert_eq!(s.assign(at(0.0)), []);
}

#[test]
fn throughput_breaks_ties() {
    let mut s = Scheduler::new(&Bitfield::empty(1), 2, SEED);
    s.set_peer_have(PeerId(1), Bitfield::full(1));
    s.set_peer_have(PeerId(2), Bitfield::full(1));
    s.record_throughput(PeerId(2), 1e9);
    s.record_throughput(PeerId(1), 1e6);
    // The faster peer gets the piece; the idle one then duplicates it (endgame: the last
    // pieces are asked of a second peer at once).
    assert_eq!(s.assign(at(0.0)), [(PeerId(2), PieceIndex(0)), (PeerId(1), PieceIndex(0))]);
}

#[test]
fn failed_and_released_pieces_are_requeued() {
    let mut s = Scheduler::new(&Bitfield::empty(2), 4, SEED);
    s.set_peer_have(PeerId(1), Bitfield::full(2));
    assert_eq!(s.assign(at(0.0)).len(), 2);
    s.fail(PieceIndex(0), PeerId(1));
    assert_eq!(s.state(PieceIndex(0)), Some(&PieceState::Missing));
    s.release_peer(PeerId(1));
    assert_eq!(s.state(PieceIndex(1)), Some(&PieceState::Missing));
    assert!(s.has_unavailable_piece());
    s.set_peer_have(PeerId(2), Bitfield::full(2));
    let mut again = s.assign(at(0.0));
    again.sort();
    assert_eq!(again, [(PeerId(2), PieceIndex(0)), (PeerId(2), PieceIndex(1))]);
}

#[test]
fn equally_rare_pieces_are_shuffled_per_download() {
    let order = |seed| {
        let mut s = Scheduler::new(&Bitfield::empty(64), 64, seed);
        s.set_peer_have(PeerId(1), Bitfield::full(64));
        s.assign(at(0.0)).into_iter().map(|(_, i)| i.0).collect::<Vec<_>>()
    };
    assert_eq!(order(1), order(1));
    assert_ne!(order(1), order(2));
}

#[test]
fn endgame_duplicates_in_flight_pieces_on_idle_peers() {
    let mut s = Scheduler::new(&Bitfield::empty(2), 1, SEED);
    s.set_peer_have(PeerId(1), Bitfield::full(2));
    s.set_peer_have(PeerId(2), Bitfield::full(2));
    assert_eq!(s.assign(at(0.0)).len(), 2);
    assert!(s.complete(PieceIndex(0)));
    // Peer 1 (which had piece 0) is idle; piece 1, the last, is still with peer 2.
    assert_eq!(s.assign(at(0.0)), [(PeerId(1), PieceIndex(1))]);
    assert!(s.complete(PieceIndex(1)));
    assert!(!s.complete(PieceIndex(1)), "a duplicate completion is ignored");
    assert!(s.is_complete());
    assert_eq!(s.load(PeerId(1)) + s.load(PeerId(2)), 0);
}

#[test]
fn the_endgame_asks_twice_only_for_an_overdue_piece_a_much_faster_peer_or_the_last_ones() {
    // A crowd's end: four peers that each take about a second a piece, one piece each.
    let mut s = Scheduler::new(&Bitfield::empty(4), 1, SEED);
    for p in 1..=4 {
        s.set_peer_have(PeerId(p), Bitfield::full(4));
        s.record_piece_time(PeerId(p), 1.0);
    }
    let asked = s.assign(at(0.0));
    assert_eq!(asked.len(), 4);
    let of = |peer: u32| asked.iter().find(|(p, _)| *p == PeerId(peer)).map(|(_, i)| *i);
    let Some(first) = of(1) else { panic!("peer 1 was asked for nothing: {asked:?}") };
    assert!(s.complete(first));
    // Three pieces are still in flight and on time: idle peer 1 is not asked for any of
    // them (a copy asked twice takes an uplink another leecher needs)...
    assert_eq!(s.assign(at(1.5)), []);
    // ...until they are overdue (twice their peers' time): then for the first of them.
    let again = s.assign(at(2.1));
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].0, PeerId(1));
    s.assert_consistent();

    // Four slow peers (10 s a piece) and a fast one (0.5 s), five pieces: once the fast
    // one is idle, it is asked at once for a piece of a slow one, as it would bring it in
    // less than half the time that one has left.
    let mut s = Scheduler::new(&Bitfield::empty(5), 1, SEED);
    for p in 1..=5 {
        s.set_peer_have(PeerId(p), Bitfield::full(5));
        s.record_piece_time(PeerId(p), if p == 5 { 0.5 } else { 10.0 });
    }
    let asked = s.assign(at(0.0));
    let fast = asked.iter().find(|(p, _)| *p == PeerId(5)).map(|(_, i)| *i);
    assert!(s.complete(fast.expect("the fast peer was asked")));
    let again = s.assign(at(1.0));
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].0, PeerId(5));

    // The last piece in flight goes to one more peer at once, and to no third.
    let mut s = Scheduler::new(&Bitfield::empty(1), 1, SEED);
    for p in 1..=3 {
        s.set_peer_have(PeerId(p), Bitfield::full(1));
    }
    assert_eq!(s.assign(at(0.0)).len(), 2);
    assert_eq!(s.assign(at(0.5)), []);
}

#[test]
fn resumed_pieces_are_not_fetched_again() {
    let mut s = Scheduler::new(&field(3, &[0, 2]), 4, SEED);
    s.set_peer_have(PeerId(1), Bitfield::full(3));
    assert_eq!(s.assign(at(0.0)), [(PeerId(1), PieceIndex(1))]);
}

#[test]
fn a_loaded_seeder_is_asked_only_for_pieces_no_other_peer_has() {
    let mut s = Scheduler::new(&Bitfield::empty(4), 4, SEED);
    s.set_peer_have(PeerId(0), Bitfield::full(4));
    s.set_peer_have(PeerId(1), Bitfield::empty(4));
    let first = s.assign(at(0.0));
    assert_eq!(first.len(), 4);
    // The seeder says to fetch piece 0 elsewhere: it is loaded now.
    s.defer(PieceIndex(0), PeerId(0));
    assert!(s.is_loaded_seeder(PeerId(0)));
    assert_eq!(s.assign(at(0.0)), [], "piece 0 is not asked of it again, and nobody else has it");
    // Peer 1 announces pieces 0 and 1; 1 fails at the seeder: it goes to peer 1.
    s.add_have(PeerId(1), &field(4, &[0, 1]));
    s.fail(PieceIndex(1), PeerId(0));
    let mut again = s.assign(at(0.0));
    again.sort();
    assert_eq!(again, [(PeerId(1), PieceIndex(0)), (PeerId(1), PieceIndex(1))]);
    // After two expiry periods, a piece only the seeder has is asked of it again.
    s.defer(PieceIndex(2), PeerId(0));
    assert_eq!(s.assign(at(0.0)), []);
    s.expire_deferrals();
    assert_eq!(s.assign(at(0.0)), []);
    s.expire_deferrals();
    assert_eq!(s.assign(at(0.0)), [(PeerId(0), PieceIndex(2))]);
}

#[test]
fn a_relayed_peer_is_asked_only_for_pieces_no_other_peer_has_until_it_moves() {
    let mut s = Scheduler::new(&Bitfield::empty(3), 4, SEED);
    s.set_peer_have(PeerId(1), Bitfield::full(3));
    s.set_relayed(PeerId(1), true);
    s.set_peer_have(PeerId(2), field(3, &[0, 1]));
    // Pieces 0 and 1 go to the direct peer, though the relayed one is less loaded; piece 2,
    // which only the relayed peer has, goes to it.
    let mut asked = s.assign(at(0.0));
    asked.sort();
    assert_eq!(
        asked,
        [(PeerId(1), PieceIndex(2)), (PeerId(2), PieceIndex(0)), (PeerId(2), PieceIndex(1))]
    );
    // Moved to a punched hole, it is a peer like any other.
    s.fail(PieceIndex(0), PeerId(2));
    s.set_relayed(PeerId(1), false);
    assert_eq!(s.assign(at(0.1)), [(PeerId(1), PieceIndex(0))]);
    s.assert_consistent();
}

#[test]
fn rarity_counts_the_swarm_beyond_the_connected_peers() {
    let mut s = Scheduler::new(&Bitfield::empty(2), 1, SEED);
    s.set_peer_have(PeerId(1), Bitfield::full(2));
    // Piece 0 is also with three peers we are not connected to: piece 1 is rarer.
    s.set_swarm_availability(vec![3, 0]);
    assert_eq!(s.assign(at(0.0)), [(PeerId(1), PieceIndex(1))]);
    s.assert_consistent();
}

#[derive(Debug, Clone)]
enum Event {
    AddPeer(u32, Vec<bool>),
    Assign,
    Complete(u32),
    Fail(u32, u32),
    Release(u32),
    Announce(u32, u32),
    Defer(u32, u32),
    Expire,
    Swarm(Vec<u32>),
    Relayed(u32, bool),
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
        (0..4u32, 0..n).prop_map(|(p, i)| Event::Announce(p, i)),
        (0..n, 0..4u32).prop_map(|(i, p)| Event::Defer(i, p)),
        Just(Event::Expire),
        prop::collection::vec(0..3u32, n as usize).prop_map(Event::Swarm),
        (0..4u32, any::<bool>()).prop_map(|(p, r)| Event::Relayed(p, r)),
    ]
}

proptest! {
    /// Random event sequences keep every piece in exactly one state, agree with a simple
    /// reference model, and never exceed a peer's in-flight limit; a loaded seeder (or a
    /// relayed peer, issue 19) is asked only for pieces no other peer has, and a loaded
    /// seeder never for a piece it deferred in this period or the one before (issue 12).
    #[test]
    fn invariants_hold(events in prop::collection::vec(event(6), 0..60), seed in any::<u64>()) {
        const N: u32 = 6;
        const MAX: usize = 2;
        let mut s = Scheduler::new(&Bitfield::empty(N), MAX, seed);
        // A second passes at each assignment, so endgame duplicates come up too.
        let mut clock = 0.0;
        // Reference: piece -> set of peers fetching it, and the set of pieces we have.
        let mut fetching: HashMap<u32, BTreeSet<u32>> = HashMap::new();
        let mut have: BTreeSet<u32> = BTreeSet::new();
        let mut peers: HashMap<u32, Vec<bool>> = HashMap::new();
        // Peers that deferred a piece (loaded, if complete), and their deferrals by period.
        let mut loaded: BTreeSet<u32> = BTreeSet::new();
        // Peers reached through a relay (issue 19): asked, like loaded seeders, last.
        let mut relayed: BTreeSet<u32> = BTreeSet::new();
        let mut deferred: HashMap<u32, [BTreeSet<u32>; 2]> = HashMap::new();
        for ev in events {
            match ev {
                Event::AddPeer(p, h) => {
                    let f = field(N, &h.iter().enumerate().filter(|(_, b)| **b).map(|(i, _)| i as u32).collect::<Vec<_>>());
                    s.set_peer_have(PeerId(p), f);
                    peers.insert(p, h);
                }
                Event::Assign => {
                    clock += 1.0;
                    for (peer, piece) in s.assign(at(clock)) {
                        prop_assert!(peers[&peer.0][piece.0 as usize], "assigned a piece the peer lacks");
                        let is_loaded_seeder = |p: u32| {
                            loaded.contains(&p) && peers[&p].iter().all(|b| *b)
                        };
                        let last_resort = |p: u32| is_loaded_seeder(p) || relayed.contains(&p);
                        if last_resort(peer.0) {
                            let others = peers.iter().any(|(p, h)| h[piece.0 as usize] && !last_resort(*p));
                            prop_assert!(!others, "a loaded seeder or relayed peer was asked for a piece another peer has");
                        }
                        let d = deferred.get(&peer.0);
                        prop_assert!(!d.is_some_and(|d| d[0].contains(&piece.0) || d[1].contains(&piece.0)), "asked for a deferred piece");
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
                Event::Announce(p, i) => {
                    s.add_have(PeerId(p), &field(N, &[i]));
                    if let Some(h) = peers.get_mut(&p) {
                        h[i as usize] = true;
                    }
                }
                Event::Defer(i, p) => {
                    s.defer(PieceIndex(i), PeerId(p));
                    if let Some(set) = fetching.get_mut(&i) {
                        set.remove(&p);
                        if set.is_empty() { fetching.remove(&i); }
                    }
                    if peers.contains_key(&p) {
                        loaded.insert(p);
                        deferred.entry(p).or_default()[0].insert(i);
                    }
                }
                Event::Expire => {
                    s.expire_deferrals();
                    for d in deferred.values_mut() {
                        d[1] = std::mem::take(&mut d[0]);
                    }
                }
                Event::Swarm(counts) => s.set_swarm_availability(counts),
                Event::Relayed(p, r) => {
                    s.set_relayed(PeerId(p), r);
                    if peers.contains_key(&p) {
                        if r { relayed.insert(p); } else { relayed.remove(&p); }
                    }
                }
                Event::Release(p) => {
                    s.release_peer(PeerId(p));
                    loaded.remove(&p);
                    relayed.remove(&p);
                    deferred.remove(&p);
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

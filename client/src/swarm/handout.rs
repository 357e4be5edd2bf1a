//! Which piece a seeder hands to which downloader of one file: super-seeding (issue 12).
//!
//! Pure: no I/O, no threads, no clock. A seeder with two or more downloaders of a complete
//! file cannot keep up with all of them (each keeps requests waiting on a pipelined link),
//! so it hands out every piece once before it repeats any: a request for a piece that a
//! downloader still connected was already sent is answered with a piece nobody was sent
//! (`Instead`), or, once every piece has a live holder, with `Elsewhere` (the downloader
//! fetches it from the holder, which announces it as soon as it verified it). The same
//! downloader asking again for a piece it was told to fetch elsewhere gets it once a
//! holder has received the whole piece: that is how a piece still reaches everyone when
//! its holder does not share it. A holder that leaves gives its pieces back to the fresh
//! set, so they are handed out again.
//!
//! Invariant: a piece is handed to a downloader while another live downloader holds it only
//! when every piece has a live holder and the downloader asked for it before (or the file
//! is not complete, or there is one downloader).

use std::collections::{BTreeMap, BTreeSet};

use common::{Bitfield, PieceIndex};

/// What to answer a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Send the piece asked for.
    Serve,
    /// Send this piece instead, which no live downloader was sent yet.
    Instead(PieceIndex),
    /// Tell the downloader to fetch the piece from another peer.
    Elsewhere,
}

#[derive(Debug)]
struct Downloader {
    /// Its connections to this seeder (issue 19: one moving from a relay to a punched hole
    /// has two for a moment); it leaves with the last.
    connections: u32,
    /// The pieces handed to it.
    received: Bitfield,
    /// The pieces it was told to fetch elsewhere; asked again, they are sent.
    deferred: Bitfield,
    /// The pieces handed to it and not yet delivered whole.
    pending: Bitfield,
}

/// The handout of one file's pieces to the downloaders connected to this seeder, each
/// known by `D` (its key: the same downloader on two connections is one downloader).
#[derive(Debug)]
pub struct Handout<D> {
    n_pieces: u32,
    /// How many live downloaders were handed each piece.
    holders: Vec<u32>,
    /// How many of those received it whole.
    delivered: Vec<u32>,
    /// The pieces no live downloader was handed, lowest first.
    fresh: BTreeSet<u32>,
    downloaders: BTreeMap<D, Downloader>,
}

impl<D: Ord + Copy> Handout<D> {
    /// The handout of a file of `n_pieces` pieces, before any downloader.
    pub fn new(n_pieces: u32) -> Handout<D> {
        Handout {
            n_pieces,
            holders: vec![0; n_pieces as usize],
            delivered: vec![0; n_pieces as usize],
            fresh: (0..n_pieces).collect(),
            downloaders: BTreeMap::new(),
        }
    }

    /// A downloader connected (again, if it already has a connection).
    pub fn join(&mut self, conn: D) {
        let me = self.downloaders.entry(conn).or_insert_with(|| Downloader {
            connections: 0,
            received: Bitfield::empty(self.n_pieces),
            deferred: Bitfield::empty(self.n_pieces),
            pending: Bitfield::empty(self.n_pieces),
        });
        me.connections += 1;
    }

    /// A connection of a downloader ended; with its last, the downloader left: the pieces
    /// only it held are fresh again.
    pub fn leave(&mut self, conn: D) {
        let Some(me) = self.downloaders.get_mut(&conn) else { return };
        me.connections -= 1;
        if me.connections > 0 {
            return;
        }
        let Some(gone) = self.downloaders.remove(&conn) else { return };
        for piece in gone.received.iter() {
            let i = piece.0 as usize;
            self.holders[i] -= 1;
            if !gone.pending.has(piece) {
                self.delivered[i] -= 1;
            }
            if self.holders[i] == 0 {
                self.fresh.insert(piece.0);
            }
        }
    }

    /// Whether no downloader is connected.
    pub fn is_empty(&self) -> bool {
        self.downloaders.is_empty()
    }

    /// How many live downloaders were handed `piece`.
    pub fn holders(&self, piece: PieceIndex) -> u32 {
        self.holders.get(piece.0 as usize).copied().unwrap_or(0)
    }

    /// Whether every piece has a live holder.
    pub fn all_handed_out(&self) -> bool {
        self.fresh.is_empty()
    }

    /// Decides what `conn` gets for its request of `asked` (a piece the seeder has), and
    /// records what it is sent. `complete`: whether the seeder has the whole file (a
    /// partial seeder sends what it is asked for, as it lacks pieces to offer instead).
    pub fn choose(&mut self, conn: D, asked: PieceIndex, complete: bool) -> Choice {
        let i = asked.0 as usize;
        let Some(me) = self.downloaders.get(&conn) else { return Choice::Serve };
        if i >= self.holders.len() {
            return Choice::Serve;
        }
        let held_by_me = me.received.has(asked);
        let held_by_others = self.holders[i] - u32::from(held_by_me);
        let delivered_to_me = held_by_me && !me.pending.has(asked);
        let delivered_to_others = self.delivered[i] - u32::from(delivered_to_me);
        let super_seeding = complete && self.downloaders.len() >= 2;
        if !super_seeding || held_by_others == 0 {
            self.hand(conn, asked);
            return Choice::Serve;
        }
        if let Some(&fresh) = self.fresh.iter().find(|&&p| !me.received.has(PieceIndex(p))) {
            let piece = PieceIndex(fresh);
            self.hand(conn, piece);
            if let Some(me) = self.downloaders.get_mut(&conn) {
                me.deferred.set(asked);
            }
            return Choice::Instead(piece);
        }
        // Asked again, though a holder received the piece whole: it does not share it with
        // this downloader. (While every holder is still receiving it, wait for them.)
        if me.deferred.has(asked) && delivered_to_others > 0 {
            self.hand(conn, asked);
            return Choice::Serve;
        }
        if let Some(me) = self.downloaders.get_mut(&conn) {
            me.deferred.set(asked);
        }
        Choice::Elsewhere
    }

    /// `piece`, handed to `conn`, was sent whole.
    pub fn delivered(&mut self, conn: D, piece: PieceIndex) {
        let Some(me) = self.downloaders.get_mut(&conn) else { return };
        if me.pending.has(piece) {
            me.pending.clear(piece);
            self.delivered[piece.0 as usize] += 1;
        }
    }

    fn hand(&mut self, conn: D, piece: PieceIndex) {
        let Some(me) = self.downloaders.get_mut(&conn) else { return };
        if me.received.has(piece) {
            return;
        }
        me.received.set(piece);
        me.pending.set(piece);
        let i = piece.0 as usize;
        self.holders[i] += 1;
        self.fresh.remove(&piece.0);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// A downloader, as the tests number them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    struct ConnId(u64);

    #[test]
    fn a_downloader_on_two_connections_leaves_with_the_last() {
        let mut h = Handout::new(2);
        h.join(ConnId(1));
        h.join(ConnId(2));
        assert_eq!(h.choose(ConnId(1), PieceIndex(0), true), Choice::Serve);
        // Downloader 1 moves to another connection: while one is left, piece 0 is its own.
        h.join(ConnId(1));
        h.leave(ConnId(1));
        assert_eq!(h.choose(ConnId(2), PieceIndex(0), true), Choice::Instead(PieceIndex(1)));
        h.leave(ConnId(1));
        assert_eq!(h.holders(PieceIndex(0)), 0, "gone with its last connection");
    }

    #[test]
    fn one_downloader_gets_what_it_asks() {
        let mut h = Handout::new(3);
        h.join(ConnId(1));
        assert_eq!(h.choose(ConnId(1), PieceIndex(2), true), Choice::Serve);
        assert_eq!(h.choose(ConnId(1), PieceIndex(2), true), Choice::Serve);
        assert_eq!(h.holders(PieceIndex(2)), 1);
    }

    #[test]
    fn a_second_downloader_gets_fresh_pieces_then_is_sent_elsewhere_then_served() {
        let mut h = Handout::new(2);
        h.join(ConnId(1));
        h.join(ConnId(2));
        assert_eq!(h.choose(ConnId(1), PieceIndex(0), true), Choice::Serve);
        // Piece 0 went to 1: 2 gets piece 1, which nobody has, instead.
        assert_eq!(h.choose(ConnId(2), PieceIndex(0), true), Choice::Instead(PieceIndex(1)));
        assert!(h.all_handed_out());
        // Every piece is out: 1 fetches piece 1 from 2; asked again while 2 is still
        // receiving it, still elsewhere; once 2 has it whole, asked again, it gets it.
        assert_eq!(h.choose(ConnId(1), PieceIndex(1), true), Choice::Elsewhere);
        assert_eq!(h.choose(ConnId(1), PieceIndex(1), true), Choice::Elsewhere);
        h.delivered(ConnId(2), PieceIndex(1));
        assert_eq!(h.choose(ConnId(1), PieceIndex(1), true), Choice::Serve);
        // 2 was sent elsewhere for 0 when it got 1 instead: asked again, it gets it.
        h.delivered(ConnId(1), PieceIndex(0));
        assert_eq!(h.choose(ConnId(2), PieceIndex(0), true), Choice::Serve);
    }

    #[test]
    fn a_holder_that_leaves_gives_its_pieces_back() {
        let mut h = Handout::new(2);
        h.join(ConnId(1));
        h.join(ConnId(2));
        h.join(ConnId(3));
        assert_eq!(h.choose(ConnId(1), PieceIndex(0), true), Choice::Serve);
        assert_eq!(h.choose(ConnId(2), PieceIndex(1), true), Choice::Serve);
        assert_eq!(h.choose(ConnId(3), PieceIndex(0), true), Choice::Elsewhere);
        h.leave(ConnId(1));
        assert!(!h.all_handed_out());
        assert_eq!(h.choose(ConnId(2), PieceIndex(1), true), Choice::Serve);
        assert_eq!(h.choose(ConnId(3), PieceIndex(1), true), Choice::Instead(PieceIndex(0)));
    }

    #[test]
    fn a_partial_seeder_serves_what_it_is_asked() {
        let mut h = Handout::new(2);
        h.join(ConnId(1));
        h.join(ConnId(2));
        assert_eq!(h.choose(ConnId(1), PieceIndex(0), false), Choice::Serve);
        assert_eq!(h.choose(ConnId(2), PieceIndex(0), false), Choice::Serve);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Join(u64),
        Leave(u64),
        Ask(u64, u32),
        Deliver(u64, u32),
    }

    fn step(n: u32) -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..5u64).prop_map(Step::Join),
            (0..5u64).prop_map(Step::Leave),
            (0..5u64, 0..n).prop_map(|(c, p)| Step::Ask(c, p)),
            (0..5u64, 0..n).prop_map(|(c, p)| Step::Ask(c, p)),
            (0..5u64, 0..n).prop_map(|(c, p)| Step::Deliver(c, p)),
        ]
    }

    proptest! {
        /// Each piece is handed out once before any is repeated, unless its holder left:
        /// a piece goes to a downloader while another live one holds it only when every
        /// piece has a live holder. A downloader told to fetch a piece elsewhere gets it
        /// when it asks again. The holder counts match a reference model.
        #[test]
        fn every_piece_goes_out_once_before_any_repeats(
            steps in prop::collection::vec(step(6), 0..120),
        ) {
            const N: u32 = 6;
            let mut h = Handout::new(N);
            // Reference: each live downloader's connections, the pieces it was handed, and
            // those it received whole.
            let mut connections: HashMap<u64, u32> = HashMap::new();
            let mut live: HashMap<u64, BTreeSet<u32>> = HashMap::new();
            let mut whole: HashMap<u64, BTreeSet<u32>> = HashMap::new();
            let mut elsewhere: HashMap<u64, BTreeSet<u32>> = HashMap::new();
            for s in steps {
                match s {
                    Step::Join(c) => {
                        h.join(ConnId(c));
                        *connections.entry(c).or_default() += 1;
                        live.entry(c).or_default();
                    }
                    Step::Leave(c) => {
                        h.leave(ConnId(c));
                        let Some(n) = connections.get_mut(&c) else { continue };
                        *n -= 1;
                        if *n == 0 {
                            connections.remove(&c);
                            live.remove(&c);
                            whole.remove(&c);
                            elsewhere.remove(&c);
                        }
                    }
                    Step::Deliver(c, p) => {
                        h.delivered(ConnId(c), PieceIndex(p));
                        if live.get(&c).is_some_and(|got| got.contains(&p)) {
                            whole.entry(c).or_default().insert(p);
                        }
                    }
                    Step::Ask(c, p) => {
                        if !live.contains_key(&c) {
                            continue;
                        }
                        let held_by_others = |piece: u32, live: &HashMap<u64, BTreeSet<u32>>| {
                            live.iter().any(|(o, got)| *o != c && got.contains(&piece))
                        };
                        let all_out = (0..N).all(|q| live.values().any(|got| got.contains(&q)));
                        let asked_before = elsewhere.get(&c).is_some_and(|e| e.contains(&p));
                        let whole_elsewhere =
                            whole.iter().any(|(o, got)| *o != c && got.contains(&p));
                        let sent = match h.choose(ConnId(c), PieceIndex(p), true) {
                            Choice::Serve => {
                                if live.len() >= 2 && held_by_others(p, &live) {
                                    prop_assert!(all_out && asked_before && whole_elsewhere, "piece {p} repeated early");
                                }
                                p
                            }
                            Choice::Instead(q) => {
                                prop_assert!(held_by_others(p, &live));
                                prop_assert!(!live.values().any(|got| got.contains(&q.0)), "instead of a fresh piece");
                                elsewhere.entry(c).or_default().insert(p);
                                q.0
                            }
                            Choice::Elsewhere => {
                                prop_assert!(all_out && held_by_others(p, &live));
                                prop_assert!(!(asked_before && whole_elsewhere), "asked again and not served");
                                elsewhere.entry(c).or_default().insert(p);
                                continue;
                            }
                        };
                        live.entry(c).or_default().insert(sent);
                    }
                }
                for q in 0..N {
                    let n = live.values().filter(|got| got.contains(&q)).count() as u32;
                    prop_assert_eq!(h.holders(PieceIndex(q)), n);
                }
                let all_out = (0..N).all(|q| live.values().any(|got| got.contains(&q)));
                prop_assert_eq!(h.all_handed_out(), all_out);
            }
        }
    }
}

//! What a download's workers and its disk writer tell its coordinator.

use common::{Bitfield, PieceIndex, Sha1Digest};

use super::scheduler::PeerId;

/// What a worker tells its coordinator.
#[derive(Debug)]
pub enum Event {
    /// Connected, by `path` (issue 19); the peer has these pieces.
    Ready { peer: PeerId, have: Bitfield, path: crate::reach::SourcePath },
    /// The worker moved to another connection to its peer, reached by `path` (issue 19: a
    /// relayed source to a hole punched later).
    Moved { peer: PeerId, path: crate::reach::SourcePath },
    /// A piece arrived, matched its hash (`hash`, computed from the received bytes) and was
    /// written.
    Verified { peer: PeerId, piece: PieceIndex, hash: Sha1Digest, bytes_per_sec: f64 },
    /// A piece arrived but did not match its hash.
    BadHash { peer: PeerId, piece: PieceIndex },
    /// The peer does not have (or no longer serves) the piece.
    NoPiece { peer: PeerId, piece: PieceIndex },
    /// The peer, a seeder handing out pieces to several downloaders, said to fetch `piece`
    /// from another peer (it may have sent another piece instead).
    Elsewhere { peer: PeerId, piece: PieceIndex },
    /// The peer announced new pieces: take them from its `HaveNews`.
    Have { peer: PeerId },
    /// Writing a verified piece failed.
    WriteFailed { piece: PieceIndex, reason: String },
    /// The connection ended.
    Gone { peer: PeerId, reason: String },
    /// No way to the peer worked (issue 19: not direct, not reversed, not relayed): why,
    /// as a download that fails for want of any reachable holder says it. Sent before
    /// `Gone`.
    Unreachable { peer: PeerId, why: String },
}

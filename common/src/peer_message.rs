//! The messages of the peer ↔ peer protocol: one typed enum per direction.
//!
//! A downloader opens a secure channel to the seeder, checking the key the tracker listed
//! for it and proving its own, then sends `PeerRequest::Hello`, naming the file by its
//! digest and proving with a tracker-issued `Ticket` bound to that key that its user is a
//! member of the file's group. Tickets are short-lived: the downloader sends `Renew` with a
//! fresh one before the current one expires, and the seeder serves nothing on an expired one.
//! The seeder answers `Welcome` with the pieces it has (or `Refused`), then serves
//! `GetPiece` requests. A `PeerReply::Piece` frame is followed on the wire by exactly `len`
//! raw bytes of piece data (at most `PIECE_SIZE`), outside the frame, so pieces go from the
//! file to the socket without being re-encoded.
//!
//! Version 3 (issue 12) adds what makes a swarm converge: a seeder that shares a file it is
//! still downloading pushes `Have` as pieces verify, between its answers, without being
//! asked; a seeder handing out pieces to several downloaders answers a request for a piece
//! it already gave someone still connected with another piece nobody has yet (`Instead`)
//! or, once every piece has gone out, with `Elsewhere` (ask another peer; asking again
//! later is answered with the piece).

use serde::{Deserialize, Serialize};

use crate::bitfield::Bitfield;
use crate::hash::Sha1Digest;
use crate::message::Ticket;
use crate::piece::PieceIndex;

/// The peer protocol version this build speaks.
pub const PEER_PROTOCOL_VERSION: u16 = 3;

/// The most pieces one `Have` names. A seeder with more news sends several; a receiver
/// drops a peer that sends more (the frame limit bounds the message anyway).
pub const MAX_HAVE_BATCH: usize = 8192;

/// Downloader → seeder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// The first message: which file, and the proof of membership.
    Hello { version: u16, digest: Sha1Digest, ticket: Ticket },
    /// Which pieces the seeder has now.
    GetBitfield,
    /// One piece.
    GetPiece { piece: PieceIndex },
    /// A fresh ticket for the same file, before the current one expires. No answer; a
    /// ticket the seeder does not accept ends the connection with `Refused`.
    Renew { ticket: Ticket },
    /// Issue 19, connection reversal: the first frame of a connection a seeder opened to a
    /// downloader that asked a tracker for it (`Request::Reverse`). The seeder dialed and
    /// ran the secure channel's handshake as initiator, but the peer protocol's roles stay:
    /// the downloader answers nothing to this frame and sends its `Hello` as on a
    /// connection it dialed itself. Only the seeder sends it, only first, and only a
    /// downloader waiting for `nonce` from the key the seeder proved takes the connection
    /// (appended last, so the other variants keep their encoding).
    Reversed { version: u16, digest: Sha1Digest, nonce: u64 },
}

/// Seeder → downloader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerReply {
    /// The handshake succeeded; the pieces the seeder has.
    Welcome { have: Bitfield },
    /// The handshake failed; the seeder closes the connection.
    Refused { reason: Refusal },
    /// The answer to `GetBitfield`.
    Bitfield { have: Bitfield },
    /// Piece data follows: exactly `len` raw bytes.
    Piece { piece: PieceIndex, len: u32 },
    /// The seeder cannot serve that piece (it does not have it, or its copy went bad).
    NoPiece { piece: PieceIndex },
    /// Pushed, unasked: the seeder has verified these pieces since it last said what it
    /// has (at most `MAX_HAVE_BATCH` of them).
    Have { pieces: Vec<PieceIndex> },
    /// The answer to `GetPiece { piece: asked }` from a seeder that already handed `asked`
    /// to another downloader: piece `piece`, which no downloader has been sent yet, and
    /// exactly `len` raw bytes of it follow. Fetch `asked` from another peer.
    Instead { asked: PieceIndex, piece: PieceIndex, len: u32 },
    /// The seeder already handed `piece` to another downloader (and every other piece
    /// too): fetch it from another peer. Asked again, the seeder sends it.
    Elsewhere { piece: PieceIndex },
}

/// Why a seeder refused a downloader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("peer speaks protocol version {0}")]
    Version(u16),
    #[error("peer does not share that file")]
    UnknownFile,
    #[error("peer did not accept the ticket: {0}")]
    BadTicket(String),
    #[error("peer is busy")]
    Busy,
    #[error("ticket expired")]
    Expired,
}

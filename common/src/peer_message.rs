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

use serde::{Deserialize, Serialize};

use crate::bitfield::Bitfield;
use crate::hash::Sha1Digest;
use crate::message::Ticket;
use crate::piece::PieceIndex;

/// The peer protocol version this build speaks.
pub const PEER_PROTOCOL_VERSION: u16 = 2;

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

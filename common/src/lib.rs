//! Shared vocabulary of trackers and clients: the wire protocol (typed messages, a framed
//! codec with a hard size limit), validated identifiers, SHA1 hashing and piece math, and the
//! `tracker_info.txt` format.
//!
//! Nothing here owns a long-lived socket, and no thread but `junk`'s reporter (the one
//! account of junk connections that the tracker and the client's seeder share);
//! `secure_channel`, `frame` and `connection` are the only modules that touch bytes on a
//! socket, and only `secure_channel` sees ciphertext or session keys.

pub mod bitfield;
pub mod codec;
pub mod connection;
pub mod folder;
pub mod frame;
pub mod hash;
pub mod id;
pub mod identity;
pub mod junk;
pub mod message;
pub mod peer_addr;
pub mod peer_message;
pub mod piece;
pub mod replica_message;
pub mod secure_channel;
pub mod tracker_info;

pub use bitfield::Bitfield;
pub use hash::Sha1Digest;
pub use id::{FileName, GroupId, IdError, Password, UserId};
pub use identity::{Identity, PublicKey};
pub use piece::{Layout, PieceIndex, PIECE_SIZE};

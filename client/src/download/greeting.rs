//! The peer protocol's opening on a new connection to a source: `Hello` with the download's
//! newest ticket, answered by `Welcome` with the pieces the source has.

use common::connection::Connection;
use common::frame::FrameError;
use common::peer_message::{PeerReply, PeerRequest, PEER_PROTOCOL_VERSION};
use common::Bitfield;

use super::target::Target;

/// A connection to a source that welcomed this peer.
pub struct Greeted {
    pub conn: Connection<PeerReply, PeerRequest>,
    /// The pieces the source has.
    pub have: Bitfield,
    /// When the ticket shown in the `Hello` expires (Unix time).
    pub ticket_expires: u64,
}

/// Says `Hello` on `conn` with `target`'s newest ticket and takes the source's `Welcome`.
pub fn greet(
    mut conn: Connection<PeerReply, PeerRequest>,
    target: &Target,
) -> Result<Greeted, FrameError> {
    let ticket = target.ticket.lock().clone();
    let ticket_expires = ticket.expires;
    conn.send(&PeerRequest::Hello {
        version: PEER_PROTOCOL_VERSION,
        digest: target.swarm.meta.digest,
        ticket,
    })?;
    match conn.recv()? {
        Some(PeerReply::Welcome { have }) => Ok(Greeted { conn, have, ticket_expires }),
        Some(PeerReply::Refused { reason }) => Err(protocol(format!("refused: {reason}"))),
        Some(other) => Err(protocol(format!("unexpected handshake reply {other:?}"))),
        None => Err(FrameError::Truncated),
    }
}

/// A peer that broke the protocol.
pub fn protocol(detail: String) -> FrameError {
    FrameError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, detail))
}

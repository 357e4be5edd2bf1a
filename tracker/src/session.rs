//! One client connection: the version handshake, then request → service → response until the
//! client leaves, goes idle for too long, or breaks the protocol (which closes only this
//! connection).

use std::net::TcpStream;

use common::connection::Connection;
use common::frame::FrameError;
use common::message::{ClientMessage, TrackerMessage, PROTOCOL_VERSION};

use crate::replication;
use crate::server::Limits;
use crate::service::Service;

/// Serves one connection to its end.
pub fn serve(stream: TcpStream, service: &Service, limits: Limits, tracker_id: u32) {
    let conn: Connection<ClientMessage, TrackerMessage> =
        match Connection::new(stream, limits.handshake_timeout, limits.write_timeout) {
            Ok(conn) => conn,
            Err(e) => {
                log::warn!("cannot set up connection: {e}");
                return;
            }
        };
    let peer = conn.peer_addr();
    if let Err(e) = serve_conn(conn, service, limits, tracker_id) {
        if e.is_timeout() {
            log::info!("peer={peer}: closing idle connection");
        } else {
            log::warn!("peer={peer}: closing connection: {e}");
        }
    } else {
        log::debug!("peer={peer}: connection closed");
    }
}

fn serve_conn(
    mut conn: Connection<ClientMessage, TrackerMessage>,
    service: &Service,
    limits: Limits,
    tracker_id: u32,
) -> Result<(), FrameError> {
    match conn.recv()? {
        None => return Ok(()),
        Some(ClientMessage::ReplicaHello { version, from }) if version == PROTOCOL_VERSION => {
            conn.set_read_timeout(limits.idle_timeout)?;
            return replication::serve(conn.retype(), service, from);
        }
        Some(ClientMessage::ReplicaHello { version, from }) => {
            log::warn!(
                "tracker {from} speaks protocol version {version}, we speak {PROTOCOL_VERSION}"
            );
            return Ok(());
        }
        Some(ClientMessage::Hello { version }) if version == PROTOCOL_VERSION => {
            conn.send(&TrackerMessage::Welcome { version: PROTOCOL_VERSION, tracker_id })?;
        }
        Some(ClientMessage::Hello { version }) => {
            log::warn!(
                "peer={}: protocol version {version}, we speak {PROTOCOL_VERSION}",
                conn.peer_addr()
            );
            conn.send(&TrackerMessage::Refused { version: PROTOCOL_VERSION })?;
            return Ok(());
        }
        Some(other) => {
            log::warn!("peer={}: expected hello, got {other:?}", conn.peer_addr());
            return Ok(());
        }
    }
    conn.set_read_timeout(limits.idle_timeout)?;
    while let Some(msg) = conn.recv()? {
        match msg {
            ClientMessage::Request { id, session, request } => {
                log::debug!("< {id:?} {request:?}");
                let result = service.handle(id, session, request);
                log::debug!("> {id:?} {result:?}");
                conn.send(&TrackerMessage::Response { id, result })?;
            }
            ClientMessage::Hello { .. } | ClientMessage::ReplicaHello { .. } => {
                log::warn!("peer={}: second hello", conn.peer_addr());
                return Ok(());
            }
        }
    }
    Ok(())
}

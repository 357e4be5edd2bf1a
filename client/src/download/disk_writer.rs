//! The client's disk writer (`disk-writer` thread): verified pieces are written where the
//! download's `Store` keeps them, in the order they were verified, by one thread, so writes
//! to a file never contend for its lock and no piece path waits on another's write. (A
//! folder's small file, one piece long, is written by the worker that verified it, with
//! `write`: no other piece goes into that file; issue 23.) A written piece is offered to its swarm, which keeps the newest ones in
//! memory for the seeder (`Swarm::offer_recent`).

use std::sync::Arc;

use crossbeam_channel::Sender;

use common::PieceIndex;

use super::event::Event;
use super::store::Store;
use crate::piece_buf::PieceBuf;
use crate::swarm::Swarm;

/// A verified piece on its way to disk.
pub struct PieceWrite {
    /// Where the download keeps its pieces (its `.part` file or its staging tree).
    pub store: Arc<Store>,
    /// Its swarm: the piece's place in the file, and where the written piece is offered to
    /// serve from memory (`Swarm::offer_recent`).
    pub swarm: Arc<Swarm>,
    pub piece: PieceIndex,
    pub buf: PieceBuf,
    /// Sent once the piece is written.
    pub done: Event,
    pub events: Sender<Event>,
    /// Where the buffer goes back to.
    pub free: Sender<PieceBuf>,
}

/// The client's disk writer: one thread that writes verified pieces at their offsets, in
/// the order they were verified.
#[derive(Clone)]
pub struct DiskWriter {
    pub(super) tx: Sender<PieceWrite>,
}

impl DiskWriter {
    /// Starts the writer thread (`disk-writer`). It ends when every `DiskWriter` is dropped.
    pub fn start() -> std::io::Result<(DiskWriter, std::thread::JoinHandle<()>)> {
        // A few pieces of slack; the workers' buffer pools bound the memory anyway.
        let (tx, rx) = crossbeam_channel::bounded::<PieceWrite>(16);
        let thread = std::thread::Builder::new().name("disk-writer".into()).spawn(move || {
            for w in rx {
                write(w);
            }
        })?;
        Ok((DiskWriter { tx }, thread))
    }
}

/// Writes a verified piece where its download keeps it, offers it to its swarm, tells the
/// coordinator and gives the buffer back: the disk writer's work, done on the calling
/// thread (also a worker's, for a piece that is a whole small file of a folder:
/// `Store::writes_alone`).
pub fn write(w: PieceWrite) {
    let len = w.swarm.layout.piece_len(w.piece);
    let written = w.store.write_piece(&w.swarm, w.piece, &w.buf[..len]);
    let (event, buf) = match written {
        // Kept before the coordinator hears of it, so that the seeder finds it in memory
        // as soon as the piece is announced.
        Ok(()) => (w.done, w.swarm.offer_recent(w.piece, w.buf, len)),
        Err(e) => {
            let reason = e.to_string();
            (Event::WriteFailed { piece: w.piece, reason }, w.buf)
        }
    };
    let _ = w.events.send(event);
    let _ = w.free.send(buf);
}

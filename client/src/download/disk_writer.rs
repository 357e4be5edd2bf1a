//! The client's disk writer (`disk-writer` thread) and a download's `.part` file handles:
//! verified pieces are written where the download's `Store` keeps them, in the order they
//! were verified, by one thread, so writes to a file never contend for its lock and no piece path waits on
//! another's write. A written piece is offered to its swarm, which keeps the newest ones in
//! memory for the seeder (`Swarm::offer_recent`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crossbeam_channel::Sender;

use common::PieceIndex;

use super::event::Event;
use super::store::Store;
use crate::piece_buf::{PieceBuf, BUF_ALIGN};
use crate::swarm::Swarm;

/// The `.part` file of a download: a buffered handle, and where the file system allows it
/// an `O_DIRECT` one for whole pieces. Writing a piece straight from its aligned buffer to
/// disk costs no copy into the page cache and leaves little for the final fsync.
pub struct DownloadFile {
    pub buffered: File,
    pub direct: Option<File>,
}

impl DownloadFile {
    /// Wraps `buffered`, the open `.part` file at `path`, and opens `path` again for direct
    /// writes. The second handle is kept only if it is the same file: a path replaced in
    /// between (by a link or another file) is never written through.
    pub fn open(path: &std::path::Path, buffered: File) -> DownloadFile {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW)
            .open(path)
            .and_then(|direct| {
                let (a, b) = (direct.metadata()?, buffered.metadata()?);
                if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
                    Ok(direct)
                } else {
                    Err(std::io::Error::other("the path now names another file"))
                }
            });
        if let Err(e) = &direct {
            log::debug!("no O_DIRECT for {}: {e}; using buffered writes", path.display());
        }
        DownloadFile { buffered, direct: direct.ok() }
    }

    /// Writes `data` at `offset`: directly when offset and length are block-aligned,
    /// buffered otherwise (the short last piece) or when a direct write is refused.
    pub(super) fn write_at(&self, data: &[u8], offset: u64) -> std::io::Result<()> {
        let aligned = offset.is_multiple_of(BUF_ALIGN as u64)
            && data.len().is_multiple_of(BUF_ALIGN)
            && (data.as_ptr() as usize).is_multiple_of(BUF_ALIGN);
        if let (true, Some(direct)) = (aligned, &self.direct) {
            match direct.write_all_at(data, offset) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    log::debug!("direct write refused ({e}); writing through the page cache");
                }
                Err(e) => return Err(e),
            }
        }
        self.buffered.write_all_at(data, offset)
    }
}

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
                let len = w.swarm.layout.piece_len(w.piece);
                let written = w.store.write_piece(&w.swarm, w.piece, &w.buf[..len]);
                let (event, buf) = match written {
                    // Kept before the coordinator hears of it, so that the seeder finds
                    // it in memory as soon as the piece is announced.
                    Ok(()) => (w.done, w.swarm.offer_recent(w.piece, w.buf, len)),
                    Err(e) => {
                        let reason = e.to_string();
                        (Event::WriteFailed { piece: w.piece, reason }, w.buf)
                    }
                };
                let _ = w.events.send(event);
                let _ = w.free.send(buf);
            }
        })?;
        Ok((DiskWriter { tx }, thread))
    }
}
